//! `bundle::extract` on every known Tencent ZIP layout and on the key/chain variations real ZIPs show.
//! Fixtures come from the test PKI at run time; no private key is stored in the repository.

mod common;

use common::{
    DOMAIN, assert_bundle, build, leaf, other_leaf, parts_for, pki, rsa_pki, spki_of_key, zip_of,
};
use tencent_sim::layout::{
    self, KEYSTORE_PASSWORD_PLACEHOLDER, LayoutOptions, ZipLayout, ZipParts,
};
use tencent_sim::pki::{KeyEncoding, KeyKind, LeafSpec, RsaTestKey};
use tencent_ssl::bundle::{self, KeyAlgorithm};

fn extract_layout(layout: ZipLayout, kind: KeyKind) {
    let (spec, cert) = leaf(kind);
    let zip = build(layout, &parts_for(cert));
    let bundle = bundle::extract(&zip).expect("extract");
    assert_bundle(&bundle, spec, cert, pki(), true);
}

#[test]
fn extracts_server_folders_layout() {
    extract_layout(ZipLayout::ServerFolders, KeyKind::EcdsaP256);
}

#[test]
fn extracts_server_folders_with_root_layout() {
    extract_layout(ZipLayout::ServerFoldersWithRoot, KeyKind::EcdsaP256);
}

#[test]
fn extracts_flat_nginx_layout() {
    extract_layout(ZipLayout::FlatNginx, KeyKind::EcdsaP256);
}

#[test]
fn extracts_rsa_2048_leaf() {
    extract_layout(ZipLayout::ServerFoldersWithRoot, KeyKind::Rsa2048);
    let bundle = bundle::extract(&build(
        ZipLayout::ServerFolders,
        &parts_for(&leaf(KeyKind::Rsa2048).1),
    ))
    .expect("extract");
    assert_eq!(bundle.meta.key_algorithm, KeyAlgorithm::Rsa { bits: 2048 });
    assert_eq!(bundle.meta.key_algorithm.to_string(), "RSA-2048");
}

#[test]
fn extracts_rsa_4096_leaf() {
    extract_layout(ZipLayout::ServerFolders, KeyKind::Rsa4096);
    let bundle = bundle::extract(&build(
        ZipLayout::FlatNginx,
        &parts_for(&leaf(KeyKind::Rsa4096).1),
    ))
    .expect("extract");
    assert_eq!(bundle.meta.key_algorithm, KeyAlgorithm::Rsa { bits: 4096 });
}

#[test]
fn extracts_ecdsa_p256_leaf() {
    let bundle = bundle::extract(&build(
        ZipLayout::FlatNginx,
        &parts_for(&leaf(KeyKind::EcdsaP256).1),
    ))
    .expect("extract");
    assert_eq!(bundle.meta.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(bundle.meta.key_algorithm.to_string(), "ECDSA-P256");
}

#[test]
fn extracts_ecdsa_p384_leaf() {
    extract_layout(ZipLayout::ServerFoldersWithRoot, KeyKind::EcdsaP384);
    let bundle = bundle::extract(&build(
        ZipLayout::FlatNginx,
        &parts_for(&leaf(KeyKind::EcdsaP384).1),
    ))
    .expect("extract");
    assert_eq!(bundle.meta.key_algorithm, KeyAlgorithm::EcdsaP384);
    assert_eq!(bundle.meta.key_algorithm.to_string(), "ECDSA-P384");
}

#[test]
fn extracts_chain_signed_by_rsa_ca() {
    let spec = common::leaf_spec(KeyKind::EcdsaP256);
    let cert = rsa_pki().issue_leaf(&spec).expect("leaf");
    let zip = build(
        ZipLayout::ServerFoldersWithRoot,
        &ZipParts::from_pki(DOMAIN, rsa_pki(), &cert),
    );
    let bundle = bundle::extract(&zip).expect("extract");
    assert_bundle(&bundle, &spec, &cert, rsa_pki(), true);
}

#[test]
fn extracts_wildcard_domain() {
    let spec = LeafSpec::valid_now(&["*.example.test", "example.test"], KeyKind::EcdsaP256);
    let cert = pki().issue_leaf(&spec).expect("leaf");
    let parts = ZipParts::from_pki("*.example.test", pki(), &cert);
    for layout in ZipLayout::ALL {
        let zip = build(layout, &parts);
        let bundle = bundle::extract(&zip).expect("extract");
        assert_eq!(bundle.meta.subject_cn.as_deref(), Some("*.example.test"));
        assert_eq!(bundle.meta.dns_names, ["*.example.test", "example.test"]);
        assert_eq!(
            bundle.chain_pem,
            format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem)
        );
    }
}

