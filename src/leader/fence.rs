//! The write fence: one shared answer to "may this replica write now?", judged on the local monotonic
//! clock. The elector grants a term that ends a safety margin before any other replica may take the Lease
//! over; every mutating request to the API server (see [`super::layer`]) and every reconcile (see
//! [`Fence::guard`]) ends with it, whether the elector noticed the loss or not.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// A write refused, or a reconcile cancelled, because this replica does not hold a valid Lease term.
/// Reconciles treat it as "stop here": no status, no event, and not a failure of the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "not the leader: this replica lost its Lease or could not renew it in time, so it writes nothing"
)]
pub struct NotLeader;

/// Whether `err`, or an error it was caused by, is a [`NotLeader`] refusal.
pub fn is_not_leader(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.downcast_ref::<NotLeader>().is_some() {
            return true;
        }
        current = err.source();
    }
    false
}

/// [`is_not_leader`] for a Kubernetes client error (the fence's refusal arrives as `kube::Error::Service`).
pub fn refused(err: &kube::Error) -> bool {
    is_not_leader(err)
}

/// What the fence allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Not leading: every write is refused.
    Standby,
    /// Leading until this instant of the local monotonic clock (exclusive).
    Until(Instant),
    /// No leader election: writes are always allowed.
    Unbounded,
}

impl Term {
    /// `Ok(deadline)` when a write may start at `now`; the deadline bounds how long it may take.
    pub fn admits(self, now: Instant) -> Result<Option<Instant>, NotLeader> {
        match self {
            Term::Unbounded => Ok(None),
            Term::Until(until) if now < until => Ok(Some(until)),
            Term::Until(_) | Term::Standby => Err(NotLeader),
        }
    }
}

/// Shared between the elector (which grants and closes terms) and everything that writes.
#[derive(Clone)]
pub struct Fence {
    term: Arc<watch::Sender<Term>>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("term", &*self.term.borrow())
            .finish()
    }
}

impl Default for Fence {
    /// Unbounded: what a single replica without leader election uses.
    fn default() -> Self {
        Self::unbounded()
    }
}

impl Fence {
    fn with(term: Term) -> Self {
        Self {
            term: Arc::new(watch::Sender::new(term)),
        }
    }

    /// A fence for leader election: closed until the elector grants a term.
    pub fn standby() -> Self {
        Self::with(Term::Standby)
    }

    /// A fence that never closes (no leader election).
    pub fn unbounded() -> Self {
        Self::with(Term::Unbounded)
    }

    pub fn term(&self) -> Term {
        *self.term.borrow()
    }

    /// Leading until `until` (a renewal replaces the previous term).
    pub fn grant_until(&self, until: Instant) {
        self.term.send_replace(Term::Until(until));
    }

    /// Leadership lost (another holder, or shutting down): refuse every write from now on.
    pub fn close(&self) {
        self.term.send_if_modified(|term| {
            let was_open = *term != Term::Standby;
            *term = Term::Standby;
            was_open
        });
    }

    /// `Ok(deadline)` when a write may start now; see [`Term::admits`].
    pub fn check(&self) -> Result<Option<Instant>, NotLeader> {
        self.term().admits(Instant::now())
    }

    pub fn allows_writes(&self) -> bool {
        self.check().is_ok()
    }

