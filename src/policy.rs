//! What a reconcile must do, decided by an ordered chain of pure checks over what was observed — the shape
//! of cert-manager's certificate "policy checks". The first check that fires decides; no I/O here.

use k8s_openapi::api::core::v1::Secret;

use std::time::Duration;

use crate::crd::{DeletionPolicy, TencentCertificate};
use crate::secret::{self, CERTIFICATE_ID_ANNOTATION, FIELD_MANAGER, TLS_SECRET_TYPE};
use tencent_ssl::bundle::{BundleError, CertBundle, CertMetadata};
use tencent_ssl::priority::Priority;
use tencent_ssl::renewal::LinkInfo;

/// The annotation on a `TencentCertificate` whose every new value forces a re-download: at once, or at
/// the end of [`REFRESH_REQUEST_INTERVAL`] after the last one acted upon.
pub const REFRESH_REQUESTED_ANNOTATION: &str = "tencentcert.io/refresh-requested-at";

/// "Refresh now" is honoured at most once per this interval per resource. A request within it is
/// deferred to its end, not dropped: a tenant who rewrites the annotation in a loop gets one forced
/// download per minute per resource, not the whole Tencent budget.
pub const REFRESH_REQUEST_INTERVAL: Duration = Duration::from_secs(60);

/// The resource's `refresh-requested-at` value, if not acted upon yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRequest<'a> {
    /// No annotation, or its value was acted upon.
    None,
    /// A new value, to act upon now.
    Due(&'a str),
    /// A new value within [`REFRESH_REQUEST_INTERVAL`] of the last one acted upon: acted upon `until`.
    Deferred { until: jiff::Timestamp },
}

/// Whether the resource's refresh request is new, and whether it may be acted upon at `now`.
pub fn refresh_request(cr: &TencentCertificate, now: jiff::Timestamp) -> RefreshRequest<'_> {
    let Some(requested) = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REFRESH_REQUESTED_ANNOTATION))
    else {
        return RefreshRequest::None;
    };
    let status = cr.status.as_ref();
    if status.and_then(|s| s.last_refresh_request.as_ref()) == Some(requested) {
        return RefreshRequest::None;
    }
    let honoured_at = status
        .and_then(|s| s.last_refresh_request_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let until = honoured_at.and_then(|at| at.checked_add(REFRESH_REQUEST_INTERVAL).ok());
    match until {
        Some(until) if now < until => RefreshRequest::Deferred { until },
        _ => RefreshRequest::Due(requested),
    }
}

/// Whose Secret is at the target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    Ours,
    /// Not ours, but its owner consented (`tencentcert.io/adopt: "true"`).
    Adoptable,
    Foreign,
}

pub fn ownership(cr: &TencentCertificate, existing: Option<&Secret>) -> Ownership {
    let Some(existing) = existing else {
        return Ownership::Absent;
    };
    let name = cr.metadata.name.as_deref().unwrap_or_default();
    let uid = cr.metadata.uid.as_deref().unwrap_or_default();
    if secret::is_owned_by(existing, name, uid) {
        Ownership::Ours
    } else if secret::adoption_allowed(existing) {
        Ownership::Adoptable
    } else {
        Ownership::Foreign
    }
}

/// What becomes of the Secret a `secretName` change left behind (design.md §10: the new Secret is
/// written first, the old one removed after, and the name the status shows always serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renamed {
    /// No change of name pending.
    Nothing,
    /// The new Secret does not serve yet (its download failed, someone else holds the name): the old one
    /// keeps serving, and the status keeps naming it so that a later reconcile still knows it.
    KeepServing(String),
    /// The new Secret serves: the old one goes (if it is ours).
    Release(String),
    /// The new Secret serves; `deletionPolicy: Retain` keeps the old one.
    Retained,
}

pub fn renamed(
    previous_name: Option<&str>,
    secret_name: &str,
    new_in_place: bool,
    deletion_policy: DeletionPolicy,
) -> Renamed {
    match previous_name {
        Some(old) if old != secret_name => {
            if !new_in_place {
                Renamed::KeepServing(old.to_string())
            } else if deletion_policy == DeletionPolicy::Delete {
                Renamed::Release(old.to_string())
            } else {
                Renamed::Retained
            }
        }
        _ => Renamed::Nothing,
    }
}

/// Why the certificate must be downloaded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadTrigger {
    SecretMissing,
    Adopting,
    WrongSecretType(String),
    SecretDataInvalid(String),
    CertificateIdChanged {
        serving: String,
    },
    /// The Secret holds a valid certificate, but not the one last synced (someone replaced the data).
    DataDrift,
    SpecChanged,
    RefreshRequested(String),
    /// The last attempt failed on credentials and the credentials Secret has changed since.
    CredentialsChanged,
    /// The last attempt found no usable keystore password, and now there is one.
    KeystorePasswordFixed,
    RefreshDue,
    /// Tencent issued the renewal the operator applied for (or found): serve it now, by following.
    RenewalIssued {
        order_id: String,
    },
}

