//! Faults on a real API server: each test skips with a message when no cluster answers (CI), and the
//! outage test also needs `KUBE_LOCAL` (the kube-local script) since it stops and starts the server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_cert_operator::sim::{self, Account, SimConfig};

use super::{
    REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
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
async fn e2e_real_api_server_outage() {
    const TEST: &str = "e2e_real_api_server_outage";
    if std::env::var_os("KUBE_LOCAL").is_none() {
        eprintln!(
            "SKIPPED {TEST}: set KUBE_LOCAL to the kube-local script (plus KUBE_LOCAL_DIR/KUBE_LOCAL_PORT of a \
             disposable instance) to let this test stop and start the API server."
        );
        return;
    }
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let _alone = REAL_SERVER.write().await;
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
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", &namespace, SECRET_KEY)),
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
async fn e2e_real_credentials_rotation() {
    const TEST: &str = "e2e_real_credentials_rotation";
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let _shared = REAL_SERVER.read().await;
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
    // Further attempts: the old key stays unused.
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
            within(Duration::from_secs(30), || async { used(NEW_ID) > before })
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
async fn e2e_real_namespace_deletion() {
    const TEST: &str = "e2e_real_namespace_deletion";
    const RESOURCES: usize = 40;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let _shared = REAL_SERVER.read().await;
    let sim = simulator().await;
    let namespace = create_namespace(&cluster, "doomed").await;
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
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", &namespace, SECRET_KEY)),
        )
        .await
        .unwrap();
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
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
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
    for line in warnings.iter().take(10) {
        eprintln!("  {line}");
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
