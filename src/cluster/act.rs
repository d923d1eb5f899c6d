//! The actor of a `ClusterTencentCertificate` reconcile: asks Tencent Cloud when the plan says so (once
//! for all namespaces, through the shared download layer), makes each targeted namespace's Secret hold
//! the certificate ([`plan::namespace_action`] per namespace, bounded fan-out), deletes the leftovers
//! whose time has come, and remembers what it found right. I/O only; the status is the reporter's.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, ResourceExt as _};
use tracing::{debug, info, warn};

use super::crd::{ClusterTencentCertificate, NamespaceFailure};
use super::plan::{self, HeldCertificate, NamespaceAction, Verified};
use super::reconcile::Gathered;
use super::{ClusterContext, Memory};
use crate::controller::fetch::{self as shared, Obtained};
use crate::controller::{credentials, write};
use crate::crd::CredentialsRef;
use crate::error::SyncError;
use crate::policy::{Decision, DownloadTrigger};
use crate::status::{self, Attempt};
use tencent_ssl::bundle::CertBundle;
use tencent_ssl::{Credentials, ErrorClass};

/// Secrets read or written at once.
pub(super) const NAMESPACE_CONCURRENCY: usize = 16;

/// The certificate to write, and how this reconcile got it.
#[derive(Debug)]
pub struct Fetched {
    pub id: String,
    pub bundle: Arc<CertBundle>,
    pub chain: Vec<String>,
    pub downloaded: bool,
}

/// What carrying out the plan did.
#[derive(Debug)]
pub struct Effects {
    pub attempt: Attempt,
    /// The class of a failed attempt (for its retry time).
    pub failed_class: Option<ErrorClass>,
    pub fetched: Option<Fetched>,
    /// What the Secrets hold after this reconcile: fetched, or the trusted content (never expired).
    pub writing: Option<HeldCertificate>,
    pub failures: Vec<NamespaceFailure>,
    /// Namespaces whose Secret was written, and leftovers deleted.
    pub written: usize,
    pub released: usize,
    /// What the renewal step's application did, if it applied.
    pub renewal: Option<crate::renew::step::Acted>,
}

/// Asks Tencent Cloud when the plan says so, writes the certificate to every targeted namespace, deletes
/// the leftovers whose time has come, and remembers what it found right.
pub(super) async fn act(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    plan: &Decision,
    renewal: &crate::renew::step::Plan,
    now: jiff::Timestamp,
) -> Effects {
    let applied = crate::renew::step::act(
        &ctx.base,
        &gathered.renewal,
        renewal,
        cr.metadata.generation.unwrap_or_default(),
        now,
    )
    .await;
    let (attempt, failed_class, fetched) = match plan {
        Decision::Download(trigger) => ask_tencent(cr, ctx, gathered, trigger, now).await,
        _ => (Attempt::NotNeeded, None, None),
    };
    // Write what was fetched; when fetching failed, the trusted content still goes to namespaces that lack
    // it (never an expired certificate).
    let writing = match &fetched {
        Some(f) => Some(HeldCertificate {
            id: f.id.clone(),
            bundle: f.bundle.clone(),
        }),
        None => gathered
            .trusted
            .clone()
            .filter(|t| !t.bundle.meta.is_expired_at(now)),
    };
    let mut memory = gathered.memory.clone();
    let mut effects = Effects {
        attempt,
        failed_class,
        fetched,
        writing,
        failures: Vec::new(),
        written: 0,
        released: 0,
        renewal: applied,
    };
    let mut settled = BTreeSet::new();
    if let Some(content) = &effects.writing {
        let outcomes = write_namespaces(cr, ctx, gathered, content, &memory).await;
        for (ns, outcome) in outcomes {
            match outcome {
                Ok((wrote, verified)) => {
                    if wrote {
                        effects.written += 1;
                        debug!(name = %cr.name_any(), namespace = %ns, "wrote the cluster certificate's Secret");
                    }
                    memory.verified.insert(ns.clone(), verified);
                    settled.insert(ns);
                }
                Err(failure) => {
                    memory.verified.remove(&ns);
                    effects.failures.push(failure);
                }
            }
        }
        if effects.written > 0 {
            ctx.base.metrics.secret_written("cluster");
        }
        memory.held = Some(content.clone());
    } else {
        effects.failures = nothing_to_write(gathered, &effects.attempt);
    }
    memory
        .verified
        .retain(|ns, _| gathered.targeted.contains(ns));
    effects.released = release_leftovers(cr, ctx, gathered, &settled).await;
    ctx.remember(cr, memory);
    effects
}

