//! Private keys: PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` and SEC1 `EC PRIVATE KEY`, RSA and ECDSA
//! P-256/P-384. A key is identified by its public key, so the same key in several files and encodings is one
//! key, and a key is matched to a certificate by comparing public keys.
//!
//! RSA keys are checked by arithmetic on their components (see [`super::rsa_key`]). ECDSA keys are checked by
//! ring, which derives the public key from the private scalar and compares it with the embedded one; a SEC1
//! key without an embedded public key is resolved later by trying the certificates' public keys the same way.

use pkcs8::der::asn1::{AnyRef, ObjectIdentifier};
use pkcs8::der::{Decode as _, Encode as _};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
};

use super::KeyAlgorithm;
use super::oid;
use super::pem::PemBlock;
use super::rsa_key::{self, RsaKey};

/// A NIST curve an ingress controller can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EcCurve {
    P256,
    P384,
}

impl EcCurve {
    fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            oid::SECP256R1 => Some(Self::P256),
            oid::SECP384R1 => Some(Self::P384),
            _ => None,
        }
    }

    fn oid(self) -> &'static str {
        match self {
            Self::P256 => oid::SECP256R1,
            Self::P384 => oid::SECP384R1,
        }
    }

    fn scalar_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    fn signing_algorithm(self) -> &'static ring::signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }
}

/// A public key, in a form that compares equal for the same key whichever file or encoding it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PublicKeyId {
    /// Big-endian modulus and exponent without leading zero bytes.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// SEC1 uncompressed point.
    Ec { curve: EcCurve, point: Vec<u8> },
}

impl PublicKeyId {
    pub(crate) fn rsa(modulus: &[u8], exponent: &[u8]) -> Self {
        Self::Rsa {
            modulus: strip_leading_zeros(modulus).to_vec(),
            exponent: strip_leading_zeros(exponent).to_vec(),
        }
    }

    /// The EC public key for a curve OID, or `None` when the curve is not P-256/P-384.
    pub(crate) fn ec(curve_oid: &str, point: &[u8]) -> Option<Self> {
        EcCurve::from_oid(curve_oid).map(|curve| Self::Ec {
            curve,
            point: point.to_vec(),
        })
    }

    pub(crate) fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Rsa { modulus, .. } => KeyAlgorithm::Rsa {
                bits: bit_length(modulus),
            },
            Self::Ec {
                curve: EcCurve::P256,
                ..
            } => KeyAlgorithm::EcdsaP256,
            Self::Ec {
                curve: EcCurve::P384,
                ..
            } => KeyAlgorithm::EcdsaP384,
        }
    }
}

/// What a private-key PEM block turned out to be.
pub(crate) enum KeyBlock {
    Usable(PrivateKey),
    /// `ENCRYPTED PRIVATE KEY`, or `Proc-Type: 4,ENCRYPTED`.
    Encrypted,
    /// A key the operator cannot serve; the string names the algorithm.
    Unsupported(String),
}

/// A private key that cannot be read; the reason never includes key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedKey(pub(crate) &'static str);

/// A parsed, validated private key. Its `Debug` never shows the key.
pub(crate) struct PrivateKey {
    material: KeyMaterial,
    /// `None` only for an EC key stored without its public key and not yet resolved.
    public: Option<PublicKeyId>,
}

enum KeyMaterial {
    /// The checked DER `RSAPrivateKey`, as it came (DER is canonical, so the same key gives the same bytes).
    Rsa {
        pkcs1_der: Vec<u8>,
    },
    Ec {
        curve: EcCurve,
        scalar: Vec<u8>,
    },
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field(
                "algorithm",
                &self.public.as_ref().map(PublicKeyId::algorithm),
            )
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    pub(crate) fn public(&self) -> Option<&PublicKeyId> {
        self.public.as_ref()
    }

