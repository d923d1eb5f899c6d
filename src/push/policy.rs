//! What a `TencentCertificatePush` pass must look up ([`lookups`]), and the one next step ([`decide`]), as
//! pure functions; [`apply`] folds a step's outcome into the status. One step per pass, its effect recorded
//! before the next, so a crash repeats at most the step in flight — and the only step that is not
//! idempotent by itself, the upload, is found again by its tags (resource uid + fingerprint) before any
//! second upload.
//!
//! Trust (design.md §10): the Secret is read only in the resource's own namespace ([`secret_key`]); the
//! certificate resources are moved off, and the one deleted, must carry this resource's uid tag — except
//! `deploy.fromCertificateId`, accepted only with the namespace's own credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use tencent_ssl::Tag;
use tencent_ssl::bundle::{self, CertBundle};
use tencent_ssl::publish::{
    BoundResources, DeployProgress, DeployState, DeployTarget, REGIONAL_TYPES,
};

use super::{
    DeployResult, DeployStatus, PreviousPolicy, TAG_FINGERPRINT, TAG_UID,
    TencentCertificatePushSpec, TencentCertificatePushStatus,
};

/// Condition reasons of this kind (besides Tencent's, from `TencentError::reason`).
pub mod reason {
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_NOT_TLS: &str = "SecretNotTls";
    pub const CERTIFICATE_EXPIRED: &str = "CertificateExpired";
    pub const PUBLISHED: &str = "Published";
    pub const DEPLOYING: &str = "Deploying";
    pub const DEPLOY_FAILED: &str = "DeployFailed";
    pub const DEPLOY_SOURCE_NOT_ALLOWED: &str = "DeploySourceNotAllowed";
    pub const PREVIOUS_NOT_OURS: &str = "PreviousCertificateNotOurs";
    pub const PREVIOUS_STILL_BOUND: &str = "PreviousCertificateStillBound";
    pub const INVALID_DEPLOY_TARGET: &str = "InvalidDeployTarget";
}

/// Failed resources are retried this many times, with [`retry_backoff`] between tries.
pub const MAX_DEPLOY_RETRIES: u32 = 5;
/// How often a running deploy record is polled.
pub const DEPLOY_POLL: Duration = Duration::from_secs(10);
/// How soon to look again at a previous certificate that is still bound.
pub const BOUND_RECHECK: Duration = Duration::from_secs(5 * 60);

/// Backoff before retry number `retries + 1`: 30 s doubling, at most 10 min.
pub fn retry_backoff(retries: u32) -> Duration {
    Duration::from_secs((30u64 << retries.min(5)).min(600))
}

/// Why nothing is published, as a condition says it. Names the Secret and the key, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The Secret a push reads: always in the push's own namespace.
pub fn secret_key(namespace: &str, spec: &TencentCertificatePushSpec) -> (String, String) {
    (namespace.to_string(), spec.secret_name.clone())
}

/// The certificate pair of a Secret (`None`: it does not exist), checked with the bundle checks of
/// downloads: a broken chain, a key of another certificate or an unusable algorithm is refused.
pub fn read_pair(
    secret_name: &str,
    secret: Option<(&str, &BTreeMap<String, Vec<u8>>)>,
) -> Result<CertBundle, Refusal> {
    let Some((kind, data)) = secret else {
        return Err(Refusal {
            reason: reason::SECRET_NOT_FOUND,
            message: format!("Secret {secret_name} does not exist in this namespace"),
        });
    };
    if kind != "kubernetes.io/tls" {
        return Err(Refusal {
            reason: reason::SECRET_NOT_TLS,
            message: format!("Secret {secret_name} is of type {kind}, not kubernetes.io/tls"),
        });
    }
    let chain = data.get("tls.crt").map(Vec::as_slice).unwrap_or_default();
    let key = data.get("tls.key").map(Vec::as_slice).unwrap_or_default();
    bundle::from_pem_entries(&[("tls.crt", chain), ("tls.key", key)]).map_err(|err| Refusal {
        reason: err.reason(),
        message: format!("Secret {secret_name} is not publishable: {err}"),
    })
}

/// What one pass knows before deciding.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub spec: &'a TencentCertificatePushSpec,
    pub status: &'a TencentCertificatePushStatus,
    pub pair: Result<&'a CertBundle, &'a Refusal>,
    /// The namespace's own `credentialsRef` is used (not the operator's default credentials).
    pub own_credentials: bool,
    pub now: jiff::Timestamp,
}

