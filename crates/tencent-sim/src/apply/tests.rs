use super::*;
use crate::catalog;

fn state_with(specs: &[&str]) -> Arc<SimState> {
    let specs: Vec<CertificateSpec> = specs.iter().map(|s| s.parse().unwrap()).collect();
    Arc::new(SimState::new(
        vec![],
        catalog::build(&specs, None).unwrap(),
        vec![],
        vec![],
        None,
        0,
    ))
}

fn renewal(old: &str, domain: &str, method: &str) -> Value {
    json!({
        "DvAuthMethod": method,
        "DomainName": domain,
        "OldCertificateId": old,
        "PackageType": "83",
        "ValidityPeriod": "3",
    })
}

async fn apply(state: &Arc<SimState>, params: Value) -> Result<String, Refusal> {
    apply_certificate(state.clone(), params)
        .await
        .map(|fields| fields["CertificateId"].as_str().expect("an id").to_string())
}

async fn code_of(state: &Arc<SimState>, params: Value) -> String {
    apply(state, params).await.unwrap_err().0.into_owned()
}

#[tokio::test]
async fn bad_parameters_get_tencent_codes() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    let base = renewal("old1", "shop.example.com", "DNS");
    let with = |name: &str, value: Value| {
        let mut params = base.clone();
        params[name] = value;
        params
    };
    let without = |name: &str| {
        let mut params = base.clone();
        params.as_object_mut().unwrap().remove(name);
        params
    };
    for (params, code) in [
        (without("DvAuthMethod"), "MissingParameter"),
        (without("DomainName"), "MissingParameter"),
        (
            with("DvAuthMethod", json!("EMAIL")),
            "InvalidParameterValue",
        ),
        (with("PackageType", json!("2")), "InvalidParameterValue"),
        (
            with("ValidityPeriod", json!("12")),
            "InvalidParameter.PeriodInvalid",
        ),
        (
            with("CsrEncryptAlgo", json!("SM2")),
            "InvalidParameter.RenewAlgorithmInvalid",
        ),
        (
            with("CsrEncryptAlgo", json!("ECC")),
            "InvalidParameter.RenewAlgorithmInvalid",
        ),
        (
            with("DomainName", json!("not a domain")),
            "InvalidParameter.DomainInvalid",
        ),
        (
            with(
                "DomainName",
                json!(format!("{}.example.com", "a".repeat(60))),
            ),
            "InvalidParameterValue.CertificateDomainMaxLengthInvalid",
        ),
        (
            with("DnsNames", json!(["www.shop.example.com"])),
            "InvalidParameter",
        ),
        (with("Frobnicate", json!(1)), "UnknownParameter"),
        (
            with("OldCertificateId", json!("nope1")),
            "FailedOperation.CertificateNotFound",
        ),
        (
            with("DomainName", json!("other.example.com")),
            "InvalidParameter.DomainInvalid",
        ),
    ] {
        assert_eq!(code_of(&state, params.clone()).await, code, "{params}");
    }
    // Nothing was created by any of them.
    assert!(state.orders().is_empty());
    assert_eq!(state.certificate_ids(), vec!["old1"]);
}

