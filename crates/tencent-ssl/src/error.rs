//! Tencent Cloud API errors: typed, classified (what to do next) and mapped to a condition reason.

use std::time::Duration;

/// What the caller should do about an error (design.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry with exponential backoff: network faults, rate limits, Tencent-side errors.
    Transient,
    /// Retry slowly, and at once when the credentials change.
    Credentials,
    /// Retry only when the spec or the account changes (or at the refresh interval).
    Permanent,
    /// The certificate exists but is not issued (yet): requeue slowly.
    NotYetIssued,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Credentials => "credentials",
            Self::Permanent => "permanent",
            Self::NotYetIssued => "not-yet-issued",
        }
    }
}

/// Condition reasons for Tencent-side failures (used in `Synced`/`Ready`, events and metrics).
pub mod reason {
    pub const NETWORK_ERROR: &str = "NetworkError";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const TENCENT_INTERNAL_ERROR: &str = "TencentInternalError";
    pub const TENCENT_API_ERROR: &str = "TencentApiError";
    pub const INVALID_RESPONSE: &str = "InvalidResponse";
    pub const AUTH_FAILED: &str = "AuthFailed";
    pub const CLOCK_SKEW: &str = "ClockSkew";
    pub const CERTIFICATE_NOT_FOUND: &str = "CertificateNotFound";
    pub const CERTIFICATE_NOT_ISSUED: &str = "CertificateNotIssued";
    pub const CERTIFICATE_UNAVAILABLE: &str = "CertificateUnavailable";
    pub const DOWNLOAD_NOT_ALLOWED: &str = "DownloadNotAllowed";
    pub const ACCOUNT_NOT_VERIFIED: &str = "AccountNotVerified";
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    pub const API_OFFLINE: &str = "ApiOffline";
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    pub const TENCENT_HTTP_ERROR: &str = "TencentHttpError";
    pub const INVALID_BUNDLE: &str = "InvalidBundle";
    /// Cloud resources still use the certificate (it cannot be deleted).
    pub const CERTIFICATE_IN_USE: &str = "CertificateInUse";
    /// Tencent refused the uploaded certificate or key.
    pub const CERTIFICATE_REJECTED: &str = "CertificateRejected";
    /// A deploy (moving cloud resources onto a certificate) cannot be started or retried as asked.
    pub const DEPLOY_REFUSED: &str = "DeployRefused";
}