#[test]
fn extracts_leaf_only_without_chain() {
    let (spec, cert) = leaf(KeyKind::EcdsaP256);
    let parts = ZipParts {
        intermediates_pem: Vec::new(),
        root_pem: None,
        ..parts_for(cert)
    };
    for layout in ZipLayout::ALL {
        let bundle = bundle::extract(&build(layout, &parts)).expect("extract");
        assert_eq!(bundle.chain_pem, cert.cert_pem);
        assert_eq!(bundle.ca_pem, None);
        assert_eq!(bundle.meta.not_after, spec.not_after);
    }
}

#[test]
fn puts_root_into_ca_not_chain() {
    let (_, cert) = leaf(KeyKind::EcdsaP256);
    for layout in ZipLayout::ALL {
        let bundle = bundle::extract(&build(layout, &parts_for(cert))).expect("extract");
        assert!(!bundle.chain_pem.contains(&pki().root.cert_pem));
        assert_eq!(bundle.ca_pem.as_deref(), Some(pki().root.cert_pem.as_str()));
    }
}

#[test]
fn chain_without_root_has_no_ca() {
    let (spec, cert) = leaf(KeyKind::EcdsaP256);
    let parts = ZipParts {
        root_pem: None,
        ..parts_for(cert)
    };
    for layout in ZipLayout::ALL {
        let bundle = bundle::extract(&build(layout, &parts)).expect("extract");
        assert_bundle(&bundle, spec, cert, pki(), false);
    }
}

#[test]
fn orders_two_intermediates_from_shuffled_file() {
    let deeper = pki().subordinate("Test Issuing CA 2").expect("sub CA");
    let spec = LeafSpec::valid_now(&[DOMAIN], KeyKind::EcdsaP256);
    let cert = deeper.issue_leaf(&spec).expect("leaf");
    // Root first, then the upper intermediate, the leaf, and the issuing CA last.
    let shuffled = format!(
        "{}{}{}{}",
        pki().root.cert_pem,
        pki().intermediate.cert_pem,
        cert.cert_pem,
        deeper.intermediate.cert_pem
    );
    let zip = zip_of(&[
        ("bundle.pem", shuffled.as_bytes()),
        ("key.pem", cert.key_pem.as_bytes()),
    ]);
    let bundle = bundle::extract(&zip).expect("extract");
    assert_eq!(
        bundle.chain_pem,
        format!(
            "{}{}{}",
            cert.cert_pem,
            deeper.intermediate.cert_pem,
            pki().intermediate.cert_pem
        )
    );
    assert_eq!(bundle.ca_pem.as_deref(), Some(pki().root.cert_pem.as_str()));
    assert_eq!(bundle.meta.issuer_cn.as_deref(), Some("Test Issuing CA 2"));
}

#[test]
fn ignores_certificates_outside_the_chain() {
    let (_, cert) = leaf(KeyKind::EcdsaP256);
    let unrelated = rsa_pki();
    let chain = format!(
        "{}{}{}",
        cert.cert_pem,
        unrelated.intermediate.cert_pem,
        pki().intermediate.cert_pem
    );
    let zip = zip_of(&[
        ("a.pem", chain.as_bytes()),
        ("a.key", cert.key_pem.as_bytes()),
        ("other.crt", other_leaf().cert_pem.as_bytes()),
    ]);
    let bundle = bundle::extract(&zip).expect("extract");
    assert_eq!(
        bundle.chain_pem,
        format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem)
    );
    assert_eq!(bundle.ca_pem, None);
}

