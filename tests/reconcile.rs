//! Reconcile scenarios against an in-process fake Kubernetes API server and the Tencent API simulator,
//! both over real HTTP. Each test drives `reconcile` directly, as the controller would, and checks what a
//! user would see: the Secret, the status, the events, and the requests made.

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::controller::reconcile::reconcile;
use tencent_cert_operator::controller::{Context, DefaultCredentials, NamespaceAllowList};
use tencent_cert_operator::crd::{TencentCertificate, TencentCertificateStatus};
use tencent_sim::manage::{RenewLink, RenewRequest};
use tencent_sim::{self as sim, CertificateSpec, SimConfig, SimHandle, catalog};
use tencent_ssl::{self as tencent, ClientConfig};

const NS: &str = "web";
const SECRET_ID: &str = "AKIDreconcileTEST01";
const SECRET_KEY: &str = "reconcile-test-secret-key";

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    ctx: Arc<Context>,
}

async fn harness() -> Harness {
    harness_with(DefaultCredentials::default()).await
}

async fn harness_with(defaults: DefaultCredentials) -> Harness {
    harness_configured(defaults, Duration::ZERO).await
}

/// `cache_ttl` is how long Tencent answers (downloads, lookups) are shared: `ZERO` except in the tests of
/// sharing itself.
async fn harness_configured(defaults: DefaultCredentials, cache_ttl: Duration) -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[
                "aBcD1234:domain=shop.example.com,san=www.shop.example.com,with-root",
                "eFgH5678:domain=new.example.com",
                "noKey001:no-key",
                "old00001:expired",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        // Zero in most tests: every download reaches the simulator, so counts are exact.
        download_cache_ttl: cache_ttl,
        // `make_due` stands for a refresh interval passing; by then lookups are stale too.
        lookup_cache_ttl: cache_ttl,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(
        Context::new(api.client(), tencent, defaults).with_bundle_cache(cache_ttl, 8 << 20),
    );
    let h = Harness { api, sim, ctx };
    h.put_credentials("tencent", SECRET_KEY).await;
    h
}

impl Harness {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.api.client(), NS)
    }

    fn crs(&self) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), NS)
    }

    async fn put_credentials(&self, name: &str, key: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": {},
            "data": {
                "secretId": base64(SECRET_ID),
                "secretKey": base64(key),
            }
        }))
        .unwrap();
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    async fn create(&self, name: &str, spec: Value) -> TencentCertificate {
        let mut spec = spec;
        if spec.get("credentialsRef").is_none() {
            spec["credentialsRef"] = json!({"name": "tencent"});
        }
        let cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        let mut cr = cr;
        cr.metadata.namespace = Some(NS.into());
        self.crs()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap()
    }

    async fn cr(&self, name: &str) -> TencentCertificate {
        self.crs().get(name).await.unwrap()
    }

    async fn reconcile(&self, name: &str) -> TencentCertificate {
        let cr = self.cr(name).await;
        reconcile(Arc::new(cr), self.ctx.clone()).await.unwrap();
        self.cr(name).await
    }

    async fn reconcile_name(&self, name: String) -> TencentCertificate {
        self.reconcile(&name).await
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.unwrap()
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        self.crs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    /// Moves the planned refresh into the past, as time passing would.
    async fn make_due(&self, name: &str) {
        self.crs()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"nextSyncTime": "2000-01-01T00:00:00Z"}})),
            )
            .await
            .unwrap();
    }

    /// Due, and past the daily full download: a refresh downloads whatever the listing says.
    async fn make_download_due(&self, name: &str) {
        self.crs()
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

    fn downloads(&self) -> u64 {
        self.sim.stats().action_total("DownloadCertificate")
    }

    /// Every request Tencent received (downloads, renewal lookups, lists).
    fn tencent_requests(&self) -> u64 {
        self.sim.stats().requests
    }

    fn secret_writes(&self) -> u64 {
        self.api.request_count("PATCH", "secrets")
            + self.api.request_count("POST", "secrets")
            + self.api.request_count("PUT", "secrets")
            + self.api.request_count("DELETE", "secrets")
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        let mut events = self.api.objects("events.k8s.io", "v1", "events", Some(NS));
        events.extend(self.api.objects("", "v1", "events", Some(NS)));
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    /// Replaces the certificate behind `id` in Tencent Cloud (renewal with the same id, or worse).
    fn replace_certificate(&self, id: &str, spec: &str) {
        let spec: CertificateSpec = format!("{id}:{spec}").parse().unwrap();
        let mut built = catalog::build(&[spec], None).unwrap();
        self.sim.state().put_certificate(built.remove(0));
    }
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn condition<'a>(cr: &'a TencentCertificate, type_: &str) -> &'a Condition {
    cr.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", cr.status))
}

/// The condition, after checking its status and reason.
fn expect_condition<'a>(
    cr: &'a TencentCertificate,
    type_: &str,
    status: &str,
    reason: &str,
) -> &'a Condition {
    let found = condition(cr, type_);
    assert_eq!(
        (found.status.as_str(), found.reason.as_str()),
        (status, reason),
        "{type_}: {}",
        found.message
    );
    found
}

fn status(cr: &TencentCertificate) -> &TencentCertificateStatus {
    cr.status.as_ref().unwrap()
}

fn seconds_until(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().unwrap().as_second() - jiff::Timestamp::now().as_second()
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().unwrap()[key].0.clone()
}

