//! `ApplyCertificate` in the simulator: free certificates (package type 83, TrustAsia DV, 3 months),
//! renewals with `OldCertificateId`, and the domain validation life cycle.
//!
//! An application creates the new certificate at once, as Tencent does, in a pending state: status 4
//! ("DNS record added automatically") for `DNS_AUTO`, 0 ("under review", `StatusMsg` `PENDING-DCV`) for
//! `DNS` and `FILE`. A renewal links the two like Tencent: the old certificate's `RenewOrder`
//! (`HasRenewOrder` in the list) and the new one's `OriginCertificateId`. While pending, the detail answer
//! carries `VerifyType` and `DvAuthDetail` (`DvAuthKey`, `DvAuthValue`, `DvAuthDomain`, `DvAuthPath`,
//! `DvAuthKeySubDomain`, and `DvAuths` items with `DvAuthVerifyType` `TXT` or `FILE`): the record to
//! create. Orders move on when the simulator is next asked anything:
//! - `DNS_AUTO` issues `dns_auto_delay_ms` after the application (settings, below);
//! - `DNS` and `FILE` wait for `POST /_sim/orders/{id}/validate` ("the record now exists"), then issue;
//! - `POST /_sim/orders/{id}/fail` (`{"reason": "…"}`) ends one with status 2 and that `StatusMsg`.
//!
//! Refusals, with codes from the SDK's error table (`errorcodes.py`; Tencent does not document which
//! code `ApplyCertificate` answers in each case, so where several fit, the simulator picks one):
//! - `MissingParameter` (`DvAuthMethod`, `DomainName`), `UnknownParameter`, `InvalidParameterValue`
//!   (a `DvAuthMethod` other than `DNS_AUTO`/`DNS`/`FILE`, a `PackageType` other than 83),
//!   `InvalidParameter.PeriodInvalid` (`ValidityPeriod` not 3), `InvalidParameter.RenewAlgorithmInvalid`
//!   (`CsrEncryptAlgo`/`CsrKeyParameter` other than RSA 2048 or ECC prime256v1),
//!   `InvalidParameter.DomainInvalid` (a malformed domain, or not the old certificate's),
//!   `InvalidParameterValue.CertificateDomainMaxLengthInvalid` (over 64 characters);
//! - `FailedOperation.CertificateNotFound` (unknown `OldCertificateId`),
//!   `FailedOperation.InvalidCertificateSource` (the old certificate is uploaded or paid),
//!   `InvalidParameter.WithDetailReason` (outside the 30 days before the old certificate's end, or
//!   after it), `FailedOperation.CertificateExists` (the old certificate already has a renewal that has
//!   not failed);
//! - `FailedOperation.InvalidParam` (`DNS_AUTO` for a domain not on DNSPod, see `dnspod_domains`);
//! - `FailedOperation.ExceedsFreeLimit` (more applications than `free_quota`).
//!
//! Faults registered for `ApplyCertificate` (or the old certificate's id) answer *before* anything is
//! created; latencies for `ApplyCertificate` are slept *after* the order is created, so a client that
//! times out has made an order without learning its id — the case a client must never answer with a
//! second application.
//!
//! Control endpoints: `GET /_sim/orders` (every order), `POST /_sim/orders/{id}/validate`,
//! `POST /_sim/orders/{id}/fail`, `GET`/`POST /_sim/apply/settings` ([`ApplySettings`]; a POST replaces
//! them, omitted fields take their defaults).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::catalog::CertificateSpec;
use super::manage::{ControlError, RenewLink, RenewRequest};
use super::state::{SimCertificate, SimState};
use tencent_ssl::apply::{
    ACTION_APPLY_CERTIFICATE, DvAuthMethod, PACKAGE_TYPE_FREE_DV, RENEWAL_WINDOW, STATUS_DNS_AUTO,
    STATUS_FAILED, STATUS_ISSUED, STATUS_UNDER_REVIEW,
};

/// Where FILE validation looks, as TrustAsia asks.
pub const FILE_VALIDATION_PATH: &str = "/.well-known/pki-validation/";
/// The validity of an issued free certificate, in days (3 months).
const FREE_VALID_DAYS: i64 = 90;

