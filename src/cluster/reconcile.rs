//! One reconcile of a `ClusterTencentCertificate`: resolve and fetch the certificate once, then make each
//! targeted namespace's Secret match, and report.
//!
//! Tencent work is per resource (one lookup or download for all namespaces, shared with TencentCertificates
//! naming the same id through the bundle cache); Kubernetes work is per namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{debug, info, warn};

use super::ClusterContext;
use super::crd::{ClusterTencentCertificate, ClusterTencentCertificateStatus, NamespaceFailure};
use super::plan::{self, CLUSTER_CERTIFICATE_NAME_LABEL, NamespaceAction};
use crate::bundle::{self, CertBundle};
use crate::controller::credentials;
use crate::controller::reconcile::{apply_secret, delete_exact, read_secret_bundle};
use crate::crd::{self, CredentialsRef};
use crate::error::SyncError;
use crate::policy::{self, DownloadTrigger};
use crate::secret::{CERTIFICATE_ID_ANNOTATION, FIELD_MANAGER};
use crate::status::{self, Attempt};
use crate::tencent::{Credentials, ErrorClass};

/// Secrets read or written at once.
const NAMESPACE_CONCURRENCY: usize = 16;
/// How soon failing namespaces are looked at again. A foreign Secret that consents to adoption (or goes)
/// raises no event this controller watches, so it is polled, at a pace that costs little.
const NAMESPACE_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterReconcileError {
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// The certificate to write, and how this reconcile got it.
struct Fetched {
    id: String,
    bundle: Arc<CertBundle>,
    chain: Option<Vec<String>>,
    downloaded: bool,
}

pub async fn reconcile(
    cr: Arc<ClusterTencentCertificate>,
    ctx: Arc<ClusterContext>,
) -> Result<Action, ClusterReconcileError> {
    let started = std::time::Instant::now();
    let name = cr.name_any();
    let result = reconcile_inner(&cr, &ctx).await;
    let (outcome, reason) = match &result {
        Ok((_, reason)) if reason.is_empty() => ("synced", String::new()),
        Ok((_, reason)) => ("failed", reason.clone()),
        Err(_) => ("error", crate::error::REASON_KUBERNETES_ERROR.to_string()),
    };
    ctx.base
        .metrics
        .reconciled(outcome, &reason, started.elapsed());
    match result {
        Ok((action, _)) => Ok(action),
        Err(err) => {
            warn!(name = %name, error = %err, "cluster certificate reconcile failed");
            Err(err)
        }
    }
}

pub fn error_policy(
    _cr: Arc<ClusterTencentCertificate>,
    _err: &ClusterReconcileError,
    _ctx: Arc<ClusterContext>,
) -> Action {
    Action::requeue(status::retry_delay(
        ErrorClass::Transient,
        3,
        Duration::from_secs(3600),
        fastrand::f64(),
    ))
}

async fn reconcile_inner(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
) -> Result<(Action, String), ClusterReconcileError> {
    let name = cr.name_any();
    let now = jiff::Timestamp::now();
    let view = cr.selection();
    let refresh = crd::refresh_interval(&view.spec);
    let previous = cr.status.clone().unwrap_or_default();
    let client = &ctx.base.client;

    // Gather: the targeted namespaces, our Secrets everywhere, and whatever sits at the name elsewhere.
    let targeted = ctx.targeted_namespaces(cr);
    let all_secrets: Api<Secret> = Api::all(client.clone());
    let ours: BTreeMap<String, Secret> = all_secrets
        .list(&ListParams::default().labels(&format!("{CLUSTER_CERTIFICATE_NAME_LABEL}={name}")))
        .await
        .map_err(SyncError::kube(
            "listing the Secrets of the cluster certificate",
        ))?
        .items
        .into_iter()
        .filter(|s| plan::is_ours(s, &name))
        .filter_map(|s| s.namespace().map(|ns| (ns, s)))
        .collect();
    let unknown: Vec<String> = targeted
        .iter()
        .filter(|ns| !ours.contains_key(*ns))
        .cloned()
        .collect();
    // Secrets at the name in targeted namespaces without one of ours (someone else's, or one to adopt).
    let elsewhere: BTreeMap<String, Secret> = futures::stream::iter(unknown)
        .map(|ns: String| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let secret_name = cr.spec.secret_name.clone();
            async move {
                let got = api.get_opt(&secret_name).await;
                (ns, got)
            }
        })
        .buffer_unordered(NAMESPACE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|(ns, got)| got.map(|s| s.map(|s| (ns, s))).transpose())
        .collect::<Result<_, _>>()
        .map_err(SyncError::kube("reading a targeted namespace's Secret"))?;
    // Looked up, not copied: with thousands of namespaces the Secrets are most of the reconcile's memory.
    let current_of = |ns: &str| ours.get(ns).or_else(|| elsewhere.get(ns));

    // What our Secrets serve now: the certificate of the last sync, read back from any of them.
    let serving: Option<(String, Arc<CertBundle>)> =
        previous.certificate_id.as_ref().and_then(|id| {
            ours.values()
                .filter(|s| s.annotations().get(CERTIFICATE_ID_ANNOTATION) == Some(id))
                .find_map(|s| read_secret_bundle(s).and_then(Result::ok))
                .map(|b| (id.clone(), Arc::new(b)))
        });

    // Decide whether to ask Tencent Cloud: first sync, spec change, refresh (or retry) due.
    let spec_changed = previous.observed_generation != cr.metadata.generation;
    let due = previous
        .next_sync_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none_or(|t| t <= now);
    let mut attempt = Attempt::NotNeeded;
    let mut fetched: Option<Fetched> = None;
    let mut next_sync = None;
    if serving.is_none() || spec_changed || due {
        let trigger = if serving.is_none() {
            DownloadTrigger::SecretMissing
        } else if spec_changed {
            DownloadTrigger::SpecChanged
        } else {
            DownloadTrigger::RefreshDue
        };
        let result = crate::tencent::priority::scope(
            trigger.priority(),
            fetch(
                cr,
                ctx,
                &view,
                &previous,
                serving.as_ref(),
                &trigger,
                now,
                refresh,
            ),
        )
        .await;
        match result {
            Ok(got) if got.bundle.meta.is_expired_at(now) => {
                attempt = Attempt::Failed {
                    reason: crate::error::REASON_EXPIRED.to_string(),
                    message: SyncError::Expired {
                        certificate_id: got.id.clone(),
                        not_after: status::format_time(got.bundle.meta.not_after),
                    }
                    .to_string(),
                };
                next_sync = Some(
                    now + status::retry_delay(ErrorClass::Permanent, 1, refresh, fastrand::f64()),
                );
            }
            Ok(got) => {
                attempt = Attempt::Succeeded;
                next_sync = Some(now + status::refresh_delay(refresh, fastrand::f64()));
                fetched = Some(got);
            }
            Err(err) => {
                warn!(name = %name, reason = err.reason(), error = %err, "cluster certificate sync failed");
                let delay = status::retry_delay(
                    err.class(),
                    previous.failures.saturating_add(1),
                    refresh,
                    fastrand::f64(),
                );
                next_sync = Some(now + delay);
                attempt = Attempt::Failed {
                    reason: err.reason().to_string(),
                    message: err.to_string(),
                };
            }
        }
    }
    // Write what was fetched; when fetching failed, what the Secrets already hold still goes to namespaces
    // that lack it (never an expired certificate).
    let writing: Option<(String, Arc<CertBundle>)> = match fetched.as_ref() {
        Some(f) => Some((f.id.clone(), f.bundle.clone())),
        None => serving.clone().filter(|(_, b)| !b.meta.is_expired_at(now)),
    };

    let mut failures = Vec::new();
    let mut written = 0usize;
    if let Some((id, bundle)) = &writing {
        let results = futures::stream::iter(targeted.clone())
            .map(|ns: String| {
                let current = current_of(&ns);
                let planned = plan::desired_secret(cr, &ns, id, bundle).map(|desired| {
                    let action = plan::namespace_action(cr, current, &desired);
                    (desired, action)
                });
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                async move {
                    let (desired, action) = match planned {
                        Ok(planned) => planned,
                        Err(err) => {
                            let err = SyncError::from(err);
                            return (
                                ns.clone(),
                                Err(NamespaceFailure {
                                    namespace: ns,
                                    reason: err.reason().to_string(),
                                    message: err.to_string(),
                                }),
                            );
                        }
                    };
                    let result = match &action {
                        NamespaceAction::UpToDate => Ok(false),
                        NamespaceAction::Conflict(message) => Err(NamespaceFailure {
                            namespace: ns.clone(),
                            reason: crate::error::REASON_SECRET_CONFLICT.to_string(),
                            message: message.clone(),
                        }),
                        NamespaceAction::Write { recreate } => {
                            write(&api, current, &desired, *recreate)
                                .await
                                .map(|()| true)
                                .map_err(|err| NamespaceFailure {
                                    namespace: ns.clone(),
                                    reason: err.reason().to_string(),
                                    message: err.to_string(),
                                })
                        }
                    };
                    (ns.clone(), result)
                }
            })
            .buffer_unordered(NAMESPACE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (ns, result) in results {
            match result {
                Ok(true) => {
                    written += 1;
                    debug!(name = %name, namespace = %ns, "wrote the cluster certificate's Secret");
                }
                Ok(false) => {}
                Err(failure) => failures.push(failure),
            }
        }
        if written > 0 {
            ctx.base.metrics.secret_written("cluster");
        }
    } else if !targeted.is_empty() {
        // Nothing to write anywhere: every namespace lacks the certificate (the status says why).
        for ns in &targeted {
            if current_of(ns).is_none() {
                failures.push(NamespaceFailure {
                    namespace: ns.clone(),
                    reason: match &attempt {
                        Attempt::Failed { reason, .. } => reason.clone(),
                        _ => status::REASON_PENDING.to_string(),
                    },
                    message: "no certificate to write yet".to_string(),
                });
            }
        }
    }

    // Namespaces that stopped matching lose the Secret with `deletionPolicy: Delete`.
    let mut released = 0usize;
    for ns in plan::released(cr, &ours, &targeted) {
        if ctx.terminating(&ns) {
            continue;
        }
        if let Some(secret) = ours.get(&ns) {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            match delete_exact(&api, secret).await {
                Ok(()) => {
                    released += 1;
                    info!(name = %name, namespace = %ns, "deleted the Secret of a namespace the target no longer selects");
                }
                Err(err) => {
                    warn!(name = %name, namespace = %ns, error = %err, "cannot delete a released Secret")
                }
            }
        }
    }

    let serving_now = writing.as_ref().map(|(id, b)| (id.as_str(), &b.meta));
    let new_status = plan::compute(&plan::StatusInput {
        previous: &previous,
        generation: cr.metadata.generation,
        targeted: targeted.len(),
        failures,
        serving: serving_now,
        renewal_chain: fetched.as_ref().and_then(|f| f.chain.as_deref()),
        attempt: attempt.clone(),
        downloaded: fetched.as_ref().is_some_and(|f| f.downloaded),
        now,
        next_sync,
    });
    if cr.status.as_ref() != Some(&new_status) {
        patch_status(ctx, cr, &new_status).await?;
    }
    publish_events(ctx, cr, &previous, &new_status, written, released).await;
    ctx.base.metrics.set_certificate(
        "",
        &name,
        new_status.certificate_id.as_deref().unwrap_or_default(),
        new_status.not_after.as_deref().and_then(|t| t.parse().ok()),
        new_status.is_true(status::CONDITION_READY),
        new_status
            .condition(status::CONDITION_READY)
            .map(|c| c.reason.as_str())
            .unwrap_or_default(),
    );
    let reason = match &attempt {
        Attempt::Failed { reason, .. } => reason.clone(),
        _ if new_status.failed_namespaces > 0 => plan::REASON_NAMESPACES_FAILING.to_string(),
        _ => String::new(),
    };
    let requeue = new_status
        .next_sync_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO))
        .unwrap_or(refresh)
        .max(Duration::from_secs(1));
    let requeue = if new_status.failed_namespaces > 0 {
        requeue.min(NAMESPACE_RETRY)
    } else {
        requeue
    };
    Ok((Action::requeue(requeue), reason))
}