/// The Tencent reads a pass needs before [`decide`]; all `None` for a push in sync (0 Tencent calls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    /// List certificates carrying all of these tags (did an upload happen before a crash?).
    pub tagged: Option<Vec<Tag>>,
    /// Read this certificate's tags (is the certificate we move off, or delete, ours?).
    pub previous_tags: Option<String>,
    /// Poll this deploy record.
    pub deploy_record: Option<u64>,
    /// Count what is still bound to this certificate (before deleting it).
    pub bound: Option<String>,
}

/// What the gatherer found for [`Lookups`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Ids of the certificates carrying the tags.
    pub tagged: Option<Vec<String>>,
    /// The previous certificate's tags; `Some(None)` when Tencent does not know it.
    pub previous_tags: Option<Option<Vec<Tag>>>,
    pub deploy: Option<DeployProgress>,
    pub bound: Option<BoundResources>,
}

/// The one next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing can be published; no Tencent call.
    Refuse(Refusal),
    Upload {
        alias: String,
        project_id: Option<u64>,
        tags: Vec<Tag>,
    },
    /// A certificate with this resource's tags exists already (an upload before a crash): record it.
    Adopt {
        certificate_id: String,
    },
    StartDeploy {
        from: String,
        to: String,
        targets: Vec<DeployTarget>,
    },
    /// Record the deploy's progress in status; poll again after `after` unless finished.
    RecordDeploy {
        results: Vec<DeployResult>,
        finished: bool,
        after: Option<Duration>,
    },
    RetryDeploy {
        record_id: u64,
    },
    DeletePrevious {
        certificate_id: String,
    },
    /// Nothing to do now but look again.
    Wait {
        reason: &'static str,
        message: String,
        after: Duration,
    },
    InSync {
        after: Duration,
    },
}

fn tags_for(input: &Input, fingerprint: &str) -> Vec<Tag> {
    vec![
        Tag::new(TAG_UID, input.uid),
        Tag::new(TAG_FINGERPRINT, fingerprint),
    ]
}

/// The certificate id published for the Secret's current content, per status.
fn current_id<'a>(input: &'a Input, pair: &CertBundle) -> Option<&'a str> {
    let status = input.status;
    (status.fingerprint_sha256.as_deref() == Some(pair.meta.fingerprint_sha256.as_str()))
        .then_some(status.certificate_id.as_deref())
        .flatten()
}

/// The certificate to move resources off, and whether it must be checked for our tag: the previous one
/// in status, else `deploy.fromCertificateId`. The one the spec names is never checked (it was not uploaded
/// here; the own-credentials rule guards it), whichever field holds it.
fn previous<'a>(input: &'a Input, current: &str) -> Option<(&'a str, bool)> {
    let named = input
        .spec
        .deploy
        .as_ref()
        .and_then(|d| d.from_certificate_id.as_deref());
    input
        .status
        .previous_certificate_id
        .as_deref()
        .or(named)
        .filter(|id| *id != current)
        .map(|id| (id, Some(id) != named))
}

fn deploy_matches(deploy: &DeployStatus, from: &str, to: &str) -> bool {
    deploy.from_certificate_id == from && deploy.to_certificate_id == to
}

/// Which Tencent reads the pass needs (see [`Lookups`]).
pub fn lookups(input: &Input) -> Lookups {
    let mut needs = Lookups::default();
    let Ok(pair) = input.pair else {
        return needs;
    };
    if pair.meta.is_expired_at(input.now) {
        return needs;
    }
    let Some(current) = current_id(input, pair) else {
        needs.tagged = Some(tags_for(input, &pair.meta.fingerprint_sha256));
        return needs;
    };
    let Some(spec) = &input.spec.deploy else {
        return needs;
    };
    let Some((from, check_tags)) = previous(input, current) else {
        return needs;
    };
    match &input.status.deploy {
        Some(deploy) if deploy_matches(deploy, from, current) => match deploy.record_id {
            Some(record) if !deploy.finished => needs.deploy_record = Some(record),
            None => needs.previous_tags = check_tags.then(|| from.to_string()),
            Some(_) => {
                let clean = deploy.results.iter().all(|r| r.failed == 0);
                if clean
                    && check_tags
                    && spec.previous_certificate == PreviousPolicy::Delete
                    && !deploy.previous_deleted
                {
                    needs.previous_tags = Some(from.to_string());
                    needs.bound = Some(from.to_string());
                }
            }
        },
        _ => needs.previous_tags = check_tags.then(|| from.to_string()),
    }
    needs
}

