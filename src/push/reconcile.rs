//! One reconcile of a `TencentCertificatePush`, in the skeleton of [`crate::skeleton`]: [`Kind::gather`]
//! reads the Secret at `secretName` in the push's own namespace (never another's: design.md §10), checks
//! the pair, and — only when [`policy::lookups`] asks for something — resolves the credentials (the rules of
//! `TencentCertificate`, [`credentials::source_in`]) and reads Tencent; `plan` is [`policy::decide`]; `act`
//! carries the step out ([`actor::act`]) and keeps the TKE Secret (`qcloud_cert_id`) current; `report`
//! folds the outcome into the status ([`policy::apply`]), patches it when it changed, publishes events,
//! counts uploads and deploys, and picks the requeue. A push in sync makes no Tencent call at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource as _, ResourceExt as _};

use super::policy::{self, Input, Observed, Outcome as StepOutcome, Refusal, Step, reason};
use super::{TencentCertificatePush, TencentCertificatePushStatus};
use crate::controller::{Context, credentials};
use crate::error::SyncError;
use crate::secret::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::skeleton::{self, Inputs, Kind, Outcome};
use crate::status::{CONDITION_READY, CONDITION_SYNCED, REASON_SYNCED};
use tencent_ssl::bundle::CertBundle;
use tencent_ssl::{Credentials, ErrorClass};

/// The label on the TKE Secret naming the push that writes it: only such a Secret is overwritten.
pub const PUSH_NAME_LABEL: &str = "tencentcert.io/push-name";
/// The soonest next pass after a step that changed something (the status patch's watch event usually
/// brings it sooner).
const STEP_AGAIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PushReconcileError {
    #[error("TencentCertificatePush has no namespace")]
    NoNamespace,
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Leadership ended during the reconcile: it was cancelled, or a write was refused.
    #[error(transparent)]
    NotLeader(#[from] crate::leader::NotLeader),
}

impl PushReconcileError {
    pub fn not_leader(&self) -> bool {
        match self {
            Self::NotLeader(_) => true,
            Self::Sync(err) => err.not_leader(),
            Self::NoNamespace => false,
        }
    }
}

/// A failure the status reports (credentials, Tencent), with when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
    pub class: ErrorClass,
}

impl From<&SyncError> for Failure {
    fn from(err: &SyncError) -> Self {
        Self {
            reason: err.reason().to_string(),
            message: err.to_string(),
            class: err.class(),
        }
    }
}

/// What a pass read: owned values, nothing written.
pub struct Gathered {
    pub namespace: String,
    pub uid: String,
    pub previous: TencentCertificatePushStatus,
    /// The Secret's pair, checked; or why it cannot be published.
    pub pair: Result<CertBundle, Refusal>,
    pub own_credentials: bool,
    /// Resolved only when Tencent is asked something.
    pub credentials: Option<Credentials>,
    /// What Tencent answered to [`policy::lookups`] (nothing asked: empty), or why it could not be asked.
    pub observed: Result<Observed, Failure>,
    /// The TKE Secret at `tkeSecretName`, if the spec names one and it exists.
    pub tke_secret: Option<Secret>,
}

/// What a pass decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Step(Step),
    /// The credentials or Tencent's answers were not to be had: nothing is decided.
    Failed(Failure),
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub outcome: Result<StepOutcome, Failure>,
    /// The TKE Secret could not be written (a foreign Secret at the name, or the API refused).
    pub tke_failure: Option<Failure>,
}

/// The `TencentCertificatePush` kind in the skeleton.
pub struct Push;

impl Kind for Push {
    type Resource = TencentCertificatePush;
    type Context = Context;
    type Gathered = Gathered;
    type Plan = Plan;
    type Effects = Effects;
    type Error = PushReconcileError;

    const KIND: &'static str = "TencentCertificatePush";

    fn shared(ctx: &Context) -> &Context {
        ctx
    }

    fn span(cr: &TencentCertificatePush) -> tracing::Span {
        tracing::info_span!(
            "reconcile_push",
            namespace = %cr.namespace().unwrap_or_default(),
            name = %cr.name_any(),
            secret = %cr.spec.secret_name
        )
    }

    fn not_leader(err: &PushReconcileError) -> bool {
        err.not_leader()
    }

