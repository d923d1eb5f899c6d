//! The desired `kubernetes.io/tls` Secret for a certificate bundle (design.md §4), and comparisons the
//! controller uses to skip writes. Pure: no I/O, no clock.
//!
//! Note: k8s-openapi's `Debug` for `Secret` prints `data` (the private key) as bytes; never log a Secret
//! with `{:?}`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use tencent_ssl::bundle::CertBundle;

/// The Secret type written.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Data key of the certificate chain (leaf then intermediates).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Data key of the private key.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
/// Data key of the root CA (when the ZIP has it and `includeCA`).
pub const CA_CERT_KEY: &str = "ca.crt";

/// Server-side apply field manager.
pub const FIELD_MANAGER: &str = "tencent-cert-operator";
/// Standard label naming the managing tool.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "tencent-cert-operator";
/// Label holding the name of the `TencentCertificate` that owns the Secret.
pub const CERTIFICATE_NAME_LABEL: &str = "tencentcert.io/certificate-name";

/// Annotation: the Tencent Cloud certificate ID the Secret holds.
pub const CERTIFICATE_ID_ANNOTATION: &str = "tencentcert.io/certificate-id";
/// Annotation: the leaf's notAfter, RFC 3339 UTC, seconds precision.
pub const NOT_AFTER_ANNOTATION: &str = "tencentcert.io/not-after";
/// Annotation: lowercase hex SHA-256 of the leaf's DER.
pub const FINGERPRINT_ANNOTATION: &str = "tencentcert.io/fingerprint-sha256";
/// Annotation: the leaf's DNS SANs, comma-separated.
pub const DNS_NAMES_ANNOTATION: &str = "tencentcert.io/dns-names";
/// Annotation on an existing Secret: `"true"` lets the operator take over a Secret that is not its own.
pub const ADOPT_ANNOTATION: &str = "tencentcert.io/adopt";

/// What the desired Secret is built from, besides the bundle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretParams {
    pub namespace: String,
    /// The Secret's name (`spec.secretName`, default the CR's name).
    pub name: String,
    /// The `TencentCertificate`'s name, for [`CERTIFICATE_NAME_LABEL`].
    pub certificate_name: String,
    /// The Tencent Cloud certificate ID the bundle came from.
    pub certificate_id: String,
    /// The owner reference to the CR; `Some` for `deletionPolicy: Delete`.
    pub owner: Option<OwnerReference>,
    /// `spec.secretTemplate.labels`; the operator's own labels win on a clash.
    pub template_labels: BTreeMap<String, String>,
    /// `spec.secretTemplate.annotations`; the operator's own annotations win on a clash.
    pub template_annotations: BTreeMap<String, String>,
    /// `spec.includeCA`: write `ca.crt` when the bundle has a root.
    pub include_ca: bool,
    /// The outputs derived from the bundle besides `tls.crt`, `tls.key` and `ca.crt` (their data keys never
    /// clash with those: the CRD refuses such a `certificateIdKey`, and they would lose here).
    pub outputs: crate::outputs::Derived,
}

