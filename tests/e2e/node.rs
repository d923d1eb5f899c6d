//! The chart installed the way users install it, on kube-local's real worker node (`kube-local up --node`):
//! `helm install --wait` of an image packed from the operator binary (`kube-local image-from-binary`), the
//! Tencent API simulator as a Pod of the same image (pods reach only the API server and pod IPs), probes,
//! the chart's securityContext as the kernel applies it, SIGTERM from the kubelet, leader hand-over and the
//! PodDisruptionBudget, an API-server outage, `helm test`, and upgrades from older committed charts.
//!
//! Needs: `KUBECONFIG` (kube-local with `--node`), `KUBE_LOCAL` (the script, for `image-from-binary` and the
//! outage), helm (`HELM`, or packaging-checks' pinned copy) and git (old charts come from `git archive`).
//! A test asked for (`--ignored`) fails with a message when one is missing. The image holds the binary the
//! Dockerfile would copy: a release build without default features (no `demo`, no fake API server), which
//! `hack/image-binary.sh` builds and copies to `target/image/tencent-cert-operator` (the default), or
//! `E2E_NODE_BINARY`; a binary that has the `demo` command is refused. Run the suite with
//! `KUBE_LOCAL_NODE=1`, so that the outage test of faults.rs brings the node back with the API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tencent_cert_operator::crd::TencentCertificate;

