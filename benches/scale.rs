//! `cargo bench --bench scale -- [FLAGS]` (or `hack/bench-scale.sh [FLAGS]`): the scale benchmark of
//! issue 10, against the cluster of `KUBECONFIG` and the release binaries. Not a test: it measures and
//! reports, and asserts nothing about time. See BENCHMARKS.md for the scenarios and the figures.
//!
//! What it does, in order:
//! 1. installs the CRD (server-side apply) and deletes what a previous run left in its namespaces;
//! 2. makes sure U unrelated 2 KiB Secrets exist in their own namespace (kept between runs);
//! 3. starts `tencent-cert-operator sim` (K certificates, rate limit, latency for every action);
//! 4. creates M namespaces, each with a credentials Secret, and N TencentCertificates over the K ids
//!    (round-robin), all before the operator starts;
//! 5. starts `tencent-cert-operator run` (all namespaces) and watches the resources until all are Ready
//!    or the convergence timeout passes;
//! 6. one refresh wave with nothing changed (see `WaveMode`), measured as deltas;
//! 7. prints one table, writes JSON, kills its processes and deletes its namespaces (also on failure,
//!    Ctrl-C and the global timeout).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tencent_cert_operator::crd::{self, TencentCertificate};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

#[path = "support/process.rs"]
mod process;
use process::{ProcSample, clock_ticks, free_port, proc_sample, terminate};

/// SIGTERM, then this long for the process to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

const SECRET_ID: &str = "AKIDbenchSCALE0001";
const SECRET_KEY: &str = "bench-scale-secret-key";
const RUN_LABEL: &str = "bench.tencentcert.io/run";
const RUN_VALUE: &str = "scale";
const FIELD_MANAGER: &str = "tco-bench-scale";
const CREDENTIALS_SECRET: &str = "tencent-credentials";

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the resources' credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CredentialsMode {
    /// A credentials Secret in every namespace, named by `spec.credentialsRef`.
    PerNamespace,
    /// No `credentialsRef`: the operator's `--default-credentials PREFIX-0/tencent-credentials
    /// --default-credentials-namespaces '*'`.
    Default,
}

/// How the refresh wave after convergence is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WaveMode {
    /// `natural` when refreshInterval ≤ 5 minutes, else `due`.
    Auto,
    /// Watch for one refreshInterval (+10 %) after convergence: the routine refreshes as they come.
    Natural,
    /// Make every resource due at once by setting `status.nextSyncTime` to now (what the clock does
    /// after one refreshInterval, without waiting for it); the wave ends when every resource has a
    /// `lastSyncTime` after that moment, or at `--wave-timeout`.
    Due,
    /// No wave.
    None,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Scale benchmark: N TencentCertificates over K certificate ids in M namespaces")]
