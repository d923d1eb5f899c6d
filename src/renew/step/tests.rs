use super::*;
use tencent_ssl::apply::{DvAuthMethod, STATUS_ISSUED, STATUS_UNDER_REVIEW, ValidationRecord};
use tencent_ssl::client::CertificateExtra;
use tencent_ssl::renewal::order::ClusterSwitch;

const NOW: &str = "2026-12-02T00:00:00Z";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

fn spec(validation: &str) -> RenewalSpec {
    serde_json::from_value(serde_json::json!({"apply": "Free", "validation": validation})).unwrap()
}

fn served(ends_in_days: i64, renew_order: Option<&str>) -> OrderDetail {
    OrderDetail {
        certificate_id: "old1".into(),
        status: Some(STATUS_ISSUED),
        package_type: Some("83".into()),
        domain: Some("shop.example.com".into()),
        not_after: Some(at(NOW) + days(ends_in_days)),
        extra: CertificateExtra {
            renew_order: renew_order.map(String::from),
            ..CertificateExtra::default()
        },
        ..OrderDetail::default()
    }
}

fn order(status: i64, records: Vec<ValidationRecord>) -> OrderDetail {
    OrderDetail {
        certificate_id: "new1".into(),
        status: Some(status),
        package_type: Some("83".into()),
        verify_type: Some("DNS".into()),
        domain: Some("shop.example.com".into()),
        extra: CertificateExtra {
            origin_certificate_id: Some("old1".into()),
            ..CertificateExtra::default()
        },
        validation: records,
        ..OrderDetail::default()
    }
}

fn seen(served: OrderDetail, order: Option<OrderDetail>, default_credentials: bool) -> Gathered {
    Gathered::Seen(Box::new(Seen {
        settings: spec("DNS").settings().unwrap(),
        default_credentials,
        credentials: Credentials::new("AKIDstepTEST000001", "step-test-key", None).unwrap(),
        served: Arc::new(served),
        order: order.map(Arc::new),
    }))
}

fn asked<'a>(spec: &'a RenewalSpec, previous: Option<&'a RenewalStatus>) -> Asked<'a> {
    Asked {
        spec: Some(spec),
        previous,
        served_id: Some("old1"),
        not_after: Some(at(NOW) + days(20)),
        generation: 1,
    }
}

#[test]
fn a_free_certificate_in_its_window_is_applied_for_and_the_application_recorded() {
    let spec = spec("DNS");
    let asked = asked(&spec, None);
    let plan = plan(
        &asked,
        &seen(served(20, None), None, false),
        ClusterSwitch::default(),
        at(NOW),
    );
    assert!(
        matches!(plan, Plan::Decided(Decision::Apply { ref old_certificate_id, method: DvAuthMethod::Dns, .. }) if old_certificate_id == "old1"),
        "{plan:?}"
    );
    let outcome = Ok(RenewalOrder::Applied(tencent_ssl::apply::Applied {
        certificate_id: "new1".into(),
        request_id: "r".into(),
    }));
    let acted = Acted {
        recorded: order::record_outcome("old1", &outcome, 1, at(NOW)),
        report: Report::applied("old1", "new1", DvAuthMethod::Dns),
        result: order::metric_result(&outcome),
    };
    let status = status(&asked, &plan, Some(&acted), at(NOW)).unwrap();
    assert_eq!(status.phase, "Applied");
    assert_eq!(status.order_id.as_deref(), Some("new1"));
    let told = events(None, Some(&status));
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].reason, "RenewalApplied");
    // Waiting for the order: the poll brings it back; the waiting gauge starts.
    assert_eq!(
        requeue(&plan, Some(&status), Duration::from_secs(60), at(NOW)),
        Some(Duration::from_secs(60))
    );
    let signals = signals(&plan, Some(&status));
    assert_eq!(signals.waiting_since, Some(at(NOW)));
    assert!(!signals.in_window_without_order);
}

#[test]
fn the_default_credentials_and_a_forbidding_cluster_never_apply() {
    let spec = spec("DNS_AUTO");
    let asked = asked(&spec, None);
    for (switch, default) in [
        (ClusterSwitch::OwnCredentialsOnly, true),
        (ClusterSwitch::Forbid, false),
    ] {
        let plan = plan(
            &asked,
            &seen(served(20, None), None, default),
            switch,
            at(NOW),
        );
        assert!(matches!(plan, Plan::Decided(Decision::Skip(_))), "{plan:?}");
        let status = status(&asked, &plan, None, at(NOW)).unwrap();
        assert_eq!(status.phase, PHASE_NOT_APPLICABLE);
        assert!(status.recorded().is_none());
        assert!(!signals(&plan, Some(&status)).in_window_without_order);
    }
    let allowed = plan(
        &asked,
        &seen(served(20, None), None, true),
        ClusterSwitch::Allow,
        at(NOW),
    );
    assert!(matches!(allowed, Plan::Decided(Decision::Apply { .. })));
}

