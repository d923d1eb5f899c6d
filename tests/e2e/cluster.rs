//! ClusterTencentCertificate on a real API server: the operator watching all namespaces, real namespaces
//! created and relabelled, a foreign Secret, and the real garbage collector removing the Secrets of a
//! deleted resource (a cluster-scoped owner of namespaced Secrets).

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::cluster::crd::ClusterTencentCertificate;
use tencent_cert_operator::crd::TencentCertificate;

use super::{
    REAL_SERVER, SECRET_KEY, credentials_secret, eventually, free_port, kubectl, real_cluster,
    simulator, start_operator, wait_ready,
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

/// Issue 21, item 1 on a real API server, as a tenant would try it: an edited Secret and planted copies
/// never reach another namespace, and the edited one is repaired within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_tenant_secrets_never_reach_another_namespace() {
    const TEST: &str = "e2e_real_tenant_secrets_never_reach_another_namespace";
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    install_cluster_crd(&cluster.kubeconfig);
    let sim = simulator().await;
    let pid = std::process::id();
    let label = format!("tco-e2e-tenant-{pid}");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let make_ns = |suffix: &str, labelled: bool| {
        let name = format!("tco-e2e-{pid}-tn-{suffix}");
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
    let secrets = |namespace: &str| Api::<Secret>::namespaced(cluster.client.clone(), namespace);
    secrets(&ops)
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &ops, SECRET_KEY),
        )
        .await
        .unwrap();
    // The tenant's namespace sorts first.
    let tenant = make_ns("a-tenant", true).await;
    let shop = make_ns("shop", true).await;
    let untargeted = make_ns("aaa-untargeted", false).await;

    let port = free_port();
    let (_operator, log_path) = start_operator(&cluster, &sim, "tenant", port, &[]);
    let crs: Api<ClusterTencentCertificate> = Api::all(cluster.client.clone());
    let name = format!("tco-e2e-{pid}-tenant");
    crs.create(
        &PostParams::default(),
        &ClusterTencentCertificate::new(
            &name,
            serde_json::from_value(json!({
                "certificateId": "e2eShop1", "secretName": "wildcard-tls",
                "credentialsRef": {"namespace": ops, "name": "tencent"},
                "namespaceSelector": {"matchLabels": {&label: "yes"}},
            }))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    eventually("Secrets in both namespaces", || async {
        crs.get(&name)
            .await
            .is_ok_and(|cr| counts(&cr) == (2, 2, 0))
    })
    .await;
    let genuine = secrets(&shop).get("wildcard-tls").await.unwrap();
    let crt_of = |s: &Secret| s.data.as_ref().map(|d| d["tls.crt"].0.clone());
    let genuine_crt = crt_of(&genuine);

    // The tenant plants copies with the managed labels and annotations, then overwrites their own.
    let forged = rcgen::generate_simple_self_signed(vec!["shop.e2e.test".to_string()]).unwrap();
    let (crt, key) = (forged.cert.pem(), forged.signing_key.serialize_pem());
    for (namespace, secret_name) in [(&untargeted, "wildcard-tls"), (&tenant, "decoy")] {
        let planted = json!({"metadata": {"name": secret_name, "namespace": namespace,
                "labels": genuine.metadata.labels, "annotations": genuine.metadata.annotations},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": crt, "tls.key": key}});
        secrets(namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(planted).unwrap(),
            )
            .await
            .unwrap();
    }
    let edited = tokio::time::Instant::now();
    secrets(&tenant)
        .patch(
            "wildcard-tls",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "wildcard-tls"},
                "stringData": {"tls.crt": crt, "tls.key": key}})),
        )
        .await
        .unwrap();
    let holds_genuine = |namespace: String, secret_name: &'static str| {
        let api = secrets(&namespace);
        let genuine_crt = genuine_crt.clone();
        async move {
            api.get_opt(secret_name)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| crt_of(&s) == genuine_crt)
        }
    };
    eventually("the tenant's edited Secret is repaired", || {
        holds_genuine(tenant.clone(), "wildcard-tls")
    })
    .await;
    let took = edited.elapsed();
    eprintln!("{TEST}: the edited Secret was repaired after {took:?}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    let joined = make_ns("zzz-new", true).await;
    eventually("a namespace that joins gets Tencent's certificate", || {
        holds_genuine(joined.clone(), "wildcard-tls")
    })
    .await;
    assert!(holds_genuine(shop.clone(), "wildcard-tls").await);

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains(SECRET_KEY) && !log.contains("PRIVATE KEY"));
    crs.delete(&name, &DeleteParams::default()).await.unwrap();
    for namespace in [ops, tenant, shop, untargeted, joined] {
        let _ = namespaces
            .delete(&namespace, &DeleteParams::default())
            .await;
    }
}

