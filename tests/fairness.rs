//! One tenant cannot starve another (issue 21, item 5), reproduced in-process: the fake API server and the
//! Tencent simulator over real HTTP, `reconcile` driven as the controller would drive it.
//!
//! Tenant A (namespace `tenant-a`, its own Tencent account) floods: its resources ask again and again, as
//! fast as they are answered. Tenant B (namespace `tenant-b`, another account) has certificates renewed in
//! Tencent Cloud and due for their routine refresh, the one that picks renewals up. The flood stops when B
//! is served, or after `FLOOD_CAP` of A's downloads — where B stood then is the measurement. Counts, not
//! times: how many of A's flood downloads Tencent served before B's last renewal was picked up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::controller::reconcile::reconcile;
use tencent_cert_operator::controller::{Context, DefaultCredentials};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, Account, CertificateSpec, SimConfig, SimHandle, catalog};
use tencent_ssl::limiter::LimiterConfig;
use tencent_ssl::{self as tencent, ClientConfig};

const A_NS: &str = "tenant-a";
const B_NS: &str = "tenant-b";
const A_RESOURCES: usize = 20;
const B_RESOURCES: usize = 10;
/// A's flood ends after this many of its downloads if B has not been served by then.
const FLOOD_CAP: u64 = 80;
/// Requests per second per action, the operator's whole budget while A floods: low enough that A's 20
/// resources keep it busy whatever the speed of this machine (the measurement: 60 at 10/s).
const RATE: f64 = 4.0;

struct Tenant {
    namespace: &'static str,
    secret_id: &'static str,
    secret_key: &'static str,
}

const A: Tenant = Tenant {
    namespace: A_NS,
    secret_id: "AKIDtenantAfairness01",
    secret_key: "tenant-a-secret-key",
};
const B: Tenant = Tenant {
    namespace: B_NS,
    secret_id: "AKIDtenantBfairness01",
    secret_key: "tenant-b-secret-key",
};

fn a_id(i: usize, variant: usize) -> String {
    format!("aa{variant}{i:03}")
}

fn b_id(i: usize) -> String {
    format!("bbb{i:03}")
}

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    /// The operator under test, at `RATE`.
    ctx: Arc<Context>,
    /// The same operator without a useful rate limit, for the first syncs before the flood.
    set_up_ctx: Arc<Context>,
}

impl Harness {
    async fn start() -> Self {
        let api = FakeApiServer::builder()
            .status_subresource("tencentcert.io", "tencentcertificates")
            .start()
            .await;
        let mut certificates: Vec<CertificateSpec> = Vec::new();
        for i in 0..A_RESOURCES {
            for variant in 0..2 {
                certificates.push(a_id(i, variant).parse().unwrap());
            }
        }
        for i in 0..B_RESOURCES {
            certificates.push(b_id(i).parse().unwrap());
        }
        let account = |t: &Tenant| Account {
            secret_id: t.secret_id.into(),
            secret_key: t.secret_key.into(),
            token: None,
        };
        let sim = sim::start_local(SimConfig {
            accounts: vec![account(&A), account(&B)],
            certificates,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let context = |rate: f64| {
            let tencent = tencent::Client::new(ClientConfig {
                endpoint: sim.endpoint(),
                limiter: LimiterConfig::per_second(rate),
                // Every download and lookup reaches the simulator: the counts are Tencent's work.
                download_cache_ttl: Duration::ZERO,
                lookup_cache_ttl: Duration::ZERO,
                allow_insecure_endpoint: true,
                ..ClientConfig::default()
            })
            .unwrap();
            Arc::new(
                Context::new(api.client(), tencent, DefaultCredentials::default())
                    .with_bundle_cache(Duration::ZERO, 8 << 20),
            )
        };
        let (ctx, set_up_ctx) = (context(RATE), context(1000.0));
        let h = Self {
            api,
            sim,
            ctx,
            set_up_ctx,
        };
        for tenant in [&A, &B] {
            h.put_credentials(tenant).await;
        }
        h
    }

    fn crs(&self, namespace: &str) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), namespace)
    }

    async fn put_credentials(&self, tenant: &Tenant) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tencent", "namespace": tenant.namespace},
            "stringData": {"secretId": tenant.secret_id, "secretKey": tenant.secret_key},
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.api.client(), tenant.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    async fn create(&self, namespace: &str, name: &str, certificate_id: &str) {
        let spec = json!({"certificateId": certificate_id, "credentialsRef": {"name": "tencent"}});
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(namespace.into());
        self.crs(namespace)
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    async fn reconcile(&self, namespace: &str, name: &str) -> TencentCertificate {
        self.reconcile_with(&self.ctx, namespace, name).await
    }

    async fn reconcile_with(
        &self,
        ctx: &Arc<Context>,
        namespace: &str,
        name: &str,
    ) -> TencentCertificate {
        let cr = self.crs(namespace).get(name).await.unwrap();
        reconcile(Arc::new(cr), ctx.clone()).await.unwrap();
        self.crs(namespace).get(name).await.unwrap()
    }

    async fn patch(&self, namespace: &str, name: &str, patch: Value) {
        self.crs(namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Due for the routine refresh, and past the daily full download: the refresh downloads.
    async fn make_download_due(&self, namespace: &str, name: &str) {
        self.crs(namespace)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "nextSyncTime": "2000-01-01T00:00:00Z",
                    "lastDownloadTime": "2000-01-01T00:00:00Z",
                }})),
            )
            .await
            .unwrap();
    }

    /// Downloads Tencent served per tenant (certificate ids starting with `a` or `b`).
    fn downloads_by_tenant(&self) -> BTreeMap<char, u64> {
        let mut by_tenant = BTreeMap::new();
        for (id, count) in self.sim.stats().by_certificate {
            *by_tenant.entry(id.chars().next().unwrap()).or_default() += count;
        }
        by_tenant
    }

    fn a_downloads(&self) -> u64 {
        self.downloads_by_tenant().get(&'a').copied().unwrap_or(0)
    }

    async fn fingerprint(&self, namespace: &str, name: &str) -> String {
        let cr = self.crs(namespace).get(name).await.unwrap();
        cr.status.unwrap().fingerprint_sha256.unwrap()
    }

    /// Both tenants synced once; B's certificates renewed in Tencent Cloud and due for their refresh.
    async fn set_up(&self) -> Vec<String> {
        let mut first_syncs = Vec::new();
        for i in 0..A_RESOURCES {
            self.create(A_NS, &format!("a{i}"), &a_id(i, 0)).await;
            first_syncs.push((A_NS, format!("a{i}")));
        }
        for i in 0..B_RESOURCES {
            self.create(B_NS, &format!("b{i}"), &b_id(i)).await;
            first_syncs.push((B_NS, format!("b{i}")));
        }
        futures::future::join_all(
            first_syncs
                .iter()
                .map(|(namespace, name)| self.reconcile_with(&self.set_up_ctx, namespace, name)),
        )
        .await;
        let mut before = Vec::new();
        for i in 0..B_RESOURCES {
            before.push(self.fingerprint(B_NS, &format!("b{i}")).await);
            let renewed: CertificateSpec = b_id(i).parse().unwrap();
            let mut built = catalog::build(&[renewed], None).unwrap();
            self.sim.state().put_certificate(built.remove(0));
            self.make_download_due(B_NS, &format!("b{i}")).await;
        }
        before
    }
}