use super::{
    Cluster, REAL_SERVER, SECRET_ID, SECRET_KEY, certificate, create_namespace, credentials_secret,
    delete_namespace, kubeconfig_cluster, kubectl, wait_ready,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/tencent-cert-operator");
/// The commit this chart's CRDs-as-templates work started from: its chart keeps the CRDs in crds/.
const PREVIOUS_CHART_COMMIT: &str = "3238c5de2e6ca4417b7fff2e156438649112930b";
/// The chart of issue 24's report: a TencentCertificate CRD without the later fields
/// (`certificateIdKey`, outputs, ...) and no ClusterTencentCertificate CRD.
const OLD_CRD_CHART_COMMIT: &str = "37848c8eb4b6a839723729a26fb8631a45fba312";
const CRDS: [&str; 3] = [
    "tencentcertificates.tencentcert.io",
    "clustertencentcertificates.tencentcert.io",
    "tencentcertificatepushes.tencentcert.io",
];
/// For the charts from before `allowInsecureEndpoint`: the simulator's http endpoint allowed through
/// `extraEnv` (`--set-json`: with `--set` the value would be a boolean, which a Deployment refuses).
const OLD_CHART_INSECURE: [&str; 2] = [
    "--set-json",
    r#"extraEnv=[{"name":"TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT","value":"true"}]"#,
];
const SIM_PORT: u16 = 8443;
const INSTALL_TIMEOUT: &str = "5m";

/// The packed image, once per test process: (repository, tag).
static IMAGE: tokio::sync::OnceCell<Result<(String, String), String>> =
    tokio::sync::OnceCell::const_new();

struct NodeEnv {
    cluster: Cluster,
    helm: PathBuf,
    kube_local: PathBuf,
    image: (String, String),
    scratch: PathBuf,
}

/// The node tests are `#[ignore]`d and run only when asked for (`-- --ignored`): a missing node, helm or
/// kube-local then fails them, so that a test asked for never passes by doing nothing.
fn missing(test: &str, why: &str) -> ! {
    panic!("{test} cannot run: {why}");
}

/// Everything a node test needs (`Option` so that the callers' `let Some(env) = … else { return }` reads as before).
async fn node_env(test: &str) -> Option<NodeEnv> {
    let Some(helm) = super::chart::helm() else {
        missing(
            test,
            "no helm (set HELM, or run .ci/packaging-checks once to install it)",
        )
    };
    let Some(kube_local) = std::env::var_os("KUBE_LOCAL").map(PathBuf::from) else {
        missing(
            test,
            "set KUBE_LOCAL to the kube-local script (its instance started with `up --node`)",
        )
    };
    let cluster = match kubeconfig_cluster().await {
        Ok(cluster) => cluster,
        Err(why) => missing(
            test,
            &format!("{why}. Start kube-local with --node and set KUBECONFIG."),
        ),
    };
    let nodes = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let ready = nodes.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    if !ready {
        missing(
            test,
            "the cluster has no Ready node (kube-local up --node adds one)",
        )
    }
    let image = IMAGE
        .get_or_init(|| async { pack_image(&kube_local) })
        .await
        .clone();
    let image = match image {
        Ok(image) => image,
        Err(why) => missing(test, &format!("no image: {why}")),
    };
    let scratch = std::env::temp_dir().join(format!("tco-e2e-node-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let env = NodeEnv {
        cluster,
        helm,
        kube_local,
        image,
        scratch,
    };
    env.remove_stale_releases();
    Some(env)
}

/// The binary the Dockerfile copies into the image: `E2E_NODE_BINARY`, or what `hack/image-binary.sh` built.
fn image_binary() -> PathBuf {
    std::env::var_os("E2E_NODE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
                .join("image/tencent-cert-operator")
        })
}

/// `kube-local image-from-binary`: the binary the Dockerfile would copy, with its libraries, as an image.
/// Refuses a binary built with the default features (its `demo` command embeds the fake API server, which
/// the image's `--no-default-features` build leaves out).
fn pack_image(kube_local: &Path) -> Result<(String, String), String> {
    let binary = image_binary();
    if !binary.is_file() {
        return Err(format!(
            "no {}: build it the Dockerfile's way with hack/image-binary.sh (or set E2E_NODE_BINARY)",
            binary.display()
        ));
    }
    let demo = std::process::Command::new(&binary)
        .args(["demo", "--help"])
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if demo.status.success() {
        return Err(format!(
            "{} has the demo command: not the image's build (cargo build --release --no-default-features; \
             hack/image-binary.sh)",
            binary.display()
        ));
    }
    let repository = "tco-e2e".to_string();
    let tag = format!("run-{}", std::process::id());
    let started = Instant::now();
    let out = std::process::Command::new(kube_local)
        .args(["image-from-binary", &format!("{repository}:{tag}")])
        .arg(&binary)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    eprintln!(
        "image {repository}:{tag} from {} in {:?}",
        binary.display(),
        started.elapsed()
    );
    Ok((repository, tag))
}

impl NodeEnv {
    /// Uninstalls the release `tco` a failed earlier test left (it ends before its clean-up), and the
    /// ClusterRoles and bindings of one whose namespace is gone: the next install would refuse them.
    fn remove_stale_releases(&self) {
        let out = self.helm_command(&[
            "list",
            "--all-namespaces",
            "--all",
            "--filter",
            "^tco$",
            "-o",
            "json",
        ]);
        let releases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for release in releases {
            let Some(namespace) = release["namespace"].as_str() else {
                continue;
            };
            eprintln!("removing the release tco that an earlier run left in {namespace}");
            let _ = self.helm_command(&["uninstall", "tco", "--namespace", namespace, "--wait"]);
        }
        // A release whose namespace was deleted is gone from Helm's records, its cluster-wide RBAC is not.
        let _ = kubectl(
            &self.cluster.kubeconfig,
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                "-l",
                "app.kubernetes.io/instance=tco",
                "--ignore-not-found",
            ],
        );
    }

    fn helm_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.helm)
            .args(args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("HELM_CACHE_HOME", self.scratch.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.scratch.join("helm/config"))
            .env("HELM_DATA_HOME", self.scratch.join("helm/data"))
            .output()
            .expect("helm runs")
    }

    /// Runs helm, prints the command, its time and output, and returns stdout; panics when it fails.
    fn helm_ok(&self, args: &[&str]) -> String {
        let started = Instant::now();
        let out = self.helm_command(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "$ helm {} ({:.1?}, {})",
            args.join(" "),
            started.elapsed(),
            out.status
        );
        assert!(
            out.status.success(),
            "helm {}:\n{stdout}\n{stderr}",
            args.join(" ")
        );
        stdout
    }

    /// `--set` flags of this chart for the packed image and the simulator (an http endpoint, allowed).
    fn image_values(&self, endpoint: &str) -> Vec<String> {
        let mut values = self.old_chart_image_values(endpoint);
        values.push("allowInsecureEndpoint=true".into());
        values
    }

    /// The same for a chart from before `allowInsecureEndpoint` (its schema refuses the key); the operator's
    /// variable goes in through `extraEnv` (`OLD_CHART_INSECURE`, flags for `helm_deploy`'s `extra`).
    fn old_chart_image_values(&self, endpoint: &str) -> Vec<String> {
        vec![
            format!("image.repository={}", self.image.0),
            format!("image.tag={}", self.image.1),
            "image.pullPolicy=Never".into(),
            format!("tencentEndpoint={endpoint}"),
        ]
    }

    /// `helm install|upgrade RELEASE CHART -n NAMESPACE --wait` with `values` as --set flags.
    fn helm_deploy(
        &self,
        verb: &str,
        release: &str,
        chart: &Path,
        namespace: &str,
        values: &[String],
        extra: &[&str],
    ) -> String {
        let chart = chart.to_string_lossy().into_owned();
        let mut args = vec![
            verb,
            release,
            chart.as_str(),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            INSTALL_TIMEOUT,
        ];
        for value in values {
            args.push("--set");
            args.push(value);
        }
        args.extend_from_slice(extra);
        self.helm_ok(&args)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = kubectl(&self.cluster.kubeconfig, args).expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The chart of an older commit, out of git, in the scratch directory.
    fn chart_at(&self, commit: &str) -> PathBuf {
        let dir = self.scratch.join(format!("chart-{}", &commit[..12]));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git -C '{}' archive {commit} charts/tencent-cert-operator | tar -x -C '{}'",
                env!("CARGO_MANIFEST_DIR"),
                dir.display()
            ))
            .status()
            .expect("sh runs");
        assert!(status.success(), "git archive {commit} of the chart");
        dir.join("charts/tencent-cert-operator")
    }

    /// The Tencent API simulator as a Pod of the packed image; returns its endpoint (pod IP).
    async fn start_simulator(&self, namespace: &str) -> String {
        // Its own ServiceAccount, not the namespace's `default`: the controller manager creates that a moment
        // after the namespace, and a minute or more late after the outage test's API-server restart (its
        // informers back off), while the API server refuses a pod whose ServiceAccount does not exist.
        let accounts: Api<ServiceAccount> = Api::namespaced(self.cluster.client.clone(), namespace);
        let account: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "tencent-sim", "namespace": namespace},
            "automountServiceAccountToken": false
        }))
        .unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), namespace);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "tencent-sim", "namespace": namespace, "labels": {"app": "tencent-sim"}},
            "spec": {
                "serviceAccountName": "tencent-sim",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "sim", "image": format!("{}:{}", self.image.0, self.image.1),
                    "imagePullPolicy": "Never",
                    "args": ["sim", "--listen", format!("0.0.0.0:{SIM_PORT}"),
                             "--certificate", "e2eShop1:domain=shop.e2e.test",
                             "--certificate", "e2eNew01:domain=new.e2e.test"],
                    "env": [{"name": "SIM_SECRET_ID", "value": SECRET_ID},
                            {"name": "SIM_SECRET_KEY", "value": SECRET_KEY}],
                    "ports": [{"name": "api", "containerPort": SIM_PORT}],
                    "readinessProbe": {"tcpSocket": {"port": SIM_PORT}, "periodSeconds": 1},
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                        "capabilities": {"drop": ["ALL"]}}
                }]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let ip = loop {
            let pod = pods.get("tencent-sim").await.ok();
            if let Some(ip) = pod
                .filter(pod_ready)
                .and_then(|p| p.status)
                .and_then(|s| s.pod_ip)
            {
                break ip;
            }
            assert!(
                Instant::now() < deadline,
                "the simulator pod is not Ready after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let endpoint = format!("http://{ip}:{SIM_PORT}");
        eprintln!("simulator pod: {endpoint}");
        endpoint
    }

    /// Deletes both CRDs (and with them every TencentCertificate) and waits until they are gone, so that
    /// an install starts from a cluster that never had the operator.
    async fn delete_crds(&self) {
        for crd in CRDS {
            let _ = kubectl(
                &self.cluster.kubeconfig,
                &["delete", "crd", crd, "--ignore-not-found", "--wait=true"],
            );
        }
    }

    async fn operator_pods(&self, namespace: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.cluster.client.clone(), namespace)
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Every container of every pod in `namespaces` has restartCount 0 and never terminated.
    async fn assert_no_restarts(&self, namespaces: &[&str]) {
        let mut seen = 0;
        for namespace in namespaces {
            let pods = Api::<Pod>::namespaced(self.cluster.client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .unwrap();
            for pod in pods.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                for status in pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
                {
                    seen += 1;
                    assert_eq!(
                        status.restart_count, 0,
                        "{namespace}/{name} container {} restarted: {:?}",
                        status.name, status.last_state
                    );
                    assert!(
                        status
                            .last_state
                            .as_ref()
                            .and_then(|s| s.terminated.as_ref())
                            .is_none(),
                        "{namespace}/{name}: {:?}",
                        status.last_state
                    );
                }
            }
        }
        eprintln!("no container restarts: {seen} containers in {namespaces:?}");
    }

    /// `kubectl logs` of every operator pod has no secret in it.
    async fn assert_logs_clean(&self, namespace: &str) {
        for pod in self.operator_pods(namespace).await {
            let name = pod.metadata.name.unwrap_or_default();
            let log = self.kubectl_ok(&["-n", namespace, "logs", &name]);
            assert!(!log.is_empty(), "no log from {name}");
            for secret in [SECRET_KEY, "PRIVATE KEY"] {
                assert!(!log.contains(secret), "{secret} in the log of {name}");
            }
            let forbidden: Vec<&str> = log
                .lines()
                .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
                .take(3)
                .collect();
            assert!(forbidden.is_empty(), "{name}: {forbidden:#?}");
        }
    }

    /// A workload namespace with a credentials Secret and a TencentCertificate `shop`, Ready.
    async fn ready_certificate(&self, namespace: &str) -> (Api<Secret>, Api<TencentCertificate>) {
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client.clone(), namespace);
        let crs: Api<TencentCertificate> = Api::namespaced(self.cluster.client.clone(), namespace);
        secrets
            .patch(
                "tencent",
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
            )
            .await
            .unwrap();
        let started = Instant::now();
        crs.create(
            &PostParams::default(),
            &certificate(
                "shop",
                namespace,
                json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
            ),
        )
        .await
        .unwrap();
        wait_ready(&crs, "shop", "True", "Ready").await;
        eprintln!(
            "TencentCertificate {namespace}/shop Ready from the operator pod in {:?}",
            started.elapsed()
        );
        (secrets, crs)
    }

    /// `helm uninstall` and the namespaces deleted (the CRDs stay: crds.keep).
    async fn cleanup(&self, release: &str, namespaces: &[&str]) {
        let _ = self.helm_command(&["uninstall", release, "--namespace", namespaces[0], "--wait"]);
        for namespace in namespaces {
            delete_namespace(&self.cluster, namespace).await;
        }
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 250 ms until it holds; panics after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

async fn http_status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .ok()?;
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The host process of the operator container of pod `uid` (pods' cgroups carry `pod<uid>`).
fn operator_process(uid: &str) -> Option<u32> {
    let marker = format!("pod{uid}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if !cgroup.contains(&marker) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with("tencent-cert-operator"))
            && args.get(1).map(String::as_str) == Some("run")
        {
            return Some(pid);
        }
    }
    None
}

/// What the kernel applies to the operator process: the chart's securityContext (user and group 65532, no
/// capabilities, no_new_privs, seccomp filter, read-only root filesystem).
fn assert_restricted(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let seen = [
        ("Uid:", field("Uid:"), "65532 65532 65532 65532"),
        ("Gid:", field("Gid:"), "65532 65532 65532 65532"),
        ("CapEff:", field("CapEff:"), "0000000000000000"),
        ("CapPrm:", field("CapPrm:"), "0000000000000000"),
        ("CapBnd:", field("CapBnd:"), "0000000000000000"),
        ("NoNewPrivs:", field("NoNewPrivs:"), "1"),
        ("Seccomp:", field("Seccomp:"), "2"),
    ];
    for (name, value, want) in &seen {
        assert_eq!(value, want, "/proc/{pid}/status {name}");
    }
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("a root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "the root filesystem is mounted {}",
        root[5]
    );
    eprintln!(
        "operator process {pid}: {}; root filesystem {}",
        seen.iter()
            .map(|(n, v, _)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        root[5]
    );
}

/// Deletes `pod` (the kubelet sends SIGTERM) and follows it until it is gone: its container's exit code
/// and the time from the delete to the container's end.
async fn delete_and_follow(pods: &Api<Pod>, name: &str) -> (Option<i32>, Duration) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(pods.clone(), config).boxed();
    // The watch first lists, then the delete goes out.
    while let Some(event) = stream.next().await {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            break;
        }
    }
    let deleted = Instant::now();
    pods.delete(name, &DeleteParams::default()).await.unwrap();
    let mut exit = None;
    let mut ended = None;
    let deadline = tokio::time::sleep(Duration::from_secs(90));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            event = stream.next() => {
                let Some(Ok(event)) = event else { continue };
                let (pod, gone) = match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, false),
                    watcher::Event::Delete(pod) => (pod, true),
                    _ => continue,
                };
                let terminated = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.name == "operator")
                    .and_then(|c| c.state)
                    .and_then(|s| s.terminated);
                if let Some(terminated) = terminated
                    && exit.is_none()
                {
                    exit = Some(terminated.exit_code);
                    ended = Some(deleted.elapsed());
                }
                if gone {
                    break;
                }
            }
        }
    }
    (exit, ended.unwrap_or_else(|| deleted.elapsed()))
}