/// Exact API error codes (tencent-api.md §2) with their class and reason.
const CODE_TABLE: &[(&str, ErrorClass, &str)] = {
    use ErrorClass::*;
    use reason::*;
    &[
        // Transient: back off and retry.
        ("FailedOperation.NetworkError", Transient, NETWORK_ERROR),
        (
            "FailedOperation.CannotGetOrder",
            Transient,
            TENCENT_INTERNAL_ERROR,
        ),
        (
            "FailedOperation.SystemError",
            Transient,
            TENCENT_INTERNAL_ERROR,
        ),
        ("FailedOperation", Transient, TENCENT_API_ERROR),
        ("InternalError", Transient, TENCENT_INTERNAL_ERROR),
        (
            "InternalError.BackendResponseEmpty",
            Transient,
            TENCENT_INTERNAL_ERROR,
        ),
        (
            "InternalError.BackendResponseError",
            Transient,
            TENCENT_INTERNAL_ERROR,
        ),
        ("ServiceUnavailable", Transient, TENCENT_INTERNAL_ERROR),
        ("ResourceUnavailable", Transient, TENCENT_INTERNAL_ERROR),
        ("ResourceInsufficient", Transient, TENCENT_INTERNAL_ERROR),
        ("RequestLimitExceeded", Transient, RATE_LIMITED),
        (
            "RequestLimitExceeded.UinLimitExceeded",
            Transient,
            RATE_LIMITED,
        ),
        (
            "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
            Transient,
            RATE_LIMITED,
        ),
        (
            "RequestLimitExceeded.IPLimitExceeded",
            Transient,
            RATE_LIMITED,
        ),
        ("LimitExceeded.RateLimitExceeded", Transient, RATE_LIMITED),
        // Credentials: wait for a fix to the key, its CAM policy or the clock.
        ("AuthFailure", Credentials, AUTH_FAILED),
        ("AuthFailure.SignatureExpire", Credentials, CLOCK_SKEW),
        ("AuthFailure.SignatureFailure", Credentials, AUTH_FAILED),
        ("AuthFailure.SecretIdNotFound", Credentials, AUTH_FAILED),
        ("AuthFailure.InvalidSecretId", Credentials, AUTH_FAILED),
        ("AuthFailure.TokenFailure", Credentials, AUTH_FAILED),
        ("AuthFailure.MFAFailure", Credentials, AUTH_FAILED),
        (
            "AuthFailure.UnauthorizedOperation",
            Credentials,
            AUTH_FAILED,
        ),
        ("UnauthorizedOperation", Credentials, AUTH_FAILED),
        ("FailedOperation.AuthError", Credentials, AUTH_FAILED),
        (
            "FailedOperation.NoProjectPermission",
            Credentials,
            AUTH_FAILED,
        ),
        (
            "FailedOperation.CAMAuthorizedFail",
            Credentials,
            AUTH_FAILED,
        ),
        (
            "FailedOperation.RoleNotFoundAuthorization",
            Credentials,
            AUTH_FAILED,
        ),
        ("IpInBlacklist", Credentials, AUTH_FAILED),
        ("IpNotInWhitelist", Credentials, AUTH_FAILED),
        // Not issued yet: the certificate exists but cannot be downloaded in its current state.
        (
            "FailedOperation.InvalidCertificateStatusCode",
            NotYetIssued,
            CERTIFICATE_NOT_ISSUED,
        ),
        (
            "FailedOperation.CertificateStatusNotAllowDownload",
            NotYetIssued,
            CERTIFICATE_NOT_ISSUED,
        ),
        // Permanent until the spec or the account changes.
        (
            "FailedOperation.CertificateNotFound",
            Permanent,
            CERTIFICATE_NOT_FOUND,
        ),
        (
            "InvalidParameter.ContainsInvalidCertificateId",
            Permanent,
            CERTIFICATE_NOT_FOUND,
        ),
        ("ResourceNotFound", Permanent, CERTIFICATE_NOT_FOUND),
        (
            "FailedOperation.CertificateNotAllowDownload",
            Permanent,
            DOWNLOAD_NOT_ALLOWED,
        ),
        (
            "FailedOperation.NoRealNameAuth",
            Permanent,
            ACCOUNT_NOT_VERIFIED,
        ),
        (
            "FailedOperation.CertificateInvalid",
            Permanent,
            CERTIFICATE_UNAVAILABLE,
        ),
        (
            "FailedOperation.CertificateMismatch",
            Permanent,
            CERTIFICATE_UNAVAILABLE,
        ),
        (
            "FailedOperation.OrderAlreadyReplaced",
            Permanent,
            CERTIFICATE_UNAVAILABLE,
        ),
        (
            "FailedOperation.OrderReplaceFailed",
            Permanent,
            CERTIFICATE_UNAVAILABLE,
        ),
        (
            "FailedOperation.CancelOrderFailed",
            Permanent,
            TENCENT_API_ERROR,
        ),
        (
            "FailedOperation.CannotBeDeletedIssued",
            Permanent,
            TENCENT_API_ERROR,
        ),
        (
            "FailedOperation.CannotBeDeletedWithinHour",
            Permanent,
            TENCENT_API_ERROR,
        ),
        (
            "FailedOperation.ExceedsFreeLimit",
            Permanent,
            TENCENT_API_ERROR,
        ),
        ("FailedOperation.InvalidParam", Permanent, INVALID_REQUEST),
        (
            "FailedOperation.CertificateDownloadServiceTypeNotSupport",
            Permanent,
            INVALID_REQUEST,
        ),
        (
            "AuthFailure.InvalidAuthorization",
            Permanent,
            INVALID_REQUEST,
        ),
        ("InvalidParameter", Permanent, INVALID_REQUEST),
        ("InvalidParameterValue", Permanent, INVALID_REQUEST),
        ("MissingParameter", Permanent, INVALID_REQUEST),
        ("UnknownParameter", Permanent, INVALID_REQUEST),
        ("InvalidAction", Permanent, INVALID_REQUEST),
        ("NoSuchVersion", Permanent, INVALID_REQUEST),
        ("NoSuchProduct", Permanent, INVALID_REQUEST),
        ("UnsupportedProtocol", Permanent, INVALID_REQUEST),
        ("UnsupportedRegion", Permanent, INVALID_REQUEST),
        ("UnsupportedOperation", Permanent, INVALID_REQUEST),
        ("InvalidRequest", Permanent, INVALID_REQUEST),
        ("RequestSizeLimitExceeded", Permanent, INVALID_REQUEST),
        ("ResponseSizeLimitExceeded", Permanent, INVALID_REQUEST),
        ("ResourceInUse", Permanent, INVALID_REQUEST),
        ("DryRunOperation", Permanent, INVALID_REQUEST),
        // Publishing (UploadCertificate, UpdateCertificateInstance, DeleteCertificate; see `publish`).
        (
            "FailedOperation.CertificateParseError",
            Permanent,
            CERTIFICATE_REJECTED,
        ),
        (
            "FailedOperation.CertificateExists",
            Permanent,
            CERTIFICATE_REJECTED,
        ),
        (
            "FailedOperation.DeleteResourceFailed",
            Permanent,
            CERTIFICATE_IN_USE,
        ),
        (
            "FailedOperation.BoundResources",
            Permanent,
            CERTIFICATE_IN_USE,
        ),
        (
            "FailedOperation.CertificateDeployHasPendingRecord",
            Transient,
            TENCENT_API_ERROR,
        ),
        (
            "FailedOperation.CertificateDeployInstanceEmpty",
            Permanent,
            DEPLOY_REFUSED,
        ),
        (
            "FailedOperation.CertificateHostResourceTypeInvalid",
            Permanent,
            DEPLOY_REFUSED,
        ),
        (
            "FailedOperation.CertificateDeployNotExist",
            Permanent,
            DEPLOY_REFUSED,
        ),
        (
            "FailedOperation.CertificateDeployRetryStatusInvalid",
            Permanent,
            DEPLOY_REFUSED,
        ),
        (
            "FailedOperation.CertificateHostDeployCanNotAllow",
            Permanent,
            DEPLOY_REFUSED,
        ),
        (
            "FailedOperation.CertificateNotDeployInstance",
            Permanent,
            DEPLOY_REFUSED,
        ),
        ("ActionOffline", Permanent, API_OFFLINE),
        ("LimitExceeded", Permanent, QUOTA_EXCEEDED),
    ]
};

