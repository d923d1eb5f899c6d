//! What the controller's cache holds of each `TencentCertificate`: a projection decoded straight from the
//! watch, never the full object (issue 23; kube-rs's optimisation guide). The metadata is slimmed
//! (`super::slim`), the spec kept whole, and the status held with the strings that resources naming one
//! certificate share (ids, fingerprint, issuer, DNS names, validity, condition texts) as [`Shared`]
//! strings and its own instants without an allocation ([`Stamp`]).
//!
//! Decisions read the cache (which ids share credentials, who uses a Secret, when a refresh is due); a
//! reconcile turns its resource back into a [`TencentCertificate`] ([`CachedCertificate::to_resource`]),
//! so that every step downstream works on the API type. Both conversions of the status name every field,
//! so a field added to the API type cannot be forgotten here: the code does not compile until it is added.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use serde::Deserialize;

use crate::crd::{TencentCertificate, TencentCertificateSpec, TencentCertificateStatus};
use crate::intern::Shared;

/// A cached `TencentCertificate`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct CachedCertificate {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TencentCertificateSpec,
    #[serde(default)]
    pub status: Option<CachedStatus>,
}

impl Resource for CachedCertificate {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        TencentCertificate::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        TencentCertificate::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        TencentCertificate::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        TencentCertificate::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedCertificate {
    /// The resource as the API type, for a reconcile.
    pub fn to_resource(&self) -> TencentCertificate {
        TencentCertificate {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.as_ref().map(CachedStatus::to_status),
        }
    }

    /// [`TencentCertificate::expected_certificate_id`] of the cached resource.
    pub fn expected_certificate_id(&self) -> Option<String> {
        let status = self.status.as_ref();
        crate::crd::expected_certificate_id(
            &self.spec,
            self.metadata.generation,
            status.and_then(|s| s.observed_generation),
            status.and_then(|s| s.resolved_certificate_id.as_deref()),
        )
    }

    /// When the status plans the next refresh.
    pub fn next_sync_time(&self) -> Option<jiff::Timestamp> {
        match self.status.as_ref()?.next_sync_time.as_ref()? {
            Stamp::At(at) => Some(*at),
            Stamp::Text(text) => text.parse().ok(),
        }
    }
}

impl From<&TencentCertificate> for CachedCertificate {
    fn from(cr: &TencentCertificate) -> Self {
        Self {
            metadata: cr.metadata.clone(),
            spec: cr.spec.clone(),
            status: cr.status.as_ref().map(CachedStatus::from),
        }
    }
}

/// An instant of the status: the time itself when the text is the operator's own format (RFC 3339, UTC,
/// whole seconds: `crate::status::format_time`), else the text as written, so that nothing is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    At(jiff::Timestamp),
    Text(Box<str>),
}

