use super::*;
use crate::apply::{Applied, ApplyError, RenewalOrder, STATUS_FAILED, STATUS_UNDER_REVIEW};
use crate::client::CertificateExtra;
use crate::error::TencentError;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

const NOW: &str = "2026-12-02T00:00:00Z";

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// A free, issued certificate ending `ends_in_days` after NOW.
fn served(ends_in_days: i64) -> OrderDetail {
    OrderDetail {
        certificate_id: "old1".into(),
        status: Some(STATUS_ISSUED),
        package_type: Some("83".into()),
        domain: Some("shop.example.com".into()),
        not_before: Some(at(NOW) - days(70)),
        not_after: Some(at(NOW) + days(ends_in_days)),
        ..OrderDetail::default()
    }
}

fn order(id: &str, status: i64, origin: &str) -> OrderDetail {
    OrderDetail {
        certificate_id: id.into(),
        status: Some(status),
        package_type: Some("83".into()),
        domain: Some("shop.example.com".into()),
        extra: CertificateExtra {
            origin_certificate_id: Some(origin.into()),
            ..CertificateExtra::default()
        },
        ..OrderDetail::default()
    }
}

const SETTINGS: RenewalSettings = RenewalSettings {
    before: SignedDuration::from_hours(24 * 30),
    method: DvAuthMethod::DnsAuto,
};

fn observed<'a>(served: &'a OrderDetail) -> Observed<'a> {
    Observed {
        settings: Some(&SETTINGS),
        cluster: ClusterSwitch::Allow,
        default_credentials: false,
        served,
        recorded: None,
        order: None,
        generation: 1,
        now: at(NOW),
    }
}

fn recorded(phase: Phase, order_id: Option<&str>, generation: i64) -> RecordedOrder {
    RecordedOrder {
        old_certificate_id: "old1".into(),
        order_id: order_id.map(String::from),
        phase,
        since: at(NOW) - SignedDuration::from_mins(5),
        generation,
        code: None,
    }
}

#[test]
fn a_free_certificate_inside_the_window_with_nothing_known_is_applied_for_once() {
    let served = served(20);
    assert_eq!(
        decide(&observed(&served)),
        Decision::Apply {
            old_certificate_id: "old1".into(),
            domain: "shop.example.com".into(),
            method: DvAuthMethod::DnsAuto,
        }
    );
}

#[test]
fn before_the_window_the_decision_waits_for_its_start() {
    let served = served(45);
    assert_eq!(
        decide(&observed(&served)),
        Decision::NotYet {
            at: at(NOW) + days(15)
        }
    );
    // A shorter lead moves the start; a longer one is capped at Tencent's 30 days.
    let settings = RenewalSettings {
        before: days(10),
        ..SETTINGS
    };
    let served20 = self::served(20);
    let mut input = observed(&served20);
    input.settings = Some(&settings);
    assert_eq!(
        decide(&input),
        Decision::NotYet {
            at: at(NOW) + days(10)
        }
    );
    let eager = RenewalSettings {
        before: days(60),
        ..SETTINGS
    };
    input.settings = Some(&eager);
    let served45 = self::served(45);
    input.served = &served45;
    assert_eq!(
        decide(&input),
        Decision::NotYet {
            at: at(NOW) + days(15)
        }
    );
}

#[test]
fn paid_uploaded_off_and_forbidden_are_never_applied_for() {
    let mut paid = served(20);
    paid.package_type = Some("2".into());
    assert!(matches!(
        decide(&observed(&paid)),
        Decision::Skip(Skip::NotFree { .. })
    ));
    let mut vip = served(20);
    vip.is_vip = Some(true);
    assert!(matches!(
        decide(&observed(&vip)),
        Decision::Skip(Skip::NotFree { .. })
    ));
    let mut uploaded = served(20);
    uploaded.package_type = None;
    assert!(matches!(
        decide(&observed(&uploaded)),
        Decision::Skip(Skip::NotFree { .. })
    ));
    let free = served(20);
    let mut off = observed(&free);
    off.settings = None;
    assert_eq!(decide(&off), Decision::Skip(Skip::Off));
    let mut forbidden = observed(&free);
    forbidden.cluster = ClusterSwitch::Forbid;
    assert_eq!(decide(&forbidden), Decision::Skip(Skip::ForbiddenByCluster));
}

