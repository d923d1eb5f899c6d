//! The `TencentCertificate` custom resource (design.md §3). `tencent-cert-operator crd` prints its CRD,
//! which is what `crds/tencentcertificate.yaml` holds.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "tencentcert.io";
pub const DEFAULT_REFRESH_INTERVAL: &str = "1h";
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// A TLS Secret kept in sync with a certificate bought or hosted on Tencent Cloud SSL.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tencentcert.io",
    version = "v1alpha1",
    kind = "TencentCertificate",
    namespaced,
    shortname = "tcert",
    category = "tencentcert",
    status = "TencentCertificateStatus",
    derive = "PartialEq",
    doc = "A kubernetes.io/tls Secret kept in sync with a Tencent Cloud SSL certificate.",
    // The name is also the value of the Secret's tencentcert.io/certificate-name label.
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message("the name must be at most 63 characters: it is used as a label value on the Secret"),
    validation = kube::core::Rule::new("has(self.spec.certificateId) != has(self.spec.domain)").message("set exactly one of spec.certificateId and spec.domain"),
    validation = kube::core::Rule::new("!has(self.spec.selector) || has(self.spec.domain)").message("spec.selector applies only with spec.domain"),
    validation = kube::core::Rule::new("!has(self.spec.additionalDomains) || has(self.spec.domain)").message("spec.additionalDomains applies only with spec.domain"),
    validation = kube::core::Rule::new("!has(self.spec.renewal) || !has(self.spec.renewal.apply) || self.spec.renewal.apply != 'Free' || !has(self.spec.followRenewals) || self.spec.followRenewals").message("spec.renewal.apply: Free needs followRenewals: true (the renewal gets a new id, which is served by following)"),
    printcolumn(
        name = "Certificate ID",
        type_ = "string",
        json_path = ".status.certificateId"
    ),
    printcolumn(
        name = "Requested",
        type_ = "string",
        json_path = ".spec.certificateId",
        priority = "1"
    ),
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain", priority = "1"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
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
    // A `date` column prints `<invalid>` in kubectl for any time in the future: the expiry is shown as the
    // RFC 3339 timestamp itself.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // Generated from an Ingress or Gateway (src/shim): the route object is the controlling owner.
    printcolumn(
        name = "Route",
        type_ = "string",
        json_path = ".metadata.ownerReferences[?(@.controller==true)].name"
    ),
    printcolumn(
        name = "Route Kind",
        type_ = "string",
        json_path = ".metadata.ownerReferences[?(@.controller==true)].kind",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TencentCertificateSpec {
    /// The Tencent Cloud SSL certificate ID, as shown in the SSL console (e.g. `aBcD1234`). Exactly one of
    /// `certificateId` and `domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = "^[A-Za-z0-9]+$"))]
    pub certificate_id: Option<String>,

    /// Instead of an ID: use the newest issued certificate whose names cover this domain (`shop.example.com`
    /// or `*.example.com`, matched as browsers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+$"
        )
    )]
    pub domain: Option<String>,

    /// With `domain`: the selected certificate must cover these names too (one certificate for all the
    /// hosts of an Ingress TLS entry or Gateway listener). No certificate covering them all is
    /// `NoMatchingCertificate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+$"
            )
        )
    )]
    pub additional_domains: Vec<String>,

    /// Narrows the certificates `domain` picks from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Box<CertificateSelector>>,

    /// Follow Tencent's renewal and reissue links from `certificateId` to the newest issued certificate (a
    /// renewal gets a new ID in Tencent Cloud).
    #[serde(default = "default_true")]
    pub follow_renewals: bool,

    /// Apply for the renewal of the served certificate before it expires (free certificates only; see
    /// the README's "Applying for the renewal of free certificates"). Needs `followRenewals: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<crate::renew::RenewalSpec>,

    /// The Secret to write in this namespace. Defaults to the TencentCertificate's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Labels and annotations to put on the Secret (the operator's own keys take precedence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<Box<SecretTemplate>>,

    /// How often to re-download the certificate and compare (Go duration, at least `1m`).
    #[serde(default = "default_refresh_interval")]
    // maxLength bounds the CEL cost estimate; without it the apiserver may refuse the CRD.
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m')").message("refreshInterval must be at least 1m"))]
    pub refresh_interval: String,

    /// The Secret in this namespace holding the Tencent Cloud API key. When absent, the operator's default
    /// credentials are used if this namespace may use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,

    /// `Delete`: the Secret is owned by this resource and garbage-collected with it. `Retain`: it stays.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Write `ca.crt` when the archive carries the root certificate.
    #[serde(default = "default_true", rename = "includeCA")]
    pub include_ca: bool,

    /// More outputs in the Secret: `additionalOutputFormats`, `keystores`, `certificateIdKey`.
    #[serde(flatten)]
    pub outputs: crate::outputs::SecretOutputs,
}