/// Resolves the selection and gets its bundle: from the Secrets when Tencent's listing shows the served
/// certificate unchanged, else from the wave's shared downloads, else downloaded.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    view: &crd::TencentCertificate,
    previous: &ClusterTencentCertificateStatus,
    serving: Option<&(String, Arc<CertBundle>)>,
    trigger: &DownloadTrigger,
    now: jiff::Timestamp,
    refresh: Duration,
) -> Result<Fetched, SyncError> {
    let credentials = resolve_credentials(cr, ctx).await?;
    let max_age = trigger.max_age(refresh);
    let routine = matches!(trigger, DownloadTrigger::RefreshDue);
    let resolved = crate::controller::target::resolve(
        view,
        &ctx.base.tencent,
        &credentials,
        now,
        max_age,
        routine,
    )
    .await?;
    let retrying = previous.failures > 0;
    let before = policy::BeforeDownload {
        trigger,
        serving: serving.map(|(id, b)| (id.as_str(), &b.meta)),
        resolved_id: &resolved.id,
        listed: resolved.listed.as_ref(),
        last_download: previous
            .last_download_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
        retrying,
        now,
        full_download_every: ctx.base.full_download_every,
    };
    if let Some((id, bundle)) = serving
        && *id == resolved.id
        && !policy::download_needed(&before)
    {
        return Ok(Fetched {
            id: id.clone(),
            bundle: bundle.clone(),
            chain: Some(resolved.chain),
            downloaded: false,
        });
    }
    let download_max_age = if retrying {
        Duration::ZERO
    } else {
        trigger.download_max_age(refresh)
    };
    let bundle = match ctx
        .base
        .bundles
        .get(&credentials, &resolved.id, download_max_age)
    {
        Some(shared) => shared,
        None => {
            let download = ctx
                .base
                .tencent
                .download_certificate_within(&credentials, &resolved.id, download_max_age)
                .await?;
            let bundle = Arc::new(bundle::extract(&download.zip)?);
            ctx.base
                .bundles
                .put(&credentials, &resolved.id, bundle.clone());
            bundle
        }
    };
    Ok(Fetched {
        id: resolved.id,
        bundle,
        chain: Some(resolved.chain),
        downloaded: true,
    })
}

