//! The renewal step of both kinds, inside the reconcile skeleton ([`crate::skeleton`]):
//!
//! - [`gather`] reads what Tencent says about the served certificate and its renewal order through the
//!   shared per-(credentials, id) layer (`Client::describe_order_within`), and only when status alone
//!   cannot tell that nothing is due ([`order::next_look`]: far from the window, no call at all);
//! - [`plan`] is the pure [`order::decide`];
//! - [`act`] applies, once (`Client::apply_renewal`, under the operator's [`ApplyLocks`]), when the
//!   decision says so;
//! - [`status`], [`events`], [`signals`] and [`requeue`] are what the kind's reporter writes: the new
//!   `status.renewal`, the events of its transitions, the alert gauges and when to look again.
//!
//! An order Tencent has issued is served by the renewal following: the kind's plan downloads with
//! `DownloadTrigger::RenewalIssued` ([`Plan::issued_order`]), which writes the Secret once and tells
//! `Renewed` once.
//!
//! [`ApplyLocks`]: tencent_ssl::apply::ApplyLocks

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use tencent_ssl::Credentials;
use tencent_ssl::apply::{ApplyError, OrderDetail, RenewalOrder};
use tencent_ssl::renewal::order::{
    self, AlertSignals, Decision, Look, Observed, OrderState, Phase, RecordedOrder,
    RenewalSettings, Report, Skip,
};

use super::{RenewalSpec, RenewalStatus, RenewalStatusFields};
use crate::controller::Context;
use crate::error::SyncError;

/// Informational phases of `status.renewal` (no order recorded): they never parse as a record.
pub const PHASE_NOT_APPLICABLE: &str = "NotApplicable";
pub const PHASE_SCHEDULED: &str = "Scheduled";
pub const PHASE_UNREADABLE: &str = "Unreadable";

/// What the kind knows from Kubernetes before asking Tencent.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub spec: Option<&'a RenewalSpec>,
    pub previous: Option<&'a RenewalStatus>,
    /// The certificate served now (the Secret's), else the one the spec resolves to; `None` before
    /// anything is known.
    pub served_id: Option<&'a str>,
    /// The served certificate's end, as status says.
    pub not_after: Option<Timestamp>,
    pub generation: i64,
}

impl Asked<'_> {
    fn recorded(&self) -> Option<RecordedOrder> {
        self.previous.and_then(RenewalStatus::recorded)
    }
}

/// What Tencent said, with what the act needs to apply.
pub struct Seen {
    pub settings: RenewalSettings,
    pub default_credentials: bool,
    pub credentials: Credentials,
    pub served: Arc<OrderDetail>,
    pub order: Option<Arc<OrderDetail>>,
}

/// What the renewal gatherer read.
pub enum Gathered {
    /// Renewal is off, or nothing is served yet: no renewal work, no Tencent call.
    Idle,
    /// Before the window, known from status alone: no Tencent call until `at`.
    Later {
        at: Timestamp,
    },
    /// The credentials or Tencent's answer could not be had: tried again at the next poll.
    Unreadable {
        message: String,
    },
    Seen(Box<Seen>),
}

/// The credentials a resource uses, and whether they are the operator's default ones.
pub type ResourceCredentials = Result<(Credentials, bool), SyncError>;

