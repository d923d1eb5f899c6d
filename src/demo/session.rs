//! The `demo` command's session: simulator, cluster, resources, the controller, and what it prints.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use tencent_ssl::{self as tencent, ClientConfig};

use super::{
    ClusterChoice, DEMO_SECRET_ID, DemoError, cluster, install, report, rivals, start_simulator,
};
use crate::controller::{self, Context, DefaultCredentials};
use crate::crd::TencentCertificate;
use crate::secret::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::telemetry::{Metrics, Readiness};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub cluster: ClusterChoice,
    /// Where /metrics, /healthz and /readyz are served (port 0: any free port).
    pub metrics_addr: SocketAddr,
}

/// Runs the demo until `shutdown` resolves; everything it wrote on disk is gone when this returns.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let started = Instant::now();
    let simulator = start_simulator().await?;
    let cluster = cluster::acquire(options.cluster).await?;
    let client = cluster.client();
    let resources = install::DemoResources::parse()?;
    let namespace = resources.namespace();
    let rival_note = match &cluster {
        cluster::Cluster::Existing { .. } => match rivals::find(&client).await {
            Ok(Some(rival)) => return Err(DemoError::OtherOperator(rival.refusal())),
            Ok(None) => None,
            Err(why) => Some(why),
        },
        cluster::Cluster::Embedded { .. } => None,
    };
    // Embedded, the whole (empty) cluster is the demo's: all namespaces, so that `kubectl apply -f examples/`
    // into `web` is served too. On someone's cluster, only the demo's namespace.
    let watched: Vec<String> = match &cluster {
        cluster::Cluster::Embedded { .. } => Vec::new(),
        cluster::Cluster::Existing { .. } => vec![namespace.clone()],
    };
    let listener = crate::telemetry::bind(options.metrics_addr)
        .await
        .map_err(DemoError::Metrics)?;
    let metrics_url = listener
        .local_addr()
        .map(|a| format!("http://{a}/metrics"))
        .unwrap_or_default();
    let banner = Banner {
        simulator: simulator.endpoint(),
        metrics_url,
        namespace: &namespace,
        rival_note: rival_note.as_deref(),
    };
    banner.print(out, &cluster);
    install_all(out, &client, &resources, watched.is_empty()).await?;
    let running = start_operator(&client, simulator.endpoint(), watched, listener)?;
    let kubeconfig = match &cluster {
        cluster::Cluster::Embedded { files, .. } => Some(files.kubeconfig()),
        cluster::Cluster::Existing { .. } => None,
    };
    let mut reporter = report::Reporter::new(resources.certificates.iter().map(|c| c.name_any()));
    let follow = Follow {
        client: &client,
        namespace: &namespace,
        kubeconfig: kubeconfig.as_deref(),
        started,
    };
    follow.until(shutdown, &mut reporter, out).await;
    running.stop().await;
    let removed = match &cluster {
        cluster::Cluster::Embedded { files, .. } => Some(files.path().to_path_buf()),
        cluster::Cluster::Existing { .. } => None,
    };
    drop(cluster);
    drop(simulator);
    farewell(out, removed.as_deref());
    Ok(())
}

/// What the demo prints first: where everything is, and what the operator watches.
struct Banner<'a> {
    simulator: String,
    metrics_url: String,
    namespace: &'a str,
    rival_note: Option<&'a str>,
}

