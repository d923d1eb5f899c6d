//! One reconcile of a `ClusterTencentCertificate`, in the skeleton of [`crate::skeleton`]: `gather`
//! lists the Secrets labelled with the resource (metadata only), reads the few needed in full and picks
//! the content that may be served again; [`plan`] runs the cluster check table ([`plan::decide`]: is
//! Tencent Cloud asked, and why); the actor ([`act`]) fetches the certificate once through the shared download
//! layer, makes each targeted namespace's Secret hold it ([`plan::namespace_action`] per namespace) and
//! deletes the leftovers; the reporter computes the status, publishes events and picks the requeue.
//!
//! Tencent work is per resource (one lookup or download for all namespaces, shared with TencentCertificates
//! naming the same id through the bundle cache); Kubernetes work is per namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource as _, ResourceExt as _};

use super::act::{self, Effects, NAMESPACE_CONCURRENCY};
use super::crd::{ClusterTencentCertificate, ClusterTencentCertificateStatus};
use super::plan::{self, CLUSTER_CERTIFICATE_NAME_LABEL, HeldCertificate};
use super::{ClusterContext, Memory};
use crate::controller::Context;
use crate::crd;
use crate::error::SyncError;
use crate::policy::{Decision, DownloadTrigger};
use crate::renew::step;
use crate::skeleton::{self, Inputs, Kind, Outcome};
use crate::status::{self, Attempt};
use tencent_ssl::renewal::order::ClusterSwitch;

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

/// The `ClusterTencentCertificate` kind in the skeleton.
pub struct Cluster;

impl Kind for Cluster {
    type Resource = ClusterTencentCertificate;
    type Context = ClusterContext;
    type Gathered = Gathered;
    type Plan = Plan;
    type Effects = Effects;
    type Error = ClusterReconcileError;

    const KIND: &'static str = "ClusterTencentCertificate";

    fn shared(ctx: &ClusterContext) -> &Context {
        &ctx.base
    }

    fn not_leader(err: &ClusterReconcileError) -> bool {
        err.not_leader()
    }

    fn span(cr: &ClusterTencentCertificate) -> tracing::Span {
        tracing::info_span!("reconcile_cluster", name = %cr.name_any())
    }

    async fn gather(
        cr: &ClusterTencentCertificate,
        ctx: &ClusterContext,
        at: &Inputs,
    ) -> Result<Gathered, ClusterReconcileError> {
        let mut gathered = gather(cr, ctx).await?;
        gathered.renewal_switch = ctx.base.renewal.switch;
        gathered.renewal_served = gathered
            .trusted
            .as_ref()
            .map(|t| t.id.clone())
            .or_else(|| gathered.previous.certificate_id.clone())
            .or_else(|| cr.spec.certificate_id.clone());
        let asked = renewal_asked(cr, &gathered);
        let credentials = async {
            let credentials = act::resolve_credentials(cr, ctx).await?;
            Ok((credentials, cr.spec.credentials_ref.is_none()))
        };
        gathered.renewal = step::gather(&ctx.base, &asked, credentials, at.now).await;
        Ok(gathered)
    }

    fn plan(cr: &ClusterTencentCertificate, gathered: &Gathered, at: &Inputs) -> Plan {
        let renewal = step::plan(
            &renewal_asked(cr, gathered),
            &gathered.renewal,
            gathered.renewal_switch,
            at.now,
        );
        let mut decision = plan::decide(&plan::Observed {
            previous: &gathered.previous,
            generation: cr.metadata.generation,
            serving: gathered.trusted.is_some(),
            now: at.now,
        });
        // An issued renewal not served yet is fetched when nothing else is due: the following serves it.
        if decision == Decision::UpToDate
            && let Some(order_id) = renewal.issued_order(gathered.renewal_served.as_deref())
        {
            decision = Decision::Download(DownloadTrigger::RenewalIssued {
                order_id: order_id.to_string(),
            });
        }
        Plan { decision, renewal }
    }

    async fn act(
        cr: &ClusterTencentCertificate,
        ctx: &ClusterContext,
        gathered: &Gathered,
        plan: &Plan,
        at: &Inputs,
    ) -> Result<Effects, ClusterReconcileError> {
        Ok(act::act(cr, ctx, gathered, &plan.decision, &plan.renewal, at.now).await)
    }