    /// For an EC key stored without its public key: adopts the first candidate public key that ring confirms
    /// belongs to the private scalar.
    pub(crate) fn resolve_public<'a>(
        &mut self,
        candidates: impl IntoIterator<Item = &'a PublicKeyId>,
    ) {
        if self.public.is_some() {
            return;
        }
        let KeyMaterial::Ec { curve, scalar } = &self.material else {
            return;
        };
        let rng = SystemRandom::new();
        self.public = candidates
            .into_iter()
            .find_map(|candidate| match candidate {
                PublicKeyId::Ec {
                    curve: candidate_curve,
                    point,
                } if candidate_curve == curve => EcdsaKeyPair::from_private_key_and_public_key(
                    curve.signing_algorithm(),
                    scalar,
                    point,
                    &rng,
                )
                .ok()
                .map(|_| candidate.clone()),
                _ => None,
            });
    }

    /// Whether two keys are the same key, for de-duplication.
    pub(crate) fn same_key(&self, other: &Self) -> bool {
        match (&self.public, &other.public) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => match (&self.material, &other.material) {
                (
                    KeyMaterial::Ec { curve, scalar },
                    KeyMaterial::Ec {
                        curve: other_curve,
                        scalar: other_scalar,
                    },
                ) => curve == other_curve && scalar == other_scalar,
                _ => false,
            },
        }
    }

    /// The key as canonical PKCS#8 DER: the same key always gives the same bytes, whatever its source
    /// encoding. EC keys carry their public key and no duplicate curve parameters, as OpenSSL writes them.
    pub(crate) fn to_pkcs8_der(&self) -> Result<Vec<u8>, MalformedKey> {
        const ENCODE_FAILED: MalformedKey = MalformedKey("it could not be re-encoded as PKCS#8");
        match &self.material {
            KeyMaterial::Rsa { pkcs1_der } => {
                // RFC 8017 A.1: rsaEncryption with NULL parameters, as OpenSSL and the `rsa` crate write it.
                let algorithm_oid =
                    ObjectIdentifier::new(oid::RSA_ENCRYPTION).map_err(|_| ENCODE_FAILED)?;
                let info = pkcs8::PrivateKeyInfo::new(
                    pkcs8::AlgorithmIdentifierRef {
                        oid: algorithm_oid,
                        parameters: Some(AnyRef::from(pkcs8::der::asn1::Null)),
                    },
                    pkcs1_der,
                );
                info.to_der().map_err(|_| ENCODE_FAILED)
            }
            KeyMaterial::Ec { curve, scalar } => {
                let point = match &self.public {
                    Some(PublicKeyId::Ec { point, .. }) => Some(point.as_slice()),
                    _ => None,
                };
                let ec_key = sec1::EcPrivateKey {
                    private_key: scalar,
                    parameters: None,
                    public_key: point,
                };
                let ec_der = ec_key.to_der().map_err(|_| ENCODE_FAILED)?;
                let curve_oid = ObjectIdentifier::new(curve.oid()).map_err(|_| ENCODE_FAILED)?;
                let algorithm_oid =
                    ObjectIdentifier::new(oid::EC_PUBLIC_KEY).map_err(|_| ENCODE_FAILED)?;
                let info = pkcs8::PrivateKeyInfo::new(
                    pkcs8::AlgorithmIdentifierRef {
                        oid: algorithm_oid,
                        parameters: Some(AnyRef::from(&curve_oid)),
                    },
                    &ec_der,
                );
                info.to_der().map_err(|_| ENCODE_FAILED)
            }
        }
    }
}

/// Whether a PEM label is a private key of any kind.
pub(crate) fn is_private_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

/// Reads a private-key PEM block (see [`is_private_key_label`]).
pub(crate) fn parse_key_block(block: &PemBlock) -> Result<KeyBlock, MalformedKey> {
    if block.label == "ENCRYPTED PRIVATE KEY" || block.has_encrypted_header() {
        return Ok(KeyBlock::Encrypted);
    }
    match block.label.as_str() {
        "PRIVATE KEY" => parse_pkcs8(&block.der),
        "RSA PRIVATE KEY" => parse_pkcs1(&block.der),
        "EC PRIVATE KEY" => parse_sec1(&block.der, None),
        "DSA PRIVATE KEY" => Ok(KeyBlock::Unsupported("a DSA private key".to_owned())),
        other => {
            // Name the format without repeating the PEM label (see `pem::block_kind`).
            let format = other.trim_end_matches("PRIVATE KEY").trim();
            Ok(KeyBlock::Unsupported(format!(
                "a private key in {format} format"
            )))
        }
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<KeyBlock, MalformedKey> {
    let info =
        pkcs8::PrivateKeyInfo::from_der(der).map_err(|_| MalformedKey("it is not valid PKCS#8"))?;
    let algorithm = info.algorithm.oid.to_string();
    match algorithm.as_str() {
        oid::RSA_ENCRYPTION => parse_pkcs1(info.private_key),
        oid::EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| MalformedKey("the PKCS#8 EC key does not name its curve"))?
                .to_string();
            parse_sec1(info.private_key, Some(&curve))
        }
        other => Ok(KeyBlock::Unsupported(format!(
            "a {} private key",
            oid::describe_key_algorithm(other)
        ))),
    }
}

