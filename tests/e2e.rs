//! End to end: the real `tencent-cert-operator run` binary, the Tencent API simulator, and a Kubernetes API.
//!
//! - `e2e_against_kubeconfig_cluster` uses the cluster of `KUBECONFIG` (kind, k3d, minikube, …): installs the
//!   CRD, works in a fresh namespace, deletes it afterwards.
//! - `e2e_against_fake_apiserver` runs the same scenarios against the in-process fake API server through a
//!   generated kubeconfig, so CI exercises the binary and its watches without a cluster.
//!
//! - `chart` (tests/e2e/chart.rs): the Helm chart's own RBAC on a real API server.
//! - `cluster` (tests/e2e/cluster.rs): ClusterTencentCertificate across real namespaces and the real GC.
//! - `routes` (tests/e2e/routes.rs): annotated Ingresses and a Gateway (fixture CRD installed while the
//!   operator runs) get their Secrets, and lose them as the annotations say.
//! - `faults` (tests/e2e/faults.rs): the API server away and back, SIGKILL mid-sync, Tencent misbehaving,
//!   credentials rotation, namespace deletion — on a real API server.
//! - `node` (tests/e2e/node.rs): the chart installed with `helm install --wait` on kube-local's real node
//!   (`up --node`): the operator and the simulator as pods, probes, securityContext, SIGTERM, leader hand-over
//!   and the PDB, an API-server outage, `helm test`, upgrades from older committed charts.
//! - `fencing` (tests/e2e/fencing.rs): a leader frozen mid-backlog (SIGSTOP) until the standby took over and
//!   synced everything writes nothing once resumed — on a real API server.
//! - `leaks` (tests/e2e/leaks.rs): values of a tenant's credentials Secret, named by `secretIdKey`, never
//!   reach status, events, the log or the metrics — on a real API server.
//! - `push` (tests/e2e/push.rs): a TencentCertificatePush published, rotated, killed after an upload, a
//!   failing deploy retried and an expired pair refused — on a real API server.
//! - `renewal` (tests/e2e/renewal.rs): applying for the renewal of free certificates, with a SIGKILL
//!   between the application and the issue — on a real API server.
//! - `outputs` (tests/e2e/outputs.rs): keystores and other outputs, read back with openssl and keytool, and a
//!   keystore password rotation — on a real API server.
//!
//! Every test that needs a real cluster (or helm, or kube-local) carries one attribute, so that the summary
//! counts it as ignored rather than passed:
//! `#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]` (the reason may name helm or `KUBE_LOCAL`).
//! Run them against a disposable cluster: `KUBECONFIG=… cargo test --test e2e -- --ignored --nocapture`
//! (they fail, not skip, without one). With kube-local (shared/tools/kube-local), also set `KUBE_LOCAL` to the
//! script (with the `KUBE_LOCAL_DIR`/`KUBE_LOCAL_PORT` of the instance) for the API-server outage test, which
//! stops and starts that server, and `HELM` for the chart test.

#[path = "e2e/chart.rs"]
mod chart;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/fencing.rs"]
mod fencing;
#[path = "e2e/leaks.rs"]
mod leaks;
#[path = "e2e/node.rs"]
mod node;
#[path = "e2e/outputs.rs"]
mod outputs;
#[path = "e2e/pod_identity.rs"]
mod pod_identity;
#[path = "e2e/push.rs"]
mod push;
#[path = "e2e/renewal.rs"]
mod renewal;
#[path = "e2e/routes.rs"]
mod routes;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, SimConfig, SimHandle};

const SECRET_ID: &str = "AKIDendTOendTEST001";
const SECRET_KEY: &str = "end-to-end-secret-key";
const WAIT: Duration = Duration::from_secs(60);

/// Tests on the real API server share it; the outage test takes it alone (it stops the server).
static REAL_SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Cluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    real: bool,
}