#[tokio::test]
async fn happy_path_writes_the_tls_secret_and_reports_ready() {
    let h = harness().await;
    let created = h
        .create(
            "shop",
            json!({"certificateId": "aBcD1234", "secretName": "shop-tls",
        "secretTemplate": {"labels": {"team": "web"}, "annotations": {"note": "hi"}}}),
        )
        .await;
    let cr = h.reconcile("shop").await;

    let secret = h.secret("shop-tls").await.expect("Secret written");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let labels = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "tencent-cert-operator"
    );
    assert_eq!(labels["tencentcert.io/certificate-name"], "shop");
    assert_eq!(labels["team"], "web");
    let annotations = secret.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["tencentcert.io/certificate-id"], "aBcD1234");
    assert_eq!(annotations["note"], "hi");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
    assert_eq!(owner.kind, "TencentCertificate");
    assert_eq!(owner.controller, Some(true));
    let bundle = tencent_ssl::bundle::from_pem_entries(&[
        ("tls.crt", &data(&secret, "tls.crt")),
        ("tls.key", &data(&secret, "tls.key")),
        ("ca.crt", &data(&secret, "ca.crt")),
    ])
    .unwrap();
    assert_eq!(bundle.meta.subject_cn.as_deref(), Some("shop.example.com"));

    let ready = expect_condition(&cr, "Ready", "True", "Ready");
    assert_eq!(ready.observed_generation, cr.metadata.generation);
    assert_eq!(condition(&cr, "Synced").status, "True");
    let s = status(&cr);
    assert_eq!(s.certificate_id.as_deref(), Some("aBcD1234"));
    assert_eq!(s.secret_name.as_deref(), Some("shop-tls"));
    assert_eq!(
        s.dns_names,
        vec!["shop.example.com", "www.shop.example.com"]
    );
    assert_eq!(
        s.fingerprint_sha256.as_deref(),
        Some(bundle.meta.fingerprint_sha256.as_str())
    );
    assert_eq!(s.failures, 0);
    assert!(s.not_after.is_some() && s.last_sync_time.is_some());
    // Next refresh: the 1h interval ± 10 %.
    let next = seconds_until(s.next_sync_time.as_deref().unwrap());
    assert!((3230..=3970).contains(&next), "{next}");
    assert_eq!(h.events("SecretCreated").len(), 1);
}

#[tokio::test]
async fn nothing_is_written_when_nothing_changed() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    let writes = h.secret_writes();
    let status_writes = h.api.request_count("PATCH", "tencentcertificates");
    // Up to date: no download, no write, no status patch.
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), 1);
    assert_eq!(h.secret_writes(), writes);
    assert_eq!(
        h.api.request_count("PATCH", "tencentcertificates"),
        status_writes
    );
    // Refresh due, the listing shows the served certificate unchanged: no download, no Secret write,
    // one listing request.
    let requests = h.tencent_requests();
    h.make_due("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), 1);
    assert_eq!(h.secret_writes(), writes);
    assert_eq!(h.sim.stats().action_total("DescribeCertificateDetail"), 0);
    // (This harness accepts no cached lookup, so the walk and the skip check each list once.)
    assert!(h.tencent_requests() - requests <= 2, "listing only");
    // Past the daily full download with identical content: one download, still no Secret write.
    h.make_download_due("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), 2);
    assert_eq!(h.secret_writes(), writes);
}

#[tokio::test]
async fn network_errors_back_off_keep_ready_and_reset_on_success() {
    let h = harness().await;
    // Renewal lookups off: the injected faults hit the downloads.
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "followRenewals": false}),
    )
    .await;
    h.reconcile("shop").await;
    h.sim
        .state()
        .add_fault("aBcD1234=FailedOperation.NetworkError:3".parse().unwrap());
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        h.make_download_due("shop").await;
        let cr = h.reconcile("shop").await;
        let s = status(&cr);
        assert_eq!(s.failures, attempt);
        assert_eq!(
            condition(&cr, "Ready").status,
            "True",
            "a flaky API must not affect traffic"
        );
        expect_condition(&cr, "Synced", "False", "NetworkError");
        delays.push(seconds_until(s.next_sync_time.as_deref().unwrap()));
    }
    // 5 s, 10 s, 20 s, each ± 20 %.
    assert!((3..=6).contains(&delays[0]), "{delays:?}");
    assert!((7..=12).contains(&delays[1]), "{delays:?}");
    assert!((15..=24).contains(&delays[2]), "{delays:?}");
    // One warning for the episode, not one per retry.
    assert_eq!(h.events("NetworkError").len(), 1);
    h.make_download_due("shop").await;
    let cr = h.reconcile("shop").await;
    assert_eq!(status(&cr).failures, 0);
    assert_eq!(condition(&cr, "Synced").status, "True");
    assert_eq!(h.events("Recovered").len(), 1);
}

#[tokio::test]
async fn certificate_not_found_waits_for_the_refresh_interval() {
    let h = harness().await;
    h.create(
        "shop",
        json!({"certificateId": "missing1", "refreshInterval": "30m"}),
    )
    .await;
    let cr = h.reconcile("shop").await;
    let ready = expect_condition(&cr, "Ready", "False", "CertificateNotFound");
    assert!(
        ready.message.contains("check the certificate ID"),
        "{}",
        ready.message
    );
    let next = seconds_until(status(&cr).next_sync_time.as_deref().unwrap());
    assert!((1610..=1990).contains(&next), "{next}");
    // Reconciles triggered meanwhile (watch events, restarts) do not call Tencent again.
    let requests = h.tencent_requests();
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.tencent_requests(), requests);
    assert!(h.secret("shop").await.is_none());
    // A spec change is acted upon at once.
    h.patch_spec("shop", json!({"certificateId": "aBcD1234"}))
        .await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
}

