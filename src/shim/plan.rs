//! The pure decision of the shims: a route object (Ingress or Gateway) with its annotations, and the
//! TencentCertificates that exist under the names it needs or that it controls → what to create, update,
//! delete, and what to report. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::crd::{
    self, CredentialsRef, DeletionPolicy, TencentCertificate, TencentCertificateSpec,
};

/// One certificate ID for every TLS entry of the route.
pub const CERTIFICATE_ID_ANNOTATION: &str = "tencentcert.io/certificate-id";
/// `"true"`: each TLS entry gets the newest issued certificate covering all its hosts (`spec.domain`).
pub const SELECT_BY_HOST_ANNOTATION: &str = "tencentcert.io/select-by-host";
/// The credentials Secret (in the route's namespace) for the generated resources.
pub const CREDENTIALS_ANNOTATION: &str = "tencentcert.io/credentials";
/// `spec.refreshInterval` of the generated resources.
pub const REFRESH_INTERVAL_ANNOTATION: &str = "tencentcert.io/refresh-interval";
/// `spec.deletionPolicy` of the generated resources (`Delete` or `Retain`).
pub const DELETION_POLICY_ANNOTATION: &str = "tencentcert.io/deletion-policy";

/// On generated TencentCertificates: the kind of the route they come from (the shims' watch selects on it).
pub const ROUTE_KIND_LABEL: &str = "tencentcert.io/route-kind";
/// On generated TencentCertificates: `Kind/name` of the route they come from (names may exceed a label's 63
/// characters, so an annotation).
pub const ROUTE_ANNOTATION: &str = "tencentcert.io/route";

/// A TencentCertificate's name is also a label value on its Secret (the CRD allows 63 characters).
const MAX_NAME: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Ingress,
    Gateway,
}

impl RouteKind {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Ingress => "Ingress",
            Self::Gateway => "Gateway",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::Ingress => "networking.k8s.io/v1",
            Self::Gateway => "gateway.networking.k8s.io/v1",
        }
    }

    /// Where a route names its Secrets, for messages.
    fn tls_field(self) -> &'static str {
        match self {
            Self::Ingress => "spec.tls",
            Self::Gateway => "spec.listeners[].tls.certificateRefs",
        }
    }
}

impl std::fmt::Display for RouteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// What the shims read of an Ingress or a Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
    /// Each Secret the route names for TLS, with the hosts it must serve (in the route's order).
    pub tls: Vec<TlsEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEntry {
    pub secret_name: String,
    pub hosts: Vec<String>,
}

/// How the generated resources pick their certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Id(String),
    ByHost,
}

/// The route's annotations, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimConfig {
    pub selection: Selection,
    pub credentials: Option<String>,
    pub refresh_interval: String,
    pub deletion_policy: DeletionPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    /// Neither `certificate-id` nor `select-by-host: "true"`: the route asks for nothing (and whatever was
    /// generated for it goes).
    Disabled,
    Enabled(ShimConfig),
    /// Annotations that cannot be acted on: nothing is changed until they are fixed.
    Invalid(String),
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Reads the shim annotations of a route.
pub fn parse_annotations(annotations: &BTreeMap<String, String>) -> Config {
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let id = get(CERTIFICATE_ID_ANNOTATION).filter(|v| !v.is_empty());
    let by_host = match get(SELECT_BY_HOST_ANNOTATION) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Config::Invalid(format!(
                "{SELECT_BY_HOST_ANNOTATION} must be \"true\" or \"false\", not {other:?}"
            ));
        }
    };
    let selection = match (id, by_host) {
        (None, false) => return Config::Disabled,
        (Some(_), true) => {
            return Config::Invalid(format!(
                "set one of {CERTIFICATE_ID_ANNOTATION} and {SELECT_BY_HOST_ANNOTATION}: \"true\", not both"
            ));
        }
        (Some(id), false) => {
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Config::Invalid(format!(
                    "{CERTIFICATE_ID_ANNOTATION} {id:?} is not a Tencent Cloud certificate ID (1 to 32 letters and digits)"
                ));
            }
            Selection::Id(id.to_string())
        }
        (None, true) => Selection::ByHost,
    };
    let credentials = match get(CREDENTIALS_ANNOTATION).filter(|v| !v.is_empty()) {
        Some(name) if !is_dns_subdomain(name) => {
            return Config::Invalid(format!(
                "{CREDENTIALS_ANNOTATION} {name:?} is not a Secret name"
            ));
        }
        other => other.map(str::to_string),
    };
    let refresh_interval = match get(REFRESH_INTERVAL_ANNOTATION).filter(|v| !v.is_empty()) {
        None => crd::DEFAULT_REFRESH_INTERVAL.to_string(),
        Some(text) => match crd::parse_duration(text) {
            Some(duration) if duration >= crd::MIN_REFRESH_INTERVAL && text.len() <= 32 => {
                text.to_string()
            }
            _ => {
                return Config::Invalid(format!(
                    "{REFRESH_INTERVAL_ANNOTATION} {text:?} is not a duration of at least 1m (e.g. 30m, 1h, 1h30m)"
                ));
            }
        },
    };
    let deletion_policy = match get(DELETION_POLICY_ANNOTATION).filter(|v| !v.is_empty()) {
        None | Some("Delete") => DeletionPolicy::Delete,
        Some("Retain") => DeletionPolicy::Retain,
        Some(other) => {
            return Config::Invalid(format!(
                "{DELETION_POLICY_ANNOTATION} must be Delete or Retain, not {other:?}"
            ));
        }
    };
    Config::Enabled(ShimConfig {
        selection,
        credentials,
        refresh_interval,
        deletion_policy,
    })
}

