//! Tencent Cloud API credentials. No part of them (SecretId, SecretKey, session token) appears in `Debug`,
//! `Display` or an error: whatever a tenant's Secret holds under the key they name must not reach status,
//! events or logs, and the SecretId is a value of that Secret like any other.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Env var names for the token: Tencent documents none for its SDKs' env provider, and tools disagree.
pub const TOKEN_ENV_VARS: [&str; 3] = [
    "TENCENTCLOUD_SESSION_TOKEN",
    "TENCENTCLOUD_SECURITY_TOKEN",
    "TENCENTCLOUD_TOKEN",
];
pub const SECRET_ID_ENV_VAR: &str = "TENCENTCLOUD_SECRET_ID";
pub const SECRET_KEY_ENV_VAR: &str = "TENCENTCLOUD_SECRET_KEY";

#[derive(Clone)]
pub struct Credentials {
    secret_id: String,
    secret_key: SecretString,
    token: Option<SecretString>,
    /// For temporary credentials obtained from a role: the digest of where they come from (base key and
    /// role, or web identity), which is their [`Credentials::fingerprint`]. Shared results stay keyed by
    /// the source across refreshes of the temporary key.
    source: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("{0} is not set or empty")]
    Missing(&'static str),
    #[error("{0} contains whitespace or control characters (a copy-paste slip?)")]
    Malformed(&'static str),
    /// Refused before anything is sent: the value would go to Tencent in the `Authorization` header, and
    /// a key pointed at some other value of the Secret (a token, a password) must not leave the cluster.
    #[error(
        "{0} does not look like a Tencent Cloud SecretId (\"AKID\" followed by letters, digits, '-' or '_', at most {SECRET_ID_MAX_LEN} characters)"
    )]
    NotASecretId(&'static str),
}

/// Every Tencent Cloud SecretId starts with this: long-term API keys (`AKID` + 32 alphanumerics) and the
/// temporary ones STS issues (`AKID` + ~64 characters, which include `-` and `_`).
pub const SECRET_ID_PREFIX: &str = "AKID";
/// Longer than any SecretId Tencent issues (temporary ones are about 68 characters).
pub const SECRET_ID_MAX_LEN: usize = 128;