/// Families of codes not in the table, by prefix (Tencent adds sub-codes over time).
const PREFIX_TABLE: &[(&str, ErrorClass, &str)] = {
    use ErrorClass::*;
    use reason::*;
    &[
        ("RequestLimitExceeded.", Transient, RATE_LIMITED),
        ("InternalError.", Transient, TENCENT_INTERNAL_ERROR),
        ("ResourceUnavailable.", Transient, TENCENT_INTERNAL_ERROR),
        ("ResourceInsufficient.", Transient, TENCENT_INTERNAL_ERROR),
        ("AuthFailure.", Credentials, AUTH_FAILED),
        ("UnauthorizedOperation.", Credentials, AUTH_FAILED),
        ("ResourceNotFound.", Permanent, CERTIFICATE_NOT_FOUND),
        ("InvalidParameterValue.", Permanent, INVALID_REQUEST),
        ("InvalidParameter.", Permanent, INVALID_REQUEST),
        ("MissingParameter.", Permanent, INVALID_REQUEST),
        ("UnknownParameter.", Permanent, INVALID_REQUEST),
        ("UnsupportedOperation.", Permanent, INVALID_REQUEST),
        ("LimitExceeded.", Permanent, QUOTA_EXCEEDED),
    ]
};

/// Class and reason of a Tencent API error code. Unknown codes are transient: backing off (capped) is the
/// safe default for an error we cannot interpret.
pub fn classify_code(code: &str) -> (ErrorClass, &'static str) {
    if let Some((_, class, reason)) = CODE_TABLE.iter().find(|(c, _, _)| *c == code) {
        return (*class, reason);
    }
    if let Some((_, class, reason)) = PREFIX_TABLE.iter().find(|(p, _, _)| code.starts_with(p)) {
        return (*class, reason);
    }
    (ErrorClass::Transient, reason::TENCENT_API_ERROR)
}

