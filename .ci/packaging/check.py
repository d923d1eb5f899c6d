#!/usr/bin/env python3
"""Structural checks behind .ci/packaging-checks. Run with the packaging venv's Python (needs PyYAML).

  check.py rendered VALUES_FILE|- RENDERED.yaml   Deployment, RBAC (a small RBAC authorizer), Service,
                                                 ServiceMonitor, PDB, CRDs, the helm test hook and credentials
                                                 handling agree with the values, and the operator gets exactly
                                                 what it calls.
  check.py kv-output KV_OUTPUT RENDERED.yaml KIND...   kubernetes-validate judged every object, and only
                                                 the listed kinds (custom resources) went unvalidated.
  check.py crd-schema CRD.yaml OUT.json           the CRD's openAPIV3Schema as a strict JSON Schema for CRs.
  check.py split RENDERED.yaml DIR GROUP          custom resources of API group GROUP into DIR/cr-*.yaml, the
                                                 rest into DIR/core-*.yaml; prints the counts.
  check.py compare CHART.yaml KUSTOMIZE.yaml      the kustomize output defines every chart object, identically
                                                 (Helm's own labels aside), and nothing else but a Namespace.
  check.py rule-groups RENDERED.yaml|- OUT.yaml   the one PrometheusRule's spec (its groups) as a Prometheus
                                                 rules file, for promtool.
  check.py dashboard-rules DASHBOARD.json OUT.yaml   every query of the Grafana dashboard (Grafana variables
                                                 filled in) as a recording rule, for `promtool check rules`
                                                 to parse with Prometheus' own parser.
  check.py crds RENDERED.yaml|- CRD.yaml... keep|no-keep   templates/crds.yaml: each generated CRD with its spec,
                                                 the chart's labels, resource-policy keep as asked.
  check.py env RENDERED.yaml                      the operator container's environment as NAME=VALUE lines
                                                 (downward-API fields filled in as the kubelet would), then a
                                                 line "ARGS <args>".

Each prints what it checked and exits 1 on any failure.
"""

import base64
import copy
import json
import os
import re
import sys

import yaml

CHART = os.path.join(os.path.dirname(__file__), "..", "..", "charts", "tencent-cert-operator")
GROUP = "tencentcert.io"

# What the operator calls (README "RBAC"): (API group, resource) -> verbs.
OPERATOR_CALLS = {
    (GROUP, "tencentcertificates"): {"get", "list", "watch"},
    (GROUP, "tencentcertificates/status"): {"patch"},
    (GROUP, "tencentcertificates/finalizers"): {"update"},
    (GROUP, "tencentcertificatepushes"): {"get", "list", "watch"},
    (GROUP, "tencentcertificatepushes/status"): {"patch"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
# The route shims (routeShims.*): generated TencentCertificates, and reading the routes.
SHIM_CALLS = {(GROUP, "tencentcertificates"): {"create", "patch", "delete"}}
INGRESS_CALLS = {("networking.k8s.io", "ingresses"): {"get", "list", "watch"}}
GATEWAY_CALLS = {("gateway.networking.k8s.io", "gateways"): {"get", "list", "watch"}}
# ClusterTencentCertificates (all-namespaces installs only): the resources, and the namespaces they target.
CLUSTER_CALLS = {
    (GROUP, "clustertencentcertificates"): {"get", "list", "watch"},
    (GROUP, "clustertencentcertificates/status"): {"patch"},
    (GROUP, "clustertencentcertificates/finalizers"): {"update"},
    ("", "namespaces"): {"get", "list", "watch"},
}


def operator_calls(values):
    """What the operator calls in the watched namespaces with these values."""
    calls = {k: set(v) for k, v in OPERATOR_CALLS.items()}
    shims = values.get("routeShims", {})
    extra = []
    if shims.get("ingress") or shims.get("gateway"):
        extra.append(SHIM_CALLS)
    if shims.get("ingress"):
        extra.append(INGRESS_CALLS)
    if shims.get("gateway"):
        extra.append(GATEWAY_CALLS)
    if not values.get("watchNamespaces"):
        extra.append(CLUSTER_CALLS)
    for more in extra:
        for k, v in more.items():
            calls.setdefault(k, set()).update(v)
    return calls


CREDENTIALS_CALLS = {("", "secrets"): {"get", "list", "watch"}}
# metrics.secure: reviews of scrapers' tokens, cluster-scoped calls whatever watchNamespaces says.
METRICS_AUTH_CALLS = {
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}
# The elector (src/leader/elector.rs): get and create the Lease, then patch it (merge, resourceVersion-conditional).
LEASE_CALLS = {("coordination.k8s.io", "leases"): {"get", "create", "patch"}}


class Failures:
    def __init__(self):
        self.items = []
        self.checked = 0

    def check(self, ok, what):
        self.checked += 1
        if not ok:
            self.items.append(what)
            print(f"  FAIL {what}")
        return ok

    def finish(self, label):
        if self.items:
            print(f"  {label}: {len(self.items)} of {self.checked} checks failed")
            sys.exit(1)
        print(f"  {label}: {self.checked} checks passed")


def load_docs(path):
    with open(path) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def deep_merge(base, override):
    """Helm's coalescing for our purposes: maps merge, everything else replaces, null deletes."""
    for key, value in override.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def values_for(path):
    with open(os.path.join(CHART, "values.yaml")) as handle:
        values = yaml.safe_load(handle)
    if path != "-":
        with open(path) as handle:
            deep_merge(values, yaml.safe_load(handle) or {})
    return values


def key(obj):
    meta = obj.get("metadata", {})
    return (obj.get("kind"), meta.get("namespace", ""), meta.get("name"))


def fullname(values, release):
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:63].rstrip("-")
    name = values.get("nameOverride") or "tencent-cert-operator"
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


# ---------------------------------------------------------------------------------------------------------
# RBAC: which requests a ServiceAccount may make, evaluated as the API server's RBAC authorizer does.


class Authorizer:
    def __init__(self, docs, namespace, name):
        roles = {}
        for doc in docs:
            if doc["kind"] in ("Role", "ClusterRole"):
                roles[(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])] = doc.get("rules") or []
        self.grants = []  # (namespace or None for every namespace, rule, binding)
        self.dangling = []
        for doc in docs:
            if doc["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if not any(
                s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
                for s in doc.get("subjects") or []
            ):
                continue
            ref = doc["roleRef"]
            scope = doc["metadata"].get("namespace") if doc["kind"] == "RoleBinding" else None
            role_ns = scope if ref["kind"] == "Role" else None
            rules = roles.get((ref["kind"], role_ns, ref["name"]))
            if rules is None:
                self.dangling.append(f"{doc['kind']} {doc['metadata']['name']} -> {ref['kind']} {ref['name']}")
                continue
            for rule in rules:
                self.grants.append((scope, rule, doc["metadata"]["name"]))

    def allowed(self, verb, group, resource, namespace=None, name=None):
        """namespace None: a request across all namespaces (or for a cluster-scoped object)."""
        for scope, rule, _ in self.grants:
            if scope is not None and scope != namespace:
                continue
            if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
                continue
            if verb not in rule.get("verbs", []):
                continue
            names = rule.get("resourceNames")
            if names and name not in names:
                continue
            return True
        return False


