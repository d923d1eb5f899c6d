//! `DescribeCertificates`: the request filter, the list item (`CertificateSummary`), lenient decoding of a
//! page, and the pagination decisions. No I/O here; `Client::describe_certificates` drives it.
//!
//! Tencent's list items are loosely typed across API revisions (`ProjectId` is a string in the list and an
//! integer in the request, `HasRenewOrder` is documented as the renewal's id while older answers carried
//! a flag), so each polymorphic field is read from a JSON value by hand instead of failing the whole page.
//! Like the detail response, any private key field is ignored and never held.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{CertificateExtra, STATUS_ISSUED, parse_tencent_time};
use super::error::TencentError;

pub const ACTION_DESCRIBE_CERTIFICATES: &str = "DescribeCertificates";
/// Tencent caps `Limit` at 1000; larger values are served as 1000.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Certificates per page unless configured otherwise: few requests, small answers.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// A scan reads at most this many pages. An account with more certificates than `pages × page size` must
/// narrow the filter (e.g. `SearchKey`); a silently truncated list could select the wrong certificate.
pub const MAX_PAGES: u32 = 200;

/// A resource tag (`TagKey`/`TagValue`), as a filter and on list items.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Tag {
    #[serde(rename = "TagKey")]
    pub key: String,
    #[serde(rename = "TagValue")]
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The `DescribeCertificates` filters this client uses. Only the fields that are set are sent. Callers
/// with equal filters (after [`CertificateFilter::normalized`]) share one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateFilter {
    /// Fuzzy match on certificate id, alias or domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_key: Option<String>,
    /// `SVR` (server certificates) or `CA` (client CA certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_type: Option<String>,
    /// Status codes to keep, e.g. `[1]` for issued certificates only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificate_status: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,
    /// `upload` (uploaded by the user) or `buy` (issued through Tencent Cloud).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_source: Option<String>,
    /// Certificates carrying all of these tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Exact certificate ids (Tencent accepts at most 50).
    #[serde(rename = "CertIds", skip_serializing_if = "Vec::is_empty")]
    pub cert_ids: Vec<String>,
}

impl CertificateFilter {
    /// Issued server certificates: the candidates for domain selection.
    pub fn issued_server_certificates() -> Self {
        Self {
            certificate_type: Some("SVR".to_string()),
            certificate_status: vec![STATUS_ISSUED],
            ..Self::default()
        }
    }

    /// The same filter with its lists sorted and deduplicated, so that equivalent filters share a scan.
    pub fn normalized(&self) -> Self {
        let mut filter = self.clone();
        filter.certificate_status.sort_unstable();
        filter.certificate_status.dedup();
        filter.tags.sort();
        filter.tags.dedup();
        filter.cert_ids.sort();
        filter.cert_ids.dedup();
        filter.search_key = filter
            .search_key
            .map(|key| key.trim().to_string())
            .filter(|key| !key.is_empty());
        filter
    }

    /// The request parameters of one page.
    pub fn page_params(&self, offset: u32, limit: u32) -> Result<Value, TencentError> {
        let mut params = serde_json::to_value(self).map_err(|e| TencentError::Malformed {
            action: ACTION_DESCRIBE_CERTIFICATES.to_string(),
            detail: format!("cannot encode the filter: {e}"),
        })?;
        if let Some(object) = params.as_object_mut() {
            object.insert("Offset".into(), Value::from(offset));
            object.insert("Limit".into(), Value::from(limit.clamp(1, MAX_PAGE_SIZE)));
        }
        Ok(params)
    }
}

