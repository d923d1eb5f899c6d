//! The Helm chart's own RBAC on a real API server: for the default values, `replicaCount: 2` and
//! `watchNamespaces`, render the chart, apply everything but the Deployment, and run the binary with exactly
//! the rendered container args and environment as the chart's ServiceAccount (a `kubectl create token`
//! token in a kubeconfig). Each replica must become ready, resources Ready, and no log line say Forbidden.
//!
//! Needs helm: `HELM`, or the helm v3 that `.ci/packaging-checks` installs into `.ci/.tools-packaging/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::crd::TencentCertificate;

use super::{
    Cluster, REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, eventually, free_port, kubectl, real_cluster, scrape,
    simulator, wait_ready,
};

pub(super) fn helm() -> Option<PathBuf> {
    std::env::var_os("HELM").map(PathBuf::from).or_else(|| {
        let pinned =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.tools-packaging/helm-v3.18.0");
        pinned.exists().then_some(pinned)
    })
}

/// `helm template` of the chart; the rendered objects as JSON.
fn render(helm: &Path, release: &str, namespace: &str, set: &[String]) -> Vec<Value> {
    let scratch = std::env::temp_dir().join(format!("tco-e2e-helm-{}", std::process::id()));
    let mut command = std::process::Command::new(helm);
    command
        .args(["template", release])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/tencent-cert-operator"
        ))
        .args(["--namespace", namespace])
        // The CRDs are installed by the test (and must outlive each case); the test hook is node.rs's.
        .args(["--set", "crds.enabled=false", "--skip-tests"])
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_DATA_HOME", scratch.join("data"));
    for value in set {
        command.args(["--set", value]);
    }
    let out = command.output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split("\n---")
        .filter(|document| document.contains("kind:"))
        .map(|document| serde_saphyr::from_str(document).expect("helm renders YAML"))
        .collect()
}

/// The operator container of the rendered Deployment: its args and its environment, with `fieldRef`s
/// resolved as the kubelet would for a pod named `pod_name` in `namespace`.
fn container_command(
    deployment: &Value,
    pod_name: &str,
    namespace: &str,
) -> (Vec<String>, BTreeMap<String, String>) {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().expect("env name").to_string();
        let value = if let Some(value) = variable.get("value") {
            value
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| value.to_string())
        } else {
            match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod_name.to_string(),
                Some("metadata.namespace") => namespace.to_string(),
                other => panic!("env {name}: unsupported valueFrom {other:?} in this test"),
            }
        };
        env.insert(name, value);
    }
    (args, env)
}

/// A kubeconfig for the cluster's server and CA, authenticating with `token`.
fn token_kubeconfig(cluster: &Cluster, token: &str, path: &Path) {
    let field = |jsonpath: &str| {
        let out = kubectl(
            &cluster.kubeconfig,
            &[
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ],
        )
        .expect("kubectl config view");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let server = field("{.clusters[0].cluster.server}");
    let ca = field("{.clusters[0].cluster.certificate-authority-data}");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    });
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