/// The cluster of `KUBECONFIG` (or ~/.kube/config), if one answers within a few seconds.
async fn kubeconfig_cluster() -> Result<Cluster, String> {
    let path = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .filter(|p| p.exists())
        .ok_or("no KUBECONFIG and no ~/.kube/config")?;
    let config = kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("unreadable kubeconfig {}: {e}", path.display()))?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .map_err(|_| "the API server did not answer within 5s".to_string())?
        .map_err(|e| format!("the API server is unreachable: {e}"))?;
    Ok(Cluster {
        client,
        kubeconfig: path,
        real: true,
    })
}

async fn simulator() -> SimHandle {
    sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[
                "e2eShop1:domain=shop.e2e.test",
                "e2eNew01:domain=new.e2e.test",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .ok()
}

/// Polls `check` until it holds or `WAIT` passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {WAIT:?} waiting for: {what}");
}

fn ready(cr: &TencentCertificate) -> Option<(String, String)> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_ready(crs: &Api<TencentCertificate>, name: &str, status: &str, reason: &str) {
    let want = Some((status.to_string(), reason.to_string()));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = crs.get_opt(name).await.ok().flatten();
        if last.as_ref().and_then(ready) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "timed out after {WAIT:?} waiting for {name} Ready={status} ({reason}); last status: {:#?}",
        last.and_then(|cr| cr.status)
    );
}

fn credentials_secret(name: &str, namespace: &str, key: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"tencentcert.io/credentials": "true"}},
        "stringData": {"secretId": SECRET_ID, "secretKey": key},
    }))
    .unwrap()
}

