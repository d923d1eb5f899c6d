//! The simulator against Tencent Cloud's official Python SDK: proves it accepts exactly what the real SDK
//! sends (signing, headers, body) and answers in a shape the SDK parses. Needs the SDK importable by
//! `$TENCENT_SDK_PYTHON` (default `python3`); `.ci/run` installs it. Skipped with a message otherwise.

use std::process::Command;

use tencent_cert_operator::sim::{self, Account, SimConfig};

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