impl DownloadTrigger {
    pub fn describe(&self) -> String {
        match self {
            Self::SecretMissing => "the Secret does not exist".into(),
            Self::Adopting => "adopting an existing Secret whose owner consented".into(),
            Self::WrongSecretType(t) => format!("the Secret has type {t}, not {TLS_SECRET_TYPE}"),
            Self::SecretDataInvalid(why) => format!("the Secret's data is not usable: {why}"),
            Self::CertificateIdChanged { serving } => {
                format!("the Secret holds certificate {serving}, not the one in the spec")
            }
            Self::DataDrift => {
                "the Secret's certificate was replaced by something other than the operator".into()
            }
            Self::SpecChanged => "the spec changed".into(),
            Self::RefreshRequested(at) => format!("a refresh was requested ({at})"),
            Self::CredentialsChanged => {
                "the credentials Secret changed after a credentials error".into()
            }
            Self::KeystorePasswordFixed => {
                "the keystore password Secret is usable again after it was not".into()
            }
            Self::RefreshDue => "the refresh interval elapsed".into(),
            Self::RenewalIssued { order_id } => {
                format!("the renewal {order_id} of the served certificate was issued")
            }
        }
    }

    /// Whether a recently cached download is good enough (not when the user explicitly asked for fresh).
    pub fn accepts_cached(&self) -> bool {
        // A renewal just issued must be seen in Tencent's links, which a cached lookup predates.
        !matches!(self, Self::RefreshRequested(_) | Self::RenewalIssued { .. })
    }

    /// A routine refresh waits behind everything a user is waiting for: a first sync, a spec change, a
    /// Secret that drifted or is missing, an explicit refresh request, fixed credentials.
    pub fn priority(&self) -> Priority {
        match self {
            Self::RefreshDue => Priority::Routine,
            _ => Priority::Urgent,
        }
    }

    /// How old a lookup or listing answer this trigger accepts.
    pub fn max_age(&self, refresh: Duration) -> Duration {
        if self.accepts_cached() {
            crate::status::lookup_max_age(refresh)
        } else {
            Duration::ZERO
        }
    }

    /// How old a download made for another resource this trigger accepts. A routine refresh downloads
    /// only because the listing changed, so it wants a download no older than the listing; a first sync
    /// (or a repair) takes any download of the wave: its own refresh follows anyway.
    pub fn download_max_age(&self, refresh: Duration) -> Duration {
        match self {
            Self::RefreshDue => self.max_age(refresh),
            _ if self.accepts_cached() => Duration::MAX,
            _ => Duration::ZERO,
        }
    }
}

/// What a sync knows before it downloads: enough to tell whether a download can change anything.
#[derive(Debug, Clone, Copy)]
pub struct BeforeDownload<'a> {
    pub trigger: &'a DownloadTrigger,
    /// The certificate id and metadata the Secret serves (ours and usable).
    pub serving: Option<(&'a str, &'a CertMetadata)>,
    /// The id this sync resolved the spec to.
    pub resolved_id: &'a str,
    /// Tencent's listing of `resolved_id`.
    pub listed: Option<&'a LinkInfo>,
    /// The last full download (status `lastDownloadTime`).
    pub last_download: Option<jiff::Timestamp>,
    /// Whether the previous attempt failed (status `failures` > 0): its retry downloads.
    pub retrying: bool,
    pub now: jiff::Timestamp,
    /// How often a full download happens even when listings show nothing changed.
    pub full_download_every: Duration,
}

/// Whether the sync must download. Only a routine refresh that is not the retry of a failed attempt may
/// skip it, and only when Tencent lists the
/// served id as still issued with the validity window of the served certificate, and a full download
/// happened within `full_download_every` (the safety net for content replaced behind an unchanged id
/// and window).
pub fn download_needed(b: &BeforeDownload<'_>) -> bool {
    let same_second = |listed: Option<jiff::Timestamp>, served: jiff::Timestamp| {
        listed.is_some_and(|t| t.as_second() == served.as_second())
    };
    let unchanged = match (b.serving, b.listed) {
        (Some((serving_id, meta)), Some(listed)) => {
            serving_id == b.resolved_id
                && listed.is_issued()
                && same_second(listed.not_before, meta.not_before)
                && same_second(listed.not_after, meta.not_after)
        }
        _ => false,
    };
    let recently_downloaded = b.last_download.is_some_and(|at| {
        let age = b.now.duration_since(at);
        !age.is_negative() && age.unsigned_abs() < b.full_download_every
    });
    !(matches!(b.trigger, DownloadTrigger::RefreshDue)
        && !b.retrying
        && unchanged
        && recently_downloaded)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Secret belongs to someone else: never touch it.
    Conflict(String),
    Download(DownloadTrigger),
    /// Data is right, labels/annotations/owner references drifted: re-apply from the Secret's own data.
    RepairMetadata,
    /// The last attempt failed and its retry time has not come: do nothing (no hot loop).
    AwaitingRetry,
    UpToDate,
}

