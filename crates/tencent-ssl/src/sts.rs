//! Temporary credentials from Tencent Cloud STS (service `sts`, version 2018-08-13):
//!
//! - `AssumeRole`: a base key (from a Secret) assumes a role, possibly in another account; signed.
//! - `AssumeRoleWithWebIdentity`: TKE pod identity — the pod's ServiceAccount token (the file in
//!   `TKE_WEB_IDENTITY_TOKEN_FILE`) is exchanged for the role in `TKE_ROLE_ARN`; sent unsigned
//!   (`Authorization: SKIP`), as Tencent's SDK does, with `X-TC-Region: <TKE_REGION>`.
//!
//! Temporary credentials are cached per *source* (base key + role, or web identity) and refreshed ahead of
//! `ExpiredTime` ([`refresh_at`]); the token file is re-read on every refresh. The credentials handed out
//! are fingerprinted by their source, so the shared download, lookup and list caches keep their keys
//! across refreshes. No token or temporary key reaches `Debug`, `Display` or an error message.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::{Auth, Client, DEFAULT_STS_REGION};
use super::credentials::Credentials;
use super::error::{ErrorClass, TencentError, reason};

pub const ACTION_ASSUME_ROLE: &str = "AssumeRole";
pub const ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY: &str = "AssumeRoleWithWebIdentity";
/// `RoleSessionName` when none is configured (shows in the role's CloudAudit records).
pub const DEFAULT_SESSION_NAME: &str = "tencent-cert-operator";
/// `DurationSeconds`: Tencent's default and maximum.
pub const DEFAULT_DURATION_SECS: u32 = 7200;
pub const MAX_DURATION_SECS: u32 = 43_200;

/// The variables TKE's pod-identity webhook injects into a pod whose ServiceAccount names a role.
pub const TKE_REGION_ENV: &str = "TKE_REGION";
pub const TKE_PROVIDER_ID_ENV: &str = "TKE_PROVIDER_ID";
pub const TKE_WEB_IDENTITY_TOKEN_FILE_ENV: &str = "TKE_WEB_IDENTITY_TOKEN_FILE";
pub const TKE_ROLE_ARN_ENV: &str = "TKE_ROLE_ARN";

/// Refresh this long before expiry at most; credentials living less than twice this are refreshed at
/// half their lifetime.
pub const REFRESH_AHEAD_MAX_SECS: i64 = 15 * 60;
/// After a failed refresh, other callers of the same source get the same error for this long instead of
/// asking STS again (every resource on one credentials Secret would otherwise ask at once).
pub const FAILURE_HOLD_SECS: i64 = 30;
/// A transient refresh failure (network, throttling) keeps cached credentials in use while they have at
/// least this long left.
pub const MIN_REMAINING_SECS: i64 = 60;

/// The condition reason of a role that cannot be assumed (trust policy, role ARN, token).
pub const REASON_ASSUME_ROLE_FAILED: &str = "AssumeRoleFailed";

/// A role to assume with a base key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Role {
    /// `qcs::cam::uin/<OwnerUin>:roleName/<name>` (or `:role/<roleId>`).
    pub role_arn: String,
    pub session_name: String,
    pub duration_secs: u32,
}

impl Role {
    pub fn new(role_arn: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            session_name: DEFAULT_SESSION_NAME.to_string(),
            duration_secs: DEFAULT_DURATION_SECS,
        }
    }
}

/// TKE pod identity: what `AssumeRoleWithWebIdentity` needs, with the token read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebIdentity {
    pub region: String,
    pub provider_id: String,
    pub role_arn: String,
    pub token_file: PathBuf,
    pub session_name: String,
    pub duration_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pod identity needs {0}; TKE's pod-identity webhook sets it when the operator's ServiceAccount is annotated \
     tke.cloud.tencent.com/role-arn (set the TKE_* variables yourself elsewhere)"
)]
pub struct MissingEnv(pub &'static str);

impl WebIdentity {
    /// Reads the TKE variables from the process environment.
    pub fn from_env() -> Result<Self, MissingEnv> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`WebIdentity::from_env`], over any lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, MissingEnv> {
        let get = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or(MissingEnv(name))
        };
        Ok(Self {
            region: get(TKE_REGION_ENV)?,
            provider_id: get(TKE_PROVIDER_ID_ENV)?,
            role_arn: get(TKE_ROLE_ARN_ENV)?,
            token_file: PathBuf::from(get(TKE_WEB_IDENTITY_TOKEN_FILE_ENV)?),
            session_name: DEFAULT_SESSION_NAME.to_string(),
            duration_secs: DEFAULT_DURATION_SECS,
        })
    }
}

