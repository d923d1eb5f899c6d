//! Java KeyStore (JKS) files, as `sun.security.provider.JavaKeyStore` writes them (what `keytool` reads as
//! `-storetype JKS`). The format is small and fixed since Java 1.2, and its only cryptography is SHA-1 (the
//! store's integrity digest and Sun's key-protection keystream), which `ring` already provides: no crate.
//!
//! Layout, big-endian: magic `FEEDFEED`, version 2, entry count; per entry a tag (1 key, 2 trusted
//! certificate), the alias (`writeUTF`), the creation time in milliseconds, then the protected key and its
//! chain, or the certificate; each certificate as type `X.509`, length, DER. Trailer:
//! SHA-1(UTF-16BE(password) ‖ "Mighty Aphrodite" ‖ everything before it).

use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};
use ring::rand::SecureRandom;

const MAGIC: u32 = 0xFEED_FEED;
const VERSION: u32 = 2;
const TAG_PRIVATE_KEY: u32 = 1;
const TAG_TRUSTED_CERT: u32 = 2;
const WHITENER: &[u8] = b"Mighty Aphrodite";
/// DER of OID 1.3.6.1.4.1.42.2.17.1.1, Sun's proprietary key protection.
const KEY_PROTECTOR_OID: &[u8] = &[
    0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01,
];
const SALT_LEN: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JksError {
    #[error("the system random generator failed")]
    Random,
    #[error("{0} is too long for a JKS file")]
    TooLong(&'static str),
}

/// One entry of a store.
pub enum Entry<'a> {
    /// A private key (PKCS#8 DER) with its chain (DER, leaf first).
    PrivateKey {
        alias: &'a str,
        key_pkcs8: &'a [u8],
        chain: Vec<&'a [u8]>,
    },
    TrustedCertificate {
        alias: &'a str,
        cert: &'a [u8],
    },
}

