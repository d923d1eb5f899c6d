//! Applying for free certificates (`ApplyCertificate`) and reading the order that results.
//!
//! Since 2024 Tencent Cloud's free DV certificates (TrustAsia, package type 83) last three months, and a
//! renewal is a new application: `ApplyCertificate` with `OldCertificateId` (accepted within 30 days of the
//! old certificate's end, before it ends). Tencent then links the two: the old certificate's
//! `CertificateExtra.RenewOrder` (the list's `HasRenewOrder`) names the new one, and the new one's
//! `CertificateExtra.OriginCertificateId` names the old one. The new certificate is the order: status 0
//! (or 4, "DNS record added automatically") while its domain is validated, 1 once issued, 2 if validation
//! failed. While it waits, `DescribeCertificateDetail.DvAuthDetail` says what to create (a DNS record, or a
//! file under `/.well-known/pki-validation/`).
//!
//! # Never two applications
//!
//! `ApplyCertificate` has no idempotency token (the SDK's request has no `ClientToken`), and a request
//! that timed out after it was sent may have created an order. So an application is never retried
//! blindly:
//!
//! - [`Client::apply_certificate`] sends once. The only automatic repeats are those the shared `call`
//!   makes for answers that prove Tencent did not act: a rate-limit refusal and an expired signature
//!   (rejected by the gateway before the action runs).
//! - Every other failure is sorted by [`ApplyError`]: a Tencent refusal that cannot have created an order
//!   (`Refused`: parameter, quota, window, credential errors), or an outcome that is not known
//!   (`Uncertain`: timeouts, connection resets, 5xx, unreadable answers, and Tencent-side internal
//!   errors). After `Uncertain` the caller must *look* ([`Client::find_renewal_order`]) before it may
//!   apply again — [`Client::apply_renewal`] does exactly that, and the operator's decision
//!   (`renewal::order`) only applies when no order is recorded, visible, or possibly in flight.
//! - Within one process, [`ApplyLocks`] serialises applications per (credentials, old certificate), so
//!   two resources naming one certificate cannot both apply; across restarts and leader changes the order
//!   id recorded in status, and Tencent's own `RenewOrder` link, are what is found first.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{ACTION_DESCRIBE_DETAIL, Client};
use super::credentials::Credentials;
use super::error::{ErrorClass, TencentError, reason};
use super::list::CertificateFilter;

mod detail;
pub use detail::{OrderDetail, ValidationRecord, decode_order};

pub const ACTION_APPLY_CERTIFICATE: &str = "ApplyCertificate";
/// `PackageType` 83: TrustAsia C1 DV Free, the only package `ApplyCertificate` accepts.
pub const PACKAGE_TYPE_FREE_DV: &str = "83";
/// `ValidityPeriod` in months: the only value accepted for package 83.
pub const FREE_VALIDITY_MONTHS: &str = "3";
/// `OldCertificateId` is accepted within this long before the old certificate's end.
pub const RENEWAL_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 30);
/// Tencent status codes of an order.
pub const STATUS_UNDER_REVIEW: i64 = 0;
pub const STATUS_ISSUED: i64 = 1;
pub const STATUS_FAILED: i64 = 2;
/// "DNS record added automatically" (DNS_AUTO validation in progress).
pub const STATUS_DNS_AUTO: i64 = 4;
pub const STATUS_CANCELLED: i64 = 7;

/// How the domain of an application is validated (`DvAuthMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DvAuthMethod {
    /// Tencent adds the DNS record itself: the domain must be on Tencent's DNSPod, in the same account.
    DnsAuto,
    /// Someone adds the DNS record Tencent names (`DvAuthDetail`).
    Dns,
    /// Someone serves the file Tencent names under `/.well-known/pki-validation/`.
    File,
}

impl DvAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsAuto => "DNS_AUTO",
            Self::Dns => "DNS",
            Self::File => "FILE",
        }
    }
}

impl fmt::Display for DvAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DvAuthMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "DNS_AUTO" => Ok(Self::DnsAuto),
            "DNS" => Ok(Self::Dns),
            "FILE" => Ok(Self::File),
            other => Err(format!(
                "unknown DvAuthMethod {other:?} (DNS_AUTO, DNS or FILE)"
            )),
        }
    }
}

/// The key Tencent generates for the new certificate (`CsrEncryptAlgo`/`CsrKeyParameter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA 2048, Tencent's default.
    #[default]
    Rsa2048,
    /// ECDSA P-256 (`prime256v1`).
    EcdsaP256,
}

