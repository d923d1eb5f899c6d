//! Faults on a real API server: each test skips with a message when no cluster answers (CI), and the
//! outage test also needs `KUBE_LOCAL` (the kube-local script) since it stops and starts the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::controller::reconcile::read_secret_bundle;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, Account, Fault, Latency, SimConfig};

use super::{
    Cluster, REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, free_port, real_cluster, scrape, simulator,
    start_operator, wait_ready,
};

/// Polls `check` every 250 ms until it holds; returns how long that took, or `None` after `limit`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// CPU time (user + system) a process has used so far, from /proc (Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux platform Rust targets.
    Some(Duration::from_millis(ticks * 10))
}

/// The kube-local script (`KUBE_LOCAL`), run with the instance variables of this environment.
fn kube_local(action: &str) {
    let script = std::env::var_os("KUBE_LOCAL").expect("KUBE_LOCAL");
    let out = std::process::Command::new(script)
        .arg(action)
        .output()
        .expect("the kube-local script runs");
    assert!(
        out.status.success(),
        "kube-local {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the API server again if the outage test fails while it is down.
struct RestartOnDrop(bool);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new(std::env::var_os("KUBE_LOCAL").unwrap_or_default())
                .arg("up")
                .output();
        }
    }
}

fn kube_local_apiserver_pid() -> Option<u32> {
    let dir = std::env::var_os("KUBE_LOCAL_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kube-local")))?;
    std::fs::read_to_string(dir.join("run/kube-apiserver.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The API server goes away for 20 s and comes back while the operator runs: the operator neither exits
/// nor spins, `/readyz` says 503 meanwhile, and once the server answers the watches resume within seconds:
/// a Secret deleted right after the restart is re-created and a new resource becomes Ready.
#[tokio::test]
#[ignore = "needs KUBECONFIG and KUBE_LOCAL of a kube-local instance it may stop"]
async fn e2e_real_api_server_outage() {
    const TEST: &str = "e2e_real_api_server_outage";
    assert!(
        std::env::var_os("KUBE_LOCAL").is_some(),
        "{TEST} needs KUBE_LOCAL: the kube-local script (plus KUBE_LOCAL_DIR/KUBE_LOCAL_PORT of a \
         disposable instance), to stop and start the API server"
    );
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    // Every namespaced controller runs (the push controller only when its CRD is installed): none may
    // spin while the API server is away.
    super::push::install_push_crd(&cluster.kubeconfig);
    let namespace = create_namespace(&cluster, "outage").await;
    let sim = simulator().await;
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        &cluster,
        &sim,
        &namespace,
        port,
        &["--namespace", &namespace],
    );
    let (secrets, crs) = credentialed_namespace(&cluster, &namespace).await;
    crs.create(
        &PostParams::default(),
        &certificate(
            "shop",
            &namespace,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let original = secrets.get("shop").await.unwrap().data;
    let pid = operator.id().expect("the operator runs");

    // Down: `kube-local down` stops the API server gracefully, but a terminating kube-apiserver keeps
    // serving its open watches for up to a minute; kill it if it lingers, so that the outage is real.
    let apiserver = kube_local_apiserver_pid();
    let mut restart = RestartOnDrop(true);
    kube_local("down");
    if let Some(apiserver) =
        apiserver.filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &apiserver.to_string()])
            .status();
    }
    let down = Instant::now();
    let cpu_before = cpu_time(pid).unwrap_or_default();
    let mut unready_seen = false;
    while down.elapsed() < Duration::from_secs(20) {
        assert!(
            operator.try_wait().unwrap().is_none(),
            "the operator exited during the outage; log: {}",
            log_path.display()
        );
        if scrape(port, "/readyz").await.map(|r| r.0) == Some(503) {
            unready_seen = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu_before);
    let outage = down.elapsed();
    assert!(
        unready_seen,
        "/readyz kept answering 200 while the API server was away"
    );
    assert!(
        cpu < outage / 4,
        "the operator used {cpu:?} of CPU in a {outage:?} outage: it spins"
    );

    // Up again.
    kube_local("up");
    restart.0 = false;
    let answering = Instant::now();
    secrets
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = within(Duration::from_secs(30), || async {
        secrets
            .get_opt("shop")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.data == original)
    })
    .await;
    let ready_again = within(Duration::from_secs(30), || async {
        scrape(port, "/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    crs.create(
        &PostParams::default(),
        &certificate(
            "after",
            &namespace,
            json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    let new_resource_at = Instant::now();
    wait_ready(&crs, "after", "True", "Ready").await;
    let new_resource = new_resource_at.elapsed();
    eprintln!(
        "outage {outage:?} (operator CPU {cpu:?}); after the server answered: deleted Secret back in \
         {recreated:?}, /readyz 200 in {ready_again:?}; a new resource Ready in {new_resource:?}"
    );
    let recreated =
        recreated.expect("the Secret deleted after the outage is re-created within 30 s");
    assert!(
        recreated < Duration::from_secs(10),
        "the deleted Secret came back only after {recreated:?}"
    );
    assert!(
        ready_again.is_some_and(|t| t < Duration::from_secs(15)),
        "/readyz: {ready_again:?}"
    );
    assert!(new_resource < Duration::from_secs(10), "{new_resource:?}");
    assert!(answering.elapsed() < Duration::from_secs(60));
    assert!(
        operator.try_wait().unwrap().is_none(),
        "the operator exited"
    );
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&log_path);
}

/// The credentials Secret is rotated to a new key pair while the operator runs: the next attempt signs with
/// the new key, without a restart, and the old key is never used again.
#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_credentials_rotation() {
    const TEST: &str = "e2e_real_credentials_rotation";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    const OLD_ID: &str = "AKIDrotateOLD001";
    const NEW_ID: &str = "AKIDrotateNEW002";
    let account = |secret_id: &str, secret_key: &str| Account {
        secret_id: secret_id.into(),
        secret_key: secret_key.into(),
        token: None,
    };
    let sim = sim::start_local(SimConfig {
        accounts: vec![
            account(OLD_ID, "old-rotated-key"),
            account(NEW_ID, "new-rotated-key"),
        ],
        certificates: vec!["e2eShop1:domain=shop.e2e.test".parse().unwrap()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let namespace = create_namespace(&cluster, "rotate").await;
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        &cluster,
        &sim,
        &namespace,
        port,
        &["--namespace", &namespace],
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    let credentials = |secret_id: &str, secret_key: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tencent", "namespace": namespace,
                         "labels": {"tencentcert.io/credentials": "true"}},
            "stringData": {"secretId": secret_id, "secretKey": secret_key},
        }))
        .unwrap()
    };
    let apply = PatchParams::apply("e2e-test").force();
    secrets
        .patch(
            "tencent",
            &apply,
            &Patch::Apply(credentials(OLD_ID, "old-rotated-key")),
        )
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate(
            "shop",
            &namespace,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let used = |id: &str| sim.stats().by_secret_id.get(id).copied().unwrap_or(0);
    assert!(used(OLD_ID) > 0 && used(NEW_ID) == 0);

    // Rotate, then ask for a refresh (the next attempt): it must sign with the new key.
    secrets
        .patch(
            "tencent",
            &apply,
            &Patch::Apply(credentials(NEW_ID, "new-rotated-key")),
        )
        .await
        .unwrap();
    let refresh = |at: &str| {
        Patch::Merge(
            json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": at}}}),
        )
    };
    crs.patch("shop", &PatchParams::default(), &refresh("rotation-1"))
        .await
        .unwrap();
    let switched = within(Duration::from_secs(30), || async { used(NEW_ID) > 0 }).await;
    assert!(
        switched.is_some(),
        "no request signed with the new key after the rotation"
    );
    let old_after_rotation = used(OLD_ID);
    // Further attempts: the old key stays unused. "Refresh now" is honoured once per minute per
    // resource, so each of these waits for the end of the minute after the previous one.
    for round in 2..=3 {
        let before = used(NEW_ID);
        crs.patch(
            "shop",
            &PatchParams::default(),
            &refresh(&format!("rotation-{round}")),
        )
        .await
        .unwrap();
        assert!(
            within(Duration::from_secs(90), || async { used(NEW_ID) > before })
                .await
                .is_some(),
            "refresh {round} made no request"
        );
    }
    wait_ready(&crs, "shop", "True", "Ready").await;
    let stats = sim.stats();
    eprintln!(
        "rotation: new key used after {switched:?}; requests by SecretId: {:?}",
        stats.by_secret_id
    );
    assert_eq!(
        used(OLD_ID),
        old_after_rotation,
        "the old key was used after the rotation"
    );
    assert!(operator.try_wait().unwrap().is_none());
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("old-rotated-key") && !log.contains("new-rotated-key"));
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&log_path);
}

