//! The limiter's scheduling under tokio's paused clock: exact slot times, no real waiting.

use super::*;

const A: Share = [1; 32];
const B: Share = [2; 32];
const C: Share = [3; 32];
const ACTION: &str = "DownloadCertificate";

fn limiter(rate: f64) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(LimiterConfig::per_second(rate)))
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Offsets from `start` at which each of `n` sequential acquisitions was granted.
async fn grant_times(limiter: &RateLimiter, share: Share, n: usize) -> Vec<Duration> {
    let start = Instant::now();
    let mut times = Vec::new();
    for _ in 0..n {
        limiter.acquire(ACTION, share, Priority::Routine).await;
        times.push(start.elapsed());
    }
    times
}

/// A caller that records `(share, priority, granted at)` once granted.
type Grant = (Share, Priority, Duration);

fn spawn_caller(
    limiter: &Arc<RateLimiter>,
    start: Instant,
    share: Share,
    priority: Priority,
) -> tokio::task::JoinHandle<Grant> {
    let limiter = limiter.clone();
    tokio::spawn(async move {
        limiter.acquire(ACTION, share, priority).await;
        (share, priority, start.elapsed())
    })
}

/// Every caller's grant, in grant order.
async fn grants(tasks: Vec<tokio::task::JoinHandle<Grant>>) -> Vec<Grant> {
    let mut grants = Vec::new();
    for task in tasks {
        grants.push(task.await.unwrap());
    }
    grants.sort_by_key(|(_, _, at)| *at);
    grants
}

fn count(grants: &[Grant], share: Share) -> usize {
    grants.iter().filter(|(s, _, _)| *s == share).count()
}

/// Callers queued at once: `n` per (share, priority).
async fn queue_callers(
    limiter: &Arc<RateLimiter>,
    start: Instant,
    callers: &[(Share, Priority, usize)],
) -> Vec<tokio::task::JoinHandle<Grant>> {
    let mut tasks = Vec::new();
    for &(share, priority, n) in callers {
        tasks.extend((0..n).map(|_| spawn_caller(limiter, start, share, priority)));
        // Let them enqueue in this order.
        tokio::task::yield_now().await;
    }
    tasks
}