/// One certificate of a `DescribeCertificates` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    pub certificate_id: String,
    pub status: Option<i64>,
    pub status_name: Option<String>,
    /// The main domain (certificate CN).
    pub domain: Option<String>,
    /// The user's note on the certificate.
    pub alias: Option<String>,
    /// Every DNS name of the certificate: `Domain`, then `SubjectAltName` and `CertSANs`, without
    /// duplicates. (In the list the SANs include the main domain, unlike in the detail response.)
    pub subject_alt_names: Vec<String>,
    pub certificate_type: Option<String>,
    /// Brand or origin: `trustasia`, `upload`, …
    pub from: Option<String>,
    /// A string in list answers (an integer in requests).
    pub project_id: Option<String>,
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
    pub inserted_at: Option<jiff::Timestamp>,
    /// The renewal certificate's id: `HasRenewOrder` when it carries an id, else `CertificateExtra.RenewOrder`.
    pub renew_order: Option<String>,
    /// Whether a renewal exists (true also when an older answer only flagged it without an id).
    pub has_renew_order: bool,
    /// The certificate that hosting swapped in for this one.
    pub hosting_renew_cert_id: Option<String>,
    /// Expires within 30 days, by Tencent's account.
    pub is_expiring: Option<bool>,
    pub allow_download: Option<bool>,
    pub renewable: Option<bool>,
    pub deployable: Option<bool>,
    /// An SM2 (国密) certificate, which standard TLS stacks cannot serve.
    pub is_sm: Option<bool>,
    pub encrypt_algorithm: Option<String>,
    pub tags: Vec<Tag>,
    pub extra: CertificateExtra,
}

impl CertificateSummary {
    pub fn is_issued(&self) -> bool {
        self.status == Some(STATUS_ISSUED)
    }
}

/// One decoded page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub total_count: Option<u64>,
    pub certificates: Vec<CertificateSummary>,
    /// Items without a certificate id (unusable, left out).
    pub skipped: usize,
    pub request_id: String,
}

/// The fields read from a list item. Unknown fields (and key material, should any appear) are ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawSummary {
    certificate_id: Option<Value>,
    status: Option<Value>,
    status_name: Option<Value>,
    domain: Option<Value>,
    alias: Option<Value>,
    subject_alt_name: Option<Value>,
    #[serde(rename = "CertSANs")]
    cert_sans: Option<Value>,
    certificate_type: Option<Value>,
    from: Option<Value>,
    project_id: Option<Value>,
    cert_begin_time: Option<Value>,
    cert_end_time: Option<Value>,
    insert_time: Option<Value>,
    has_renew_order: Option<Value>,
    hosting_renew_cert_id: Option<Value>,
    is_expiring: Option<Value>,
    allow_download: Option<Value>,
    renew_able: Option<Value>,
    deployable: Option<Value>,
    #[serde(rename = "IsSM")]
    is_sm: Option<Value>,
    encrypt_algorithm: Option<Value>,
    tags: Option<Value>,
    certificate_extra: Option<Value>,
}

/// A non-empty string; numbers are accepted as their decimal text.
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| text(Some(v))).collect(),
        _ => Vec::new(),
    }
}

fn time(value: Option<&Value>) -> Option<jiff::Timestamp> {
    text(value).as_deref().and_then(parse_tencent_time)
}

fn tags(value: Option<&Value>) -> Vec<Tag> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            Some(Tag::new(
                text(item.get("TagKey"))?,
                text(item.get("TagValue")).unwrap_or_default(),
            ))
        })
        .collect()
}

/// `CertificateExtra` read field by field, so one oddly typed field does not lose the links.
fn extra(value: Option<&Value>) -> CertificateExtra {
    let Some(value @ Value::Object(_)) = value else {
        return CertificateExtra::default();
    };
    CertificateExtra {
        renew_order: text(value.get("RenewOrder")),
        origin_certificate_id: text(value.get("OriginCertificateId")),
        replaced_by: text(value.get("ReplacedBy")),
        replaced_for: text(value.get("ReplacedFor")),
        service_renew_certificate_id: text(value.get("ServiceRenewCertificateId")),
        service_origin_certificate_id: text(value.get("ServiceOriginCertificateId")),
        sm_cert: integer(value.get("SMCert")),
    }
}

/// `Domain` first, then the other names, each once (DNS names compare case-insensitively).
fn merge_names(domain: Option<&str>, lists: [Vec<String>; 2]) -> Vec<String> {
    let mut seen = HashSet::new();
    domain
        .map(str::to_string)
        .into_iter()
        .chain(lists.into_iter().flatten())
        .filter(|name| seen.insert(name.to_ascii_lowercase()))
        .collect()
}

