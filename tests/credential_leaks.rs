//! Attack: a tenant points `credentialsRef.secretIdKey` at another key of their credentials Secret (a token,
//! a password, someone else's SecretId) to read that value back through the resource's status, which the
//! aggregated `view` role may read (design.md §10). In-process: the fake API server and the simulator over
//! real HTTP, the operator's log captured at debug level, its metrics rendered.
//!
//! What must hold: the marker values appear in no status field, no event, no log line and no metric; a value
//! that is not shaped like a SecretId is refused (`InvalidCredentials`) before any request reaches Tencent;
//! one that is shaped like one is sent, and Tencent's answer (the simulator quotes the SecretId back in
//! `AuthFailure.SecretIdNotFound`, as an API may) reaches status redacted.

use std::io::Write;
use std::sync::{Arc, Mutex};

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::controller::reconcile::reconcile;
use tencent_cert_operator::controller::{Context, DefaultCredentials};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_cert_operator::telemetry::Metrics;
use tencent_sim::{self as sim, Account, SimConfig, SimHandle, SimRole};
use tencent_ssl::{self as tencent, ClientConfig};

const NS: &str = "tenant";
const SECRET_ID: &str = "AKIDleakTEST0001";
const SECRET_KEY: &str = "leak-test-secret-key";
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/cert-reader";
/// A value of the tenant's Secret that is not a SecretId (an API token, a password).
const MARKER_PLAIN: &str = "tenant-api-token-MARKER-9f8e7d6c5b4a";
/// A value shaped like a SecretId that the simulator does not know (someone else's key id).
const MARKER_ID: &str = "AKIDvictimMARKER0123456789abcdefXYZ";
const MARKERS: [&str; 2] = [MARKER_PLAIN, MARKER_ID];

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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
}

