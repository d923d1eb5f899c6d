//! What status, events, metrics and alerts say about the renewal of a certificate.

use jiff::Timestamp;

use super::{Decision, OrderState, Phase, RecordedOrder, Skip};
use crate::apply::{DvAuthMethod, ValidationRecord};

/// Condition reasons of the renewal (a `Renewal` condition, and event reasons).
pub mod reason {
    pub const NOT_APPLICABLE: &str = "RenewalNotApplicable";
    pub const SCHEDULED: &str = "RenewalScheduled";
    pub const APPLIED: &str = "RenewalApplied";
    pub const AWAITING_VALIDATION: &str = "RenewalAwaitingValidation";
    pub const ISSUED: &str = "RenewalIssued";
    pub const FAILED: &str = "RenewalFailed";
    pub const REFUSED: &str = "RenewalRefused";
    pub const UNCONFIRMED: &str = "RenewalUnconfirmed";
}

/// What status and events say about the renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub reason: &'static str,
    pub message: String,
    /// An event of type Warning (a person must act, or it failed).
    pub warning: bool,
}

fn record_text(method: Option<DvAuthMethod>, record: &ValidationRecord) -> String {
    let file = method == Some(DvAuthMethod::File) || record.record_type.as_deref() == Some("FILE");
    if file {
        let path = record
            .path
            .as_deref()
            .unwrap_or("/.well-known/pki-validation/");
        let slash = if path.ends_with('/') { "" } else { "/" };
        let on = record
            .domain
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        format!(
            "serve the file {path}{slash}{} with the content {:?}{on}",
            record.key, record.value
        )
    } else {
        format!(
            "create the DNS record {} {} with the value {:?}",
            record.record_type.as_deref().unwrap_or("TXT"),
            record.key,
            record.value
        )
    }
}

impl Report {
    /// The report for a decision. `Apply` reports nothing yet: the outcome of the application does
    /// (see [`Report::applied`], [`Report::refused`], [`Report::unconfirmed`]).
    pub fn of(decision: &Decision) -> Option<Self> {
        let report = |reason, message: String, warning| {
            Some(Self {
                reason,
                message,
                warning,
            })
        };
        match decision {
            Decision::Skip(Skip::Off) | Decision::Apply { .. } => None,
            Decision::Skip(skip) => report(
                reason::NOT_APPLICABLE,
                match skip {
                    Skip::ForbiddenByCluster => "the cluster administrator does not allow applying for renewals".to_string(),
                    Skip::DefaultCredentials => "renewals are not applied for with the operator's default credentials; name credentials of your own in credentialsRef".to_string(),
                    Skip::NotFree { package_type } => format!(
                        "the certificate is not a free one (package type {}): Tencent's hosting renews paid certificates, and the operator follows the renewal",
                        package_type.as_deref().unwrap_or("none, uploaded")
                    ),
                    Skip::NotRenewable { status } => format!(
                        "the certificate is not issued or has expired (Tencent status {}): Tencent accepts a renewal only before the end",
                        status.map_or_else(|| "unknown".to_string(), |s| s.to_string())
                    ),
                    Skip::Off => String::new(),
                },
                false,
            ),
            Decision::NotYet { at } => report(
                reason::SCHEDULED,
                format!("the renewal will be applied for from {at}"),
                false,
            ),
            Decision::Track {
                old_certificate_id,
                order_id,
                state,
                ..
            } => Some(Self::order(old_certificate_id, order_id, state)),
            Decision::Refused {
                old_certificate_id,
                code,
            } => report(
                reason::REFUSED,
                format!(
                    "Tencent refused to renew {old_certificate_id}{}; no new application until the spec or the certificate changes",
                    code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                ),
                true,
            ),
            Decision::Unconfirmed {
                old_certificate_id,
                until,
            } => Some(Self::unconfirmed(old_certificate_id, *until)),
        }
    }

