//! Ingresses and Gateways, end to end: the real binary, real Ingress objects and (on a real API server) a
//! Gateway API fixture CRD installed while the operator runs. The Secrets appear, are Ready, and go away as
//! the annotations say. Against the fake API server too, so CI runs the binary's shims.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use tencent_cert_operator::crd::TencentCertificate;
use tencent_cert_operator::shim::{self, gateway::Gateway};

use super::{
    Cluster, REAL_SERVER, SECRET_KEY, assert_log_has_no_secrets, certificate, create_namespace,
    credentials_secret, delete_namespace, eventually, fake_cluster, free_port, kubectl,
    real_cluster, simulator, start_operator, wait_ready,
};

const GATEWAY_CRD: &str = "gateways.gateway.networking.k8s.io";

fn ingress(name: &str, namespace: &str, annotations: Value, tls: Value) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "tls": tls,
                 "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}
    }))
    .unwrap()
}

async fn put_ingress(api: &Api<Ingress>, object: &Ingress) {
    api.patch(
        &object.name_any(),
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap();
}

/// Events about `kind`/`name` with `reason` (core view: `involvedObject`, `message`; it includes the
/// events.k8s.io ones).
async fn event_notes(
    cluster: &Cluster,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), namespace);
    events
        .list(&Default::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .filter_map(|e| e.note)
        .collect()
}

async fn wait_event(
    cluster: &Cluster,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
    contains: &str,
) {
    eventually(
        &format!("{reason} event on {kind} {name} saying {contains:?}"),
        || async {
            event_notes(cluster, namespace, kind, name, reason)
                .await
                .iter()
                .any(|n| n.contains(contains))
        },
    )
    .await;
    eprintln!(
        "routes: {reason} on {kind} {name}: {}",
        event_notes(cluster, namespace, kind, name, reason)
            .await
            .join(" | ")
    );
}

async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async {
        matches!(api.get_opt(name).await, Ok(None))
    })
    .await;
}

/// Removes the Gateway fixture CRD (left by an earlier run) and waits until discovery no longer shows it.
async fn remove_gateway_crd(cluster: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let _ = crds.delete(GATEWAY_CRD, &DeleteParams::default()).await;
    eventually("the Gateway API is gone", || async {
        matches!(
            shim::gateway_api_installed(&cluster.client).await,
            Ok(false)
        ) && matches!(crds.get_opt(GATEWAY_CRD).await, Ok(None))
    })
    .await;
}