/// With nothing to write anywhere, every targeted namespace without the Secret lacks the certificate (pure).
fn nothing_to_write(gathered: &Gathered, attempt: &Attempt) -> Vec<NamespaceFailure> {
    let reason = match attempt {
        Attempt::Failed { reason, .. } => reason.clone(),
        _ => status::REASON_PENDING.to_string(),
    };
    gathered
        .targeted
        .iter()
        .filter(|ns| {
            !gathered.inventory.own.contains_key(*ns)
                && gathered.read.get(*ns).is_none_or(Option::is_none)
        })
        .map(|ns| NamespaceFailure {
            namespace: ns.clone(),
            reason: reason.clone(),
            message: "no certificate to write yet".to_string(),
        })
        .collect()
}

/// Asks Tencent Cloud (inside the trigger's priority scope): the attempt, a failure's class, and what was
/// fetched. An expired certificate is a failure, and nothing is written from it.
async fn ask_tencent(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    trigger: &DownloadTrigger,
    now: jiff::Timestamp,
) -> (Attempt, Option<ErrorClass>, Option<Fetched>) {
    let result =
        tencent_ssl::priority::scope(trigger.priority(), fetch(cr, ctx, gathered, trigger, now))
            .await;
    let failed = |err: &SyncError| Attempt::Failed {
        reason: err.reason().to_string(),
        message: err.to_string(),
    };
    match result {
        Ok(got) if got.bundle.meta.is_expired_at(now) => {
            let err = SyncError::Expired {
                certificate_id: got.id.clone(),
                not_after: status::format_time(got.bundle.meta.not_after),
            };
            (failed(&err), Some(ErrorClass::Permanent), None)
        }
        Ok(got) => (Attempt::Succeeded, None, Some(got)),
        Err(err) => {
            warn!(name = %cr.name_any(), reason = err.reason(), error = %err, "cluster certificate sync failed");
            (failed(&err), Some(err.class()), None)
        }
    }
}

/// Resolves the selection and gets its bundle through the shared download layer: the trusted content when
/// Tencent's listing shows it unchanged, else the wave's shared download, else a new one.
async fn fetch(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    trigger: &DownloadTrigger,
    now: jiff::Timestamp,
) -> Result<Fetched, SyncError> {
    let credentials = resolve_credentials(cr, ctx).await?;
    let previous = &gathered.previous;
    let request = shared::Request {
        trigger,
        serving: gathered
            .trusted
            .as_ref()
            .map(|t| (t.id.as_str(), &t.bundle)),
        last_download: previous
            .last_download_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
        retrying: previous.failures > 0,
        now,
    };
    Ok(
        match shared::obtain(&ctx.base, &cr.selection(), &credentials, &request).await? {
            Obtained::Unchanged { resolved, serving } => Fetched {
                id: resolved.id,
                bundle: serving.clone(),
                chain: resolved.chain,
                downloaded: false,
            },
            Obtained::Downloaded { resolved, bundle } => Fetched {
                id: resolved.id,
                bundle,
                chain: resolved.chain,
                downloaded: true,
            },
        },
    )
}

/// The credentials Secret named by namespace and name, or the operator's default credentials (a cluster
/// resource is a cluster admin's: the defaults' namespace allow-list does not apply).
pub(super) async fn resolve_credentials(
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
            let stored = write::write_secret(
                api,
                // The cluster controller's watches do not filter echoes: nothing to record.
                &crate::controller::echoes::OwnWrites::default(),
                current,
                &desired,
                &plan::CREATED_LABELS,
            )
            .await?;
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