#[tokio::test]
async fn auth_failure_is_fixed_by_correcting_the_credentials() {
    let h = harness().await;
    h.put_credentials("tencent", "wrong-key").await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Ready", "False", "AuthFailed");
    let next = seconds_until(status(&cr).next_sync_time.as_deref().unwrap());
    assert!(
        (265..=335).contains(&next),
        "credentials retry every 5 minutes: {next}"
    );
    // Unchanged credentials: no new attempt before then, and the status keeps saying why.
    let idle = h.reconcile("shop").await;
    assert_eq!(h.downloads(), 1);
    assert_eq!(idle.status, cr.status);
    // Fixed credentials: the next reconcile (the credentials watch triggers one) syncs at once.
    h.put_credentials("tencent", SECRET_KEY).await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
    assert_eq!(status(&cr).failures, 0);
}

#[tokio::test]
async fn missing_credentials_secret_is_reported() {
    let h = harness().await;
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "credentialsRef": {"name": "nope"}}),
    )
    .await;
    let cr = h.reconcile("shop").await;
    let ready = expect_condition(&cr, "Ready", "False", "CredentialsNotFound");
    assert!(
        ready.message.contains("web/nope not found"),
        "{}",
        ready.message
    );
    assert_eq!(h.downloads(), 0);
}

#[tokio::test]
async fn default_credentials_serve_only_allowed_namespaces() {
    let h = harness_with(DefaultCredentials {
        secret: Some("web/tencent".parse().unwrap()),
        namespaces: NamespaceAllowList::parse("web"),
        ..DefaultCredentials::default()
    })
    .await;
    let cr = TencentCertificate::new(
        "shop",
        serde_json::from_value(json!({"certificateId": "aBcD1234"})).unwrap(),
    );
    h.crs().create(&PostParams::default(), &cr).await.unwrap();
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
}

#[tokio::test]
async fn key_missing_is_reported_without_hot_retries() {
    let h = harness().await;
    h.create("csr", json!({"certificateId": "noKey001"})).await;
    let cr = h.reconcile("csr").await;
    let ready = expect_condition(&cr, "Ready", "False", "KeyMissing");
    assert!(
        ready.message.contains("requested with your own CSR"),
        "{}",
        ready.message
    );
    assert!(seconds_until(status(&cr).next_sync_time.as_deref().unwrap()) > 3000);
    assert!(h.secret("csr").await.is_none());
    let idle = h.reconcile("csr").await;
    assert_eq!(h.downloads(), 1);
    assert_eq!(idle.status, cr.status);
}

#[tokio::test]
async fn a_foreign_secret_is_never_touched_unless_it_consents() {
    let h = harness().await;
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": NS, "labels": {"owner": "someone"}},
        "type": "Opaque", "data": {"x": base64("y")}
    }))
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let writes = h.secret_writes();
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    let cr = h.reconcile("shop").await;
    let ready = expect_condition(&cr, "Ready", "False", "SecretConflict");
    assert!(ready.message.contains("tencentcert.io/adopt"));
    assert_eq!(h.secret_writes(), writes);
    assert_eq!(h.downloads(), 0);
    assert_eq!(h.secret("shop").await.unwrap().data, foreign.data);
    assert_eq!(h.events("SecretConflict").len(), 1);
    // The owner consents: the operator takes it over (re-creating it, as the type changes).
    h.secrets()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tencentcert.io/adopt": "true"}}})),
        )
        .await
        .unwrap();
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
    assert_eq!(
        h.secret("shop").await.unwrap().type_.as_deref(),
        Some("kubernetes.io/tls")
    );
}

#[tokio::test]
async fn a_deleted_secret_is_recreated() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    h.secrets()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let cr = h.reconcile("shop").await;
    assert!(h.secret("shop").await.is_some());
    assert_eq!(condition(&cr, "Ready").status, "True");
    assert_eq!(h.downloads(), 2);
}

#[tokio::test]
async fn edited_data_is_restored() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    let original = h.secret("shop").await.unwrap();
    h.secrets()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.crt": base64("garbage")}})),
        )
        .await
        .unwrap();
    h.reconcile("shop").await;
    assert_eq!(h.secret("shop").await.unwrap().data, original.data);
}

#[tokio::test]
async fn a_different_valid_certificate_put_in_the_secret_is_replaced() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.create("other", json!({"certificateId": "eFgH5678"}))
        .await;
    h.reconcile("shop").await;
    h.reconcile("other").await;
    let original = h.secret("shop").await.unwrap();
    let other = h.secret("other").await.unwrap();
    // Someone copies another valid certificate and key into our Secret.
    h.secrets()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {
                "tls.crt": base64(&String::from_utf8(data(&other, "tls.crt")).unwrap()),
                "tls.key": base64(&String::from_utf8(data(&other, "tls.key")).unwrap()),
            }})),
        )
        .await
        .unwrap();
    h.reconcile("shop").await;
    assert_eq!(h.secret("shop").await.unwrap().data, original.data);
}

#[tokio::test]
async fn label_drift_is_repaired_without_a_download() {
    let h = harness().await;
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "secretTemplate": {"labels": {"team": "web"}}}),
    )
    .await;
    h.reconcile("shop").await;
    h.secrets()
        .patch("shop", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": null}, "annotations": {"tencentcert.io/not-after": null}}})))
        .await
        .unwrap();
    h.reconcile("shop").await;
    let secret = h.secret("shop").await.unwrap();
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["team"], "web");
    assert!(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("tencentcert.io/not-after")
    );
    assert_eq!(h.downloads(), 1);
    assert_eq!(h.events("SecretRepaired").len(), 1);
}

#[tokio::test]
async fn an_expired_certificate_never_replaces_a_valid_one() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    let before = h.secret("shop").await.unwrap();
    h.replace_certificate("aBcD1234", "domain=shop.example.com,expired");
    h.make_due("shop").await;
    let cr = h.reconcile("shop").await;
    assert_eq!(h.secret("shop").await.unwrap().data, before.data);
    assert_eq!(condition(&cr, "Ready").status, "True");
    expect_condition(&cr, "Synced", "False", "Expired");
    // And none is written where there was nothing.
    h.create("old", json!({"certificateId": "old00001"})).await;
    let cr = h.reconcile("old").await;
    assert_eq!(condition(&cr, "Ready").reason, "Expired");
    assert!(h.secret("old").await.is_none());
}

