//! The Secret outputs beyond `tls.crt`/`tls.key` (issue 14) through `reconcile`, against the in-process
//! fake Kubernetes API server and the Tencent API simulator: what is written, that an unchanged wave writes
//! nothing, that a changed password rewrites the keystores exactly once, and that a missing password writes
//! nothing and says why.

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::controller::reconcile::reconcile;
use tencent_cert_operator::controller::{Context, DefaultCredentials};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::{self as tencent, ClientConfig};

const NS: &str = "web";
const SECRET_ID: &str = "AKIDoutputsTEST0001";
const SECRET_KEY: &str = "outputs-test-secret-key";
const PASSWORD: &str = "first-Password-1";

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    ctx: Arc<Context>,
}

async fn harness() -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .start()
        .await;
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &["aBcD1234:domain=shop.example.com,with-root"],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        download_cache_ttl: Duration::ZERO,
        lookup_cache_ttl: Duration::ZERO,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let ctx = Arc::new(
        Context::new(api.client(), tencent, DefaultCredentials::default())
            .with_bundle_cache(Duration::ZERO, 8 << 20),
    );
    let h = Harness { api, sim, ctx };
    h.put_secret(
        "tencent",
        json!({"secretId": SECRET_ID, "secretKey": SECRET_KEY}),
    )
    .await;
    h
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Harness {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.api.client(), NS)
    }

    fn crs(&self) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), NS)
    }

    async fn put_secret(&self, name: &str, string_data: Value) {
        let data: serde_json::Map<String, Value> = string_data
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!(b64(v.as_str().unwrap()))))
            .collect();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "data": data,
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

    async fn create(&self, name: &str, spec: Value) {
        let mut spec = spec;
        spec["credentialsRef"] = json!({"name": "tencent"});
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(NS.into());
        self.crs()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    async fn reconcile(&self, name: &str) -> TencentCertificate {
        let cr = self.crs().get(name).await.unwrap();
        reconcile(Arc::new(cr), self.ctx.clone()).await.unwrap();
        self.crs().get(name).await.unwrap()
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.unwrap()
    }

    fn secret_writes(&self) -> u64 {
        ["PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .map(|verb| self.api.request_count(verb, "secrets"))
            .sum()
    }

    fn downloads(&self) -> u64 {
        self.sim.stats().action_total("DownloadCertificate")
    }

    async fn patch_status(&self, name: &str, status: Value) {
        self.crs()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        let mut events = self.api.objects("events.k8s.io", "v1", "events", Some(NS));
        events.extend(self.api.objects("", "v1", "events", Some(NS)));
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

fn all_outputs() -> Value {
    json!({
        "certificateId": "aBcD1234",
        "secretName": "shop-tls",
        "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}],
        "keystores": {
            "pkcs12": {"create": true, "passwordSecretRef": {"name": "keystore-password", "key": "password"}},
            "jks": {"create": true, "passwordSecretRef": {"name": "keystore-password", "key": "password"}, "alias": "shop"}
        },
        "certificateIdKey": "qcloud_cert_id"
    })
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().unwrap()[key].0.clone()
}

fn opens_with(secret: &Secret, password: &str) -> bool {
    p12_keystore::KeyStore::from_pkcs12(
        &data(secret, "keystore.p12"),
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .is_ok()
}

fn condition(cr: &TencentCertificate, type_: &str) -> (String, String, String) {
    let c = cr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn every_output_is_written_and_an_unchanged_wave_writes_nothing() {
    let h = harness().await;
    h.put_secret("keystore-password", json!({"password": PASSWORD}))
        .await;
    h.create("shop", all_outputs()).await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Ready").0, "True");

    let secret = h.secret("shop-tls").await.expect("written");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "ca.crt",
            "key.der",
            "keystore.jks",
            "keystore.p12",
            "qcloud_cert_id",
            "tls-combined.pem",
            "tls.crt",
            "tls.key",
            "truststore.jks",
            "truststore.p12"
        ]
    );
    assert_eq!(data(&secret, "qcloud_cert_id"), b"aBcD1234");
    let combined = String::from_utf8(data(&secret, "tls-combined.pem")).unwrap();
    let key = String::from_utf8(data(&secret, "tls.key")).unwrap();
    let chain = String::from_utf8(data(&secret, "tls.crt")).unwrap();
    assert_eq!(combined, format!("{key}{chain}"));
    assert!(opens_with(&secret, PASSWORD));
    let digest =
        secret.metadata.annotations.as_ref().unwrap()["tencentcert.io/keystores-digest"].clone();

    // Up to date, then a routine refresh whose listing shows nothing new, then a full download of the same
    // certificate: the keystores are kept byte for byte, nothing is written.
    let writes = h.secret_writes();
    h.reconcile("shop").await;
    h.patch_status("shop", json!({"nextSyncTime": "2000-01-01T00:00:00Z"}))
        .await;
    h.reconcile("shop").await;
    let downloads = h.downloads();
    h.patch_status(
        "shop",
        json!({"nextSyncTime": "2000-01-01T00:00:00Z", "lastDownloadTime": "2000-01-01T00:00:00Z"}),
    )
    .await;
    h.reconcile("shop").await;
    assert_eq!(h.downloads(), downloads + 1, "the full download happened");
    assert_eq!(h.secret_writes(), writes, "no write for an unchanged wave");
    let after = h.secret("shop-tls").await.unwrap();
    assert_eq!(after.data, secret.data);
    assert_eq!(
        after.metadata.annotations.as_ref().unwrap()["tencentcert.io/keystores-digest"],
        digest
    );
}

#[tokio::test]
async fn a_changed_password_rewrites_the_keystores_exactly_once() {
    let h = harness().await;
    h.put_secret("keystore-password", json!({"password": PASSWORD}))
        .await;
    h.create("shop", all_outputs()).await;
    h.reconcile("shop").await;
    let before = h.secret("shop-tls").await.unwrap();
    let downloads = h.downloads();

    // The watch of the password Secret triggers a reconcile: the keystores change, the certificate does
    // not, nothing is downloaded. (Writes are counted after the test's own write of the password.)
    h.put_secret(
        "keystore-password",
        json!({"password": "second-Password-2"}),
    )
    .await;
    let writes = h.secret_writes();
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.secret_writes(), writes + 1, "exactly one write");
    assert_eq!(h.downloads(), downloads);
    let after = h.secret("shop-tls").await.unwrap();
    assert!(opens_with(&after, "second-Password-2"));
    assert!(!opens_with(&after, PASSWORD));
    assert_eq!(data(&after, "tls.crt"), data(&before, "tls.crt"));
    assert_ne!(data(&after, "keystore.jks"), data(&before, "keystore.jks"));
    assert_eq!(h.events("SecretOutputsUpdated").len(), 1);

    // A change noticed only by a routine refresh (no watch event): one write there too.
    h.put_secret("keystore-password", json!({"password": "third-Password-3"}))
        .await;
    let writes = h.secret_writes();
    h.patch_status("shop", json!({"nextSyncTime": "2000-01-01T00:00:00Z"}))
        .await;
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.secret_writes(), writes + 1);
    assert!(opens_with(
        &h.secret("shop-tls").await.unwrap(),
        "third-Password-3"
    ));
}

#[tokio::test]
async fn a_missing_password_writes_nothing_and_says_why_until_it_is_created() {
    let h = harness().await;
    h.create("shop", all_outputs()).await;
    let cr = h.reconcile("shop").await;
    let (status, reason, message) = condition(&cr, "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "KeystorePasswordNotFound")
    );
    assert!(
        message.contains("keystore-password") && message.contains("does not exist"),
        "{message}"
    );
    assert_eq!(condition(&cr, "Ready").0, "False");
    assert!(h.secret("shop-tls").await.is_none(), "nothing half-written");
    assert_eq!(
        h.downloads(),
        0,
        "Tencent is not asked for what cannot be written"
    );
    // Retried on the credentials schedule, not in a loop.
    let again = h.reconcile("shop").await;
    assert_eq!(again.status.as_ref().unwrap().failures, 1);
    assert_eq!(h.downloads(), 0);
    assert_eq!(h.events("KeystorePasswordNotFound").len(), 1);

    // The password appears (its watch triggers a reconcile): written at once, before the retry time.
    h.put_secret("keystore-password", json!({"password": PASSWORD}))
        .await;
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Synced").0, "True");
    assert_eq!(condition(&cr, "Ready").0, "True");
    let secret = h.secret("shop-tls").await.expect("written");
    assert!(opens_with(&secret, PASSWORD));

    // The password Secret goes away: the Secret stays as it is, still Ready, and Synced says why.
    h.secrets()
        .delete("keystore-password", &DeleteParams::default())
        .await
        .unwrap();
    let writes = h.secret_writes();
    let cr = h.reconcile("shop").await;
    assert_eq!(condition(&cr, "Synced").1, "KeystorePasswordNotFound");
    assert_eq!(condition(&cr, "Ready").0, "True");
    assert_eq!(h.secret_writes(), writes);

    // No password in the status or events.
    let status = serde_json::to_string(&cr.status).unwrap();
    let events = serde_json::to_string(&h.events("KeystorePasswordNotFound")).unwrap();
    assert!(!status.contains(PASSWORD) && !events.contains(PASSWORD));
}

#[tokio::test]
async fn turning_outputs_off_removes_their_keys() {
    let h = harness().await;
    h.put_secret("keystore-password", json!({"password": PASSWORD}))
        .await;
    h.create("shop", all_outputs()).await;
    h.reconcile("shop").await;
    h.crs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keystores": null, "additionalOutputFormats": null}})),
        )
        .await
        .unwrap();
    h.reconcile("shop").await;
    let secret = h.secret("shop-tls").await.unwrap();
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "qcloud_cert_id", "tls.crt", "tls.key"]);
    assert!(
        !secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("tencentcert.io/keystores-digest")
    );
}

