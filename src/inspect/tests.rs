use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use super::*;
use crate::crd::{TencentCertificate, TencentCertificateStatus};
use crate::secret::SecretParams;
use tencent_sim::pki::{KeyKind, LeafSpec, Pki};
use tencent_ssl::bundle::CertBundle;

const UID: &str = "0b7e7e0e-5a3c-4c3f-9a59-3b5a7c6f1d10";

struct Fixture {
    bundle: CertBundle,
    other_key_pem: String,
}

fn fixture() -> Fixture {
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let leaf = pki
        .issue_leaf(&LeafSpec::valid_now(
            &["shop.example.test", "*.shop.example.test"],
            KeyKind::EcdsaP256,
        ))
        .unwrap();
    let other = pki
        .issue_leaf(&LeafSpec::valid_now(
            &["other.example.test"],
            KeyKind::EcdsaP256,
        ))
        .unwrap();
    let chain = format!("{}{}", leaf.cert_pem, pki.intermediate.cert_pem);
    let bundle = tencent_ssl::bundle::from_pem_entries(&[
        ("tls.crt", chain.as_bytes()),
        ("tls.key", leaf.key_pem.as_bytes()),
    ])
    .unwrap();
    Fixture {
        bundle,
        other_key_pem: other.key_pem,
    }
}

fn resource(
    spec: serde_json::Value,
    status: Option<TencentCertificateStatus>,
) -> TencentCertificate {
    let mut cr = TencentCertificate::new("shop", serde_json::from_value(spec).unwrap());
    cr.metadata.namespace = Some("web".into());
    cr.metadata.uid = Some(UID.into());
    cr.metadata.generation = Some(1);
    cr.status = status;
    cr
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time("2026-01-01T00:00:00Z".parse().unwrap()),
        observed_generation: Some(1),
    }
}

fn ready_status(bundle: &CertBundle) -> TencentCertificateStatus {
    TencentCertificateStatus {
        conditions: vec![
            condition(
                "Synced",
                "True",
                "Synced",
                "downloaded certificate aBcD1234",
            ),
            condition(
                "Ready",
                "True",
                "Ready",
                "Secret shop holds certificate aBcD1234",
            ),
        ],
        observed_generation: Some(1),
        certificate_id: Some("aBcD1234".into()),
        resolved_certificate_id: Some("aBcD1234".into()),
        fingerprint_sha256: Some(bundle.meta.fingerprint_sha256.clone()),
        last_sync_time: Some("2026-01-01T00:00:00Z".into()),
        next_sync_time: Some("2026-01-01T01:00:00Z".into()),
        ..TencentCertificateStatus::default()
    }
}

fn written_secret(bundle: &CertBundle) -> Secret {
    crate::secret::desired(
        &SecretParams {
            namespace: "web".into(),
            name: "shop".into(),
            certificate_name: "shop".into(),
            certificate_id: "aBcD1234".into(),
            owner: None,
            template_labels: BTreeMap::new(),
            template_annotations: BTreeMap::new(),
            include_ca: true,
            outputs: Default::default(),
        },
        bundle,
    )
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn failed(view: &ResourceView) -> Vec<&'static str> {
    view.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.check)
        .collect()
}

