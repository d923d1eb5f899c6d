//! ClusterTencentCertificate against the in-process fake API server and the Tencent API simulator: the
//! real controller (namespace and Secret watches included) runs, and the tests change namespaces,
//! selectors and Secrets as people do, then wait for what they would see.

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::cluster::crd::ClusterTencentCertificate;
use tencent_cert_operator::cluster::plan::CLUSTER_CERTIFICATE_NAME_LABEL;
use tencent_cert_operator::controller::Context;
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::{self as tencent, ClientConfig};

const SECRET_ID: &str = "AKIDclusterTEST0001";
const SECRET_KEY: &str = "cluster-test-secret-key";
/// Generous: the controller reacts within milliseconds; this only bounds a failing test. Failing
/// namespaces are looked at again every 30 s, which one test waits for.
const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    controller: Option<Running>,
}

/// A running controller: dropping `stop` shuts it down gracefully.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The controller with a fresh context (nothing in memory), as after an operator restart.
fn start_controller(api: &FakeApiServer, sim: &SimHandle) -> Running {
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        download_cache_ttl: Duration::ZERO,
        lookup_cache_ttl: Duration::ZERO,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(Context::new(api.client(), tencent, Default::default()));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tencent_cert_operator::cluster::run(ctx, 4, async move {
        let _ = rx.await;
    }));
    Running { stop, task }
}

async fn harness() -> Harness {
    let api = FakeApiServer::start().await;
    let client = api.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ClusterTencentCertificate::crd())
        .await
        .unwrap();
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[
                "wild0001:domain=*.example.com,with-root",
                "old00001:expired",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let controller = Some(start_controller(&api, &sim));
    let h = Harness {
        api,
        sim,
        controller,
    };
    h.namespace("ops", &[]).await;
    let credentials: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": "ops"},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.api.client(), "ops")
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    h
}

impl Harness {
    async fn stop_controller(&mut self) {
        if let Some(running) = self.controller.take() {
            drop(running.stop);
            running.task.await.unwrap();
        }
    }

    fn restart_controller(&mut self) {
        assert!(self.controller.is_none(), "stop it first");
        self.controller = Some(start_controller(&self.api, &self.sim));
    }