impl Stamp {
    pub fn new(text: &str) -> Self {
        match text.parse::<jiff::Timestamp>() {
            Ok(at) if crate::status::format_time(at) == text => Self::At(at),
            _ => Self::Text(text.into()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Self::At(at) => crate::status::format_time(*at),
            Self::Text(text) => text.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Stamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a time")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Stamp, E> {
                Ok(Stamp::new(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A cached `metav1.Condition`: decoded as k8s-openapi decodes one (only `lastTransitionTime` is
/// required), with shared texts.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedCondition {
    #[serde(rename = "type", default = "empty")]
    pub type_: Shared,
    #[serde(default = "empty")]
    pub status: Shared,
    #[serde(default = "empty")]
    pub reason: Shared,
    #[serde(default = "empty")]
    pub message: Shared,
    pub last_transition_time: Time,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

fn empty() -> Shared {
    Shared::new("")
}

impl From<&Condition> for CachedCondition {
    fn from(c: &Condition) -> Self {
        let Condition {
            last_transition_time,
            message,
            observed_generation,
            reason,
            status,
            type_,
        } = c;
        Self {
            type_: Shared::new(type_),
            status: Shared::new(status),
            reason: Shared::new(reason),
            message: Shared::new(message),
            last_transition_time: last_transition_time.clone(),
            observed_generation: *observed_generation,
        }
    }
}

impl CachedCondition {
    fn to_condition(&self) -> Condition {
        Condition {
            last_transition_time: self.last_transition_time.clone(),
            message: String::from(&self.message),
            observed_generation: self.observed_generation,
            reason: String::from(&self.reason),
            status: String::from(&self.status),
            type_: String::from(&self.type_),
        }
    }
}

/// A cached [`TencentCertificateStatus`].
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedStatus {
    pub conditions: Box<[CachedCondition]>,
    pub observed_generation: Option<i64>,
    /// Usually the resource's own: not worth a pool entry.
    pub secret_name: Option<Box<str>>,
    pub certificate_id: Option<Shared>,
    pub resolved_certificate_id: Option<Shared>,
    pub renewal_chain: Box<[Shared]>,
    pub not_before: Option<Shared>,
    pub not_after: Option<Shared>,
    pub serial_number: Option<Shared>,
    pub fingerprint_sha256: Option<Shared>,
    pub dns_names: Box<[Shared]>,
    pub issuer: Option<Shared>,
    pub last_sync_time: Option<Stamp>,
    pub last_download_time: Option<Stamp>,
    pub next_sync_time: Option<Stamp>,
    pub failures: u32,
    pub renewal: Option<crate::renew::RenewalStatus>,
    pub last_refresh_request: Option<Shared>,
    pub last_refresh_request_time: Option<Stamp>,
}

fn shared(text: &Option<String>) -> Option<Shared> {
    text.as_deref().map(Shared::new)
}

fn shared_all(texts: &[String]) -> Box<[Shared]> {
    texts.iter().map(|text| Shared::new(text)).collect()
}

fn stamp(text: &Option<String>) -> Option<Stamp> {
    text.as_deref().map(Stamp::new)
}

fn text(shared: &Option<Shared>) -> Option<String> {
    shared.as_ref().map(String::from)
}

fn texts(shared: &[Shared]) -> Vec<String> {
    shared.iter().map(String::from).collect()
}

fn stamp_text(stamp: &Option<Stamp>) -> Option<String> {
    stamp.as_ref().map(Stamp::text)
}

impl From<&TencentCertificateStatus> for CachedStatus {
    fn from(status: &TencentCertificateStatus) -> Self {
        let TencentCertificateStatus {
            conditions,
            observed_generation,
            secret_name,
            certificate_id,
            resolved_certificate_id,
            renewal_chain,
            not_before,
            not_after,
            serial_number,
            fingerprint_sha256,
            dns_names,
            issuer,
            last_sync_time,
            last_download_time,
            next_sync_time,
            failures,
            renewal,
            last_refresh_request,
            last_refresh_request_time,
        } = status;
        Self {
            conditions: conditions.iter().map(CachedCondition::from).collect(),
            observed_generation: *observed_generation,
            secret_name: secret_name.as_deref().map(Box::from),
            certificate_id: shared(certificate_id),
            resolved_certificate_id: shared(resolved_certificate_id),
            renewal_chain: shared_all(renewal_chain),
            not_before: shared(not_before),
            not_after: shared(not_after),
            serial_number: shared(serial_number),
            fingerprint_sha256: shared(fingerprint_sha256),
            dns_names: shared_all(dns_names),
            issuer: shared(issuer),
            last_sync_time: stamp(last_sync_time),
            last_download_time: stamp(last_download_time),
            next_sync_time: stamp(next_sync_time),
            failures: *failures,
            renewal: renewal.clone(),
            last_refresh_request: shared(last_refresh_request),
            last_refresh_request_time: stamp(last_refresh_request_time),
        }
    }
}

impl CachedStatus {
    /// The status as the API type.
    pub fn to_status(&self) -> TencentCertificateStatus {
        TencentCertificateStatus {
            conditions: self
                .conditions
                .iter()
                .map(CachedCondition::to_condition)
                .collect(),
            observed_generation: self.observed_generation,
            secret_name: self.secret_name.as_deref().map(str::to_string),
            certificate_id: text(&self.certificate_id),
            resolved_certificate_id: text(&self.resolved_certificate_id),
            renewal_chain: texts(&self.renewal_chain),
            not_before: text(&self.not_before),
            not_after: text(&self.not_after),
            serial_number: text(&self.serial_number),
            fingerprint_sha256: text(&self.fingerprint_sha256),
            dns_names: texts(&self.dns_names),
            issuer: text(&self.issuer),
            last_sync_time: stamp_text(&self.last_sync_time),
            last_download_time: stamp_text(&self.last_download_time),
            next_sync_time: stamp_text(&self.next_sync_time),
            failures: self.failures,
            renewal: self.renewal.clone(),
            last_refresh_request: text(&self.last_refresh_request),
            last_refresh_request_time: stamp_text(&self.last_refresh_request_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status with every field of the API type set, as the operator writes it.
    fn full_status() -> serde_json::Value {
        serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Synced", "message": "certificate abc (CN=a.example)",
                 "lastTransitionTime": "2026-12-06T10:00:00Z", "observedGeneration": 3},
                {"type": "Synced", "status": "True", "reason": "Synced", "message": "",
                 "lastTransitionTime": "2026-12-06T10:00:01Z"}
            ],
            "observedGeneration": 3,
            "secretName": "web-tls",
            "certificateId": "abc",
            "resolvedCertificateId": "abd",
            "renewalChain": ["abc", "abd"],
            "notBefore": "2026-01-01T00:00:00Z",
            "notAfter": "2027-01-01T00:00:00Z",
            "serialNumber": "0A1B",
            "fingerprintSha256": "AB:CD",
            "dnsNames": ["a.example", "*.a.example"],
            "issuer": "CN=Test CA",
            "lastSyncTime": "2026-12-06T10:00:00Z",
            "lastDownloadTime": "2026-12-06T10:00:00.5Z",
            "nextSyncTime": "not a time",
            "failures": 2,
            "renewal": {"oldCertificateId": "abc", "orderId": "o-1", "phase": "Pending",
                        "since": "2026-12-01T00:00:00Z", "observedGeneration": 3},
            "lastRefreshRequest": "now",
            "lastRefreshRequestTime": "2026-12-06T09:59:00Z"
        })
    }

    #[test]
    fn the_cached_status_gives_back_the_status_it_was_decoded_from() {
        let json = full_status();
        let api: TencentCertificateStatus = serde_json::from_value(json.clone()).unwrap();
        let cached: CachedStatus = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(cached.to_status(), api);
        assert_eq!(CachedStatus::from(&api), cached);
        // Every field of the API type is set in the fixture (its JSON has them all back).
        assert_eq!(serde_json::to_value(cached.to_status()).unwrap(), json);
        // Instants in the operator's own format are held as times; others as written.
        assert!(matches!(cached.last_sync_time, Some(Stamp::At(_))));
        assert!(matches!(cached.last_download_time, Some(Stamp::Text(_))));
        assert!(matches!(cached.next_sync_time, Some(Stamp::Text(_))));
    }

    #[test]
    fn the_fixture_sets_every_status_field_of_the_crd() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(TencentCertificate::crd()).unwrap();
        let properties = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        let mut in_crd: Vec<&String> = properties.as_object().unwrap().keys().collect();
        let fixture = full_status();
        let mut in_fixture: Vec<&String> = fixture.as_object().unwrap().keys().collect();
        in_crd.sort();
        in_fixture.sort();
        assert_eq!(in_crd, in_fixture);
    }

    #[test]
    fn resources_naming_one_certificate_share_its_strings() {
        let resource = |name: &str| {
            serde_json::json!({
                "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificate",
                "metadata": {"name": name, "namespace": "team-a", "generation": 3},
                "spec": {"certificateId": "abc"},
                "status": full_status(),
            })
        };
        let a: CachedCertificate = serde_json::from_value(resource("a")).unwrap();
        let b: CachedCertificate = serde_json::from_value(resource("b")).unwrap();
        let (sa, sb) = (a.status.as_ref().unwrap(), b.status.as_ref().unwrap());
        let (fa, fb) = (
            sa.fingerprint_sha256.as_ref().unwrap(),
            sb.fingerprint_sha256.as_ref().unwrap(),
        );
        assert!(fa.same_allocation(fb));
        assert!(
            sa.conditions[0]
                .message
                .same_allocation(&sb.conditions[0].message)
        );
        assert!(sa.dns_names[1].same_allocation(&sb.dns_names[1]));
        // The cached resource decides as the API type does.
        let full: TencentCertificate = serde_json::from_value(resource("a")).unwrap();
        assert_eq!(a.to_resource(), full);
        assert_eq!(a.expected_certificate_id(), full.expected_certificate_id());
        assert_eq!(a.expected_certificate_id().as_deref(), Some("abd"));
        assert_eq!(CachedCertificate::from(&full), a);
    }

    #[test]
    fn the_next_sync_time_is_read_from_either_form() {
        let mut status = CachedStatus {
            next_sync_time: Some(Stamp::new("2026-12-06T10:00:00Z")),
            ..CachedStatus::default()
        };
        let cr = |status: &CachedStatus| CachedCertificate {
            metadata: ObjectMeta::default(),
            spec: serde_json::from_value(serde_json::json!({"certificateId": "abc"})).unwrap(),
            status: Some(status.clone()),
        };
        let at: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        assert_eq!(cr(&status).next_sync_time(), Some(at));
        status.next_sync_time = Some(Stamp::new("2026-12-06T10:00:00.000Z"));
        assert_eq!(cr(&status).next_sync_time(), Some(at));
        status.next_sync_time = Some(Stamp::new("soon"));
        assert_eq!(cr(&status).next_sync_time(), None);
    }

    #[test]
    fn the_cached_status_is_smaller_than_the_api_one() {
        let (cached, api) = (
            size_of::<Option<CachedStatus>>(),
            size_of::<Option<TencentCertificateStatus>>(),
        );
        eprintln!("inline: cached status {cached} B, API status {api} B");
        assert!(cached < api);
    }
}