    async fn gather(
        cr: &TencentCertificatePush,
        ctx: &Context,
        at: &Inputs,
    ) -> Result<Gathered, PushReconcileError> {
        gather(cr, ctx, at).await
    }

    fn plan(cr: &TencentCertificatePush, gathered: &Gathered, at: &Inputs) -> Plan {
        match &gathered.observed {
            Ok(observed) => Plan::Step(policy::decide(&input(cr, gathered, at), observed)),
            Err(failure) => Plan::Failed(failure.clone()),
        }
    }

    async fn act(
        cr: &TencentCertificatePush,
        ctx: &Context,
        gathered: &Gathered,
        plan: &Plan,
        _at: &Inputs,
    ) -> Result<Effects, PushReconcileError> {
        act(cr, ctx, gathered, plan).await
    }

    async fn report(
        cr: &TencentCertificatePush,
        ctx: &Context,
        gathered: &Gathered,
        plan: &Plan,
        effects: Effects,
        at: &Inputs,
    ) -> Result<Outcome, PushReconcileError> {
        report(cr, ctx, gathered, plan, effects, at).await
    }
}

/// Reconciles one `TencentCertificatePush` (the controller's reconcile function).
pub async fn reconcile(
    cr: Arc<TencentCertificatePush>,
    ctx: Arc<Context>,
) -> Result<Action, PushReconcileError> {
    skeleton::reconcile::<Push>(cr, ctx).await
}

pub fn error_policy(
    cr: Arc<TencentCertificatePush>,
    err: &PushReconcileError,
    ctx: Arc<Context>,
) -> Action {
    skeleton::error_policy::<Push>(cr, err, ctx)
}

/// The policy's view of one pass.
fn input<'a>(cr: &'a TencentCertificatePush, gathered: &'a Gathered, at: &Inputs) -> Input<'a> {
    Input {
        namespace: &gathered.namespace,
        name: cr.metadata.name.as_deref().unwrap_or_default(),
        uid: &gathered.uid,
        spec: &cr.spec,
        status: &gathered.previous,
        pair: gathered.pair.as_ref(),
        own_credentials: gathered.own_credentials,
        now: at.now,
    }
}

/// The Secret's type and data, as the policy reads them.
fn secret_content(secret: &Secret) -> (String, BTreeMap<String, Vec<u8>>) {
    let kind = secret.type_.clone().unwrap_or_else(|| "Opaque".to_string());
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    (kind, data)
}

async fn gather(
    cr: &TencentCertificatePush,
    ctx: &Context,
    at: &Inputs,
) -> Result<Gathered, PushReconcileError> {
    let namespace = cr.namespace().ok_or(PushReconcileError::NoNamespace)?;
    let (secret_namespace, secret_name) = policy::secret_key(&namespace, &cr.spec);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(SyncError::kube("reading the Secret to publish"))?;
    let content = secret.as_ref().map(secret_content);
    let pair = policy::read_pair(
        &secret_name,
        content.as_ref().map(|(kind, data)| (kind.as_str(), data)),
    );
    let tke_secret = match &cr.spec.tke_secret_name {
        Some(name) => secrets
            .get_opt(name)
            .await
            .map_err(SyncError::kube("reading the TKE Secret"))?,
        None => None,
    };
    let mut gathered = Gathered {
        namespace,
        uid: cr.uid().unwrap_or_default(),
        previous: cr.status.clone().unwrap_or_default(),
        pair,
        own_credentials: cr.spec.credentials_ref.is_some(),
        credentials: None,
        observed: Ok(Observed::default()),
        tke_secret,
    };
    let lookups = policy::lookups(&input(cr, &gathered, at));
    if lookups == policy::Lookups::default() {
        // In sync, or refused: no Tencent call, not even for credentials.
        return Ok(gathered);
    }
    let observed = match credentials_of(cr, ctx, &gathered.namespace).await {
        Ok(credentials) => {
            let observed = super::actor::gather(&ctx.tencent, &credentials, &lookups).await;
            gathered.credentials = Some(credentials);
            observed.map_err(|err| Failure::from(&SyncError::from(err)))
        }
        Err(err) => Err(Failure::from(&err)),
    };
    gathered.observed = observed;
    Ok(gathered)
}

