//! One reconcile of a `TencentCertificate`: gather, decide (pure policy checks), act, report.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use super::write::{self, apply_secret, delete_exact};
use super::{Context, credentials, passwords, target};
use crate::crd::{self, DeletionPolicy, TencentCertificate, TencentCertificateStatus};
use crate::error::SyncError;
use crate::outputs::{self, Passwords, Previous};
use crate::policy::{
    self, Decision, DownloadTrigger, Ownership, REFRESH_REQUESTED_ANNOTATION, Renamed,
};
use crate::secret::{
    self, CA_CERT_KEY, CERTIFICATE_ID_ANNOTATION, CERTIFICATE_NAME_LABEL, FIELD_MANAGER,
    MANAGED_BY_LABEL, SecretParams, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY,
};
use crate::status::{self, Attempt, Serving, StatusInput};
use tencent_ssl::ErrorClass;
use tencent_ssl::bundle::{self, BundleError, CertBundle, CertMetadata};

/// Errors that stop a reconcile before it can report through status (reading or patching Kubernetes).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("TencentCertificate has no namespace")]
    NoNamespace,
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Leadership ended during the reconcile: it was cancelled, or a write was refused.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl ReconcileError {
    /// Stopped because this replica does not lead: no status, no event, not counted as a failure.
    pub fn not_leader(&self) -> bool {
        match self {
            Self::NotLeader(_) => true,
            Self::Sync(err) => err.not_leader(),
            Self::NoNamespace => false,
        }
    }
}

/// The labels a create carries (see `secret::creation_core`): the ones that make the Secret ours.
const CREATED_LABELS: [&str; 2] = [MANAGED_BY_LABEL, CERTIFICATE_NAME_LABEL];

/// The Secret's data read back as a bundle; `None` when `tls.crt` or `tls.key` is absent.
pub fn read_secret_bundle(secret: &Secret) -> Option<Result<CertBundle, BundleError>> {
    let data = secret.data.as_ref()?;
    let crt = data.get(TLS_CERT_KEY)?;
    let key = data.get(TLS_PRIVATE_KEY_KEY)?;
    let mut entries: Vec<(&str, &[u8])> =
        vec![(TLS_CERT_KEY, &crt.0), (TLS_PRIVATE_KEY_KEY, &key.0)];
    if let Some(ca) = data.get(CA_CERT_KEY) {
        entries.push((CA_CERT_KEY, &ca.0));
    }
    Some(bundle::from_pem_entries(&entries))
}

pub fn secret_params(
    cr: &TencentCertificate,
    namespace: &str,
    certificate_id: &str,
) -> SecretParams {
    let template = cr.spec.secret_template.clone().unwrap_or_default();
    SecretParams {
        namespace: namespace.to_string(),
        name: cr.secret_name(),
        certificate_name: cr.name_any(),
        certificate_id: certificate_id.to_string(),
        owner: match cr.spec.deletion_policy {
            DeletionPolicy::Delete => cr.controller_owner_ref(&()),
            DeletionPolicy::Retain => None,
        },
        template_labels: template.labels,
        template_annotations: template.annotations,
        include_ca: cr.spec.include_ca,
        outputs: outputs::Derived::default(),
    }
}

/// The Secret for `bundle` under `certificate_id`, with the outputs the spec asks for. `existing` is the
/// Secret as it is: its keystores are kept when nothing they are made from changed.
pub fn desired_secret(
    cr: &TencentCertificate,
    namespace: &str,
    certificate_id: &str,
    bundle: &CertBundle,
    passwords: &Passwords,
    existing: Option<&Secret>,
) -> Result<Secret, outputs::OutputError> {
    let mut params = secret_params(cr, namespace, certificate_id);
    params.outputs = outputs::derive(
        bundle,
        certificate_id,
        &cr.spec.outputs,
        cr.spec.include_ca,
        passwords,
        Previous::of(existing),
    )?;
    Ok(secret::desired(&params, bundle))
}

fn serving_certificate_id(existing: &Secret) -> Option<String> {
    existing
        .metadata
        .annotations
        .as_ref()?
        .get(CERTIFICATE_ID_ANNOTATION)
        .cloned()
}

