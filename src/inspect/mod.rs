//! `tencent-cert-operator status` / `renew` (and the `kubectl tcert` plugin): one view per TencentCertificate
//! of what is wrong, for a person at a terminal or a script (`-o json`).
//!
//! This module is pure: [`ResourceView::build`] turns a resource, its Secret and its events into the view,
//! [`render_text`] prints it. `cluster` does the Kubernetes calls. Nothing secret reaches the view: of
//! `tls.key` only its type and whether it matches the certificate are shown.

pub mod cluster;
pub mod push;
mod render;

pub use render::{human_duration, render_text};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt as _;
use serde::Serialize;

use crate::crd::{Target, TencentCertificate, TencentCertificateStatus};
use crate::secret;
use crate::status::{CONDITION_READY, CONDITION_SYNCED};
use tencent_ssl::bundle::{self, CertMetadata};

/// Events shown per resource (newest first).
pub const MAX_EVENTS: usize = 8;

/// Everything `status` shows about one TencentCertificate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub namespace: String,
    pub name: String,
    /// The spec's certificate ID, or `domain D`.
    pub target: String,
    pub ready: String,
    pub reason: String,
    pub conditions: Vec<ConditionView>,
    pub secret: SecretView,
    /// Whether the Secret holds what the resource says it should.
    pub checks: Vec<Check>,
    pub resolved_certificate_id: Option<String>,
    pub renewal_chain: Vec<String>,
    pub last_sync_time: Option<String>,
    pub next_sync_time: Option<String>,
    pub failures: u32,
    pub events: Vec<EventView>,
    /// Why events could not be listed (e.g. RBAC), when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub exists: bool,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateView>,
    /// Why no certificate could be read from `tls.crt`, when the Secret exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_error: Option<String>,
}

/// The leaf certificate in the Secret's `tls.crt`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    pub subject: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub issuer: Option<String>,
    pub not_before: String,
    pub not_after: String,
    pub serial_number: String,
    pub fingerprint_sha256: String,
    pub key_type: String,
    /// Certificates in `tls.crt` (leaf and intermediates).
    pub chain_length: usize,
    /// Whether `tls.key` holds the private key of this certificate.
    pub private_key_matches: bool,
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// The latest occurrence (RFC 3339).
    pub time: String,
    pub count: i32,
}