#[test]
fn a_ready_resource_shows_its_certificate_and_passes_every_check() {
    let f = fixture();
    let cr = resource(
        serde_json::json!({"certificateId": "aBcD1234"}),
        Some(ready_status(&f.bundle)),
    );
    let secret = written_secret(&f.bundle);
    let view = ResourceView::build(&cr, Some(&secret), Ok(&[]), now());
    assert_eq!(
        (view.ready.as_str(), view.reason.as_str()),
        ("True", "Ready")
    );
    assert!(failed(&view).is_empty(), "{:#?}", view.checks);
    let names: Vec<_> = view.checks.iter().map(|c| c.check).collect();
    assert_eq!(
        names,
        [
            "secret",
            "owner",
            "certificateId",
            "fingerprint",
            "privateKey",
            "validity"
        ]
    );
    let cert = view.secret.certificate.as_ref().unwrap();
    assert_eq!(cert.subject.as_deref(), Some("CN=shop.example.test"));
    assert_eq!(cert.dns_names, ["shop.example.test", "*.shop.example.test"]);
    assert_eq!(cert.fingerprint_sha256, f.bundle.meta.fingerprint_sha256);
    assert_eq!(cert.key_type, "ECDSA-P256");
    assert_eq!(cert.chain_length, 2);
    assert!(cert.private_key_matches && !cert.expired);
    // Ready first, then Synced, whatever their order in the status.
    let types: Vec<_> = view.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Synced"]);

    let text = render_text(std::slice::from_ref(&view), now());
    for expected in [
        "TencentCertificate web/shop: Ready=True (Ready)",
        "Subject:     CN=shop.example.test",
        "SANs:        shop.example.test, *.shop.example.test",
        &format!("SHA-256:     {}", f.bundle.meta.fingerprint_sha256),
        "Key:         ECDSA-P256, tls.key matches; chain of 2 certificate(s)",
        "ok   privateKey",
        "Secret shop holds certificate aBcD1234",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
}

#[test]
fn no_private_key_material_in_the_text_or_json_view() {
    let f = fixture();
    let cr = resource(
        serde_json::json!({"certificateId": "aBcD1234"}),
        Some(ready_status(&f.bundle)),
    );
    let secret = written_secret(&f.bundle);
    let view = ResourceView::build(&cr, Some(&secret), Ok(&[]), now());
    let text = render_text(std::slice::from_ref(&view), now());
    let json = serde_json::to_string(&view).unwrap();
    let key_body: Vec<&str> = f
        .bundle
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_body.is_empty());
    for output in [&text, &json] {
        assert!(!output.contains("PRIVATE KEY"), "{output}");
        for line in &key_body {
            assert!(!output.contains(line), "key material in {output}");
        }
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_flagged_and_the_certificate_still_shown() {
    let f = fixture();
    let cr = resource(
        serde_json::json!({"certificateId": "aBcD1234"}),
        Some(ready_status(&f.bundle)),
    );
    let mut secret = written_secret(&f.bundle);
    secret
        .data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), ByteString(f.other_key_pem.into_bytes()));
    let view = ResourceView::build(&cr, Some(&secret), Ok(&[]), now());
    assert_eq!(failed(&view), ["privateKey"]);
    let cert = view.secret.certificate.as_ref().unwrap();
    assert_eq!(cert.fingerprint_sha256, f.bundle.meta.fingerprint_sha256);
    assert!(render_text(&[view], now()).contains("tls.key does NOT match"));
}

#[test]
fn a_secret_of_someone_else_with_another_certificate_fails_owner_id_and_fingerprint() {
    let f = fixture();
    let mut status = ready_status(&f.bundle);
    status.fingerprint_sha256 = Some("00".repeat(32));
    status.resolved_certificate_id = Some("NeWiD001".into());
    let cr = resource(
        serde_json::json!({"certificateId": "aBcD1234"}),
        Some(status),
    );
    let mut secret = written_secret(&f.bundle);
    secret.metadata.labels = None;
    let view = ResourceView::build(&cr, Some(&secret), Ok(&[]), now());
    assert_eq!(failed(&view), ["owner", "certificateId", "fingerprint"]);
    let id_check = view
        .checks
        .iter()
        .find(|c| c.check == "certificateId")
        .unwrap();
    assert_eq!(
        id_check.detail,
        "Secret holds certificate aBcD1234, the resource resolves to NeWiD001"
    );
}

#[test]
fn a_missing_secret_and_an_unreconciled_resource() {
    let cr = resource(serde_json::json!({"certificateId": "demoNoKey1"}), None);
    let view = ResourceView::build(&cr, None, Ok(&[]), now());
    assert_eq!(
        (view.ready.as_str(), view.reason.as_str()),
        ("Unknown", "NotReconciled")
    );
    assert_eq!(failed(&view), ["secret"]);
    let text = render_text(&[view], now());
    assert!(
        text.contains("(none yet: the operator has not reconciled it)"),
        "{text}"
    );
    assert!(
        text.contains("FAIL secret        Secret shop does not exist"),
        "{text}"
    );
}