/// One `ApplyCertificate` request. The domain of a renewal is the old certificate's, as Tencent reports
/// it — never a name taken from a tenant's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    pub domain: String,
    pub method: DvAuthMethod,
    /// A renewal of this certificate (within [`RENEWAL_WINDOW`] of its end).
    pub old_certificate_id: Option<String>,
    pub key: KeyAlgorithm,
    pub alias: Option<String>,
    pub project_id: Option<u64>,
    /// Remove the DNS_AUTO record once issued (`DeleteDnsAutoRecord`; DNS_AUTO only).
    pub delete_dns_auto_record: bool,
}

impl ApplyRequest {
    /// A renewal of `old_certificate_id` for `domain`, validated by `method`.
    pub fn renewal(
        old_certificate_id: impl Into<String>,
        domain: impl Into<String>,
        method: DvAuthMethod,
    ) -> Self {
        Self {
            domain: domain.into(),
            method,
            old_certificate_id: Some(old_certificate_id.into()),
            key: KeyAlgorithm::default(),
            alias: None,
            project_id: None,
            delete_dns_auto_record: false,
        }
    }

    /// The request body, with Tencent's field names.
    pub fn params(&self) -> Value {
        let mut params = json!({
            "DvAuthMethod": self.method.as_str(),
            "DomainName": self.domain,
            "PackageType": PACKAGE_TYPE_FREE_DV,
            "ValidityPeriod": FREE_VALIDITY_MONTHS,
        });
        let object = params.as_object_mut();
        if let Some(object) = object {
            if let Some(old) = &self.old_certificate_id {
                object.insert("OldCertificateId".into(), json!(old));
            }
            match self.key {
                KeyAlgorithm::Rsa2048 => {
                    object.insert("CsrEncryptAlgo".into(), json!("RSA"));
                    object.insert("CsrKeyParameter".into(), json!("2048"));
                }
                KeyAlgorithm::EcdsaP256 => {
                    object.insert("CsrEncryptAlgo".into(), json!("ECC"));
                    object.insert("CsrKeyParameter".into(), json!("prime256v1"));
                }
            }
            if let Some(alias) = &self.alias {
                object.insert("Alias".into(), json!(alias));
            }
            if let Some(project) = self.project_id {
                object.insert("ProjectId".into(), json!(project));
            }
            if self.delete_dns_auto_record && self.method == DvAuthMethod::DnsAuto {
                object.insert("DeleteDnsAutoRecord".into(), json!(true));
            }
        }
        params
    }
}

/// A successful application: the new certificate (the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub certificate_id: String,
    pub request_id: String,
}

/// `ApplyCertificate`'s own refusals (from the SDK's error table) that the shared table does not know
/// or classes otherwise, with the reason they get. Each means Tencent created no order.
pub const APPLY_REFUSALS: &[(&str, &str)] = &[
    ("FailedOperation.ExceedsFreeLimit", reason::QUOTA_EXCEEDED),
    (
        "FailedOperation.MainDomainCertificateCountLimit",
        reason::QUOTA_EXCEEDED,
    ),
    ("FailedOperation.PackageCountLimit", reason::QUOTA_EXCEEDED),
    ("FailedOperation.PackageExpired", reason::QUOTA_EXCEEDED),
    ("FailedOperation.PackageNotFound", reason::INVALID_REQUEST),
    ("FailedOperation.CertificateExists", reason::INVALID_REQUEST),
    (
        "FailedOperation.InvalidCertificateSource",
        reason::INVALID_REQUEST,
    ),
    (
        "FailedOperation.InvalidCertificateStatusCode",
        reason::INVALID_REQUEST,
    ),
    ("FailedOperation.GenCSRFail", reason::INVALID_REQUEST),
    (
        "FailedOperation.NoRealNameAuth",
        reason::ACCOUNT_NOT_VERIFIED,
    ),
];

/// The reason of an `ApplyCertificate` error: its own table first, then the shared one.
pub fn apply_reason(err: &TencentError) -> &'static str {
    err.code()
        .and_then(|code| APPLY_REFUSALS.iter().find(|(c, _)| *c == code))
        .map_or_else(|| err.reason(), |(_, reason)| reason)
}

