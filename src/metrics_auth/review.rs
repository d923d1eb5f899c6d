//! The two reviews against the API server, and the cached decision per token.

use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::cache::{Decision, DecisionCache, token_digest};
use super::{METRICS_PATH, METRICS_VERB, REVIEW_CACHE_ENTRIES, REVIEW_CACHE_TTL};

/// The API server could not answer a review (not the same as a refusal: nothing is cached).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(
        "cannot create a TokenReview (needs create on tokenreviews.authentication.k8s.io): {0}"
    )]
    TokenReview(String),
    #[error(
        "cannot create a SubjectAccessReview (needs create on subjectaccessreviews.authorization.k8s.io): {0}"
    )]
    AccessReview(String),
}

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Asks the API server who a token is and whether that user may `get` `/metrics`.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    pub async fn review(&self, token: &str) -> Result<Decision, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::TokenReview(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => return Ok(Decision::Unauthenticated),
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_string()),
                    verb: Some(METRICS_VERB.to_string()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| ReviewError::AccessReview(e.to_string()))?;
        let allowed = answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        Ok(if allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden
        })
    }
}

/// The decision for a request's `Authorization` header, cached per token for
/// [`REVIEW_CACHE_TTL`](super::REVIEW_CACHE_TTL).
pub struct MetricsAccess {
    reviewer: TokenReviewer,
    cache: Mutex<DecisionCache>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess").finish_non_exhaustive()
    }
}

impl MetricsAccess {
    pub fn new(client: kube::Client) -> Self {
        Self {
            reviewer: TokenReviewer::new(client),
            cache: Mutex::new(DecisionCache::new(REVIEW_CACHE_TTL, REVIEW_CACHE_ENTRIES)),
        }
    }

    pub async fn decide(&self, authorization: Option<&str>) -> Result<Decision, ReviewError> {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Ok(Decision::Unauthenticated);
        };
        let digest = token_digest(token);
        if let Some(decision) = self.lock().get(&digest, Instant::now()) {
            return Ok(decision);
        }
        let decision = self.reviewer.review(token).await?;
        self.lock().put(digest, decision, Instant::now());
        Ok(decision)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DecisionCache> {
        // The cache holds plain values: a panic mid-update leaves nothing half-done worth refusing.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_headers_carry_a_token() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }
}