#[test]
fn the_default_credentials_apply_only_when_the_admin_allows_it() {
    let free = served(20);
    let mut input = observed(&free);
    input.default_credentials = true;
    input.cluster = ClusterSwitch::OwnCredentialsOnly;
    assert_eq!(decide(&input), Decision::Skip(Skip::DefaultCredentials));
    input.cluster = ClusterSwitch::Allow;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
    input.default_credentials = false;
    input.cluster = ClusterSwitch::OwnCredentialsOnly;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
}

#[test]
fn expired_or_unissued_certificates_are_not_applied_for() {
    let expired = served(-1);
    assert!(matches!(
        decide(&observed(&expired)),
        Decision::Skip(Skip::NotRenewable { .. })
    ));
    let mut pending = served(20);
    pending.status = Some(STATUS_UNDER_REVIEW);
    assert!(matches!(
        decide(&observed(&pending)),
        Decision::Skip(Skip::NotRenewable { .. })
    ));
}

#[test]
fn a_renewal_tencent_already_shows_is_adopted_not_applied_for() {
    // Linked from the old certificate.
    let mut linked = served(20);
    linked.extra.renew_order = Some("new1".into());
    let mut pending = order("new1", STATUS_DNS_AUTO, "");
    pending.extra.origin_certificate_id = None;
    let mut input = observed(&linked);
    input.order = Some(&pending);
    assert_eq!(
        decide(&input),
        Decision::Track {
            old_certificate_id: "old1".into(),
            order_id: "new1".into(),
            state: OrderState::Applied,
            adopted: true,
        }
    );
    // Or naming the old one as its origin.
    let plain = served(20);
    let issued = order("new2", STATUS_ISSUED, "old1");
    let mut input = observed(&plain);
    input.order = Some(&issued);
    assert!(matches!(
        decide(&input),
        Decision::Track {
            state: OrderState::Issued,
            adopted: true,
            ..
        }
    ));
}

#[test]
fn a_recorded_order_is_tracked_and_never_applied_for_again() {
    let served = served(20);
    let record = recorded(Phase::Applied, Some("new1"), 1);
    let pending = order("new1", STATUS_DNS_AUTO, "old1");
    let mut input = observed(&served);
    input.recorded = Some(&record);
    input.order = Some(&pending);
    assert_eq!(
        decide(&input),
        Decision::Track {
            old_certificate_id: "old1".into(),
            order_id: "new1".into(),
            state: OrderState::Applied,
            adopted: false,
        }
    );
    // A restart, a leader change, a spec edit: still tracked, never a second application.
    input.generation = 7;
    assert!(matches!(decide(&input), Decision::Track { .. }));
    // Tencent no longer shows it: reported as ended, not applied for again while the spec is the same.
    input.generation = 1;
    input.order = None;
    assert!(matches!(
        decide(&input),
        Decision::Track {
            state: OrderState::Failed { .. },
            ..
        }
    ));
}

#[test]
fn an_order_not_linked_to_the_served_certificate_is_never_trusted() {
    // A status edited to name someone else's certificate: Tencent does not link it to old1.
    let served = served(20);
    let record = recorded(Phase::Applied, Some("other9"), 1);
    let foreign = order("other9", STATUS_ISSUED, "someone");
    let mut input = observed(&served);
    input.recorded = Some(&record);
    input.order = Some(&foreign);
    let decision = decide(&input);
    assert!(
        !matches!(&decision, Decision::Track { order_id, .. } if order_id == "other9"),
        "{decision:?}"
    );
    // The served certificate itself is never its own renewal.
    let itself = order("old1", STATUS_ISSUED, "old1");
    input.recorded = None;
    input.order = Some(&itself);
    assert!(matches!(decide(&input), Decision::Apply { .. }));
}

