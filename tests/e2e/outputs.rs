//! Issue 14 on a real API server: a TencentCertificate asking for every output, the Secret as the API server
//! stores it, each output read back with openssl and keytool, and a password rotation through the labelled
//! password Secret that rewrites the keystores exactly once (counted by the operator's own write counter).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;

use super::{
    REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, eventually, free_port, real_cluster, scrape, simulator,
    start_operator, wait_ready,
};

const PASSWORD: &str = "e2e-First-password";
const ROTATED: &str = "e2e-Second-password";

fn password_secret(namespace: &str, password: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "keystore-password", "namespace": namespace,
                     "labels": {"tencentcert.io/credentials": "true"}},
        "stringData": {"password": password},
    }))
    .unwrap()
}

/// `tencentcert_secret_writes_total`, all operations.
async fn secret_writes(port: u16) -> f64 {
    let (_, metrics) = scrape(port, "/metrics").await.unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("tencentcert_secret_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tool_output(program: &str, args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new(program).args(args).output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

/// Reads the Secret's outputs back with openssl and keytool (each skipped when missing).
fn read_back(dir: &Path, secret: &Secret, password: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (key, value) in secret.data.as_ref().unwrap() {
        std::fs::write(dir.join(key), &value.0).unwrap();
    }
    let path = |key: &str| dir.join(key).to_string_lossy().into_owned();
    let pass = format!("pass:{password}");
    match tool_output(
        "openssl",
        &[
            "pkcs12",
            "-in",
            &path("keystore.p12"),
            "-passin",
            &pass,
            "-info",
            "-noout",
        ],
    ) {
        Some((ok, info)) => {
            assert!(ok, "openssl pkcs12: {info}");
            assert!(
                info.contains("AES-256-CBC") && info.contains("MAC: sha256"),
                "{info}"
            );
            eprintln!("openssl pkcs12 -info (from the cluster's Secret):\n{info}");
            let (ok, key) = tool_output(
                "openssl",
                &[
                    "pkey",
                    "-inform",
                    "DER",
                    "-in",
                    &path("key.der"),
                    "-noout",
                    "-text",
                ],
            )
            .unwrap();
            assert!(ok, "openssl pkey -inform DER: {key}");
            eprintln!(
                "openssl pkey -inform DER: {}",
                key.lines().next().unwrap_or_default()
            );
        }
        None => eprintln!("SKIP: openssl not installed"),
    }
    match tool_output(
        "keytool",
        &[
            "-list",
            "-storetype",
            "JKS",
            "-keystore",
            &path("keystore.jks"),
            "-storepass",
            password,
        ],
    ) {
        Some((ok, list)) => {
            assert!(ok, "keytool: {list}");
            assert!(
                list.contains("shop, ") && list.contains("PrivateKeyEntry"),
                "{list}"
            );
            eprintln!("keytool -list keystore.jks (from the cluster's Secret):\n{list}");
        }
        None => eprintln!("SKIP: keytool not installed"),
    }
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_outputs_and_keystore_password_rotation() {
    let Some(cluster) = real_cluster("e2e_real_outputs_and_keystore_password_rotation").await
    else {
        return;
    };
    let _shared = REAL_SERVER.read().await;
    let namespace = create_namespace(&cluster, "outputs").await;
    let sim = simulator().await;
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        &cluster,
        &sim,
        "outputs",
        port,
        &["--namespace", &namespace],
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    let apply = PatchParams::apply("e2e-test").force();
    secrets
        .patch(
            "tencent",
            &apply,
            &Patch::Apply(credentials_secret("tencent", &namespace, SECRET_KEY)),
        )
        .await
        .unwrap();

    // No password Secret yet: nothing is written, and the condition says why.
    let spec = json!({
        "certificateId": "e2eShop1",
        "credentialsRef": {"name": "tencent"},
        "secretName": "shop-tls",
        "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}],
        "keystores": {
            "pkcs12": {"create": true, "passwordSecretRef": {"name": "keystore-password", "key": "password"}},
            "jks": {"create": true, "passwordSecretRef": {"name": "keystore-password", "key": "password"}, "alias": "Shop"}
        },
        "certificateIdKey": "qcloud_cert_id"
    });
    crs.create(
        &PostParams::default(),
        &certificate("shop", &namespace, spec),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "False", "KeystorePasswordNotFound").await;
    assert!(secrets.get_opt("shop-tls").await.unwrap().is_none());

    // The password Secret appears (labelled, so watched): the Secret is written at once.
    secrets
        .patch(
            "keystore-password",
            &apply,
            &Patch::Apply(password_secret(&namespace, PASSWORD)),
        )
        .await
        .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let secret = secrets.get("shop-tls").await.unwrap();
    let mut summary = format!("Secret {namespace}/shop-tls type={:?}\n", secret.type_);
    for (key, value) in secret.data.as_ref().unwrap() {
        summary.push_str(&format!("  data[{key}]: {} bytes\n", value.0.len()));
    }
    for (key, value) in secret.metadata.annotations.as_ref().unwrap() {
        summary.push_str(&format!("  annotation {key}: {value}\n"));
    }
    eprintln!("{summary}");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.data.as_ref().unwrap()["qcloud_cert_id"].0,
        b"e2eShop1"
    );
    let dir = std::env::temp_dir().join(format!("tco-e2e-outputs-{}", std::process::id()));
    read_back(&dir, &secret, PASSWORD);

    // Quiet: nothing more is written while nothing changes.
    let writes = secret_writes(port).await;
    assert!(writes >= 1.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(secret_writes(port).await, writes);

    // Rotation: exactly one more write, keystores under the new password, same certificate.
    secrets
        .patch(
            "keystore-password",
            &apply,
            &Patch::Apply(password_secret(&namespace, ROTATED)),
        )
        .await
        .unwrap();
    let pass = format!("pass:{ROTATED}");
    eventually("the keystores use the rotated password", || {
        let secrets = secrets.clone();
        let dir = dir.clone();
        let pass = pass.clone();
        async move {
            let Ok(secret) = secrets.get("shop-tls").await else {
                return false;
            };
            let p12 = dir.join("rotated.p12");
            std::fs::write(&p12, &secret.data.as_ref().unwrap()["keystore.p12"].0).unwrap();
            tool_output(
                "openssl",
                &[
                    "pkcs12",
                    "-in",
                    &p12.to_string_lossy(),
                    "-passin",
                    &pass,
                    "-noout",
                ],
            )
            .is_some_and(|(ok, _)| ok)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(secret_writes(port).await, writes + 1.0, "exactly one write");
    let rotated = secrets.get("shop-tls").await.unwrap();
    let data = |s: &Secret, k: &str| s.data.as_ref().unwrap()[k].0.clone();
    assert_eq!(data(&rotated, "tls.crt"), data(&secret, "tls.crt"));
    assert_ne!(
        data(&rotated, "keystore.jks"),
        data(&secret, "keystore.jks")
    );
    read_back(&dir, &rotated, ROTATED);

    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !log.contains(PASSWORD) && !log.contains(ROTATED),
        "a keystore password reached the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
    delete_namespace(&cluster, &namespace).await;
}
