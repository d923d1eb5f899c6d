//! Pure decisions of a ClusterTencentCertificate reconcile: which namespaces it targets, what each
//! namespace's Secret needs, and the status that results.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{Resource as _, ResourceExt as _};

use super::crd::{
    ClusterTencentCertificate, ClusterTencentCertificateStatus, MAX_LISTED_FAILURES,
    NamespaceFailure,
};
use crate::bundle::{CertBundle, CertMetadata};
use crate::crd::DeletionPolicy;
use crate::outputs::{self, OutputError, Passwords, Previous};
use crate::secret::{
    self, CERTIFICATE_NAME_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SecretParams,
};
use crate::status::{Attempt, CONDITION_READY, CONDITION_SYNCED, format_time};

/// Label on every Secret a ClusterTencentCertificate wrote: its name. A different key from the one of
/// TencentCertificate's Secrets, so a namespaced resource and a cluster one of the same name never take
/// each other's Secrets.
pub const CLUSTER_CERTIFICATE_NAME_LABEL: &str = "tencentcert.io/cluster-certificate-name";

pub const REASON_NO_NAMESPACES: &str = "NoNamespaces";
pub const REASON_NAMESPACES_FAILING: &str = "NamespacesFailing";

/// A namespace as the target sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: nothing is written there any more.
    pub terminating: bool,
}

/// Whether the resource targets this namespace.
pub fn targets(cr: &ClusterTencentCertificate, namespace: &NamespaceInfo) -> bool {
    if namespace.terminating {
        return false;
    }
    cr.spec.namespaces.contains(&namespace.name)
        || cr
            .spec
            .namespace_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, &namespace.labels))
}

/// Kubernetes label selector semantics (`matchLabels` and `matchExpressions`, all must hold; an empty
/// selector matches everything). An unknown operator matches nothing, as the API server would refuse it.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_hold = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_hold && expressions_hold
}

/// Whether this Secret was written by the ClusterTencentCertificate `name`.
pub fn is_ours(secret: &Secret, name: &str) -> bool {
    let labels = secret.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY_VALUE)
        && labels
            .and_then(|l| l.get(CLUSTER_CERTIFICATE_NAME_LABEL))
            .map(String::as_str)
            == Some(name)
}

/// The Secret for one namespace: what a TencentCertificate would write (with the additional outputs the
/// spec asks for), labelled with the cluster resource's name instead, and owned by it with
/// `deletionPolicy: Delete`.
pub fn desired_secret(
    cr: &ClusterTencentCertificate,
    namespace: &str,
    certificate_id: &str,
    bundle: &CertBundle,
) -> Result<Secret, OutputError> {
    let (template_labels, template_annotations) = cr.secret_template();
    let params = SecretParams {
        namespace: namespace.to_string(),
        name: cr.spec.secret_name.clone(),
        certificate_name: cr.name_any(),
        certificate_id: certificate_id.to_string(),
        owner: match cr.spec.deletion_policy {
            DeletionPolicy::Delete => cr.controller_owner_ref(&()),
            DeletionPolicy::Retain => None,
        },
        template_labels,
        template_annotations,
        include_ca: cr.spec.include_ca,
        // No keystores here (the CRD refuses them), so no passwords and nothing randomized to keep.
        outputs: outputs::derive(
            bundle,
            certificate_id,
            &cr.spec.outputs,
            cr.spec.include_ca,
            &Passwords::default(),
            Previous::default(),
        )?,
    };
    let mut desired = secret::desired(&params, bundle);
    if let Some(labels) = desired.metadata.labels.as_mut() {
        labels.remove(CERTIFICATE_NAME_LABEL);
        labels.insert(CLUSTER_CERTIFICATE_NAME_LABEL.to_string(), cr.name_any());
    }
    Ok(desired)
}

/// What one namespace's Secret needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceAction {
    UpToDate,
    /// Create or update it; `recreate` when its `type` must change (immutable).
    Write {
        recreate: bool,
    },
    /// Someone else's Secret: never touched.
    Conflict(String),
}

