//! The one reconcile skeleton every resource kind follows: **gather → plan → act → report**.
//!
//! A kind (today `TencentCertificate` in [`crate::controller::reconcile`] and `ClusterTencentCertificate`
//! in [`crate::cluster::reconcile`]) implements [`Kind`]; [`reconcile`] is the only loop. The driver owns
//! what every kind shares: the leadership fence (a reconcile is cancelled where it waits the moment
//! leadership ends), the span (named by [`Kind::span`]), the reconcile metric on every exit, the log line
//! of a failed reconcile, and [`error_policy`]. A kind owns four steps:
//!
//! | step | does | may not |
//! |---|---|---|
//! | [`Kind::gather`] | reads what exists (the resource's Secrets, credentials versions, keystore passwords, the serving bundle) into an owned [`Kind::Gathered`]; absence is an `Option`, not an error | write anything |
//! | [`Kind::plan`] | pure: the ordered policy checks ([`crate::policy`]) decide, and the decision becomes a [`Kind::Plan`] value (`Debug + PartialEq`, asserted on in tests) | do I/O, read the clock or draw random numbers (they come in [`Inputs`]) |
//! | [`Kind::act`] | carries the plan out: the shared per-(credentials, id) download layer ([`crate::controller::fetch::obtain`], one call with a result enum), Secret writes under the field manager, exact deletes; returns [`Kind::Effects`] (what was written, what failed and why) | compute conditions or status |
//! | [`Kind::report`] | the new status (pure: `status::compute`, `cluster::plan::compute`), one status patch when it changed, events from the (previous, new) difference, metrics, and the requeue ([`requeue_after`]) | download or write Secrets |
//!
//! The trust rules of design.md §10 live in the pure parts the plan is made from: who owns a Secret
//! ([`crate::policy::ownership`], [`crate::cluster::plan::namespace_action`]), which content may be
//! served again without a download ([`crate::cluster::plan::trusted_content`], the fingerprint check of
//! [`crate::policy`]), and which credentials a resource may use ([`crate::controller::credentials`]).
//!
//! A new kind (publishing a certificate to Tencent, renewing a free certificate) is a gatherer, a check
//! table and a plan type: implement [`Kind`], run `Controller::new(..).run(`[`reconcile`]`::<K>, `
//! [`error_policy`]`::<K>, ctx)`, and keep Tencent work behind the shared layers (design.md §2, the scale
//! rule), never per resource.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, warn};

use crate::controller::Context;
use crate::error::SyncError;
use crate::leader::NotLeader;
use crate::secret::FIELD_MANAGER;
use tencent_ssl::ErrorClass;

/// What a reconcile takes from the outside world besides Kubernetes and Tencent: the time and one random
/// sample (for the jitter of retry and refresh times), drawn once so that every step can be pinned in tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    pub now: jiff::Timestamp,
    /// A uniform sample in `[0, 1)`.
    pub jitter: f64,
}

impl Inputs {
    /// The clock and a fresh sample: what the driver passes.
    pub fn sample() -> Self {
        Self {
            now: jiff::Timestamp::now(),
            jitter: fastrand::f64(),
        }
    }
}

/// What one reconcile did: when to come back, and what the reconcile metric records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// `synced`, `unchanged`, `repaired` or `failed`.
    pub result: &'static str,
    /// The failure's reason (empty unless `result` is `failed`).
    pub reason: String,
}

/// One resource kind in the skeleton. See the module documentation for what each step may do.
pub trait Kind: 'static {
    /// The Kubernetes resource reconciled.
    type Resource: Resource + Send + Sync + 'static;
    /// What every reconcile of this kind shares (clients, caches, metrics).
    type Context: Send + Sync + 'static;
    /// What `gather` read: owned values.
    type Gathered: Send + Sync;
    /// What `plan` decided: a value, no I/O in it.
    type Plan: std::fmt::Debug + PartialEq + Send + Sync;
    /// What `act` did.
    type Effects: Send;
    /// What stops a reconcile before it can report through status (reading or patching Kubernetes, or
    /// leadership lost).
    type Error: std::error::Error + From<NotLeader> + Send + 'static;

    /// The kind's name, in logs.
    const KIND: &'static str;

    /// The operator-wide context (fence, metrics, recorder) inside this kind's context.
    fn shared(ctx: &Self::Context) -> &Context;

    /// The span of one reconcile: what identifies the resource in every log line of it.
    fn span(cr: &Self::Resource) -> tracing::Span;

    /// Whether the error only says that this replica does not lead: no status, no event, no failure count.
    fn not_leader(err: &Self::Error) -> bool;

    fn gather(
        cr: &Self::Resource,
        ctx: &Self::Context,
        at: &Inputs,
    ) -> impl Future<Output = Result<Self::Gathered, Self::Error>> + Send;

    fn plan(cr: &Self::Resource, gathered: &Self::Gathered, at: &Inputs) -> Self::Plan;

    fn act(
        cr: &Self::Resource,
        ctx: &Self::Context,
        gathered: &Self::Gathered,
        plan: &Self::Plan,
        at: &Inputs,
    ) -> impl Future<Output = Result<Self::Effects, Self::Error>> + Send;

    fn report(
        cr: &Self::Resource,
        ctx: &Self::Context,
        gathered: &Self::Gathered,
        plan: &Self::Plan,
        effects: Self::Effects,
        at: &Inputs,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;
}

