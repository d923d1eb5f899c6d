//! Certificate bundle extraction from the ZIP that Tencent Cloud's `DownloadCertificate` returns
//! (design.md §7).
//!
//! Content-based, not name-based: ZIP layouts differ by era and wildcard file names are unknown, so every
//! PEM block of every entry is read, and the leaf is the certificate whose public key matches the private
//! key. [`extract`] is pure: no I/O, no clock.

mod archive;
mod cert;
mod error;
mod key;
mod oid;
pub mod pem;
mod rsa_key;

use std::fmt;

pub use error::{BundleError, InvalidBundleDetail};

use cert::ParsedCert;
use key::{KeyBlock, PrivateKey};

/// Hard limits applied while reading a ZIP. The defaults leave a wide margin over real Tencent ZIPs (about a
/// dozen entries of a few KiB each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest accepted ZIP, in bytes.
    pub max_archive_bytes: usize,
    /// Most entries (files and directories) in the ZIP.
    pub max_entries: usize,
    /// Largest uncompressed entry, in bytes (actual bytes read, not the declared size).
    pub max_entry_bytes: u64,
    /// Largest sum of uncompressed entries read, in bytes.
    pub max_total_bytes: u64,
    /// Highest ratio of uncompressed to compressed size for one entry.
    pub max_compression_ratio: u64,
    /// Most PEM blocks across all entries.
    pub max_pem_blocks: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 16 * 1024 * 1024,
            max_entries: 256,
            max_entry_bytes: 1024 * 1024,
            max_total_bytes: 8 * 1024 * 1024,
            max_compression_ratio: 100,
            max_pem_blocks: 512,
        }
    }
}

/// The leaf's public key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
            Self::EcdsaP256 => f.write_str("ECDSA-P256"),
            Self::EcdsaP384 => f.write_str("ECDSA-P384"),
        }
    }
}

/// What the leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMetadata {
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    /// Lowercase hex of the serial number, without DER sign padding.
    pub serial_hex: String,
    /// Lowercase hex SHA-256 of the leaf's DER.
    pub fingerprint_sha256: String,
    pub subject_cn: Option<String>,
    /// DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
    /// IP SANs, in certificate order.
    pub ip_addresses: Vec<String>,
    pub issuer_cn: Option<String>,
    pub key_algorithm: KeyAlgorithm,
}

impl CertMetadata {
    /// Whether the leaf is past its notAfter at `now` (notAfter itself is still valid, RFC 5280 §4.1.2.5).
    pub fn is_expired_at(&self, now: jiff::Timestamp) -> bool {
        now > self.not_after
    }
}

/// A certificate chain with its private key, ready for a `kubernetes.io/tls` Secret. The same ZIP always
/// gives byte-identical PEM: everything is re-encoded from DER (64-column base64, LF).
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// Leaf, then intermediates in issuer order; PEM, LF, single trailing newline. Never the root.
    pub chain_pem: String,
    /// The private key as PKCS#8 PEM (`PRIVATE KEY`), whatever its encoding in the ZIP.
    pub key_pem: String,
    /// The self-signed root ending the chain, when the ZIP has it.
    pub ca_pem: Option<String>,
    pub meta: CertMetadata,
}

// Never print the private key.
impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .field("meta", &self.meta)
            .finish()
    }
}

/// Extracts the certificate bundle from a `DownloadCertificate` ZIP with the default [`ExtractLimits`].
pub fn extract(zip_bytes: &[u8]) -> Result<CertBundle, BundleError> {
    extract_with_limits(zip_bytes, &ExtractLimits::default())
}