/// Why an application did not return an order id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Tencent answered and refused: no order was created. Applying again makes sense only once
    /// something changes (the spec, the certificate, the quota).
    #[error("{0}")]
    Refused(TencentError),
    /// The outcome is not known (a timeout after sending, a connection lost, a 5xx, an internal error):
    /// an order may exist. Look for it before applying again.
    #[error("{0} (the application may have been made: look for the order before applying again)")]
    Uncertain(TencentError),
}

impl ApplyError {
    /// Sorts a failed `ApplyCertificate` call. Tencent's own refusals (permanent or credential errors, and
    /// rate limits once the call's retries are spent) created nothing; everything else may have.
    pub fn from_call(err: TencentError) -> Self {
        let refused = match &err {
            TencentError::Api { code, .. } => {
                APPLY_REFUSALS.iter().any(|(c, _)| c == code)
                    || err.is_rate_limited()
                    || matches!(err.class(), ErrorClass::Permanent | ErrorClass::Credentials)
            }
            // A gateway's 4xx (other than 429, which is a rate limit) means the request was rejected.
            TencentError::HttpStatus { status, .. } => *status < 500 || *status == 429,
            TencentError::Redirected { .. } => true,
            _ => false,
        };
        if refused {
            Self::Refused(err)
        } else {
            Self::Uncertain(err)
        }
    }

    pub fn error(&self) -> &TencentError {
        match self {
            Self::Refused(err) | Self::Uncertain(err) => err,
        }
    }

    /// The condition reason of the underlying error.
    pub fn reason(&self) -> &'static str {
        apply_reason(self.error())
    }
}

/// What [`Client::apply_renewal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalOrder {
    /// An order for this renewal already existed: nothing was sent.
    Found(Box<OrderDetail>),
    /// A new application was made; this is the order.
    Applied(Applied),
}

/// Serialises applications per (credentials, old certificate id) within one process. The operator keeps
/// one; every path that may apply goes through it.
#[derive(Debug, Default, Clone)]
pub struct ApplyLocks {
    locks: Arc<std::sync::Mutex<Turns>>,
}

/// One turn per (credentials fingerprint, old certificate id).
type Turns = HashMap<([u8; 32], String), Arc<tokio::sync::Mutex<()>>>;

impl ApplyLocks {
    /// Waits for the turn of `(credentials, old_certificate_id)`; the turn ends when the guard drops.
    pub async fn lock(
        &self,
        credentials: &Credentials,
        old_certificate_id: &str,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Forget turns nobody holds or waits for, so the map stays as small as the work in flight.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks
                .entry((credentials.fingerprint(), old_certificate_id.to_string()))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }
}

/// Looks made for an order after an uncertain application: attempts and the pause between them.
const FIND_AFTER_UNCERTAIN: (u32, Duration) = (3, Duration::from_millis(500));