fn condition_view(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> ConditionView {
    ConditionView {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: crate::status::format_time(c.last_transition_time.0),
    }
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

fn count_certificates(pem: &[u8]) -> usize {
    bundle::pem::parse_blocks(pem, 512)
        .map(|blocks| blocks.iter().filter(|b| b.label == "CERTIFICATE").count())
        .unwrap_or(0)
}

/// Reads the Secret's certificate: the full content-based read when `tls.key` matches, else the first
/// certificate of `tls.crt` alone.
fn read_certificate(secret: &Secret, now: jiff::Timestamp) -> Result<CertificateView, String> {
    let crt = secret_bytes(secret, secret::TLS_CERT_KEY)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("no {} in the Secret", secret::TLS_CERT_KEY))?;
    let key = secret_bytes(secret, secret::TLS_PRIVATE_KEY_KEY).unwrap_or_default();
    let (meta, private_key_matches): (CertMetadata, bool) = match bundle::from_pem_entries(&[
        (secret::TLS_CERT_KEY, crt),
        (secret::TLS_PRIVATE_KEY_KEY, key),
    ]) {
        Ok(found) => {
            let leaf = bundle::leaf_metadata(crt);
            // The key matches the first certificate of tls.crt (not merely some certificate in it).
            let matches = leaf
                .as_ref()
                .is_some_and(|l| l.fingerprint_sha256 == found.meta.fingerprint_sha256);
            (leaf.unwrap_or(found.meta), matches)
        }
        Err(_) => (
            bundle::leaf_metadata(crt).ok_or_else(|| {
                format!(
                    "{} holds no certificate that can be read",
                    secret::TLS_CERT_KEY
                )
            })?,
            false,
        ),
    };
    Ok(CertificateView {
        subject: meta.subject_cn.clone().map(|cn| format!("CN={cn}")),
        dns_names: meta.dns_names.clone(),
        ip_addresses: meta.ip_addresses.clone(),
        issuer: meta.issuer_cn.clone().map(|cn| format!("CN={cn}")),
        not_before: crate::status::format_time(meta.not_before),
        not_after: crate::status::format_time(meta.not_after),
        serial_number: meta.serial_hex.clone(),
        fingerprint_sha256: meta.fingerprint_sha256.clone(),
        key_type: meta.key_algorithm.to_string(),
        chain_length: count_certificates(crt),
        private_key_matches,
        expired: meta.is_expired_at(now),
    })
}

/// Whether `pattern` (a SAN, possibly `*.example.com`) covers `domain`.
fn covers(pattern: &str, domain: &str) -> bool {
    let (pattern, domain) = (pattern.to_ascii_lowercase(), domain.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => domain
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == domain,
    }
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn checks(cr: &TencentCertificate, secret: Option<&Secret>, view: &SecretView) -> Vec<Check> {
    let status = cr.status.clone().unwrap_or_default();
    let mut checks = Vec::new();
    let Some(secret) = secret else {
        checks.push(Check {
            check: "secret",
            ok: false,
            detail: format!("Secret {} does not exist", view.name),
        });
        return checks;
    };
    let type_ = view.type_.clone().unwrap_or_default();
    checks.push(Check {
        check: "secret",
        ok: type_ == secret::TLS_SECRET_TYPE,
        detail: format!("Secret {} exists, type {type_}", view.name),
    });
    let owned = secret::is_owned_by(secret, &cr.name_any(), &cr.uid().unwrap_or_default());
    checks.push(Check {
        check: "owner",
        ok: owned,
        detail: if owned {
            "written by this TencentCertificate".to_string()
        } else {
            "not written by this TencentCertificate (no owner reference, no certificate-name label)"
                .to_string()
        },
    });
    let expected_id = status
        .resolved_certificate_id
        .clone()
        .or_else(|| cr.expected_certificate_id());
    if let Some(expected) = expected_id {
        let actual = annotation(secret, secret::CERTIFICATE_ID_ANNOTATION);
        checks.push(Check {
            check: "certificateId",
            ok: actual == Some(expected.as_str()),
            detail: format!(
                "Secret holds certificate {}, the resource resolves to {expected}",
                actual.unwrap_or("(not annotated)")
            ),
        });
    }
    checks.extend(certificate_checks(cr, &status, view));
    checks
}

/// What the certificate in the Secret must be: the one in the status, with its key, valid, covering the
/// domain asked for.
fn certificate_checks(
    cr: &TencentCertificate,
    status: &TencentCertificateStatus,
    view: &SecretView,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(cert) = &view.certificate else {
        checks.push(Check {
            check: "certificate",
            ok: false,
            detail: view
                .certificate_error
                .clone()
                .unwrap_or_else(|| "no certificate".to_string()),
        });
        return checks;
    };
    if let Some(fingerprint) = &status.fingerprint_sha256 {
        checks.push(Check {
            check: "fingerprint",
            ok: *fingerprint == cert.fingerprint_sha256,
            detail: if *fingerprint == cert.fingerprint_sha256 {
                "the certificate is the one in the resource's status".to_string()
            } else {
                format!(
                    "the Secret's certificate {} differs from the status' {fingerprint}",
                    short_fingerprint(&cert.fingerprint_sha256)
                )
            },
        });
    }
    checks.push(Check {
        check: "privateKey",
        ok: cert.private_key_matches,
        detail: if cert.private_key_matches {
            format!("{} matches the certificate", secret::TLS_PRIVATE_KEY_KEY)
        } else {
            format!(
                "{} is missing or is not the certificate's key",
                secret::TLS_PRIVATE_KEY_KEY
            )
        },
    });
    checks.push(Check {
        check: "validity",
        ok: !cert.expired,
        detail: if cert.expired {
            format!("expired at {}", cert.not_after)
        } else {
            format!("valid until {}", cert.not_after)
        },
    });
    if let Target::Domain { domain, .. } = cr.spec.target() {
        let ok = cert.dns_names.iter().any(|san| covers(san, domain));
        checks.push(Check {
            check: "domain",
            ok,
            detail: format!(
                "{domain} {} by the certificate's SANs",
                if ok { "is covered" } else { "is not covered" }
            ),
        });
    }
    checks
}

fn event_time(event: &Event) -> Option<jiff::Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The resource's events, newest first, at most [`MAX_EVENTS`]. `events` may hold other objects' events.
pub fn events_of(cr: &TencentCertificate, events: &[Event]) -> Vec<EventView> {
    let uid = cr.uid();
    let name = cr.name_any();
    let mut mine: Vec<(Option<jiff::Timestamp>, EventView)> = events
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("TencentCertificate")
                    && match (&r.uid, &uid) {
                        (Some(a), Some(b)) => a == b,
                        _ => r.name.as_deref() == Some(name.as_str()),
                    }
            })
        })
        .map(|e| {
            let time = event_time(e);
            (
                time,
                EventView {
                    type_: e.type_.clone().unwrap_or_default(),
                    reason: e.reason.clone().unwrap_or_default(),
                    message: e.note.clone().unwrap_or_default(),
                    time: time.map(crate::status::format_time).unwrap_or_default(),
                    count: e.series.as_ref().map(|s| s.count).unwrap_or(1),
                },
            )
        })
        .collect();
    mine.sort_by_key(|e| std::cmp::Reverse(e.0));
    mine.into_iter().take(MAX_EVENTS).map(|(_, e)| e).collect()
}

