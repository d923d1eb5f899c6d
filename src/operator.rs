//! The `run` command's wiring: the Tencent client (or the embedded demo simulator), the Kubernetes clients
//! (the operator's own writes through the leadership fence), the default credentials, the telemetry
//! server, the controllers and route shims under leadership, and the bounded graceful shutdown. The CLI
//! (`main.rs`) turns its flags into [`Settings`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::watch;

use crate::controller::{self, Context, DefaultCredentials, NamespaceAllowList, SecretRef};
use crate::crd::TencentCertificate;
use crate::leader::{self, Fence, LeaderElection};
use crate::shim::ShimOptions;
use crate::telemetry::{self, Metrics, Readiness};
use tencent_ssl::{self as tencent, ClientConfig};

/// Everything `run` is told.
pub struct Settings {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// The Tencent client's endpoints and rate limits.
    pub tencent: ClientConfig,
    /// Embed the Tencent API simulator (its endpoint replaces `tencent.endpoint`).
    pub demo: bool,
    pub defaults: DefaultsSettings,
    /// Reconciles running at once (at least one).
    pub concurrency: u16,
    pub full_download_interval: Duration,
    /// Renewal applications: the cluster switch and the poll of pending orders.
    pub renewal: crate::renew::RenewalConfig,
    pub metrics: MetricsSettings,
    /// Leader election; `None` runs unelected.
    pub election: Option<LeaderElection>,
    /// How long in-flight reconciles may finish after a shutdown request.
    pub shutdown_grace: Duration,
    pub ingress_shim: bool,
    pub gateway_shim: bool,
    pub gateway_api_check_interval: Duration,
}

/// Where the default credentials come from, and who may use them.
pub struct DefaultsSettings {
    pub secret: Option<SecretRef>,
    /// Comma-separated namespaces, or `*`.
    pub namespaces: String,
    pub role_arn: Option<String>,
    pub pod_identity: bool,
    pub role_session_name: String,
    pub role_duration_seconds: u32,
}

/// The `/metrics`, `/healthz` and `/readyz` server.
pub struct MetricsSettings {
    pub addr: SocketAddr,
    /// HTTPS, and `/metrics` only for callers the API server allows.
    pub secure: bool,
    pub cert_dir: Option<PathBuf>,
}

/// Runs the operator until `shutdown` resolves (and in-flight reconciles finish, within the grace).
/// `Err` is the one line to print.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    if let Some(Err(err)) = settings.election.as_ref().map(LeaderElection::timing) {
        return Err(err.to_string());
    }
    // The Tencent side first: a refused endpoint is reported at once, before any cluster is needed.
    let mut tencent_config = settings.tencent.clone();
    let _demo = start_demo(settings.demo, &mut tencent_config).await?;
    let metrics = Arc::new(Metrics::new());
    let tencent = tencent::Client::with_observer(tencent_config, metrics.clone())
        .map_err(|err| err.to_string())?;
    let (config, client) = connect().await?;
    // Everything but the elector writes through the fence: with leader election, only within the term.
    let fence = if settings.election.is_some() {
        Fence::standby()
    } else {
        Fence::unbounded()
    };
    let operator_client = leader::fenced_client(config, &fence)
        .map_err(|err| format!("cannot build the Kubernetes client: {err}"))?;
    check_crd(&client, &settings.namespaces).await?;
    let metrics_tls = metrics_tls(&settings.metrics)?;
    let defaults = default_credentials(&settings.defaults)?;
    let readiness = Arc::new(Readiness::default());
    let ctx = Arc::new(
        Context::new(operator_client, tencent, defaults)
            .with_fence(fence.clone())
            .with_metrics(metrics.clone())
            .with_readiness(readiness.clone())
            .with_full_download_interval(settings.full_download_interval)
            .with_renewal(settings.renewal),
    );
    let (stop, stopped) = watch::channel(false);
    let listener = telemetry::bind(settings.metrics.addr).await?;
    let server = if let Some(tls) = metrics_tls {
        let access = Arc::new(crate::metrics_auth::MetricsAccess::new(client.clone()));
        tracing::info!(addr = %settings.metrics.addr, "/metrics over HTTPS for callers allowed to get /metrics");
        tokio::spawn(telemetry::serve_secure(
            listener,
            tls,
            metrics.clone(),
            readiness.clone(),
            access,
            leader::shutdown_requested(stopped.clone()),
        ))
    } else {
        tokio::spawn(telemetry::serve(
            listener,
            metrics.clone(),
            readiness.clone(),
            leader::shutdown_requested(stopped.clone()),
        ))
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: finishing in-flight reconciles");
        let _ = stop.send(true);
    });
    let running = Running {
        client,
        fence,
        stopped,
        readiness,
        metrics,
    };
    let outcome = running.until_stopped(&settings, ctx).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(message) => {
            tracing::error!(error = %message, "stopped on an error");
            Err(message)
        }
    }
}

/// With `--demo`, the simulator this process starts on loopback, in place of Tencent's endpoint.
async fn start_demo(
    demo: bool,
    config: &mut ClientConfig,
) -> Result<Option<tencent_sim::SimHandle>, String> {
    if !demo {
        return Ok(None);
    }
    let handle = crate::demo::start_simulator()
        .await
        .map_err(|err| format!("cannot start the demo simulator: {err}"))?;
    config.endpoint = handle.endpoint();
    config.allow_insecure_endpoint = true;
    eprintln!(
        "demo: Tencent API simulator at {}; certificates demo0001, demo0002 (RSA), \
         demoNoKey1 (no private key), demoOld001 (expired), aBcD1234 (examples/*.yaml).\n\
         demo: kubectl apply -f examples/demo/  then  kubectl get tcert -w",
        config.endpoint
    );
    Ok(Some(handle))
}

