//! Attack on a real API server: a tenant points `credentialsRef.secretIdKey` at other keys of their own
//! credentials Secret and reads the status (as the `view` role may), the events, and the operator's log and
//! metrics for the values. Skips without a cluster.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, Account, SimConfig, SimRole};

use super::{
    REAL_SERVER, certificate, create_namespace, delete_namespace, free_port, real_cluster, scrape,
    start_operator, wait_ready,
};

const SECRET_ID: &str = "AKIDe2eLEAK000001";
const SECRET_KEY: &str = "e2e-leak-secret-key";
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/e2e-leak";
const MARKER_PLAIN: &str = "tenant-api-token-E2EMARKER-1a2b3c4d";
const MARKER_ID: &str = "AKIDvictimE2EMARKER0123456789abcdef";

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_secret_values_never_reach_status_events_logs_or_metrics() {
    const TEST: &str = "e2e_real_secret_values_never_reach_status_events_logs_or_metrics";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let sim = sim::start_local(SimConfig {
        accounts: vec![Account {
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            token: None,
        }],
        certificates: vec!["e2eLeak1:domain=leak.e2e.test".parse().unwrap()],
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
    let namespace = create_namespace(&cluster, "leaks").await;
    let port = free_port();
    let (mut operator, log_path) =
        start_operator(&cluster, &sim, "leaks", port, &["--namespace", &namespace]);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent", "namespace": namespace,
                     "labels": {"tencentcert.io/credentials": "true"}},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY,
                       "api-token": MARKER_PLAIN, "other-id": MARKER_ID},
    }))
    .unwrap();
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("tenant").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    let role = json!({"roleArn": ROLE});
    let cases = [
        (
            "plain",
            json!({"name": "tencent", "secretIdKey": "api-token"}),
            "InvalidCredentials",
        ),
        (
            "plain-role",
            json!({"name": "tencent", "secretIdKey": "api-token", "role": role}),
            "InvalidCredentials",
        ),
        (
            "shaped",
            json!({"name": "tencent", "secretIdKey": "other-id"}),
            "AuthFailed",
        ),
        (
            "shaped-role",
            json!({"name": "tencent", "secretIdKey": "other-id", "role": role}),
            "AssumeRoleFailed",
        ),
        ("honest", json!({"name": "tencent"}), "Ready"),
    ];
    for (name, reference, _) in &cases {
        crs.create(
            &PostParams::default(),
            &certificate(
                name,
                &namespace,
                json!({"certificateId": "e2eLeak1", "credentialsRef": reference}),
            ),
        )
        .await
        .unwrap();
    }
    // Every resource has tried once (whatever the outcome): nothing may show a marker, then or later.
    let names: Vec<&str> = cases.iter().map(|(name, _, _)| *name).collect();
    super::eventually("every resource reports Ready", || async {
        let listed = crs.list(&ListParams::default()).await.unwrap();
        names.iter().all(|name| {
            listed
                .items
                .iter()
                .any(|cr| cr.metadata.name.as_deref() == Some(*name) && super::ready(cr).is_some())
        })
    })
    .await;
    assert_no_marker(&visible(&cluster, &namespace, port).await);
    for (name, _, reason) in &cases {
        let status = if *reason == "Ready" { "True" } else { "False" };
        wait_ready(&crs, name, status, reason).await;
    }
    let mut seen = visible(&cluster, &namespace, port).await;
    assert!(seen.iter().any(|(kind, _)| *kind == "event"), "no events");
    assert!(
        seen.iter().any(|(kind, _)| *kind == "metrics"),
        "no metrics"
    );
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.is_empty(), "empty operator log");
    seen.push(("log", log));
    assert_no_marker(&seen);
    delete_namespace(&cluster, &namespace).await;
}

/// What a viewer of the namespace, and a reader of the operator's metrics, can see.
async fn visible(
    cluster: &super::Cluster,
    namespace: &str,
    port: u16,
) -> Vec<(&'static str, String)> {
    let mut visible = Vec::new();
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), namespace);
    for cr in crs.list(&ListParams::default()).await.unwrap() {
        visible.push(("status", serde_json::to_string(&cr.status).unwrap()));
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), namespace);
    for event in events.list(&ListParams::default()).await.unwrap() {
        visible.push(("event", serde_json::to_string(&event).unwrap()));
    }
    if let Some((_, metrics)) = scrape(port, "/metrics").await {
        visible.push(("metrics", metrics));
    }
    visible
}

fn assert_no_marker(visible: &[(&str, String)]) {
    for (kind, text) in visible {
        for marker in [MARKER_PLAIN, MARKER_ID, SECRET_KEY] {
            assert!(
                !text.contains(marker),
                "{marker} appeared in the {kind}: {text}"
            );
        }
    }
}