fn decode_summary(item: &Value) -> Option<CertificateSummary> {
    let raw: RawSummary = serde_json::from_value(item.clone()).ok()?;
    let certificate_id = text(raw.certificate_id.as_ref())?;
    let domain = text(raw.domain.as_ref());
    let extra = extra(raw.certificate_extra.as_ref());
    let (renew_order_flag, renew_order_id) = match raw.has_renew_order.as_ref() {
        Some(Value::Bool(flag)) => (*flag, None),
        other => {
            let id = text(other);
            (id.is_some(), id)
        }
    };
    let renew_order = renew_order_id.or_else(|| extra.renew_order.clone());
    Some(CertificateSummary {
        subject_alt_names: merge_names(
            domain.as_deref(),
            [
                strings(raw.subject_alt_name.as_ref()),
                strings(raw.cert_sans.as_ref()),
            ],
        ),
        certificate_id,
        status: integer(raw.status.as_ref()),
        status_name: text(raw.status_name.as_ref()),
        domain,
        alias: text(raw.alias.as_ref()),
        certificate_type: text(raw.certificate_type.as_ref()),
        from: text(raw.from.as_ref()),
        project_id: text(raw.project_id.as_ref()),
        not_before: time(raw.cert_begin_time.as_ref()),
        not_after: time(raw.cert_end_time.as_ref()),
        inserted_at: time(raw.insert_time.as_ref()),
        has_renew_order: renew_order_flag || renew_order.is_some(),
        renew_order,
        hosting_renew_cert_id: text(raw.hosting_renew_cert_id.as_ref()),
        is_expiring: boolean(raw.is_expiring.as_ref()),
        allow_download: boolean(raw.allow_download.as_ref()),
        renewable: boolean(raw.renew_able.as_ref()),
        deployable: boolean(raw.deployable.as_ref()),
        is_sm: boolean(raw.is_sm.as_ref()),
        encrypt_algorithm: text(raw.encrypt_algorithm.as_ref()),
        tags: tags(raw.tags.as_ref()),
        extra,
    })
}

/// Decodes the `Response` object of one `DescribeCertificates` page.
pub fn decode_page(response: &Value) -> Result<ListPage, TencentError> {
    let request_id = response
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let items = match response.get("Certificates") {
        Some(Value::Array(items)) => items.as_slice(),
        // "May be null" like most Tencent outputs: an empty page.
        None | Some(Value::Null) => &[],
        Some(_) => {
            return Err(TencentError::Malformed {
                action: ACTION_DESCRIBE_CERTIFICATES.to_string(),
                detail: format!("Certificates is not a list (RequestId {request_id})"),
            });
        }
    };
    let certificates: Vec<CertificateSummary> = items.iter().filter_map(decode_summary).collect();
    Ok(ListPage {
        total_count: integer(response.get("TotalCount")).and_then(|n| u64::try_from(n).ok()),
        skipped: items.len() - certificates.len(),
        certificates,
        request_id,
    })
}

/// What to do after a page: fetch the page at `offset`, or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStep {
    Next { offset: u32 },
    Done,
}

/// The pagination decisions of one scan: offsets, the end condition and the page cap. Items are collected
/// by id, so a certificate that moves across a page boundary while the scan runs (the default order is by
/// apply time, newest first) is kept once.
#[derive(Debug)]
pub struct Pager {
    page_size: u32,
    max_pages: u32,
    pages: u32,
    offset: u32,
    seen: HashSet<String>,
    certificates: Vec<CertificateSummary>,
}

