//! The one way a reconcile of any kind gets a certificate from Tencent Cloud: resolve the spec to an id
//! (through the batched lookups), skip the download when the listing shows the served certificate
//! unchanged, else take the wave's shared download of that (credentials, id) or download and extract it.
//! Work against Tencent is per (credentials, certificate id), never per resource (design.md §2).

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use super::target::{self, Resolved};
use crate::crd::{self, TencentCertificate};
use crate::error::SyncError;
use crate::policy::{self, DownloadTrigger};
use tencent_ssl::Credentials;
use tencent_ssl::bundle::{self, CertBundle, CertMetadata};

/// A certificate a resource's Secrets serve, as the kind holds it: what the listing is compared with.
pub trait Served {
    fn meta(&self) -> &CertMetadata;
}

impl Served for CertMetadata {
    fn meta(&self) -> &CertMetadata {
        self
    }
}

impl Served for Arc<CertBundle> {
    fn meta(&self) -> &CertMetadata {
        &self.meta
    }
}

/// What a sync asks for.
#[derive(Debug)]
pub struct Request<'a, S> {
    pub trigger: &'a DownloadTrigger,
    /// The certificate id and content the Secrets serve (ours and usable).
    pub serving: Option<(&'a str, &'a S)>,
    /// The last full download (status `lastDownloadTime`).
    pub last_download: Option<jiff::Timestamp>,
    /// The previous attempt failed: this one is its retry (it asks Tencent again rather than taking
    /// another resource's download).
    pub retrying: bool,
    pub now: jiff::Timestamp,
}

/// What the shared layer came back with.
#[derive(Debug)]
pub enum Obtained<'a, S> {
    /// Tencent lists the served certificate unchanged: nothing was downloaded, `serving` stays.
    Unchanged { resolved: Resolved, serving: &'a S },
    /// The certificate of `resolved.id`, downloaded now or shared from this wave's downloads.
    Downloaded {
        resolved: Resolved,
        bundle: Arc<CertBundle>,
    },
}

/// Resolves `view` (the spec as a `TencentCertificate`) and obtains its certificate for `request`.
pub async fn obtain<'a, S: Served>(
    ctx: &Context,
    view: &TencentCertificate,
    credentials: &Credentials,
    request: &Request<'a, S>,
) -> Result<Obtained<'a, S>, SyncError> {
    let trigger = request.trigger;
    let refresh = crd::refresh_interval(&view.spec);
    let max_age = trigger.max_age(refresh);
    let routine = matches!(trigger, DownloadTrigger::RefreshDue);
    let resolved = target::resolve(
        view,
        &ctx.tencent,
        credentials,
        request.now,
        max_age,
        routine,
    )
    .await?;
    let before = policy::BeforeDownload {
        trigger,
        serving: request.serving.map(|(id, served)| (id, served.meta())),
        resolved_id: &resolved.id,
        listed: resolved.listed.as_ref(),
        last_download: request.last_download,
        retrying: request.retrying,
        now: request.now,
        full_download_every: ctx.full_download_every,
    };
    if let Some((_, serving)) = request.serving
        && !policy::download_needed(&before)
    {
        return Ok(Obtained::Unchanged { resolved, serving });
    }
    // Resources naming the same certificate share a download younger than `max_age` (per credentials).
    let download_max_age = if request.retrying {
        Duration::ZERO
    } else {
        trigger.download_max_age(refresh)
    };
    let bundle = shared_or_downloaded(ctx, credentials, &resolved.id, download_max_age).await?;
    Ok(Obtained::Downloaded { resolved, bundle })
}

/// The wave's download of `certificate_id` under `credentials` when one is young enough, else a new one,
/// extracted and shared with the wave.
async fn shared_or_downloaded(
    ctx: &Context,
    credentials: &Credentials,
    certificate_id: &str,
    max_age: Duration,
) -> Result<Arc<CertBundle>, SyncError> {
    if let Some(shared) = ctx.bundles.get(credentials, certificate_id, max_age) {
        tencent_ssl::Observer::coalesced(ctx.metrics.as_ref(), "wave");
        return Ok(shared);
    }
    let download = ctx
        .tencent
        .download_certificate_within(credentials, certificate_id, max_age)
        .await?;
    let bundle = Arc::new(bundle::extract(&download.zip)?);
    ctx.bundles.put(credentials, certificate_id, bundle.clone());
    Ok(bundle)
}