impl Banner<'_> {
    fn print(&self, out: &mut (dyn Write + Send), cluster: &cluster::Cluster) {
        let namespace = self.namespace;
        let _ = writeln!(out, "tencent-cert-operator demo");
        let _ = writeln!(
            out,
            "  Tencent Cloud API  simulator at {} (account {DEMO_SECRET_ID}; certificates demo0001, demo0002, demoNoKey1, demoOld001, and aBcD1234 of examples/)",
            self.simulator
        );
        match cluster {
            cluster::Cluster::Existing { url, .. } => {
                let _ = writeln!(
                    out,
                    "  Kubernetes API     your cluster at {url} (from KUBECONFIG)"
                );
            }
            cluster::Cluster::Embedded {
                server,
                files,
                reason,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  Kubernetes API     embedded at {} (a test API server in this process: no RBAC, no admission, nothing persisted); {reason}",
                    server.url()
                );
                let _ = writeln!(out, "  kubeconfig         {}", files.kubeconfig().display());
            }
        }
        let _ = writeln!(out, "  metrics            {}", self.metrics_url);
        match cluster {
            cluster::Cluster::Embedded { .. } => {
                let _ = writeln!(
                    out,
                    "  operator watches   all namespaces (TencentCertificates, ClusterTencentCertificates, annotated Ingresses and Gateways)"
                );
            }
            cluster::Cluster::Existing { .. } => {
                let _ = writeln!(
                    out,
                    "  operator watches   namespace {namespace} only (TencentCertificates and annotated Ingresses/Gateways there); other namespaces are left alone"
                );
                let _ = writeln!(
                    out,
                    "  other operators    {}",
                    self.rival_note.map_or_else(
                        || "none found (no tencent-cert-operator Deployment, no held Lease)"
                            .to_string(),
                        |why| format!("not checked: {why}")
                    )
                );
            }
        }
    }
}

/// Installs the CRDs (the cluster one only when the whole cluster is the demo's) and the demo resources.
async fn install_all(
    out: &mut (dyn Write + Send),
    client: &kube::Client,
    resources: &install::DemoResources,
    whole_cluster: bool,
) -> Result<(), DemoError> {
    let crd_installed = install::crd(client).await?;
    if whole_cluster {
        install::cluster_crd(client).await?;
    }
    install::resources(client, resources).await?;
    let _ = writeln!(
        out,
        "installed: {}Secret {}/{}, TencentCertificates {} (examples/demo/)",
        if crd_installed {
            "CRD tencentcertificates.tencentcert.io, "
        } else {
            ""
        },
        resources.namespace(),
        resources.credentials.name_any(),
        resources
            .certificates
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = out.flush();
    Ok(())
}

/// The operator's tasks while the demo runs, and how to stop them.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    operator: tokio::task::JoinHandle<()>,
    shims: tokio::task::JoinHandle<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops the tasks, each given a bounded time to finish.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.operator).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.shims).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.serving).await;
    }
}

/// Starts the metrics server, the route shims and the controller against the simulator at `endpoint`.
fn start_operator(
    client: &kube::Client,
    endpoint: String,
    watched: Vec<String>,
    listener: tokio::net::TcpListener,
) -> Result<Running, DemoError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let tencent = tencent::Client::with_observer(
        ClientConfig {
            endpoint,
            // The simulator speaks plain http on loopback.
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        },
        metrics.clone(),
    )
    .map_err(|e| DemoError::Tencent(e.to_string()))?;
    let ctx = Arc::new(
        Context::new(client.clone(), tencent, DefaultCredentials::default())
            .with_metrics(metrics.clone())
            .with_readiness(readiness.clone()),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let serving = tokio::spawn(crate::telemetry::serve(
        listener,
        metrics,
        readiness,
        until(),
    ));
    let shims = tokio::spawn(crate::shim::run(
        client.clone(),
        crate::shim::ShimOptions {
            namespaces: watched.clone(),
            // Installing the Gateway API CRDs into the demo shows up within seconds.
            gateway_check_interval: Duration::from_secs(5),
            ..crate::shim::ShimOptions::default()
        },
        until(),
    ));
    let operator = tokio::spawn(controller::run(
        ctx,
        controller::RunOptions {
            namespaces: watched,
            concurrency: 8,
        },
        until(),
    ));
    Ok(Running {
        stop,
        operator,
        shims,
        serving,
    })
}

/// Follows the demo's resources and prints what happens to them, and a summary once they settle.
struct Follow<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    kubeconfig: Option<&'a std::path::Path>,
    started: Instant,
}