struct Args {
    /// Resources (TencentCertificates).
    #[arg(long, env = "BENCH_N", default_value_t = 1000)]
    n: usize,
    /// Distinct certificate ids (the simulator's certificates; resources use them round-robin).
    #[arg(long, env = "BENCH_K", default_value_t = 100)]
    k: usize,
    /// Namespaces the resources are spread over.
    #[arg(long, env = "BENCH_M", default_value_t = 5)]
    m: usize,
    /// Unrelated 2 KiB Secrets in `--unrelated-namespace` (created once, reused by later runs).
    #[arg(long, env = "BENCH_U", default_value_t = 20_000)]
    u: usize,
    /// The simulator's limit, requests per second per SecretId and action (Tencent documents 10).
    #[arg(long, env = "BENCH_RATE", default_value_t = 10.0)]
    rate: f64,
    /// The simulator's latency for every action, in milliseconds.
    #[arg(long, env = "BENCH_LATENCY_MS", default_value_t = 100)]
    latency_ms: u64,
    /// spec.refreshInterval of every resource.
    #[arg(long, env = "BENCH_REFRESH_INTERVAL", default_value = "1h")]
    refresh_interval: String,
    /// Seconds from the operator's start to give up waiting for all Ready (then the counts are taken).
    #[arg(long, env = "BENCH_CONVERGE_TIMEOUT", default_value_t = 1800)]
    converge_timeout: u64,
    /// How to produce the refresh wave after convergence.
    #[arg(long, env = "BENCH_WAVE", value_enum, default_value = "auto")]
    wave: WaveMode,
    /// Seconds a `due` wave may take at most.
    #[arg(long, env = "BENCH_WAVE_TIMEOUT", default_value_t = 900)]
    wave_timeout: u64,
    /// Seconds the whole run may take; then it reports what it has, cleans up and stops.
    #[arg(long, env = "BENCH_TIMEOUT", default_value_t = 3600)]
    timeout: u64,
    /// Where to write the JSON report.
    #[arg(
        long,
        env = "BENCH_OUT",
        default_value = "target/bench-scale/report.json"
    )]
    out: PathBuf,
    /// The release binary (operator and simulator).
    #[arg(
        long,
        env = "BENCH_BINARY",
        default_value = "target/release/tencent-cert-operator"
    )]
    binary: PathBuf,
    /// Prefix of the namespaces holding the resources (`PREFIX-0` … `PREFIX-{M-1}`).
    #[arg(long, env = "BENCH_PREFIX", default_value = "bench-scale")]
    prefix: String,
    /// Namespace of the unrelated Secrets.
    #[arg(
        long,
        env = "BENCH_UNRELATED_NAMESPACE",
        default_value = "bench-unrelated"
    )]
    unrelated_namespace: String,
    /// Key type of the simulator's certificates (p256 is the cheapest to generate).
    #[arg(long, env = "BENCH_KEY", default_value = "p256")]
    key: String,
    /// Concurrent requests when the harness creates objects.
    #[arg(long, env = "BENCH_API_CONCURRENCY", default_value_t = 16)]
    api_concurrency: usize,
    /// Where the resources' credentials come from (one SecretId either way).
    #[arg(
        long,
        env = "BENCH_CREDENTIALS",
        value_enum,
        default_value = "per-namespace"
    )]
    credentials: CredentialsMode,
    /// Extra argument for `tencent-cert-operator run` (repeatable), e.g. `--operator-arg=--concurrency=16`.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Keep the namespaces and resources afterwards (the processes are stopped anyway).
    #[arg(long, env = "BENCH_KEEP")]
    keep: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn namespaces(&self) -> Vec<String> {
        (0..self.m)
            .map(|i| format!("{}-{i}", self.prefix))
            .collect()
    }

    fn certificate_id(&self, index: usize) -> String {
        format!("bench{:05}", index % self.k)
    }

    fn physical_limit_seconds(&self) -> f64 {
        (self.k as f64 / self.rate).ceil()
    }

    fn log_dir(&self) -> PathBuf {
        self.out
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// What the watch of the resources shows about one of them.
#[derive(Debug, Clone, Default)]
struct Seen {
    has_status: bool,
    ready: bool,
    last_sync: Option<jiff::Timestamp>,
    next_sync: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, Default)]