fn parse_pkcs1(der: &[u8]) -> Result<KeyBlock, MalformedKey> {
    match rsa_key::check_pkcs1(der)? {
        RsaKey::Unsupported(what) => Ok(KeyBlock::Unsupported(what)),
        RsaKey::Valid { modulus, exponent } => Ok(KeyBlock::Usable(PrivateKey {
            material: KeyMaterial::Rsa {
                pkcs1_der: der.to_vec(),
            },
            public: Some(PublicKeyId::rsa(&modulus, &exponent)),
        })),
    }
}

/// Reads a SEC1 `ECPrivateKey`; `outer_curve` is the curve named by an enclosing PKCS#8 structure.
fn parse_sec1(der: &[u8], outer_curve: Option<&str>) -> Result<KeyBlock, MalformedKey> {
    let ec_key = sec1::EcPrivateKey::from_der(der)
        .map_err(|_| MalformedKey("it is not a valid SEC1 EC key"))?;
    let inner_curve = ec_key
        .parameters
        .and_then(|parameters| parameters.named_curve())
        .map(|oid| oid.to_string());
    let curve_oid = match (outer_curve, inner_curve.as_deref()) {
        (Some(outer), Some(inner)) if outer != inner => {
            return Err(MalformedKey(
                "its PKCS#8 and SEC1 parts name different curves",
            ));
        }
        (Some(curve), _) | (None, Some(curve)) => curve.to_owned(),
        (None, None) => return Err(MalformedKey("the EC key does not name its curve")),
    };
    let Some(curve) = EcCurve::from_oid(&curve_oid) else {
        return Ok(KeyBlock::Unsupported(format!(
            "an EC private key on {}",
            oid::describe_curve(&curve_oid)
        )));
    };
    // RFC 5915 fixes the scalar length; some encoders drop leading zero bytes.
    let scalar = strip_leading_zeros(ec_key.private_key);
    if scalar.len() > curve.scalar_len() {
        return Err(MalformedKey(
            "the EC private scalar is longer than the curve allows",
        ));
    }
    let mut padded = vec![0u8; curve.scalar_len() - scalar.len()];
    padded.extend_from_slice(scalar);

    let public = match ec_key.public_key {
        Some(point) => {
            EcdsaKeyPair::from_private_key_and_public_key(
                curve.signing_algorithm(),
                &padded,
                point,
                &SystemRandom::new(),
            )
            .map_err(|_| {
                MalformedKey("the EC private key does not match its embedded public key")
            })?;
            Some(PublicKeyId::Ec {
                curve,
                point: point.to_vec(),
            })
        }
        None => None,
    };
    Ok(KeyBlock::Usable(PrivateKey {
        material: KeyMaterial::Ec {
            curve,
            scalar: padded,
        },
        public,
    }))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first_non_zero = bytes
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(bytes.len());
    bytes.get(first_non_zero..).unwrap_or_default()
}

fn bit_length(big_endian: &[u8]) -> u32 {
    let digits = strip_leading_zeros(big_endian);
    match digits.first() {
        Some(first) => {
            let bytes = u32::try_from(digits.len()).unwrap_or(u32::MAX / 8);
            bytes
                .saturating_mul(8)
                .saturating_sub(first.leading_zeros())
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0x00, 0x00]), 0);
    }

    #[test]
    fn rsa_public_key_ids_compare_without_leading_zeros() {
        assert_eq!(
            PublicKeyId::rsa(&[0, 0xc3, 0x01], &[1, 0, 1]),
            PublicKeyId::rsa(&[0xc3, 0x01], &[0, 1, 0, 1])
        );
        assert_eq!(
            PublicKeyId::rsa(&[0xff; 256], &[1, 0, 1]).algorithm(),
            KeyAlgorithm::Rsa { bits: 2048 }
        );
    }

    #[test]
    fn unknown_private_key_formats_are_unsupported() {
        let block = PemBlock {
            label: "OPENSSH PRIVATE KEY".to_owned(),
            headers: Vec::new(),
            der: vec![1, 2, 3],
        };
        assert!(matches!(
            parse_key_block(&block),
            Ok(KeyBlock::Unsupported(_))
        ));
        let encrypted = PemBlock {
            label: "ENCRYPTED PRIVATE KEY".to_owned(),
            headers: Vec::new(),
            der: vec![1],
        };
        assert!(matches!(
            parse_key_block(&encrypted),
            Ok(KeyBlock::Encrypted)
        ));
        let garbage = PemBlock {
            label: "PRIVATE KEY".to_owned(),
            headers: Vec::new(),
            der: vec![0x30, 0x01, 0x00],
        };
        assert!(parse_key_block(&garbage).is_err());
    }
}
