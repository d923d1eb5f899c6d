//! TencentCertificatePush on a real API server with the real operator binary: a cert-manager-shaped TLS
//! Secret published and rotated three times (exactly three more uploads; the bound CLB and CDN fixtures
//! moved each time), an unchanged Secret causing no Tencent call over a refresh, a SIGKILL right after an
//! upload causing no second upload, a failing deploy reported per resource type and retried, an expired
//! pair refused with nothing uploaded. Tencent calls are counted by the simulator.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::push::TencentCertificatePush;
use tencent_sim::pki::{KeyKind, Pki};
use tencent_sim::publish::{ACTION_UPDATE_INSTANCE, ACTION_UPLOAD, IssuedPair, issue_pair};
use tencent_sim::{Binding, DeployFault, Latency, SimHandle};

use super::{
    REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, create_namespace, credentials_secret,
    delete_namespace, free_port, kubectl, real_cluster, scrape, simulator, start_operator,
};

/// A deploy takes two polls 10 s apart; a first retry backs off 30 s.
const PUSH_WAIT: Duration = Duration::from_secs(150);
const FROM: &str = "e2eShop1";

pub(crate) fn install_push_crd(kubeconfig: &std::path::Path) {
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/tencentcertificatepush.yaml"
    );
    for args in [
        vec!["apply", "--server-side", "-f", crd],
        vec![
            "wait",
            "--for=condition=Established",
            "crd/tencentcertificatepushes.tencentcert.io",
            "--timeout=60s",
        ],
    ] {
        let out = kubectl(kubeconfig, &args).expect("kubectl is needed for the push e2e");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn new_pair(pki: &Pki, days: i64) -> IssuedPair {
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
    issue_pair(pki, &["shop.e2e.test"], start, end).unwrap()
}

/// Writes the TLS Secret as cert-manager does: its own field manager, its annotations, no label of ours.
async fn write_tls(secrets: &Api<Secret>, name: &str, pair: &IssuedPair) {
    secrets
        .patch(
            name,
            &PatchParams::apply("cert-manager-certificates-issuing").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "annotations": {
                    "cert-manager.io/certificate-name": name, "cert-manager.io/issuer-name": "letsencrypt"}},
                "stringData": {"tls.crt": pair.chain_pem, "tls.key": pair.key_pem},
            })),
        )
        .await
        .unwrap();
}

