//! Extraction errors. Each maps to one condition reason (design.md §5) and says what to do. None of them
//! carries key material or archive bytes: only entry names, labels, counts and certificate names.

use super::pem::PemError;

/// Why a ZIP did not yield a usable certificate bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The archive or its contents are unusable (see the detail).
    #[error(
        "the certificate ZIP from Tencent Cloud is not usable: {0}; download it again, and check the certificate in the Tencent Cloud console"
    )]
    InvalidBundle(InvalidBundleDetail),
    /// Certificates but no private key: the certificate was requested with the user's own CSR.
    #[error(
        "certificate {certificate} has no private key in the ZIP: it was requested with your own CSR; create the Secret yourself or re-issue it in Tencent Cloud with a generated key"
    )]
    KeyMissing { certificate: String },
    /// Private keys, but none belongs to a certificate in the ZIP.
    #[error(
        "none of the {keys} private key(s) in the ZIP belongs to certificate {certificate}; re-issue the certificate in Tencent Cloud with a generated key"
    )]
    KeyMismatch { certificate: String, keys: usize },
    /// The only private key is encrypted.
    #[error(
        "the private key in ZIP entry {entry} is encrypted; the operator needs an unencrypted PEM key: re-issue the certificate in Tencent Cloud without a private-key password"
    )]
    EncryptedKey { entry: String },
    /// The key or certificate uses an algorithm ingress controllers cannot serve (SM2, Ed25519, DSA, …).
    #[error(
        "the ZIP holds {what}, which ingress controllers cannot serve; use an RSA or ECDSA (P-256/P-384) certificate"
    )]
    UnsupportedAlgorithm { what: String },
}

impl BundleError {
    /// The condition reason for this error (design.md §5).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidBundle(_) => "InvalidBundle",
            Self::KeyMissing { .. } => "KeyMissing",
            Self::KeyMismatch { .. } => "KeyMismatch",
            Self::EncryptedKey { .. } => "EncryptedKey",
            Self::UnsupportedAlgorithm { .. } => "UnsupportedAlgorithm",
        }
    }
}

impl From<InvalidBundleDetail> for BundleError {
    fn from(detail: InvalidBundleDetail) -> Self {
        Self::InvalidBundle(detail)
    }
}

/// What is wrong with an [`BundleError::InvalidBundle`] archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBundleDetail {
    #[error("it is {size} bytes, over the {max}-byte limit")]
    ArchiveTooLarge { size: usize, max: usize },
    #[error("it is not a ZIP archive, or a damaged one ({reason})")]
    NotZip { reason: String },
    #[error("the ZIP archive is empty")]
    Empty,
    #[error("it has {count} entries, over the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("entry {entry} is encrypted")]
    EncryptedEntry { entry: String },
    #[error("entry {entry} has an unsafe name (absolute, or with ..)")]
    UnsafeEntryName { entry: String },
    #[error("entry {entry} is larger than {max} bytes uncompressed")]
    EntryTooLarge { entry: String, max: u64 },
    #[error("its entries are larger than {max} bytes uncompressed in total")]
    TotalTooLarge { max: u64 },
    #[error("entry {entry} expands more than {max_ratio} times (a ZIP bomb?)")]
    CompressionRatio { entry: String, max_ratio: u64 },
    #[error("entry {entry} cannot be read ({reason})")]
    DamagedEntry { entry: String, reason: String },
    #[error("entry {entry}: {error}")]
    MalformedPem { entry: String, error: PemError },
    #[error("entry {entry} holds a CERTIFICATE that is not valid X.509")]
    MalformedCertificate { entry: String },
    #[error("entry {entry} holds a private key that cannot be used: {reason}")]
    MalformedKey { entry: String, reason: &'static str },
    #[error("it holds no certificate")]
    NoCertificate,
    #[error("it holds {count} different certificate/key pairs, expected one")]
    SeveralKeyPairs { count: usize },
    #[error("{count} certificates share the private key, so the leaf is ambiguous")]
    SeveralLeaves { count: usize },
    #[error("the validity dates of certificate {certificate} are out of range")]
    InvalidValidity { certificate: String },
}
