//! Publishing against the in-process simulator: upload with repeat detection and tags, bound resources,
//! moving them with asynchronous per-resource deploys (a failure, a retry), delete refused while bound;
//! the private key in no error or `Debug` output.

use std::time::Duration;

use tencent_sim::pki::{KeyKind, Pki};
use tencent_sim::publish::issue_pair;
use tencent_sim::{self as sim, Account, Binding, DeployFault, IssuedPair, SimConfig, SimHandle};
use tencent_ssl::error::reason;
use tencent_ssl::publish::{BoundResources, DeployState, DeployTarget, UploadRequest};
use tencent_ssl::{CertificateFilter, Client, ClientConfig, Credentials, ErrorClass, Tag};

const SECRET_ID: &str = "AKIDpublishTEST0001";
const SECRET_KEY: &str = "publish-secret-key-0001";

fn credentials() -> Credentials {
    Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap()
}

async fn simulator() -> SimHandle {
    sim::start(
        SimConfig {
            accounts: vec![Account {
                secret_id: SECRET_ID.into(),
                secret_key: SECRET_KEY.into(),
                token: None,
            }],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn client_for(sim: &SimHandle) -> Client {
    Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn pair(pki: &Pki, days_valid: i64) -> IssuedPair {
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_hours(1);
    let (start, end) = if days_valid > 0 {
        (
            now - hour,
            now + jiff::SignedDuration::from_hours(24 * days_valid),
        )
    } else {
        (
            now - jiff::SignedDuration::from_hours(24 * 90),
            now - jiff::SignedDuration::from_hours(24 * (-days_valid).max(1)),
        )
    };
    issue_pair(
        pki,
        &["shop.example.com", "www.shop.example.com"],
        start,
        end,
    )
    .unwrap()
}

fn key_body_lines(key_pem: &str) -> Vec<String> {
    key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}

fn assert_no_key(text: &str, key_pem: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in key_body_lines(key_pem) {
        assert!(!text.contains(&line), "key material in: {text}");
    }
}

#[tokio::test]
async fn upload_is_tagged_and_a_repeat_answers_the_same_id() {
    let sim = simulator().await;
    let client = client_for(&sim);
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let issued = pair(&pki, 90);
    let tags = [
        Tag::new("tco-push-uid", "0b6f0d1e-uid"),
        Tag::new("tco-fingerprint", "ab12cd34"),
    ];
    let request = UploadRequest {
        chain_pem: &issued.chain_pem,
        key_pem: &issued.key_pem,
        alias: "team-a/shop",
        project_id: Some(0),
        tags: &tags,
    };
    assert_no_key(&format!("{request:?}"), &issued.key_pem);
    let first = client
        .upload_certificate(&credentials(), &request)
        .await
        .unwrap();
    assert!(!first.repeat);
    let stored = sim.state().certificate(&first.certificate_id).unwrap();
    assert_eq!(stored.from, "upload");
    assert_eq!(stored.domain, "shop.example.com");
    assert_eq!(stored.alias, "team-a/shop");
    // Downloadable again, and the same pair.
    let bundle = tencent_ssl::bundle::extract(&stored.zip).unwrap();
    assert_eq!(bundle.chain_pem, issued.chain_pem);

    let again = client
        .upload_certificate(&credentials(), &request)
        .await
        .unwrap();
    assert!(again.repeat);
    assert_eq!(again.certificate_id, first.certificate_id);
    assert_eq!(sim.state().uploaded_certificates().len(), 1);

    // Found by its tags (how a crash between upload and status patch is recovered).
    let listed = client
        .describe_certificates_within(
            &credentials(),
            &CertificateFilter {
                tags: tags.to_vec(),
                ..CertificateFilter::default()
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].certificate_id, first.certificate_id);
    assert_eq!(listed[0].tags.len(), 2);
    assert_eq!(sim.stats().count("UploadCertificate", "Success"), 2);
}

#[tokio::test]
async fn refused_pairs_are_permanent_and_never_quote_the_key() {
    let sim = simulator().await;
    let client = client_for(&sim);
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let issued = pair(&pki, 90);
    let other = pair(&pki, 90);
    let expired = pair(&pki, -1);
    for (chain, key, code) in [
        (
            issued.chain_pem.as_str(),
            other.key_pem.as_str(),
            "FailedOperation.CertificateMismatch",
        ),
        (
            "not a certificate",
            issued.key_pem.as_str(),
            "FailedOperation.CertificateParseError",
        ),
        (
            expired.chain_pem.as_str(),
            expired.key_pem.as_str(),
            "FailedOperation.CertificateInvalid",
        ),
    ] {
        let err = client
            .upload_certificate(
                &credentials(),
                &UploadRequest {
                    chain_pem: chain,
                    key_pem: key,
                    alias: "",
                    project_id: None,
                    tags: &[],
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.class(), ErrorClass::Permanent, "{code}");
        assert_no_key(&err.to_string(), key);
        assert_no_key(&format!("{err:?}"), key);
    }
    assert!(sim.state().uploaded_certificates().is_empty());
}

#[tokio::test]
async fn a_failed_upload_keeps_its_class_and_carries_no_key() {
    let sim = simulator().await;
    let client = client_for(&sim);
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let issued = pair(&pki, 90);
    // Through the limiter and envelope parsing the class survives (a message quoting the key is withheld:
    // see the unit tests of `publish`).
    sim.state().add_fault(sim::Fault {
        certificate_id: "UploadCertificate".into(),
        code: "InternalError".into(),
        remaining: Some(1),
        probability: 1.0,
    });
    let request = UploadRequest {
        chain_pem: &issued.chain_pem,
        key_pem: &issued.key_pem,
        alias: "",
        project_id: None,
        tags: &[],
    };
    let err = client
        .upload_certificate(&credentials(), &request)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_no_key(&err.to_string(), &issued.key_pem);
    let ok = client
        .upload_certificate(&credentials(), &request)
        .await
        .unwrap();
    assert!(!ok.repeat);
}

fn binding(cert: &str, kind: &str, region: Option<&str>, instance: &str) -> Binding {
    Binding {
        certificate_id: cert.into(),
        resource_type: kind.into(),
        region: region.map(String::from),
        instance_id: instance.into(),
        domains: vec!["shop.example.com".into()],
    }
}

#[tokio::test]
async fn bound_resources_move_per_type_with_a_failure_retried_and_delete_waits_for_unbinding() {
    let sim = simulator().await;
    let client = client_for(&sim);
    let creds = credentials();
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let upload = |issued: &IssuedPair| {
        let client = client.clone();
        let creds = creds.clone();
        let issued = issued.clone();
        async move {
            client
                .upload_certificate(
                    &creds,
                    &UploadRequest {
                        chain_pem: &issued.chain_pem,
                        key_pem: &issued.key_pem,
                        alias: "",
                        project_id: None,
                        tags: &[],
                    },
                )
                .await
                .unwrap()
                .certificate_id
        }
    };
    let old = upload(&pair(&pki, 90)).await;
    let new = upload(&pair(&pki, 90)).await;
    let state = sim.state();
    state.add_binding(binding(&old, "clb", Some("ap-guangzhou"), "lb-1"));
    state.add_binding(binding(&old, "clb", Some("ap-shanghai"), "lb-2"));
    state.add_binding(binding(&old, "cdn", None, "shop.example.com"));

    let bound = client
        .bound_resources(&creds, &old, 3, Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.total(), 3);
    assert_eq!(bound.counts["clb"]["ap-guangzhou"], 1);
    assert_eq!(bound.counts["cdn"][""], 1);
    let none = client
        .bound_resources(&creds, &new, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(none, Some(BoundResources::default()));

    // clb needs its regions.
    let err = client
        .update_certificate_instance(
            &creds,
            &old,
            &new,
            &[DeployTarget {
                resource_type: "clb".into(),
                regions: vec![],
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameter.RegionNotEmpty"));

    state.add_deploy_fault(DeployFault {
        resource_type: "cdn".into(),
        region: None,
        remaining: Some(1),
        error_msg: "domain is offline".into(),
    });
    let targets = [
        DeployTarget {
            resource_type: "clb".into(),
            regions: vec!["ap-guangzhou".into()],
        },
        DeployTarget {
            resource_type: "cdn".into(),
            regions: vec![],
        },
    ];
    let started = client
        .update_certificate_instance(&creds, &old, &new, &targets)
        .await
        .unwrap();
    assert!(started.created);
    // While it runs, asking again answers the same record.
    let same = client
        .update_certificate_instance(&creds, &old, &new, &targets)
        .await
        .unwrap();
    assert_eq!((same.record_id, same.created), (started.record_id, false));

    let mut progress = client
        .deploy_progress(&creds, started.record_id)
        .await
        .unwrap();
    let mut polls = 1;
    while !progress.is_finished() {
        assert!(polls < 10, "{progress:?}");
        progress = client
            .deploy_progress(&creds, started.record_id)
            .await
            .unwrap();
        polls += 1;
    }
    assert_eq!(progress.total, 2);
    assert_eq!((progress.succeeded, progress.failed), (1, 1));
    let cdn = progress
        .details
        .iter()
        .find(|d| d.resource_type == "cdn")
        .unwrap();
    assert_eq!(cdn.state, DeployState::Failed);
    assert_eq!(cdn.error_msg.as_deref(), Some("domain is offline"));
    let clb = progress
        .details
        .iter()
        .find(|d| d.resource_type == "clb")
        .unwrap();
    assert_eq!(clb.state, DeployState::Succeeded);
    assert_eq!(clb.region.as_deref(), Some("ap-guangzhou"));

    client
        .retry_deploy_record(&creds, started.record_id)
        .await
        .unwrap();
    let mut progress = client
        .deploy_progress(&creds, started.record_id)
        .await
        .unwrap();
    while !progress.is_finished() {
        progress = client
            .deploy_progress(&creds, started.record_id)
            .await
            .unwrap();
    }
    assert_eq!((progress.succeeded, progress.failed), (2, 0));
    // Nothing failed any more: a retry is refused.
    let err = client
        .retry_deploy_record(&creds, started.record_id)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some("FailedOperation.CertificateDeployRetryStatusInvalid")
    );

    // The Shanghai CLB was not asked for: it still holds the old certificate, so the old one stays.
    let err = client.delete_certificate(&creds, &old).await.unwrap_err();
    assert_eq!(err.code(), Some("FailedOperation.DeleteResourceFailed"));
    assert_eq!(err.reason(), reason::CERTIFICATE_IN_USE);
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(state.bindings_of(&new).len(), 2);
    assert_eq!(state.bindings_of(&old).len(), 1);

    let rest = client
        .update_certificate_instance(
            &creds,
            &old,
            &new,
            &[DeployTarget {
                resource_type: "clb".into(),
                regions: vec!["ap-shanghai".into()],
            }],
        )
        .await
        .unwrap();
    while !client
        .deploy_progress(&creds, rest.record_id)
        .await
        .unwrap()
        .is_finished()
    {}
    assert!(client.delete_certificate(&creds, &old).await.unwrap());
    assert!(state.certificate(&old).is_none());
    // Nothing bound to the old one any more: a deploy from it finds no instance.
    let err = client
        .update_certificate_instance(&creds, &new, &old, &targets)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("FailedOperation.CertificateNotFound"));
}

/// The control endpoints the CLI simulator offers for the same fixtures: bindings, deploy faults, records.
#[tokio::test]
async fn bindings_and_deploy_faults_can_be_set_over_http() {
    let sim = simulator().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sim.endpoint());
    let answer = http
        .post(url("/_sim/bindings"))
        .json(&serde_json::json!([
            {"certificate_id": "c1", "resource_type": "clb", "region": "ap-guangzhou", "instance_id": "lb-1"},
            {"certificate_id": "c1", "resource_type": "cdn", "instance_id": "shop.example.com"}
        ]))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let refused = http
        .post(url("/_sim/bindings"))
        .json(&serde_json::json!({"certificate_id": "c1", "resource_type": "ftp", "instance_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let listed: serde_json::Value = http
        .get(url("/_sim/bindings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["Bindings"].as_array().unwrap().len(), 2);
    assert_eq!(sim.state().bindings_of("c1").len(), 2);
    let fault = http
        .post(url("/_sim/deploy-faults"))
        .json(&serde_json::json!({"resource_type": "cdn", "remaining": 1}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let cleared = http
        .delete(url("/_sim/deploy-faults"))
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success());
    let records: serde_json::Value = http
        .get(url("/_sim/deploys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records["Records"], serde_json::json!([]));
}
