//! The Ingress and Gateway shims against the in-process fake API server, with their real watches: annotate
//! a route, get generated TencentCertificates (and, with the main controller and the simulator, their
//! Secrets); change and remove annotations and TLS entries; conflicts with resources written by hand; the
//! Gateway API installed after start-up.

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use tencent_cert_operator::controller::{self, Context, DefaultCredentials};
use tencent_cert_operator::crd::{DeletionPolicy, TencentCertificate};
use tencent_cert_operator::shim::{self, ShimOptions, gateway::Gateway};
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::{self as tencent, ClientConfig};
use tokio::sync::watch;

const NS: &str = "web";
const SECRET_ID: &str = "AKIDshimTEST0001";
const SECRET_KEY: &str = "shim-test-secret-key-do-not-log";

struct Harness {
    api: FakeApiServer,
    stop: watch::Sender<bool>,
    sim: Option<SimHandle>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn until(stop: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stopped = stop.subscribe();
    async move {
        let _ = stopped.wait_for(|s| *s).await;
    }
}

/// The fake API server with the CRD's status subresource and the shims running (Gateway API looked for
/// every 100 ms).
async fn start(gateway: bool) -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let (stop, _) = watch::channel(false);
    let options = ShimOptions {
        namespaces: Vec::new(),
        ingress: true,
        gateway,
        gateway_check_interval: Duration::from_millis(100),
        ..ShimOptions::default()
    };
    tokio::spawn(shim::run(api.client(), options, until(&stop)));
    Harness {
        api,
        stop,
        sim: None,
    }
}

/// [`start`], plus the simulator and the main controller: generated resources get their Secrets.
async fn start_with_controller() -> Harness {
    let mut h = start(false).await;
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[
                "aBcD1234:domain=shop.example.com,san=www.shop.example.com",
                "wild0001:domain=*.example.com,san=example.com",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(Context::new(
        h.api.client(),
        tencent,
        DefaultCredentials::default(),
    ));
    tokio::spawn(controller::run(
        ctx,
        controller::RunOptions {
            namespaces: Vec::new(),
            concurrency: 4,
        },
        until(&h.stop),
    ));
    h.sim = Some(sim);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": NS},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY}
    }))
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h
}