pub fn namespace_action(
    cr: &ClusterTencentCertificate,
    existing: Option<&Secret>,
    desired: &Secret,
) -> NamespaceAction {
    let Some(existing) = existing else {
        return NamespaceAction::Write { recreate: false };
    };
    let name = cr.name_any();
    if !is_ours(existing, &name) && !secret::adoption_allowed(existing) {
        return NamespaceAction::Conflict(format!(
            "Secret {}/{} exists and is not managed by ClusterTencentCertificate {name}; delete or rename it, \
             or annotate it with tencentcert.io/adopt=\"true\" to let the operator take it over",
            existing.namespace().unwrap_or_default(),
            existing.name_any()
        ));
    }
    if existing.type_ != desired.type_ {
        return NamespaceAction::Write { recreate: true };
    }
    let uid = cr.uid().unwrap_or_default();
    let owned = |s: &Secret| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid)
    };
    if is_ours(existing, &name)
        && secret::data_matches(existing, desired)
        && secret::metadata_matches(existing, desired)
        && owned(existing) == owned(desired)
    {
        NamespaceAction::UpToDate
    } else {
        NamespaceAction::Write { recreate: false }
    }
}

/// Namespaces holding one of our Secrets that the target no longer selects, and whether the Secret goes.
pub fn released(
    cr: &ClusterTencentCertificate,
    ours: &BTreeMap<String, Secret>,
    targeted: &[String],
) -> Vec<String> {
    if cr.spec.deletion_policy == DeletionPolicy::Retain {
        return Vec::new();
    }
    ours.keys()
        .filter(|ns| !targeted.contains(ns))
        .cloned()
        .collect()
}

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    pub previous: &'a ClusterTencentCertificateStatus,
    pub generation: Option<i64>,
    pub targeted: usize,
    /// Failing namespaces with reason and message, any order.
    pub failures: Vec<NamespaceFailure>,
    /// The certificate the Secrets hold after this reconcile, if any.
    pub serving: Option<(&'a str, &'a CertMetadata)>,
    pub renewal_chain: Option<&'a [String]>,
    pub attempt: Attempt,
    /// A successful attempt downloaded (rather than confirmed from Tencent's listing).
    pub downloaded: bool,
    pub now: jiff::Timestamp,
    pub next_sync: Option<jiff::Timestamp>,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    input: &StatusInput<'_>,
) -> Condition {
    crate::status::condition(
        type_,
        ok,
        reason,
        message,
        input.generation,
        &input.previous.conditions,
        input.now,
    )
}