    /// An order's state.
    pub fn order(old: &str, order_id: &str, state: &OrderState) -> Self {
        match state {
            OrderState::Applied => Self {
                reason: reason::APPLIED,
                message: format!(
                    "renewal {order_id} of {old} was applied for; Tencent validates the domain"
                ),
                warning: false,
            },
            OrderState::AwaitingValidation { method, records } => {
                let todo = if records.is_empty() {
                    "see the order in Tencent Cloud's console".to_string()
                } else {
                    records
                        .iter()
                        .map(|r| record_text(*method, r))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                Self {
                    reason: reason::AWAITING_VALIDATION,
                    message: format!(
                        "renewal {order_id} of {old} waits for domain validation: {todo}"
                    ),
                    warning: true,
                }
            }
            OrderState::Issued => Self {
                reason: reason::ISSUED,
                message: format!("renewal {order_id} of {old} is issued"),
                warning: false,
            },
            OrderState::Failed { reason: why } => Self {
                reason: reason::FAILED,
                message: format!(
                    "renewal {order_id} of {old} failed: {why}; no new application until the spec or the certificate changes"
                ),
                warning: true,
            },
        }
    }

    /// An application just accepted.
    pub fn applied(old: &str, order_id: &str, method: DvAuthMethod) -> Self {
        Self {
            reason: reason::APPLIED,
            message: format!(
                "applied for the renewal of {old}: order {order_id}, validated by {method}"
            ),
            warning: false,
        }
    }

    /// An application Tencent refused, with its code and message.
    pub fn refused(old: &str, code: Option<&str>, message: &str) -> Self {
        Self {
            reason: reason::REFUSED,
            message: format!(
                "Tencent refused to renew {old}: {}{message}; no new application until the spec or the certificate changes",
                code.map(|c| format!("{c}: ")).unwrap_or_default()
            ),
            warning: true,
        }
    }

    pub fn unconfirmed(old: &str, until: Timestamp) -> Self {
        Self {
            reason: reason::UNCONFIRMED,
            message: format!(
                "the application for the renewal of {old} got no answer; looking for its order, no new application before {until}"
            ),
            warning: true,
        }
    }
}

/// What the renewal alerts read, per resource (exported as gauges): since when an order has waited
/// (`time() - since > threshold` alerts on an order stuck in validation), and whether the served
/// certificate is inside its window with no order (applying is due, refused or unconfirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSignals {
    pub waiting_since: Option<Timestamp>,
    pub in_window_without_order: bool,
}

pub fn alert_signals(
    decision: &Decision,
    recorded: Option<&RecordedOrder>,
    now: Timestamp,
) -> AlertSignals {
    let waiting_since = match decision {
        Decision::Track {
            old_certificate_id,
            state: OrderState::Applied | OrderState::AwaitingValidation { .. },
            ..
        } => Some(
            recorded
                .filter(|r| &r.old_certificate_id == old_certificate_id)
                .map_or(now, |r| r.since),
        ),
        _ => None,
    };
    AlertSignals {
        waiting_since,
        in_window_without_order: matches!(
            decision,
            Decision::Apply { .. } | Decision::Refused { .. } | Decision::Unconfirmed { .. }
        ),
    }
}

/// The `result` label of the applications metric: a fixed set.
pub fn metric_result(
    outcome: &Result<crate::apply::RenewalOrder, crate::apply::ApplyError>,
) -> &'static str {
    use crate::apply::{ApplyError, RenewalOrder};
    match outcome {
        Ok(RenewalOrder::Applied(_)) => "applied",
        Ok(RenewalOrder::Found(_)) => "found",
        Err(ApplyError::Refused(_)) => "refused",
        Err(ApplyError::Uncertain(_)) => "uncertain",
    }
}

/// The record to keep after an application's outcome.
pub fn record_outcome(
    old: &str,
    outcome: &Result<crate::apply::RenewalOrder, crate::apply::ApplyError>,
    generation: i64,
    now: Timestamp,
) -> RecordedOrder {
    use crate::apply::{ApplyError, RenewalOrder};
    let (order_id, phase, code) = match outcome {
        Ok(RenewalOrder::Applied(applied)) => {
            (Some(applied.certificate_id.clone()), Phase::Applied, None)
        }
        Ok(RenewalOrder::Found(order)) => (
            Some(order.certificate_id.clone()),
            OrderState::of(order).phase(),
            None,
        ),
        Err(ApplyError::Refused(err)) => (None, Phase::Refused, err.code().map(String::from)),
        Err(ApplyError::Uncertain(_)) => (None, Phase::Unconfirmed, None),
    };
    RecordedOrder {
        old_certificate_id: old.to_string(),
        order_id,
        phase,
        since: now,
        generation,
        code,
    }
}
