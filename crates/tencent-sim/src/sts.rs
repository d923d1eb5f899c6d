//! The simulator's STS (service `sts`, version 2018-08-13): `AssumeRole` (TC3-signed by a key its role's
//! trust policy names) and `AssumeRoleWithWebIdentity` (unsigned, `Authorization: SKIP`; the token must be
//! one the role's OIDC provider currently vouches for). Both issue temporary credentials — a SecretId,
//! key and token — that expire; the SSL actions accept them only with their `X-TC-Token` and until
//! `ExpiredTime`, answering `AuthFailure.TokenFailure` otherwise.
//!
//! What a real identity provider checks of a token (JWT signature, issuer, audience, expiry) is reduced to
//! "is it one of the role's current tokens"; replacing the list rotates the token.
//! Error codes are those of Tencent's STS error table (sts/v20180813/errorcodes.py); which one Tencent
//! answers for a trust policy that does not name the caller is not documented — the simulator answers
//! `UnauthorizedOperation` for `AssumeRole` and `InvalidParameter.WebIdentityTokenError` for a provider or
//! token it does not trust.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{self, IncomingRequest};
use super::state::SimState;
use tencent_ssl::client::{STS_API_VERSION, STS_SERVICE};
use tencent_ssl::sts::{
    ACTION_ASSUME_ROLE, ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY, DEFAULT_DURATION_SECS,
    MAX_DURATION_SECS,
};

/// A CAM role the simulator lets callers assume.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimRole {
    pub role_arn: String,
    /// SecretIds whose owner the role's trust policy lets call `AssumeRole`.
    pub trusted_secret_ids: Vec<String>,
    /// The OIDC identity provider the trust policy trusts for `AssumeRoleWithWebIdentity`.
    pub oidc_provider_id: Option<String>,
    /// The web identity tokens the provider currently vouches for.
    pub web_identity_tokens: Vec<String>,
}

impl fmt::Debug for SimRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRole")
            .field("role_arn", &self.role_arn)
            .field("trusted_secret_ids", &self.trusted_secret_ids)
            .field("oidc_provider_id", &self.oidc_provider_id)
            .field("web_identity_tokens", &self.web_identity_tokens.len())
            .finish()
    }
}

impl std::str::FromStr for SimRole {
    type Err = String;

    /// `ARN[,trust=SECRETID]…[,provider=ID][,token=TOKEN]…` (the `sim --role` form).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let role_arn = parts.next().unwrap_or_default().trim();
        if role_arn.is_empty() {
            return Err(format!("a role needs its ARN first, got {text:?}"));
        }
        let mut role = SimRole {
            role_arn: role_arn.to_string(),
            ..SimRole::default()
        };
        for part in parts {
            match part.split_once('=') {
                Some(("trust", id)) if !id.is_empty() => {
                    role.trusted_secret_ids.push(id.to_string())
                }
                Some(("provider", id)) if !id.is_empty() => {
                    role.oidc_provider_id = Some(id.to_string())
                }
                Some(("token", token)) if !token.is_empty() => {
                    role.web_identity_tokens.push(token.to_string())
                }
                _ => {
                    return Err(format!(
                        "unknown role option {part:?} (trust=SECRETID, provider=ID, token=TOKEN)"
                    ));
                }
            }
        }
        Ok(role)
    }
}

/// Temporary credentials the simulator issued (`Account`'s `Debug` shows only the SecretId).
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) account: super::Account,
    pub(crate) role_arn: String,
    pub(crate) expires_at: i64,
}

fn random_text(length: usize) -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        length,
    )
}

fn random_from(alphabet: &[u8], length: usize) -> String {
    (0..length)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

/// A temporary SecretId shaped as STS issues them: 68 characters, with `-` and `_` among them.
fn temporary_secret_id() -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    format!("AKIDtmp{}", random_from(alphabet, 61))
}

type Answer = Result<Value, (&'static str, String)>;

fn fail(code: &'static str, message: impl Into<String>) -> Answer {
    Err((code, message.into()))
}

/// Answers an STS request (any request with `X-TC-Version: 2018-08-13`): the `Response` fields or an
/// error code and message.
pub(crate) fn handle(state: &SimState, request: &IncomingRequest<'_>) -> (String, Answer) {
    let action = request.header("x-tc-action").unwrap_or("-").to_string();
    let answer = match action.as_str() {
        ACTION_ASSUME_ROLE => assume_role(state, request),
        ACTION_ASSUME_ROLE_WITH_WEB_IDENTITY => assume_role_with_web_identity(state, request),
        _ => fail(
            "InvalidAction",
            format!("The action `{action}` is not supported by the simulator's STS."),
        ),
    };
    (action, answer)
}

struct Params {
    role_arn: String,
    session_name: String,
    duration: i64,
}

fn params(body: &[u8]) -> Result<(Value, Params), (&'static str, String)> {
    let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
        return Err((
            "InvalidParameter",
            "The request body is not a JSON object.".into(),
        ));
    };
    let text = |name: &str| -> Result<String, (&'static str, String)> {
        match value.get(name) {
            Some(Value::String(v)) if !v.is_empty() => Ok(v.clone()),
            _ => Err((
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )),
        }
    };
    let role_arn = text("RoleArn")?;
    let session_name = text("RoleSessionName")?;
    // Tencent: 2 to 128 characters, letters, digits and `_+=,.@-`.
    if !(2..=128).contains(&session_name.len())
        || !session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    {
        return Err((
            "InvalidParameter.ParamError",
            "RoleSessionName must be 2 to 128 letters, digits or _+=,.@-".into(),
        ));
    }
    let duration = match value.get("DurationSeconds") {
        None | Some(Value::Null) => i64::from(DEFAULT_DURATION_SECS),
        Some(v) => v.as_i64().ok_or((
            "InvalidParameter.ParamError",
            "DurationSeconds must be an integer.".to_string(),
        ))?,
    };
    if duration < 1 {
        return Err((
            "InvalidParameter.ParamError",
            "DurationSeconds must be positive.".into(),
        ));
    }
    if duration > i64::from(MAX_DURATION_SECS) {
        return Err((
            "InvalidParameter.OverTimeError",
            format!("DurationSeconds exceeds {MAX_DURATION_SECS}."),
        ));
    }
    Ok((
        value,
        Params {
            role_arn,
            session_name,
            duration,
        },
    ))
}