/// Reads the served certificate and its order when a decision needs them. `credentials` is awaited only
/// then.
pub async fn gather<F>(ctx: &Context, asked: &Asked<'_>, credentials: F, now: Timestamp) -> Gathered
where
    F: Future<Output = ResourceCredentials>,
{
    let Some(settings) = super::settings(asked.spec) else {
        return Gathered::Idle;
    };
    let Some(served_id) = asked.served_id else {
        return Gathered::Idle;
    };
    let recorded = asked.recorded();
    let recorded_for_served = recorded
        .as_ref()
        .is_some_and(|r| r.old_certificate_id == served_id);
    match order::next_look(Some(&settings), asked.not_after, recorded_for_served, now) {
        Look::Never => return Gathered::Idle,
        Look::At(at) => return Gathered::Later { at },
        Look::Now => {}
    }
    let (credentials, default_credentials) = match credentials.await {
        Ok(got) => got,
        Err(err) => {
            return Gathered::Unreadable {
                message: format!("no credentials to look at the renewal ({})", err.reason()),
            };
        }
    };
    // Half the poll: an order is seen at most one poll late, and resources renewing one certificate
    // share the answer.
    let max_age = ctx.renewal.poll_interval / 2;
    let served = match ctx
        .tencent
        .describe_order_within(&credentials, served_id, max_age)
        .await
    {
        Ok(served) => served,
        Err(err) => return unreadable(served_id, &err),
    };
    let order_id = order::order_to_look_up(&served, recorded.as_ref()).map(str::to_string);
    let order = match order_id {
        Some(id) => match ctx
            .tencent
            .describe_order_within(&credentials, &id, max_age)
            .await
        {
            Ok(order) => Some(order),
            Err(err) if err.reason() == tencent_ssl::error::reason::CERTIFICATE_NOT_FOUND => None,
            Err(err) => return unreadable(&id, &err),
        },
        None => None,
    };
    Gathered::Seen(Box::new(Seen {
        settings,
        default_credentials,
        credentials,
        served,
        order,
    }))
}

fn unreadable(id: &str, err: &tencent_ssl::TencentError) -> Gathered {
    Gathered::Unreadable {
        message: format!(
            "cannot read certificate {id} from Tencent Cloud for the renewal ({}: {err})",
            err.reason()
        ),
    }
}

/// What the renewal step will do (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Idle,
    Later { at: Timestamp },
    Unreadable { message: String },
    Decided(Decision),
}

impl Plan {
    /// The order Tencent issued for the served certificate, when the served certificate is not it yet:
    /// what the kind downloads (`DownloadTrigger::RenewalIssued`).
    pub fn issued_order(&self, served_id: Option<&str>) -> Option<&str> {
        match self {
            Self::Decided(Decision::Track {
                order_id,
                state: OrderState::Issued,
                ..
            }) if Some(order_id.as_str()) != served_id => Some(order_id),
            _ => None,
        }
    }
}

/// The decision over what was gathered.
pub fn plan(
    asked: &Asked<'_>,
    gathered: &Gathered,
    switch: order::ClusterSwitch,
    now: Timestamp,
) -> Plan {
    match gathered {
        Gathered::Idle => Plan::Idle,
        Gathered::Later { at } => Plan::Later { at: *at },
        Gathered::Unreadable { message } => Plan::Unreadable {
            message: message.clone(),
        },
        Gathered::Seen(seen) => {
            let recorded = asked.recorded();
            Plan::Decided(order::decide(&Observed {
                settings: Some(&seen.settings),
                cluster: switch,
                default_credentials: seen.default_credentials,
                served: &seen.served,
                recorded: recorded.as_ref(),
                order: seen.order.as_deref(),
                generation: asked.generation,
                now,
            }))
        }
    }
}

/// What an application did: the record to keep and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acted {
    pub recorded: RecordedOrder,
    pub report: Report,
    /// The applications metric's `result`.
    pub result: &'static str,
}

