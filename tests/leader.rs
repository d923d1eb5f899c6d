//! Leader election against the in-process fake API server's Lease API: acquire, stand by, take over from a
//! dead leader, hand over on shutdown, and stop working when the Lease is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tencent_cert_operator::leader::{LeaderElection, run_while_leading};
use tencent_cert_operator::telemetry::{Metrics, Readiness};
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
    task: JoinHandle<()>,
}

fn start(api: &FakeApiServer, identity: &str) -> Instance {
    let working = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
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
        async move {
            run_while_leading(client, election, stopped, readiness, metrics, work)
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
