//! TKE pod identity on a real API server: the operator's default credentials come from a web identity
//! token file — here a real ServiceAccount token of kube-local (`kubectl create token`) — exchanged with
//! the simulator's STS (`AssumeRoleWithWebIdentity`) for temporary credentials. Skipped without a cluster.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tencent_cert_operator::crd::TencentCertificate;
use tencent_sim::{self as sim, SimConfig, SimRole};

use super::{
    REAL_SERVER, assert_log_has_no_secrets, certificate, create_namespace, delete_namespace,
    eventually, free_port, kubectl, real_cluster, start_operator_with_env, wait_ready,
};

const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/tencent-cert-operator";
const PROVIDER: &str = "cls-e2epodid";

fn role(provider: &str, token: &str) -> SimRole {
    SimRole {
        role_arn: ROLE_ARN.into(),
        trusted_secret_ids: Vec::new(),
        oidc_provider_id: Some(provider.into()),
        web_identity_tokens: vec![token.into()],
    }
}

/// A ServiceAccount token for `sts.cloud.tencent.com`, as TKE's webhook projects one.
fn service_account_token(cluster: &super::Cluster, namespace: &str, duration: &str) -> String {
    let out = kubectl(
        &cluster.kubeconfig,
        &[
            "-n",
            namespace,
            "create",
            "token",
            "tencent-cert-operator",
            "--audience",
            "sts.cloud.tencent.com",
            "--duration",
            duration,
        ],
    )
    .expect("kubectl is needed for the cluster e2e");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn synced(cr: &TencentCertificate) -> Option<(String, String)> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
#[ignore = "needs KUBECONFIG of a real cluster (kube-local)"]
async fn e2e_real_pod_identity_default_credentials_from_a_token_file() {
    const TEST: &str = "e2e_real_pod_identity_default_credentials_from_a_token_file";
    let _shared = REAL_SERVER.read().await;
    let Some(cluster) = real_cluster(TEST).await else {
        return;
    };
    let namespace = create_namespace(&cluster, "podid").await;
    let out = kubectl(
        &cluster.kubeconfig,
        &[
            "-n",
            &namespace,
            "create",
            "serviceaccount",
            "tencent-cert-operator",
        ],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first_token = service_account_token(&cluster, &namespace, "10m");
    let token_file =
        std::env::temp_dir().join(format!("tco-e2e-podid-token-{}", std::process::id()));
    std::fs::write(&token_file, &first_token).unwrap();

    // No permanent key at all: only the role, trusting the cluster's identity provider.
    let sim = sim::start_local(SimConfig {
        certificates: vec!["e2ePod01:domain=pod.e2e.test".parse().unwrap()],
        roles: vec![role(PROVIDER, &first_token)],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let token_path = token_file.to_string_lossy().to_string();
    let (mut operator, log_path) = start_operator_with_env(
        &cluster,
        &sim,
        "podid",
        free_port(),
        &[
            "--namespace",
            &namespace,
            "--default-credentials-pod-identity",
            "--default-credentials-namespaces",
            &namespace,
        ],
        &[
            ("TKE_REGION", "ap-guangzhou"),
            ("TKE_PROVIDER_ID", PROVIDER),
            ("TKE_ROLE_ARN", ROLE_ARN),
            ("TKE_WEB_IDENTITY_TOKEN_FILE", &token_path),
        ],
    );
    let crs: Api<TencentCertificate> = Api::namespaced(cluster.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    crs.create(
        &PostParams::default(),
        &certificate("shop", &namespace, json!({"certificateId": "e2ePod01"})),
    )
    .await
    .unwrap();
    wait_ready(&crs, "shop", "True", "Ready").await;
    let secret = secrets.get("shop").await.unwrap();
    assert!(secret.data.unwrap().contains_key("tls.crt"));
    let stats = sim.stats();
    assert_eq!(stats.count("AssumeRoleWithWebIdentity", "Success"), 1);
    assert!(
        !stats.by_secret_id.is_empty()
            && stats
                .by_secret_id
                .keys()
                .all(|id| id.starts_with("AKIDtmp")),
        "{stats:?}"
    );
    eprintln!(
        "{TEST}: Ready with temporary credentials from the token file: {:?}",
        stats.by_action
    );

    // The kubelet rotates the projected token; the provider vouches only for the new one, and Tencent
    // stops accepting the temporary credentials. A refresh re-reads the file and assumes the role again.
    let second_token = service_account_token(&cluster, &namespace, "11m");
    assert_ne!(first_token, second_token);
    std::fs::write(&token_file, &second_token).unwrap();
    sim.state().put_role(role(PROVIDER, &second_token));
    sim.state().expire_issued();
    let refresh = |at: &str| {
        Patch::Merge(
            json!({"metadata": {"annotations": {"tencentcert.io/refresh-requested-at": at}}}),
        )
    };
    crs.patch("shop", &PatchParams::default(), &refresh("rotated-token"))
        .await
        .unwrap();
    eventually(
        "a download with credentials from the rotated token",
        || async { sim.stats().count("DownloadCertificate", "Success") >= 2 },
    )
    .await;
    let stats = sim.stats();
    assert_eq!(stats.count("AssumeRoleWithWebIdentity", "Success"), 2);
    assert_eq!(
        stats.count("DownloadCertificate", "AuthFailure.TokenFailure"),
        1
    );
    eprintln!("{TEST}: after the token rotation: {:?}", stats.by_action);

    // The role's trust policy no longer trusts the provider: Synced=False AssumeRoleFailed saying what to
    // fix, while the valid Secret keeps Ready=True.
    sim.state().put_role(role("cls-someother", &second_token));
    sim.state().expire_issued();
    crs.patch("shop", &PatchParams::default(), &refresh("trust-revoked"))
        .await
        .unwrap();
    eventually("Synced=False AssumeRoleFailed", || async {
        crs.get("shop").await.ok().as_ref().and_then(synced)
            == Some(("False".into(), "AssumeRoleFailed".into()))
    })
    .await;
    let cr = crs.get("shop").await.unwrap();
    let message = cr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("trust policy") && message.contains(PROVIDER),
        "{message}"
    );
    eprintln!("{TEST}: trust revoked: Synced=False AssumeRoleFailed: {message}");
    assert_eq!(
        super::ready(&cr),
        Some(("True".into(), "Ready".into())),
        "a valid Secret keeps Ready=True"
    );

    let _ = operator.kill().await;
    assert_log_has_no_secrets(&log_path);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let status_text = serde_json::to_string(&cr.status).unwrap();
    for secret in [first_token.clone(), second_token.clone()]
        .into_iter()
        .chain(sim.state().issued_secrets())
    {
        assert!(
            !log.contains(&secret),
            "a token or temporary key in the operator log"
        );
        assert!(
            !status_text.contains(&secret),
            "a token or temporary key in the status"
        );
    }
    delete_namespace(&cluster, &namespace).await;
    let _ = std::fs::remove_file(&token_file);
    let _ = std::fs::remove_file(&log_path);
}