#[test]
fn a_refusal_holds_until_the_spec_or_the_certificate_changes() {
    let served = served(20);
    let mut record = recorded(Phase::Refused, None, 1);
    record.code = Some("FailedOperation.ExceedsFreeLimit".into());
    let mut input = observed(&served);
    input.recorded = Some(&record);
    assert_eq!(
        decide(&input),
        Decision::Refused {
            old_certificate_id: "old1".into(),
            code: Some("FailedOperation.ExceedsFreeLimit".into()),
        }
    );
    // Hours later, same spec: still held.
    input.now = at(NOW) + days(2);
    assert!(matches!(decide(&input), Decision::Refused { .. }));
    // The spec changed: one new application.
    input.generation = 2;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
    // The served certificate changed (another id): the record is not about it.
    input.generation = 1;
    let mut other = self::served(20);
    other.certificate_id = "old2".into();
    input.served = &other;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
}

#[test]
fn a_failed_order_holds_like_a_refusal() {
    let served = served(20);
    let record = recorded(Phase::AwaitingValidation, Some("new1"), 1);
    let mut failed = order("new1", STATUS_FAILED, "old1");
    failed.status_msg = Some("域名验证超时，订单自动关闭".into());
    let mut input = observed(&served);
    input.recorded = Some(&record);
    input.order = Some(&failed);
    assert_eq!(
        decide(&input),
        Decision::Track {
            old_certificate_id: "old1".into(),
            order_id: "new1".into(),
            state: OrderState::Failed {
                reason: "域名验证超时，订单自动关闭".into()
            },
            adopted: false,
        }
    );
    input.generation = 2;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
}

#[test]
fn an_unconfirmed_application_is_only_looked_for_during_the_hold() {
    let served = served(20);
    let record = recorded(Phase::Unconfirmed, None, 1);
    let mut input = observed(&served);
    input.recorded = Some(&record);
    let until = record.since + UNCONFIRMED_HOLD;
    assert_eq!(
        decide(&input),
        Decision::Unconfirmed {
            old_certificate_id: "old1".into(),
            until
        }
    );
    // The order shows up: tracked (adopted, its id was not known).
    let found = order("new1", STATUS_DNS_AUTO, "old1");
    input.order = Some(&found);
    assert!(matches!(
        decide(&input),
        Decision::Track { adopted: true, .. }
    ));
    // Nothing shows during the hold: after it, one more application may go.
    input.order = None;
    input.now = until;
    assert!(matches!(decide(&input), Decision::Apply { .. }));
}

#[test]
fn the_lookup_names_the_recorded_order_then_tencents_link() {
    let mut served = served(20);
    assert_eq!(order_to_look_up(&served, None), None);
    served.extra.renew_order = Some("new1".into());
    assert_eq!(order_to_look_up(&served, None), Some("new1"));
    let record = recorded(Phase::Applied, Some("new2"), 1);
    assert_eq!(order_to_look_up(&served, Some(&record)), Some("new2"));
    let mut stale = record.clone();
    stale.old_certificate_id = "older".into();
    assert_eq!(order_to_look_up(&served, Some(&stale)), Some("new1"));
}

