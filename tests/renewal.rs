//! Applying for the renewal of free certificates (issue 27), in process: the reconcile against the fake
//! API server and the Tencent API simulator's `ApplyCertificate` and validation life cycle. The
//! namespaced kind is reconciled step by step (each call is one reconcile, as the controller makes
//! them); the cluster kind runs its real controller.

use std::sync::Arc;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::cluster::crd::ClusterTencentCertificate;
use tencent_cert_operator::controller::reconcile::reconcile;
use tencent_cert_operator::controller::{
    Context, DefaultCredentials, NamespaceAllowList, SecretRef,
};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_cert_operator::renew::{RenewalConfig, RenewalStatus};
use tencent_sim::apply::ApplySettings;
use tencent_sim::{self as sim, SimConfig, SimHandle};
use tencent_ssl::renewal::order::ClusterSwitch;
use tencent_ssl::{self as tencent, ClientConfig};

const NS: &str = "web";
const SECRET_ID: &str = "AKIDrenewalTEST0001";
const SECRET_KEY: &str = "renewal-test-secret-key";
const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    api: FakeApiServer,
    sim: SimHandle,
    ctx: Arc<Context>,
}

fn context(api: &FakeApiServer, sim: &SimHandle, switch: ClusterSwitch) -> Arc<Context> {
    let tencent = tencent::Client::new(ClientConfig {
        endpoint: sim.endpoint(),
        download_cache_ttl: Duration::ZERO,
        lookup_cache_ttl: Duration::ZERO,
        allow_insecure_endpoint: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let defaults = DefaultCredentials {
        secret: Some(SecretRef {
            namespace: NS.into(),
            name: "operator-default".into(),
        }),
        namespaces: NamespaceAllowList::parse(NS),
        ..DefaultCredentials::default()
    };
    Arc::new(
        Context::new(api.client(), tencent, defaults)
            .with_bundle_cache(Duration::ZERO, 8 << 20)
            .with_renewal(RenewalConfig {
                switch,
                poll_interval: Duration::from_millis(300),
            }),
    )
}

async fn harness(switch: ClusterSwitch) -> Harness {
    let api = FakeApiServer::builder()
        .status_subresource("tencentcert.io", "tencentcertificates")
        .status_subresource("tencentcert.io", "clustertencentcertificates")
        .start()
        .await;
    let sim = sim::start_local(
        SimConfig::single_account(
            SECRET_ID,
            SECRET_KEY,
            &[
                // Free (package 83, the simulator's default), ending in 20 days.
                "free0001:domain=shop.example.com,valid-days=20",
                "free0002:domain=api.example.com,valid-days=20",
                "free0003:domain=blog.example.com,valid-days=20",
                "paid0001:domain=pay.example.com,valid-days=20,package=2",
                // Free, ending in 80 days: before the window.
                "free0009:domain=far.example.com,valid-days=80",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    sim.state().set_apply_settings(ApplySettings {
        dns_auto_delay_ms: 300,
        ..ApplySettings::default()
    });
    let ctx = context(&api, &sim, switch);
    let h = Harness { api, sim, ctx };
    for name in ["tencent", "operator-default"] {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
        }))
        .unwrap();
        h.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    h
}

impl Harness {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.api.client(), NS)
    }

    fn crs(&self) -> Api<TencentCertificate> {
        Api::namespaced(self.api.client(), NS)
    }

    async fn create(&self, name: &str, spec: Value) {
        let mut spec = spec;
        if spec.get("credentialsRef").is_none() {
            spec["credentialsRef"] = json!({"name": "tencent"});
        }
        if spec["credentialsRef"].is_null() {
            spec.as_object_mut().unwrap().remove("credentialsRef");
        }
        let mut cr = TencentCertificate::new(name, serde_json::from_value(spec).unwrap());
        cr.metadata.namespace = Some(NS.into());
        self.crs()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    async fn reconcile_with(&self, ctx: &Arc<Context>, name: &str) -> TencentCertificate {
        let cr = self.crs().get(name).await.unwrap();
        reconcile(Arc::new(cr), ctx.clone()).await.unwrap();
        self.crs().get(name).await.unwrap()
    }

    async fn reconcile(&self, name: &str) -> TencentCertificate {
        self.reconcile_with(&self.ctx, name).await
    }

    /// Reconciles until `done` holds (each pass one reconcile, as the poll would bring them).
    async fn reconcile_until(
        &self,
        name: &str,
        done: impl Fn(&TencentCertificate) -> bool,
    ) -> TencentCertificate {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let cr = self.reconcile(name).await;
            if done(&cr) {
                return cr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {:?}",
                cr.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn applications(&self) -> u64 {
        self.sim.stats().action_total("ApplyCertificate")
    }

    fn secret_writes(&self) -> u64 {
        ["PATCH", "POST", "PUT", "DELETE"]
            .iter()
            .map(|verb| self.api.request_count(verb, "secrets"))
            .sum()
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        let mut events = self.api.objects("events.k8s.io", "v1", "events", Some(NS));
        events.extend(self.api.objects("", "v1", "events", Some(NS)));
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    async fn served(&self, name: &str) -> String {
        self.secrets()
            .get(name)
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap()["tencentcert.io/certificate-id"]
            .clone()
    }
}

fn renewal(cr: &TencentCertificate) -> RenewalStatus {
    cr.status
        .as_ref()
        .and_then(|s| s.renewal.clone())
        .unwrap_or_else(|| panic!("no status.renewal: {:?}", cr.status))
}

fn phase(cr: &TencentCertificate) -> String {
    cr.status
        .as_ref()
        .and_then(|s| s.renewal.as_ref())
        .map(|r| r.phase.clone())
        .unwrap_or_default()
}

fn free(validation: &str, certificate: &str) -> Value {
    json!({
        "certificateId": certificate,
        "renewal": {"apply": "Free", "daysBefore": 30, "validation": validation},
    })
}

#[tokio::test]
async fn a_free_certificate_in_its_window_is_applied_for_once_issued_and_served() {
    let h = harness(ClusterSwitch::default()).await;
    h.create("shop", free("DNS_AUTO", "free0001")).await;
    let first = h.reconcile("shop").await;
    assert_eq!(h.applications(), 1);
    let applied = renewal(&first);
    assert_eq!(applied.phase, "Applied", "{applied:?}");
    assert_eq!(applied.old_certificate_id, "free0001");
    let order = applied.order_id.clone().unwrap();
    assert_eq!(h.served("shop").await, "free0001");
    assert_eq!(h.events("RenewalApplied").len(), 1);
    let writes = h.secret_writes();
    let done = h
        .reconcile_until("shop", |cr| {
            cr.status.as_ref().and_then(|s| s.certificate_id.as_deref()) == Some(order.as_str())
        })
        .await;
    assert_eq!(renewal(&done).phase, "Issued");
    assert_eq!(h.served("shop").await, order);
    assert_eq!(h.secret_writes() - writes, 1, "one write for the renewal");
    // Quiet afterwards: no application, write or event more.
    for _ in 0..3 {
        h.reconcile("shop").await;
    }
    assert_eq!(h.applications(), 1);
    assert_eq!(h.secret_writes() - writes, 1);
    assert_eq!(h.events("Renewed").len(), 1);
    assert_eq!(h.events("RenewalIssued").len(), 1);
    assert_eq!(h.events("RenewalApplied").len(), 1);
    // Nothing secret in what the renewal tells.
    let mut told = serde_json::to_string(&done.status).unwrap();
    told.push_str(
        &serde_json::to_string(&h.api.objects("events.k8s.io", "v1", "events", Some(NS))).unwrap(),
    );
    told.push_str(&serde_json::to_string(&h.api.objects("", "v1", "events", Some(NS))).unwrap());
    assert!(
        !told.contains(SECRET_KEY) && !told.contains("PRIVATE KEY"),
        "{told}"
    );
}

#[tokio::test]
async fn a_restart_between_the_application_and_the_issue_does_not_apply_again() {
    let h = harness(ClusterSwitch::default()).await;
    h.sim.state().set_apply_settings(ApplySettings {
        dns_auto_delay_ms: 2_000,
        ..ApplySettings::default()
    });
    h.create("shop", free("DNS_AUTO", "free0001")).await;
    h.reconcile("shop").await;
    assert_eq!(h.applications(), 1);
    // A new process: nothing in memory, only what status and Tencent say.
    let restarted = context(&h.api, &h.sim, ClusterSwitch::default());
    let order = renewal(&h.reconcile_with(&restarted, "shop").await)
        .order_id
        .clone()
        .unwrap();
    // And a replica whose status write was lost: it finds the order through Tencent's link.
    h.crs()
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"renewal": null}})),
        )
        .await
        .unwrap();
    let another = context(&h.api, &h.sim, ClusterSwitch::default());
    let adopted = renewal(&h.reconcile_with(&another, "shop").await);
    assert_eq!(adopted.order_id.as_deref(), Some(order.as_str()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.served("shop").await != order {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.reconcile_with(&another, "shop").await;
    }
    assert_eq!(h.applications(), 1);
    assert_eq!(h.events("Renewed").len(), 1);
}

#[tokio::test]
async fn paid_certificates_renewal_off_and_before_the_window_apply_for_nothing() {
    let h = harness(ClusterSwitch::default()).await;
    h.create("paid", free("DNS_AUTO", "paid0001")).await;
    h.create("off", json!({"certificateId": "free0002"})).await;
    h.create(
        "never",
        json!({"certificateId": "free0003", "renewal": {"apply": "Never"}}),
    )
    .await;
    h.create("far", free("DNS_AUTO", "free0009")).await;
    for _ in 0..3 {
        for name in ["paid", "off", "never", "far"] {
            h.reconcile(name).await;
        }
    }
    assert_eq!(h.applications(), 0);
    let paid = renewal(&h.reconcile("paid").await);
    assert_eq!(paid.phase, "NotApplicable");
    assert!(paid.message.contains("not a free one"), "{}", paid.message);
    assert!(h.reconcile("off").await.status.unwrap().renewal.is_none());
    let far = renewal(&h.reconcile("far").await);
    assert_eq!(far.phase, "Scheduled", "{far:?}");
    assert_eq!(h.events("RenewalNotApplicable").len(), 1);
}

#[tokio::test]
async fn a_dns_order_shows_the_record_until_the_simulator_is_told_it_exists() {
    let h = harness(ClusterSwitch::default()).await;
    h.create("shop", free("DNS", "free0001")).await;
    h.reconcile("shop").await;
    let waiting = h
        .reconcile_until("shop", |cr| phase(cr) == "AwaitingValidation")
        .await;
    let status = renewal(&waiting);
    let order = status.order_id.clone().unwrap();
    let sim_order = h
        .sim
        .state()
        .orders()
        .into_iter()
        .find(|o| o.certificate_id == order)
        .unwrap();
    assert!(
        status.message.contains(&format!(
            "create the DNS record {} {} with the value {:?}",
            sim_order.record_type, sim_order.record_key, sim_order.record_value
        )),
        "{}",
        status.message
    );
    let told = h.events("RenewalAwaitingValidation");
    assert_eq!(told.len(), 1);
    assert!(
        told[0]["note"]
            .as_str()
            .or(told[0]["message"].as_str())
            .unwrap()
            .contains(&sim_order.record_value)
    );
    // Still waiting, however often it is looked at.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(phase(&h.reconcile("shop").await), "AwaitingValidation");
    }
    assert_eq!(h.served("shop").await, "free0001");
    h.sim.state().validate_order(&order).unwrap();
    h.reconcile_until("shop", |cr| {
        cr.status.as_ref().and_then(|s| s.certificate_id.as_deref()) == Some(order.as_str())
    })
    .await;
    assert_eq!(h.applications(), 1);
    assert_eq!(h.events("RenewalAwaitingValidation").len(), 1);
    assert_eq!(h.events("Renewed").len(), 1);
}

#[tokio::test]
async fn a_refusal_is_reported_with_its_reason_and_not_retried() {
    let h = harness(ClusterSwitch::default()).await;
    h.sim.state().set_apply_settings(ApplySettings {
        dnspod_domains: Some(vec!["elsewhere.test".into()]),
        ..ApplySettings::default()
    });
    h.create("shop", free("DNS_AUTO", "free0001")).await;
    let refused = renewal(&h.reconcile("shop").await);
    assert_eq!(refused.phase, "Refused", "{refused:?}");
    assert_eq!(
        refused.code.as_deref(),
        Some("FailedOperation.InvalidParam")
    );
    assert!(
        refused.message.contains("FailedOperation.InvalidParam"),
        "{}",
        refused.message
    );
    for _ in 0..5 {
        h.reconcile("shop").await;
    }
    assert_eq!(h.applications(), 1, "a refusal is not retried");
    assert_eq!(h.events("RenewalRefused").len(), 1);
    // A spec change is a new decision: the application goes again (and is refused again).
    h.crs()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewal": {"daysBefore": 29}}})),
        )
        .await
        .unwrap();
    h.reconcile("shop").await;
    assert_eq!(h.applications(), 2);
}