/// Where a resource's credentials come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A key used as it is (permanent, or temporary with a token the user maintains).
    Static(Credentials),
    AssumeRole {
        base: Credentials,
        role: Role,
    },
    WebIdentity(WebIdentity),
}

impl Source {
    /// The STS action that yields this source's credentials (`AssumeRole` for a static key, which needs
    /// none).
    fn action(&self) -> &'static str {
        match self {
            Self::Static(_) | Self::AssumeRole { .. } => ACTION_ASSUME_ROLE,
            Self::WebIdentity(_) => ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY,
        }
    }

    /// Identifies the source (not the temporary key): the cache key, and the fingerprint of the
    /// credentials it yields. A rotated base key is a new source.
    pub fn key(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut part = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        match self {
            Self::Static(credentials) => return credentials.fingerprint(),
            Self::AssumeRole { base, role } => {
                part(ACTION_ASSUME_ROLE.as_bytes());
                part(&base.fingerprint());
                part(role.role_arn.as_bytes());
                part(role.session_name.as_bytes());
                part(&role.duration_secs.to_be_bytes());
            }
            Self::WebIdentity(identity) => {
                part(ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY.as_bytes());
                part(identity.region.as_bytes());
                part(identity.provider_id.as_bytes());
                part(identity.role_arn.as_bytes());
                part(identity.token_file.as_os_str().as_encoded_bytes());
                part(identity.session_name.as_bytes());
                part(&identity.duration_secs.to_be_bytes());
            }
        }
        hasher.finalize().into()
    }

    /// The role assumed, if any.
    pub fn role_arn(&self) -> Option<&str> {
        match self {
            Self::Static(_) => None,
            Self::AssumeRole { role, .. } => Some(&role.role_arn),
            Self::WebIdentity(identity) => Some(&identity.role_arn),
        }
    }
}

/// Why temporary credentials could not be had. Messages say what to fix and carry no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    #[error(
        "cannot read the web identity token file {path} ({detail}); check TKE_WEB_IDENTITY_TOKEN_FILE and the \
         projected ServiceAccount token volume"
    )]
    TokenFile { path: String, detail: String },
    #[error("{err}; {hint}")]
    Rejected {
        err: TencentError,
        hint: String,
        class: ErrorClass,
    },
}

impl StsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::TokenFile { .. } => ErrorClass::Credentials,
            Self::Rejected { class, .. } => *class,
        }
    }

    /// `AssumeRoleFailed` when the role cannot be had as configured; the transport's reason when STS
    /// could not be reached; `CredentialsNotFound` when there is no token to exchange.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TokenFile { .. } => "CredentialsNotFound",
            Self::Rejected { err, class, .. } => match class {
                ErrorClass::Transient => err.reason(),
                _ => REASON_ASSUME_ROLE_FAILED,
            },
        }
    }

    fn rejected(source: &Source, err: TencentError) -> Self {
        let transient = matches!(
            err.reason(),
            reason::NETWORK_ERROR | reason::RATE_LIMITED | reason::INVALID_RESPONSE
        ) || (err.reason() == reason::TENCENT_INTERNAL_ERROR
            // STS reports a role it cannot use as an internal error.
            && !matches!(
                err.code(),
                Some("InternalError.GetRoleError" | "InternalError.IllegalRole")
            ));
        let class = if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Credentials
        };
        let hint = hint_for(source, &err, transient);
        Self::Rejected {
            err: scrubbed(source, err),
            hint,
            class,
        }
    }
}

