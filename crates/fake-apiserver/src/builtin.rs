//! The built-in resources the server announces from the start, as a real API server does: discovery lists
//! them before any object exists (so `kubectl get ingress` or `kubectl create namespace` resolve on an empty
//! server), and the OpenAPI documents describe them. Any other resource is still accepted generically and
//! appears once first written or declared by a CRD.

/// One built-in resource of discovery.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

const fn builtin(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
    }
}

/// What an operator, its chart and its examples touch.
pub const BUILTINS: &[Builtin] = &[
    builtin(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
    ),
    builtin("", "v1", "secrets", "secret", "Secret", true, &[]),
    builtin(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
    ),
    builtin("", "v1", "events", "event", "Event", true, &["ev"]),
    builtin(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
    ),
    builtin("", "v1", "services", "service", "Service", true, &["svc"]),
    builtin("", "v1", "pods", "pod", "Pod", true, &["po"]),
    builtin(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
    ),
    builtin(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
    ),
    builtin(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
    ),
    builtin(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        &["ing"],
    ),
    builtin(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        &[],
    ),
    builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
    ),
];