/// `kubectl cordon NODE` until dropped (then uncordoned, also when the test fails).
struct Cordon {
    kubeconfig: PathBuf,
    node: String,
}

impl Cordon {
    fn new(kubeconfig: &Path, node: &str) -> Self {
        let out = kubectl(kubeconfig, &["cordon", node]).expect("kubectl runs");
        assert!(out.status.success(), "kubectl cordon {node}");
        Cordon {
            kubeconfig: kubeconfig.to_path_buf(),
            node: node.to_string(),
        }
    }
}

impl Drop for Cordon {
    fn drop(&mut self) {
        let _ = kubectl(&self.kubeconfig, &["uncordon", &self.node]);
    }
}

fn lease_holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// Defaults: `helm install --wait` as the README says, from a cluster without the CRDs; a TencentCertificate
/// Ready through the pod; the securityContext in force; `helm test`; SIGTERM → exit 0 within the grace
/// period; no restarts; `helm uninstall` keeps the CRDs and the resources (crds.keep).
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of kube-local up --node, and helm"]
async fn e2e_node_chart_defaults() {
    const TEST: &str = "e2e_node_chart_defaults";
    let _alone = REAL_SERVER.write().await;
    let Some(env) = node_env(TEST).await else {
        return;
    };
    env.delete_crds().await;
    let release_namespace = create_namespace(&env.cluster, "node").await;
    let app = create_namespace(&env.cluster, "node-app").await;
    let endpoint = env.start_simulator(&release_namespace).await;
    let installed = Instant::now();
    env.helm_deploy(
        "install",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &env.image_values(&endpoint),
        &[],
    );
    eprintln!("helm install --wait (defaults): {:?}", installed.elapsed());
    env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "rollout",
        "status",
        "deployment/tco-tencent-cert-operator",
        "--timeout=60s",
    ]);
    let (secrets, crs) = env.ready_certificate(&app).await;

    let pods = env.operator_pods(&release_namespace).await;
    assert_eq!(pods.len(), 1, "one replica by default");
    let uid = pods[0].metadata.uid.clone().unwrap();
    let pid = operator_process(&uid).expect("the operator's process on this host");
    assert_restricted(pid);

    let test = env.helm_ok(&["test", "tco", "--namespace", &release_namespace, "--logs"]);
    eprintln!("{test}");
    assert!(test.contains("Phase:          Succeeded"), "{test}");
    assert!(test.contains("check passed"), "{test}");

    env.assert_logs_clean(&release_namespace).await;
    env.assert_no_restarts(&[&release_namespace]).await;

    // SIGTERM from the kubelet: the pod deleted; the container ends with 0 within the grace period (30 s).
    let name = pods[0].metadata.name.clone().unwrap();
    let pod_api: Api<Pod> = Api::namespaced(env.cluster.client.clone(), &release_namespace);
    let (exit, took) = delete_and_follow(&pod_api, &name).await;
    eprintln!("pod {name} deleted: container exit {exit:?} after {took:?}");
    assert_eq!(exit, Some(0), "the operator's exit code after SIGTERM");
    assert!(took < Duration::from_secs(30), "{took:?}");
    env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "rollout",
        "status",
        "deployment/tco-tencent-cert-operator",
        "--timeout=120s",
    ]);
    wait_ready(&crs, "shop", "True", "Ready").await;
    env.assert_no_restarts(&[&release_namespace]).await;

    // crds.keep: uninstalling leaves the CRDs, the resource and its Secret.
    env.helm_ok(&[
        "uninstall",
        "tco",
        "--namespace",
        &release_namespace,
        "--wait",
    ]);
    for crd in CRDS {
        env.kubectl_ok(&["get", "crd", crd]);
    }
    assert!(crs.get_opt("shop").await.unwrap().is_some());
    assert!(secrets.get_opt("shop").await.unwrap().is_some());
    eprintln!("helm uninstall: both CRDs, the TencentCertificate and its Secret kept");
    env.cleanup("tco", &[&release_namespace, &app]).await;
}