pub fn compute(input: &StatusInput<'_>) -> ClusterTencentCertificateStatus {
    let previous = input.previous;
    let mut failures = input.failures.clone();
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let failed = failures.len();
    let ready_namespaces = input.targeted.saturating_sub(failed);
    let mut status = ClusterTencentCertificateStatus {
        observed_generation: input.generation,
        targeted_namespaces: u32::try_from(input.targeted).unwrap_or(u32::MAX),
        ready_namespaces: u32::try_from(ready_namespaces).unwrap_or(u32::MAX),
        failed_namespaces: u32::try_from(failed).unwrap_or(u32::MAX),
        namespace_failures: failures.iter().take(MAX_LISTED_FAILURES).cloned().collect(),
        last_sync_time: previous.last_sync_time.clone(),
        last_download_time: previous.last_download_time.clone(),
        next_sync_time: input
            .next_sync
            .map(format_time)
            .or_else(|| previous.next_sync_time.clone()),
        renewal_chain: input
            .renewal_chain
            .map(<[String]>::to_vec)
            .unwrap_or_else(|| previous.renewal_chain.clone()),
        failures: match &input.attempt {
            Attempt::Succeeded => 0,
            Attempt::Failed { .. } => previous.failures.saturating_add(1),
            Attempt::NotNeeded => previous.failures,
        },
        ..ClusterTencentCertificateStatus::default()
    };
    if let Some((id, meta)) = input.serving {
        status.certificate_id = Some(id.to_string());
        status.not_before = Some(format_time(meta.not_before));
        status.not_after = Some(format_time(meta.not_after));
        status.serial_number = Some(meta.serial_hex.clone());
        status.fingerprint_sha256 = Some(meta.fingerprint_sha256.clone());
        status.dns_names = meta.dns_names.clone();
        status.issuer = meta.issuer_cn.clone();
    }
    if input.attempt == Attempt::Succeeded {
        status.last_sync_time = Some(format_time(input.now));
        if input.downloaded {
            status.last_download_time = Some(format_time(input.now));
        }
    }

    let synced = match &input.attempt {
        Attempt::Failed { reason, message } => Some(condition(
            CONDITION_SYNCED,
            false,
            reason,
            message.clone(),
            input,
        )),
        Attempt::Succeeded => Some(condition(
            CONDITION_SYNCED,
            true,
            "Synced",
            match input.serving {
                Some((id, _)) if input.downloaded => format!("downloaded certificate {id}"),
                Some((id, _)) => format!("Tencent Cloud lists certificate {id} unchanged"),
                None => "synced".to_string(),
            },
            input,
        )),
        Attempt::NotNeeded => previous.condition(CONDITION_SYNCED).cloned(),
    };

    let expired = input
        .serving
        .is_some_and(|(_, meta)| meta.is_expired_at(input.now));
    let ready = if input.targeted == 0 {
        condition(
            CONDITION_READY,
            false,
            REASON_NO_NAMESPACES,
            "the target selects no namespace: check spec.namespaceSelector and spec.namespaces"
                .into(),
            input,
        )
    } else if input.serving.is_none() || expired {
        let (reason, message) = match &input.attempt {
            Attempt::Failed { reason, message } => (reason.clone(), message.clone()),
            _ if expired => (
                crate::error::REASON_EXPIRED.to_string(),
                "the certificate in the Secrets has expired".to_string(),
            ),
            _ => (
                crate::status::REASON_PENDING.to_string(),
                "waiting for the first sync".to_string(),
            ),
        };
        condition(CONDITION_READY, false, &reason, message, input)
    } else if failed > 0 {
        let listed: Vec<String> = failures
            .iter()
            .take(5)
            .map(|f| format!("{} ({})", f.namespace, f.reason))
            .collect();
        condition(
            CONDITION_READY,
            false,
            REASON_NAMESPACES_FAILING,
            format!(
                "{failed} of {} namespaces do not hold the certificate: {}{}",
                input.targeted,
                listed.join(", "),
                if failed > listed.len() { ", …" } else { "" }
            ),
            input,
        )
    } else {
        let id = input.serving.map(|(id, _)| id).unwrap_or_default();
        condition(
            CONDITION_READY,
            true,
            crate::status::REASON_READY,
            format!("all {} namespaces hold certificate {id}", input.targeted),
            input,
        )
    };
    status.conditions.push(ready);
    status.conditions.extend(synced);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn cr(spec: serde_json::Value) -> ClusterTencentCertificate {
        let mut cr: ClusterTencentCertificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "tencentcert.io/v1alpha1", "kind": "ClusterTencentCertificate",
            "metadata": {"name": "wildcard", "uid": "u-1", "generation": 2},
            "spec": spec,
        }))
        .unwrap();
        cr.metadata.uid = Some("u-1".into());
        cr
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
        }
    }

    fn bundle() -> CertBundle {
        CertBundle {
            chain_pem: "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n"
                .to_owned(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".to_owned(),
            ca_pem: None,
            meta: CertMetadata {
                not_before: "2026-01-01T00:00:00Z".parse().unwrap(),
                not_after: "2099-01-01T00:00:00Z".parse().unwrap(),
                serial_hex: "4a1b".to_owned(),
                fingerprint_sha256: "ab".repeat(32),
                subject_cn: Some("*.example.com".to_owned()),
                dns_names: vec!["*.example.com".to_owned()],
                ip_addresses: Vec::new(),
                issuer_cn: Some("Test CA".to_owned()),
                key_algorithm: crate::bundle::KeyAlgorithm::EcdsaP256,
            },
        }
    }

    #[test]
    fn targets_by_name_or_selector_never_terminating() {
        let by_label = cr(serde_json::json!({
            "certificateId": "abc", "secretName": "wildcard-tls",
            "namespaceSelector": {"matchLabels": {"tls": "wildcard"}},
            "namespaces": ["extra"],
        }));
        assert!(targets(&by_label, &ns("web", &[("tls", "wildcard")])));
        assert!(targets(&by_label, &ns("extra", &[])));
        assert!(!targets(&by_label, &ns("other", &[("tls", "other")])));
        let mut gone = ns("web", &[("tls", "wildcard")]);
        gone.terminating = true;
        assert!(!targets(&by_label, &gone));
    }

    #[test]
    fn selector_expressions_follow_kubernetes() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let with = |r: LabelSelectorRequirement| LabelSelector {
            match_expressions: Some(vec![r]),
            match_labels: None,
        };
        assert!(selector_matches(
            &with(req("env", "In", &["prod", "stage"])),
            &labels
        ));
        assert!(!selector_matches(
            &with(req("env", "NotIn", &["prod"])),
            &labels
        ));
        assert!(selector_matches(
            &with(req("team", "NotIn", &["a"])),
            &labels
        ));
        assert!(selector_matches(&with(req("env", "Exists", &[])), &labels));
        assert!(selector_matches(
            &with(req("team", "DoesNotExist", &[])),
            &labels
        ));
        assert!(!selector_matches(&with(req("env", "Gt", &["1"])), &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }

    #[test]
    fn namespace_actions_respect_ownership() {
        let cr = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "wildcard-tls", "namespaces": ["web"]}),
        );
        let bundle = bundle();
        let desired = desired_secret(&cr, "web", "abc", &bundle).unwrap();
        let labels = desired.metadata.labels.clone().unwrap();
        assert_eq!(
            labels
                .get(CLUSTER_CERTIFICATE_NAME_LABEL)
                .map(String::as_str),
            Some("wildcard")
        );
        assert!(!labels.contains_key(CERTIFICATE_NAME_LABEL));
        assert_eq!(
            desired.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );

        assert_eq!(
            namespace_action(&cr, None, &desired),
            NamespaceAction::Write { recreate: false }
        );
        assert_eq!(
            namespace_action(&cr, Some(&desired), &desired),
            NamespaceAction::UpToDate
        );

        let mut edited = desired.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("tls.crt".into(), k8s_openapi::ByteString(b"x".to_vec()));
        assert_eq!(
            namespace_action(&cr, Some(&edited), &desired),
            NamespaceAction::Write { recreate: false }
        );

        let mut foreign = desired.clone();
        foreign.metadata.labels = None;
        foreign.metadata.namespace = Some("web".into());
        assert!(
            matches!(namespace_action(&cr, Some(&foreign), &desired), NamespaceAction::Conflict(m) if m.contains("web/wildcard-tls"))
        );
        foreign.metadata.annotations =
            Some([(secret::ADOPT_ANNOTATION.to_string(), "true".to_string())].into());
        assert_eq!(
            namespace_action(&cr, Some(&foreign), &desired),
            NamespaceAction::Write { recreate: false }
        );

        let mut opaque = desired.clone();
        opaque.type_ = Some("Opaque".into());
        assert_eq!(
            namespace_action(&cr, Some(&opaque), &desired),
            NamespaceAction::Write { recreate: true }
        );
    }

    #[test]
    fn additional_outputs_go_into_every_namespace() {
        let cr = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "wildcard-tls", "namespaces": ["web"],
            "additionalOutputFormats": [{"type": "CombinedPEM"}], "certificateIdKey": "qcloud_cert_id"}),
        );
        let bundle = bundle();
        let desired = desired_secret(&cr, "web", "abc", &bundle).unwrap();
        let data = desired.data.as_ref().unwrap();
        assert_eq!(data["qcloud_cert_id"].0, b"abc");
        assert_eq!(
            String::from_utf8(data["tls-combined.pem"].0.clone()).unwrap(),
            format!("{}{}", bundle.key_pem, bundle.chain_pem)
        );
        // Deterministic: the same inputs give the same Secret, so an unchanged wave writes nothing.
        assert_eq!(
            namespace_action(
                &cr,
                Some(&desired),
                &desired_secret(&cr, "web", "abc", &bundle).unwrap()
            ),
            NamespaceAction::UpToDate
        );
    }

    #[test]
    fn a_namespaced_resource_of_the_same_name_is_not_ours() {
        let cr = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "wildcard-tls", "namespaces": ["web"]}),
        );
        let mut namespaced = desired_secret(&cr, "web", "abc", &bundle()).unwrap();
        let labels = namespaced.metadata.labels.as_mut().unwrap();
        labels.remove(CLUSTER_CERTIFICATE_NAME_LABEL);
        labels.insert(CERTIFICATE_NAME_LABEL.into(), "wildcard".into());
        assert!(!is_ours(&namespaced, "wildcard"));
    }

    #[test]
    fn released_namespaces_follow_the_deletion_policy() {
        let delete =
            cr(serde_json::json!({"certificateId": "abc", "secretName": "s", "namespaces": ["a"]}));
        let retain = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "s", "namespaces": ["a"], "deletionPolicy": "Retain"}),
        );
        let ours: BTreeMap<String, Secret> = [
            ("a".to_string(), Secret::default()),
            ("b".to_string(), Secret::default()),
        ]
        .into();
        assert_eq!(
            released(&delete, &ours, &["a".to_string()]),
            vec!["b".to_string()]
        );
        assert!(released(&retain, &ours, &["a".to_string()]).is_empty());
    }

    #[test]
    fn status_counts_and_bounds_failures() {
        let bundle = bundle();
        let failures: Vec<NamespaceFailure> = (0..30)
            .map(|i| NamespaceFailure {
                namespace: format!("ns-{i:02}"),
                reason: "SecretConflict".into(),
                message: "x".into(),
            })
            .collect();
        let previous = ClusterTencentCertificateStatus::default();
        let now = jiff::Timestamp::now();
        let status = compute(&StatusInput {
            previous: &previous,
            generation: Some(2),
            targeted: 100,
            failures,
            serving: Some(("abc", &bundle.meta)),
            renewal_chain: None,
            attempt: Attempt::Succeeded,
            downloaded: true,
            now,
            next_sync: None,
        });
        assert_eq!(
            (
                status.targeted_namespaces,
                status.ready_namespaces,
                status.failed_namespaces
            ),
            (100, 70, 30)
        );
        assert_eq!(status.namespace_failures.len(), MAX_LISTED_FAILURES);
        assert_eq!(status.namespace_failures[0].namespace, "ns-00");
        let ready = status.condition(CONDITION_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_NAMESPACES_FAILING)
        );
        assert!(
            ready.message.starts_with("30 of 100 namespaces"),
            "{}",
            ready.message
        );
        assert!(status.is_true(CONDITION_SYNCED));
        assert_eq!(status.certificate_id.as_deref(), Some("abc"));
        assert!(status.last_download_time.is_some());

        let all_good = compute(&StatusInput {
            previous: &status,
            generation: Some(2),
            targeted: 3,
            failures: Vec::new(),
            serving: Some(("abc", &bundle.meta)),
            renewal_chain: None,
            attempt: Attempt::NotNeeded,
            downloaded: false,
            now,
            next_sync: None,
        });
        assert!(all_good.is_true(CONDITION_READY));
        assert!(
            all_good.is_true(CONDITION_SYNCED),
            "an attempt not needed keeps Synced"
        );

        let none = compute(&StatusInput {
            previous: &previous,
            generation: Some(1),
            targeted: 0,
            failures: Vec::new(),
            serving: None,
            renewal_chain: None,
            attempt: Attempt::NotNeeded,
            downloaded: false,
            now,
            next_sync: None,
        });
        assert_eq!(
            none.condition(CONDITION_READY).unwrap().reason,
            REASON_NO_NAMESPACES
        );
    }

    #[test]
    fn a_failed_fetch_without_secrets_says_why() {
        let previous = ClusterTencentCertificateStatus::default();
        let status = compute(&StatusInput {
            previous: &previous,
            generation: Some(1),
            targeted: 2,
            failures: Vec::new(),
            serving: None,
            renewal_chain: None,
            attempt: Attempt::Failed {
                reason: "AuthFailure".into(),
                message: "bad key".into(),
            },
            downloaded: false,
            now: jiff::Timestamp::now(),
            next_sync: None,
        });
        let ready = status.condition(CONDITION_READY).unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("AuthFailure", "bad key")
        );
        assert_eq!(status.failures, 1);
    }
}
