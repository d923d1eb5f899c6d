//! The operator's one error type for a sync attempt: each failure has a condition reason (design.md §5),
//! a class that decides when to retry, and a message a user can act on. None carries secret material.

use tencent_ssl::bundle::BundleError;
use tencent_ssl::{ErrorClass, TencentError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    CredentialsNotFound(String),
    /// The credentials Secret holds something under the SecretId key that is not a SecretId; refused
    /// before any request. The message names the Secret and the key, never the value.
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{err}; {}", err.hint())]
    Tencent { err: TencentError },
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error(
        "certificate {certificate_id} expired at {not_after}; renew it in Tencent Cloud (the operator never replaces a certificate with an expired one)"
    )]
    Expired {
        certificate_id: String,
        not_after: String,
    },
    #[error("{0}")]
    SecretConflict(String),
    #[error(
        "no issued, currently valid server certificate covers {domain} among the {searched} listed with these credentials{}; check the domain, the selector, and that the certificate is issued in Tencent Cloud",
        .selector.as_ref().map(|s| format!(" and selector {s}")).unwrap_or_default()
    )]
    NoMatchingCertificate {
        domain: String,
        searched: usize,
        selector: Option<String>,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A role's temporary credentials could not be had (STS).
    #[error("{0}")]
    Role(Box<tencent_ssl::sts::StsError>),
    /// A keystore password cannot be read, or an output cannot be encoded.
    #[error("{0}")]
    Outputs(#[from] crate::outputs::OutputError),
    #[error("Kubernetes API error while {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl From<tencent_ssl::sts::StsError> for SyncError {
    fn from(err: tencent_ssl::sts::StsError) -> Self {
        Self::Role(Box::new(err))
    }
}

impl From<TencentError> for SyncError {
    fn from(err: TencentError) -> Self {
        Self::Tencent { err }
    }
}

pub const REASON_CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
pub const REASON_INVALID_CREDENTIALS: &str = "InvalidCredentials";
pub const REASON_EXPIRED: &str = "Expired";
pub const REASON_SECRET_CONFLICT: &str = "SecretConflict";
pub const REASON_KUBERNETES_ERROR: &str = "KubernetesError";
pub const REASON_NO_MATCHING_CERTIFICATE: &str = "NoMatchingCertificate";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// The API server refused a write because the namespace is being deleted (a 403 with the cause
/// `NamespaceTerminating`): whatever the write was for goes away with the namespace.
pub fn namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 403
    && status.details.as_ref().is_some_and(|details| {
        details.causes.iter().any(|cause| cause.reason == "NamespaceTerminating")
    }))
}

impl SyncError {
    /// See [`namespace_terminating`].
    pub fn namespace_terminating(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if namespace_terminating(source))
    }

    /// A write refused by the fence: this replica is not (or no longer) the leader. Not a failure of the
    /// resource: the reconcile stops without status, events or failure metrics.
    pub fn not_leader(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if crate::leader::fence::refused(source))
    }

    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::CredentialsNotFound(_) => REASON_CREDENTIALS_NOT_FOUND,
            Self::InvalidCredentials(_) => REASON_INVALID_CREDENTIALS,
            Self::Tencent { err } => err.reason(),
            Self::Bundle(err) => err.reason(),
            Self::Expired { .. } => REASON_EXPIRED,
            Self::SecretConflict(_) => REASON_SECRET_CONFLICT,
            Self::NoMatchingCertificate { .. } => REASON_NO_MATCHING_CERTIFICATE,
            Self::InvalidSpec(_) => REASON_INVALID_SPEC,
            Self::Role(err) => err.reason(),
            Self::Outputs(err) => err.reason(),
            Self::Kube { .. } => REASON_KUBERNETES_ERROR,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::CredentialsNotFound(_) | Self::InvalidCredentials(_) => ErrorClass::Credentials,
            // Like credentials: retried every 5 minutes, and at once when the password Secret (labelled
            // tencentcert.io/credentials) changes.
            Self::Outputs(crate::outputs::OutputError::PasswordNotFound { .. }) => {
                ErrorClass::Credentials
            }
            Self::Outputs(crate::outputs::OutputError::Encoding { .. }) => ErrorClass::Permanent,
            Self::Tencent { err } => err.class(),
            Self::Role(err) => err.class(),
            Self::Bundle(_)
            | Self::Expired { .. }
            | Self::SecretConflict(_)
            | Self::NoMatchingCertificate { .. }
            | Self::InvalidSpec(_) => ErrorClass::Permanent,
            // Conflicts, timeouts and 5xx from the apiserver pass; RBAC errors need a human but retrying
            // with backoff is harmless.
            Self::Kube { .. } => ErrorClass::Transient,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_refusal_in_a_terminating_namespace_is_recognised_by_its_cause() {
        // As kube-apiserver's NamespaceLifecycle admission answers a create in a terminating namespace.
        let refusal = |cause: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "code": 403, "reason": "Forbidden",
                    "message": "secrets \"shop\" is forbidden: unable to create new content in namespace web because it is being terminated",
                    "details": {"name": "shop", "kind": "secrets",
                                "causes": [{"reason": cause, "message": "namespace web is being terminated", "field": "metadata.namespace"}]},
                }))
                .unwrap(),
            ))
        };
        assert!(namespace_terminating(&refusal("NamespaceTerminating")));
        assert!(!namespace_terminating(&refusal("FieldValueForbidden")));
        let err = SyncError::kube("writing the Secret")(refusal("NamespaceTerminating"));
        assert!(err.namespace_terminating());
    }

    use super::*;

    #[test]
    fn reasons_and_classes_follow_the_design_table() {
        let tencent = SyncError::from(TencentError::Api {
            action: "DownloadCertificate".into(),
            code: "FailedOperation.NetworkError".into(),
            message: "CA busy".into(),
            request_id: "r".into(),
        });
        assert_eq!(
            (tencent.reason(), tencent.class()),
            ("NetworkError", ErrorClass::Transient)
        );
        assert!(tencent.to_string().contains("retries with backoff"));
        let key_missing = SyncError::from(BundleError::KeyMissing {
            certificate: "CN=shop".into(),
        });
        assert_eq!(
            (key_missing.reason(), key_missing.class()),
            ("KeyMissing", ErrorClass::Permanent)
        );
        let creds = SyncError::CredentialsNotFound("Secret web/tencent not found".into());
        assert_eq!(
            (creds.reason(), creds.class()),
            ("CredentialsNotFound", ErrorClass::Credentials)
        );
        let expired = SyncError::Expired {
            certificate_id: "aBcD1234".into(),
            not_after: "2020-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            (expired.reason(), expired.class()),
            ("Expired", ErrorClass::Permanent)
        );
        assert!(expired.to_string().contains("renew it in Tencent Cloud"));
    }
}