#[test]
fn extracts_pkcs1_rsa_key() {
    let (spec, cert) = leaf(KeyKind::Rsa2048);
    let parts = ZipParts {
        key_pem: Some(cert.key_pem_as(KeyEncoding::Pkcs1).expect("pkcs1")),
        ..parts_for(cert)
    };
    assert!(
        parts
            .key_pem
            .as_deref()
            .is_some_and(|key| key.starts_with("-----BEGIN RSA PRIVATE KEY-----"))
    );
    let bundle = bundle::extract(&build(ZipLayout::ServerFolders, &parts)).expect("extract");
    assert_bundle(&bundle, spec, cert, pki(), true);
}

#[test]
fn extracts_pkcs8_keys_of_every_kind() {
    for kind in KeyKind::ALL {
        let (spec, cert) = leaf(kind);
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let bundle =
            bundle::extract(&build(ZipLayout::FlatNginx, &parts_for(cert))).expect("extract");
        assert_bundle(&bundle, spec, cert, pki(), true);
    }
}

#[test]
fn extracts_sec1_ec_keys() {
    for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384] {
        let (spec, cert) = leaf(kind);
        let parts = ZipParts {
            key_pem: Some(cert.key_pem_as(KeyEncoding::Sec1).expect("sec1")),
            ..parts_for(cert)
        };
        assert!(
            parts
                .key_pem
                .as_deref()
                .is_some_and(|key| key.starts_with("-----BEGIN EC PRIVATE KEY-----"))
        );
        let bundle =
            bundle::extract(&build(ZipLayout::ServerFoldersWithRoot, &parts)).expect("extract");
        assert_bundle(&bundle, spec, cert, pki(), true);
    }
}

#[test]
fn same_key_in_different_encodings_is_one_key() {
    let (spec, cert) = leaf(KeyKind::Rsa2048);
    let pkcs1 = cert.key_pem_as(KeyEncoding::Pkcs1).expect("pkcs1");
    let chain = format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem);
    let zip = zip_of(&[
        ("Nginx/1_bundle.crt", chain.as_bytes()),
        ("Nginx/2_a.key", pkcs1.as_bytes()),
        ("a.key", cert.key_pem.as_bytes()),
    ]);
    let bundle = bundle::extract(&zip).expect("extract");
    assert_bundle(&bundle, spec, cert, pki(), false);
    // The normalised key does not depend on which encoding the ZIP used.
    let from_pkcs8_only = bundle::extract(&zip_of(&[
        ("b.crt", chain.as_bytes()),
        ("b.key", cert.key_pem.as_bytes()),
    ]))
    .expect("extract");
    assert_eq!(bundle.key_pem, from_pkcs8_only.key_pem);
}

#[test]
fn picks_the_key_that_matches_when_the_zip_has_two() {
    let (spec, cert) = leaf(KeyKind::EcdsaP256);
    let chain = format!("{}{}", cert.cert_pem, pki().intermediate.cert_pem);
    let zip = zip_of(&[
        ("stray.key", other_leaf().key_pem.as_bytes()),
        ("bundle.crt", chain.as_bytes()),
        ("right.key", cert.key_pem.as_bytes()),
    ]);
    let bundle = bundle::extract(&zip).expect("extract");
    assert_bundle(&bundle, spec, cert, pki(), false);
}

