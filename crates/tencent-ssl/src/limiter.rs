//! Client-side rate limiting per API action: the operator's budget, shared fairly between credentials,
//! and adaptive per (credentials, action) to Tencent's own throttling.
//!
//! - **Pacing.** Slots of an action are evenly spaced: at `rate`, one request every `1/rate` seconds, so a
//!   burst of any size is spread out instead of being fired at once and rejected. `rate` is the operator's
//!   overall cap per action, whatever the number of credentials.
//! - **Fair shares.** Waiters queue per *share*, the digest of their credentials (the one that keys shared
//!   results, `Credentials::fingerprint`), and each slot goes to the next share with work in round-robin
//!   order (deficit round robin where every request costs one slot: Tencent's budget is counted in
//!   requests per action). Two busy shares get half the slots each, three a third; a share with nothing to
//!   do takes nothing, and its slots go to the busy ones (work-conserving).
//! - **Urgency inside a share.** Within one share, urgent callers (see [`super::priority`]) go before
//!   routine ones; urgency never takes another share's turn, so no tenant can make its own work urgent
//!   (by editing its resources) to delay everyone else's routine refreshes.
//! - **Per-credentials cap and AIMD.** Tencent limits each account per action (10 req/s), so a share is
//!   also paced on its own at `per_credentials_rate` (≤ `rate`; by default equal, so a tenant alone may use
//!   the whole budget). When Tencent still answers `RequestLimitExceeded*` for some credentials (something
//!   else uses that account's quota), only that share's rate is halved (never below `min_rate`), its next
//!   slot waits for a short pause, and it recovers additively: `recovery_step` of its cap per
//!   `recovery_interval` without throttling. All the rejections of one burst arrive together, so further
//!   halvings wait for a cool-down. The other shares keep their rate, and take the slots it leaves.
//!
//! Slots are granted by one dispatcher task per action, running while callers wait: it decides at each slot
//! time who gets it, so an urgent caller or a new share that arrives meanwhile is considered, and a rate
//! decrease applies to that share's very next request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::priority::Priority;

/// Whose budget a request counts against: the digest of its credentials.
pub type Share = [u8; 32];

/// The share of requests that no credentials sign (`AssumeRoleWithWebIdentity` for the operator's own
/// pod identity).
pub const UNSIGNED_SHARE: Share = [0; 32];

/// Rates outside this range are configuration mistakes; they are clamped into it.
pub const MIN_CONFIGURED_RATE: f64 = 0.01;
pub const MAX_CONFIGURED_RATE: f64 = 10_000.0;
/// The longest gap between two slots, whatever the rate (keeps `1/rate` representable).
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// Requests per second per action, all credentials together: the operator's overall cap.
    pub rate: f64,
    /// Requests per second per action for one set of credentials when Tencent is not throttling it
    /// (Tencent's limit is per account and action). Never above `rate`.
    pub per_credentials_rate: f64,
    /// Floor for a throttled share's rate.
    pub min_rate: f64,
    /// Multiplier applied on throttling (0.5 halves).
    pub decrease_factor: f64,
    /// Fraction of `per_credentials_rate` regained per `recovery_interval`.
    pub recovery_step: f64,
    pub recovery_interval: Duration,
    /// Pause before the throttled share's next slot after a throttling answer.
    pub throttle_pause: Duration,
    /// Throttling answers within this window after a decrease count as the same event.
    pub decrease_cooldown: Duration,
}

/// `rate` if usable, clamped to the supported range; `fallback` if not a positive number.
fn sane_rate(rate: f64, fallback: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate.clamp(MIN_CONFIGURED_RATE, MAX_CONFIGURED_RATE)
    } else {
        fallback
    }
}

/// The gap between two slots at `rate` (a positive rate; at most [`MAX_INTERVAL`]).
fn interval(rate: f64) -> Duration {
    if !(rate.is_finite() && rate > 0.0) {
        return MAX_INTERVAL;
    }
    Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(MAX_INTERVAL)
        .min(MAX_INTERVAL)
}

impl LimiterConfig {
    /// Defaults for `rate` requests per second per action (Tencent documents 10/s for the SSL download
    /// APIs), each set of credentials allowed the whole rate.
    pub fn per_second(rate: f64) -> Self {
        let rate = sane_rate(rate, 1.0);
        Self {
            rate,
            per_credentials_rate: rate,
            min_rate: (rate / 20.0).max(0.1).min(rate),
            decrease_factor: 0.5,
            recovery_step: 0.1,
            recovery_interval: Duration::from_secs(5),
            throttle_pause: Duration::from_secs(1),
            decrease_cooldown: Duration::from_secs(1),
        }
    }

    /// The same, with one set of credentials allowed at most `per_credentials` requests per second per
    /// action (clamped to `rate`: no share may exceed the overall cap).
    pub fn with_per_credentials_rate(mut self, per_credentials: f64) -> Self {
        self.per_credentials_rate = sane_rate(per_credentials, self.rate).min(self.rate);
        self.min_rate = self.min_rate.min(self.per_credentials_rate);
        self
    }
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self::per_second(10.0)
    }
}

