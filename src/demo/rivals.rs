//! Another tencent-cert-operator in the demo's cluster. Two operators reconciling one namespace fight: the
//! other one downloads the demo's certificates from real Tencent Cloud with the demo's credentials, fails
//! (`AuthFailure.SecretIdNotFound`), and the resources flap between Ready and failing. Running the demo in a
//! namespace of its own does not help, because an operator watching all namespaces (the chart's default)
//! reconciles that namespace too, and the demo cannot stop it. So the demo refuses to start, in one line
//! that says what to do.
//!
//! Found: a Deployment of the chart (label `app.kubernetes.io/name=tencent-cert-operator`, or the image)
//! not scaled to zero, and a leader Lease named after the operator that is held and fresh. A plain `run`
//! without leader election leaves no trace in the API and is not found.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

/// The chart's name label value and image name, and the operator's default Lease name.
const OPERATOR: &str = "tencent-cert-operator";

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rival {
    Deployment {
        namespace: String,
        name: String,
        replicas: i32,
    },
    Lease {
        namespace: String,
        name: String,
        holder: String,
    },
}

impl Rival {
    /// The one line the demo stops with.
    pub fn refusal(&self) -> String {
        let (what, stop) = match self {
            Rival::Deployment {
                namespace,
                name,
                replicas,
            } => (
                format!("Deployment {namespace}/{name} ({replicas} replica(s))"),
                format!("kubectl -n {namespace} scale deployment/{name} --replicas=0"),
            ),
            Rival::Lease {
                namespace,
                name,
                holder,
            } => (
                format!("the leader Lease {namespace}/{name} (held by {holder})"),
                format!("stop the process or pod {holder}"),
            ),
        };
        format!(
            "another tencent-cert-operator runs in this cluster: {what}; it would reconcile the demo's \
             resources too, with real Tencent Cloud, and they would flap. Stop it ({stop}), or run the demo on \
             its own embedded API server: tencent-cert-operator demo --cluster embedded"
        )
    }
}

/// Whether a Deployment is the operator's and meant to run.
pub fn operator_deployment(deployment: &Deployment) -> Option<i32> {
    let labelled = deployment
        .labels()
        .get("app.kubernetes.io/name")
        .is_some_and(|n| n == OPERATOR);
    let spec = deployment.spec.as_ref()?;
    let image = spec.template.spec.as_ref().is_some_and(|pod| {
        pod.containers.iter().any(|c| {
            c.image
                .as_deref()
                .and_then(|i| i.rsplit('/').next())
                .is_some_and(|i| i.split([':', '@']).next() == Some(OPERATOR))
        })
    });
    let replicas = spec.replicas.unwrap_or(1);
    ((labelled || image) && replicas > 0).then_some(replicas)
}

/// The holder of an operator's Lease that was renewed within its duration (plus `grace` seconds), as of `now`.
pub fn live_holder(lease: &Lease, now: jiff::Timestamp, grace: i64) -> Option<String> {
    if !lease.name_any().contains(OPERATOR) {
        return None;
    }
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    (now.as_second() - renewed.as_second() <= duration + grace).then_some(holder)
}

/// Looks for another operator. `Err`: the cluster did not let us look (RBAC), with why.
pub async fn find(client: &kube::Client) -> Result<Option<Rival>, String> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let list = deployments
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list Deployments: {e}"))?;
    if let Some((d, replicas)) = list
        .items
        .iter()
        .find_map(|d| operator_deployment(d).map(|r| (d, r)))
    {
        return Ok(Some(Rival::Deployment {
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            replicas,
        }));
    }
    let leases: Api<Lease> = Api::all(client.clone());
    let list = leases
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list Leases: {e}"))?;
    let now = jiff::Timestamp::now();
    Ok(list.items.iter().find_map(|lease| {
        live_holder(lease, now, 5).map(|holder| Rival::Lease {
            namespace: lease.namespace().unwrap_or_default(),
            name: lease.name_any(),
            holder,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(labels: serde_json::Value, image: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ops", "labels": labels},
            "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn the_charts_deployment_or_the_image_counts_unless_scaled_to_zero() {
        let chart = deployment(
            json!({"app.kubernetes.io/name": "tencent-cert-operator"}),
            "x/y:1",
            2,
        );
        assert_eq!(operator_deployment(&chart), Some(2));
        let by_image = deployment(
            json!({}),
            "ghcr.io/tencent-cert-operator/tencent-cert-operator:0.1.0",
            1,
        );
        assert_eq!(operator_deployment(&by_image), Some(1));
        let scaled_down = deployment(
            json!({"app.kubernetes.io/name": "tencent-cert-operator"}),
            "x",
            0,
        );
        assert_eq!(operator_deployment(&scaled_down), None);
        let other = deployment(
            json!({"app.kubernetes.io/name": "ingress-nginx"}),
            "tencent-cert-operator-docs:1",
            1,
        );
        assert_eq!(operator_deployment(&other), None);
    }

    #[test]
    fn only_a_held_fresh_operator_lease_counts() {
        let now = jiff::Timestamp::now();
        let lease = |name: &str, holder: &str, age: i64| -> Lease {
            let renewed = now - jiff::SignedDuration::from_secs(age);
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ops"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string()},
            }))
            .unwrap()
        };
        assert_eq!(
            live_holder(&lease("tencent-cert-operator", "pod-a", 3), now, 5),
            Some("pod-a".into())
        );
        assert_eq!(
            live_holder(&lease("tencent-cert-operator", "pod-a", 60), now, 5),
            None
        );
        assert_eq!(
            live_holder(&lease("tencent-cert-operator", "", 1), now, 5),
            None
        );
        assert_eq!(
            live_holder(&lease("kube-scheduler", "node", 1), now, 5),
            None
        );
    }

    #[test]
    fn the_refusal_is_one_line_that_says_what_to_do() {
        let rival = Rival::Deployment {
            namespace: "ops".into(),
            name: "tco".into(),
            replicas: 1,
        };
        let line = rival.refusal();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("kubectl -n ops scale deployment/tco --replicas=0"),
            "{line}"
        );
        assert!(line.contains("demo --cluster embedded"), "{line}");
    }
}