#[test]
fn extracts_crlf_and_bom_files() {
    let (spec, cert) = leaf(KeyKind::EcdsaP384);
    for options in [
        LayoutOptions {
            crlf: true,
            utf8_bom: false,
        },
        LayoutOptions {
            crlf: false,
            utf8_bom: true,
        },
        LayoutOptions {
            crlf: true,
            utf8_bom: true,
        },
    ] {
        for layout in ZipLayout::ALL {
            let zip = layout::build_zip(layout, &parts_for(cert), &options).expect("zip");
            let bundle = bundle::extract(&zip).expect("extract");
            assert_bundle(&bundle, spec, cert, pki(), true);
            assert!(!bundle.chain_pem.contains('\r') && !bundle.key_pem.contains('\r'));
            assert!(!bundle.chain_pem.contains('\u{feff}'));
        }
    }
}

#[test]
fn tolerates_blank_lines_and_stray_text_around_blocks() {
    let (spec, cert) = leaf(KeyKind::EcdsaP256);
    let messy_chain = format!(
        "subject=CN = {DOMAIN}\nissuer=CN = test\n\n\n{}\n\n  some note\n{}\n\n",
        cert.cert_pem,
        pki().intermediate.cert_pem
    );
    let messy_key = format!("Key for {DOMAIN}:\n\n{}\n\n", cert.key_pem);
    let zip = zip_of(&[
        ("chain.txt", messy_chain.as_bytes()),
        ("key.txt", messy_key.as_bytes()),
    ]);
    let bundle = bundle::extract(&zip).expect("extract");
    assert_bundle(&bundle, spec, cert, pki(), false);
}

#[test]
fn output_is_byte_stable() {
    let (_, cert) = leaf(KeyKind::Rsa2048);
    let zip = build(ZipLayout::ServerFoldersWithRoot, &parts_for(cert));
    let first = bundle::extract(&zip).expect("extract");
    let second = bundle::extract(&zip).expect("extract");
    assert_eq!(first, second);
    // The same certificate and key in another layout and line-ending style give the same bytes too.
    let crlf = layout::build_zip(
        ZipLayout::FlatNginx,
        &parts_for(cert),
        &LayoutOptions {
            crlf: true,
            utf8_bom: true,
        },
    )
    .expect("zip");
    assert_eq!(bundle::extract(&crlf).expect("extract"), first);
}

#[test]
fn never_copies_keystore_password() {
    let (_, cert) = leaf(KeyKind::EcdsaP256);
    let bundle = bundle::extract(&build(ZipLayout::ServerFoldersWithRoot, &parts_for(cert)))
        .expect("extract");
    let everything = format!("{bundle:?}{}{}", bundle.key_pem, bundle.chain_pem);
    assert!(!everything.contains(KEYSTORE_PASSWORD_PLACEHOLDER));
}

#[test]
fn bundle_debug_redacts_key() {
    let (_, cert) = leaf(KeyKind::EcdsaP256);
    let bundle = bundle::extract(&build(ZipLayout::FlatNginx, &parts_for(cert))).expect("extract");
    let debug = format!("{bundle:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains("PRIVATE KEY"));
    assert_eq!(spki_of_key(&bundle.key_pem), spki_of_key(&cert.key_pem));
}

#[test]
fn extracts_ec_key_stored_without_its_public_key() {
    use pkcs8::der::{Decode as _, Encode as _};
    for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384] {
        let (spec, cert) = leaf(kind);
        let sec1_pem = cert.key_pem_as(KeyEncoding::Sec1).expect("sec1");
        let sec1_der = bundle::pem::parse_blocks(sec1_pem.as_bytes(), 1)
            .expect("pem")
            .remove(0)
            .der;
        let mut ec_key = sec1::EcPrivateKey::from_der(&sec1_der).expect("sec1 der");
        ec_key.public_key = None;
        let stripped = bundle::pem::encode("EC PRIVATE KEY", &ec_key.to_der().expect("encode"));
        let parts = ZipParts {
            key_pem: Some(stripped),
            ..parts_for(cert)
        };
        let from_stripped = bundle::extract(&build(ZipLayout::FlatNginx, &parts)).expect("extract");
        assert_bundle(&from_stripped, spec, cert, pki(), true);
        // The public key is recovered from the matching certificate, so the output is the usual one.
        let usual =
            bundle::extract(&build(ZipLayout::FlatNginx, &parts_for(cert))).expect("extract");
        assert_eq!(from_stripped.key_pem, usual.key_pem);
    }
}