    async fn report(
        cr: &ClusterTencentCertificate,
        ctx: &ClusterContext,
        gathered: &Gathered,
        plan: &Plan,
        effects: Effects,
        at: &Inputs,
    ) -> Result<Outcome, ClusterReconcileError> {
        report(cr, ctx, gathered, plan, effects, at).await
    }
}

/// Reconciles one `ClusterTencentCertificate` (the controller's reconcile function).
pub async fn reconcile(
    cr: Arc<ClusterTencentCertificate>,
    ctx: Arc<ClusterContext>,
) -> Result<Action, ClusterReconcileError> {
    skeleton::reconcile::<Cluster>(cr, ctx).await
}

pub fn error_policy(
    cr: Arc<ClusterTencentCertificate>,
    err: &ClusterReconcileError,
    ctx: Arc<ClusterContext>,
) -> Action {
    skeleton::error_policy::<Cluster>(cr, err, ctx)
}

/// What the cluster kind decided: the check table's decision and the renewal step's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    pub renewal: step::Plan,
}

/// What the renewal step knows from the resource and what was gathered.
fn renewal_asked<'a>(cr: &'a ClusterTencentCertificate, gathered: &'a Gathered) -> step::Asked<'a> {
    step::Asked {
        spec: cr.spec.renewal.as_ref(),
        previous: gathered.previous.renewal.as_ref(),
        served_id: gathered.renewal_served.as_deref(),
        not_after: gathered
            .previous
            .not_after
            .as_deref()
            .and_then(|t| t.parse().ok()),
        generation: cr.metadata.generation.unwrap_or_default(),
    }
}

/// What the gather saw of the Secrets.
pub struct Gathered {
    pub previous: ClusterTencentCertificateStatus,
    /// What this process remembers of the resource (see [`Memory`]).
    pub memory: Memory,
    pub targeted: Vec<String>,
    pub inventory: plan::Inventory,
    /// Secrets read in full, per targeted namespace, at `secretName` (`None`: nothing there).
    pub read: BTreeMap<String, Option<Secret>>,
    /// The content that may be written again without a download (see `plan::trusted_content`).
    pub trusted: Option<HeldCertificate>,
    /// The certificate the renewal step looks at: the one held, else status's, else the spec's.
    pub renewal_served: Option<String>,
    /// What the renewal step read (`spec.renewal`).
    pub renewal: step::Gathered,
    /// The cluster's switch (`--renewal-applications`).
    pub renewal_switch: ClusterSwitch,
}