#[tokio::test]
async fn the_cluster_switch_forbids_or_keeps_default_credentials_out() {
    let h = harness(ClusterSwitch::default()).await;
    // own-credentials (the default): the operator's default credentials never apply.
    h.create(
        "shop",
        json!({"certificateId": "free0001", "credentialsRef": null,
               "renewal": {"apply": "Free"}}),
    )
    .await;
    let status = renewal(&h.reconcile("shop").await);
    assert_eq!(status.phase, "NotApplicable");
    assert!(
        status.message.contains("default credentials"),
        "{}",
        status.message
    );
    assert_eq!(h.applications(), 0);
    // forbid: not even with credentials of its own.
    let forbidding = context(&h.api, &h.sim, ClusterSwitch::Forbid);
    h.create("api", free("DNS_AUTO", "free0002")).await;
    let status = renewal(&h.reconcile_with(&forbidding, "api").await);
    assert!(
        status.message.contains("does not allow"),
        "{}",
        status.message
    );
    assert_eq!(h.applications(), 0);
    // allow: the default credentials may.
    let allowing = context(&h.api, &h.sim, ClusterSwitch::Allow);
    let status = renewal(&h.reconcile_with(&allowing, "shop").await);
    assert_eq!(status.phase, "Applied", "{status:?}");
    assert_eq!(h.applications(), 1);
}