/// What to check, for each way a role can fail.
fn hint_for(source: &Source, err: &TencentError, transient: bool) -> String {
    if transient {
        return "a transient fault reaching Tencent Cloud STS; the operator retries with backoff"
            .into();
    }
    let not_found = err.code() == Some("ResourceNotFound.RoleNotFound");
    match source {
        Source::Static(_) => String::new(),
        // The key is named by where it is (the credentials Secret), never by its SecretId: that is a value
        // of the tenant's Secret, and the tenant chose which key it is read from.
        Source::AssumeRole { role, .. } if not_found => format!(
            "no role {} exists: check the role ARN (qcs::cam::uin/<OwnerUin>:roleName/<name>) in credentialsRef.role.roleArn",
            role.role_arn,
        ),
        Source::AssumeRole { role, .. } => format!(
            "check that role {}'s trust policy (its role entity) allows the account or sub-user that owns the key in the \
             credentials Secret to assume it, that this key's CAM policy allows sts:AssumeRole on it, and the role ARN in \
             credentialsRef.role.roleArn",
            role.role_arn,
        ),
        Source::WebIdentity(identity) if not_found => format!(
            "no role {} exists: check TKE_ROLE_ARN (the tke.cloud.tencent.com/role-arn annotation of the operator's ServiceAccount)",
            identity.role_arn
        ),
        Source::WebIdentity(identity) => format!(
            "check that role {}'s trust policy trusts the OIDC identity provider {} (TKE_PROVIDER_ID) with audience \
             sts.cloud.tencent.com and this ServiceAccount as subject, the role ARN in TKE_ROLE_ARN, and that the token \
             in {} is current",
            identity.role_arn,
            identity.provider_id,
            identity.token_file.display()
        ),
    }
}

/// Tencent's message may quote what it was given: neither a web identity token nor any part of the base
/// key leaves in an error.
fn scrubbed(source: &Source, err: TencentError) -> TencentError {
    match err {
        TencentError::Api {
            action,
            code,
            message,
            request_id,
        } => {
            let message = match source {
                Source::Static(base) | Source::AssumeRole { base, .. } => base.redact(&message),
                Source::WebIdentity(identity) => {
                    let message = match std::fs::read_to_string(&identity.token_file) {
                        Ok(token) if !token.trim().is_empty() => {
                            message.replace(token.trim(), "<redacted>")
                        }
                        _ => message,
                    };
                    super::credentials::redact_secret_ids(&message)
                }
            };
            TencentError::Api {
                action,
                code,
                message,
                request_id,
            }
        }
        other => other,
    }
}

/// When to refresh credentials issued at `issued_at` that expire at `expires_at` (Unix seconds): half
/// their lifetime before expiry, at most [`REFRESH_AHEAD_MAX_SECS`] before.
/// `ExpiredTime` comes from the network: any i64 must give an answer, never an overflow.
pub fn refresh_at(issued_at: i64, expires_at: i64) -> i64 {
    let lifetime = expires_at.saturating_sub(issued_at).max(0);
    expires_at.saturating_sub((lifetime / 2).min(REFRESH_AHEAD_MAX_SECS))
}

/// Temporary credentials that expire at or before `now` are of no use: an answer saying so is malformed
/// (and held like any failure, instead of asking STS again on every call).
pub fn check_expiry(action: &str, expires_at: i64, now: i64) -> Result<(), TencentError> {
    if expires_at > now {
        Ok(())
    } else {
        Err(TencentError::Malformed {
            action: action.to_string(),
            detail: format!(
                "ExpiredTime {expires_at} is not after the current time {now} (Unix seconds)"
            ),
        })
    }
}

/// Seconds from `now` until `expires_at`, saturating (negative once expired).
fn remaining_secs(expires_at: i64, now: i64) -> i64 {
    expires_at.saturating_sub(now)
}

/// Whether credentials expiring at `expires_at` may still be handed out at `now` after a transient
/// refresh failure.
fn still_usable(expires_at: i64, now: i64) -> bool {
    remaining_secs(expires_at, now) >= MIN_REMAINING_SECS
}

/// Temporary credentials and their expiry (`ExpiredTime`, Unix seconds), from an STS answer.
pub fn parse_credentials(
    action: &str,
    response: &Value,
) -> Result<(Credentials, i64), TencentError> {
    let malformed = |detail: &str| TencentError::Malformed {
        action: action.to_string(),
        detail: detail.to_string(),
    };
    let fields = response
        .get("Credentials")
        .ok_or_else(|| malformed("no Credentials object"))?;
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .ok_or_else(|| malformed(&format!("Credentials.{name} is missing")))
    };
    let expires_at = response
        .get("ExpiredTime")
        .and_then(Value::as_i64)
        .ok_or_else(|| malformed("ExpiredTime is missing"))?;
    let credentials = Credentials::new(
        text("TmpSecretId")?,
        text("TmpSecretKey")?,
        Some(text("Token")?),
    )
    .map_err(|e| malformed(&format!("unusable temporary credentials: {e}")))?;
    Ok((credentials, expires_at))
}

