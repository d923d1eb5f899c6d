//! Whether to apply for the renewal of a free certificate, and what to say about an order: pure functions,
//! no I/O. The gatherer reads the served certificate and its order from Tencent ([`crate::apply`]); the
//! operator's status keeps a [`RecordedOrder`]; [`decide`] says what to do; [`Report`] is what status
//! and events say.
//!
//! Rules, in order:
//! 1. Renewal off in the spec, forbidden by the cluster's switch, or (when the switch says so) the
//!    resource uses the operator's default credentials: nothing.
//! 2. Only free certificates (package type 83, not VIP) are applied for. Paid ones are renewed by
//!    Tencent's hosting, which the renewal following already handles.
//! 3. A recorded order for the served certificate is tracked, never applied for again: its state is
//!    reported from what Tencent says about it. A recorded refusal holds until the spec (generation)
//!    or the served certificate changes. An application whose outcome was unknown is only looked for,
//!    for [`UNCONFIRMED_HOLD`], before another may be sent.
//! 4. A renewal Tencent already shows (the served certificate's `RenewOrder`, or a certificate naming it
//!    as `OriginCertificateId`) is adopted: recorded and tracked, not applied for.
//! 5. A certificate that is not issued or has expired is not applied for (Tencent accepts
//!    `OldCertificateId` only before the end).
//! 6. Before the window (`before`, at most Tencent's 30 days, ahead of the end): look again at its start.
//! 7. Otherwise: apply, once, with `OldCertificateId` and the served certificate's own domain.
//!
//! An order is only trusted as the renewal of the served certificate when Tencent links them (either
//! direction): a status edited to name some other certificate is never followed (design.md §10).

use jiff::{SignedDuration, Timestamp};

use crate::apply::{
    DvAuthMethod, OrderDetail, RENEWAL_WINDOW, STATUS_DNS_AUTO, STATUS_ISSUED, ValidationRecord,
};
use crate::renewal::status_in_progress;

/// How long an application with an unknown outcome is only looked for before another may be sent.
pub const UNCONFIRMED_HOLD: SignedDuration = SignedDuration::from_mins(15);

/// What a resource asks for (converted from its spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalSettings {
    /// Apply this long before the end (capped at Tencent's 30-day window).
    pub before: SignedDuration,
    pub method: DvAuthMethod,
}

impl RenewalSettings {
    /// The lead time actually used: within `0..=30 days`.
    pub fn lead(&self) -> SignedDuration {
        self.before.clamp(SignedDuration::ZERO, RENEWAL_WINDOW)
    }
}

/// The cluster administrator's switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterSwitch {
    /// No resource may apply.
    Forbid,
    /// Only resources with their own credentials: the operator's default credentials (the admin's
    /// account and free-certificate quota) are never used for an application.
    #[default]
    OwnCredentialsOnly,
    /// Any resource that asks, with whatever credentials it is allowed to use.
    Allow,
}

/// Where an order is, as recorded in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sent and accepted (an order id is known); Tencent validates.
    Applied,
    /// Tencent waits for a DNS record or file someone must create.
    AwaitingValidation,
    Issued,
    /// The order ended without a certificate (validation failed, cancelled).
    Failed,
    /// Tencent refused the application: no order.
    Refused,
    /// Sent, outcome unknown (timeout): there may be an order.
    Unconfirmed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "Applied",
            Self::AwaitingValidation => "AwaitingValidation",
            Self::Issued => "Issued",
            Self::Failed => "Failed",
            Self::Refused => "Refused",
            Self::Unconfirmed => "Unconfirmed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Applied,
            Self::AwaitingValidation,
            Self::Issued,
            Self::Failed,
            Self::Refused,
            Self::Unconfirmed,
        ]
        .into_iter()
        .find(|phase| phase.as_str() == text)
    }
}

/// What status keeps about the renewal of one served certificate. It survives restarts and leader
/// changes: the next leader reads it before it may apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOrder {
    /// The certificate renewed (`OldCertificateId`).
    pub old_certificate_id: String,
    /// The new certificate (the order); `None` for a refusal or an unconfirmed application.
    pub order_id: Option<String>,
    pub phase: Phase,
    /// When the application was sent (or the order adopted).
    pub since: Timestamp,
    /// The resource's generation when this was recorded (a refusal holds until it changes).
    pub generation: i64,
    /// Tencent's code of a refusal.
    pub code: Option<String>,
}

