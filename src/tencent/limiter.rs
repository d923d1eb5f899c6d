//! Client-side rate limiting per API action, adaptive to Tencent's own throttling.
//!
//! How it adapts (AIMD, as TCP congestion control does):
//! - Callers take evenly spaced time slots: at rate `r`, one request every `1/r` seconds, so a burst of
//!   any size is spread out instead of being fired at once and rejected.
//! - When Tencent still answers `RequestLimitExceeded*` (another client shares the account's quota), the
//!   action's rate is halved (never below `min_rate`) and new slots start only after a short pause. All the
//!   rejections of one burst arrive together, so further halvings wait for a cool-down.
//! - The rate then recovers additively: `recovery_step` of the configured rate per `recovery_interval`
//!   without throttling, back up to the configured rate. A persistent competitor keeps it low; a one-off
//!   spike costs a few slow seconds.
//! - Urgent callers (see [`super::priority`]) are granted slots before routine ones: a routine caller
//!   waits while any urgent caller of the same action is queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::priority::Priority;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// Requests per second per action when Tencent is not throttling us.
    pub rate: f64,
    /// Floor for the adapted rate.
    pub min_rate: f64,
    /// Multiplier applied on throttling (0.5 halves).
    pub decrease_factor: f64,
    /// Fraction of `rate` regained per `recovery_interval`.
    pub recovery_step: f64,
    pub recovery_interval: Duration,
    /// Pause before the next slot after a throttling answer.
    pub throttle_pause: Duration,
    /// Throttling answers within this window after a decrease count as the same event.
    pub decrease_cooldown: Duration,
}

impl LimiterConfig {
    /// Defaults for `rate` requests per second (Tencent documents 10/s for the SSL download APIs).
    pub fn per_second(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Self {
            rate,
            min_rate: (rate / 20.0).max(0.1),
            decrease_factor: 0.5,
            recovery_step: 0.1,
            recovery_interval: Duration::from_secs(5),
            throttle_pause: Duration::from_secs(1),
            decrease_cooldown: Duration::from_secs(1),
        }
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self::per_second(10.0)
    }
}

#[derive(Debug)]
struct ActionState {
    /// The rate right after the last decrease; recovery counts up from here.
    rate_after_decrease: f64,
    last_decrease: Option<Instant>,
    next_slot: Instant,
}

impl ActionState {
    fn new(config: &LimiterConfig, now: Instant) -> Self {
        Self {
            rate_after_decrease: config.rate,
            last_decrease: None,
            next_slot: now,
        }
    }

    fn rate(&self, config: &LimiterConfig, now: Instant) -> f64 {
        let Some(decreased_at) = self.last_decrease else {
            return config.rate;
        };
        let intervals = (now.saturating_duration_since(decreased_at).as_secs_f64()
            / config.recovery_interval.as_secs_f64().max(f64::EPSILON))
        .floor();
        (self.rate_after_decrease + intervals * config.recovery_step * config.rate).min(config.rate)
    }
}

/// A rate limiter shared by all callers of one client, with independent state per API action.
///
/// Waiters queue first-come first-served on a per-action async gate; only the head of the queue computes
/// and sleeps until its slot. Slots are therefore never handed out in advance, and a rate decrease
/// applies to the very next request rather than after a queue of pre-booked ones.
#[derive(Debug)]
pub struct RateLimiter {
    config: LimiterConfig,
    actions: Mutex<HashMap<String, ActionState>>,
    queues: Mutex<HashMap<String, Arc<ActionQueue>>>,
}

/// The callers of one action waiting for a slot.
#[derive(Debug)]
struct ActionQueue {
    /// Held by the caller whose slot comes next. tokio's Mutex is fair: waiters get it in arrival order.
    gate: tokio::sync::Mutex<()>,
    /// Callers waiting, by priority: `[routine, urgent]`. Routine callers wait while `urgent > 0`.
    waiting: watch::Sender<[usize; 2]>,
}

impl ActionQueue {
    fn new() -> Self {
        Self {
            gate: tokio::sync::Mutex::new(()),
            waiting: watch::Sender::new([0, 0]),
        }
    }

    fn enter(&self, priority: Priority) -> Waiting<'_> {
        self.waiting.send_modify(|w| w[priority as usize] += 1);
        Waiting {
            queue: self,
            priority,
        }
    }

    fn urgent_waiting(&self) -> usize {
        self.waiting.borrow()[Priority::Urgent as usize]
    }
}