#[tokio::test(start_paused = true)]
async fn slots_are_evenly_spaced_at_the_configured_rate() {
    let limiter = limiter(10.0);
    let times = grant_times(&limiter, A, 20).await;
    for (i, at) in times.iter().enumerate() {
        assert_eq!(*at, ms(100 * i as u64), "{i}");
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_of_one_share_are_served_in_order_one_slot_each() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    let tasks = queue_callers(&limiter, start, &[(A, Priority::Routine, 30)]).await;
    let times: Vec<Duration> = grants(tasks).await.iter().map(|g| g.2).collect();
    let expected: Vec<Duration> = (0..30).map(|i| ms(100 * i)).collect();
    assert_eq!(times, expected);
    assert_eq!(limiter.waiting(ACTION, Priority::Routine), 0);
}

#[tokio::test(start_paused = true)]
async fn actions_have_independent_budgets() {
    let limiter = limiter(1.0);
    let routine = Priority::Routine;
    assert_eq!(limiter.acquire(ACTION, A, routine).await, Duration::ZERO);
    assert_eq!(
        limiter.acquire("DescribeCertificates", A, routine).await,
        Duration::ZERO
    );
    assert_eq!(
        limiter.acquire(ACTION, A, routine).await,
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_for_its_slot() {
    let limiter = limiter(4.0);
    assert_eq!(
        limiter.acquire(ACTION, A, Priority::Routine).await,
        Duration::ZERO
    );
    assert_eq!(
        limiter.acquire(ACTION, B, Priority::Routine).await,
        ms(250),
        "another share waits for the overall pace too"
    );
}

#[tokio::test(start_paused = true)]
async fn two_shares_one_flooding_urgent_work_the_other_gets_half_the_slots() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    // Tenant A keeps 100 urgent requests queued; tenant B then asks for 20 routine refreshes.
    let tasks = queue_callers(
        &limiter,
        start,
        &[(A, Priority::Urgent, 100), (B, Priority::Routine, 20)],
    )
    .await;
    let grants = grants(tasks).await;
    // A's first caller was granted on arrival. From then on, while both have work, they alternate: B's 20
    // are done within the next 40 slots.
    let while_both_busy = &grants[1..41];
    assert_eq!(count(while_both_busy, B), 20, "{while_both_busy:?}");
    assert_eq!(count(while_both_busy, A), 20);
    // Fairness reorders; it does not add or lose capacity.
    for (i, (_, _, at)) in grants.iter().enumerate() {
        assert_eq!(*at, ms(100 * i as u64), "slot {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn three_shares_get_a_third_each() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    let tasks = queue_callers(
        &limiter,
        start,
        &[
            (A, Priority::Urgent, 60),
            (B, Priority::Routine, 60),
            (C, Priority::Urgent, 60),
        ],
    )
    .await;
    let grants = grants(tasks).await;
    // After A's first caller, granted on arrival: rounds of one slot per share.
    for window in grants[1..].chunks(3).take(50) {
        let mut shares: Vec<Share> = window.iter().map(|g| g.0).collect();
        shares.sort();
        assert_eq!(shares, vec![A, B, C], "every round serves each share once");
    }
}

#[tokio::test(start_paused = true)]
async fn urgent_work_goes_first_only_inside_its_own_share() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    // A's backlog of routine refreshes, then A's urgent first syncs, then B's routine refreshes.
    let tasks = queue_callers(
        &limiter,
        start,
        &[
            (A, Priority::Routine, 10),
            (A, Priority::Urgent, 5),
            (B, Priority::Routine, 5),
        ],
    )
    .await;
    let grants = grants(tasks).await;
    let a_order: Vec<Priority> = grants.iter().filter(|g| g.0 == A).map(|g| g.1).collect();
    // A's first routine caller was granted on arrival; A's urgent ones overtake the other nine.
    let mut expected = vec![Priority::Routine];
    expected.extend([Priority::Urgent; 5]);
    expected.extend([Priority::Routine; 9]);
    assert_eq!(a_order, expected);
    // B's routine work takes every other slot, urgent work of A or not.
    let b_slots: Vec<usize> = grants
        .iter()
        .enumerate()
        .filter(|(_, g)| g.0 == B)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(b_slots.len(), 5);
    assert!(b_slots[0] <= 2, "{b_slots:?}");
    assert!(b_slots.windows(2).all(|w| w[1] - w[0] == 2), "{b_slots:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_share_leaves_its_slots_to_the_busy_ones() {
    let limiter = limiter(10.0);
    // A alone: the whole budget.
    let times = grant_times(&limiter, A, 10).await;
    assert_eq!(times.last(), Some(&ms(900)));
    // B joins for a while, then leaves: A is back to every slot.
    let start = Instant::now();
    let tasks = queue_callers(
        &limiter,
        start,
        &[(A, Priority::Routine, 30), (B, Priority::Routine, 5)],
    )
    .await;
    let grants = grants(tasks).await;
    assert_eq!(count(&grants[..10], B), 5);
    assert_eq!(count(&grants[10..], A), 25);
    for (i, (_, _, at)) in grants.iter().enumerate() {
        assert_eq!(*at, ms(100 * (i as u64 + 1)), "no slot is left unused");
    }
}

#[tokio::test(start_paused = true)]
async fn one_share_never_exceeds_the_per_credentials_rate() {
    let config = LimiterConfig::per_second(10.0).with_per_credentials_rate(4.0);
    let limiter = Arc::new(RateLimiter::new(config));
    let start = Instant::now();
    let tasks = queue_callers(
        &limiter,
        start,
        &[(A, Priority::Urgent, 12), (B, Priority::Urgent, 12)],
    )
    .await;
    let grants = grants(tasks).await;
    for share in [A, B] {
        let times: Vec<Duration> = grants
            .iter()
            .filter(|g| g.0 == share)
            .map(|g| g.2)
            .collect();
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= ms(250), "{share:?}: {times:?}");
        }
    }
    // Together they use 8 of the 10 slots per second: 24 requests within 3 s.
    assert!(grants.last().unwrap().2 <= Duration::from_secs(3));
    // The per-credentials rate never exceeds the overall one.
    let capped = LimiterConfig::per_second(10.0).with_per_credentials_rate(50.0);
    assert_eq!(capped.per_credentials_rate, 10.0);
}

#[tokio::test(start_paused = true)]
async fn throttling_of_one_share_does_not_slow_the_others() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    let tasks = queue_callers(
        &limiter,
        start,
        &[(A, Priority::Urgent, 40), (B, Priority::Routine, 40)],
    )
    .await;
    tokio::time::advance(ms(50)).await;
    // Tencent throttles A's account (something else uses its quota).
    limiter.on_rate_limited(ACTION, A);
    assert_eq!(limiter.current_rate_for(ACTION, A), 5.0);
    assert_eq!(limiter.current_rate_for(ACTION, B), 10.0);
    assert_eq!(
        limiter.current_rate(ACTION),
        5.0,
        "the metric shows the lowest"
    );
    let grants = grants(tasks).await;
    // During A's pause (1 s) B takes every slot; afterwards A takes at most one slot per 200 ms, its own
    // lowered rate, and B at least its fair half of the rest.
    let during_pause: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.2 > ms(50) && g.2 < Duration::from_secs(1))
        .collect();
    assert_eq!(during_pause.len(), 9);
    assert!(during_pause.iter().all(|g| g.0 == B), "{during_pause:?}");
    let b_within_4s = grants
        .iter()
        .filter(|g| g.0 == B && g.2 < Duration::from_secs(4))
        .count();
    assert!(b_within_4s >= 20, "B got {b_within_4s} slots in 4 s");
    let a_times: Vec<Duration> = grants
        .iter()
        .filter(|g| g.0 == A && g.2 < Duration::from_secs(5))
        .map(|g| g.2)
        .collect();
    assert!(a_times[1] >= ms(1050), "{a_times:?}");
    for pair in a_times[1..].windows(2) {
        assert!(pair[1] - pair[0] >= ms(200), "{a_times:?}");
    }
    // The overall rate is not lowered: while B has work, no slot goes unused.
    for (i, (_, _, at)) in grants.iter().take(60).enumerate() {
        assert_eq!(*at, ms(100 * i as u64), "slot {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttle_answer_delays_callers_of_that_share_already_waiting() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    limiter.acquire(ACTION, A, Priority::Routine).await;
    let waiting = spawn_caller(&limiter, start, A, Priority::Routine);
    tokio::time::advance(ms(50)).await;
    // Tencent throttles while the second caller waits for its 100 ms slot.
    limiter.on_rate_limited(ACTION, A);
    assert_eq!(waiting.await.unwrap().2, ms(1050));
    // The next slot after that follows at the halved rate.
    assert_eq!(limiter.acquire(ACTION, A, Priority::Routine).await, ms(200));
}

#[tokio::test(start_paused = true)]
async fn throttling_halves_the_rate_once_per_burst_and_pauses() {
    let limiter = limiter(10.0);
    limiter.acquire(ACTION, A, Priority::Routine).await;
    limiter.on_rate_limited(ACTION, A);
    // The rest of the same burst's rejections must not halve again.
    limiter.on_rate_limited(ACTION, A);
    limiter.on_rate_limited(ACTION, A);
    assert_eq!(limiter.current_rate_for(ACTION, A), 5.0);
    assert!(limiter.acquire(ACTION, A, Priority::Routine).await >= Duration::from_secs(1));
    // After the cool-down a new rejection halves again.
    tokio::time::advance(ms(1100)).await;
    limiter.on_rate_limited(ACTION, A);
    assert_eq!(limiter.current_rate_for(ACTION, A), 2.5);
    assert_eq!(limiter.current_rate_for("DescribeCertificates", A), 10.0);
}

#[tokio::test(start_paused = true)]
async fn rate_recovers_gradually_to_the_configured_rate() {
    let limiter = limiter(10.0);
    limiter.on_rate_limited(ACTION, A);
    assert_eq!(limiter.current_rate_for(ACTION, A), 5.0);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!((limiter.current_rate_for(ACTION, A) - 6.0).abs() < 1e-9);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!((limiter.current_rate_for(ACTION, A) - 8.0).abs() < 1e-9);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(limiter.current_rate_for(ACTION, A), 10.0);
    assert_eq!(limiter.current_rate(ACTION), 10.0);
}

#[tokio::test(start_paused = true)]
async fn rate_never_drops_below_the_floor() {
    let limiter = limiter(10.0);
    for _ in 0..50 {
        limiter.on_rate_limited(ACTION, A);
        tokio::time::advance(ms(1001)).await;
    }
    assert!((limiter.current_rate_for(ACTION, A) - 0.5).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_takes_no_slot() {
    let limiter = limiter(10.0);
    let start = Instant::now();
    limiter.acquire(ACTION, A, Priority::Routine).await;
    let cancelled = spawn_caller(&limiter, start, A, Priority::Urgent);
    let kept = spawn_caller(&limiter, start, B, Priority::Routine);
    tokio::task::yield_now().await;
    assert_eq!(limiter.waiting(ACTION, Priority::Urgent), 1);
    cancelled.abort();
    let _ = cancelled.await;
    assert_eq!(limiter.waiting(ACTION, Priority::Urgent), 0);
    assert_eq!(kept.await.unwrap().2, ms(100));
}

#[test]
fn nonsensical_rates_fall_back_or_are_clamped() {
    assert_eq!(LimiterConfig::per_second(0.0).rate, 1.0);
    assert_eq!(LimiterConfig::per_second(-3.0).rate, 1.0);
    assert_eq!(LimiterConfig::per_second(f64::NAN).rate, 1.0);
    assert_eq!(LimiterConfig::per_second(f64::INFINITY).rate, 1.0);
    assert_eq!(LimiterConfig::per_second(1e-20).rate, MIN_CONFIGURED_RATE);
    assert_eq!(LimiterConfig::per_second(1e12).rate, MAX_CONFIGURED_RATE);
    let tiny = LimiterConfig::per_second(1e-20);
    assert!(tiny.min_rate <= tiny.rate && tiny.min_rate > 0.0);
    assert_eq!(interval(1e-300), MAX_INTERVAL);
    assert_eq!(interval(0.0), MAX_INTERVAL);
}

#[tokio::test(start_paused = true)]
async fn a_tiny_rate_paces_slowly_instead_of_panicking() {
    // Issue 21: `--rate-limit 1e-20` used to panic in `Duration::from_secs_f64(1 / rate)`.
    let limiter = Arc::new(RateLimiter::new(LimiterConfig::per_second(1e-20)));
    assert_eq!(
        limiter.acquire(ACTION, A, Priority::Routine).await,
        Duration::ZERO
    );
    for _ in 0..5 {
        limiter.on_rate_limited(ACTION, A);
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    let waited = limiter.acquire(ACTION, A, Priority::Routine).await;
    assert!(waited <= MAX_INTERVAL, "{waited:?}");
}