struct Counts {
    total: usize,
    ready: usize,
    no_status: usize,
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

fn counts(seen: &SeenMap) -> Counts {
    let map = seen.lock().unwrap_or_else(|p| p.into_inner());
    Counts {
        total: map.len(),
        ready: map.values().filter(|s| s.ready).count(),
        no_status: map.values().filter(|s| !s.has_status).count(),
    }
}

fn synced_since(seen: &SeenMap, since: jiff::Timestamp) -> usize {
    let map = seen.lock().unwrap_or_else(|p| p.into_inner());
    map.values()
        .filter(|s| s.last_sync.is_some_and(|t| t >= since))
        .count()
}

/// Resources not synced since `since` whose `nextSyncTime` is later than `since` + 1 min: a reconcile that
/// was in flight when the wave was triggered wrote its status over the harness's patch.
fn overwritten(seen: &SeenMap, since: jiff::Timestamp) -> Vec<String> {
    let later = since + jiff::SignedDuration::from_secs(60);
    let map = seen.lock().unwrap_or_else(|p| p.into_inner());
    map.iter()
        .filter(|(_, s)| s.last_sync.is_none_or(|t| t < since))
        .filter(|(_, s)| s.next_sync.is_some_and(|t| t > later))
        .map(|(key, _)| key.clone())
        .collect()
}

fn observe(cr: &TencentCertificate) -> Seen {
    let Some(status) = cr.status.as_ref() else {
        return Seen::default();
    };
    Seen {
        has_status: true,
        ready: status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        last_sync: status
            .last_sync_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
        next_sync: status
            .next_sync_time
            .as_deref()
            .and_then(|t| t.parse().ok()),
    }
}

/// The processes the harness started; killed on every way out.
#[derive(Default)]
struct Processes {
    sim: Option<Child>,
    operator: Option<Child>,
}

impl Processes {
    async fn stop(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            terminate(&mut operator, STOP_GRACE).await;
        }
        if let Some(mut sim) = self.sim.take() {
            terminate(&mut sim, STOP_GRACE).await;
        }
    }
}

/// action → code → count.
type ByAction = BTreeMap<String, BTreeMap<String, u64>>;

