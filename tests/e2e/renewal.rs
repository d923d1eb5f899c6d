//! Applying for the renewal of free certificates (issue 27) on a real API server, with the real binary:
//! one application per certificate (also across a SIGKILL between the application and the issue), the
//! issued renewal served with one Secret write and one `Renewed` event, nothing for a paid certificate or
//! with renewal off, a DNS order showing its record until the simulator is told it exists, and a refusal
//! reported with its reason and not retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::apply::ApplySettings;
use tencent_sim::{self as sim, SimConfig};

use super::{
    REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, free_port, real_cluster, start_operator,
};

const WAIT: Duration = Duration::from_secs(90);

async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {WAIT:?} waiting for: {what}");
}

fn renewal_of(cr: &TencentCertificate) -> Option<tencent_cert_operator::renew::RenewalStatus> {
    cr.status.as_ref()?.renewal.clone()
}

fn served_id(cr: &TencentCertificate) -> Option<String> {
    cr.status.as_ref()?.certificate_id.clone()
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_renewal_applications() {
    const TEST: &str = "e2e_real_renewal_applications";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let sim = sim::start_local(
        SimConfig::single_account(
            super::SECRET_ID,
            SECRET_KEY,
            &[
                "e2eFree1:domain=shop.renew.e2e.test,valid-days=20",
                "e2eFree2:domain=dns.renew.e2e.test,valid-days=20",
                "e2eFree3:domain=shop.elsewhere.test,valid-days=20",
                "e2eFree4:domain=off.renew.e2e.test,valid-days=20",
                "e2ePaid1:domain=paid.renew.e2e.test,valid-days=20,package=2",
            ],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    // DNS_AUTO issues 6 s after the application (time for the SIGKILL); only e2e.test is on DNSPod.
    sim.state().set_apply_settings(ApplySettings {
        dns_auto_delay_ms: 6_000,
        dnspod_domains: Some(vec!["e2e.test".into()]),
        ..ApplySettings::default()
    });
    let namespace = create_namespace(&cluster, "renewal").await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &namespace, SECRET_KEY),
        )
        .await
        .unwrap();
    // Every distinct resourceVersion of the shop Secret once it is complete: one per write.
    let versions: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Default::default();
    let recorder = {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event as WatchEvent};
        let versions = versions.clone();
        let stream = watcher::watcher(secrets.clone(), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(WatchEvent::Apply(s) | WatchEvent::InitApply(s)) = event
                    && s.metadata.owner_references.is_some()
                {
                    versions
                        .lock()
                        .unwrap()
                        .entry(s.metadata.name.clone().unwrap_or_default())
                        .or_default()
                        .insert(s.metadata.resource_version.clone().unwrap_or_default());
                }
            }
        })
    };
    let renewal =
        |validation: &str| json!({"apply": "Free", "daysBefore": 30, "validation": validation});
    for (name, spec) in [
        (
            "shop",
            json!({"certificateId": "e2eFree1", "renewal": renewal("DNS_AUTO")}),
        ),
        (
            "dns",
            json!({"certificateId": "e2eFree2", "renewal": renewal("DNS")}),
        ),
        (
            "refused",
            json!({"certificateId": "e2eFree3", "renewal": renewal("DNS_AUTO")}),
        ),
        ("off", json!({"certificateId": "e2eFree4"})),
        (
            "paid",
            json!({"certificateId": "e2ePaid1", "renewal": renewal("DNS_AUTO")}),
        ),
    ] {
        let mut spec = spec;
        spec["credentialsRef"] = json!({"name": "tencent"});
        crs.create(&PostParams::default(), &certificate(name, &namespace, spec))
            .await
            .unwrap();
    }
    let args = [
        "--namespace",
        namespace.as_str(),
        "--renewal-poll-interval",
        "1s",
    ];
    let (mut first, first_log) = start_operator(
        &cluster,
        &sim,
        &format!("{namespace}-1"),
        free_port(),
        &args,
    );
    let applied_after = until("shop applied", || async {
        crs.get("shop")
            .await
            .ok()
            .and_then(|cr| renewal_of(&cr))
            .is_some_and(|r| r.phase == "Applied")
    })
    .await;
    let order = renewal_of(&crs.get("shop").await.unwrap())
        .unwrap()
        .order_id
        .clone()
        .unwrap();
    // SIGKILL between the application and the issue.
    first.start_kill().unwrap();
    let _ = first.wait().await;
    let pending = sim
        .state()
        .orders()
        .into_iter()
        .find(|o| o.certificate_id == order)
        .unwrap();
    assert_eq!(
        pending.state, "pending",
        "killed after the issue: nothing was tested"
    );
    eprintln!("shop: applied after {applied_after:?} (order {order}); SIGKILL while it is pending");
    let (mut second, second_log) = start_operator(
        &cluster,
        &sim,
        &format!("{namespace}-2"),
        free_port(),
        &args,
    );
    let served_after = until("shop serves its renewal", || async {
        crs.get("shop")
            .await
            .ok()
            .is_some_and(|cr| served_id(&cr).as_deref() == Some(order.as_str()))
    })
    .await;
    eprintln!("shop: renewal {order} served {served_after:?} after the restart");

    // DNS: the record to create shows until the simulator is told it exists.
    until("dns awaits validation", || async {
        crs.get("dns")
            .await
            .ok()
            .and_then(|cr| renewal_of(&cr))
            .is_some_and(|r| r.phase == "AwaitingValidation")
    })
    .await;
    let dns = renewal_of(&crs.get("dns").await.unwrap()).unwrap();
    let dns_order = dns.order_id.clone().unwrap();
    let record = sim
        .state()
        .orders()
        .into_iter()
        .find(|o| o.certificate_id == dns_order)
        .unwrap();
    assert!(
        dns.message.contains(&format!(
            "create the DNS record {} {} with the value {:?}",
            record.record_type, record.record_key, record.record_value
        )),
        "{}",
        dns.message
    );
    eprintln!("dns: {}", dns.message);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = crs.get("dns").await.unwrap();
    assert_eq!(renewal_of(&still).unwrap().phase, "AwaitingValidation");
    assert_eq!(served_id(&still).as_deref(), Some("e2eFree2"));
    sim.state().validate_order(&dns_order).unwrap();
    let dns_served = until("dns serves its renewal", || async {
        crs.get("dns")
            .await
            .ok()
            .is_some_and(|cr| served_id(&cr).as_deref() == Some(dns_order.as_str()))
    })
    .await;
    eprintln!("dns: renewal {dns_order} served {dns_served:?} after the validation");

    // The refusal: with its reason, once.
    let refused = renewal_of(&crs.get("refused").await.unwrap()).unwrap();
    assert_eq!(refused.phase, "Refused", "{refused:?}");
    assert!(
        refused.message.contains("FailedOperation.InvalidParam"),
        "{}",
        refused.message
    );
    eprintln!("refused: {}", refused.message);
    // Several polls later: still the same applications.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let applications = sim.stats().action_total("ApplyCertificate");
    let orders = sim.state().orders();
    let for_old = |old: &str| {
        orders
            .iter()
            .filter(|o| o.old_certificate_id.as_deref() == Some(old))
            .count()
    };
    eprintln!(
        "ApplyCertificate: {applications} in all; orders for e2eFree1 {}, e2eFree2 {}, e2eFree4 {}, e2ePaid1 {}",
        for_old("e2eFree1"),
        for_old("e2eFree2"),
        for_old("e2eFree4"),
        for_old("e2ePaid1")
    );
    // shop 1, dns 1, refused 1 (refused, no order), off 0, paid 0.
    assert_eq!(applications, 3);
    assert_eq!(for_old("e2eFree1"), 1);
    assert_eq!(for_old("e2eFree2"), 1);
    assert_eq!(for_old("e2eFree4"), 0);
    assert_eq!(for_old("e2ePaid1"), 0);
    let paid = renewal_of(&crs.get("paid").await.unwrap()).unwrap();
    assert_eq!(paid.phase, "NotApplicable");
    assert!(renewal_of(&crs.get("off").await.unwrap()).is_none());

    let listed = events.list(&Default::default()).await.unwrap().items;
    let count = |object: &str, reason: &str| {
        listed
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
            })
            .count()
    };
    eprintln!(
        "events shop: Renewed {}, RenewalApplied {}, RenewalIssued {}; dns: Renewed {}, RenewalAwaitingValidation {}; refused: RenewalRefused {}",
        count("shop", "Renewed"),
        count("shop", "RenewalApplied"),
        count("shop", "RenewalIssued"),
        count("dns", "Renewed"),
        count("dns", "RenewalAwaitingValidation"),
        count("refused", "RenewalRefused")
    );
    assert_eq!(count("shop", "Renewed"), 1);
    assert_eq!(count("dns", "Renewed"), 1);
    assert_eq!(count("dns", "RenewalAwaitingValidation"), 1);
    assert_eq!(count("refused", "RenewalRefused"), 1);
    let writes = versions
        .lock()
        .unwrap()
        .get("shop")
        .map_or(0, BTreeSet::len);
    eprintln!("shop Secret: {writes} complete versions (the first sync, then the renewal)");
    assert_eq!(
        writes, 2,
        "one write for the first sync and one for the renewal"
    );

    second.start_kill().unwrap();
    let _ = second.wait().await;
    recorder.abort();
    assert_log_has_no_secrets(&first_log);
    assert_log_has_no_secrets(&second_log);
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&first_log);
    let _ = std::fs::remove_file(&second_log);
}