/// Applies once when the plan says so; anything else does nothing here.
pub async fn act(
    ctx: &Context,
    gathered: &Gathered,
    plan: &Plan,
    generation: i64,
    now: Timestamp,
) -> Option<Acted> {
    let (
        Gathered::Seen(seen),
        Plan::Decided(Decision::Apply {
            old_certificate_id,
            method,
            ..
        }),
    ) = (gathered, plan)
    else {
        return None;
    };
    let outcome = ctx
        .tencent
        .apply_renewal(
            &ctx.apply_locks,
            &seen.credentials,
            old_certificate_id,
            *method,
        )
        .await;
    let result = order::metric_result(&outcome);
    ctx.metrics.renewal_applied(result);
    let report = match &outcome {
        Ok(RenewalOrder::Applied(applied)) => {
            tracing::info!(old = %old_certificate_id, order = %applied.certificate_id, method = %method, "applied for the renewal");
            Report::applied(old_certificate_id, &applied.certificate_id, *method)
        }
        Ok(RenewalOrder::Found(order)) => Report::order(
            old_certificate_id,
            &order.certificate_id,
            &OrderState::of(order),
        ),
        Err(ApplyError::Refused(err)) => {
            tracing::warn!(old = %old_certificate_id, reason = err.reason(), error = %err, "Tencent refused the renewal application");
            Report::refused(old_certificate_id, err.code(), &refusal_text(err))
        }
        Err(ApplyError::Uncertain(err)) => {
            tracing::warn!(old = %old_certificate_id, reason = err.reason(), error = %err, "renewal application outcome unknown");
            Report::unconfirmed(old_certificate_id, now + order::UNCONFIRMED_HOLD)
        }
    };
    Some(Acted {
        recorded: order::record_outcome(old_certificate_id, &outcome, generation, now),
        report,
        result,
    })
}

