//! The simulator against Tencent Cloud's official Python SDK: proves it accepts exactly what the real SDK
//! sends (signing, headers, body) and answers in a shape the SDK parses. Needs the SDK importable by
//! `$TENCENT_SDK_PYTHON` (default `python3`); `.ci/run` installs it. Skipped with a message otherwise.

use std::process::Command;

use tencent_sim::{self as sim, Account, SimConfig};

fn sdk_python() -> Option<String> {
    let python = std::env::var("TENCENT_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import tencentcloud.ssl.v20191205.ssl_client"])
        .output()
        .ok()?;
    probe.status.success().then_some(python)
}

#[tokio::test]
async fn the_official_python_sdk_talks_to_the_simulator() {
    let Some(python) = sdk_python() else {
        eprintln!(
            "SKIPPED: Tencent's Python SDK is not importable; install it with \
             `pip install tencentcloud-sdk-python-ssl==3.1.145` or set TENCENT_SDK_PYTHON"
        );
        return;
    };
    let sim = sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: "AKIDsdkCROSSCHECK".into(),
                secret_key: "sdk-crosscheck-key".into(),
                token: None,
            }],
            certificates: [
                "sdkCheck1:domain=shop.example.com,san=www.shop.example.com,tag=env=prod,renewed-by=sdkCheck2",
                "sdkCheck2:domain=shop.example.com,status=0,tag=env=prod",
                "sdkCheck3:domain=dev.example.com,tag=env=dev",
            ]
            .iter()
            .map(|spec| spec.parse().unwrap())
            .collect(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/crosscheck.py");
    let host = sim.addr().to_string();
    let output = tokio::process::Command::new(&python)
        .args([
            script,
            &host,
            "AKIDsdkCROSSCHECK",
            "sdk-crosscheck-key",
            "sdkCheck1",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let served = sim.state().certificate("sdkCheck1").unwrap();
    assert_eq!(answer["zip_size"], served.zip.len());
    assert_eq!(answer["zip_magic"], "PK");
    assert_eq!(answer["content_type"], "application/zip");
    assert_eq!(answer["status"], 1);
    assert_eq!(answer["domain"], "shop.example.com");
    assert_eq!(answer["wrong_key_code"], "AuthFailure.SignatureFailure");
    assert_eq!(
        answer["missing_code"],
        "FailedOperation.CertificateNotFound"
    );
    // DescribeCertificates with the SDK's own encoding of the filters (status list, Tags objects).
    assert_eq!(answer["list_total"], 1);
    assert_eq!(answer["list_ids"], serde_json::json!(["sdkCheck1"]));
    assert_eq!(
        answer["list_names"],
        serde_json::json!([["shop.example.com", "www.shop.example.com"]])
    );
    assert_eq!(
        answer["list_renew_orders"],
        serde_json::json!(["sdkCheck2"])
    );
    assert_eq!(answer["list_end_times"][0], answer["cert_end_time"]);
    // CertIds: exactly the ids asked for that exist, whatever their status, with the renewal link in
    // CertificateExtra.RenewOrder and the validity window the operator compares against the Secret's.
    assert_eq!(
        answer["ids_listed"],
        serde_json::json!(["sdkCheck1", "sdkCheck2"])
    );
    assert_eq!(answer["ids_statuses"], serde_json::json!([0, 1]));
    assert_eq!(
        answer["ids_renew_orders"],
        serde_json::json!(["", "sdkCheck2"])
    );
    assert!(
        answer["ids_begin_times"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.len() == 19)),
        "{answer}"
    );
    let stats = sim.stats();
    assert_eq!(stats.count("DownloadCertificate", "Success"), 1);
    assert_eq!(stats.count("DescribeCertificateDetail", "Success"), 1);
    assert_eq!(stats.count("DescribeCertificates", "Success"), 2);
}

fn sts_sdk_python() -> Option<String> {
    let python = sdk_python()?;
    let probe = Command::new(&python)
        .args(["-c", "import tencentcloud.sts.v20180813.sts_client"])
        .output()
        .ok()?;
    probe.status.success().then_some(python)
}

/// STS: `AssumeRole` through `StsClient` and the SDK's `STSAssumeRoleCredential`, and
/// `AssumeRoleWithWebIdentity` through its TKE provider (`DefaultTkeOIDCRoleArnProvider`, unsigned), each
/// followed by a download with the temporary credentials (`X-TC-Token`).
#[tokio::test]
async fn the_official_python_sdk_assumes_roles_at_the_simulator() {
    let Some(python) = sts_sdk_python() else {
        eprintln!(
            "SKIPPED: Tencent's Python SDK (sts) is not importable; install it with \
             `pip install tencentcloud-sdk-python-sts==3.0.1459` or set TENCENT_SDK_PYTHON"
        );
        return;
    };
    let role_arn = "qcs::cam::uin/100000000001:roleName/sdk-cert-reader";
    let untrusted_arn = "qcs::cam::uin/100000000001:roleName/not-for-you";
    let provider = "cls-sdkcheck";
    let token = "eyJhbGciOiJSUzI1NiJ9.sdk-crosscheck.sig";
    let sim = sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: "AKIDsdkSTS".into(),
                secret_key: "sdk-sts-key".into(),
                token: None,
            }],
            certificates: vec!["sdkSts01:domain=sts.example.com".parse().unwrap()],
            roles: vec![
                sim::SimRole {
                    role_arn: role_arn.into(),
                    trusted_secret_ids: vec!["AKIDsdkSTS".into()],
                    oidc_provider_id: Some(provider.into()),
                    web_identity_tokens: vec![token.into()],
                },
                sim::SimRole {
                    role_arn: untrusted_arn.into(),
                    trusted_secret_ids: vec!["AKIDother".into()],
                    ..sim::SimRole::default()
                },
            ],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let token_file = std::env::temp_dir().join(format!("tco-sdk-sts-token-{}", std::process::id()));
    std::fs::write(&token_file, token).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sts_crosscheck.py");
    let output = tokio::process::Command::new(&python)
        .args([
            script,
            &sim.addr().to_string(),
            "AKIDsdkSTS",
            "sdk-sts-key",
            role_arn,
            untrusted_arn,
            provider,
            &token_file.to_string_lossy(),
            "sdkSts01",
        ])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&token_file);
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let zip_len = sim.state().certificate("sdkSts01").unwrap().zip.len();
    assert_eq!(answer["assume_role_tmp_id_prefix"], "AKIDtmp");
    assert!(
        answer["assume_role_token_len"].as_u64().unwrap() > 32,
        "{answer}"
    );
    let expired_time = answer["assume_role_expired_time"].as_i64().unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!((now + 890..=now + 910).contains(&expired_time), "{answer}");
    assert_eq!(
        answer["assume_role_expiration"],
        jiff::Timestamp::from_second(expired_time)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
    assert_eq!(answer["role_download"], zip_len);
    assert_eq!(answer["oidc_download"], zip_len);
    assert_eq!(answer["untrusted_code"], "UnauthorizedOperation");
    assert_eq!(answer["missing_code"], "ResourceNotFound.RoleNotFound");
    assert_eq!(
        answer["stale_token_code"],
        "InvalidParameter.WebIdentityTokenError"
    );
    assert_eq!(answer["tokenless_code"], "AuthFailure.TokenFailure");
    let stats = sim.stats();
    assert_eq!(stats.count("AssumeRole", "Success"), 2);
    assert_eq!(stats.count("AssumeRoleWithWebIdentity", "Success"), 1);
    assert_eq!(stats.count("DownloadCertificate", "Success"), 2);
}