/// How A floods: one step of one of its resources, before that resource's next reconcile.
#[derive(Clone, Copy)]
enum Flood {
    /// A new `tencentcert.io/refresh-requested-at` value every time ("refresh now" in a loop).
    RefreshRequests,
    /// The spec's certificate id switched between two of A's certificates every time.
    SpecChanges,
}

struct Outcome {
    /// A's downloads from the start of the flood to B's last renewal picked up (or to the cap).
    a_flood_downloads: u64,
    /// B's renewals picked up while the flood ran.
    b_served_during_flood: usize,
}

/// Runs A's flood against B's refreshes and reports where B stood when the flood ended.
async fn run_flood(h: &Harness, flood: Flood) -> Outcome {
    let b_before = h.set_up().await;
    let a_at_start = h.a_downloads();
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = (0..A_RESOURCES).map(|i| {
        let stop = stop.clone();
        async move {
            let name = format!("a{i}");
            let mut step = 0usize;
            while !stop.load(Ordering::SeqCst) && h.a_downloads() - a_at_start < FLOOD_CAP {
                step += 1;
                let patch = match flood {
                    Flood::RefreshRequests => json!({"metadata": {"annotations": {
                        "tencentcert.io/refresh-requested-at": format!("request-{step}")}}}),
                    Flood::SpecChanges => json!({"spec": {"certificateId": a_id(i, step % 2)}}),
                };
                h.patch(A_NS, &name, patch).await;
                h.reconcile(A_NS, &name).await;
                // A deferred request or an answered spec change returns at once: do not spin.
                tokio::task::yield_now().await;
            }
        }
    });
    let flood_done = futures::future::join_all(flooders);
    let b_refreshes = async {
        // Let the flood fill the queue first, as in the measurement.
        tokio::time::sleep(Duration::from_secs(1)).await;
        futures::future::join_all((0..B_RESOURCES).map(|i| async move {
            let name = format!("b{i}");
            h.reconcile(B_NS, &name).await;
            h.a_downloads() - a_at_start
        }))
        .await
    };
    let b_and_stop = async {
        let a_when_b_served = b_refreshes.await;
        stop.store(true, Ordering::SeqCst);
        a_when_b_served
    };
    let (_, a_when_b_served) = tokio::join!(flood_done, b_and_stop);
    let flood_total = h.a_downloads() - a_at_start;
    let mut b_served_during_flood = 0;
    for (i, before) in b_before.iter().enumerate() {
        let after = h.fingerprint(B_NS, &format!("b{i}")).await;
        assert_ne!(&after, before, "b{i}: the renewal was picked up in the end");
        if a_when_b_served[i] < FLOOD_CAP {
            b_served_during_flood += 1;
        }
    }
    let a_flood_downloads = a_when_b_served.iter().copied().max().unwrap_or(0);
    eprintln!(
        "A's flood downloads before B's last renewal was served: {a_flood_downloads} (cap {FLOOD_CAP}, \
         {flood_total} in all); B's renewals served during the flood: {b_served_during_flood}/{B_RESOURCES}; \
         Tencent downloads by tenant since the start: {:?}",
        h.downloads_by_tenant()
    );
    Outcome {
        a_flood_downloads,
        b_served_during_flood,
    }
}