/// What the gatherer observed, and what the resource asks.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// `None`: renewal is off for this resource.
    pub settings: Option<&'a RenewalSettings>,
    pub cluster: ClusterSwitch,
    /// The resource uses the operator's default credentials.
    pub default_credentials: bool,
    /// The certificate served now (after following renewals), as Tencent describes it.
    pub served: &'a OrderDetail,
    pub recorded: Option<&'a RecordedOrder>,
    /// The order Tencent shows: the recorded order id, else the served certificate's renewal (see
    /// [`order_to_look_up`]), or one found by its `OriginCertificateId`. `None` if there is none.
    pub order: Option<&'a OrderDetail>,
    pub generation: i64,
    pub now: Timestamp,
}

/// Why nothing is applied for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Off,
    ForbiddenByCluster,
    DefaultCredentials,
    /// Paid (or uploaded): Tencent's hosting renews it.
    NotFree {
        package_type: Option<String>,
    },
    /// Not issued, or already past its end: Tencent no longer accepts a renewal.
    NotRenewable {
        status: Option<i64>,
    },
}

/// An order's state, from what Tencent says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderState {
    /// Accepted; Tencent validates on its own (DNS_AUTO) or has not said what to create yet.
    Applied,
    AwaitingValidation {
        method: Option<DvAuthMethod>,
        records: Vec<ValidationRecord>,
    },
    Issued,
    /// Ended without a certificate, with Tencent's reason.
    Failed {
        reason: String,
    },
}

impl OrderState {
    /// Reads an order's detail.
    pub fn of(order: &OrderDetail) -> Self {
        let method = order
            .verify_type
            .as_deref()
            .and_then(|v| v.parse::<DvAuthMethod>().ok());
        match order.status {
            Some(STATUS_ISSUED) => Self::Issued,
            Some(status) if !status_in_progress(status) => Self::Failed {
                reason: order
                    .status_msg
                    .clone()
                    .or_else(|| order.status_name.clone())
                    .unwrap_or_else(|| format!("Tencent status {status}")),
            },
            Some(STATUS_DNS_AUTO) => Self::Applied,
            _ if method == Some(DvAuthMethod::DnsAuto) || order.validation.is_empty() => {
                Self::Applied
            }
            _ => Self::AwaitingValidation {
                method,
                records: order.validation.clone(),
            },
        }
    }

    pub fn phase(&self) -> Phase {
        match self {
            Self::Applied => Phase::Applied,
            Self::AwaitingValidation { .. } => Phase::AwaitingValidation,
            Self::Issued => Phase::Issued,
            Self::Failed { .. } => Phase::Failed,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip(Skip),
    /// Before the window: decide again at `at`.
    NotYet {
        at: Timestamp,
    },
    /// Send one application (through `Client::apply_renewal`, which looks once more first).
    Apply {
        old_certificate_id: String,
        domain: String,
        method: DvAuthMethod,
    },
    /// An order exists for the served certificate: record it (if `adopted`, it was not recorded yet) and
    /// report its state. An issued order is served by the renewal following.
    Track {
        old_certificate_id: String,
        order_id: String,
        state: OrderState,
        adopted: bool,
    },
    /// The last application for this certificate and spec was refused: do not apply again.
    Refused {
        old_certificate_id: String,
        code: Option<String>,
    },
    /// The last application's outcome is unknown: only look for its order until `until`.
    Unconfirmed {
        old_certificate_id: String,
        until: Timestamp,
    },
}

/// The order id the gatherer should describe: the recorded one, else the renewal Tencent links.
pub fn order_to_look_up<'a>(
    served: &'a OrderDetail,
    recorded: Option<&'a RecordedOrder>,
) -> Option<&'a str> {
    recorded
        .filter(|r| r.old_certificate_id == served.certificate_id)
        .and_then(|r| r.order_id.as_deref())
        .or_else(|| served.renewal())
}

/// When the gatherer must ask Tencent about the renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Renewal is off: never (no Tencent call for it at all).
    Never,
    Now,
    /// Not before the window's start.
    At(Timestamp),
}

/// When to ask Tencent, from what status already knows (the served certificate's end, whether a record
/// exists for it): far from the window with nothing recorded, no call is needed until its start.
pub fn next_look(
    settings: Option<&RenewalSettings>,
    not_after: Option<Timestamp>,
    recorded_for_served: bool,
    now: Timestamp,
) -> Look {
    let Some(settings) = settings else {
        return Look::Never;
    };
    match not_after.map(|end| end - settings.lead()) {
        Some(start) if !recorded_for_served && now < start => Look::At(start),
        _ => Look::Now,
    }
}