/// The push's credentials, by the rules of every namespaced kind: its own `credentialsRef`, else the
/// defaults where its namespace may use them (roles and pod identity through the shared client).
async fn credentials_of(
    cr: &TencentCertificatePush,
    ctx: &Context,
    namespace: &str,
) -> Result<Credentials, SyncError> {
    let source =
        credentials::source_in(namespace, cr.spec.credentials_ref.as_ref(), &ctx.defaults)?;
    let source = credentials::resolve_source(&ctx.client, source, &ctx.defaults).await?;
    Ok(ctx.tencent.credentials(&source).await?)
}

/// Whether carrying out `step` calls Tencent.
fn calls_tencent(step: &Step) -> bool {
    matches!(
        step,
        Step::Upload { .. }
            | Step::StartDeploy { .. }
            | Step::RetryDeploy { .. }
            | Step::DeletePrevious { .. }
    )
}

/// The outcome of a step that calls no Tencent API (as `actor::act` has it for them).
fn local_outcome(step: &Step) -> StepOutcome {
    match step {
        Step::Adopt { certificate_id } => StepOutcome::Published {
            certificate_id: certificate_id.clone(),
            uploaded: false,
        },
        Step::RecordDeploy {
            results, finished, ..
        } => StepOutcome::DeployRecorded {
            results: results.clone(),
            finished: *finished,
        },
        _ => StepOutcome::Unchanged,
    }
}

async fn act(
    cr: &TencentCertificatePush,
    ctx: &Context,
    gathered: &Gathered,
    plan: &Plan,
) -> Result<Effects, PushReconcileError> {
    let outcome = match (plan, &gathered.pair) {
        (Plan::Failed(failure), _) => Err(failure.clone()),
        (Plan::Step(step), Ok(pair)) if calls_tencent(step) => {
            let credentials = match &gathered.credentials {
                Some(credentials) => Ok(credentials.clone()),
                None => credentials_of(cr, ctx, &gathered.namespace).await,
            };
            match credentials {
                Ok(credentials) => super::actor::act(&ctx.tencent, &credentials, pair, step)
                    .await
                    .map_err(|err| Failure::from(&SyncError::from(err))),
                Err(err) => Err(Failure::from(&err)),
            }
        }
        (Plan::Step(step), Ok(_)) => Ok(local_outcome(step)),
        (Plan::Step(_), Err(_)) => Ok(StepOutcome::Unchanged),
    };
    let published = match &outcome {
        Ok(StepOutcome::Published { certificate_id, .. }) => Some(certificate_id.clone()),
        _ => gathered.previous.certificate_id.clone(),
    };
    let tke_failure = match (&cr.spec.tke_secret_name, published) {
        (Some(name), Some(id)) => write_tke_secret(cr, ctx, gathered, name, &id)
            .await
            .err()
            .map(|err| Failure::from(&err)),
        _ => None,
    };
    Ok(Effects {
        outcome,
        tke_failure,
    })
}

/// Keeps the Opaque Secret TKE's CLB Ingress reads (`qcloud_cert_id`) at `certificate_id`: created, or
/// updated when it is ours (labelled with this push) and differs; someone else's Secret is left alone.
async fn write_tke_secret(
    cr: &TencentCertificatePush,
    ctx: &Context,
    gathered: &Gathered,
    name: &str,
    certificate_id: &str,
) -> Result<(), SyncError> {
    let push_name = cr.name_any();
    if let Some(existing) = &gathered.tke_secret {
        if existing.labels().get(PUSH_NAME_LABEL) != Some(&push_name) {
            return Err(SyncError::SecretConflict(format!(
                "Secret {name} exists and was not written by this push (no {PUSH_NAME_LABEL}={push_name} \
                 label); delete it or choose another tkeSecretName"
            )));
        }
        let (_, data) = secret_content(existing);
        if data.get(super::TKE_CERT_ID_KEY).map(Vec::as_slice) == Some(certificate_id.as_bytes()) {
            return Ok(());
        }
    }
    let owner = cr.controller_owner_ref(&());
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": gathered.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, PUSH_NAME_LABEL: push_name},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "stringData": {super::TKE_CERT_ID_KEY: certificate_id},
    });
    Api::<Secret>::namespaced(ctx.client.clone(), &gathered.namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(SyncError::kube("writing the TKE Secret"))?;
    ctx.metrics.secret_written("update");
    Ok(())
}

