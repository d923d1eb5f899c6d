//! The memory benchmark (issue 23): the operator's resident memory per resource, as a slope.
//!
//! For each N of `--n` (default 0, 1,000, 5,000 and 20,000), one run:
//! 1. starts the in-process fake API server (`crates/fake-apiserver`) and stores M credentials Secrets and N
//!    `TencentCertificate`s over K = N / `--per-id` certificate ids in it (no HTTP: the store's own create
//!    path), so the run needs no cluster and the set-up costs nothing measurable;
//! 2. starts the simulator (`tencent-cert-operator sim`, `--rate` requests/s, no latency: memory, not
//!    time, is measured) with the K certificates;
//! 3. starts the operator (`tencent-cert-operator run`, all namespaces, defaults otherwise) against both,
//!    sampling its `/proc/PID/status` every 100 ms: `VmHWM` (peak RSS) and `VmRSS`;
//! 4. waits until every resource is `Ready=True` (read from the fake's store), then `--settle` seconds, and
//!    records the peak RSS so far and the RSS at that moment (the steady state); stops the operator with
//!    SIGTERM (a `dhat-heap` build writes its profile then).
//!
//! It reports, for each N, the peak and steady RSS and the **bytes per resource**: (RSS(N) − RSS(0)) / N, the
//! slope from the empty operator, and between consecutive N the marginal slope (RSS(N₂) − RSS(N₁)) /
//! (N₂ − N₁). What it measures is the operator process only (the API server and the simulator are other
//! processes or this one): its caches of resources and Secrets, scheduler entries, metric series, per-id
//! caches, allocator overhead. It does not measure what a real API server adds (managedFields and
//! defaulted fields in what the operator receives are trimmed by the operator the same way), nor time.
//!
//! ```sh
//! cargo build --release && cargo bench --bench memory -- --binary target/release/tencent-cert-operator
//! cargo bench --bench memory -- --n 0,1000,5000 --out target/bench-memory/report.json
//! # A heap profile of each run (a dhat-heap build): --dhat-dir target/bench-memory/dhat
//! ```
//!
//! It asserts nothing: it measures and prints (see BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

#[path = "support/process.rs"]
mod process;
use process::{ProcSample, clock_ticks, free_port, proc_sample, terminate};

/// SIGTERM, then this long for the process to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const SECRET_ID: &str = "AKIDbenchmemory0000";
const SECRET_KEY: &str = "bench-memory-secret-key";
const CREDENTIALS_SECRET: &str = "tencent-credentials";

struct Args {
    ns: Vec<usize>,
    per_id: usize,
    m: usize,
    rate: u32,
    settle: Duration,
    timeout: Duration,
    binary: PathBuf,
    out: PathBuf,
    dhat_dir: Option<PathBuf>,
    operator_args: Vec<String>,
}

fn usage() -> &'static str {
    "cargo bench --bench memory -- [--n 0,1000,5000,20000] [--per-id 10] [--m 10] [--rate 1000] \
     [--settle 5] [--timeout 900] [--binary PATH] [--out PATH] [--dhat-dir DIR] [--operator-arg=ARG]..."
}

fn parse_args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        ns: vec![0, 1000, 5000, 20000],
        per_id: 10,
        m: 10,
        rate: 1000,
        settle: Duration::from_secs(5),
        timeout: Duration::from_secs(900),
        binary: root.join("target/release/tencent-cert-operator"),
        out: root.join("target/bench-memory/report.json"),
        dhat_dir: None,
        operator_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if let Some(arg) = flag.strip_prefix("--operator-arg=") {
            args.operator_args.push(arg.to_string());
            continue;
        }
        // `cargo bench` passes `--bench` to every harness-less bench.
        if flag == "--bench" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => {
                args.ns = value()?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--per-id" => args.per_id = value()?.parse()?,
            "--m" => args.m = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--settle" => args.settle = Duration::from_secs(value()?.parse()?),
            "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
            "--binary" => args.binary = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--dhat-dir" => args.dhat_dir = Some(value()?.into()),
            other => return Err(format!("unknown flag {other}; {}", usage()).into()),
        }
    }
    if args.per_id == 0 || args.m == 0 {
        return Err("--per-id and --m must be at least 1".into());
    }
    Ok(args)
}

