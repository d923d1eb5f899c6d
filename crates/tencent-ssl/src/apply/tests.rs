use super::*;

fn api(code: &str) -> TencentError {
    TencentError::Api {
        action: ACTION_APPLY_CERTIFICATE.into(),
        code: code.into(),
        message: "m".into(),
        request_id: "r".into(),
    }
}

#[test]
fn renewal_params_use_the_sdk_field_names() {
    let mut request = ApplyRequest::renewal("old1", "shop.example.com", DvAuthMethod::Dns);
    assert_eq!(
        request.params(),
        json!({
            "DvAuthMethod": "DNS",
            "DomainName": "shop.example.com",
            "PackageType": "83",
            "ValidityPeriod": "3",
            "OldCertificateId": "old1",
            "CsrEncryptAlgo": "RSA",
            "CsrKeyParameter": "2048",
        })
    );
    request.method = DvAuthMethod::DnsAuto;
    request.key = KeyAlgorithm::EcdsaP256;
    request.delete_dns_auto_record = true;
    request.project_id = Some(7);
    let params = request.params();
    assert_eq!(params["CsrKeyParameter"], "prime256v1");
    assert_eq!(params["DeleteDnsAutoRecord"], true);
    assert_eq!(params["ProjectId"], 7);
    // DeleteDnsAutoRecord is only for DNS_AUTO.
    request.method = DvAuthMethod::File;
    assert!(request.params().get("DeleteDnsAutoRecord").is_none());
}

#[test]
fn methods_round_trip_and_unknown_ones_are_refused() {
    for method in [DvAuthMethod::DnsAuto, DvAuthMethod::Dns, DvAuthMethod::File] {
        assert_eq!(method.as_str().parse::<DvAuthMethod>(), Ok(method));
    }
    assert!("EMAIL".parse::<DvAuthMethod>().is_err());
    assert!("dns".parse::<DvAuthMethod>().is_err());
}

#[test]
fn only_answers_that_created_nothing_count_as_refusals() {
    for code in [
        "FailedOperation.ExceedsFreeLimit",
        "FailedOperation.MainDomainCertificateCountLimit",
        "InvalidParameter.WithDetailReason",
        "FailedOperation.InvalidParam",
        "AuthFailure.SignatureFailure",
        "UnauthorizedOperation",
        "RequestLimitExceeded",
        "FailedOperation.CertificateNotFound",
    ] {
        assert!(
            matches!(ApplyError::from_call(api(code)), ApplyError::Refused(_)),
            "{code}"
        );
    }
    assert_eq!(
        ApplyError::from_call(api("FailedOperation.ExceedsFreeLimit")).reason(),
        "QuotaExceeded"
    );
    assert_eq!(
        ApplyError::from_call(api("InvalidParameter.WithDetailReason")).reason(),
        "InvalidRequest"
    );
    for code in [
        "InternalError",
        "FailedOperation.SystemError",
        "FailedOperation.NetworkError",
        "SomethingNew",
    ] {
        assert!(
            matches!(ApplyError::from_call(api(code)), ApplyError::Uncertain(_)),
            "{code}"
        );
    }
    let timeout = TencentError::Timeout {
        action: ACTION_APPLY_CERTIFICATE.into(),
        after: Duration::from_secs(10),
    };
    assert!(matches!(
        ApplyError::from_call(timeout),
        ApplyError::Uncertain(_)
    ));
    for (status, refused) in [(400, true), (403, true), (429, true), (502, false)] {
        let err = TencentError::HttpStatus {
            action: ACTION_APPLY_CERTIFICATE.into(),
            status,
        };
        assert_eq!(
            matches!(ApplyError::from_call(err), ApplyError::Refused(_)),
            refused,
            "{status}"
        );
    }
}

#[test]
fn orders_decode_validation_records_and_links() {
    let order = decode_order(
        "new1",
        json!({
            "CertificateId": "new1",
            "Status": 0,
            "StatusMsg": "PENDING-DCV",
            "VerifyType": "DNS",
            "PackageType": "83",
            "Domain": "shop.example.com",
            "SubjectAltName": [],
            "CertBeginTime": null,
            "CertEndTime": null,
            "CertificateExtra": {"OriginCertificateId": "old1"},
            "CertificatePrivateKey": "-----BEGIN PRIVATE KEY-----",
            "DvAuthDetail": {
                "DvAuthKey": "_dnsauth.shop.example.com",
                "DvAuthValue": "20261202abc",
                "DvAuthDomain": "shop.example.com",
                "DvAuthKeySubDomain": "_dnsauth.shop",
                "DvAuths": [{
                    "DvAuthKey": "_dnsauth.shop.example.com",
                    "DvAuthValue": "20261202abc",
                    "DvAuthDomain": "shop.example.com",
                    "DvAuthSubDomain": "_dnsauth.shop",
                    "DvAuthVerifyType": "TXT"
                }]
            },
            "RequestId": "req"
        }),
    )
    .unwrap();
    assert_eq!(order.origin(), Some("old1"));
    assert!(order.is_free());
    assert_eq!(order.status_msg.as_deref(), Some("PENDING-DCV"));
    assert_eq!(
        order.validation,
        vec![ValidationRecord {
            key: "_dnsauth.shop.example.com".into(),
            value: "20261202abc".into(),
            domain: Some("shop.example.com".into()),
            record_type: Some("TXT".into()),
            path: None,
            sub_domain: Some("_dnsauth.shop".into()),
        }]
    );
    // The key field was never read.
    assert!(!format!("{order:?}").contains("PRIVATE KEY"));
}

#[test]
fn uploaded_and_paid_certificates_are_not_free() {
    let mut order = OrderDetail {
        package_type: Some("83".into()),
        ..OrderDetail::default()
    };
    assert!(order.is_free());
    order.is_vip = Some(true);
    assert!(!order.is_free());
    order.is_vip = None;
    order.package_type = Some("2".into());
    assert!(!order.is_free());
    order.package_type = None;
    assert!(!order.is_free());
}
