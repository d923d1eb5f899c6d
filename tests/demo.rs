//! `tencent-cert-operator demo`, the README's first command, as a person runs it: the binary with an
//! embedded API server, its printed report, the kubeconfig it prints (used here by a kube client and, when
//! installed, by kubectl), a deleted Secret coming back, and Ctrl-C removing what it wrote on disk.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tencent_cert_operator::crd::TencentCertificate;

/// Generous: a debug binary on a busy 2-core CI machine.
const WAIT: Duration = Duration::from_secs(90);

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"))
            .args(["demo", "--cluster", "embedded"])
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the demo never printed {needle:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait for the demo") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the demo did not stop within 10 s of SIGINT");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_every_outcome_and_cleans_up_on_ctrl_c() {
    let mut demo = Demo::start();
    let kubeconfig_line = demo.wait_for("  kubeconfig ");
    let kubeconfig = PathBuf::from(
        kubeconfig_line
            .trim()
            .trim_start_matches("kubeconfig")
            .trim(),
    );
    let dir = kubeconfig
        .parent()
        .expect("kubeconfig in a directory")
        .to_path_buf();
    assert!(kubeconfig.exists(), "{}", kubeconfig.display());

    let summary = demo.wait_for("demo resources settled");
    assert!(
        summary.contains("all 4 demo resources settled"),
        "{summary}"
    );
    assert!(
        summary.contains("2 Ready, 2 not Ready as intended"),
        "{summary}"
    );
    let report = demo.seen.join("\n");
    for expected in [
        "demo-shop      Ready        certificate demo0001 -> Secret default/demo-shop",
        "demo-api       Ready        certificate demo0002 -> Secret default/demo-api",
        "demo-no-key    KeyMissing   certificate csr.demo.test has no private key",
        "demo-expired   Expired      certificate demoOld001 expired",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    demo.wait_for(&format!("export KUBECONFIG={}", kubeconfig.display()));
    assert!(
        !report.contains("demo-secret-key-for-the-embedded-simulator"),
        "the report must not print the SecretKey"
    );

    // The printed kubeconfig works for a client, as it will for the person's kubectl.
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let certificates: Api<TencentCertificate> = Api::namespaced(client.clone(), "default");
    let shop = certificates.get("demo-shop").await.unwrap();
    assert!(shop.status.as_ref().is_some_and(|s| s.is_true("Ready")));

    if let Some(table) = kubectl(&kubeconfig, &["get", "tcert", "-o", "wide"]) {
        let header = table.lines().next().unwrap_or_default();
        for column in [
            "NAME",
            "CERTIFICATE ID",
            "SECRET",
            "READY",
            "REASON",
            "EXPIRES",
            "AGE",
        ] {
            assert!(header.contains(column), "no {column} column:\n{table}");
        }
        assert!(
            table.lines().any(|l| l.starts_with("demo-no-key")
                && l.contains("False")
                && l.contains("KeyMissing")),
            "{table}"
        );
        let described = kubectl(&kubeconfig, &["describe", "tcert", "demo-no-key"]).unwrap();
        assert!(described.contains("Events:"), "{described}");
        assert!(
            described.contains("Warning  KeyMissing"),
            "describe shows the operator's event:\n{described}"
        );
    } else {
        eprintln!("kubectl not installed: the kubectl part of the demo test is skipped");
    }

    // Delete a Secret: the demo reports it, and the operator writes it again.
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    secrets
        .delete("demo-shop", &DeleteParams::default())
        .await
        .unwrap();
    demo.wait_for("Secret default/demo-shop was deleted");
    demo.wait_for("Secret default/demo-shop is back");
    assert!(secrets.get_opt("demo-shop").await.unwrap().is_some());

    let status = demo.interrupt();
    assert!(status.success(), "exit status after Ctrl-C: {status}");
    let rest: Vec<String> = demo.lines.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("demo stopped") && l.contains("removed")),
        "{rest:?}"
    );
    assert!(!dir.exists(), "{} must be removed", dir.display());
}

/// kubectl as the README's reader runs it: from the checkout, with the demo's kubeconfig. kubectl is needed
/// (the machine image and CI have it).
fn kubectl_in_checkout(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl is needed for this test (it needs no cluster)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl {}: {stdout}{stderr}",
        args.join(" ")
    );
    println!("$ kubectl {}\n{stdout}{stderr}", args.join(" "));
    stdout
}

/// `examples/*.yaml` in the README's order: the credentials first, and the annotated Ingress last (its
/// generated TencentCertificate has the name of `tencentcertificate.yaml`'s, which goes first).
fn examples_in_readme_order() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let rank = |n: &str| match n {
        "credentials-secret.yaml" => 0,
        "ingress-annotated.yaml" => 2,
        _ => 1,
    };
    names.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    names
}

