//! Resolving a `TencentCertificate`'s Tencent Cloud credentials from Kubernetes Secrets.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::{CredentialsRef, TencentCertificate};
use crate::error::SyncError;
use tencent_ssl::Credentials;
use tencent_ssl::credentials::CredentialsError;
use tencent_ssl::sts::{self, Role, WebIdentity};

/// Label that opts a credentials Secret into being watched, so fixing it re-syncs at once (instead of at
/// the next 5-minute credentials retry). The operator never watches all Secrets.
pub const CREDENTIALS_LABEL: &str = "tencentcert.io/credentials";

/// A Secret by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for SecretRef {
    type Err = String;

    /// `NAMESPACE/NAME`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which namespaces may use the operator's default credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceAllowList {
    #[default]
    None,
    All,
    Only(BTreeSet<String>),
}

impl NamespaceAllowList {
    /// `*` for all, or a comma-separated list; empty for none.
    pub fn parse(text: &str) -> Self {
        let names: BTreeSet<String> = text
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if names.contains("*") {
            Self::All
        } else if names.is_empty() {
            Self::None
        } else {
            Self::Only(names)
        }
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Only(names) => names.contains(namespace),
        }
    }
}

/// The operator's fallback credentials: a Secret (optionally assuming a role with its key), or the pod's
/// own identity (TKE pod identity: its ServiceAccount token exchanged through STS).
#[derive(Debug, Clone, Default)]
pub struct DefaultCredentials {
    pub secret: Option<SecretRef>,
    /// With `secret`: assume this role with the Secret's key.
    pub role: Option<Role>,
    /// Instead of `secret`: `AssumeRoleWithWebIdentity` with the token file TKE mounts.
    pub pod_identity: Option<WebIdentity>,
    pub namespaces: NamespaceAllowList,
}

impl DefaultCredentials {
    fn configured(&self) -> bool {
        self.secret.is_some() || self.pod_identity.is_some()
    }
}

/// Where a resource's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSource {
    Referenced(SecretRef, CredentialsRef),
    Default(SecretRef),
    /// The operator's pod identity (no Secret).
    PodIdentity,
}

impl CredentialsSource {
    /// The Secret read, if any.
    pub fn secret(&self) -> Option<&SecretRef> {
        match self {
            Self::Referenced(secret, _) | Self::Default(secret) => Some(secret),
            Self::PodIdentity => None,
        }
    }
}

pub fn source_for(
    cr: &TencentCertificate,
    defaults: &DefaultCredentials,
) -> Result<CredentialsSource, SyncError> {
    let namespace = cr.metadata.namespace.clone().unwrap_or_default();
    source_in(&namespace, cr.spec.credentials_ref.as_ref(), defaults)
}

/// [`source_for`] of a resource in the controller's cache.
pub fn cached_source_for(
    cr: &super::cached::CachedCertificate,
    defaults: &DefaultCredentials,
) -> Result<CredentialsSource, SyncError> {
    let namespace = cr.metadata.namespace.as_deref().unwrap_or_default();
    source_in(namespace, cr.spec.credentials_ref.as_ref(), defaults)
}

/// Where the credentials of a resource in `namespace` come from: its own `credentialsRef` (always a
/// Secret of that namespace), else the defaults where the namespace may use them. The one rule for every
/// namespaced kind (TencentCertificate, TencentCertificatePush).
pub fn source_in(
    namespace: &str,
    credentials_ref: Option<&CredentialsRef>,
    defaults: &DefaultCredentials,
) -> Result<CredentialsSource, SyncError> {
    let namespace = namespace.to_string();
    if let Some(reference) = credentials_ref {
        return Ok(CredentialsSource::Referenced(
            SecretRef {
                namespace,
                name: reference.name.clone(),
            },
            reference.clone(),
        ));
    }
    if defaults.pod_identity.is_some() && defaults.namespaces.allows(&namespace) {
        return Ok(CredentialsSource::PodIdentity);
    }
    match &defaults.secret {
        Some(secret) if defaults.namespaces.allows(&namespace) => {
            Ok(CredentialsSource::Default(secret.clone()))
        }
        _ if defaults.configured() => Err(SyncError::CredentialsNotFound(format!(
            "spec.credentialsRef is not set and namespace {namespace} may not use the operator's default \
             credentials; create a Secret with secretId and secretKey and set spec.credentialsRef.name"
        ))),
        _ => Err(SyncError::CredentialsNotFound(
            "spec.credentialsRef is not set and the operator has no default credentials; create a Secret \
             with secretId and secretKey and set spec.credentialsRef.name"
                .to_string(),
        )),
    }
}

/// Whether `secret` is where `cr` gets its credentials from (for re-syncing when it changes).
pub fn uses_secret(
    cr: &super::cached::CachedCertificate,
    defaults: &DefaultCredentials,
    secret: &SecretRef,
) -> bool {
    cached_source_for(cr, defaults).is_ok_and(|source| source.secret() == Some(secret))
}

