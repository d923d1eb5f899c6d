//! Authenticated `/metrics` (`run --metrics-secure`): the series name every tenant's resources and
//! certificate ids, so with this on only a caller the cluster authorises may read them.
//!
//! As controller-runtime's `filters.WithAuthenticationAndAuthorization` (kubebuilder's scaffold since v4)
//! does: the bearer token is checked with a `TokenReview`, then its user with a `SubjectAccessReview` for
//! the non-resource URL `/metrics`, verb `get`. No token: 401; a token the API server does not accept:
//! 401; accepted but not allowed: 403. Answers are cached for [`REVIEW_CACHE_TTL`] per token digest (the
//! token itself is never kept), so scrapes do not call the API server each time. The server then speaks
//! HTTPS ([`tls`]); `/healthz` and `/readyz` stay open for the kubelet's probes.

pub mod cache;
pub mod review;
pub mod tls;

pub use cache::{Decision, DecisionCache};
pub use review::{MetricsAccess, ReviewError, TokenReviewer};

use std::time::Duration;

/// How long a review's answer is reused for the same token (controller-runtime's filter: 1 minute).
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(60);
/// Distinct tokens remembered at once; past it, expired answers go first, then new tokens are reviewed
/// every time (nothing a caller sends can grow memory without bound).
pub const REVIEW_CACHE_ENTRIES: usize = 1024;
/// The path and verb a caller must be allowed (`nonResourceURLs: ["/metrics"]`, `verbs: ["get"]`).
pub const METRICS_PATH: &str = "/metrics";
pub const METRICS_VERB: &str = "get";

#[cfg(test)]
mod tests;
