//! Fixtures shared by the bundle integration tests: PKIs and leaves generated once per test binary (RSA key
//! generation is slow), ZIP builders, and assertions. No private key is ever stored in the repository.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha256};
use tencent_sim::layout::{self, LayoutOptions, ZipLayout, ZipParts};
use tencent_sim::pki::{IssuedCert, KeyKind, LeafSpec, Pki};
use tencent_ssl::bundle::{BundleError, CertBundle};

pub const DOMAIN: &str = "www.example.test";
pub const SECOND_DOMAIN: &str = "api.example.test";
pub const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
pub const INTERMEDIATE_CN: &str = "Tencent Cert Operator Test Intermediate CA";

/// An ECDSA P-256 root + intermediate, shared by most tests.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(KeyKind::EcdsaP256).expect("generate PKI"))
}

/// An RSA-2048 root + intermediate, for chains signed with RSA.
pub fn rsa_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(KeyKind::Rsa2048).expect("generate RSA PKI"))
}

/// The spec of the standard leaf: two DNS names and one IP, valid now.
pub fn leaf_spec(kind: KeyKind) -> LeafSpec {
    let mut spec = LeafSpec::valid_now(&[DOMAIN, SECOND_DOMAIN], kind);
    spec.ip_addresses = vec![IP];
    // Whole seconds, as X.509 stores them, so metadata compares exactly.
    spec.not_before = jiff::Timestamp::from_second(spec.not_before.as_second()).expect("timestamp");
    spec.not_after = jiff::Timestamp::from_second(spec.not_after.as_second()).expect("timestamp");
    spec
}

/// The standard leaf of `kind`, issued once by [`pki`], with its spec.
pub fn leaf(kind: KeyKind) -> &'static (LeafSpec, IssuedCert) {
    static LEAVES: [OnceLock<(LeafSpec, IssuedCert)>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = match kind {
        KeyKind::Rsa2048 => &LEAVES[0],
        KeyKind::Rsa4096 => &LEAVES[1],
        KeyKind::EcdsaP256 => &LEAVES[2],
        KeyKind::EcdsaP384 => &LEAVES[3],
    };
    slot.get_or_init(|| {
        let spec = leaf_spec(kind);
        let cert = pki().issue_leaf(&spec).expect("issue leaf");
        (spec, cert)
    })
}

/// A second, unrelated P-256 leaf of the same PKI (for key mismatch tests).
pub fn other_leaf() -> &'static IssuedCert {
    static LEAF: OnceLock<IssuedCert> = OnceLock::new();
    LEAF.get_or_init(|| {
        pki()
            .issue_leaf(&LeafSpec::valid_now(
                &["other.example.test"],
                KeyKind::EcdsaP256,
            ))
            .expect("issue leaf")
    })
}

/// Full parts (intermediate, root, key, CSR) for a leaf of [`pki`].
pub fn parts_for(leaf: &IssuedCert) -> ZipParts {
    ZipParts::from_pki(DOMAIN, pki(), leaf)
}

pub fn build(layout: ZipLayout, parts: &ZipParts) -> Vec<u8> {
    layout::build_zip(layout, parts, &LayoutOptions::default()).expect("build zip")
}

/// A ZIP of the given entries (name, contents).
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<layout::ZipEntry> = files
        .iter()
        .map(|(name, contents)| layout::ZipEntry {
            name: (*name).to_owned(),
            contents: contents.to_vec(),
            is_pem: true,
        })
        .collect();
    layout::write_zip(&entries).expect("write zip")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SubjectPublicKeyInfo of a PKCS#8 PEM key, computed by rcgen/ring (independent of the extractor).
pub fn spki_of_key(key_pem: &str) -> Vec<u8> {
    rcgen::KeyPair::from_pem(key_pem)
        .expect("extracted key is valid PKCS#8")
        .subject_public_key_info()
}

/// Checks a bundle extracted from a ZIP built from `leaf` and `pki`: chain order, key identity, metadata.
pub fn assert_bundle(
    bundle: &CertBundle,
    spec: &LeafSpec,
    leaf: &IssuedCert,
    pki: &Pki,
    expect_root: bool,
) {
    assert_eq!(
        bundle.chain_pem,
        format!("{}{}", leaf.cert_pem, pki.intermediate.cert_pem),
        "chain order"
    );
    assert!(
        bundle.chain_pem.ends_with("-----END CERTIFICATE-----\n")
            && !bundle.chain_pem.ends_with("\n\n")
    );
    assert_eq!(
        bundle.ca_pem.as_deref(),
        expect_root.then_some(pki.root.cert_pem.as_str()),
        "ca"
    );
    assert!(bundle.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(
        spki_of_key(&bundle.key_pem),
        spki_of_key(&leaf.key_pem),
        "key is the leaf's key"
    );
    let meta = &bundle.meta;
    assert_eq!(meta.serial_hex, leaf.serial_hex());
    assert_eq!(meta.fingerprint_sha256, sha256_hex(&leaf.cert_der));
    assert_eq!(meta.not_before, spec.not_before);
    assert_eq!(meta.not_after, spec.not_after);
    assert_eq!(
        meta.subject_cn.as_deref(),
        spec.domains.first().map(String::as_str)
    );
    assert_eq!(meta.dns_names, spec.domains);
    let ips: Vec<String> = spec.ip_addresses.iter().map(ToString::to_string).collect();
    assert_eq!(meta.ip_addresses, ips);
    assert_eq!(meta.issuer_cn.as_deref(), Some(INTERMEDIATE_CN));
}

/// Neither the Display nor the Debug form of `error` holds key material (labels or base64 of `key_pem`).
pub fn assert_no_key_material(error: &BundleError, key_pem: &str) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let body_lines = key_pem
            .lines()
            .map(str::trim)
            .filter(|line| line.len() >= 16 && !line.contains(':'));
        for line in body_lines.filter(|line| !line.starts_with("-----")) {
            assert!(!text.contains(line), "key line leaked into {text}");
        }
    }
}