/// Series of one namespace in the operator's /metrics.
async fn series_of(port: u16, namespace: &str) -> usize {
    let needle = format!("namespace=\"{namespace}\"");
    scrape(port, "/metrics")
        .await
        .map(|(_, m)| m.lines().filter(|l| l.contains(&needle)).count())
        .unwrap_or(usize::MAX)
}

/// A metric value (sum over the series whose line starts with `prefix`).
async fn metric_sum(port: u16, prefix: &str) -> f64 {
    scrape(port, "/metrics")
        .await
        .map(|(_, m)| {
            m.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or_default()
}

/// A namespace holding many resources is deleted: no error loop, no event storm, and the metric series of
/// its resources disappear.
#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_namespace_deletion() {
    const TEST: &str = "e2e_real_namespace_deletion";
    const RESOURCES: usize = 40;
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let sim = simulator().await;
    let namespace = create_namespace(&cluster, "doomed").await;
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        &cluster,
        &sim,
        &namespace,
        port,
        &["--namespace", &namespace, "--log-format", "json"],
    );
    let (_, crs) = credentialed_namespace(&cluster, &namespace).await;
    for index in 0..RESOURCES {
        let id = if index % 2 == 0 {
            "e2eShop1"
        } else {
            "e2eNew01"
        };
        crs.create(
            &PostParams::default(),
            &certificate(
                &format!("cert-{index:03}"),
                &namespace,
                json!({"certificateId": id, "credentialsRef": {"name": "tencent"}}),
            ),
        )
        .await
        .unwrap();
    }
    let all_ready = within(Duration::from_secs(90), || async {
        crs.list(&Default::default()).await.is_ok_and(|list| {
            list.items.len() == RESOURCES
                && list
                    .items
                    .iter()
                    .all(|cr| super::ready(cr).is_some_and(|(status, _)| status == "True"))
        })
    })
    .await;
    assert!(
        all_ready.is_some(),
        "not all {RESOURCES} resources became Ready"
    );
    assert!(series_of(port, &namespace).await >= 2 * RESOURCES);
    let errors_before = metric_sum(port, "tencentcert_reconciles_total{result=\"error\"").await;
    let log_before = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .count();

    delete_namespace(&cluster, &namespace).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    let gone = within(Duration::from_secs(120), || async {
        namespaces
            .get_opt(&namespace)
            .await
            .is_ok_and(|n| n.is_none())
    })
    .await;
    assert!(
        gone.is_some(),
        "namespace {namespace} was not deleted within 120 s"
    );
    let series_gone = within(Duration::from_secs(15), || async {
        series_of(port, &namespace).await == 0
    })
    .await;
    // Let any error loop show itself.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let errors =
        metric_sum(port, "tencentcert_reconciles_total{result=\"error\"").await - errors_before;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let after: Vec<&str> = log.lines().skip(log_before).collect();
    let warnings: Vec<&&str> = after
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|entry| entry["level"] == "WARN" || entry["level"] == "ERROR")
        })
        .collect();
    let event_writes = after
        .iter()
        .filter(|l| l.contains("/events") && l.contains("requesting"))
        .count();
    eprintln!(
        "namespace of {RESOURCES} resources deleted in {gone:?}; series gone after {series_gone:?}; \
         {errors} failed reconciles, {} warnings, {event_writes} event writes since",
        warnings.len()
    );
    let mut by_message = std::collections::BTreeMap::<String, usize>::new();
    for line in &warnings {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let message = format!(
            "{} ({})",
            entry["message"].as_str().unwrap_or_default(),
            entry["error"].as_str().unwrap_or_default()
        );
        *by_message.entry(message).or_default() += 1;
    }
    for (message, count) in by_message.iter().take(10) {
        eprintln!(
            "  {count} × {}",
            message.chars().take(300).collect::<String>()
        );
    }
    assert!(
        series_gone.is_some(),
        "series of the deleted namespace remain in /metrics"
    );
    assert!(
        errors <= RESOURCES as f64,
        "{errors} failed reconciles: an error loop"
    );
    assert!(
        warnings.len() <= RESOURCES,
        "{} warnings after the deletion",
        warnings.len()
    );
    assert!(
        event_writes <= RESOURCES,
        "{event_writes} event writes: an event storm"
    );
    // The last 10 s were quiet.
    assert!(operator.try_wait().unwrap().is_none());
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let _ = std::fs::remove_file(&log_path);
}