/// What a successful sync left in the Secret.
struct Written {
    /// The certificate the Secret serves now.
    meta: CertMetadata,
    resolved: target::Resolved,
    wrote: Option<&'static str>,
    /// `false` when Tencent's listing showed the served certificate unchanged and nothing was downloaded.
    downloaded: bool,
}

pub async fn reconcile(
    cr: Arc<TencentCertificate>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = cr.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = cr.name_any();
    let span = tracing::info_span!(
        "reconcile",
        namespace = %namespace,
        name = %name,
        target = %cr.spec.describe_target()
    );
    let started = std::time::Instant::now();
    // Cancelled where it waits (e.g. at the Tencent rate limiter) the moment leadership ends.
    let result = match ctx
        .fence
        .guard(reconcile_inner(&cr, &ctx, &namespace).instrument(span))
        .await
    {
        Ok(result) => result,
        Err(not_leader) => Err(not_leader.into()),
    };
    match result {
        Err(err) if err.not_leader() => {
            debug!(namespace = %namespace, name = %name, "not the leader: reconcile stopped");
            Err(err)
        }
        Ok(outcome) => {
            ctx.metrics
                .reconciled(outcome.result, &outcome.reason, started.elapsed());
            Ok(outcome.action)
        }
        Err(err) => {
            warn!(namespace = %namespace, name = %name, error = %err, "reconcile failed");
            ctx.metrics.reconciled(
                "error",
                crate::error::REASON_KUBERNETES_ERROR,
                started.elapsed(),
            );
            Err(err)
        }
    }
}

/// What one reconcile did, for metrics.
struct Outcome {
    action: Action,
    /// `synced`, `unchanged`, `repaired` or `failed`.
    result: &'static str,
    reason: String,
}