/// The Ready condition's (status, reason) of every TencentCertificate in `web`, once each has one.
async fn statuses_in_web(client: &kube::Client, expected: usize) -> Vec<(String, String, String)> {
    let api: Api<TencentCertificate> = Api::namespaced(client.clone(), "web");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = api.list(&Default::default()).await.unwrap();
        let statuses: Vec<(String, String, String)> = list
            .items
            .iter()
            .filter_map(|c| {
                let ready = c.status.as_ref()?.condition("Ready")?;
                Some((
                    kube::ResourceExt::name_any(c),
                    ready.status.clone(),
                    ready.reason.clone(),
                ))
            })
            .collect();
        if statuses.len() >= expected && statuses.len() == list.items.len() {
            return statuses;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every TencentCertificate in web got a status: {statuses:?} of {:?}",
            list.items
                .iter()
                .map(kube::ResourceExt::name_any)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After the demo, the README's next steps exactly as written, against the printed kubeconfig and with
/// kubectl's own validation (no `--validate=false`): `kubectl create namespace web`, then
/// `kubectl apply -f examples/…` for every example. Each TencentCertificate gets a status within seconds
/// (the examples' placeholder credentials fail as they would against Tencent Cloud), the annotated Ingress
/// gets its generated TencentCertificate, and with the demo's credentials (the README's `kubectl patch`)
/// they become Ready.
#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_apply_unmodified_against_the_demo() {
    let mut demo = Demo::start();
    let kubeconfig_line = demo.wait_for("  kubeconfig ");
    let kubeconfig = PathBuf::from(
        kubeconfig_line
            .trim()
            .trim_start_matches("kubeconfig")
            .trim(),
    );
    demo.wait_for("demo resources settled");
    let kubectl = |args: &[&str]| kubectl_in_checkout(&kubeconfig, args);
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    kubectl(&["create", "namespace", "web"]);
    let mut hand_written = 0;
    for example in examples_in_readme_order() {
        let path = format!("examples/{example}");
        if example == "ingress-annotated.yaml" {
            // The Ingress way to the same Secret: the hand-written shop-tls goes first (README).
            kubectl(&["delete", "-f", "examples/tencentcertificate.yaml"]);
            hand_written -= 1;
        }
        let applied = kubectl(&["apply", "-f", &path]);
        hand_written += applied
            .matches("tencentcertificate.tencentcert.io/")
            .count();
    }
    let statuses = statuses_in_web(&client, hand_written + 1).await;
    kubectl(&["get", "tcert", "-A", "-o", "wide"]);
    for (name, status, reason) in &statuses {
        assert_eq!(
            status, "False",
            "{name}: the examples' placeholder credentials cannot work"
        );
        assert!(
            ["AuthFailed", "AssumeRoleFailed", "CredentialsNotFound"].contains(&reason.as_str()),
            "{name}: {reason}"
        );
    }
    let generated: Api<TencentCertificate> = Api::namespaced(client.clone(), "web");
    let shop = generated.get("shop-tls").await.unwrap();
    let owner = shop.metadata.owner_references.unwrap_or_default();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "Ingress" && o.name == "shop-annotated"),
        "shop-tls is generated by the annotated Ingress: {owner:?}"
    );
    kubectl(&["get", "ingress", "-n", "web"]);
    kubectl(&["get", "secret", "-n", "web"]);

    // The demo's credentials, as the README gives them: the labelled Secret changes, so at once.
    kubectl(&[
        "-n",
        "web",
        "patch",
        "secret",
        "tencent-credentials",
        "-p",
        r#"{"stringData":{"secretId":"AKIDdemoTENCENTcertOPERATOR","secretKey":"demo-secret-key-for-the-embedded-simulator"}}"#,
    ]);
    let api: Api<TencentCertificate> = Api::namespaced(client.clone(), "web");
    let deadline = std::time::Instant::now() + WAIT;
    for name in ["shop-tls", "java-tls"] {
        loop {
            let c = api.get(name).await.unwrap();
            if c.status.as_ref().is_some_and(|s| s.is_true("Ready")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not become Ready with the demo's credentials: {:?}",
                c.status
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let table = kubectl(&["get", "tcert", "-A", "-o", "wide"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("shop-tls") && l.contains("True")),
        "{table}"
    );
    let secrets = kubectl(&["get", "secret", "-n", "web"]);
    let header = secrets.lines().next().unwrap_or_default();
    for column in ["NAME", "TYPE", "DATA", "AGE"] {
        assert!(header.contains(column), "{secrets}");
    }
    assert!(
        secrets
            .lines()
            .any(|l| l.starts_with("shop-tls ") && l.contains("kubernetes.io/tls")),
        "{secrets}"
    );

    // Namespaces go with their contents.
    kubectl(&["delete", "namespace", "web"]);
    let secrets: Api<Secret> = Api::namespaced(client, "web");
    let deadline = std::time::Instant::now() + WAIT;
    while !secrets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "web's Secrets outlived it"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = demo.interrupt();
    assert!(status.success(), "exit status after Ctrl-C: {status}");
}