impl Pager {
    pub fn new(page_size: u32, max_pages: u32) -> Self {
        Self {
            page_size: page_size.clamp(1, MAX_PAGE_SIZE),
            max_pages: max_pages.max(1),
            pages: 0,
            offset: 0,
            seen: HashSet::new(),
            certificates: Vec::new(),
        }
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The first request's offset.
    pub fn first(&self) -> PageStep {
        PageStep::Next { offset: 0 }
    }

    /// Records a page and says what comes next. Errors when the list is larger than the page cap allows.
    pub fn record(&mut self, page: ListPage) -> Result<PageStep, TencentError> {
        self.pages += 1;
        let received = u32::try_from(page.certificates.len() + page.skipped).unwrap_or(u32::MAX);
        for certificate in page.certificates {
            if self.seen.insert(certificate.certificate_id.clone()) {
                self.certificates.push(certificate);
            }
        }
        self.offset = self.offset.saturating_add(received);
        let reached_total = page
            .total_count
            .is_some_and(|total| u64::from(self.offset) >= total);
        // A short page is the last one, whatever TotalCount says; an empty one too (no progress possible).
        if received < self.page_size || reached_total {
            return Ok(PageStep::Done);
        }
        if self.pages >= self.max_pages {
            let total = page
                .total_count
                .map_or_else(|| "more".to_string(), |t| t.to_string());
            return Err(TencentError::Malformed {
                action: ACTION_DESCRIBE_CERTIFICATES.to_string(),
                detail: format!(
                    "the certificate list has {total} entries, more than the {} this client reads ({} pages of {}); narrow the search (RequestId {})",
                    u64::from(self.max_pages) * u64::from(self.page_size),
                    self.max_pages,
                    self.page_size,
                    page.request_id
                ),
            });
        }
        Ok(PageStep::Next {
            offset: self.offset,
        })
    }

    pub fn into_certificates(self) -> Vec<CertificateSummary> {
        self.certificates
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_set_filter_fields_are_sent() {
        let params = CertificateFilter::default().page_params(0, 100).unwrap();
        assert_eq!(params, json!({"Offset": 0, "Limit": 100}));
        let filter = CertificateFilter {
            search_key: Some("shop.example.com".into()),
            certificate_type: Some("SVR".into()),
            certificate_status: vec![1],
            project_id: Some(7),
            filter_source: Some("buy".into()),
            tags: vec![Tag::new("env", "prod")],
            cert_ids: vec!["aBcD1234".into()],
        };
        assert_eq!(
            filter.page_params(200, 5000).unwrap(),
            json!({
                "SearchKey": "shop.example.com",
                "CertificateType": "SVR",
                "CertificateStatus": [1],
                "ProjectId": 7,
                "FilterSource": "buy",
                "Tags": [{"TagKey": "env", "TagValue": "prod"}],
                "CertIds": ["aBcD1234"],
                "Offset": 200,
                "Limit": 1000
            })
        );
    }

    #[test]
    fn equivalent_filters_normalize_equal() {
        let a = CertificateFilter {
            certificate_status: vec![3, 1, 1],
            tags: vec![Tag::new("b", "2"), Tag::new("a", "1")],
            search_key: Some("  ".into()),
            ..CertificateFilter::default()
        };
        let b = CertificateFilter {
            certificate_status: vec![1, 3],
            tags: vec![Tag::new("a", "1"), Tag::new("b", "2")],
            ..CertificateFilter::default()
        };
        assert_eq!(a.normalized(), b.normalized());
        assert_ne!(a.normalized(), CertificateFilter::default());
    }

    #[test]
    fn list_items_decode_leniently() {
        let page = decode_page(&json!({
            "TotalCount": "3",
            "Certificates": [
                {
                    "CertificateId": "aBcD1234",
                    "Status": 1,
                    "Domain": "shop.example.com",
                    "SubjectAltName": ["shop.example.com", "WWW.shop.example.com"],
                    "CertSANs": ["www.shop.example.com", "api.shop.example.com"],
                    "ProjectId": "0",
                    "From": "trustasia",
                    "CertBeginTime": "2025-01-01 08:00:00",
                    "CertEndTime": "2025-04-01 07:59:59",
                    "InsertTime": null,
                    "HasRenewOrder": "eFgH5678",
                    "HostingRenewCertId": "",
                    "IsExpiring": false,
                    "AllowDownload": true,
                    "Tags": [{"TagKey": "env", "TagValue": "prod"}, {"TagValue": "orphan"}],
                    "CertificateExtra": {"ReplacedBy": "rEis0001", "SMCert": "0", "DomainNumber": "3"},
                    "CertificatePrivateKey": "-----BEGIN PRIVATE KEY-----secret",
                    "SomethingNew": {"x": 1}
                },
                {"CertificateId": "old00001", "Status": "3", "HasRenewOrder": true, "ProjectId": 12},
                {"Domain": "no-id.example.com"}
            ],
            "RequestId": "r-1"
        }))
        .unwrap();
        assert_eq!(page.total_count, Some(3));
        assert_eq!(page.skipped, 1);
        assert_eq!(page.request_id, "r-1");
        let first = &page.certificates[0];
        assert!(first.is_issued());
        assert_eq!(
            first.subject_alt_names,
            vec![
                "shop.example.com",
                "WWW.shop.example.com",
                "api.shop.example.com"
            ]
        );
        assert_eq!(
            first.not_before.unwrap().to_string(),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(first.not_after.unwrap().to_string(), "2025-03-31T23:59:59Z");
        assert_eq!(first.inserted_at, None);
        assert_eq!(first.renew_order.as_deref(), Some("eFgH5678"));
        assert!(first.has_renew_order);
        assert_eq!(first.hosting_renew_cert_id, None);
        assert_eq!(first.project_id.as_deref(), Some("0"));
        assert_eq!(first.tags, vec![Tag::new("env", "prod")]);
        assert_eq!(first.extra.replaced_by.as_deref(), Some("rEis0001"));
        assert_eq!(first.extra.sm_cert, Some(0));
        assert_eq!(
            (first.allow_download, first.is_expiring),
            (Some(true), Some(false))
        );
        assert!(!format!("{first:?}").contains("secret"));
        let second = &page.certificates[1];
        assert_eq!(second.status, Some(3));
        assert_eq!(second.project_id.as_deref(), Some("12"));
        assert!(second.has_renew_order && second.renew_order.is_none());
    }

    #[test]
    fn null_or_missing_lists_are_empty_pages_and_other_shapes_are_malformed() {
        let empty =
            decode_page(&json!({"TotalCount": 0, "Certificates": null, "RequestId": "r"})).unwrap();
        assert!(empty.certificates.is_empty());
        let err = decode_page(&json!({"Certificates": {"a": 1}, "RequestId": "r"})).unwrap_err();
        assert!(matches!(err, TencentError::Malformed { .. }), "{err:?}");
    }

    fn page(ids: std::ops::Range<u32>, total: Option<u64>) -> ListPage {
        ListPage {
            total_count: total,
            certificates: ids
                .map(|i| decode_summary(&json!({"CertificateId": format!("c{i:05}")})).unwrap())
                .collect(),
            skipped: 0,
            request_id: "r".into(),
        }
    }

    #[test]
    fn pages_advance_until_a_short_page_or_the_total() {
        let mut pager = Pager::new(10, 50);
        assert_eq!(pager.first(), PageStep::Next { offset: 0 });
        assert_eq!(
            pager.record(page(0..10, Some(25))).unwrap(),
            PageStep::Next { offset: 10 }
        );
        assert_eq!(
            pager.record(page(10..20, Some(25))).unwrap(),
            PageStep::Next { offset: 20 }
        );
        assert_eq!(
            pager.record(page(20..25, Some(25))).unwrap(),
            PageStep::Done
        );
        assert_eq!(pager.into_certificates().len(), 25);

        // An exact multiple ends on TotalCount without an extra empty request.
        let mut pager = Pager::new(10, 50);
        pager.record(page(0..10, Some(20))).unwrap();
        assert_eq!(
            pager.record(page(10..20, Some(20))).unwrap(),
            PageStep::Done
        );

        // Without TotalCount, an empty page ends the scan.
        let mut pager = Pager::new(10, 50);
        pager.record(page(0..10, None)).unwrap();
        assert_eq!(pager.record(page(0..0, None)).unwrap(), PageStep::Done);
    }

    #[test]
    fn items_seen_twice_across_pages_are_kept_once() {
        let mut pager = Pager::new(10, 50);
        pager.record(page(0..10, Some(20))).unwrap();
        // A new certificate pushed everything down by one: c00009 appears again.
        pager.record(page(9..19, Some(21))).unwrap();
        pager.record(page(19..20, Some(21))).unwrap();
        let ids: Vec<String> = pager
            .into_certificates()
            .into_iter()
            .map(|c| c.certificate_id)
            .collect();
        assert_eq!(ids.len(), 20);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);
    }

    #[test]
    fn the_page_cap_refuses_an_endless_list() {
        let mut pager = Pager::new(10, 3);
        pager.record(page(0..10, Some(1_000))).unwrap();
        pager.record(page(10..20, Some(1_000))).unwrap();
        let err = pager.record(page(20..30, Some(1_000))).unwrap_err();
        assert!(err.to_string().contains("1000 entries"), "{err}");
        assert!(err.to_string().contains("more than the 30"), "{err}");
    }
}