#[tokio::test]
async fn a_renewal_behind_the_same_id_is_picked_up_at_refresh() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    let first = h.reconcile("shop").await;
    // Reissued in place: same id, a new validity window, which the listing shows.
    h.replace_certificate("aBcD1234", "domain=shop.example.com,valid-days=365");
    h.make_due("shop").await;
    let second = h.reconcile("shop").await;
    assert_ne!(
        status(&first).fingerprint_sha256,
        status(&second).fingerprint_sha256
    );
    let annotations = h
        .secret("shop")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        Some(&annotations["tencentcert.io/fingerprint-sha256"]),
        status(&second).fingerprint_sha256.as_ref()
    );
    assert_eq!(h.events("SecretUpdated").len(), 1);
    assert_eq!(h.downloads(), 2);
}

#[tokio::test]
async fn content_replaced_behind_an_unchanged_listing_comes_with_the_daily_full_download() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    let first = h.reconcile("shop").await;
    // The worst case: new content, but the listing shows the same id, status and validity window.
    let original = h.sim.state().certificate("aBcD1234").unwrap();
    let spec: CertificateSpec = "aBcD1234:domain=shop.example.com".parse().unwrap();
    let mut replacement = catalog::build(&[spec], None).unwrap().remove(0);
    replacement.not_before = original.not_before;
    replacement.not_after = original.not_after;
    h.sim.state().put_certificate(replacement);
    // A routine refresh trusts the listing: no download, the served certificate stays.
    h.make_due("shop").await;
    let refreshed = h.reconcile("shop").await;
    assert_eq!(h.downloads(), 1);
    assert_eq!(
        status(&refreshed).fingerprint_sha256,
        status(&first).fingerprint_sha256
    );
    let synced = expect_condition(&refreshed, "Synced", "True", "Synced");
    assert!(synced.message.contains("unchanged"), "{}", synced.message);
    assert_eq!(
        status(&refreshed).last_download_time,
        status(&first).last_download_time
    );
    assert_ne!(
        status(&refreshed).last_sync_time,
        None,
        "the listing confirmed the certificate"
    );
    // Once the last full download is a day old, the refresh downloads and finds the new content.
    h.make_download_due("shop").await;
    let downloaded = h.reconcile("shop").await;
    assert_eq!(h.downloads(), 2);
    assert_ne!(
        status(&downloaded).fingerprint_sha256,
        status(&first).fingerprint_sha256
    );
    assert_eq!(h.events("SecretUpdated").len(), 1);
}

#[tokio::test]
async fn retain_and_delete_policies_control_the_owner_reference_and_gc() {
    let h = harness().await;
    h.create(
        "kept",
        json!({"certificateId": "aBcD1234", "deletionPolicy": "Retain"}),
    )
    .await;
    h.create("owned", json!({"certificateId": "eFgH5678"}))
        .await;
    h.reconcile("kept").await;
    h.reconcile("owned").await;
    assert!(
        h.secret("kept")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        h.secret("owned")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap()
            .len(),
        1
    );
    // Switching a live resource from Delete to Retain drops the owner reference.
    h.patch_spec("owned", json!({"deletionPolicy": "Retain"}))
        .await;
    h.reconcile("owned").await;
    assert!(
        h.secret("owned")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    // And back.
    h.patch_spec("owned", json!({"deletionPolicy": "Delete"}))
        .await;
    h.reconcile("owned").await;
    assert_eq!(
        h.secret("owned")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap()
            .len(),
        1
    );
    // The garbage collector removes the owned Secret with its resource, and keeps the retained one.
    h.crs()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    h.crs()
        .delete("owned", &DeleteParams::default())
        .await
        .unwrap();
    h.api.wait_for_gc().await;
    assert!(h.secret("kept").await.is_some());
    assert!(h.secret("owned").await.is_none());
}

#[tokio::test]
async fn a_certificate_id_change_brings_the_new_certificate() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    h.patch_spec("shop", json!({"certificateId": "eFgH5678"}))
        .await;
    let cr = h.reconcile("shop").await;
    assert_eq!(status(&cr).certificate_id.as_deref(), Some("eFgH5678"));
    assert_eq!(status(&cr).dns_names, vec!["new.example.com"]);
    let secret = h.secret("shop").await.unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["tencentcert.io/certificate-id"],
        "eFgH5678"
    );
    // A change to an id that fails keeps serving the old certificate but is not Ready.
    h.patch_spec("shop", json!({"certificateId": "missing1"}))
        .await;
    let cr = h.reconcile("shop").await;
    let ready = expect_condition(&cr, "Ready", "False", "CertificateNotFound");
    assert!(
        ready.message.contains("still holds certificate eFgH5678"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn a_secret_name_change_moves_the_secret_per_deletion_policy() {
    let h = harness().await;
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "secretName": "first"}),
    )
    .await;
    h.create("kept", json!({"certificateId": "eFgH5678", "secretName": "kept-first", "deletionPolicy": "Retain"})).await;
    h.reconcile("shop").await;
    h.reconcile("kept").await;
    h.patch_spec("shop", json!({"secretName": "second"})).await;
    h.patch_spec("kept", json!({"secretName": "kept-second"}))
        .await;
    h.reconcile("shop").await;
    h.reconcile("kept").await;
    assert!(h.secret("first").await.is_none());
    assert!(h.secret("second").await.is_some());
    assert!(h.secret("kept-first").await.is_some());
    assert!(h.secret("kept-second").await.is_some());
}