impl Harness {
    fn tcerts(&self) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), NS)
    }

    fn ingresses(&self) -> Api<Ingress> {
        Api::namespaced(self.api.client(), NS)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.api.client(), NS)
    }

    async fn put_ingress(&self, name: &str, annotations: Value, tls: Value) -> Ingress {
        let ingress: Ingress = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {"ingressClassName": "nginx", "tls": tls,
                     "rules": [{"host": "shop.example.com"}]}
        }))
        .unwrap();
        self.ingresses()
            .patch(
                name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&ingress),
            )
            .await
            .unwrap()
    }

    /// The TencentCertificate names present, sorted.
    async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tcerts()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.sort();
        names
    }

    /// Waits (up to 10 s) until the TencentCertificates present are `want`.
    async fn wait_names(&self, want: &[&str]) {
        let mut last = Vec::new();
        for _ in 0..200 {
            last = self.names().await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("TencentCertificates {last:?}, expected {want:?}");
    }

    /// Waits (up to 10 s) until `check` holds for the TencentCertificate `name`.
    async fn wait_tcert(
        &self,
        name: &str,
        check: impl Fn(&TencentCertificate) -> bool,
    ) -> TencentCertificate {
        let mut last = None;
        for _ in 0..200 {
            last = self.tcerts().get_opt(name).await.unwrap();
            if let Some(found) = &last
                && check(found)
            {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("TencentCertificate {name} never matched: {last:?}");
    }

    /// Events on the route object `name` with this reason (events.k8s.io and core).
    fn events(&self, kind: &str, name: &str, reason: &str) -> Vec<Value> {
        let mut events = self.api.objects("events.k8s.io", "v1", "events", Some(NS));
        events.extend(self.api.objects("", "v1", "events", Some(NS)));
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .filter(|e| {
                let regarding = e.get("regarding").or_else(|| e.get("involvedObject"));
                regarding.is_some_and(|r| r["kind"] == kind && r["name"] == name)
            })
            .collect()
    }

    async fn wait_event(&self, kind: &str, name: &str, reason: &str, contains: &str) -> Value {
        for _ in 0..200 {
            let found = self
                .events(kind, name, reason)
                .into_iter()
                .find(|e| e["note"].as_str().unwrap_or_default().contains(contains));
            if let Some(event) = found {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no {reason} event on {kind} {name} containing {contains:?}: {:?}",
            self.events(kind, name, reason)
        );
    }
}

fn owner_kind_and_name(cr: &TencentCertificate) -> (String, String) {
    let owner = &cr.owner_references()[0];
    (owner.kind.clone(), owner.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_annotations_and_tls_entries_drive_the_generated_resources() {
    let h = start(false).await;
    // No annotation: nothing generated.
    h.put_ingress(
        "shop",
        json!({}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.names().await.is_empty());

    // Add the annotation: one per TLS Secret, named after it, owned by the Ingress.
    let ingress = h
        .put_ingress(
            "shop",
            json!({"tencentcert.io/certificate-id": "aBcD1234", "tencentcert.io/credentials": "tencent",
                   "tencentcert.io/refresh-interval": "30m", "tencentcert.io/deletion-policy": "Retain"}),
            json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
                   {"hosts": ["api.example.com"], "secretName": "api-tls"}]),
        )
        .await;
    h.wait_names(&["api-tls", "shop-tls"]).await;
    let shop = h.tcerts().get("shop-tls").await.unwrap();
    assert_eq!(shop.spec.certificate_id.as_deref(), Some("aBcD1234"));
    assert_eq!(shop.spec.secret_name.as_deref(), Some("shop-tls"));
    assert_eq!(shop.spec.refresh_interval, "30m");
    assert_eq!(shop.spec.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(
        shop.spec.credentials_ref.as_ref().map(|c| c.name.as_str()),
        Some("tencent")
    );
    let owner = &shop.owner_references()[0];
    assert_eq!(owner.uid, ingress.uid().unwrap());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(shop.labels()["tencentcert.io/route-kind"], "Ingress");
    assert_eq!(shop.annotations()["tencentcert.io/route"], "Ingress/shop");
    h.wait_event(
        "Ingress",
        "shop",
        "CreateCertificate",
        "Secret shop-tls is served by TencentCertificate shop-tls (certificate aBcD1234)",
    )
    .await;
    // `kubectl get tcert` shows the route (the fake serves Tables from the CRD's printer columns only
    // for CRDs it was given, so the column's JSONPath is checked on the object).
    assert_eq!(
        owner_kind_and_name(&shop),
        ("Ingress".to_string(), "shop".to_string())
    );

    // Change the annotation: updated in place.
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/certificate-id": "eFgH5678", "tencentcert.io/credentials": "tencent"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
               {"hosts": ["api.example.com"], "secretName": "api-tls"}]),
    )
    .await;
    let shop = h
        .wait_tcert("shop-tls", |c| {
            c.spec.certificate_id.as_deref() == Some("eFgH5678")
        })
        .await;
    assert_eq!(shop.spec.refresh_interval, "1h");
    assert_eq!(shop.spec.deletion_policy, DeletionPolicy::Delete);
    h.wait_event(
        "Ingress",
        "shop",
        "UpdateCertificate",
        "certificate eFgH5678",
    )
    .await;

    // A TLS entry removed, another added.
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/certificate-id": "eFgH5678"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
               {"hosts": ["img.example.com"], "secretName": "img-tls"}]),
    )
    .await;
    h.wait_names(&["img-tls", "shop-tls"]).await;
    h.wait_event(
        "Ingress",
        "shop",
        "DeleteCertificate",
        "TencentCertificate api-tls deleted",
    )
    .await;

    // Annotation removed: everything generated goes.
    h.put_ingress(
        "shop",
        json!({}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.wait_names(&[]).await;

    // Back on, then the Ingress deleted: the garbage collector takes the generated resources.
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/certificate-id": "aBcD1234"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.wait_names(&["shop-tls"]).await;
    // A generated resource deleted by hand comes back.
    h.tcerts()
        .delete("shop-tls", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_tcert("shop-tls", |c| c.metadata.deletion_timestamp.is_none())
        .await;
    h.ingresses()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_names(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_by_host_asks_for_one_certificate_covering_every_host_of_an_entry() {
    let h = start(false).await;
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/select-by-host": "true"}),
        json!([{"hosts": ["shop.example.com", "www.shop.example.com"], "secretName": "shop-tls"},
               {"secretName": "nohosts-tls"}]),
    )
    .await;
    let shop = h.wait_tcert("shop-tls", |c| c.spec.domain.is_some()).await;
    assert_eq!(shop.spec.certificate_id, None);
    assert_eq!(shop.spec.domain.as_deref(), Some("shop.example.com"));
    assert_eq!(shop.spec.additional_domains, ["www.shop.example.com"]);
    h.wait_event(
        "Ingress",
        "shop",
        "BadConfig",
        "Secret nohosts-tls is not served",
    )
    .await;
    assert_eq!(h.names().await, ["shop-tls"]);
    // Both annotations: a Warning, and what exists stays as it is.
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/select-by-host": "true", "tencentcert.io/certificate-id": "aBcD1234"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.wait_event("Ingress", "shop", "BadConfig", "not both")
        .await;
    let kept = h.tcerts().get("shop-tls").await.unwrap();
    assert_eq!(kept.spec, shop.spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_written_by_hand_is_never_overwritten() {
    let h = start(false).await;
    let mut mine = TencentCertificate::new(
        "shop-tls",
        serde_json::from_value(json!({"certificateId": "mIne0001"})).unwrap(),
    );
    mine.metadata.namespace = Some(NS.into());
    h.tcerts()
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/certificate-id": "aBcD1234"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"},
               {"hosts": ["api.example.com"], "secretName": "api-tls"}]),
    )
    .await;
    h.wait_names(&["api-tls", "shop-tls"]).await;
    let event = h
        .wait_event(
            "Ingress",
            "shop",
            "CertificateConflict",
            "TencentCertificate shop-tls already exists and is not managed by Ingress shop (written by hand)",
        )
        .await;
    assert_eq!(event["type"], "Warning");
    let still_mine = h.tcerts().get("shop-tls").await.unwrap();
    assert_eq!(still_mine.spec.certificate_id.as_deref(), Some("mIne0001"));
    assert!(still_mine.owner_references().is_empty());
    // A second Ingress naming a Secret the first one serves: a conflict as well.
    h.put_ingress(
        "other",
        json!({"tencentcert.io/certificate-id": "eFgH5678"}),
        json!([{"hosts": ["api.example.com"], "secretName": "api-tls"}]),
    )
    .await;
    h.wait_event(
        "Ingress",
        "other",
        "CertificateConflict",
        "controlled by Ingress shop",
    )
    .await;
    let api = h.tcerts().get("api-tls").await.unwrap();
    assert_eq!(api.spec.certificate_id.as_deref(), Some("aBcD1234"));
    // The annotation removed from the first: only what it generated goes, never the hand-written one.
    h.put_ingress(
        "shop",
        json!({}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.wait_names(&["api-tls", "shop-tls"]).await;
    // api-tls is gone and, as the other Ingress asks for it, generated again for that one.
    h.wait_tcert("api-tls", |c| {
        c.owner_references().first().map(|o| o.name.as_str()) == Some("other")
    })
    .await;
    assert_eq!(
        h.tcerts()
            .get("shop-tls")
            .await
            .unwrap()
            .spec
            .certificate_id
            .as_deref(),
        Some("mIne0001")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_are_served_once_the_gateway_api_is_installed() {
    let h = start(true).await;
    assert!(!shim::gateway_api_installed(&h.api.client()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing watches Gateways yet: the shim has not touched the resource.
    assert_eq!(h.api.request_count("GET", "gateways"), 0);

    // Install the (test fixture) Gateway CRD, then a Gateway.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(h.api.client());
    crds.create(&PostParams::default(), &Gateway::crd())
        .await
        .unwrap();
    assert!(shim::gateway_api_installed(&h.api.client()).await.unwrap());
    let gateway: Gateway = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": NS,
                     "annotations": {"tencentcert.io/certificate-id": "aBcD1234"}},
        "spec": {"gatewayClassName": "eg", "listeners": [
            {"name": "https", "hostname": "shop.example.com", "port": 443, "protocol": "HTTPS",
             "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "edge-shop-tls"}]}},
            {"name": "other-ns", "hostname": "x.example.com", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "elsewhere", "namespace": "other"}]}}
        ]}
    }))
    .unwrap();
    let gateways: Api<Gateway> = Api::namespaced(h.api.client(), NS);
    let gateway = gateways
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    let generated = h
        .wait_tcert("edge-shop-tls", |c| !c.owner_references().is_empty())
        .await;
    assert_eq!(
        owner_kind_and_name(&generated),
        ("Gateway".to_string(), "edge".to_string())
    );
    assert_eq!(generated.owner_references()[0].uid, gateway.uid().unwrap());
    assert_eq!(
        generated.owner_references()[0].api_version,
        "gateway.networking.k8s.io/v1"
    );
    assert_eq!(generated.labels()["tencentcert.io/route-kind"], "Gateway");
    h.wait_event(
        "Gateway",
        "edge",
        "CreateCertificate",
        "Secret edge-shop-tls is served by TencentCertificate edge-shop-tls",
    )
    .await;
    assert_eq!(h.names().await, ["edge-shop-tls"]);
    // Annotation removed: gone.
    gateways
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tencentcert.io/certificate-id": null}}}),
            ),
        )
        .await
        .unwrap();
    h.wait_names(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_resources_write_their_secrets_like_hand_written_ones() {
    let h = start_with_controller().await;
    h.put_ingress(
        "shop",
        json!({"tencentcert.io/certificate-id": "aBcD1234", "tencentcert.io/credentials": "tencent"}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.put_ingress(
        "wild",
        json!({"tencentcert.io/select-by-host": "true", "tencentcert.io/credentials": "tencent"}),
        json!([{"hosts": ["a.example.com", "example.com"], "secretName": "wild-tls"}]),
    )
    .await;
    for (name, id) in [("shop-tls", "aBcD1234"), ("wild-tls", "wild0001")] {
        let ready = h
            .wait_tcert(name, |c| {
                c.status.as_ref().is_some_and(|s| s.is_true("Ready"))
            })
            .await;
        assert_eq!(
            ready.status.as_ref().unwrap().certificate_id.as_deref(),
            Some(id)
        );
        let secret = h.secrets().get(name).await.unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(secret.data.as_ref().unwrap().contains_key("tls.key"));
    }
    // The annotation removed: the resource goes, and its Secret with it (deletionPolicy Delete).
    h.put_ingress(
        "shop",
        json!({}),
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]),
    )
    .await;
    h.wait_names(&["wild-tls"]).await;
    h.api.wait_for_gc().await;
    let mut gone = false;
    for _ in 0..100 {
        if h.secrets().get_opt("shop-tls").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "Secret shop-tls outlived its TencentCertificate");
    // No credentials in the events the shims and the controller wrote.
    let events =
        serde_json::to_string(&h.api.objects("events.k8s.io", "v1", "events", Some(NS))).unwrap();
    assert!(!events.contains(SECRET_KEY));
    assert!(events.contains("CreateCertificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_naming_one_certificate_share_its_tencent_requests() {
    let h = start_with_controller().await;
    const ROUTES: usize = 20;
    for i in 0..ROUTES {
        h.put_ingress(
            &format!("r{i:02}"),
            json!({"tencentcert.io/certificate-id": "aBcD1234", "tencentcert.io/credentials": "tencent"}),
            json!([{"hosts": ["shop.example.com"], "secretName": format!("r{i:02}-tls")}]),
        )
        .await;
    }
    for i in 0..ROUTES {
        h.wait_tcert(&format!("r{i:02}-tls"), |c| {
            c.status.as_ref().is_some_and(|s| s.is_true("Ready"))
        })
        .await;
    }
    let stats = h.sim.as_ref().unwrap().stats();
    let downloads = stats.action_total("DownloadCertificate");
    let lookups = stats.action_total("DescribeCertificates");
    eprintln!(
        "{ROUTES} Ingresses naming one certificate: {downloads} download(s), {lookups} DescribeCertificates, {} Tencent requests in all",
        stats.requests
    );
    // Per certificate id, not per route: one download; lookups batched (at most a handful of waves).
    assert_eq!(downloads, 1);
    assert!(
        lookups < ROUTES as u64,
        "{lookups} lookups for {ROUTES} routes"
    );
}