/// The JKS file holding `entries`, protected by `password` (store and keys alike). `created_ms` is every
/// entry's creation time (milliseconds since the epoch).
pub fn encode(
    entries: &[Entry<'_>],
    password: &str,
    created_ms: i64,
    random: &dyn SecureRandom,
) -> Result<Vec<u8>, JksError> {
    let password = utf16_be(password);
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    put_len(&mut out, entries.len(), "the entry count")?;
    for entry in entries {
        match entry {
            Entry::PrivateKey {
                alias,
                key_pkcs8,
                chain,
            } => {
                out.extend_from_slice(&TAG_PRIVATE_KEY.to_be_bytes());
                put_utf(&mut out, alias)?;
                out.extend_from_slice(&created_ms.to_be_bytes());
                let protected = protect_key(key_pkcs8, &password, random)?;
                put_len(&mut out, protected.len(), "the protected key")?;
                out.extend_from_slice(&protected);
                put_len(&mut out, chain.len(), "the chain")?;
                for cert in chain {
                    put_cert(&mut out, cert)?;
                }
            }
            Entry::TrustedCertificate { alias, cert } => {
                out.extend_from_slice(&TAG_TRUSTED_CERT.to_be_bytes());
                put_utf(&mut out, alias)?;
                out.extend_from_slice(&created_ms.to_be_bytes());
                put_cert(&mut out, cert)?;
            }
        }
    }
    let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    digest.update(&password);
    digest.update(WHITENER);
    digest.update(&out);
    out.extend_from_slice(digest.finish().as_ref());
    Ok(out)
}

/// Whether `file`'s integrity digest (its trailer) is the one `password` gives, as `keytool` checks it on
/// load. Says nothing about the entries.
pub fn verifies(file: &[u8], password: &str) -> bool {
    const DIGEST_LEN: usize = 20;
    let Some(body_len) = file.len().checked_sub(DIGEST_LEN) else {
        return false;
    };
    let (body, trailer) = file.split_at(body_len);
    let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    digest.update(&utf16_be(password));
    digest.update(WHITENER);
    digest.update(body);
    digest.finish().as_ref() == trailer
}

/// Java's `char[]` password as bytes: each UTF-16 code unit, high byte first.
fn utf16_be(password: &str) -> Vec<u8> {
    password.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// `sun.security.provider.KeyProtector.protect`: the key XORed with a SHA-1 keystream seeded by a random
/// salt, followed by SHA-1(password ‖ key), wrapped in an `EncryptedPrivateKeyInfo`.
fn protect_key(
    key: &[u8],
    password: &[u8],
    random: &dyn SecureRandom,
) -> Result<Vec<u8>, JksError> {
    let mut salt = [0u8; SALT_LEN];
    random.fill(&mut salt).map_err(|_| JksError::Random)?;
    let mut protected = Vec::with_capacity(SALT_LEN * 2 + key.len());
    protected.extend_from_slice(&salt);
    let mut block = salt.to_vec();
    for chunk in key.chunks(SALT_LEN) {
        let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        digest.update(password);
        digest.update(&block);
        block = digest.finish().as_ref().to_vec();
        protected.extend(chunk.iter().zip(&block).map(|(k, x)| k ^ x));
    }
    let mut check = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    check.update(password);
    check.update(key);
    protected.extend_from_slice(check.finish().as_ref());

    let mut algorithm = KEY_PROTECTOR_OID.to_vec();
    algorithm.extend_from_slice(&[0x05, 0x00]); // NULL parameters
    let mut info = der(0x30, &algorithm);
    info.extend(der(0x04, &protected));
    Ok(der(0x30, &info))
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn put_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), JksError> {
    let len = u32::try_from(len).map_err(|_| JksError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Java's `DataOutputStream.writeUTF` for the aliases and type names used here (ASCII: identical to
/// modified UTF-8).
fn put_utf(out: &mut Vec<u8>, text: &str) -> Result<(), JksError> {
    let len = u16::try_from(text.len()).map_err(|_| JksError::TooLong("an alias"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_cert(out: &mut Vec<u8>, cert: &[u8]) -> Result<(), JksError> {
    put_utf(out, "X.509")?;
    put_len(out, cert.len(), "a certificate")?;
    out.extend_from_slice(cert);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    /// Reverses `protect_key` as `KeyProtector.recover` does, from the EncryptedPrivateKeyInfo's octets.
    fn recover(protected: &[u8], password: &[u8]) -> Vec<u8> {
        let (salt, rest) = protected.split_at(SALT_LEN);
        let (encrypted, check) = rest.split_at(rest.len() - 20);
        let mut block = salt.to_vec();
        let mut key = Vec::new();
        for chunk in encrypted.chunks(SALT_LEN) {
            let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
            digest.update(password);
            digest.update(&block);
            block = digest.finish().as_ref().to_vec();
            key.extend(chunk.iter().zip(&block).map(|(k, x)| k ^ x));
        }
        let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        digest.update(password);
        digest.update(&key);
        assert_eq!(digest.finish().as_ref(), check, "integrity check");
        key
    }

    #[test]
    fn header_trailer_and_key_protection_round_trip() {
        let key: Vec<u8> = (0..=200u8).collect();
        let cert = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let entries = [
            Entry::PrivateKey {
                alias: "certificate",
                key_pkcs8: &key,
                chain: vec![&cert, &cert],
            },
            Entry::TrustedCertificate {
                alias: "ca",
                cert: &cert,
            },
        ];
        let file = encode(
            &entries,
            "pässword",
            1_700_000_000_000,
            &SystemRandom::new(),
        )
        .unwrap();
        assert_eq!(&file[..4], &[0xfe, 0xed, 0xfe, 0xed]);
        assert_eq!(&file[4..8], &[0, 0, 0, 2]);
        assert_eq!(&file[8..12], &[0, 0, 0, 2]);
        // Trailer: SHA-1 over the UTF-16BE password, the whitener and the body.
        let (body, trailer) = file.split_at(file.len() - 20);
        let mut digest = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        digest.update(&utf16_be("pässword"));
        digest.update(WHITENER);
        digest.update(body);
        assert_eq!(digest.finish().as_ref(), trailer);
        // First entry: tag, alias, time, then the EncryptedPrivateKeyInfo.
        assert_eq!(&body[12..16], &[0, 0, 0, 1]);
        assert_eq!(&body[16..18], &[0, 11]);
        assert_eq!(&body[18..29], b"certificate");
        assert_eq!(&body[29..37], &1_700_000_000_000i64.to_be_bytes());
        let len = u32::from_be_bytes(body[37..41].try_into().unwrap()) as usize;
        let info = &body[41..41 + len];
        // SEQUENCE { SEQUENCE { OID, NULL }, OCTET STRING (long form length) }
        assert_eq!(info[0], 0x30);
        let algorithm_at = 2 + usize::from(info[1] & 0x7f) * usize::from(info[1] >> 7);
        assert_eq!(
            &info[algorithm_at + 2..algorithm_at + 14],
            KEY_PROTECTOR_OID
        );
        let octets_at = algorithm_at + 2 + KEY_PROTECTOR_OID.len() + 2;
        assert_eq!(info[octets_at], 0x04);
        let octets = &info[octets_at + 3..];
        assert_eq!(octets.len(), 20 + key.len() + 20);
        assert_eq!(recover(octets, &utf16_be("pässword")), key);
        assert_ne!(
            &octets[20..20 + key.len()],
            &key[..],
            "the key is not in clear"
        );
    }

    #[test]
    fn the_integrity_digest_verifies_only_with_the_password() {
        let cert = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let entries = [Entry::TrustedCertificate {
            alias: "ca",
            cert: &cert,
        }];
        let file = encode(&entries, "pässword", 0, &SystemRandom::new()).unwrap();
        assert!(verifies(&file, "pässword"));
        assert!(!verifies(&file, "password"));
        assert!(!verifies(&file[..10], "pässword"));
        let mut tampered = file.clone();
        tampered[8] ^= 1;
        assert!(!verifies(&tampered, "pässword"));
    }

    #[test]
    fn salts_differ_between_writes() {
        let key = [7u8; 48];
        let entries = [Entry::PrivateKey {
            alias: "a",
            key_pkcs8: &key,
            chain: vec![],
        }];
        let random = SystemRandom::new();
        let one = encode(&entries, "x", 0, &random).unwrap();
        let two = encode(&entries, "x", 0, &random).unwrap();
        assert_eq!(one.len(), two.len());
        assert_ne!(one, two);
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