/// Every code of the exact table, for tests and documentation.
pub fn known_codes() -> impl Iterator<Item = (&'static str, ErrorClass, &'static str)> {
    CODE_TABLE.iter().copied()
}

/// Codes outside [`CODE_TABLE`] that the operator tells apart all the same (STS's, see `sts.rs`).
const OTHER_KNOWN_CODES: &[&str] = &[
    "InternalError.GetRoleError",
    "InternalError.IllegalRole",
    "ResourceNotFound.RoleNotFound",
];

/// The metric label of every code the operator does not know by name.
pub const METRIC_CODE_OTHER: &str = "other";

/// The `code` label of a Tencent answer in metrics: the code itself when the operator classifies it by
/// name, else [`METRIC_CODE_OTHER`]. The code is whatever the endpoint sends; as a label value as it is,
/// each new string would be a new series, without bound.
pub fn metric_code(code: &str) -> &'static str {
    CODE_TABLE
        .iter()
        .map(|(known, _, _)| *known)
        .chain(OTHER_KNOWN_CODES.iter().copied())
        .find(|known| *known == code)
        .unwrap_or(METRIC_CODE_OTHER)
}

/// HTTP statuses that get a label of their own; others are counted by class.
const METRIC_HTTP_STATUSES: &[(u16, &str)] = &[
    (400, "HTTP400"),
    (401, "HTTP401"),
    (403, "HTTP403"),
    (404, "HTTP404"),
    (407, "HTTP407"),
    (408, "HTTP408"),
    (413, "HTTP413"),
    (429, "HTTP429"),
    (500, "HTTP500"),
    (502, "HTTP502"),
    (503, "HTTP503"),
    (504, "HTTP504"),
];

/// The `code` label of an HTTP error status in metrics: a fixed set of strings.
pub fn metric_http_status(status: u16) -> &'static str {
    match METRIC_HTTP_STATUSES.iter().find(|(s, _)| *s == status) {
        Some((_, label)) => label,
        None if (400..500).contains(&status) => "HTTP4xx",
        None if (500..600).contains(&status) => "HTTP5xx",
        None => "HTTPother",
    }
}

/// Is this code a rate-limit answer (the limiter slows down on these)?
pub fn is_rate_limit_code(code: &str) -> bool {
    classify_code(code).1 == reason::RATE_LIMITED
}

/// A failed call to the Tencent Cloud API. `Clone` so coalesced callers can share one outcome. No variant
/// carries credentials, request bodies or response payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TencentError {
    #[error("Tencent Cloud {action} failed with {code}: {message} (RequestId {request_id})")]
    Api {
        action: String,
        code: String,
        message: String,
        request_id: String,
    },
    #[error("Tencent Cloud {action} returned HTTP {status}")]
    HttpStatus { action: String, status: u16 },
    /// A 3xx answer. Redirects are never followed: the signed request (and its token) would go to a
    /// host it was not made for.
    #[error(
        "Tencent Cloud {action} answered HTTP {status}, a redirect, which is not followed (the request \
         carries credentials); set the endpoint to the URL that answers directly"
    )]
    Redirected { action: String, status: u16 },
    #[error("Tencent Cloud {action} timed out after {}s", .after.as_secs_f64())]
    Timeout { action: String, after: Duration },
    #[error("cannot reach the Tencent Cloud API for {action}: {detail}")]
    Connect { action: String, detail: String },
    #[error("Tencent Cloud {action} returned a malformed response: {detail}")]
    Malformed { action: String, detail: String },
    #[error(
        "Tencent Cloud returned no certificate content for {certificate_id} (RequestId {request_id})"
    )]
    EmptyContent {
        certificate_id: String,
        request_id: String,
    },
    #[error(
        "Tencent Cloud returned content of type {content_type:?} for {certificate_id}, expected application/zip (RequestId {request_id})"
    )]
    UnexpectedContentType {
        certificate_id: String,
        content_type: String,
        request_id: String,
    },
    #[error(
        "Tencent Cloud returned certificate content for {certificate_id} that is not valid base64 (RequestId {request_id})"
    )]
    InvalidBase64 {
        certificate_id: String,
        request_id: String,
    },
}

