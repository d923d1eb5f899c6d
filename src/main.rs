//! The `tencent-cert-operator` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tencent_cert_operator::sim::{self, Account, CertificateSpec, Fault, Latency, SimConfig};

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
    /// Run the Tencent Cloud SSL API simulator (for tests, demos and benchmarks).
    Sim(Box<SimArgs>),
    /// Print the version and build target.
    Version,
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
    /// A certificate to generate: ID[:domain=D,san=A+B,key=rsa2048|rsa4096|p256|p384,no-key,expired,status=N,layout=folders|folders-root|flat,with-root]
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
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "tencent-cert-operator {} ({}-{})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
                std::env::consts::OS
            );
            ExitCode::SUCCESS
        }
        Command::Sim(args) => {
            init_logging();
            run_sim(*args).await
        }
    }
}