#[tokio::test]
async fn refresh_requests_in_a_loop_do_not_starve_another_tenant() {
    let h = Harness::start().await;
    let outcome = run_flood(&h, Flood::RefreshRequests).await;
    assert_eq!(outcome.b_served_during_flood, B_RESOURCES);
    // "Refresh now" is honoured once per minute per resource: the first request of each of A's resources
    // downloads, every later one within the minute is deferred.
    assert!(
        outcome.a_flood_downloads <= A_RESOURCES as u64,
        "{}",
        outcome.a_flood_downloads
    );
}

#[tokio::test]
async fn an_urgent_flood_of_spec_changes_leaves_another_tenant_its_share() {
    let h = Harness::start().await;
    let outcome = run_flood(&h, Flood::SpecChanges).await;
    assert_eq!(outcome.b_served_during_flood, B_RESOURCES);
    // B's routine refreshes take turns with A's urgent downloads: A gets about one download per B download
    // meanwhile (plus those under way when B arrived), not the whole budget.
    assert!(
        outcome.a_flood_downloads <= 2 * B_RESOURCES as u64 + A_RESOURCES as u64,
        "{}",
        outcome.a_flood_downloads
    );
}

#[tokio::test]
async fn tencent_throttling_one_account_slows_only_that_account() {
    let ids =
        |prefix: &str| -> Vec<String> { (0..10).map(|i| format!("{prefix}{i:03}")).collect() };
    let (a_ids, b_ids) = (ids("thrA"), ids("thrB"));
    let account = |t: &Tenant| Account {
        secret_id: t.secret_id.into(),
        secret_key: t.secret_key.into(),
        token: None,
    };
    let sim = sim::start_local(SimConfig {
        accounts: vec![account(&A), account(&B)],
        certificates: a_ids
            .iter()
            .chain(&b_ids)
            .map(|id| id.parse().unwrap())
            .collect(),
        // Something else uses A's quota: Tencent answers A's first request with RequestLimitExceeded.
        faults: vec![sim::Fault {
            certificate_id: a_ids[0].clone(),
            code: "RequestLimitExceeded".into(),
            remaining: Some(1),
            probability: 1.0,
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        limiter: LimiterConfig::per_second(10.0),
        download_cache_ttl: Duration::ZERO,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let credentials =
        |t: &Tenant| tencent::Credentials::new(t.secret_id, t.secret_key, None).unwrap();
    let (a, b) = (credentials(&A), credentials(&B));
    // A's throttled request first, then both tenants' downloads together.
    client.download_certificate(&a, &a_ids[0]).await.unwrap();
    const ACTION: &str = "DownloadCertificate";
    assert_eq!(
        client.limiter().current_rate_for(ACTION, a.fingerprint()),
        5.0
    );
    assert_eq!(
        client.limiter().current_rate_for(ACTION, b.fingerprint()),
        10.0
    );
    let downloads = a_ids[1..]
        .iter()
        .map(|id| (&a, id))
        .chain(b_ids.iter().map(|id| (&b, id)))
        .map(|(credentials, id)| client.download_certificate(credentials, id));
    let results = futures::future::join_all(downloads).await;
    assert!(results.iter().all(Result::is_ok));
    // B was never slowed by A's throttling; the metric shows the lowest rate (A's, recovering).
    assert_eq!(
        client.limiter().current_rate_for(ACTION, b.fingerprint()),
        10.0
    );
    assert!(client.limiter().current_rate(ACTION) < 10.0);
    assert_eq!(sim.stats().rate_limited(), 1);
}

#[test]
fn a_rate_limit_out_of_range_is_refused_at_start() {
    let bin = env!("CARGO_BIN_EXE_tencent-cert-operator");
    for (flag, value) in [
        ("--rate-limit", "1e-20"),
        ("--rate-limit", "NaN"),
        ("--rate-limit", "0"),
        ("--rate-limit-per-credentials", "-1"),
    ] {
        let output = std::process::Command::new(bin)
            .args(["run", &format!("{flag}={value}")])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains("is not a rate in requests per second"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
