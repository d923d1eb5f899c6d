//! A throw-away PKI for the simulator and the tests: a self-signed root CA, an intermediate CA, and leaf
//! certificates issued by the intermediate with RSA or ECDSA keys.
//!
//! Keys are generated fresh in memory and never written anywhere; nothing here is meant to be trusted.
//! rcgen/ring cannot generate RSA keys, so RSA keys come from the `rsa` crate and are handed to rcgen as
//! PKCS#8.

use std::fmt;
use std::net::IpAddr;

use pkcs8::der::{Decode as _, Encode as _};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::rand_core::{OsRng, RngCore as _};

use tencent_ssl::bundle::pem;

/// Validity of the generated CAs around "now".
const CA_VALIDITY_DAYS: i64 = 3650;
/// Length of generated serial numbers, in bytes (RFC 5280 allows up to 20).
const SERIAL_LEN: usize = 16;

/// The key type of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa2048,
    Rsa4096,
    EcdsaP256,
    EcdsaP384,
}

impl KeyKind {
    /// Every supported kind, for table-driven tests.
    pub const ALL: [KeyKind; 4] = [
        Self::Rsa2048,
        Self::Rsa4096,
        Self::EcdsaP256,
        Self::EcdsaP384,
    ];

    /// Whether this is an RSA key.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa4096)
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::Rsa2048 | Self::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// How a private key PEM is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEncoding {
    /// `PRIVATE KEY` (RFC 5208), any key type.
    Pkcs8,
    /// `RSA PRIVATE KEY` (RFC 8017), RSA only.
    Pkcs1,
    /// `EC PRIVATE KEY` (RFC 5915, with the curve parameters), ECDSA only.
    Sec1,
}

/// Why the test PKI could not produce something. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("RSA key generation failed: {0}")]
    RsaKeyGeneration(String),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("a leaf certificate needs at least one domain")]
    NoDomain,
    #[error("{name:?} is not a valid DNS name for a certificate")]
    InvalidDnsName { name: String },
    #[error("validity timestamp {0} is out of range")]
    TimestampOutOfRange(jiff::Timestamp),
    #[error("{kind:?} keys cannot be encoded as {encoding:?}")]
    UnsupportedEncoding {
        kind: KeyKind,
        encoding: KeyEncoding,
    },
    #[error("private key re-encoding failed: {0}")]
    KeyEncoding(String),
}

/// A certificate with its private key, as PEM and DER.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM (`CERTIFICATE`), LF line endings.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 PEM (`PRIVATE KEY`).
    pub key_pem: String,
    /// The key type.
    pub key_kind: KeyKind,
    /// The serial number as encoded in the certificate (positive, no leading zero byte).
    pub serial: Vec<u8>,
    /// A CSR for the same subject and key (`CERTIFICATE REQUEST` PEM); `Some` for leaves only, as Tencent ZIPs
    /// carry the CSR of Tencent-generated keys.
    pub csr_pem: Option<String>,
    key_pkcs8_der: Vec<u8>,
}

impl IssuedCert {
    /// The serial number as lowercase hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// The private key as PEM in the requested encoding (PKCS#1 for RSA keys, SEC1 for ECDSA keys).
    pub fn key_pem_as(&self, encoding: KeyEncoding) -> Result<String, PkiError> {
        let unsupported = PkiError::UnsupportedEncoding {
            kind: self.key_kind,
            encoding,
        };
        match encoding {
            KeyEncoding::Pkcs8 => Ok(self.key_pem.clone()),
            KeyEncoding::Pkcs1 if self.key_kind.is_rsa() => {
                let info = self.private_key_info()?;
                Ok(pem::encode("RSA PRIVATE KEY", info.private_key))
            }
            KeyEncoding::Sec1 if !self.key_kind.is_rsa() => {
                let info = self.private_key_info()?;
                let curve = info.algorithm.parameters_oid().map_err(encoding_error)?;
                let mut ec_key =
                    sec1::EcPrivateKey::from_der(info.private_key).map_err(encoding_error)?;
                // OpenSSL's `EC PRIVATE KEY` files name the curve; PKCS#8's inner key usually does not.
                ec_key.parameters = Some(sec1::EcParameters::NamedCurve(curve));
                let der = ec_key.to_der().map_err(encoding_error)?;
                Ok(pem::encode("EC PRIVATE KEY", &der))
            }
            KeyEncoding::Pkcs1 | KeyEncoding::Sec1 => Err(unsupported),
        }
    }

    fn private_key_info(&self) -> Result<pkcs8::PrivateKeyInfo<'_>, PkiError> {
        pkcs8::PrivateKeyInfo::from_der(&self.key_pkcs8_der).map_err(encoding_error)
    }
}