#[tokio::test]
async fn a_cluster_certificate_is_renewed_once_and_told_renewed_once() {
    let h = harness(ClusterSwitch::default()).await;
    let client = h.api.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &ClusterTencentCertificate::crd())
        .await
        .unwrap();
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cr = ClusterTencentCertificate::new(
        "shop",
        serde_json::from_value(json!({
            "certificateId": "free0001",
            "secretName": "shop-tls",
            "namespaces": [NS],
            "credentialsRef": {"namespace": NS, "name": "tencent"},
            "renewal": {"apply": "Free", "validation": "DNS_AUTO"},
        }))
        .unwrap(),
    );
    let crs: Api<ClusterTencentCertificate> = Api::all(client.clone());
    crs.create(&PostParams::default(), &cr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tencent_cert_operator::cluster::run(
        h.ctx.clone(),
        2,
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    let order = loop {
        let got = crs.get("shop").await.unwrap();
        let status = got.status.unwrap_or_default();
        if let Some(renewal) = status.renewal.as_ref().filter(|r| r.phase == "Issued")
            && status.certificate_id == renewal.order_id
        {
            break renewal.order_id.clone().unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let secret = h.secrets().get("shop-tls").await.unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["tencentcert.io/certificate-id"],
        order
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.applications(), 1);
    let events: Vec<Value> = h
        .api
        .objects("events.k8s.io", "v1", "events", None)
        .into_iter()
        .chain(h.api.objects("", "v1", "events", None))
        .filter(|e| e["reason"] == "Renewed")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    drop(stop);
    task.await.unwrap();
}
