//! `TencentCertificatePush` (issue 26): the other direction — a TLS Secret of the namespace (typically
//! cert-manager's) published to Tencent Cloud SSL, and chosen Tencent resources moved onto it.
//!
//! Named *Push* as the counterpart of `TencentCertificate` (which pulls from Tencent into a Secret), and after
//! External Secrets' `PushSecret`, the model users know for pushing a Secret to a cloud; it does more than an
//! upload (deploys, deleting the previous certificate), so `…Upload` would undersell it.
//!
//! Built for the one reconcile skeleton: [`policy`] is the pure part (what to look up, and the one next
//! step), [`report`] what a step tells the user, [`actor`] carries a step out against the Tencent client,
//! [`reconcile`] is the kind in the skeleton (gather → plan → act → report) and [`controller`] runs it:
//! it watches the pushes and the metadata of the Secrets of its scope, and turns itself off (one log line)
//! where the CRD is not installed. The CRD is `crds/tencentcertificatepush.yaml` (`tencent-cert-operator
//! crd --push`), in the chart and `deploy/push-crd.yaml`; `status --pushes` lists the pushes.

pub mod actor;
pub mod controller;
pub mod policy;
pub mod reconcile;
pub mod report;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::crd::CredentialsRef;

/// Tag keys identifying what a certificate was uploaded for. Tencent reserves keys starting with
/// `qcloud`, `tencent` and `project`, so these do not use the API group.
pub const TAG_UID: &str = "tco-push-uid";
pub const TAG_FINGERPRINT: &str = "tco-fingerprint";
/// The key of the Opaque Secret TKE's CLB Ingress reads a certificate id from.
pub const TKE_CERT_ID_KEY: &str = "qcloud_cert_id";

/// A TLS Secret of this namespace kept published in Tencent Cloud SSL.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tencentcert.io",
    version = "v1alpha1",
    kind = "TencentCertificatePush",
    namespaced,
    shortname = "tcpush",
    category = "tencentcert",
    status = "TencentCertificatePushStatus",
    derive = "PartialEq",
    doc = "A kubernetes.io/tls Secret of this namespace published to Tencent Cloud SSL.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    printcolumn(
        name = "Certificate ID",
        type_ = "string",
        json_path = ".status.certificateId"
    ),
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
    printcolumn(
        name = "Uploaded",
        type_ = "date",
        json_path = ".status.lastUploadTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TencentCertificatePushSpec {
    /// The `kubernetes.io/tls` Secret to publish, in this namespace (a name, never another namespace's).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,

    /// `Alias` in Tencent Cloud. Defaults to `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub alias: Option<String>,

    /// Tencent Cloud project of the uploaded certificates (default project 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,

    /// More tags for the uploaded certificates (the operator's own tags take precedence).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,

    /// Move cloud resources onto each new upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,

    /// Write an Opaque Secret with `qcloud_cert_id` (TKE's CLB Ingress) in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tke_secret_name: Option<String>,

    /// The Secret in this namespace holding the Tencent Cloud API key; else the default credentials where
    /// this namespace may use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,

    /// How often to read the Secret again when nothing signals a change (Go duration, at least `1m`).
    #[serde(default = "default_refresh_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub refresh_interval: String,
}

fn default_refresh_interval() -> String {
    crate::crd::DEFAULT_REFRESH_INTERVAL.to_string()
}

/// Which resources to move, and what becomes of the certificate they leave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploySpec {
    /// Resource types (`clb`, `cdn`, `teo`, `waf`, `live`, `cos`, `apigateway`, `tke`, …) and, for the
    /// regional ones, their regions.
    #[schemars(length(min = 1, max = 16))]
    pub targets: Vec<DeployTargetSpec>,
    /// The certificate the resources use before the first upload (e.g. one uploaded by hand). Only with
    /// this namespace's own `credentialsRef`: under the default credentials it would let a tenant move
    /// resources of the whole account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[A-Za-z0-9]+$"))]
    pub from_certificate_id: Option<String>,
    /// `Keep` the previous certificate, or `Delete` it once every resource moved (never while bound, and
    /// only a certificate this resource uploaded: `fromCertificateId` is always kept).
    #[serde(default)]
    pub previous_certificate: PreviousPolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployTargetSpec {
    #[schemars(length(min = 1, max = 32))]
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub regions: Vec<String>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PreviousPolicy {
    #[default]
    Keep,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TencentCertificatePushStatus {
    /// `Ready` (Tencent holds the Secret's certificate, resources moved) and `Synced` (the last pass
    /// succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Tencent certificate holding the Secret's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// SHA-256 of the published leaf (lowercase hex): an unchanged Secret is not uploaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upload_time: Option<String>,
    /// The certificate the resources are moved off (the one published before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployStatus>,
}

/// The move of resources from the previous certificate onto the current one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployStatus {
    pub from_certificate_id: String,
    pub to_certificate_id: String,
    /// Tencent's deploy record (`UpdateCertificateInstance`), once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<u64>,
    /// Retries of failed resources so far.
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_time: Option<String>,
    /// When failed resources were first recorded in this move: the first retry backs off from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_time: Option<String>,
    /// Every resource is final (see `results`).
    #[serde(default)]
    pub finished: bool,
    /// The previous certificate was deleted (policy `Delete`).
    #[serde(default)]
    pub previous_deleted: bool,
    /// Per resource type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<DeployResult>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployResult {
    pub resource_type: String,
    pub succeeded: u32,
    pub failed: u32,
    /// Pending or deploying.
    pub in_progress: u32,
    /// Tencent's message for the first failed resource of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The CRD as YAML, exactly as `crds/tencentcertificatepush.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt as _;
    let yaml = serde_saphyr::to_string(&TencentCertificatePush::crd())?;
    Ok(format!(
        "# Generated by `tencent-cert-operator crd --push`; do not edit.\n---\n{yaml}"
    ))
}

impl TencentCertificatePushStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod crd_tests {
    #[test]
    fn committed_crd_yaml_matches_the_rust_types() {
        let committed = include_str!("../../crds/tencentcertificatepush.yaml");
        assert!(
            super::crd_yaml().unwrap() == committed,
            "crds/tencentcertificatepush.yaml is stale: run `cargo run -- crd --push > crds/tencentcertificatepush.yaml`"
        );
    }
}