fn issue(state: &SimState, role_arn: &str, duration: i64) -> Value {
    let now = state.now();
    let account = super::Account {
        secret_id: temporary_secret_id(),
        secret_key: random_text(32),
        token: Some(random_text(96)),
    };
    let expires_at = now + duration;
    let answer = json!({
        "Credentials": {
            "Token": account.token,
            "TmpSecretId": account.secret_id,
            "TmpSecretKey": account.secret_key,
        },
        "ExpiredTime": expires_at,
        "Expiration": jiff::Timestamp::from_second(expires_at)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default(),
    });
    state.put_issued(Issued {
        account,
        role_arn: role_arn.to_string(),
        expires_at,
    });
    answer
}

fn assume_role(state: &SimState, request: &IncomingRequest<'_>) -> Answer {
    let caller = auth::authenticate_for(
        request,
        &|id| state.account(id),
        state.now(),
        STS_SERVICE,
        STS_API_VERSION,
    )
    .map_err(|rejection| (rejection.code, rejection.message))?;
    if state.issued_expired(&caller.secret_id) == Some(true) {
        return fail(
            "AuthFailure.TokenFailure",
            "The temporary credentials have expired.",
        );
    }
    let (_, params) = params(request.body)?;
    let Some(role) = state.role(&params.role_arn) else {
        return fail(
            "ResourceNotFound.RoleNotFound",
            "The role does not exist for this account.",
        );
    };
    if !role.trusted_secret_ids.contains(&caller.secret_id) {
        return fail(
            "UnauthorizedOperation",
            "The role's trust policy does not allow the caller to assume it.",
        );
    }
    let _ = params.session_name;
    Ok(issue(state, &role.role_arn, params.duration))
}

fn assume_role_with_web_identity(state: &SimState, request: &IncomingRequest<'_>) -> Answer {
    auth::check_unsigned(request, STS_API_VERSION)
        .map_err(|rejection| (rejection.code, rejection.message))?;
    if request.header("x-tc-region").is_none_or(str::is_empty) {
        return fail(
            "MissingParameter",
            "The request is missing a required parameter `X-TC-Region`.",
        );
    }
    let (value, params) = params(request.body)?;
    let provider_id = value
        .get("ProviderId")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty());
    let token = value
        .get("WebIdentityToken")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty());
    let (Some(provider_id), Some(token)) = (provider_id, token) else {
        return fail(
            "MissingParameter",
            "The request is missing `ProviderId` or `WebIdentityToken`.",
        );
    };
    let Some(role) = state.role(&params.role_arn) else {
        return fail(
            "ResourceNotFound.RoleNotFound",
            "The role does not exist for this account.",
        );
    };
    if role.oidc_provider_id.as_deref() != Some(provider_id) {
        return fail(
            "InvalidParameter.WebIdentityTokenError",
            "The role's trust policy does not trust this identity provider.",
        );
    }
    if !role
        .web_identity_tokens
        .iter()
        .any(|t| tencent_ssl::sign::signatures_equal(t, token))
    {
        return fail(
            "InvalidParameter.WebIdentityTokenError",
            "The web identity token is invalid or expired.",
        );
    }
    Ok(issue(state, &role.role_arn, params.duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_the_command_line_form() {
        let role: SimRole =
            "qcs::cam::uin/100:roleName/certs,trust=AKID1,trust=AKID2,provider=cls-1,token=t"
                .parse()
                .unwrap();
        assert_eq!(role.role_arn, "qcs::cam::uin/100:roleName/certs");
        assert_eq!(role.trusted_secret_ids, ["AKID1", "AKID2"]);
        assert_eq!(role.oidc_provider_id.as_deref(), Some("cls-1"));
        assert!(!format!("{role:?}").contains("token=t"));
        assert!("".parse::<SimRole>().is_err());
        assert!("arn,color=blue".parse::<SimRole>().is_err());
    }

    #[test]
    fn parameters_are_checked_as_tencent_does() {
        let code = |body: Value| params(body.to_string().as_bytes()).err().map(|e| e.0);
        let ok = json!({"RoleArn": "a", "RoleSessionName": "s1"});
        assert_eq!(code(ok.clone()), None);
        assert_eq!(params(ok.to_string().as_bytes()).unwrap().1.duration, 7200);
        assert_eq!(
            code(json!({"RoleSessionName": "s1"})),
            Some("MissingParameter")
        );
        assert_eq!(
            code(json!({"RoleArn": "a", "RoleSessionName": "has space"})),
            Some("InvalidParameter.ParamError")
        );
        assert_eq!(
            code(json!({"RoleArn": "a", "RoleSessionName": "s1", "DurationSeconds": 43201})),
            Some("InvalidParameter.OverTimeError")
        );
    }
}