/// Whether `value` has the shape of a Tencent Cloud SecretId: [`SECRET_ID_PREFIX`], then at least one of
/// `[A-Za-z0-9_-]`, at most [`SECRET_ID_MAX_LEN`] in all. The official SDKs check only for emptiness and
/// surrounding whitespace; this is stricter on purpose (see [`CredentialsError::NotASecretId`]).
pub fn looks_like_secret_id(value: &str) -> bool {
    value.len() <= SECRET_ID_MAX_LEN
        && value.strip_prefix(SECRET_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Replaces every SecretId-shaped word of `text` (see [`looks_like_secret_id`]) with `<SecretId>`: Tencent's
/// error messages are free text and may quote what they were sent.
pub fn redact_secret_ids(text: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(SECRET_ID_PREFIX) {
        // Only at the start of a word: "XAKID1" is not a SecretId.
        if rest[..start].chars().next_back().is_some_and(word) {
            out.push_str(&rest[..start + SECRET_ID_PREFIX.len()]);
            rest = &rest[start + SECRET_ID_PREFIX.len()..];
            continue;
        }
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| !word(c))
            .unwrap_or(candidate.len());
        if end > SECRET_ID_PREFIX.len() {
            out.push_str("<SecretId>");
        } else {
            out.push_str(&candidate[..end]);
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

impl Credentials {
    /// Builds credentials; rejects empty values and values with whitespace, a common copy-paste slip that
    /// Tencent would only report as `AuthFailure.SecretIdNotFound`.
    pub fn new(
        secret_id: impl Into<String>,
        secret_key: impl Into<String>,
        token: Option<String>,
    ) -> Result<Self, CredentialsError> {
        let secret_id = secret_id.into();
        let secret_key = secret_key.into();
        check("secretId", &secret_id)?;
        if !looks_like_secret_id(&secret_id) {
            return Err(CredentialsError::NotASecretId("secretId"));
        }
        check("secretKey", &secret_key)?;
        let token = match token {
            Some(token) if !token.is_empty() => {
                check("token", &token)?;
                Some(SecretString::from(token))
            }
            _ => None,
        };
        Ok(Self {
            secret_id,
            secret_key: SecretString::from(secret_key),
            token,
            source: None,
        })
    }

    /// The same credentials, fingerprinted by `source` instead of their own values (see the field).
    pub(crate) fn with_source(mut self, source: [u8; 32]) -> Self {
        self.source = Some(source);
        self
    }

    /// Reads `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY` and the first non-empty token variable.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Credentials::from_env`], over any variable lookup (testable without touching the process env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let secret_id = lookup(SECRET_ID_ENV_VAR)
            .filter(|v| !v.is_empty())
            .ok_or(CredentialsError::Missing(SECRET_ID_ENV_VAR))?;
        let secret_key = lookup(SECRET_KEY_ENV_VAR)
            .filter(|v| !v.is_empty())
            .ok_or(CredentialsError::Missing(SECRET_KEY_ENV_VAR))?;
        let token = TOKEN_ENV_VARS
            .iter()
            .find_map(|name| lookup(name).filter(|v| !v.is_empty()));
        Self::new(secret_id, secret_key, token)
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// `text` with every value of these credentials, and anything shaped like a SecretId, replaced by a
    /// placeholder (for Tencent's error messages, which are free text).
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (value, placeholder) in [
            (Some(self.secret_key()), "<SecretKey>"),
            (self.token(), "<token>"),
            (Some(self.secret_id.as_str()), "<SecretId>"),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                text = text.replace(value, placeholder);
            }
        }
        redact_secret_ids(&text)
    }

    pub(crate) fn secret_key(&self) -> &str {
        self.secret_key.expose_secret()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// A digest of the whole credential set, for keying shared results. Two callers that share a SecretId
    /// but not its key must never share a download, so the key and token are part of the digest.
    ///
    /// Temporary credentials from a role answer the digest of their source instead, which does not change
    /// when the temporary key is refreshed.
    pub fn fingerprint(&self) -> [u8; 32] {
        if let Some(source) = self.source {
            return source;
        }
        let mut hasher = Sha256::new();
        for part in [
            self.secret_id.as_str(),
            self.secret_key(),
            self.token().unwrap_or(""),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }
}

fn check(field: &'static str, value: &str) -> Result<(), CredentialsError> {
    if value.is_empty() {
        return Err(CredentialsError::Missing(field));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CredentialsError::Malformed(field));
    }
    Ok(())
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &"<redacted>")
            .field("secret_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.token.is_some() {
            "temporary credentials (with session token)"
        } else {
            "credentials"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn debug_and_display_never_show_key_or_token() {
        let creds =
            Credentials::new("AKIDpublic", "sEcReTkEy123", Some("t0kenV4lue".into())).unwrap();
        for text in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            creds.to_string(),
        ] {
            assert!(!text.contains("AKIDpublic"), "{text}");
            assert!(!text.contains("sEcReTkEy123"), "{text}");
            assert!(!text.contains("t0kenV4lue"), "{text}");
        }
    }

    #[test]
    fn env_lookup_accepts_each_token_variable() {
        for token_var in TOKEN_ENV_VARS {
            let env: HashMap<&str, &str> = [
                (SECRET_ID_ENV_VAR, "AKID1"),
                (SECRET_KEY_ENV_VAR, "key1"),
                (token_var, "tok"),
            ]
            .into();
            let creds = Credentials::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
            assert_eq!(creds.token(), Some("tok"), "{token_var}");
        }
    }

    #[test]
    fn env_lookup_reports_the_missing_variable() {
        let env: HashMap<&str, &str> = [(SECRET_ID_ENV_VAR, "AKID1")].into();
        let err = Credentials::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err, CredentialsError::Missing(SECRET_KEY_ENV_VAR));
        let none = Credentials::from_lookup(|_| None).unwrap_err();
        assert_eq!(none, CredentialsError::Missing(SECRET_ID_ENV_VAR));
    }

    #[test]
    fn whitespace_in_credentials_is_rejected() {
        assert_eq!(
            Credentials::new("AKID1\n", "k", None).unwrap_err(),
            CredentialsError::Malformed("secretId")
        );
        assert_eq!(
            Credentials::new("AKID1", " k", None).unwrap_err(),
            CredentialsError::Malformed("secretKey")
        );
    }

    #[test]
    fn fingerprint_differs_when_only_the_key_differs() {
        let a = Credentials::new("AKID1", "key-a", None).unwrap();
        let b = Credentials::new("AKID1", "key-b", None).unwrap();
        let c = Credentials::new("AKID1", "key-a", Some("tok".into())).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn a_source_fingerprint_replaces_the_key_digest() {
        let first = Credentials::new("AKIDtmp1", "k1", Some("t1".into()))
            .unwrap()
            .with_source([7; 32]);
        let refreshed = Credentials::new("AKIDtmp2", "k2", Some("t2".into()))
            .unwrap()
            .with_source([7; 32]);
        assert_eq!(first.fingerprint(), refreshed.fingerprint());
        assert_eq!(first.fingerprint(), [7; 32]);
    }

    #[test]
    fn secret_ids_of_every_kind_tencent_issues_are_accepted() {
        // A long-term API key (AKID + 32 alphanumerics, the console's and the docs' shape), an STS
        // temporary SecretId (longer, with '-' and '_'), and the short ones the tests use.
        let long_term = format!("AKID{}", "a1B2".repeat(8));
        let temporary = format!(
            "AKID{}-{}_{}",
            "Xy9".repeat(10),
            "q".repeat(20),
            "Z7".repeat(6)
        );
        assert_eq!(long_term.len(), 36);
        assert!(temporary.len() > 60);
        for id in [long_term.as_str(), temporary.as_str(), "AKID1", "AKIDsim"] {
            assert!(looks_like_secret_id(id), "{id}");
            assert!(Credentials::new(id, "key", None).is_ok(), "{id}");
        }
    }

    #[test]
    fn values_that_are_not_secret_ids_are_refused_without_being_quoted() {
        let too_long = format!("AKID{}", "a".repeat(SECRET_ID_MAX_LEN));
        for value in [
            "hunter2-password",
            "AKID",
            "akidlowercase1",
            "AKID.dotted",
            "AKID/slash",
            "AKIDé",
            "eyJhbGciOiJSUzI1NiJ9.payload.sig",
            "-----BEGIN",
            too_long.as_str(),
        ] {
            let err = Credentials::new(value, "key", None).unwrap_err();
            assert_eq!(err, CredentialsError::NotASecretId("secretId"), "{value}");
            // ("AKID" alone is named by the message as the prefix expected.)
            assert!(value == "AKID" || !err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn secret_id_shaped_words_are_redacted_from_free_text() {
        assert_eq!(
            redact_secret_ids(
                "The SecretId `AKIDabc-1_x` is not found, AKID alone stays; XAKIDnope too"
            ),
            "The SecretId `<SecretId>` is not found, AKID alone stays; XAKIDnope too"
        );
        assert_eq!(redact_secret_ids("AKIDx"), "<SecretId>");
        assert_eq!(redact_secret_ids("no ids here"), "no ids here");
        let creds = Credentials::new("AKIDmine1", "the-key", Some("the-token".into())).unwrap();
        assert_eq!(
            creds.redact("id AKIDmine1 key the-key token the-token, other AKIDother"),
            "id <SecretId> key <SecretKey> token <token>, other <SecretId>"
        );
    }
}