/// How applications behave (`GET`/`POST /_sim/apply/settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApplySettings {
    /// `DNS_AUTO` orders issue this long after the application.
    pub dns_auto_delay_ms: u64,
    /// The domains (zones) on Tencent's DNSPod: a domain qualifies for `DNS_AUTO` if it is one of them or
    /// under one. `None`: every domain is.
    pub dnspod_domains: Option<Vec<String>>,
    /// Applications accepted in all (`None`: no limit); the next gets `FailedOperation.ExceedsFreeLimit`.
    pub free_quota: Option<u32>,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            dns_auto_delay_ms: 2000,
            dnspod_domains: None,
            free_quota: None,
        }
    }
}

impl ApplySettings {
    fn on_dnspod(&self, domain: &str) -> bool {
        let domain = domain.trim_start_matches("*.").to_ascii_lowercase();
        self.dnspod_domains.as_ref().is_none_or(|zones| {
            zones.iter().any(|zone| {
                let zone = zone.trim_matches('.').to_ascii_lowercase();
                domain == zone || domain.ends_with(&format!(".{zone}"))
            })
        })
    }
}

/// One order, as `GET /_sim/orders` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimOrder {
    pub certificate_id: String,
    pub old_certificate_id: Option<String>,
    pub domain: String,
    /// `DNS_AUTO`, `DNS` or `FILE`.
    pub method: String,
    /// The record (or file name) to create, its type (`TXT`/`FILE`) and value.
    pub record_key: String,
    pub record_type: String,
    pub record_value: String,
    pub sub_domain: Option<String>,
    pub path: Option<String>,
    /// `pending`, `issued` or `failed`.
    pub state: String,
    pub failure: Option<String>,
    #[serde(skip)]
    applied_at: Instant,
    #[serde(skip)]
    validated: bool,
}

/// The applications of one simulator (kept in [`SimState`]).
#[derive(Debug, Default)]
pub struct Applications {
    settings: Mutex<ApplySettings>,
    orders: Mutex<BTreeMap<String, SimOrder>>,
    accepted: Mutex<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A refused request: (code, message).
pub type Refusal = (Cow<'static, str>, String);

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    (Cow::Borrowed(code), message.into())
}

fn token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

fn new_certificate_id(state: &SimState) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    loop {
        let id: String = (0..8)
            .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
            .collect();
        if state.certificate(&id).is_none() {
            return id;
        }
    }
}

/// The package type a certificate reports: none for uploaded ones, the spec's, else 83 (free DV).
pub fn package_type(certificate: &SimCertificate) -> Option<String> {
    if certificate.from == "upload" {
        return None;
    }
    Some(
        certificate
            .spec
            .as_ref()
            .and_then(|spec| spec.package_type.clone())
            .unwrap_or_else(|| PACKAGE_TYPE_FREE_DV.to_string()),
    )
}

fn is_free(certificate: &SimCertificate) -> bool {
    package_type(certificate).as_deref() == Some(PACKAGE_TYPE_FREE_DV)
}

mod params;
use params::{Application, parse};

/// The checks on `OldCertificateId`: it exists, is free, ends within 30 days and has not ended, and has
/// no renewal yet (one that failed does not count).
fn check_old(state: &SimState, application: &Application, old_id: &str) -> Result<(), Refusal> {
    let Some(old) = state.certificate(old_id) else {
        return Err(refuse(
            "FailedOperation.CertificateNotFound",
            "证书不存在。",
        ));
    };
    if !is_free(&old) {
        return Err(refuse(
            "FailedOperation.InvalidCertificateSource",
            "证书来源错误。 Only free certificates (package type 83) are renewed with ApplyCertificate.",
        ));
    }
    if old.domain.to_ascii_lowercase() != application.domain {
        return Err(refuse(
            "InvalidParameter.DomainInvalid",
            format!(
                "域名无效，请重新输入。 The renewal of {old_id} must be for {}.",
                old.domain
            ),
        ));
    }
    let now = jiff::Timestamp::now();
    let in_window = old.status == STATUS_ISSUED
        && old
            .not_after
            .is_some_and(|end| now < end && end - RENEWAL_WINDOW <= now);
    if !in_window {
        return Err(refuse(
            "InvalidParameter.WithDetailReason",
            "参数有误。 OldCertificateId: a certificate can be renewed only within 30 days before it expires, and before it does.",
        ));
    }
    if let Some(renewal) = old.links.renew_order.as_deref()
        && state
            .certificate(renewal)
            .is_some_and(|r| r.status != STATUS_FAILED)
    {
        return Err(refuse(
            "FailedOperation.CertificateExists",
            format!("证书已存在。 {old_id} already has the renewal {renewal}."),
        ));
    }
    Ok(())
}

