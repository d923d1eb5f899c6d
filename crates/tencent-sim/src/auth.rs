//! Request authentication as Tencent Cloud API 3.0 does it: TC3 signature, timestamp window, token.

use std::collections::HashMap;

use tencent_ssl::client::{API_VERSION, SERVICE};
use tencent_ssl::sign::{self, RequestToSign};

/// Tencent rejects requests whose timestamp is more than this many seconds from its clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// An API key the simulator accepts.
#[derive(Clone)]
pub struct Account {
    pub secret_id: String,
    pub secret_key: String,
    /// When set, requests must carry this `X-TC-Token` (temporary credentials).
    pub token: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

/// A rejection: the error code and message Tencent would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// What authentication needs from an HTTP request. Header names are lowercase.
pub struct IncomingRequest<'a> {
    pub method: &'a str,
    pub query: &'a str,
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
}

impl IncomingRequest<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The authenticated caller and the action it called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub secret_id: String,
    pub action: String,
}

/// Checks the common parameters and the signature of an SSL API request; `now` is the simulator's clock
/// (Unix seconds).
pub fn authenticate(
    request: &IncomingRequest<'_>,
    accounts: &HashMap<String, Account>,
    now: i64,
) -> Result<Authenticated, Rejection> {
    authenticate_for(
        request,
        &|id| accounts.get(id).cloned(),
        now,
        SERVICE,
        API_VERSION,
    )
}

/// The common parameters an unsigned call (`AssumeRoleWithWebIdentity`) still needs: the action, the
/// version, a timestamp and `Authorization: SKIP` (what Tencent's SDK sends).
pub fn check_unsigned(request: &IncomingRequest<'_>, version: &str) -> Result<String, Rejection> {
    let action = request
        .header("x-tc-action")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            reject(
                "MissingParameter",
                "The request is missing a required parameter `X-TC-Action`.",
            )
        })?;
    if request.header("x-tc-version") != Some(version) {
        return Err(reject(
            "NoSuchVersion",
            "The API version does not exist for this action.",
        ));
    }
    request
        .header("x-tc-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| {
            reject(
                "MissingParameter",
                "The request is missing a valid `X-TC-Timestamp`.",
            )
        })?;
    if request.header("authorization") != Some("SKIP") {
        return Err(reject(
            "AuthFailure.InvalidAuthorization",
            "This action is called unsigned, with `Authorization: SKIP`.",
        ));
    }
    Ok(action.to_string())
}