    async fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        Api::<Namespace>::all(self.api.client())
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&ns),
            )
            .await
            .unwrap();
    }

    async fn create(&self, name: &str, spec: Value) {
        let mut spec = spec;
        if spec.get("credentialsRef").is_none() {
            spec["credentialsRef"] = json!({"namespace": "ops", "name": "tencent"});
        }
        let cr = ClusterTencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        self.crs()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    fn crs(&self) -> Api<ClusterTencentCertificate> {
        Api::all(self.api.client())
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.api.client(), namespace)
    }

    async fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.secrets(namespace).get_opt(name).await.unwrap()
    }

    fn downloads(&self) -> u64 {
        self.sim.stats().action_total("DownloadCertificate")
    }

    /// Polls until `check` holds for the resource; panics with its last state after [`WAIT`].
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ClusterTencentCertificate) -> bool,
    ) -> ClusterTencentCertificate {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let cr = self.crs().get(name).await.unwrap();
            if check(&cr) {
                return cr;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{what}: never happened; last status {:#?}", cr.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_secret(&self, namespace: &str, name: &str, present: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.secret(namespace, name).await.is_some() != present {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Secret {namespace}/{name} never became {}",
                if present { "present" } else { "absent" }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn counts(cr: &ClusterTencentCertificate) -> (u32, u32, u32) {
    let s = cr.status.clone().unwrap_or_default();
    (
        s.targeted_namespaces,
        s.ready_namespaces,
        s.failed_namespaces,
    )
}

fn ready(cr: &ClusterTencentCertificate) -> Option<(String, String)> {
    cr.status
        .as_ref()?
        .condition("Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_download_serves_every_selected_namespace() {
    let h = harness().await;
    for name in ["shop", "blog", "api"] {
        h.namespace(name, &[("tls", "wildcard")]).await;
    }
    h.namespace("extra", &[]).await;
    h.namespace("private", &[("tls", "none")]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls",
               "namespaceSelector": {"matchLabels": {"tls": "wildcard"}}, "namespaces": ["extra"],
               "certificateIdKey": "qcloud_cert_id"}),
    )
    .await;
    let cr = h
        .wait_for("wildcard", "Ready in 4 namespaces", |cr| {
            counts(cr) == (4, 4, 0) && ready(cr).is_some_and(|(s, _)| s == "True")
        })
        .await;
    let status = cr.status.unwrap();
    assert_eq!(status.certificate_id.as_deref(), Some("wild0001"));
    assert_eq!(status.dns_names, ["*.example.com"]);
    assert!(status.not_after.is_some() && status.fingerprint_sha256.is_some());
    assert!(status.is_true("Synced"));
    for ns in ["shop", "blog", "api", "extra"] {
        let secret = h.secret(ns, "wildcard-tls").await.expect("written");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let labels = secret.metadata.labels.unwrap();
        assert_eq!(labels[CLUSTER_CERTIFICATE_NAME_LABEL], "wildcard");
        let data = secret.data.unwrap();
        assert!(data.contains_key("ca.crt"));
        assert_eq!(
            data["qcloud_cert_id"].0, b"wild0001",
            "TKE's CLB reads the id in every namespace"
        );
    }
    assert!(h.secret("private", "wildcard-tls").await.is_none());
    assert_eq!(h.downloads(), 1, "one download for all namespaces");

    // Status and events carry no key material.
    let key = h
        .secret("shop", "wildcard-tls")
        .await
        .unwrap()
        .data
        .unwrap()["tls.key"]
        .clone();
    let key_text = String::from_utf8(key.0).unwrap();
    let body = key_text.lines().nth(1).unwrap().to_string();
    let status_text =
        serde_json::to_string(&h.crs().get("wildcard").await.unwrap().status).unwrap();
    assert!(!status_text.contains(&body));
    let events =
        serde_json::to_string(&h.api.objects("events.k8s.io", "v1", "events", None)).unwrap();
    assert!(events.contains("SecretsWritten"), "{events}");
    assert!(!events.contains(&body) && !events.contains(SECRET_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_created_relabelled_and_deleted_follow_the_selector() {
    let h = harness().await;
    h.namespace("shop", &[("tls", "wildcard")]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls",
               "namespaceSelector": {"matchExpressions": [{"key": "tls", "operator": "In", "values": ["wildcard"]}]}}),
    )
    .await;
    h.wait_for("wildcard", "Ready in shop", |cr| counts(cr) == (1, 1, 0))
        .await;

    // A namespace created later gets the Secret at once (through the namespace watch, no refresh).
    h.namespace("late", &[("tls", "wildcard")]).await;
    h.wait_for_secret("late", "wildcard-tls", true).await;
    h.wait_for("wildcard", "2 namespaces", |cr| counts(cr) == (2, 2, 0))
        .await;

    // Relabelled away: with deletionPolicy Delete its Secret goes.
    h.namespace("shop", &[("tls", "other")]).await;
    h.wait_for_secret("shop", "wildcard-tls", false).await;
    h.wait_for("wildcard", "1 namespace", |cr| counts(cr) == (1, 1, 0))
        .await;

    // A namespace relabelled in gets it again.
    h.namespace("shop", &[("tls", "wildcard")]).await;
    h.wait_for_secret("shop", "wildcard-tls", true).await;

    // A deleted namespace is no longer counted.
    Api::<Namespace>::all(h.api.client())
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for("wildcard", "late gone", |cr| counts(cr) == (1, 1, 0))
        .await;
    assert_eq!(h.downloads(), 1, "namespace changes need no download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_is_reported_and_never_touched_unless_it_consents() {
    let h = harness().await;
    h.namespace("shop", &[("tls", "wildcard")]).await;
    h.namespace("blog", &[("tls", "wildcard")]).await;
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "wildcard-tls", "namespace": "blog"},
        "type": "Opaque", "stringData": {"mine": "yes"},
    }))
    .unwrap();
    h.secrets("blog")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls",
               "namespaceSelector": {"matchLabels": {"tls": "wildcard"}}}),
    )
    .await;
    let cr = h
        .wait_for("wildcard", "blog failing", |cr| counts(cr) == (2, 1, 1))
        .await;
    let status = cr.status.unwrap();
    assert_eq!(status.namespace_failures.len(), 1);
    assert_eq!(status.namespace_failures[0].namespace, "blog");
    assert_eq!(status.namespace_failures[0].reason, "SecretConflict");
    assert_eq!(
        ready(&h.crs().get("wildcard").await.unwrap()),
        Some(("False".into(), "NamespacesFailing".into()))
    );
    let untouched = h.secret("blog", "wildcard-tls").await.unwrap();
    assert_eq!(untouched.type_.as_deref(), Some("Opaque"));
    assert!(h.secret("shop", "wildcard-tls").await.is_some());

    // The owner consents: the Secret is taken over (its type changes, so it is re-created).
    h.secrets("blog")
        .patch(
            "wildcard-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tencentcert.io/adopt": "true"}}})),
        )
        .await
        .unwrap();
    h.wait_for("wildcard", "blog adopted", |cr| {
        counts(cr) == (2, 2, 0) && ready(cr).is_some_and(|(s, _)| s == "True")
    })
    .await;
    let adopted = h.secret("blog", "wildcard-tls").await.unwrap();
    assert_eq!(adopted.type_.as_deref(), Some("kubernetes.io/tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_edited_secrets_are_repaired() {
    let h = harness().await;
    h.namespace("shop", &[]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls", "namespaces": ["shop"]}),
    )
    .await;
    h.wait_for("wildcard", "Ready", |cr| counts(cr) == (1, 1, 0))
        .await;
    let original = h.secret("shop", "wildcard-tls").await.unwrap().data;

    h.secrets("shop")
        .delete("wildcard-tls", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for_secret("shop", "wildcard-tls", true).await;

    h.secrets("shop")
        .patch(
            "wildcard-tls",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "wildcard-tls", "namespace": "shop"},
                "data": {"tls.crt": "Z2FyYmFnZQ=="}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.secret("shop", "wildcard-tls").await.unwrap().data != original {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edited data never restored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_secrets_and_delete_lets_them_go_with_the_resource() {
    let h = harness().await;
    h.namespace("shop", &[("tls", "w")]).await;
    h.create(
        "kept",
        json!({"certificateId": "wild0001", "secretName": "kept-tls", "deletionPolicy": "Retain",
               "namespaceSelector": {"matchLabels": {"tls": "w"}}}),
    )
    .await;
    h.create(
        "owned",
        json!({"certificateId": "wild0001", "secretName": "owned-tls",
               "namespaceSelector": {"matchLabels": {"tls": "w"}}}),
    )
    .await;
    h.wait_for("kept", "Ready", |cr| counts(cr) == (1, 1, 0))
        .await;
    h.wait_for("owned", "Ready", |cr| counts(cr) == (1, 1, 0))
        .await;
    let kept = h.secret("shop", "kept-tls").await.unwrap();
    assert!(
        kept.metadata.owner_references.is_none(),
        "Retain: no owner reference"
    );
    let owned = h.secret("shop", "owned-tls").await.unwrap();
    assert_eq!(
        owned.metadata.owner_references.unwrap()[0].kind,
        "ClusterTencentCertificate"
    );

    // Relabelled away: Retain keeps its Secret, Delete removes its own.
    h.namespace("shop", &[]).await;
    h.wait_for_secret("shop", "owned-tls", false).await;
    h.wait_for("kept", "no namespaces", |cr| counts(cr).0 == 0)
        .await;
    assert!(h.secret("shop", "kept-tls").await.is_some());
    assert_eq!(
        ready(&h.crs().get("kept").await.unwrap()),
        Some(("False".into(), "NoNamespaces".into()))
    );

    // The resources go: the owned Secret would go with its owner (GC); the retained one stays.
    h.namespace("shop", &[("tls", "w")]).await;
    h.wait_for_secret("shop", "owned-tls", true).await;
    for name in ["kept", "owned"] {
        h.crs()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    h.wait_for_secret("shop", "owned-tls", false).await;
    assert!(h.secret("shop", "kept-tls").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_expired_certificates_write_nothing() {
    let h = harness().await;
    h.namespace("shop", &[]).await;
    h.create(
        "nocreds",
        json!({"certificateId": "wild0001", "secretName": "a-tls", "namespaces": ["shop"],
               "credentialsRef": {"namespace": "ops", "name": "missing"}}),
    )
    .await;
    h.create(
        "expired",
        json!({"certificateId": "old00001", "secretName": "b-tls", "namespaces": ["shop"]}),
    )
    .await;
    let nocreds = h
        .wait_for("nocreds", "CredentialsNotFound", |cr| {
            ready(cr).is_some_and(|(_, r)| r == "CredentialsNotFound")
        })
        .await;
    let message = nocreds
        .status
        .unwrap()
        .condition("Synced")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("ops/missing"), "{message}");
    h.wait_for("expired", "Expired", |cr| {
        ready(cr).is_some_and(|(_, r)| r == "Expired")
    })
    .await;
    assert!(h.secret("shop", "a-tls").await.is_none());
    assert!(h.secret("shop", "b-tls").await.is_none());
}

/// A key pair a tenant made themselves: `(tls.crt, tls.key)` PEM.
fn forged_pair() -> (String, String) {
    let forged = rcgen::generate_simple_self_signed(vec!["*.example.com".to_string()]).unwrap();
    (forged.cert.pem(), forged.signing_key.serialize_pem())
}

fn tls_crt(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().unwrap()["tls.crt"].0.clone()
}

impl Harness {
    /// The tenant of `namespace` overwrites the data of the Secret `name` (as `kubectl edit` would).
    async fn tenant_overwrites(&self, namespace: &str, name: &str, (crt, key): &(String, String)) {
        self.secrets(namespace)
            .patch(
                name,
                &PatchParams::apply("kubectl-edit").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "stringData": {"tls.crt": crt, "tls.key": key}})),
            )
            .await
            .unwrap();
    }

    /// The tenant of `namespace` plants a copy of `genuine`'s labels and annotations with their own data.
    async fn tenant_plants(
        &self,
        namespace: &str,
        name: &str,
        genuine: &Secret,
        (crt, key): &(String, String),
    ) {
        let planted = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace,
                "labels": genuine.metadata.labels, "annotations": genuine.metadata.annotations},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": crt, "tls.key": key}});
        self.secrets(namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(planted).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Polls until `namespace/name` holds `crt`; returns how long that took.
    async fn wait_for_crt(&self, namespace: &str, name: &str, crt: &[u8]) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(secret) = self.secret(namespace, name).await
                && tls_crt(&secret) == crt
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "{namespace}/{name} never held the expected certificate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Issue 21, item 1: a tenant's edited or planted Secret never decides what another namespace receives,
/// and their own edited Secret is repaired at once — with the operator's memory, and after a restart from
/// a Secret whose certificate matches the status fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_edited_or_planted_secret_never_reaches_another_namespace() {
    let mut h = harness().await;
    // The tenant's namespace sorts first.
    h.namespace("a-tenant", &[("tls", "wildcard")]).await;
    h.namespace("shop", &[("tls", "wildcard")]).await;
    h.namespace("aaa-untargeted", &[]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls",
               "namespaceSelector": {"matchLabels": {"tls": "wildcard"}}}),
    )
    .await;
    h.wait_for("wildcard", "Ready in 2 namespaces", |cr| {
        counts(cr) == (2, 2, 0) && ready(cr).is_some_and(|(s, _)| s == "True")
    })
    .await;
    let genuine = h.secret("shop", "wildcard-tls").await.unwrap();
    let genuine_crt = tls_crt(&genuine);
    let forged = forged_pair();

    // The tenant plants copies carrying the managed labels and annotations, elsewhere and under another
    // name, then overwrites their own Secret with their pair.
    h.tenant_plants("aaa-untargeted", "wildcard-tls", &genuine, &forged)
        .await;
    h.tenant_plants("a-tenant", "decoy", &genuine, &forged)
        .await;
    h.tenant_overwrites("a-tenant", "wildcard-tls", &forged)
        .await;
    let took = h
        .wait_for_crt("a-tenant", "wildcard-tls", &genuine_crt)
        .await;
    assert!(
        took < Duration::from_secs(15),
        "the edited Secret must be repaired within seconds, took {took:?}"
    );
    // A namespace that joins now receives Tencent's certificate, and so does everyone else.
    h.namespace("zzz-new", &[("tls", "wildcard")]).await;
    h.wait_for_crt("zzz-new", "wildcard-tls", &genuine_crt)
        .await;
    h.wait_for("wildcard", "Ready in 3 namespaces", |cr| {
        counts(cr) == (3, 3, 0)
    })
    .await;
    assert_eq!(
        tls_crt(&h.secret("shop", "wildcard-tls").await.unwrap()),
        genuine_crt
    );
    assert_eq!(
        h.downloads(),
        1,
        "repaired from the certificate held in memory"
    );

    // After a restart (nothing in memory) the forged Secret sorts first again: the content comes from a
    // Secret whose certificate matches the status fingerprint, still without a download.
    h.stop_controller().await;
    h.tenant_overwrites("a-tenant", "wildcard-tls", &forged)
        .await;
    h.restart_controller();
    h.wait_for_crt("a-tenant", "wildcard-tls", &genuine_crt)
        .await;
    h.namespace("zzz-later", &[("tls", "wildcard")]).await;
    h.wait_for_crt("zzz-later", "wildcard-tls", &genuine_crt)
        .await;
    assert_eq!(h.downloads(), 1);

    // Every Secret forged while the operator was away: nothing local can be trusted, so Tencent's
    // certificate is downloaded again.
    h.stop_controller().await;
    for ns in ["a-tenant", "shop", "zzz-new", "zzz-later"] {
        h.tenant_overwrites(ns, "wildcard-tls", &forged).await;
    }
    h.restart_controller();
    for ns in ["a-tenant", "shop", "zzz-new", "zzz-later"] {
        h.wait_for_crt(ns, "wildcard-tls", &genuine_crt).await;
    }
    assert_eq!(h.downloads(), 2);
    // The planted copies fed nothing; and the fingerprint in status is still Tencent's.
    let status = h.crs().get("wildcard").await.unwrap().status.unwrap();
    assert_eq!(
        status.fingerprint_sha256.as_deref(),
        genuine.metadata.annotations.as_ref().unwrap()["tencentcert.io/fingerprint-sha256"]
            .as_str()
            .into()
    );
}

/// The writes to Secrets in `namespace`, in order: (method, Secret name).
fn secret_write_log(h: &Harness, namespace: &str) -> Vec<(String, String)> {
    h.api
        .requests()
        .into_iter()
        .filter(|r| {
            r.plural == "secrets"
                && r.namespace.as_deref() == Some(namespace)
                && matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
        })
        .map(|r| {
            let name = r.name.clone().unwrap_or_else(|| {
                serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|b| b["metadata"]["name"].as_str().map(str::to_string))
                    .unwrap_or_default()
            });
            (r.method, name)
        })
        .collect()
}

/// Issue 21, item 2 (cluster kind): after a `secretName` change the new Secrets are written first and the
/// old ones go after, in every namespace; a conflict at the new name keeps the old Secret; `Retain` keeps
/// the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_name_change_writes_the_new_secrets_before_the_old_ones_go() {
    let h = harness().await;
    h.namespace("web", &[("tls", "w")]).await;
    h.namespace("blog", &[("tls", "w")]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "old-tls",
               "namespaceSelector": {"matchLabels": {"tls": "w"}}}),
    )
    .await;
    h.create(
        "kept",
        json!({"certificateId": "wild0001", "secretName": "kept-old", "deletionPolicy": "Retain",
               "namespaceSelector": {"matchLabels": {"tls": "w"}}}),
    )
    .await;
    for name in ["wildcard", "kept"] {
        h.wait_for(name, "Ready in 2 namespaces", |cr| counts(cr) == (2, 2, 0))
            .await;
    }
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "new-tls", "namespace": "blog"}, "type": "Opaque",
        "stringData": {"mine": "yes"}}))
    .unwrap();
    h.secrets("blog")
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    for (name, new) in [("wildcard", "new-tls"), ("kept", "kept-new")] {
        h.crs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"secretName": new}})),
            )
            .await
            .unwrap();
    }
    h.wait_for_secret("web", "old-tls", false).await;
    assert!(h.secret("web", "new-tls").await.is_some());
    let log = secret_write_log(&h, "web");
    let written = log
        .iter()
        .rposition(|(m, n)| m != "DELETE" && n == "new-tls")
        .expect("new-tls written in web");
    let deleted = log
        .iter()
        .rposition(|(m, n)| m == "DELETE" && n == "old-tls")
        .expect("old-tls deleted in web");
    assert!(written < deleted, "the new Secret first: {log:?}");
    // blog: someone else's Secret at the new name; the old one keeps serving there.
    h.wait_for("wildcard", "blog in conflict", |cr| counts(cr) == (2, 1, 1))
        .await;
    assert!(h.secret("blog", "old-tls").await.is_some());
    assert_eq!(
        h.secret("blog", "new-tls").await.unwrap().type_.as_deref(),
        Some("Opaque")
    );
    // The name is freed: blog gets the new Secret, then loses the old one.
    h.secrets("blog")
        .delete("new-tls", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_for_secret("blog", "old-tls", false).await;
    assert!(h.secret("blog", "new-tls").await.is_some());
    h.wait_for("wildcard", "Ready in 2 namespaces", |cr| {
        counts(cr) == (2, 2, 0)
    })
    .await;
    // Retain: the new Secrets are written and the old ones stay.
    for ns in ["web", "blog"] {
        h.wait_for_secret(ns, "kept-new", true).await;
        assert!(h.secret(ns, "kept-old").await.is_some());
    }
}