fn default_refresh_interval() -> String {
    DEFAULT_REFRESH_INTERVAL.to_string()
}

fn default_true() -> bool {
    true
}

/// Which certificates `domain` may pick.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSelector {
    /// Tencent Cloud project ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,
    /// Tags the certificate must carry (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Origin or brand as Tencent reports it (`trustasia`, `upload`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of a Secret in the TencentCertificate's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the SecretId.
    #[serde(default = "default_secret_id_key")]
    pub secret_id_key: String,
    /// Key holding the SecretKey.
    #[serde(default = "default_secret_key_key")]
    pub secret_key_key: String,
    /// Key holding a session token (temporary credentials); used when present in the Secret.
    #[serde(default = "default_token_key")]
    pub token_key: String,
    /// Assume this CAM role with the Secret's key (STS `AssumeRole`, e.g. a role in another account) and
    /// use the role's temporary credentials, refreshed before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Box<CredentialsRole>>,
}

/// A CAM role to assume with the referenced key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRole {
    /// The role's ARN: `qcs::cam::uin/<OwnerUin>:roleName/<name>` (or `:role/<roleId>`). Its trust policy
    /// must allow the key's account (or sub-user) to assume it.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^qcs::cam::uin/[0-9]+:role(Name)?/[^\s]+$")
    )]
    pub role_arn: String,
    /// `RoleSessionName`, recorded in CloudAudit: 2 to 128 letters, digits or `_+=,.@-`.
    #[serde(default = "default_role_session_name")]
    #[schemars(length(min = 2, max = 128), regex(pattern = r"^[A-Za-z0-9_+=,.@-]+$"))]
    pub role_session_name: String,
    /// Lifetime of the temporary credentials, 900 to 43200 seconds; they are refreshed well before.
    #[serde(default = "default_role_duration")]
    #[schemars(range(min = 900, max = 43200))]
    pub duration_seconds: u32,
}

fn default_role_session_name() -> String {
    tencent_ssl::sts::DEFAULT_SESSION_NAME.to_string()
}

fn default_role_duration() -> u32 {
    tencent_ssl::sts::DEFAULT_DURATION_SECS
}

impl CredentialsRole {
    pub fn to_role(&self) -> tencent_ssl::sts::Role {
        tencent_ssl::sts::Role {
            role_arn: self.role_arn.clone(),
            session_name: self.role_session_name.clone(),
            duration_secs: self.duration_seconds,
        }
    }
}

impl CredentialsRef {
    /// A reference to `name` with the default keys.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            secret_id_key: default_secret_id_key(),
            secret_key_key: default_secret_key_key(),
            token_key: default_token_key(),
            role: None,
        }
    }
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

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TencentCertificateStatus {
    /// `Ready` (the Secret holds the spec's certificate, unexpired) and `Synced` (the last fetch succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The certificate ID last synced into the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// The certificate the spec resolves to: the newest renewal of `certificateId`, or the certificate
    /// selected for `domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_certificate_id: Option<String>,
    /// The renewal links followed from `certificateId` to `resolvedCertificateId`.
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
    /// When Tencent Cloud last confirmed the certificate (a download, or a listing showing the served
    /// certificate unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// When the certificate was last downloaded in full (a refresh whose listing shows nothing changed
    /// skips the download; a full one still happens at least once per safety interval, default daily).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_download_time: Option<String>,
    /// When the operator plans to fetch again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<String>,
    /// Consecutive failed attempts; 0 after a success.
    #[serde(default)]
    pub failures: u32,
    /// Where the renewal of the served certificate is (`spec.renewal`): the order, its phase, what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<crate::renew::RenewalStatus>,
    /// The last `tencentcert.io/refresh-requested-at` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_request: Option<String>,
    /// When `lastRefreshRequest` was acted upon. A refresh is forced at most once per minute: a new
    /// request within the minute is acted upon at its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_request_time: Option<String>,
}

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Certificate {
        id: &'a str,
        follow_renewals: bool,
    },
    Domain {
        domain: &'a str,
        /// Names the certificate must cover as well as `domain`.
        additional: &'a [String],
        selector: Option<&'a CertificateSelector>,
    },
    /// Neither or both set (the CRD's validation prevents this; old objects may still have it).
    Invalid,
}