    /// Resolves once writes are refused: the term was closed, or it ran out without a renewal.
    pub async fn lost(&self) {
        let mut terms = self.term.subscribe();
        loop {
            let term = *terms.borrow_and_update();
            let until = match term {
                Term::Standby => return,
                Term::Until(until) if Instant::now() >= until => return,
                Term::Until(until) => Some(until),
                Term::Unbounded => None,
            };
            tokio::select! {
                // Looked at again at the top: a renewal may have extended the term meanwhile.
                () = sleep_until(until) => {}
                changed = terms.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Resolves once writes are allowed.
    pub async fn leading(&self) {
        let mut terms = self.term.subscribe();
        loop {
            if terms.borrow_and_update().admits(Instant::now()).is_ok() {
                return;
            }
            if terms.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `work` until it finishes or leadership is lost, whichever comes first: work queued (e.g. at
    /// the Tencent rate limiter) is dropped the moment the term ends.
    pub async fn guard<F: Future>(&self, work: F) -> Result<F::Output, NotLeader> {
        tokio::select! {
            biased;
            () = self.lost() => Err(NotLeader),
            output = work => Ok(output),
        }
    }
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_term_admits_writes_until_its_end_on_the_monotonic_clock() {
        let fence = Fence::standby();
        assert_eq!(fence.check(), Err(NotLeader));
        let until = Instant::now() + 10 * SECOND;
        fence.grant_until(until);
        assert_eq!(fence.check(), Ok(Some(until)));
        tokio::time::advance(10 * SECOND - Duration::from_millis(1)).await;
        assert!(fence.allows_writes());
        tokio::time::advance(Duration::from_millis(1)).await;
        // Nobody closed the fence: the term simply ran out.
        assert_eq!(fence.check(), Err(NotLeader));
        assert_eq!(fence.term(), Term::Until(until));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_refuses_at_once_and_unbounded_always_admits() {
        let fence = Fence::standby();
        fence.grant_until(Instant::now() + 60 * SECOND);
        fence.close();
        assert_eq!(fence.check(), Err(NotLeader));
        let free = Fence::unbounded();
        tokio::time::advance(3600 * SECOND).await;
        assert_eq!(free.check(), Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_when_the_term_runs_out_unless_it_is_renewed() {
        let fence = Fence::standby();
        let start = Instant::now();
        fence.grant_until(start + 5 * SECOND);
        let lost = tokio::spawn({
            let fence = fence.clone();
            async move {
                fence.lost().await;
                Instant::now()
            }
        });
        tokio::time::sleep(4 * SECOND).await;
        // Renewed before the end: the loss moves with it.
        fence.grant_until(start + 9 * SECOND);
        let at = lost.await.unwrap();
        assert_eq!(at, start + 9 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_at_once_on_close_and_never_for_an_unbounded_fence() {
        let fence = Fence::standby();
        fence.grant_until(Instant::now() + 60 * SECOND);
        let lost = tokio::spawn({
            let fence = fence.clone();
            async move { fence.lost().await }
        });
        tokio::time::sleep(SECOND).await;
        assert!(!lost.is_finished());
        fence.close();
        tokio::time::timeout(Duration::from_millis(1), lost)
            .await
            .expect("lost fires on close")
            .unwrap();
        let free = Fence::unbounded();
        assert!(
            tokio::time::timeout(3600 * SECOND, free.lost())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn guard_drops_queued_work_when_the_term_ends() {
        let fence = Fence::standby();
        fence.grant_until(Instant::now() + 2 * SECOND);
        // Work that waits (like a reconcile queued at the rate limiter) longer than the term lasts.
        let queued = fence.guard(async {
            tokio::time::sleep(10 * SECOND).await;
            "wrote"
        });
        let started = Instant::now();
        assert_eq!(queued.await, Err(NotLeader));
        assert_eq!(started.elapsed(), 2 * SECOND);
        // Work that finishes within the term runs to completion.
        fence.grant_until(Instant::now() + 2 * SECOND);
        let quick = fence.guard(async {
            tokio::time::sleep(SECOND).await;
            "wrote"
        });
        assert_eq!(quick.await, Ok("wrote"));
        // A closed fence starts nothing.
        fence.close();
        assert_eq!(fence.guard(async { "wrote" }).await, Err(NotLeader));
    }

    #[tokio::test(start_paused = true)]
    async fn leading_waits_for_a_grant() {
        let fence = Fence::standby();
        let mut leading = Box::pin(fence.leading());
        assert!((&mut leading).now_or_never().is_none());
        fence.grant_until(Instant::now() + SECOND);
        leading.await;
    }

    #[test]
    fn the_refusal_is_recognised_inside_a_kube_error() {
        let err = kube::Error::Service(Box::new(NotLeader));
        assert!(refused(&err));
        let other = kube::Error::Service("connection refused".into());
        assert!(!refused(&other));
    }
}
