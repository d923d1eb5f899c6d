//! Fencing on a real API server (issue 21, item 4): two replicas with leader election and a 150-resource
//! backlog; the leader is frozen (SIGSTOP) mid-backlog until the standby has taken over and synced
//! everything, then resumed (SIGCONT). Counted: the writes the deposed replica sent after the takeover,
//! from its own write log (kube's per-request `requesting` debug line, which the fence's refusals never
//! reach) against the Lease's `acquireTime` of the new holder. Skipped without a cluster.
//!
//! `E2E_OPERATOR_BIN` runs another build of the operator (e.g. one of main, for the "before" count).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, SimConfig};

use super::{
    REAL_SERVER, SECRET_ID, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, free_port, leader_of, ready, real_cluster, scrape,
    start_operator,
};

const RESOURCES: usize = 150;
// Renewals start 4 s after the last success and may take 2 s before the term ends: room for a loaded
// machine's API server, whose Lease writes took over 1 s in a full e2e run.
const LEASE_DURATION: &str = "8";
const RENEW_GRACE: &str = "4";

/// Polls `check` every 250 ms until it holds, for at most `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// One write the operator sent, from its JSON log.
#[derive(Debug)]
struct SentWrite {
    at: jiff::Timestamp,
    method: String,
    url: String,
}

/// Every mutating request the operator's Kubernetes client sent, from its JSON debug log.
fn sent_writes(log: &Path) -> Vec<SentWrite> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["message"] == "requesting")
        .filter_map(|entry| {
            let span = &entry["span"];
            let method = span["http.method"].as_str()?.to_string();
            let url = span["http.url"].as_str()?.to_string();
            let at = entry["timestamp"].as_str()?.parse().ok()?;
            matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE").then_some(SentWrite {
                at,
                method,
                url,
            })
        })
        .collect()
}

/// `namespace/name` of a Secret write's URL, if it is one.
fn secret_of(url: &str) -> Option<String> {
    let path = url.split('?').next()?;
    let (before, name) = path.rsplit_once("/secrets/")?;
    let namespace = before.rsplit_once("/namespaces/")?.1;
    Some(format!("{namespace}/{name}"))
}

async fn ready_count(crs: &Api<TencentCertificate>) -> usize {
    crs.list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|cr| ready(cr).is_some_and(|(status, _)| status == "True"))
                .count()
        })
        .unwrap_or(0)
}

