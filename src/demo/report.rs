//! What the demo prints: one line each time a resource reaches a new state, the Secret it wrote, and a
//! summary once every demo resource has settled. Pure: the demo feeds it watch events and prints its lines.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt as _;

use crate::crd::TencentCertificate;
use crate::status::{CONDITION_READY, REASON_PENDING};

/// Where a resource stands, as far as a person watching the demo cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No verdict yet.
    Pending,
    Ready,
    /// Ready=False with this reason and message.
    NotReady {
        reason: String,
        message: String,
    },
}

pub fn phase(certificate: &TencentCertificate) -> Phase {
    let Some(ready) = certificate
        .status
        .as_ref()
        .and_then(|s| s.condition(CONDITION_READY))
    else {
        return Phase::Pending;
    };
    if ready.reason == REASON_PENDING {
        Phase::Pending
    } else if ready.status == "True" {
        Phase::Ready
    } else {
        Phase::NotReady {
            reason: ready.reason.clone(),
            message: ready.message.clone(),
        }
    }
}

/// The line for a resource in its current state.
pub fn line(
    certificate: &TencentCertificate,
    secret_keys: &[String],
    now: jiff::Timestamp,
) -> String {
    let name = certificate.name_any();
    let status = certificate.status.clone().unwrap_or_default();
    match phase(certificate) {
        Phase::Pending => format!("  {name:<14} {:<12} waiting for the first sync", "Pending"),
        Phase::Ready => {
            let secret = status
                .secret_name
                .clone()
                .unwrap_or_else(|| certificate.secret_name());
            let namespace = certificate.namespace().unwrap_or_default();
            let keys = if secret_keys.is_empty() {
                String::new()
            } else {
                format!(" [{}]", secret_keys.join(" "))
            };
            let expiry = status
                .not_after
                .as_deref()
                .map(|t| expires(t, now))
                .unwrap_or_default();
            let fingerprint = status
                .fingerprint_sha256
                .as_deref()
                .map(|f| format!("; sha256 {}", abbreviate(f)))
                .unwrap_or_default();
            format!(
                "  {name:<14} {:<12} certificate {} -> Secret {namespace}/{secret}{keys}\n  {:<14} {:<12} {}{expiry}; issuer {}{fingerprint}",
                "Ready",
                status.certificate_id.as_deref().unwrap_or("?"),
                "",
                "",
                status.dns_names.join(", "),
                status.issuer.as_deref().unwrap_or("?"),
            )
        }
        Phase::NotReady { reason, message } => format!("  {name:<14} {reason:<12} {message}"),
    }
}

fn expires(not_after: &str, now: jiff::Timestamp) -> String {
    match not_after.parse::<jiff::Timestamp>() {
        // The words of `status` and `kubectl tcert status` for the same certificate ("in 89d").
        Ok(t) => {
            let delta = t.as_second() - now.as_second();
            let human = crate::inspect::human_duration(delta);
            if delta >= 0 {
                format!("; expires {not_after} (in {human})")
            } else {
                format!("; expires {not_after} ({human} ago)")
            }
        }
        Err(_) => format!("; expires {not_after}"),
    }
}

/// `AB:CD:…:EF` → its first and last four bytes.
fn abbreviate(fingerprint: &str) -> String {
    if fingerprint.len() <= 24 {
        return fingerprint.to_string();
    }
    format!(
        "{}…{}",
        &fingerprint[..11],
        &fingerprint[fingerprint.len() - 11..]
    )
}

/// Turns watch events into the lines to print.
pub struct Reporter {
    /// The demo's resources, by name.
    expected: BTreeSet<String>,
    /// Last phase and certificate printed per resource (a line is printed only when this changes).
    printed: BTreeMap<String, (Phase, Option<String>)>,
    /// Key names of the managed Secrets present, by Secret name.
    secrets: BTreeMap<String, Vec<String>>,
    /// Managed Secrets seen deleted and not yet written again.
    deleted: BTreeSet<String>,
    summarized: bool,
}

impl Reporter {
    pub fn new(expected: impl IntoIterator<Item = String>) -> Self {
        Reporter {
            expected: expected.into_iter().collect(),
            printed: BTreeMap::new(),
            secrets: BTreeMap::new(),
            deleted: BTreeSet::new(),
            summarized: false,
        }
    }

    /// A TencentCertificate was added or changed.
    pub fn certificate(
        &mut self,
        certificate: &TencentCertificate,
        now: jiff::Timestamp,
    ) -> Option<String> {
        let name = certificate.name_any();
        let current = (
            phase(certificate),
            certificate
                .status
                .as_ref()
                .and_then(|s| s.certificate_id.clone()),
        );
        if current.0 == Phase::Pending || self.printed.get(&name) == Some(&current) {
            return None;
        }
        self.printed.insert(name, current);
        let keys = self
            .secrets
            .get(&certificate.secret_name())
            .cloned()
            .unwrap_or_default();
        Some(line(certificate, &keys, now))
    }