#[derive(Default)]
struct Entry {
    /// The credentials, when they were issued and when they expire (Unix seconds).
    current: Option<(Credentials, i64, i64)>,
    /// The last refresh failure and when it happened.
    failure: Option<(StsError, i64)>,
}

/// Temporary credentials per source, shared by every reconcile (one per client).
#[derive(Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<Entry>>>>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl Cache {
    fn entry(&self, key: [u8; 32]) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.entry(key).or_default().clone()
    }

    /// Drops what is cached for `key` (Tencent refused the temporary credentials).
    pub(crate) fn forget(&self, key: &[u8; 32]) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.remove(key);
    }

    /// Drops entries whose credentials expired before `now` and that are not in use (rotated base keys
    /// leave their old source behind).
    fn prune(&self, now: i64) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, entry| match entry.try_lock() {
            Ok(entry) => match (&entry.current, &entry.failure) {
                (Some((_, _, expires_at)), _) => *expires_at > now,
                (None, Some((_, at))) => now.saturating_sub(*at) < FAILURE_HOLD_SECS,
                (None, None) => false,
            },
            Err(_) => true,
        });
    }
}

impl Client {
    /// The credentials to sign with for `source`: static ones as they are; a role's temporary ones from
    /// the cache, refreshed ahead of expiry. Concurrent callers of one source share one STS request.
    pub async fn credentials(&self, source: &Source) -> Result<Credentials, StsError> {
        self.credentials_at(source, jiff::Timestamp::now().as_second())
            .await
    }

    /// Like [`Client::credentials`] at the clock reading `now` (Unix seconds).
    pub async fn credentials_at(&self, source: &Source, now: i64) -> Result<Credentials, StsError> {
        if let Source::Static(credentials) = source {
            return Ok(credentials.clone());
        }
        let cache = self.sts_cache();
        let key = source.key();
        let entry = cache.entry(key);
        let mut entry = entry.lock().await;
        if let Some((credentials, issued_at, expires_at)) = &entry.current
            && now < refresh_at(*issued_at, *expires_at)
        {
            return Ok(credentials.clone());
        }
        if let Some((err, at)) = &entry.failure
            && now.saturating_sub(*at) < FAILURE_HOLD_SECS
        {
            return match &entry.current {
                Some((credentials, _, expires_at))
                    if err.class() == ErrorClass::Transient && still_usable(*expires_at, now) =>
                {
                    Ok(credentials.clone())
                }
                _ => Err(err.clone()),
            };
        }
        let assumed = self
            .assume(source)
            .await
            .and_then(|(credentials, expires_at)| {
                check_expiry(source.action(), expires_at, now)
                    .map(|()| (credentials, expires_at))
                    .map_err(|err| StsError::rejected(source, err))
            });
        match assumed {
            Ok((credentials, expires_at)) => {
                let credentials = credentials.with_source(key);
                // Neither the temporary SecretId nor anything else of the key is logged.
                tracing::debug!(
                    role = source.role_arn().unwrap_or_default(),
                    expires_in_secs = remaining_secs(expires_at, now),
                    "STS issued temporary credentials"
                );
                entry.current = Some((credentials.clone(), now, expires_at));
                entry.failure = None;
                drop(entry);
                cache.prune(now);
                Ok(credentials)
            }
            Err(err) => {
                tracing::warn!(
                    role = source.role_arn().unwrap_or_default(),
                    reason = err.reason(),
                    error = %err,
                    "STS refused temporary credentials"
                );
                entry.failure = Some((err.clone(), now));
                match &entry.current {
                    Some((credentials, _, expires_at))
                        if err.class() == ErrorClass::Transient
                            && still_usable(*expires_at, now) =>
                    {
                        Ok(credentials.clone())
                    }
                    _ => {
                        entry.current = None;
                        Err(err)
                    }
                }
            }
        }
    }

    /// Forgets the temporary credentials of `source`, so the next call assumes the role again (after
    /// Tencent refused them, e.g. `AuthFailure.TokenFailure`).
    pub fn forget_credentials(&self, source: &Source) {
        if !matches!(source, Source::Static(_)) {
            self.sts_cache().forget(&source.key());
        }
    }