// Never print the private key.
impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key_kind", &self.key_kind)
            .field("serial", &self.serial_hex())
            .field("cert_der_len", &self.cert_der.len())
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What leaf certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// DNS names; the first is also the subject CN. Wildcards such as `*.example.test` are allowed.
    pub domains: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// The leaf key type.
    pub key: KeyKind,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
}

impl LeafSpec {
    /// A leaf for `domains` valid from an hour ago for 90 days (Tencent's free certificates are 3-month).
    pub fn valid_now(domains: &[&str], key: KeyKind) -> Self {
        let now = jiff::Timestamp::now();
        Self {
            domains: domains.iter().map(|domain| (*domain).to_owned()).collect(),
            ip_addresses: Vec::new(),
            key,
            not_before: now
                .saturating_sub(jiff::SignedDuration::from_hours(1))
                .unwrap_or(now),
            not_after: now
                .saturating_add(jiff::SignedDuration::from_hours(90 * 24))
                .unwrap_or(now),
        }
    }
}

/// A root CA and an intermediate CA that issues leaves.
pub struct Pki {
    /// The self-signed root CA.
    pub root: IssuedCert,
    /// The intermediate CA, signed by the root; it signs the leaves.
    pub intermediate: IssuedCert,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("root", &self.root)
            .field("intermediate", &self.intermediate)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates a root and an intermediate CA, both with keys of `kind`.
    pub fn generate(kind: KeyKind) -> Result<Self, PkiError> {
        let now = jiff::Timestamp::now();
        let not_before = now
            .saturating_sub(jiff::SignedDuration::from_hours(24))
            .unwrap_or(now);
        let not_after = now
            .saturating_add(jiff::SignedDuration::from_hours(CA_VALIDITY_DAYS * 24))
            .unwrap_or(now);

        let (root_key, root_pkcs8) = generate_key(kind)?;
        let root_params = ca_params(
            "Tencent Cert Operator Test Root CA",
            None,
            not_before,
            not_after,
        )?;
        let root_serial = root_params
            .serial_number
            .as_ref()
            .map(|serial| serial.to_bytes())
            .unwrap_or_default();
        let root_cert = root_params.self_signed(&root_key)?;
        let root = issued(root_cert.der(), root_pkcs8, kind, root_serial, None);
        let root_issuer = Issuer::new(root_params, root_key);

        let (intermediate_key, intermediate_pkcs8) = generate_key(kind)?;
        let intermediate_params = ca_params(
            "Tencent Cert Operator Test Intermediate CA",
            Some(1),
            not_before,
            not_after,
        )?;
        let intermediate_serial = intermediate_params
            .serial_number
            .as_ref()
            .map(|serial| serial.to_bytes())
            .unwrap_or_default();
        let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root_issuer)?;
        let intermediate = issued(
            intermediate_cert.der(),
            intermediate_pkcs8,
            kind,
            intermediate_serial,
            None,
        );

        Ok(Self {
            root,
            intermediate,
            issuer: Issuer::new(intermediate_params, intermediate_key),
        })
    }

    /// A PKI one level deeper: a new CA signed by this intermediate becomes the intermediate that issues
    /// leaves, so chains read leaf → new CA → `self.intermediate` → root. For chain-ordering tests.
    pub fn subordinate(&self, common_name: &str) -> Result<Self, PkiError> {
        let kind = self.intermediate.key_kind;
        let now = jiff::Timestamp::now();
        let not_before = now
            .saturating_sub(jiff::SignedDuration::from_hours(24))
            .unwrap_or(now);
        let not_after = now
            .saturating_add(jiff::SignedDuration::from_hours(CA_VALIDITY_DAYS * 24))
            .unwrap_or(now);
        let (key, pkcs8_der) = generate_key(kind)?;
        let params = ca_params(common_name, Some(0), not_before, not_after)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|serial| serial.to_bytes())
            .unwrap_or_default();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Self {
            root: self.root.clone(),
            intermediate: issued(cert.der(), pkcs8_der, kind, serial, None),
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a leaf (server) certificate signed by the intermediate, with a fresh key and a CSR.
    pub fn issue_leaf(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        let mut params = leaf_params(spec)?;
        let (key, pkcs8_der) = generate_key(spec.key)?;
        // rcgen refuses a serial and an AKI in a CSR: serialize it before setting them.
        let csr_pem = params.serialize_request(&key)?.pem()?;
        let serial = set_leaf_validity_and_serial(&mut params, spec)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(issued(
            cert.der(),
            pkcs8_der,
            spec.key,
            serial,
            Some(csr_pem),
        ))
    }

    /// Issues a leaf certificate for an [`RsaTestKey`] (RSA key usages whatever `spec.key` says); returns its
    /// PEM. For tests of RSA keys that [`KeyKind`] does not offer.
    pub fn issue_leaf_for_rsa_key(
        &self,
        spec: &LeafSpec,
        key: &RsaTestKey,
    ) -> Result<String, PkiError> {
        let rsa_spec = LeafSpec {
            key: KeyKind::Rsa2048,
            ..spec.clone()
        };
        let mut params = leaf_params(&rsa_spec)?;
        set_leaf_validity_and_serial(&mut params, &rsa_spec)?;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(pem::encode("CERTIFICATE", cert.der()))
    }
}