/// Sets condition `type_`, keeping its transition time when its status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if ready { "True" } else { "False" };
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    let time = since.unwrap_or(Time(now));
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: crate::message::truncate(&message, crate::message::CONDITION_MESSAGE_MAX_BYTES)
            .into_owned(),
        observed_generation: generation,
        last_transition_time: time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The status after this pass (pure).
pub fn compute_status(
    cr: &TencentCertificatePush,
    gathered: &Gathered,
    plan: &Plan,
    effects: &Effects,
    at: &Inputs,
) -> TencentCertificatePushStatus {
    let input = input(cr, gathered, at);
    let generation = cr.metadata.generation;
    let mut status = match &effects.outcome {
        Ok(outcome) => policy::apply(&input, outcome),
        Err(_) => gathered.previous.clone(),
    };
    status.observed_generation = generation;
    let mut conditions = std::mem::take(&mut status.conditions);
    match (plan, &effects.outcome) {
        (Plan::Step(step), Ok(_)) => {
            let told = step.report(&status);
            set_condition(
                &mut conditions,
                CONDITION_READY,
                told.ready,
                told.reason,
                told.message.clone(),
                generation,
                at.now,
            );
            let (synced, synced_reason, synced_message) = match step {
                Step::Refuse(refusal) => (false, refusal.reason, refusal.message.clone()),
                _ => (true, REASON_SYNCED, "the last pass succeeded".to_string()),
            };
            set_condition(
                &mut conditions,
                CONDITION_SYNCED,
                synced,
                synced_reason,
                synced_message,
                generation,
                at.now,
            );
        }
        (_, Err(failure)) | (Plan::Failed(failure), _) => {
            // Resources keep serving what was published: Ready says so until something is published.
            if status.certificate_id.is_none() {
                set_condition(
                    &mut conditions,
                    CONDITION_READY,
                    false,
                    &failure.reason,
                    failure.message.clone(),
                    generation,
                    at.now,
                );
            }
            set_condition(
                &mut conditions,
                CONDITION_SYNCED,
                false,
                &failure.reason,
                failure.message.clone(),
                generation,
                at.now,
            );
        }
    }
    if let Some(failure) = &effects.tke_failure {
        set_condition(
            &mut conditions,
            CONDITION_SYNCED,
            false,
            &failure.reason,
            failure.message.clone(),
            generation,
            at.now,
        );
    }
    status.conditions = conditions;
    status
}

async fn report(
    cr: &TencentCertificatePush,
    ctx: &Context,
    gathered: &Gathered,
    plan: &Plan,
    effects: Effects,
    at: &Inputs,
) -> Result<Outcome, PushReconcileError> {
    let status = compute_status(cr, gathered, plan, &effects, at);
    if cr.status.as_ref() != Some(&status) {
        let api: Api<TencentCertificatePush> =
            Api::namespaced(ctx.client.clone(), &gathered.namespace);
        skeleton::patch_status(&api, cr, &status).await?;
    }
    count(ctx, gathered, plan, &effects);
    let events = events(cr, &gathered.previous, &status, plan, &effects);
    skeleton::publish_events(&ctx.recorder(), &cr.object_ref(&()), events).await;
    let failure = match (&effects.outcome, &effects.tke_failure) {
        (Err(failure), _) | (_, Some(failure)) => Some(failure),
        _ => None,
    };
    let requeue = requeue(cr, plan, failure, at);
    Ok(Outcome {
        action: Action::requeue(requeue),
        result: if failure.is_some() {
            "failed"
        } else {
            "synced"
        },
        reason: failure.map(|f| f.reason.clone()).unwrap_or_default(),
    })
}

/// When to look again (pure).
pub fn requeue(
    cr: &TencentCertificatePush,
    plan: &Plan,
    failure: Option<&Failure>,
    at: &Inputs,
) -> Duration {
    let refresh =
        crate::crd::parse_duration(&cr.spec.refresh_interval).unwrap_or(Duration::from_secs(3600));
    if let Some(failure) = failure {
        return crate::status::retry_delay(failure.class, 2, refresh, at.jitter);
    }
    match plan {
        // A refusal waits for the Secret (watched) or the spec to change; the refresh is the safety net.
        Plan::Step(Step::Refuse(_)) => refresh,
        Plan::Step(step) => step.requeue_after().unwrap_or(STEP_AGAIN).max(STEP_AGAIN),
        Plan::Failed(failure) => crate::status::retry_delay(failure.class, 2, refresh, at.jitter),
    }
}