fn refresh(input: &Input) -> Duration {
    crate::crd::parse_duration(&input.spec.refresh_interval).unwrap_or(Duration::from_secs(3600))
}

fn is_ours(input: &Input, tags: &[Tag]) -> bool {
    tags.iter()
        .any(|t| t.key == TAG_UID && t.value == input.uid)
}

/// Per resource type, in the order of the spec's targets then Tencent's.
pub fn summarize(progress: &DeployProgress) -> Vec<DeployResult> {
    let mut results: Vec<DeployResult> = Vec::new();
    for detail in &progress.details {
        let index = match results
            .iter()
            .position(|r| r.resource_type == detail.resource_type)
        {
            Some(index) => index,
            None => {
                results.push(DeployResult {
                    resource_type: detail.resource_type.clone(),
                    ..DeployResult::default()
                });
                results.len() - 1
            }
        };
        let result = &mut results[index];
        match detail.state {
            DeployState::Succeeded | DeployState::NoResource => result.succeeded += 1,
            DeployState::Failed | DeployState::RolledBack | DeployState::RollbackFailed => {
                result.failed += 1;
                if result.message.is_none() {
                    result.message =
                        Some(detail.error_msg.clone().unwrap_or_else(|| {
                            format!("deploy to {} failed", detail.resource_type)
                        }));
                }
            }
            DeployState::Pending | DeployState::Running | DeployState::Unknown(_) => {
                result.in_progress += 1
            }
        }
    }
    results
}

fn validate_targets(spec: &super::DeploySpec) -> Result<Vec<DeployTarget>, Refusal> {
    spec.targets
        .iter()
        .map(|t| {
            let kind = t.resource_type.to_ascii_lowercase();
            if !tencent_ssl::publish::RESOURCE_TYPES.contains(&kind.as_str()) {
                return Err(Refusal {
                    reason: reason::INVALID_DEPLOY_TARGET,
                    message: format!("deploy target {kind} is not a Tencent resource type"),
                });
            }
            if REGIONAL_TYPES.contains(&kind.as_str()) && t.regions.is_empty() {
                return Err(Refusal {
                    reason: reason::INVALID_DEPLOY_TARGET,
                    message: format!("deploy target {kind} needs its regions"),
                });
            }
            Ok(DeployTarget {
                resource_type: kind,
                regions: t.regions.clone(),
            })
        })
        .collect()
}

/// The one next step of a pass, from what it knows and what the gatherer found.
pub fn decide(input: &Input, observed: &Observed) -> Step {
    let pair = match input.pair {
        Ok(pair) => pair,
        Err(refusal) => return Step::Refuse(refusal.clone()),
    };
    if pair.meta.is_expired_at(input.now) {
        return Step::Refuse(Refusal {
            reason: reason::CERTIFICATE_EXPIRED,
            message: format!(
                "the certificate in Secret {} expired at {}; nothing is uploaded until the Secret is renewed",
                input.spec.secret_name, pair.meta.not_after
            ),
        });
    }
    match current_id(input, pair) {
        None => publish_step(input, pair, observed),
        Some(current) => deploy_step(input, observed, current),
    }
}

/// The Secret's certificate is not recorded as published: adopt an earlier upload, else upload.
fn publish_step(input: &Input, pair: &CertBundle, observed: &Observed) -> Step {
    let Some(found) = &observed.tagged else {
        // Lookups asked for it; without the answer an upload could be a second one.
        return Step::Wait {
            reason: reason::PUBLISHED,
            message: "looking for an earlier upload first".into(),
            after: Duration::ZERO,
        };
    };
    if let Some(id) = found.iter().min() {
        return Step::Adopt {
            certificate_id: id.clone(),
        };
    }
    let mut tags: Vec<Tag> = input
        .spec
        .tags
        .iter()
        .filter(|(k, _)| k.as_str() != TAG_UID && k.as_str() != TAG_FINGERPRINT)
        .map(|(k, v)| Tag::new(k, v))
        .collect();
    tags.extend(tags_for(input, &pair.meta.fingerprint_sha256));
    Step::Upload {
        alias: input
            .spec
            .alias
            .clone()
            .unwrap_or_else(|| format!("{}/{}", input.namespace, input.name)),
        project_id: input.spec.project_id,
        tags,
    }
}

fn not_ours(from: &str) -> Step {
    Step::Refuse(Refusal {
        reason: reason::PREVIOUS_NOT_OURS,
        message: format!(
            "certificate {from} was not uploaded by this resource (no {TAG_UID} tag of it): its resources are not moved and it is not deleted"
        ),
    })
}