#[tokio::test]
async fn a_new_certificate_or_new_options_change_the_secret_exactly_once() {
    let h = harness().await;
    h.put_secret("keystore-password", json!({"password": PASSWORD}))
        .await;
    h.create("shop", all_outputs()).await;
    h.reconcile("shop").await;
    let before = h.secret("shop-tls").await.unwrap();

    // The certificate is replaced behind its id (a re-issue): the daily full download brings it, and the
    // Secret — chain, key and every output — changes in one write.
    let spec: tencent_sim::CertificateSpec = "aBcD1234:domain=shop.example.com,with-root"
        .parse()
        .unwrap();
    let mut built = tencent_sim::catalog::build(&[spec], None).unwrap();
    h.sim.state().put_certificate(built.remove(0));
    let writes = h.secret_writes();
    h.patch_status(
        "shop",
        json!({"nextSyncTime": "2000-01-01T00:00:00Z", "lastDownloadTime": "2000-01-01T00:00:00Z"}),
    )
    .await;
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.secret_writes(), writes + 1);
    let renewed = h.secret("shop-tls").await.unwrap();
    assert_ne!(data(&renewed, "tls.crt"), data(&before, "tls.crt"));
    assert_ne!(
        data(&renewed, "keystore.p12"),
        data(&before, "keystore.p12")
    );
    assert_ne!(
        data(&renewed, "tls-combined.pem"),
        data(&before, "tls-combined.pem")
    );
    assert!(opens_with(&renewed, PASSWORD));

    // New options (the PKCS#12 profile): one write, then nothing.
    let mut spec = all_outputs();
    spec["keystores"]["pkcs12"]["profile"] = json!("LegacyDES");
    h.crs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
    let writes = h.secret_writes();
    h.reconcile("shop").await;
    h.reconcile("shop").await;
    assert_eq!(h.secret_writes(), writes + 1);
    let legacy = h.secret("shop-tls").await.unwrap();
    assert_eq!(data(&legacy, "tls.crt"), data(&renewed, "tls.crt"));
    assert_ne!(
        data(&legacy, "keystore.p12"),
        data(&renewed, "keystore.p12")
    );
    assert!(opens_with(&legacy, PASSWORD));
}