impl ResourceView {
    /// The view of `cr`, given its Secret (if it exists) and the events of its namespace.
    pub fn build(
        cr: &TencentCertificate,
        secret: Option<&Secret>,
        events: Result<&[Event], String>,
        now: jiff::Timestamp,
    ) -> Self {
        let status = cr.status.clone().unwrap_or_default();
        let secret_name = cr.secret_name();
        let (certificate, certificate_error) = match secret.map(|s| read_certificate(s, now)) {
            Some(Ok(cert)) => (Some(cert), None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
        let secret_view = SecretView {
            name: secret_name,
            exists: secret.is_some(),
            type_: secret.and_then(|s| s.type_.clone()),
            certificate,
            certificate_error,
        };
        let ready = status.condition(CONDITION_READY);
        let mut conditions: Vec<ConditionView> = [CONDITION_READY, CONDITION_SYNCED]
            .iter()
            .filter_map(|t| status.condition(t))
            .map(condition_view)
            .collect();
        conditions.extend(
            status
                .conditions
                .iter()
                .filter(|c| c.type_ != CONDITION_READY && c.type_ != CONDITION_SYNCED)
                .map(condition_view),
        );
        let (events, events_error) = match events {
            Ok(events) => (events_of(cr, events), None),
            Err(error) => (Vec::new(), Some(error)),
        };
        Self {
            namespace: cr.namespace().unwrap_or_default(),
            name: cr.name_any(),
            target: cr.spec.describe_target(),
            ready: ready.map_or("Unknown", |c| c.status.as_str()).to_string(),
            reason: ready
                .map_or("NotReconciled", |c| c.reason.as_str())
                .to_string(),
            conditions,
            checks: checks(cr, secret, &secret_view),
            secret: secret_view,
            resolved_certificate_id: status.resolved_certificate_id.clone(),
            renewal_chain: status.renewal_chain.clone(),
            last_sync_time: status.last_sync_time.clone(),
            next_sync_time: status.next_sync_time.clone(),
            failures: status.failures,
            events,
            events_error,
        }
    }
}

fn short_fingerprint(hex: &str) -> String {
    hex.get(..16)
        .map_or_else(|| hex.to_string(), |s| format!("{s}…"))
}

#[cfg(test)]
mod tests;
