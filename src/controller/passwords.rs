//! Reading the keystore passwords a resource's outputs name (`keystores.*.passwordSecretRef`). Read on every
//! reconcile that has keystores, like the credentials: a changed password must be used by the very next one.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::error::SyncError;
use crate::outputs::{OutputError, Passwords, SecretKeySelector, SecretOutputs};

/// The passwords `outputs` needs, from Secrets in `namespace`. None needed: no request.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    outputs: &SecretOutputs,
) -> Result<Passwords, SyncError> {
    let mut passwords = Passwords::default();
    let refs = outputs.password_refs();
    if refs.is_empty() {
        return Ok(passwords);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for reference in refs {
        let secret = api
            .get_opt(&reference.name)
            .await
            .map_err(SyncError::kube("reading a keystore password Secret"))?;
        let password = password_from(secret.as_ref(), reference)?;
        passwords.insert(reference.clone(), password);
    }
    Ok(passwords)
}

/// The password under `reference.key` of `secret`: present, non-empty, UTF-8 (taken as it is: no
/// trimming, a password may end in whitespace).
pub fn password_from(
    secret: Option<&Secret>,
    reference: &SecretKeySelector,
) -> Result<String, OutputError> {
    let unusable = |why: &str| OutputError::PasswordNotFound {
        secret: reference.name.clone(),
        key: reference.key.clone(),
        why: why.to_string(),
    };
    let secret = secret.ok_or_else(|| unusable("it does not exist"))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .filter(|bytes| !bytes.0.is_empty())
        .ok_or_else(|| unusable("it has no non-empty value under that key"))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| unusable("the value is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn reference() -> SecretKeySelector {
        SecretKeySelector {
            name: "jks-password".into(),
            key: "password".into(),
        }
    }

    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(value.to_vec()))].into()),
            ..Secret::default()
        }
    }

    #[test]
    fn a_password_is_read_as_it_is() {
        assert_eq!(
            password_from(Some(&secret("password", b"p@ss word\n")), &reference()).unwrap(),
            "p@ss word\n"
        );
    }

    #[test]
    fn missing_empty_or_binary_passwords_say_why_without_the_value() {
        let cases = [
            (None, "does not exist"),
            (Some(secret("other", b"x")), "no non-empty value"),
            (Some(secret("password", b"")), "no non-empty value"),
            (Some(secret("password", &[0xff, 0xfe, 0x41])), "not UTF-8"),
        ];
        for (secret, why) in cases {
            let err = password_from(secret.as_ref(), &reference()).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(why), "{message}");
            assert!(message.contains("jks-password"), "{message}");
            assert_eq!(err.reason(), "KeystorePasswordNotFound");
            let sync = SyncError::from(err);
            assert_eq!(sync.class(), tencent_ssl::ErrorClass::Credentials);
        }
    }
}
