//! Parking (issue 23, "slots never wait on Tencent"): the running controller against the in-process fake
//! API server and the Tencent simulator over real HTTP. A reconcile whose certificate is not in hand
//! returns its slot and is woken when the one background download of its (credentials, id) ends.
//! Counts and orderings, never times: a slow certificate is made slow by the simulator's latency, and
//! what is asserted is which downloads the simulator had answered when the other resources were Ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::controller::{self, Context, DefaultCredentials};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::limiter::LimiterConfig;
use tencent_ssl::{self as tencent, ClientConfig};

const NS: &str = "web";
const SECRET_ID: &str = "AKIDparkingTEST0001";
const SECRET_KEY: &str = "parking-test-secret-key";
/// How long any wait may take before the test fails (not a performance bound: a safety net).
const LIMIT: Duration = Duration::from_secs(120);

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    ctx: Arc<Context>,
    running: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// `ids` served by the simulator, `slow` of them answered after `slow_ms`; the operator's controller
/// over namespace `web` with `concurrency` slots and `rate` Tencent requests/s.
async fn start(ids: &[String], slow: &[(&str, u64)], concurrency: u16, rate: f64) -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let specs: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}:domain={id}.example.com"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let mut config = SimConfig::single_account(SECRET_ID, SECRET_KEY, &specs).unwrap();
    for (id, millis) in slow {
        config
            .latencies
            .push(format!("{id}={millis}").parse().unwrap());
    }
    let sim = sim::start_local(config).await.unwrap();
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        limiter: LimiterConfig::per_second(rate),
        // Every download reaches the simulator: counts are exact.
        download_cache_ttl: Duration::ZERO,
        lookup_cache_ttl: Duration::ZERO,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(Context::new(
        api.client(),
        tencent,
        DefaultCredentials::default(),
    ));
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let credentials: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": NS},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(
        ctx.clone(),
        controller::RunOptions {
            namespaces: vec![NS.into()],
            concurrency,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Harness {
        api,
        sim,
        ctx,
        running,
        stop,
    }
}

impl Harness {
    fn crs(&self) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), NS)
    }

    /// Resource `name` for certificate `id` (renewal links not followed: only downloads reach Tencent).
    async fn create(&self, name: &str, id: &str) {
        let spec = json!({
            "certificateId": id,
            "followRenewals": false,
            "credentialsRef": {"name": "tencent"},
        });
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(NS.into());
        self.crs()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    fn condition(&self, name: &str, kind: &str) -> Option<(String, String)> {
        let objects = self.api.objects(
            "tencentcert.io",
            "v1alpha1",
            "tencentcertificates",
            Some(NS),
        );
        let object = objects.iter().find(|o| o["metadata"]["name"] == name)?;
        let conditions = object["status"]["conditions"].as_array()?;
        let condition = conditions.iter().find(|c| c["type"] == kind)?;
        Some((
            condition["status"].as_str()?.to_string(),
            condition["reason"].as_str()?.to_string(),
        ))
    }

    fn ready(&self, name: &str) -> bool {
        self.condition(name, "Ready")
            .is_some_and(|(status, _)| status == "True")
    }

    /// Requests naming `id` that the simulator answered: downloads only, as renewals are not followed.
    fn downloads_of(&self, id: &str) -> u64 {
        self.sim
            .stats()
            .by_certificate
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    fn downloads(&self, code: &str) -> u64 {
        self.sim.stats().count("DownloadCertificate", code)
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        let mut events = self.api.objects("events.k8s.io", "v1", "events", Some(NS));
        events.extend(self.api.objects("", "v1", "events", Some(NS)));
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.running).await;
    }
}

