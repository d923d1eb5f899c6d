//! The election's clock logic, pure: when a term ends, when to renew, when a standby may take over. All of
//! it on this replica's monotonic clock; the Lease's `renewTime` (another replica's wall clock) is written
//! for people to read and never trusted.
//!
//! Why it is safe: a leader's term is counted from the moment it *sent* its last successful write, and ends
//! `margin` before `duration` has passed. A standby counts `duration` from the moment it first *saw* that
//! write's resourceVersion, which is later. So the leader stops at least `margin` before any standby may
//! take over, whatever either wall clock says; the margin covers clock-rate differences and scheduling.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "--lease-renew-grace ({grace}s) must be shorter than --lease-duration ({duration}s): the leader renews \
         that long before its Lease expires, so it would never hold a valid Lease"
    )]
    GraceNotShorter { grace: u64, duration: u64 },
    #[error(
        "--lease-renew-grace must be at least 1s: it is the time the leader has to renew its Lease"
    )]
    NoGrace,
}

/// How long a Lease lasts and when it is renewed; checked once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    duration: Duration,
    renew_grace: Duration,
}

impl Timing {
    pub fn new(duration: Duration, renew_grace: Duration) -> Result<Self, TimingError> {
        if renew_grace >= duration {
            return Err(TimingError::GraceNotShorter {
                grace: renew_grace.as_secs(),
                duration: duration.as_secs(),
            });
        }
        if renew_grace < Duration::from_secs(1) {
            return Err(TimingError::NoGrace);
        }
        Ok(Self {
            duration,
            renew_grace,
        })
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How long before a standby may take over the leader stops writing: half the renewal grace, so
    /// that the other half is left for renewal attempts.
    pub fn margin(&self) -> Duration {
        self.renew_grace / 2
    }

    /// The end of the term won by a write (create, acquire or renew) sent at `sent`.
    pub fn term_ends(&self, sent: Instant) -> Instant {
        sent + self.duration - self.margin()
    }

    /// When to renew a term won by a write sent at `sent`.
    pub fn renew_at(&self, sent: Instant) -> Instant {
        sent + self.duration - self.renew_grace
    }

    /// How often a failed renewal is retried, and how often a standby looks at the Lease.
    pub fn retry_every(&self) -> Duration {
        (self.renew_grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// The longest one Lease read, or claim by a replica that does not lead, may take (a leader's renewal
    /// may take until the end of its term).
    pub fn request_timeout(&self) -> Duration {
        (self.duration / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// What a standby saw of a Lease held by someone else: the version, and when it first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    version: String,
    first_seen: Instant,
    /// The holder's promised duration (`leaseDurationSeconds`).
    lasts: Duration,
}

impl Sighting {
    /// The sighting after reading `version` at `now`: the clock restarts whenever the Lease changed.
    pub fn after(previous: Option<Sighting>, version: &str, lasts: Duration, now: Instant) -> Self {
        match previous {
            Some(seen) if seen.version == version => Sighting { lasts, ..seen },
            _ => Sighting {
                version: version.to_string(),
                first_seen: now,
                lasts,
            },
        }
    }

    /// Unchanged for the holder's whole duration on our clock: the holder has stopped.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.first_seen + self.lasts
    }

    pub fn expires_at(&self) -> Instant {
        self.first_seen + self.lasts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing::new(15 * SECOND, 5 * SECOND).unwrap()
    }

    #[test]
    fn a_grace_not_shorter_than_the_duration_is_refused_with_both_values() {
        let err = Timing::new(10 * SECOND, 10 * SECOND).unwrap_err();
        assert_eq!(
            err,
            TimingError::GraceNotShorter {
                grace: 10,
                duration: 10
            }
        );
        let message = err.to_string();
        assert!(message.contains("--lease-renew-grace (10s)"), "{message}");
        assert!(message.contains("--lease-duration (10s)"), "{message}");
        assert!(Timing::new(10 * SECOND, 11 * SECOND).is_err());
        assert_eq!(
            Timing::new(10 * SECOND, Duration::ZERO),
            Err(TimingError::NoGrace)
        );
        assert!(Timing::new(2 * SECOND, SECOND).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_renews_then_stops_a_margin_before_a_standby_may_take_over() {
        let timing = timing();
        let sent = Instant::now();
        assert_eq!(timing.renew_at(sent), sent + 10 * SECOND);
        assert_eq!(
            timing.term_ends(sent),
            sent + 12_500 * Duration::from_millis(1)
        );
        // Several retries fit between the renewal and the end of the term.
        assert!(timing.renew_at(sent) + 3 * timing.retry_every() < timing.term_ends(sent));
        // The standby sees the write no earlier than it was sent.
        tokio::time::advance(Duration::from_millis(30)).await;
        let sighting = Sighting::after(None, "42", timing.duration(), Instant::now());
        assert!(sighting.expires_at() >= timing.term_ends(sent) + timing.margin());
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_counts_on_its_own_clock_from_the_last_change_it_saw() {
        let start = Instant::now();
        let first = Sighting::after(None, "7", 15 * SECOND, start);
        tokio::time::advance(10 * SECOND).await;
        // Unchanged: the clock keeps running from the first sighting.
        let same = Sighting::after(Some(first.clone()), "7", 15 * SECOND, Instant::now());
        assert_eq!(same.expires_at(), start + 15 * SECOND);
        assert!(!same.expired(Instant::now()));
        tokio::time::advance(5 * SECOND).await;
        assert!(same.expired(Instant::now()));
        // Renewed (a new version): the clock restarts, whatever renewTime the holder wrote.
        let renewed = Sighting::after(Some(same), "8", 15 * SECOND, Instant::now());
        assert!(!renewed.expired(Instant::now()));
        assert_eq!(renewed.expires_at(), start + 30 * SECOND);
    }

    #[test]
    fn short_leases_still_leave_time_for_requests_and_retries() {
        let timing = Timing::new(2 * SECOND, SECOND).unwrap();
        assert_eq!(timing.margin(), Duration::from_millis(500));
        assert_eq!(timing.retry_every(), Duration::from_millis(125));
        assert_eq!(timing.request_timeout(), SECOND);
        let long = Timing::new(120 * SECOND, 40 * SECOND).unwrap();
        assert_eq!(long.retry_every(), 2 * SECOND);
        assert_eq!(long.request_timeout(), 10 * SECOND);
    }
}
