//! Applying for the renewal of free certificates (issue 27): the spec and status shapes, the cluster
//! switch, their conversion into the pure decision of [`tencent_ssl::renewal::order`], and the renewal
//! step both kinds run inside the reconcile skeleton ([`step`]).
//!
//! The spec, the same on TencentCertificate and ClusterTencentCertificate:
//!
//! ```yaml
//! spec:
//!   certificateId: aBcD1234
//!   renewal:
//!     apply: Free          # Never (default) | Free
//!     daysBefore: 30       # 1..30
//!     validation: DNS_AUTO # DNS_AUTO (default) | DNS | FILE
//! ```
//!
//! Why this shape: `apply` is an enum, not a boolean, because what it opts into is precise — applying for
//! *free* certificates; paid ones are renewed by Tencent's hosting and never applied for, and a future
//! kind (say, a paid package bought through the API) would be another value, not a second flag. The lead
//! time is whole days because Tencent's window is counted in days and capped at 30: an integer with a
//! schema minimum and maximum is checked by the API server at no CEL cost, while a Go duration has no
//! `d` unit (the `30d` the issue sketches would be refused by `duration()`), and `720h` reads badly.
//! `validation` carries Tencent's own `DvAuthMethod` names, so the console, the SDK and the spec agree.
//!
//! The status (under `status.renewal`): see [`RenewalStatus`]; it is what survives restarts and
//! leader changes, so the next leader finds the order before it may apply.

pub mod step;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tencent_ssl::apply::{DvAuthMethod, RENEWAL_WINDOW};
use tencent_ssl::renewal::order::{ClusterSwitch, Phase, RecordedOrder, RenewalSettings, Report};

/// What to apply for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RenewalApply {
    /// Never apply (the renewal following still follows renewals made elsewhere).
    #[default]
    Never,
    /// Apply for the renewal of a free certificate (TrustAsia DV, package type 83) with
    /// `OldCertificateId`, once, within `daysBefore` days of its end. Paid certificates are never
    /// applied for.
    Free,
}

/// How Tencent validates the domain of the renewal (`DvAuthMethod`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RenewalValidation {
    /// Tencent adds the DNS record itself: the domain must be on Tencent Cloud DNSPod, in the account of
    /// the credentials.
    #[default]
    #[serde(rename = "DNS_AUTO")]
    DnsAuto,
    /// Someone creates the DNS record Tencent names; status shows it until validation passes.
    #[serde(rename = "DNS")]
    Dns,
    /// Someone serves the file Tencent names under `/.well-known/pki-validation/`; status shows it.
    #[serde(rename = "FILE")]
    File,
}

impl From<RenewalValidation> for DvAuthMethod {
    fn from(validation: RenewalValidation) -> Self {
        match validation {
            RenewalValidation::DnsAuto => Self::DnsAuto,
            RenewalValidation::Dns => Self::Dns,
            RenewalValidation::File => Self::File,
        }
    }
}

/// `spec.renewal`: apply for the renewal of the served certificate before it expires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewalSpec {
    #[serde(default)]
    pub apply: RenewalApply,
    /// Apply this many days before the certificate's end (Tencent accepts a renewal within 30 days of
    /// the end, and not after it).
    #[serde(default = "default_days_before")]
    #[schemars(range(min = 1, max = 30))]
    pub days_before: u8,
    #[serde(default)]
    pub validation: RenewalValidation,
}

fn default_days_before() -> u8 {
    30
}

impl Default for RenewalSpec {
    fn default() -> Self {
        Self {
            apply: RenewalApply::default(),
            days_before: default_days_before(),
            validation: RenewalValidation::default(),
        }
    }
}

impl RenewalSpec {
    /// The decision's settings; `None` when the spec does not ask to apply.
    pub fn settings(&self) -> Option<RenewalSettings> {
        match self.apply {
            RenewalApply::Never => None,
            RenewalApply::Free => Some(RenewalSettings {
                before: jiff::SignedDuration::from_hours(24 * i64::from(self.days_before))
                    .min(RENEWAL_WINDOW),
                method: self.validation.into(),
            }),
        }
    }
}

/// The settings of an optional `spec.renewal`.
pub fn settings(spec: Option<&RenewalSpec>) -> Option<RenewalSettings> {
    spec.and_then(RenewalSpec::settings)
}

/// `--renewal-applications` (env `OPERATOR_RENEWAL_APPLICATIONS`, chart value `renewal.applications`):
/// `forbid`, `own-credentials` (default: never with the operator's default credentials) or `allow`.
pub fn parse_cluster_switch(text: &str) -> Result<ClusterSwitch, String> {
    match text {
        "forbid" => Ok(ClusterSwitch::Forbid),
        "own-credentials" => Ok(ClusterSwitch::OwnCredentialsOnly),
        "allow" => Ok(ClusterSwitch::Allow),
        other => Err(format!(
            "unknown renewal-applications value {other:?}: forbid, own-credentials or allow"
        )),
    }
}

