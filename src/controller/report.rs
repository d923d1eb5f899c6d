//! The reporter of a `TencentCertificate` reconcile: the new status (pure, [`status::compute`]), one
//! status patch when it changed, events from the (previous, new) difference, metrics, and the requeue.

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use super::Context;
use super::act::Effects;
use super::reconcile::{Gathered, Plan, ReconcileError, Step};
use crate::crd::{self, TencentCertificate, TencentCertificateStatus};
use crate::policy::Decision;
use crate::renew::step;
use crate::skeleton::{self, Inputs, Outcome};
use crate::status::{self, Attempt, Serving, StatusInput};
use tencent_ssl::ErrorClass;

pub async fn report(
    cr: &TencentCertificate,
    ctx: &Context,
    gathered: &Gathered,
    plan: &Plan,
    effects: Effects,
    at: &Inputs,
) -> Result<Outcome, ReconcileError> {
    if effects.namespace_terminating {
        return Ok(Outcome {
            action: Action::await_change(),
            result: "unchanged",
            reason: String::new(),
        });
    }
    if effects.parked {
        // Woken when the download ends; the safety requeue only covers a lost wake.
        return Ok(Outcome {
            action: Action::requeue(super::parking::PARKED_REQUEUE),
            result: "parked",
            reason: String::new(),
        });
    }
    let previous = &gathered.previous;
    let mut new_status = new_status(cr, gathered, plan, &effects, at);
    let asked = super::reconcile::renewal_asked(cr, gathered);
    new_status.renewal = step::status(&asked, &plan.renewal, effects.renewal.as_ref(), at.now);
    if cr.status.as_ref() != Some(&new_status) {
        let api: Api<TencentCertificate> = Api::namespaced(ctx.client.clone(), &gathered.namespace);
        let write = ctx.own_writes.begin(cr);
        let stored = skeleton::patch_status(&api, cr, &new_status).await;
        write.finish(stored.as_ref().ok().and_then(Option::as_ref));
        if stored?.is_none() {
            // Deleted meanwhile (e.g. with its namespace): no events, metrics or requeue for it.
            return Ok(Outcome {
                action: Action::await_change(),
                result: "unchanged",
                reason: String::new(),
            });
        }
    }
    set_certificate_metrics(ctx, cr, gathered, &new_status, &expected_id(cr, &effects));
    ctx.metrics.set_renewal(
        &gathered.namespace,
        &cr.name_any(),
        &step::signals(&plan.renewal, new_status.renewal.as_ref()),
    );
    let mut events = events(previous, &new_status, effects.note);
    events.extend(step::events(
        previous.renewal.as_ref(),
        new_status.renewal.as_ref(),
    ));
    skeleton::publish_events(&ctx.recorder(), &cr.object_ref(&()), events).await;
    let (result, reason) = result_of(&plan.decision, &effects.attempt);
    let deferred_refresh = super::refresh::deferred(ctx, cr, &plan.decision, at.now).await;
    let requeue = skeleton::requeue_after(
        new_status.next_sync_time.as_deref(),
        new_status.not_after.as_deref(),
        at.now,
        crd::refresh_interval(&cr.spec),
    );
    let requeue = match step::requeue(
        &plan.renewal,
        new_status.renewal.as_ref(),
        ctx.renewal.poll_interval,
        at.now,
    ) {
        Some(renewal) => requeue.min(renewal),
        None => requeue,
    };
    let requeue = super::refresh::sooner(requeue, deferred_refresh);
    Ok(Outcome {
        // A long wait until the next sync is the refresh clock's, not a scheduler entry (see `clock`).
        action: super::clock::action(requeue, new_status.next_sync_time.as_deref(), at.now),
        result,
        reason,
    })
}