#[tokio::test]
async fn our_secret_of_the_wrong_type_is_recreated() {
    let h = harness().await;
    let opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": NS, "labels": {"tencentcert.io/certificate-name": "shop"}},
        "type": "Opaque", "data": {"x": base64("y")}
    }))
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &opaque)
        .await
        .unwrap();
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
    let secret = h.secret("shop").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(!secret.data.unwrap().contains_key("x"));
    assert_eq!(h.events("SecretRecreated").len(), 1);
}

#[tokio::test]
async fn a_refresh_request_forces_a_download_once() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    let request = |value: &str| json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": value}}});
    h.crs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(request("2026-11-27T10:00:00Z")),
        )
        .await
        .unwrap();
    let cr = h.reconcile("shop").await;
    assert_eq!(h.downloads(), 2);
    assert_eq!(
        status(&cr).last_refresh_request.as_deref(),
        Some("2026-11-27T10:00:00Z")
    );
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), 2);
    // A new request within the minute is deferred to its end, and said once.
    h.crs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(request("2026-11-27T11:00:00Z")),
        )
        .await
        .unwrap();
    let deferred = h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), 2);
    assert_eq!(
        status(&deferred).last_refresh_request.as_deref(),
        Some("2026-11-27T10:00:00Z")
    );
    let told = h.events("RefreshDeferred");
    assert_eq!(told.len(), 1, "{told:?}");
    // The minute passes: the deferred request is acted upon.
    h.crs()
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastRefreshRequestTime": "2000-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    let cr = h.reconcile("shop").await;
    assert_eq!(h.downloads(), 3);
    assert_eq!(
        status(&cr).last_refresh_request.as_deref(),
        Some("2026-11-27T11:00:00Z")
    );
}

#[tokio::test]
async fn include_ca_false_leaves_out_the_root() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    assert!(
        h.secret("shop")
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key("ca.crt")
    );
    h.patch_spec("shop", json!({"includeCA": false})).await;
    h.reconcile("shop").await;
    assert!(
        !h.secret("shop")
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key("ca.crt")
    );
}

#[tokio::test]
async fn a_kubernetes_api_failure_is_an_error_and_leaves_no_half_written_state() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    // A new Secret is created (POST): a create is the write that fails when someone else took the name.
    h.api.fail_next("POST", "secrets", 500, 1);
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Synced", "False", "KubernetesError");
    assert!(h.secret("shop").await.is_none());
    h.make_due("shop").await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
}

#[tokio::test]
async fn no_secret_material_reaches_status_events_or_logs_of_the_store() {
    let h = harness().await;
    h.put_credentials("tencent", SECRET_KEY).await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.create(
        "bad",
        json!({"certificateId": "aBcD1234", "credentialsRef": {"name": "wrong"}}),
    )
    .await;
    h.put_credentials("wrong", "wrong-secret-key-value").await;
    h.reconcile("shop").await;
    h.reconcile("bad").await;
    let key_pem = String::from_utf8(data(&h.secret("shop").await.unwrap(), "tls.key")).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut visible = Vec::new();
    for cr in h.api.objects(
        "tencentcert.io",
        "v1alpha1",
        "tencentcertificates",
        Some(NS),
    ) {
        visible.push(cr.to_string());
    }
    for event in h.api.objects("events.k8s.io", "v1", "events", Some(NS)) {
        visible.push(event.to_string());
    }
    assert!(visible.len() >= 3);
    for text in &visible {
        assert!(!text.contains(SECRET_KEY));
        assert!(!text.contains("wrong-secret-key-value"));
        assert!(!text.contains(&key_body[..40]));
        assert!(!text.contains("PRIVATE KEY"));
    }
}

fn renew(h: &Harness, id: &str, new_id: &str, status: Option<i64>) {
    h.sim
        .state()
        .renew_certificate(
            id,
            &RenewRequest {
                new_id: Some(new_id.into()),
                status,
                link: RenewLink::default(),
                valid_days: None,
            },
        )
        .unwrap();
}

fn add(h: &Harness, spec: &str) {
    h.sim
        .state()
        .add_certificate(&spec.parse().unwrap())
        .unwrap();
}

fn serving_id(secret: &Secret) -> String {
    secret.metadata.annotations.as_ref().unwrap()["tencentcert.io/certificate-id"].clone()
}

#[tokio::test]
async fn a_renewal_with_a_new_id_is_followed_without_editing_the_resource() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    assert_eq!(serving_id(&h.secret("shop").await.unwrap()), "aBcD1234");
    renew(&h, "aBcD1234", "rEnEw001", None);
    h.make_due("shop").await;
    let cr = h.reconcile("shop").await;
    assert_eq!(serving_id(&h.secret("shop").await.unwrap()), "rEnEw001");
    let s = status(&cr);
    assert_eq!(s.resolved_certificate_id.as_deref(), Some("rEnEw001"));
    assert_eq!(s.certificate_id.as_deref(), Some("rEnEw001"));
    assert_eq!(s.renewal_chain, vec!["aBcD1234", "rEnEw001"]);
    let ready = condition(&cr, "Ready");
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.contains("certificate rEnEw001"),
        "{}",
        ready.message
    );
    assert_eq!(h.events("Renewed").len(), 1);
    // Later refreshes stay on the renewal without announcing it again.
    h.make_due("shop").await;
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(serving_id(&h.secret("shop").await.unwrap()), "rEnEw001");
    assert_eq!(h.events("Renewed").len(), 1);
}

