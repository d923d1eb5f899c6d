//! Leader election against the in-process fake API server's Lease API: acquire, stand by, take over from a
//! dead leader, hand over on shutdown, and stop working when the Lease is lost. Fencing: a replica that lost
//! its Lease, or could not renew it in time, has its writes refused before they are sent, and the controller's
//! queued reconciles are dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::controller::{self, Context, DefaultCredentials};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_cert_operator::leader::{
    Fence, LeaderElection, LeaderError, fenced_client, run_while_leading,
};
use tencent_cert_operator::telemetry::{Metrics, Readiness};
use tencent_sim::{self as sim, SimConfig};
use tencent_ssl::{self as tencent, ClientConfig, limiter::LimiterConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const LEASE: &str = "tencent-cert-operator";
const DURATION: Duration = Duration::from_secs(3);

/// One operator instance: `working` is true while its work runs (i.e. while it reconciles).
struct Instance {
    working: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// What the operator's writes go through.
    fence: Fence,
    /// The operator's client: built over `fence`.
    client: kube::Client,
    task: JoinHandle<()>,
}

fn start(api: &FakeApiServer, identity: &str) -> Instance {
    let working = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let fence = Fence::standby();
    let client = fenced_client(api.config().unwrap(), &fence).unwrap();
    let election = LeaderElection {
        lease_name: LEASE.into(),
        namespace: "ops".into(),
        identity: identity.into(),
        lease_duration: DURATION,
        renew_grace: Duration::from_secs(1),
    };
    let work = {
        let working = working.clone();
        let runs = runs.clone();
        move |until: BoxFuture<'static, ()>| {
            let working = working.clone();
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                working.store(true, Ordering::SeqCst);
                until.await;
                working.store(false, Ordering::SeqCst);
            }
            .boxed()
        }
    };
    let task = tokio::spawn({
        let client = api.client();
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        let fence = fence.clone();
        async move {
            run_while_leading(client, election, fence, stopped, readiness, metrics, work)
                .await
                .unwrap();
        }
    });
    Instance {
        working,
        runs,
        stop,
        metrics,
        readiness,
        fence,
        client,
        task,
    }
}

impl Instance {
    fn leads(&self) -> bool {
        self.working.load(Ordering::SeqCst)
    }
}

async fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {limit:?}");
}

async fn holder(api: &FakeApiServer) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    leases
        .get_opt(LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_and_the_other_stands_by_ready() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    let b = start(&api, "pod-b");
    wait_until("pod-b is ready", Duration::from_secs(10), || {
        b.readiness.is_ready()
    })
    .await;
    tokio::time::sleep(DURATION + Duration::from_secs(1)).await;
    assert!(a.leads() && !b.leads(), "exactly one leader");
    assert_eq!(holder(&api).await.as_deref(), Some("pod-a"));
    assert!(a.metrics.render().contains("tencentcert_leader 1"));
    assert!(b.metrics.render().contains("tencentcert_leader 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_dead_leader_within_the_lease_duration() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    let b = start(&api, "pod-b");
    wait_until("pod-b stands by", Duration::from_secs(10), || {
        b.readiness.is_ready()
    })
    .await;
    // The leader dies without releasing anything.
    a.task.abort();
    let took = wait_until("pod-b takes over", DURATION * 3, || b.leads()).await;
    eprintln!("standby took over {took:?} after the leader died (lease duration {DURATION:?})");
    assert!(took <= DURATION + Duration::from_secs(3), "{took:?}");
    assert_eq!(holder(&api).await.as_deref(), Some("pod-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lease_and_a_standby_takes_over() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    let b = start(&api, "pod-b");
    wait_until("pod-b stands by", Duration::from_secs(10), || {
        b.readiness.is_ready()
    })
    .await;
    a.stop.send(true).unwrap();
    let working = a.working.clone();
    tokio::time::timeout(Duration::from_secs(10), a.task)
        .await
        .expect("the leader exits promptly")
        .unwrap();
    assert!(!working.load(Ordering::SeqCst));
    // Released, not just left to expire: nobody holds it until the standby's next check.
    let released = holder(&api).await;
    assert!(
        released
            .as_deref()
            .is_none_or(|h| h.is_empty() || h == "pod-b"),
        "{released:?}"
    );
    let took = wait_until("pod-b takes over", DURATION * 3, || b.leads()).await;
    eprintln!("standby took over {took:?} after the leader released the Lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_working_at_once() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    // Someone else takes the Lease (e.g. after a network partition healed on their side).
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    leases
        .patch(
            LEASE,
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {"holderIdentity": "pod-z", "leaseDurationSeconds": 60,
                         "acquireTime": now, "renewTime": now}
            })),
        )
        .await
        .unwrap();
    let took = wait_until("pod-a stops working", DURATION * 3, || !a.leads()).await;
    eprintln!("the leader stopped {took:?} after losing its Lease");
    assert!(a.metrics.render().contains("tencentcert_leader 0"));
    // It stands by and does not start working again while pod-z holds the Lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a.leads());
    assert_eq!(a.runs.load(Ordering::SeqCst), 1);
}

/// Writes the Lease as another replica would, holding it for `seconds`.
async fn steal_lease(api: &FakeApiServer, holder: &str, seconds: i32) {
    let leases: Api<Lease> = Api::namespaced(api.client(), "ops");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    leases
        .patch(
            LEASE,
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                         "acquireTime": now, "renewTime": now}
            })),
        )
        .await
        .unwrap();
}

