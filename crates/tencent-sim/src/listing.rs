//! `DescribeCertificates` in the simulator: request parsing with Tencent's parameter errors, filtering,
//! ordering, pagination, and list items shaped like Tencent's (`SubjectAltName` and `CertSANs` *include*
//! the main domain here, unlike the detail answer; `ProjectId` is a string; no key material).
//!
//! Supported filters: `SearchKey` (case-insensitive substring of id, alias, domain or any name),
//! `CertificateType`, `CertificateStatus`, `ProjectId`, `FilterSource` (`upload`/`buy`), `Upload`,
//! `Tags` (all must match), `CertIds` (≤ 50), `ExpirationSort` (`ASC`/`DESC`; default: newest first by
//! creation), `FilterExpiring`, `IsSM`, `IsPendingIssue`. Filters the simulator cannot model (`Deployable`,
//! `Renew`, `Hostable`, `ServiceId`) are refused rather than ignored, so a test never silently gets an
//! unfiltered list; unknown parameters get `UnknownParameter`, as from Tencent.

use serde_json::{Map, Value, json};

use super::state::{SimCertificate, SimState};
use tencent_ssl::client::STATUS_ISSUED;

/// Tencent's default page size, and its cap.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 1000;
const MAX_CERT_IDS: usize = 50;
/// `IsExpiring`: within 30 days of the end.
const EXPIRING_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 30);

const KNOWN_PARAMETERS: &[&str] = &[
    "Offset",
    "Limit",
    "SearchKey",
    "CertificateType",
    "ProjectId",
    "ExpirationSort",
    "CertificateStatus",
    "FilterSource",
    "Upload",
    "IsSM",
    "FilterExpiring",
    "Tags",
    "IsPendingIssue",
    "CertIds",
];
const UNMODELLED_PARAMETERS: &[&str] = &["Deployable", "Renew", "Hostable", "ServiceId"];

/// A refused request: (code, message).
pub type Refusal = (&'static str, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    NewestFirst,
    ExpiryAscending,
    ExpiryDescending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    offset: u64,
    limit: u64,
    search_key: Option<String>,
    certificate_type: Option<String>,
    statuses: Vec<i64>,
    project_id: Option<u64>,
    source: Option<String>,
    tags: Vec<(String, String)>,
    cert_ids: Vec<String>,
    order: Order,
    expiring_only: bool,
    sm_only: bool,
    pending_only: bool,
}

fn invalid(name: &str, expected: &str) -> Refusal {
    (
        "InvalidParameter",
        format!("The parameter `{name}` must be {expected}."),
    )
}

fn unsigned(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(name, "a non-negative integer")),
    }
}

fn string(params: &Map<String, Value>, name: &str) -> Result<Option<String>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone()).filter(|t| !t.is_empty())),
        Some(_) => Err(invalid(name, "a string")),
    }
}

fn flag(params: &Map<String, Value>, name: &str) -> Result<bool, Refusal> {
    match unsigned(params, name)? {
        None | Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(_) => Err(invalid(name, "0 or 1")),
    }
}

fn list<T>(
    params: &Map<String, Value>,
    name: &str,
    item: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| item(v).ok_or_else(|| invalid(name, expected)))
            .collect(),
        Some(_) => Err(invalid(name, expected)),
    }
}