fn certificate_id(index: usize) -> String {
    format!("mem{index:05}")
}

async fn start_sim(args: &Args, k: usize, dir: &Path) -> Result<(Child, String)> {
    let mut command = Command::new(&args.binary);
    command
        .arg("sim")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--secret-id", SECRET_ID, "--secret-key", SECRET_KEY])
        .args(["--rate-limit", &args.rate.to_string()]);
    for i in 0..k {
        command
            .arg("--certificate")
            .arg(format!("{}:key=p256", certificate_id(i)));
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("sim.log"))?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout from the simulator")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .map_err(|_| "the simulator did not start within 120 s")??
        .ok_or("the simulator exited before printing its endpoint (see sim.log)")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, endpoint.trim().to_string()))
}

fn store_resources(server: &FakeApiServer, n: usize, k: usize, m: usize) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for ns in 0..m {
        let namespace = format!("mem-{ns}");
        server
            .create(
                "",
                "v1",
                "secrets",
                Some(&namespace),
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace,
                                 "labels": {"tencentcert.io/credentials": "true"}},
                    "type": "Opaque",
                    "data": {"secretId": b64(SECRET_ID), "secretKey": b64(SECRET_KEY)},
                }),
            )
            .map_err(|e| format!("storing a Secret: {e:?}"))?;
    }
    for i in 0..n {
        let namespace = format!("mem-{}", i % m);
        server
            .create(
                "tencentcert.io",
                "v1alpha1",
                "tencentcertificates",
                Some(&namespace),
                json!({
                    "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificate",
                    "metadata": {"name": format!("cert-{i:05}"), "namespace": namespace},
                    "spec": {"certificateId": certificate_id(i % k), "refreshInterval": "1h",
                             "credentialsRef": {"name": CREDENTIALS_SECRET}},
                }),
            )
            .map_err(|e| format!("storing a TencentCertificate: {e:?}"))?;
    }
    Ok(())
}

