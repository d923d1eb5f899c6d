//! ClusterTencentCertificate on a real API server: the operator watching all namespaces, real namespaces
//! created and relabelled, a foreign Secret, and the real garbage collector removing the Secrets of a
//! deleted resource (a cluster-scoped owner of namespaced Secrets).

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::cluster::crd::ClusterTencentCertificate;

use super::{
    REAL_SERVER, SECRET_KEY, credentials_secret, eventually, free_port, kubectl, real_cluster,
    simulator, start_operator,
};

fn counts(cr: &ClusterTencentCertificate) -> (u32, u32, u32) {
    let s = cr.status.clone().unwrap_or_default();
    (
        s.targeted_namespaces,
        s.ready_namespaces,
        s.failed_namespaces,
    )
}

fn install_cluster_crd(kubeconfig: &std::path::Path) {
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/clustertencentcertificate.yaml"
    );
    for args in [
        vec!["apply", "--server-side", "-f", crd],
        vec![
            "wait",
            "--for=condition=Established",
            "crd/clustertencentcertificates.tencentcert.io",
            "--timeout=60s",
        ],
    ] {
        let out = kubectl(kubeconfig, &args).expect("kubectl is needed for the cluster e2e");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_cluster_certificate() {
    const TEST: &str = "e2e_real_cluster_certificate";
    // The operator watches every namespace: it must not meet the other tests' resources.
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    install_cluster_crd(&cluster.kubeconfig);
    let sim = simulator().await;
    let pid = std::process::id();
    let label = format!("tco-e2e-ctcert-{pid}");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let ns = |suffix: &str| format!("tco-e2e-{pid}-ct-{suffix}");
    let make_ns = |suffix: &str, labelled: bool| {
        let name = ns(suffix);
        let labels = if labelled {
            json!({&label: "yes"})
        } else {
            json!({})
        };
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .patch(
                    &name,
                    &PatchParams::apply("e2e-test").force(),
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": name, "labels": labels}})),
                )
                .await
                .unwrap();
            name
        }
    };
    let ops = make_ns("ops", false).await;
    Api::<Secret>::namespaced(cluster.client.clone(), &ops)
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &ops, SECRET_KEY),
        )
        .await
        .unwrap();
    let a = make_ns("a", true).await;
    let b = make_ns("b", true).await;
    // A Secret of someone else's at the name, in a targeted namespace.
    let d = make_ns("d", true).await;
    Api::<Secret>::namespaced(cluster.client.clone(), &d)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "wildcard-tls"}, "type": "Opaque",
                "stringData": {"mine": "yes"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    let port = free_port();
    let (_operator, log_path) = start_operator(&cluster, &sim, "ctcert", port, &[]);
    let crs: Api<ClusterTencentCertificate> = Api::all(cluster.client.clone());
    let name = format!("tco-e2e-{pid}-wildcard");
    let cr = ClusterTencentCertificate::new(
        &name,
        serde_json::from_value(json!({
            "certificateId": "e2eShop1", "secretName": "wildcard-tls",
            "credentialsRef": {"namespace": ops, "name": "tencent"},
            "namespaceSelector": {"matchLabels": {&label: "yes"}},
        }))
        .unwrap(),
    );
    crs.create(&PostParams::default(), &cr).await.unwrap();
    let secret_in = |namespace: String| {
        let api: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
        async move { api.get_opt("wildcard-tls").await.ok().flatten() }
    };

    eventually("Secrets in a and b, d reported as a conflict", || async {
        crs.get(&name)
            .await
            .is_ok_and(|cr| counts(&cr) == (3, 2, 1))
    })
    .await;
    let status = crs.get(&name).await.unwrap().status.unwrap();
    assert_eq!(status.namespace_failures[0].namespace, d);
    assert_eq!(status.namespace_failures[0].reason, "SecretConflict");
    assert!(secret_in(a.clone()).await.is_some() && secret_in(b.clone()).await.is_some());
    assert_eq!(
        secret_in(d.clone()).await.unwrap().type_.as_deref(),
        Some("Opaque"),
        "the foreign Secret is untouched"
    );
    assert_eq!(sim.stats().action_total("DownloadCertificate"), 1);

    // A namespace created with the label gets the Secret at once; one relabelled away loses it.
    let c = make_ns("c", true).await;
    eventually("a new namespace gets the Secret", || {
        let c = c.clone();
        async { secret_in(c).await.is_some() }
    })
    .await;
    make_ns("a", false).await;
    eventually("a relabelled namespace loses the Secret", || {
        let a = a.clone();
        async { secret_in(a).await.is_none() }
    })
    .await;
    eventually("counts follow", || async {
        crs.get(&name)
            .await
            .is_ok_and(|cr| counts(&cr) == (3, 2, 1))
    })
    .await;
    assert_eq!(
        sim.stats().action_total("DownloadCertificate"),
        1,
        "namespace changes need no download"
    );
    if let Some(out) = kubectl(&cluster.kubeconfig, &["get", "ctcert", &name, "-o", "wide"]) {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }

    // Deleting the resource: the real garbage collector removes its Secrets (cluster-scoped owner).
    crs.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("the GC removes the Secrets", || async {
        secret_in(b.clone()).await.is_none() && secret_in(c.clone()).await.is_none()
    })
    .await;
    assert!(
        secret_in(d.clone()).await.is_some(),
        "the foreign Secret stays"
    );

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !log.contains(SECRET_KEY),
        "the SecretKey must never be logged"
    );
    for namespace in [ops, a, b, c, d] {
        let _ = namespaces
            .delete(&namespace, &DeleteParams::default())
            .await;
    }
}