/// Issue 21, smaller (a): Secrets are listed cluster-wide as metadata only, in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_listed_as_metadata_in_pages() {
    let h = harness().await;
    h.namespace("shop", &[]).await;
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls", "namespaces": ["shop"]}),
    )
    .await;
    h.wait_for("wildcard", "Ready", |cr| counts(cr) == (1, 1, 0))
        .await;
    let lists: Vec<_> = h
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.plural == "secrets"
                && r.method == "GET"
                && r.namespace.is_none()
                && r.name.is_none()
                && !r.query.contains("watch=true")
        })
        .collect();
    assert!(!lists.is_empty(), "the reconcile lists our Secrets");
    for list in lists {
        assert!(
            list.accept
                .as_deref()
                .is_some_and(|a| a.contains("PartialObjectMetadata")),
            "a cluster-wide list of full Secrets: {list:?}"
        );
        assert!(
            list.query.contains("limit="),
            "an unpaginated list: {list:?}"
        );
    }
}

/// Issue 21, smaller (b): a Secret someone else creates between the read and the write is not taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_between_read_and_write_is_not_taken_over() {
    let h = harness().await;
    h.namespace("shop", &[]).await;
    h.api.create_before_next_write(
        "",
        "v1",
        "secrets",
        Some("shop"),
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "wildcard-tls", "namespace": "shop"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "dGhlaXJz", "tls.key": "dGhlaXJz"}}),
    );
    h.create(
        "wildcard",
        json!({"certificateId": "wild0001", "secretName": "wildcard-tls", "namespaces": ["shop"]}),
    )
    .await;
    let cr = h
        .wait_for("wildcard", "shop in conflict", |cr| counts(cr) == (1, 0, 1))
        .await;
    assert_eq!(
        cr.status.unwrap().namespace_failures[0].reason,
        "SecretConflict"
    );
    let theirs = h.secret("shop", "wildcard-tls").await.unwrap();
    assert_eq!(tls_crt(&theirs), b"theirs");
    assert!(
        theirs
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key(CLUSTER_CERTIFICATE_NAME_LABEL))
    );
}