impl Client {
    /// Sends one `ApplyCertificate` (see the module docs: never retried blindly).
    pub async fn apply_certificate(
        &self,
        credentials: &Credentials,
        request: &ApplyRequest,
    ) -> Result<Applied, ApplyError> {
        let response = self
            .call(credentials, ACTION_APPLY_CERTIFICATE, &request.params())
            .await
            .map_err(ApplyError::from_call)?;
        let request_id = response
            .get("RequestId")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        match response
            .get("CertificateId")
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty())
        {
            Some(id) => Ok(Applied {
                certificate_id: id.to_string(),
                request_id,
            }),
            // A success without an id: something may have been created, and its id is unknown.
            None => Err(ApplyError::Uncertain(TencentError::Malformed {
                action: ACTION_APPLY_CERTIFICATE.to_string(),
                detail: format!("a success without a CertificateId (RequestId {request_id})"),
            })),
        }
    }

    /// `DescribeCertificateDetail`, read for the renewal decision: package type, validation records,
    /// status message and renewal links.
    pub async fn describe_order(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
    ) -> Result<OrderDetail, TencentError> {
        let response = self
            .call(
                credentials,
                ACTION_DESCRIBE_DETAIL,
                &json!({ "CertificateId": certificate_id }),
            )
            .await?;
        decode_order(certificate_id, response)
    }

    /// [`Client::describe_order`] shared per (credentials, id): concurrent callers await one request, and
    /// an answer younger than `max_age` (and the client's lookup cache time) is reused. What every
    /// resource renewing (or following) the same certificate reads, so Tencent is asked once per
    /// certificate, not once per resource.
    pub async fn describe_order_within(
        &self,
        credentials: &Credentials,
        certificate_id: &str,
        max_age: Duration,
    ) -> Result<Arc<OrderDetail>, TencentError> {
        let key = (credentials.fingerprint(), certificate_id.to_string());
        let client = self.clone();
        let credentials = credentials.clone();
        let id = certificate_id.to_string();
        let priority = crate::priority::current();
        self.inner_orders()
            .get(
                key,
                max_age,
                move || {
                    use futures::FutureExt as _;
                    crate::priority::scope(priority, async move {
                        client.describe_order(&credentials, &id).await.map(Arc::new)
                    })
                    .boxed()
                },
                |_| {},
            )
            .await
    }

    /// The renewal order Tencent already has for `old_certificate_id`, if any: the old certificate's
    /// `RenewOrder`, else a listed certificate whose `OriginCertificateId` is the old one (searched by the
    /// old certificate's domain; the newest wins). Always asks Tencent afresh (no cached answer): this is
    /// what stands between an uncertain application and a second one.
    pub async fn find_renewal_order(
        &self,
        credentials: &Credentials,
        old: &OrderDetail,
    ) -> Result<Option<OrderDetail>, TencentError> {
        if let Some(renewal) = old.renewal() {
            return match self.describe_order(credentials, renewal).await {
                Ok(order) => Ok(Some(order)),
                Err(err) if err.reason() == reason::CERTIFICATE_NOT_FOUND => Ok(None),
                Err(err) => Err(err),
            };
        }
        let Some(domain) = old.domain.as_deref().filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let filter = CertificateFilter {
            search_key: Some(domain.to_string()),
            ..CertificateFilter::default()
        };
        let listed = self
            .describe_certificates_within(credentials, &filter, Duration::ZERO)
            .await?;
        let newest = listed
            .iter()
            .filter(|summary| {
                summary
                    .extra
                    .origin_certificate_id
                    .as_deref()
                    .map(str::trim)
                    == Some(old.certificate_id.as_str())
            })
            .max_by(|a, b| {
                a.inserted_at
                    .cmp(&b.inserted_at)
                    .then_with(|| a.certificate_id.cmp(&b.certificate_id))
            });
        match newest {
            Some(summary) => self
                .describe_order(credentials, &summary.certificate_id)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Applies for the renewal of `old` once: under `locks`, re-reads the old certificate, returns an
    /// order that already exists, else sends one application; if its outcome is uncertain, looks for the
    /// order it may have created before giving up (and then the error stays `Uncertain`: the caller
    /// records that and only looks, never applies, until the order shows or its hold time passes).
    pub async fn apply_renewal(
        &self,
        locks: &ApplyLocks,
        credentials: &Credentials,
        old_certificate_id: &str,
        method: DvAuthMethod,
    ) -> Result<RenewalOrder, ApplyError> {
        let _turn = locks.lock(credentials, old_certificate_id).await;
        let uncertain = ApplyError::Uncertain;
        // An order that ended without a certificate does not stand in the way: the decision asked for a
        // new application knowing of it (after a spec change).
        let live = |order: &OrderDetail| {
            order.status == Some(STATUS_ISSUED)
                || order.status.is_none_or(crate::renewal::status_in_progress)
        };
        let old = self
            .describe_order(credentials, old_certificate_id)
            .await
            .map_err(ApplyError::Refused)?;
        if let Some(order) = self
            .find_renewal_order(credentials, &old)
            .await
            .map_err(ApplyError::Refused)?
            .filter(live)
        {
            return Ok(RenewalOrder::Found(Box::new(order)));
        }
        let Some(domain) = old.domain.clone().filter(|d| !d.is_empty()) else {
            return Err(ApplyError::Refused(TencentError::Malformed {
                action: ACTION_DESCRIBE_DETAIL.to_string(),
                detail: format!("certificate {old_certificate_id} has no domain to renew"),
            }));
        };
        let request = ApplyRequest::renewal(old_certificate_id, domain, method);
        let sent = self.apply_certificate(credentials, &request).await;
        let Err(ApplyError::Uncertain(first)) = sent else {
            return sent.map(RenewalOrder::Applied);
        };
        let (attempts, pause) = FIND_AFTER_UNCERTAIN;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
            }
            let Ok(old) = self.describe_order(credentials, old_certificate_id).await else {
                continue;
            };
            if let Ok(Some(order)) = self.find_renewal_order(credentials, &old).await
                && live(&order)
            {
                return Ok(RenewalOrder::Found(Box::new(order)));
            }
        }
        Err(uncertain(first))
    }
}

#[cfg(test)]
mod tests;