#[test]
fn order_states_follow_tencents_status() {
    let mut dns = order("new1", STATUS_UNDER_REVIEW, "old1");
    dns.verify_type = Some("DNS".into());
    assert_eq!(OrderState::of(&dns), OrderState::Applied);
    dns.validation = vec![ValidationRecord {
        key: "_dnsauth.shop.example.com".into(),
        value: "abc".into(),
        record_type: Some("TXT".into()),
        ..ValidationRecord::default()
    }];
    assert!(matches!(
        OrderState::of(&dns),
        OrderState::AwaitingValidation {
            method: Some(DvAuthMethod::Dns),
            ..
        }
    ));
    let mut auto = dns.clone();
    auto.verify_type = Some("DNS_AUTO".into());
    assert_eq!(OrderState::of(&auto), OrderState::Applied);
    let mut cancelled = dns.clone();
    cancelled.status = Some(7);
    cancelled.status_name = Some("已取消".into());
    assert_eq!(
        OrderState::of(&cancelled),
        OrderState::Failed {
            reason: "已取消".into()
        }
    );
    assert_eq!(
        OrderState::of(&order("x", STATUS_ISSUED, "old1")),
        OrderState::Issued
    );
}

#[test]
fn reports_say_where_the_order_is_and_what_to_create() {
    let dns = Report::order(
        "old1",
        "new1",
        &OrderState::AwaitingValidation {
            method: Some(DvAuthMethod::Dns),
            records: vec![ValidationRecord {
                key: "_dnsauth.shop.example.com".into(),
                value: "2026abc".into(),
                record_type: Some("TXT".into()),
                ..ValidationRecord::default()
            }],
        },
    );
    assert_eq!(dns.reason, "RenewalAwaitingValidation");
    assert!(dns.warning);
    assert_eq!(
        dns.message,
        "renewal new1 of old1 waits for domain validation: create the DNS record TXT \
         _dnsauth.shop.example.com with the value \"2026abc\""
    );
    let file = Report::order(
        "old1",
        "new1",
        &OrderState::AwaitingValidation {
            method: Some(DvAuthMethod::File),
            records: vec![ValidationRecord {
                key: "fileauth.txt".into(),
                value: "2026xyz".into(),
                domain: Some("shop.example.com".into()),
                record_type: Some("FILE".into()),
                path: Some("/.well-known/pki-validation".into()),
                sub_domain: None,
            }],
        },
    );
    assert_eq!(
        file.message,
        "renewal new1 of old1 waits for domain validation: serve the file \
         /.well-known/pki-validation/fileauth.txt with the content \"2026xyz\" on shop.example.com"
    );
    let applied = Report::applied("old1", "new1", DvAuthMethod::DnsAuto);
    assert_eq!(applied.reason, "RenewalApplied");
    assert_eq!(
        applied.message,
        "applied for the renewal of old1: order new1, validated by DNS_AUTO"
    );
    let issued = Report::order("old1", "new1", &OrderState::Issued);
    assert_eq!(
        (issued.reason, issued.message.as_str(), issued.warning),
        ("RenewalIssued", "renewal new1 of old1 is issued", false)
    );
    let failed = Report::order(
        "old1",
        "new1",
        &OrderState::Failed {
            reason: "CA审核失败".into(),
        },
    );
    assert_eq!(failed.reason, "RenewalFailed");
    assert!(failed.message.contains("failed: CA审核失败"));
    let refused = Report::refused(
        "old1",
        Some("FailedOperation.ExceedsFreeLimit"),
        "免费证书数量超出限制。",
    );
    assert_eq!(
        refused.message,
        "Tencent refused to renew old1: FailedOperation.ExceedsFreeLimit: 免费证书数量超出限制。; \
         no new application until the spec or the certificate changes"
    );
    assert_eq!(
        Report::of(&Decision::Skip(Skip::NotFree {
            package_type: Some("2".into())
        }))
        .unwrap()
        .reason,
        "RenewalNotApplicable"
    );
    assert_eq!(Report::of(&Decision::Skip(Skip::Off)), None);
    assert_eq!(
        Report::of(&Decision::NotYet { at: at(NOW) })
            .unwrap()
            .message,
        "the renewal will be applied for from 2026-12-02T00:00:00Z"
    );
}