impl Follow<'_> {
    async fn until(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
        reporter: &mut report::Reporter,
        out: &mut (dyn Write + Send),
    ) {
        let namespace = self.namespace;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut events = std::pin::pin!(watch_events(self.client.clone(), namespace));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = events.next() => {
                    let Some(event) = event else { break };
                    let now = jiff::Timestamp::now();
                    let line = match event {
                        DemoEvent::Certificate(c) => reporter.certificate(&c, now),
                        DemoEvent::SecretWritten(name, keys) => reporter.secret_written(namespace, &name, keys),
                        DemoEvent::SecretDeleted(name) => reporter.secret_deleted(namespace, &name),
                    };
                    if let Some(line) = line {
                        let _ = writeln!(out, "{line}");
                    }
                    if let Some((ready, failing)) = reporter.settled() {
                        summary(out, self.started.elapsed(), ready, failing, self.kubeconfig, namespace);
                    }
                    let _ = out.flush();
                }
            }
        }
    }
}

/// The last line: what the demo leaves behind.
fn farewell(out: &mut (dyn Write + Send), removed: Option<&std::path::Path>) {
    match removed {
        Some(dir) => {
            let _ = writeln!(
                out,
                "demo stopped: the embedded API server is gone and {} removed",
                dir.display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "demo stopped; its resources stay in your cluster: kubectl delete -f examples/demo/"
            );
        }
    }
    let _ = out.flush();
}

fn summary(
    out: &mut (dyn Write + Send),
    elapsed: Duration,
    ready: usize,
    failing: usize,
    kubeconfig: Option<&std::path::Path>,
    namespace: &str,
) {
    let _ = writeln!(
        out,
        "\nall {} demo resources settled in {:.1}s: {ready} Ready, {failing} not Ready as intended \
         (a certificate requested with your own CSR has no private key; an expired one is never written).",
        ready + failing,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "Try it in another terminal:");
    if let Some(path) = kubeconfig {
        let _ = writeln!(out, "  export KUBECONFIG={}", path.display());
    }
    let ns = if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    };
    let _ = writeln!(out, "  kubectl get tcert{ns} -o wide");
    let _ = writeln!(out, "  kubectl describe tcert{ns} demo-no-key");
    let _ = writeln!(
        out,
        "  kubectl delete secret{ns} demo-shop     # gone; the operator writes it again within seconds"
    );
    let _ = writeln!(out, "Ctrl-C stops the demo.\n");
}

enum DemoEvent {
    Certificate(Box<TencentCertificate>),
    SecretWritten(String, Vec<String>),
    SecretDeleted(String),
}

/// TencentCertificates and managed Secrets of the demo namespace, as one stream.
fn watch_events(
    client: kube::Client,
    namespace: &str,
) -> impl futures::Stream<Item = DemoEvent> + Send + 'static {
    let certificates: Api<TencentCertificate> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let certificate_events =
        watcher::watcher(certificates, watcher::Config::default()).flat_map(|event| {
            let items: Vec<DemoEvent> = match event {
                Ok(Event::Apply(c) | Event::InitApply(c)) => {
                    vec![DemoEvent::Certificate(Box::new(c))]
                }
                _ => Vec::new(),
            };
            futures::stream::iter(items)
        });
    let secret_events = watcher::watcher(secrets, managed).flat_map(|event| {
        let items: Vec<DemoEvent> = match event {
            Ok(Event::Apply(s) | Event::InitApply(s)) => {
                let keys = s
                    .data
                    .as_ref()
                    .map(|d| d.keys().cloned().collect())
                    .unwrap_or_default();
                vec![DemoEvent::SecretWritten(s.name_any(), keys)]
            }
            Ok(Event::Delete(s)) => vec![DemoEvent::SecretDeleted(s.name_any())],
            _ => Vec::new(),
        };
        futures::stream::iter(items)
    });
    futures::stream::select(certificate_events, secret_events)
}
