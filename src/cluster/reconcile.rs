//! One reconcile of a `ClusterTencentCertificate`: resolve and fetch the certificate once, then make each
//! targeted namespace's Secret match, and report.
//!
//! Tencent work is per resource (one lookup or download for all namespaces, shared with TencentCertificates
//! naming the same id through the bundle cache); Kubernetes work is per namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{debug, info, warn};

use super::crd::{ClusterTencentCertificate, ClusterTencentCertificateStatus, NamespaceFailure};
use super::plan::{
    self, CLUSTER_CERTIFICATE_NAME_LABEL, HeldCertificate, NamespaceAction, Verified,
};
use super::{ClusterContext, Memory};
use crate::controller::credentials;
use crate::controller::write;
use crate::crd::{self, CredentialsRef};
use crate::error::SyncError;
use crate::policy::{self, DownloadTrigger};
use crate::secret::FIELD_MANAGER;
use crate::status::{self, Attempt};
use tencent_ssl::bundle::{self, CertBundle};
use tencent_ssl::{Credentials, ErrorClass};

/// Secrets read or written at once.
const NAMESPACE_CONCURRENCY: usize = 16;
/// Secrets per page of the metadata list.
const LIST_PAGE: u32 = 500;
/// How soon failing namespaces are looked at again. A foreign Secret that consents to adoption (or goes)
/// raises no event this controller watches, so it is polled, at a pace that costs little.
const NAMESPACE_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterReconcileError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Leadership ended during the reconcile: it was cancelled, or a write was refused.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl ClusterReconcileError {
    /// Stopped because this replica does not lead: no status, no event, not counted as a failure.
    pub fn not_leader(&self) -> bool {
        match self {
            Self::NotLeader(_) => true,
            Self::Sync(err) => err.not_leader(),
        }
    }
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
    // Cancelled where it waits the moment leadership ends.
    let result = match ctx.base.fence.guard(reconcile_inner(&cr, &ctx)).await {
        Ok(result) => result,
        Err(not_leader) => Err(not_leader.into()),
    };
    if let Err(err) = &result
        && err.not_leader()
    {
        debug!(name = %name, "not the leader: cluster certificate reconcile stopped");
        return result.map(|(action, _)| action);
    }
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

/// What the gather saw of the Secrets.
struct Gathered {
    targeted: Vec<String>,
    inventory: plan::Inventory,
    /// Secrets read in full, per targeted namespace, at `secretName` (`None`: nothing there).
    read: BTreeMap<String, Option<Secret>>,
    /// The content that may be written again without a download (see `plan::trusted_content`).
    trusted: Option<HeldCertificate>,
}

/// Lists our Secrets (metadata only), reads the few needed in full, and picks what content can be trusted.
async fn gather(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    memory: &Memory,
) -> Result<Gathered, SyncError> {
    let targeted = ctx.targeted_namespaces(cr);
    let listed = list_labelled(&ctx.base.client, &cr.name_any()).await?;
    let inventory = plan::inventory(cr, listed, &targeted);
    let held = plan::trusted_content(cr, memory.held.as_ref(), &inventory, &BTreeMap::new());
    // A namespace without its own Secret is read (someone else's may sit at the name). One with its own
    // is read now only when nothing trusted is held (its content is then a candidate), else later and
    // only if it changed since it was last found right.
    let to_read: Vec<String> = targeted
        .iter()
        .filter(|ns| held.is_none() || !inventory.own.contains_key(*ns))
        .cloned()
        .collect();
    let read = read_secrets(&ctx.base.client, &cr.spec.secret_name, to_read).await?;
    let trusted = held.or_else(|| plan::trusted_content(cr, None, &inventory, &read));
    Ok(Gathered {
        targeted,
        inventory,
        read,
        trusted,
    })
}

/// The metadata of every Secret labelled with this resource's name, page by page. Anyone who may edit a
/// namespace's Secrets can set the label, so only metadata is listed, bounded per page, and trimmed to
/// what [`plan::inventory`] looks at.
async fn list_labelled(client: &kube::Client, name: &str) -> Result<Vec<ObjectMeta>, SyncError> {
    let api: Api<Secret> = Api::all(client.clone());
    let mut params = ListParams::default()
        .labels(&format!("{CLUSTER_CERTIFICATE_NAME_LABEL}={name}"))
        .limit(LIST_PAGE);
    let mut listed = Vec::new();
    loop {
        let page = api.list_metadata(&params).await.map_err(SyncError::kube(
            "listing the Secrets of the cluster certificate",
        ))?;
        listed.extend(page.items.into_iter().map(|s| ObjectMeta {
            name: s.metadata.name,
            namespace: s.metadata.namespace,
            labels: s.metadata.labels,
            uid: s.metadata.uid,
            resource_version: s.metadata.resource_version,
            ..ObjectMeta::default()
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(listed),
        }
    }
}

/// The Secret `secret_name` in each of `namespaces`, read concurrently.
async fn read_secrets(
    client: &kube::Client,
    secret_name: &str,
    namespaces: Vec<String>,
) -> Result<BTreeMap<String, Option<Secret>>, SyncError> {
    futures::stream::iter(namespaces)
        .map(|ns: String| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            async move { (ns, api.get_opt(secret_name).await) }
        })
        .buffer_unordered(NAMESPACE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|(ns, got)| got.map(|s| (ns, s)))
        .collect::<Result<_, _>>()
        .map_err(SyncError::kube("reading a targeted namespace's Secret"))
}

/// The outcome of asking Tencent Cloud, when it was asked.
struct Asked {
    attempt: Attempt,
    fetched: Option<Fetched>,
    next_sync: Option<jiff::Timestamp>,
}

/// Asks Tencent Cloud when needed: first sync (or nothing trusted to write), spec change, refresh or
/// retry due.
async fn ask_tencent(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    serving: Option<&(String, Arc<CertBundle>)>,
    now: jiff::Timestamp,
) -> Asked {
    let view = cr.selection();
    let refresh = crd::refresh_interval(&view.spec);
    let previous = cr.status.clone().unwrap_or_default();
    let spec_changed = previous.observed_generation != cr.metadata.generation;
    let due = previous
        .next_sync_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none_or(|t| t <= now);
    let mut asked = Asked {
        attempt: Attempt::NotNeeded,
        fetched: None,
        next_sync: None,
    };
    if !(serving.is_none() || spec_changed || due) {
        return asked;
    }
    let trigger = if serving.is_none() {
        DownloadTrigger::SecretMissing
    } else if spec_changed {
        DownloadTrigger::SpecChanged
    } else {
        DownloadTrigger::RefreshDue
    };
    let result = tencent_ssl::priority::scope(
        trigger.priority(),
        fetch(cr, ctx, &view, &previous, serving, &trigger, now, refresh),
    )
    .await;
    match result {
        Ok(got) if got.bundle.meta.is_expired_at(now) => {
            asked.attempt = Attempt::Failed {
                reason: crate::error::REASON_EXPIRED.to_string(),
                message: SyncError::Expired {
                    certificate_id: got.id.clone(),
                    not_after: status::format_time(got.bundle.meta.not_after),
                }
                .to_string(),
            };
            asked.next_sync =
                Some(now + status::retry_delay(ErrorClass::Permanent, 1, refresh, fastrand::f64()));
        }
        Ok(got) => {
            asked.attempt = Attempt::Succeeded;
            asked.next_sync = Some(now + status::refresh_delay(refresh, fastrand::f64()));
            asked.fetched = Some(got);
        }
        Err(err) => {
            warn!(name = %cr.name_any(), reason = err.reason(), error = %err, "cluster certificate sync failed");
            let delay = status::retry_delay(
                err.class(),
                previous.failures.saturating_add(1),
                refresh,
                fastrand::f64(),
            );
            asked.next_sync = Some(now + delay);
            asked.attempt = Attempt::Failed {
                reason: err.reason().to_string(),
                message: err.to_string(),
            };
        }
    }
    asked
}

async fn reconcile_inner(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
) -> Result<(Action, String), ClusterReconcileError> {
    let name = cr.name_any();
    let now = jiff::Timestamp::now();
    let refresh = crd::refresh_interval(&cr.selection().spec);
    let previous = cr.status.clone().unwrap_or_default();
    let mut memory = ctx.remembered(cr);

    let gathered = gather(cr, ctx, &memory).await?;
    let serving = gathered
        .trusted
        .as_ref()
        .map(|t| (t.id.clone(), t.bundle.clone()));
    let Asked {
        attempt,
        fetched,
        next_sync,
    } = ask_tencent(cr, ctx, serving.as_ref(), now).await;
    // Write what was fetched; when fetching failed, the trusted content still goes to namespaces that lack
    // it (never an expired certificate).
    let writing: Option<HeldCertificate> = match fetched.as_ref() {
        Some(f) => Some(HeldCertificate {
            id: f.id.clone(),
            bundle: f.bundle.clone(),
        }),
        None => gathered
            .trusted
            .clone()
            .filter(|t| !t.bundle.meta.is_expired_at(now)),
    };

    let targeted = &gathered.targeted;
    let mut failures = Vec::new();
    let mut written = 0usize;
    let mut settled = BTreeSet::new();
    if let Some(content) = &writing {
        let outcomes = write_namespaces(cr, ctx, &gathered, content, &memory).await;
        for (ns, outcome) in outcomes {
            match outcome {
                Ok((wrote, verified)) => {
                    if wrote {
                        written += 1;
                        debug!(name = %name, namespace = %ns, "wrote the cluster certificate's Secret");
                    }
                    memory.verified.insert(ns.clone(), verified);
                    settled.insert(ns);
                }
                Err(failure) => {
                    memory.verified.remove(&ns);
                    failures.push(failure);
                }
            }
        }
        if written > 0 {
            ctx.base.metrics.secret_written("cluster");
        }
        memory.held = Some(content.clone());
    } else if !targeted.is_empty() {
        // Nothing to write anywhere: every namespace lacks the certificate (the status says why).
        for ns in targeted {
            if !gathered.inventory.own.contains_key(ns)
                && gathered.read.get(ns).is_none_or(Option::is_none)
            {
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
    memory.verified.retain(|ns, _| targeted.contains(ns));
    let released = release_leftovers(cr, ctx, &gathered, &settled).await;
    ctx.remember(cr, memory);

    let serving_now = writing.as_ref().map(|c| (c.id.as_str(), &c.bundle.meta));
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

/// Makes each targeted namespace's Secret hold `content`: per namespace, whether it was written and the
/// version now verified, or why not.
async fn write_namespaces(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    content: &HeldCertificate,
    memory: &Memory,
) -> Vec<(String, Result<(bool, Verified), NamespaceFailure>)> {
    let client = &ctx.base.client;
    futures::stream::iter(gathered.targeted.clone())
        .map(|ns: String| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            // Looked up, not copied: with thousands of namespaces the Secrets are most of the memory.
            let known = gathered.read.get(&ns);
            let own = gathered.inventory.own.get(&ns);
            let verified = memory.verified.get(&ns);
            async move {
                let result = write_namespace(cr, &api, &ns, content, known, own, verified).await;
                let result = result.map_err(|err| NamespaceFailure {
                    namespace: ns.clone(),
                    reason: err.reason().to_string(),
                    message: err.to_string(),
                });
                (ns, result)
            }
        })
        .buffer_unordered(NAMESPACE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
}

/// One namespace: nothing to do when its Secret is at the version last found right for the same desired
/// Secret; else read (unless the gather did), decide, write. Returns whether it wrote, and what is verified.
async fn write_namespace(
    cr: &ClusterTencentCertificate,
    api: &Api<Secret>,
    ns: &str,
    content: &HeldCertificate,
    known: Option<&Option<Secret>>,
    own: Option<&ObjectMeta>,
    verified: Option<&Verified>,
) -> Result<(bool, Verified), SyncError> {
    let desired = plan::desired_secret(cr, ns, &content.id, &content.bundle)?;
    let digest = plan::desired_digest(&desired);
    let verified_at = |resource_version: Option<&String>| Verified {
        resource_version: resource_version.cloned().unwrap_or_default(),
        desired: digest,
    };
    if plan::known_up_to_date(verified, own, &digest) {
        return Ok((
            false,
            verified_at(own.and_then(|m| m.resource_version.as_ref())),
        ));
    }
    let read_now;
    let current = match known {
        Some(read) => read.as_ref(),
        None => {
            read_now = api
                .get_opt(&cr.spec.secret_name)
                .await
                .map_err(SyncError::kube("reading a targeted namespace's Secret"))?;
            read_now.as_ref()
        }
    };
    match plan::namespace_action(cr, current, &desired) {
        NamespaceAction::UpToDate => Ok((
            false,
            verified_at(current.and_then(|s| s.metadata.resource_version.as_ref())),
        )),
        NamespaceAction::Conflict(message) => Err(SyncError::SecretConflict(message)),
        NamespaceAction::Write { .. } => {
            let stored = write::write_secret(api, current, &desired, &plan::CREATED_LABELS).await?;
            Ok((true, verified_at(stored.metadata.resource_version.as_ref())))
        }
    }
}

/// Deletes the leftovers whose time has come (see `plan::leftovers_to_delete`); returns how many went.
async fn release_leftovers(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    settled: &BTreeSet<String>,
) -> usize {
    let mut released = 0usize;
    for meta in plan::leftovers_to_delete(cr, &gathered.inventory, &gathered.targeted, settled) {
        let ns = meta.namespace.clone().unwrap_or_default();
        if ctx.terminating(&ns) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(ctx.base.client.clone(), &ns);
        let secret = meta.name.as_deref().unwrap_or_default();
        match write::delete_exact(&api, meta).await {
            Ok(()) => {
                released += 1;
                info!(name = %cr.name_any(), namespace = %ns, secret, "deleted a Secret left behind (old secretName, or a namespace no longer targeted)");
            }
            Err(err) => {
                warn!(name = %cr.name_any(), namespace = %ns, secret, error = %err, "cannot delete a Secret left behind")
            }
        }
    }
    released
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
                "deleted {released} Secret(s) left behind: under an old secretName, or in a namespace the                  target no longer selects"
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
            if crate::leader::fence::refused(&err) {
                break;
            }
            warn!(error = %err, reason = %event.reason, "cannot publish event");
        }
    }
}
