//! `TokenReview` and `SubjectAccessReview`, answered from what the test configured: which tokens belong to
//! which users, and which users may use which non-resource URLs. Reviews are answered, never stored, as
//! on a real server. This is not RBAC: the server's own bearer token still allows everything.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::status::ApiError;

/// What the reviews know.
#[derive(Debug, Clone, Default)]
pub struct Reviews {
    /// token → (username, groups).
    pub users: BTreeMap<String, (String, Vec<String>)>,
    /// (username, path, verb) allowed on non-resource URLs.
    pub non_resource: BTreeSet<(String, String, String)>,
}

impl Reviews {
    /// The answer to a review POSTed to `group`/`plural`, or `None` when it is not a review.
    pub fn answer(
        &self,
        group: &str,
        plural: &str,
        body: &[u8],
    ) -> Option<Result<Value, ApiError>> {
        match (group, plural) {
            ("authentication.k8s.io", "tokenreviews") => Some(self.token_review(body)),
            ("authorization.k8s.io", "subjectaccessreviews") => Some(self.access_review(body)),
            _ => None,
        }
    }

    fn token_review(&self, body: &[u8]) -> Result<Value, ApiError> {
        let mut review = parse(body)?;
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        review["status"] = match self.users.get(token) {
            Some((username, groups)) => json!({
                "authenticated": true,
                "user": {"username": username, "uid": format!("uid-{username}"), "groups": groups},
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        Ok(review)
    }

    fn access_review(&self, body: &[u8]) -> Result<Value, ApiError> {
        let mut review = parse(body)?;
        let spec = &review["spec"];
        let user = spec["user"].as_str().unwrap_or_default().to_string();
        let path = spec["nonResourceAttributes"]["path"].as_str();
        let verb = spec["nonResourceAttributes"]["verb"].as_str();
        let allowed = match (path, verb) {
            (Some(path), Some(verb)) => {
                self.non_resource
                    .contains(&(user, path.to_string(), verb.to_string()))
            }
            // Resource attributes are not emulated: refused.
            _ => false,
        };
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "allowed by the fake API server's configuration"})
        } else {
            json!({"allowed": false})
        };
        Ok(review)
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::for_code(400, format!("the review is not JSON: {e}")))
}
