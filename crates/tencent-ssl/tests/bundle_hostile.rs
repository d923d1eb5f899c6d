//! `bundle::extract` on hostile or broken input: each case is rejected with the right error, without panic,
//! and no error text carries key material. Plus property tests: random and mutated input never panics.

mod common;

use std::io::{Cursor, Write as _};
use std::sync::OnceLock;

use base64::Engine as _;
use common::{DOMAIN, assert_no_key_material, build, leaf, other_leaf, parts_for, pki, zip_of};
use pkcs8::der::Encode as _;
use pkcs8::der::asn1::{AnyRef, ObjectIdentifier};
use proptest::prelude::*;
use tencent_sim::layout::{ZipLayout, ZipParts};
use tencent_sim::pki::{KeyEncoding, KeyKind, LeafSpec, RsaTestKey};
use tencent_ssl::bundle::{self, BundleError, ExtractLimits, InvalidBundleDetail};
use zip::write::{SimpleFileOptions, ZipWriter};

const SM2_CURVE: &str = "1.2.156.10197.1.301";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

fn invalid(result: Result<bundle::CertBundle, BundleError>) -> InvalidBundleDetail {
    match result {
        Err(BundleError::InvalidBundle(detail)) => detail,
        other => panic!("expected InvalidBundle, got {other:?}"),
    }
}

/// A valid P-256 chain plus key, as (name, PEM) entries.
fn valid_files() -> Vec<(&'static str, Vec<u8>)> {
    let cert = &leaf(KeyKind::EcdsaP256).1;
    vec![
        (
            "Nginx/1_bundle.crt",
            format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem).into_bytes(),
        ),
        ("Nginx/2_key.key", cert.key_pem.clone().into_bytes()),
    ]
}

fn zip_with(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let valid = valid_files();
    let mut files: Vec<(&str, &[u8])> = valid
        .iter()
        .map(|(name, contents)| (*name, contents.as_slice()))
        .collect();
    files.extend_from_slice(extra);
    zip_of(&files)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    tencent_ssl::bundle::pem::encode(label, der)
}

