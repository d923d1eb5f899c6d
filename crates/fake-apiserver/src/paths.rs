//! URL path → what is addressed.
//!
//! The Kubernetes REST layout is regular enough to parse generically, which is what lets the fake accept any
//! resource without a schema: `/api/v1/…` is the core group, `/apis/{group}/{version}/…` every other one, and
//! after that `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`.

use crate::status::ApiError;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version,
    Healthz,
    /// `GET /api`: the core group's versions.
    CoreVersions,
    /// `GET /apis`: the API groups.
    Groups,
    /// `GET /api/v1`, `GET /apis/{group}/{version}`: resources of one group version.
    Resources {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
    /// `GET /openapi/v2`.
    OpenApiV2,
    /// `GET /openapi/v3`: the index of group-version documents.
    OpenApiV3Index,
    /// `GET /openapi/v3/api/v1`, `GET /openapi/v3/apis/{group}/{version}`.
    OpenApiV3 {
        group: String,
        version: String,
    },
}

/// A resource URL, collection or object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// `""` for the core API.
    pub group: String,
    pub version: String,
    pub plural: String,
    /// `Some` on `/namespaces/{ns}/…` paths; `None` for cluster-scoped or all-namespace requests.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/api/v1/watch/…` form, which means `?watch=true`.
    pub legacy_watch: bool,
}