def check_rbac(f, docs, values, release_ns, sa_name, credentials, lease):
    watched = values["watchNamespaces"]
    calls = operator_calls(values)
    authz = Authorizer(docs, release_ns, sa_name)
    f.check(not authz.dangling, f"bindings refer to rendered roles (dangling: {authz.dangling})")
    for doc in docs:
        for rule in doc.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                f.check("*" not in (rule.get(field) or []), f"{doc['kind']} {doc['metadata']['name']}: no '*' in {field}")

    # Everything the operator calls is allowed.
    scopes = watched or [None, "web", "kube-system"]
    for scope in scopes:
        for (group, resource), verbs in calls.items():
            for verb in sorted(verbs):
                where = scope or "all namespaces"
                f.check(authz.allowed(verb, group, resource, scope), f"allowed: {verb} {group or 'core'}/{resource} in {where}")
    if credentials:
        cred_ns, cred_name = credentials
        for verb in ("get", "list", "watch"):
            f.check(authz.allowed(verb, "", "secrets", cred_ns, cred_name), f"allowed: {verb} secret {cred_ns}/{cred_name} (default credentials)")
    secure = bool(values["metrics"].get("secure"))
    if secure:
        for (group, resource), verbs in METRICS_AUTH_CALLS.items():
            for verb in verbs:
                f.check(authz.allowed(verb, group, resource), f"allowed: {verb} {group}/{resource} (metrics.secure)")
    if lease:
        lease_ns, lease_name = lease
        f.check(authz.allowed("create", "coordination.k8s.io", "leases", lease_ns), f"allowed: create leases in {lease_ns}")
        for verb in ("get", "patch"):
            f.check(authz.allowed(verb, "coordination.k8s.io", "leases", lease_ns, lease_name), f"allowed: {verb} lease {lease_ns}/{lease_name}")

    # Nothing else is granted: every rule bound to the operator is one of its calls, in the right place.
    for scope, rule, binding in authz.grants:
        names = rule.get("resourceNames")
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    what = f"granted by {binding}: {verb} {group or 'core'}/{resource} in {scope or 'all namespaces'}" + (f" names {names}" if names else "")
                    if (group, resource) in METRICS_AUTH_CALLS:
                        ok = secure and scope is None and verb in METRICS_AUTH_CALLS[(group, resource)]
                    elif (group, resource) in LEASE_CALLS:
                        ok = lease is not None and scope == lease[0] and verb in LEASE_CALLS[(group, resource)] and (verb == "create" or names == [lease[1]])
                    elif scope is None or scope in watched:
                        ok = (scope is None) == (not watched) and verb in calls.get((group, resource), set())
                    else:
                        ok = (
                            credentials is not None
                            and scope == credentials[0]
                            and names == [credentials[1]]
                            and verb in CREDENTIALS_CALLS.get((group, resource), set())
                        )
                    f.check(ok, f"needed: {what}")

    # Spot checks of what must be refused.
    denied = [
        ("get", "", "configmaps", "web", None),
        ("list", "", "pods", None, None),
        ("update", "", "secrets", "web", None),
        ("deletecollection", "", "secrets", "web", None),
        ("update", GROUP, "tencentcertificates/status", "web", None),
        ("update", GROUP, "tencentcertificates", "web", None),
        ("create", GROUP, "clustertencentcertificates", None, None),
        ("update", GROUP, "clustertencentcertificates", None, None),
        ("delete", "", "namespaces", None, None),
        ("update", "networking.k8s.io", "ingresses", "web", None),
        ("patch", "networking.k8s.io", "ingresses", "web", None),
        ("update", "networking.k8s.io", "ingresses/finalizers", "web", None),
        ("patch", "gateway.networking.k8s.io", "gateways", "web", None),
    ]
    shims = values.get("routeShims", {})
    if not (shims.get("ingress") or shims.get("gateway")):
        denied += [
            ("create", GROUP, "tencentcertificates", "web", None),
            ("delete", GROUP, "tencentcertificates", "web", None),
        ]
    if not shims.get("ingress"):
        denied += [("list", "networking.k8s.io", "ingresses", None, None)]
    if not shims.get("gateway"):
        denied += [("list", "gateway.networking.k8s.io", "gateways", None, None), ("list", "gateway.networking.k8s.io", "gateways", "web", None)]
    if watched:
        denied += [
            ("list", "", "secrets", None, None),
            ("get", "", "secrets", "kube-system", "anything"),
            ("list", GROUP, "tencentcertificates", None, None),
            ("create", "events.k8s.io", "events", "kube-system", None),
            ("list", "", "namespaces", None, None),
            ("list", GROUP, "clustertencentcertificates", None, None),
        ]
        if credentials and credentials[0] not in watched:
            denied += [
                ("list", "", "secrets", credentials[0], None),
                ("get", "", "secrets", credentials[0], credentials[1] + "-other"),
            ]
    if lease:
        denied += [
            ("get", "coordination.k8s.io", "leases", lease[0], lease[1] + "-other"),
            ("patch", "coordination.k8s.io", "leases", lease[0], lease[1] + "-other"),
            ("list", "coordination.k8s.io", "leases", lease[0], None),
            ("create", "coordination.k8s.io", "leases", "default" if lease[0] != "default" else "kube-public", None),
        ]
    else:
        denied += [("create", "coordination.k8s.io", "leases", release_ns, None)]
    if not secure:
        denied += [(verb, group, resource, None, None) for (group, resource), verbs in METRICS_AUTH_CALLS.items() for verb in verbs]
    for verb, group, resource, namespace, name in denied:
        where = namespace or "all namespaces"
        f.check(not authz.allowed(verb, group, resource, namespace, name), f"denied: {verb} {group or 'core'}/{resource} in {where}" + (f" name {name}" if name else ""))
    return authz