/// One TencentCertificate the route needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub certificate: TencentCertificate,
    pub secret_name: String,
    pub hosts: Vec<String>,
}

/// The TLS entries merged by Secret (two entries naming one Secret share it, so their hosts add up), in
/// the order the route names the Secrets.
fn merged_entries(route: &Route) -> Vec<(String, BTreeSet<String>)> {
    let mut merged: Vec<(String, BTreeSet<String>)> = Vec::new();
    for entry in &route.tls {
        let hosts = entry
            .hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        match merged.iter_mut().find(|(s, _)| *s == entry.secret_name) {
            Some((_, existing)) => existing.extend(hosts),
            None => merged.push((entry.secret_name.clone(), hosts.collect())),
        }
    }
    merged
}

/// The controller reference from a generated resource to its route. No `blockOwnerDeletion`: setting it
/// needs `update` on the route's finalizers where `OwnerReferencesPermissionEnforcement` runs, and the
/// operator may only read routes.
pub fn owner_reference(route: &Route) -> OwnerReference {
    OwnerReference {
        api_version: route.kind.api_version().to_string(),
        kind: route.kind.kind().to_string(),
        name: route.name.clone(),
        uid: route.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Whether `route` is the controlling owner of `certificate`.
pub fn controlled_by(certificate: &TencentCertificate, route: &Route) -> bool {
    certificate.owner_references().iter().any(|owner| {
        owner.controller == Some(true) && owner.uid == route.uid && owner.kind == route.kind.kind()
    })
}

/// The resources the route asks for, and what in it cannot be served (for Warning events).
pub fn desired(route: &Route, config: &ShimConfig) -> (Vec<Desired>, Vec<String>) {
    let mut wanted = Vec::new();
    let mut problems = Vec::new();
    for (secret_name, hosts) in merged_entries(route) {
        if secret_name.len() > MAX_NAME {
            problems.push(format!(
                "Secret {secret_name} is not served: a TencentCertificate is named after its Secret, and names are limited to {MAX_NAME} characters; use a shorter secretName or write the TencentCertificate yourself"
            ));
            continue;
        }
        let hosts: Vec<String> = hosts.into_iter().collect();
        let (certificate_id, domain, additional_domains) = match &config.selection {
            Selection::Id(id) => (Some(id.clone()), None, Vec::new()),
            Selection::ByHost => match hosts.split_first() {
                Some((first, rest)) => (None, Some(first.clone()), rest.to_vec()),
                None => {
                    problems.push(format!(
                        "Secret {secret_name} is not served: {SELECT_BY_HOST_ANNOTATION} needs the hosts of its TLS entry, and it lists none; add hosts or use {CERTIFICATE_ID_ANNOTATION}"
                    ));
                    continue;
                }
            },
        };
        let spec = TencentCertificateSpec {
            certificate_id,
            domain,
            additional_domains,
            selector: None,
            follow_renewals: true,
            renewal: None,
            secret_name: Some(secret_name.clone()),
            secret_template: None,
            refresh_interval: config.refresh_interval.clone(),
            credentials_ref: config.credentials.as_ref().map(CredentialsRef::named),
            deletion_policy: config.deletion_policy,
            include_ca: true,
            outputs: Default::default(),
        };
        let mut certificate = TencentCertificate::new(&secret_name, spec);
        certificate.metadata = ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(route.namespace.clone()),
            labels: Some(BTreeMap::from([(
                ROUTE_KIND_LABEL.to_string(),
                route.kind.kind().to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                ROUTE_ANNOTATION.to_string(),
                format!("{}/{}", route.kind, route.name),
            )])),
            owner_references: Some(vec![owner_reference(route)]),
            ..ObjectMeta::default()
        };
        wanted.push(Desired {
            certificate,
            secret_name,
            hosts,
        });
    }
    (wanted, problems)
}

/// The names of the resources the route asks for (what to look up before planning).
pub fn wanted_names(route: &Route) -> Vec<String> {
    match parse_annotations(&route.annotations) {
        Config::Enabled(config) => desired(route, &config)
            .0
            .into_iter()
            .map(|d| d.secret_name)
            .collect(),
        Config::Disabled | Config::Invalid(_) => Vec::new(),
    }
}

/// The spec fields the shim sets (and owns by server-side apply). `selector` and `secretTemplate` are
/// left to users: one they add stays, as another field manager's, and is no reason to write.
fn shim_fields_equal(a: &TencentCertificateSpec, b: &TencentCertificateSpec) -> bool {
    a.certificate_id == b.certificate_id
        && a.domain == b.domain
        && a.additional_domains == b.additional_domains
        && a.secret_name == b.secret_name
        && a.refresh_interval == b.refresh_interval
        && a.credentials_ref == b.credentials_ref
        && a.deletion_policy == b.deletion_policy
        && a.follow_renewals == b.follow_renewals
        && a.include_ca == b.include_ca
}

/// Whether an existing generated resource already says what `desired` says (spec, the route label and
/// annotation, and the owner reference); other labels and annotations are the user's.
fn up_to_date(existing: &TencentCertificate, desired: &TencentCertificate) -> bool {
    let contains = |have: &BTreeMap<String, String>, want: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    shim_fields_equal(&existing.spec, &desired.spec)
        && contains(existing.labels(), &desired.metadata.labels)
        && contains(existing.annotations(), &desired.metadata.annotations)
        && desired
            .owner_references()
            .iter()
            .all(|want| existing.owner_references().contains(want))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Box<Desired>),
    Update(Box<Desired>),
    /// Already as wanted.
    Keep {
        name: String,
        secret_name: String,
    },
    /// Generated for this route, no longer asked for.
    Delete {
        name: String,
        uid: Option<String>,
    },
    /// A resource of that name exists and this route does not control it: never overwritten.
    Conflict {
        name: String,
        owner: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// What the route asks for and cannot get (bad annotations, unservable entries): Warning events.
    pub problems: Vec<String>,
}

impl Plan {
    /// Something stays wrong until the user acts: look again later even without a change.
    pub fn needs_attention(&self) -> bool {
        !self.problems.is_empty()
            || self
                .steps
                .iter()
                .any(|s| matches!(s, Step::Conflict { .. }))
    }
}

fn describe_owner(certificate: &TencentCertificate) -> Option<String> {
    certificate
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{} {}", o.kind, o.name))
}

/// What to do for `route`, given the existing TencentCertificates of its namespace that either carry a
/// name it asks for or are controlled by it (others are ignored).
pub fn plan(route: &Route, existing: &[TencentCertificate]) -> Plan {
    let config = match parse_annotations(&route.annotations) {
        Config::Invalid(problem) => {
            return Plan {
                steps: Vec::new(),
                problems: vec![format!(
                    "{problem}; nothing generated from this {} is changed until it is fixed",
                    route.kind
                )],
            };
        }
        Config::Disabled => None,
        Config::Enabled(config) => Some(config),
    };
    let (wanted, problems) = match &config {
        Some(config) => desired(route, config),
        None => (Vec::new(), Vec::new()),
    };
    let mut steps = Vec::new();
    for want in wanted {
        let name = want.secret_name.clone();
        let found = existing.iter().find(|c| {
            c.name_any() == name && c.namespace().as_deref() == Some(route.namespace.as_str())
        });
        steps.push(match found {
            None => Step::Create(Box::new(want)),
            Some(current) if controlled_by(current, route) => {
                if up_to_date(current, &want.certificate) {
                    Step::Keep {
                        name,
                        secret_name: want.secret_name,
                    }
                } else {
                    Step::Update(Box::new(want))
                }
            }
            Some(current) => Step::Conflict {
                name,
                owner: describe_owner(current),
            },
        });
    }
    let wanted_names: BTreeSet<String> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Create(d) | Step::Update(d) => Some(d.secret_name.clone()),
            Step::Keep { name, .. } | Step::Conflict { name, .. } => Some(name.clone()),
            Step::Delete { .. } => None,
        })
        .collect();
    for current in existing {
        if controlled_by(current, route) && !wanted_names.contains(&current.name_any()) {
            steps.push(Step::Delete {
                name: current.name_any(),
                uid: current.uid(),
            });
        }
    }
    Plan { steps, problems }
}