/// A Secret write as the operator makes it (server-side apply).
async fn apply_secret(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ops");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "ops"},
        "stringData": {"tls.crt": "not a certificate"},
    });
    secrets
        .patch(
            name,
            &PatchParams::apply("tencent-cert-operator").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map(|_| ())
}

/// Requests that change something, by method.
fn writes(requests: &[fake_apiserver::RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_has_every_write_refused_before_it_is_sent() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    apply_secret(&a.client, "while-leading").await.unwrap();
    steal_lease(&api, "pod-z", 60).await;
    wait_until("pod-a stops working", DURATION * 3, || !a.leads()).await;

    let before = api.requests().len();
    let err = apply_secret(&a.client, "after-loss").await.unwrap_err();
    assert!(tencent_cert_operator::leader::fence::refused(&err), "{err}");
    let secrets: Api<Secret> = Api::namespaced(a.client.clone(), "ops");
    let err = secrets
        .delete("while-leading", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(tencent_cert_operator::leader::fence::refused(&err), "{err}");
    // Reads still work (a standby keeps its caches warm).
    assert!(secrets.get_opt("while-leading").await.unwrap().is_some());
    let sent = api.requests();
    assert_eq!(
        writes(&sent[before..]),
        Vec::<String>::new(),
        "refused writes never reach the API server"
    );
    assert!(secrets.get_opt("after-loss").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_before_its_lease_could_be_taken_over() {
    let api = FakeApiServer::start().await;
    let a = start(&api, "pod-a");
    wait_until("pod-a leads", Duration::from_secs(10), || a.leads()).await;
    // From now on every renewal fails (the API server answers reads but refuses Lease writes): the last
    // successful renewal was sent before this instant.
    api.fail_next("PATCH", "leases", 500, 100_000);
    let renewals_fail = Instant::now();
    wait_until("pod-a stops working", DURATION * 3, || !a.leads()).await;
    // The earliest a standby could take over is a full lease duration after the last renewal it saw.
    tokio::time::sleep_until(renewals_fail + DURATION).await;
    assert!(!a.fence.allows_writes());
    let err = apply_secret(&a.client, "late").await.unwrap_err();
    assert!(tencent_cert_operator::leader::fence::refused(&err), "{err}");
    // Nobody else took the Lease: pod-a stopped on its own clock, not on seeing another holder.
    assert_eq!(holder(&api).await.as_deref(), Some("pod-a"));
    assert!(a.metrics.render().contains("tencentcert_leader 0"));
}

#[tokio::test]
async fn a_renew_grace_not_shorter_than_the_duration_is_refused_before_any_lease_write() {
    let api = FakeApiServer::start().await;
    let (_stop, stopped) = watch::channel(false);
    let election = LeaderElection {
        lease_name: LEASE.into(),
        namespace: "ops".into(),
        identity: "pod-a".into(),
        lease_duration: Duration::from_secs(5),
        renew_grace: Duration::from_secs(5),
    };
    let work = |until: BoxFuture<'static, ()>| until;
    let outcome = run_while_leading(
        api.client(),
        election,
        Fence::standby(),
        stopped,
        Arc::new(Readiness::default()),
        Arc::new(Metrics::new()),
        work,
    )
    .await;
    let err = outcome.unwrap_err();
    assert!(matches!(err, LeaderError::Timing(_)), "{err}");
    assert!(
        err.to_string()
            .contains("--lease-renew-grace (5s) must be shorter than --lease-duration (5s)"),
        "{err}"
    );
    assert_eq!(api.request_count("POST", "leases"), 0);
    assert_eq!(api.request_count("PATCH", "leases"), 0);
}

#[test]
fn run_refuses_a_renew_grace_not_shorter_than_the_duration_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tencent-cert-operator"))
        .args([
            "run",
            "--leader-elect",
            "--lease-duration",
            "10",
            "--lease-renew-grace",
            "12",
        ])
        // Refused before connecting: no cluster is needed to see it.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--lease-renew-grace (12s) must be shorter than --lease-duration (10s)"),
        "{stderr}"
    );
}

/// The reproduction of a deposed leader writing, in process: a backlog of 40 resources queued at a slow
/// Tencent rate limit, and the term ends while most of them wait. Before fencing, graceful shutdown let
/// every queued reconcile download and write (64 Secrets at the default concurrency on kube-local); now
/// they are dropped where they wait and nothing reaches the API server after the end of the term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_reconciles_are_dropped_and_write_nothing_once_the_term_ends() {
    const RESOURCES: usize = 40;
    const SECRET_ID: &str = "AKIDfencingTEST0001";
    const SECRET_KEY: &str = "fencing-test-secret-key";
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let ids: Vec<String> = (0..RESOURCES).map(|i| format!("fence{i:03}")).collect();
    let specs: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}:domain={id}.example.com"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let sim = sim::start_local(SimConfig::single_account(SECRET_ID, SECRET_KEY, &specs).unwrap())
        .await
        .unwrap();
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        limiter: LimiterConfig::per_second(4.0),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let fence = Fence::standby();
    fence.grant_until(tokio::time::Instant::now() + Duration::from_secs(600));
    let ctx = Arc::new(
        Context::new(
            fenced_client(api.config().unwrap(), &fence).unwrap(),
            tencent,
            DefaultCredentials::default(),
        )
        .with_fence(fence.clone()),
    );
    let secrets: Api<Secret> = Api::namespaced(api.client(), "web");
    let credentials: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": "web"},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    let crs: Api<TencentCertificate> = Api::namespaced(api.client(), "web");
    for id in &ids {
        let mut cr = TencentCertificate::new(
            id,
            serde_json::from_value(
                json!({"certificateId": id, "credentialsRef": {"name": "tencent"}}),
            )
            .unwrap(),
        );
        cr.metadata.namespace = Some("web".into());
        crs.create(&PostParams::default(), &cr).await.unwrap();
    }
    let stop = {
        let fence = fence.clone();
        async move { fence.lost().await }
    };
    let running = tokio::spawn(controller::run(
        ctx.clone(),
        controller::RunOptions {
            namespaces: vec!["web".into()],
            concurrency: 64,
        },
        stop,
    ));
    let written = || api.request_count("PATCH", "secrets");
    wait_until("a few Secrets are written", Duration::from_secs(30), || {
        written() >= 3
    })
    .await;

    // The term ends (as when a renewal is overdue or another replica holds the Lease).
    fence.close();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the controller stops once the term ends")
        .unwrap();
    // Writes admitted just before the end may still land; after that, nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_end = api.requests().len();
    let downloads = sim.stats().action_total("DownloadCertificate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = api.requests();
    assert_eq!(writes(&requests[after_end..]), Vec::<String>::new());
    assert_eq!(
        sim.stats().action_total("DownloadCertificate"),
        downloads,
        "queued reconciles were dropped, not run to completion"
    );
    let managed = secrets
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/managed-by=tencent-cert-operator"),
        )
        .await
        .unwrap()
        .items
        .len();
    assert!(
        managed < RESOURCES,
        "the backlog was still queued when the term ended ({managed} of {RESOURCES} written)"
    );
    // Not the resources' failure: no failed or error reconciles counted.
    let metrics = ctx.metrics.render();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("tencentcert_reconciles_total")
                && (l.contains("result=\"error\"") || l.contains("result=\"failed\""))),
        "{metrics}"
    );
}