async fn managed_secrets(secrets: &Api<Secret>) -> usize {
    // Metadata only: a quick count while the leader writes.
    secrets
        .list_metadata(
            &ListParams::default().labels("app.kubernetes.io/managed-by=tencent-cert-operator"),
        )
        .await
        .map(|list| list.items.len())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_deposed_leader_writes_nothing_after_the_takeover() {
    const TEST: &str = "e2e_deposed_leader_writes_nothing_after_the_takeover";
    // Alone on the server: a cluster-wide operator of another test would reconcile these resources too.
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let namespace = create_namespace(&cluster, "fencing").await;
    let ids: Vec<String> = (0..RESOURCES).map(|i| format!("fnc{i:05}")).collect();
    let specs: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}:domain={id}.fencing.test"))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let sim = sim::start_local(SimConfig::single_account(SECRET_ID, SECRET_KEY, &specs).unwrap())
        .await
        .unwrap();
    let ports = [free_port(), free_port()];
    let flags = [
        "--namespace",
        &namespace,
        "--leader-elect",
        "--leader-election-namespace",
        &namespace,
        "--lease-duration",
        LEASE_DURATION,
        "--lease-renew-grace",
        RENEW_GRACE,
        // A slow Tencent budget: the backlog queues at the rate limiter.
        "--rate-limit",
        "3",
        "--log-format",
        "json",
    ];
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &namespace, SECRET_KEY),
        )
        .await
        .unwrap();
    for id in &ids {
        crs.create(
            &PostParams::default(),
            &certificate(
                id,
                &namespace,
                json!({"certificateId": id, "credentialsRef": {"name": "tencent"}}),
            ),
        )
        .await
        .unwrap();
    }
    // The whole backlog is there when the first leader starts.
    let mut replicas = [
        start_operator(&cluster, &sim, &format!("{namespace}-a"), ports[0], &flags),
        start_operator(&cluster, &sim, &format!("{namespace}-b"), ports[1], &flags),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Some(leader) = leader_of(&ports).await {
            break leader;
        }
        assert!(Instant::now() < deadline, "no replica leads after 60s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let standby = 1 - leader;
    until(
        "the leader has written part of the backlog",
        Duration::from_secs(60),
        || async { managed_secrets(&secrets).await >= 10 },
    )
    .await;

    // Freeze the leader mid-backlog: its queued reconciles stay queued.
    let frozen_pid = replicas[leader].0.id().expect("the leader runs");
    signal(frozen_pid, "-STOP");
    let frozen_with = managed_secrets(&secrets).await;
    let frozen_at = Instant::now();
    until(
        "the standby takes over",
        Duration::from_secs(60),
        || async {
            scrape(ports[standby], "/metrics")
                .await
                .is_some_and(|(_, m)| m.lines().any(|l| l == "tencentcert_leader 1"))
        },
    )
    .await;
    let took_over_after = frozen_at.elapsed();
    let lease = Api::<Lease>::namespaced(cluster.client.clone(), &namespace)
        .get("tencent-cert-operator")
        .await
        .unwrap();
    let lease_spec = lease.spec.unwrap_or_default();
    let takeover = lease_spec
        .acquire_time
        .or(lease_spec.renew_time)
        .map(|t| t.0)
        .expect("the new holder's Lease has a time");
    until(
        "the standby has synced every resource",
        Duration::from_secs(180),
        || async { ready_count(&crs).await == RESOURCES },
    )
    .await;
    let synced_after = frozen_at.elapsed();

    // Resume the deposed leader and give its queued work time to run (or not).
    signal(frozen_pid, "-CONT");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let still_served = managed_secrets(&secrets).await;
    for replica in &mut replicas {
        let _ = replica.0.kill().await;
    }

    let writes = sent_writes(&replicas[leader].1);
    // The count means something only if the log shows the leader's writes before the freeze.
    let early_secret_writes = writes
        .iter()
        .filter(|w| w.at <= takeover && secret_of(&w.url).is_some())
        .count();
    assert!(
        early_secret_writes >= 10,
        "the leader's write log shows {early_secret_writes} Secret writes before the takeover: log {} unreadable?",
        replicas[leader].1.display()
    );
    let late: Vec<&SentWrite> = writes.iter().filter(|w| w.at > takeover).collect();
    let late_secrets: BTreeSet<String> = late.iter().filter_map(|w| secret_of(&w.url)).collect();
    let late_secret_writes = late.iter().filter(|w| secret_of(&w.url).is_some()).count();
    eprintln!(
        "{TEST}: frozen with {frozen_with}/{RESOURCES} Secrets written ({early_secret_writes} Secret writes in \
         the leader's log); standby led after {took_over_after:?} \
         and had synced all after {synced_after:?}; after SIGCONT the deposed replica sent {} writes after \
         the takeover, {late_secret_writes} of them to {} distinct Secrets (e.g. {:?})",
        late.len(),
        late_secrets.len(),
        late.iter()
            .take(3)
            .map(|w| format!("{} {}", w.method, w.url))
            .collect::<Vec<_>>()
    );
    for replica in &replicas {
        assert_log_has_no_secrets(&replica.1);
    }
    assert_eq!(still_served, RESOURCES, "every Secret is still there");
    assert_eq!(
        late_secrets.len(),
        0,
        "the deposed replica wrote Secrets after the takeover"
    );
    assert_eq!(
        late.len(),
        0,
        "the deposed replica wrote after the takeover"
    );
    for replica in &replicas {
        let _ = std::fs::remove_file(&replica.1);
    }
    delete_namespace(&cluster, &namespace).await;
}

#[test]
fn secret_writes_are_told_apart_by_their_url() {
    assert_eq!(
        secret_of(
            "https://127.0.0.1:6443/api/v1/namespaces/web/secrets/shop?fieldManager=x&force=true"
        )
        .as_deref(),
        Some("web/shop")
    );
    assert_eq!(
        secret_of(
            "https://127.0.0.1:6443/apis/tencentcert.io/v1alpha1/namespaces/web/tencentcertificates/shop/status"
        ),
        None
    );
}