/// The certificate the Secret should hold now: the resolved one after a sync, else the spec's.
fn expected_id(cr: &TencentCertificate, effects: &Effects) -> String {
    effects
        .resolved
        .as_ref()
        .map(|r| r.id.clone())
        .or_else(|| cr.expected_certificate_id())
        .unwrap_or_else(|| cr.spec.describe_target())
}

/// When to sync next: after a conflict at the permanent-error pace; else after the attempt (see
/// [`status::next_sync`]).
fn next_sync(
    cr: &TencentCertificate,
    gathered: &Gathered,
    plan: &Plan,
    effects: &Effects,
    at: &Inputs,
) -> Option<jiff::Timestamp> {
    let refresh = crd::refresh_interval(&cr.spec);
    if matches!(plan.step, Step::Conflict(_)) {
        return Some(at.now + status::retry_delay(ErrorClass::Permanent, 1, refresh, at.jitter));
    }
    status::next_sync(
        &effects.attempt,
        effects.failed_class,
        gathered.previous.failures,
        refresh,
        at,
    )
}

/// The status after this reconcile (pure).
pub fn new_status(
    cr: &TencentCertificate,
    gathered: &Gathered,
    plan: &Plan,
    effects: &Effects,
    at: &Inputs,
) -> TencentCertificateStatus {
    let conflict = match &plan.step {
        Step::Conflict(message) => Some(message.as_str()),
        _ => None,
    };
    let resolved = effects.resolved.as_ref();
    status::compute(&StatusInput {
        previous: &gathered.previous,
        generation: cr.metadata.generation,
        spec_certificate_id: &expected_id(cr, effects),
        resolved: resolved.map(|r| (r.id.as_str(), r.chain.as_slice())),
        note: resolved.and_then(|r| r.note.as_deref()),
        secret_name: &effects.status_secret_name,
        serving: effects.serving.as_ref().map(|(id, meta)| Serving {
            certificate_id: id,
            meta,
        }),
        attempt: effects.attempt.clone(),
        downloaded: effects.downloaded,
        conflict,
        refresh_request: effects.refresh_request.as_deref(),
        now: at.now,
        next_sync: next_sync(cr, gathered, plan, effects, at),
    })
}

/// The reconcile metric's result and reason.
fn result_of(decision: &Decision, attempt: &Attempt) -> (&'static str, String) {
    match (decision, attempt) {
        (Decision::Conflict(_), _) => ("failed", crate::error::REASON_SECRET_CONFLICT.to_string()),
        (_, Attempt::Failed { reason, .. }) => ("failed", reason.clone()),
        (_, Attempt::Succeeded) => ("synced", String::new()),
        (Decision::RepairMetadata, _) => ("repaired", String::new()),
        _ => ("unchanged", String::new()),
    }
}

fn set_certificate_metrics(
    ctx: &Context,
    cr: &TencentCertificate,
    gathered: &Gathered,
    new_status: &TencentCertificateStatus,
    expected: &str,
) {
    ctx.metrics.set_certificate(
        &gathered.namespace,
        &cr.name_any(),
        expected,
        new_status
            .not_after
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        new_status.is_true(status::CONDITION_READY),
        new_status
            .condition(status::CONDITION_READY)
            .map(|c| c.reason.as_str())
            .unwrap_or(status::REASON_PENDING),
    );
}

