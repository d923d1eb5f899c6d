//! `tencent-cert-operator fetch`, the real binary, against the in-process simulator.

use std::path::Path;
use std::process::Output;

use k8s_openapi::api::core::v1::Secret;
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::bundle;

const SECRET_ID: &str = "AKIDfetchCLItest";
const SECRET_KEY: &str = "fetch-cli-secret-key";

async fn simulator() -> SimHandle {
    let mut config = SimConfig::single_account(
        SECRET_ID,
        SECRET_KEY,
        &[
            "shop0001:domain=shop.example.com,san=www.shop.example.com,with-root",
            "rsa00001:key=rsa2048",
            "nokey001:no-key",
            "pending1:status=0",
            "flaky001",
        ],
    )
    .unwrap();
    config.faults = vec!["flaky001=FailedOperation.NetworkError".parse().unwrap()];
    sim::start_local(config).await.unwrap()
}

async fn fetch(sim: &SimHandle, key: Option<&str>, args: &[&str]) -> Output {
    fetch_command(sim, key, true, args).output().await.unwrap()
}

/// `fetch` with the right key, with or without TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT.
async fn fetch_with(sim: &SimHandle, allow_insecure_env: bool, args: &[&str]) -> Output {
    fetch_command(sim, Some(SECRET_KEY), allow_insecure_env, args)
        .output()
        .await
        .unwrap()
}

fn fetch_command(
    sim: &SimHandle,
    key: Option<&str>,
    allow_insecure_env: bool,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"));
    command
        .arg("fetch")
        .args(args)
        .env_remove("TENCENTCLOUD_SESSION_TOKEN")
        .env_remove("TENCENTCLOUD_SECURITY_TOKEN")
        .env_remove("TENCENTCLOUD_TOKEN")
        .env("TENCENTCLOUD_ENDPOINT", sim.endpoint())
        .env_remove("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT")
        .env("TENCENTCLOUD_SECRET_ID", SECRET_ID);
    if allow_insecure_env {
        // The simulator speaks plain http.
        command.env("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT", "true");
    }
    match key {
        Some(key) => command.env("TENCENTCLOUD_SECRET_KEY", key),
        None => command.env_remove("TENCENTCLOUD_SECRET_KEY"),
    };
    command
}

fn data<'a>(secret: &'a Secret, key: &str) -> &'a [u8] {
    &secret.data.as_ref().unwrap()[key].0
}

/// Independent check with the openssl CLI when it is installed.
fn openssl_says_key_matches(dir: &Path) -> Option<bool> {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
    };
    let cert = run(&["x509", "-in", "tls.crt", "-pubkey", "-noout"])?;
    let key = run(&["pkey", "-in", "tls.key", "-pubout"])?;
    Some(cert.status.success() && key.status.success() && cert.stdout == key.stdout)
}

