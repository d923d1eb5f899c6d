//! Pure decisions of a ClusterTencentCertificate reconcile: which namespaces it targets, what each
//! namespace's Secret needs, and the status that results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use kube::{Resource as _, ResourceExt as _};
use sha2::Digest as _;

use super::crd::{
    ClusterTencentCertificate, ClusterTencentCertificateStatus, MAX_LISTED_FAILURES,
    NamespaceFailure,
};
use crate::crd::DeletionPolicy;
use crate::outputs::{self, OutputError, Passwords, Previous};
use crate::policy::{Decision, DownloadTrigger};
use crate::secret::{
    self, CERTIFICATE_NAME_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SecretParams,
};
use crate::status::{Attempt, CONDITION_READY, CONDITION_SYNCED, format_time};
use tencent_ssl::bundle::{CertBundle, CertMetadata};

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

/// Whether this Secret was written by the ClusterTencentCertificate `name` (by its labels, which anyone
/// who may edit Secrets in a namespace can set: see [`inventory`] for where such a Secret counts).
pub fn is_ours(secret: &Secret, name: &str) -> bool {
    labelled_ours(&secret.metadata, name)
}

fn labelled_ours(meta: &ObjectMeta, name: &str) -> bool {
    let labels = meta.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY_VALUE)
        && labels
            .and_then(|l| l.get(CLUSTER_CERTIFICATE_NAME_LABEL))
            .map(String::as_str)
            == Some(name)
}

/// The labels a create carries (see `secret::creation_core`): the ones that make the Secret ours.
pub const CREATED_LABELS: [&str; 2] = [MANAGED_BY_LABEL, CLUSTER_CERTIFICATE_NAME_LABEL];

/// The Secrets carrying our labels, from the metadata list, by what they may be used for.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Per targeted namespace, its Secret under `secretName`: the only Secret that counts as the
    /// namespace's own.
    pub own: BTreeMap<String, ObjectMeta>,
    /// Every other Secret with our labels: under an old `secretName`, in a namespace no longer targeted,
    /// or a copy someone planted. Never read and never a source of content; deleted once nothing needs
    /// them (see [`leftovers_to_delete`]).
    pub leftovers: Vec<ObjectMeta>,
}

pub fn inventory(
    cr: &ClusterTencentCertificate,
    listed: Vec<ObjectMeta>,
    targeted: &[String],
) -> Inventory {
    let name = cr.name_any();
    let mut inventory = Inventory::default();
    for meta in listed.into_iter().filter(|m| labelled_ours(m, &name)) {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let own = meta.name.as_deref() == Some(cr.spec.secret_name.as_str())
            && targeted.contains(&namespace);
        if own {
            inventory.own.insert(namespace, meta);
        } else {
            inventory.leftovers.push(meta);
        }
    }
    inventory
}

/// A certificate and the id it was downloaded under.
#[derive(Debug, Clone)]
pub struct HeldCertificate {
    pub id: String,
    pub bundle: Arc<CertBundle>,
}

/// The content the operator may write without downloading: only a certificate whose id and fingerprint are
/// the status's (what it last downloaded). First the one this process holds in memory; else one of the
/// targeted namespaces' own Secrets (`read`, under `secretName` and labelled ours) whose fingerprint —
/// computed from its `tls.crt`, never taken from its annotations — is the status's. Whatever a tenant
/// edited or planted fails this and so never feeds another namespace; it is repaired from what passes, or
/// from a download when nothing does.
pub fn trusted_content(
    cr: &ClusterTencentCertificate,
    held: Option<&HeldCertificate>,
    inventory: &Inventory,
    read: &BTreeMap<String, Option<Secret>>,
) -> Option<HeldCertificate> {
    let status = cr.status.as_ref()?;
    let id = status.certificate_id.as_deref()?;
    let fingerprint = status.fingerprint_sha256.as_deref()?;
    if let Some(held) = held
        && held.id == id
        && held.bundle.meta.fingerprint_sha256 == fingerprint
    {
        return Some(held.clone());
    }
    let name = cr.name_any();
    read.iter()
        .filter(|(ns, _)| inventory.own.contains_key(*ns))
        .filter_map(|(_, secret)| secret.as_ref())
        .filter(|secret| is_ours(secret, &name))
        .filter_map(|secret| crate::controller::reconcile::read_secret_bundle(secret)?.ok())
        .find(|bundle| bundle.meta.fingerprint_sha256 == fingerprint)
        .map(|bundle| HeldCertificate {
            id: id.to_string(),
            bundle: Arc::new(bundle),
        })
}