/// One share's own pace for one action: its next slot and its rate after Tencent's throttling.
#[derive(Debug)]
struct Pace {
    /// The rate right after the last decrease; recovery counts up from here.
    rate_after_decrease: f64,
    last_decrease: Option<Instant>,
    next_slot: Instant,
}

impl Pace {
    fn new(config: &LimiterConfig, now: Instant) -> Self {
        Self {
            rate_after_decrease: config.per_credentials_rate,
            last_decrease: None,
            next_slot: now,
        }
    }

    fn rate(&self, config: &LimiterConfig, now: Instant) -> f64 {
        let cap = config.per_credentials_rate;
        let Some(decreased_at) = self.last_decrease else {
            return cap;
        };
        let intervals = (now.saturating_duration_since(decreased_at).as_secs_f64()
            / config.recovery_interval.as_secs_f64().max(f64::EPSILON))
        .floor();
        (self.rate_after_decrease + intervals * config.recovery_step * cap).min(cap)
    }

    /// Nothing left to remember: full rate, and no slot booked in the future.
    fn is_settled(&self, config: &LimiterConfig, now: Instant) -> bool {
        self.next_slot <= now && self.rate(config, now) >= config.per_credentials_rate
    }
}

/// A caller waiting for a slot; dropping the receiver (a cancelled caller) closes it.
type Ticket = oneshot::Sender<()>;

/// One share of one action: its pace and its waiting callers, urgent first.
#[derive(Debug)]
struct ShareState {
    pace: Pace,
    /// `[routine, urgent]`, each first-come first-served.
    queues: [VecDeque<Ticket>; 2],
}

impl ShareState {
    /// The next caller still waiting, urgent ones first (cancelled ones are dropped on the way).
    fn pop_ticket(&mut self) -> Option<Ticket> {
        for index in [Priority::Urgent as usize, Priority::Routine as usize] {
            while let Some(ticket) = self.queues[index].pop_front() {
                if !ticket.is_closed() {
                    return Some(ticket);
                }
            }
        }
        None
    }

    fn has_waiters(&mut self) -> bool {
        for queue in &mut self.queues {
            queue.retain(|ticket| !ticket.is_closed());
        }
        self.queues.iter().any(|q| !q.is_empty())
    }
}

/// Everything about one action.
#[derive(Debug)]
struct ActionState {
    /// The overall pace: the next slot any share may take.
    next_slot: Instant,
    shares: HashMap<Share, ShareState>,
    /// Shares with waiting callers, in turn order: the front one is served next if its pace allows.
    turns: VecDeque<Share>,
    /// Callers waiting, by priority (`[routine, urgent]`), for the queue-depth metric.
    waiting: [usize; 2],
    /// Whether a dispatcher task runs for this action.
    dispatching: bool,
    /// Wakes the dispatcher when a caller arrives.
    arrivals: Arc<Notify>,
}

impl ActionState {
    fn new(now: Instant) -> Self {
        Self {
            next_slot: now,
            shares: HashMap::new(),
            turns: VecDeque::new(),
            waiting: [0, 0],
            dispatching: false,
            arrivals: Arc::new(Notify::new()),
        }
    }

    fn share(&mut self, share: Share, config: &LimiterConfig, now: Instant) -> &mut ShareState {
        if !self.shares.contains_key(&share) {
            // Forget shares that have nothing waiting and nothing to remember, so credentials that come
            // and go do not accumulate.
            let turns = &self.turns;
            self.shares
                .retain(|key, state| turns.contains(key) || !state.pace.is_settled(config, now));
        }
        self.shares.entry(share).or_insert_with(|| ShareState {
            pace: Pace::new(config, now),
            queues: [VecDeque::new(), VecDeque::new()],
        })
    }
}

/// What the dispatcher does next.
enum Step {
    /// A slot was granted; look for the next one.
    Granted,
    /// Nothing can be granted before this instant (or before a caller arrives).
    WaitUntil(Instant),
    /// Nobody waits: the dispatcher ends.
    Idle,
}

#[derive(Debug)]
struct Shared {
    config: LimiterConfig,
    actions: Mutex<HashMap<String, ActionState>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another caller panicked mid-update; the state is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Grants the slot due at `now` to the first share in turn whose own pace allows it.
    fn step(&self, action: &str, now: Instant) -> Step {
        let config = &self.config;
        let mut actions = lock(&self.actions);
        let Some(state) = actions.get_mut(action) else {
            return Step::Idle;
        };
        // Shares whose callers all went away lose their turn.
        let shares = &mut state.shares;
        state
            .turns
            .retain(|share| shares.get_mut(share).is_some_and(ShareState::has_waiters));
        if state.turns.is_empty() {
            state.dispatching = false;
            return Step::Idle;
        }
        if state.next_slot > now {
            return Step::WaitUntil(state.next_slot);
        }
        let mut earliest: Option<Instant> = None;
        for position in 0..state.turns.len() {
            let share = state.turns[position];
            let Some(share_state) = state.shares.get_mut(&share) else {
                continue;
            };
            if share_state.pace.next_slot > now {
                let at = share_state.pace.next_slot;
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
                continue;
            }
            let Some(ticket) = share_state.pop_ticket() else {
                continue;
            };
            if ticket.send(()).is_err() {
                // Cancelled between the check and now: the slot is still free.
                return Step::Granted;
            }
            // Keep the schedule when only slightly late (no drift); after idling, start from now.
            let due = state.next_slot.max(share_state.pace.next_slot);
            let at = if now.saturating_duration_since(due) >= interval(config.rate) {
                now
            } else {
                due
            };
            state.next_slot = at + interval(config.rate);
            share_state.pace.next_slot = at + interval(share_state.pace.rate(config, now));
            // Served: to the back of the turns if it has more to do.
            state.turns.remove(position);
            if share_state.has_waiters() {
                state.turns.push_back(share);
            }
            return Step::Granted;
        }
        match earliest {
            Some(at) => Step::WaitUntil(at),
            // Every share in turn had only cancelled callers: look again.
            None => Step::Granted,
        }
    }