fn condition(cr: &TencentCertificate, type_: &str) -> Option<(String, String)> {
    let condition = cr.status.as_ref()?.condition(type_)?;
    Some((condition.status.clone(), condition.reason.clone()))
}

/// Tencent misbehaves during a wave of refreshes — `FailedOperation.NetworkError` on a share of requests,
/// HTTP 503, answers slower than the client's 10 s timeout, `RequestLimitExceeded` bursts: resources whose
/// Secret is still valid stay Ready=True with Synced=False and the reason, retries back off (bounded request
/// counts, failures in status and metrics), and everything recovers once the faults stop.
#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_tencent_faults_during_a_wave() {
    const TEST: &str = "e2e_real_tencent_faults_during_a_wave";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    // Certificate id → the fault it gets.
    let faults = [
        ("e2eNetw01", "NetworkError share"),
        ("e2eHttp01", "HTTP 503"),
        ("e2eSlow01", "slower than the timeout"),
        ("e2eRate01", "RequestLimitExceeded burst"),
    ];
    let specs: Vec<String> = faults
        .iter()
        .map(|(id, _)| format!("{id}:domain={}.e2e.test", id.to_lowercase()))
        .collect();
    let sim = sim::start_local(
        SimConfig::single_account(
            super::SECRET_ID,
            SECRET_KEY,
            &specs.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let namespace = create_namespace(&cluster, "tencent-faults").await;
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        &cluster,
        &sim,
        &namespace,
        port,
        &["--namespace", &namespace],
    );
    let (_, crs) = credentialed_namespace(&cluster, &namespace).await;
    let mut names = Vec::new();
    for (id, _) in faults {
        for copy in 0..2 {
            let name = format!("{}-{copy}", id.to_lowercase());
            crs.create(
                &PostParams::default(),
                &certificate(
                    &name,
                    &namespace,
                    json!({"certificateId": id, "credentialsRef": {"name": "tencent"}}),
                ),
            )
            .await
            .unwrap();
            names.push((name, id));
        }
    }
    for (name, _) in &names {
        wait_ready(&crs, name, "True", "Ready").await;
    }

    // Past the client's 10 s download cache, so that the wave really asks Tencent.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let state = sim.state();
    state.add_fault(Fault {
        certificate_id: "e2eNetw01".into(),
        code: "FailedOperation.NetworkError".into(),
        remaining: None,
        probability: 0.7,
    });
    state.add_fault(Fault {
        certificate_id: "e2eHttp01".into(),
        code: "HTTP503".into(),
        remaining: None,
        probability: 1.0,
    });
    state.add_latency(Latency {
        certificate_id: "e2eSlow01".into(),
        millis: 12_000,
    });
    state.add_fault(Fault {
        certificate_id: "e2eRate01".into(),
        code: "RequestLimitExceeded".into(),
        remaining: Some(6),
        probability: 1.0,
    });
    let before = sim.stats();
    // The wave: every resource is asked to refresh now.
    for (name, _) in &names {
        crs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": "wave-1"}}})),
        )
        .await
        .unwrap();
    }
    let wave = Instant::now();
    let mut synced_false: std::collections::BTreeMap<String, String> = Default::default();
    while wave.elapsed() < Duration::from_secs(30) {
        for cr in crs.list(&Default::default()).await.unwrap().items {
            let name = cr.metadata.name.clone().unwrap_or_default();
            assert_eq!(
                condition(&cr, "Ready").map(|c| c.0).as_deref(),
                Some("True"),
                "{name} lost Ready while its Secret is valid: {:#?}",
                cr.status
            );
            if let Some(("False", reason)) = condition(&cr, "Synced")
                .as_ref()
                .map(|(s, r)| (s.as_str(), r.as_str()))
            {
                synced_false.insert(name, reason.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = sim.stats();
    let requests_for = |id: &str| {
        during.by_certificate.get(id).copied().unwrap_or(0)
            - before.by_certificate.get(id).copied().unwrap_or(0)
    };
    let (_, metrics) = scrape(port, "/metrics").await.unwrap();
    eprintln!(
        "during 30 s of faults: Synced=False seen {synced_false:?}; requests per certificate: {}",
        faults
            .iter()
            .map(|(id, _)| format!("{id}={}", requests_for(id)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for name in ["e2ehttp01-0", "e2ehttp01-1", "e2eslow01-0", "e2eslow01-1"] {
        assert_eq!(
            synced_false.get(name).map(String::as_str),
            Some("NetworkError"),
            "{name}: Synced=False with reason NetworkError expected"
        );
    }
    // Backoff, not a hot loop: 5 s, 10 s, 20 s … between attempts of each resource.
    assert!(
        (2..=16).contains(&requests_for("e2eHttp01")),
        "{} requests for the HTTP 503 certificate in 30 s",
        requests_for("e2eHttp01")
    );
    assert!(
        requests_for("e2eSlow01") <= 8,
        "{}",
        requests_for("e2eSlow01")
    );
    let failing = crs.get("e2ehttp01-0").await.unwrap();
    assert!(
        failing.status.as_ref().is_some_and(|s| s.failures >= 2),
        "consecutive failures in status: {:?}",
        failing.status.map(|s| s.failures)
    );
    for expected in [
        "code=\"HTTP503\"",
        "reason=\"NetworkError\"",
        "code=\"RequestLimitExceeded\"",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("tencentcert_") && l.contains(expected)),
            "{expected} missing from /metrics"
        );
    }

    // The faults stop: every resource syncs again on its own (its backoff is at most 40 s by now).
    state.clear_faults();
    let recovered = within(Duration::from_secs(75), || async {
        crs.list(&Default::default()).await.is_ok_and(|list| {
            list.items.iter().all(|cr| {
                condition(cr, "Synced").is_some_and(|(s, _)| s == "True")
                    && condition(cr, "Ready").is_some_and(|(s, _)| s == "True")
            })
        })
    })
    .await;
    eprintln!("all recovered {recovered:?} after the faults stopped");
    assert!(
        recovered.is_some(),
        "not every resource recovered after the faults stopped"
    );
    for cr in crs.list(&Default::default()).await.unwrap().items {
        assert_eq!(cr.status.as_ref().map(|s| s.failures), Some(0));
    }
    assert!(operator.try_wait().unwrap().is_none());
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&log_path);
}

/// SIGKILL in the middle of a first sync of 500 resources, then a fresh start: every resource ends Ready,
/// every Secret's key matches its certificate (the one its resource names), and no Secret is written twice
/// (a watch of the test counts each Secret's distinct resourceVersions).
#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_sigkill_during_first_sync_of_500() {
    const TEST: &str = "e2e_real_sigkill_during_first_sync_of_500";
    const RESOURCES: usize = 500;
    const CERTIFICATES: usize = 10;
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let specs: Vec<String> = (0..CERTIFICATES)
        .map(|i| format!("e2eKill{i:02}:domain=kill{i}.e2e.test"))
        .collect();
    let sim = sim::start_local(
        SimConfig::single_account(
            super::SECRET_ID,
            SECRET_KEY,
            &specs.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let namespace = create_namespace(&cluster, "sigkill").await;
    let (secrets, crs) = credentialed_namespace(&cluster, &namespace).await;

    // Every distinct resourceVersion of every managed Secret: one per write.
    let versions: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Default::default();
    let recorder = {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        let versions = versions.clone();
        let stream = watcher::watcher(
            secrets.clone(),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tencent-cert-operator"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(Event::Apply(secret) | Event::InitApply(secret)) = event {
                    // A new Secret is created with what every Secret holds, then completed by an apply
                    // (its owner reference here; see `secret::creation_core`): count complete versions.
                    if secret.metadata.owner_references.is_none() {
                        continue;
                    }
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    let version = secret.metadata.resource_version.clone().unwrap_or_default();
                    versions
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_default()
                        .insert(version);
                }
            }
        })
    };
    let created = Instant::now();
    let creates = (0..RESOURCES).map(|index| {
        let crs = crs.clone();
        let namespace = namespace.clone();
        async move {
            crs.create(
                &PostParams::default(),
                &certificate(
                    &format!("site-{index:03}"),
                    &namespace,
                    json!({"certificateId": format!("e2eKill{:02}", index % CERTIFICATES),
                           "credentialsRef": {"name": "tencent"}}),
                ),
            )
            .await
            .map(|_| ())
        }
    });
    {
        use futures::StreamExt;
        let failed = futures::stream::iter(creates)
            .buffer_unordered(16)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        assert_eq!(failed, 0, "creating the resources failed");
    }
    eprintln!("{RESOURCES} resources created in {:?}", created.elapsed());

    let written = || versions.lock().unwrap().len();
    let (mut first, first_log) = start_operator(
        &cluster,
        &sim,
        &format!("{namespace}-1"),
        free_port(),
        &["--namespace", &namespace],
    );
    let started = Instant::now();
    let midway = within(Duration::from_secs(120), || async {
        written() >= RESOURCES / 5
    })
    .await;
    first.start_kill().unwrap();
    let _ = first.wait().await;
    let at_kill = written();
    eprintln!("SIGKILL after {midway:?} with {at_kill} of {RESOURCES} Secrets written");
    assert!(midway.is_some(), "the first sync did not get going");
    assert!(
        at_kill < RESOURCES,
        "the first sync finished before the kill: nothing was tested"
    );

    let port = free_port();
    let (mut second, second_log) = start_operator(
        &cluster,
        &sim,
        &format!("{namespace}-2"),
        port,
        &["--namespace", &namespace],
    );
    let all_ready = within(Duration::from_secs(240), || async {
        crs.list(&Default::default()).await.is_ok_and(|list| {
            list.items.len() == RESOURCES
                && list
                    .items
                    .iter()
                    .all(|cr| super::ready(cr).is_some_and(|(status, _)| status == "True"))
        })
    })
    .await;
    eprintln!(
        "after the restart, all Ready in {all_ready:?} (first start {:?} ago)",
        started.elapsed()
    );
    assert!(
        all_ready.is_some(),
        "not every resource became Ready after the restart"
    );
    // Let late writes, if any, reach the recorder.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let by_name: BTreeMap<String, TencentCertificate> = crs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cr| (cr.metadata.name.clone().unwrap_or_default(), cr))
        .collect();
    let all_secrets = secrets.list(&Default::default()).await.unwrap().items;
    let mut checked = 0;
    for secret in &all_secrets {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let Some(cr) = by_name.get(&name) else {
            continue;
        };
        let bundle = read_secret_bundle(secret)
            .unwrap_or_else(|| panic!("Secret {name} lacks tls.crt or tls.key"))
            .unwrap_or_else(|e| panic!("Secret {name}: unusable bundle: {e}"));
        let id = cr.spec.certificate_id.clone().unwrap_or_default();
        let index: usize = id.trim_start_matches("e2eKill").parse().unwrap();
        assert!(
            bundle
                .meta
                .dns_names
                .contains(&format!("kill{index}.e2e.test")),
            "Secret {name} holds {:?}, not certificate {id}",
            bundle.meta.dns_names
        );
        checked += 1;
    }
    assert_eq!(
        checked, RESOURCES,
        "Secrets with a matching key and certificate"
    );
    let versions = versions.lock().unwrap().clone();
    let rewritten: Vec<(&String, usize)> = versions
        .iter()
        .map(|(name, v)| (name, v.len()))
        .filter(|(_, n)| *n > 1)
        .collect();
    let (_, metrics) = scrape(port, "/metrics").await.unwrap();
    let second_writes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tencentcert_secret_writes_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    eprintln!(
        "{} Secrets seen by the recorder; written more than once: {rewritten:?}; the restarted operator \
         wrote {second_writes} (at the kill {at_kill} existed)",
        versions.len()
    );
    assert!(
        rewritten.is_empty(),
        "Secrets written more than once: {rewritten:?}"
    );
    assert!(
        second_writes <= (RESOURCES - at_kill) as f64,
        "the restarted operator wrote {second_writes} Secrets, {} were missing",
        RESOURCES - at_kill
    );
    recorder.abort();
    let _ = second.kill().await;
    assert_log_has_no_secrets(&second_log);
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&first_log);
    let _ = std::fs::remove_file(&second_log);
}