async fn reconcile_inner(
    cr: &TencentCertificate,
    ctx: &Context,
    namespace: &str,
) -> Result<Outcome, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = cr.secret_name();
    let previous = cr.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let refresh = crd::refresh_interval(&cr.spec);

    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(SyncError::kube("reading the Secret"))?;
    let ownership = policy::ownership(cr, existing.as_ref());
    let serving_bundle = existing
        .as_ref()
        .filter(|_| ownership == Ownership::Ours)
        .and_then(read_secret_bundle);
    let expected_id = cr.expected_certificate_id();
    // Metadata repairs re-apply what the Secret holds, under the certificate ID it holds.
    let serving_id = existing
        .as_ref()
        .and_then(serving_certificate_id)
        .or_else(|| expected_id.clone())
        .unwrap_or_default();
    // Keystore passwords: a reconcile that cannot read them writes nothing (no Secret without the keystores
    // it should have, no keystores under an old password) and reports why.
    let (passwords, mut passwords_unusable) =
        match passwords::read(&ctx.client, namespace, &cr.spec.outputs).await {
            Ok(passwords) => (passwords, None),
            Err(err) => (Passwords::default(), Some(err)),
        };
    let desired_from_serving = serving_bundle
        .as_ref()
        .and_then(|b| b.as_ref().ok())
        .filter(|_| passwords_unusable.is_none())
        .and_then(|b| {
            desired_secret(cr, namespace, &serving_id, b, &passwords, existing.as_ref()).ok()
        });
    let keystore_password_fixed = passwords_unusable.is_none()
        && previous
            .condition(status::CONDITION_SYNCED)
            .is_some_and(|c| c.status == "False" && c.reason == outputs::REASON_KEYSTORE_PASSWORD);
    let uid = cr.uid().unwrap_or_default();
    let credentials_changed = match ctx.credentials_failure(&uid) {
        Some(at_failure) => {
            credentials::secret_version(&ctx.client, cr, &ctx.defaults).await != at_failure
        }
        None => false,
    };
    let decision = policy::decide(&policy::Observed {
        cr,
        existing: existing.as_ref(),
        serving: serving_bundle.as_ref(),
        desired_from_serving: desired_from_serving.as_ref(),
        credentials_changed,
        keystore_password_fixed,
        now,
    });

    // What the Secret holds once this reconcile is done, if it is ours and usable.
    let mut serving: Option<(String, CertMetadata)> = match (&existing, &serving_bundle) {
        (Some(existing), Some(Ok(bundle))) => {
            serving_certificate_id(existing).map(|id| (id, bundle.meta.clone()))
        }
        _ => None,
    };
    let mut attempt = Attempt::NotNeeded;
    let mut downloaded = false;
    let mut conflict = None;
    let mut next_sync = None;
    let mut refresh_request = None;
    let mut note = None;
    let mut resolved: Option<target::Resolved> = None;

    match &decision {
        Decision::Conflict(message) => {
            conflict = Some(message.clone());
            serving = None;
        }
        Decision::AwaitingRetry => {}
        // Whatever else is due, nothing is written without the keystore passwords.
        Decision::UpToDate | Decision::RepairMetadata | Decision::Download(_)
            if passwords_unusable.is_some() =>
        {
            if let Some(err) = passwords_unusable.take() {
                let (failed, retry_at) = failed_attempt(ctx, cr, &uid, &previous, &err, now).await;
                attempt = failed;
                next_sync = Some(retry_at);
            }
        }
        Decision::UpToDate => {}
        Decision::RepairMetadata => {
            if let (Some(desired), Some(existing)) = (&desired_from_serving, &existing) {
                apply_secret(&secrets, desired).await?;
                ctx.metrics.secret_written("repair");
                note = Some(repair_note(existing, desired, &secret_name));
            }
        }
        Decision::Download(trigger) => {
            info!(namespace, name = %cr.name_any(), trigger = %trigger.describe(), "downloading certificate");
            refresh_request = cr.annotations().get(REFRESH_REQUESTED_ANNOTATION).cloned();
            let sync = Sync {
                existing: existing.as_ref(),
                desired_from_serving: desired_from_serving.as_ref(),
                passwords: &passwords,
                serving: serving.as_ref().map(|(id, meta)| (id.as_str(), meta)),
                last_download: previous
                    .last_download_time
                    .as_deref()
                    .and_then(|t| t.parse().ok()),
                retrying: previous.failures > 0,
                trigger,
                now,
            };
            let result = tencent_ssl::priority::scope(
                trigger.priority(),
                download_and_write(cr, ctx, &secrets, namespace, &sync),
            )
            .await;
            match result {
                Ok(written) => {
                    ctx.forget_credentials_failure(&uid);
                    attempt = Attempt::Succeeded;
                    downloaded = written.downloaded;
                    serving = Some((written.resolved.id.clone(), written.meta.clone()));
                    next_sync = Some(now + status::refresh_delay(refresh, fastrand::f64()));
                    if let Some(verb) = written.wrote {
                        note = Some((
                            verb,
                            format!(
                                "wrote Secret {secret_name} with certificate {} ({}), valid until {}",
                                written.resolved.id,
                                written
                                    .meta
                                    .subject_cn
                                    .as_deref()
                                    .unwrap_or("no subject name"),
                                status::format_time(written.meta.not_after)
                            ),
                        ));
                    }
                    resolved = Some(written.resolved);
                }
                // Its namespace is being deleted, and the resource with it: no warning, event or retry
                // (seen on a real API server: the namespace controller deletes the Secrets first).
                Err(err) if err.namespace_terminating() => {
                    debug!(namespace, name = %cr.name_any(), "the namespace is being deleted; not writing");
                    return Ok(Outcome {
                        action: Action::await_change(),
                        result: "unchanged",
                        reason: String::new(),
                    });
                }
                // A write refused by the fence: stop, without a status or an event.
                Err(err) if err.not_leader() => return Err(err.into()),
                Err(err) => {
                    let (failed, retry_at) =
                        failed_attempt(ctx, cr, &uid, &previous, &err, now).await;
                    attempt = failed;
                    next_sync = Some(retry_at);
                }
            }
        }
    }
    if conflict.is_some() {
        let delay = status::retry_delay(ErrorClass::Permanent, 1, refresh, fastrand::f64());
        next_sync = Some(now + delay);
    }
    // A Secret left behind by a `secretName` change goes only once the new one serves; until then the
    // status keeps naming the old one, which is what still serves.
    let new_in_place = serving.is_some() && conflict.is_none();
    let status_secret_name = match policy::renamed(
        previous.secret_name.as_deref(),
        &secret_name,
        new_in_place,
        cr.spec.deletion_policy,
    ) {
        Renamed::KeepServing(old) => old,
        Renamed::Release(old) => match release_renamed_secret(cr, ctx, &secrets, &old).await {
            Ok(()) => secret_name.clone(),
            Err(err) => {
                warn!(namespace, name = %cr.name_any(), secret = %old, error = %err, "cannot delete the Secret left behind by a secretName change; retrying later");
                old
            }
        },
        Renamed::Nothing | Renamed::Retained => secret_name.clone(),
    };

    // The certificate the Secret should hold now.
    let expected = resolved
        .as_ref()
        .map(|r| r.id.clone())
        .or(expected_id)
        .unwrap_or_else(|| cr.spec.describe_target());
    let new_status = status::compute(&StatusInput {
        previous: &previous,
        generation: cr.metadata.generation,
        spec_certificate_id: &expected,
        resolved: resolved
            .as_ref()
            .map(|r| (r.id.as_str(), r.chain.as_slice())),
        note: resolved.as_ref().and_then(|r| r.note.as_deref()),
        secret_name: &status_secret_name,
        serving: serving.as_ref().map(|(id, meta)| Serving {
            certificate_id: id,
            meta,
        }),
        attempt: attempt.clone(),
        downloaded,
        conflict: conflict.as_deref(),
        refresh_request: refresh_request.as_deref(),
        now,
        next_sync,
    });
    if cr.status.as_ref() != Some(&new_status) {
        patch_status(ctx, cr, namespace, &new_status).await?;
    }
    let renewed = match (
        &previous.resolved_certificate_id,
        &new_status.resolved_certificate_id,
    ) {
        (Some(old), Some(new)) if old != new => Some((
            new.clone(),
            format!(
                "now serving certificate {new} instead of {old} ({})",
                if new_status.renewal_chain.is_empty() {
                    "selected for the domain".to_string()
                } else {
                    format!("renewal chain {}", new_status.renewal_chain.join(" → "))
                }
            ),
        )),
        _ => None,
    };
    publish_events(ctx, cr, &previous, &new_status, note, renewed).await;
    let ready = new_status.is_true(status::CONDITION_READY);
    ctx.metrics.set_certificate(
        namespace,
        &cr.name_any(),
        &expected,
        new_status
            .not_after
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        ready,
        new_status
            .condition(status::CONDITION_READY)
            .map(|c| c.reason.as_str())
            .unwrap_or(status::REASON_PENDING),
    );
    let (result, reason) = match (&decision, &attempt) {
        (Decision::Conflict(_), _) => ("failed", crate::error::REASON_SECRET_CONFLICT.to_string()),
        (_, Attempt::Failed { reason, .. }) => ("failed", reason.clone()),
        (_, Attempt::Succeeded) => ("synced", String::new()),
        (Decision::RepairMetadata, _) => ("repaired", String::new()),
        _ => ("unchanged", String::new()),
    };
    let deferred_refresh = super::refresh::deferred(ctx, cr, &decision, now).await;
    Ok(Outcome {
        action: Action::requeue(super::refresh::sooner(
            requeue_after(&new_status, now, refresh),
            deferred_refresh,
        )),
        result,
        reason,
    })
}