/// How often a pending order is looked at, by default (`--renewal-poll-interval`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// The operator-wide settings of renewal applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalConfig {
    pub switch: ClusterSwitch,
    /// How often an order waiting for validation or issue is looked at.
    pub poll_interval: Duration,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        Self {
            switch: ClusterSwitch::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// `status.renewal`: where the renewal of the served certificate is ([`RenewalStatusFields`], boxed).
///
/// Boxed because every resource's status sits in the controller's cache and most never apply for a
/// renewal: `Option<RenewalStatus>` is 8 bytes inline instead of 152 (issue 23, BENCHMARKS.md). Reads and
/// writes of the fields go through `Deref`; the JSON and the CRD schema are the fields' own
/// (`transparent`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(transparent)]
pub struct RenewalStatus(Box<RenewalStatusFields>);

impl From<RenewalStatusFields> for RenewalStatus {
    fn from(fields: RenewalStatusFields) -> Self {
        Self(Box::new(fields))
    }
}

impl std::ops::Deref for RenewalStatus {
    type Target = RenewalStatusFields;
    fn deref(&self) -> &RenewalStatusFields {
        &self.0
    }
}

impl std::ops::DerefMut for RenewalStatus {
    fn deref_mut(&mut self) -> &mut RenewalStatusFields {
        &mut self.0
    }
}

/// The fields of `status.renewal` ([`RenewalStatus`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewalStatusFields {
    /// The certificate being renewed (`OldCertificateId`).
    pub old_certificate_id: String,
    /// The new certificate (the order), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// An order's `Applied`, `AwaitingValidation`, `Issued`, `Failed`, `Refused` or `Unconfirmed`; or, with
    /// no order recorded, `NotApplicable` (paid, forbidden, default credentials), `Scheduled` (before the
    /// window) or `Unreadable` (Tencent could not be asked).
    pub phase: String,
    /// When the application was sent or the order adopted (RFC 3339).
    pub since: String,
    /// The generation of the spec when this was recorded: a refusal holds until it changes.
    pub observed_generation: i64,
    /// Tencent's error code of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What to do or to wait for (e.g. the DNS record to create), as the last event said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl RenewalStatus {
    /// The status for a record and its latest report.
    pub fn new(recorded: &RecordedOrder, report: Option<&Report>) -> Self {
        Self::from(RenewalStatusFields {
            old_certificate_id: recorded.old_certificate_id.clone(),
            order_id: recorded.order_id.clone(),
            phase: recorded.phase.as_str().to_string(),
            since: recorded.since.to_string(),
            observed_generation: recorded.generation,
            code: recorded.code.clone(),
            message: report.map(|r| r.message.clone()).unwrap_or_default(),
        })
    }

    /// The record the decision reads. A status that does not parse (an unknown phase, a bad time) is no
    /// record: the decision then relies on what Tencent shows, and `Client::apply_renewal` looks for an
    /// existing order before it sends anything.
    pub fn recorded(&self) -> Option<RecordedOrder> {
        Some(RecordedOrder {
            old_certificate_id: self.old_certificate_id.clone(),
            order_id: self.order_id.clone().filter(|id| !id.is_empty()),
            phase: Phase::parse(&self.phase)?,
            since: self.since.parse::<Timestamp>().ok()?,
            generation: self.observed_generation,
            code: self.code.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_defaults_to_never_and_reads_tencents_method_names() {
        let spec: RenewalSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec, RenewalSpec::default());
        assert_eq!(spec.settings(), None);
        let spec: RenewalSpec = serde_json::from_value(
            serde_json::json!({"apply": "Free", "daysBefore": 20, "validation": "DNS"}),
        )
        .unwrap();
        assert_eq!(
            spec.settings(),
            Some(RenewalSettings {
                before: jiff::SignedDuration::from_hours(24 * 20),
                method: DvAuthMethod::Dns,
            })
        );
        assert!(
            serde_json::from_value::<RenewalSpec>(serde_json::json!({"validation": "dns"}))
                .is_err()
        );
        assert_eq!(settings(None), None);
    }

    #[test]
    fn the_schema_bounds_the_days_and_lists_the_values() {
        let schema = serde_json::to_value(schemars::schema_for!(RenewalSpec)).unwrap();
        let days = &schema["properties"]["daysBefore"];
        assert_eq!(days["minimum"], 1);
        assert_eq!(days["maximum"], 30);
        let text = schema.to_string();
        for value in ["Never", "Free", "DNS_AUTO", "DNS", "FILE"] {
            assert!(text.contains(&format!("\"{value}\"")), "{value}: {text}");
        }
    }

    #[test]
    fn the_cluster_switch_parses_its_three_values() {
        assert_eq!(parse_cluster_switch("forbid"), Ok(ClusterSwitch::Forbid));
        assert_eq!(
            parse_cluster_switch("own-credentials"),
            Ok(ClusterSwitch::OwnCredentialsOnly)
        );
        assert_eq!(parse_cluster_switch("allow"), Ok(ClusterSwitch::Allow));
        assert!(parse_cluster_switch("yes").is_err());
        assert_eq!(ClusterSwitch::default(), ClusterSwitch::OwnCredentialsOnly);
    }

    #[test]
    fn status_round_trips_the_record_and_unreadable_status_is_no_record() {
        let recorded = RecordedOrder {
            old_certificate_id: "old1".into(),
            order_id: Some("new1".into()),
            phase: Phase::AwaitingValidation,
            since: "2026-12-02T05:00:00Z".parse().unwrap(),
            generation: 3,
            code: None,
        };
        let report = Report {
            reason: "RenewalAwaitingValidation",
            message: "create the DNS record".into(),
            warning: true,
        };
        let status = RenewalStatus::new(&recorded, Some(&report));
        assert_eq!(status.phase, "AwaitingValidation");
        assert_eq!(status.message, "create the DNS record");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["orderId"], "new1");
        assert_eq!(json["observedGeneration"], 3);
        assert_eq!(status.recorded(), Some(recorded));
        let mut edited = status.clone();
        edited.phase = "Whatever".into();
        assert_eq!(edited.recorded(), None);
        let mut edited = status;
        edited.since = "yesterday".into();
        assert_eq!(edited.recorded(), None);
    }
}