#[test]
fn an_order_waiting_for_dns_shows_the_record_once_and_its_issue_is_downloaded() {
    let spec = spec("DNS");
    let applied = RenewalStatus::from(RenewalStatusFields {
        old_certificate_id: "old1".into(),
        order_id: Some("new1".into()),
        phase: "Applied".into(),
        since: "2026-12-01T23:00:00Z".into(),
        observed_generation: 1,
        code: None,
        message: String::new(),
    });
    let asked = asked(&spec, Some(&applied));
    let record = ValidationRecord {
        key: "_dnsauth.shop.example.com".into(),
        value: "20261202abc".into(),
        record_type: Some("TXT".into()),
        ..ValidationRecord::default()
    };
    let waiting = plan(
        &asked,
        &seen(
            served(20, Some("new1")),
            Some(order(STATUS_UNDER_REVIEW, vec![record])),
            false,
        ),
        ClusterSwitch::default(),
        at(NOW),
    );
    assert_eq!(waiting.issued_order(Some("old1")), None);
    let waited = status(&asked, &waiting, None, at(NOW)).unwrap();
    assert_eq!(waited.phase, "AwaitingValidation");
    // The order's first sight stays its start, for the alert on orders waiting too long.
    assert_eq!(waited.since, "2026-12-01T23:00:00Z");
    assert!(
        waited.message.contains(
            "create the DNS record TXT _dnsauth.shop.example.com with the value \"20261202abc\""
        ),
        "{}",
        waited.message
    );
    let told = events(Some(&applied), Some(&waited));
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].reason, "RenewalAwaitingValidation");
    assert_eq!(told[0].type_, EventType::Warning);
    assert!(events(Some(&waited), Some(&waited)).is_empty());
    let issued = plan(
        &asked,
        &seen(
            served(20, Some("new1")),
            Some(order(STATUS_ISSUED, vec![])),
            false,
        ),
        ClusterSwitch::default(),
        at(NOW),
    );
    assert_eq!(issued.issued_order(Some("old1")), Some("new1"));
    assert_eq!(issued.issued_order(Some("new1")), None);
    let done = status(&asked, &issued, None, at(NOW)).unwrap();
    assert_eq!(done.phase, "Issued");
    assert_eq!(
        events(Some(&waited), Some(&done))[0].reason,
        "RenewalIssued"
    );
    assert_eq!(
        requeue(&issued, Some(&done), Duration::from_secs(60), at(NOW)),
        None
    );
}

#[test]
fn a_refusal_is_kept_with_tencents_words_and_not_applied_again() {
    let spec = spec("DNS_AUTO");
    let err = tencent_ssl::TencentError::Api {
        action: "ApplyCertificate".into(),
        code: "FailedOperation.InvalidParam".into(),
        message: "the domain is not on DNSPod".into(),
        request_id: "r".into(),
    };
    let outcome = Err(ApplyError::Refused(err.clone()));
    let acted = Acted {
        recorded: order::record_outcome("old1", &outcome, 1, at(NOW)),
        report: Report::refused("old1", err.code(), &refusal_text(&err)),
        result: order::metric_result(&outcome),
    };
    assert_eq!(acted.result, "refused");
    let first = plan(
        &asked(&spec, None),
        &seen(served(20, None), None, false),
        ClusterSwitch::default(),
        at(NOW),
    );
    let refused = status(&asked(&spec, None), &first, Some(&acted), at(NOW)).unwrap();
    assert_eq!(refused.phase, "Refused");
    assert_eq!(
        refused.code.as_deref(),
        Some("FailedOperation.InvalidParam")
    );
    assert!(
        refused.message.contains("the domain is not on DNSPod"),
        "{}",
        refused.message
    );
    // The next reconcile, same spec: no application, the record stays word for word, no new event.
    let asked = asked(&spec, Some(&refused));
    let again = plan(
        &asked,
        &seen(served(20, None), None, false),
        ClusterSwitch::default(),
        at(NOW),
    );
    assert!(
        matches!(again, Plan::Decided(Decision::Refused { .. })),
        "{again:?}"
    );
    let kept = status(&asked, &again, None, at(NOW));
    assert_eq!(kept.as_ref(), Some(&refused));
    assert!(events(Some(&refused), kept.as_ref()).is_empty());
    assert_eq!(
        requeue(&again, kept.as_ref(), Duration::from_secs(60), at(NOW)),
        None
    );
    assert!(signals(&again, kept.as_ref()).in_window_without_order);
    // A spec change lets a new application go.
    let mut changed = asked;
    changed.generation = 2;
    let after_edit = plan(
        &changed,
        &seen(served(20, None), None, false),
        ClusterSwitch::default(),
        at(NOW),
    );
    assert!(matches!(after_edit, Plan::Decided(Decision::Apply { .. })));
}

#[test]
fn before_the_window_status_says_when_and_a_record_of_the_served_renewal_stays() {
    let spec = spec("DNS_AUTO");
    let later = Plan::Later {
        at: at(NOW) + days(60),
    };
    let scheduled = status(&asked(&spec, None), &later, None, at(NOW)).unwrap();
    assert_eq!(scheduled.phase, PHASE_SCHEDULED);
    assert_eq!(events(None, Some(&scheduled))[0].reason, "RenewalScheduled");
    assert_eq!(
        requeue(&later, Some(&scheduled), Duration::from_secs(60), at(NOW)),
        Some(Duration::from_secs(60 * 24 * 3600))
    );
    let issued = RenewalStatus::from(RenewalStatusFields {
        old_certificate_id: "old0".into(),
        order_id: Some("old1".into()),
        phase: "Issued".into(),
        since: NOW.into(),
        observed_generation: 1,
        code: None,
        message: "renewal old1 of old0 is issued".into(),
    });
    assert_eq!(
        status(&asked(&spec, Some(&issued)), &later, None, at(NOW)).as_ref(),
        Some(&issued)
    );
    assert_eq!(
        status(&asked(&spec, Some(&issued)), &Plan::Idle, None, at(NOW)).as_ref(),
        Some(&issued)
    );
}