fn apply(cluster: &Cluster, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&list).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path` of the secure metrics server (self-signed: not verified), with `token` as bearer token.
async fn scrape_https(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .ok()?;
    let mut request = http.get(format!("https://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// A token of ServiceAccount `name` in `namespace` (created first).
fn service_account_token(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let _ = kubectl(
        &cluster.kubeconfig,
        &["-n", namespace, "create", "serviceaccount", name],
    );
    let out = kubectl(
        &cluster.kubeconfig,
        &["-n", namespace, "create", "token", name, "--duration=1h"],
    )
    .expect("kubectl create token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `metrics.secure`: with the chart's review ClusterRole the operator reviews tokens on the real API
/// server; the chart's metrics-reader binding (metrics.readers) lets `scraper` in, and nobody else.
async fn check_secure_metrics(cluster: &Cluster, port: u16, workload: &str) {
    let scraper = service_account_token(cluster, workload, "scraper");
    let tenant = service_account_token(cluster, workload, "tenant");
    assert_eq!(
        scrape_https(port, "/metrics", None).await.map(|r| r.0),
        Some(401)
    );
    assert_eq!(
        scrape_https(port, "/metrics", Some("not-a-token"))
            .await
            .map(|r| r.0),
        Some(401)
    );
    let (status, body) = scrape_https(port, "/metrics", Some(&tenant)).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("e2eShop1"), "{body}");
    let (status, body) = scrape_https(port, "/metrics", Some(&scraper))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("certificate_id=\"e2eShop1\""), "{body}");
    // Plain HTTP gets no metrics from the HTTPS port.
    assert_ne!(scrape(port, "/metrics").await.map(|r| r.0), Some(200));
    eprintln!("secure metrics: no token 401, tenant token 403, metrics-reader token 200");
}

/// One chart configuration, end to end.
async fn chart_case(
    cluster: &Cluster,
    helm: &Path,
    label: &str,
    replicas: usize,
    watch: bool,
    secure: bool,
) {
    let sim = simulator().await;
    let release_namespace = create_namespace(cluster, &format!("chart-{label}")).await;
    let workload = create_namespace(cluster, &format!("chart-{label}-app")).await;
    let release = format!("tco{label}");
    let port = free_port();
    let mut set = vec![
        format!("replicaCount={replicas}"),
        format!("tencentEndpoint={}", sim.endpoint()),
        "allowInsecureEndpoint=true".to_string(),
        format!("metrics.port={port}"),
        "logLevel=debug\\,hyper=info\\,h2=info\\,rustls=info\\,tower=info".to_string(),
    ];
    if watch {
        set.push(format!("watchNamespaces={{{workload}}}"));
    }
    if secure {
        set.push("metrics.secure=true".to_string());
        set.push("metrics.readers[0].name=scraper".to_string());
        set.push(format!("metrics.readers[0].namespace={workload}"));
    }
    let objects = render(helm, &release, &release_namespace, &set);
    let (deployments, rest): (Vec<Value>, Vec<Value>) =
        objects.into_iter().partition(|o| o["kind"] == "Deployment");
    assert_eq!(deployments.len(), 1, "the chart renders one Deployment");
    apply(cluster, &rest);
    let service_account = rest
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_string();
    let out = kubectl(
        &cluster.kubeconfig,
        &[
            "-n",
            &release_namespace,
            "create",
            "token",
            &service_account,
            "--duration=1h",
        ],
    )
    .expect("kubectl create token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let kubeconfig = std::env::temp_dir().join(format!(
        "tco-e2e-{release}-{}.kubeconfig",
        std::process::id()
    ));
    token_kubeconfig(cluster, &token, &kubeconfig);

    // The replicas: exactly the rendered args and environment (nothing inherited), plus the kubeconfig
    // that stands in for the in-cluster ServiceAccount mount. With several replicas each needs its own
    // metrics port here (one host, not one pod each).
    let mut replicas_running = Vec::new();
    for index in 0..replicas {
        let (args, mut env) = container_command(
            &deployments[0],
            &format!("{release}-pod-{index}"),
            &release_namespace,
        );
        let replica_port = if index == 0 { port } else { free_port() };
        if index > 0 {
            env.insert(
                "OPERATOR_METRICS_ADDR".into(),
                format!("0.0.0.0:{replica_port}"),
            );
        }
        let log_path = std::env::temp_dir().join(format!(
            "tco-e2e-{release}-{index}-{}.log",
            std::process::id()
        ));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"))
            .args(&args)
            .env_clear()
            .envs(&env)
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        replicas_running.push((child, log_path, replica_port));
    }
    for (_, _, replica_port) in &replicas_running {
        let replica_port = *replica_port;
        eventually("every replica is ready", || async move {
            let ready = if secure {
                scrape_https(replica_port, "/readyz", None).await
            } else {
                scrape(replica_port, "/readyz").await
            };
            ready.map(|r| r.0) == Some(200)
        })
        .await;
    }

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &workload);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &workload);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", &workload, SECRET_KEY)),
        )
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate(
            "shop",
            &workload,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    // Drift repair goes through the Secret watch and the write path.
    secrets.delete("shop", &Default::default()).await.unwrap();
    eventually("the deleted Secret is re-created", || async {
        secrets.get_opt("shop").await.ok().flatten().is_some()
    })
    .await;
    // The Ingress shim under the chart's RBAC: watch Ingresses, write the generated TencentCertificate.
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(cluster.client.clone(), &workload);
    let ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": workload,
                     "annotations": {"tencentcert.io/certificate-id": "e2eShop1",
                                     "tencentcert.io/credentials": "tencent"}},
        "spec": {"tls": [{"hosts": ["shop.e2e.test"], "secretName": "web-tls"}],
                 "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}
    }))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &ingress)
        .await
        .unwrap();
    wait_ready(&crs, "web-tls", "True", "Ready").await;
    if secure {
        check_secure_metrics(cluster, port, &workload).await;
    }
    // Events are written (the Recorder needs events.k8s.io create/patch).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (mut child, log_path, _) in replicas_running {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a replica exited: {}",
            log_path.display()
        );
        let _ = child.kill().await;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let forbidden: Vec<&str> = log
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
            // Not RBAC: an earlier case's namespace still terminating refuses writes and new events with 403.
            .filter(|l| {
                !l.contains("NamespaceTerminating") && !l.contains("because it is being terminated")
            })
            .take(5)
            .collect();
        assert!(
            forbidden.is_empty(),
            "{label}: the chart's RBAC refused a call:\n{}",
            forbidden.join("\n")
        );
        assert_log_has_no_secrets(&log_path);
        let _ = std::fs::remove_file(&log_path);
    }
    eprintln!(
        "chart {label}: {replicas} replica(s), watchNamespaces={watch}: Ready, Ingress web -> web-tls Ready, no Forbidden"
    );
    let cluster_scoped: Vec<&Value> = rest
        .iter()
        .filter(|o| o["metadata"]["namespace"].is_null())
        .collect();
    for object in cluster_scoped {
        if let (Some(kind), Some(name)) =
            (object["kind"].as_str(), object["metadata"]["name"].as_str())
        {
            let _ = kubectl(
                &cluster.kubeconfig,
                &["delete", kind, name, "--ignore-not-found"],
            );
        }
    }
    delete_namespace(cluster, &workload).await;
    delete_namespace(cluster, &release_namespace).await;
    let _ = std::fs::remove_file(&kubeconfig);
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local) and helm"]
async fn e2e_real_chart_rbac() {
    const TEST: &str = "e2e_real_chart_rbac";
    let Some(helm) = helm() else {
        panic!(
            "{TEST} needs helm: set HELM, or run .ci/packaging-checks once to install it into .ci/.tools-packaging."
        );
    };
    // With the default values the operator watches every namespace: no other test may run meanwhile.
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    chart_case(&cluster, &helm, "default", 1, false, false).await;
    chart_case(&cluster, &helm, "replicas", 2, false, false).await;
    chart_case(&cluster, &helm, "watch", 1, true, false).await;
    // Authenticated metrics in a namespaced install: the review ClusterRole is cluster-scoped anyway.
    chart_case(&cluster, &helm, "secure", 1, true, true).await;
}
