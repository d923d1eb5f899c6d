//! The `tencent-cert-operator` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tencent_cert_operator::controller::SecretRef;
use tencent_cert_operator::crd;
#[cfg(feature = "demo")]
use tencent_cert_operator::demo;
use tencent_cert_operator::leader::LeaderElection;
use tencent_cert_operator::operator;
use tencent_cert_operator::telemetry::{self, LogFormat};
use tencent_sim::{self as sim, Account, CertificateSpec, Fault, Latency, SimConfig};
use tencent_ssl::{self as tencent, ClientConfig};

#[derive(Parser)]
#[command(
    name = "tencent-cert-operator",
    version,
    about = "Keeps Kubernetes TLS Secrets in sync with Tencent Cloud SSL certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the operator at work with nothing set up: the Tencent API simulator, the cluster of your
    /// kubeconfig (or, when none answers, an API server embedded in this process), the demo resources of
    /// examples/demo/, and the real controller. Ctrl-C stops it and removes what it wrote on disk.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the TencentCertificate CustomResourceDefinition as YAML (`--cluster`: the
    /// ClusterTencentCertificate one; `--push`: the TencentCertificatePush one).
    Crd(CrdArgs),
    /// Download one certificate (credentials from TENCENTCLOUD_* env vars) and print a TLS Secret manifest
    /// or write PEM files. Needs no cluster.
    Fetch(Box<FetchArgs>),
    /// Run the Tencent Cloud SSL API simulator (for tests, demos and benchmarks).
    Sim(Box<SimArgs>),
    /// Show what is wrong: conditions, the certificate in the Secret and whether it matches, events, next sync.
    Status(StatusArgs),
    /// Ask the operator to download again now, or at most once per minute per resource (sets the
    /// tencentcert.io/refresh-requested-at annotation).
    Renew(RenewArgs),
    /// Check an installation from inside the cluster (the chart's `helm test`): the CRDs are served and
    /// every operator pod behind the metrics Service answers /readyz.
    Check(CheckArgs),
    /// Print the version and build target.
    Version,
}

/// The same commands as a kubectl plugin: install the binary (or a link to it) as `kubectl-tcert` on PATH,
/// then `kubectl tcert status ...`.
#[derive(Parser)]
#[command(
    name = "kubectl tcert",
    bin_name = "kubectl tcert",
    version,
    about = "Status and renewal of TencentCertificates (tencent-cert-operator)"
)]
struct PluginCli {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what is wrong: conditions, the certificate in the Secret and whether it matches, events, next sync.
    Status(StatusArgs),
    /// Ask the operator to download again now, or at most once per minute per resource (sets the
    /// tencentcert.io/refresh-requested-at annotation).
    Renew(RenewArgs),
}

/// `-o` of `status` and `renew`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
struct StatusArgs {
    /// The TencentCertificate; all of the namespace when absent.
    name: Option<String>,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: OutputFormat,
    /// TencentCertificatePushes instead (Ready, reason, Tencent certificate id, expiry, deploys).
    #[arg(long)]
    pushes: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "all", "all_namespaces"])))]
struct RenewArgs {
    /// The TencentCertificate to download again.
    name: Option<String>,
    /// Every TencentCertificate of the namespace.
    #[arg(long, conflicts_with = "name")]
    all: bool,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every TencentCertificate of every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: OutputFormat,
}