#[test]
fn outcomes_become_records_and_metric_labels() {
    let now = at(NOW);
    let applied: Result<RenewalOrder, ApplyError> = Ok(RenewalOrder::Applied(Applied {
        certificate_id: "new1".into(),
        request_id: "r".into(),
    }));
    let record = record_outcome("old1", &applied, 3, now);
    assert_eq!(
        (record.order_id.as_deref(), record.phase, record.generation),
        (Some("new1"), Phase::Applied, 3)
    );
    assert_eq!(metric_result(&applied), "applied");
    let refused: Result<RenewalOrder, ApplyError> = Err(ApplyError::Refused(TencentError::Api {
        action: "ApplyCertificate".into(),
        code: "FailedOperation.ExceedsFreeLimit".into(),
        message: "m".into(),
        request_id: "r".into(),
    }));
    let record = record_outcome("old1", &refused, 3, now);
    assert_eq!(record.phase, Phase::Refused);
    assert_eq!(
        record.code.as_deref(),
        Some("FailedOperation.ExceedsFreeLimit")
    );
    assert_eq!(metric_result(&refused), "refused");
    let uncertain: Result<RenewalOrder, ApplyError> =
        Err(ApplyError::Uncertain(TencentError::Timeout {
            action: "ApplyCertificate".into(),
            after: std::time::Duration::from_secs(10),
        }));
    assert_eq!(
        record_outcome("old1", &uncertain, 3, now).phase,
        Phase::Unconfirmed
    );
    assert_eq!(metric_result(&uncertain), "uncertain");
    for phase in [
        Phase::Applied,
        Phase::AwaitingValidation,
        Phase::Issued,
        Phase::Failed,
        Phase::Refused,
        Phase::Unconfirmed,
    ] {
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
    }
}

#[test]
fn alerts_see_waiting_orders_and_windows_without_one() {
    let now = at(NOW);
    let record = recorded(Phase::AwaitingValidation, Some("new1"), 1);
    let waiting = Decision::Track {
        old_certificate_id: "old1".into(),
        order_id: "new1".into(),
        state: OrderState::AwaitingValidation {
            method: Some(DvAuthMethod::Dns),
            records: vec![],
        },
        adopted: false,
    };
    assert_eq!(
        alert_signals(&waiting, Some(&record), now),
        AlertSignals {
            waiting_since: Some(record.since),
            in_window_without_order: false
        }
    );
    // Adopted just now: waiting from now.
    assert_eq!(alert_signals(&waiting, None, now).waiting_since, Some(now));
    let issued = Decision::Track {
        old_certificate_id: "old1".into(),
        order_id: "new1".into(),
        state: OrderState::Issued,
        adopted: false,
    };
    assert_eq!(
        alert_signals(&issued, Some(&record), now).waiting_since,
        None
    );
    let due = Decision::Apply {
        old_certificate_id: "old1".into(),
        domain: "shop.example.com".into(),
        method: DvAuthMethod::Dns,
    };
    assert!(alert_signals(&due, None, now).in_window_without_order);
    let refused = Decision::Refused {
        old_certificate_id: "old1".into(),
        code: None,
    };
    assert!(alert_signals(&refused, None, now).in_window_without_order);
    assert!(!alert_signals(&Decision::NotYet { at: now }, None, now).in_window_without_order);
    assert!(!alert_signals(&Decision::Skip(Skip::Off), None, now).in_window_without_order);
}

#[test]
fn far_from_the_window_nothing_is_asked_of_tencent() {
    let now = at(NOW);
    let end = Some(now + days(45));
    assert_eq!(
        next_look(Some(&SETTINGS), end, false, now),
        Look::At(now + days(15))
    );
    assert_eq!(
        next_look(Some(&SETTINGS), Some(now + days(20)), false, now),
        Look::Now
    );
    // A record, or an unknown end: look now. Renewal off: never.
    assert_eq!(next_look(Some(&SETTINGS), end, true, now), Look::Now);
    assert_eq!(next_look(Some(&SETTINGS), None, false, now), Look::Now);
    assert_eq!(next_look(None, end, false, now), Look::Never);
}