/// The credentials Secret named by namespace and name, or the operator's default credentials (a cluster
/// resource is a cluster admin's: the defaults' namespace allow-list does not apply).
async fn resolve_credentials(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
) -> Result<Credentials, SyncError> {
    let (reference, keys) = match &cr.spec.credentials_ref {
        Some(r) => (
            credentials::SecretRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            },
            CredentialsRef {
                name: r.name.clone(),
                secret_id_key: r.secret_id_key.clone(),
                secret_key_key: r.secret_key_key.clone(),
                token_key: r.token_key.clone(),
                role: None,
            },
        ),
        None => match &ctx.base.defaults.secret {
            Some(default) => (default.clone(), CredentialsRef::named(default.name.clone())),
            None => {
                return Err(SyncError::CredentialsNotFound(
                    "spec.credentialsRef is not set and the operator has no default credentials; set \
                     spec.credentialsRef.namespace and .name to a Secret with secretId and secretKey"
                        .to_string(),
                ));
            }
        },
    };
    credentials::read_secret_credentials(&ctx.base.client, &reference, &keys).await
}

async fn write(
    api: &Api<Secret>,
    existing: Option<&Secret>,
    desired: &Secret,
    recreate: bool,
) -> Result<(), SyncError> {
    if recreate && let Some(existing) = existing {
        // `type` is immutable: re-create the Secret.
        delete_exact(api, existing).await?;
    }
    apply_secret(api, desired).await
}