/// Handles one `ApplyCertificate`: the answer's fields, or a refusal.
pub async fn apply_certificate(state: Arc<SimState>, params: Value) -> Result<Value, Refusal> {
    let application = parse(&params)?;
    let fault = state.take_fault(ACTION_APPLY_CERTIFICATE).or_else(|| {
        application
            .old
            .as_deref()
            .and_then(|old| state.take_fault(old))
    });
    if let Some(code) = fault {
        return Err((Cow::Owned(code), "Injected by the simulator.".to_string()));
    }
    if let Some(old) = application.old.as_deref() {
        check_old(&state, &application, old)?;
    }
    let settings = lock(&state.applications.settings).clone();
    if application.method == DvAuthMethod::DnsAuto && !settings.on_dnspod(&application.domain) {
        return Err(refuse(
            "FailedOperation.InvalidParam",
            format!(
                "参数有误。 DNS_AUTO needs {} to be resolved by Tencent Cloud DNSPod in this account; use DNS or FILE.",
                application.domain
            ),
        ));
    }
    {
        let mut accepted = lock(&state.applications.accepted);
        if settings.free_quota.is_some_and(|quota| *accepted >= quota) {
            return Err(refuse(
                "FailedOperation.ExceedsFreeLimit",
                "免费证书数量超出限制。",
            ));
        }
        *accepted += 1;
    }
    let status = match application.method {
        DvAuthMethod::DnsAuto => STATUS_DNS_AUTO,
        DvAuthMethod::Dns | DvAuthMethod::File => STATUS_UNDER_REVIEW,
    };
    let id = new_certificate_id(&state);
    let made = {
        let state = state.clone();
        let id = id.clone();
        let old = application.old.clone();
        let (domain, alias, project_id, rsa) = (
            application.domain.clone(),
            application.alias.clone(),
            application.project_id,
            application.rsa,
        );
        tokio::task::spawn_blocking(move || match old {
            Some(old) => state.renew_certificate(
                &old,
                &RenewRequest {
                    new_id: Some(id),
                    status: Some(status),
                    link: RenewLink::Renew,
                    valid_days: Some(FREE_VALID_DAYS),
                },
            ),
            None => {
                let mut spec = CertificateSpec::new(id);
                spec.domain = Some(domain);
                spec.status = status;
                spec.alias = alias;
                spec.project_id = project_id.unwrap_or(0);
                spec.valid_days = FREE_VALID_DAYS;
                if rsa {
                    spec.key = super::pki::KeyKind::Rsa2048;
                }
                state.add_certificate(&spec)
            }
        })
        .await
    };
    match made {
        Ok(Ok(_)) => {}
        Ok(Err(ControlError::Duplicate(_))) | Ok(Err(ControlError::NotFound(_))) => {
            return Err(refuse(
                "FailedOperation.CertificateNotFound",
                "证书不存在。",
            ));
        }
        Ok(Err(other)) => return Err(refuse("InternalError", other.to_string())),
        Err(join) => return Err(refuse("InternalError", join.to_string())),
    }
    let domain = application.domain.clone();
    let bare = domain.trim_start_matches("*.").to_string();
    let (record_key, record_type, sub_domain, path) = match application.method {
        DvAuthMethod::File => (
            format!("{}.txt", token()),
            "FILE",
            None,
            Some(FILE_VALIDATION_PATH.to_string()),
        ),
        _ => (
            format!("_dnsauth.{bare}"),
            "TXT",
            Some("_dnsauth".to_string()),
            None,
        ),
    };
    lock(&state.applications.orders).insert(
        id.clone(),
        SimOrder {
            certificate_id: id.clone(),
            old_certificate_id: application.old.clone(),
            domain,
            method: application.method.as_str().to_string(),
            record_key,
            record_type: record_type.to_string(),
            record_value: token(),
            sub_domain,
            path,
            state: "pending".to_string(),
            failure: None,
            applied_at: Instant::now(),
            validated: false,
        },
    );
    Ok(json!({ "CertificateId": id }))
}

