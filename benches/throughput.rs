//! `cargo bench --bench throughput`: how fast the hot paths are, on this machine.
//! Not a test: it prints figures and asserts nothing about time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tencent_cert_operator::outputs::{self, Passwords, Previous, SecretKeySelector, SecretOutputs};
use tencent_cert_operator::secret::{self, SecretParams};
use tencent_sim::{self as sim, Account, CertificateSpec, SimConfig, catalog};
use tencent_ssl::bundle;
use tencent_ssl::limiter::LimiterConfig;
use tencent_ssl::sign::{self, RequestToSign};
use tencent_ssl::{Client, ClientConfig, Credentials};

/// Runs `f` repeatedly for about `budget` and reports the rate.
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) {
    f();
    let started = Instant::now();
    let mut iterations = 0u64;
    while started.elapsed() < budget {
        f();
        iterations += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "{name:<48} {:>12.0} ops/s  {:>10.2} µs/op  ({iterations} iterations)",
        iterations as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / iterations as f64
    );
}

fn main() {
    let budget = Duration::from_secs(2);
    let body = br#"{"CertificateId":"aBcD1234"}"#;
    measure("TC3 sign (DownloadCertificate)", budget, || {
        black_box(sign::sign(
            "secret-key",
            "ssl",
            1_700_000_000,
            &RequestToSign {
                method: "POST",
                query: "",
                headers: &[
                    ("content-type", "application/json"),
                    ("host", "ssl.tencentcloudapi.com"),
                ],
                payload: body,
            },
        ));
    });

    for spec in [
        "ecdsa01:key=p256",
        "rsa2048a:key=rsa2048",
        "rsa4096a:key=rsa4096",
    ] {
        let spec: CertificateSpec = spec.parse().expect("spec");
        let built = catalog::build(std::slice::from_ref(&spec), None).expect("certificate");
        let zip = &built[0].zip;
        measure(
            &format!("bundle::extract ({}, {} B ZIP)", spec.id, zip.len()),
            budget,
            || {
                black_box(bundle::extract(zip).expect("bundle"));
            },
        );
        let extracted = bundle::extract(zip).expect("bundle");
        let params = SecretParams {
            namespace: "web".into(),
            name: "shop".into(),
            certificate_name: "shop".into(),
            certificate_id: spec.id.clone(),
            include_ca: true,
            ..SecretParams::default()
        };
        measure(&format!("secret::desired ({})", spec.id), budget, || {
            black_box(secret::desired(&params, &extracted));
        });
        // Keystores: fresh encodings (a new certificate or password), and the check of an unchanged wave
        // that keeps the Secret's bytes (what every reconcile of a resource with keystores does).
        let options: SecretOutputs = serde_json::from_value(serde_json::json!({
            "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}],
            "keystores": {
                "pkcs12": {"create": true, "passwordSecretRef": {"name": "p", "key": "password"}},
                "jks": {"create": true, "passwordSecretRef": {"name": "p", "key": "password"}}
            }
        }))
        .expect("options");
        let mut passwords = Passwords::default();
        passwords.insert(
            SecretKeySelector {
                name: "p".into(),
                key: "password".into(),
            },
            "bench-password".into(),
        );
        let derive = |previous: Previous<'_>| {
            outputs::derive(&extracted, &spec.id, &options, true, &passwords, previous)
                .expect("outputs")
        };
        measure(
            &format!("outputs::derive, fresh keystores ({})", spec.id),
            budget,
            || {
                black_box(derive(Previous::default()));
            },
        );
        let first = derive(Previous::default());
        let digest = first
            .annotations
            .get(outputs::KEYSTORES_DIGEST_ANNOTATION)
            .cloned();
        measure(
            &format!("outputs::derive, unchanged, kept ({})", spec.id),
            budget,
            || {
                black_box(derive(Previous {
                    data: Some(&first.data),
                    keystores_digest: digest.as_deref(),
                }));
            },
        );
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let simulator = sim::start(
            SimConfig {
                accounts: vec![Account {
                    secret_id: "AKIDbench".into(),
                    secret_key: "bench-key".into(),
                    token: None,
                }],
                certificates: (0..64)
                    .map(|i| CertificateSpec::new(format!("bench{i:03}")))
                    .collect(),
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
        .expect("simulator");
        let client = Client::new(ClientConfig {
            endpoint: simulator.endpoint(),
            download_cache_ttl: Duration::ZERO,
            limiter: LimiterConfig::per_second(1_000_000.0),
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .expect("client");
        let credentials = Credentials::new("AKIDbench", "bench-key", None).expect("credentials");
        for concurrency in [1usize, 16] {
            let started = Instant::now();
            let mut done = 0u64;
            while started.elapsed() < Duration::from_secs(3) {
                let ids: Vec<String> = (0..concurrency)
                    .map(|i| format!("bench{:03}", (done as usize + i) % 64))
                    .collect();
                let batch = ids
                    .iter()
                    .map(|id| client.download_certificate(&credentials, id));
                for result in futures::future::join_all(batch).await {
                    result.expect("download");
                }
                done += concurrency as u64;
            }
            println!(
                "{:<48} {:>12.0} downloads/s",
                format!("client ↔ simulator downloads, {concurrency} concurrent"),
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    });
}