#[test]
fn an_expired_certificate_fails_validity() {
    let f = fixture();
    let cr = resource(
        serde_json::json!({"certificateId": "aBcD1234"}),
        Some(ready_status(&f.bundle)),
    );
    let secret = written_secret(&f.bundle);
    let later = f
        .bundle
        .meta
        .not_after
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let view = ResourceView::build(&cr, Some(&secret), Ok(&[]), later);
    assert_eq!(failed(&view), ["validity"]);
    assert!(view.secret.certificate.as_ref().unwrap().expired);
    assert!(render_text(&[view], later).contains("EXPIRED"));
}

#[test]
fn a_domain_resource_checks_the_sans_cover_it() {
    let f = fixture();
    let mut status = ready_status(&f.bundle);
    status.certificate_id = None;
    let secret = written_secret(&f.bundle);
    let covered = resource(
        serde_json::json!({"domain": "api.shop.example.test"}),
        Some(status.clone()),
    );
    let view = ResourceView::build(&covered, Some(&secret), Ok(&[]), now());
    assert!(failed(&view).is_empty(), "{:#?}", view.checks);
    assert_eq!(view.target, "domain api.shop.example.test");
    let uncovered = resource(
        serde_json::json!({"domain": "a.b.shop.example.test"}),
        Some(status),
    );
    let view = ResourceView::build(&uncovered, Some(&secret), Ok(&[]), now());
    assert_eq!(failed(&view), ["domain"]);
}

#[test]
fn wildcards_cover_one_label_only() {
    assert!(covers("*.example.test", "www.example.test"));
    assert!(covers("WWW.example.test", "www.EXAMPLE.test"));
    assert!(!covers("*.example.test", "example.test"));
    assert!(!covers("*.example.test", "a.b.example.test"));
    assert!(!covers("www.example.test", "api.example.test"));
}

fn event(uid: &str, kind: &str, reason: &str, at: &str, count: Option<i32>) -> Event {
    let time: jiff::Timestamp = at.parse().unwrap();
    Event {
        regarding: Some(ObjectReference {
            kind: Some(kind.into()),
            name: Some("shop".into()),
            namespace: Some("web".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }),
        reason: Some(reason.into()),
        note: Some(format!("note {reason}")),
        type_: Some("Normal".into()),
        event_time: Some(MicroTime(time)),
        series: count.map(|count| EventSeries {
            count,
            last_observed_time: MicroTime(time),
        }),
        ..Event::default()
    }
}

#[test]
fn events_are_the_resources_own_newest_first_and_bounded() {
    let cr = resource(serde_json::json!({"certificateId": "aBcD1234"}), None);
    let mut events = vec![
        event(
            UID,
            "TencentCertificate",
            "SecretCreated",
            "2026-01-01T00:00:00Z",
            None,
        ),
        event(
            UID,
            "TencentCertificate",
            "Renewed",
            "2026-01-02T00:00:00Z",
            Some(3),
        ),
        // The same name but another kind, and a deleted namesake (another uid): not ours.
        event(UID, "Secret", "Other", "2026-01-03T00:00:00Z", None),
        event(
            "another-uid",
            "TencentCertificate",
            "Stale",
            "2026-01-03T00:00:00Z",
            None,
        ),
    ];
    let view = events_of(&cr, &events);
    let reasons: Vec<_> = view.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Renewed", "SecretCreated"]);
    assert_eq!(view[0].count, 3);
    assert_eq!(view[0].time, "2026-01-02T00:00:00Z");
    for day in 10..30 {
        events.push(event(
            UID,
            "TencentCertificate",
            "Synced",
            &format!("2026-01-{day}T00:00:00Z"),
            None,
        ));
    }
    let view = events_of(&cr, &events);
    assert_eq!(view.len(), MAX_EVENTS);
    assert_eq!(view[0].time, "2026-01-29T00:00:00Z");
}

#[test]
fn events_that_cannot_be_listed_say_why() {
    let cr = resource(serde_json::json!({"certificateId": "aBcD1234"}), None);
    let view = ResourceView::build(
        &cr,
        None,
        Err("events.events.k8s.io is forbidden".into()),
        now(),
    );
    assert!(
        render_text(&[view], now())
            .contains("cannot list events: events.events.k8s.io is forbidden")
    );
}

#[test]
fn durations_read_at_a_glance() {
    assert_eq!(human_duration(42), "42s");
    assert_eq!(human_duration(-300), "5m");
    assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
    assert_eq!(human_duration(90 * 86400), "90d");
}