/// Tencent's message of a refusal, without the code (the report puts it first).
fn refusal_text(err: &tencent_ssl::TencentError) -> String {
    match err {
        tencent_ssl::TencentError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The new `status.renewal` (pure).
pub fn status(
    asked: &Asked<'_>,
    plan: &Plan,
    acted: Option<&Acted>,
    now: Timestamp,
) -> Option<RenewalStatus> {
    let previous = asked.previous;
    let served = asked.served_id.unwrap_or_default();
    let info = |phase: &str, message: String| {
        let since = previous
            .filter(|p| p.phase == phase && p.old_certificate_id == served)
            .map_or_else(|| now.to_string(), |p| p.since.clone());
        Some(RenewalStatus::from(RenewalStatusFields {
            old_certificate_id: served.to_string(),
            order_id: None,
            phase: phase.to_string(),
            since,
            observed_generation: asked.generation,
            code: None,
            message,
        }))
    };
    let is_record = previous.is_some_and(|p| p.recorded().is_some());
    match plan {
        Plan::Idle => previous.cloned(),
        // A record (e.g. the renewal now served) stays until the next window says more.
        Plan::Later { .. } if is_record => previous.cloned(),
        Plan::Later { at } => info(
            PHASE_SCHEDULED,
            format!("the renewal will be applied for from {at}"),
        ),
        Plan::Unreadable { .. } if is_record => previous.cloned(),
        Plan::Unreadable { message } => info(PHASE_UNREADABLE, message.clone()),
        Plan::Decided(decision) => decided(asked, decision, acted, now, info),
    }
}

fn decided(
    asked: &Asked<'_>,
    decision: &Decision,
    acted: Option<&Acted>,
    now: Timestamp,
    info: impl Fn(&str, String) -> Option<RenewalStatus>,
) -> Option<RenewalStatus> {
    let previous = asked.previous;
    let report = Report::of(decision);
    let message = || {
        report
            .as_ref()
            .map(|r| r.message.clone())
            .unwrap_or_default()
    };
    match decision {
        Decision::Skip(Skip::Off) => previous.cloned(),
        Decision::Apply { .. } => acted.map(|a| RenewalStatus::new(&a.recorded, Some(&a.report))),
        Decision::Skip(_) => info(PHASE_NOT_APPLICABLE, message()),
        Decision::NotYet { .. } => info(PHASE_SCHEDULED, message()),
        Decision::Track {
            old_certificate_id,
            order_id,
            state,
            ..
        } => {
            let same_order = previous.filter(|p| {
                p.old_certificate_id == *old_certificate_id
                    && p.order_id.as_deref() == Some(order_id)
            });
            let since = same_order
                .and_then(|p| p.since.parse::<Timestamp>().ok())
                .unwrap_or(now);
            let recorded = RecordedOrder {
                old_certificate_id: old_certificate_id.clone(),
                order_id: Some(order_id.clone()).filter(|id| !id.is_empty()),
                phase: state.phase(),
                since,
                generation: asked.generation,
                code: None,
            };
            let report = Report::order(old_certificate_id, order_id, state);
            Some(RenewalStatus::new(&recorded, Some(&report)))
        }
        // The record of the refusal, with Tencent's words, stays as it was written.
        Decision::Refused { .. } | Decision::Unconfirmed { .. } => previous.cloned(),
    }
}

/// The event reason and type of a phase.
fn phase_event(phase: &str) -> Option<(&'static str, EventType)> {
    use tencent_ssl::renewal::order::reason;
    let warning = EventType::Warning;
    let normal = EventType::Normal;
    Some(match Phase::parse(phase) {
        Some(Phase::Applied) => (reason::APPLIED, normal),
        Some(Phase::AwaitingValidation) => (reason::AWAITING_VALIDATION, warning),
        Some(Phase::Issued) => (reason::ISSUED, normal),
        Some(Phase::Failed) => (reason::FAILED, warning),
        Some(Phase::Refused) => (reason::REFUSED, warning),
        Some(Phase::Unconfirmed) => (reason::UNCONFIRMED, warning),
        None if phase == PHASE_NOT_APPLICABLE => (reason::NOT_APPLICABLE, normal),
        None if phase == PHASE_SCHEDULED => (reason::SCHEDULED, normal),
        None => return None,
    })
}

/// One event per transition of the renewal (phase, certificate or order), none while it stays.
pub fn events(previous: Option<&RenewalStatus>, current: Option<&RenewalStatus>) -> Vec<Event> {
    let key = |s: &RenewalStatus| {
        (
            s.phase.clone(),
            s.old_certificate_id.clone(),
            s.order_id.clone(),
        )
    };
    let Some(current) = current else {
        return Vec::new();
    };
    if previous.map(key) == Some(key(current)) {
        return Vec::new();
    }
    match phase_event(&current.phase) {
        Some((reason, type_)) => vec![Event {
            type_,
            reason: reason.to_string(),
            note: Some(current.message.clone()),
            action: "Renew".to_string(),
            secondary: None,
        }],
        None => Vec::new(),
    }
}

/// What the renewal alerts read (exported as gauges), from the new status.
pub fn signals(plan: &Plan, current: Option<&RenewalStatus>) -> AlertSignals {
    let phase = current.and_then(|s| Phase::parse(&s.phase));
    let waiting_since = match phase {
        Some(Phase::Applied | Phase::AwaitingValidation) => {
            current.and_then(|s| s.since.parse::<Timestamp>().ok())
        }
        _ => None,
    };
    let due = matches!(
        plan,
        Plan::Decided(
            Decision::Apply { .. }
                | Decision::Refused { .. }
                | Decision::Unconfirmed { .. }
                | Decision::Track {
                    state: OrderState::Failed { .. },
                    ..
                }
        )
    );
    AlertSignals {
        waiting_since,
        in_window_without_order: due && waiting_since.is_none() && phase != Some(Phase::Issued),
    }
}

/// When the renewal wants the resource looked at again: at the poll while an order is pending or an
/// application's outcome is unknown, at the window's start before it.
pub fn requeue(
    plan: &Plan,
    current: Option<&RenewalStatus>,
    poll: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let until = |at: &Timestamp| {
        Duration::try_from(at.duration_since(now))
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    };
    match plan {
        Plan::Idle => None,
        Plan::Later { at } | Plan::Decided(Decision::NotYet { at }) => Some(until(at)),
        Plan::Unreadable { .. } => Some(poll),
        Plan::Decided(_) => match current.and_then(|s| Phase::parse(&s.phase)) {
            Some(Phase::Applied | Phase::AwaitingValidation | Phase::Unconfirmed) => Some(poll),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests;