/// An RSA key of any size and public exponent, beyond the sizes [`KeyKind`] offers: for tests of the
/// operator's RSA key checks (size limits, small exponents). Generating a 4096-bit or larger one takes seconds.
pub struct RsaTestKey {
    /// The private key, DER `RSAPrivateKey` (PKCS#1).
    pub pkcs1_der: Vec<u8>,
    /// The public key, DER `RSAPublicKey` (PKCS#1), as a certificate carries it.
    public_pkcs1_der: Vec<u8>,
}

impl RsaTestKey {
    /// A fresh two-prime key with a `bits`-bit modulus and public exponent `exponent`.
    pub fn generate(bits: usize, exponent: u64) -> Result<Self, PkiError> {
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        let key = rsa::RsaPrivateKey::new_with_exp(&mut OsRng, bits, &rsa::BigUint::from(exponent))
            .map_err(|error| PkiError::RsaKeyGeneration(error.to_string()))?;
        let pkcs1_der = key
            .to_pkcs1_der()
            .map_err(encoding_error)?
            .as_bytes()
            .to_vec();
        let public_pkcs1_der = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(encoding_error)?
            .into_vec();
        Ok(Self {
            pkcs1_der,
            public_pkcs1_der,
        })
    }
}

impl rcgen::PublicKeyData for RsaTestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_pkcs1_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

// Never print the private key.
impl fmt::Debug for RsaTestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaTestKey")
            .field("pkcs1_der_len", &self.pkcs1_der.len())
            .finish_non_exhaustive()
    }
}

/// A leaf's subject, SANs and usages, without validity or serial (a CSR must carry neither).
fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, PkiError> {
    let common_name = spec.domains.first().ok_or(PkiError::NoDomain)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.as_str());
    params.subject_alt_names = spec
        .domains
        .iter()
        .map(|domain| {
            domain
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidDnsName {
                    name: domain.clone(),
                })
        })
        .chain(
            spec.ip_addresses
                .iter()
                .map(|ip| Ok(SanType::IpAddress(*ip))),
        )
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = if spec.key.is_rsa() {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// Sets the validity, a random serial and the AKI; returns the serial.
fn set_leaf_validity_and_serial(
    params: &mut CertificateParams,
    spec: &LeafSpec,
) -> Result<Vec<u8>, PkiError> {
    set_validity(params, spec.not_before, spec.not_after)?;
    let serial = random_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok(serial)
}

fn ca_params(
    common_name: &str,
    path_len: Option<u8>,
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "tencent-cert-operator tests");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(len) => BasicConstraints::Constrained(len),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, not_before, not_after)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.use_authority_key_identifier_extension = path_len.is_some();
    Ok(params)
}

fn issued(
    cert_der: &[u8],
    key_pkcs8_der: Vec<u8>,
    key_kind: KeyKind,
    serial: Vec<u8>,
    csr_pem: Option<String>,
) -> IssuedCert {
    IssuedCert {
        cert_pem: pem::encode("CERTIFICATE", cert_der),
        cert_der: cert_der.to_vec(),
        key_pem: pem::encode("PRIVATE KEY", &key_pkcs8_der),
        key_kind,
        serial,
        csr_pem,
        key_pkcs8_der,
    }
}

/// A fresh key pair usable by rcgen, plus its PKCS#8 DER.
fn generate_key(kind: KeyKind) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let bits = match kind {
        KeyKind::Rsa2048 => 2048,
        KeyKind::Rsa4096 => 4096,
        KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => {
            let key = KeyPair::generate_for(kind.signature_algorithm())?;
            let der = key.serialize_der();
            return Ok((key, der));
        }
    };
    let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, bits)
        .map_err(|error| PkiError::RsaKeyGeneration(error.to_string()))?;
    let der = rsa_key
        .to_pkcs8_der()
        .map_err(encoding_error)?
        .as_bytes()
        .to_vec();
    let key = KeyPair::try_from(der.as_slice())?;
    Ok((key, der))
}