/// Why no client could be made, in one line. kube prints paths with `{:?}` inside quotes of its own
/// (`'"/root/.kube/config"'`): one pair of quotes is enough.
pub fn no_configuration(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string().replace("'\"", "'").replace("\"'", "'");
    format!("no usable Kubernetes configuration (KUBECONFIG or in-cluster): {text}")
}

/// Connects and checks the cluster: one clear line instead of a stack of retries when it is not there.
async fn connect() -> Result<(kube::Config, kube::Client), String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| no_configuration(&e))?;
    let client = kube::Client::try_from(config.clone()).map_err(|e| no_configuration(&e))?;
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| "the Kubernetes API server did not answer within 10s".to_string())?
        .map_err(|e| format!("cannot reach the Kubernetes API server: {e}"))?;
    tracing::info!(version = %version.git_version, "connected to Kubernetes");
    Ok((config, client))
}

async fn check_crd(client: &kube::Client, namespaces: &[String]) -> Result<(), String> {
    let api: kube::Api<TencentCertificate> = match namespaces.first() {
        Some(namespace) => kube::Api::namespaced(client.clone(), namespace),
        None => kube::Api::all(client.clone()),
    };
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(
            "the TencentCertificate CRD is not installed: kubectl apply -f crds/tencentcertificate.yaml".into(),
        ),
        Err(e) => Err(format!("cannot list TencentCertificates: {e}")),
    }
}

/// The TLS configuration of the metrics server with `--metrics-secure`.
fn metrics_tls(
    settings: &MetricsSettings,
) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, String> {
    if !settings.secure {
        return Ok(None);
    }
    crate::metrics_auth::tls::server_config(settings.cert_dir.as_deref())
        .map(Some)
        .map_err(|err| format!("--metrics-secure: {err}"))
}

/// The default credentials: a Secret (optionally assuming a role with it) or TKE pod identity, and the
/// namespaces allowed to use them.
fn default_credentials(settings: &DefaultsSettings) -> Result<DefaultCredentials, String> {
    let pod_identity = if settings.pod_identity {
        let identity = tencent::sts::WebIdentity::from_env()
            .map_err(|err| format!("--default-credentials-pod-identity: {err}"))?;
        Some(tencent::sts::WebIdentity {
            session_name: settings.role_session_name.clone(),
            duration_secs: settings.role_duration_seconds,
            ..identity
        })
    } else {
        None
    };
    Ok(DefaultCredentials {
        secret: settings.secret.clone(),
        role: settings
            .role_arn
            .clone()
            .map(|role_arn| tencent::sts::Role {
                role_arn,
                session_name: settings.role_session_name.clone(),
                duration_secs: settings.role_duration_seconds,
            }),
        pod_identity,
        namespaces: NamespaceAllowList::parse(&settings.namespaces),
    })
}

/// What the controllers run under: leadership (or none), the shutdown signal, readiness and metrics.
struct Running {
    client: kube::Client,
    fence: Fence,
    stopped: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

impl Running {
    /// Runs the controller and the route shims (while leading, with leader election) until shutdown;
    /// after a shutdown request, in-flight reconciles get the grace to finish.
    async fn until_stopped(self, settings: &Settings, ctx: Arc<Context>) -> Result<(), String> {
        let work = work(settings, ctx, self.fence.clone());
        tracing::info!(namespaces = ?settings.namespaces, leader_elect = settings.election.is_some(), "tencent-cert-operator running");
        let stopped = self.stopped.clone();
        let running = async {
            if let Some(election) = settings.election.clone() {
                leader::run_while_leading(
                    self.client,
                    election,
                    self.fence,
                    self.stopped,
                    self.readiness,
                    self.metrics,
                    work,
                )
                .await
                .map_err(|e| e.to_string())
            } else {
                leader::run_unelected(self.stopped, self.readiness, self.metrics, work).await;
                Ok(())
            }
        };
        let grace = settings.shutdown_grace;
        tokio::select! {
            outcome = running => outcome,
            _ = async {
                leader::shutdown_requested(stopped).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "in-flight reconciles did not finish in time; exiting");
                Ok(())
            }
        }
    }
}

/// The work of one term: the controllers (TencentCertificate, ClusterTencentCertificate,
/// TencentCertificatePush) and, beside them under the same leadership and shutdown, the route shims.
fn work(
    settings: &Settings,
    ctx: Arc<Context>,
    fence: Fence,
) -> impl Fn(futures::future::BoxFuture<'static, ()>) -> futures::future::BoxFuture<'static, ()>
+ Clone
+ 'static {
    let options = controller::RunOptions {
        namespaces: settings.namespaces.clone(),
        concurrency: settings.concurrency.max(1),
    };
    let shim_options = ShimOptions {
        namespaces: settings.namespaces.clone(),
        ingress: settings.ingress_shim,
        gateway: settings.gateway_shim,
        gateway_check_interval: settings.gateway_api_check_interval,
        fence,
    };
    move |until| {
        let until = until.shared();
        let shims = crate::shim::run(ctx.client.clone(), shim_options.clone(), until.clone());
        // TencentCertificatePushes: off (one log line) where their CRD is not installed.
        let pushes = crate::push::controller::run(
            ctx.clone(),
            options.namespaces.clone(),
            crate::push::controller::PUSH_CONCURRENCY,
            until.clone(),
        );
        futures::future::join3(
            controller::run(ctx.clone(), options.clone(), until),
            pushes,
            shims,
        )
        .map(|_| ())
        .boxed()
    }
}