/// [`extract`] with explicit limits.
pub fn extract_with_limits(
    zip_bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<CertBundle, BundleError> {
    let entries = archive::read_entries(zip_bytes, limits)?;
    let found = Found::collect(&entries, limits)?;
    found.into_bundle()
}

/// Reads a bundle back from PEM files already unpacked, such as an existing Secret's `tls.crt`, `tls.key`
/// and `ca.crt`: the same content-based selection and normalisation as [`extract`], so a Secret the
/// operator wrote reads back as the identical bundle.
pub fn from_pem_entries(entries: &[(&str, &[u8])]) -> Result<CertBundle, BundleError> {
    let limits = ExtractLimits::default();
    let entries: Vec<archive::Entry> = entries
        .iter()
        .map(|(name, contents)| archive::Entry {
            name: (*name).to_owned(),
            contents: contents.to_vec(),
        })
        .collect();
    Found::collect(&entries, &limits)?.into_bundle()
}

/// The metadata of the first certificate in `chain_pem` (the leaf, in a `tls.crt` the operator wrote), without
/// looking for its private key: what `status` shows of a Secret whose key is missing or does not match.
/// `None` when there is no parsable certificate or its key type is one TLS serving cannot use.
pub fn leaf_metadata(chain_pem: &[u8]) -> Option<CertMetadata> {
    let blocks = pem::parse_blocks(chain_pem, ExtractLimits::default().max_pem_blocks).ok()?;
    let leaf = blocks.into_iter().find(|b| b.label == "CERTIFICATE")?;
    let parsed = ParsedCert::parse(leaf.der)?;
    let algorithm = parsed.public_key.as_ref().ok()?.algorithm();
    cert::metadata(&parsed.der, algorithm)
}

/// A private key and the entry it was first found in (for messages).
struct SourcedKey {
    entry: String,
    key: PrivateKey,
}

/// Everything the PEM blocks of a ZIP yielded.
#[derive(Default)]
struct Found {
    /// Distinct certificates, in order of first appearance.
    certs: Vec<ParsedCert>,
    /// Distinct usable private keys, in order of first appearance.
    keys: Vec<SourcedKey>,
    /// Entries holding an encrypted private key.
    encrypted_key_entries: Vec<String>,
    /// Descriptions of private keys the operator cannot serve.
    unsupported_keys: Vec<String>,
}

impl Found {
    fn collect(entries: &[archive::Entry], limits: &ExtractLimits) -> Result<Self, BundleError> {
        let mut found = Found::default();
        let mut blocks_left = limits.max_pem_blocks;
        let mut raw_keys = Vec::new();
        for entry in entries {
            let blocks = pem::parse_blocks(&entry.contents, blocks_left).map_err(|error| {
                InvalidBundleDetail::MalformedPem {
                    entry: entry.name.clone(),
                    error,
                }
            })?;
            blocks_left = blocks_left.saturating_sub(blocks.len());
            for block in blocks {
                if block.label == "CERTIFICATE" || block.label == "X509 CERTIFICATE" {
                    if found.certs.iter().any(|cert| cert.der == block.der) {
                        continue;
                    }
                    let cert = ParsedCert::parse(block.der).ok_or_else(|| {
                        InvalidBundleDetail::MalformedCertificate {
                            entry: entry.name.clone(),
                        }
                    })?;
                    found.certs.push(cert);
                } else if key::is_private_key_label(&block.label) {
                    match key::parse_key_block(&block) {
                        Ok(KeyBlock::Usable(key)) => raw_keys.push(SourcedKey {
                            entry: entry.name.clone(),
                            key,
                        }),
                        Ok(KeyBlock::Encrypted) => {
                            found.encrypted_key_entries.push(entry.name.clone())
                        }
                        Ok(KeyBlock::Unsupported(what)) => found.unsupported_keys.push(what),
                        Err(key::MalformedKey(reason)) => {
                            return Err(InvalidBundleDetail::MalformedKey {
                                entry: entry.name.clone(),
                                reason,
                            }
                            .into());
                        }
                    }
                }
                // Anything else (CSRs, EC PARAMETERS, public keys, CRLs) is not needed.
            }
        }
        // Keys stored without their public key learn it from the certificate they belong to.
        let cert_public_keys: Vec<&key::PublicKeyId> = found
            .certs
            .iter()
            .filter_map(|cert| cert.public_key.as_ref().ok())
            .collect();
        for mut sourced in raw_keys {
            sourced.key.resolve_public(cert_public_keys.iter().copied());
            if !found
                .keys
                .iter()
                .any(|known| known.key.same_key(&sourced.key))
            {
                found.keys.push(sourced);
            }
        }
        Ok(found)
    }

    fn into_bundle(self) -> Result<CertBundle, BundleError> {
        if self.certs.is_empty() {
            return Err(InvalidBundleDetail::NoCertificate.into());
        }
        let matching_keys: Vec<(&SourcedKey, &key::PublicKeyId)> = self
            .keys
            .iter()
            .filter_map(|sourced| sourced.key.public().map(|public| (sourced, public)))
            .filter(|(_, public)| {
                self.certs
                    .iter()
                    .any(|cert| cert.public_key.as_ref() == Ok(*public))
            })
            .collect();
        let (sourced, public) = match matching_keys.as_slice() {
            [pair] => *pair,
            [] => return Err(self.no_matching_key()),
            several => {
                return Err(InvalidBundleDetail::SeveralKeyPairs {
                    count: several.len(),
                }
                .into());
            }
        };
        let (leaf_index, leaf) = self.leaf_for(public)?;
        let (intermediates, root) = cert::build_chain(leaf_index, &self.certs);

        let mut chain_pem = String::new();
        for cert in std::iter::once(leaf).chain(
            intermediates
                .iter()
                .filter_map(|&index| self.certs.get(index)),
        ) {
            if let Some(what) = &cert.unsupported_signature {
                return Err(BundleError::UnsupportedAlgorithm { what: what.clone() });
            }
            chain_pem.push_str(&pem::encode("CERTIFICATE", &cert.der));
        }
        let ca_pem = root
            .and_then(|index| self.certs.get(index))
            .map(|root| pem::encode("CERTIFICATE", &root.der));

        let meta = cert::metadata(&leaf.der, public.algorithm()).ok_or_else(|| {
            InvalidBundleDetail::InvalidValidity {
                certificate: leaf.display_name.clone(),
            }
        })?;
        let key_der = sourced
            .key
            .to_pkcs8_der()
            .map_err(
                |key::MalformedKey(reason)| InvalidBundleDetail::MalformedKey {
                    entry: sourced.entry.clone(),
                    reason,
                },
            )?;
        Ok(CertBundle {
            chain_pem,
            key_pem: pem::encode("PRIVATE KEY", &key_der),
            ca_pem,
            meta,
        })
    }

    /// The one certificate carrying `public`; a non-CA one wins over a CA one.
    fn leaf_for(&self, public: &key::PublicKeyId) -> Result<(usize, &ParsedCert), BundleError> {
        let holders: Vec<(usize, &ParsedCert)> = self
            .certs
            .iter()
            .enumerate()
            .filter(|(_, cert)| cert.public_key.as_ref() == Ok(public))
            .collect();
        let non_ca: Vec<(usize, &ParsedCert)> = holders
            .iter()
            .copied()
            .filter(|(_, cert)| !cert.is_ca)
            .collect();
        let candidates = if non_ca.is_empty() { holders } else { non_ca };
        match candidates.as_slice() {
            [holder] => Ok(*holder),
            other => Err(InvalidBundleDetail::SeveralLeaves { count: other.len() }.into()),
        }
    }

    /// The most useful error when no private key matches a certificate.
    fn no_matching_key(&self) -> BundleError {
        if let Some(entry) = self.encrypted_key_entries.first() {
            return BundleError::EncryptedKey {
                entry: entry.clone(),
            };
        }
        let unsupported_leaf = self
            .certs
            .iter()
            .filter(|cert| !cert.is_ca)
            .find_map(|cert| {
                cert.public_key
                    .as_ref()
                    .err()
                    .or(cert.unsupported_signature.as_ref())
            });
        if let Some(what) = self.unsupported_keys.first().or(unsupported_leaf) {
            return BundleError::UnsupportedAlgorithm { what: what.clone() };
        }
        let likely_leaf = self
            .certs
            .iter()
            .find(|cert| !cert.is_ca)
            .or(self.certs.first());
        let certificate = likely_leaf
            .map(|cert| cert.display_name.clone())
            .unwrap_or_default();
        if self.keys.is_empty() {
            BundleError::KeyMissing { certificate }
        } else {
            BundleError::KeyMismatch {
                certificate,
                keys: self.keys.len(),
            }
        }
    }
}
