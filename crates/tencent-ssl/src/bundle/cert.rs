//! Certificates: parsing the few fields extraction needs, ordering the chain, and the leaf's metadata.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

use super::key::PublicKeyId;
use super::oid;
use super::{CertMetadata, KeyAlgorithm};

/// The parts of a certificate that selection and chain building need.
#[derive(Debug, Clone)]
pub(crate) struct ParsedCert {
    pub(crate) der: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    pub(crate) is_ca: bool,
    /// The public key, or what makes it unusable for TLS serving.
    pub(crate) public_key: Result<PublicKeyId, String>,
    /// Set when the signature algorithm is one TLS stacks cannot verify (SM2 with SM3).
    pub(crate) unsupported_signature: Option<String>,
    /// A short human name (CN, else first DNS name, else serial) for error messages.
    pub(crate) display_name: String,
}

impl ParsedCert {
    /// Parses one DER certificate; `None` when it is not valid X.509 (or has trailing bytes).
    pub(crate) fn parse(der: Vec<u8>) -> Option<Self> {
        let parsed = {
            let (rest, cert) = X509Certificate::from_der(&der).ok()?;
            if !rest.is_empty() {
                return None;
            }
            let mut subject_key_id = None;
            let mut authority_key_id = None;
            for extension in cert.extensions() {
                match extension.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => {
                        subject_key_id = Some(id.0.to_vec())
                    }
                    ParsedExtension::AuthorityKeyIdentifier(aki) => {
                        authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                    }
                    _ => {}
                }
            }
            let signature_oid = cert.signature_algorithm.algorithm.to_id_string();
            let unsupported_signature = (signature_oid == oid::SM2_WITH_SM3)
                .then(|| "an SM2-with-SM3 (ShangMi) certificate signature".to_owned());
            ParsedFields {
                subject: cert.subject().as_raw().to_vec(),
                issuer: cert.issuer().as_raw().to_vec(),
                subject_key_id,
                authority_key_id,
                is_ca: cert.is_ca(),
                public_key: public_key_id(&cert),
                unsupported_signature,
                display_name: display_name(&cert),
            }
        };
        Some(Self {
            der,
            subject: parsed.subject,
            issuer: parsed.issuer,
            subject_key_id: parsed.subject_key_id,
            authority_key_id: parsed.authority_key_id,
            is_ca: parsed.is_ca,
            public_key: parsed.public_key,
            unsupported_signature: parsed.unsupported_signature,
            display_name: parsed.display_name,
        })
    }

    /// Self-issued (subject = issuer): a root when it is a CA.
    pub(crate) fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    /// Whether `self` could have issued `child`: names chain, and key identifiers agree when both are present.
    fn could_issue(&self, child: &ParsedCert) -> bool {
        if self.subject != child.issuer {
            return false;
        }
        match (&self.subject_key_id, &child.authority_key_id) {
            (Some(subject_key_id), Some(authority_key_id)) => subject_key_id == authority_key_id,
            _ => true,
        }
    }
}

/// Fields borrowed out of the parsed certificate before `der` moves into [`ParsedCert`].
struct ParsedFields {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    is_ca: bool,
    public_key: Result<PublicKeyId, String>,
    unsupported_signature: Option<String>,
    display_name: String,
}

/// The chain above `leaf`: intermediates in issuer order (issuer of the leaf first) and the self-issued root
/// that ends it, if the ZIP has one. Certificates that do not chain to the leaf are left out.
pub(crate) fn build_chain(leaf: usize, certs: &[ParsedCert]) -> (Vec<usize>, Option<usize>) {
    let mut intermediates = Vec::new();
    let mut used = vec![false; certs.len()];
    let mut current = leaf;
    if let Some(flag) = used.get_mut(leaf) {
        *flag = true;
    }
    while let Some(child) = certs.get(current) {
        if child.is_self_issued() {
            break;
        }
        // Appearance order breaks ties, so the same ZIP always gives the same chain.
        let issuer = certs.iter().enumerate().find(|(index, candidate)| {
            !used.get(*index).copied().unwrap_or(true) && candidate.could_issue(child)
        });
        let Some((index, issuer)) = issuer else { break };
        if issuer.is_self_issued() {
            return (intermediates, Some(index));
        }
        if let Some(flag) = used.get_mut(index) {
            *flag = true;
        }
        intermediates.push(index);
        current = index;
    }
    (intermediates, None)
}

/// The leaf's metadata. `None` when its validity dates are outside what a timestamp can hold.
pub(crate) fn metadata(leaf_der: &[u8], key_algorithm: KeyAlgorithm) -> Option<CertMetadata> {
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let validity = cert.validity();
    let not_before = jiff::Timestamp::from_second(validity.not_before.timestamp()).ok()?;
    let not_after = jiff::Timestamp::from_second(validity.not_after.timestamp()).ok()?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertMetadata {
        not_before,
        not_after,
        serial_hex: serial_hex(cert.raw_serial()),
        fingerprint_sha256: hex::encode(Sha256::digest(leaf_der)),
        subject_cn: first_common_name(cert.subject()),
        dns_names,
        ip_addresses,
        issuer_cn: first_common_name(cert.issuer()),
        key_algorithm,
    })
}

fn public_key_id(cert: &X509Certificate<'_>) -> Result<PublicKeyId, String> {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        oid::RSA_ENCRYPTION => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Ok(PublicKeyId::rsa(rsa.modulus, rsa.exponent)),
            _ => Err("a malformed RSA public key".to_owned()),
        },
        oid::EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|parameters| Oid::try_from(parameters).ok())
                .map(|curve| curve.to_id_string())
                .unwrap_or_default();
            PublicKeyId::ec(&curve, &spki.subject_public_key.data)
                .ok_or_else(|| format!("an EC public key on {}", oid::describe_curve(&curve)))
        }
        other => Err(format!(
            "a {} public key",
            oid::describe_key_algorithm(other)
        )),
    }
}

fn display_name(cert: &X509Certificate<'_>) -> String {
    let dns_name = || {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
            })
    };
    let name = first_common_name(cert.subject())
        .or_else(dns_name)
        .unwrap_or_else(|| format!("with serial {}", serial_hex(cert.raw_serial())));
    // Names come from the ZIP: keep messages short and printable.
    name.chars()
        .filter(|character| !character.is_control())
        .take(128)
        .collect()
}

fn first_common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|attribute| attribute.as_str().ok())
        .map(str::to_owned)
}

/// Lowercase hex of the serial's magnitude (no DER sign-padding zero byte).
fn serial_hex(raw_serial: &[u8]) -> String {
    let first_non_zero = raw_serial.iter().position(|&byte| byte != 0);
    match first_non_zero.and_then(|index| raw_serial.get(index..)) {
        Some(digits) => hex::encode(digits),
        None => "00".to_owned(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|octets| IpAddr::V6(Ipv6Addr::from(octets)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x4a]), "4a");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn ip_addresses_from_san_bytes() {
        assert_eq!(
            ip_from_bytes(&[192, 0, 2, 1]),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            ip_from_bytes(&[0; 16]),
            Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(ParsedCert::parse(vec![0x30, 0x03, 0x02, 0x01, 0x01]).is_none());
        assert!(ParsedCert::parse(Vec::new()).is_none());
    }
}