/// Where the Tencent Cloud SSL API is.
#[derive(Args)]
struct TencentArgs {
    /// Tencent Cloud SSL API endpoint (https://ssl.intl.tencentcloudapi.com for the international site).
    #[arg(long, env = "TENCENTCLOUD_ENDPOINT", default_value = tencent::client::DEFAULT_ENDPOINT)]
    tencent_endpoint: String,
    /// Tencent Cloud STS endpoint, for roles (default: sts.<the SSL endpoint's site>, or the SSL endpoint
    /// itself when it is not Tencent's, e.g. the simulator, which serves both).
    #[arg(long, env = "TENCENTCLOUD_STS_ENDPOINT")]
    sts_endpoint: Option<String>,
    /// Accept http:// endpoints (a local simulator). Without it they are refused at start-up: the answers
    /// carry private keys, the requests signatures and tokens.
    #[arg(long, env = "TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT")]
    allow_insecure_endpoint: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Namespace to watch (repeatable, or comma-separated in the env var); all namespaces when absent.
    #[arg(long = "namespace", env = "OPERATOR_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Default credentials Secret (NAMESPACE/NAME) for resources without spec.credentialsRef.
    #[arg(long, env = "OPERATOR_DEFAULT_CREDENTIALS")]
    default_credentials: Option<SecretRef>,
    /// Namespaces allowed to use the default credentials: comma-separated, or * for all.
    #[arg(
        long,
        env = "OPERATOR_DEFAULT_CREDENTIALS_NAMESPACES",
        default_value = ""
    )]
    default_credentials_namespaces: String,
    /// Assume this CAM role (qcs::cam::uin/<OwnerUin>:roleName/<name>) with the default credentials
    /// Secret's key and use its temporary credentials.
    #[arg(
        long,
        env = "OPERATOR_DEFAULT_CREDENTIALS_ROLE_ARN",
        requires = "default_credentials"
    )]
    default_credentials_role_arn: Option<String>,
    /// Default credentials from TKE pod identity: the ServiceAccount token in TKE_WEB_IDENTITY_TOKEN_FILE
    /// exchanged for TKE_ROLE_ARN through STS AssumeRoleWithWebIdentity (TKE_REGION, TKE_PROVIDER_ID).
    #[arg(
        long,
        env = "OPERATOR_DEFAULT_CREDENTIALS_POD_IDENTITY",
        conflicts_with = "default_credentials"
    )]
    default_credentials_pod_identity: bool,
    /// RoleSessionName for the roles the operator assumes as its default credentials.
    #[arg(long, env = "OPERATOR_ROLE_SESSION_NAME", default_value = tencent::sts::DEFAULT_SESSION_NAME)]
    role_session_name: String,
    /// Lifetime in seconds of those roles' temporary credentials (refreshed well before they expire).
    #[arg(long, env = "OPERATOR_ROLE_DURATION_SECONDS", default_value_t = tencent::sts::DEFAULT_DURATION_SECS,
          value_parser = clap::value_parser!(u32).range(900..=43200))]
    role_duration_seconds: u32,
    #[command(flatten)]
    tencent: TencentArgs,
    /// Requests per second per Tencent API action, all credentials together: the operator's overall cap
    /// (Tencent documents 10/s per account). The budget is shared fairly between credential sets.
    #[arg(long, env = "OPERATOR_RATE_LIMIT", default_value_t = 10.0, value_parser = parse_rate)]
    rate_limit: f64,
    /// Requests per second per Tencent API action for one set of credentials (Tencent's limit is per
    /// account and action); at most --rate-limit, which is the default. Set it to Tencent's limit when
    /// --rate-limit is raised above it for several accounts.
    #[arg(long, env = "OPERATOR_RATE_LIMIT_PER_CREDENTIALS", value_parser = parse_rate)]
    rate_limit_per_credentials: Option<f64>,
    /// Reconciles running at once. Most of a reconcile waits on Tencent's rate limit or on lookups
    /// batched 50 ids per request, so this is well above the core count.
    #[arg(long, env = "OPERATOR_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    /// Download in full at least this often even when Tencent's listing shows the served certificate
    /// unchanged (a safety net for content replaced behind an unchanged id), e.g. 24h, 6h.
    #[arg(long, env = "OPERATOR_FULL_DOWNLOAD_INTERVAL", default_value = "24h", value_parser = parse_interval)]
    full_download_interval: std::time::Duration,
    /// Who may apply for the renewal of free certificates (`spec.renewal.apply: Free`): `forbid` (no
    /// resource), `own-credentials` (only resources with credentials of their own, never the operator's
    /// default credentials) or `allow`.
    #[arg(long, env = "OPERATOR_RENEWAL_APPLICATIONS", default_value = "own-credentials", value_parser = tencent_cert_operator::renew::parse_cluster_switch)]
    renewal_applications: tencent_ssl::renewal::order::ClusterSwitch,
    /// How often a renewal order waiting for validation or issue is looked at, e.g. 1m, 30s.
    #[arg(long, env = "OPERATOR_RENEWAL_POLL_INTERVAL", default_value = "1m", value_parser = parse_interval)]
    renewal_poll_interval: std::time::Duration,
    /// Embed the Tencent API simulator with demo credentials and certificates (no Tencent account needed).
    #[arg(long)]
    demo: bool,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Serve that address over HTTPS and answer /metrics only to a bearer token the API server accepts
    /// (TokenReview) whose user may get the non-resource URL /metrics (SubjectAccessReview); answers are
    /// cached for a minute. /healthz and /readyz stay open.
    #[arg(long, env = "OPERATOR_METRICS_SECURE")]
    metrics_secure: bool,
    /// Directory holding tls.crt and tls.key for --metrics-secure (a mounted kubernetes.io/tls Secret),
    /// read at start-up; without it a self-signed certificate is generated at start-up.
    #[arg(long, env = "OPERATOR_METRICS_CERT_DIR", requires = "metrics_secure")]
    metrics_cert_dir: Option<PathBuf>,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "OPERATOR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run several replicas with one leader, elected over a coordination.k8s.io Lease.
    #[arg(long, env = "OPERATOR_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else "default").
    #[arg(long, env = "OPERATOR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "tencent-cert-operator"
    )]
    leader_election_lease_name: String,
    /// Seconds a Lease stays valid without renewal (how long a dead leader can block a standby).
    #[arg(long, env = "OPERATOR_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Seconds before expiry at which the leader renews its Lease; must be shorter than
    /// --lease-duration. The leader stops writing half of it before expiry if renewals keep failing.
    #[arg(long, env = "OPERATOR_LEASE_RENEW_GRACE", default_value_t = 5)]
    lease_renew_grace: u64,
    /// Seconds to let in-flight reconciles finish after SIGTERM before exiting anyway.
    #[arg(long, env = "OPERATOR_SHUTDOWN_GRACE", default_value_t = 20)]
    shutdown_grace: u64,
    /// Generate TencentCertificates for Ingresses annotated tencentcert.io/certificate-id or
    /// tencentcert.io/select-by-host (needs get/list/watch on ingresses).
    #[arg(long, env = "OPERATOR_INGRESS_SHIM", default_value_t = true, action = clap::ArgAction::Set)]
    ingress_shim: bool,
    /// The same for Gateway API Gateways, once the Gateway API is installed (needs get/list/watch on
    /// gateways.gateway.networking.k8s.io).
    #[arg(long, env = "OPERATOR_GATEWAY_SHIM", default_value_t = true, action = clap::ArgAction::Set)]
    gateway_shim: bool,
    /// How often to look for the Gateway API while it is not installed, e.g. 1m, 30s.
    #[arg(long, env = "OPERATOR_GATEWAY_API_CHECK_INTERVAL", default_value = "1m", value_parser = parse_interval)]
    gateway_api_check_interval: std::time::Duration,
}