/// The outage scenario against the in-process fake API server (CI has no real one): the fake goes away
/// for 8 s — watches cut, connections refused — and comes back with a fresh watch cache (410 for old
/// resourceVersions), as kube-local does. The operator must resume within seconds.
#[tokio::test]
async fn e2e_outage_against_fake_apiserver() {
    let (api, cluster) = super::fake_cluster("outage").await;
    let namespace = "outage";
    let sim = simulator().await;
    let port = free_port();
    let (mut operator, log_path) =
        start_operator(&cluster, &sim, namespace, port, &["--namespace", namespace]);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), namespace);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();
    crs.create(
        &PostParams::default(),
        &certificate(
            "shop",
            namespace,
            json!({"certificateId": "e2eShop1", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let original = secrets.get("shop").await.unwrap().data;

    let outage = api.outage(Duration::from_secs(8));
    let readiness = async {
        let mut unready = false;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(7) {
            unready |= scrape(port, "/readyz").await.map(|r| r.0) == Some(503);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        unready
    };
    let ((), unready_seen) = futures::join!(outage, readiness);
    assert!(
        unready_seen,
        "/readyz kept answering 200 while the API server was away"
    );
    secrets
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = within(Duration::from_secs(30), || async {
        secrets
            .get_opt("shop")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.data == original)
    })
    .await;
    crs.create(
        &PostParams::default(),
        &certificate(
            "after",
            namespace,
            json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    let new_ready = within(Duration::from_secs(30), || async {
        crs.get_opt("after")
            .await
            .ok()
            .flatten()
            .and_then(|cr| super::ready(&cr))
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    let ready_again = within(Duration::from_secs(15), || async {
        scrape(port, "/readyz").await.map(|r| r.0) == Some(200)
    })
    .await;
    eprintln!(
        "fake outage 8 s: deleted Secret back in {recreated:?}, new resource Ready in {new_ready:?}, \
         /readyz 200 in {ready_again:?}"
    );
    assert!(
        recreated.is_some_and(|t| t < Duration::from_secs(10)),
        "{recreated:?}"
    );
    assert!(
        new_ready.is_some_and(|t| t < Duration::from_secs(10)),
        "{new_ready:?}"
    );
    assert!(ready_again.is_some());
    assert!(
        operator.try_wait().unwrap().is_none(),
        "the operator exited"
    );
    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&cluster.kubeconfig);
}

/// The Secret and TencentCertificate APIs of `namespace`, with the credentials Secret `tencent` in place.
async fn credentialed_namespace(
    cluster: &Cluster,
    namespace: &str,
) -> (Api<Secret>, Api<TencentCertificate>) {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();
    (secrets, Api::namespaced(cluster.client.clone(), namespace))
}
