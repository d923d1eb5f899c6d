//! Which Tencent requests of one tenant go first when the rate limit is the bottleneck.
//!
//! A resource that never synced, whose spec changed or whose Secret drifted is waiting for something a
//! user is looking at; a routine refresh of a Secret that is already correct is not. Within the share of
//! one set of credentials, urgent requests are granted rate-limiter slots before routine ones, so a refresh
//! load above the budget slows refreshes down and never first syncs. Urgency never reaches across shares:
//! a tenant can make its own work urgent (by editing its resources), and that must not delay anyone
//! else's routine refreshes, the ones that pick up renewals (see `limiter`).
//!
//! The priority travels with the task (a task-local set by the reconcile around its Tencent work) rather
//! than through every client method: the client, coalescer and batcher read it where a request is created.

use std::future::Future;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// A periodic refresh of a resource that is already served.
    #[default]
    Routine,
    /// First sync, spec change, drift repair, an explicit refresh request.
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routine => "routine",
            Self::Urgent => "urgent",
        }
    }
}

tokio::task_local! {
    static PRIORITY: Priority;
}

/// The priority of the Tencent work the current task does (`Routine` outside any [`scope`]).
pub fn current() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or_default()
}

/// Runs `work` with `priority` for every Tencent request it makes.
pub async fn scope<F: Future>(priority: Priority, work: F) -> F::Output {
    PRIORITY.scope(priority, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_sets_the_priority_and_routine_is_the_default() {
        assert_eq!(current(), Priority::Routine);
        assert_eq!(
            scope(Priority::Urgent, async { current() }).await,
            Priority::Urgent
        );
        assert_eq!(current(), Priority::Routine);
    }
}