fn certificate(name: &str, namespace: &str, spec: serde_json::Value) -> TencentCertificate {
    let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
    cr.metadata.namespace = Some(namespace.into());
    cr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `tencent-cert-operator run` with its log in a file; returns the process and the log path.
fn start_operator(
    cluster: &Cluster,
    sim: &SimHandle,
    label: &str,
    metrics_port: u16,
    extra: &[&str],
) -> (tokio::process::Child, PathBuf) {
    start_operator_with_env(cluster, sim, label, metrics_port, extra, &[])
}

/// [`start_operator`] with extra environment variables.
fn start_operator_with_env(
    cluster: &Cluster,
    sim: &SimHandle,
    label: &str,
    metrics_port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, PathBuf) {
    let log_path = std::env::temp_dir().join(format!("tco-e2e-{label}-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    // Another build (e.g. main's, for a before/after comparison) when E2E_OPERATOR_BIN names one.
    let binary = std::env::var_os("E2E_OPERATOR_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tencent-cert-operator").into());
    let child = tokio::process::Command::new(binary)
        .arg("run")
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(extra)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("TENCENTCLOUD_ENDPOINT", sim.endpoint())
        .env("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT", "true")
        // Debug level: the secrecy checks then cover the most verbose logs too.
        .env(
            "RUST_LOG",
            std::env::var("E2E_OPERATOR_LOG")
                .unwrap_or_else(|_| "debug,hyper=info,h2=info,rustls=info,tower=info".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, log_path)
}

async fn scrape(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// `--log-format json`: every line is one JSON object with a level and a message.
fn assert_json_log(log_path: &Path) {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry.get("message").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 0, "empty JSON log");
}

fn assert_log_has_no_secrets(log_path: &Path) {
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(!log.is_empty(), "empty operator log {}", log_path.display());
    assert!(
        !log.contains(SECRET_KEY),
        "the SecretKey appeared in the operator's log"
    );
    assert!(
        !log.contains("wrong-key"),
        "a SecretKey appeared in the operator's log"
    );
    assert!(
        !log.contains("PRIVATE KEY"),
        "key material appeared in the operator's log"
    );
}

/// The scenarios, against whatever API `cluster` points at.
async fn scenarios(cluster: &Cluster, namespace: &str) {
    let sim = simulator().await;
    let metrics_port = free_port();
    let (mut operator, log_path) = start_operator(
        cluster,
        &sim,
        namespace,
        metrics_port,
        &["--namespace", namespace],
    );

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), namespace);
    let apply = PatchParams::apply("e2e-test").force();
    secrets
        .patch(
            "tencent",
            &apply,
            &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();

    // CR → Secret → Ready.
    crs.create(
        &PostParams::default(),
        &certificate(
            "shop",
            namespace,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"},
            "secretTemplate": {"labels": {"team": "web"}}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let secret = secrets.get("shop").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let original_data = secret.data.clone();
    if cluster.real
        && let Some(out) = kubectl(
            &cluster.kubeconfig,
            &[
                "-n",
                namespace,
                "wait",
                "--for=condition=Ready",
                "tcert/shop",
                "--timeout=30s",
            ],
        )
    {
        assert!(
            out.status.success(),
            "kubectl wait: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Health, readiness and metrics of the running operator.
    assert_eq!(
        scrape(metrics_port, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        scrape(metrics_port, "/readyz").await.map(|r| r.0),
        Some(200)
    );
    let ready_series = format!(
        "tencentcert_certificate_ready{{namespace=\"{namespace}\",name=\"shop\",certificate_id=\"e2eShop1\",reason=\"Ready\"}} 1"
    );
    let (_, metrics) = scrape(metrics_port, "/metrics").await.unwrap();
    for expected in [
        ready_series.as_str(),
        "tencentcert_tencent_requests_total{action=\"DownloadCertificate\",code=\"Success\"}",
        "tencentcert_certificate_expiration_timestamp_seconds{",
        "tencentcert_secret_writes_total{operation=\"create\"}",
        "tencentcert_reconciles_total{result=\"synced\"",
        "tencentcert_leader 1",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from /metrics:\n{metrics}"
        );
    }
    eprintln!(
        "/metrics excerpt:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("tencentcert_") && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Drift repair: a deleted Secret comes back, a removed label is restored — through the watches.
    secrets
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted Secret is re-created", || async {
        secrets
            .get_opt("shop")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.data == original_data)
    })
    .await;
    secrets
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    eventually("the removed label is restored", || async {
        secrets
            .get_opt("shop")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.metadata.labels)
            .is_some_and(|l| l.get("team").map(String::as_str) == Some("web"))
    })
    .await;

    // A foreign Secret is left alone.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken", "namespace": namespace}, "type": "Opaque", "data": {"x": "eQ=="}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate("conflict", namespace, json!({"certificateId": "e2eShop1", "secretName": "taken", "credentialsRef": {"name": "tencent"}})),
    )
    .await
    .unwrap();
    wait_ready(&crs, "conflict", "False", "SecretConflict").await;
    assert_eq!(secrets.get("taken").await.unwrap().data, foreign.data);

    // Bad credentials are reported, and fixing them syncs at once (not after the 5-minute retry).
    secrets
        .patch(
            "bad",
            &apply,
            &Patch::Apply(credentials_secret("bad", namespace, "wrong-key")),
        )
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate(
            "creds",
            namespace,
            json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "bad"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "creds", "False", "AuthFailed").await;
    secrets
        .patch(
            "bad",
            &apply,
            &Patch::Apply(credentials_secret("bad", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();
    wait_ready(&crs, "creds", "True", "Ready").await;

    if cluster.real
        && let Some(out) = kubectl(&cluster.kubeconfig, &["-n", namespace, "get", "tcert"])
    {
        eprintln!(
            "kubectl get tcert:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Garbage collection: deleting the resource deletes its Secret (deletionPolicy Delete), and its
    // metric series go too.
    crs.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("the garbage collector deletes the owned Secret", || async {
        secrets.get_opt("shop").await.ok().flatten().is_none()
    })
    .await;
    eventually("the deleted resource's series leave /metrics", || async {
        scrape(metrics_port, "/metrics")
            .await
            .is_some_and(|(_, m)| !m.contains("name=\"shop\""))
    })
    .await;

    // Graceful shutdown on SIGTERM: exit 0, promptly.
    #[cfg(unix)]
    if let Some(pid) = operator.id() {
        let signalled = std::time::Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let exit = tokio::time::timeout(Duration::from_secs(25), operator.wait())
            .await
            .expect("the operator stops within its shutdown grace after SIGTERM")
            .unwrap();
        eprintln!("SIGTERM → exit {exit:?} in {:?}", signalled.elapsed());
        assert!(exit.success(), "exit status {exit:?}");
    }
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let _ = std::fs::remove_file(&log_path);
}

async fn leader_of(ports: &[u16]) -> Option<usize> {
    for (index, port) in ports.iter().enumerate() {
        if let Some((_, metrics)) = scrape(*port, "/metrics").await
            && metrics.lines().any(|l| l == "tencentcert_leader 1")
        {
            return Some(index);
        }
    }
    None
}

/// Two replicas with leader election: one reconciles; killing it hands over within the lease duration.
async fn leader_handover(cluster: &Cluster, namespace: &str) {
    let sim = simulator().await;
    let ports = [free_port(), free_port()];
    let election = [
        "--namespace",
        namespace,
        "--leader-elect",
        "--leader-election-namespace",
        namespace,
        "--lease-duration",
        "4",
        "--lease-renew-grace",
        "1",
        "--log-format",
        "json",
    ];
    let mut first = start_operator(
        cluster,
        &sim,
        &format!("{namespace}-a"),
        ports[0],
        &election,
    );
    let mut second = start_operator(
        cluster,
        &sim,
        &format!("{namespace}-b"),
        ports[1],
        &election,
    );
    let mut leader = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while leader.is_none() && tokio::time::Instant::now() < deadline {
        leader = leader_of(&ports).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let leader = leader.expect("one replica leads");
    // Both are ready: one leading, one standing by.
    for port in ports {
        eventually("both replicas are ready", || async {
            scrape(port, "/readyz").await.map(|r| r.0) == Some(200)
        })
        .await;
    }
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), namespace);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate(
            "before",
            namespace,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "before", "True", "Ready").await;
    // Kill the leader outright (no Lease release).
    let (dead, standby) = if leader == 0 {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    dead.0.kill().await.unwrap();
    let killed = std::time::Instant::now();
    let standby_port = ports[1 - leader];
    eventually("the standby takes over", || async {
        scrape(standby_port, "/metrics")
            .await
            .is_some_and(|(_, m)| m.lines().any(|l| l == "tencentcert_leader 1"))
    })
    .await;
    let took = killed.elapsed();
    eprintln!("leader killed; standby took over after {took:?} (lease duration 4s)");
    assert!(took < Duration::from_secs(10), "{took:?}");
    crs.create(
        &PostParams::default(),
        &certificate(
            "after",
            namespace,
            json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "after", "True", "Ready").await;
    let _ = standby.0.kill().await;
    for log in [&first.1, &second.1] {
        assert_log_has_no_secrets(log);
        assert_json_log(log);
        let _ = std::fs::remove_file(log);
    }
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_against_kubeconfig_cluster() {
    let _shared = REAL_SERVER.read().await;
    let cluster = match kubeconfig_cluster().await {
        Ok(cluster) => cluster,
        Err(why) => panic!(
            "e2e_against_kubeconfig_cluster needs a cluster: {why}. Set KUBECONFIG to a disposable cluster (e.g. kube-local)."
        ),
    };
    install_crd(&cluster);
    let namespace = format!("tco-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    scenarios(&cluster, &namespace).await;
    let elected = format!("{namespace}-ha");
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": elected}})).unwrap(),
        )
        .await
        .unwrap();
    leader_handover(&cluster, &elected).await;
    namespaces
        .delete(&elected, &DeleteParams::default())
        .await
        .unwrap();
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}

/// Applies crds/tencentcertificate.yaml and waits until it is served.
fn install_crd(cluster: &Cluster) {
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/tencentcertificate.yaml");
    let out = kubectl(&cluster.kubeconfig, &["apply", "-f", crd])
        .expect("kubectl is needed for the cluster e2e");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &cluster.kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/tencentcertificates.tencentcert.io",
            "--timeout=60s",
        ],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real cluster of `KUBECONFIG` with the CRD installed. The tests calling it are `#[ignore]`d (they
/// run with `-- --ignored`), so a missing cluster fails them: a test asked for must not pass by doing nothing.
/// (`Option` so that the callers' `let Some(cluster) = … else { return }` reads as before.)
async fn real_cluster(test: &str) -> Option<Cluster> {
    match kubeconfig_cluster().await {
        Ok(cluster) => {
            install_crd(&cluster);
            Some(cluster)
        }
        Err(why) => panic!(
            "{test} needs a cluster: {why}. Set KUBECONFIG to a disposable cluster (e.g. kube-local)."
        ),
    }
}

/// Creates the namespace `tco-e2e-<pid>-<suffix>` and returns its name.
async fn create_namespace(cluster: &Cluster, suffix: &str) -> String {
    let name = format!("tco-e2e-{}-{suffix}", std::process::id());
    Api::<Namespace>::all(cluster.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    name
}

async fn delete_namespace(cluster: &Cluster, name: &str) {
    let _ = Api::<Namespace>::all(cluster.client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// The fake API server, reached by the binary through a generated kubeconfig.
async fn fake_cluster(label: &str) -> (FakeApiServer, Cluster) {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let kubeconfig =
        std::env::temp_dir().join(format!("tco-e2e-{label}-kubeconfig-{}", std::process::id()));
    api.write_kubeconfig(&kubeconfig).unwrap();
    let cluster = Cluster {
        client: api.client(),
        kubeconfig,
        real: false,
    };
    (api, cluster)
}

#[tokio::test]
async fn e2e_against_fake_apiserver() {
    let (_api, cluster) = fake_cluster("main").await;
    scenarios(&cluster, "e2e").await;
    let _ = std::fs::remove_file(&cluster.kubeconfig);
}

#[tokio::test]
async fn e2e_leader_handover_against_fake_apiserver() {
    let (_api, cluster) = fake_cluster("ha").await;
    leader_handover(&cluster, "ha").await;
    let _ = std::fs::remove_file(&cluster.kubeconfig);
}

/// The README's demo: `run --demo` with the manifests of `examples/demo/`, exactly as a newcomer applies them.
#[tokio::test]
async fn e2e_demo_with_the_example_manifests_against_fake_apiserver() {
    let (_api, cluster) = fake_cluster("demo").await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("tco-e2e-demo-{}.log", std::process::id()));
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"))
        .args([
            "run",
            "--demo",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo");
    for file in ["credentials.yaml", "certificates.yaml"] {
        let text = std::fs::read_to_string(format!("{demo}/{file}")).unwrap();
        for document in text.split("\n---").filter(|d| d.contains("kind:")) {
            let object: serde_json::Value = serde_saphyr::from_str(document).unwrap();
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            match object["kind"].as_str() {
                Some("Secret") => {
                    let secret: Secret = serde_json::from_value(object).unwrap();
                    Api::<Secret>::namespaced(cluster.client.clone(), "default")
                        .patch(
                            &name,
                            &PatchParams::apply("kubectl").force(),
                            &Patch::Apply(&secret),
                        )
                        .await
                        .unwrap();
                }
                Some("TencentCertificate") => {
                    let cr: TencentCertificate = serde_json::from_value(object).unwrap();
                    Api::<TencentCertificate>::namespaced(cluster.client.clone(), "default")
                        .create(&PostParams::default(), &cr)
                        .await
                        .unwrap();
                }
                other => panic!("unexpected kind {other:?} in {file}"),
            }
        }
    }
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), "default");
    wait_ready(&crs, "demo-shop", "True", "Ready").await;
    wait_ready(&crs, "demo-api", "True", "Ready").await;
    wait_ready(&crs, "demo-no-key", "False", "KeyMissing").await;
    wait_ready(&crs, "demo-expired", "False", "Expired").await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    assert!(secrets.get_opt("demo-shop").await.unwrap().is_some());
    assert!(secrets.get_opt("demo-expired").await.unwrap().is_none());
    let _ = operator.kill().await;
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&cluster.kubeconfig);
}