impl ResourcePath {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Subresources of `namespaces`; `/api/v1/namespaces/{ns}/{x}` means these rather than a collection.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

pub fn parse(path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Target::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Target::Healthz),
        ["openapi", "v2"] => return Ok(Target::OpenApiV2),
        ["openapi", "v3"] => return Ok(Target::OpenApiV3Index),
        ["openapi", "v3", "api", version] => {
            return Ok(Target::OpenApiV3 {
                group: String::new(),
                version: version.to_string(),
            });
        }
        ["openapi", "v3", "apis", group, version] => {
            return Ok(Target::OpenApiV3 {
                group: group.to_string(),
                version: version.to_string(),
            });
        }
        ["api"] => return Ok(Target::CoreVersions),
        ["apis"] => return Ok(Target::Groups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let resource =
        |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
            Ok(Target::Resource(ResourcePath {
                group: group.to_string(),
                version: version.to_string(),
                plural: plural.to_string(),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                subresource: sub.map(str::to_string),
                legacy_watch,
            }))
        };
    match rest {
        [] if !legacy_watch => Ok(Target::Resources {
            group: group.to_string(),
            version: version.to_string(),
        }),
        ["namespaces", ns, sub] if group.is_empty() && NAMESPACE_SUBRESOURCES.contains(sub) => {
            resource(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural, tail @ ..] => match tail {
            [] => resource(Some(ns), plural, None, None),
            [name] => resource(Some(ns), plural, Some(name), None),
            [name, sub] => resource(Some(ns), plural, Some(name), Some(sub)),
            _ => Err(not_found()),
        },
        [plural] => resource(None, plural, None, None),
        [plural, name] => resource(None, plural, Some(name), None),
        [plural, name, sub] => resource(None, plural, Some(name), Some(sub)),
        _ => Err(not_found()),
    }
}

/// Resources the real server serves cluster-scoped. Anything else is namespaced unless first seen (or
/// declared by a CRD) as cluster-scoped.
pub fn builtin_cluster_scoped(group: &str, plural: &str) -> bool {
    matches!(
        (group, plural),
        (
            "",
            "namespaces" | "nodes" | "persistentvolumes" | "componentstatuses"
        ) | ("apiextensions.k8s.io", "customresourcedefinitions")
            | ("apiregistration.k8s.io", "apiservices")
            | (
                "rbac.authorization.k8s.io",
                "clusterroles" | "clusterrolebindings"
            )
            | (
                "storage.k8s.io",
                "storageclasses" | "csidrivers" | "csinodes" | "volumeattachments"
            )
            | ("scheduling.k8s.io", "priorityclasses")
            | ("node.k8s.io", "runtimeclasses")
            | ("networking.k8s.io", "ingressclasses")
            | ("certificates.k8s.io", "certificatesigningrequests")
            | (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations" | "validatingwebhookconfigurations"
            )
    )
}

/// Whether a group is served by kube-apiserver itself rather than by CRDs. Several behaviours differ (the
/// DELETE answer, strategic merge patch support, unconditional PUT), and the real server decides by whether a
/// resource is built in; the naming convention is the closest generic stand-in.
pub fn builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// Built-in resources that have a `/status` subresource (custom resources declare theirs in the CRD or
/// through the builder).
pub fn builtin_status_subresource(group: &str, plural: &str) -> bool {
    matches!(
        (group, plural),
        (
            "",
            "pods"
                | "namespaces"
                | "services"
                | "nodes"
                | "persistentvolumes"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        ) | (
            "apps",
            "deployments" | "statefulsets" | "daemonsets" | "replicasets"
        ) | ("batch", "jobs" | "cronjobs")
            | ("apiextensions.k8s.io", "customresourcedefinitions")
            | ("networking.k8s.io", "ingresses")
            | ("policy", "poddisruptionbudgets")
            | ("autoscaling", "horizontalpodautoscalers")
            | ("certificates.k8s.io", "certificatesigningrequests")
    )
}

/// `kind` of well-known resources, so an empty list or a bookmark still names the right kind before any
/// object of that resource was stored.
pub fn builtin_kind(group: &str, plural: &str) -> Option<&'static str> {
    Some(match (group, plural) {
        ("", "secrets") => "Secret",
        ("", "configmaps") => "ConfigMap",
        ("", "namespaces") => "Namespace",
        ("", "events") => "Event",
        ("", "pods") => "Pod",
        ("", "services") => "Service",
        ("", "serviceaccounts") => "ServiceAccount",
        ("", "nodes") => "Node",
        ("events.k8s.io", "events") => "Event",
        ("coordination.k8s.io", "leases") => "Lease",
        ("apps", "deployments") => "Deployment",
        ("apiextensions.k8s.io", "customresourcedefinitions") => "CustomResourceDefinition",
        ("networking.k8s.io", "ingresses") => "Ingress",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn core_and_group_paths() {
        let r = res("/api/v1/namespaces/ns/secrets/s");
        assert_eq!((r.group.as_str(), r.plural.as_str()), ("", "secrets"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("ns"), Some("s"))
        );
        let r = res("/apis/tencentcert.io/v1/namespaces/ns/tencentcertificates/c/status");
        assert_eq!(r.group, "tencentcert.io");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = res("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y.z");
        assert_eq!((r.namespace, r.name.as_deref()), (None, Some("x.y.z")));
        let r = res("/api/v1/secrets");
        assert_eq!((r.namespace, r.name), (None, None));
    }

    #[test]
    fn namespace_object_and_subresources() {
        let r = res("/api/v1/namespaces/ns");
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ns"), None)
        );
        let r = res("/api/v1/namespaces/ns/status");
        assert_eq!(
            (r.plural.as_str(), r.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let r = res("/api/v1/namespaces/ns/configmaps");
        assert_eq!(
            (r.plural.as_str(), r.namespace.as_deref()),
            ("configmaps", Some("ns"))
        );
    }

    #[test]
    fn legacy_watch_and_misc() {
        assert!(res("/api/v1/watch/namespaces/ns/pods").legacy_watch);
        assert_eq!(parse("/version").unwrap(), Target::Version);
        assert_eq!(parse("/healthz").unwrap(), Target::Healthz);
        assert!(matches!(
            parse("/apis/g/v1").unwrap(),
            Target::Resources { .. }
        ));
        assert_eq!(parse("/nope").unwrap_err().code, 404);
        assert_eq!(parse("/api/v1/namespaces/a/b/c/d/e").unwrap_err().code, 404);
    }
}