impl ListQuery {
    pub fn parse(params: &Value) -> Result<Self, Refusal> {
        let Value::Object(params) = params else {
            return Err(invalid("body", "a JSON object"));
        };
        for name in params.keys() {
            if UNMODELLED_PARAMETERS.contains(&name.as_str()) {
                return Err((
                    "InvalidParameter",
                    format!("The parameter `{name}` is not modelled by the simulator."),
                ));
            }
            if !KNOWN_PARAMETERS.contains(&name.as_str()) {
                return Err((
                    "UnknownParameter",
                    format!("The parameter `{name}` is not recognized."),
                ));
            }
        }
        let limit = match unsigned(params, "Limit")? {
            None | Some(0) => DEFAULT_LIMIT,
            Some(limit) => limit.min(MAX_LIMIT),
        };
        let order = match string(params, "ExpirationSort")?.as_deref() {
            None => Order::NewestFirst,
            Some("ASC") => Order::ExpiryAscending,
            Some("DESC") => Order::ExpiryDescending,
            Some(_) => return Err(invalid("ExpirationSort", "ASC or DESC")),
        };
        let source = match string(params, "FilterSource")?.as_deref() {
            None => None,
            Some(source @ ("upload" | "buy")) => Some(source.to_string()),
            Some(_) => return Err(invalid("FilterSource", "upload or buy")),
        };
        let cert_ids = list(
            params,
            "CertIds",
            |v| v.as_str().map(String::from),
            "a list of strings",
        )?;
        if cert_ids.len() > MAX_CERT_IDS {
            return Err((
                "InvalidParameter.CertificateIdNumberLimit",
                format!("At most {MAX_CERT_IDS} certificate ids per request."),
            ));
        }
        let tags = list(
            params,
            "Tags",
            |v| {
                Some((
                    v.get("TagKey")?.as_str()?.to_string(),
                    v.get("TagValue")?.as_str()?.to_string(),
                ))
            },
            "a list of {TagKey, TagValue}",
        )?;
        Ok(Self {
            offset: unsigned(params, "Offset")?.unwrap_or(0),
            limit,
            search_key: string(params, "SearchKey")?.map(|k| k.to_lowercase()),
            certificate_type: string(params, "CertificateType")?,
            statuses: list(
                params,
                "CertificateStatus",
                Value::as_i64,
                "a list of integers",
            )?,
            project_id: unsigned(params, "ProjectId")?,
            source: if flag(params, "Upload")? {
                Some("upload".to_string())
            } else {
                source
            },
            tags,
            cert_ids,
            order,
            expiring_only: flag(params, "FilterExpiring")?,
            sm_only: flag(params, "IsSM")?,
            pending_only: flag(params, "IsPendingIssue")?,
        })
    }

    fn matches(&self, certificate: &SimCertificate, now: jiff::Timestamp) -> bool {
        let names = || std::iter::once(&certificate.domain).chain(&certificate.subject_alt_names);
        let search = |key: &String| {
            certificate.id.to_lowercase().contains(key)
                || certificate.alias.to_lowercase().contains(key)
                || names().any(|name| name.to_lowercase().contains(key))
        };
        // Every simulated certificate is a server certificate, and none is SM2.
        self.certificate_type
            .as_deref()
            .is_none_or(|kind| kind == "SVR")
            && !self.sm_only
            && self.search_key.as_ref().is_none_or(search)
            && (self.statuses.is_empty() || self.statuses.contains(&certificate.status))
            && self
                .project_id
                .is_none_or(|id| id == certificate.project_id)
            && self
                .source
                .as_deref()
                .is_none_or(|source| (source == "upload") == (certificate.from == "upload"))
            && self.tags.iter().all(|tag| certificate.tags.contains(tag))
            && (self.cert_ids.is_empty() || self.cert_ids.contains(&certificate.id))
            && (!self.expiring_only || is_expiring(certificate, now))
            && (!self.pending_only || certificate.status == 0)
    }
}

fn is_expiring(certificate: &SimCertificate, now: jiff::Timestamp) -> bool {
    certificate.status == STATUS_ISSUED
        && certificate
            .not_after
            .is_some_and(|end| now <= end && end <= now + EXPIRING_WITHIN)
}

/// `TotalCount` and the requested page of items.
pub fn describe_certificates(state: &SimState, query: &ListQuery) -> (u64, Vec<Value>) {
    let now = jiff::Timestamp::now();
    let certificates = state
        .certificates
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut matching: Vec<&SimCertificate> = certificates
        .values()
        .filter(|c| query.matches(c, now))
        .collect();
    // Ties (and unknown dates) fall back to the id, so pages never overlap.
    match query.order {
        Order::NewestFirst => matching.sort_by(|a, b| {
            b.inserted_at
                .cmp(&a.inserted_at)
                .then_with(|| a.id.cmp(&b.id))
        }),
        Order::ExpiryAscending => {
            matching.sort_by(|a, b| a.not_after.cmp(&b.not_after).then_with(|| a.id.cmp(&b.id)))
        }
        Order::ExpiryDescending => {
            matching.sort_by(|a, b| b.not_after.cmp(&a.not_after).then_with(|| a.id.cmp(&b.id)))
        }
    }
    let total = matching.len() as u64;
    let page = matching
        .into_iter()
        .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
        .map(|c| super::apply::list_fields(state, c, list_item(c, now)))
        .collect();
    (total, page)
}

