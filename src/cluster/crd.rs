//! The cluster-scoped `ClusterTencentCertificate`: one certificate, written as the same TLS Secret into
//! every namespace its target selects. Only cluster admins can create it (see the chart's RBAC).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::{
    CertificateSelector, DeletionPolicy, SecretTemplate, TencentCertificate, TencentCertificateSpec,
};

/// Most failing namespaces listed in the status (the counts cover all of them).
pub const MAX_LISTED_FAILURES: usize = 20;

/// A kubernetes.io/tls Secret kept in sync with one Tencent Cloud SSL certificate in many namespaces.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tencentcert.io",
    version = "v1alpha1",
    kind = "ClusterTencentCertificate",
    shortname = "ctcert",
    category = "tencentcert",
    status = "ClusterTencentCertificateStatus",
    derive = "PartialEq",
    doc = "A kubernetes.io/tls Secret kept in sync with a Tencent Cloud SSL certificate in every selected namespace.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message("the name must be at most 63 characters: it is used as a label value on the Secrets"),
    validation = kube::core::Rule::new("has(self.spec.certificateId) != has(self.spec.domain)").message("set exactly one of spec.certificateId and spec.domain"),
    validation = kube::core::Rule::new("!has(self.spec.selector) || has(self.spec.domain)").message("spec.selector applies only with spec.domain"),
    validation = kube::core::Rule::new("!has(self.spec.renewal) || !has(self.spec.renewal.apply) || self.spec.renewal.apply != 'Free' || !has(self.spec.followRenewals) || self.spec.followRenewals").message("spec.renewal.apply: Free needs followRenewals: true (the renewal gets a new id, which is served by following)"),
    validation = kube::core::Rule::new("has(self.spec.namespaceSelector) || (has(self.spec.namespaces) && self.spec.namespaces.size() > 0)").message("set spec.namespaceSelector, spec.namespaces, or both"),
    // A keystore password is a Secret in the resource's namespace; a cluster resource has none.
    validation = kube::core::Rule::new("!has(self.spec.keystores)").message("spec.keystores is for TencentCertificate only (its password Secret lives in the resource's namespace); additionalOutputFormats and certificateIdKey work here"),
    printcolumn(name = "Certificate ID", type_ = "string", json_path = ".status.certificateId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    printcolumn(name = "Targeted", type_ = "integer", json_path = ".status.targetedNamespaces"),
    printcolumn(name = "Ready NS", type_ = "integer", json_path = ".status.readyNamespaces"),
    printcolumn(name = "Failed NS", type_ = "integer", json_path = ".status.failedNamespaces"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTencentCertificateSpec {
    /// The Tencent Cloud SSL certificate ID. Exactly one of `certificateId` and `domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[A-Za-z0-9]+$"))]
    pub certificate_id: Option<String>,

    /// Instead of an ID: the newest issued certificate whose names cover this domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+$"
        )
    )]
    pub domain: Option<String>,

    /// Narrows the certificates `domain` picks from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<CertificateSelector>,

    /// Follow Tencent's renewal and reissue links from `certificateId` to the newest issued certificate.
    #[serde(default = "default_true")]
    pub follow_renewals: bool,

    /// Apply for the renewal of the served certificate before it expires (free certificates only; see
    /// the README's "Applying for the renewal of free certificates"). Needs `followRenewals: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<crate::renew::RenewalSpec>,

    /// The Secret written into every targeted namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,

    /// Labels and annotations to put on the Secrets (the operator's own keys take precedence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// How often to check Tencent Cloud for a changed certificate (Go duration, at least `1m`).
    #[serde(default = "default_refresh_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m')").message("refreshInterval must be at least 1m"))]
    pub refresh_interval: String,

    /// The Secret holding the Tencent Cloud API key, in any namespace. When absent, the operator's default
    /// credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<ClusterCredentialsRef>,

    /// `Delete`: the Secrets are owned by this resource and garbage-collected with it, and deleted from a
    /// namespace that stops matching. `Retain`: they stay in both cases.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Write `ca.crt` when the archive carries the root certificate.
    #[serde(default = "default_true", rename = "includeCA")]
    pub include_ca: bool,

    /// Namespaces whose labels match get the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// These namespaces get the Secret (in addition to those `namespaceSelector` matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub namespaces: Vec<String>,

    /// More outputs in every Secret: `additionalOutputFormats` and `certificateIdKey` (e.g. `qcloud_cert_id`
    /// for TKE's CLB ingress), as for TencentCertificate. `keystores` is refused here.
    #[serde(flatten)]
    pub outputs: crate::outputs::SecretOutputs,
}

fn default_true() -> bool {
    true
}

