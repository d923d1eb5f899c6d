//! What the client reports about its work, for metrics. The operator implements it in `telemetry`; the
//! default does nothing, so the client stays usable on its own (`fetch`, tests).

use std::time::Duration;

pub trait Observer: Send + Sync {
    /// One HTTP attempt: `code` is `Success`, the API error code, or a transport failure
    /// (`Timeout`, `ConnectionError`, `HTTP<status>`, `InvalidResponse`).
    fn request(&self, _action: &str, _code: &str, _took: Duration) {}
    /// Time spent waiting for the rate limiter, and the action's rate afterwards.
    fn rate_limited_wait(&self, _action: &str, _waited: Duration, _current_rate: f64) {}
    /// Callers of `action` at `priority` (`urgent`/`routine`) waiting for a rate-limiter slot.
    fn queue_depth(&self, _action: &str, _priority: &str, _depth: usize) {}
    /// A download served without a request of its own: `in_flight` or `cache`.
    fn coalesced(&self, _source: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
