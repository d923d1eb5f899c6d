//! TencentCertificatePush against the in-process fake API server and the Tencent API simulator: the real
//! push controller (its Secret-metadata watch included) runs, the tests write cert-manager-shaped TLS
//! Secrets as cert-manager would, and count what reached Tencent through the simulator's counters.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::controller::Context;
use tencent_cert_operator::push::{TAG_FINGERPRINT, TAG_UID, TencentCertificatePush};
use tencent_cert_operator::telemetry::Metrics;
use tencent_sim::pki::{KeyKind, Pki};
use tencent_sim::publish::{ACTION_UPDATE_INSTANCE, ACTION_UPLOAD, IssuedPair, issue_pair};
use tencent_sim::{self as sim, Binding, DeployFault, SimConfig, SimHandle};
use tencent_ssl::publish::UploadRequest;
use tencent_ssl::{self as tencent, ClientConfig, Credentials, Tag};

const SECRET_ID: &str = "AKIDpushTEST000001";
const SECRET_KEY: &str = "push-test-secret-key";
const NS: &str = "team-a";
const ORIGINAL: &str = "orig0001";
/// Bounds a failing test only: a deploy takes two polls 10 s apart, a first retry backs off 30 s.
const WAIT: Duration = Duration::from_secs(120);

/// A `MakeWriter` for tracing that appends every line to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(KeyKind::EcdsaP256).unwrap())
}

/// A new key pair valid from an hour ago for `days` days (negative: ended that many days ago).
fn pair(days: i64) -> IssuedPair {
    let now = jiff::Timestamp::now();
    let day = jiff::SignedDuration::from_hours(24);
    let (start, end) = if days > 0 {
        (
            now - jiff::SignedDuration::from_hours(1),
            now + day * days as i32,
        )
    } else {
        (now - day * 90, now + day * days as i32)
    };
    issue_pair(pki(), &["shop.example.com"], start, end).unwrap()
}

/// Base64 lines of a key's body, to look for in any output.
fn key_lines(pair: &IssuedPair) -> Vec<String> {
    pair.key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    metrics: Arc<Metrics>,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

async fn harness() -> Harness {
    let api = FakeApiServer::start().await;
    let client = api.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &TencentCertificatePush::crd())
        .await
        .unwrap();
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[&format!("{ORIGINAL}:domain=shop.example.com")],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    for (kind, region, instance) in [
        ("clb", Some("ap-guangzhou"), "lb-shop"),
        ("cdn", None, "shop.example.com"),
    ] {
        sim.state().add_binding(Binding {
            certificate_id: ORIGINAL.into(),
            resource_type: kind.into(),
            region: region.map(String::from),
            instance_id: instance.into(),
            domains: vec!["shop.example.com".into()],
        });
    }
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-b"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client, NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "tencent"},
                "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut h = Harness {
        api,
        sim,
        metrics: Arc::new(Metrics::new()),
        stop: None,
    };
    h.start();
    h
}