/// A namespace's Secret as the operator last found it (or wrote it) matching what it wanted: its
/// resourceVersion then, and a digest of the desired Secret. The same version for the same desired Secret
/// needs no read: nobody has changed it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub resource_version: String,
    pub desired: [u8; 32],
}

/// A digest of everything the desired Secret says (kept in memory only: it covers the private key).
pub fn desired_digest(desired: &Secret) -> [u8; 32] {
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    sha2::Sha256::digest(&bytes).into()
}

pub fn known_up_to_date(
    verified: Option<&Verified>,
    own: Option<&ObjectMeta>,
    desired: &[u8; 32],
) -> bool {
    match (verified, own.and_then(|m| m.resource_version.as_deref())) {
        (Some(v), Some(rv)) => v.resource_version == rv && &v.desired == desired,
        _ => false,
    }
}

/// The leftovers that go now (`deletionPolicy: Delete`; `Retain` keeps them all): in a namespace no
/// longer targeted, at once; in a targeted one, only once that namespace's Secret under `secretName` is in
/// place (`settled`), so the operator never leaves a namespace without the Secret — e.g. after a
/// `secretName` change, the new Secret is written first and the old one deleted after.
pub fn leftovers_to_delete<'a>(
    cr: &ClusterTencentCertificate,
    inventory: &'a Inventory,
    targeted: &[String],
    settled: &BTreeSet<String>,
) -> Vec<&'a ObjectMeta> {
    if cr.spec.deletion_policy == DeletionPolicy::Retain {
        return Vec::new();
    }
    inventory
        .leftovers
        .iter()
        .filter(|meta| {
            let ns = meta.namespace.clone().unwrap_or_default();
            !targeted.contains(&ns) || settled.contains(&ns)
        })
        .collect()
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

/// What the decision of a cluster reconcile looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub previous: &'a ClusterTencentCertificateStatus,
    pub generation: Option<i64>,
    /// Some content may be written without a download (see [`trusted_content`]).
    pub serving: bool,
    pub now: jiff::Timestamp,
}