/// Lists our Secrets (metadata only), reads the few needed in full, and picks what content can be trusted.
async fn gather(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
) -> Result<Gathered, SyncError> {
    let memory = ctx.remembered(cr);
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
        previous: cr.status.clone().unwrap_or_default(),
        memory,
        targeted,
        inventory,
        read,
        trusted,
        renewal_served: None,
        renewal: step::Gathered::Idle,
        renewal_switch: ClusterSwitch::default(),
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

/// The status after this reconcile (pure): the check table's, with the renewal step's `renewal`.
fn new_status(
    cr: &ClusterTencentCertificate,
    gathered: &Gathered,
    plan: &Plan,
    effects: &Effects,
    at: &Inputs,
) -> ClusterTencentCertificateStatus {
    let refresh = crd::refresh_interval(&cr.selection().spec);
    let previous = &gathered.previous;
    let fetched = effects.fetched.as_ref();
    let mut new_status = plan::compute(&plan::StatusInput {
        previous,
        generation: cr.metadata.generation,
        targeted: gathered.targeted.len(),
        failures: effects.failures.clone(),
        serving: effects
            .writing
            .as_ref()
            .map(|c| (c.id.as_str(), &c.bundle.meta)),
        renewal_chain: fetched.map(|f| f.chain.as_slice()),
        attempt: effects.attempt.clone(),
        downloaded: fetched.is_some_and(|f| f.downloaded),
        now: at.now,
        next_sync: status::next_sync(
            &effects.attempt,
            effects.failed_class,
            previous.failures,
            refresh,
            at,
        ),
    });
    new_status.renewal = step::status(
        &renewal_asked(cr, gathered),
        &plan.renewal,
        effects.renewal.as_ref(),
        at.now,
    );
    new_status
}

/// The status, one patch when it changed, events, metrics, and the requeue (sooner while namespaces fail).
async fn report(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    gathered: &Gathered,
    plan: &Plan,
    effects: Effects,
    at: &Inputs,
) -> Result<Outcome, ClusterReconcileError> {
    let refresh = crd::refresh_interval(&cr.selection().spec);
    let previous = &gathered.previous;
    let new_status = new_status(cr, gathered, plan, &effects, at);
    if cr.status.as_ref() != Some(&new_status) {
        let api: Api<ClusterTencentCertificate> = Api::all(ctx.base.client.clone());
        skeleton::patch_status(&api, cr, &new_status).await?;
    }
    let mut events = events(cr, previous, &new_status, effects.written, effects.released);
    events.extend(report_renewal(cr, ctx, previous, &new_status, plan));
    skeleton::publish_events(&ctx.base.recorder(), &cr.object_ref(&()), events).await;
    ctx.base.metrics.set_certificate(
        "",
        &cr.name_any(),
        new_status.certificate_id.as_deref().unwrap_or_default(),
        new_status.not_after.as_deref().and_then(|t| t.parse().ok()),
        new_status.is_true(status::CONDITION_READY),
        new_status
            .condition(status::CONDITION_READY)
            .map(|c| c.reason.as_str())
            .unwrap_or_default(),
    );
    let reason = match &effects.attempt {
        Attempt::Failed { reason, .. } => reason.clone(),
        _ if new_status.failed_namespaces > 0 => plan::REASON_NAMESPACES_FAILING.to_string(),
        _ => String::new(),
    };
    // The expiry does not bring a cluster resource back early (as before the skeleton): its refresh does.
    let requeue =
        skeleton::requeue_after(new_status.next_sync_time.as_deref(), None, at.now, refresh);
    let requeue = if new_status.failed_namespaces > 0 {
        requeue.min(NAMESPACE_RETRY)
    } else {
        requeue
    };
    let requeue = step::requeue(
        &plan.renewal,
        new_status.renewal.as_ref(),
        ctx.base.renewal.poll_interval,
        at.now,
    )
    .map_or(requeue, |renewal| requeue.min(renewal));
    Ok(Outcome {
        action: Action::requeue(requeue),
        result: if reason.is_empty() {
            "synced"
        } else {
            "failed"
        },
        reason,
    })
}

/// The renewal step's events and alert gauges for the new status.
fn report_renewal(
    cr: &ClusterTencentCertificate,
    ctx: &ClusterContext,
    previous: &ClusterTencentCertificateStatus,
    current: &ClusterTencentCertificateStatus,
    plan: &Plan,
) -> Vec<Event> {
    ctx.base.metrics.set_renewal(
        "",
        &cr.name_any(),
        &step::signals(&plan.renewal, current.renewal.as_ref()),
    );
    step::events(previous.renewal.as_ref(), current.renewal.as_ref())
}

/// A renewal followed: the served certificate moved along the renewal chain (not a spec edit).
fn renewed(
    previous: &ClusterTencentCertificateStatus,
    current: &ClusterTencentCertificateStatus,
) -> Option<Event> {
    let (Some(old), Some(new)) = (&previous.certificate_id, &current.certificate_id) else {
        return None;
    };
    (old != new && current.renewal_chain.contains(old)).then(|| Event {
        type_: EventType::Normal,
        reason: "Renewed".into(),
        note: Some(format!(
            "now serving certificate {new} instead of {old} (renewal chain {})",
            current.renewal_chain.join(" → ")
        )),
        action: format!("FollowRenewalTo{new}"),
        secondary: None,
    })
}

/// Events on the cluster resource (pure): Secrets written, namespaces released, and each new failure once.
fn events(
    cr: &ClusterTencentCertificate,
    previous: &ClusterTencentCertificateStatus,
    current: &ClusterTencentCertificateStatus,
    written: usize,
    released: usize,
) -> Vec<Event> {
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
    if let Some(event) = renewed(previous, current) {
        events.push(event);
    }
    if released > 0 {
        events.push(Event {
            type_: EventType::Normal,
            reason: "SecretsReleased".into(),
            note: Some(format!(
                "deleted {released} Secret(s) left behind: under an old secretName, or in a namespace the \
                 target no longer selects"
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
    events
}