async fn harness() -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let sim = sim::start_local(SimConfig {
        accounts: vec![Account {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            token: None,
        }],
        certificates: vec!["leak0001:domain=shop.leak.test".parse().unwrap()],
        roles: vec![SimRole {
            role_arn: ROLE.into(),
            trusted_secret_ids: vec![SECRET_ID.into()],
            oidc_provider_id: None,
            web_identity_tokens: Vec::new(),
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let tencent = tencent::Client::with_observer(
        ClientConfig {
            endpoint: sim.endpoint(),
            download_cache_ttl: std::time::Duration::ZERO,
            lookup_cache_ttl: std::time::Duration::ZERO,
            allow_insecure_endpoint: true,
            ..ClientConfig::default()
        },
        metrics.clone(),
    )
    .unwrap();
    let ctx = Arc::new(
        Context::new(api.client(), tencent, DefaultCredentials::default())
            .with_metrics(metrics.clone()),
    );
    // The tenant's own credentials Secret: a working key pair, plus the values they want to read.
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": NS},
        "stringData": {
            "secretId": SECRET_ID,
            "secretKey": SECRET_KEY,
            "api-token": MARKER_PLAIN,
            "other-id": MARKER_ID,
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(api.client(), NS)
        .patch(
            "tencent",
            &PatchParams::apply("tenant").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    Harness {
        api,
        sim,
        ctx,
        metrics,
    }
}

impl Harness {
    async fn create(&self, name: &str, credentials_ref: Value) {
        let spec = json!({"certificateId": "leak0001", "credentialsRef": credentials_ref});
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(NS.into());
        Api::<TencentCertificate>::namespaced(self.api.client(), NS)
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    /// Two reconciles (a first attempt, then a retry), as the controller would run them.
    async fn reconcile_twice(&self, name: &str) -> TencentCertificate {
        let crs = Api::<TencentCertificate>::namespaced(self.api.client(), NS);
        for _ in 0..2 {
            let cr = crs.get(name).await.unwrap();
            reconcile(Arc::new(cr), self.ctx.clone()).await.unwrap();
        }
        crs.get(name).await.unwrap()
    }

    /// Everything a viewer or an operator's reader could see: the resources (status included), the events,
    /// the log and the metrics.
    fn visible(&self, log: &Captured) -> Vec<(String, String)> {
        let mut visible = Vec::new();
        for cr in self.api.objects(
            "tencentcert.io",
            "v1alpha1",
            "tencentcertificates",
            Some(NS),
        ) {
            visible.push(("resource".to_string(), cr.to_string()));
        }
        for group in ["events.k8s.io", ""] {
            for event in self.api.objects(group, "v1", "events", Some(NS)) {
                visible.push(("event".to_string(), event.to_string()));
            }
        }
        for line in log.text().lines() {
            visible.push(("log".to_string(), line.to_string()));
        }
        visible.push(("metrics".to_string(), self.metrics.render()));
        visible
    }
}

fn synced(cr: &TencentCertificate) -> (String, String, String) {
    let c = cr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
        .expect("a Synced condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn assert_no_marker(visible: &[(String, String)]) {
    assert!(visible.iter().any(|(kind, _)| kind == "event"), "no events");
    assert!(visible.iter().any(|(kind, _)| kind == "log"), "no log");
    for (kind, text) in visible {
        for marker in MARKERS {
            assert!(
                !text.contains(marker),
                "the marker {marker} appeared in a {kind}: {text}"
            );
        }
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (log, guard)
}

#[tokio::test]
async fn a_value_that_is_no_secret_id_is_refused_before_anything_is_sent() {
    let (log, _guard) = capture();
    let h = harness().await;
    h.create(
        "plain",
        json!({"name": "tencent", "secretIdKey": "api-token"}),
    )
    .await;
    h.create(
        "plain-role",
        json!({"name": "tencent", "secretIdKey": "api-token", "role": {"roleArn": ROLE}}),
    )
    .await;
    let mut reconciled = Vec::new();
    for name in ["plain", "plain-role"] {
        reconciled.push(h.reconcile_twice(name).await);
    }
    assert_no_marker(&h.visible(&log));
    for cr in reconciled {
        let (status, reason, message) = synced(&cr);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidCredentials")
        );
        // The message names the Secret and the key.
        assert!(message.contains("tenant/tencent"), "{message}");
        assert!(message.contains("\"api-token\""), "{message}");
    }
    assert_eq!(
        h.sim.state().stats().requests,
        0,
        "nothing reached Tencent (neither the SSL API nor STS)"
    );
}

#[tokio::test]
async fn a_secret_id_tencent_quotes_back_never_reaches_status_events_logs_or_metrics() {
    let (log, _guard) = capture();
    let h = harness().await;
    h.create(
        "shaped",
        json!({"name": "tencent", "secretIdKey": "other-id"}),
    )
    .await;
    h.create(
        "shaped-role",
        json!({"name": "tencent", "secretIdKey": "other-id", "role": {"roleArn": ROLE}}),
    )
    .await;
    let shaped = h.reconcile_twice("shaped").await;
    let shaped_role = h.reconcile_twice("shaped-role").await;
    assert_no_marker(&h.visible(&log));
    let (status, reason, message) = synced(&shaped);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AuthFailed"));
    assert!(
        message.contains("AuthFailure.SecretIdNotFound"),
        "{message}"
    );
    assert!(
        message.contains("<SecretId>"),
        "redacted in place: {message}"
    );
    let (status, reason, message) = synced(&shaped_role);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AssumeRoleFailed")
    );
    assert!(message.contains(ROLE), "{message}");
    // Tencent did answer (the simulator quoted the SecretId in its message).
    let stats = h.sim.state().stats();
    assert!(
        stats.count("DownloadCertificate", "AuthFailure.SecretIdNotFound") > 0
            && stats.count("AssumeRole", "AuthFailure.SecretIdNotFound") > 0,
        "{stats:?}"
    );
}

#[tokio::test]
async fn the_working_key_still_syncs_and_its_secret_id_stays_out_of_status() {
    let (log, _guard) = capture();
    let h = harness().await;
    h.create("shop", json!({"name": "tencent"})).await;
    let cr = h.reconcile_twice("shop").await;
    assert_eq!(synced(&cr).1, "Synced");
    for (kind, text) in h.visible(&log) {
        if kind != "metrics" {
            assert!(!text.contains(SECRET_KEY), "{kind}: {text}");
        }
        assert!(
            !text.contains(SECRET_ID),
            "the SecretId appeared in a {kind}: {text}"
        );
    }
}