/// A random positive serial with no leading zero byte, so its DER INTEGER holds exactly these bytes.
fn random_serial() -> Vec<u8> {
    let mut serial = vec![0u8; SERIAL_LEN];
    OsRng.fill_bytes(&mut serial);
    if let Some(first) = serial.first_mut() {
        *first = 0x40 | (*first & 0x3f);
    }
    serial
}

/// rcgen takes the `time` crate's timestamps (compiled in for rcgen and x509-parser anyway): the epoch plus
/// the seconds, so that the operator's own code names one time crate, jiff (kube's).
fn set_validity(
    params: &mut CertificateParams,
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> Result<(), PkiError> {
    let since_epoch = |t: jiff::Timestamp| {
        u64::try_from(t.as_second())
            .map(std::time::Duration::from_secs)
            .map_err(|_| PkiError::TimestampOutOfRange(t))
    };
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before)?;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after)?;
    Ok(())
}

fn encoding_error(error: impl fmt::Display) -> PkiError {
    PkiError::KeyEncoding(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaf_with_csr_and_all_key_encodings() {
        let pki = Pki::generate(KeyKind::EcdsaP256).expect("pki");
        assert!(
            pki.root
                .cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        assert!(pki.root.csr_pem.is_none());
        for kind in [KeyKind::EcdsaP384, KeyKind::Rsa2048] {
            let leaf = pki
                .issue_leaf(&LeafSpec::valid_now(
                    &["a.example.test", "*.example.test"],
                    kind,
                ))
                .expect("leaf");
            assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(
                leaf.csr_pem
                    .as_deref()
                    .is_some_and(|csr| csr.contains("BEGIN CERTIFICATE REQUEST"))
            );
            assert_eq!(leaf.serial.len(), SERIAL_LEN);
            let (native, native_label, foreign) = if kind.is_rsa() {
                (KeyEncoding::Pkcs1, "RSA PRIVATE KEY", KeyEncoding::Sec1)
            } else {
                (KeyEncoding::Sec1, "EC PRIVATE KEY", KeyEncoding::Pkcs1)
            };
            let native_pem = leaf.key_pem_as(native).expect("native encoding");
            assert!(native_pem.starts_with(&format!("-----BEGIN {native_label}-----\n")));
            assert!(matches!(
                leaf.key_pem_as(foreign),
                Err(PkiError::UnsupportedEncoding { .. })
            ));
            // The re-encoded key is the same key.
            let native_der = tencent_ssl::bundle::pem::parse_blocks(native_pem.as_bytes(), 1)
                .expect("pem")
                .remove(0)
                .der;
            let info = pkcs8::PrivateKeyInfo::from_der(&leaf.key_pkcs8_der).expect("pkcs8");
            if kind.is_rsa() {
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                use rsa::pkcs8::DecodePrivateKey as _;
                let from_pkcs1 = rsa::RsaPrivateKey::from_pkcs1_der(&native_der).expect("pkcs1");
                let from_pkcs8 =
                    rsa::RsaPrivateKey::from_pkcs8_der(&leaf.key_pkcs8_der).expect("pkcs8");
                assert_eq!(from_pkcs1, from_pkcs8);
            } else {
                let sec1_key = sec1::EcPrivateKey::from_der(&native_der).expect("sec1");
                let inner = sec1::EcPrivateKey::from_der(info.private_key).expect("inner");
                assert_eq!(sec1_key.private_key, inner.private_key);
                assert_eq!(sec1_key.public_key, inner.public_key);
                let curve = info.algorithm.parameters_oid().expect("curve");
                assert_eq!(
                    sec1_key.parameters,
                    Some(sec1::EcParameters::NamedCurve(curve))
                );
            }
        }
    }

    #[test]
    fn debug_output_redacts_private_keys() {
        let pki = Pki::generate(KeyKind::EcdsaP256).expect("pki");
        let leaf = pki
            .issue_leaf(&LeafSpec::valid_now(
                &["x.example.test"],
                KeyKind::EcdsaP256,
            ))
            .expect("leaf");
        for text in [format!("{leaf:?}"), format!("{pki:?}")] {
            assert!(!text.contains("PRIVATE KEY"));
            assert!(text.contains("<redacted>"));
        }
        let key_body: String = leaf.key_pem.lines().nth(1).unwrap_or_default().to_owned();
        assert!(!format!("{leaf:?}").contains(&key_body));
    }

    #[test]
    fn rejects_leaf_without_domain() {
        let pki = Pki::generate(KeyKind::EcdsaP256).expect("pki");
        let spec = LeafSpec::valid_now(&[], KeyKind::EcdsaP256);
        assert!(matches!(pki.issue_leaf(&spec), Err(PkiError::NoDomain)));
    }

    #[test]
    fn pki_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Pki>();
        assert_send_sync::<IssuedCert>();
    }
}