#[tokio::test]
async fn a_renewal_not_issued_yet_keeps_the_current_certificate() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    h.reconcile("shop").await;
    renew(&h, "aBcD1234", "rEnEw001", None);
    renew(&h, "rEnEw001", "pEnDiNg1", Some(0));
    h.make_due("shop").await;
    let cr = h.reconcile("shop").await;
    assert_eq!(serving_id(&h.secret("shop").await.unwrap()), "rEnEw001");
    assert_eq!(condition(&cr, "Ready").status, "True");
    let synced = condition(&cr, "Synced");
    assert!(
        synced
            .message
            .contains("renewal pEnDiNg1 is not issued yet"),
        "{}",
        synced.message
    );
    // Once issued, the next refresh switches.
    h.sim.state().set_certificate_status("pEnDiNg1", 1).unwrap();
    h.make_due("shop").await;
    h.reconcile("shop").await;
    assert_eq!(serving_id(&h.secret("shop").await.unwrap()), "pEnDiNg1");
    assert_eq!(h.events("Renewed").len(), 2);
}

#[tokio::test]
async fn without_follow_renewals_the_spec_id_is_kept() {
    let h = harness().await;
    h.create(
        "pinned",
        json!({"certificateId": "aBcD1234", "followRenewals": false}),
    )
    .await;
    renew(&h, "aBcD1234", "rEnEw001", None);
    h.reconcile("pinned").await;
    assert_eq!(serving_id(&h.secret("pinned").await.unwrap()), "aBcD1234");
}

#[tokio::test]
async fn a_domain_picks_the_latest_matching_certificate_and_moves_to_a_newer_one() {
    let h = harness().await;
    add(&h, "dom00030:domain=shop.test,valid-days=30");
    add(
        &h,
        "dom00060:domain=www.shop.test,san=shop.test,valid-days=60",
    );
    add(&h, "dom00045:domain=shop.test,valid-days=45");
    add(&h, "wild0200:domain=*.shop.test,valid-days=200");
    add(&h, "other999:domain=other.test,valid-days=300");
    h.create("bydomain", json!({"domain": "shop.test"})).await;
    let cr = h.reconcile("bydomain").await;
    // The wildcard does not cover the bare domain; the longest-lived exact match wins.
    assert_eq!(serving_id(&h.secret("bydomain").await.unwrap()), "dom00060");
    assert_eq!(
        status(&cr).resolved_certificate_id.as_deref(),
        Some("dom00060")
    );
    assert_eq!(condition(&cr, "Ready").status, "True");
    // A newer certificate appears in Tencent Cloud: the next refresh moves to it (an explicit refresh
    // here; a scheduled one comes at least a minute later, past the 60 s list cache).
    add(&h, "dom00090:domain=shop.test,valid-days=90");
    h.crs()
        .patch(
            "bydomain",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": "now"}}}),
            ),
        )
        .await
        .unwrap();
    h.reconcile("bydomain").await;
    assert_eq!(serving_id(&h.secret("bydomain").await.unwrap()), "dom00090");
    assert_eq!(h.events("Renewed").len(), 1);
    // A wildcard domain is served by the wildcard certificate.
    h.create("wild", json!({"domain": "*.shop.test"})).await;
    h.reconcile("wild").await;
    assert_eq!(serving_id(&h.secret("wild").await.unwrap()), "wild0200");
}

#[tokio::test]
async fn no_matching_certificate_says_what_was_searched() {
    let h = harness().await;
    h.create("nothing", json!({"domain": "nowhere.test"})).await;
    let cr = h.reconcile("nothing").await;
    let ready = expect_condition(&cr, "Ready", "False", "NoMatchingCertificate");
    assert!(
        ready.message.contains("covers nowhere.test"),
        "{}",
        ready.message
    );
    assert!(h.secret("nothing").await.is_none());
}

#[tokio::test]
async fn additional_domains_need_one_certificate_covering_every_name() {
    let h = harness().await;
    add(&h, "apex0090:domain=shop.test,valid-days=90");
    add(
        &h,
        "both0060:domain=shop.test,san=www.shop.test,valid-days=60",
    );
    add(&h, "api00300:domain=api.shop.test,valid-days=300");
    // shop.test alone would get the longer-lived apex0090; with www too, only both0060 covers both.
    h.create(
        "both",
        json!({"domain": "shop.test", "additionalDomains": ["www.shop.test"]}),
    )
    .await;
    let cr = h.reconcile("both").await;
    expect_condition(&cr, "Ready", "True", "Ready");
    assert_eq!(serving_id(&h.secret("both").await.unwrap()), "both0060");
    // No single certificate covers shop.test and api.shop.test: none is picked, and the message says so.
    h.create(
        "split",
        json!({"domain": "shop.test", "additionalDomains": ["api.shop.test"]}),
    )
    .await;
    let cr = h.reconcile("split").await;
    let ready = expect_condition(&cr, "Ready", "False", "NoMatchingCertificate");
    assert!(
        ready
            .message
            .contains("covers all of shop.test, api.shop.test"),
        "{}",
        ready.message
    );
    assert!(h.secret("split").await.is_none());
}

#[tokio::test]
async fn two_hundred_domain_resources_share_one_list_scan() {
    let h = harness_configured(DefaultCredentials::default(), Duration::from_secs(30)).await;
    for i in 0..3 {
        add(&h, &format!("many{i:04}:domain=d{i}.many.test"));
    }
    for i in 0..200 {
        h.create(
            &format!("r{i:03}"),
            json!({"domain": format!("d{}.many.test", i % 3)}),
        )
        .await;
    }
    let lists_before = h.sim.stats().action_total("DescribeCertificates");
    let crs: Vec<TencentCertificate> = futures::future::join_all((0..200).map(|i| {
        let h = &h;
        async move { h.cr(&format!("r{i:03}")).await }
    }))
    .await;
    futures::future::join_all(
        crs.into_iter()
            .map(|cr| reconcile(Arc::new(cr), h.ctx.clone())),
    )
    .await
    .into_iter()
    .for_each(|r| {
        r.unwrap();
    });
    let lists = h.sim.stats().action_total("DescribeCertificates") - lists_before;
    let downloads = h.downloads();
    eprintln!(
        "200 domain resources: {lists} DescribeCertificates request(s), {downloads} downloads"
    );
    assert_eq!(lists, 1, "one paginated scan per credentials per window");
    assert!(
        downloads <= 3 * 2,
        "downloads of 3 certificates are shared: {downloads}"
    );
    for i in [0, 1, 2, 199] {
        let cr = h.cr(&format!("r{i:03}")).await;
        assert_eq!(condition(&cr, "Ready").status, "True");
    }
}