/// The reconcile of every kind: gather, plan, act, report, inside the leadership fence and a span, with
/// the reconcile metric recorded on every exit but a lost leadership.
pub async fn reconcile<K: Kind>(
    cr: Arc<K::Resource>,
    ctx: Arc<K::Context>,
) -> Result<Action, K::Error>
where
    K::Resource: ResourceExt,
{
    let namespace = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    let span =
        tracing::info_span!("reconcile", kind = K::KIND, namespace = %namespace, name = %name);
    let shared = K::shared(&ctx);
    let started = std::time::Instant::now();
    let at = Inputs::sample();
    // Cancelled where it waits (e.g. at the Tencent rate limiter) the moment leadership ends.
    let result = match shared
        .fence
        .guard(steps::<K>(&cr, &ctx, &at).instrument(span))
        .await
    {
        Ok(result) => result,
        Err(not_leader) => Err(not_leader.into()),
    };
    match result {
        Err(err) if K::not_leader(&err) => {
            debug!(kind = K::KIND, namespace = %namespace, name = %name, "not the leader: reconcile stopped");
            Err(err)
        }
        Ok(outcome) => {
            shared
                .metrics
                .reconciled(outcome.result, &outcome.reason, started.elapsed());
            Ok(outcome.action)
        }
        Err(err) => {
            warn!(kind = K::KIND, namespace = %namespace, name = %name, error = %err, "reconcile failed");
            shared.metrics.reconciled(
                "error",
                crate::error::REASON_KUBERNETES_ERROR,
                started.elapsed(),
            );
            Err(err)
        }
    }
}

async fn steps<K: Kind>(
    cr: &K::Resource,
    ctx: &K::Context,
    at: &Inputs,
) -> Result<Outcome, K::Error> {
    let gathered = K::gather(cr, ctx, at).await?;
    let plan = K::plan(cr, &gathered, at);
    let effects = K::act(cr, ctx, &gathered, &plan, at).await?;
    K::report(cr, ctx, &gathered, &plan, effects, at).await
}

/// Requeue after errors that kept the reconcile from reporting through status (any kind).
pub fn error_policy<K: Kind>(
    _cr: Arc<K::Resource>,
    _err: &K::Error,
    _ctx: Arc<K::Context>,
) -> Action {
    retry_after_error()
}

/// [`error_policy`]'s requeue, for a kind whose controller caches a projection of its resource.
pub fn retry_after_error() -> Action {
    Action::requeue(crate::status::retry_delay(
        ErrorClass::Transient,
        3,
        Duration::from_secs(3600),
        fastrand::f64(),
    ))
}

/// When to look again: at the planned sync (`next_sync`, else after `refresh`), or one second after the
/// certificate expires (`expires`) if that comes first; never sooner than a second.
pub fn requeue_after(
    next_sync: Option<&str>,
    expires: Option<&str>,
    now: jiff::Timestamp,
    refresh: Duration,
) -> Duration {
    let until = |t: Option<&str>| {
        t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO))
    };
    let next = until(next_sync).unwrap_or(refresh);
    let expiry = until(expires)
        .filter(|d| !d.is_zero())
        .map(|d| d + Duration::from_secs(1));
    next.min(expiry.unwrap_or(next)).max(Duration::from_secs(1))
}

/// Server-side apply of the whole status under [`FIELD_MANAGER`]: fields that no longer apply (e.g.
/// notAfter after the Secret vanished) are removed, which a merge patch would leave behind. Returns the
/// resource as stored, or `None` when it is gone (deleted while its reconcile ran, as when its namespace
/// goes: not a failure, and nothing is left to report on).
pub async fn patch_status<R, S>(api: &Api<R>, cr: &R, status: &S) -> Result<Option<R>, SyncError>
where
    R: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": R::api_version(&()),
        "kind": R::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            &cr.meta().name.clone().unwrap_or_default(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(stored) => Ok(Some(stored)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(SyncError::kube("updating the status")(err)),
    }
}

/// Publishes `events` on `reference`, each cut to the API server's limits. An event the server refuses is
/// lost and only logged; publishing stops when this replica no longer leads or the namespace is going.
pub async fn publish_events(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    events: Vec<Event>,
) {
    for event in events.into_iter().map(crate::message::fit_event) {
        if let Err(err) = recorder.publish(&event, reference).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_follows_the_plan_but_never_sleeps_past_expiry() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let refresh = Duration::from_secs(3600);
        let in_a_while = Some("2026-06-01T00:00:00Z");
        assert_eq!(
            requeue_after(Some("2026-01-01T00:10:00Z"), in_a_while, now, refresh),
            Duration::from_secs(600)
        );
        assert_eq!(
            requeue_after(
                Some("2026-01-01T00:10:00Z"),
                Some("2026-01-01T00:01:00Z"),
                now,
                refresh
            ),
            Duration::from_secs(61)
        );
        assert_eq!(
            requeue_after(Some("2025-12-31T00:00:00Z"), None, now, refresh),
            Duration::from_secs(1)
        );
        assert_eq!(requeue_after(None, None, now, refresh), refresh);
        // Already expired: the planned sync decides, not the past expiry.
        assert_eq!(
            requeue_after(
                Some("2026-01-01T00:10:00Z"),
                Some("2025-01-01T00:00:00Z"),
                now,
                refresh
            ),
            Duration::from_secs(600)
        );
    }
}