/// Whether the previous certificate's tags (when read) carry this resource's uid.
fn previous_is_ours(input: &Input, observed: &Observed) -> Option<bool> {
    match &observed.previous_tags {
        Some(Some(tags)) => Some(is_ours(input, tags)),
        Some(None) => Some(false),
        None => None,
    }
}

/// Published: move the resources off the previous certificate, follow the move, delete what it left.
fn deploy_step(input: &Input, observed: &Observed, current: &str) -> Step {
    let in_sync = Step::InSync {
        after: refresh(input),
    };
    let Some(spec) = &input.spec.deploy else {
        return in_sync;
    };
    let targets = match validate_targets(spec) {
        Ok(targets) => targets,
        Err(refusal) => return Step::Refuse(refusal),
    };
    let Some((from, check_tags)) = previous(input, current) else {
        return in_sync;
    };
    if !check_tags && !input.own_credentials {
        return Step::Refuse(Refusal {
            reason: reason::DEPLOY_SOURCE_NOT_ALLOWED,
            message: "deploy.fromCertificateId needs this namespace's own credentialsRef: with the default \
                      credentials it could move resources of the whole account"
                .into(),
        });
    }
    let deploy = match &input.status.deploy {
        Some(deploy) if deploy_matches(deploy, from, current) && deploy.record_id.is_some() => {
            deploy
        }
        _ => {
            return match (check_tags, previous_is_ours(input, observed)) {
                (false, _) | (true, Some(true)) => Step::StartDeploy {
                    from: from.to_string(),
                    to: current.to_string(),
                    targets,
                },
                (true, Some(false)) => not_ours(from),
                (true, None) => Step::Wait {
                    reason: reason::DEPLOYING,
                    message: "reading the previous certificate first".into(),
                    after: Duration::ZERO,
                },
            };
        }
    };
    if !deploy.finished {
        return follow_deploy(input, observed, deploy);
    }
    if let Some(failed) = deploy.results.iter().find(|r| r.failed > 0) {
        return Step::Wait {
            reason: reason::DEPLOY_FAILED,
            message: format!(
                "{} of {} {} resource(s) failed after {} retries: {}",
                failed.failed,
                failed.failed + failed.succeeded + failed.in_progress,
                failed.resource_type,
                deploy.retries,
                failed.message.as_deref().unwrap_or("no message")
            ),
            after: refresh(input),
        };
    }
    // A certificate named by `deploy.fromCertificateId` was not uploaded here: it is kept.
    if spec.previous_certificate == PreviousPolicy::Keep || deploy.previous_deleted || !check_tags {
        return in_sync;
    }
    delete_step(input, observed, from)
}

/// A deploy record still running, or finished with failures to retry.
fn follow_deploy(input: &Input, observed: &Observed, deploy: &DeployStatus) -> Step {
    let record_id = deploy.record_id.unwrap_or_default();
    let Some(progress) = &observed.deploy else {
        return Step::Wait {
            reason: reason::DEPLOYING,
            message: format!("deploy record {record_id} is running"),
            after: DEPLOY_POLL,
        };
    };
    let results = summarize(progress);
    let failed = results.iter().any(|r| r.failed > 0);
    if !progress.is_finished() {
        return Step::RecordDeploy {
            results,
            finished: false,
            after: Some(DEPLOY_POLL),
        };
    }
    if !failed || deploy.retries >= MAX_DEPLOY_RETRIES {
        return Step::RecordDeploy {
            results,
            finished: true,
            after: None,
        };
    }
    // The first retry backs off from when the failures were recorded, the later ones from the last retry.
    let due = deploy
        .last_retry_time
        .as_deref()
        .or(deploy.failed_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t + retry_backoff(deploy.retries));
    match due {
        Some(due) if due > input.now => Step::RecordDeploy {
            results,
            finished: false,
            after: Some(Duration::try_from(due - input.now).unwrap_or(DEPLOY_POLL)),
        },
        // Record the failures before retrying, so status shows them.
        _ if deploy.results != results => Step::RecordDeploy {
            results,
            finished: false,
            after: Some(Duration::ZERO),
        },
        _ => Step::RetryDeploy { record_id },
    }
}