/// Like [`authenticate`] for any service and version, with accounts from `find`.
pub fn authenticate_for(
    request: &IncomingRequest<'_>,
    find: &dyn Fn(&str) -> Option<Account>,
    now: i64,
    service: &str,
    api_version: &str,
) -> Result<Authenticated, Rejection> {
    let action = request
        .header("x-tc-action")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            reject(
                "MissingParameter",
                "The request is missing a required parameter `X-TC-Action`.",
            )
        })?;
    let version = request.header("x-tc-version").ok_or_else(|| {
        reject(
            "MissingParameter",
            "The request is missing a required parameter `X-TC-Version`.",
        )
    })?;
    if version != api_version {
        return Err(reject(
            "NoSuchVersion",
            format!("The API version `{version}` does not exist."),
        ));
    }
    let timestamp: i64 = request
        .header("x-tc-timestamp")
        .ok_or_else(|| {
            reject(
                "MissingParameter",
                "The request is missing a required parameter `X-TC-Timestamp`.",
            )
        })?
        .parse()
        .map_err(|_| {
            reject(
                "InvalidParameter",
                "The parameter `X-TC-Timestamp` is not a valid integer.",
            )
        })?;
    let authorization = request.header("authorization").ok_or_else(|| {
        reject(
            "AuthFailure.InvalidAuthorization",
            "The `Authorization` header is missing.",
        )
    })?;
    let parsed = sign::parse_authorization(authorization).ok_or_else(|| {
        reject(
            "AuthFailure.InvalidAuthorization",
            "The `Authorization` header is not a valid TC3-HMAC-SHA256 header.",
        )
    })?;
    let signed: Vec<&str> = parsed.signed_headers.clone();
    if !signed.contains(&"content-type") || !signed.contains(&"host") {
        return Err(reject(
            "AuthFailure.InvalidAuthorization",
            "SignedHeaders must include content-type and host.",
        ));
    }
    if (now - timestamp).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(reject(
            "AuthFailure.SignatureExpire",
            format!(
                "The request timestamp {timestamp} is more than {MAX_CLOCK_SKEW_SECS} seconds from the server time {now}."
            ),
        ));
    }
    // Tencent's own message does not quote the SecretId today; the simulator does, so that the operator is
    // tested against an API that echoes what it was sent (it must never reach status, events or logs).
    let account = find(parsed.secret_id).ok_or_else(|| {
        reject(
            "AuthFailure.SecretIdNotFound",
            format!(
                "The SecretId {} is not found, please ensure that your SecretId is correct.",
                parsed.secret_id
            ),
        )
    })?;
    if parsed.service != service || parsed.date != sign::utc_date(timestamp) {
        return Err(reject(
            "AuthFailure.SignatureFailure",
            "The credential scope does not match the timestamp's UTC date or the service.",
        ));
    }
    let mut header_values = Vec::with_capacity(signed.len());
    for name in &signed {
        let value = request.header(name).ok_or_else(|| {
            reject(
                "AuthFailure.SignatureFailure",
                format!("The signed header `{name}` is not in the request."),
            )
        })?;
        header_values.push((*name, value));
    }
    let expected = sign::sign(
        &account.secret_key,
        service,
        timestamp,
        &RequestToSign {
            method: request.method,
            query: request.query,
            headers: &header_values,
            payload: request.body,
        },
    );
    if !sign::signatures_equal(&expected.signature, parsed.signature) {
        return Err(reject(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        ));
    }
    match (&account.token, request.header("x-tc-token")) {
        (None, None) => {}
        (Some(expected), Some(sent)) if sign::signatures_equal(expected, sent) => {}
        _ => {
            return Err(reject(
                "AuthFailure.TokenFailure",
                "The session token is missing, invalid or expired.",
            ));
        }
    }
    Ok(Authenticated {
        secret_id: account.secret_id.clone(),
        action: action.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn accounts(token: Option<&str>) -> HashMap<String, Account> {
        HashMap::from([(
            "AKIDsim".to_string(),
            Account {
                secret_id: "AKIDsim".into(),
                secret_key: "sim-key".into(),
                token: token.map(String::from),
            },
        )])
    }

    fn signed_headers(key: &str, timestamp: i64, body: &[u8]) -> HashMap<String, String> {
        let signed = sign::sign(
            key,
            "ssl",
            timestamp,
            &RequestToSign {
                method: "POST",
                query: "",
                headers: &[("content-type", "application/json"), ("host", "sim:1")],
                payload: body,
            },
        );
        HashMap::from([
            ("content-type".into(), "application/json".into()),
            ("host".into(), "sim:1".into()),
            ("x-tc-action".into(), "DownloadCertificate".into()),
            ("x-tc-version".into(), "2019-12-05".into()),
            ("x-tc-timestamp".into(), timestamp.to_string()),
            ("authorization".into(), signed.authorization("AKIDsim")),
        ])
    }

    fn check(
        headers: &HashMap<String, String>,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Authenticated, Rejection> {
        authenticate(
            &IncomingRequest {
                method: "POST",
                query: "",
                headers,
                body,
            },
            &accounts(token),
            NOW,
        )
    }

    #[test]
    fn a_correctly_signed_request_is_accepted() {
        let headers = signed_headers("sim-key", NOW, b"{}");
        assert_eq!(
            check(&headers, b"{}", None).unwrap(),
            Authenticated {
                secret_id: "AKIDsim".into(),
                action: "DownloadCertificate".into()
            }
        );
    }

    #[test]
    fn rejections_use_tencent_codes() {
        let code = |headers: &HashMap<String, String>, body: &[u8], token| {
            check(headers, body, token).unwrap_err().code
        };
        assert_eq!(
            code(&signed_headers("wrong-key", NOW, b"{}"), b"{}", None),
            "AuthFailure.SignatureFailure"
        );
        // The body changed after signing.
        assert_eq!(
            code(&signed_headers("sim-key", NOW, b"{}"), b"{\"a\":1}", None),
            "AuthFailure.SignatureFailure"
        );
        assert_eq!(
            code(&signed_headers("sim-key", NOW - 301, b"{}"), b"{}", None),
            "AuthFailure.SignatureExpire"
        );
        assert_eq!(
            code(&signed_headers("sim-key", NOW + 301, b"{}"), b"{}", None),
            "AuthFailure.SignatureExpire"
        );
        assert!(check(&signed_headers("sim-key", NOW - 300, b"{}"), b"{}", None).is_ok());
        let mut unknown = signed_headers("sim-key", NOW, b"{}");
        let auth = unknown["authorization"].replace("AKIDsim", "AKIDother");
        unknown.insert("authorization".into(), auth);
        assert_eq!(code(&unknown, b"{}", None), "AuthFailure.SecretIdNotFound");
        let mut changed_host = signed_headers("sim-key", NOW, b"{}");
        changed_host.insert("host".into(), "elsewhere".into());
        assert_eq!(
            code(&changed_host, b"{}", None),
            "AuthFailure.SignatureFailure"
        );
        let mut charset = signed_headers("sim-key", NOW, b"{}");
        charset.insert(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        );
        assert_eq!(code(&charset, b"{}", None), "AuthFailure.SignatureFailure");
        let mut no_auth = signed_headers("sim-key", NOW, b"{}");
        no_auth.remove("authorization");
        assert_eq!(
            code(&no_auth, b"{}", None),
            "AuthFailure.InvalidAuthorization"
        );
        let mut old_version = signed_headers("sim-key", NOW, b"{}");
        old_version.insert("x-tc-version".into(), "2018-01-01".into());
        assert_eq!(code(&old_version, b"{}", None), "NoSuchVersion");
        let mut no_action = signed_headers("sim-key", NOW, b"{}");
        no_action.remove("x-tc-action");
        assert_eq!(code(&no_action, b"{}", None), "MissingParameter");
    }

    #[test]
    fn tokens_are_required_and_checked_when_configured() {
        let mut headers = signed_headers("sim-key", NOW, b"{}");
        assert_eq!(
            check(&headers, b"{}", Some("tok")).unwrap_err().code,
            "AuthFailure.TokenFailure"
        );
        headers.insert("x-tc-token".into(), "other".into());
        assert_eq!(
            check(&headers, b"{}", Some("tok")).unwrap_err().code,
            "AuthFailure.TokenFailure"
        );
        headers.insert("x-tc-token".into(), "tok".into());
        assert!(check(&headers, b"{}", Some("tok")).is_ok());
        // A token sent for permanent credentials is refused too.
        assert_eq!(
            check(&headers, b"{}", None).unwrap_err().code,
            "AuthFailure.TokenFailure"
        );
    }

    #[test]
    fn extra_signed_headers_are_verified() {
        // Tencent's newer doc example signs x-tc-action too; any header set must verify.
        let signed = sign::sign(
            "sim-key",
            "ssl",
            NOW,
            &RequestToSign {
                method: "POST",
                query: "",
                headers: &[
                    ("content-type", "application/json"),
                    ("host", "sim:1"),
                    ("x-tc-action", "downloadcertificate"),
                ],
                payload: b"{}",
            },
        );
        let mut headers = signed_headers("sim-key", NOW, b"{}");
        headers.insert("authorization".into(), signed.authorization("AKIDsim"));
        headers.insert("x-tc-action".into(), "downloadcertificate".into());
        assert!(check(&headers, b"{}", None).is_ok());
    }
}
