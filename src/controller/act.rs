//! The actor of a `TencentCertificate` reconcile: carries out a [`Plan`] and performs only I/O — the shared
//! download layer ([`fetch::obtain`]), Secret writes under the field manager, the exact delete of a Secret
//! left behind by a rename. It returns [`Effects`]; conditions and status are the reporter's.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::fetch::{self, Obtained, Parkable};
use super::reconcile::{Gathered, Plan, ReconcileError, Step, desired_secret};
use super::target::Resolved;
use super::write::{self, apply_secret, delete_exact};
use super::{Context, credentials};
use crate::crd::{self, TencentCertificate};
use crate::error::SyncError;
use crate::outputs::Passwords;
use crate::policy::{self, DownloadTrigger, Ownership, REFRESH_REQUESTED_ANNOTATION, Renamed};
use crate::secret::{self, CERTIFICATE_NAME_LABEL, MANAGED_BY_LABEL};
use crate::status::{self, Attempt};
use tencent_ssl::ErrorClass;
use tencent_ssl::bundle::{CertBundle, CertMetadata};

/// The labels a create carries (see `secret::creation_core`): the ones that make the Secret ours.
const CREATED_LABELS: [&str; 2] = [MANAGED_BY_LABEL, CERTIFICATE_NAME_LABEL];

/// What carrying out the plan did.
#[derive(Debug)]
pub struct Effects {
    pub attempt: Attempt,
    /// The class of a failed attempt (for its retry time).
    pub failed_class: Option<ErrorClass>,
    /// What the Secret holds now, if it is ours and usable.
    pub serving: Option<(String, CertMetadata)>,
    /// What the sync resolved the spec to.
    pub resolved: Option<Resolved>,
    /// A successful attempt downloaded (rather than found the listing unchanged).
    pub downloaded: bool,
    /// The event for what was written: (reason, message).
    pub note: Option<(&'static str, String)>,
    /// The `refresh-requested-at` value acted upon.
    pub refresh_request: Option<String>,
    /// The Secret the status names: the old one while a rename is not done.
    pub status_secret_name: String,
    /// The namespace is being deleted, and the resource with it: nothing to report.
    pub namespace_terminating: bool,
    /// What the renewal step's application did, if it applied.
    pub renewal: Option<crate::renew::step::Acted>,
    /// The certificate is not in hand: the reconcile parked (returns its slot) and is woken when its
    /// background download ends; nothing to report until then.
    pub parked: bool,
}

impl Effects {
    fn failed(&mut self, err: &SyncError) {
        self.attempt = Attempt::Failed {
            reason: err.reason().to_string(),
            message: err.to_string(),
        };
        self.failed_class = Some(err.class());
    }
}

/// Carries out `plan`, then releases the Secret a `secretName` change left behind once the new one serves.
pub async fn act(
    cr: &TencentCertificate,
    ctx: &Context,
    gathered: &Gathered,
    plan: &Plan,
    now: jiff::Timestamp,
) -> Result<Effects, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &gathered.namespace);
    let mut effects = Effects {
        attempt: Attempt::NotNeeded,
        failed_class: None,
        serving: gathered.serving(),
        resolved: None,
        downloaded: false,
        note: None,
        refresh_request: None,
        status_secret_name: cr.secret_name(),
        namespace_terminating: false,
        renewal: crate::renew::step::act(
            ctx,
            &gathered.renewal,
            &plan.renewal,
            cr.metadata.generation.unwrap_or_default(),
            now,
        )
        .await,
        parked: false,
    };
    match &plan.step {
        Step::Nothing => {}
        Step::Conflict(_) => effects.serving = None,
        Step::PasswordsUnusable => {
            if let Err(err) = &gathered.passwords {
                record_failure(ctx, cr, err).await;
                effects.failed(err);
            }
        }
        Step::Repair => {
            if let (Some(desired), Some(existing)) =
                (&gathered.desired_from_serving, &gathered.existing)
            {
                apply_secret(&secrets, &ctx.own_writes, desired).await?;
                ctx.metrics.secret_written("repair");
                effects.note = Some(repair_note(existing, desired, &cr.secret_name()));
            }
        }
        Step::Download(trigger) => {
            download(cr, ctx, &secrets, gathered, trigger, now, &mut effects).await?;
            if effects.namespace_terminating || effects.parked {
                return Ok(effects);
            }
        }
    }
    let conflict = matches!(plan.step, Step::Conflict(_));
    effects.status_secret_name =
        settle_rename(cr, ctx, &secrets, gathered, &effects, conflict).await;
    Ok(effects)
}

