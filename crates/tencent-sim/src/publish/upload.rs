//! `UploadCertificate` and `DeleteCertificate` in the simulator (see [`super`]).

use serde_json::{Value, json};

use super::super::layout::{self, ZipEntry};
use super::super::state::{SimCertificate, SimLinks, SimState};
use super::{Answer, check_known, object, opt_string, refuse, required_string};
use tencent_ssl::bundle::{self, BundleError};

fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

fn leaf_sha1(chain_pem: &str) -> Option<String> {
    let blocks = bundle::pem::parse_blocks(chain_pem.as_bytes(), 64).ok()?;
    let leaf = blocks.into_iter().find(|b| b.label == "CERTIFICATE")?;
    Some(hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &leaf.der,
    )))
}

pub(super) fn upload(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(
        params,
        &[
            "CertificatePublicKey",
            "CertificatePrivateKey",
            "CertificateType",
            "Alias",
            "ProjectId",
            "CertificateUse",
            "Tags",
            "Repeatable",
            "KeyPassword",
        ],
    )?;
    let public_key = required_string(params, "CertificatePublicKey")?;
    match opt_string(params, "CertificateType")?.as_deref() {
        None | Some("SVR") => {}
        Some("CA") => {
            return Err(refuse(
                "InvalidParameter",
                "CA certificates are not modelled by the simulator.",
            ));
        }
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `CertificateType` must be SVR or CA.",
            ));
        }
    }
    let private_key = required_string(params, "CertificatePrivateKey")?;
    if opt_string(params, "KeyPassword")?.is_some_and(|p| !p.is_empty()) {
        return Err(refuse(
            "InvalidParameter",
            "Encrypted private keys are not modelled by the simulator.",
        ));
    }
    let alias = opt_string(params, "Alias")?.unwrap_or_default();
    let project_id = match params.get("ProjectId") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_u64().ok_or_else(|| {
            refuse(
                "InvalidParameter",
                "The parameter `ProjectId` must be a non-negative integer.",
            )
        })?,
    };
    let tags = match params.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|tag| {
                Some((
                    tag.get("TagKey")?.as_str()?.to_string(),
                    tag.get("TagValue")?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                refuse(
                    "InvalidParameter",
                    "The parameter `Tags` must be a list of {TagKey, TagValue}.",
                )
            })?,
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `Tags` must be a list of {TagKey, TagValue}.",
            ));
        }
    };
    let repeatable = match params.get("Repeatable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(refuse(
                "InvalidParameter",
                "The parameter `Repeatable` must be a boolean.",
            ));
        }
    };
    let checked = bundle::from_pem_entries(&[
        ("CertificatePublicKey", public_key.as_bytes()),
        ("CertificatePrivateKey", private_key.as_bytes()),
    ]);
    let pair = match checked {
        Ok(pair) => pair,
        Err(BundleError::KeyMismatch { .. }) => {
            return Err(refuse(
                "FailedOperation.CertificateMismatch",
                "The certificate and the private key do not match.",
            ));
        }
        Err(_) => {
            return Err(refuse(
                "FailedOperation.CertificateParseError",
                "Parsing failed: check that the certificate and key are standard PEM without extra spaces.",
            ));
        }
    };
    if pair.meta.is_expired_at(jiff::Timestamp::now()) {
        return Err(refuse(
            "FailedOperation.CertificateInvalid",
            "The certificate does not meet the standard: it has expired.",
        ));
    }
    let fingerprint = leaf_sha1(&pair.chain_pem);
    if !repeatable
        && let Some(existing) = state
            .certificates()
            .into_iter()
            .filter(|c| c.from == "upload" && c.fingerprint_sha1 == fingerprint)
            .min_by_key(|c| c.inserted_at)
    {
        return Ok((
            json!({ "CertificateId": existing.id, "RepeatCertId": existing.id }),
            Some(existing.id),
        ));
    }
    let domain = pair
        .meta
        .subject_cn
        .clone()
        .or_else(|| pair.meta.dns_names.first().cloned())
        .unwrap_or_default();
    let stem = layout::file_stem(&domain);
    let zip = layout::write_zip(&[
        ZipEntry {
            name: format!("Nginx/{stem}_bundle.crt"),
            contents: pair.chain_pem.clone().into_bytes(),
            is_pem: true,
        },
        ZipEntry {
            name: format!("Nginx/{stem}.key"),
            contents: pair.key_pem.clone().into_bytes(),
            is_pem: true,
        },
    ])
    .map_err(|_| refuse("InternalError", "The certificate could not be stored."))?;
    let id = loop {
        let candidate = random_id();
        if state.certificate(&candidate).is_none() {
            break candidate;
        }
    };
    state.put_certificate(SimCertificate {
        id: id.clone(),
        subject_alt_names: pair
            .meta
            .dns_names
            .iter()
            .filter(|name| **name != domain)
            .cloned()
            .collect(),
        domain,
        status: tencent_ssl::client::STATUS_ISSUED,
        not_before: Some(pair.meta.not_before),
        not_after: Some(pair.meta.not_after),
        from: "upload".to_string(),
        fingerprint_sha1: fingerprint,
        zip,
        links: SimLinks::default(),
        project_id,
        tags,
        alias,
        inserted_at: jiff::Timestamp::now(),
        spec: None,
    });
    Ok((json!({ "CertificateId": id, "RepeatCertId": "" }), Some(id)))
}