#[tokio::test]
async fn a_renewal_is_a_linked_pending_order_showing_the_record_to_create() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    let new = apply(&state, renewal("old1", "shop.example.com", "DNS"))
        .await
        .unwrap();
    let old = state.certificate("old1").unwrap();
    assert_eq!(old.links.renew_order.as_deref(), Some(new.as_str()));
    let order_cert = state.certificate(&new).unwrap();
    assert_eq!(order_cert.status, STATUS_UNDER_REVIEW);
    assert_eq!(
        order_cert.links.origin_certificate_id.as_deref(),
        Some("old1")
    );
    assert_eq!(order_cert.domain, "shop.example.com");
    let detail = detail_fields(&state, &order_cert, json!({}));
    assert_eq!(detail["VerifyType"], "DNS");
    assert_eq!(detail["StatusMsg"], "PENDING-DCV");
    assert_eq!(detail["PackageType"], "83");
    assert_eq!(detail["IsVip"], false);
    let auth = &detail["DvAuthDetail"];
    assert_eq!(auth["DvAuthKey"], "_dnsauth.shop.example.com");
    assert_eq!(auth["DvAuths"][0]["DvAuthVerifyType"], "TXT");
    assert_eq!(auth["DvAuthValue"].as_str().unwrap().len(), 32);

    // A second application for the same certificate is refused: its renewal exists.
    assert_eq!(
        code_of(&state, renewal("old1", "shop.example.com", "DNS")).await,
        "FailedOperation.CertificateExists"
    );
    // It waits until the record "exists", then issues.
    advance(&state);
    assert_eq!(state.certificate(&new).unwrap().status, STATUS_UNDER_REVIEW);
    let validated = state.validate_order(&new).unwrap();
    assert_eq!(validated.state, "issued");
    let issued = state.certificate(&new).unwrap();
    assert_eq!(issued.status, STATUS_ISSUED);
    assert!(issued.not_after > old.not_after);
    let detail = detail_fields(&state, &issued, json!({}));
    assert_eq!(detail["DvAuthDetail"], Value::Null);
    assert_eq!(detail["StatusMsg"], Value::Null);
    assert!(matches!(
        state.validate_order(&new),
        Err(ControlError::Invalid(_))
    ));
}

#[tokio::test]
async fn file_validation_names_a_file_under_the_pki_validation_path() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    let new = apply(&state, renewal("old1", "shop.example.com", "FILE"))
        .await
        .unwrap();
    let detail = detail_fields(&state, &state.certificate(&new).unwrap(), json!({}));
    let auth = &detail["DvAuthDetail"]["DvAuths"][0];
    assert_eq!(auth["DvAuthVerifyType"], "FILE");
    assert_eq!(auth["DvAuthPath"], FILE_VALIDATION_PATH);
    assert!(auth["DvAuthKey"].as_str().unwrap().ends_with(".txt"));
    state.validate_order(&new).unwrap();
    assert_eq!(state.certificate(&new).unwrap().status, STATUS_ISSUED);
}

#[tokio::test]
async fn dns_auto_issues_by_itself_after_the_delay() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    state.set_apply_settings(ApplySettings {
        dns_auto_delay_ms: 3_600_000,
        ..ApplySettings::default()
    });
    let new = apply(&state, renewal("old1", "shop.example.com", "DNS_AUTO"))
        .await
        .unwrap();
    let pending = state.certificate(&new).unwrap();
    assert_eq!(pending.status, STATUS_DNS_AUTO);
    assert_eq!(
        detail_fields(&state, &pending, json!({}))["StatusName"],
        "自动添加DNS记录"
    );
    advance(&state);
    assert_eq!(state.certificate(&new).unwrap().status, STATUS_DNS_AUTO);
    state.set_apply_settings(ApplySettings {
        dns_auto_delay_ms: 0,
        ..ApplySettings::default()
    });
    advance(&state);
    assert_eq!(state.certificate(&new).unwrap().status, STATUS_ISSUED);
}

#[tokio::test]
async fn renewals_outside_the_window_of_paid_or_expired_certificates_are_refused() {
    let state = state_with(&[
        "early1:domain=early.example.com,valid-days=45",
        "gone1:domain=gone.example.com,expired",
        "paid1:domain=paid.example.com,valid-days=20,package=2",
        "up1:domain=up.example.com,valid-days=20,from=upload",
    ]);
    for (old, domain, code) in [
        (
            "early1",
            "early.example.com",
            "InvalidParameter.WithDetailReason",
        ),
        (
            "gone1",
            "gone.example.com",
            "InvalidParameter.WithDetailReason",
        ),
        (
            "paid1",
            "paid.example.com",
            "FailedOperation.InvalidCertificateSource",
        ),
        (
            "up1",
            "up.example.com",
            "FailedOperation.InvalidCertificateSource",
        ),
    ] {
        assert_eq!(
            code_of(&state, renewal(old, domain, "DNS")).await,
            code,
            "{old}"
        );
    }
    assert!(state.orders().is_empty());
}