/// A failed attempt: its condition, and when to retry (logged here, once).
async fn failed_attempt(
    ctx: &Context,
    cr: &TencentCertificate,
    uid: &str,
    previous: &TencentCertificateStatus,
    err: &SyncError,
    now: jiff::Timestamp,
) -> (Attempt, jiff::Timestamp) {
    warn!(namespace = cr.namespace().unwrap_or_default(), name = %cr.name_any(), reason = err.reason(), error = %err, "sync failed");
    let class = err.class();
    if matches!(
        err,
        SyncError::CredentialsNotFound(_)
            | SyncError::InvalidCredentials(_)
            | SyncError::Tencent { .. }
    ) && class == ErrorClass::Credentials
    {
        let version = credentials::secret_version(&ctx.client, cr, &ctx.defaults).await;
        ctx.remember_credentials_failure(uid, version);
    } else {
        ctx.forget_credentials_failure(uid);
    }
    let delay = status::retry_delay(
        class,
        previous.failures.saturating_add(1),
        crd::refresh_interval(&cr.spec),
        fastrand::f64(),
    );
    let attempt = Attempt::Failed {
        reason: err.reason().to_string(),
        message: err.to_string(),
    };
    (attempt, now + delay)
}

/// The event for a re-apply of the Secret's own certificate: its outputs were rewritten (a keystore
/// password changed, a keystore was replaced), or only its metadata was restored.
fn repair_note(existing: &Secret, desired: &Secret, secret_name: &str) -> (&'static str, String) {
    if secret::data_matches(existing, desired) {
        (
            "SecretRepaired",
            format!("restored the labels, annotations and owner of Secret {secret_name}"),
        )
    } else {
        (
            "SecretOutputsUpdated",
            format!(
                "rewrote the outputs of Secret {secret_name} derived from its certificate (keystores, additional formats, certificate id)"
            ),
        )
    }
}