    /// One STS call for `source`.
    async fn assume(&self, source: &Source) -> Result<(Credentials, i64), StsError> {
        let (action, answer) = match source {
            Source::Static(credentials) => return Ok((credentials.clone(), i64::MAX)),
            Source::AssumeRole { base, role } => {
                let params = json!({
                    "RoleArn": role.role_arn,
                    "RoleSessionName": role.session_name,
                    "DurationSeconds": role.duration_secs,
                });
                let answer = self
                    .call_sts(
                        Auth::Signed(base),
                        DEFAULT_STS_REGION,
                        ACTION_ASSUME_ROLE,
                        &params,
                    )
                    .await;
                (ACTION_ASSUME_ROLE, answer)
            }
            Source::WebIdentity(identity) => {
                // Re-read on every refresh: the kubelet rotates the projected token.
                let token = std::fs::read_to_string(&identity.token_file).map_err(|e| {
                    StsError::TokenFile {
                        path: identity.token_file.display().to_string(),
                        detail: e.kind().to_string(),
                    }
                })?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(StsError::TokenFile {
                        path: identity.token_file.display().to_string(),
                        detail: "empty".to_string(),
                    });
                }
                let params = json!({
                    "ProviderId": identity.provider_id,
                    "WebIdentityToken": token,
                    "RoleArn": identity.role_arn,
                    "RoleSessionName": identity.session_name,
                    "DurationSeconds": identity.duration_secs,
                });
                let answer = self
                    .call_sts(
                        Auth::Unsigned,
                        &identity.region,
                        ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY,
                        &params,
                    )
                    .await;
                (ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY, answer)
            }
        };
        let answer = answer.map_err(|err| StsError::rejected(source, err))?;
        parse_credentials(action, &answer).map_err(|err| StsError::rejected(source, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(key: &str) -> Credentials {
        Credentials::new("AKIDbase", key, None).unwrap()
    }

    #[test]
    fn refresh_comes_well_before_expiry() {
        // Two hours: 15 minutes ahead. Ten minutes: at half-life. Expired or zero: at once.
        assert_eq!(refresh_at(0, 7200), 7200 - 900);
        assert_eq!(refresh_at(1000, 1600), 1300);
        assert_eq!(refresh_at(1000, 1000), 1000);
        assert_eq!(refresh_at(1000, 900), 900);
    }

    #[test]
    fn expiry_arithmetic_never_overflows() {
        // ExpiredTime is whatever the network says: extremes and far-past values.
        let now = 1_700_000_000;
        for expires_at in [i64::MAX, i64::MIN, -1, 0, 1, now - 86_400 * 365 * 100, now] {
            for issued_at in [i64::MIN, -1, 0, now, i64::MAX] {
                let at = refresh_at(issued_at, expires_at);
                assert!(at <= expires_at, "{issued_at} {expires_at} -> {at}");
            }
            let _ = remaining_secs(expires_at, i64::MAX);
            let _ = remaining_secs(expires_at, i64::MIN);
            let _ = still_usable(expires_at, now);
        }
        // A far-future expiry refreshes at most 15 minutes ahead; issued in the far past, too.
        assert_eq!(refresh_at(now, i64::MAX), i64::MAX - REFRESH_AHEAD_MAX_SECS);
        assert_eq!(refresh_at(i64::MIN, now), now - REFRESH_AHEAD_MAX_SECS);
        assert_eq!(remaining_secs(i64::MIN, now), i64::MIN);
        assert_eq!(remaining_secs(i64::MAX, -1), i64::MAX);
        assert!(still_usable(i64::MAX, i64::MIN));
        assert!(!still_usable(i64::MIN, i64::MAX));
    }

    #[test]
    fn credentials_that_already_expired_are_refused() {
        let now = 1_700_000_000;
        assert!(check_expiry(ACTION_ASSUME_ROLE, i64::MAX, now).is_ok());
        assert!(check_expiry(ACTION_ASSUME_ROLE, now + 1, now).is_ok());
        for past in [now, now - 1, -1, i64::MIN, 0] {
            let err = check_expiry(ACTION_ASSUME_ROLE, past, now).unwrap_err();
            assert_eq!(err.reason(), reason::INVALID_RESPONSE, "{past}");
            assert!(err.to_string().contains("ExpiredTime"), "{err}");
        }
        // Any i64 parses; the checks above decide.
        for value in [i64::MAX, i64::MIN, -5] {
            let answer = json!({
                "Credentials": {"Token": "tok", "TmpSecretId": "AKIDtmp", "TmpSecretKey": "k"},
                "ExpiredTime": value,
            });
            assert_eq!(
                parse_credentials(ACTION_ASSUME_ROLE, &answer).unwrap().1,
                value
            );
        }
    }

    #[test]
    fn source_keys_follow_the_source_not_the_temporary_key() {
        let role = Role::new("qcs::cam::uin/100:roleName/certs");
        let a = Source::AssumeRole {
            base: base("k1"),
            role: role.clone(),
        };
        assert_eq!(a.key(), a.clone().key());
        let rotated = Source::AssumeRole {
            base: base("k2"),
            role: role.clone(),
        };
        assert_ne!(a.key(), rotated.key(), "a rotated base key is a new source");
        let other_role = Source::AssumeRole {
            base: base("k1"),
            role: Role::new("qcs::cam::uin/100:roleName/other"),
        };
        assert_ne!(a.key(), other_role.key());
        let plain = Source::Static(base("k1"));
        assert_eq!(plain.key(), base("k1").fingerprint());
        assert_ne!(plain.key(), a.key());
    }

    #[test]
    fn answers_parse_into_temporary_credentials() {
        let answer = json!({
            "Credentials": {"Token": "tok", "TmpSecretId": "AKIDtmp", "TmpSecretKey": "tmpkey"},
            "ExpiredTime": 1_700_007_200,
            "Expiration": "2023-11-15T00:13:20Z",
            "RequestId": "r"
        });
        let (credentials, expires_at) = parse_credentials(ACTION_ASSUME_ROLE, &answer).unwrap();
        assert_eq!(credentials.secret_id(), "AKIDtmp");
        assert_eq!(credentials.token(), Some("tok"));
        assert_eq!(expires_at, 1_700_007_200);
        let missing = json!({"Credentials": {"TmpSecretId": "AKIDtmp"}, "ExpiredTime": 1});
        let err = parse_credentials(ACTION_ASSUME_ROLE, &missing).unwrap_err();
        assert_eq!(err.reason(), reason::INVALID_RESPONSE);
    }

    #[test]
    fn the_tke_variables_are_all_required() {
        let env: HashMap<&str, &str> = [
            (TKE_REGION_ENV, "ap-guangzhou"),
            (TKE_PROVIDER_ID_ENV, "cls-abc"),
            (TKE_ROLE_ARN_ENV, "qcs::cam::uin/100:roleName/certs"),
            (
                TKE_WEB_IDENTITY_TOKEN_FILE_ENV,
                "/var/run/secrets/tke/token",
            ),
        ]
        .into();
        let identity = WebIdentity::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(identity.provider_id, "cls-abc");
        assert_eq!(identity.duration_secs, DEFAULT_DURATION_SECS);
        for missing in [TKE_REGION_ENV, TKE_PROVIDER_ID_ENV, TKE_ROLE_ARN_ENV] {
            let err = WebIdentity::from_lookup(|k| {
                (k != missing)
                    .then(|| env.get(k).map(|v| v.to_string()))
                    .flatten()
            })
            .unwrap_err();
            assert_eq!(err, MissingEnv(missing));
        }
    }

    #[test]
    fn rejections_say_what_to_fix_and_classify() {
        let source = Source::AssumeRole {
            base: base("k1"),
            role: Role::new("qcs::cam::uin/100:roleName/certs"),
        };
        let api = |code: &str| TencentError::Api {
            action: ACTION_ASSUME_ROLE.into(),
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        };
        let denied = StsError::rejected(&source, api("UnauthorizedOperation"));
        assert_eq!(denied.reason(), REASON_ASSUME_ROLE_FAILED);
        assert_eq!(denied.class(), ErrorClass::Credentials);
        assert!(denied.to_string().contains("trust policy"), "{denied}");
        let missing = StsError::rejected(&source, api("ResourceNotFound.RoleNotFound"));
        assert!(
            missing.to_string().contains("check the role ARN"),
            "{missing}"
        );
        let role_error = StsError::rejected(&source, api("InternalError.GetRoleError"));
        assert_eq!(role_error.class(), ErrorClass::Credentials);
        let busy = StsError::rejected(&source, api("RequestLimitExceeded"));
        assert_eq!(busy.class(), ErrorClass::Transient);
        assert_eq!(busy.reason(), reason::RATE_LIMITED);
        let down = StsError::rejected(&source, api("InternalError.SystemError"));
        assert_eq!(down.class(), ErrorClass::Transient);
    }
}