/// The download step: obtain and write, inside the trigger's priority scope; a failure is recorded in
/// `effects`, a lost leadership stops the reconcile.
async fn download(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    gathered: &Gathered,
    trigger: &DownloadTrigger,
    now: jiff::Timestamp,
    effects: &mut Effects,
) -> Result<(), ReconcileError> {
    info!(namespace = %gathered.namespace, name = %cr.name_any(), trigger = %trigger.describe(), "downloading certificate");
    effects.refresh_request = cr.annotations().get(REFRESH_REQUESTED_ANNOTATION).cloned();
    let serving = effects.serving.clone();
    // A reconcile whose renewal step applied reports it now: it does not park.
    let may_park = effects.renewal.is_none();
    let request = fetch::Request {
        trigger,
        serving: serving.as_ref().map(|(id, meta)| (id.as_str(), meta)),
        last_download: gathered
            .previous
            .last_download_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
        retrying: gathered.previous.failures > 0,
        now,
    };
    let result = tencent_ssl::priority::scope(
        trigger.priority(),
        download_and_write(cr, ctx, secrets, gathered, &request, may_park),
    )
    .await;
    match result {
        Ok(None) => {
            debug!(namespace = %gathered.namespace, name = %cr.name_any(), "parked until the certificate is downloaded");
            effects.parked = true;
        }
        Ok(Some(written)) => {
            ctx.forget_credentials_failure(&cr.uid().unwrap_or_default());
            effects.attempt = Attempt::Succeeded;
            effects.downloaded = written.downloaded;
            effects.note = written.wrote.map(|verb| (verb, written_note(cr, &written)));
            effects.serving = Some((written.resolved.id.clone(), written.meta));
            effects.resolved = Some(written.resolved);
        }
        // Its namespace is being deleted, and the resource with it: no warning, event or retry
        // (seen on a real API server: the namespace controller deletes the Secrets first).
        Err(err) if err.namespace_terminating() => {
            debug!(namespace = %gathered.namespace, name = %cr.name_any(), "the namespace is being deleted; not writing");
            effects.namespace_terminating = true;
        }
        // A write refused by the fence: stop, without a status or an event.
        Err(err) if err.not_leader() => return Err(err.into()),
        Err(err) => {
            record_failure(ctx, cr, &err).await;
            effects.failed(&err);
        }
    }
    Ok(())
}

fn written_note(cr: &TencentCertificate, written: &Written) -> String {
    format!(
        "wrote Secret {} with certificate {} ({}), valid until {}",
        cr.secret_name(),
        written.resolved.id,
        written
            .meta
            .subject_cn
            .as_deref()
            .unwrap_or("no subject name"),
        status::format_time(written.meta.not_after)
    )
}

/// A failed attempt, logged here once; after a credentials failure, the credentials Secret's version is
/// remembered so that a change to it is acted upon at once.
async fn record_failure(ctx: &Context, cr: &TencentCertificate, err: &SyncError) {
    warn!(namespace = cr.namespace().unwrap_or_default(), name = %cr.name_any(), reason = err.reason(), error = %err, "sync failed");
    let uid = cr.uid().unwrap_or_default();
    if matches!(
        err,
        SyncError::CredentialsNotFound(_)
            | SyncError::InvalidCredentials(_)
            | SyncError::Tencent { .. }
    ) && err.class() == ErrorClass::Credentials
    {
        let version = credentials::secret_version(&ctx.client, cr, &ctx.defaults).await;
        ctx.remember_credentials_failure(&uid, version);
    } else {
        ctx.forget_credentials_failure(&uid);
    }
}

/// A Secret left behind by a `secretName` change goes only once the new one serves; until then the
/// status keeps naming the old one, which is what still serves. Returns the name the status shows.
async fn settle_rename(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    gathered: &Gathered,
    effects: &Effects,
    conflict: bool,
) -> String {
    let secret_name = cr.secret_name();
    match policy::renamed(
        gathered.previous.secret_name.as_deref(),
        &secret_name,
        effects.serving.is_some() && !conflict,
        cr.spec.deletion_policy,
    ) {
        Renamed::KeepServing(old) => old,
        Renamed::Release(old) => match release_renamed_secret(cr, ctx, secrets, &old).await {
            Ok(()) => secret_name,
            Err(err) => {
                warn!(namespace = %gathered.namespace, name = %cr.name_any(), secret = %old, error = %err, "cannot delete the Secret left behind by a secretName change; retrying later");
                old
            }
        },
        Renamed::Nothing | Renamed::Retained => secret_name,
    }
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

/// What a successful sync left in the Secret.
struct Written {
    /// The certificate the Secret serves now.
    meta: CertMetadata,
    resolved: Resolved,
    wrote: Option<&'static str>,
    /// `false` when Tencent's listing showed the served certificate unchanged and nothing was downloaded.
    downloaded: bool,
}

/// `None`: parked (only when `may_park`).
async fn download_and_write(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    gathered: &Gathered,
    request: &fetch::Request<'_, CertMetadata>,
    may_park: bool,
) -> Result<Option<Written>, SyncError> {
    let source = credentials::resolve(&ctx.client, cr, &ctx.defaults).await?;
    let credentials = ctx.tencent.credentials(&source).await?;
    let with = |credentials| {
        download_and_write_with(cr, ctx, secrets, gathered, request, credentials, may_park)
    };
    let result = with(&credentials).await;
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
            with(&credentials).await
        }
        _ => result,
    }
}