fn key_algorithm(certificate: &SimCertificate) -> Value {
    match certificate.spec.as_ref().map(|s| s.key.is_rsa()) {
        Some(true) => json!("RSA"),
        Some(false) => json!("ECC"),
        None => Value::Null,
    }
}

/// One `Certificates` item, as of now.
pub fn item(certificate: &SimCertificate) -> Value {
    list_item(certificate, jiff::Timestamp::now())
}

fn list_item(certificate: &SimCertificate, now: jiff::Timestamp) -> Value {
    let mut names = vec![certificate.domain.clone()];
    names.extend(certificate.subject_alt_names.iter().cloned());
    let links = &certificate.links;
    json!({
        "OwnerUin": "100000000001",
        "ProjectId": certificate.project_id.to_string(),
        "From": certificate.from,
        "PackageType": if certificate.from == "upload" { Value::Null } else { json!("83") },
        "CertificateType": "SVR",
        "Domain": certificate.domain,
        "Alias": certificate.alias,
        "Status": certificate.status,
        "StatusName": super::server::status_name(certificate.status),
        "CertificateExtra": super::server::certificate_extra(certificate),
        "CertBeginTime": super::server::tencent_time(certificate.not_before),
        "CertEndTime": super::server::tencent_time(certificate.not_after),
        "ValidityPeriod": "3",
        "InsertTime": super::server::tencent_time(Some(certificate.inserted_at)),
        "CertificateId": certificate.id,
        "SubjectAltName": names,
        "IsDv": true,
        "IsWildcard": certificate.domain.starts_with("*."),
        "RenewAble": false,
        "Deployable": certificate.status == STATUS_ISSUED,
        "Tags": certificate
            .tags
            .iter()
            .map(|(key, value)| json!({"TagKey": key, "TagValue": value}))
            .collect::<Vec<_>>(),
        "IsSM": false,
        "EncryptAlgorithm": key_algorithm(certificate),
        "HostingStatus": if links.hosting_renew_cert_id.is_some() { 10 } else { -1 },
        // Tencent answers empty strings as often as nulls for absent ids; both forms appear here.
        "HostingRenewCertId": links.hosting_renew_cert_id.clone().unwrap_or_default(),
        "HasRenewOrder": links.renew_order,
        "IsExpiring": is_expiring(certificate, now),
        "CertSANs": names,
        "AllowDownload": true,
        "KeyPasswordCustomFlag": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(params: Value) -> Result<ListQuery, Refusal> {
        ListQuery::parse(&params)
    }

    #[test]
    fn defaults_and_caps_follow_tencent() {
        let query = parse(json!({})).unwrap();
        assert_eq!((query.offset, query.limit), (0, DEFAULT_LIMIT));
        assert_eq!(parse(json!({"Limit": 5000})).unwrap().limit, MAX_LIMIT);
        assert_eq!(parse(json!({"Limit": 0})).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_parameters_get_tencent_codes() {
        for (params, code) in [
            (json!({"Limit": "10"}), "InvalidParameter"),
            (json!({"Offset": -1}), "InvalidParameter"),
            (json!({"CertificateStatus": 1}), "InvalidParameter"),
            (json!({"CertificateStatus": ["1"]}), "InvalidParameter"),
            (json!({"ExpirationSort": "UP"}), "InvalidParameter"),
            (json!({"FilterSource": "stolen"}), "InvalidParameter"),
            (json!({"Tags": [{"TagKey": "a"}]}), "InvalidParameter"),
            (json!({"Renew": 1}), "InvalidParameter"),
            (json!({"IsSM": 2}), "InvalidParameter"),
            (json!({"Frobnicate": 1}), "UnknownParameter"),
            (
                json!({"CertIds": (0..51).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
                "InvalidParameter.CertificateIdNumberLimit",
            ),
        ] {
            assert_eq!(parse(params.clone()).unwrap_err().0, code, "{params}");
        }
    }
}