/// When to look again: at the planned sync, or when the certificate expires if that comes first.
fn requeue_after(
    status: &TencentCertificateStatus,
    now: jiff::Timestamp,
    refresh: Duration,
) -> Duration {
    let until = |t: Option<&String>| {
        t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO))
    };
    let next = until(status.next_sync_time.as_ref()).unwrap_or(refresh);
    let expiry = until(status.not_after.as_ref())
        .filter(|d| !d.is_zero())
        .map(|d| d + Duration::from_secs(1));
    next.min(expiry.unwrap_or(next)).max(Duration::from_secs(1))
}

/// Deletes the Secret `old_name` left behind by a `secretName` change, if it is ours.
async fn release_renamed_secret(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    old_name: &str,
) -> Result<(), SyncError> {
    let Some(old) = secrets
        .get_opt(old_name)
        .await
        .map_err(SyncError::kube("reading the previous Secret"))?
    else {
        return Ok(());
    };
    if policy::ownership(cr, Some(&old)) == Ownership::Ours {
        info!(
            secret = old_name,
            "deleting the Secret left behind by a secretName change, now that the new one serves"
        );
        delete_exact(secrets, &old.metadata).await?;
        ctx.metrics.secret_written("delete");
    }
    Ok(())
}

/// What a sync starts from.
struct Sync<'a> {
    existing: Option<&'a Secret>,
    /// The Secret as the spec wants it from the certificate it already holds (when ours and usable).
    desired_from_serving: Option<&'a Secret>,
    passwords: &'a Passwords,
    /// The certificate id and metadata the Secret serves, if ours and usable.
    serving: Option<(&'a str, &'a CertMetadata)>,
    last_download: Option<jiff::Timestamp>,
    /// The previous attempt failed: this one is its retry.
    retrying: bool,
    trigger: &'a DownloadTrigger,
    now: jiff::Timestamp,
}

async fn download_and_write(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    namespace: &str,
    sync: &Sync<'_>,
) -> Result<Written, SyncError> {
    let source = credentials::resolve(&ctx.client, cr, &ctx.defaults).await?;
    let credentials = ctx.tencent.credentials(&source).await?;
    let result = download_and_write_with(cr, ctx, secrets, namespace, sync, &credentials).await;
    match &result {
        Err(SyncError::Tencent { err })
            if source.role_arn().is_some() && err.code() == Some("AuthFailure.TokenFailure") =>
        {
            // Tencent refused the role's temporary credentials (expired or revoked before their time):
            // assume the role again, at once, and try once more with the new ones.
            debug!(
                reason = err.reason(),
                "temporary credentials refused; assuming the role again"
            );
            ctx.tencent.forget_credentials(&source);
            let credentials = ctx.tencent.credentials(&source).await?;
            download_and_write_with(cr, ctx, secrets, namespace, sync, &credentials).await
        }
        _ => result,
    }
}