/// The Synced condition's status and reason.
fn synced_state(current: &TencentCertificateStatus) -> Option<(&str, &str)> {
    current
        .condition(status::CONDITION_SYNCED)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Events (pure): what the operator wrote, a renewal followed, and each new failure reason once (not once
/// per retry), and the recovery from one.
pub fn events(
    previous: &TencentCertificateStatus,
    current: &TencentCertificateStatus,
    note: Option<(&'static str, String)>,
) -> Vec<Event> {
    let event = |type_, reason: &str, note, action: &str| Event {
        type_,
        reason: reason.to_string(),
        note,
        action: action.to_string(),
        secondary: None,
    };
    let mut events = Vec::new();
    if let Some((reason, message)) = note {
        events.push(event(
            EventType::Normal,
            reason,
            Some(message),
            "WriteSecret",
        ));
    }
    if let Some((new_id, message)) = renewed(previous, current) {
        // The recorder folds events with the same reason and action into one series (keeping the first
        // note); the new ID in the action keeps each renewal its own event.
        let action = format!("FollowRenewalTo{new_id}");
        events.push(event(EventType::Normal, "Renewed", Some(message), &action));
    }
    let before = synced_state(previous);
    let after = synced_state(current);
    if before != after
        && let Some((state, reason)) = after
    {
        let message = current
            .condition(status::CONDITION_SYNCED)
            .map(|c| c.message.clone());
        if state == "False" {
            events.push(event(EventType::Warning, reason, message, "Sync"));
        } else if before.is_some_and(|(s, _)| s == "False") {
            events.push(event(EventType::Normal, "Recovered", message, "Sync"));
        }
    }
    events
}

/// A renewal followed (or another certificate selected for the domain): the new id and the message.
fn renewed(
    previous: &TencentCertificateStatus,
    current: &TencentCertificateStatus,
) -> Option<(String, String)> {
    match (
        &previous.resolved_certificate_id,
        &current.resolved_certificate_id,
    ) {
        (Some(old), Some(new)) if old != new => Some((
            new.clone(),
            format!(
                "now serving certificate {new} instead of {old} ({})",
                if current.renewal_chain.is_empty() {
                    "selected for the domain".to_string()
                } else {
                    format!("renewal chain {}", current.renewal_chain.join(" → "))
                }
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(state: &str, reason: &str) -> TencentCertificateStatus {
        TencentCertificateStatus {
            conditions: vec![status::condition(
                status::CONDITION_SYNCED,
                state == "True",
                reason,
                format!("{reason} message"),
                Some(1),
                &[],
                "2026-01-01T00:00:00Z".parse().unwrap(),
            )],
            ..Default::default()
        }
    }

    #[test]
    fn a_failure_is_told_once_and_its_recovery_once() {
        let ok = synced("True", "Synced");
        let failing = synced("False", "NetworkError");
        let first = events(&ok, &failing, None);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].reason, "NetworkError");
        assert_eq!(first[0].type_, EventType::Warning);
        assert!(events(&failing, &failing, None).is_empty());
        let recovered = events(&failing, &ok, Some(("SecretUpdated", "wrote".into())));
        let reasons: Vec<&str> = recovered.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["SecretUpdated", "Recovered"]);
    }

    #[test]
    fn a_renewal_is_its_own_event_named_by_the_new_id() {
        let before = TencentCertificateStatus {
            resolved_certificate_id: Some("old1".into()),
            ..Default::default()
        };
        let after = TencentCertificateStatus {
            resolved_certificate_id: Some("new2".into()),
            renewal_chain: vec!["old1".into(), "new2".into()],
            ..Default::default()
        };
        let told = events(&before, &after, None);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].action, "FollowRenewalTonew2");
        assert!(
            told[0]
                .note
                .as_deref()
                .unwrap()
                .contains("renewal chain old1 → new2")
        );
    }

    #[test]
    fn the_metric_names_a_conflict_before_any_attempt() {
        let failed = Attempt::Failed {
            reason: "NetworkError".into(),
            message: String::new(),
        };
        assert_eq!(
            result_of(&Decision::Conflict("x".into()), &failed),
            ("failed", crate::error::REASON_SECRET_CONFLICT.to_string())
        );
        assert_eq!(
            result_of(&Decision::UpToDate, &failed),
            ("failed", "NetworkError".to_string())
        );
        assert_eq!(
            result_of(&Decision::RepairMetadata, &Attempt::NotNeeded),
            ("repaired", String::new())
        );
        assert_eq!(
            result_of(&Decision::UpToDate, &Attempt::NotNeeded),
            ("unchanged", String::new())
        );
    }
}