async fn patch_status(
    ctx: &ClusterContext,
    cr: &ClusterTencentCertificate,
    status: &ClusterTencentCertificateStatus,
) -> Result<(), SyncError> {
    let api: Api<ClusterTencentCertificate> = Api::all(ctx.base.client.clone());
    let patch = json!({
        "apiVersion": "tencentcert.io/v1alpha1",
        "kind": "ClusterTencentCertificate",
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

/// Events on the cluster resource: Secrets written, namespaces released, and each new failure once.
async fn publish_events(
    ctx: &ClusterContext,
    cr: &ClusterTencentCertificate,
    previous: &ClusterTencentCertificateStatus,
    current: &ClusterTencentCertificateStatus,
    written: usize,
    released: usize,
) {
    let mut events = Vec::new();
    if written > 0 {
        events.push(Event {
            type_: EventType::Normal,
            reason: "SecretsWritten".into(),
            note: Some(format!(
                "wrote Secret {} in {written} namespace(s) with certificate {}",
                cr.spec.secret_name,
                current.certificate_id.as_deref().unwrap_or("?")
            )),
            action: "WriteSecret".into(),
            secondary: None,
        });
    }
    if released > 0 {
        events.push(Event {
            type_: EventType::Normal,
            reason: "SecretsReleased".into(),
            note: Some(format!(
                "deleted Secret {} from {released} namespace(s) the target no longer selects",
                cr.spec.secret_name
            )),
            action: "DeleteSecret".into(),
            secondary: None,
        });
    }
    let state = |s: &ClusterTencentCertificateStatus, t: &str| {
        s.condition(t).map(|c| (c.status.clone(), c.reason.clone()))
    };
    for type_ in [status::CONDITION_SYNCED, status::CONDITION_READY] {
        let after = state(current, type_);
        if after != state(previous, type_)
            && let Some((value, reason)) = after
            && value == "False"
            && reason != status::REASON_PENDING
        {
            events.push(Event {
                type_: EventType::Warning,
                reason,
                note: current.condition(type_).map(|c| c.message.clone()),
                action: "Sync".into(),
                secondary: None,
            });
        }
    }
    let reference = cr.object_ref(&());
    let recorder = ctx.base.recorder();
    // Cut to the API server's limits: an event it refuses is lost, and only logged.
    for event in events.into_iter().map(crate::message::fit_event) {
        if let Err(err) = recorder.publish(&event, &reference).await {
            warn!(error = %err, reason = %event.reason, "cannot publish event");
        }
    }
}