/// Deterministic filler bytes that deflate cannot shrink much.
fn noise(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[test]
fn rejects_zip_bomb() {
    let bomb = zip_of(&[("Nginx/1_bundle.crt", &vec![b'A'; 20 * 1024 * 1024])]);
    assert!(
        bomb.len() < 100 * 1024,
        "the bomb should be small: {}",
        bomb.len()
    );
    let detail = invalid(bundle::extract(&bomb));
    assert!(
        matches!(detail, InvalidBundleDetail::EntryTooLarge { .. }),
        "{detail:?}"
    );
}

#[test]
fn rejects_high_compression_ratio() {
    let zip = zip_of(&[("a.pem", &vec![b'\n'; 900 * 1024])]);
    let detail = invalid(bundle::extract(&zip));
    assert!(
        matches!(
            detail,
            InvalidBundleDetail::CompressionRatio { max_ratio: 100, .. }
        ),
        "{detail:?}"
    );
}

#[test]
fn rejects_total_uncompressed_size_over_limit() {
    let chunk = noise(900 * 1024);
    let names: Vec<String> = (0..10).map(|index| format!("part{index}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(|name| (name.as_str(), chunk.as_slice()))
        .collect();
    let detail = invalid(bundle::extract(&zip_of(&files)));
    assert!(
        matches!(detail, InvalidBundleDetail::TotalTooLarge { .. }),
        "{detail:?}"
    );
}

#[test]
fn does_not_trust_declared_sizes() {
    let mut zip = zip_of(&[("a.pem", &vec![b'A'; 4 * 1024 * 1024])]);
    // Declare 100 bytes uncompressed in the local header (offset 22) and the central directory (offset 24).
    patch_u32_after(&mut zip, b"PK\x03\x04", 22, 100);
    patch_u32_after(&mut zip, b"PK\x01\x02", 24, 100);
    let detail = invalid(bundle::extract(&zip));
    assert!(
        matches!(
            detail,
            InvalidBundleDetail::EntryTooLarge { .. }
                | InvalidBundleDetail::DamagedEntry { .. }
                | InvalidBundleDetail::CompressionRatio { .. }
        ),
        "{detail:?}"
    );
}

fn patch_u32_after(bytes: &mut [u8], signature: &[u8], offset: usize, value: u32) {
    let start = bytes
        .windows(signature.len())
        .position(|window| window == signature)
        .expect("signature");
    bytes[start + offset..start + offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn rejects_ten_thousand_entries() {
    let names: Vec<String> = (0..10_000).map(|index| format!("f{index}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(|name| (name.as_str(), b"x".as_slice()))
        .collect();
    let detail = invalid(bundle::extract(&zip_of(&files)));
    assert_eq!(
        detail,
        InvalidBundleDetail::TooManyEntries {
            count: 10_000,
            max: 256
        }
    );
}

#[test]
fn ignores_nested_zip() {
    let inner = build(
        ZipLayout::ServerFolders,
        &parts_for(&leaf(KeyKind::EcdsaP256).1),
    );
    // Only a nested archive: its certificates are not looked at.
    let detail = invalid(bundle::extract(&zip_of(&[("inner.zip", &inner)])));
    assert_eq!(detail, InvalidBundleDetail::NoCertificate);
    // Even under an innocent name.
    let detail = invalid(bundle::extract(&zip_of(&[("bundle.crt", &inner)])));
    assert_eq!(detail, InvalidBundleDetail::NoCertificate);
    // Next to the real files, it is skipped.
    assert!(bundle::extract(&zip_with(&[("inner.zip", &inner), ("x.pem", &inner)])).is_ok());
}

#[test]
fn rejects_truncated_archive() {
    let zip = build(
        ZipLayout::ServerFoldersWithRoot,
        &parts_for(&leaf(KeyKind::EcdsaP256).1),
    );
    for cut in [zip.len() - 1, zip.len() - 30, zip.len() / 2, 10] {
        let detail = invalid(bundle::extract(&zip[..cut]));
        assert!(
            matches!(detail, InvalidBundleDetail::NotZip { .. }),
            "cut at {cut}: {detail:?}"
        );
    }
}

#[test]
fn rejects_data_that_is_not_a_zip() {
    for input in [
        b"".as_slice(),
        b"not a zip at all",
        &noise(4096),
        common::leaf(KeyKind::EcdsaP256).1.cert_pem.as_bytes(),
    ] {
        let detail = invalid(bundle::extract(input));
        assert!(
            matches!(detail, InvalidBundleDetail::NotZip { .. }),
            "{detail:?}"
        );
    }
}

#[test]
fn rejects_empty_zip() {
    let empty = ZipWriter::new(Cursor::new(Vec::new()))
        .finish()
        .expect("empty zip")
        .into_inner();
    assert_eq!(invalid(bundle::extract(&empty)), InvalidBundleDetail::Empty);
    // Only directories: no certificate.
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .add_directory("Nginx/", SimpleFileOptions::default())
        .expect("dir");
    let only_dirs = writer.finish().expect("zip").into_inner();
    assert_eq!(
        invalid(bundle::extract(&only_dirs)),
        InvalidBundleDetail::NoCertificate
    );
}

#[test]
fn rejects_encrypted_entry() {
    use zip::unstable::write::FileOptionsExt as _;
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, contents) in valid_files() {
        let options = SimpleFileOptions::default()
            .with_deprecated_encryption(b"zip-password")
            .expect("options");
        writer.start_file(name, options).expect("start");
        writer.write_all(&contents).expect("write");
    }
    let zip = writer.finish().expect("zip").into_inner();
    let detail = invalid(bundle::extract(&zip));
    assert!(
        matches!(detail, InvalidBundleDetail::EncryptedEntry { ref entry } if entry.contains("Nginx/1_bundle.crt")),
        "{detail:?}"
    );
}

#[test]
fn rejects_entry_named_with_parent_directory() {
    for name in ["../evil.pem", "Nginx/../../evil.pem", "/etc/evil.pem"] {
        let zip = zip_with(&[(name, b"-----BEGIN CERTIFICATE-----\n")]);
        let detail = invalid(bundle::extract(&zip));
        assert!(
            matches!(detail, InvalidBundleDetail::UnsafeEntryName { .. }),
            "{name}: {detail:?}"
        );
    }
}

#[test]
fn rejects_certificates_without_matching_key() {
    let cert = &leaf(KeyKind::EcdsaP256).1;
    let chain = format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem);
    let zip = zip_of(&[
        ("a.crt", chain.as_bytes()),
        ("a.key", other_leaf().key_pem.as_bytes()),
    ]);
    let error = bundle::extract(&zip).expect_err("mismatch");
    assert_eq!(
        error,
        BundleError::KeyMismatch {
            certificate: DOMAIN.to_owned(),
            keys: 1
        }
    );
    assert_eq!(error.reason(), "KeyMismatch");
    assert_no_key_material(&error, &other_leaf().key_pem);
}

#[test]
fn rejects_two_certificate_key_pairs() {
    let cert = &leaf(KeyKind::EcdsaP256).1;
    let other = other_leaf();
    let zip = zip_with(&[
        ("other.crt", other.cert_pem.as_bytes()),
        ("other.key", other.key_pem.as_bytes()),
    ]);
    let error = bundle::extract(&zip).expect_err("ambiguous");
    assert_eq!(
        error,
        BundleError::InvalidBundle(InvalidBundleDetail::SeveralKeyPairs { count: 2 })
    );
    assert_no_key_material(&error, &cert.key_pem);
    assert_no_key_material(&error, &other.key_pem);
}

#[test]
fn rejects_encrypted_private_key() {
    let encrypted = pem_block("ENCRYPTED PRIVATE KEY", &noise(300));
    let zip = zip_of(&[
        ("a.crt", valid_files()[0].1.as_slice()),
        ("a.key", encrypted.as_bytes()),
    ]);
    let error = bundle::extract(&zip).expect_err("encrypted");
    assert_eq!(
        error,
        BundleError::EncryptedKey {
            entry: "\"a.key\"".to_owned()
        }
    );
    assert_eq!(error.reason(), "EncryptedKey");
    assert_no_key_material(&error, &encrypted);

    let legacy = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0011223344556677\n\n{}\n-----END RSA PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(noise(600))
    );
    let zip = zip_of(&[
        ("a.crt", valid_files()[0].1.as_slice()),
        ("b.key", legacy.as_bytes()),
    ]);
    let error = bundle::extract(&zip).expect_err("encrypted");
    assert_eq!(error.reason(), "EncryptedKey");
    assert_no_key_material(&error, &legacy);

    // An encrypted copy next to the plain key does not matter.
    assert!(bundle::extract(&zip_with(&[("c.key", encrypted.as_bytes())])).is_ok());
}

/// A hand-built SM2 private key (fixed fake scalar, not a real key): SEC1 and PKCS#8 forms.
fn sm2_keys() -> [String; 3] {
    let sm2 = ObjectIdentifier::new(SM2_CURVE).expect("oid");
    let point = [[0x04].as_slice(), &[0x11; 64]].concat();
    let sec1_with_curve = sec1::EcPrivateKey {
        private_key: &[0x2a; 32],
        parameters: Some(sec1::EcParameters::NamedCurve(sm2)),
        public_key: Some(&point),
    }
    .to_der()
    .expect("sec1");
    let sec1_inner = sec1::EcPrivateKey {
        private_key: &[0x2a; 32],
        parameters: None,
        public_key: Some(&point),
    }
    .to_der()
    .expect("sec1");
    let pkcs8_ec = pkcs8::PrivateKeyInfo::new(
        pkcs8::AlgorithmIdentifierRef {
            oid: ObjectIdentifier::new(EC_PUBLIC_KEY).expect("oid"),
            parameters: Some(AnyRef::from(&sm2)),
        },
        &sec1_inner,
    )
    .to_der()
    .expect("pkcs8");
    let pkcs8_sm2_algorithm = pkcs8::PrivateKeyInfo::new(
        pkcs8::AlgorithmIdentifierRef {
            oid: sm2,
            parameters: None,
        },
        &sec1_inner,
    )
    .to_der()
    .expect("pkcs8");
    [
        pem_block("EC PRIVATE KEY", &sec1_with_curve),
        pem_block("PRIVATE KEY", &pkcs8_ec),
        pem_block("PRIVATE KEY", &pkcs8_sm2_algorithm),
    ]
}

#[test]
fn rejects_sm2_key() {
    let chain = valid_files()[0].1.clone();
    for sm2_key in sm2_keys() {
        let zip = zip_of(&[
            ("Nginx/1_sm2_sign_bundle.crt", &chain),
            ("Nginx/3_sm2.key", sm2_key.as_bytes()),
        ]);
        let error = bundle::extract(&zip).expect_err("sm2");
        assert_eq!(error.reason(), "UnsupportedAlgorithm");
        assert!(error.to_string().contains("SM2"), "{error}");
        assert_no_key_material(&error, &sm2_key);
    }
}

#[test]
fn rejects_ed25519_key() {
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("ed25519")
        .serialize_pem();
    let zip = zip_of(&[
        ("a.crt", valid_files()[0].1.as_slice()),
        ("a.key", ed25519.as_bytes()),
    ]);
    let error = bundle::extract(&zip).expect_err("ed25519");
    assert!(
        matches!(&error, BundleError::UnsupportedAlgorithm { what } if what.contains("Ed25519")),
        "{error}"
    );
    assert_no_key_material(&error, &ed25519);
}

#[test]
fn extracts_expired_leaf() {
    let now = jiff::Timestamp::now();
    let spec = LeafSpec {
        not_before: jiff::Timestamp::from_second(now.as_second() - 200 * 86_400).expect("time"),
        not_after: jiff::Timestamp::from_second(now.as_second() - 10 * 86_400).expect("time"),
        ..LeafSpec::valid_now(&["expired.example.test"], KeyKind::EcdsaP256)
    };
    let cert = pki().issue_leaf(&spec).expect("leaf");
    let bundle = bundle::extract(&build(
        ZipLayout::ServerFoldersWithRoot,
        &ZipParts::from_pki("expired.example.test", pki(), &cert),
    ))
    .expect("an expired leaf still extracts");
    assert_eq!(bundle.meta.not_after, spec.not_after);
    assert!(bundle.meta.is_expired_at(now));
    assert!(!bundle.meta.is_expired_at(spec.not_after));
}

#[test]
fn rejects_five_megabyte_garbage_pem() {
    let body = base64::engine::general_purpose::STANDARD.encode(noise(3_900_000));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("ascii"))
        .collect();
    let garbage = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    assert!(garbage.len() > 5_000_000);
    let zip = zip_of(&[("huge.pem", garbage.as_bytes())]);
    let detail = invalid(bundle::extract(&zip));
    assert!(
        matches!(detail, InvalidBundleDetail::EntryTooLarge { .. }),
        "{detail:?}"
    );
    // With limits that let it through, the parser still copes: it is not a certificate.
    let generous = ExtractLimits {
        max_entry_bytes: 8 << 20,
        max_total_bytes: 8 << 20,
        ..ExtractLimits::default()
    };
    let detail = invalid(bundle::extract_with_limits(&zip, &generous));
    assert!(
        matches!(detail, InvalidBundleDetail::MalformedCertificate { .. }),
        "{detail:?}"
    );
    let no_blocks = zip_of(&[("noise.bin", &noise(5_000_000))]);
    assert_eq!(
        invalid(bundle::extract_with_limits(&no_blocks, &generous)),
        InvalidBundleDetail::NoCertificate
    );
}

#[test]
fn rejects_zip_without_key() {
    let cert = &leaf(KeyKind::Rsa2048).1;
    let parts = ZipParts {
        key_pem: None,
        csr_pem: None,
        ..parts_for(cert)
    };
    for layout in ZipLayout::ALL {
        let error = bundle::extract(&build(layout, &parts)).expect_err("no key");
        assert_eq!(
            error,
            BundleError::KeyMissing {
                certificate: DOMAIN.to_owned()
            }
        );
        assert_eq!(error.reason(), "KeyMissing");
        let message = error.to_string();
        assert!(
            message.contains(DOMAIN) && message.contains("your own CSR"),
            "{message}"
        );
    }
}

#[test]
fn rejects_broken_blocks() {
    let truncated_block = b"-----BEGIN CERTIFICATE-----\nMIIB\n".as_slice();
    let detail = invalid(bundle::extract(&zip_with(&[("x.pem", truncated_block)])));
    assert!(
        matches!(detail, InvalidBundleDetail::MalformedPem { .. }),
        "{detail:?}"
    );
    let not_x509 = pem_block("CERTIFICATE", &noise(500));
    let detail = invalid(bundle::extract(&zip_with(&[(
        "x.pem",
        not_x509.as_bytes(),
    )])));
    assert!(
        matches!(detail, InvalidBundleDetail::MalformedCertificate { .. }),
        "{detail:?}"
    );
    let not_a_key = pem_block("PRIVATE KEY", &noise(500));
    let detail = invalid(bundle::extract(&zip_with(&[(
        "x.key",
        not_a_key.as_bytes(),
    )])));
    assert!(
        matches!(detail, InvalidBundleDetail::MalformedKey { .. }),
        "{detail:?}"
    );
}

/// A ZIP with `cert_pem` plus the intermediate, and `key_pem` as the key.
fn zip_of_cert_and_key(cert_pem: &str, key_pem: &str) -> Vec<u8> {
    let chain = format!("{cert_pem}{}", pki().intermediate.cert_pem);
    zip_of(&[
        ("Nginx/1_bundle.crt", chain.as_bytes()),
        ("Nginx/2_key.key", key_pem.as_bytes()),
    ])
}

#[test]
fn rejects_rsa_keys_shorter_than_1024_bits() {
    let key = RsaTestKey::generate(768, 65_537).expect("rsa key");
    let spec = LeafSpec::valid_now(&[DOMAIN], KeyKind::Rsa2048);
    let cert_pem = pki().issue_leaf_for_rsa_key(&spec, &key).expect("leaf");
    let key_pem = bundle::pem::encode("RSA PRIVATE KEY", &key.pkcs1_der);
    let error = bundle::extract(&zip_of_cert_and_key(&cert_pem, &key_pem)).expect_err("weak");
    assert_eq!(
        error,
        BundleError::UnsupportedAlgorithm {
            what: "an RSA-768 private key (shorter than 1024 bits)".to_owned()
        }
    );
    assert_eq!(error.reason(), "UnsupportedAlgorithm");
    assert_no_key_material(&error, &key_pem);
}

#[test]
fn rejects_rsa_keys_longer_than_16384_bits_before_any_arithmetic() {
    // Not a key: every integer is 2,060 bytes of 0xff. Refused by the modulus length alone.
    let huge = [0xff_u8; 2060];
    let uint = pkcs1::UintRef::new(&huge).expect("uint");
    let structure = pkcs1::RsaPrivateKey {
        modulus: uint,
        public_exponent: uint,
        private_exponent: uint,
        prime1: uint,
        prime2: uint,
        exponent1: uint,
        exponent2: uint,
        coefficient: uint,
        other_prime_infos: None,
    };
    let key_pem = pem_block("RSA PRIVATE KEY", &structure.to_der().expect("der"));
    let cert_pem = &leaf(KeyKind::EcdsaP256).1.cert_pem;
    let error = bundle::extract(&zip_of_cert_and_key(cert_pem, &key_pem)).expect_err("huge");
    assert_eq!(
        error,
        BundleError::UnsupportedAlgorithm {
            what: "an RSA private key longer than 16384 bits".to_owned()
        }
    );
}

/// One thing wrong in an otherwise valid RSA key.
#[derive(Debug, Clone, Copy)]
enum RsaCorruption {
    Prime1,
    PrivateExponent,
    Exponent1,
    Coefficient,
    EvenPublicExponent,
    MultiPrimeVersion,
}

/// The standard RSA-2048 leaf's key as PKCS#1 PEM, with `corruption`.
fn corrupted_rsa_key(corruption: RsaCorruption) -> String {
    let pkcs1_pem = leaf(KeyKind::Rsa2048)
        .1
        .key_pem_as(KeyEncoding::Pkcs1)
        .expect("pkcs1");
    let blocks = bundle::pem::parse_blocks(pkcs1_pem.as_bytes(), 1).expect("pem");
    let der = &blocks.first().expect("one block").der;
    let key = pkcs1::RsaPrivateKey::try_from(der.as_slice()).expect("pkcs1");
    // The same integer with bit 1 of its lowest byte flipped: same length, still odd if it was.
    let flip = |value: pkcs1::UintRef<'_>| {
        let mut bytes = value.as_bytes().to_vec();
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x02;
        }
        bytes
    };
    let flipped: Vec<u8>;
    let mut changed = key.clone();
    match corruption {
        RsaCorruption::Prime1 => {
            flipped = flip(key.prime1);
            changed.prime1 = pkcs1::UintRef::new(&flipped).expect("uint");
        }
        RsaCorruption::PrivateExponent => {
            flipped = flip(key.private_exponent);
            changed.private_exponent = pkcs1::UintRef::new(&flipped).expect("uint");
        }
        RsaCorruption::Exponent1 => {
            flipped = flip(key.exponent1);
            changed.exponent1 = pkcs1::UintRef::new(&flipped).expect("uint");
        }
        RsaCorruption::Coefficient => {
            flipped = flip(key.coefficient);
            changed.coefficient = pkcs1::UintRef::new(&flipped).expect("uint");
        }
        RsaCorruption::EvenPublicExponent => {
            changed.public_exponent = pkcs1::UintRef::new(&[1, 0, 0]).expect("uint");
        }
        RsaCorruption::MultiPrimeVersion => {}
    }
    let mut corrupted = changed.to_der().expect("der");
    if let RsaCorruption::MultiPrimeVersion = corruption {
        // Version 1 (multi-prime), the first INTEGER after the SEQUENCE header, without otherPrimeInfos.
        let version_at = corrupted
            .windows(3)
            .position(|window| window == [0x02, 0x01, 0x00])
            .expect("version");
        corrupted[version_at + 2] = 1;
    }
    pem_block("RSA PRIVATE KEY", &corrupted)
}

#[test]
fn rejects_rsa_keys_whose_components_disagree() {
    const CRT: &str = "its CRT values (exponent1, exponent2, coefficient) do not match its primes";
    let cases = [
        (
            RsaCorruption::Prime1,
            "its primes do not multiply to its modulus",
        ),
        (
            RsaCorruption::PrivateExponent,
            "its private exponent does not invert its public exponent",
        ),
        (RsaCorruption::Exponent1, CRT),
        (RsaCorruption::Coefficient, CRT),
        (
            RsaCorruption::EvenPublicExponent,
            "its public exponent is not an odd number from 3 to 2^33",
        ),
        (
            RsaCorruption::MultiPrimeVersion,
            "it is not a valid PKCS#1 RSA key",
        ),
    ];
    let cert_pem = &leaf(KeyKind::Rsa2048).1.cert_pem;
    for (corruption, reason) in cases {
        let key_pem = corrupted_rsa_key(corruption);
        let error =
            bundle::extract(&zip_of_cert_and_key(cert_pem, &key_pem)).expect_err("corrupted");
        assert_eq!(
            error,
            BundleError::InvalidBundle(InvalidBundleDetail::MalformedKey {
                entry: "\"Nginx/2_key.key\"".to_owned(),
                reason,
            }),
            "{corruption:?}"
        );
        assert_eq!(error.reason(), "InvalidBundle");
        assert_no_key_material(&error, &key_pem);
    }
}

#[test]
fn rejects_zip_without_certificate() {
    let cert = &leaf(KeyKind::EcdsaP256).1;
    let zip = zip_of(&[
        ("a.key", cert.key_pem.as_bytes()),
        (
            "a.csr",
            cert.csr_pem.as_deref().unwrap_or_default().as_bytes(),
        ),
    ]);
    assert_eq!(
        invalid(bundle::extract(&zip)),
        InvalidBundleDetail::NoCertificate
    );
}

#[test]
fn error_messages_never_contain_key_material() {
    let key = &leaf(KeyKind::EcdsaP256).1.key_pem;
    let chain = valid_files()[0].1.clone();
    let openssh = pem_block("OPENSSH PRIVATE KEY", &noise(200));
    let inputs: Vec<Vec<u8>> = vec![
        key.clone().into_bytes(),
        zip_of(&[("a.key", key.as_bytes())]),
        zip_of(&[
            ("a.key", key.as_bytes()),
            ("b.crt", other_leaf().cert_pem.as_bytes()),
        ]),
        zip_of(&[(
            "a.key",
            format!("{key}\n-----BEGIN CERTIFICATE-----\nAAAA").as_bytes(),
        )]),
        zip_of(&[(
            "a.key",
            key.replace("-----END PRIVATE KEY-----", "-----END CERTIFICATE-----")
                .as_bytes(),
        )]),
        zip_of(&[
            ("a.key", key.replace("MI", "!!").as_bytes()),
            ("b.crt", &chain),
        ]),
        zip_of(&[
            ("a.key", &key.as_bytes()[..key.len() / 2]),
            ("b.crt", &chain),
        ]),
        zip_of(&[("a.key", openssh.as_bytes()), ("b.crt", &chain)]),
        zip_of(&[("b.crt", &chain)]),
    ];
    for (index, input) in inputs.iter().enumerate() {
        let error = bundle::extract(input).expect_err("each input is broken");
        assert!(!error.reason().is_empty(), "case {index}");
        assert_no_key_material(&error, key);
    }
}

fn valid_zip() -> &'static [u8] {
    static ZIP: OnceLock<Vec<u8>> = OnceLock::new();
    ZIP.get_or_init(|| {
        build(
            ZipLayout::ServerFoldersWithRoot,
            &parts_for(&leaf(KeyKind::EcdsaP256).1),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = bundle::extract(&bytes);
        let mut with_signature = b"PK\x03\x04".to_vec();
        with_signature.extend_from_slice(&bytes);
        with_signature.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x30\0\0\0\0\0\0\0\0\0");
        let _ = bundle::extract(&with_signature);
    }

    #[test]
    fn mutated_valid_zip_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut zip = valid_zip().to_vec();
        for (position, value) in flips {
            let index = position.index(zip.len());
            zip[index] = value;
        }
        if let Some(cut) = cut {
            zip.truncate(cut.index(zip.len()));
        }
        if let Ok(bundle) = bundle::extract(&zip) {
            // Whatever survives the mutation is still a consistent bundle.
            prop_assert!(bundle.chain_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
            prop_assert!(bundle.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        }
    }
}