    /// A managed Secret was written (created or changed); `keys` are its data keys.
    pub fn secret_written(
        &mut self,
        namespace: &str,
        name: &str,
        keys: Vec<String>,
    ) -> Option<String> {
        self.secrets.insert(name.to_string(), keys);
        self.deleted
            .remove(name)
            .then(|| format!("  Secret {namespace}/{name} is back: the operator wrote it again"))
    }

    /// A managed Secret was deleted.
    pub fn secret_deleted(&mut self, namespace: &str, name: &str) -> Option<String> {
        self.secrets.remove(name);
        self.deleted.insert(name.to_string());
        Some(format!(
            "  Secret {namespace}/{name} was deleted: the operator notices and writes it again"
        ))
    }

    /// Once, when every demo resource has a verdict: (how many are Ready, how many are not).
    pub fn settled(&mut self) -> Option<(usize, usize)> {
        if self.summarized || !self.expected.iter().all(|n| self.printed.contains_key(n)) {
            return None;
        }
        self.summarized = true;
        let ready = self
            .expected
            .iter()
            .filter(|n| matches!(self.printed.get(*n), Some((Phase::Ready, _))))
            .count();
        Some((ready, self.expected.len() - ready))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn certificate(name: &str, ready: Option<(&str, &str, &str)>) -> TencentCertificate {
        let mut c: TencentCertificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificate",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"certificateId": "demo0001"},
        }))
        .unwrap();
        if let Some((status, reason, message)) = ready {
            let mut s = crate::crd::TencentCertificateStatus {
                certificate_id: Some("demo0001".into()),
                not_after: Some("2027-02-25T02:57:40Z".into()),
                dns_names: vec!["shop.demo.test".into(), "www.shop.demo.test".into()],
                issuer: Some("Demo CA".into()),
                fingerprint_sha256: Some("AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89".into()),
                ..Default::default()
            };
            s.conditions.push(Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            });
            c.status = Some(s);
        }
        c
    }

    fn now() -> jiff::Timestamp {
        "2026-11-28T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn ready_line_names_the_secret_and_the_certificate() {
        let text = line(
            &certificate("demo-shop", Some(("True", "Ready", "ok"))),
            &["ca.crt".into(), "tls.crt".into(), "tls.key".into()],
            now(),
        );
        assert!(
            text.contains(
                "certificate demo0001 -> Secret default/demo-shop [ca.crt tls.crt tls.key]"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "shop.demo.test, www.shop.demo.test; expires 2027-02-25T02:57:40Z (in 89d)"
            ),
            "{text}"
        );
        assert!(
            text.contains("issuer Demo CA; sha256 AB:CD:EF:01…23:45:67:89"),
            "{text}"
        );
    }

    #[test]
    fn failing_line_carries_reason_and_message() {
        let text = line(
            &certificate(
                "demo-no-key",
                Some(("False", "KeyMissing", "no private key in the archive")),
            ),
            &[],
            now(),
        );
        assert_eq!(
            text,
            "  demo-no-key    KeyMissing   no private key in the archive"
        );
    }

    #[test]
    fn reporter_prints_changes_once_and_summarizes_when_all_settle() {
        let mut r = Reporter::new(["a".to_string(), "b".to_string()]);
        assert_eq!(r.certificate(&certificate("a", None), now()), None);
        assert_eq!(
            r.certificate(&certificate("a", Some(("Unknown", "Pending", ""))), now()),
            None
        );
        assert!(
            r.certificate(&certificate("a", Some(("True", "Ready", ""))), now())
                .is_some()
        );
        assert_eq!(
            r.certificate(&certificate("a", Some(("True", "Ready", ""))), now()),
            None
        );
        assert_eq!(r.settled(), None);
        assert!(
            r.certificate(&certificate("b", Some(("False", "Expired", "x"))), now())
                .is_some()
        );
        assert_eq!(r.settled(), Some((1, 1)));
        assert_eq!(r.settled(), None, "the summary is printed once");
    }

    #[test]
    fn reporter_follows_a_deleted_secret_until_it_is_back() {
        let mut r = Reporter::new(["a".to_string()]);
        assert_eq!(
            r.secret_written("default", "a", vec!["tls.crt".into()]),
            None
        );
        assert!(
            r.secret_deleted("default", "a")
                .unwrap()
                .contains("was deleted")
        );
        let back = r
            .secret_written("default", "a", vec!["tls.crt".into()])
            .unwrap();
        assert!(back.contains("is back"), "{back}");
        assert_eq!(
            r.secret_written("default", "a", vec!["tls.crt".into()]),
            None
        );
    }
}
