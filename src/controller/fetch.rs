//! The one way a reconcile of any kind gets a certificate from Tencent Cloud: resolve the spec to an id
//! (through the batched lookups), skip the download when the listing shows the served certificate
//! unchanged, else take the wave's shared download of that (credentials, id) or download and extract it.
//! Work against Tencent is per (credentials, certificate id), never per resource (design.md §2).

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::Context;
use super::parking::{self, Waiter};
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

/// What [`obtain_or_park`] came back with.
#[derive(Debug)]
pub enum Parkable<T> {
    Ready(T),
    /// The certificate is not in hand: the reconcile is registered as a waiter of its download, which
    /// runs in the background; it is woken (reconciled again) when the download ends.
    Parked,
}

/// Resolving done, before any download.
enum Prepared<'a, S> {
    Unchanged(Obtained<'a, S>),
    Download {
        resolved: Resolved,
        max_age: Duration,
    },
}

/// Resolves `view` (the spec as a `TencentCertificate`) and obtains its certificate for `request`, waiting
/// for a download on the caller's task (ClusterTencentCertificate, and reconciles without a controller).
pub async fn obtain<'a, S: Served>(
    ctx: &Context,
    view: &TencentCertificate,
    credentials: &Credentials,
    request: &Request<'a, S>,
) -> Result<Obtained<'a, S>, SyncError> {
    match prepare(ctx, view, credentials, request).await? {
        Prepared::Unchanged(obtained) => Ok(obtained),
        Prepared::Download { resolved, max_age } => {
            let bundle = shared_or_downloaded(ctx, credentials, &resolved.id, max_age).await?;
            Ok(Obtained::Downloaded { resolved, bundle })
        }
    }
}

/// As [`obtain`], but a download not in hand is not awaited: `waiter` parks (see [`parking`]). A woken
/// waiter takes the outcome it parked for, however old, with the resolution it parked with (no second
/// resolve); a failed download is its error. Without a controller to wake `waiter`, this is [`obtain`].
pub async fn obtain_or_park<'a, S: Served>(
    ctx: &Context,
    view: &TencentCertificate,
    credentials: &Credentials,
    request: &Request<'a, S>,
    waiter: &Waiter,
) -> Result<Parkable<Obtained<'a, S>>, SyncError> {
    if !ctx.parking.enabled_for(waiter) {
        return obtain(ctx, view, credentials, request)
            .await
            .map(Parkable::Ready);
    }
    let generation = view.metadata.generation;
    if let Some((resolved, outcome)) =
        ctx.parking
            .take(waiter, &credentials.fingerprint(), generation)
    {
        ctx.metrics.set_parked(ctx.parking.parked());
        let bundle = outcome?;
        return Ok(Parkable::Ready(Obtained::Downloaded { resolved, bundle }));
    }
    let (resolved, max_age) = match prepare(ctx, view, credentials, request).await? {
        Prepared::Unchanged(obtained) => return Ok(Parkable::Ready(obtained)),
        Prepared::Download { resolved, max_age } => (resolved, max_age),
    };
    let key = (credentials.fingerprint(), resolved.id.clone());
    if let Some(bundle) = ctx
        .bundles
        .get(credentials, &resolved.id, max_age)
        .or_else(|| ctx.parking.downloaded(&key, max_age))
    {
        tencent_ssl::Observer::coalesced(ctx.metrics.as_ref(), "wave");
        return Ok(Parkable::Ready(Obtained::Downloaded { resolved, bundle }));
    }
    let parked_for = parking::ParkedFor {
        generation,
        resolved,
    };
    match ctx.parking.park(waiter, &key, parked_for) {
        parking::Parked::Start => {
            let certificate_id = key.1.clone();
            spawn_download(ctx, credentials, &certificate_id, max_age, key);
        }
        parking::Parked::Joined => {
            tencent_ssl::Observer::coalesced(ctx.metrics.as_ref(), "parked");
        }
    }
    ctx.metrics.set_parked(ctx.parking.parked());
    Ok(Parkable::Parked)
}

/// The one background download of `key` for its parked waiters: it waits for the rate limiter off-slot,
/// at the priority of the reconcile that started it, and stops where it waits when leadership ends (as
/// reconciles do; its waiters then stay parked until their safety requeue).
fn spawn_download(
    ctx: &Context,
    credentials: &Credentials,
    certificate_id: &str,
    max_age: Duration,
    key: parking::Key,
) {
    let in_flight = ctx.parking.in_flight(key);
    let tencent = ctx.tencent.clone();
    let bundles = ctx.bundles.clone();
    let metrics = ctx.metrics.clone();
    let parking = ctx.parking.clone();
    let fence = ctx.fence.clone();
    let credentials = credentials.clone();
    let certificate_id = certificate_id.to_string();
    let priority = tencent_ssl::priority::current();
    tokio::spawn(async move {
        let download = tencent_ssl::priority::scope(
            priority,
            tencent.download_certificate_within(&credentials, &certificate_id, max_age),
        );
        let Ok(result) = fence.guard(download).await else {
            debug!(
                certificate_id,
                "not the leader: background download stopped"
            );
            return;
        };
        let outcome = match result {
            Ok(download) => bundle::extract(&download.zip)
                .map(Arc::new)
                .map_err(parking::Failure::Bundle),
            Err(err) => Err(parking::Failure::Tencent(err)),
        };
        if let Ok(bundle) = &outcome {
            bundles.put(&credentials, &certificate_id, bundle.clone());
        }
        in_flight.complete(outcome);
        metrics.set_parked(parking.parked());
    });
}

/// Resolves `view` and decides between the served certificate (unchanged in Tencent's listing) and a
/// download no older than the returned age.
async fn prepare<'a, S: Served>(
    ctx: &Context,
    view: &TencentCertificate,
    credentials: &Credentials,
    request: &Request<'a, S>,
) -> Result<Prepared<'a, S>, SyncError> {
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
        return Ok(Prepared::Unchanged(Obtained::Unchanged {
            resolved,
            serving,
        }));
    }
    // Resources naming the same certificate share a download younger than `max_age` (per credentials).
    let download_max_age = if request.retrying {
        Duration::ZERO
    } else {
        trigger.download_max_age(refresh)
    };
    Ok(Prepared::Download {
        resolved,
        max_age: download_max_age,
    })
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