/// Issue 21, item 2 on a real API server: a `secretName` change writes the new Secrets first and the old
/// ones go after (cluster kind, every namespace); on a TencentCertificate a conflict at the new name keeps
/// the old Secret until the name is free and the new Secret is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_renames_write_the_new_secrets_before_the_old_ones_go() {
    const TEST: &str = "e2e_real_renames_write_the_new_secrets_before_the_old_ones_go";
    let _alone = REAL_SERVER.write().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    install_cluster_crd(&cluster.kubeconfig);
    let sim = simulator().await;
    let pid = std::process::id();
    let label = format!("tco-e2e-rename-{pid}");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let make_ns = |suffix: &str, labelled: bool| {
        let name = format!("tco-e2e-{pid}-rn-{suffix}");
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
    let secrets = |namespace: &str| Api::<Secret>::namespaced(cluster.client.clone(), namespace);
    secrets(&ops)
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &ops, SECRET_KEY),
        )
        .await
        .unwrap();
    let tenant = make_ns("a", true).await;
    let shop = make_ns("shop", true).await;
    let joined = make_ns("c", true).await;
    let port = free_port();
    let (_operator, log_path) = start_operator(&cluster, &sim, "rename", port, &[]);
    let crs: Api<ClusterTencentCertificate> = Api::all(cluster.client.clone());
    let name = format!("tco-e2e-{pid}-rename");
    crs.create(
        &PostParams::default(),
        &ClusterTencentCertificate::new(
            &name,
            serde_json::from_value(json!({
                "certificateId": "e2eShop1", "secretName": "wildcard-tls",
                "credentialsRef": {"namespace": ops, "name": "tencent"},
                "namespaceSelector": {"matchLabels": {&label: "yes"}},
            }))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    eventually("Secrets in the three namespaces", || async {
        crs.get(&name)
            .await
            .is_ok_and(|cr| counts(&cr) == (3, 3, 0))
    })
    .await;
    let genuine_crt = secrets(&shop)
        .get("wildcard-tls")
        .await
        .unwrap()
        .data
        .map(|d| d["tls.crt"].0.clone());
    let crt_of = |s: &Secret| s.data.as_ref().map(|d| d["tls.crt"].0.clone());
    let holds_genuine = |namespace: String, secret_name: &'static str| {
        let api = secrets(&namespace);
        let genuine_crt = genuine_crt.clone();
        async move {
            api.get_opt(secret_name)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| crt_of(&s) == genuine_crt)
        }
    };

    // Rename (cluster kind): new Secrets everywhere, then the old ones go.
    crs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"secretName": "renamed-tls"}})),
    )
    .await
    .unwrap();
    for namespace in [&tenant, &shop, &joined] {
        eventually("the renamed Secret is written", || {
            holds_genuine(namespace.clone(), "renamed-tls")
        })
        .await;
        let old = secrets(namespace);
        eventually("the old Secret goes", || async {
            old.get_opt("wildcard-tls").await.ok().flatten().is_none()
        })
        .await;
    }

    // Rename (TencentCertificate) onto a name someone else holds: the old Secret stays until the new one
    // is written. (A failed download at the new name is tested in-process: here the operator's bundle
    // cache would serve the rename without asking Tencent.)
    let tcerts: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &shop);
    secrets(&shop)
        .create(
            &PostParams::default(),
            &credentials_secret("tencent", &shop, SECRET_KEY),
        )
        .await
        .unwrap();
    let mut cert = TencentCertificate::new(
        "own",
        serde_json::from_value(
            json!({"certificateId": "e2eNew01", "secretName": "own-first",
            "credentialsRef": {"name": "tencent"}}),
        )
        .unwrap(),
    );
    cert.metadata.namespace = Some(shop.clone());
    tcerts.create(&PostParams::default(), &cert).await.unwrap();
    wait_ready(&tcerts, "own", "True", "Ready").await;
    secrets(&shop)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "own-second"}, "type": "Opaque",
                "stringData": {"mine": "yes"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    tcerts
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretName": "own-second"}})),
        )
        .await
        .unwrap();
    wait_ready(&tcerts, "own", "False", "SecretConflict").await;
    assert!(
        secrets(&shop).get_opt("own-first").await.unwrap().is_some(),
        "the old Secret must stay while the new name is someone else's"
    );
    // The name is freed, and the owner asks for a refresh: the new Secret, then the old one gone.
    secrets(&shop)
        .delete("own-second", &DeleteParams::default())
        .await
        .unwrap();
    tcerts
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": "freed"}}})),
        )
        .await
        .unwrap();
    let shop_secrets = secrets(&shop);
    eventually("the new Secret, then the old one gone", || async {
        shop_secrets
            .get_opt("own-second")
            .await
            .ok()
            .flatten()
            .is_some()
            && shop_secrets
                .get_opt("own-first")
                .await
                .ok()
                .flatten()
                .is_none()
    })
    .await;
    wait_ready(&tcerts, "own", "True", "Ready").await;

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains(SECRET_KEY) && !log.contains("PRIVATE KEY"));
    crs.delete(&name, &DeleteParams::default()).await.unwrap();
    for namespace in [ops, tenant, shop, joined] {
        let _ = namespaces
            .delete(&namespace, &DeleteParams::default())
            .await;
    }
}