#[tokio::test]
async fn a_first_sync_wave_asks_tencent_per_certificate_not_per_resource() {
    let h = harness_configured(DefaultCredentials::default(), Duration::from_secs(60)).await;
    let ids = ["aBcD1234", "eFgH5678"];
    for i in 0..40 {
        h.create(
            &format!("site-{i:02}"),
            json!({"certificateId": ids[i % 2]}),
        )
        .await;
    }
    let writes_before = h.secret_writes();
    // Half the wave at once, half one by one later: 40 resources, 2 certificates.
    futures::future::join_all((0..20).map(|i| h.reconcile_name(format!("site-{i:02}")))).await;
    for i in 20..40 {
        h.reconcile(&format!("site-{i:02}")).await;
    }
    for i in 0..40 {
        let cr = h.cr(&format!("site-{i:02}")).await;
        expect_condition(&cr, "Ready", "True", "Ready");
        assert_eq!(
            serving_id(&h.secret(&format!("site-{i:02}")).await.unwrap()),
            ids[i % 2]
        );
    }
    assert_eq!(h.downloads(), 2, "one download per certificate");
    // The concurrent half shares one batched lookup; the rest is answered from it.
    assert_eq!(h.sim.stats().action_total("DescribeCertificates"), 1);
    assert_eq!(h.sim.stats().action_total("DescribeCertificateDetail"), 0);
    // Each new Secret: a create of what every Secret holds, then the apply of the rest (here the owner
    // reference), which only an apply can take away again later (see `secret::creation_core`).
    assert_eq!(h.secret_writes() - writes_before, 80);
}

const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/cert-reader";

fn sim_role(trusted: &str, token: &str) -> sim::SimRole {
    sim::SimRole {
        role_arn: ROLE_ARN.into(),
        trusted_secret_ids: vec![trusted.into()],
        oidc_provider_id: Some("cls-reconcile".into()),
        web_identity_tokens: vec![token.into()],
    }
}

/// Everything a user can read about a resource: its status and its events, as JSON text.
async fn visible_text(h: &Harness, name: &str) -> String {
    let cr = h.cr(name).await;
    let mut text = serde_json::to_string(&cr.status).unwrap();
    for event in h.api.objects("events.k8s.io", "v1", "events", Some(NS)) {
        text.push_str(&event.to_string());
    }
    text
}

#[tokio::test]
async fn a_role_in_credentials_ref_syncs_with_temporary_credentials() {
    let h = harness().await;
    h.sim.state().put_role(sim_role(SECRET_ID, "unused"));
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234",
               "credentialsRef": {"name": "tencent", "role": {"roleArn": ROLE_ARN, "durationSeconds": 900}}}),
    )
    .await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
    let stats = h.sim.stats();
    assert_eq!(stats.count("AssumeRole", "Success"), 1);
    // Every SSL request was signed by the role's temporary key, none by the base key.
    assert!(
        stats
            .by_secret_id
            .keys()
            .all(|id| id.starts_with("AKIDtmp")),
        "{stats:?}"
    );
    assert!(stats.count("DownloadCertificate", "Success") >= 1);
    // A second resource on the same Secret and role shares the temporary credentials.
    h.create(
        "shop2",
        json!({"certificateId": "aBcD1234",
               "credentialsRef": {"name": "tencent", "role": {"roleArn": ROLE_ARN, "durationSeconds": 900}}}),
    )
    .await;
    assert_eq!(
        condition(&h.reconcile("shop2").await, "Ready").status,
        "True"
    );
    assert_eq!(h.sim.stats().count("AssumeRole", "Success"), 1);
    let visible = visible_text(&h, "shop").await;
    for secret in h.sim.state().issued_secrets() {
        assert!(
            !visible.contains(&secret),
            "a temporary key or token is visible"
        );
    }
}

#[tokio::test]
async fn a_role_the_key_may_not_assume_says_to_fix_the_trust_policy() {
    let h = harness().await;
    h.sim
        .state()
        .put_role(sim_role("AKIDsomebodyElse", "unused"));
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234",
               "credentialsRef": {"name": "tencent", "role": {"roleArn": ROLE_ARN}}}),
    )
    .await;
    let cr = h.reconcile("shop").await;
    let ready = expect_condition(&cr, "Ready", "False", "AssumeRoleFailed");
    assert!(ready.message.contains("trust policy"), "{}", ready.message);
    assert!(ready.message.contains(ROLE_ARN), "{}", ready.message);
    assert!(!ready.message.contains(SECRET_KEY));
    assert!(h.secret("shop").await.is_none());
    assert_eq!(h.downloads(), 0);
    // A credentials-class failure: retried in minutes, not hot.
    assert!(seconds_until(status(&cr).next_sync_time.as_deref().unwrap()) > 200);
}