/// The regarding (or involved) object of an event.
fn regarding(event: &Value) -> String {
    let object = if event["regarding"].is_object() {
        &event["regarding"]
    } else {
        &event["involvedObject"]
    };
    object["name"].as_str().unwrap_or_default().to_string()
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {LIMIT:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_in_hand_do_not_wait_behind_parked_downloads_and_each_id_downloads_once() {
    const RESOURCES: usize = 36;
    let ids: Vec<String> = (0..6).map(|i| format!("park{i:04}")).collect();
    // Two certificates Tencent answers slowly: before parking, their reconciles held both slots and
    // every other resource waited behind them.
    let slow = ["park0000", "park0001"];
    let h = start(&ids, &[(slow[0], 6000), (slow[1], 6000)], 2, 50.0).await;
    let names: Vec<(String, String)> = (0..RESOURCES)
        .map(|i| (format!("cert-{i:03}"), ids[i % ids.len()].clone()))
        .collect();
    for (name, id) in &names {
        h.create(name, id).await;
    }
    let fast: Vec<&String> = names
        .iter()
        .filter(|(_, id)| !slow.contains(&id.as_str()))
        .map(|(name, _)| name)
        .collect();
    wait_until("every resource of a fast certificate is Ready", || {
        fast.iter().all(|name| h.ready(name))
    })
    .await;
    // The slow downloads had not been answered then: nobody waited for them on a slot.
    for id in slow {
        assert_eq!(
            h.downloads_of(id),
            0,
            "{id} answered before the fast resources were Ready"
        );
    }
    assert!(h.ctx.parking.parked() > 0, "the slow resources are parked");
    assert!(
        h.ctx
            .metrics
            .render()
            .contains("tencentcert_parked_reconciles "),
        "the gauge is exported"
    );
    wait_until("every resource is Ready", || {
        names.iter().all(|(name, _)| h.ready(name))
    })
    .await;
    // N resources over K ids: K downloads, each id once.
    assert_eq!(h.downloads("Success"), ids.len() as u64);
    for id in &ids {
        assert_eq!(h.downloads_of(id), 1, "{id}");
    }
    assert_eq!(h.events("SecretCreated").len(), RESOURCES);
    wait_until("nothing stays parked", || h.ctx.parking.parked() == 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_is_reported_on_every_waiter_then_recovers() {
    const WAITERS: usize = 5;
    let ids = vec!["flaky001".to_string()];
    // Slow enough that every resource has parked on the first download before it fails.
    let h = start(&ids, &[("flaky001", 1500)], 64, 50.0).await;
    h.sim
        .state()
        .add_fault("flaky001=FailedOperation.NetworkError:1".parse().unwrap());
    let names: Vec<String> = (0..WAITERS).map(|i| format!("flaky-{i}")).collect();
    for name in &names {
        h.create(name, "flaky001").await;
    }
    // Events follow the status patch: wait for them too.
    wait_until(
        "every resource is Ready after the retry, and told so",
        || names.iter().all(|name| h.ready(name)) && h.events("Recovered").len() >= WAITERS,
    )
    .await;
    // One failed download, told on every waiter (one warning each), then each recovered.
    assert_eq!(h.downloads("FailedOperation.NetworkError"), 1);
    let mut warned: Vec<String> = h.events("NetworkError").iter().map(regarding).collect();
    warned.sort();
    assert_eq!(warned, names);
    let mut recovered: Vec<String> = h.events("Recovered").iter().map(regarding).collect();
    recovered.sort();
    assert_eq!(recovered, names);
    // The retries ask Tencent again (a failed attempt's retry never takes a shared download), at most
    // once per resource, fewer when they coalesce.
    let retried = h.downloads("Success");
    assert!((1..=WAITERS as u64).contains(&retried), "{retried}");
    for name in &names {
        assert_eq!(
            h.condition(name, "Synced").map(|(status, _)| status),
            Some("True".to_string())
        );
    }
    h.stop().await;
}

/// The reconciles counted with `result` (all reasons).
fn reconciles(h: &Harness, result: &str) -> u64 {
    let prefix = format!("tencentcert_reconciles_total{{result=\"{result}\"");
    h.ctx
        .metrics
        .render()
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echoes_of_the_operators_own_writes_reconcile_nothing_but_a_tenants_edit_does() {
    const RESOURCES: usize = 12;
    let ids: Vec<String> = (0..3).map(|i| format!("echo{i:04}")).collect();
    let h = start(&ids, &[], 4, 50.0).await;
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("echo-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        h.create(name, &ids[i % ids.len()]).await;
    }
    wait_until(
        "every resource is Ready, and every write's echo watched",
        || {
            eprintln!(
                "ready {} created {} waiting {}",
                names.iter().filter(|name| h.ready(name)).count(),
                h.events("SecretCreated").len(),
                h.ctx.own_writes.waiting()
            );
            names.iter().all(|name| h.ready(name))
                && h.events("SecretCreated").len() == RESOURCES
                && h.ctx.own_writes.waiting() == 0
        },
    )
    .await;
    // Each resource wrote its Secret (a create and an apply) and its status: before, their echoes
    // reconciled every resource once more, to find nothing to do.
    assert_eq!(reconciles(&h, "unchanged"), 0, "follow-up reconciles");
    // Someone else's write is no echo: the edited Secret is repaired.
    let secrets: Api<Secret> = Api::namespaced(h.api.client(), NS);
    let original = secrets.get("echo-00").await.unwrap().data.unwrap()["tls.crt"].clone();
    let tampered = json!({"data": {"tls.crt": "dGFtcGVyZWQ="}});
    secrets
        .patch(
            "echo-00",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&tampered),
        )
        .await
        .unwrap();
    wait_until("the tenant's edit of tls.crt is repaired", || {
        h.api
            .object("", "v1", "secrets", Some(NS), "echo-00")
            .is_some_and(|s| s["data"]["tls.crt"] == json!(original))
    })
    .await;
    h.stop().await;
}