fn ready_count(server: &FakeApiServer) -> usize {
    server.count("tencentcert.io", "tencentcertificates", |cr| {
        cr["status"]["conditions"]
            .as_array()
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

struct Run {
    n: usize,
    k: usize,
    ready: usize,
    ready_seconds: f64,
    peak_kib: u64,
    steady_kib: u64,
    cpu_seconds: f64,
    secrets: usize,
}

async fn run_one(args: &Args, n: usize, ticks: f64) -> Result<Run> {
    let k = n.div_ceil(args.per_id).max(1);
    let dir = args
        .out
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("n{n}"));
    std::fs::create_dir_all(&dir)?;
    let server = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    store_resources(&server, n, k, args.m)?;
    let (mut sim, endpoint) = start_sim(args, k, &dir).await?;
    let mut command = Command::new(&args.binary);
    command
        .arg("run")
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(&args.operator_args)
        .env("KUBECONFIG", &kubeconfig)
        .env("TENCENTCLOUD_ENDPOINT", &endpoint)
        .env("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log"))?)
        .kill_on_drop(true);
    if let Some(dhat) = &args.dhat_dir {
        std::fs::create_dir_all(dhat)?;
        command.env("DHAT_OUT", dhat.join(format!("dhat-n{n}.json")));
    }
    let started = Instant::now();
    let mut operator = command.spawn()?;
    let pid = operator.id().ok_or("the operator exited at once")?;
    let mut last = ProcSample::default();
    let mut ready = 0;
    let mut ready_at = None;
    let mut next_count = Instant::now();
    while started.elapsed() < args.timeout {
        if let Some(s) = proc_sample(pid, ticks) {
            last = s;
        } else {
            return Err("the operator exited (see operator.log)".into());
        }
        if Instant::now() >= next_count {
            ready = ready_count(&server);
            next_count = Instant::now() + Duration::from_secs(1);
            if ready >= n {
                ready_at = Some(started.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_until = Instant::now() + args.settle;
    while Instant::now() < settle_until {
        if let Some(s) = proc_sample(pid, ticks) {
            last = s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secrets = server.objects("", "v1", "secrets", None).len() - args.m;
    terminate(&mut operator, STOP_GRACE).await;
    terminate(&mut sim, STOP_GRACE).await;
    Ok(Run {
        n,
        k,
        ready,
        ready_seconds: ready_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        peak_kib: last.hwm_kib,
        steady_kib: last.rss_kib,
        cpu_seconds: last.cpu_seconds,
        secrets,
    })
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn per_resource(bytes_delta: f64, n_delta: usize) -> Option<f64> {
    (n_delta > 0).then(|| (bytes_delta / n_delta as f64).round())
}

async fn run(args: Args) -> Result<()> {
    if !args.binary.exists() {
        return Err(format!(
            "{} not found: cargo build --release first, or --binary",
            args.binary.display()
        )
        .into());
    }
    let ticks = clock_ticks();
    let mut runs: Vec<Run> = Vec::new();
    for &n in &args.ns {
        eprintln!("memory benchmark: N = {n} ...");
        let run = run_one(&args, n, ticks).await?;
        eprintln!(
            "  N = {n}: {} Ready in {:.1} s, peak {} MiB, steady {} MiB",
            run.ready,
            run.ready_seconds,
            mib(run.peak_kib),
            mib(run.steady_kib)
        );
        runs.push(run);
    }
    let base = runs
        .iter()
        .find(|r| r.n == 0)
        .map(|r| (r.peak_kib, r.steady_kib));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "memory benchmark: {} ({}), per-id {}, M {}, sim {}/s, load average {}",
        args.binary.display(),
        tencent_cert_operator::GIT_COMMIT,
        args.per_id,
        args.m,
        args.rate,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "| N | K | all Ready | peak RSS | steady RSS | peak B/resource (from N=0) | steady B/resource (from N=0) | marginal peak B/resource | marginal steady B/resource | CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut report = Vec::new();
    let mut previous: Option<&Run> = None;
    for run in &runs {
        let from_base =
            |value: u64, base: u64| per_resource((value as f64 - base as f64) * 1024.0, run.n);
        let peak_slope = base.and_then(|(p, _)| from_base(run.peak_kib, p));
        let steady_slope = base.and_then(|(_, s)| from_base(run.steady_kib, s));
        let marginal = previous.and_then(|p| {
            let dn = run.n.saturating_sub(p.n);
            Some((
                per_resource((run.peak_kib as f64 - p.peak_kib as f64) * 1024.0, dn)?,
                per_resource((run.steady_kib as f64 - p.steady_kib as f64) * 1024.0, dn)?,
            ))
        });
        let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0}"));
        println!(
            "| {} | {} | {} / {} in {:.1} s | {} MiB | {} MiB | {} | {} | {} | {} | {:.1} s |",
            run.n,
            run.k,
            run.ready,
            run.n,
            run.ready_seconds,
            mib(run.peak_kib),
            mib(run.steady_kib),
            show(peak_slope),
            show(steady_slope),
            show(marginal.map(|m| m.0)),
            show(marginal.map(|m| m.1)),
            run.cpu_seconds
        );
        report.push(json!({
            "n": run.n, "k": run.k, "m": args.m, "ready": run.ready,
            "ready_seconds": run.ready_seconds, "peak_rss_kib": run.peak_kib,
            "steady_rss_kib": run.steady_kib, "cpu_seconds": run.cpu_seconds,
            "secrets_written": run.secrets,
            "peak_bytes_per_resource": peak_slope, "steady_bytes_per_resource": steady_slope,
            "marginal_peak_bytes_per_resource": marginal.map(|m| m.0),
            "marginal_steady_bytes_per_resource": marginal.map(|m| m.1),
        }));
        previous = Some(run);
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let document: Value = json!({
        "benchmark": "memory",
        "git_commit": tencent_cert_operator::GIT_COMMIT,
        "binary": args.binary.display().to_string(),
        "per_id": args.per_id, "rate": args.rate,
        "load_average": load.trim(),
        "runs": report,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&document)?)?;
    println!("report: {}", args.out.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