# ---------------------------------------------------------------------------------------------------------


def is_hook(doc):
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def check_test_hook(f, hooks, values, release_ns, full):
    """The `helm test` hook: a Pod running `check` with the operator's image and securityContext, as a
    ServiceAccount that may list EndpointSlices in the release namespace and nothing else."""
    wanted = values["helmTest"]["enabled"] and values["metrics"]["service"]["enabled"]
    pods = [d for d in hooks if d["kind"] == "Pod"]
    if not f.check(len(pods) == (1 if wanted else 0), f"helm test Pod rendered iff helmTest.enabled and metrics.service.enabled ({wanted})"):
        return
    f.check(all(d["metadata"]["annotations"]["helm.sh/hook"] == "test" for d in hooks), "every hook is a test hook")
    if not pods:
        f.check(not hooks, "no test hook objects")
        return
    pod = pods[0]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    f.check(args[0] == "check" and args[args.index("--namespace") + 1] == release_ns, "the test runs `check` on the release namespace")
    f.check(args[args.index("--service") + 1] == f"{full[:55].rstrip('-')}-metrics", "the test asks the metrics Service's endpoints")
    f.check(pod["spec"]["restartPolicy"] == "Never", "the test Pod runs once")
    labels = pod["metadata"].get("labels") or {}
    operator_name = values.get("nameOverride") or "tencent-cert-operator"
    f.check(labels.get("app.kubernetes.io/name") != operator_name, "the test Pod does not carry the operator's selector labels")
    sc = container.get("securityContext", {})
    f.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False, "the test container is restricted")
    sa = pod["spec"]["serviceAccountName"]
    authz = Authorizer(hooks, release_ns, sa)
    grants = [(scope, tuple(r.get("apiGroups", [])), tuple(r.get("resources", [])), tuple(r.get("verbs", []))) for scope, r, _ in authz.grants]
    f.check(grants == [(release_ns, ("discovery.k8s.io",), ("endpointslices",), ("list",))], f"the test may list EndpointSlices in the release namespace only ({grants})")