/// Two replicas, watchNamespaces and the PodDisruptionBudget: both pods Ready, the PDB lets one eviction
/// through and refuses the next; the leader pod goes and the other replica takes the Lease and repairs a
/// deleted Secret; no restarts.
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of kube-local up --node, and helm"]
async fn e2e_node_chart_two_replicas_watch_namespaces() {
    const TEST: &str = "e2e_node_chart_two_replicas_watch_namespaces";
    let _alone = REAL_SERVER.write().await;
    let Some(env) = node_env(TEST).await else {
        return;
    };
    let release_namespace = create_namespace(&env.cluster, "node-ha").await;
    let app = create_namespace(&env.cluster, "node-ha-app").await;
    let endpoint = env.start_simulator(&release_namespace).await;
    let mut values = env.image_values(&endpoint);
    values.extend([
        "replicaCount=2".to_string(),
        format!("watchNamespaces={{{app}}}"),
        "podDisruptionBudget.enabled=true".to_string(),
    ]);
    let installed = Instant::now();
    env.helm_deploy(
        "install",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &values,
        &["--take-ownership"],
    );
    eprintln!(
        "helm install --wait (2 replicas, watchNamespaces, PDB): {:?}",
        installed.elapsed()
    );
    let pods = env.operator_pods(&release_namespace).await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(pod_ready), "both replicas Ready");
    let (secrets, crs) = env.ready_certificate(&app).await;

    // A node drain, as `kubectl drain` does it: the node cordoned (the replacement pod stays Pending), the
    // leader evicted — the PDB (maxUnavailable 1) lets it go — then the standby's eviction refused.
    let pdb_status = || {
        env.kubectl_ok(&[
            "-n",
            &release_namespace,
            "get",
            "pdb",
            "tco-tencent-cert-operator",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.expectedPods} healthy, {.status.disruptionsAllowed} disruption allowed",
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pdb = pdb_status();
    while pdb != "2/2 healthy, 1 disruption allowed" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pdb = pdb_status();
    }
    eprintln!("PodDisruptionBudget: {pdb}");
    assert_eq!(pdb, "2/2 healthy, 1 disruption allowed");
    let leases: Api<Lease> = Api::namespaced(env.cluster.client.clone(), &release_namespace);
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let holder = leases
            .get("tencent-cert-operator")
            .await
            .ok()
            .and_then(|l| lease_holder(&l));
        if let Some(holder) = holder.filter(|h| names.contains(h)) {
            break holder;
        }
        assert!(Instant::now() < deadline, "no running pod holds the Lease");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let standby = names.iter().find(|n| **n != leader).unwrap().clone();
    let node = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap();
    let cordoned = Cordon::new(&env.cluster.kubeconfig, &node);
    // kube's client retries a 429 by default (15 times, backing off up to minutes): not for this question.
    let mut config = kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    config.default_retry = false;
    let pod_api: Api<Pod> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), &release_namespace);
    let evict = kube::api::EvictParams::default();
    pod_api
        .evict(&leader, &evict)
        .await
        .expect("the PDB allows evicting one of two pods");
    let evicted = Instant::now();
    match pod_api.evict(&standby, &evict).await {
        Err(kube::Error::Api(status)) if status.code == 429 => {
            eprintln!(
                "leader {leader} evicted; evicting {standby} next refused: {}",
                status.message
            )
        }
        other => panic!("the PDB let the second pod go: {other:?}"),
    }

    // The standby takes the Lease (the replacement cannot start on the cordoned node) and repairs a
    // deleted Secret.
    until(
        Duration::from_secs(60),
        "the standby holds the Lease",
        || {
            let leases = leases.clone();
            let standby = standby.clone();
            async move {
                leases
                    .get("tencent-cert-operator")
                    .await
                    .ok()
                    .and_then(|l| lease_holder(&l))
                    == Some(standby)
            }
        },
    )
    .await;
    eprintln!(
        "{standby} holds the Lease {:?} after the leader's eviction",
        evicted.elapsed()
    );
    let original = secrets.get("shop").await.unwrap().data;
    secrets
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    until(
        Duration::from_secs(60),
        "the new leader re-creates the Secret",
        || {
            let secrets = secrets.clone();
            let original = original.clone();
            async move {
                secrets
                    .get_opt("shop")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.data == original)
            }
        },
    )
    .await;
    eprintln!(
        "deleted Secret re-created by {standby} in {:?}",
        deleted.elapsed()
    );
    drop(cordoned);
    wait_ready(&crs, "shop", "True", "Ready").await;
    env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "rollout",
        "status",
        "deployment/tco-tencent-cert-operator",
        "--timeout=120s",
    ]);
    env.assert_logs_clean(&release_namespace).await;
    env.assert_no_restarts(&[&release_namespace]).await;
    env.cleanup("tco", &[&release_namespace, &app]).await;
}