async fn download_and_write_with(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    namespace: &str,
    sync: &Sync<'_>,
    credentials: &tencent_ssl::Credentials,
) -> Result<Written, SyncError> {
    let Sync {
        existing,
        trigger,
        now,
        ..
    } = *sync;
    let refresh = crd::refresh_interval(&cr.spec);
    let max_age = trigger.max_age(refresh);
    let routine = matches!(trigger, DownloadTrigger::RefreshDue);
    // Resolving looks ids up when following renewals, and a routine refresh does for the download skip.
    let looks_up = match cr.spec.target() {
        crd::Target::Certificate {
            follow_renewals, ..
        } => follow_renewals || routine,
        _ => false,
    };
    if looks_up && let Some(id) = cr.expected_certificate_id() {
        ctx.tencent.prefetch_lookups(credentials, &id, max_age, || {
            ctx.ids_sharing_credentials(cr)
        });
    }
    let resolved = target::resolve(cr, &ctx.tencent, credentials, now, max_age, routine).await?;
    let certificate_id = &resolved.id;
    let before = policy::BeforeDownload {
        trigger,
        serving: sync.serving,
        resolved_id: certificate_id,
        listed: resolved.listed.as_ref(),
        last_download: sync.last_download,
        retrying: sync.retrying,
        now,
        full_download_every: ctx.full_download_every,
    };
    if let Some((_, meta)) = sync.serving
        && !policy::download_needed(&before)
    {
        debug!(certificate_id = %certificate_id, "Tencent lists the served certificate unchanged; no download");
        // The certificate stays; what is derived from it (e.g. keystores under a changed password) or the
        // metadata may still have to change.
        let wrote = match (existing, sync.desired_from_serving) {
            (Some(existing), Some(desired)) if policy::needs_write(existing, desired, cr) => {
                apply_secret(secrets, desired).await?;
                ctx.metrics.secret_written("repair");
                Some(repair_note(existing, desired, &cr.secret_name()).0)
            }
            _ => None,
        };
        return Ok(Written {
            meta: meta.clone(),
            resolved,
            wrote,
            downloaded: false,
        });
    }
    // Resources naming the same certificate share a download younger than `max_age` (per credentials).
    // The retry of a failed attempt asks Tencent again rather than taking another resource's download.
    let download_max_age = if sync.retrying {
        Duration::ZERO
    } else {
        trigger.download_max_age(refresh)
    };
    let bundle = match ctx
        .bundles
        .get(credentials, certificate_id, download_max_age)
    {
        Some(shared) => {
            tencent_ssl::Observer::coalesced(ctx.metrics.as_ref(), "wave");
            shared
        }
        None => {
            let download = ctx
                .tencent
                .download_certificate_within(credentials, certificate_id, download_max_age)
                .await?;
            let bundle = Arc::new(bundle::extract(&download.zip)?);
            ctx.bundles.put(credentials, certificate_id, bundle.clone());
            bundle
        }
    };
    if bundle.meta.is_expired_at(now) {
        // Never replace anything with an expired certificate, nor write one where none was.
        return Err(SyncError::Expired {
            certificate_id: certificate_id.clone(),
            not_after: status::format_time(bundle.meta.not_after),
        });
    }
    // Derived before anything is written: an output that cannot be made leaves the Secret as it is. Only
    // our own Secret's keystores may be kept (not those of a Secret being adopted).
    let ours = existing.filter(|e| policy::ownership(cr, Some(e)) == Ownership::Ours);
    let desired = desired_secret(cr, namespace, certificate_id, &bundle, sync.passwords, ours)?;
    let wrote = match existing {
        Some(existing)
            if policy::ownership(cr, Some(existing)) == Ownership::Ours
                && !policy::needs_write(existing, &desired, cr) =>
        {
            None
        }
        // `type` is immutable and consumers reference this very name, so writing the new Secret first
        // under another name is no option: delete and create. The download and the whole new Secret are
        // ready by now, so the name is empty only between the delete and the create right after it.
        Some(existing) if existing.type_.as_deref() != desired.type_.as_deref() => {
            write::recreate_secret(secrets, existing, &desired, &CREATED_LABELS).await?;
            Some("SecretRecreated")
        }
        Some(_) => {
            apply_secret(secrets, &desired).await?;
            Some("SecretUpdated")
        }
        // None seen: a create, which fails (SecretConflict) if someone else's Secret appeared since.
        None => {
            write::create_secret(secrets, &desired, &CREATED_LABELS).await?;
            Some("SecretCreated")
        }
    };
    if let Some(event) = wrote {
        let operation = match event {
            "SecretCreated" => "create",
            "SecretRecreated" => "recreate",
            _ => "update",
        };
        ctx.metrics.secret_written(operation);
    }
    Ok(Written {
        meta: bundle.meta.clone(),
        resolved,
        wrote,
        downloaded: true,
    })
}

