//! Object identifiers the extractor recognises, as dotted strings (x509-parser and the RustCrypto crates use
//! different OID types; their dotted forms compare equal).

pub(crate) const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
pub(crate) const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
pub(crate) const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub(crate) const SECP256R1: &str = "1.2.840.10045.3.1.7";
pub(crate) const SECP384R1: &str = "1.3.132.0.34";
pub(crate) const SECP521R1: &str = "1.3.132.0.35";
/// SM2 (Chinese ShangMi / 国密), used both as a curve and as a key algorithm.
pub(crate) const SM2: &str = "1.2.156.10197.1.301";
/// SM2 signature with SM3 hash.
pub(crate) const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";
pub(crate) const ED25519: &str = "1.3.101.112";
pub(crate) const ED448: &str = "1.3.101.113";
pub(crate) const DSA: &str = "1.2.840.10040.4.1";

/// A readable name for a key algorithm OID that is not RSA or EC.
pub(crate) fn describe_key_algorithm(oid: &str) -> String {
    match oid {
        SM2 => "SM2 (ShangMi, OID 1.2.156.10197.1.301)".to_owned(),
        ED25519 => "Ed25519".to_owned(),
        ED448 => "Ed448".to_owned(),
        DSA => "DSA".to_owned(),
        RSASSA_PSS => "RSASSA-PSS-only".to_owned(),
        other => format!("key algorithm {other}"),
    }
}

/// A readable name for an EC curve OID.
pub(crate) fn describe_curve(oid: &str) -> String {
    match oid {
        SM2 => "the SM2 curve (ShangMi, OID 1.2.156.10197.1.301)".to_owned(),
        SECP521R1 => "curve P-521".to_owned(),
        other => format!("curve {other}"),
    }
}