type Check = fn(&Observed<'_>) -> Option<Decision>;

/// Whether Tencent Cloud is asked, in order: nothing trusted to write (a first sync, or every Secret
/// edited), a spec change, the refresh or retry time. Nothing firing: write the trusted content.
const CHECKS: &[Check] = &[check_missing, check_spec_changed, check_due];

/// The decision of a cluster reconcile: [`Decision::Download`] with its trigger, or up to date (the
/// trusted content is written where it is missing or wrong).
pub fn decide(observed: &Observed<'_>) -> Decision {
    crate::policy::first_hit(CHECKS, observed)
}

fn check_missing(o: &Observed<'_>) -> Option<Decision> {
    (!o.serving).then_some(Decision::Download(DownloadTrigger::SecretMissing))
}

fn check_spec_changed(o: &Observed<'_>) -> Option<Decision> {
    (o.previous.observed_generation != o.generation)
        .then_some(Decision::Download(DownloadTrigger::SpecChanged))
}

fn check_due(o: &Observed<'_>) -> Option<Decision> {
    let next = o
        .previous
        .next_sync_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    next.is_none_or(|t| t <= o.now)
        .then_some(Decision::Download(DownloadTrigger::RefreshDue))
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
        // The renewal step's reporter sets the new one.
        renewal: previous.renewal.clone(),
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
    status.conditions.push(ready_condition(input, &failures));
    status.conditions.extend(synced_condition(input));
    status
}

/// Synced: how the last attempt went (kept as it was when nothing was attempted).
fn synced_condition(input: &StatusInput<'_>) -> Option<Condition> {
    match &input.attempt {
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
        Attempt::NotNeeded => input.previous.condition(CONDITION_SYNCED).cloned(),
    }
}

/// Ready: every targeted namespace holds a valid certificate; else why not (no namespace, no or an expired
/// certificate, the failing namespaces, sorted, listed by their first few).
fn ready_condition(input: &StatusInput<'_>, failures: &[NamespaceFailure]) -> Condition {
    let failed = failures.len();
    let expired = input
        .serving
        .is_some_and(|(_, meta)| meta.is_expired_at(input.now));
    if input.targeted == 0 {
        return condition(
            CONDITION_READY,
            false,
            REASON_NO_NAMESPACES,
            "the target selects no namespace: check spec.namespaceSelector and spec.namespaces"
                .into(),
            input,
        );
    }
    if input.serving.is_none() || expired {
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
        return condition(CONDITION_READY, false, &reason, message, input);
    }
    if failed > 0 {
        let listed: Vec<String> = failures
            .iter()
            .take(5)
            .map(|f| format!("{} ({})", f.namespace, f.reason))
            .collect();
        return condition(
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
        );
    }
    let id = input.serving.map(|(id, _)| id).unwrap_or_default();
    condition(
        CONDITION_READY,
        true,
        crate::status::REASON_READY,
        format!("all {} namespaces hold certificate {id}", input.targeted),
        input,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tencent_is_asked_for_missing_content_a_spec_change_or_when_due_in_that_order() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let synced = ClusterTencentCertificateStatus {
            observed_generation: Some(2),
            next_sync_time: Some("2026-01-01T01:00:00Z".into()),
            ..Default::default()
        };
        let observed = |previous, generation, serving| Observed {
            previous,
            generation: Some(generation),
            serving,
            now,
        };
        let download = |t| Decision::Download(t);
        assert_eq!(decide(&observed(&synced, 2, true)), Decision::UpToDate);
        assert_eq!(
            decide(&observed(&synced, 3, false)),
            download(DownloadTrigger::SecretMissing)
        );
        assert_eq!(
            decide(&observed(&synced, 3, true)),
            download(DownloadTrigger::SpecChanged)
        );
        let due = ClusterTencentCertificateStatus {
            next_sync_time: Some("2026-01-01T00:00:00Z".into()),
            ..synced.clone()
        };
        assert_eq!(
            decide(&observed(&due, 2, true)),
            download(DownloadTrigger::RefreshDue)
        );
        let never = ClusterTencentCertificateStatus {
            next_sync_time: None,
            ..synced.clone()
        };
        assert_eq!(
            decide(&observed(&never, 2, true)),
            download(DownloadTrigger::RefreshDue)
        );
    }
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
                key_algorithm: tencent_ssl::bundle::KeyAlgorithm::EcdsaP256,
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

    fn meta(namespace: &str, name: &str, ours: bool) -> ObjectMeta {
        let mut labels = BTreeMap::new();
        if ours {
            labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string());
            labels.insert(
                CLUSTER_CERTIFICATE_NAME_LABEL.to_string(),
                "wildcard".to_string(),
            );
        }
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            labels: Some(labels),
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_secret_under_secret_name_in_a_targeted_namespace_is_its_own() {
        let cr = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "s", "namespaces": ["a", "b"]}),
        );
        let listed = vec![
            meta("a", "s", true),
            meta("a", "decoy", true),
            meta("b", "s", false),
            meta("elsewhere", "s", true),
        ];
        let inventory = inventory(&cr, listed, &["a".to_string(), "b".to_string()]);
        assert_eq!(inventory.own.keys().collect::<Vec<_>>(), ["a"]);
        let leftovers: Vec<_> = inventory
            .leftovers
            .iter()
            .map(|m| (m.namespace.as_deref().unwrap(), m.name.as_deref().unwrap()))
            .collect();
        assert_eq!(leftovers, [("a", "decoy"), ("elsewhere", "s")]);
    }

    #[test]
    fn leftovers_go_once_the_namespace_is_settled_and_never_with_retain() {
        let delete = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "new", "namespaces": ["a", "b"]}),
        );
        let retain = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "new", "namespaces": ["a", "b"], "deletionPolicy": "Retain"}),
        );
        let targeted = ["a".to_string(), "b".to_string()];
        let listed = || {
            vec![
                meta("a", "old", true),
                meta("b", "old", true),
                meta("gone", "old", true),
            ]
        };
        let settled: BTreeSet<String> = ["a".to_string()].into();
        let inv = inventory(&delete, listed(), &targeted);
        let going: Vec<_> = leftovers_to_delete(&delete, &inv, &targeted, &settled)
            .into_iter()
            .map(|m| m.namespace.clone().unwrap())
            .collect();
        // b's new Secret is not in place yet: its old one stays.
        assert_eq!(going, ["a", "gone"]);
        let inv = inventory(&retain, listed(), &targeted);
        assert!(leftovers_to_delete(&retain, &inv, &targeted, &settled).is_empty());
    }

    fn pem_secret(namespace: &str, name: &str, crt: &str, key: &str) -> Secret {
        Secret {
            metadata: meta(namespace, name, true),
            data: Some(
                [
                    (
                        "tls.crt".to_string(),
                        k8s_openapi::ByteString(crt.as_bytes().to_vec()),
                    ),
                    (
                        "tls.key".to_string(),
                        k8s_openapi::ByteString(key.as_bytes().to_vec()),
                    ),
                ]
                .into(),
            ),
            ..Secret::default()
        }
    }

    fn pair() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["*.example.com".to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn content_is_trusted_only_when_its_computed_fingerprint_is_the_status_one() {
        let genuine = pair();
        let forged = pair();
        let genuine_bundle = tencent_ssl::bundle::from_pem_entries(&[
            ("tls.crt", genuine.0.as_bytes()),
            ("tls.key", genuine.1.as_bytes()),
        ])
        .unwrap();
        let mut cr = cr(
            serde_json::json!({"certificateId": "abc", "secretName": "s", "namespaces": ["a", "b"]}),
        );
        cr.status = Some(ClusterTencentCertificateStatus {
            certificate_id: Some("abc".into()),
            fingerprint_sha256: Some(genuine_bundle.meta.fingerprint_sha256.clone()),
            ..Default::default()
        });
        let targeted = ["a".to_string(), "b".to_string()];
        let listed = vec![
            meta("a", "s", true),
            meta("b", "s", true),
            meta("c", "s", true),
        ];
        let inv = inventory(&cr, listed, &targeted);
        // The forged Secret sorts first and carries the genuine annotations: it is not taken.
        let mut forged_secret = pem_secret("a", "s", &forged.0, &forged.1);
        forged_secret.metadata.annotations = Some(
            [(
                secret::FINGERPRINT_ANNOTATION.to_string(),
                genuine_bundle.meta.fingerprint_sha256.clone(),
            )]
            .into(),
        );
        let mut read: BTreeMap<String, Option<Secret>> = [
            ("a".to_string(), Some(forged_secret)),
            (
                "b".to_string(),
                Some(pem_secret("b", "s", &genuine.0, &genuine.1)),
            ),
        ]
        .into();
        let trusted = trusted_content(&cr, None, &inv, &read).expect("b's Secret matches");
        assert_eq!(
            trusted.bundle.meta.fingerprint_sha256,
            genuine_bundle.meta.fingerprint_sha256
        );
        // Only the forged one left (and a genuine copy outside the target, never read as a source).
        read.insert("b".into(), Some(pem_secret("b", "s", &forged.0, &forged.1)));
        read.insert(
            "c".into(),
            Some(pem_secret("c", "s", &genuine.0, &genuine.1)),
        );
        assert!(trusted_content(&cr, None, &inv, &read).is_none());
        // What this process holds wins when it matches the status, and only then.
        let held = HeldCertificate {
            id: "abc".into(),
            bundle: Arc::new(genuine_bundle.clone()),
        };
        assert!(trusted_content(&cr, Some(&held), &inv, &read).is_some());
        let stale = HeldCertificate {
            id: "other".into(),
            bundle: Arc::new(genuine_bundle),
        };
        assert!(trusted_content(&cr, Some(&stale), &inv, &read).is_none());
    }

    #[test]
    fn a_secret_needs_no_read_only_at_the_version_verified_for_the_same_desired_secret() {
        let own = meta("a", "s", true);
        let desired = desired_digest(&Secret::default());
        let verified = Verified {
            resource_version: "7".into(),
            desired,
        };
        assert!(known_up_to_date(Some(&verified), Some(&own), &desired));
        assert!(!known_up_to_date(None, Some(&own), &desired));
        assert!(!known_up_to_date(Some(&verified), None, &desired));
        let mut edited = own.clone();
        edited.resource_version = Some("8".into());
        assert!(!known_up_to_date(Some(&verified), Some(&edited), &desired));
        let other = desired_digest(&pem_secret("a", "s", "x", "y"));
        assert!(!known_up_to_date(Some(&verified), Some(&own), &other));
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