/// What the reconcile saw, gathered by the controller.
pub struct Observed<'a> {
    pub cr: &'a TencentCertificate,
    pub existing: Option<&'a Secret>,
    /// The existing Secret's data read back as a bundle, when it has any.
    pub serving: Option<&'a Result<CertBundle, BundleError>>,
    /// The Secret the operator would write from `serving` (for drift checks), when `serving` is usable.
    pub desired_from_serving: Option<&'a Secret>,
    /// The credentials Secret changed since the credentials error of the last attempt.
    pub credentials_changed: bool,
    /// The last attempt failed for want of a keystore password, and the password reads fine now.
    pub keystore_password_fixed: bool,
    pub now: jiff::Timestamp,
}

type Check = fn(&Observed<'_>) -> Option<Decision>;

/// The checks, in order: safety first; then what a user changed (acted upon at once, even during a
/// backoff); then the backoff gate; then what drifted; then cheap repairs.
const CHECKS: &[Check] = &[
    check_conflict,
    check_spec_changed,
    check_refresh_requested,
    check_credentials_changed,
    check_keystore_password_fixed,
    check_awaiting_retry,
    check_missing,
    check_adoption,
    check_type,
    check_data,
    check_certificate_id,
    check_data_drift,
    check_refresh_due,
    check_metadata_drift,
];

pub fn decide(observed: &Observed<'_>) -> Decision {
    first_hit(CHECKS, observed)
}

/// Evaluates a chain of checks in order: the first that fires decides; none firing means up to date.
/// Every kind's check table has this shape (see [`crate::cluster::plan::decide`]).
pub fn first_hit<O, C: Fn(&O) -> Option<Decision>>(checks: &[C], observed: &O) -> Decision {
    checks
        .iter()
        .find_map(|check| check(observed))
        .unwrap_or(Decision::UpToDate)
}

fn check_conflict(o: &Observed<'_>) -> Option<Decision> {
    (ownership(o.cr, o.existing) == Ownership::Foreign).then(|| {
        Decision::Conflict(format!(
            "Secret {} exists and is not managed by this TencentCertificate; delete or rename it, set \
             spec.secretName to another name, or annotate the Secret with tencentcert.io/adopt=\"true\" \
             to let the operator take it over",
            o.cr.secret_name()
        ))
    })
}

/// After a failed attempt nothing is downloaded before its retry time, whatever else is wrong: a missing
/// Secret must not turn a permanent error into a loop. A conflict is exempt, so resolving it acts at once.
fn check_awaiting_retry(o: &Observed<'_>) -> Option<Decision> {
    let status = o.cr.status.as_ref()?;
    let synced = status.condition(crate::status::CONDITION_SYNCED)?;
    if synced.status != "False" || synced.reason == crate::error::REASON_SECRET_CONFLICT {
        return None;
    }
    let next = status
        .next_sync_time
        .as_deref()?
        .parse::<jiff::Timestamp>()
        .ok()?;
    (next > o.now).then_some(Decision::AwaitingRetry)
}

fn check_missing(o: &Observed<'_>) -> Option<Decision> {
    o.existing
        .is_none()
        .then_some(Decision::Download(DownloadTrigger::SecretMissing))
}

fn check_adoption(o: &Observed<'_>) -> Option<Decision> {
    (ownership(o.cr, o.existing) == Ownership::Adoptable)
        .then_some(Decision::Download(DownloadTrigger::Adopting))
}

fn check_type(o: &Observed<'_>) -> Option<Decision> {
    let type_ = o.existing?.type_.as_deref().unwrap_or("Opaque");
    (type_ != TLS_SECRET_TYPE)
        .then(|| Decision::Download(DownloadTrigger::WrongSecretType(type_.to_string())))
}

fn check_data(o: &Observed<'_>) -> Option<Decision> {
    match o.serving {
        None => Some(DownloadTrigger::SecretDataInvalid(
            "tls.crt or tls.key is missing".into(),
        )),
        Some(Err(err)) => Some(DownloadTrigger::SecretDataInvalid(err.to_string())),
        Some(Ok(_)) => None,
    }
    .map(Decision::Download)
}

fn serving_certificate_id(existing: &Secret) -> Option<&str> {
    existing
        .metadata
        .annotations
        .as_ref()?
        .get(CERTIFICATE_ID_ANNOTATION)
        .map(String::as_str)
}

fn check_certificate_id(o: &Observed<'_>) -> Option<Decision> {
    let expected = o.cr.expected_certificate_id()?;
    let serving = serving_certificate_id(o.existing?).unwrap_or("");
    (serving != expected).then(|| {
        Decision::Download(DownloadTrigger::CertificateIdChanged {
            serving: serving.to_string(),
        })
    })
}

fn check_data_drift(o: &Observed<'_>) -> Option<Decision> {
    let synced = o.cr.status.as_ref()?.fingerprint_sha256.as_deref()?;
    let serving = o.serving?.as_ref().ok()?;
    (serving.meta.fingerprint_sha256 != synced)
        .then_some(Decision::Download(DownloadTrigger::DataDrift))
}

fn check_spec_changed(o: &Observed<'_>) -> Option<Decision> {
    let observed = o.cr.status.as_ref().and_then(|s| s.observed_generation);
    (observed != o.cr.metadata.generation)
        .then_some(Decision::Download(DownloadTrigger::SpecChanged))
}

/// A deferred request decides nothing now: the reconcile comes back at its time (see
/// [`refresh_request`]), and meanwhile every other check still applies.
fn check_refresh_requested(o: &Observed<'_>) -> Option<Decision> {
    match refresh_request(o.cr, o.now) {
        RefreshRequest::Due(requested) => Some(Decision::Download(
            DownloadTrigger::RefreshRequested(requested.to_string()),
        )),
        RefreshRequest::None | RefreshRequest::Deferred { .. } => None,
    }
}

fn check_credentials_changed(o: &Observed<'_>) -> Option<Decision> {
    o.credentials_changed
        .then_some(Decision::Download(DownloadTrigger::CredentialsChanged))
}

fn check_keystore_password_fixed(o: &Observed<'_>) -> Option<Decision> {
    o.keystore_password_fixed
        .then_some(Decision::Download(DownloadTrigger::KeystorePasswordFixed))
}

fn check_refresh_due(o: &Observed<'_>) -> Option<Decision> {
    let next =
        o.cr.status
            .as_ref()
            .and_then(|s| s.next_sync_time.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match next {
        Some(next) if next > o.now => None,
        _ => Some(Decision::Download(DownloadTrigger::RefreshDue)),
    }
}

fn check_metadata_drift(o: &Observed<'_>) -> Option<Decision> {
    let existing = o.existing?;
    let desired = o.desired_from_serving?;
    needs_write(existing, desired, o.cr).then_some(Decision::RepairMetadata)
}

/// Whether applying `desired` would change `existing` (data, type, labels, annotations, owner references).
pub fn needs_write(existing: &Secret, desired: &Secret, cr: &TencentCertificate) -> bool {
    !secret::data_matches(existing, desired) || needs_metadata_write(existing, desired, cr)
}

/// Whether applying `desired` would change `existing`'s labels, annotations or owner references.
pub fn needs_metadata_write(existing: &Secret, desired: &Secret, cr: &TencentCertificate) -> bool {
    !secret::metadata_matches(existing, desired)
        || !ownership_matches(existing, desired, cr)
        || owns_undesired_keys(existing, desired)
}

/// An owner reference to this resource must be present exactly when the desired Secret has one, so that
/// switching `deletionPolicy` to `Retain` on a live resource drops it (else the GC would delete the Secret).
fn ownership_matches(existing: &Secret, desired: &Secret, cr: &TencentCertificate) -> bool {
    let uid = cr.metadata.uid.as_deref().unwrap_or_default();
    let references = |s: &Secret| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid)
    };
    references(existing) == references(desired)
}