    /// Grants the slots of `action` while anyone waits for them.
    async fn dispatch(self: Arc<Self>, action: String, arrivals: Arc<Notify>) {
        loop {
            match self.step(&action, Instant::now()) {
                Step::Granted => {}
                Step::Idle => return,
                Step::WaitUntil(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = arrivals.notified() => {}
                    }
                }
            }
        }
    }
}

/// A rate limiter shared by all callers of one client (see the module docs).
#[derive(Debug)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

/// Counts a caller as waiting until dropped (also when its future is cancelled).
struct Waiting<'a> {
    shared: &'a Shared,
    action: &'a str,
    priority: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(state) = lock(&self.shared.actions).get_mut(self.action) {
            let count = &mut state.waiting[self.priority as usize];
            *count = count.saturating_sub(1);
        }
    }
}

impl RateLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                actions: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.shared.config
    }

    /// Callers of `action` waiting for a slot, by priority, all shares together (for the queue-depth
    /// metric).
    pub fn waiting(&self, action: &str, priority: Priority) -> usize {
        lock(&self.shared.actions)
            .get(action)
            .map_or(0, |state| state.waiting[priority as usize])
    }

    /// Waits for a slot for `action` in `share`'s turn; returns how long the caller waited. Within the
    /// share, urgent callers go first.
    pub async fn acquire(&self, action: &str, share: Share, priority: Priority) -> Duration {
        let requested = Instant::now();
        let config = &self.shared.config;
        let (granted, waiting) = {
            let mut actions = lock(&self.shared.actions);
            let state = actions
                .entry(action.to_string())
                .or_insert_with(|| ActionState::new(requested));
            let (ticket, granted) = oneshot::channel();
            state.share(share, config, requested).queues[priority as usize].push_back(ticket);
            if !state.turns.contains(&share) {
                state.turns.push_back(share);
            }
            state.waiting[priority as usize] += 1;
            if state.dispatching {
                state.arrivals.notify_one();
            } else {
                state.dispatching = true;
                tokio::spawn(
                    self.shared
                        .clone()
                        .dispatch(action.to_string(), state.arrivals.clone()),
                );
            }
            let waiting = Waiting {
                shared: &self.shared,
                action,
                priority,
            };
            (granted, waiting)
        };
        // `Err` only if the dispatcher is gone (the runtime shuts down): then waiting longer helps nobody.
        let _ = granted.await;
        drop(waiting);
        requested.elapsed()
    }

    /// Tencent answered a rate-limit error for `action` with `share`'s credentials: slow that share down.
    pub fn on_rate_limited(&self, action: &str, share: Share) {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut actions = lock(&self.shared.actions);
        let state = actions
            .entry(action.to_string())
            .or_insert_with(|| ActionState::new(now));
        let pace = &mut state.share(share, config, now).pace;
        let in_cooldown = pace
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < config.decrease_cooldown);
        if in_cooldown {
            return;
        }
        let lowered = (pace.rate(config, now) * config.decrease_factor).max(config.min_rate);
        pace.rate_after_decrease = lowered;
        pace.last_decrease = Some(now);
        pace.next_slot = pace.next_slot.max(now + config.throttle_pause);
    }

    /// The current rate of `action` for `share`'s credentials, in requests per second.
    pub fn current_rate_for(&self, action: &str, share: Share) -> f64 {
        let config = &self.shared.config;
        let now = Instant::now();
        lock(&self.shared.actions)
            .get(action)
            .and_then(|state| state.shares.get(&share))
            .map_or(config.per_credentials_rate, |s| s.pace.rate(config, now))
    }

    /// The lowest current rate of `action` over all credentials (for metrics: it drops below the
    /// per-credentials rate while Tencent throttles someone).
    pub fn current_rate(&self, action: &str) -> f64 {
        let config = &self.shared.config;
        let now = Instant::now();
        lock(&self.shared.actions)
            .get(action)
            .into_iter()
            .flat_map(|state| state.shares.values())
            .map(|s| s.pace.rate(config, now))
            .fold(config.per_credentials_rate, f64::min)
    }
}

#[cfg(test)]
mod tests;