/// Uploads and deploys in the metrics.
fn count(ctx: &Context, gathered: &Gathered, plan: &Plan, effects: &Effects) {
    let Plan::Step(step) = plan else {
        return;
    };
    let metrics = &ctx.metrics;
    match (step, &effects.outcome) {
        (Step::Upload { .. }, Ok(StepOutcome::Published { uploaded, .. })) => {
            metrics.push_uploaded(if *uploaded { "uploaded" } else { "repeat" })
        }
        (Step::Upload { .. }, Err(_)) => metrics.push_uploaded("failed"),
        (Step::Adopt { .. }, Ok(_)) => metrics.push_uploaded("adopted"),
        (
            Step::RecordDeploy {
                results,
                finished: true,
                ..
            },
            Ok(_),
        ) => {
            for result in results {
                metrics.push_deployed(&result.resource_type, "succeeded", result.succeeded.into());
                metrics.push_deployed(&result.resource_type, "failed", result.failed.into());
            }
        }
        (Step::RetryDeploy { .. }, Ok(_)) => {
            let results = gathered.previous.deploy.iter().flat_map(|d| &d.results);
            for result in results {
                metrics.push_deployed(&result.resource_type, "retried", result.failed.into());
            }
        }
        _ => {}
    }
}

/// Events on the push (pure): what was done, and each new reason it is not ready.
// long: one short arm per step that acts, then the condition transitions; splitting hides the table.
fn events(
    cr: &TencentCertificatePush,
    previous: &TencentCertificatePushStatus,
    current: &TencentCertificatePushStatus,
    plan: &Plan,
    effects: &Effects,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut normal = |reason: &str, action: &str, note: String| {
        events.push(Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        })
    };
    let id = current.certificate_id.as_deref().unwrap_or("?");
    match (plan, &effects.outcome) {
        (Plan::Step(Step::Upload { .. }), Ok(StepOutcome::Published { uploaded, .. })) => normal(
            "Uploaded",
            "Upload",
            format!(
                "{} Secret {}'s certificate (fingerprint {}, expires {}) as {id}",
                if *uploaded {
                    "uploaded"
                } else {
                    "Tencent Cloud already held"
                },
                cr.spec.secret_name,
                current.fingerprint_sha256.as_deref().unwrap_or("?"),
                current.not_after.as_deref().unwrap_or("?"),
            ),
        ),
        (Plan::Step(Step::Adopt { certificate_id }), Ok(_)) => normal(
            "Adopted",
            "Upload",
            format!(
                "found certificate {certificate_id} uploaded for this Secret before (by its tags): not uploaded again"
            ),
        ),
        (Plan::Step(Step::StartDeploy { from, to, .. }), Ok(_)) => normal(
            "DeployStarted",
            "Deploy",
            format!("moving resources from certificate {from} to {to}"),
        ),
        (Plan::Step(Step::RetryDeploy { record_id }), Ok(_)) => normal(
            "DeployRetried",
            "Deploy",
            format!("retrying the failed resources of deploy record {record_id}"),
        ),
        (Plan::Step(Step::DeletePrevious { certificate_id }), Ok(_)) => normal(
            "PreviousDeleted",
            "Delete",
            format!("deleted certificate {certificate_id}: nothing uses it any more"),
        ),
        _ => {}
    }
    let ready = |s: &TencentCertificatePushStatus| {
        s.condition(CONDITION_READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let synced = |s: &TencentCertificatePushStatus| {
        s.condition(CONDITION_SYNCED)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let quiet = [reason::PUBLISHED, reason::DEPLOYING];
    for (type_, before, after) in [
        (CONDITION_READY, ready(previous), ready(current)),
        (CONDITION_SYNCED, synced(previous), synced(current)),
    ] {
        if after != before
            && let Some((value, why)) = after
            && value == "False"
            && !quiet.contains(&why.as_str())
            && !(type_ == CONDITION_SYNCED && ready(current).is_some_and(|(_, r)| r == why))
        {
            events.push(Event {
                type_: EventType::Warning,
                reason: why,
                note: current.condition(type_).map(|c| c.message.clone()),
                action: "Publish".into(),
                secondary: None,
            });
        }
    }
    events
}
