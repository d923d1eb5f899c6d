//! `status --pushes`: one line per `TencentCertificatePush` — Ready, its reason, the Tencent certificate
//! id, the expiry and the deploy results — from the resources alone (needs get/list on
//! tencentcertificatepushes). [`PushView::build`] and [`render_pushes`] are pure.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use super::cluster::{InspectError, Scope};
use crate::push::TencentCertificatePush;
use crate::status::CONDITION_READY;

/// What `status --pushes` shows of one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushView {
    pub namespace: String,
    pub name: String,
    pub secret_name: String,
    /// `True`, `False` or `Unknown` (no condition yet).
    pub ready: String,
    pub reason: String,
    pub message: String,
    pub certificate_id: Option<String>,
    pub not_after: Option<String>,
    pub last_upload_time: Option<String>,
    /// Per resource type: `clb 2/2` (succeeded of all), with the failures.
    pub deploy: Vec<String>,
}

impl PushView {
    pub fn build(push: &TencentCertificatePush) -> Self {
        let status = push.status.clone().unwrap_or_default();
        let ready = status.condition(CONDITION_READY);
        let deploy = status
            .deploy
            .iter()
            .flat_map(|d| &d.results)
            .map(|r| {
                let total = r.succeeded + r.failed + r.in_progress;
                let mut text = format!("{} {}/{total}", r.resource_type, r.succeeded);
                if r.failed > 0 {
                    text.push_str(&format!(" ({} failed)", r.failed));
                }
                text
            })
            .collect();
        Self {
            namespace: push.namespace().unwrap_or_default(),
            name: push.name_any(),
            secret_name: push.spec.secret_name.clone(),
            ready: ready.map_or_else(|| "Unknown".to_string(), |c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            certificate_id: status.certificate_id.clone(),
            not_after: status.not_after.clone(),
            last_upload_time: status.last_upload_time.clone(),
            deploy,
        }
    }
}

/// A table, one push per line, then the message of each push that is not ready.
pub fn render_pushes(views: &[PushView]) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "SECRET",
        "READY",
        "REASON",
        "CERTIFICATE ID",
        "EXPIRES",
        "DEPLOY",
    ];
    let rows: Vec<[String; 8]> = views
        .iter()
        .map(|v| {
            [
                v.namespace.clone(),
                v.name.clone(),
                v.secret_name.clone(),
                v.ready.clone(),
                v.reason.clone(),
                v.certificate_id.clone().unwrap_or_else(|| "-".into()),
                v.not_after.clone().unwrap_or_else(|| "-".into()),
                if v.deploy.is_empty() {
                    "-".into()
                } else {
                    v.deploy.join(", ")
                },
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    for v in views
        .iter()
        .filter(|v| v.ready != "True" && !v.message.is_empty())
    {
        out.push_str(&format!("\n{}/{}: {}\n", v.namespace, v.name, v.message));
    }
    out
}

/// The pushes in `scope`, sorted by namespace and name.
pub async fn views(client: &Client, scope: &Scope) -> Result<Vec<PushView>, InspectError> {
    let missing = |e: kube::Error| match &e {
        kube::Error::Api(status) if status.code == 404 => InspectError::PushCrdMissing,
        _ => InspectError::Kube {
            what: "list TencentCertificatePushes".into(),
            source: e,
        },
    };
    let mut pushes: Vec<TencentCertificatePush> = match scope {
        Scope::One { namespace, name } => {
            let api: Api<TencentCertificatePush> = Api::namespaced(client.clone(), namespace);
            match api.get_opt(name).await.map_err(missing)? {
                Some(push) => vec![push],
                None => {
                    return Err(InspectError::NotFound {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
        Scope::Namespace(namespace) => {
            Api::<TencentCertificatePush>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(missing)?
                .items
        }
        Scope::AllNamespaces => {
            Api::<TencentCertificatePush>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(missing)?
                .items
        }
    };
    pushes.sort_by_key(|p| (p.namespace().unwrap_or_default(), p.name_any()));
    Ok(pushes.iter().map(PushView::build).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_shows_ready_reason_id_expiry_and_deploys() {
        let push: TencentCertificatePush = serde_json::from_value(serde_json::json!({
            "apiVersion": "tencentcert.io/v1alpha1", "kind": "TencentCertificatePush",
            "metadata": {"name": "shop", "namespace": "web"},
            "spec": {"secretName": "shop-tls"},
            "status": {
                "certificateId": "up000001", "notAfter": "2027-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "False", "reason": "DeployFailed",
                    "message": "cdn: 0 succeeded, 1 failed", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "deploy": {"fromCertificateId": "a", "toCertificateId": "up000001", "results": [
                    {"resourceType": "clb", "succeeded": 2, "failed": 0, "inProgress": 0},
                    {"resourceType": "cdn", "succeeded": 0, "failed": 1, "inProgress": 0}]},
            },
        }))
        .unwrap();
        let view = PushView::build(&push);
        assert_eq!(view.ready, "False");
        assert_eq!(view.reason, "DeployFailed");
        assert_eq!(view.deploy, ["clb 2/2", "cdn 0/1 (1 failed)"]);
        let text = render_pushes(&[view]);
        assert!(text.starts_with("NAMESPACE"), "{text}");
        assert!(text.contains("up000001"), "{text}");
        assert!(text.contains("2027-01-01T00:00:00Z"), "{text}");
        assert!(
            text.contains("web/shop: cdn: 0 succeeded, 1 failed"),
            "{text}"
        );
    }
}