impl Harness {
    /// The push controller with a fresh context, as after an operator restart.
    fn start(&mut self) {
        let tencent = tencent::Client::new(ClientConfig {
            endpoint: self.sim.endpoint(),
            download_cache_ttl: Duration::ZERO,
            lookup_cache_ttl: Duration::ZERO,
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        })
        .unwrap();
        let ctx = Arc::new(
            Context::new(self.api.client(), tencent, Default::default())
                .with_metrics(self.metrics.clone()),
        );
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tencent_cert_operator::push::controller::run(
            ctx,
            Vec::new(),
            4,
            async move {
                let _ = rx.await;
            },
        ));
        self.stop = Some((stop, task));
    }

    /// The operator gone at once (a crash): the task is aborted, nothing finishes.
    async fn crash(&mut self) {
        if let Some((_stop, task)) = self.stop.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn pushes(&self) -> Api<TencentCertificatePush> {
        Api::namespaced(self.api.client(), NS)
    }

    /// Writes the TLS Secret as cert-manager does (no label of ours), in `namespace`.
    async fn tls_secret(&self, namespace: &str, name: &str, pair: &IssuedPair) {
        Api::<Secret>::namespaced(self.api.client(), namespace)
            .patch(
                name,
                &PatchParams::apply("cert-manager-certificates-issuing").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": name, "annotations": {"cert-manager.io/certificate-name": name}},
                    "stringData": {"tls.crt": pair.chain_pem, "tls.key": pair.key_pem},
                })),
            )
            .await
            .unwrap();
    }

    async fn push(&self, name: &str, spec: serde_json::Value) -> TencentCertificatePush {
        let push: TencentCertificatePush = serde_json::from_value(json!({
            "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificatePush",
            "metadata": {"name": name, "namespace": NS}, "spec": spec,
        }))
        .unwrap();
        self.pushes()
            .create(&PostParams::default(), &push)
            .await
            .unwrap()
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&TencentCertificatePush) -> bool,
    ) -> TencentCertificatePush {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            last = self.pushes().get_opt(name).await.unwrap();
            if let Some(push) = &last
                && check(push)
            {
                return push.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what}; last status: {:#?}",
            last.and_then(|p| p.status)
        );
    }

    fn uploads(&self) -> u64 {
        self.sim.state().stats().count(ACTION_UPLOAD, "Success")
    }

    fn bound_to(&self, id: &str) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .sim
            .state()
            .bindings_of(id)
            .into_iter()
            .map(|b| b.resource_type)
            .collect();
        kinds.sort();
        kinds
    }

    async fn events(&self) -> String {
        let events = Api::<Event>::namespaced(self.api.client(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        serde_json::to_string(&events.items).unwrap()
    }
}

fn ready(push: &TencentCertificatePush) -> Option<(String, String)> {
    let status = push.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn is(push: &TencentCertificatePush, status: &str, reason: &str) -> bool {
    ready(push) == Some((status.to_string(), reason.to_string()))
}

fn certificate_id(push: &TencentCertificatePush) -> Option<String> {
    push.status.as_ref()?.certificate_id.clone()
}

fn deploying_spec() -> serde_json::Value {
    json!({
        "secretName": "shop-tls",
        "credentialsRef": {"name": "tencent"},
        "tkeSecretName": "shop-qcloud",
        "deploy": {
            "targets": [{"resourceType": "clb", "regions": ["ap-guangzhou"]}, {"resourceType": "cdn"}],
            "fromCertificateId": ORIGINAL,
        },
    })
}

/// Published, then rotated (a new key pair: exactly one more upload, the CLB and CDN moved each time), then
/// an unchanged Secret read again makes no Tencent call; the private key is in no status, event or log.
#[tokio::test]
async fn publish_rotate_and_stay_quiet_when_unchanged() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness().await;
    let first = pair(90);
    h.tls_secret(NS, "shop-tls", &first).await;
    h.push("shop", deploying_spec()).await;
    let published = h
        .wait_for("shop", "published and moved", |p| {
            is(p, "True", "Published") && certificate_id(p).is_some()
        })
        .await;
    let id1 = certificate_id(&published).unwrap();
    assert_eq!(h.uploads(), 1);
    assert_eq!(h.bound_to(&id1), ["cdn", "clb"]);
    assert!(h.bound_to(ORIGINAL).is_empty());
    let tke = Api::<Secret>::namespaced(h.api.client(), NS)
        .get("shop-qcloud")
        .await
        .unwrap();
    assert_eq!(
        tke.data.unwrap()["qcloud_cert_id"].0,
        id1.as_bytes().to_vec()
    );

    let second = pair(90);
    h.tls_secret(NS, "shop-tls", &second).await;
    let rotated = h
        .wait_for("shop", "rotated", |p| {
            is(p, "True", "Published") && certificate_id(p).is_some_and(|id| id != id1)
        })
        .await;
    let id2 = certificate_id(&rotated).unwrap();
    assert_eq!(h.uploads(), 2, "exactly one more upload");
    assert_eq!(h.bound_to(&id2), ["cdn", "clb"]);
    assert!(h.bound_to(&id1).is_empty());
    let status = rotated.status.clone().unwrap();
    assert_eq!(
        status.previous_certificate_id.as_deref(),
        Some(id1.as_str())
    );

    // Unchanged: the Secret is touched (a label), the push reconciles, Tencent hears nothing.
    h.sim.state().reset_stats();
    let reconciles = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("tencentcert_reconciles_total{result=\"synced\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = reconciles(&h.metrics.render());
    Api::<Secret>::namespaced(h.api.client(), NS)
        .patch(
            "shop-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while reconciles(&h.metrics.render()) <= before {
        assert!(tokio::time::Instant::now() < deadline, "no reconcile");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.sim.state().stats().requests,
        0,
        "an unchanged Secret called Tencent"
    );
    let metrics = h.metrics.render();
    assert!(
        metrics.contains("tencentcert_push_uploads_total{result=\"uploaded\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tencentcert_push_deploys_total{resource_type=\"clb\",result=\"succeeded\"} 2"
        ),
        "{metrics}"
    );

    // The private keys: nowhere but the upload requests.
    let status_text = serde_json::to_string(&rotated).unwrap();
    let events = h.events().await;
    let logged = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(!logged.is_empty());
    for line in key_lines(&first).iter().chain(&key_lines(&second)) {
        assert!(!status_text.contains(line), "a key line in the status");
        assert!(!events.contains(line), "a key line in an event");
        assert!(!logged.contains(line), "a key line in the log");
    }
    assert!(!logged.contains("PRIVATE KEY"));
    assert!(!logged.contains(SECRET_KEY));
    assert!(events.contains("Uploaded"), "{events}");
}

/// A crash between the upload and the status patch: the next operator finds the certificate by its tags
/// (push uid + fingerprint) and uploads nothing.
#[tokio::test]
async fn an_upload_before_a_crash_is_found_by_its_tags() {
    let mut h = harness().await;
    h.crash().await;
    let pair = pair(90);
    h.tls_secret(NS, "shop-tls", &pair).await;
    let created = h
        .push(
            "shop",
            json!({"secretName": "shop-tls", "credentialsRef": {"name": "tencent"}}),
        )
        .await;
    let uid = created.metadata.uid.clone().unwrap();
    // What the crashed operator did: the upload, with its tags, and no status.
    let bundle = tencent_ssl::bundle::from_pem_entries(&[
        ("tls.crt", pair.chain_pem.as_bytes()),
        ("tls.key", pair.key_pem.as_bytes()),
    ])
    .unwrap();
    let client = tencent::Client::new(ClientConfig {
        endpoint: h.sim.endpoint(),
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let tags = [
        Tag::new(TAG_UID, &uid),
        Tag::new(TAG_FINGERPRINT, &bundle.meta.fingerprint_sha256),
    ];
    let uploaded = client
        .upload_certificate(
            &Credentials::new(SECRET_ID, SECRET_KEY, None).unwrap(),
            &UploadRequest {
                chain_pem: &pair.chain_pem,
                key_pem: &pair.key_pem,
                alias: "team-a/shop",
                project_id: None,
                tags: &tags,
            },
        )
        .await
        .unwrap();
    assert_eq!(h.uploads(), 1);
    h.start();
    let adopted = h
        .wait_for("shop", "adopted", |p| is(p, "True", "Published"))
        .await;
    assert_eq!(certificate_id(&adopted), Some(uploaded.certificate_id));
    assert_eq!(h.uploads(), 1, "a second upload after the crash");
    assert_eq!(
        h.sim.state().stats().action_total(ACTION_UPLOAD),
        1,
        "the restarted operator sent an upload of its own (only the crashed one's is counted)"
    );
    assert!(
        h.metrics
            .render()
            .contains("tencentcert_push_uploads_total{result=\"adopted\"} 1")
    );
    assert!(h.events().await.contains("Adopted"));
}

/// A CDN deploy that fails is reported for cdn (the CLB succeeded), then retried after a backoff and done.
#[tokio::test]
async fn a_failing_deploy_is_reported_per_type_and_retried() {
    let h = harness().await;
    h.sim.state().add_deploy_fault(DeployFault {
        resource_type: "cdn".into(),
        region: None,
        remaining: Some(1),
        error_msg: "the CDN domain is offline".into(),
    });
    h.tls_secret(NS, "shop-tls", &pair(90)).await;
    h.push("shop", deploying_spec()).await;
    let failed = h
        .wait_for("shop", "the cdn failure recorded", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.deploy.as_ref())
                .is_some_and(|d| {
                    d.results
                        .iter()
                        .any(|r| r.resource_type == "cdn" && r.failed == 1)
                })
        })
        .await;
    let deploy = failed.status.clone().unwrap().deploy.unwrap();
    let clb = deploy
        .results
        .iter()
        .find(|r| r.resource_type == "clb")
        .unwrap();
    assert_eq!((clb.succeeded, clb.failed), (1, 0));
    let cdn = deploy
        .results
        .iter()
        .find(|r| r.resource_type == "cdn")
        .unwrap();
    assert_eq!(cdn.message.as_deref(), Some("the CDN domain is offline"));
    assert_eq!(deploy.retries, 0);
    assert!(deploy.failed_time.is_some());
    let started = std::time::Instant::now();
    let done = h
        .wait_for("shop", "retried and moved", |p| is(p, "True", "Published"))
        .await;
    let id = certificate_id(&done).unwrap();
    let deploy = done.status.clone().unwrap().deploy.unwrap();
    assert_eq!(deploy.retries, 1);
    assert!(deploy.results.iter().all(|r| r.failed == 0), "{deploy:?}");
    assert_eq!(h.bound_to(&id), ["cdn", "clb"]);
    // The retry waited for its backoff (30 s from the recorded failure), not retried at once.
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.uploads(), 1);
    assert_eq!(
        h.sim
            .state()
            .stats()
            .count(ACTION_UPDATE_INSTANCE, "Success"),
        1
    );
    let events = h.events().await;
    assert!(events.contains("DeployRetried"), "{events}");
}

/// An expired pair is refused with a reason, and nothing is uploaded; a push naming a Secret that only
/// another namespace has finds nothing (it is read in its own namespace only).
#[tokio::test]
async fn expired_pairs_and_other_namespaces_secrets_are_refused() {
    let h = harness().await;
    h.tls_secret(NS, "old-tls", &pair(-1)).await;
    h.push(
        "old",
        json!({"secretName": "old-tls", "credentialsRef": {"name": "tencent"}}),
    )
    .await;
    let refused = h
        .wait_for("old", "refused as expired", |p| {
            is(p, "False", "CertificateExpired")
        })
        .await;
    let message = &refused.status.clone().unwrap().conditions[0].message;
    assert!(message.contains("expired"), "{message}");

    h.tls_secret("team-b", "their-tls", &pair(90)).await;
    h.push(
        "theirs",
        json!({"secretName": "their-tls", "credentialsRef": {"name": "tencent"}}),
    )
    .await;
    h.wait_for("theirs", "refused: not in this namespace", |p| {
        is(p, "False", "SecretNotFound")
    })
    .await;
    assert_eq!(h.sim.state().stats().action_total(ACTION_UPLOAD), 0);
    assert_eq!(
        h.sim.state().stats().requests,
        0,
        "a refusal called Tencent"
    );
}