/// Policy `Delete` after a clean move: only a certificate of ours, only when nothing is bound to it.
fn delete_step(input: &Input, observed: &Observed, from: &str) -> Step {
    match (previous_is_ours(input, observed), &observed.bound) {
        (Some(false), _) => not_ours(from),
        (Some(true), Some(bound)) if bound.is_empty() => Step::DeletePrevious {
            certificate_id: from.to_string(),
        },
        (Some(true), Some(bound)) => Step::Wait {
            reason: reason::PREVIOUS_STILL_BOUND,
            message: format!(
                "certificate {from} is still bound to {} resource(s) ({}); it is deleted once nothing uses it",
                bound.total(),
                bound.counts.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            after: BOUND_RECHECK,
        },
        _ => Step::Wait {
            reason: reason::DEPLOYING,
            message: format!("checking what still uses certificate {from}"),
            after: Duration::ZERO,
        },
    }
}

/// What carrying out a step did (see `actor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret's certificate is held as `certificate_id`: uploaded now (`uploaded`), or found.
    Published {
        certificate_id: String,
        uploaded: bool,
    },
    DeployStarted {
        record_id: u64,
    },
    /// Nothing of the targets was bound to the previous certificate.
    NothingToDeploy,
    DeployRecorded {
        results: Vec<DeployResult>,
        finished: bool,
    },
    DeployRetried,
    PreviousDeleted,
    /// The step changes nothing in status (refusals, waits, in sync).
    Unchanged,
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Records a deploy from the previous certificate (or the one the spec names) onto the current one.
fn start_deploy(
    input: &Input,
    status: &mut TencentCertificatePushStatus,
    record_id: u64,
    finished: bool,
) {
    let named = input
        .spec
        .deploy
        .as_ref()
        .and_then(|d| d.from_certificate_id.clone());
    if let (Some(from), Some(to)) = (
        status.previous_certificate_id.clone().or(named),
        status.certificate_id.clone(),
    ) {
        status.previous_certificate_id = Some(from.clone());
        status.deploy = Some(DeployStatus {
            from_certificate_id: from,
            to_certificate_id: to,
            record_id: Some(record_id),
            finished,
            ..DeployStatus::default()
        });
    }
}

/// The status after `outcome` of a step decided from `input`.
pub fn apply(input: &Input, outcome: &Outcome) -> TencentCertificatePushStatus {
    let mut status = input.status.clone();
    match outcome {
        Outcome::Published {
            certificate_id,
            uploaded,
        } => {
            if let Ok(pair) = input.pair {
                let before = status.certificate_id.clone().or_else(|| {
                    input
                        .spec
                        .deploy
                        .as_ref()
                        .and_then(|d| d.from_certificate_id.clone())
                        .filter(|_| input.own_credentials)
                });
                if before.as_deref() != Some(certificate_id.as_str()) {
                    status.previous_certificate_id = before;
                    status.deploy = None;
                }
                status.certificate_id = Some(certificate_id.clone());
                status.fingerprint_sha256 = Some(pair.meta.fingerprint_sha256.clone());
                status.not_after = Some(rfc3339(pair.meta.not_after));
                if *uploaded {
                    status.last_upload_time = Some(rfc3339(input.now));
                }
            }
        }
        Outcome::DeployStarted { record_id } => start_deploy(input, &mut status, *record_id, false),
        // Nothing of the targets was bound: a move that is done at once (record 0).
        Outcome::NothingToDeploy => start_deploy(input, &mut status, 0, true),
        Outcome::DeployRecorded { results, finished } => {
            if let Some(deploy) = status.deploy.as_mut() {
                if deploy.failed_time.is_none() && results.iter().any(|r| r.failed > 0) {
                    deploy.failed_time = Some(rfc3339(input.now));
                }
                deploy.results = results.clone();
                deploy.finished = *finished;
            }
        }
        Outcome::DeployRetried => {
            if let Some(deploy) = status.deploy.as_mut() {
                deploy.retries += 1;
                deploy.last_retry_time = Some(rfc3339(input.now));
            }
        }
        Outcome::PreviousDeleted => {
            if let Some(deploy) = status.deploy.as_mut() {
                deploy.previous_deleted = true;
            }
        }
        Outcome::Unchanged => {}
    }
    status
}

/// The data of the Opaque Secret for TKE's CLB Ingress, once a certificate is published.
pub fn tke_secret_data(status: &TencentCertificatePushStatus) -> Option<BTreeMap<String, Vec<u8>>> {
    let id = status.certificate_id.as_ref()?;
    Some(BTreeMap::from([(
        super::TKE_CERT_ID_KEY.to_string(),
        id.clone().into_bytes(),
    )]))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