#[derive(Args)]
struct CrdArgs {
    /// The cluster-scoped ClusterTencentCertificate CRD (crds/clustertencentcertificate.yaml).
    #[arg(long, conflicts_with = "push")]
    cluster: bool,
    /// The TencentCertificatePush CRD (crds/tencentcertificatepush.yaml): a TLS Secret published to Tencent.
    #[arg(long)]
    push: bool,
}

#[cfg(feature = "demo")]
#[derive(Args)]
struct DemoArgs {
    /// Which Kubernetes API server to use.
    #[arg(long, value_enum, default_value = "auto")]
    cluster: demo::ClusterChoice,
    /// Address of the demo operator's /metrics, /healthz and /readyz (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_addr: SocketAddr,
}

#[derive(Args)]
struct FetchArgs {
    /// The Tencent Cloud SSL certificate ID.
    #[arg(long)]
    certificate_id: String,
    #[command(flatten)]
    tencent: TencentArgs,
    /// Namespace of the printed Secret.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Name of the printed Secret (default: tencent-<certificate id, lowercased>).
    #[arg(long)]
    secret_name: Option<String>,
    /// Manifest format.
    #[arg(long, value_enum, default_value = "yaml")]
    output: tencent_cert_operator::fetch::Format,
    /// Write tls.crt, tls.key and ca.crt (mode 0600) into this directory instead of printing a manifest.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Replace existing files in --out-dir.
    #[arg(long, requires = "out_dir")]
    force: bool,
    /// Leave out ca.crt even when the archive has the root certificate.
    #[arg(long)]
    no_ca: bool,
}