/// The Secret the operator wants for `bundle`. Deterministic: the same inputs give an equal Secret.
pub fn desired(params: &SecretParams, bundle: &CertBundle) -> Secret {
    let mut labels = params.template_labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    labels.insert(
        CERTIFICATE_NAME_LABEL.to_owned(),
        params.certificate_name.clone(),
    );

    let mut annotations = params.template_annotations.clone();
    annotations.extend(params.outputs.annotations.clone());
    annotations.insert(
        CERTIFICATE_ID_ANNOTATION.to_owned(),
        params.certificate_id.clone(),
    );
    annotations.insert(
        NOT_AFTER_ANNOTATION.to_owned(),
        rfc3339_seconds(bundle.meta.not_after),
    );
    annotations.insert(
        FINGERPRINT_ANNOTATION.to_owned(),
        bundle.meta.fingerprint_sha256.clone(),
    );
    annotations.insert(
        DNS_NAMES_ANNOTATION.to_owned(),
        bundle.meta.dns_names.join(","),
    );

    let mut data = params.outputs.data.clone();
    data.insert(
        TLS_CERT_KEY.to_owned(),
        ByteString(bundle.chain_pem.clone().into_bytes()),
    );
    data.insert(
        TLS_PRIVATE_KEY_KEY.to_owned(),
        ByteString(bundle.key_pem.clone().into_bytes()),
    );
    if params.include_ca
        && let Some(ca_pem) = &bundle.ca_pem
    {
        data.insert(
            CA_CERT_KEY.to_owned(),
            ByteString(ca_pem.clone().into_bytes()),
        );
    }

    Secret {
        metadata: ObjectMeta {
            name: Some(params.name.clone()),
            namespace: Some(params.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: params.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The part of `desired` that a create carries: what every Secret the operator writes holds (its type,
/// `tls.crt`, `tls.key`, the labels named in `kept_labels` and the operator's own annotations).
///
/// Why not all of it: a create is the only write that fails when the name is taken (so a Secret someone
/// else created after the read is never taken over), but the fields it writes belong to a managedFields
/// entry of operation `Update` that a later server-side apply cannot remove. So the create holds only
/// fields that are always wanted, and everything optional (template labels and annotations, `ca.crt`,
/// additional outputs, the owner reference) comes with the apply that follows, which can take it away again.
pub fn creation_core(desired: &Secret, kept_labels: &[&str]) -> Secret {
    const ALWAYS_ANNOTATED: [&str; 4] = [
        CERTIFICATE_ID_ANNOTATION,
        NOT_AFTER_ANNOTATION,
        FINGERPRINT_ANNOTATION,
        DNS_NAMES_ANNOTATION,
    ];
    let keep = |map: Option<&BTreeMap<String, String>>, keys: &[&str]| {
        map.map(|m| {
            m.iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Secret {
        metadata: ObjectMeta {
            name: desired.metadata.name.clone(),
            namespace: desired.metadata.namespace.clone(),
            labels: keep(desired.metadata.labels.as_ref(), kept_labels),
            annotations: keep(desired.metadata.annotations.as_ref(), &ALWAYS_ANNOTATED),
            ..ObjectMeta::default()
        },
        type_: desired.type_.clone(),
        data: desired.data.as_ref().map(|data| {
            data.iter()
                .filter(|(k, _)| *k == TLS_CERT_KEY || *k == TLS_PRIVATE_KEY_KEY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ..Secret::default()
    }
}

/// Whether `existing` already has everything `desired` sets: no write needed. Labels, annotations and owner
/// references that others added to `existing` are ignored.
pub fn content_matches(existing: &Secret, desired: &Secret) -> bool {
    data_matches(existing, desired) && metadata_matches(existing, desired)
}

/// Same type and exactly the same data keys and bytes (a stale `ca.crt` counts as a difference).
pub fn data_matches(existing: &Secret, desired: &Secret) -> bool {
    existing.type_ == desired.type_ && existing.data == desired.data
}

/// Every label and annotation of `desired` is on `existing` with the same value, and so is its owner
/// reference (compared by UID). Drift here is repaired without re-downloading the certificate.
pub fn metadata_matches(existing: &Secret, desired: &Secret) -> bool {
    let owners_present = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|wanted| {
            existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.uid == wanted.uid)
        });
    is_subset(
        desired.metadata.labels.as_ref(),
        existing.metadata.labels.as_ref(),
    ) && is_subset(
        desired.metadata.annotations.as_ref(),
        existing.metadata.annotations.as_ref(),
    ) && owners_present
}

/// Whether `existing` belongs to the `TencentCertificate` named `certificate_name` (with UID `owner_uid`):
/// it carries an owner reference to it, or its [`CERTIFICATE_NAME_LABEL`] names it (design.md §4).
pub fn is_owned_by(existing: &Secret, certificate_name: &str, owner_uid: &str) -> bool {
    let labelled = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(CERTIFICATE_NAME_LABEL))
        .is_some_and(|name| name == certificate_name);
    let referenced = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == owner_uid);
    labelled || referenced
}

/// Whether the owner of a Secret that is not ours consented to a take-over ([`ADOPT_ANNOTATION`] `"true"`).
pub fn adoption_allowed(existing: &Secret) -> bool {
    existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ADOPT_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-03-01T12:00:00Z`.
fn rfc3339_seconds(timestamp: jiff::Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_subset(
    wanted: Option<&BTreeMap<String, String>>,
    present: Option<&BTreeMap<String, String>>,
) -> bool {
    wanted
        .into_iter()
        .flatten()
        .all(|(key, value)| present.and_then(|present| present.get(key)) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tencent_ssl::bundle::{CertMetadata, KeyAlgorithm};

    const KEY_BODY: &str = "MC4CAQAwBQYDK2VwBCIEIFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAK";

    fn bundle(with_ca: bool) -> CertBundle {
        CertBundle {
            chain_pem: "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nSU5U\n-----END CERTIFICATE-----\n".to_owned(),
            key_pem: format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"),
            ca_pem: with_ca.then(|| "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n".to_owned()),
            meta: CertMetadata {
                not_before: jiff::Timestamp::from_second(1_767_225_600).expect("time"),
                not_after: jiff::Timestamp::from_second(1_775_001_600).expect("time"),
                serial_hex: "4a1b".to_owned(),
                fingerprint_sha256: "ab".repeat(32),
                subject_cn: Some("www.example.test".to_owned()),
                dns_names: vec!["www.example.test".to_owned(), "*.example.test".to_owned()],
                ip_addresses: Vec::new(),
                issuer_cn: Some("Test CA".to_owned()),
                key_algorithm: KeyAlgorithm::EcdsaP256,
            },
        }
    }

    fn params() -> SecretParams {
        SecretParams {
            namespace: "web".to_owned(),
            name: "www-tls".to_owned(),
            certificate_name: "www".to_owned(),
            certificate_id: "aBcD1234".to_owned(),
            owner: None,
            template_labels: BTreeMap::from([("team".to_owned(), "edge".to_owned())]),
            template_annotations: BTreeMap::from([("note".to_owned(), "hello".to_owned())]),
            include_ca: true,
            outputs: crate::outputs::Derived::default(),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "tencentcert.io/v1alpha1".to_owned(),
            kind: "TencentCertificate".to_owned(),
            name: "www".to_owned(),
            uid: "0b5e6c1e-0000-4000-8000-000000000001".to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn data_text(secret: &Secret, key: &str) -> Option<String> {
        secret
            .data
            .as_ref()?
            .get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
    }

    fn label(secret: &Secret, key: &str) -> Option<String> {
        secret.metadata.labels.as_ref()?.get(key).cloned()
    }

    fn annotation(secret: &Secret, key: &str) -> Option<String> {
        secret.metadata.annotations.as_ref()?.get(key).cloned()
    }

    #[test]
    fn desired_secret_holds_chain_key_and_metadata() {
        let bundle = bundle(true);
        let secret = desired(&params(), &bundle);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.metadata.name.as_deref(), Some("www-tls"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("web"));
        assert_eq!(
            data_text(&secret, "tls.crt"),
            Some(bundle.chain_pem.clone())
        );
        assert_eq!(data_text(&secret, "tls.key"), Some(bundle.key_pem.clone()));
        assert_eq!(data_text(&secret, "ca.crt"), bundle.ca_pem.clone());
        assert_eq!(
            label(&secret, "app.kubernetes.io/managed-by").as_deref(),
            Some("tencent-cert-operator")
        );
        assert_eq!(
            label(&secret, "tencentcert.io/certificate-name").as_deref(),
            Some("www")
        );
        assert_eq!(label(&secret, "team").as_deref(), Some("edge"));
        assert_eq!(
            annotation(&secret, "tencentcert.io/certificate-id").as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(
            annotation(&secret, "tencentcert.io/not-after").as_deref(),
            Some("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            annotation(&secret, "tencentcert.io/fingerprint-sha256"),
            Some("ab".repeat(32))
        );
        assert_eq!(
            annotation(&secret, "tencentcert.io/dns-names").as_deref(),
            Some("www.example.test,*.example.test")
        );
        assert_eq!(annotation(&secret, "note").as_deref(), Some("hello"));
        assert_eq!(secret.string_data, None);
        assert_eq!(secret.immutable, None);
    }

    #[test]
    fn not_after_annotation_drops_subseconds() {
        let mut bundle = bundle(false);
        bundle.meta.not_after = jiff::Timestamp::new(1_775_001_600, 999_000_000).expect("time");
        let secret = desired(&params(), &bundle);
        assert_eq!(
            annotation(&secret, NOT_AFTER_ANNOTATION).as_deref(),
            Some("2026-04-01T00:00:00Z")
        );
    }

    #[test]
    fn includes_ca_only_when_requested_and_present() {
        let with_root = bundle(true);
        let without_root = bundle(false);
        let off = SecretParams {
            include_ca: false,
            ..params()
        };
        assert!(data_text(&desired(&params(), &with_root), "ca.crt").is_some());
        assert!(data_text(&desired(&off, &with_root), "ca.crt").is_none());
        assert!(data_text(&desired(&params(), &without_root), "ca.crt").is_none());
        assert_eq!(
            desired(&off, &with_root).data.map(|data| data.len()),
            Some(2)
        );
    }

    #[test]
    fn operator_labels_and_annotations_win_over_template() {
        let mut params = params();
        params
            .template_labels
            .insert(CERTIFICATE_NAME_LABEL.to_owned(), "forged".to_owned());
        params
            .template_labels
            .insert(MANAGED_BY_LABEL.to_owned(), "someone-else".to_owned());
        params
            .template_annotations
            .insert(CERTIFICATE_ID_ANNOTATION.to_owned(), "forged".to_owned());
        params
            .template_annotations
            .insert(FINGERPRINT_ANNOTATION.to_owned(), "forged".to_owned());
        let secret = desired(&params, &bundle(true));
        assert_eq!(
            label(&secret, CERTIFICATE_NAME_LABEL).as_deref(),
            Some("www")
        );
        assert_eq!(
            label(&secret, MANAGED_BY_LABEL).as_deref(),
            Some(MANAGED_BY_VALUE)
        );
        assert_eq!(
            annotation(&secret, CERTIFICATE_ID_ANNOTATION).as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(
            annotation(&secret, FINGERPRINT_ANNOTATION),
            Some("ab".repeat(32))
        );
        assert_eq!(label(&secret, "team").as_deref(), Some("edge"));
    }

    #[test]
    fn owner_reference_only_for_delete_policy() {
        let retained = desired(&params(), &bundle(true));
        assert_eq!(retained.metadata.owner_references, None);
        let owned = desired(
            &SecretParams {
                owner: Some(owner()),
                ..params()
            },
            &bundle(true),
        );
        assert_eq!(owned.metadata.owner_references, Some(vec![owner()]));
    }

    #[test]
    fn desired_is_byte_stable() {
        let first = desired(&params(), &bundle(true));
        let second = desired(&params(), &bundle(true));
        assert_eq!(first, second);
        let first_json = serde_json::to_vec(&first).expect("json");
        assert_eq!(first_json, serde_json::to_vec(&second).expect("json"));
    }

    #[test]
    fn key_material_only_in_tls_key() {
        let secret = desired(&params(), &bundle(true));
        let data = secret.data.clone().unwrap_or_default();
        for (key, value) in &data {
            let text = String::from_utf8_lossy(&value.0);
            assert_eq!(text.contains(KEY_BODY), key == TLS_PRIVATE_KEY_KEY, "{key}");
            assert_eq!(
                text.contains("PRIVATE KEY"),
                key == TLS_PRIVATE_KEY_KEY,
                "{key}"
            );
        }
        let metadata = serde_json::to_string(&secret.metadata).expect("json");
        assert!(!metadata.contains(KEY_BODY) && !metadata.contains("PRIVATE KEY"));
    }

    #[test]
    fn content_matches_ignores_foreign_metadata_but_not_drift() {
        let wanted = desired(
            &SecretParams {
                owner: Some(owner()),
                ..params()
            },
            &bundle(true),
        );
        let mut existing = wanted.clone();
        assert!(content_matches(&existing, &wanted));

        // Others' labels, annotations and owners are not ours to judge.
        existing
            .metadata
            .labels
            .get_or_insert_default()
            .insert("added-by".to_owned(), "kyverno".to_owned());
        existing
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("kubectl.kubernetes.io/x".to_owned(), "y".to_owned());
        existing.metadata.resource_version = Some("42".to_owned());
        assert!(content_matches(&existing, &wanted));

        let mut label_drift = existing.clone();
        label_drift
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".to_owned(), "changed".to_owned());
        assert!(data_matches(&label_drift, &wanted) && !metadata_matches(&label_drift, &wanted));

        let mut owner_drift = existing.clone();
        owner_drift.metadata.owner_references = None;
        assert!(!metadata_matches(&owner_drift, &wanted));

        let mut data_drift = existing.clone();
        data_drift
            .data
            .get_or_insert_default()
            .insert("tls.key".to_owned(), ByteString(b"other".to_vec()));
        assert!(!data_matches(&data_drift, &wanted) && metadata_matches(&data_drift, &wanted));

        let mut stale_ca = desired(
            &SecretParams {
                owner: Some(owner()),
                ..params()
            },
            &bundle(true),
        );
        let wanted_without_ca = desired(
            &SecretParams {
                owner: Some(owner()),
                include_ca: false,
                ..params()
            },
            &bundle(true),
        );
        assert!(!data_matches(&stale_ca, &wanted_without_ca));
        stale_ca.type_ = Some("Opaque".to_owned());
        assert!(!content_matches(&stale_ca, &wanted));
    }

    #[test]
    fn derived_outputs_join_the_data_and_annotations_and_never_replace_ours() {
        let mut with_outputs = params();
        with_outputs.outputs.data.insert(
            "qcloud_cert_id".to_owned(),
            ByteString(b"aBcD1234".to_vec()),
        );
        with_outputs
            .outputs
            .data
            .insert(TLS_CERT_KEY.to_owned(), ByteString(b"not a chain".to_vec()));
        with_outputs.outputs.annotations.insert(
            "tencentcert.io/keystores-digest".to_owned(),
            "ab".repeat(32),
        );
        with_outputs
            .outputs
            .annotations
            .insert(CERTIFICATE_ID_ANNOTATION.to_owned(), "forged".to_owned());
        let bundle = bundle(true);
        let secret = desired(&with_outputs, &bundle);
        assert_eq!(
            data_text(&secret, "qcloud_cert_id").as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(
            data_text(&secret, TLS_CERT_KEY),
            Some(bundle.chain_pem.clone())
        );
        assert_eq!(
            annotation(&secret, "tencentcert.io/keystores-digest"),
            Some("ab".repeat(32))
        );
        assert_eq!(
            annotation(&secret, CERTIFICATE_ID_ANNOTATION).as_deref(),
            Some("aBcD1234")
        );
        assert_eq!(secret.type_.as_deref(), Some(TLS_SECRET_TYPE));
    }

    #[test]
    fn ownership_by_label_or_owner_reference() {
        let ours = desired(&params(), &bundle(true));
        assert!(is_owned_by(&ours, "www", "some-uid"));
        assert!(!is_owned_by(&ours, "other-cr", "some-uid"));

        let mut referenced = Secret::default();
        referenced.metadata.owner_references = Some(vec![owner()]);
        assert!(is_owned_by(&referenced, "renamed", &owner().uid));
        assert!(!is_owned_by(&Secret::default(), "www", &owner().uid));

        let mut foreign = Secret::default();
        assert!(!adoption_allowed(&foreign));
        foreign.metadata.annotations = Some(BTreeMap::from([(
            ADOPT_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        assert!(adoption_allowed(&foreign));
        foreign.metadata.annotations = Some(BTreeMap::from([(
            ADOPT_ANNOTATION.to_owned(),
            "yes".to_owned(),
        )]));
        assert!(!adoption_allowed(&foreign));
    }

    #[test]
    fn a_create_carries_only_what_is_always_written() {
        let mut params = params();
        params.owner = Some(owner());
        let full = desired(&params, &bundle(true));
        let core = creation_core(&full, &[MANAGED_BY_LABEL, CERTIFICATE_NAME_LABEL]);
        assert_eq!(core.type_.as_deref(), Some(TLS_SECRET_TYPE));
        assert_eq!(core.metadata.name.as_deref(), Some("www-tls"));
        let data = core.data.as_ref().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY]
        );
        assert_eq!(
            data[TLS_PRIVATE_KEY_KEY],
            full.data.as_ref().unwrap()[TLS_PRIVATE_KEY_KEY]
        );
        let labels = core.metadata.labels.as_ref().unwrap();
        assert!(labels.contains_key(CERTIFICATE_NAME_LABEL) && !labels.contains_key("team"));
        let annotations = core.metadata.annotations.as_ref().unwrap();
        assert!(
            annotations.contains_key(FINGERPRINT_ANNOTATION) && !annotations.contains_key("note")
        );
        assert!(
            core.metadata.owner_references.is_none(),
            "the apply sets it"
        );
        // Everything in the core is what the full Secret has: the apply after it changes no value.
        let full_data = full.data.as_ref().unwrap();
        assert!(data.iter().all(|(k, v)| full_data.get(k) == Some(v)));
        assert!(metadata_matches(&full, &core));
    }
}