async fn sim_stats(http: &reqwest::Client, endpoint: &str) -> Result<ByAction> {
    let stats: Value = http
        .get(format!("{endpoint}/_sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    Ok(serde_json::from_value(stats["by_action"].clone())?)
}

fn total(by: &ByAction) -> u64 {
    by.values().flat_map(|codes| codes.values()).sum()
}

fn count_code(by: &ByAction, code: &str) -> u64 {
    by.values().filter_map(|codes| codes.get(code)).sum()
}

fn delta(after: &ByAction, before: &ByAction) -> ByAction {
    let mut out = ByAction::new();
    for (action, codes) in after {
        for (code, n) in codes {
            let was = before
                .get(action)
                .and_then(|c| c.get(code))
                .copied()
                .unwrap_or(0);
            if *n > was {
                out.entry(action.clone())
                    .or_default()
                    .insert(code.clone(), n - was);
            }
        }
    }
    out
}

fn compact(by: &ByAction) -> String {
    if by.is_empty() {
        return "none".into();
    }
    by.iter()
        .flat_map(|(action, codes)| {
            codes
                .iter()
                .map(move |(code, n)| format!("{action}/{code}={n}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator's counters of one metric family, keyed by their label set (`k=v,k=v`).
async fn scrape(http: &reqwest::Client, port: u16) -> Result<HashMap<String, f64>> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Ok(value) = value.parse::<f64>() {
            out.insert(series.to_string(), value);
        }
    }
    Ok(out)
}

fn metric_sum(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

fn metric_series(metrics: &HashMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{name}{{")))
        .map(|(series, v)| (series[name.len()..].to_string(), *v))
        .collect()
}

fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration {text:?} (use s, m or h)").into()),
    };
    Ok(Duration::from_secs(seconds))
}

fn elapsed(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

fn log(since: Instant, message: impl AsRef<str>) {
    eprintln!(
        "[{:>7.1}s] {}",
        since.elapsed().as_secs_f64(),
        message.as_ref()
    );
}

async fn install_crd(client: &kube::Client) -> Result<()> {
    let yaml = crd::crd_yaml()?;
    let definition: CustomResourceDefinition = serde_saphyr::from_str(&yaml)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = definition.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&definition),
    )
    .await?;
    for _ in 0..60 {
        let established = api.get(&name).await?.status.is_some_and(|s| {
            s.conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("the CRD did not become Established within 30 s".into())
}

/// Deletes the namespaces of previous runs (labelled) and waits until they are gone.
async fn delete_run_namespaces(client: &kube::Client, wait: Duration) -> Result<usize> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{RUN_LABEL}={RUN_VALUE}");
    let existing = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    let names: Vec<String> = existing
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for name in &names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let left = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        if left.items.is_empty() {
            return Ok(names.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("namespaces labelled {selector} still exist after {wait:?}").into())
}

async fn ensure_namespace(client: &kube::Client, name: &str, labels: Value) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&namespace),
    )
    .await?;
    Ok(())
}

/// Creates whichever of the U unrelated Secrets are missing; returns how many it created.
async fn ensure_unrelated(client: &kube::Client, args: &Args) -> Result<usize> {
    if args.u == 0 {
        return Ok(0);
    }
    ensure_namespace(
        client,
        &args.unrelated_namespace,
        json!({"bench.tencentcert.io/unrelated": "true"}),
    )
    .await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &args.unrelated_namespace);
    let mut existing = std::collections::HashSet::new();
    let mut params = ListParams::default().limit(5000);
    loop {
        let page = api.list_metadata(&params).await?;
        existing.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    let missing: Vec<String> = (0..args.u)
        .map(|i| format!("unrelated-{i:05}"))
        .filter(|name| !existing.contains(name))
        .collect();
    let created = missing.len();
    futures::stream::iter(missing)
        .map(|name| {
            let api = api.clone();
            async move {
                let mut blob = vec![0u8; 2048];
                blob.iter_mut().for_each(|b| *b = fastrand::u8(..));
                let secret: Secret = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name},
                    "type": "Opaque",
                    "data": {"blob": base64::engine::general_purpose::STANDARD.encode(&blob)},
                }))?;
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .buffer_unordered(args.api_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(created)
}

/// Starts the simulator and returns it with its endpoint (the first line it prints).
async fn start_sim(args: &Args) -> Result<(Child, String)> {
    let mut command = Command::new(&args.binary);
    command
        .arg("sim")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--secret-id", SECRET_ID, "--secret-key", SECRET_KEY])
        .args(["--rate-limit", &args.rate.to_string()])
        .args(["--latency", &format!("*={}", args.latency_ms)]);
    for i in 0..args.k {
        command
            .arg("--certificate")
            .arg(format!("{}:key={}", args.certificate_id(i), args.key));
    }
    let log = std::fs::File::create(args.log_dir().join("sim.log"))?;
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout from the simulator")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .map_err(|_| "the simulator did not start within 300 s")??
        .ok_or("the simulator exited before printing its endpoint (see sim.log)")?;
    // Keep draining stdout so the simulator never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, endpoint.trim().to_string()))
}

async fn create_resources(client: &kube::Client, args: &Args) -> Result<()> {
    for (index, namespace) in args.namespaces().into_iter().enumerate() {
        ensure_namespace(client, &namespace, json!({RUN_LABEL: RUN_VALUE})).await?;
        if args.credentials == CredentialsMode::Default && index > 0 {
            continue;
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let credentials: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "labels": {"tencentcert.io/credentials": "true"}},
            "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
        }))?;
        secrets.create(&PostParams::default(), &credentials).await?;
    }
    let namespaces = args.namespaces();
    futures::stream::iter(0..args.n)
        .map(|i| {
            let namespace = namespaces[i % namespaces.len()].clone();
            let api: Api<TencentCertificate> = Api::namespaced(client.clone(), &namespace);
            let certificate_id = args.certificate_id(i);
            let refresh = args.refresh_interval.clone();
            let per_namespace = args.credentials == CredentialsMode::PerNamespace;
            async move {
                let mut spec = json!({"certificateId": certificate_id, "refreshInterval": refresh});
                if per_namespace {
                    spec["credentialsRef"] = json!({"name": CREDENTIALS_SECRET});
                }
                let cr: TencentCertificate = serde_json::from_value(json!({
                    "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificate",
                    "metadata": {"name": format!("cert-{i:05}"), "labels": {RUN_LABEL: RUN_VALUE}},
                    "spec": spec,
                }))?;
                api.create(&PostParams::default(), &cr).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(args.api_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Watches the run's resources into `seen` until the task is aborted.
fn watch_resources(client: &kube::Client) -> (SeenMap, tokio::task::JoinHandle<()>) {
    let seen: SeenMap = Arc::default();
    let api: Api<TencentCertificate> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={RUN_VALUE}"));
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        while let Some(item) = stream.next().await {
            if let Ok(cr) = item {
                let key = format!(
                    "{}/{}",
                    cr.metadata.namespace.as_deref().unwrap_or_default(),
                    cr.metadata.name.as_deref().unwrap_or_default()
                );
                let observed = observe(&cr);
                into.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, observed);
            }
        }
    });
    (seen, task)
}

async fn start_operator(args: &Args, endpoint: &str, port: u16) -> Result<Child> {
    let log = std::fs::File::create(args.log_dir().join("operator.log"))?;
    let mut command = Command::new(&args.binary);
    command
        .arg("run")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    if args.credentials == CredentialsMode::Default {
        command
            .arg("--default-credentials")
            .arg(format!("{}-0/{CREDENTIALS_SECRET}", args.prefix))
            .args(["--default-credentials-namespaces", "*"]);
    }
    Ok(command
        .args(&args.operator_args)
        .env("TENCENTCLOUD_ENDPOINT", endpoint)
        .env("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// Operator CPU, RSS and peak RSS; the peak across samples is kept in `peak_rss_kib`.
struct Sampler {
    pid: u32,
    ticks: f64,
    peak_rss_kib: u64,
}

impl Sampler {
    fn sample(&mut self) -> ProcSample {
        let sample = proc_sample(self.pid, self.ticks).unwrap_or_default();
        self.peak_rss_kib = self.peak_rss_kib.max(sample.hwm_kib).max(sample.rss_kib);
        sample
    }
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The measured run; fills `report` as it goes, so a failure or timeout still reports what it saw.
async fn scenario(
    args: &Args,
    client: &kube::Client,
    processes: &mut Processes,
    report: &mut serde_json::Map<String, Value>,
    table: &mut Vec<(String, String)>,
) -> Result<()> {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let refresh = parse_duration(&args.refresh_interval)?;

    install_crd(client).await?;
    let removed = delete_run_namespaces(client, Duration::from_secs(600)).await?;
    log(
        started,
        format!("CRD installed; {removed} namespace(s) of an earlier run deleted"),
    );

    let setup = Instant::now();
    let created = ensure_unrelated(client, args).await?;
    log(
        started,
        format!(
            "{} unrelated Secrets present ({created} created now)",
            args.u
        ),
    );
    report.insert(
        "unrelated_secrets".into(),
        json!({"present": args.u, "created_now": created, "seconds": elapsed(setup)}),
    );

    let (sim, endpoint) = start_sim(args).await?;
    processes.sim = Some(sim);
    log(
        started,
        format!("simulator at {endpoint} with {} certificates", args.k),
    );

    let setup = Instant::now();
    create_resources(client, args).await?;
    log(
        started,
        format!(
            "{} TencentCertificates created in {} namespaces ({:.1} s)",
            args.n,
            args.m,
            elapsed(setup)
        ),
    );
    report.insert("create_seconds".into(), json!(elapsed(setup)));

    let (seen, watch_task) = watch_resources(client);
    let _abort_watch = AbortOnDrop(watch_task);
    while counts(&seen).total < args.n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let port = free_port()?;
    let operator = start_operator(args, &endpoint, port).await?;
    let t0 = Instant::now();
    let pid = operator.id().ok_or("the operator has no pid")?;
    processes.operator = Some(operator);
    let mut sampler = Sampler {
        pid,
        ticks: clock_ticks(),
        peak_rss_kib: 0,
    };
    log(
        started,
        format!("operator started (pid {pid}, metrics on 127.0.0.1:{port})"),
    );

    // Convergence.
    let converge_deadline = t0 + Duration::from_secs(args.converge_timeout);
    // Seconds until 10, 50, 90 and 100 % of the resources were Ready.
    let mut milestones: Vec<(usize, f64)> = Vec::new();
    let mut last_log = Instant::now();
    let converged = loop {
        let c = counts(&seen);
        for pct in [10usize, 50, 90, 100] {
            if c.ready * 100 >= args.n * pct && !milestones.iter().any(|(p, _)| *p == pct) {
                milestones.push((pct, elapsed(t0)));
            }
        }
        sampler.sample();
        if c.ready >= args.n {
            break true;
        }
        if Instant::now() >= converge_deadline {
            break false;
        }
        if let Some(operator) = processes.operator.as_mut()
            && let Some(status) = operator.try_wait()?
        {
            return Err(
                format!("the operator exited during the run: {status} (see operator.log)").into(),
            );
        }
        if last_log.elapsed() >= Duration::from_secs(30) {
            log(
                started,
                format!(
                    "{:.0} s: {} / {} Ready, {} without status",
                    t0.elapsed().as_secs_f64(),
                    c.ready,
                    args.n,
                    c.no_status
                ),
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let converge_s = elapsed(t0);
    let c = counts(&seen);
    let at_converge = sampler.sample();
    let sim_at_converge = sim_stats(&http, &endpoint).await?;
    let metrics_at_converge = scrape(&http, port).await.unwrap_or_default();
    let limit = args.physical_limit_seconds();
    let all_ready_s = converged.then_some(converge_s);
    log(
        started,
        format!(
            "convergence: {} / {} Ready after {converge_s} s ({} without status)",
            c.ready, args.n, c.no_status
        ),
    );

    let requests_total = total(&sim_at_converge);
    let limited = count_code(&sim_at_converge, "RequestLimitExceeded");
    report.insert(
        "converge".into(),
        json!({
            "all_ready": converged,
            "all_ready_seconds": all_ready_s,
            "waited_seconds": converge_s,
            "physical_limit_seconds": limit,
            "ratio_to_limit": all_ready_s.map(|s| round1(s / limit)),
            "ready": c.ready,
            "without_status": c.no_status,
            "ready_percent_seconds": milestones
                .iter()
                .map(|(pct, s)| json!({"percent": pct, "seconds": s}))
                .collect::<Vec<_>>(),
            "tencent_requests_total": requests_total,
            "tencent_requests": sim_at_converge,
            "request_limit_exceeded": limited,
            "operator_tencent_requests": metric_series(&metrics_at_converge, "tencentcert_tencent_requests_total"),
            "secret_writes": metric_sum(&metrics_at_converge, "tencentcert_secret_writes_total"),
            "operator_cpu_seconds": round1(at_converge.cpu_seconds),
            "operator_rss_mib": mib(at_converge.rss_kib),
            "operator_peak_rss_mib": mib(sampler.peak_rss_kib),
        }),
    );
    let ratio = all_ready_s.map_or("-".to_string(), |s| format!("{:.1}×", s / limit));
    table.push((
        "all Ready".into(),
        match all_ready_s {
            Some(s) => format!("{s} s ({ratio} of ⌈K/rate⌉ = {limit} s)"),
            None => format!("NOT within {converge_s} s: {} / {} Ready", c.ready, args.n),
        },
    ));
    table.push((
        "without any status at the end".into(),
        c.no_status.to_string(),
    ));
    table.push((
        "Ready 10/50/90/100 % after".into(),
        milestones
            .iter()
            .map(|(pct, s)| format!("{pct}%: {s} s"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    table.push((
        "Tencent requests to converge".into(),
        format!("{requests_total}: {}", compact(&sim_at_converge)),
    ));
    table.push(("RequestLimitExceeded".into(), limited.to_string()));
    table.push((
        "Secret writes to converge".into(),
        metric_sum(&metrics_at_converge, "tencentcert_secret_writes_total").to_string(),
    ));
    table.push((
        "operator CPU to converge".into(),
        format!("{:.1} s", at_converge.cpu_seconds),
    ));
    table.push((
        "operator peak RSS (VmHWM)".into(),
        format!("{} MiB", mib(sampler.peak_rss_kib)),
    ));

    // The refresh wave.
    let mode = match args.wave {
        WaveMode::Auto if refresh <= Duration::from_secs(300) => WaveMode::Natural,
        WaveMode::Auto => WaveMode::Due,
        other => other,
    };
    if mode == WaveMode::None || !converged {
        let why = if converged {
            "--wave none"
        } else {
            "not converged"
        };
        report.insert("wave".into(), json!({"mode": "skipped", "why": why}));
        table.push(("refresh wave".into(), format!("skipped ({why})")));
        return Ok(());
    }
    // Let the reconciles that convergence triggered (status writes wake their resource up) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Status times have a precision of one second.
    let wave_start = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())?;
    let before_cpu = sampler.sample().cpu_seconds;
    let before_sim = sim_stats(&http, &endpoint).await?;
    let before_metrics = scrape(&http, port).await.unwrap_or_default();
    let w0 = Instant::now();
    // How long patching every resource took: the operator starts on the first ones meanwhile, so a
    // `due` wave cannot look shorter than this.
    let mut mark_seconds = None;
    let (window, mode_name) = match mode {
        WaveMode::Natural => (refresh.mul_f64(1.1), "natural"),
        _ => {
            let all: Vec<String> = args
                .namespaces()
                .iter()
                .cycle()
                .zip(0..args.n)
                .map(|(namespace, i)| format!("{namespace}/cert-{i:05}"))
                .collect();
            let marking = Instant::now();
            mark_due(client, args, &all, wave_start).await?;
            mark_seconds = Some(elapsed(marking));
            (Duration::from_secs(args.wave_timeout), "due")
        }
    };
    log(
        started,
        format!("refresh wave ({mode_name}) for up to {window:?}"),
    );
    let mut last_log = Instant::now();
    let mut last_check = Instant::now();
    let mut remarked = 0;
    let wave_all_s = loop {
        sampler.sample();
        if mode == WaveMode::Due && last_check.elapsed() >= Duration::from_secs(10) {
            let again = overwritten(&seen, wave_start);
            if !again.is_empty() {
                log(
                    started,
                    format!(
                        "wave: {} resource(s) lost the trigger to a reconcile in flight; marking them due again",
                        again.len()
                    ),
                );
                remarked += again.len();
                mark_due(client, args, &again, wave_start).await?;
            }
            last_check = Instant::now();
        }
        let refreshed = synced_since(&seen, wave_start);
        if mode == WaveMode::Due && refreshed >= args.n {
            break Some(elapsed(w0));
        }
        if w0.elapsed() >= window {
            break (refreshed >= args.n).then_some(elapsed(w0));
        }
        if last_log.elapsed() >= Duration::from_secs(30) {
            log(started, format!("wave: {refreshed} / {} refreshed", args.n));
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if mode == WaveMode::Due {
        // Let in-flight work finish so it is counted.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let after = sampler.sample();
    let after_sim = sim_stats(&http, &endpoint).await?;
    let after_metrics = scrape(&http, port).await.unwrap_or_default();
    let wave_requests = delta(&after_sim, &before_sim);
    let writes = metric_sum(&after_metrics, "tencentcert_secret_writes_total")
        - metric_sum(&before_metrics, "tencentcert_secret_writes_total");
    let refreshed = synced_since(&seen, wave_start);
    let c = counts(&seen);
    report.insert(
        "wave".into(),
        json!({
            "mode": mode_name,
            "window_seconds": elapsed(w0),
            "all_refreshed_seconds": wave_all_s,
            "refreshed": refreshed,
            "marked_due_again": remarked,
            "mark_seconds": mark_seconds,
            "ready_after": c.ready,
            "tencent_requests_total": total(&wave_requests),
            "tencent_requests": wave_requests,
            "request_limit_exceeded": count_code(&wave_requests, "RequestLimitExceeded"),
            "secret_writes": writes,
            "operator_cpu_seconds": round1(after.cpu_seconds - before_cpu),
        }),
    );
    report.insert(
        "operator_peak_rss_mib".into(),
        json!(mib(sampler.peak_rss_kib)),
    );
    table.push((
        format!("refresh wave ({mode_name})"),
        format!(
            "{refreshed} / {} refreshed in {} s{}{}",
            args.n,
            elapsed(w0),
            wave_all_s.map_or(String::new(), |s| format!(" (all after {s} s)")),
            mark_seconds.map_or(String::new(), |s| format!("; patching all took {s} s"))
        ),
    ));
    table.push((
        "  Tencent requests".into(),
        format!("{}: {}", total(&wave_requests), compact(&wave_requests)),
    ));
    table.push(("  Secret writes".into(), writes.to_string()));
    table.push((
        "  operator CPU".into(),
        format!("{:.1} s", after.cpu_seconds - before_cpu),
    ));
    table.push((
        "operator peak RSS, whole run".into(),
        format!("{} MiB", mib(sampler.peak_rss_kib)),
    ));
    Ok(())
}

/// Sets `status.nextSyncTime` of the resources `keys` (`namespace/name`) to `at` (a merge patch of the
/// status only: no spec change, no new generation), which is what the clock does when a refreshInterval
/// has passed.
async fn mark_due(
    client: &kube::Client,
    args: &Args,
    keys: &[String],
    at: jiff::Timestamp,
) -> Result<()> {
    let patch = json!({"status": {"nextSyncTime": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let (namespace, name) = key.split_once('/').unwrap_or_default();
            let api: Api<TencentCertificate> = Api::namespaced(client.clone(), namespace);
            let name = name.to_string();
            let patch = patch.clone();
            async move {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(args.api_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn git_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn print_table(args: &Args, table: &[(String, String)]) {
    let width = table
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "scale benchmark: N={} K={} M={} U={} rate={}/s latency={} ms refreshInterval={}",
        args.n, args.k, args.m, args.u, args.rate, args.latency_ms, args.refresh_interval
    );
    for (key, value) in table {
        println!("  {key:<width$}  {value}");
    }
}

async fn run(args: Args) -> Result<()> {
    if args.n == 0 || args.k == 0 || args.m == 0 || args.rate <= 0.0 {
        return Err("N, K, M and rate must be positive".into());
    }
    std::fs::create_dir_all(args.log_dir())?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no usable KUBECONFIG: {e}"))?;
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| "the API server did not answer within 10 s")??;

    let mut report = serde_json::Map::new();
    report.insert(
        "parameters".into(),
        json!({
            "n": args.n, "k": args.k, "m": args.m, "u": args.u, "rate": args.rate,
            "latency_ms": args.latency_ms, "refresh_interval": args.refresh_interval,
            "converge_timeout_s": args.converge_timeout, "wave": format!("{:?}", args.wave).to_lowercase(),
            "operator_args": args.operator_args,
            "credentials": format!("{:?}", args.credentials),
        }),
    );
    report.insert(
        "environment".into(),
        json!({
            "started_at": jiff::Timestamp::now().to_string(),
            "git_commit": git_commit(),
            "kubernetes": version.git_version,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    );
    let mut table = Vec::new();
    let mut processes = Processes::default();
    let outcome = {
        let work = scenario(&args, &client, &mut processes, &mut report, &mut table);
        tokio::select! {
            result = tokio::time::timeout(Duration::from_secs(args.timeout), work) => match result {
                Ok(result) => result,
                Err(_) => Err(format!("global timeout of {} s reached", args.timeout).into()),
            },
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    };
    processes.stop().await;
    if let Err(e) = &outcome {
        report.insert("error".into(), json!(e.to_string()));
        table.push(("ERROR".into(), e.to_string()));
    }
    print_table(&args, &table);
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&Value::Object(report))?,
    )?;
    println!("  JSON: {}", args.out.display());
    if !args.keep {
        eprintln!("deleting the run's namespaces (--keep keeps them)");
        if let Err(e) = delete_run_namespaces(&client, Duration::from_secs(300)).await {
            eprintln!("cleanup: {e}");
        }
    }
    outcome
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