fn apiserver_pid() -> Option<u32> {
    let dir = std::env::var_os("KUBE_LOCAL_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kube-local")))?;
    std::fs::read_to_string(dir.join("run/kube-apiserver.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Restarts the API server (and only what is down) if the outage test fails while it is away.
struct ApiServerBack<'a>(&'a Path, bool);

impl ApiServerBack<'_> {
    fn start(&mut self) {
        let out = std::process::Command::new(self.0)
            .args(["up", "--node"])
            .output()
            .expect("kube-local runs");
        assert!(
            out.status.success(),
            "kube-local up --node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.1 = false;
    }
}

impl Drop for ApiServerBack<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new(self.0)
                .args(["up", "--node"])
                .output();
        }
    }
}

/// The API server goes away for 25 s while the operator pod runs: its readiness probe fails (/readyz 503,
/// asked on the pod IP from the node), its liveness probe does not (/healthz 200), and the kubelet does not
/// restart it; once the server is back the pod is Ready again, the same process, and it repairs a Secret.
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of kube-local up --node, and helm"]
async fn e2e_node_api_server_outage_probes() {
    const TEST: &str = "e2e_node_api_server_outage_probes";
    let _alone = REAL_SERVER.write().await;
    let Some(env) = node_env(TEST).await else {
        return;
    };
    let release_namespace = create_namespace(&env.cluster, "node-outage").await;
    let app = create_namespace(&env.cluster, "node-outage-app").await;
    let endpoint = env.start_simulator(&release_namespace).await;
    env.helm_deploy(
        "install",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &env.image_values(&endpoint),
        &["--take-ownership"],
    );
    let (secrets, crs) = env.ready_certificate(&app).await;
    let pod = env.operator_pods(&release_namespace).await.remove(0);
    let pod_name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
    let pid = operator_process(&uid).expect("the operator process");
    let readyz = format!("http://{ip}:8080/readyz");
    let healthz = format!("http://{ip}:8080/healthz");
    assert_eq!(http_status(&readyz).await, Some(200));

    let apiserver = apiserver_pid().expect("kube-local's kube-apiserver pid file");
    let mut back = ApiServerBack(&env.kube_local, true);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &apiserver.to_string()])
        .status();
    tokio::time::sleep(Duration::from_secs(3)).await;
    if Path::new(&format!("/proc/{apiserver}")).exists() {
        // A terminating kube-apiserver keeps serving open watches for a while: make the outage real.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &apiserver.to_string()])
            .status();
    }
    let down = Instant::now();
    let (mut unready, mut unhealthy, mut polls) = (0, 0, 0);
    while down.elapsed() < Duration::from_secs(25) {
        polls += 1;
        if http_status(&readyz).await == Some(503) {
            unready += 1;
        }
        if http_status(&healthz).await != Some(200) {
            unhealthy += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "API server away {:?}: /readyz 503 in {unready} of {polls} polls, /healthz not 200 in {unhealthy}",
        down.elapsed()
    );
    assert!(unready > 0, "/readyz kept answering 200 during the outage");
    assert_eq!(unhealthy, 0, "/healthz failed during the outage");
    assert_eq!(
        operator_process(&uid),
        Some(pid),
        "the container was restarted"
    );

    back.start();
    let answering = Instant::now();
    let pods: Api<Pod> = Api::namespaced(env.cluster.client.clone(), &release_namespace);
    until(
        Duration::from_secs(120),
        "the operator pod is Ready again",
        || {
            let pods = pods.clone();
            let pod_name = pod_name.clone();
            async move { pods.get(&pod_name).await.is_ok_and(|p| pod_ready(&p)) }
        },
    )
    .await;
    eprintln!(
        "API server back: pod Ready again after {:?}",
        answering.elapsed()
    );
    assert_eq!(operator_process(&uid), Some(pid), "the same process");
    let original = secrets.get("shop").await.unwrap().data;
    secrets
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    until(Duration::from_secs(60), "the Secret is re-created", || {
        let secrets = secrets.clone();
        let original = original.clone();
        async move {
            secrets
                .get_opt("shop")
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.data == original)
        }
    })
    .await;
    wait_ready(&crs, "shop", "True", "Ready").await;
    env.assert_no_restarts(&[&release_namespace]).await;
    // The kubelet saw the readiness probe fail (its events reach the API server once it is back).
    let events = env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod_name},reason=Unhealthy"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    eprintln!("kubelet Unhealthy events of {pod_name}:\n{events}");
    assert!(
        !events.contains("Liveness probe failed"),
        "the liveness probe failed: {events}"
    );
    env.cleanup("tco", &[&release_namespace, &app]).await;
}