impl TencentCertificateSpec {
    pub fn target(&self) -> Target<'_> {
        match (&self.certificate_id, &self.domain) {
            (Some(id), None) => Target::Certificate {
                id,
                follow_renewals: self.follow_renewals,
            },
            (None, Some(domain)) => Target::Domain {
                domain,
                additional: &self.additional_domains,
                selector: self.selector.as_deref(),
            },
            _ => Target::Invalid,
        }
    }

    /// A short description for messages: the certificate ID or `domain D`.
    pub fn describe_target(&self) -> String {
        match self.target() {
            Target::Certificate { id, .. } => id.to_string(),
            Target::Domain {
                domain, additional, ..
            } if !additional.is_empty() => format!("domains {domain}, {}", additional.join(", ")),
            Target::Domain { domain, .. } => format!("domain {domain}"),
            Target::Invalid => "nothing (set exactly one of certificateId and domain)".to_string(),
        }
    }
}

impl TencentCertificateStatus {
    /// The condition of this type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of this type is `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

impl TencentCertificate {
    /// The certificate the Secret should hold: the resolved one while the spec is unchanged since it was
    /// resolved, else the spec's ID (`None` for a domain not resolved yet).
    pub fn expected_certificate_id(&self) -> Option<String> {
        let status = self.status.as_ref();
        expected_certificate_id(
            &self.spec,
            self.metadata.generation,
            status.and_then(|s| s.observed_generation),
            status.and_then(|s| s.resolved_certificate_id.as_deref()),
        )
    }

    /// The Secret this resource writes.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}

/// [`TencentCertificate::expected_certificate_id`] from its parts (also read from the controller's cache).
pub fn expected_certificate_id(
    spec: &TencentCertificateSpec,
    generation: Option<i64>,
    observed_generation: Option<i64>,
    resolved: Option<&str>,
) -> Option<String> {
    match resolved {
        Some(resolved) if observed_generation == generation => Some(resolved.to_string()),
        _ => spec.certificate_id.clone(),
    }
}

/// Parses a Go-style duration (`90s`, `30m`, `1h30m`, `1.5h`, `250ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let (unit_seconds, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        rest = &rest[unit_len..];
        total += number * unit_seconds;
    }
    (total.is_finite() && total <= 1e9).then(|| Duration::from_secs_f64(total))
}

/// The effective refresh interval: the spec's, or the default if unparsable, never below the minimum.
pub fn refresh_interval(spec: &TencentCertificateSpec) -> Duration {
    parse_duration(&spec.refresh_interval)
        .unwrap_or(Duration::from_secs(3600))
        .max(MIN_REFRESH_INTERVAL)
}