/// Tencent links `order` to `served` (either direction): only then is it its renewal.
pub fn is_renewal_of(order: &OrderDetail, served: &OrderDetail) -> bool {
    order.certificate_id != served.certificate_id
        && (order.origin() == Some(served.certificate_id.as_str())
            || served.renewal() == Some(order.certificate_id.as_str()))
}

/// The start of the renewal window of `served` under `settings`.
pub fn window_start(served: &OrderDetail, settings: &RenewalSettings) -> Option<Timestamp> {
    served.not_after.map(|end| end - settings.lead())
}

pub fn decide(observed: &Observed<'_>) -> Decision {
    let served = observed.served;
    let old = served.certificate_id.clone();
    let Some(settings) = observed.settings else {
        return Decision::Skip(Skip::Off);
    };
    match observed.cluster {
        ClusterSwitch::Forbid => return Decision::Skip(Skip::ForbiddenByCluster),
        ClusterSwitch::OwnCredentialsOnly if observed.default_credentials => {
            return Decision::Skip(Skip::DefaultCredentials);
        }
        _ => {}
    }
    if !served.is_free() {
        return Decision::Skip(Skip::NotFree {
            package_type: served.package_type.clone(),
        });
    }
    // Only an order Tencent links to the served certificate counts.
    let order = observed.order.filter(|order| is_renewal_of(order, served));
    // A record naming an order Tencent does not link to the served certificate is not trusted at all
    // (an edited status); Tencent's links and `Client::apply_renewal`'s own look still prevent a second
    // application.
    let forged = |r: &RecordedOrder| {
        observed.order.is_some_and(|shown| {
            r.order_id.as_deref() == Some(shown.certificate_id.as_str())
                && !is_renewal_of(shown, served)
        })
    };
    let recorded = observed
        .recorded
        .filter(|r| r.old_certificate_id == served.certificate_id && !forged(r));
    let track = |order: &OrderDetail, adopted: bool| Decision::Track {
        old_certificate_id: old.clone(),
        order_id: order.certificate_id.clone(),
        state: OrderState::of(order),
        adopted,
    };
    if let Some(recorded) = recorded {
        let same_spec = recorded.generation == observed.generation;
        match (recorded.phase, order) {
            // What Tencent shows wins over what was recorded, whatever the phase: an order exists.
            (_, Some(order)) => {
                let state = OrderState::of(order);
                let ended = matches!(state, OrderState::Failed { .. });
                // A failed order holds like a refusal; after a spec change a new application may go.
                if !ended || same_spec {
                    let adopted = recorded.order_id.as_deref() != Some(&order.certificate_id);
                    return track(order, adopted);
                }
            }
            (Phase::Refused | Phase::Failed, None) if same_spec => {
                return Decision::Refused {
                    old_certificate_id: old,
                    code: recorded.code.clone(),
                };
            }
            (Phase::Unconfirmed, None) if observed.now < recorded.since + UNCONFIRMED_HOLD => {
                return Decision::Unconfirmed {
                    old_certificate_id: old,
                    until: recorded.since + UNCONFIRMED_HOLD,
                };
            }
            // A recorded order Tencent no longer shows (deleted or cancelled): it ended.
            (Phase::Applied | Phase::AwaitingValidation | Phase::Issued, None) if same_spec => {
                return Decision::Track {
                    old_certificate_id: old,
                    order_id: recorded.order_id.clone().unwrap_or_default(),
                    state: OrderState::Failed {
                        reason: "Tencent no longer shows the order".to_string(),
                    },
                    adopted: false,
                };
            }
            _ => {}
        }
    } else if let Some(order) = order {
        return track(order, true);
    }
    let renewable = served.status == Some(STATUS_ISSUED)
        && served.not_after.is_none_or(|end| observed.now < end);
    if !renewable {
        return Decision::Skip(Skip::NotRenewable {
            status: served.status,
        });
    }
    if let Some(start) = window_start(served, settings)
        && observed.now < start
    {
        return Decision::NotYet { at: start };
    }
    match served.domain.clone().filter(|d| !d.is_empty()) {
        Some(domain) => Decision::Apply {
            old_certificate_id: old,
            domain,
            method: settings.method,
        },
        // Without a domain there is nothing to apply for.
        None => Decision::Skip(Skip::NotRenewable {
            status: served.status,
        }),
    }
}

mod report;
pub use report::{AlertSignals, Report, alert_signals, metric_result, reason, record_outcome};

#[cfg(test)]
mod tests;