/// Labels, annotations or data keys our field manager applied earlier but no longer wants (e.g. a label
/// removed from `secretTemplate`): a new apply removes them.
fn owns_undesired_keys(existing: &Secret, desired: &Secret) -> bool {
    let owned = owned_fields(existing);
    let wanted = |section: &str, key: &str| match section {
        "labels" => desired
            .metadata
            .labels
            .as_ref()
            .is_some_and(|m| m.contains_key(key)),
        "annotations" => desired
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|m| m.contains_key(key)),
        "data" => desired.data.as_ref().is_some_and(|m| m.contains_key(key)),
        _ => true,
    };
    owned.iter().any(|(section, key)| !wanted(section, key))
}

/// (section, key) pairs of labels, annotations and data that `FIELD_MANAGER` owns per `managedFields`.
fn owned_fields(existing: &Secret) -> Vec<(String, String)> {
    let mut owned = Vec::new();
    for entry in existing.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() != Some(FIELD_MANAGER)
            || entry.operation.as_deref() != Some("Apply")
        {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_ref() else {
            continue;
        };
        let sections = [
            (fields.0.pointer("/f:metadata/f:labels"), "labels"),
            (fields.0.pointer("/f:metadata/f:annotations"), "annotations"),
            (fields.0.pointer("/f:data"), "data"),
        ];
        for (tree, section) in sections {
            let Some(keys) = tree.and_then(|t| t.as_object()) else {
                continue;
            };
            owned.extend(
                keys.keys()
                    .filter_map(|k| k.strip_prefix("f:"))
                    .map(|k| (section.to_string(), k.to_string())),
            );
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TencentCertificateSpec, TencentCertificateStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, OwnerReference,
    };
    use std::collections::BTreeMap;

    fn cr() -> TencentCertificate {
        let mut cr = TencentCertificate::new(
            "shop",
            serde_json::from_value::<TencentCertificateSpec>(
                serde_json::json!({"certificateId": "aBcD1234"}),
            )
            .unwrap(),
        );
        cr.metadata.namespace = Some("web".into());
        cr.metadata.uid = Some("uid-1".into());
        cr.metadata.generation = Some(1);
        cr.status = Some(TencentCertificateStatus {
            observed_generation: Some(1),
            next_sync_time: Some("2099-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        cr
    }

    fn secret_with(labels: &[(&str, &str)], annotations: &[(&str, &str)], type_: &str) -> Secret {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let mut s = Secret::default();
        s.metadata.name = Some("shop".into());
        s.metadata.labels = map(labels);
        s.metadata.annotations = map(annotations);
        s.type_ = Some(type_.into());
        s
    }

    fn ours() -> Secret {
        secret_with(
            &[("tencentcert.io/certificate-name", "shop")],
            &[("tencentcert.io/certificate-id", "aBcD1234")],
            TLS_SECRET_TYPE,
        )
    }

    fn decide_with(
        cr: &TencentCertificate,
        existing: Option<&Secret>,
        serving_ok: bool,
        desired: Option<&Secret>,
    ) -> Decision {
        let serving: Result<CertBundle, BundleError> = if serving_ok {
            Ok(sample_bundle())
        } else {
            Err(BundleError::KeyMissing {
                certificate: "CN=shop".into(),
            })
        };
        decide(&Observed {
            cr,
            existing,
            serving: existing.map(|_| &serving),
            desired_from_serving: desired,
            credentials_changed: false,
            keystore_password_fixed: false,
            now: "2030-01-01T00:00:00Z".parse().unwrap(),
        })
    }

    fn sample_bundle() -> CertBundle {
        CertBundle {
            chain_pem: String::new(),
            key_pem: String::new(),
            ca_pem: None,
            meta: tencent_ssl::bundle::CertMetadata {
                not_before: "2029-01-01T00:00:00Z".parse().unwrap(),
                not_after: "2031-01-01T00:00:00Z".parse().unwrap(),
                serial_hex: "01".into(),
                fingerprint_sha256: "ff".into(),
                subject_cn: None,
                dns_names: vec![],
                ip_addresses: vec![],
                issuer_cn: None,
                key_algorithm: tencent_ssl::bundle::KeyAlgorithm::EcdsaP256,
            },
        }
    }

    #[test]
    fn a_missing_secret_is_downloaded() {
        assert_eq!(
            decide_with(&cr(), None, true, None),
            Decision::Download(DownloadTrigger::SecretMissing)
        );
    }

    #[test]
    fn a_foreign_secret_is_a_conflict_even_when_everything_else_is_due() {
        let foreign = secret_with(&[("app", "other")], &[], "Opaque");
        let mut due = cr();
        due.metadata.generation = Some(7);
        assert!(
            matches!(decide_with(&due, Some(&foreign), false, None), Decision::Conflict(m) if m.contains("tencentcert.io/adopt"))
        );
    }

    #[test]
    fn a_consenting_secret_is_adopted() {
        let consenting = secret_with(&[], &[("tencentcert.io/adopt", "true")], "Opaque");
        assert_eq!(
            decide_with(&cr(), Some(&consenting), false, None),
            Decision::Download(DownloadTrigger::Adopting)
        );
    }

    #[test]
    fn an_owner_reference_alone_makes_the_secret_ours() {
        let mut referenced = secret_with(
            &[],
            &[("tencentcert.io/certificate-id", "aBcD1234")],
            TLS_SECRET_TYPE,
        );
        referenced.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-1".into(),
            ..Default::default()
        }]);
        assert_eq!(ownership(&cr(), Some(&referenced)), Ownership::Ours);
    }

    #[test]
    fn our_secret_of_the_wrong_type_is_rebuilt() {
        let mut opaque = ours();
        opaque.type_ = Some("Opaque".into());
        assert_eq!(
            decide_with(&cr(), Some(&opaque), true, None),
            Decision::Download(DownloadTrigger::WrongSecretType("Opaque".into()))
        );
    }

    #[test]
    fn unusable_data_is_downloaded_again() {
        assert!(matches!(
            decide_with(&cr(), Some(&ours()), false, None),
            Decision::Download(DownloadTrigger::SecretDataInvalid(_))
        ));
    }

    #[test]
    fn a_changed_certificate_id_is_downloaded() {
        let mut changed = cr();
        changed.spec.certificate_id = Some("NeW12345".into());
        assert_eq!(
            decide_with(&changed, Some(&ours()), true, None),
            Decision::Download(DownloadTrigger::CertificateIdChanged {
                serving: "aBcD1234".into()
            })
        );
    }

    #[test]
    fn a_replaced_certificate_is_downloaded_again() {
        let mut synced = cr();
        synced.status.as_mut().unwrap().fingerprint_sha256 = Some("aa".into());
        assert_eq!(
            decide_with(&synced, Some(&ours()), true, Some(&ours())),
            Decision::Download(DownloadTrigger::DataDrift)
        );
        synced.status.as_mut().unwrap().fingerprint_sha256 = Some("ff".into());
        assert_eq!(
            decide_with(&synced, Some(&ours()), true, Some(&ours())),
            Decision::UpToDate
        );
    }

    #[test]
    fn a_new_generation_is_downloaded() {
        let mut edited = cr();
        edited.metadata.generation = Some(2);
        assert_eq!(
            decide_with(&edited, Some(&ours()), true, None),
            Decision::Download(DownloadTrigger::SpecChanged)
        );
    }

    #[test]
    fn a_new_refresh_request_value_is_downloaded_once() {
        let mut requested = cr();
        requested.metadata.annotations =
            Some([(REFRESH_REQUESTED_ANNOTATION.to_string(), "t1".to_string())].into());
        let decision = decide_with(&requested, Some(&ours()), true, Some(&ours()));
        assert_eq!(
            decision,
            Decision::Download(DownloadTrigger::RefreshRequested("t1".into()))
        );
        assert!(!DownloadTrigger::RefreshRequested("t1".into()).accepts_cached());
        requested.status.as_mut().unwrap().last_refresh_request = Some("t1".into());
        assert_eq!(
            decide_with(&requested, Some(&ours()), true, Some(&ours())),
            Decision::UpToDate
        );
    }

    #[test]
    fn refresh_requests_are_honoured_once_per_minute_and_deferred_not_dropped() {
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let mut requested = cr();
        requested.metadata.annotations =
            Some([(REFRESH_REQUESTED_ANNOTATION.to_string(), "t2".to_string())].into());
        let status = requested.status.as_mut().unwrap();
        status.last_refresh_request = Some("t1".into());
        // The previous request was acted upon 30 s ago.
        status.last_refresh_request_time = Some("2029-12-31T23:59:30Z".into());
        let until: jiff::Timestamp = "2030-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(
            refresh_request(&requested, now),
            RefreshRequest::Deferred { until }
        );
        assert_eq!(
            decide_with(&requested, Some(&ours()), true, Some(&ours())),
            Decision::UpToDate,
            "nothing is forced within the minute"
        );
        // Everything else still applies meanwhile.
        assert_eq!(
            decide_with(&requested, None, true, None),
            Decision::Download(DownloadTrigger::SecretMissing)
        );
        // At the minute's end the request is acted upon: deferred, not dropped.
        let just_before = until
            .checked_sub(jiff::SignedDuration::from_secs(1))
            .unwrap();
        assert!(matches!(
            refresh_request(&requested, just_before),
            RefreshRequest::Deferred { .. }
        ));
        assert_eq!(
            refresh_request(&requested, until),
            RefreshRequest::Due("t2")
        );
        // A value already acted upon is never due again, whenever it is looked at.
        let mut handled = requested.clone();
        handled.status.as_mut().unwrap().last_refresh_request = Some("t2".into());
        assert_eq!(refresh_request(&handled, until), RefreshRequest::None);
        // The first request ever (or a status without the time) is acted upon at once.
        let mut first = requested.clone();
        first.status.as_mut().unwrap().last_refresh_request_time = None;
        assert_eq!(refresh_request(&first, now), RefreshRequest::Due("t2"));
        let mut garbled = requested;
        garbled.status.as_mut().unwrap().last_refresh_request_time = Some("yesterday".into());
        assert_eq!(refresh_request(&garbled, now), RefreshRequest::Due("t2"));
    }

    #[test]
    fn changed_credentials_after_a_credentials_error_are_tried_at_once() {
        let serving: Result<CertBundle, BundleError> = Ok(sample_bundle());
        let decide_changed = |changed| {
            decide(&Observed {
                cr: &cr(),
                existing: Some(&ours()),
                serving: Some(&serving),
                desired_from_serving: Some(&ours()),
                credentials_changed: changed,
                keystore_password_fixed: false,
                now: "2030-01-01T00:00:00Z".parse().unwrap(),
            })
        };
        assert_eq!(
            decide_changed(true),
            Decision::Download(DownloadTrigger::CredentialsChanged)
        );
        assert_eq!(decide_changed(false), Decision::UpToDate);
    }

    #[test]
    fn a_keystore_password_that_reads_again_is_acted_upon_before_the_retry_time() {
        let waiting = failed(cr(), "KeystorePasswordNotFound", "2030-01-01T01:00:00Z");
        let serving: Result<CertBundle, BundleError> = Ok(sample_bundle());
        let decide_fixed = |fixed| {
            decide(&Observed {
                cr: &waiting,
                existing: Some(&ours()),
                serving: Some(&serving),
                desired_from_serving: Some(&ours()),
                credentials_changed: false,
                keystore_password_fixed: fixed,
                now: "2030-01-01T00:00:00Z".parse().unwrap(),
            })
        };
        assert_eq!(
            decide_fixed(true),
            Decision::Download(DownloadTrigger::KeystorePasswordFixed)
        );
        assert_eq!(decide_fixed(false), Decision::AwaitingRetry);
        assert_eq!(
            DownloadTrigger::KeystorePasswordFixed.priority(),
            Priority::Urgent
        );
    }

    fn failed(mut cr: TencentCertificate, reason: &str, next: &str) -> TencentCertificate {
        let status = cr.status.as_mut().unwrap();
        status.next_sync_time = Some(next.into());
        status.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Synced".into(),
            status: "False".into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2030-01-01T00:00:00Z".parse().unwrap(),
            ),
        }];
        cr
    }

    #[test]
    fn after_a_failure_nothing_is_downloaded_before_the_retry_time() {
        let waiting = failed(cr(), "CertificateNotFound", "2030-01-01T01:00:00Z");
        assert_eq!(
            decide_with(&waiting, None, true, None),
            Decision::AwaitingRetry
        );
        // Once the time has come, the missing Secret is downloaded.
        let due = failed(cr(), "CertificateNotFound", "2029-12-31T23:00:00Z");
        assert_eq!(
            decide_with(&due, None, true, None),
            Decision::Download(DownloadTrigger::SecretMissing)
        );
        // A spec change is acted upon at once.
        let mut edited = waiting.clone();
        edited.metadata.generation = Some(2);
        assert_eq!(
            decide_with(&edited, None, true, None),
            Decision::Download(DownloadTrigger::SpecChanged)
        );
        // A conflict that went away is acted upon at once.
        let conflict = failed(cr(), "SecretConflict", "2030-01-01T01:00:00Z");
        assert_eq!(
            decide_with(&conflict, None, true, None),
            Decision::Download(DownloadTrigger::SecretMissing)
        );
    }

    #[test]
    fn a_past_next_sync_time_is_due() {
        let mut due = cr();
        due.status.as_mut().unwrap().next_sync_time = Some("2029-12-31T23:59:59Z".into());
        assert_eq!(
            decide_with(&due, Some(&ours()), true, Some(&ours())),
            Decision::Download(DownloadTrigger::RefreshDue)
        );
        due.status.as_mut().unwrap().next_sync_time = None;
        assert_eq!(
            decide_with(&due, Some(&ours()), true, Some(&ours())),
            Decision::Download(DownloadTrigger::RefreshDue)
        );
    }

    #[test]
    fn label_drift_is_repaired_without_download() {
        let mut desired = ours();
        desired
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "web".into());
        assert_eq!(
            decide_with(&cr(), Some(&ours()), true, Some(&desired)),
            Decision::RepairMetadata
        );
    }

    #[test]
    fn a_template_label_removed_from_the_spec_is_repaired() {
        let mut existing = ours();
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "web".into());
        existing.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(
                serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}, "f:tencentcert.io/certificate-name": {}}}}),
            )),
            ..Default::default()
        }]);
        assert_eq!(
            decide_with(&cr(), Some(&existing), true, Some(&ours())),
            Decision::RepairMetadata
        );
        // A label someone else added is not ours to remove.
        existing.metadata.managed_fields = None;
        assert_eq!(
            decide_with(&cr(), Some(&existing), true, Some(&ours())),
            Decision::UpToDate
        );
    }

    #[test]
    fn switching_to_retain_drops_our_owner_reference() {
        let mut existing = ours();
        existing.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-1".into(),
            ..Default::default()
        }]);
        assert_eq!(
            decide_with(&cr(), Some(&existing), true, Some(&ours())),
            Decision::RepairMetadata
        );
    }

    #[test]
    fn everything_in_place_is_up_to_date() {
        assert_eq!(
            decide_with(&cr(), Some(&ours()), true, Some(&ours())),
            Decision::UpToDate
        );
    }

    fn listed(id: &str, meta: &CertMetadata, status: i64) -> LinkInfo {
        LinkInfo {
            id: id.into(),
            status: Some(status),
            not_before: Some(meta.not_before),
            not_after: Some(meta.not_after),
            ..LinkInfo::default()
        }
    }

    #[test]
    fn an_unchanged_listing_skips_the_download_of_a_routine_refresh_only() {
        let meta = sample_bundle().meta;
        let now = "2026-03-01T00:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        let same = listed("aBcD1234", &meta, 1);
        let base = BeforeDownload {
            trigger: &DownloadTrigger::RefreshDue,
            serving: Some(("aBcD1234", &meta)),
            resolved_id: "aBcD1234",
            listed: Some(&same),
            last_download: Some("2026-02-28T12:00:00Z".parse().unwrap()),
            retrying: false,
            now,
            full_download_every: day,
        };
        assert!(!download_needed(&base), "nothing changed: no download");
        // Every other trigger downloads.
        for trigger in [
            DownloadTrigger::SecretMissing,
            DownloadTrigger::SpecChanged,
            DownloadTrigger::DataDrift,
            DownloadTrigger::RefreshRequested("now".into()),
            DownloadTrigger::CredentialsChanged,
        ] {
            assert!(
                download_needed(&BeforeDownload {
                    trigger: &trigger,
                    ..base
                }),
                "{trigger:?}"
            );
        }
        // A new validity window behind the same id (reissued in place).
        let mut moved = same.clone();
        moved.not_after = Some(meta.not_after + jiff::SignedDuration::from_hours(24 * 90));
        assert!(download_needed(&BeforeDownload {
            listed: Some(&moved),
            ..base
        }));
        // Not issued any more, not listed, a renewal resolved, nothing served.
        let revoked = listed("aBcD1234", &meta, 10);
        assert!(download_needed(&BeforeDownload {
            listed: Some(&revoked),
            ..base
        }));
        assert!(download_needed(&BeforeDownload {
            listed: None,
            ..base
        }));
        assert!(download_needed(&BeforeDownload {
            resolved_id: "nEw5678",
            ..base
        }));
        assert!(download_needed(&BeforeDownload {
            serving: None,
            ..base
        }));
    }

    #[test]
    fn the_daily_safety_download_happens_even_when_nothing_changed() {
        let meta = sample_bundle().meta;
        let same = listed("aBcD1234", &meta, 1);
        let day = Duration::from_secs(86_400);
        let base = BeforeDownload {
            trigger: &DownloadTrigger::RefreshDue,
            serving: Some(("aBcD1234", &meta)),
            resolved_id: "aBcD1234",
            listed: Some(&same),
            last_download: Some("2026-03-01T00:00:00Z".parse().unwrap()),
            retrying: false,
            now: "2026-03-01T23:59:00Z".parse().unwrap(),
            full_download_every: day,
        };
        assert!(!download_needed(&base));
        assert!(download_needed(&BeforeDownload {
            now: "2026-03-02T00:00:01Z".parse().unwrap(),
            ..base
        }));
        assert!(
            download_needed(&BeforeDownload {
                last_download: None,
                ..base
            }),
            "never downloaded (e.g. status from an older operator): download"
        );
        assert!(
            download_needed(&BeforeDownload {
                last_download: Some("2026-03-05T00:00:00Z".parse().unwrap()),
                ..base
            }),
            "a download time in the future is not trusted"
        );
    }

    #[test]
    fn routine_refreshes_wait_behind_everything_else() {
        assert_eq!(DownloadTrigger::RefreshDue.priority(), Priority::Routine);
        assert_eq!(DownloadTrigger::SecretMissing.priority(), Priority::Urgent);
        assert_eq!(DownloadTrigger::SpecChanged.priority(), Priority::Urgent);
        assert_eq!(DownloadTrigger::DataDrift.priority(), Priority::Urgent);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            DownloadTrigger::RefreshDue.max_age(hour),
            Duration::from_secs(900)
        );
        assert_eq!(
            DownloadTrigger::RefreshRequested("x".into()).max_age(hour),
            Duration::ZERO
        );
        // A first sync takes any download of the wave (the bundle cache's own TTL bounds it); a
        // refresh one no older than its listing; a refresh request none.
        assert_eq!(
            DownloadTrigger::SecretMissing.download_max_age(hour),
            Duration::MAX
        );
        assert_eq!(
            DownloadTrigger::RefreshDue.download_max_age(hour),
            Duration::from_secs(900)
        );
        assert_eq!(
            DownloadTrigger::RefreshRequested("x".into()).download_max_age(hour),
            Duration::ZERO
        );
    }

    #[test]
    fn the_old_secret_goes_only_once_the_new_one_serves() {
        use DeletionPolicy::{Delete, Retain};
        assert_eq!(renamed(None, "b", false, Delete), Renamed::Nothing);
        assert_eq!(renamed(Some("b"), "b", true, Delete), Renamed::Nothing);
        assert_eq!(
            renamed(Some("a"), "b", false, Delete),
            Renamed::KeepServing("a".into())
        );
        assert_eq!(
            renamed(Some("a"), "b", false, Retain),
            Renamed::KeepServing("a".into())
        );
        assert_eq!(
            renamed(Some("a"), "b", true, Delete),
            Renamed::Release("a".into())
        );
        assert_eq!(renamed(Some("a"), "b", true, Retain), Renamed::Retained);
    }
}