#[tokio::test]
async fn fetch_prints_a_tls_secret_whose_key_matches_the_certificate() {
    let sim = simulator().await;
    let out = fetch(
        &sim,
        Some(SECRET_KEY),
        &[
            "--certificate-id",
            "shop0001",
            "--namespace",
            "web",
            "--secret-name",
            "shop-tls",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret: Secret = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret.metadata.name.as_deref(), Some("shop-tls"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("web"));
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["tencentcert.io/certificate-id"],
        "shop0001"
    );
    // Reading the data back re-checks that the key belongs to the leaf.
    let read_back = bundle::from_pem_entries(&[
        ("tls.crt", data(&secret, "tls.crt")),
        ("tls.key", data(&secret, "tls.key")),
        ("ca.crt", data(&secret, "ca.crt")),
    ])
    .unwrap();
    assert_eq!(
        read_back.meta.dns_names,
        vec!["shop.example.com", "www.shop.example.com"]
    );
    assert!(read_back.ca_pem.is_some());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subject shop.example.com") && stderr.contains("sha256 "),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn fetch_prints_json_on_request() {
    let sim = simulator().await;
    let out = fetch(
        &sim,
        Some(SECRET_KEY),
        &["--certificate-id", "rsa00001", "--output", "json"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret: Secret = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("tencent-rsa00001"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RSA-2048 key"));
}

#[tokio::test]
async fn fetch_writes_private_files_and_refuses_to_overwrite() {
    let sim = simulator().await;
    let dir = std::env::temp_dir().join(format!("tco-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap();
    let out = fetch(
        &sim,
        Some(SECRET_KEY),
        &["--certificate-id", "shop0001", "--out-dir", dir_arg],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        assert!(meta.len() > 0);
    }
    let again = fetch(
        &sim,
        Some(SECRET_KEY),
        &["--certificate-id", "shop0001", "--out-dir", dir_arg],
    )
    .await;
    assert_eq!(again.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&again.stderr).contains("use --force"));
    let forced = fetch(
        &sim,
        Some(SECRET_KEY),
        &[
            "--certificate-id",
            "shop0001",
            "--out-dir",
            dir_arg,
            "--force",
        ],
    )
    .await;
    assert!(forced.status.success());
    match openssl_says_key_matches(&dir) {
        Some(matches) => assert!(matches, "openssl: tls.key does not match tls.crt"),
        None => eprintln!("SKIPPED openssl cross-check: openssl is not installed"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn fetch_exit_codes_tell_failures_apart() {
    let sim = simulator().await;
    let code = |out: Output| out.status.code();
    assert_eq!(
        code(fetch(&sim, None, &["--certificate-id", "shop0001"]).await),
        Some(3)
    );
    assert_eq!(
        code(fetch(&sim, Some("wrong"), &["--certificate-id", "shop0001"]).await),
        Some(3)
    );
    assert_eq!(
        code(fetch(&sim, Some(SECRET_KEY), &["--certificate-id", "flaky001"]).await),
        Some(4)
    );
    assert_eq!(
        code(fetch(&sim, Some(SECRET_KEY), &["--certificate-id", "missing1"]).await),
        Some(5)
    );
    assert_eq!(
        code(fetch(&sim, Some(SECRET_KEY), &["--certificate-id", "pending1"]).await),
        Some(6)
    );
    let no_key = fetch(&sim, Some(SECRET_KEY), &["--certificate-id", "nokey001"]).await;
    assert_eq!(no_key.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("requested with your own CSR"));
    assert_eq!(
        code(fetch(&sim, Some(SECRET_KEY), &["--bogus"]).await),
        Some(2)
    );
}

#[tokio::test]
async fn fetch_never_prints_the_secret_key() {
    let sim = simulator().await;
    for key in [SECRET_KEY, "wrong-key-should-not-print"] {
        for id in ["shop0001", "missing1", "nokey001"] {
            let out = fetch(&sim, Some(key), &["--certificate-id", id]).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains(key), "{stderr}");
        }
    }
}

/// The private key comes back in the answer: a plain-http endpoint is refused before anything is sent,
/// by `fetch` and by `run` (before it looks for a cluster), unless the flag or its env var allows it.
#[tokio::test]
async fn plain_http_endpoints_are_refused_without_the_flag() {
    let sim = simulator().await;
    let refused = fetch_with(&sim, false, &["--certificate-id", "shop0001"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing the plain-http Tencent endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-insecure-endpoint"), "{stderr}");
    assert_eq!(sim.stats().requests, 0, "nothing reached the endpoint");
    // The flag (rather than the env var) allows it.
    let allowed = fetch_with(
        &sim,
        false,
        &["--certificate-id", "shop0001", "--allow-insecure-endpoint"],
    )
    .await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // An http STS endpoint beside an https SSL endpoint is refused too.
    let sts = fetch_with(
        &sim,
        false,
        &[
            "--certificate-id",
            "shop0001",
            "--tencent-endpoint",
            "https://ssl.tencentcloudapi.com",
            "--sts-endpoint",
            &sim.endpoint(),
        ],
    )
    .await;
    assert_eq!(
        sts.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&sts.stderr)
    );

    let run = |allow: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"));
        command
            .args(["run", "--metrics-addr", "127.0.0.1:0"])
            .env("TENCENTCLOUD_ENDPOINT", sim.endpoint())
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT");
        if allow {
            command.env("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT", "true");
        }
        command.output()
    };
    let refused = run(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("refusing the plain-http Tencent endpoint"),
        "{stderr}"
    );
    // Allowed, it goes on to the cluster (there is none here).
    let allowed = run(true).await.unwrap();
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(!stderr.contains("plain-http"), "{stderr}");
    assert!(stderr.contains("Kubernetes"), "{stderr}");
}

/// Someone who can write in the output directory plants `tls.key -> ../victim`: `--force` replaces the
/// link, and the file it pointed to keeps its content. Without `--force` a planted (even dangling) link
/// counts as an existing file; a symlinked output directory is refused.
#[cfg(unix)]
#[tokio::test]
async fn fetch_force_does_not_follow_planted_symlinks() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let sim = simulator().await;
    let root = std::env::temp_dir().join(format!("tco-fetch-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = root.join("victim");
    std::fs::write(&victim, "the victim's own content\n").unwrap();
    symlink(&victim, dir.join("tls.key")).unwrap();
    symlink(root.join("nowhere"), dir.join("tls.crt")).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let args = ["--certificate-id", "shop0001", "--out-dir", dir_arg];

    let refused = fetch(&sim, Some(SECRET_KEY), &args).await;
    assert_eq!(refused.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("tls.key") && stderr.contains("tls.crt"),
        "{stderr}"
    );
    assert!(
        !root.join("nowhere").exists(),
        "the dangling link was followed"
    );

    let forced = fetch(&sim, Some(SECRET_KEY), &[&args[..], &["--force"]].concat()).await;
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the victim's own content\n"
    );
    assert!(
        !root.join("nowhere").exists(),
        "the dangling link was followed"
    );
    for name in ["tls.key", "tls.crt", "ca.crt"] {
        let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is still a link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert!(
        std::fs::read_to_string(dir.join("tls.key"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    // No temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // The output directory itself planted as a link to somewhere else.
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let linked = root.join("linked");
    symlink(&elsewhere, &linked).unwrap();
    let out = fetch(
        &sim,
        Some(SECRET_KEY),
        &[
            "--certificate-id",
            "shop0001",
            "--out-dir",
            linked.to_str().unwrap(),
            "--force",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_dir_all(&root).unwrap();
}
