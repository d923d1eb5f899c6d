//! Gateway API (`gateway.networking.k8s.io/v1` Gateway) → [`Route`]: listeners terminating TLS with
//! `tls.certificateRefs` to Secrets in the Gateway's namespace. Only the fields the shim reads are typed
//! (unknown fields are ignored); [`Gateway::crd`] is a minimal CRD for tests, not the Gateway API's own.

use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plan::{Route, RouteKind, TlsEntry};

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "gateways";

/// The part of a Gateway the shim reads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub port: i32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough` (no certificate on the Gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<SecretObjectReference>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to a core Secret in `namespace` (group `""` and kind `Secret`, the defaults). References to
/// other namespaces need a ReferenceGrant and are the other namespace's business: not generated here.
fn is_local_secret(reference: &SecretObjectReference, namespace: &str) -> bool {
    reference.group.as_deref().unwrap_or("").is_empty()
        && reference.kind.as_deref().unwrap_or("Secret") == "Secret"
        && reference
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == namespace)
}

/// What the shim reads of a Gateway; `None` for an object without namespace or uid.
pub fn route_of(gateway: &Gateway) -> Option<Route> {
    let namespace = gateway.namespace()?;
    let tls = gateway
        .spec
        .listeners
        .iter()
        .filter_map(|listener| Some((listener, listener.tls.as_ref()?)))
        .filter(|(_, tls)| tls.mode.as_deref().unwrap_or("Terminate") == "Terminate")
        .flat_map(|(listener, tls)| {
            tls.certificate_refs
                .iter()
                .filter(|r| is_local_secret(r, &namespace))
                .map(|r| TlsEntry {
                    secret_name: r.name.clone(),
                    hosts: listener.hostname.iter().cloned().collect(),
                })
        })
        .collect();
    Some(Route {
        kind: RouteKind::Gateway,
        name: gateway.name_any(),
        uid: gateway.uid()?,
        annotations: gateway.annotations().clone(),
        namespace,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_listeners_with_local_secret_refs_become_entries() {
        let gateway: Gateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "web", "uid": "g1",
                         "annotations": {"tencentcert.io/select-by-host": "true"}},
            "spec": {"gatewayClassName": "eg", "listeners": [
                {"name": "https", "hostname": "shop.example.com", "port": 443, "protocol": "HTTPS",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": "shop-tls"}]}},
                {"name": "https-api", "hostname": "api.example.com", "port": 443, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "api-tls"},
                                             {"name": "elsewhere", "namespace": "other"},
                                             {"name": "cm", "kind": "ConfigMap"}]}},
                {"name": "pass", "hostname": "db.example.com", "port": 8443, "protocol": "TLS",
                 "tls": {"mode": "Passthrough"}},
                {"name": "http", "port": 80, "protocol": "HTTP"}
            ]},
            "status": {"conditions": []}
        }))
        .unwrap();
        let route = route_of(&gateway).unwrap();
        assert_eq!(route.kind, RouteKind::Gateway);
        assert_eq!(
            route.tls,
            [
                TlsEntry {
                    secret_name: "shop-tls".into(),
                    hosts: vec!["shop.example.com".into()]
                },
                TlsEntry {
                    secret_name: "api-tls".into(),
                    hosts: vec!["api.example.com".into()]
                },
            ]
        );
    }
}