async fn run_fetch(args: FetchArgs) -> ExitCode {
    use tencent_cert_operator::fetch::{self, FetchError};
    let result = async {
        let client = tencent::Client::new(ClientConfig {
            endpoint: args.tencent.tencent_endpoint.clone(),
            sts_endpoint: args.tencent.sts_endpoint.clone(),
            allow_insecure_endpoint: args.tencent.allow_insecure_endpoint,
            ..ClientConfig::default()
        })?;
        let credentials = tencent::Credentials::from_env().map_err(FetchError::from)?;
        let bundle = fetch::fetch(&client, &credentials, &args.certificate_id).await?;
        eprintln!(
            "{}",
            fetch::summary(&args.certificate_id, &bundle, jiff::Timestamp::now())
        );
        if let Some(dir) = &args.out_dir {
            for path in fetch::write_files(dir, &bundle, !args.no_ca, args.force)? {
                eprintln!("wrote {}", path.display());
            }
        } else {
            let name = args
                .secret_name
                .clone()
                .unwrap_or_else(|| format!("tencent-{}", args.certificate_id.to_ascii_lowercase()));
            let secret = fetch::manifest_secret(
                &bundle,
                &args.certificate_id,
                &args.namespace,
                &name,
                !args.no_ca,
            );
            print!("{}", fetch::render(&secret, args.output)?);
        }
        Ok::<(), FetchError>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    /// Namespace of the operator and its metrics Service.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The metrics Service whose EndpointSlices name the operator pods.
    #[arg(long)]
    service: String,
    /// Name of the Service port that serves /readyz.
    #[arg(long, default_value = "metrics")]
    port_name: String,
    /// Seconds to retry before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

async fn run_check(args: CheckArgs) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            eprintln!("error: no usable Kubernetes configuration: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = tencent_cert_operator::install_check::Options {
        namespace: args.namespace,
        service: args.service,
        port_name: args.port_name,
        timeout: Duration::from_secs(args.timeout),
    };
    match tencent_cert_operator::install_check::run(&client, &options, |line| eprintln!("{line}"))
        .await
    {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("check passed");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("check failed: {err}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
struct SimArgs {
    /// Address to listen on; port 0 picks a free port. The URL is printed as the first stdout line.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The SecretId the simulator accepts.
    #[arg(long, env = "SIM_SECRET_ID")]
    secret_id: String,
    /// The SecretKey the simulator verifies signatures with.
    #[arg(long, env = "SIM_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Require this session token (X-TC-Token), as for temporary credentials.
    #[arg(long, env = "SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A certificate to generate: ID[:domain=D,san=A+B,key=rsa2048|rsa4096|p256|p384,no-key,expired,future,valid-days=N,status=N,layout=folders|folders-root|flat,with-root,renewed-by=ID,replaced-by=ID,hosting-renew=ID,service-renew=ID,project=N,tag=K=V,alias=A,from=BRAND]
    #[arg(long = "certificate", value_name = "ID[:OPTIONS]")]
    certificates: Vec<CertificateSpec>,
    /// Also serve every <id>.zip in this directory as certificate <id>.
    #[arg(long)]
    zip_dir: Option<PathBuf>,
    /// Requests per second per SecretId and action before answering RequestLimitExceeded (0 disables).
    #[arg(long, default_value_t = 10.0)]
    rate_limit: f64,
    /// Inject an error: ID=CODE (always), ID=CODE:COUNT, or ID=CODE:pPROB; ID may be * for any certificate.
    #[arg(long = "fault", value_name = "ID=CODE[:COUNT|:pPROB]")]
    faults: Vec<Fault>,
    /// Delay answers for a certificate (or *) by MILLIS.
    #[arg(long = "latency", value_name = "ID=MILLIS")]
    latencies: Vec<Latency>,
    /// Seconds to add to the simulator's clock (provokes AuthFailure.SignatureExpire beyond ±300).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset: i64,
    /// An STS role: ARN[,trust=SECRETID]…[,provider=OIDC_PROVIDER_ID][,token=WEB_IDENTITY_TOKEN]…
    #[arg(long = "role", value_name = "ARN[,OPTIONS]")]
    roles: Vec<sim::SimRole>,
}

/// A duration such as `24h`, `90m` or `1h30m` (the syntax of `spec.refreshInterval`).
/// A request rate: a number of requests per second within the limiter's range.
fn parse_rate(text: &str) -> Result<f64, String> {
    use tencent::limiter::{MAX_CONFIGURED_RATE, MIN_CONFIGURED_RATE};
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| (MIN_CONFIGURED_RATE..=MAX_CONFIGURED_RATE).contains(rate))
        .ok_or_else(|| {
            format!(
                "{text:?} is not a rate in requests per second from {MIN_CONFIGURED_RATE} to {MAX_CONFIGURED_RATE}"
            )
        })
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    tencent_cert_operator::crd::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration such as 24h, 90m or 1h30m"))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn run_sim(args: SimArgs) -> ExitCode {
    let config = SimConfig {
        accounts: vec![Account {
            secret_id: args.secret_id,
            secret_key: args.secret_key,
            token: args.token,
        }],
        certificates: args.certificates,
        zip_dir: args.zip_dir,
        rate_limit: (args.rate_limit > 0.0).then_some(args.rate_limit),
        faults: args.faults,
        latencies: args.latencies,
        clock_offset: args.clock_offset,
        roles: args.roles,
    };
    let handle = match sim::start(config, args.listen).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The first stdout line is the endpoint, so scripts can start the simulator on port 0 and read it.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", handle.endpoint());
    let _ = stdout.flush();
    tracing::info!(
        endpoint = %handle.endpoint(),
        certificates = ?handle.state().certificate_ids(),
        "Tencent SSL API simulator ready"
    );
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = handle.wait() => {}
    }
    ExitCode::SUCCESS
}

/// The Lease election `run` takes part in with `--leader-elect`.
fn leader_election(args: &RunArgs) -> LeaderElection {
    LeaderElection {
        lease_name: args.leader_election_lease_name.clone(),
        namespace: args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string()),
        identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
            format!(
                "tencent-cert-operator-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            )
        }),
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_grace: Duration::from_secs(args.lease_renew_grace),
    }
}