/// The message of the event naming the resource that serves a Secret.
pub fn serving_message(route: &Route, desired: &Desired, created: bool) -> String {
    let what = match (
        &desired.certificate.spec.certificate_id,
        desired.hosts.as_slice(),
    ) {
        (Some(id), _) => format!("certificate {id}"),
        (None, hosts) => format!(
            "the newest issued certificate covering {}",
            hosts.join(", ")
        ),
    };
    format!(
        "Secret {} is served by TencentCertificate {} ({what}) from {} {}{}",
        desired.secret_name,
        desired.certificate.name_any(),
        route.kind,
        route.name,
        if created {
            ""
        } else {
            " (updated to the route's annotations)"
        }
    )
}

/// The message of the event for a resource that is no longer asked for.
pub fn deleted_message(route: &Route, name: &str, policy: DeletionPolicy) -> String {
    format!(
        "TencentCertificate {name} deleted: {} {} no longer asks for it (annotation or {} entry removed); {}",
        route.kind,
        route.name,
        route.kind.tls_field(),
        match policy {
            DeletionPolicy::Delete => "its Secret goes with it (deletionPolicy Delete)",
            DeletionPolicy::Retain => "its Secret stays (deletionPolicy Retain)",
        }
    )
}

/// The message of the Warning for a resource this route may not overwrite.
pub fn conflict_message(route: &Route, name: &str, owner: Option<&str>) -> String {
    format!(
        "TencentCertificate {name} already exists and is not managed by {} {} ({}); it is left as it is. Delete it, or name another Secret in {}",
        route.kind,
        route.name,
        owner.map_or_else(
            || "written by hand".to_string(),
            |o| format!("controlled by {o}")
        ),
        route.kind.tls_field()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(annotations: &[(&str, &str)], tls: &[(&str, &[&str])]) -> Route {
        Route {
            kind: RouteKind::Ingress,
            namespace: "web".into(),
            name: "shop".into(),
            uid: "uid-shop".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls: tls
                .iter()
                .map(|(secret, hosts)| TlsEntry {
                    secret_name: secret.to_string(),
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                })
                .collect(),
        }
    }

    fn by_id() -> Vec<(&'static str, &'static str)> {
        vec![(CERTIFICATE_ID_ANNOTATION, "aBcD1234")]
    }

    fn created(plan: &Plan) -> Vec<&Desired> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Create(d) => Some(d.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn annotations_parse_with_defaults_and_overrides() {
        let parse = |pairs: &[(&str, &str)]| {
            parse_annotations(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(parse(&[]), Config::Disabled);
        assert_eq!(
            parse(&[(SELECT_BY_HOST_ANNOTATION, "false")]),
            Config::Disabled
        );
        // Options alone ask for nothing.
        assert_eq!(
            parse(&[(CREDENTIALS_ANNOTATION, "tencent")]),
            Config::Disabled
        );
        assert_eq!(
            parse(&[(CERTIFICATE_ID_ANNOTATION, "aBcD1234")]),
            Config::Enabled(ShimConfig {
                selection: Selection::Id("aBcD1234".into()),
                credentials: None,
                refresh_interval: "1h".into(),
                deletion_policy: DeletionPolicy::Delete,
            })
        );
        assert_eq!(
            parse(&[
                (SELECT_BY_HOST_ANNOTATION, "true"),
                (CREDENTIALS_ANNOTATION, "tencent"),
                (REFRESH_INTERVAL_ANNOTATION, "30m"),
                (DELETION_POLICY_ANNOTATION, "Retain"),
            ]),
            Config::Enabled(ShimConfig {
                selection: Selection::ByHost,
                credentials: Some("tencent".into()),
                refresh_interval: "30m".into(),
                deletion_policy: DeletionPolicy::Retain,
            })
        );
        for (bad, says) in [
            (
                vec![
                    (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                    (SELECT_BY_HOST_ANNOTATION, "true"),
                ],
                "not both",
            ),
            (
                vec![(SELECT_BY_HOST_ANNOTATION, "yes")],
                "\"true\" or \"false\"",
            ),
            (
                vec![(CERTIFICATE_ID_ANNOTATION, "a-b")],
                "not a Tencent Cloud certificate ID",
            ),
            (
                vec![
                    (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                    (REFRESH_INTERVAL_ANNOTATION, "10s"),
                ],
                "at least 1m",
            ),
            (
                vec![
                    (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                    (DELETION_POLICY_ANNOTATION, "delete"),
                ],
                "Delete or Retain",
            ),
            (
                vec![
                    (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                    (CREDENTIALS_ANNOTATION, "Bad_Name"),
                ],
                "not a Secret name",
            ),
        ] {
            match parse(&bad) {
                Config::Invalid(message) => assert!(message.contains(says), "{message}"),
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn one_resource_per_secret_named_after_it_and_owned_by_the_route() {
        let r = route(
            &[
                (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                (CREDENTIALS_ANNOTATION, "tencent"),
            ],
            &[
                ("shop-tls", &["shop.example.com"]),
                ("api-tls", &["api.example.com"]),
            ],
        );
        let plan = plan(&r, &[]);
        assert!(plan.problems.is_empty());
        let made = created(&plan);
        assert_eq!(made.len(), 2);
        let shop = &made[0].certificate;
        assert_eq!(shop.name_any(), "shop-tls");
        assert_eq!(shop.namespace().as_deref(), Some("web"));
        assert_eq!(shop.spec.certificate_id.as_deref(), Some("aBcD1234"));
        assert_eq!(shop.spec.secret_name.as_deref(), Some("shop-tls"));
        assert_eq!(
            shop.spec.credentials_ref,
            Some(CredentialsRef::named("tencent"))
        );
        assert_eq!(shop.labels()[ROUTE_KIND_LABEL], "Ingress");
        assert_eq!(shop.annotations()[ROUTE_ANNOTATION], "Ingress/shop");
        let owner = &shop.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Ingress", "uid-shop")
        );
        assert_eq!(owner.api_version, "networking.k8s.io/v1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        assert!(controlled_by(shop, &r));
        assert_eq!(made[1].certificate.name_any(), "api-tls");
    }

    #[test]
    fn select_by_host_covers_all_hosts_of_an_entry_merged_by_secret() {
        let r = route(
            &[(SELECT_BY_HOST_ANNOTATION, "true")],
            &[
                ("shop-tls", &["www.shop.example.com", "Shop.Example.com."]),
                ("shop-tls", &["shop.example.com", "img.shop.example.com"]),
                ("empty-tls", &[]),
            ],
        );
        let plan = plan(&r, &[]);
        let made = created(&plan);
        assert_eq!(made.len(), 1);
        let spec = &made[0].certificate.spec;
        assert_eq!(spec.certificate_id, None);
        assert_eq!(spec.domain.as_deref(), Some("img.shop.example.com"));
        assert_eq!(
            spec.additional_domains,
            ["shop.example.com", "www.shop.example.com"]
        );
        assert_eq!(plan.problems.len(), 1);
        assert!(
            plan.problems[0].contains("Secret empty-tls is not served"),
            "{:?}",
            plan.problems
        );
        assert!(plan.needs_attention());
    }

    fn existing_from(plan: &Plan) -> Vec<TencentCertificate> {
        created(plan)
            .into_iter()
            .map(|d| {
                let mut c = d.certificate.clone();
                c.metadata.uid = Some(format!("uid-{}", c.name_any()));
                c
            })
            .collect()
    }

    #[test]
    fn unchanged_is_kept_changed_is_updated_removed_is_deleted() {
        let first = route(
            &by_id(),
            &[
                ("shop-tls", &["shop.example.com"]),
                ("api-tls", &["api.example.com"]),
            ],
        );
        let existing = existing_from(&plan(&first, &[]));
        // Same route: nothing to write.
        let again = plan(&first, &existing);
        assert!(
            again.steps.iter().all(|s| matches!(s, Step::Keep { .. })),
            "{again:?}"
        );
        // A user's own label on a generated resource is not a difference.
        let mut labelled = existing.clone();
        labelled[0]
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("team".into(), "web".into());
        assert!(
            plan(&first, &labelled)
                .steps
                .iter()
                .all(|s| matches!(s, Step::Keep { .. }))
        );
        // Nor is a secretTemplate a user added; a field the shim sets, changed by hand, is.
        let mut templated = existing.clone();
        templated[0].spec.secret_template = Some(Box::default());
        let keeps = |steps: &[Step]| steps.iter().all(|s| matches!(s, Step::Keep { .. }));
        assert!(keeps(&plan(&first, &templated).steps));
        let mut edited = existing.clone();
        edited[0].spec.include_ca = false;
        assert!(matches!(plan(&first, &edited).steps[0], Step::Update(_)));
        // Another id: both updated.
        let changed = route(
            &[(CERTIFICATE_ID_ANNOTATION, "eFgH5678")],
            &[
                ("shop-tls", &["shop.example.com"]),
                ("api-tls", &["api.example.com"]),
            ],
        );
        let updated = plan(&changed, &existing);
        assert_eq!(
            updated
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Update(_)))
                .count(),
            2
        );
        // A TLS entry removed: its resource goes, the other stays.
        let fewer = route(&by_id(), &[("shop-tls", &["shop.example.com"])]);
        let steps = plan(&fewer, &existing).steps;
        assert!(steps.contains(&Step::Delete {
            name: "api-tls".into(),
            uid: Some("uid-api-tls".into())
        }));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::Keep { name, .. } if name == "shop-tls"))
        );
        // The annotation removed: all go.
        let off = route(&[], &[("shop-tls", &["shop.example.com"])]);
        let steps = plan(&off, &existing).steps;
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| matches!(s, Step::Delete { .. })));
    }

    #[test]
    fn bad_annotations_change_nothing() {
        let good = route(&by_id(), &[("shop-tls", &["shop.example.com"])]);
        let existing = existing_from(&plan(&good, &[]));
        let bad = route(
            &[
                (CERTIFICATE_ID_ANNOTATION, "aBcD1234"),
                (REFRESH_INTERVAL_ANNOTATION, "soon"),
            ],
            &[("shop-tls", &["shop.example.com"])],
        );
        let plan = plan(&bad, &existing);
        assert!(plan.steps.is_empty(), "{plan:?}");
        assert!(plan.problems[0].contains("nothing generated from this Ingress is changed"));
    }

    #[test]
    fn resources_not_controlled_by_the_route_are_never_touched() {
        let r = route(&by_id(), &[("shop-tls", &["shop.example.com"])]);
        // Written by hand, same name.
        let mine = TencentCertificate::new(
            "shop-tls",
            serde_json::from_value(serde_json::json!({"certificateId": "zZzZ0001"})).unwrap(),
        );
        let mut mine = mine;
        mine.metadata.namespace = Some("web".into());
        let steps = plan(&r, std::slice::from_ref(&mine)).steps;
        assert_eq!(
            steps,
            [Step::Conflict {
                name: "shop-tls".into(),
                owner: None
            }]
        );
        // Generated for another Ingress: a conflict too, never deleted by this one.
        let other = route(&by_id(), &[("shop-tls", &["shop.example.com"])]);
        let other = Route {
            name: "other".into(),
            uid: "uid-other".into(),
            ..other
        };
        let theirs = existing_from(&plan(&other, &[]));
        let steps = plan(&r, &theirs).steps;
        assert_eq!(
            steps,
            [Step::Conflict {
                name: "shop-tls".into(),
                owner: Some("Ingress other".into())
            }]
        );
        let off = route(&[], &[]);
        assert!(plan(&off, &theirs).steps.is_empty());
        assert!(
            conflict_message(&r, "shop-tls", Some("Ingress other"))
                .contains("not managed by Ingress shop (controlled by Ingress other)")
        );
    }

    #[test]
    fn long_secret_names_are_reported_not_generated() {
        let long = "s".repeat(64);
        let r = route(&by_id(), &[(long.as_str(), &["shop.example.com"])]);
        let plan = plan(&r, &[]);
        assert!(plan.steps.is_empty());
        assert!(plan.problems[0].contains("limited to 63 characters"));
    }

    #[test]
    fn messages_name_the_serving_resource() {
        let r = route(&by_id(), &[("shop-tls", &["shop.example.com"])]);
        let plan = plan(&r, &[]);
        let made = created(&plan);
        assert_eq!(
            serving_message(&r, made[0], true),
            "Secret shop-tls is served by TencentCertificate shop-tls (certificate aBcD1234) from Ingress shop"
        );
        assert!(
            deleted_message(&r, "shop-tls", DeletionPolicy::Retain)
                .contains("its Secret stays (deletionPolicy Retain)")
        );
    }
}