#[tokio::test]
async fn pod_identity_serves_as_default_credentials() {
    let dir =
        std::env::temp_dir().join(format!("tco-reconcile-pod-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "sa-token-reconcile-0001").unwrap();
    let h = harness_with(DefaultCredentials {
        pod_identity: Some(tencent::sts::WebIdentity {
            region: "ap-guangzhou".into(),
            provider_id: "cls-reconcile".into(),
            role_arn: ROLE_ARN.into(),
            token_file: token_file.clone(),
            session_name: "tencent-cert-operator".into(),
            duration_secs: 7200,
        }),
        namespaces: NamespaceAllowList::All,
        ..DefaultCredentials::default()
    })
    .await;
    h.sim
        .state()
        .put_role(sim_role("none", "sa-token-reconcile-0001"));
    let cr = TencentCertificate::new(
        "shop",
        serde_json::from_value(json!({"certificateId": "aBcD1234"})).unwrap(),
    );
    h.crs().create(&PostParams::default(), &cr).await.unwrap();
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").status, "True");
    assert_eq!(
        h.sim.stats().count("AssumeRoleWithWebIdentity", "Success"),
        1
    );
    let visible = visible_text(&h, "shop").await;
    assert!(!visible.contains("sa-token-reconcile-0001"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The writes to Secrets in [`NS`], in order: (method, Secret name).
fn secret_write_log(h: &Harness) -> Vec<(String, String)> {
    h.api
        .requests()
        .into_iter()
        .filter(|r| {
            r.plural == "secrets"
                && r.namespace.as_deref() == Some(NS)
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

fn position(log: &[(String, String)], methods: &[&str], name: &str) -> Option<usize> {
    log.iter()
        .rposition(|(m, n)| methods.contains(&m.as_str()) && n == name)
}

#[tokio::test]
async fn a_secret_name_change_never_leaves_the_name_without_a_secret() {
    let h = harness().await;
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "secretName": "first", "followRenewals": false}),
    )
    .await;
    h.reconcile("shop").await;
    let served = h.secret("first").await.unwrap().data;

    // The download for the new name fails: the old Secret keeps serving.
    h.sim
        .state()
        .add_fault("aBcD1234=FailedOperation.NetworkError:1".parse().unwrap());
    h.patch_spec("shop", json!({"secretName": "second"})).await;
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Synced", "False", "NetworkError");
    assert!(
        h.secret("first").await.is_some_and(|s| s.data == served),
        "a failed download must leave the old Secret in place"
    );
    assert!(h.secret("second").await.is_none());

    // Someone else's Secret at the new name: a conflict, and the old Secret still serves.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "third", "namespace": NS}, "type": "Opaque", "data": {"mine": base64("yes")}
    }))
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    h.patch_spec("shop", json!({"secretName": "third"})).await;
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Ready", "False", "SecretConflict");
    assert!(h.secret("first").await.is_some_and(|s| s.data == served));
    assert_eq!(h.secret("third").await.unwrap().data, foreign.data);

    // A free name: the new Secret is written first, then the old one goes.
    h.patch_spec("shop", json!({"secretName": "second"})).await;
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Ready", "True", "Ready");
    assert_eq!(status(&cr).secret_name.as_deref(), Some("second"));
    assert!(h.secret("second").await.is_some());
    assert!(h.secret("first").await.is_none());
    let log = secret_write_log(&h);
    let written = position(&log, &["POST", "PATCH"], "second").expect("second written");
    let deleted = position(&log, &["DELETE"], "first").expect("first deleted");
    assert!(written < deleted, "the new Secret first: {log:?}");
}

#[tokio::test]
async fn a_type_change_deletes_only_once_the_new_secret_is_ready_and_creates_at_once() {
    let h = harness().await;
    let opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": NS, "labels": {"tencentcert.io/certificate-name": "shop"}},
        "type": "Opaque", "data": {"x": base64("y")}
    }))
    .unwrap();
    h.secrets()
        .create(&PostParams::default(), &opaque)
        .await
        .unwrap();
    h.create(
        "shop",
        json!({"certificateId": "aBcD1234", "followRenewals": false}),
    )
    .await;
    // No certificate to replace it with: the Secret stays as it is.
    h.sim
        .state()
        .add_fault("aBcD1234=FailedOperation.NetworkError:1".parse().unwrap());
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Synced", "False", "NetworkError");
    assert_eq!(
        h.secret("shop").await.unwrap().type_.as_deref(),
        Some("Opaque")
    );
    h.make_download_due("shop").await;
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Ready", "True", "Ready");
    // Delete, then the create straight after (no other request to Secrets in between).
    let log = secret_write_log(&h);
    let deleted = position(&log, &["DELETE"], "shop").expect("deleted");
    assert_eq!(
        log.get(deleted + 1).map(|(m, n)| (m.as_str(), n.as_str())),
        Some(("POST", "shop")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_secret_created_by_someone_else_between_read_and_write_is_not_taken_over() {
    let h = harness().await;
    h.create("shop", json!({"certificateId": "aBcD1234"})).await;
    // Their Secret appears after the reconcile saw none and before it writes.
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shop", "namespace": NS},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64("their certificate"), "tls.key": base64("their key")},
    });
    h.api
        .create_before_next_write("", "v1", "secrets", Some(NS), theirs);
    let cr = h.reconcile("shop").await;
    let secret = h.secret("shop").await.unwrap();
    assert_eq!(data(&secret, "tls.key"), b"their key", "taken over");
    assert!(
        secret
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key("tencentcert.io/certificate-name")),
        "their Secret must not be labelled as ours"
    );
    expect_condition(&cr, "Ready", "False", "SecretConflict");
    // And from then on it is someone else's Secret: reported, never touched.
    let cr = h.reconcile("shop").await;
    expect_condition(&cr, "Ready", "False", "SecretConflict");
    assert_eq!(
        data(&h.secret("shop").await.unwrap(), "tls.key"),
        b"their key"
    );
}