/// The objects of a release (`helm get manifest`), as the API server has them, without what changes by
/// itself (status, resourceVersion, managedFields, ...): "KIND NAMESPACE/NAME" → object.
fn release_objects(env: &NodeEnv, release: &str, namespace: &str) -> BTreeMap<String, Value> {
    let manifest = env.helm_ok(&["get", "manifest", release, "--namespace", namespace]);
    let mut objects = BTreeMap::new();
    for document in manifest.split("\n---").filter(|d| d.contains("kind:")) {
        let object: Value = serde_saphyr::from_str(document).expect("helm's manifest is YAML");
        let kind = object["kind"].as_str().unwrap().to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let object_namespace = object["metadata"]["namespace"].as_str().map(String::from);
        let mut args = vec![
            "get".to_string(),
            kind.clone(),
            name.clone(),
            "-o".into(),
            "json".into(),
        ];
        if let Some(ns) = &object_namespace {
            args.extend(["-n".into(), ns.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let live = strip(serde_json::from_str(&env.kubectl_ok(&args)).unwrap());
        objects.insert(
            format!("{kind} {}/{name}", object_namespace.unwrap_or_default()),
            live,
        );
    }
    objects
}

/// The JSON paths where `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    let empty = Value::Object(Default::default());
    let (a, b) = match (a, b) {
        (Value::Null, Value::Object(_)) => (&empty, b),
        (Value::Object(_), Value::Null) => (a, &empty),
        _ => (a, b),
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                differences(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &format!("{path}.{key}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (index, (x, y)) in x.iter().zip(y).enumerate() {
                differences(x, y, &format!("{path}[{index}]"), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Every changed path between two release snapshots ("KIND NS/NAME: .path").
fn release_diff(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<String> {
    let mut changes = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        match (before.get(key), after.get(key)) {
            (Some(a), Some(b)) => {
                let mut paths = Vec::new();
                differences(a, b, "", &mut paths);
                changes.extend(paths.into_iter().map(|p| format!("{key}: {p}")));
            }
            (Some(_), None) => changes.push(format!("{key}: removed")),
            (None, Some(_)) => changes.push(format!("{key}: added")),
            (None, None) => {}
        }
    }
    changes
}

/// Watches `shop` while an upgrade runs: counts the polls where it was not Ready.
fn watch_ready(crs: Api<TencentCertificate>) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let not_ready = Arc::new(AtomicUsize::new(0));
    let counter = not_ready.clone();
    let task = tokio::spawn(async move {
        loop {
            let ready = crs
                .get_opt("shop")
                .await
                .ok()
                .flatten()
                .as_ref()
                .and_then(super::ready)
                .is_some_and(|(status, _)| status == "True");
            if !ready {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (not_ready, task)
}

/// The TLS Secret's identity and version: the same after an upgrade means nobody rewrote it.
async fn secret_version(secrets: &Api<Secret>) -> (String, String) {
    let secret = secrets.get("shop").await.unwrap();
    (
        secret.metadata.uid.unwrap_or_default(),
        secret.metadata.resource_version.unwrap_or_default(),
    )
}

/// What the adoption step of the README does to CRDs installed from a chart's crds/ directory, so that
/// the release may own them (Helm refuses objects it did not create).
fn adopt_crds(env: &NodeEnv, release: &str, namespace: &str) {
    for crd in CRDS {
        if kubectl(&env.cluster.kubeconfig, &["get", "crd", crd])
            .is_some_and(|o| o.status.success())
        {
            env.kubectl_ok(&[
                "label",
                "--overwrite",
                "crd",
                crd,
                "app.kubernetes.io/managed-by=Helm",
            ]);
            env.kubectl_ok(&[
                "annotate",
                "--overwrite",
                "crd",
                crd,
                &format!("meta.helm.sh/release-name={release}"),
                &format!("meta.helm.sh/release-namespace={namespace}"),
            ]);
        }
    }
}

/// From the chart of 37848c8 (its CRD lacks `certificateIdKey` and more; no ClusterTencentCertificate CRD)
/// to this one: a field the old CRD prunes, a plain `helm upgrade` refused until the CRDs are adopted (the
/// README's one-time step), then the upgrade: the CRDs upgraded (the field kept and acted on), every
/// resource and Secret kept, Ready throughout, no restarts.
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of kube-local up --node, and helm"]
async fn e2e_node_upgrade_from_old_crd_chart() {
    const TEST: &str = "e2e_node_upgrade_from_old_crd_chart";
    let _alone = REAL_SERVER.write().await;
    let Some(env) = node_env(TEST).await else {
        return;
    };
    let old_chart = env.chart_at(OLD_CRD_CHART_COMMIT);
    env.delete_crds().await;
    let release_namespace = create_namespace(&env.cluster, "node-up-old").await;
    let app = create_namespace(&env.cluster, "node-up-old-app").await;
    let endpoint = env.start_simulator(&release_namespace).await;
    let old_values = env.old_chart_image_values(&endpoint);
    let values = env.image_values(&endpoint);
    env.helm_deploy(
        "install",
        "tco",
        &old_chart,
        &release_namespace,
        &old_values,
        &OLD_CHART_INSECURE,
    );
    let (secrets, crs) = env.ready_certificate(&app).await;

    // The old CRD prunes a field it does not know.
    let with_key = certificate(
        "keyed",
        &app,
        json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "tencent"},
               "certificateIdKey": "certificate-id"}),
    );
    let created = crs.create(&PostParams::default(), &with_key).await.unwrap();
    let pruned = serde_json::to_value(&created.spec).unwrap();
    eprintln!(
        "old CRD: spec.certificateIdKey after create: {}",
        pruned["certificateIdKey"]
    );
    assert!(pruned["certificateIdKey"].is_null(), "the old CRD kept it");
    crs.delete("keyed", &DeleteParams::default()).await.unwrap();
    assert!(
        kubectl(&env.cluster.kubeconfig, &["get", "crd", CRDS[1]])
            .is_some_and(|o| !o.status.success()),
        "the old chart has no ClusterTencentCertificate CRD"
    );

    // A plain upgrade is refused: the CRDs exist and this release did not create them.
    let chart = CHART.to_string();
    let mut args = vec![
        "upgrade",
        "tco",
        chart.as_str(),
        "--namespace",
        &release_namespace,
    ];
    let sets: Vec<String> = values.iter().map(|v| format!("--set={v}")).collect();
    args.extend(sets.iter().map(String::as_str));
    let refused = env.helm_command(&args);
    let message = String::from_utf8_lossy(&refused.stderr).into_owned();
    eprintln!("plain helm upgrade: {}: {}", refused.status, message.trim());
    assert!(!refused.status.success());
    assert!(message.contains("invalid ownership metadata"), "{message}");

    let before = secret_version(&secrets).await;
    let (not_ready, watching) = watch_ready(crs.clone());
    adopt_crds(&env, "tco", &release_namespace);
    let upgraded = Instant::now();
    env.helm_deploy(
        "upgrade",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &values,
        &[],
    );
    eprintln!(
        "helm upgrade --wait after adoption: {:?}",
        upgraded.elapsed()
    );
    env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "rollout",
        "status",
        "deployment/tco-tencent-cert-operator",
        "--timeout=120s",
    ]);
    watching.abort();
    assert_eq!(
        not_ready.load(Ordering::Relaxed),
        0,
        "shop was not Ready during the upgrade"
    );
    assert_eq!(
        secret_version(&secrets).await,
        before,
        "the Secret was rewritten"
    );
    for crd in CRDS {
        let labels = env.kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.metadata.labels.helm\\.sh/chart} {.metadata.annotations.helm\\.sh/resource-policy}"]);
        eprintln!("{crd}: {labels}");
        assert!(labels.ends_with(" keep"), "{crd}: {labels}");
    }
    // The upgraded CRD keeps the field, and the operator acts on it.
    crs.create(&PostParams::default(), &with_key).await.unwrap();
    wait_ready(&crs, "keyed", "True", "Ready").await;
    let keyed = secrets.get("keyed").await.unwrap();
    let value = keyed
        .data
        .as_ref()
        .and_then(|d| d.get("certificate-id"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned());
    eprintln!("upgraded CRD: Secret keyed has certificate-id = {value:?}");
    assert_eq!(value.as_deref(), Some("e2eNew01"));
    wait_ready(&crs, "shop", "True", "Ready").await;
    env.assert_logs_clean(&release_namespace).await;
    env.assert_no_restarts(&[&release_namespace]).await;
    env.cleanup("tco", &[&release_namespace, &app]).await;
}

/// The paths of `.spec` where the CRDs of `old_chart` (its crds/) and of this chart (files/crds/) differ, as
/// "CustomResourceDefinition /NAME: .path": what upgrading the CRDs is to change in them.
fn crd_changes(old_chart: &Path) -> Vec<String> {
    let mut changes = Vec::new();
    for file in [
        "tencentcertificate.yaml",
        "clustertencentcertificate.yaml",
        "tencentcertificatepush.yaml",
    ] {
        let read = |path: PathBuf| -> Value {
            std::fs::read_to_string(&path)
                .map(|text| serde_saphyr::from_str(&text).expect("a CRD file is YAML"))
                .unwrap_or(Value::Null)
        };
        let new = read(Path::new(CHART).join("files/crds").join(file));
        let old = read(old_chart.join("crds").join(file));
        let name = new["metadata"]["name"].as_str().expect("the CRD's name");
        let mut paths = Vec::new();
        differences(&old["spec"], &new["spec"], ".spec", &mut paths);
        changes.extend(
            paths
                .into_iter()
                .map(|p| format!("CustomResourceDefinition /{name}: {p}")),
        );
    }
    changes
}

/// Why an upgrade from the previous chart may change `change` ("KIND NS/NAME: .path"), or `None`.
/// `crds`: the CRD changes between the two charts (`crd_changes`).
fn expected_change(change: &str, crds: &[String]) -> Option<&'static str> {
    let (object, path) = change.split_once(": ")?;
    let crd = object.starts_with("CustomResourceDefinition ");
    if crd && crds.iter().any(|c| c == change) {
        Some("this chart's CRD differs there: the CRD upgraded")
    } else if object == "CustomResourceDefinition /tencentcertificatepushes.tencentcert.io"
        && path == "added"
    {
        Some("the TencentCertificatePush CRD is new (issue 26)")
    } else if (object.starts_with("ClusterRole ") || object.starts_with("Role "))
        && path.starts_with(".rules")
    {
        Some("the operator's and people's rules for TencentCertificatePushes (issue 26)")
    } else if path.ends_with(".labels.helm.sh/chart") {
        Some("the chart version (the pods' labels no longer carry it)")
    } else if crd && path.starts_with(".metadata.annotations.meta.helm.sh/") {
        Some("the release owns the CRDs now")
    } else if crd
        && (path.starts_with(".metadata.labels.app.kubernetes.io/")
            || path == ".metadata.annotations.helm.sh/resource-policy")
    {
        Some("the CRDs' chart labels and resource-policy keep")
    } else if object.starts_with("Deployment ")
        && path.starts_with(".spec.template.spec.containers[0].resources")
    {
        Some("default resources set from the benchmark")
    } else if object.starts_with("Deployment ")
        && (path == ".spec.template.spec.containers[0].env"
            || path.starts_with(".spec.template.spec.containers[0].env.OPERATOR_RENEWAL_"))
    {
        Some(
            "the renewal settings (OPERATOR_RENEWAL_APPLICATIONS, OPERATOR_RENEWAL_POLL_INTERVAL) joined the environment",
        )
    } else {
        None
    }
}

/// From the previous committed chart to this one: exactly the expected fields change (listed), every
/// resource and Secret is kept, Ready throughout; then an upgrade to the same chart changes nothing at all
/// (same resourceVersions, same pod); the README's `kubectl apply --server-side --force-conflicts -f crds/`
/// works on a Helm-managed install; and `crds.enabled=false` leaves the (kept) CRDs in place.
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of kube-local up --node, and helm"]
async fn e2e_node_upgrade_from_previous_chart() {
    const TEST: &str = "e2e_node_upgrade_from_previous_chart";
    let _alone = REAL_SERVER.write().await;
    let Some(env) = node_env(TEST).await else {
        return;
    };
    let previous = env.chart_at(PREVIOUS_CHART_COMMIT);
    env.delete_crds().await;
    let release_namespace = create_namespace(&env.cluster, "node-up").await;
    let app = create_namespace(&env.cluster, "node-up-app").await;
    let endpoint = env.start_simulator(&release_namespace).await;
    let old_values = env.old_chart_image_values(&endpoint);
    let values = env.image_values(&endpoint);
    env.helm_deploy(
        "install",
        "tco",
        &previous,
        &release_namespace,
        &old_values,
        &OLD_CHART_INSECURE,
    );
    let (secrets, crs) = env.ready_certificate(&app).await;
    let mut before = release_objects(&env, "tco", &release_namespace);
    // A CRD the previous chart did not have (TencentCertificatePush) is absent here: "added" after.
    for crd in CRDS {
        let live = env.kubectl_ok(&["get", "crd", crd, "-o", "json", "--ignore-not-found"]);
        if live.trim().is_empty() {
            continue;
        }
        let live: Value = serde_json::from_str(&live).unwrap();
        before.insert(format!("CustomResourceDefinition /{crd}"), strip(live));
    }
    let secret_before = secret_version(&secrets).await;
    let cr_uid = crs.get("shop").await.unwrap().metadata.uid;

    let (not_ready, watching) = watch_ready(crs.clone());
    let upgraded = Instant::now();
    env.helm_deploy(
        "upgrade",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &values,
        &["--take-ownership"],
    );
    env.kubectl_ok(&[
        "-n",
        &release_namespace,
        "rollout",
        "status",
        "deployment/tco-tencent-cert-operator",
        "--timeout=120s",
    ]);
    eprintln!(
        "helm upgrade {} -> this chart: {:?}",
        &PREVIOUS_CHART_COMMIT[..12],
        upgraded.elapsed()
    );
    watching.abort();
    let after = release_objects(&env, "tco", &release_namespace);
    let changes = release_diff(&before, &after);
    eprintln!("changed by the upgrade ({}):", changes.len());
    let crds = crd_changes(&previous);
    let mut unexpected = Vec::new();
    for change in &changes {
        let why = expected_change(change, &crds);
        eprintln!("  {change}  [{}]", why.unwrap_or("UNEXPECTED"));
        if why.is_none() {
            unexpected.push(change.clone());
        }
    }
    assert!(unexpected.is_empty(), "the upgrade changed {unexpected:#?}");
    assert_eq!(
        not_ready.load(Ordering::Relaxed),
        0,
        "not Ready during the upgrade"
    );
    assert_eq!(
        secret_version(&secrets).await,
        secret_before,
        "the Secret was rewritten"
    );
    assert_eq!(crs.get("shop").await.unwrap().metadata.uid, cr_uid);

    // The same chart again: nothing changes, not even a resourceVersion; the pod stays.
    let pod_before: Vec<String> = env
        .operator_pods(&release_namespace)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let versions = |env: &NodeEnv| {
        let manifest = env.helm_ok(&["get", "manifest", "tco", "--namespace", &release_namespace]);
        let kinds: Vec<(String, String, Option<String>)> = manifest
            .split("\n---")
            .filter(|d| d.contains("kind:"))
            .map(|d| {
                let o: Value = serde_saphyr::from_str(d).unwrap();
                (
                    o["kind"].as_str().unwrap().to_string(),
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    o["metadata"]["namespace"].as_str().map(String::from),
                )
            })
            .collect();
        kinds
            .into_iter()
            .map(|(kind, name, ns)| {
                let mut args = vec![
                    "get",
                    kind.as_str(),
                    name.as_str(),
                    "-o",
                    "jsonpath={.metadata.resourceVersion}",
                ];
                if let Some(ns) = ns.as_deref() {
                    args.extend(["-n", ns]);
                }
                let version = env.kubectl_ok(&args);
                (format!("{kind}/{name}"), version)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let versions_before = versions(&env);
    env.helm_deploy(
        "upgrade",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &values,
        &[],
    );
    let versions_after = versions(&env);
    assert_eq!(
        versions_before, versions_after,
        "a no-op upgrade changed objects"
    );
    let pod_after: Vec<String> = env
        .operator_pods(&release_namespace)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    assert_eq!(pod_before, pod_after, "a no-op upgrade replaced the pod");
    eprintln!(
        "helm upgrade to the same chart: {} objects, no resourceVersion changed, same pod",
        versions_after.len()
    );

    // The README's CRD command on a Helm-managed install (needs --force-conflicts: Helm owns the fields).
    let crd_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
    let applied = env.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crd_dir]);
    eprintln!("kubectl apply --server-side --force-conflicts -f crds/:\n{applied}");
    env.helm_deploy(
        "upgrade",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &values,
        &[],
    );

    // crds.enabled=false: the CRDs leave the release but stay (resource-policy keep).
    let mut without = values.clone();
    without.push("crds.enabled=false".into());
    env.helm_deploy(
        "upgrade",
        "tco",
        Path::new(CHART),
        &release_namespace,
        &without,
        &[],
    );
    for crd in CRDS {
        env.kubectl_ok(&["get", "crd", crd]);
    }
    wait_ready(&crs, "shop", "True", "Ready").await;
    eprintln!(
        "helm upgrade --set crds.enabled=false: all {} CRDs kept, shop Ready",
        CRDS.len()
    );
    env.assert_no_restarts(&[&release_namespace]).await;
    env.cleanup("tco", &[&release_namespace, &app]).await;
}

/// An object without what changes by itself: status, resourceVersion, managedFields, generation and the
/// Deployment's revision annotation; a container's `env` as a map by name (the same variables in another
/// order are the same: the old charts set the simulator's TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT through
/// extraEnv, at the end, this one through allowInsecureEndpoint, after TENCENTCLOUD_ENDPOINT).
fn strip(mut live: Value) -> Value {
    live.as_object_mut().unwrap().remove("status");
    if let Some(containers) = live
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for container in containers {
            if let Some(env) = container.get("env").and_then(Value::as_array) {
                let by_name: serde_json::Map<String, Value> = env
                    .iter()
                    .map(|v| {
                        (
                            v["name"].as_str().unwrap_or_default().to_string(),
                            v.clone(),
                        )
                    })
                    .collect();
                container["env"] = Value::Object(by_name);
            }
        }
    }
    let metadata = live["metadata"].as_object_mut().unwrap();
    for volatile in ["resourceVersion", "managedFields", "generation"] {
        metadata.remove(volatile);
    }
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove("deployment.kubernetes.io/revision");
    }
    live
}