async fn patch_status(
    ctx: &Context,
    cr: &TencentCertificate,
    namespace: &str,
    status: &TencentCertificateStatus,
) -> Result<(), SyncError> {
    let api: Api<TencentCertificate> = Api::namespaced(ctx.client.clone(), namespace);
    // Server-side apply of the whole status: fields that no longer apply (e.g. notAfter after the
    // Secret vanished) are removed, which a merge patch would leave behind.
    let patch = json!({
        "apiVersion": "tencentcert.io/v1alpha1",
        "kind": "TencentCertificate",
        "status": status,
    });
    api.patch_status(
        &cr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(SyncError::kube("updating the status"))?;
    Ok(())
}

/// The Synced condition's status and reason.
fn synced_state(current: &TencentCertificateStatus) -> Option<(&str, &str)> {
    current
        .condition(status::CONDITION_SYNCED)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Events: what the operator did, and each new failure reason once (not once per retry).
async fn publish_events(
    ctx: &Context,
    cr: &TencentCertificate,
    previous: &TencentCertificateStatus,
    current: &TencentCertificateStatus,
    note: Option<(&'static str, String)>,
    renewed: Option<(String, String)>,
) {
    let mut events = Vec::new();
    if let Some((reason, message)) = note {
        events.push(Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(message),
            action: "WriteSecret".to_string(),
            secondary: None,
        });
    }
    if let Some((new_id, message)) = renewed {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Renewed".to_string(),
            note: Some(message),
            // The recorder folds events with the same reason and action into one series (keeping the first
            // note); the new ID in the action keeps each renewal its own event.
            action: format!("FollowRenewalTo{new_id}"),
            secondary: None,
        });
    }
    let before = synced_state(previous);
    let after = synced_state(current);
    if before != after
        && let Some((state, reason)) = after
    {
        let message = current
            .condition(status::CONDITION_SYNCED)
            .map(|c| c.message.clone());
        if state == "False" {
            events.push(Event {
                type_: EventType::Warning,
                reason: reason.to_string(),
                note: message,
                action: "Sync".to_string(),
                secondary: None,
            });
        } else if before.is_some_and(|(s, _)| s == "False") {
            events.push(Event {
                type_: EventType::Normal,
                reason: "Recovered".to_string(),
                note: message,
                action: "Sync".to_string(),
                secondary: None,
            });
        }
    }
    let reference = cr.object_ref(&());
    let recorder = ctx.recorder();
    // Cut to the API server's limits: an event it refuses is lost, and only logged.
    for event in events.into_iter().map(crate::message::fit_event) {
        if let Err(err) = recorder.publish(&event, &reference).await {
            if crate::leader::fence::refused(&err) {
                debug!(reason = %event.reason, "not publishing an event: not the leader");
                break;
            }
            if crate::error::namespace_terminating(&err) {
                debug!(reason = %event.reason, "not publishing an event: the namespace is being deleted");
                break;
            }
            warn!(error = %err, reason = %event.reason, "cannot publish event");
        }
    }
}

/// Requeue after errors that kept the reconcile from reporting through status.
pub fn error_policy(
    _cr: Arc<TencentCertificate>,
    _err: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    Action::requeue(status::retry_delay(
        ErrorClass::Transient,
        3,
        Duration::from_secs(3600),
        fastrand::f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_follows_the_plan_but_never_sleeps_past_expiry() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let refresh = Duration::from_secs(3600);
        let planned = TencentCertificateStatus {
            next_sync_time: Some("2026-01-01T00:10:00Z".into()),
            not_after: Some("2026-06-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            requeue_after(&planned, now, refresh),
            Duration::from_secs(600)
        );
        let expiring = TencentCertificateStatus {
            next_sync_time: Some("2026-01-01T00:10:00Z".into()),
            not_after: Some("2026-01-01T00:01:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            requeue_after(&expiring, now, refresh),
            Duration::from_secs(61)
        );
        let overdue = TencentCertificateStatus {
            next_sync_time: Some("2025-12-31T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            requeue_after(&overdue, now, refresh),
            Duration::from_secs(1)
        );
        assert_eq!(
            requeue_after(&TencentCertificateStatus::default(), now, refresh),
            refresh
        );
    }
}