/// Builds credentials from a Secret's data. Surrounding whitespace (a trailing newline from
/// `echo key > file`) is trimmed: Tencent keys never contain whitespace.
pub fn credentials_from_secret(
    secret: &Secret,
    reference: &SecretRef,
    keys: &CredentialsRef,
) -> Result<Credentials, SyncError> {
    let read = |key: &str| -> Option<String> {
        let data = secret.data.as_ref()?.get(key)?;
        let text = String::from_utf8_lossy(&data.0).trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    let missing = |key: &str| {
        SyncError::CredentialsNotFound(format!(
            "Secret {reference} has no non-empty key {key:?}; it needs {:?} and {:?} (and optionally {:?})",
            keys.secret_id_key, keys.secret_key_key, keys.token_key
        ))
    };
    let secret_id = read(&keys.secret_id_key).ok_or_else(|| missing(&keys.secret_id_key))?;
    let secret_key = read(&keys.secret_key_key).ok_or_else(|| missing(&keys.secret_key_key))?;
    let token = read(&keys.token_key);
    Credentials::new(secret_id, secret_key, token).map_err(|err| match err {
        // Names the Secret and the key, never the value: the key is the tenant's choice, and whatever it
        // holds (a token, a password) must not reach status, events or logs.
        CredentialsError::NotASecretId(_) => SyncError::InvalidCredentials(format!(
            "the value under key {:?} of Secret {reference} is not a Tencent Cloud SecretId (\"AKID\" \
             followed by letters, digits, '-' or '_'); nothing was sent to Tencent Cloud. Point \
             credentialsRef.secretIdKey at the key that holds the SecretId",
            keys.secret_id_key
        )),
        other => SyncError::CredentialsNotFound(format!(
            "Secret {reference} holds unusable credentials: {other}"
        )),
    })
}

/// The resourceVersion of the Secret `cr` takes its credentials from; `None` when there is none.
pub async fn secret_version(
    client: &kube::Client,
    cr: &TencentCertificate,
    defaults: &DefaultCredentials,
) -> Option<String> {
    let source = source_for(cr, defaults).ok()?;
    let reference = source.secret()?;
    let api: Api<kube::core::PartialObjectMeta<Secret>> =
        Api::namespaced(client.clone(), &reference.namespace);
    api.get_opt(&reference.name)
        .await
        .ok()
        .flatten()
        .and_then(|secret| secret.metadata.resource_version)
}

/// Where `cr`'s credentials come from, key read. Always from the API server: a rotated key must be used
/// by the very next attempt (a short cache here broke that on a real API server, e2e
/// `credentials_rotation`). A role's temporary credentials are then had from `tencent::Client::credentials`,
/// cached per source.
pub async fn resolve(
    client: &kube::Client,
    cr: &TencentCertificate,
    defaults: &DefaultCredentials,
) -> Result<sts::Source, SyncError> {
    resolve_source(client, source_for(cr, defaults)?, defaults).await
}

/// The credentials `source` ([`source_in`]) stands for, key read from the API server.
pub async fn resolve_source(
    client: &kube::Client,
    source: CredentialsSource,
    defaults: &DefaultCredentials,
) -> Result<sts::Source, SyncError> {
    let (reference, keys, role) = match source {
        CredentialsSource::Referenced(reference, keys) => {
            let role = keys
                .role
                .as_deref()
                .map(crate::crd::CredentialsRole::to_role);
            (reference, keys, role)
        }
        CredentialsSource::Default(reference) => (
            reference.clone(),
            CredentialsRef::named(reference.name.clone()),
            defaults.role.clone(),
        ),
        CredentialsSource::PodIdentity => {
            return defaults
                .pod_identity
                .clone()
                .map(sts::Source::WebIdentity)
                .ok_or_else(|| {
                    SyncError::CredentialsNotFound("pod identity is not configured".to_string())
                });
        }
    };
    let base = read_secret_credentials(client, &reference, &keys).await?;
    Ok(match role {
        Some(role) => sts::Source::AssumeRole { base, role },
        None => sts::Source::Static(base),
    })
}

/// Reads a key pair from the Secret `reference`, always from the API server (a rotated key must be used by
/// the very next attempt).
pub async fn read_secret_credentials(
    client: &kube::Client,
    reference: &SecretRef,
    keys: &CredentialsRef,
) -> Result<Credentials, SyncError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &reference.namespace);
    let secret = api
        .get_opt(&reference.name)
        .await
        .map_err(SyncError::kube("reading the credentials Secret"))?
        .ok_or_else(|| {
            SyncError::CredentialsNotFound(format!(
                "credentials Secret {reference} not found; create it with keys {:?} and {:?}",
                keys.secret_id_key, keys.secret_key_key
            ))
        })?;
    credentials_from_secret(&secret, reference, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn cr(namespace: &str, credentials: Option<&str>) -> TencentCertificate {
        let mut spec = serde_json::json!({"certificateId": "aBcD1234"});
        if let Some(name) = credentials {
            spec["credentialsRef"] = serde_json::json!({"name": name});
        }
        let mut cr = TencentCertificate::new("shop", serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(namespace.into());
        cr
    }

    fn defaults(allowed: &str) -> DefaultCredentials {
        DefaultCredentials {
            secret: Some("ops/tencent".parse().unwrap()),
            namespaces: NamespaceAllowList::parse(allowed),
            ..DefaultCredentials::default()
        }
    }

    #[test]
    fn secret_refs_parse() {
        assert_eq!(
            "ops/tencent".parse::<SecretRef>().unwrap(),
            SecretRef {
                namespace: "ops".into(),
                name: "tencent".into()
            }
        );
        for bad in ["", "ops", "/x", "x/", "a/b/c"] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_lists_parse() {
        assert_eq!(NamespaceAllowList::parse(""), NamespaceAllowList::None);
        assert_eq!(NamespaceAllowList::parse("*"), NamespaceAllowList::All);
        let some = NamespaceAllowList::parse("web, shop");
        assert!(some.allows("web") && some.allows("shop") && !some.allows("ops"));
    }

    #[test]
    fn a_reference_wins_over_the_defaults() {
        let source = source_for(&cr("web", Some("mine")), &defaults("*")).unwrap();
        assert!(
            matches!(source, CredentialsSource::Referenced(r, _) if r.to_string() == "web/mine")
        );
    }

    #[test]
    fn defaults_apply_only_to_allowed_namespaces() {
        assert_eq!(
            source_for(&cr("web", None), &defaults("web")).unwrap(),
            CredentialsSource::Default("ops/tencent".parse().unwrap())
        );
        let err = source_for(&cr("other", None), &defaults("web")).unwrap_err();
        assert_eq!(err.reason(), "CredentialsNotFound");
        assert!(
            err.to_string()
                .contains("may not use the operator's default")
        );
        let none = source_for(&cr("web", None), &DefaultCredentials::default()).unwrap_err();
        assert!(none.to_string().contains("no default credentials"));
    }

    #[test]
    fn pod_identity_serves_allowed_namespaces_without_a_secret() {
        let identity = WebIdentity {
            region: "ap-guangzhou".into(),
            provider_id: "cls-1".into(),
            role_arn: "qcs::cam::uin/100:roleName/certs".into(),
            token_file: "/var/run/secrets/tke/token".into(),
            session_name: "s".into(),
            duration_secs: 7200,
        };
        let d = DefaultCredentials {
            pod_identity: Some(identity),
            namespaces: NamespaceAllowList::parse("web"),
            ..DefaultCredentials::default()
        };
        assert_eq!(
            source_for(&cr("web", None), &d).unwrap(),
            CredentialsSource::PodIdentity
        );
        assert!(
            source_for(&cr("shop", None), &d)
                .unwrap_err()
                .to_string()
                .contains("may not use the operator's default")
        );
        // A reference still wins, and no Secret is "in use" by pod identity.
        assert!(matches!(
            source_for(&cr("web", Some("mine")), &d).unwrap(),
            CredentialsSource::Referenced(..)
        ));
        assert!(!uses_secret(
            &(&cr("web", None)).into(),
            &d,
            &"ops/tencent".parse().unwrap()
        ));
    }

    #[test]
    fn secrets_in_use_are_recognised() {
        let d = defaults("web");
        assert!(uses_secret(
            &(&cr("web", Some("mine"))).into(),
            &d,
            &"web/mine".parse().unwrap()
        ));
        assert!(!uses_secret(
            &(&cr("web", Some("mine"))).into(),
            &d,
            &"ops/tencent".parse().unwrap()
        ));
        assert!(uses_secret(
            &(&cr("web", None)).into(),
            &d,
            &"ops/tencent".parse().unwrap()
        ));
        assert!(!uses_secret(
            &(&cr("shop", None)).into(),
            &d,
            &"ops/tencent".parse().unwrap()
        ));
    }

    #[test]
    fn credentials_are_read_trimmed_and_validated() {
        let mut secret = Secret {
            data: Some(
                [
                    ("secretId".to_string(), ByteString(b"AKIDabc\n".to_vec())),
                    ("secretKey".to_string(), ByteString(b" key123 ".to_vec())),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let reference: SecretRef = "web/tencent".parse().unwrap();
        let keys = CredentialsRef::named("tencent");
        let creds = credentials_from_secret(&secret, &reference, &keys).unwrap();
        assert_eq!(creds.secret_id(), "AKIDabc");
        secret.data.as_mut().unwrap().remove("secretKey");
        let err = credentials_from_secret(&secret, &reference, &keys).unwrap_err();
        assert!(err.to_string().contains("\"secretKey\""), "{err}");
        assert!(!err.to_string().contains("AKIDabc"));
    }
}
