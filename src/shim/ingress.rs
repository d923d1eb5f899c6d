//! Ingress (`networking.k8s.io/v1`) → [`Route`]: every `spec.tls[]` entry with a `secretName`.

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;

use super::plan::{Route, RouteKind, TlsEntry};

/// What the shim reads of an Ingress; `None` for an object without namespace or uid (never stored so).
pub fn route_of(ingress: &Ingress) -> Option<Route> {
    let tls = ingress
        .spec
        .as_ref()
        .and_then(|spec| spec.tls.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|tls| {
            let secret_name = tls.secret_name.clone().filter(|s| !s.is_empty())?;
            Some(TlsEntry {
                secret_name,
                hosts: tls.hosts.clone().unwrap_or_default(),
            })
        })
        .collect();
    Some(Route {
        kind: RouteKind::Ingress,
        namespace: ingress.namespace()?,
        name: ingress.name_any(),
        uid: ingress.uid()?,
        annotations: ingress.annotations().clone(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_entries_with_a_secret_become_route_entries() {
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "namespace": "web", "uid": "u1",
                         "annotations": {"tencentcert.io/certificate-id": "aBcD1234"}},
            "spec": {"tls": [
                {"hosts": ["shop.example.com"], "secretName": "shop-tls"},
                {"hosts": ["default.example.com"]},
                {"secretName": "bare-tls"}
            ]}
        }))
        .unwrap();
        let route = route_of(&ingress).unwrap();
        assert_eq!(route.kind, RouteKind::Ingress);
        assert_eq!(
            (route.namespace.as_str(), route.uid.as_str()),
            ("web", "u1")
        );
        assert_eq!(
            route.tls,
            [
                TlsEntry {
                    secret_name: "shop-tls".into(),
                    hosts: vec!["shop.example.com".into()]
                },
                TlsEntry {
                    secret_name: "bare-tls".into(),
                    hosts: vec![]
                }
            ]
        );
        assert_eq!(
            route.annotations["tencentcert.io/certificate-id"],
            "aBcD1234"
        );
        let no_uid: Ingress = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "x", "namespace": "web"}}),
        )
        .unwrap();
        assert_eq!(route_of(&no_uid), None);
    }
}