/// The client of the current kubeconfig, and the namespace to use when none is given.
async fn cli_client(namespace: Option<String>) -> Result<(kube::Client, String), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| operator::no_configuration(&e))?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, namespace))
}

fn scope(
    name: Option<String>,
    namespace: String,
    all_namespaces: bool,
) -> tencent_cert_operator::inspect::cluster::Scope {
    use tencent_cert_operator::inspect::cluster::Scope;
    match (all_namespaces, name) {
        (true, _) => Scope::AllNamespaces,
        (false, Some(name)) => Scope::One { namespace, name },
        (false, None) => Scope::Namespace(namespace),
    }
}

fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_status(args: StatusArgs) -> ExitCode {
    use tencent_cert_operator::inspect::{self, cluster};
    let (client, namespace) = match cli_client(args.namespace).await {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let scope = scope(args.name, namespace, args.all_namespaces);
    if args.pushes {
        return run_status_pushes(&client, &scope, args.output).await;
    }
    let now = jiff::Timestamp::now();
    match cluster::views(&client, &scope, now).await {
        Ok(views) => match args.output {
            OutputFormat::Json => print_json(&views),
            OutputFormat::Text if views.is_empty() => {
                println!("No TencentCertificates found.");
                ExitCode::SUCCESS
            }
            OutputFormat::Text => {
                print!("{}", inspect::render_text(&views, now));
                ExitCode::SUCCESS
            }
        },
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_status_pushes(
    client: &kube::Client,
    scope: &tencent_cert_operator::inspect::cluster::Scope,
    output: OutputFormat,
) -> ExitCode {
    use tencent_cert_operator::inspect::push;
    match push::views(client, scope).await {
        Ok(views) => match output {
            OutputFormat::Json => print_json(&views),
            OutputFormat::Text if views.is_empty() => {
                println!("No TencentCertificatePushes found.");
                ExitCode::SUCCESS
            }
            OutputFormat::Text => {
                print!("{}", push::render_pushes(&views));
                ExitCode::SUCCESS
            }
        },
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_renew(args: RenewArgs) -> ExitCode {
    use tencent_cert_operator::inspect::cluster;
    let (client, namespace) = match cli_client(args.namespace).await {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let scope = scope(args.name, namespace, args.all_namespaces);
    match cluster::renew(&client, &scope, jiff::Timestamp::now()).await {
        Ok(renewed) => match args.output {
            OutputFormat::Json => print_json(&renewed),
            OutputFormat::Text => {
                if renewed.is_empty() {
                    println!("No TencentCertificates found.");
                }
                for r in &renewed {
                    println!(
                        "tencentcertificate {}/{}: refresh requested at {}",
                        r.namespace, r.name, r.requested_at
                    );
                }
                ExitCode::SUCCESS
            }
        },
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_operator(args: RunArgs) -> ExitCode {
    match operator::run(settings(args), shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What the `run` flags tell the operator.
fn settings(args: RunArgs) -> operator::Settings {
    let limiter = tencent::limiter::LimiterConfig::per_second(args.rate_limit);
    operator::Settings {
        election: args.leader_elect.then(|| leader_election(&args)),
        tencent: ClientConfig {
            endpoint: args.tencent.tencent_endpoint,
            sts_endpoint: args.tencent.sts_endpoint,
            allow_insecure_endpoint: args.tencent.allow_insecure_endpoint,
            limiter: match args.rate_limit_per_credentials {
                Some(rate) => limiter.with_per_credentials_rate(rate),
                None => limiter,
            },
            ..ClientConfig::default()
        },
        demo: args.demo,
        defaults: operator::DefaultsSettings {
            secret: args.default_credentials,
            namespaces: args.default_credentials_namespaces,
            role_arn: args.default_credentials_role_arn,
            pod_identity: args.default_credentials_pod_identity,
            role_session_name: args.role_session_name,
            role_duration_seconds: args.role_duration_seconds,
        },
        concurrency: args.concurrency,
        full_download_interval: args.full_download_interval,
        renewal: tencent_cert_operator::renew::RenewalConfig {
            switch: args.renewal_applications,
            poll_interval: args.renewal_poll_interval,
        },
        metrics: operator::MetricsSettings {
            addr: args.metrics_addr,
            secure: args.metrics_secure,
            cert_dir: args.metrics_cert_dir,
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ingress_shim: args.ingress_shim,
        gateway_shim: args.gateway_shim,
        gateway_api_check_interval: args.gateway_api_check_interval,
        namespaces: args.namespaces,
    }
}

#[cfg(feature = "demo")]
async fn run_demo(args: DemoArgs) -> ExitCode {
    // The report already says what each resource hit; the operator's own log lines would bury it. Errors
    // only, unless RUST_LOG asks for more.
    telemetry::init_logging_at(LogFormat::Text, "error");
    let options = demo::DemoOptions {
        cluster: args.cluster,
        metrics_addr: args.metrics_addr,
    };
    let mut stdout = std::io::stdout();
    match demo::run(options, shutdown_signal(), &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Heap profiling (feature `dhat-heap`): every allocation goes through dhat, which writes its profile when
/// `main` returns.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(std::env::var_os("DHAT_OUT").unwrap_or_else(|| "dhat-heap.json".into()))
        .trim_backtraces(Some(16))
        .build();
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per core) and rarely returns their free
/// space; the runtime's worker and blocking threads then hold several partly empty heaps. Two arenas
/// (`MALLOC_ARENA_MAX=2`) took the peak RSS of a 5,000-resource scale benchmark from 65 to 54 MiB at no
/// measurable cost. Set before any thread exists, so it applies to all of them.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called once, before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Whether the binary runs as the kubectl plugin (`kubectl-tcert`, or a link of that name).
fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .is_some_and(|stem| stem == "kubectl-tcert")
}

async fn async_main() -> ExitCode {
    if invoked_as_plugin() {
        return match PluginCli::parse().command {
            PluginCommand::Status(args) => run_status(args).await,
            PluginCommand::Renew(args) => run_renew(args).await,
        };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Status(args) => run_status(args).await,
        Command::Renew(args) => run_renew(args).await,
        Command::Run(args) => {
            telemetry::init_logging(args.log_format);
            run_operator(*args).await
        }
        Command::Fetch(args) => run_fetch(*args).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => run_demo(args).await,
        Command::Crd(args) => match if args.cluster {
            tencent_cert_operator::cluster::crd::crd_yaml()
        } else if args.push {
            tencent_cert_operator::push::crd_yaml()
        } else {
            crd::crd_yaml()
        } {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => run_check(args).await,
        Command::Version => {
            println!(
                "tencent-cert-operator {} (commit {}, target {})",
                env!("CARGO_PKG_VERSION"),
                tencent_cert_operator::GIT_COMMIT,
                tencent_cert_operator::BUILD_TARGET
            );
            ExitCode::SUCCESS
        }
        Command::Sim(args) => {
            telemetry::init_logging(LogFormat::Text);
            run_sim(*args).await
        }
    }
}
