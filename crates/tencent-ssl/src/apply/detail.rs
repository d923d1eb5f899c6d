//! What `DescribeCertificateDetail` says about an order: the fields the renewal decision reads
//! (package type, status message, validation records, renewal links), and never the key fields.

use serde::Deserialize;
use serde_json::Value;

use super::PACKAGE_TYPE_FREE_DV;
use crate::client::{ACTION_DESCRIBE_DETAIL, CertificateExtra, parse_tencent_time};
use crate::error::TencentError;
use crate::list;

/// One validation record Tencent asks for (`DvAuthDetail`, or each of its `DvAuths`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationRecord {
    /// The DNS record name to create (`DvAuthKey`), or for FILE the file name.
    pub key: String,
    /// The record's (or the file's) content (`DvAuthValue`).
    pub value: String,
    /// The domain validated (`DvAuthDomain`).
    pub domain: Option<String>,
    /// `TXT`, `CNAME` or `FILE` (`DvAuthVerifyType`); `None` when Tencent does not say.
    pub record_type: Option<String>,
    /// FILE: the path the file is served under (`DvAuthPath`).
    pub path: Option<String>,
    /// The sub-domain part of the record name (`DvAuthKeySubDomain`/`DvAuthSubDomain`).
    pub sub_domain: Option<String>,
}

/// What `DescribeCertificateDetail` says about an order (or any certificate) for the renewal decision.
/// Like [`super::CertificateDetail`], no key material is deserialised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDetail {
    pub certificate_id: String,
    pub status: Option<i64>,
    pub status_name: Option<String>,
    /// `StatusMsg`: e.g. `PENDING-DCV`, or why validation failed.
    pub status_msg: Option<String>,
    /// `DNS_AUTO`, `DNS`, `FILE`, … (`VerifyType`).
    pub verify_type: Option<String>,
    /// `PackageType` (`83` free TrustAsia DV; `None` for uploaded certificates).
    pub package_type: Option<String>,
    /// `IsVip`: a paid certificate, as Tencent reports it.
    pub is_vip: Option<bool>,
    pub from: Option<String>,
    pub domain: Option<String>,
    /// The other names, excluding `domain`.
    pub subject_alt_names: Vec<String>,
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
    pub extra: CertificateExtra,
    pub validation: Vec<ValidationRecord>,
    pub request_id: String,
}

impl OrderDetail {
    /// A free TrustAsia DV certificate (package 83): the only kind `ApplyCertificate` renews.
    pub fn is_free(&self) -> bool {
        self.package_type.as_deref().map(str::trim) == Some(PACKAGE_TYPE_FREE_DV)
            && self.is_vip != Some(true)
    }

    /// The certificate this one renews (`CertificateExtra.OriginCertificateId`).
    pub fn origin(&self) -> Option<&str> {
        non_empty(self.extra.origin_certificate_id.as_deref())
    }

    /// The renewal made for this certificate (`CertificateExtra.RenewOrder`).
    pub fn renewal(&self) -> Option<&str> {
        non_empty(self.extra.renew_order.as_deref())
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawAuth {
    dv_auth_key: Option<String>,
    dv_auth_value: Option<String>,
    dv_auth_domain: Option<String>,
    dv_auth_path: Option<String>,
    dv_auth_key_sub_domain: Option<String>,
    dv_auth_sub_domain: Option<String>,
    dv_auth_verify_type: Option<String>,
    #[serde(rename = "DvAuths")]
    dv_auths: Option<Vec<RawAuth>>,
}

impl RawAuth {
    fn record(&self) -> Option<ValidationRecord> {
        let key = non_empty(self.dv_auth_key.as_deref())?.to_string();
        Some(ValidationRecord {
            key,
            value: self.dv_auth_value.clone().unwrap_or_default(),
            domain: self.dv_auth_domain.clone().filter(|d| !d.is_empty()),
            record_type: self.dv_auth_verify_type.clone().filter(|t| !t.is_empty()),
            path: self.dv_auth_path.clone().filter(|p| !p.is_empty()),
            sub_domain: self
                .dv_auth_key_sub_domain
                .clone()
                .or_else(|| self.dv_auth_sub_domain.clone())
                .filter(|s| !s.is_empty()),
        })
    }
}

/// The fields read from a detail answer (the private and public key fields are deliberately absent).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawOrder {
    certificate_id: Option<String>,
    status: Option<i64>,
    status_name: Option<String>,
    status_msg: Option<String>,
    verify_type: Option<String>,
    // A string in the SDK's model; read leniently (a number would be as clear).
    package_type: Option<Value>,
    is_vip: Option<bool>,
    from: Option<String>,
    domain: Option<String>,
    subject_alt_name: Option<Vec<String>>,
    cert_begin_time: Option<String>,
    cert_end_time: Option<String>,
    certificate_extra: Option<CertificateExtra>,
    dv_auth_detail: Option<RawAuth>,
}

/// Decodes a `DescribeCertificateDetail` answer into an [`OrderDetail`].
pub fn decode_order(certificate_id: &str, response: Value) -> Result<OrderDetail, TencentError> {
    let request_id = response
        .get("RequestId")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let raw: RawOrder = serde_json::from_value(response).map_err(|e| TencentError::Malformed {
        action: ACTION_DESCRIBE_DETAIL.to_string(),
        detail: format!("unexpected field types ({e}) (RequestId {request_id})"),
    })?;
    let mut validation = Vec::new();
    if let Some(auth) = &raw.dv_auth_detail {
        // Several domains: one record each in DvAuths; else the top-level record.
        let many: Vec<ValidationRecord> = auth
            .dv_auths
            .iter()
            .flatten()
            .filter_map(RawAuth::record)
            .collect();
        if many.is_empty() {
            validation.extend(auth.record());
        } else {
            validation = many;
        }
    }
    let time = |t: &Option<String>| t.as_deref().and_then(parse_tencent_time);
    Ok(OrderDetail {
        certificate_id: raw
            .certificate_id
            .unwrap_or_else(|| certificate_id.to_string()),
        status: raw.status,
        status_name: raw.status_name,
        status_msg: raw.status_msg.filter(|m| !m.is_empty()),
        verify_type: raw.verify_type.filter(|v| !v.is_empty()),
        package_type: list::text(raw.package_type.as_ref()),
        is_vip: raw.is_vip,
        from: raw.from,
        domain: raw.domain,
        subject_alt_names: raw.subject_alt_name.unwrap_or_default(),
        not_before: time(&raw.cert_begin_time),
        not_after: time(&raw.cert_end_time),
        extra: raw.certificate_extra.unwrap_or_default(),
        validation,
        request_id,
    })
}