/// Sleeps the latency registered for `ApplyCertificate`. The server calls it after the application was
/// handled and counted, so a client that gives up meanwhile has made an order (and a counted request)
/// without learning its id.
pub async fn answer_delay(state: &SimState) {
    let delay = state.latency_for(ACTION_APPLY_CERTIFICATE);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Moves pending orders on: DNS_AUTO after its delay, DNS and FILE once validated.
pub fn advance(state: &SimState) {
    let delay = Duration::from_millis(lock(&state.applications.settings).dns_auto_delay_ms);
    let due: Vec<String> = {
        let mut orders = lock(&state.applications.orders);
        orders
            .values_mut()
            .filter(|order| order.state == "pending")
            .filter(|order| {
                order.validated
                    || (order.method == DvAuthMethod::DnsAuto.as_str()
                        && order.applied_at.elapsed() >= delay)
            })
            .map(|order| {
                order.state = "issued".to_string();
                order.certificate_id.clone()
            })
            .collect()
    };
    for id in due {
        let _ = state.set_certificate_status(&id, STATUS_ISSUED);
    }
}

fn order(state: &SimState, id: &str) -> Option<SimOrder> {
    lock(&state.applications.orders).get(id).cloned()
}

/// The `DvAuthDetail` of a pending order.
fn dv_auth_detail(order: &SimOrder) -> Value {
    json!({
        "DvAuthKey": order.record_key,
        "DvAuthValue": order.record_value,
        "DvAuthDomain": order.domain,
        "DvAuthPath": order.path,
        "DvAuthKeySubDomain": order.sub_domain,
        "DvAuths": [{
            "DvAuthKey": order.record_key,
            "DvAuthValue": order.record_value,
            "DvAuthDomain": order.domain,
            "DvAuthPath": order.path,
            "DvAuthSubDomain": order.sub_domain,
            "DvAuthVerifyType": order.record_type,
        }],
    })
}

fn status_msg(certificate: &SimCertificate, order: Option<&SimOrder>) -> Value {
    match (certificate.status, order) {
        (STATUS_FAILED, Some(order)) => json!(order.failure),
        (STATUS_UNDER_REVIEW | STATUS_DNS_AUTO, Some(_)) => json!("PENDING-DCV"),
        _ => Value::Null,
    }
}

/// Adds the order fields to a `DescribeCertificateDetail` answer.
pub fn detail_fields(state: &SimState, certificate: &SimCertificate, mut detail: Value) -> Value {
    let order = order(state, &certificate.id);
    let package = package_type(certificate);
    if let Some(object) = detail.as_object_mut() {
        object.insert(
            "IsVip".into(),
            json!(package.is_some() && !is_free(certificate)),
        );
        object.insert("PackageType".into(), json!(package));
        object.insert(
            "VerifyType".into(),
            json!(order.as_ref().map(|o| o.method.clone())),
        );
        object.insert("StatusMsg".into(), status_msg(certificate, order.as_ref()));
        if certificate.status == STATUS_DNS_AUTO {
            object.insert("StatusName".into(), json!("自动添加DNS记录"));
        }
        let pending = order.as_ref().filter(|o| o.state == "pending");
        object.insert(
            "DvAuthDetail".into(),
            pending.map_or(Value::Null, dv_auth_detail),
        );
    }
    detail
}

/// Adds the order fields to a `DescribeCertificates` item.
pub fn list_fields(state: &SimState, certificate: &SimCertificate, mut item: Value) -> Value {
    let order = order(state, &certificate.id);
    let package = package_type(certificate);
    if let Some(object) = item.as_object_mut() {
        object.insert(
            "IsVip".into(),
            json!(package.is_some() && !is_free(certificate)),
        );
        object.insert("PackageType".into(), json!(package));
        object.insert(
            "VerifyType".into(),
            json!(order.as_ref().map(|o| o.method.clone())),
        );
        object.insert("StatusMsg".into(), status_msg(certificate, order.as_ref()));
        if certificate.status == STATUS_DNS_AUTO {
            object.insert("StatusName".into(), json!("自动添加DNS记录"));
        }
    }
    item
}

mod control;
pub use control::routes;

#[cfg(test)]
mod tests;