#[test]
fn secret_files_read_back_as_the_same_bundle() {
    for kind in [KeyKind::Rsa2048, KeyKind::EcdsaP384] {
        let (_, cert) = leaf(kind);
        let extracted = bundle::extract(&build(ZipLayout::ServerFoldersWithRoot, &parts_for(cert)))
            .expect("extract");
        let ca = extracted.ca_pem.clone().unwrap_or_default();
        let read_back = bundle::from_pem_entries(&[
            ("tls.crt", extracted.chain_pem.as_bytes()),
            ("tls.key", extracted.key_pem.as_bytes()),
            ("ca.crt", ca.as_bytes()),
        ])
        .expect("read back");
        assert_eq!(read_back, extracted);
    }
}

/// RSA keys the operator accepted with the `rsa` crate and still accepts without it, though ring (its first
/// candidate validator) refuses each: 1024 bits (ring: at least 2048), e = 3 (ring: at least 65537), 4160
/// bits (ring: at most 4096, primes a multiple of 512 bits). PKCS#1 and PKCS#8 inputs give the same PKCS#8
/// output, which wraps the key's own PKCS#1 bytes.
#[test]
fn extracts_rsa_keys_outside_rings_limits() {
    use pkcs8::der::{Decode as _, Encode as _};
    let rsa_null = pkcs8::AlgorithmIdentifierRef {
        oid: pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
        parameters: Some(pkcs8::der::asn1::AnyRef::from(pkcs8::der::asn1::Null)),
    };
    for (bits, exponent) in [(1024, 65_537), (2048, 3), (4160, 65_537)] {
        let key = RsaTestKey::generate(bits, exponent).expect("rsa key");
        let spec = LeafSpec::valid_now(&[DOMAIN], KeyKind::Rsa2048);
        let cert_pem = pki().issue_leaf_for_rsa_key(&spec, &key).expect("leaf");
        let chain = format!("{cert_pem}{}", pki().intermediate.cert_pem);
        let pkcs8_der = pkcs8::PrivateKeyInfo::new(rsa_null, &key.pkcs1_der)
            .to_der()
            .expect("pkcs8");
        let mut outputs = Vec::new();
        for key_pem in [
            bundle::pem::encode("RSA PRIVATE KEY", &key.pkcs1_der),
            bundle::pem::encode("PRIVATE KEY", &pkcs8_der),
        ] {
            let zip = zip_of(&[
                ("Nginx/1_bundle.crt", chain.as_bytes()),
                ("Nginx/2_key.key", key_pem.as_bytes()),
            ]);
            let extracted = bundle::extract(&zip)
                .unwrap_or_else(|error| panic!("RSA-{bits} e={exponent}: {error}"));
            assert_eq!(
                extracted.meta.key_algorithm,
                KeyAlgorithm::Rsa {
                    bits: u32::try_from(bits).expect("bits")
                }
            );
            assert_eq!(extracted.chain_pem, chain);
            outputs.push(extracted.key_pem);
        }
        assert_eq!(
            outputs[0], outputs[1],
            "RSA-{bits}: PKCS#1 and PKCS#8 agree"
        );
        let blocks = bundle::pem::parse_blocks(outputs[0].as_bytes(), 2).expect("output PEM");
        let [block] = blocks.as_slice() else {
            panic!("one PEM block expected, got {}", blocks.len());
        };
        assert_eq!(block.label, "PRIVATE KEY");
        let info = pkcs8::PrivateKeyInfo::from_der(&block.der).expect("output is PKCS#8");
        assert_eq!(info.algorithm, rsa_null);
        assert_eq!(info.private_key, key.pkcs1_der.as_slice());
    }
}