fn ready(push: &TencentCertificatePush) -> Option<(String, String)> {
    push.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn published(push: &TencentCertificatePush) -> bool {
    ready(push) == Some(("True".into(), "Published".into()))
}

fn id_of(push: &TencentCertificatePush) -> Option<String> {
    push.status.as_ref()?.certificate_id.clone()
}

async fn wait_push(
    pushes: &Api<TencentCertificatePush>,
    name: &str,
    what: &str,
    check: impl Fn(&TencentCertificatePush) -> bool,
) -> TencentCertificatePush {
    let deadline = tokio::time::Instant::now() + PUSH_WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = pushes.get_opt(name).await.ok().flatten();
        if let Some(push) = &last
            && check(push)
        {
            return push.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out after {PUSH_WAIT:?} waiting for {what}; last status: {:#?}",
        last.and_then(|p| p.status)
    );
}

fn uploads(sim: &SimHandle) -> u64 {
    sim.state().stats().count(ACTION_UPLOAD, "Success")
}

fn bound(sim: &SimHandle, id: &str) -> Vec<String> {
    let mut kinds: Vec<String> = sim
        .state()
        .bindings_of(id)
        .into_iter()
        .map(|b| b.resource_type)
        .collect();
    kinds.sort();
    kinds
}

/// The sum of `tencentcert_reconciles_total` on the operator's /metrics.
async fn reconciles(port: u16) -> u64 {
    let Some((200, text)) = scrape(port, "/metrics").await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("tencentcert_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_push_publish_rotate_crash_fail_expire() {
    const TEST: &str = "e2e_push_publish_rotate_crash_fail_expire";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    install_push_crd(&cluster.kubeconfig);
    let sim = simulator().await;
    for (kind, region, instance) in [
        ("clb", Some("ap-guangzhou"), "lb-e2e-shop"),
        ("cdn", None, "shop.e2e.test"),
    ] {
        sim.state().add_binding(Binding {
            certificate_id: FROM.into(),
            resource_type: kind.into(),
            region: region.map(String::from),
            instance_id: instance.into(),
            domains: vec!["shop.e2e.test".into()],
        });
    }
    let namespace = create_namespace(&cluster, "push").await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &namespace, SECRET_KEY),
        )
        .await
        .unwrap();
    let pki = Pki::generate(KeyKind::EcdsaP256).unwrap();
    let mut pairs = vec![new_pair(&pki, 90)];
    write_tls(&secrets, "shop-tls", &pairs[0]).await;
    let port = free_port();
    let (mut operator, log_path) =
        start_operator(&cluster, &sim, "push", port, &["--namespace", &namespace]);
    let pushes: Api<TencentCertificatePush> = Api::namespaced(cluster.client.clone(), &namespace);
    let push: TencentCertificatePush = serde_json::from_value(json!({
        "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificatePush",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "secretName": "shop-tls", "credentialsRef": {"name": "tencent"}, "refreshInterval": "1m",
            "tkeSecretName": "shop-qcloud",
            "deploy": {"targets": [{"resourceType": "clb", "regions": ["ap-guangzhou"]}, {"resourceType": "cdn"}],
                       "fromCertificateId": FROM},
        },
    }))
    .unwrap();
    pushes.create(&PostParams::default(), &push).await.unwrap();

    // Published: one upload, the CLB and CDN moved off the certificate they used.
    let started = Instant::now();
    let first = wait_push(&pushes, "shop", "published", |p| {
        published(p) && id_of(p).is_some()
    })
    .await;
    let mut current = id_of(&first).unwrap();
    assert_eq!(uploads(&sim), 1);
    assert_eq!(bound(&sim, &current), ["cdn", "clb"]);
    assert!(bound(&sim, FROM).is_empty());
    eprintln!(
        "push e2e: published as {current} in {:.1}s (1 upload, clb+cdn moved off {FROM})",
        started.elapsed().as_secs_f64()
    );
    let tke = secrets.get("shop-qcloud").await.unwrap();
    assert_eq!(
        tke.data.unwrap()["qcloud_cert_id"].0,
        current.as_bytes().to_vec()
    );

    // Rotated three times: a new key pair each time, exactly one more upload each, the fixtures moved.
    for round in 1..=3 {
        let pair = new_pair(&pki, 90);
        let started = Instant::now();
        write_tls(&secrets, "shop-tls", &pair).await;
        pairs.push(pair);
        let previous = current.clone();
        let rotated = wait_push(&pushes, "shop", "rotated", |p| {
            published(p) && id_of(p).is_some_and(|id| id != previous)
        })
        .await;
        current = id_of(&rotated).unwrap();
        assert_eq!(uploads(&sim), 1 + round, "round {round}: uploads");
        assert_eq!(bound(&sim, &current), ["cdn", "clb"], "round {round}");
        assert!(bound(&sim, &previous).is_empty(), "round {round}");
        eprintln!(
            "push e2e: rotation {round}: {previous} -> {current} in {:.1}s, uploads {}, clb+cdn moved",
            started.elapsed().as_secs_f64(),
            uploads(&sim)
        );
    }
    let upload_total = uploads(&sim);
    assert_eq!(upload_total, 4, "1 publish + exactly 3 more uploads");

    // Unchanged: the Secret touched (a label), then a whole refresh interval (1m): no Tencent call.
    sim.state().reset_stats();
    let before = reconciles(port).await;
    secrets
        .patch(
            "shop-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(66)).await;
    let after = reconciles(port).await;
    assert!(
        after >= before + 2,
        "touch + refresh should reconcile: {before} -> {after}"
    );
    assert_eq!(
        sim.state().stats().requests,
        0,
        "an unchanged Secret called Tencent"
    );
    eprintln!(
        "push e2e: unchanged Secret: {} reconciles over a touch and a 1m refresh, 0 Tencent calls",
        after - before
    );

    // SIGKILL right after an upload: the answer is held back 8 s, the operator killed meanwhile.
    sim.state().add_latency(Latency {
        certificate_id: format!("{ACTION_UPLOAD}:after"),
        millis: 8_000,
    });
    let pair = new_pair(&pki, 90);
    write_tls(&secrets, "shop-tls", &pair).await;
    pairs.push(pair);
    let deadline = Instant::now() + PUSH_WAIT;
    while uploads(&sim) == 0 {
        assert!(Instant::now() < deadline, "no upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    operator.kill().await.unwrap();
    let _ = operator.wait().await;
    let killed_with = pushes.get("shop").await.unwrap();
    assert_eq!(
        id_of(&killed_with).as_deref(),
        Some(current.as_str()),
        "the status recorded the upload before the kill"
    );
    sim.state().clear_faults();
    let (_operator, log_path2) = start_operator(
        &cluster,
        &sim,
        "push-restarted",
        port,
        &["--namespace", &namespace],
    );
    let previous = current.clone();
    let recovered = wait_push(&pushes, "shop", "recovered after SIGKILL", |p| {
        published(p) && id_of(p).is_some_and(|id| id != previous)
    })
    .await;
    current = id_of(&recovered).unwrap();
    assert_eq!(
        uploads(&sim),
        1,
        "SIGKILL after the upload caused a second upload"
    );
    assert_eq!(bound(&sim, &current), ["cdn", "clb"]);
    eprintln!(
        "push e2e: SIGKILL right after uploading {current}: restarted operator adopted it by tags, uploads 1 (no second)"
    );

    // A failing deploy: CDN refuses once; reported for cdn (clb fine), retried after its backoff.
    sim.state().reset_stats();
    sim.state().add_deploy_fault(DeployFault {
        resource_type: "cdn".into(),
        region: None,
        remaining: Some(1),
        error_msg: "the CDN domain is offline".into(),
    });
    let pair = new_pair(&pki, 90);
    let started = Instant::now();
    write_tls(&secrets, "shop-tls", &pair).await;
    pairs.push(pair);
    let failing = wait_push(&pushes, "shop", "cdn failure reported", |p| {
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
    let reported = failing.status.clone().unwrap().deploy.unwrap();
    let clb = reported
        .results
        .iter()
        .find(|r| r.resource_type == "clb")
        .unwrap();
    assert_eq!((clb.succeeded, clb.failed), (1, 0));
    let failed_after = started.elapsed();
    let previous = current.clone();
    let retried = wait_push(&pushes, "shop", "retried", |p| {
        published(p) && id_of(p).is_some_and(|id| id != previous)
    })
    .await;
    current = id_of(&retried).unwrap();
    let deploy = retried.status.clone().unwrap().deploy.unwrap();
    assert_eq!(deploy.retries, 1);
    assert_eq!(bound(&sim, &current), ["cdn", "clb"]);
    assert_eq!(uploads(&sim), 1);
    assert_eq!(
        sim.state().stats().count(ACTION_UPDATE_INSTANCE, "Success"),
        1
    );
    eprintln!(
        "push e2e: cdn deploy failed (reported after {:.1}s: clb 1/1, cdn 0/1 \"{}\"), retried once after the backoff, done after {:.1}s",
        failed_after.as_secs_f64(),
        reported
            .results
            .iter()
            .find(|r| r.resource_type == "cdn")
            .and_then(|r| r.message.clone())
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );

    // An expired pair: refused with a reason, nothing uploaded.
    sim.state().reset_stats();
    let expired = new_pair(&pki, -1);
    write_tls(&secrets, "old-tls", &expired).await;
    pairs.push(expired);
    let old: TencentCertificatePush = serde_json::from_value(json!({
        "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificatePush",
        "metadata": {"name": "old", "namespace": namespace},
        "spec": {"secretName": "old-tls", "credentialsRef": {"name": "tencent"}},
    }))
    .unwrap();
    pushes.create(&PostParams::default(), &old).await.unwrap();
    let refused = wait_push(&pushes, "old", "refused as expired", |p| {
        ready(p) == Some(("False".into(), "CertificateExpired".into()))
    })
    .await;
    assert_eq!(uploads(&sim), 0);
    assert_eq!(sim.state().stats().requests, 0);
    eprintln!(
        "push e2e: expired pair refused: {}; 0 Tencent calls",
        refused.status.unwrap().conditions[0].message
    );

    // kubectl get tcpush: the printer columns.
    let out = kubectl(
        &cluster.kubeconfig,
        &["get", "tcpush", "-n", &namespace, "-o", "wide"],
    )
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("push e2e: kubectl get tcpush -o wide:\n{table}");
    assert!(
        table.contains("CERTIFICATE ID") && table.contains("READY") && table.contains("REASON")
    );
    assert!(
        table.contains(&current) && table.contains("CertificateExpired"),
        "{table}"
    );

    // The private keys: in no status, event or log line.
    let statuses =
        serde_json::to_string(&pushes.list(&Default::default()).await.unwrap().items).unwrap();
    let events = kubectl(
        &cluster.kubeconfig,
        &["get", "events", "-n", &namespace, "-o", "json"],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    for log in [&log_path, &log_path2] {
        assert_log_has_no_secrets(log);
    }
    let logs = [&log_path, &log_path2]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    for pair in &pairs {
        for line in pair
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            assert!(!statuses.contains(line), "a key line in a status");
            assert!(!events.contains(line), "a key line in an event");
            assert!(!logs.contains(line), "a key line in the log");
        }
    }
    delete_namespace(&cluster, &namespace).await;
    for log in [log_path, log_path2] {
        let _ = std::fs::remove_file(log);
    }
}