/// The CRD as YAML, exactly as `crds/tencentcertificate.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let yaml = serde_saphyr::to_string(&TencentCertificate::crd())?;
    Ok(format!(
        "# Generated by `tencent-cert-operator crd`; do not edit.\n---\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_yaml_matches_the_rust_types() {
        let committed = include_str!("../crds/tencentcertificate.yaml");
        assert!(
            crd_yaml().unwrap() == committed,
            "crds/tencentcertificate.yaml is stale: run `cargo run -- crd > crds/tencentcertificate.yaml`"
        );
    }

    /// The controller's cache holds one `TencentCertificate` per resource (issue 23): the parts most
    /// resources leave unset (`selector`, `secretTemplate`, `credentialsRef.role`, `keystores`,
    /// `status.renewal`) are boxed, so that they cost a pointer inline. A field added inline shows here.
    #[test]
    fn the_cached_resource_keeps_rarely_set_parts_out_of_line() {
        use std::mem::size_of;
        eprintln!(
            "TencentCertificate {} = metadata {} + spec {} + status {}; CredentialsRef {}, SecretOutputs {}",
            size_of::<TencentCertificate>(),
            size_of::<kube::api::ObjectMeta>(),
            size_of::<TencentCertificateSpec>(),
            size_of::<Option<TencentCertificateStatus>>(),
            size_of::<Option<CredentialsRef>>(),
            size_of::<crate::outputs::SecretOutputs>(),
        );
        assert_eq!(size_of::<Option<crate::renew::RenewalStatus>>(), 8);
        assert_eq!(size_of::<Option<Box<CertificateSelector>>>(), 8);
        assert!(size_of::<TencentCertificateSpec>() <= 400);
        assert!(size_of::<Option<TencentCertificateStatus>>() <= 420);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "h", "10", "10d", "1h-", "-1h", "1..5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn refresh_interval_is_clamped_and_defaulted() {
        let mut spec: TencentCertificateSpec =
            serde_json::from_value(serde_json::json!({"certificateId": "aBcD1234"})).unwrap();
        assert_eq!(spec.refresh_interval, "1h");
        assert_eq!(refresh_interval(&spec), Duration::from_secs(3600));
        spec.refresh_interval = "10s".into();
        assert_eq!(refresh_interval(&spec), MIN_REFRESH_INTERVAL);
        spec.refresh_interval = "nonsense".into();
        assert_eq!(refresh_interval(&spec), Duration::from_secs(3600));
    }

    #[test]
    fn spec_defaults_match_the_design() {
        let spec: TencentCertificateSpec =
            serde_json::from_value(serde_json::json!({"certificateId": "aBcD1234"})).unwrap();
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        assert!(spec.include_ca);
        assert_eq!(spec.secret_name, None);
        let creds: CredentialsRef =
            serde_json::from_value(serde_json::json!({"name": "tencent"})).unwrap();
        assert_eq!(creds, CredentialsRef::named("tencent"));
    }

    #[test]
    fn secret_name_defaults_to_the_resource_name() {
        let mut cr = TencentCertificate::new(
            "shop-tls",
            serde_json::from_value(serde_json::json!({"certificateId": "aBcD1234"})).unwrap(),
        );
        assert_eq!(cr.secret_name(), "shop-tls");
        cr.spec.secret_name = Some("other".into());
        assert_eq!(cr.secret_name(), "other");
    }

    #[test]
    fn crd_has_the_documented_names_columns_and_rules() {
        let crd = TencentCertificate::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("tencentcertificates.tencentcert.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["tcert".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Certificate ID",
                "Requested",
                "Domain",
                "Secret",
                "Ready",
                "Reason",
                "Expires",
                "Age",
                "Route",
                "Route Kind"
            ]
        );
        let expires = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.name == "Expires")
            .unwrap();
        // kubectl prints `<invalid>` for a `date` column in the future.
        assert_eq!(expires.type_, "string");
        assert_eq!(expires.json_path, ".status.notAfter");
        let schema = serde_json::to_value(&version.schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let refresh = &spec["properties"]["refreshInterval"];
        assert_eq!(
            refresh["x-kubernetes-validations"][0]["rule"],
            "duration(self) >= duration('1m')"
        );
        assert_eq!(refresh["maxLength"], 32);
        assert_eq!(
            spec["properties"]["certificateId"]["pattern"],
            "^[A-Za-z0-9]+$"
        );
        assert_eq!(spec["properties"]["certificateId"]["maxLength"], 32);
        assert_eq!(spec["properties"]["includeCA"]["default"], true);
        assert_eq!(
            schema["openAPIV3Schema"]["x-kubernetes-validations"][0]["rule"],
            "self.metadata.name.size() <= 63"
        );
        // certificateId or domain: exactly one, enforced by a CEL rule rather than `required`.
        assert_eq!(spec.get("required"), None);
        let root_rules: Vec<&str> = schema["openAPIV3Schema"]["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(root_rules.contains(&"has(self.spec.certificateId) != has(self.spec.domain)"));
        assert!(root_rules.contains(&"!has(self.spec.selector) || has(self.spec.domain)"));
        assert!(root_rules.contains(&"!has(self.spec.additionalDomains) || has(self.spec.domain)"));
        assert_eq!(spec["properties"]["additionalDomains"]["maxItems"], 100);
        assert_eq!(
            spec["properties"]["additionalDomains"]["items"]["maxLength"],
            253
        );
        assert_eq!(spec["properties"]["followRenewals"]["default"], true);
        assert_eq!(
            spec["properties"]["deletionPolicy"]["enum"],
            serde_json::json!(["Delete", "Retain"])
        );
        assert_eq!(spec["properties"]["refreshInterval"]["default"], "1h");
    }
}