/// Obtains the certificate through the shared layer (prefetching the lookups of the resources sharing
/// these credentials first) and writes it; when the listing shows it unchanged, only what is derived from
/// it may be re-applied. `None`: parked until the certificate is downloaded (only when `may_park`).
async fn download_and_write_with(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    gathered: &Gathered,
    request: &fetch::Request<'_, CertMetadata>,
    credentials: &tencent_ssl::Credentials,
    may_park: bool,
) -> Result<Option<Written>, SyncError> {
    let trigger = request.trigger;
    let routine = matches!(trigger, DownloadTrigger::RefreshDue);
    // Resolving looks ids up when following renewals, and a routine refresh does for the download skip.
    let looks_up = match cr.spec.target() {
        crd::Target::Certificate {
            follow_renewals, ..
        } => follow_renewals || routine,
        _ => false,
    };
    let waiter = ObjectRef::new(&cr.name_any()).within(&gathered.namespace);
    // A woken reconcile takes the resolution it parked with: nothing to look up for it.
    let woken = may_park && ctx.parking.holds(&waiter);
    if looks_up
        && !woken
        && let Some(id) = cr.expected_certificate_id()
    {
        let max_age = trigger.max_age(crd::refresh_interval(&cr.spec));
        ctx.tencent.prefetch_lookups(credentials, &id, max_age, || {
            ctx.ids_sharing_credentials(cr)
        });
    }
    let obtained = if may_park {
        match fetch::obtain_or_park(ctx, cr, credentials, request, &waiter).await? {
            Parkable::Ready(obtained) => obtained,
            Parkable::Parked => return Ok(None),
        }
    } else {
        fetch::obtain(ctx, cr, credentials, request).await?
    };
    match obtained {
        Obtained::Unchanged { resolved, serving } => {
            debug!(certificate_id = %resolved.id, "Tencent lists the served certificate unchanged; no download");
            // The certificate stays; what is derived from it (e.g. keystores under a changed password)
            // or the metadata may still have to change.
            let wrote = match (&gathered.existing, &gathered.desired_from_serving) {
                (Some(existing), Some(desired)) if policy::needs_write(existing, desired, cr) => {
                    apply_secret(secrets, &ctx.own_writes, desired).await?;
                    ctx.metrics.secret_written("repair");
                    Some(repair_note(existing, desired, &cr.secret_name()).0)
                }
                _ => None,
            };
            Ok(Some(Written {
                meta: serving.clone(),
                resolved,
                wrote,
                downloaded: false,
            }))
        }
        Obtained::Downloaded { resolved, bundle } => {
            write_bundle(cr, ctx, secrets, gathered, resolved, &bundle, request.now)
                .await
                .map(Some)
        }
    }
}

/// Writes a downloaded certificate: never an expired one, and only when the Secret would change.
async fn write_bundle(
    cr: &TencentCertificate,
    ctx: &Context,
    secrets: &Api<Secret>,
    gathered: &Gathered,
    resolved: Resolved,
    bundle: &Arc<CertBundle>,
    now: jiff::Timestamp,
) -> Result<Written, SyncError> {
    let certificate_id = &resolved.id;
    if bundle.meta.is_expired_at(now) {
        // Never replace anything with an expired certificate, nor write one where none was.
        return Err(SyncError::Expired {
            certificate_id: certificate_id.clone(),
            not_after: status::format_time(bundle.meta.not_after),
        });
    }
    // The plan downloads only when the passwords were read.
    let none = Passwords::default();
    let passwords = gathered.passwords.as_ref().unwrap_or(&none);
    let existing = gathered.existing.as_ref();
    let ours = existing.filter(|e| policy::ownership(cr, Some(e)) == Ownership::Ours);
    // Derived before anything is written: an output that cannot be made leaves the Secret as it is. Only
    // our own Secret's keystores may be kept (not those of a Secret being adopted).
    let desired = desired_secret(
        cr,
        &gathered.namespace,
        certificate_id,
        bundle,
        passwords,
        ours,
    )?;
    let wrote = match existing {
        Some(existing) if ours.is_some() && !policy::needs_write(existing, &desired, cr) => None,
        // `type` is immutable and consumers reference this very name, so writing the new Secret first
        // under another name is no option: delete and create. The download and the whole new Secret are
        // ready by now, so the name is empty only between the delete and the create right after it.
        Some(existing) if existing.type_.as_deref() != desired.type_.as_deref() => {
            write::recreate_secret(
                secrets,
                &ctx.own_writes,
                existing,
                &desired,
                &CREATED_LABELS,
            )
            .await?;
            ctx.metrics.secret_written("recreate");
            Some("SecretRecreated")
        }
        Some(_) => {
            apply_secret(secrets, &ctx.own_writes, &desired).await?;
            ctx.metrics.secret_written("update");
            Some("SecretUpdated")
        }
        // None seen: a create, which fails (SecretConflict) if someone else's Secret appeared since.
        None => {
            write::create_secret(secrets, &ctx.own_writes, &desired, &CREATED_LABELS).await?;
            ctx.metrics.secret_written("create");
            Some("SecretCreated")
        }
    };
    Ok(Written {
        meta: bundle.meta.clone(),
        resolved,
        wrote,
        downloaded: true,
    })
}