/// `ApplyCertificate` with `OldCertificateId`, the DNS validation life cycle (the record shown, then
/// validated through the control endpoint, then issued and downloadable), DNS_AUTO issuing by itself,
/// and the refusals, all through the SDK's request models and response parsing.
#[tokio::test]
async fn the_official_python_sdk_applies_for_renewals_at_the_simulator() {
    let Some(python) = sdk_python() else {
        eprintln!(
            "SKIPPED: Tencent's Python SDK is not importable; install it with \
             `pip install tencentcloud-sdk-python-ssl==3.1.145` or set TENCENT_SDK_PYTHON"
        );
        return;
    };
    let sim = sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: "AKIDsdkAPPLY".into(),
                secret_key: "sdk-apply-key".into(),
                token: None,
            }],
            certificates: [
                "sdkOld1:domain=shop.example.com,valid-days=20",
                "sdkOld2:domain=auto.example.com,valid-days=20",
                "sdkPaid1:domain=paid.example.com,valid-days=20,package=2",
                "sdkEarly1:domain=early.example.com,valid-days=60",
            ]
            .iter()
            .map(|spec| spec.parse().unwrap())
            .collect(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim.state().set_apply_settings(sim::ApplySettings {
        dns_auto_delay_ms: 0,
        ..sim::ApplySettings::default()
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/apply_crosscheck.py");
    let output = tokio::process::Command::new(&python)
        .args([
            script,
            &sim.addr().to_string(),
            "AKIDsdkAPPLY",
            "sdk-apply-key",
            "sdkOld1",
            "sdkOld2",
            "sdkPaid1",
            "sdkEarly1",
            "shop.example.com",
            "auto.example.com",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let new_id = answer["new_id"].as_str().unwrap().to_string();
    let order = sim
        .state()
        .orders()
        .into_iter()
        .find(|o| o.certificate_id == new_id)
        .unwrap();
    assert_eq!(answer["applied_request_id"].as_str().unwrap().len(), 36);
    // Pending: the SDK reads the order's state and the record to create.
    assert_eq!(answer["pending_status"], 0);
    assert_eq!(answer["pending_verify_type"], "DNS");
    assert_eq!(answer["pending_status_msg"], "PENDING-DCV");
    assert_eq!(answer["pending_package_type"], "83");
    // `IsVip` is what tells a paid certificate from a free one besides the package (OrderDetail::is_free).
    assert_eq!(answer["pending_is_vip"], false);
    assert_eq!(answer["pending_origin"], "sdkOld1");
    assert_eq!(answer["auth_key"], "_dnsauth.shop.example.com");
    assert_eq!(answer["auth_value"], order.record_value.as_str());
    assert_eq!(answer["auth_domain"], "shop.example.com");
    assert_eq!(answer["auth_sub_domain"], "_dnsauth");
    assert_eq!(
        answer["auths"],
        serde_json::json!([{
            "key": "_dnsauth.shop.example.com",
            "value": order.record_value,
            "type": "TXT",
            "sub": "_dnsauth",
        }])
    );
    // The renewal links, as the list shows them.
    assert_eq!(answer["old_has_renew_order"], new_id.as_str());
    assert_eq!(answer["old_renew_order"], new_id.as_str());
    assert_eq!(answer["new_listed_status"], 0);
    assert_eq!(answer["new_listed_verify_type"], "DNS");
    assert_eq!(answer["second_code"], "FailedOperation.CertificateExists");
    // Validated: issued, no record left to create, downloadable.
    assert_eq!(answer["validated_state"], "issued");
    assert_eq!(answer["issued_status"], 1);
    assert_eq!(answer["issued_auth"], serde_json::Value::Null);
    assert!(answer["archive_base64_len"].as_u64().unwrap() > 100);
    // DNS_AUTO (delay 0 here) is issued by the next request.
    assert_eq!(answer["auto_status"], 1);
    assert_eq!(answer["auto_verify_type"], "DNS_AUTO");
    assert_eq!(answer["auto_origin"], "sdkOld2");
    // Refusals with the SDK's codes.
    assert_eq!(
        answer["paid_code"],
        "FailedOperation.InvalidCertificateSource"
    );
    assert_eq!(answer["early_code"], "InvalidParameter.WithDetailReason");
    assert_eq!(answer["bad_method_code"], "InvalidParameterValue");
    assert_eq!(answer["quota_code"], "FailedOperation.ExceedsFreeLimit");
    let stats = sim.stats();
    assert_eq!(stats.count("ApplyCertificate", "Success"), 2);
    assert_eq!(stats.action_total("ApplyCertificate"), 7);
}

/// Publishing: `UploadCertificate` (repeat, mismatch), `DescribeCertificates` by tag, the bind-resource
/// task pair, `UpdateCertificateInstance` (a region missing, then clb + cdn), `DescribeHostUpdateRecordDetail`
/// polled to the end with a cdn failure, `UpdateCertificateRecordRetry`, and `DeleteCertificate` refused while
/// bound and accepted once nothing is.
#[tokio::test]
async fn the_official_python_sdk_publishes_at_the_simulator() {
    let Some(python) = sdk_python() else {
        eprintln!(
            "SKIPPED: Tencent's Python SDK is not importable; install it with \
             `pip install tencentcloud-sdk-python-ssl==3.1.145` or set TENCENT_SDK_PYTHON"
        );
        return;
    };
    let sim = sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: "AKIDsdkPUBLISH".into(),
                secret_key: "sdk-publish-key".into(),
                token: None,
            }],
            certificates: vec!["sdkOld01:domain=shop.example.com".parse().unwrap()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let state = sim.state();
    for (kind, region, instance) in [
        ("clb", Some("ap-guangzhou"), "lb-gz"),
        ("cdn", None, "shop.example.com"),
    ] {
        state.add_binding(sim::Binding {
            certificate_id: "sdkOld01".into(),
            resource_type: kind.into(),
            region: region.map(String::from),
            instance_id: instance.into(),
            domains: vec!["shop.example.com".into()],
        });
    }
    state.add_deploy_fault(sim::DeployFault {
        resource_type: "cdn".into(),
        region: None,
        remaining: Some(1),
        error_msg: "domain is offline".into(),
    });
    let pki = sim::pki::Pki::generate(sim::pki::KeyKind::EcdsaP256).unwrap();
    let now = jiff::Timestamp::now();
    let span = jiff::SignedDuration::from_hours(24 * 30);
    let pair =
        sim::publish::issue_pair(&pki, &["shop.example.com"], now - span, now + span).unwrap();
    let other =
        sim::publish::issue_pair(&pki, &["shop.example.com"], now - span, now + span).unwrap();
    let dir = std::env::temp_dir().join(format!("tco-sdk-publish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain_file, key_file, other_file) = (
        dir.join("tls.crt"),
        dir.join("tls.key"),
        dir.join("other.key"),
    );
    std::fs::write(&chain_file, &pair.chain_pem).unwrap();
    std::fs::write(&key_file, &pair.key_pem).unwrap();
    std::fs::write(&other_file, &other.key_pem).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/publish_crosscheck.py"
    );
    let output = tokio::process::Command::new(&python)
        .args([
            script,
            &sim.addr().to_string(),
            "AKIDsdkPUBLISH",
            "sdk-publish-key",
            &chain_file.to_string_lossy(),
            &key_file.to_string_lossy(),
            &other_file.to_string_lossy(),
            "sdkOld01",
        ])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let uploaded = answer["uploaded"].as_str().unwrap().to_string();
    assert_eq!(answer["first_repeat_id"], "");
    assert_eq!(answer["repeat_id"], uploaded.as_str());
    assert_eq!(
        answer["mismatch_code"],
        "FailedOperation.CertificateMismatch"
    );
    assert_eq!(answer["listed_ids"], serde_json::json!([uploaded]));
    assert_eq!(
        answer["listed_tags"],
        serde_json::json!([[["tco-push-uid", "sdk-uid-1"]]])
    );
    assert_eq!(answer["bind_status"], 1);
    assert_eq!(
        answer["bound_counts"],
        serde_json::json!({"clb": {"ap-guangzhou": 1}, "cdn": {"": 1}})
    );
    assert_eq!(answer["no_region_code"], "InvalidParameter.RegionNotEmpty");
    assert_eq!(answer["deploy_status"], 1);
    assert_eq!(answer["first_run"], serde_json::json!([2, 1, 1]));
    assert_eq!(answer["first_run_types"], serde_json::json!(["cdn", "clb"]));
    assert_eq!(
        answer["failed"],
        serde_json::json!([["cdn", 2, "domain is offline"]])
    );
    assert_eq!(
        answer["delete_bound_code"],
        "FailedOperation.DeleteResourceFailed"
    );
    assert_eq!(answer["second_run"], serde_json::json!([2, 2, 0]));
    assert_eq!(
        answer["retry_again_code"],
        "FailedOperation.CertificateDeployRetryStatusInvalid"
    );
    assert_eq!(answer["deleted"], true);
    assert!(state.certificate("sdkOld01").is_none());
    assert_eq!(state.bindings_of(&uploaded).len(), 2);
    let stats = sim.stats();
    assert_eq!(stats.count("UploadCertificate", "Success"), 2);
    assert_eq!(stats.count("UpdateCertificateInstance", "Success"), 1);
    assert_eq!(stats.count("DeleteCertificate", "Success"), 1);
}