async fn routes_scenario(cluster: &Cluster, namespace: &str) {
    let sim = simulator().await;
    if cluster.real {
        remove_gateway_crd(cluster).await;
    }
    let port = free_port();
    let (mut operator, log_path) = start_operator(
        cluster,
        &sim,
        &format!("routes-{namespace}"),
        port,
        &[
            "--namespace",
            namespace,
            "--gateway-api-check-interval",
            "1s",
        ],
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), namespace);
    let ingresses: Api<Ingress> = Api::namespaced(cluster.client.clone(), namespace);
    secrets
        .patch(
            "tencent",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(credentials_secret("tencent", namespace, SECRET_KEY)),
        )
        .await
        .unwrap();

    // An Ingress by certificate id, another by host.
    let creds = "tencentcert.io/credentials";
    put_ingress(
        &ingresses,
        &ingress(
            "shop",
            namespace,
            json!({"tencentcert.io/certificate-id": "e2eShop1", creds: "tencent"}),
            json!([{"hosts": ["shop.e2e.test"], "secretName": "shop-tls"}]),
        ),
    )
    .await;
    put_ingress(
        &ingresses,
        &ingress(
            "fresh",
            namespace,
            json!({"tencentcert.io/select-by-host": "true", creds: "tencent"}),
            json!([{"hosts": ["new.e2e.test"], "secretName": "new-tls"}]),
        ),
    )
    .await;
    wait_ready(&crs, "shop-tls", "True", "Ready").await;
    wait_ready(&crs, "new-tls", "True", "Ready").await;
    let new = crs.get("new-tls").await.unwrap();
    assert_eq!(
        new.status
            .as_ref()
            .and_then(|s| s.certificate_id.as_deref()),
        Some("e2eNew01"),
        "select-by-host picked the certificate covering new.e2e.test"
    );
    for name in ["shop-tls", "new-tls"] {
        let secret = secrets.get(name).await.unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(secret.data.as_ref().unwrap().contains_key("tls.key"));
    }
    eprintln!(
        "routes: Ingress shop -> Secret shop-tls Ready (e2eShop1); Ingress fresh -> Secret new-tls Ready (e2eNew01, by host)"
    );
    wait_event(
        cluster,
        namespace,
        "Ingress",
        "shop",
        "CreateCertificate",
        "Secret shop-tls is served by TencentCertificate shop-tls (certificate e2eShop1)",
    )
    .await;
    if cluster.real {
        let out = kubectl(
            &cluster.kubeconfig,
            &["-n", namespace, "get", "tcert", "-o", "wide"],
        )
        .unwrap();
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("routes: kubectl get tcert -o wide\n{table}");
        assert!(
            table.contains("ROUTE") && table.contains("ROUTE KIND"),
            "{table}"
        );
        let shop_row = table
            .lines()
            .find(|l| l.starts_with("shop-tls"))
            .unwrap_or_default();
        assert!(
            shop_row.contains("shop") && shop_row.contains("Ingress"),
            "{shop_row}"
        );
    }

    // A TencentCertificate written by hand is never overwritten.
    crs.create(
        &PostParams::default(),
        &certificate(
            "mine-tls",
            namespace,
            json!({"certificateId": "e2eNew01", "credentialsRef": {"name": "tencent"}}),
        ),
    )
    .await
    .unwrap();
    put_ingress(
        &ingresses,
        &ingress(
            "shop",
            namespace,
            json!({"tencentcert.io/certificate-id": "e2eShop1", creds: "tencent"}),
            json!([{"hosts": ["shop.e2e.test"], "secretName": "shop-tls"},
                   {"hosts": ["shop.e2e.test"], "secretName": "mine-tls"}]),
        ),
    )
    .await;
    wait_event(
        cluster,
        namespace,
        "Ingress",
        "shop",
        "CertificateConflict",
        "TencentCertificate mine-tls already exists and is not managed by Ingress shop",
    )
    .await;
    let mine = crs.get("mine-tls").await.unwrap();
    assert_eq!(mine.spec.certificate_id.as_deref(), Some("e2eNew01"));
    assert!(mine.owner_references().is_empty());

    // The annotation removed from one Ingress: its resource and Secret go (deletionPolicy Delete).
    put_ingress(
        &ingresses,
        &ingress(
            "fresh",
            namespace,
            json!({}),
            json!([{"hosts": ["new.e2e.test"], "secretName": "new-tls"}]),
        ),
    )
    .await;
    wait_gone(&crs, "new-tls", "TencentCertificate new-tls deleted").await;
    wait_gone(&secrets, "new-tls", "Secret new-tls garbage-collected").await;
    eprintln!(
        "routes: annotation removed from Ingress fresh: TencentCertificate and Secret new-tls gone"
    );

    // The Gateway API installed while the operator runs (a fixture CRD with the fields the shim reads).
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let mut fixture = Gateway::crd();
    // `*.k8s.io` groups need it; the Gateway API's own CRDs carry this value.
    fixture.metadata.annotations = Some(
        [(
            "api-approved.kubernetes.io".to_string(),
            "https://github.com/kubernetes-sigs/gateway-api/pull/1538".to_string(),
        )]
        .into(),
    );
    crds.patch(
        GATEWAY_CRD,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(fixture),
    )
    .await
    .unwrap();
    eventually("the Gateway API is served", || async {
        matches!(shim::gateway_api_installed(&cluster.client).await, Ok(true))
    })
    .await;
    let gateways: Api<Gateway> = Api::namespaced(cluster.client.clone(), namespace);
    let gateway = |annotations: Value| -> Gateway {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": namespace, "annotations": annotations},
            "spec": {"gatewayClassName": "eg", "listeners": [
                {"name": "https", "hostname": "shop.e2e.test", "port": 443, "protocol": "HTTPS",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": "edge-tls"}]}}
            ]}
        }))
        .unwrap()
    };
    // The CRD may take a moment to be served for writes too.
    eventually("the Gateway is created", || async {
        gateways
            .patch(
                "edge",
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(gateway(
                    json!({"tencentcert.io/certificate-id": "e2eShop1", creds: "tencent"}),
                )),
            )
            .await
            .is_ok()
    })
    .await;
    wait_ready(&crs, "edge-tls", "True", "Ready").await;
    let edge = crs.get("edge-tls").await.unwrap();
    assert_eq!(edge.owner_references()[0].kind, "Gateway");
    assert!(secrets.get_opt("edge-tls").await.unwrap().is_some());
    wait_event(
        cluster,
        namespace,
        "Gateway",
        "edge",
        "CreateCertificate",
        "Secret edge-tls is served by TencentCertificate edge-tls",
    )
    .await;
    eprintln!("routes: Gateway edge (CRD installed after start-up) -> Secret edge-tls Ready");
    gateways
        .patch(
            "edge",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(gateway(json!({}))),
        )
        .await
        .unwrap();
    wait_gone(&crs, "edge-tls", "TencentCertificate edge-tls deleted").await;
    wait_gone(&secrets, "edge-tls", "Secret edge-tls garbage-collected").await;
    eprintln!(
        "routes: annotation removed from Gateway edge: TencentCertificate and Secret edge-tls gone"
    );

    // The Ingress deleted: the garbage collector takes the generated resource, then its Secret.
    ingresses
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        &crs,
        "shop-tls",
        "TencentCertificate shop-tls garbage-collected",
    )
    .await;
    wait_gone(&secrets, "shop-tls", "Secret shop-tls garbage-collected").await;
    assert!(
        crs.get_opt("mine-tls").await.unwrap().is_some(),
        "the hand-written one stays"
    );
    eprintln!(
        "routes: Ingress shop deleted: TencentCertificate and Secret shop-tls gone; mine-tls stays"
    );

    assert!(
        operator.try_wait().unwrap().is_none(),
        "the operator exited: {}",
        log_path.display()
    );
    let _ = operator.kill().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.contains("Gateway API not installed"),
        "start-up without the Gateway API is logged"
    );
    assert!(
        log.contains("Gateway API (gateway.networking.k8s.io/v1 gateways) found"),
        "its arrival is logged"
    );
    assert_log_has_no_secrets(&log_path);
    let _ = std::fs::remove_file(&log_path);
    if cluster.real {
        remove_gateway_crd(cluster).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_routes() {
    const TEST: &str = "e2e_real_routes";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let namespace = create_namespace(&cluster, "routes").await;
    routes_scenario(&cluster, &namespace).await;
    delete_namespace(&cluster, &namespace).await;
}

#[tokio::test]
async fn e2e_routes_against_fake_apiserver() {
    let (api, cluster) = fake_cluster("routes").await;
    routes_scenario(&cluster, "web").await;
    drop(api);
}