fn default_refresh_interval() -> String {
    crate::crd::DEFAULT_REFRESH_INTERVAL.to_string()
}

/// A credentials Secret named by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialsRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_secret_id_key")]
    pub secret_id_key: String,
    #[serde(default = "default_secret_key_key")]
    pub secret_key_key: String,
    #[serde(default = "default_token_key")]
    pub token_key: String,
}

fn default_secret_id_key() -> String {
    "secretId".to_string()
}

fn default_secret_key_key() -> String {
    "secretKey".to_string()
}

fn default_token_key() -> String {
    "token".to_string()
}

/// A namespace whose Secret is not as it should be, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    pub namespace: String,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTencentCertificateStatus {
    /// `Ready` (every targeted namespace holds the certificate, unexpired) and `Synced` (the last fetch
    /// from Tencent Cloud succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Namespaces the target selects.
    #[serde(default)]
    pub targeted_namespaces: u32,
    /// Targeted namespaces whose Secret holds the certificate.
    #[serde(default)]
    pub ready_namespaces: u32,
    /// Targeted namespaces whose Secret could not be written (listed in `namespaceFailures`).
    #[serde(default)]
    pub failed_namespaces: u32,
    /// The failing namespaces and why (at most 20; the count is in `failedNamespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_failures: Vec<NamespaceFailure>,
    /// The certificate ID written into the Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// The renewal links followed from `certificateId`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renewal_chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When Tencent Cloud last confirmed the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// When the certificate was last downloaded in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_download_time: Option<String>,
    /// When the operator plans to check Tencent Cloud again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<String>,
    /// Consecutive failed fetches; 0 after a success.
    #[serde(default)]
    pub failures: u32,
    /// Where the renewal of the served certificate is (`spec.renewal`): the order, its phase, what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<crate::renew::RenewalStatus>,
}

/// The CRD as YAML, exactly as `crds/clustertencentcertificate.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt as _;
    let yaml = serde_saphyr::to_string(&ClusterTencentCertificate::crd())?;
    Ok(format!(
        "# Generated by `tencent-cert-operator crd --cluster`; do not edit.\n---\n{yaml}"
    ))
}

impl ClusterTencentCertificateStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

impl ClusterTencentCertificate {
    /// The certificate selection as a `TencentCertificate` (never stored), so that resolving ids,
    /// following renewals and selecting by domain are the same code for both kinds.
    pub fn selection(&self) -> TencentCertificate {
        let spec = TencentCertificateSpec {
            certificate_id: self.spec.certificate_id.clone(),
            domain: self.spec.domain.clone(),
            selector: self.spec.selector.clone().map(Box::new),
            additional_domains: Vec::new(),
            follow_renewals: self.spec.follow_renewals,
            renewal: self.spec.renewal.clone(),
            secret_name: Some(self.spec.secret_name.clone()),
            secret_template: self.spec.secret_template.clone().map(Box::new),
            refresh_interval: self.spec.refresh_interval.clone(),
            credentials_ref: None,
            deletion_policy: self.spec.deletion_policy,
            include_ca: self.spec.include_ca,
            outputs: self.spec.outputs.clone(),
        };
        let mut view =
            TencentCertificate::new(self.metadata.name.as_deref().unwrap_or_default(), spec);
        view.metadata.uid = self.metadata.uid.clone();
        view.metadata.generation = self.metadata.generation;
        view
    }

    pub fn secret_template(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let template = self.spec.secret_template.clone().unwrap_or_default();
        (template.labels, template.annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_yaml_matches_the_rust_types() {
        let committed = include_str!("../../crds/clustertencentcertificate.yaml");
        assert!(
            crd_yaml().unwrap() == committed,
            "crds/clustertencentcertificate.yaml is stale: run `cargo run -- crd --cluster > crds/clustertencentcertificate.yaml`"
        );
    }

    #[test]
    fn the_selection_is_the_spec_of_a_tencent_certificate() {
        let cr: ClusterTencentCertificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "tencentcert.io/v1alpha1", "kind": "ClusterTencentCertificate",
            "metadata": {"name": "wildcard", "uid": "u-1"},
            "spec": {"domain": "*.example.com", "selector": {"projectId": 7}, "secretName": "wildcard-tls",
                     "namespaces": ["web"], "refreshInterval": "2h"},
        }))
        .unwrap();
        let view = cr.selection();
        assert_eq!(view.spec.domain.as_deref(), Some("*.example.com"));
        assert_eq!(
            view.spec.selector.as_ref().and_then(|s| s.project_id),
            Some(7)
        );
        assert_eq!(view.spec.refresh_interval, "2h");
        assert_eq!(view.metadata.uid.as_deref(), Some("u-1"));
        assert!(view.spec.credentials_ref.is_none());
    }
}
