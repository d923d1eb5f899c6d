//! The Kubernetes calls behind `status` and `renew`: read the resources, their Secrets and events; set the
//! refresh annotation. Needs get/list on tencentcertificates, get on secrets, list on events.k8s.io events
//! (what the built-in `view` role plus Secret read gives) and, for `renew`, patch on tencentcertificates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use super::ResourceView;
use crate::crd::TencentCertificate;
use crate::policy::REFRESH_REQUESTED_ANNOTATION;

/// Which resources a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One resource by name, in the namespace.
    One { namespace: String, name: String },
    /// Every resource of the namespace.
    Namespace(String),
    /// Every resource of every namespace.
    AllNamespaces,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("TencentCertificate {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(
        "the TencentCertificate CRD is not installed in this cluster: kubectl apply -f crds/tencentcertificate.yaml"
    )]
    CrdMissing,
    #[error(
        "the TencentCertificatePush CRD is not installed in this cluster: kubectl apply -f crds/tencentcertificatepush.yaml"
    )]
    PushCrdMissing,
    #[error("cannot {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl InspectError {
    fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        match &source {
            kube::Error::Api(status)
                if status.code == 404
                    && status.details.as_ref().is_none_or(|d| d.kind.is_empty()) =>
            {
                Self::CrdMissing
            }
            _ => Self::Kube {
                what: what.into(),
                source,
            },
        }
    }
}

async fn resources(
    client: &Client,
    scope: &Scope,
) -> Result<Vec<TencentCertificate>, InspectError> {
    let mut list = match scope {
        Scope::One { namespace, name } => {
            let api: Api<TencentCertificate> = Api::namespaced(client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(cr)) => vec![cr],
                Ok(None) => {
                    return Err(InspectError::NotFound {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    });
                }
                Err(e) => {
                    return Err(InspectError::kube(
                        format!("get TencentCertificate {namespace}/{name}"),
                        e,
                    ));
                }
            }
        }
        Scope::Namespace(namespace) => {
            let api: Api<TencentCertificate> = Api::namespaced(client.clone(), namespace);
            api.list(&ListParams::default())
                .await
                .map_err(|e| {
                    InspectError::kube(format!("list TencentCertificates in {namespace}"), e)
                })?
                .items
        }
        Scope::AllNamespaces => {
            let api: Api<TencentCertificate> = Api::all(client.clone());
            api.list(&ListParams::default())
                .await
                .map_err(|e| InspectError::kube("list TencentCertificates", e))?
                .items
        }
    };
    list.sort_by_key(|cr| (cr.namespace().unwrap_or_default(), cr.name_any()));
    Ok(list)
}

/// The views of the resources in `scope`, sorted by namespace and name.
pub async fn views(
    client: &Client,
    scope: &Scope,
    now: jiff::Timestamp,
) -> Result<Vec<ResourceView>, InspectError> {
    let crs = resources(client, scope).await?;
    // Events are listed once per namespace and matched to resources here.
    let mut events: BTreeMap<String, Result<Vec<Event>, String>> = BTreeMap::new();
    let mut views = Vec::with_capacity(crs.len());
    for cr in &crs {
        let namespace = cr.namespace().unwrap_or_default();
        if !events.contains_key(&namespace) {
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            let listed = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(|e| e.to_string());
            events.insert(namespace.clone(), listed);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let secret_name = cr.secret_name();
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| InspectError::kube(format!("get Secret {namespace}/{secret_name}"), e))?;
        let namespace_events = match events.get(&namespace) {
            Some(Ok(list)) => Ok(list.as_slice()),
            Some(Err(error)) => Err(error.clone()),
            None => Ok(&[][..]),
        };
        views.push(ResourceView::build(
            cr,
            secret.as_ref(),
            namespace_events,
            now,
        ));
    }
    Ok(views)
}

/// One refresh request `renew` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    pub namespace: String,
    pub name: String,
    pub requested_at: String,
}

/// Sets `tencentcert.io/refresh-requested-at` on the resources in `scope`: the operator downloads them again
/// at once, ahead of routine refreshes.
pub async fn renew(
    client: &Client,
    scope: &Scope,
    now: jiff::Timestamp,
) -> Result<Vec<Renewed>, InspectError> {
    let requested_at = crate::status::format_time(now);
    let patch = serde_json::json!({
        "metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: requested_at}}
    });
    let mut renewed = Vec::new();
    for cr in resources(client, scope).await? {
        let namespace = cr.namespace().unwrap_or_default();
        let name = cr.name_any();
        let api: Api<TencentCertificate> = Api::namespaced(client.clone(), &namespace);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                InspectError::kube(format!("annotate TencentCertificate {namespace}/{name}"), e)
            })?;
        renewed.push(Renewed {
            namespace,
            name,
            requested_at: requested_at.clone(),
        });
    }
    Ok(renewed)
}