def cmd_rendered(values_path, rendered_path, release="tencent-cert-operator", release_ns="tencent-cert-operator"):
    values = values_for(values_path)
    docs = load_docs(rendered_path)
    f = Failures()
    hooks = [d for d in docs if is_hook(d)]
    docs = [d for d in docs if not is_hook(d)]
    check_test_hook(f, hooks, values, release_ns, fullname(values, release))
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    f.check(len(crds) == (3 if values["crds"]["enabled"] else 0), "the three CRDs rendered iff crds.enabled")
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    full = fullname(values, release)
    leader = bool(values["leaderElection"].get("enabled")) or values["replicaCount"] > 1
    creds = values["defaultCredentials"]
    created_credentials = bool(creds.get("secretId") or creds.get("secretKey") or creds.get("token"))
    credentials = None
    if created_credentials:
        credentials = (release_ns, f"{full}-default-credentials")
    elif creds["existingSecret"].get("name"):
        credentials = (creds["existingSecret"].get("namespace") or release_ns, creds["existingSecret"]["name"])
    lease = (values["leaderElection"].get("namespace") or release_ns, values["leaderElection"]["leaseName"]) if leader else None

    # The Deployment.
    deployments = by_kind.get("Deployment", [])
    if not f.check(len(deployments) == 1, "one Deployment"):
        f.finish("rendered")
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    containers = spec["containers"]
    f.check(len(containers) == 1, "one container")
    container = containers[0]
    f.check(container.get("args") == ["run"], "container args are [run]")
    f.check(deployment["spec"]["replicas"] == values["replicaCount"], "replicas from replicaCount")
    strategy = deployment["spec"].get("strategy", {}).get("type")
    f.check(strategy == ("RollingUpdate" if leader else "Recreate"), f"strategy {strategy} fits leader election {leader}")
    labels = pod["metadata"]["labels"]
    f.check(
        all(labels.get(k) == v for k, v in deployment["spec"]["selector"]["matchLabels"].items()),
        "Deployment selector matches its pod labels",
    )
    env = {e["name"]: e for e in container.get("env", [])}
    names = [e["name"] for e in container.get("env", [])]
    f.check(len(names) == len(set(names)), f"no duplicate env vars ({names})")

    def env_value(name):
        return env.get(name, {}).get("value")

    def env_field(name):
        return env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")

    f.check(env_field("POD_NAME") == "metadata.name", "POD_NAME from the downward API")
    f.check(env_field("POD_NAMESPACE") == "metadata.namespace", "POD_NAMESPACE from the downward API")
    f.check(env_value("RUST_LOG") == values["logLevel"], "RUST_LOG = logLevel")
    f.check(env_value("OPERATOR_LOG_FORMAT") == values["logFormat"], "OPERATOR_LOG_FORMAT = logFormat")
    f.check(env_value("OPERATOR_METRICS_ADDR") == f"0.0.0.0:{values['metrics']['port']}", "OPERATOR_METRICS_ADDR on metrics.port")
    f.check(env_value("TENCENTCLOUD_ENDPOINT") == values["tencentEndpoint"], "TENCENTCLOUD_ENDPOINT = tencentEndpoint")
    f.check(float(env_value("OPERATOR_RATE_LIMIT")) == float(values["rateLimit"]), "OPERATOR_RATE_LIMIT = rateLimit")
    f.check(int(env_value("OPERATOR_CONCURRENCY")) == values["concurrency"], "OPERATOR_CONCURRENCY = concurrency")
    f.check(env_value("OPERATOR_INGRESS_SHIM") == str(values["routeShims"]["ingress"]).lower(), "OPERATOR_INGRESS_SHIM = routeShims.ingress")
    f.check(env_value("OPERATOR_GATEWAY_SHIM") == str(values["routeShims"]["gateway"]).lower(), "OPERATOR_GATEWAY_SHIM = routeShims.gateway")
    watched = values["watchNamespaces"]
    f.check(env_value("OPERATOR_NAMESPACES") == (",".join(watched) if watched else None), "OPERATOR_NAMESPACES = watchNamespaces (absent: all)")
    f.check(
        env_value("OPERATOR_DEFAULT_CREDENTIALS") == ("/".join(credentials) if credentials else None),
        "OPERATOR_DEFAULT_CREDENTIALS names the default credentials Secret",
    )
    pod_identity = bool(creds.get("podIdentity", {}).get("enabled"))
    f.check(
        env_value("OPERATOR_DEFAULT_CREDENTIALS_NAMESPACES")
        == (",".join(creds["allowedNamespaces"]) if credentials or pod_identity else None),
        "OPERATOR_DEFAULT_CREDENTIALS_NAMESPACES = allowedNamespaces",
    )
    f.check(
        env_value("OPERATOR_DEFAULT_CREDENTIALS_POD_IDENTITY") == ("true" if pod_identity else None),
        f"OPERATOR_DEFAULT_CREDENTIALS_POD_IDENTITY set iff podIdentity.enabled ({pod_identity})",
    )
    f.check(
        env_value("OPERATOR_DEFAULT_CREDENTIALS_ROLE_ARN") == ((creds.get("roleArn") or None) if credentials else None),
        "OPERATOR_DEFAULT_CREDENTIALS_ROLE_ARN = roleArn (with a Secret)",
    )
    role_in_use = bool(creds.get("roleArn")) or pod_identity
    f.check(
        env_value("OPERATOR_ROLE_DURATION_SECONDS") == (str(creds["roleDurationSeconds"]) if role_in_use else None),
        "OPERATOR_ROLE_DURATION_SECONDS = roleDurationSeconds when a role is used",
    )
    f.check(
        env_value("TENCENTCLOUD_STS_ENDPOINT") == (values.get("stsEndpoint") or None),
        "TENCENTCLOUD_STS_ENDPOINT = stsEndpoint (absent: derived)",
    )
    f.check(env_value("OPERATOR_LEADER_ELECT") == ("true" if leader else None), f"OPERATOR_LEADER_ELECT set iff leader election ({leader})")
    if leader:
        if values["leaderElection"].get("namespace"):
            f.check(env_value("OPERATOR_LEADER_ELECTION_NAMESPACE") == lease[0], "Lease namespace from values")
        else:
            f.check(env_field("OPERATOR_LEADER_ELECTION_NAMESPACE") == "metadata.namespace", "Lease namespace: the pod's own")
        f.check(env_value("OPERATOR_LEADER_ELECTION_LEASE_NAME") == lease[1], "Lease name from values")
    for extra in values.get("extraEnv") or []:
        f.check(extra["name"] in env, f"extraEnv {extra['name']} passed")

    # Security: the Pod Security Standard "restricted", and the nonroot user of the distroless image.
    pod_sc = spec.get("securityContext", {})
    sc = container.get("securityContext", {})

    def effective(field):
        return sc.get(field, pod_sc.get(field))

    f.check(effective("runAsNonRoot") is True, "runAsNonRoot")
    f.check(effective("runAsUser") == 65532, "runAsUser 65532")
    f.check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    f.check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    f.check("ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities drop ALL")
    f.check((effective("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    f.check(spec.get("serviceAccountName") == (values["serviceAccount"].get("name") or full), "serviceAccountName")
    f.check(spec.get("automountServiceAccountToken") is not False, "service account token mounted")
    ports = {p["name"]: p for p in container.get("ports", [])}
    f.check(ports.get("metrics", {}).get("containerPort") == values["metrics"]["port"], "container port 'metrics' = metrics.port")
    secure = bool(values["metrics"].get("secure"))
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        f.check(get.get("path") == path and get.get("port") == "metrics", f"{probe} GET {path} on port metrics")
        f.check(get.get("scheme", "HTTP") == ("HTTPS" if secure else "HTTP"), f"{probe} over {'HTTPS' if secure else 'HTTP'} (metrics.secure={secure})")
    f.check(env_value("OPERATOR_METRICS_SECURE") == ("true" if secure else None), "OPERATOR_METRICS_SECURE set iff metrics.secure")
    f.check(
        env_value("TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT") == ("true" if values.get("allowInsecureEndpoint") else None),
        "TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT set iff allowInsecureEndpoint",
    )
    cert_secret = values["metrics"].get("certSecret") if secure else ""
    cert_dir = env_value("OPERATOR_METRICS_CERT_DIR")
    f.check((cert_dir is not None) == bool(cert_secret), "OPERATOR_METRICS_CERT_DIR set iff metrics.certSecret (with secure)")
    if cert_secret:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        f.check(volumes.get("metrics-tls", {}).get("secret", {}).get("secretName") == cert_secret, "metrics-tls volume from metrics.certSecret")
        f.check(mounts.get("metrics-tls", {}).get("mountPath") == cert_dir and mounts["metrics-tls"].get("readOnly") is True, "metrics-tls mounted read-only at OPERATOR_METRICS_CERT_DIR")
    else:
        f.check(not spec.get("volumes") and not container.get("volumeMounts"), "no volumes without metrics.certSecret")
    resources = container.get("resources", {})
    f.check(bool(resources.get("requests")) and bool(resources.get("limits", {}).get("memory")), "resource requests and a memory limit")

    # The ServiceAccount.
    accounts = [d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])]
    if values["serviceAccount"]["create"]:
        f.check(accounts == [spec["serviceAccountName"]], f"ServiceAccount {spec['serviceAccountName']} rendered")
        account = next((d for d in by_kind.get("ServiceAccount", []) if d["metadata"]["name"] == spec["serviceAccountName"]), {})
        annotations = account.get("metadata", {}).get("annotations") or {}
        if pod_identity:
            f.check(
                annotations.get("tke.cloud.tencent.com/role-arn") == creds["podIdentity"]["roleArn"],
                "ServiceAccount annotated tke.cloud.tencent.com/role-arn for TKE's pod-identity webhook",
            )
        else:
            f.check("tke.cloud.tencent.com/role-arn" not in annotations, "no pod-identity annotation without podIdentity")

    # RBAC.
    if values["rbac"]["create"]:
        check_rbac(f, docs, values, release_ns, spec["serviceAccountName"], credentials, lease)
        aggregated = [d for d in by_kind.get("ClusterRole", []) if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in d["metadata"].get("labels", {}))]
        f.check(len(aggregated) == (2 if values["rbac"]["aggregateToDefaultRoles"] else 0), "aggregated ClusterRoles for view/edit/admin as configured")
        for role in aggregated:
            f.check(all(r.get("apiGroups") == [GROUP] for r in role["rules"]), f"aggregated {role['metadata']['name']} is about TencentCertificates only")
        readers = [d for d in by_kind.get("ClusterRole", []) if d["metadata"]["name"] == f"{full}-metrics-reader"]
        if secure and f.check(len(readers) == 1, "metrics-reader ClusterRole with metrics.secure"):
            f.check(readers[0]["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}], "metrics-reader: get /metrics only")
            bindings = [d for d in by_kind.get("ClusterRoleBinding", []) if d["roleRef"]["name"] == f"{full}-metrics-reader"]
            wanted = [{"kind": "ServiceAccount", "name": r["name"], "namespace": r["namespace"]} for r in values["metrics"].get("readers") or []]
            f.check([b["subjects"] for b in bindings] == ([wanted] if wanted else []), "metrics-reader bound to metrics.readers only")
        elif not secure:
            f.check(not readers, "no metrics-reader ClusterRole without metrics.secure")
    else:
        f.check(not any(k in by_kind for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")), "no RBAC with rbac.create=false")

    # The metrics Service and what points at the pods.
    services = by_kind.get("Service", [])
    if values["metrics"]["service"]["enabled"]:
        if f.check(len(services) == 1, "one metrics Service"):
            service = services[0]
            f.check(all(labels.get(k) == v for k, v in service["spec"]["selector"].items()), "Service selects the operator pods")
            port = service["spec"]["ports"][0]
            f.check(port["name"] == "metrics" and port["targetPort"] == "metrics", "Service port 'metrics' -> container port 'metrics'")
            for monitor in by_kind.get("ServiceMonitor", []):
                selector = monitor["spec"]["selector"]["matchLabels"]
                f.check(all(service["metadata"]["labels"].get(k) == v for k, v in selector.items()), "ServiceMonitor selects the metrics Service")
                f.check(release_ns in monitor["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor looks in the release namespace")
                f.check([e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"], "ServiceMonitor scrapes port 'metrics'")
                endpoint = monitor["spec"]["endpoints"][0]
                if secure:
                    monitor_values = values["serviceMonitor"]
                    f.check(endpoint.get("scheme") == "https", "ServiceMonitor scheme https (metrics.secure)")
                    f.check(endpoint.get("tlsConfig") == monitor_values["tlsConfig"], "ServiceMonitor tlsConfig from serviceMonitor.tlsConfig")
                    if monitor_values.get("authorization"):
                        f.check(endpoint.get("authorization") == monitor_values["authorization"] and "bearerTokenFile" not in endpoint, "ServiceMonitor authorization from values, no bearerTokenFile")
                    else:
                        f.check(endpoint.get("bearerTokenFile") == monitor_values["bearerTokenFile"], "ServiceMonitor bearerTokenFile (metrics.secure)")
                else:
                    f.check(not any(k in endpoint for k in ("scheme", "tlsConfig", "authorization", "bearerTokenFile")), "ServiceMonitor plain http without metrics.secure")
    else:
        f.check(not services, "no Service with metrics.service.enabled=false")
    f.check(len(by_kind.get("ServiceMonitor", [])) == (1 if values["serviceMonitor"]["enabled"] else 0), "ServiceMonitor as configured")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if f.check(len(pdbs) == (1 if values["podDisruptionBudget"]["enabled"] else 0), "PodDisruptionBudget as configured") and pdbs:
        selector = pdbs[0]["spec"]["selector"]["matchLabels"]
        f.check(all(labels.get(k) == v for k, v in selector.items()), "PodDisruptionBudget selects the operator pods")

    rules = by_kind.get("PrometheusRule", [])
    if f.check(len(rules) == (1 if values["prometheusRule"]["enabled"] else 0), "PrometheusRule as configured") and rules:
        alerts = [r for g in rules[0]["spec"]["groups"] for r in g["rules"]]
        f.check(all(r.get("annotations", {}).get("description") for r in alerts), "every alert has a description")
        f.check(all(r.get("labels", {}).get("severity") in ("warning", "critical") for r in alerts), "every alert has a severity")
        extra = values["prometheusRule"]["alertLabels"]
        f.check(all(all(r["labels"].get(k) == v for k, v in extra.items()) for r in alerts), "alertLabels on every alert")
    dashboards = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].endswith("-dashboard")]
    if f.check(len(dashboards) == (1 if values["grafanaDashboard"]["enabled"] else 0), "dashboard ConfigMap as configured") and dashboards:
        cm = dashboards[0]
        f.check(all(cm["metadata"]["labels"].get(k) == v for k, v in values["grafanaDashboard"]["labels"].items()), "dashboard ConfigMap carries the sidecar labels")
        with open(os.path.join(CHART, "dashboards", "tencent-cert-operator.json")) as handle:
            source = json.load(handle)
        f.check(json.loads(cm["data"]["tencent-cert-operator.json"]) == source, "dashboard ConfigMap holds dashboards/tencent-cert-operator.json")

    # Credentials: only in the Secret the chart creates, never in any other object.
    secrets = by_kind.get("Secret", [])
    f.check(len(secrets) == (1 if created_credentials else 0), "a credentials Secret only when created from values")
    secret_values = [v for v in (creds.get("secretId"), creds.get("secretKey"), creds.get("token")) if v]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for value in secret_values:
            leaked = value in text or base64.b64encode(value.encode()).decode() in text
            f.check(not leaked, f"{doc['kind']} {doc['metadata']['name']} holds no credential value")
    for secret in secrets:
        f.check(secret["metadata"]["labels"].get("tencentcert.io/credentials") == "true", "credentials Secret labelled tencentcert.io/credentials")
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        expected = {k: creds[k] for k in ("secretId", "secretKey", "token") if creds.get(k)}
        f.check(data == expected, "credentials Secret holds exactly secretId, secretKey (and token)")

    # Every namespaced object names its namespace (so `helm template | kubectl apply` lands where intended).
    for doc in docs:
        if doc["kind"] in ("Deployment", "Service", "ServiceAccount", "Secret", "PodDisruptionBudget", "Role", "RoleBinding", "ServiceMonitor", "PrometheusRule", "ConfigMap"):
            f.check(bool(doc["metadata"].get("namespace")), f"{doc['kind']} {doc['metadata']['name']} has a namespace")
    f.finish("rendered")


def cmd_kv_output(output_path, rendered_path, *allowed_kinds):
    f = Failures()
    docs = load_docs(rendered_path)
    with open(output_path) as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    passed = [line for line in lines if line.startswith("INFO - passed for resource ")]
    unvalidated = [line for line in lines if line.startswith("WARN - Couldn't find schema for kind ")]
    other = [line for line in lines if line not in passed and line not in unvalidated]
    f.check(not other, f"no errors or other warnings: {other}")
    for line in unvalidated:
        kind = re.match(r"WARN - Couldn't find schema for kind (\S+) ", line).group(1)
        f.check(kind in allowed_kinds, f"{kind} may go without a schema (allowed: {', '.join(allowed_kinds) or 'none'})")
    f.check(len(passed) + len(unvalidated) == len(docs), f"every object judged: {len(passed)} passed + {len(unvalidated)} without schema = {len(docs)} objects")
    f.finish("kubernetes-validate")


def openapi_to_jsonschema(node):
    """A CRD schema node -> JSON Schema: nullable allows null, and objects with properties refuse unknown
    fields (the API server prunes them, and kubectl's default strict field validation refuses them)."""
    out = {}
    for k, v in node.items():
        if k == "nullable" or k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {name: openapi_to_jsonschema(child) for name, child in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = openapi_to_jsonschema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [openapi_to_jsonschema(child) for child in v]
        else:
            out[k] = v
    if "properties" in node:
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def cmd_crd_schema(crd_path, out_path):
    f = Failures()
    (crd,) = [d for d in load_docs(crd_path) if d.get("kind") == "CustomResourceDefinition"]
    spec = crd["spec"]
    (version,) = [v for v in spec["versions"] if v.get("storage")]
    source = version["schema"]["openAPIV3Schema"]
    schema = openapi_to_jsonschema(source)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema.setdefault("properties", {})
    schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": spec["names"]["kind"]}
    metadata = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
            "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        },
    }
    # CEL rules: the ones with a JSON Schema equivalent are enforced; the rest are listed as unchecked.
    unchecked = []
    for rule in source.get("x-kubernetes-validations", []):
        size = re.fullmatch(r"self\.metadata\.name\.size\(\) <= (\d+)", rule["rule"])
        if size:
            metadata["properties"]["name"]["maxLength"] = int(size.group(1))
        else:
            unchecked.append(rule["rule"])

    def collect(node, path):
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []) if path else []:
                unchecked.append(f"{path}: {rule['rule']}")
            for name, child in (node.get("properties") or {}).items():
                collect(child, f"{path}.{name}")
            if isinstance(node.get("items"), dict):
                collect(node["items"], f"{path}[]")

    collect(source, "")
    schema["properties"]["metadata"] = metadata
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    with open(out_path, "w") as handle:
        json.dump(schema, handle, indent=1, sort_keys=True)
    f.check(schema["properties"]["spec"].get("additionalProperties") is False, "spec refuses unknown fields")
    print(f"  wrote {out_path} (schema of {spec['names']['kind']} {version['name']})")
    for rule in unchecked:
        print(f"  note: CEL rule not checked offline (the API server checks it): {rule}")
    f.finish("crd-schema")


def cmd_split(rendered_path, out_dir, group):
    os.makedirs(out_dir, exist_ok=True)
    counts = {"cr": 0, "core": 0}
    for index, doc in enumerate(load_docs(rendered_path)):
        kind = "cr" if doc.get("apiVersion", "").split("/")[0] == group else "core"
        counts[kind] += 1
        name = f"{kind}-{index:03d}-{doc.get('kind', 'x').lower()}-{doc.get('metadata', {}).get('name', 'x')}.yaml"
        with open(os.path.join(out_dir, name), "w") as handle:
            yaml.safe_dump(doc, handle, sort_keys=False)
    print(f"{counts['cr']} {counts['core']}")


def strip_helm_labels(doc):
    doc = copy.deepcopy(doc)
    for meta in (doc.get("metadata", {}), doc.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = meta.get("labels")
        if labels:
            labels.pop("helm.sh/chart", None)
            if labels.get("app.kubernetes.io/managed-by") == "Helm":
                labels.pop("app.kubernetes.io/managed-by")
    return doc


def crd_essence(doc):
    """A CRD as deploy/ and the chart must agree on: its name and spec (the chart adds Helm's metadata)."""
    return {"kind": doc["kind"], "metadata": {"name": doc["metadata"]["name"]}, "spec": doc["spec"]}


def cmd_compare(chart_path, kustomize_path):
    f = Failures()
    chart = {key(d): strip_helm_labels(d) for d in load_docs(chart_path) if not is_hook(d)}
    for k, doc in list(chart.items()):
        if k[0] == "CustomResourceDefinition":
            chart[k] = crd_essence(doc)
    built = {key(d): (crd_essence(d) if d["kind"] == "CustomResourceDefinition" else d) for d in load_docs(kustomize_path)}
    for k, doc in sorted(chart.items(), key=lambda item: [str(x) for x in item[0]]):
        label = f"{k[0]} {k[1] + '/' if k[1] else ''}{k[2]}"
        if f.check(k in built, f"{label} in deploy/"):
            f.check(built[k] == doc, f"{label} identical in deploy/ and the chart")
    extra = [k for k in built if k not in chart and k[0] != "Namespace"]
    f.check(not extra, f"deploy/ has nothing the chart does not render (extra: {extra})")
    f.check(any(k[0] == "Namespace" for k in built), "deploy/ creates its Namespace")
    f.finish("compare")


def cmd_crds(rendered_path, *args):
    """templates/crds.yaml as rendered: each generated CRD (the files named) with the same spec, the chart's
    labels, and helm.sh/resource-policy: keep iff the last argument is `keep`."""
    *crd_paths, policy = args
    f = Failures()
    rendered = {d["metadata"]["name"]: d for d in load_docs("/dev/stdin" if rendered_path == "-" else rendered_path)}
    for path in crd_paths:
        (source,) = [d for d in load_docs(path) if d.get("kind") == "CustomResourceDefinition"]
        name = source["metadata"]["name"]
        doc = rendered.pop(name, None)
        if not f.check(doc is not None, f"{name} rendered"):
            continue
        f.check(doc["spec"] == source["spec"], f"{name}: spec equals {path}")
        labels = doc["metadata"].get("labels") or {}
        f.check(labels.get("app.kubernetes.io/managed-by") == "Helm" and "helm.sh/chart" in labels, f"{name}: the chart's labels")
        f.check("app.kubernetes.io/instance" not in labels, f"{name}: no release instance label (one CRD per cluster)")
        keep = (doc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
        f.check(keep == (policy == "keep"), f"{name}: resource-policy keep is {policy == 'keep'}")
    f.check(not rendered, f"nothing else rendered ({sorted(rendered)})")
    f.finish("crds")


def cmd_env(rendered_path, release_ns="tencent-cert-operator"):
    (deployment,) = [d for d in load_docs(rendered_path) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.name": f"{deployment['metadata']['name']}-5d8f7c9b6-x2x7q", "metadata.namespace": release_ns}
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
        else:
            value = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        print(f"{var['name']}={value}")
    print("ARGS " + " ".join(container.get("args", [])))


def cmd_rule_groups(rendered_path, out_path):
    docs = [d for d in (load_docs(rendered_path) if rendered_path != "-" else [d for d in yaml.safe_load_all(sys.stdin) if d]) if d["kind"] == "PrometheusRule"]
    if len(docs) != 1:
        print(f"  expected one PrometheusRule, found {len(docs)}")
        sys.exit(1)
    with open(out_path, "w") as handle:
        yaml.safe_dump(docs[0]["spec"], handle, sort_keys=False, width=1000)
    print(f"  rule-groups: {sum(len(g['rules']) for g in docs[0]['spec']['groups'])} rules written to {out_path}")


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*"}


def dashboard_queries(dashboard):
    """(where, PromQL) of every panel target and query variable; label_values(M, L) becomes M."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))
    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            yield f"variable {variable['name']}", match.group(1) if match else query


def cmd_dashboard_rules(dashboard_path, out_path):
    with open(dashboard_path) as handle:
        dashboard = json.load(handle)
    rules = []
    for where, expr in dashboard_queries(dashboard):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            print(f"  {where}: unknown Grafana variable in {expr}")
            sys.exit(1)
        rules.append({"record": f"dashboard:query_{len(rules)}", "expr": expr})
    with open(out_path, "w") as handle:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, handle, sort_keys=False, width=1000)
    print(f"  dashboard-rules: {len(rules)} queries written to {out_path}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    commands = {
        "rendered": cmd_rendered,
        "kv-output": cmd_kv_output,
        "crd-schema": cmd_crd_schema,
        "split": cmd_split,
        "compare": cmd_compare,
        "env": cmd_env,
        "crds": cmd_crds,
        "rule-groups": cmd_rule_groups,
        "dashboard-rules": cmd_dashboard_rules,
    }
    commands[argv[1]](*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