pub(super) fn delete(state: &SimState, params: &Value) -> Answer {
    let params = object(params)?;
    check_known(params, &["CertificateId", "IsCheckResource"])?;
    let id = required_string(params, "CertificateId")?;
    if state.certificate(&id).is_none() {
        return Err(refuse(
            "FailedOperation.CertificateNotFound",
            "Certificate does not exist.",
        ));
    }
    let bound = state.bindings_of(&id).len();
    if bound > 0 {
        return Err(refuse(
            "FailedOperation.DeleteResourceFailed",
            format!("The certificate is bound to {bound} cloud resource(s) and cannot be deleted."),
        ));
    }
    state.remove_certificate(&id);
    Ok((
        json!({ "DeleteResult": true, "TaskId": Value::Null }),
        Some(id),
    ))
}

impl SimState {
    fn remove_certificate(&self, id: &str) {
        self.certificates
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }
}

/// A certificate chain (leaf, intermediate) and its PKCS#8 key, as cert-manager writes them into a TLS
/// Secret: what tests publish. `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedPair {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPair")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Issues a leaf for `domains` (a new ECDSA P-256 key each time) under `pki`, valid between the two times.
pub fn issue_pair(
    pki: &crate::pki::Pki,
    domains: &[&str],
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> Result<IssuedPair, crate::pki::PkiError> {
    let leaf = pki.issue_leaf(&crate::pki::LeafSpec {
        domains: domains.iter().map(|d| (*d).to_string()).collect(),
        ip_addresses: Vec::new(),
        key: crate::pki::KeyKind::EcdsaP256,
        not_before,
        not_after,
    })?;
    Ok(IssuedPair {
        chain_pem: format!("{}{}", leaf.cert_pem, pki.intermediate.cert_pem),
        key_pem: leaf.key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SimState {
        SimState::new(vec![], vec![], vec![], vec![], None, 0)
    }

    fn pair() -> IssuedPair {
        let pki = crate::pki::Pki::generate(crate::pki::KeyKind::EcdsaP256).unwrap();
        let now = jiff::Timestamp::now();
        let day = jiff::SignedDuration::from_hours(24);
        issue_pair(
            &pki,
            &["a.example.com", "b.example.com"],
            now - day,
            now + day * 30,
        )
        .unwrap()
    }

    #[test]
    fn uploads_refuse_what_the_simulator_does_not_model_and_unknown_parameters() {
        let state = state();
        let issued = pair();
        let base = json!({
            "CertificatePublicKey": issued.chain_pem,
            "CertificatePrivateKey": issued.key_pem,
        });
        for (extra, code) in [
            (json!({"CertificateType": "CA"}), "InvalidParameter"),
            (json!({"CertificateType": "XYZ"}), "InvalidParameter"),
            (json!({"KeyPassword": "secret"}), "InvalidParameter"),
            (json!({"Repeatable": "no"}), "InvalidParameter"),
            (json!({"Tags": [{"TagKey": "k"}]}), "InvalidParameter"),
            (json!({"ProjectId": -1}), "InvalidParameter"),
            (json!({"Frobnicate": 1}), "UnknownParameter"),
            (json!({"CertificatePrivateKey": ""}), "MissingParameter"),
        ] {
            let mut params = base.clone();
            for (key, value) in extra.as_object().unwrap() {
                params[key] = value.clone();
            }
            let (refused, _) = upload(&state, &params).unwrap_err();
            assert_eq!(refused, code, "{extra}");
        }
        assert!(state.uploaded_certificates().is_empty());
    }

    #[test]
    fn a_repeatable_upload_stores_a_second_copy_and_names_come_from_the_leaf() {
        let state = state();
        let issued = pair();
        let params = json!({
            "CertificatePublicKey": issued.chain_pem,
            "CertificatePrivateKey": issued.key_pem,
            "Alias": "note",
            "ProjectId": 7,
        });
        let (first, _) = upload(&state, &params).unwrap();
        let (second, _) = upload(&state, &params).unwrap();
        assert_ne!(first["CertificateId"], second["CertificateId"]);
        assert_eq!(second["RepeatCertId"], "");
        let stored = state
            .certificate(first["CertificateId"].as_str().unwrap())
            .unwrap();
        assert_eq!(stored.domain, "a.example.com");
        assert_eq!(stored.subject_alt_names, vec!["b.example.com"]);
        assert_eq!((stored.project_id, stored.alias.as_str()), (7, "note"));
        assert_eq!(stored.fingerprint_sha1.as_ref().map(String::len), Some(40));
        // Deleting one leaves the other; an unknown id is CertificateNotFound.
        let id = first["CertificateId"].as_str().unwrap();
        delete(&state, &json!({"CertificateId": id})).unwrap();
        assert_eq!(state.uploaded_certificates().len(), 1);
        let (code, _) = delete(&state, &json!({"CertificateId": id})).unwrap_err();
        assert_eq!(code, "FailedOperation.CertificateNotFound");
    }
}