#[tokio::test]
async fn dns_auto_needs_dnspod_and_the_free_quota_is_counted() {
    let state = state_with(&[
        "a1:domain=shop.example.com,valid-days=20",
        "b1:domain=www.elsewhere.net,valid-days=20",
        "c1:domain=api.example.com,valid-days=20",
    ]);
    state.set_apply_settings(ApplySettings {
        dnspod_domains: Some(vec!["example.com".into()]),
        free_quota: Some(1),
        ..ApplySettings::default()
    });
    assert_eq!(
        code_of(&state, renewal("b1", "www.elsewhere.net", "DNS_AUTO")).await,
        "FailedOperation.InvalidParam"
    );
    apply(&state, renewal("a1", "shop.example.com", "DNS_AUTO"))
        .await
        .unwrap();
    assert_eq!(
        code_of(&state, renewal("c1", "api.example.com", "DNS_AUTO")).await,
        "FailedOperation.ExceedsFreeLimit"
    );
    // A refused DNS_AUTO is not counted: DNS works for the domain off DNSPod, within the quota again.
    state.set_apply_settings(ApplySettings {
        free_quota: Some(2),
        ..ApplySettings::default()
    });
    apply(&state, renewal("b1", "www.elsewhere.net", "DNS"))
        .await
        .unwrap();
    assert_eq!(state.orders().len(), 2);
}

#[tokio::test]
async fn a_failed_order_says_why_and_allows_a_new_application() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    let first = apply(&state, renewal("old1", "shop.example.com", "DNS"))
        .await
        .unwrap();
    let failed = state.fail_order(&first, "CA审核失败").unwrap();
    assert_eq!(failed.state, "failed");
    let certificate = state.certificate(&first).unwrap();
    assert_eq!(certificate.status, STATUS_FAILED);
    assert_eq!(
        detail_fields(&state, &certificate, json!({}))["StatusMsg"],
        "CA审核失败"
    );
    let second = apply(&state, renewal("old1", "shop.example.com", "DNS"))
        .await
        .unwrap();
    assert_ne!(first, second);
    assert!(matches!(
        state.fail_order("nope", "x"),
        Err(ControlError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_new_application_without_an_old_certificate_creates_a_free_certificate() {
    let state = state_with(&[]);
    let id = apply(
        &state,
        json!({"DvAuthMethod": "DNS", "DomainName": "New.Example.com", "Alias": "note"}),
    )
    .await
    .unwrap();
    let certificate = state.certificate(&id).unwrap();
    assert_eq!(certificate.domain, "new.example.com");
    assert_eq!(certificate.alias, "note");
    assert_eq!(package_type(&certificate).as_deref(), Some("83"));
    assert_eq!(certificate.links.origin_certificate_id, None);
}

#[tokio::test]
async fn faults_answer_before_anything_is_created() {
    let state = state_with(&["old1:domain=shop.example.com,valid-days=20"]);
    state.add_fault("ApplyCertificate=InternalError:1".parse().unwrap());
    assert_eq!(
        code_of(&state, renewal("old1", "shop.example.com", "DNS")).await,
        "InternalError"
    );
    assert!(state.orders().is_empty());
    assert!(
        apply(&state, renewal("old1", "shop.example.com", "DNS"))
            .await
            .is_ok()
    );
}

#[test]
fn settings_parse_with_defaults_and_refuse_unknown_fields() {
    let settings: ApplySettings = serde_json::from_value(json!({"free_quota": 3})).unwrap();
    assert_eq!(settings.free_quota, Some(3));
    assert_eq!(settings.dns_auto_delay_ms, 2000);
    assert!(serde_json::from_value::<ApplySettings>(json!({"quota": 3})).is_err());
    let zoned = ApplySettings {
        dnspod_domains: Some(vec!["example.com.".into()]),
        ..ApplySettings::default()
    };
    assert!(zoned.on_dnspod("*.shop.Example.com"));
    assert!(zoned.on_dnspod("example.com"));
    assert!(!zoned.on_dnspod("badexample.com"));
}