/// Counts a caller as waiting until dropped (also when its future is cancelled).
struct Waiting<'a> {
    queue: &'a ActionQueue,
    priority: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let index = self.priority as usize;
        self.queue
            .waiting
            .send_modify(|w| w[index] = w[index].saturating_sub(1));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another caller panicked mid-update; the state is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RateLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            actions: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    fn with_state<T>(&self, action: &str, f: impl FnOnce(&mut ActionState, Instant) -> T) -> T {
        let now = Instant::now();
        let mut actions = lock(&self.actions);
        let state = actions
            .entry(action.to_string())
            .or_insert_with(|| ActionState::new(&self.config, now));
        f(state, now)
    }

    fn queue(&self, action: &str) -> Arc<ActionQueue> {
        lock(&self.queues)
            .entry(action.to_string())
            .or_insert_with(|| Arc::new(ActionQueue::new()))
            .clone()
    }

    /// Callers of `action` waiting for a slot, by priority (for the queue-depth metric).
    pub fn waiting(&self, action: &str, priority: Priority) -> usize {
        lock(&self.queues)
            .get(action)
            .map_or(0, |queue| queue.waiting.borrow()[priority as usize])
    }

    /// Waits for a slot for `action`; returns how long the caller waited. Urgent callers go first.
    pub async fn acquire(&self, action: &str, priority: Priority) -> Duration {
        let requested = Instant::now();
        let queue = self.queue(action);
        let _waiting = queue.enter(priority);
        let _turn = loop {
            if priority == Priority::Routine {
                let mut waiting = queue.waiting.subscribe();
                // The sender lives in `queue`, which outlives this wait: `Err` cannot happen.
                let _ = waiting
                    .wait_for(|w| w[Priority::Urgent as usize] == 0)
                    .await;
            }
            let turn = queue.gate.lock().await;
            // An urgent caller that arrived while this routine one queued for the gate goes first.
            if priority == Priority::Urgent || queue.urgent_waiting() == 0 {
                break turn;
            }
        };
        loop {
            let slot = self.with_state(action, |state, now| state.next_slot.max(now));
            tokio::time::sleep_until(slot).await;
            let granted = self.with_state(action, |state, now| {
                // A throttling answer while we slept pushes `next_slot`: then wait again.
                if state.next_slot > slot {
                    return false;
                }
                let rate = state.rate(&self.config, now);
                state.next_slot = slot + Duration::from_secs_f64(1.0 / rate);
                true
            });
            if granted {
                return requested.elapsed();
            }
        }
    }

    /// Tencent answered a rate-limit error for `action`: slow down.
    pub fn on_rate_limited(&self, action: &str) {
        self.with_state(action, |state, now| {
            let in_cooldown = state.last_decrease.is_some_and(|at| {
                now.saturating_duration_since(at) < self.config.decrease_cooldown
            });
            if in_cooldown {
                return;
            }
            let lowered = (state.rate(&self.config, now) * self.config.decrease_factor)
                .max(self.config.min_rate);
            state.rate_after_decrease = lowered;
            state.last_decrease = Some(now);
            state.next_slot = state.next_slot.max(now + self.config.throttle_pause);
        });
    }

    /// The current rate for `action` in requests per second (for metrics).
    pub fn current_rate(&self, action: &str) -> f64 {
        self.with_state(action, |state, now| state.rate(&self.config, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64) -> RateLimiter {
        RateLimiter::new(LimiterConfig::per_second(rate))
    }

    /// Offsets from `start` at which each of `n` sequential acquisitions was granted.
    async fn grant_times(limiter: &RateLimiter, action: &str, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            limiter.acquire(action, Priority::Routine).await;
            times.push(start.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_evenly_spaced_at_the_configured_rate() {
        let limiter = limiter(10.0);
        let times = grant_times(&limiter, "DownloadCertificate", 20).await;
        for (i, at) in times.iter().enumerate() {
            assert_eq!(*at, Duration::from_millis(100 * i as u64), "{i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_served_in_order_one_slot_each() {
        let limiter = Arc::new(limiter(10.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire("A", Priority::Routine).await;
                    start.elapsed()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        let expected: Vec<Duration> = (0..30).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(times, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn actions_have_independent_budgets() {
        let limiter = limiter(1.0);
        assert_eq!(
            limiter
                .acquire("DownloadCertificate", Priority::Routine)
                .await,
            Duration::ZERO
        );
        assert_eq!(
            limiter
                .acquire("DescribeCertificateDetail", Priority::Routine)
                .await,
            Duration::ZERO
        );
        assert_eq!(
            limiter
                .acquire("DownloadCertificate", Priority::Routine)
                .await,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_its_slot() {
        let limiter = limiter(4.0);
        assert_eq!(
            limiter.acquire("A", Priority::Routine).await,
            Duration::ZERO
        );
        let waited = limiter.acquire("A", Priority::Routine).await;
        assert_eq!(waited, Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_answer_delays_callers_already_waiting() {
        let limiter = Arc::new(limiter(10.0));
        let start = Instant::now();
        limiter.acquire("A", Priority::Routine).await;
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire("A", Priority::Routine).await;
                start.elapsed()
            })
        };
        tokio::time::advance(Duration::from_millis(50)).await;
        // Tencent throttles while the second caller sleeps towards its 100 ms slot.
        limiter.on_rate_limited("A");
        let granted_at = waiting.await.unwrap();
        assert_eq!(granted_at, Duration::from_millis(1050));
        // The next slot after that follows at the halved rate.
        assert_eq!(
            limiter.acquire("A", Priority::Routine).await,
            Duration::from_millis(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_per_burst_and_pauses() {
        let limiter = limiter(10.0);
        limiter.acquire("A", Priority::Routine).await;
        limiter.on_rate_limited("A");
        // The rest of the same burst's rejections must not halve again.
        limiter.on_rate_limited("A");
        limiter.on_rate_limited("A");
        assert_eq!(limiter.current_rate("A"), 5.0);
        assert!(limiter.acquire("A", Priority::Routine).await >= Duration::from_secs(1));
        // After the cool-down a new rejection halves again.
        tokio::time::advance(Duration::from_millis(1100)).await;
        limiter.on_rate_limited("A");
        assert_eq!(limiter.current_rate("A"), 2.5);
        assert_eq!(limiter.current_rate("B"), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_recovers_gradually_to_the_configured_rate() {
        let limiter = limiter(10.0);
        limiter.on_rate_limited("A");
        assert_eq!(limiter.current_rate("A"), 5.0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((limiter.current_rate("A") - 6.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((limiter.current_rate("A") - 8.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limiter.current_rate("A"), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_never_drops_below_the_floor() {
        let limiter = limiter(10.0);
        for _ in 0..50 {
            limiter.on_rate_limited("A");
            tokio::time::advance(Duration::from_millis(1001)).await;
        }
        assert!((limiter.current_rate("A") - 0.5).abs() < 1e-9);
    }

    #[test]
    fn nonsensical_rates_fall_back_to_one_per_second() {
        assert_eq!(LimiterConfig::per_second(0.0).rate, 1.0);
        assert_eq!(LimiterConfig::per_second(-3.0).rate, 1.0);
        assert_eq!(LimiterConfig::per_second(f64::NAN).rate, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_callers_overtake_queued_routine_ones() {
        let limiter = Arc::new(limiter(10.0));
        let start = Instant::now();
        let spawn = |priority: Priority| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire("A", priority).await;
                (priority, start.elapsed())
            })
        };
        // A backlog of 20 routine refreshes, then 5 first syncs arrive.
        let mut tasks: Vec<_> = (0..20).map(|_| spawn(Priority::Routine)).collect();
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting("A", Priority::Routine), 19);
        tasks.extend((0..5).map(|_| spawn(Priority::Urgent)));
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting("A", Priority::Urgent), 5);
        let mut grants = Vec::new();
        for task in tasks {
            grants.push(task.await.unwrap());
        }
        grants.sort_by_key(|(_, at)| *at);
        // The first routine caller was granted at once and the second holds the gate, asleep until its
        // slot: both keep their slots. Every urgent caller comes right after, before the other 18.
        let order: Vec<Priority> = grants.iter().map(|(p, _)| *p).collect();
        let mut expected = vec![Priority::Routine; 2];
        expected.extend([Priority::Urgent; 5]);
        expected.extend([Priority::Routine; 18]);
        assert_eq!(order, expected);
        // Still one slot per 100 ms: priority reorders, it does not add capacity.
        for (i, (_, at)) in grants.iter().enumerate() {
            assert_eq!(*at, Duration::from_millis(100 * i as u64), "{i}");
        }
        assert_eq!(limiter.waiting("A", Priority::Routine), 0);
        assert_eq!(limiter.waiting("A", Priority::Urgent), 0);
    }
}