impl TencentError {
    pub fn class(&self) -> ErrorClass {
        self.classify().0
    }

    /// The condition reason (design.md §5).
    pub fn reason(&self) -> &'static str {
        self.classify().1
    }

    /// The API error code, when Tencent answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        self.reason() == reason::RATE_LIMITED
    }

    fn classify(&self) -> (ErrorClass, &'static str) {
        match self {
            Self::Api { code, .. } => classify_code(code),
            Self::HttpStatus { status, .. } if *status == 429 => {
                (ErrorClass::Transient, reason::RATE_LIMITED)
            }
            Self::HttpStatus { status, .. } if *status >= 500 => {
                (ErrorClass::Transient, reason::NETWORK_ERROR)
            }
            Self::HttpStatus { .. } | Self::Redirected { .. } => {
                (ErrorClass::Permanent, reason::TENCENT_HTTP_ERROR)
            }
            Self::Timeout { .. } | Self::Connect { .. } => {
                (ErrorClass::Transient, reason::NETWORK_ERROR)
            }
            // A proxy's error page or a truncated body: worth retrying.
            Self::Malformed { .. } => (ErrorClass::Transient, reason::INVALID_RESPONSE),
            Self::EmptyContent { .. }
            | Self::UnexpectedContentType { .. }
            | Self::InvalidBase64 { .. } => (ErrorClass::Permanent, reason::INVALID_BUNDLE),
        }
    }

    /// What a user can do about it, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self.reason() {
            reason::AUTH_FAILED => {
                "check the SecretId/SecretKey (and token) in the credentials Secret, and that the key's CAM policy allows ssl:DownloadCertificate on this certificate"
            }
            reason::CLOCK_SKEW => {
                "the request timestamp is more than 5 minutes from Tencent's clock: fix the node's time synchronisation"
            }
            reason::CERTIFICATE_NOT_FOUND => {
                "check the certificate ID in Tencent Cloud's SSL console: it is wrong, deleted, or owned by another account"
            }
            reason::CERTIFICATE_NOT_ISSUED => {
                "the certificate is not issued yet (or no longer downloadable); the operator retries"
            }
            reason::DOWNLOAD_NOT_ALLOWED => {
                "downloading is disabled for this certificate in Tencent Cloud"
            }
            reason::ACCOUNT_NOT_VERIFIED => {
                "the Tencent Cloud account has not completed real-name verification"
            }
            reason::RATE_LIMITED => {
                "Tencent Cloud is rate limiting this account; the operator slows down and retries"
            }
            reason::NETWORK_ERROR | reason::TENCENT_INTERNAL_ERROR | reason::INVALID_RESPONSE => {
                "a transient fault; the operator retries with backoff"
            }
            reason::INVALID_BUNDLE => {
                "Tencent Cloud returned no usable certificate archive; check the certificate in the console"
            }
            reason::API_OFFLINE => "Tencent Cloud withdrew this API; upgrade the operator",
            reason::INVALID_REQUEST | reason::TENCENT_HTTP_ERROR => {
                "the request was rejected; check the certificate ID and the Tencent endpoint setting"
            }
            reason::QUOTA_EXCEEDED => "a Tencent Cloud quota is exhausted for this account",
            _ => "see the Tencent Cloud error code documentation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    /// Every code named in tencent-api.md §2, with the class and reason the operator must give it.
    const EXPECTED: &[(&str, ErrorClass, &str)] = &[
        ("AuthFailure.SignatureExpire", Credentials, "ClockSkew"),
        ("AuthFailure.SignatureFailure", Credentials, "AuthFailed"),
        ("AuthFailure.SecretIdNotFound", Credentials, "AuthFailed"),
        ("AuthFailure.InvalidSecretId", Credentials, "AuthFailed"),
        ("AuthFailure.TokenFailure", Credentials, "AuthFailed"),
        (
            "AuthFailure.InvalidAuthorization",
            Permanent,
            "InvalidRequest",
        ),
        ("AuthFailure.MFAFailure", Credentials, "AuthFailed"),
        (
            "AuthFailure.UnauthorizedOperation",
            Credentials,
            "AuthFailed",
        ),
        ("UnauthorizedOperation", Credentials, "AuthFailed"),
        ("AuthFailure", Credentials, "AuthFailed"),
        ("RequestLimitExceeded", Transient, "RateLimited"),
        (
            "RequestLimitExceeded.UinLimitExceeded",
            Transient,
            "RateLimited",
        ),
        (
            "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
            Transient,
            "RateLimited",
        ),
        (
            "RequestLimitExceeded.IPLimitExceeded",
            Transient,
            "RateLimited",
        ),
        ("LimitExceeded.RateLimitExceeded", Transient, "RateLimited"),
        ("LimitExceeded", Permanent, "QuotaExceeded"),
        ("InternalError", Transient, "TencentInternalError"),
        (
            "InternalError.BackendResponseEmpty",
            Transient,
            "TencentInternalError",
        ),
        (
            "InternalError.BackendResponseError",
            Transient,
            "TencentInternalError",
        ),
        ("ServiceUnavailable", Transient, "TencentInternalError"),
        ("ResourceUnavailable", Transient, "TencentInternalError"),
        ("ResourceInsufficient", Transient, "TencentInternalError"),
        ("InvalidParameter", Permanent, "InvalidRequest"),
        ("InvalidParameter.Whatever", Permanent, "InvalidRequest"),
        ("InvalidParameterValue", Permanent, "InvalidRequest"),
        (
            "InvalidParameterValue.Whatever",
            Permanent,
            "InvalidRequest",
        ),
        ("MissingParameter", Permanent, "InvalidRequest"),
        ("UnknownParameter", Permanent, "InvalidRequest"),
        ("InvalidAction", Permanent, "InvalidRequest"),
        ("NoSuchVersion", Permanent, "InvalidRequest"),
        ("NoSuchProduct", Permanent, "InvalidRequest"),
        ("UnsupportedProtocol", Permanent, "InvalidRequest"),
        ("UnsupportedRegion", Permanent, "InvalidRequest"),
        ("UnsupportedOperation", Permanent, "InvalidRequest"),
        ("InvalidRequest", Permanent, "InvalidRequest"),
        ("ActionOffline", Permanent, "ApiOffline"),
        ("ResourceNotFound", Permanent, "CertificateNotFound"),
        (
            "ResourceNotFound.Certificate",
            Permanent,
            "CertificateNotFound",
        ),
        ("ResourceInUse", Permanent, "InvalidRequest"),
        ("IpInBlacklist", Credentials, "AuthFailed"),
        ("IpNotInWhitelist", Credentials, "AuthFailed"),
        ("RequestSizeLimitExceeded", Permanent, "InvalidRequest"),
        ("ResponseSizeLimitExceeded", Permanent, "InvalidRequest"),
        ("FailedOperation", Transient, "TencentApiError"),
        ("DryRunOperation", Permanent, "InvalidRequest"),
        // DownloadCertificate-specific codes.
        ("FailedOperation.AuthError", Credentials, "AuthFailed"),
        (
            "FailedOperation.CertificateNotFound",
            Permanent,
            "CertificateNotFound",
        ),
        (
            "FailedOperation.InvalidCertificateStatusCode",
            NotYetIssued,
            "CertificateNotIssued",
        ),
        ("FailedOperation.InvalidParam", Permanent, "InvalidRequest"),
        (
            "FailedOperation.NoProjectPermission",
            Credentials,
            "AuthFailed",
        ),
        (
            "FailedOperation.NoRealNameAuth",
            Permanent,
            "AccountNotVerified",
        ),
        ("FailedOperation.NetworkError", Transient, "NetworkError"),
        (
            "FailedOperation.CannotGetOrder",
            Transient,
            "TencentInternalError",
        ),
        (
            "FailedOperation.CancelOrderFailed",
            Permanent,
            "TencentApiError",
        ),
        (
            "FailedOperation.CannotBeDeletedIssued",
            Permanent,
            "TencentApiError",
        ),
        (
            "FailedOperation.CannotBeDeletedWithinHour",
            Permanent,
            "TencentApiError",
        ),
        (
            "FailedOperation.CertificateInvalid",
            Permanent,
            "CertificateUnavailable",
        ),
        (
            "FailedOperation.CertificateMismatch",
            Permanent,
            "CertificateUnavailable",
        ),
        (
            "FailedOperation.ExceedsFreeLimit",
            Permanent,
            "TencentApiError",
        ),
        (
            "FailedOperation.OrderAlreadyReplaced",
            Permanent,
            "CertificateUnavailable",
        ),
        (
            "FailedOperation.OrderReplaceFailed",
            Permanent,
            "CertificateUnavailable",
        ),
        // Other SSL codes an operator may meet.
        (
            "FailedOperation.CertificateNotAllowDownload",
            Permanent,
            "DownloadNotAllowed",
        ),
        (
            "FailedOperation.CertificateStatusNotAllowDownload",
            NotYetIssued,
            "CertificateNotIssued",
        ),
        (
            "FailedOperation.CertificateDownloadServiceTypeNotSupport",
            Permanent,
            "InvalidRequest",
        ),
        (
            "FailedOperation.CAMAuthorizedFail",
            Credentials,
            "AuthFailed",
        ),
        (
            "FailedOperation.RoleNotFoundAuthorization",
            Credentials,
            "AuthFailed",
        ),
        (
            "FailedOperation.SystemError",
            Transient,
            "TencentInternalError",
        ),
        (
            "InvalidParameter.ContainsInvalidCertificateId",
            Permanent,
            "CertificateNotFound",
        ),
        // Publishing (UploadCertificate, UpdateCertificateInstance, DeleteCertificate).
        (
            "FailedOperation.CertificateParseError",
            Permanent,
            "CertificateRejected",
        ),
        (
            "FailedOperation.CertificateExists",
            Permanent,
            "CertificateRejected",
        ),
        (
            "FailedOperation.DeleteResourceFailed",
            Permanent,
            "CertificateInUse",
        ),
        (
            "FailedOperation.BoundResources",
            Permanent,
            "CertificateInUse",
        ),
        (
            "FailedOperation.CertificateDeployHasPendingRecord",
            Transient,
            "TencentApiError",
        ),
        (
            "FailedOperation.CertificateDeployInstanceEmpty",
            Permanent,
            "DeployRefused",
        ),
        (
            "FailedOperation.CertificateHostResourceTypeInvalid",
            Permanent,
            "DeployRefused",
        ),
        (
            "FailedOperation.CertificateDeployNotExist",
            Permanent,
            "DeployRefused",
        ),
        (
            "FailedOperation.CertificateDeployRetryStatusInvalid",
            Permanent,
            "DeployRefused",
        ),
        (
            "FailedOperation.CertificateHostDeployCanNotAllow",
            Permanent,
            "DeployRefused",
        ),
        (
            "FailedOperation.CertificateNotDeployInstance",
            Permanent,
            "DeployRefused",
        ),
        (
            "InvalidParameter.RegionNotEmpty",
            Permanent,
            "InvalidRequest",
        ),
        // Unknown codes fall back on their family, else transient.
        ("AuthFailure.SomethingNew", Credentials, "AuthFailed"),
        (
            "RequestLimitExceeded.SomethingNew",
            Transient,
            "RateLimited",
        ),
        (
            "InternalError.SomethingNew",
            Transient,
            "TencentInternalError",
        ),
        ("FailedOperation.SomethingNew", Transient, "TencentApiError"),
        ("TotallyUnknown", Transient, "TencentApiError"),
    ];

    #[test]
    fn every_documented_code_has_the_right_class_and_reason() {
        for (code, class, reason) in EXPECTED {
            assert_eq!(classify_code(code), (*class, *reason), "{code}");
            let err = TencentError::Api {
                action: "DownloadCertificate".into(),
                code: code.to_string(),
                message: "m".into(),
                request_id: "r".into(),
            };
            assert_eq!((err.class(), err.reason()), (*class, *reason), "{code}");
        }
    }

    #[test]
    fn every_table_code_is_covered_by_the_expectations() {
        for (code, _, _) in known_codes() {
            assert!(
                EXPECTED.iter().any(|(c, _, _)| *c == code),
                "{code} is classified but not pinned by a test"
            );
        }
    }

    #[test]
    fn transport_failures_are_classified() {
        let action = || "DownloadCertificate".to_string();
        let cases = [
            (
                TencentError::Timeout {
                    action: action(),
                    after: Duration::from_secs(10),
                },
                Transient,
                "NetworkError",
            ),
            (
                TencentError::Connect {
                    action: action(),
                    detail: "refused".into(),
                },
                Transient,
                "NetworkError",
            ),
            (
                TencentError::HttpStatus {
                    action: action(),
                    status: 502,
                },
                Transient,
                "NetworkError",
            ),
            (
                TencentError::HttpStatus {
                    action: action(),
                    status: 429,
                },
                Transient,
                "RateLimited",
            ),
            (
                TencentError::HttpStatus {
                    action: action(),
                    status: 404,
                },
                Permanent,
                "TencentHttpError",
            ),
            (
                TencentError::Malformed {
                    action: action(),
                    detail: "not JSON".into(),
                },
                Transient,
                "InvalidResponse",
            ),
            (
                TencentError::EmptyContent {
                    certificate_id: "a".into(),
                    request_id: "r".into(),
                },
                Permanent,
                "InvalidBundle",
            ),
            (
                TencentError::UnexpectedContentType {
                    certificate_id: "a".into(),
                    content_type: "text/html".into(),
                    request_id: "r".into(),
                },
                Permanent,
                "InvalidBundle",
            ),
            (
                TencentError::InvalidBase64 {
                    certificate_id: "a".into(),
                    request_id: "r".into(),
                },
                Permanent,
                "InvalidBundle",
            ),
        ];
        for (err, class, reason) in cases {
            assert_eq!((err.class(), err.reason()), (class, reason), "{err}");
            assert!(!err.hint().is_empty());
        }
    }

    #[test]
    fn api_error_message_names_code_and_request_id() {
        let err = TencentError::Api {
            action: "DownloadCertificate".into(),
            code: "FailedOperation.CertificateNotFound".into(),
            message: "Certificate does not exist.".into(),
            request_id: "req-1".into(),
        };
        assert_eq!(
            err.to_string(),
            "Tencent Cloud DownloadCertificate failed with FailedOperation.CertificateNotFound: \
             Certificate does not exist. (RequestId req-1)"
        );
        assert!(err.hint().contains("certificate ID"));
    }

    #[test]
    fn metric_labels_are_a_fixed_set_whatever_the_endpoint_answers() {
        for (code, _, _) in known_codes() {
            assert_eq!(metric_code(code), code);
        }
        assert_eq!(
            metric_code("ResourceNotFound.RoleNotFound"),
            "ResourceNotFound.RoleNotFound"
        );
        // New sub-codes, made-up codes, and codes carrying data map to one label.
        for code in [
            "AuthFailure.SomethingNew",
            "InternalError.X",
            "AKIDechoedBackAsACode",
            "x".repeat(10_000).as_str(),
            "",
        ] {
            assert_eq!(metric_code(code), METRIC_CODE_OTHER, "{code}");
        }
        let mut labels = std::collections::BTreeSet::new();
        for status in 0..=u16::MAX {
            labels.insert(metric_http_status(status));
        }
        assert_eq!(metric_http_status(503), "HTTP503");
        assert_eq!(metric_http_status(418), "HTTP4xx");
        assert_eq!(metric_http_status(599), "HTTP5xx");
        assert_eq!(metric_http_status(302), "HTTPother");
        assert_eq!(labels.len(), METRIC_HTTP_STATUSES.len() + 3);
    }
}
