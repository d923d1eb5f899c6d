use super::*;
use tencent_sim::pki::{KeyKind, LeafSpec, Pki};
use tencent_ssl::bundle;

const PASSWORD: &str = "s3cret-Pässword";

fn bundle_from(pki: &Pki, with_root: bool) -> CertBundle {
    let leaf = pki
        .issue_leaf(&LeafSpec::valid_now(
            &["shop.example.test"],
            KeyKind::EcdsaP256,
        ))
        .expect("leaf");
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("leaf", leaf.cert_pem.as_bytes()),
        ("intermediate", pki.intermediate.cert_pem.as_bytes()),
        ("key", leaf.key_pem.as_bytes()),
    ];
    if with_root {
        entries.push(("root", pki.root.cert_pem.as_bytes()));
    }
    bundle::from_pem_entries(&entries).expect("bundle")
}

fn sample(with_root: bool) -> CertBundle {
    let pki = Pki::generate(KeyKind::EcdsaP256).expect("pki");
    bundle_from(&pki, with_root)
}

fn selector(name: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: "password".into(),
    }
}

fn passwords(value: &str) -> Passwords {
    let mut p = Passwords::default();
    p.insert(selector("keystore-password"), value.into());
    p
}

fn all_outputs(profile: Pkcs12Profile) -> SecretOutputs {
    SecretOutputs {
        additional_output_formats: vec![
            AdditionalOutputFormat {
                type_: OutputFormatType::CombinedPEM,
            },
            AdditionalOutputFormat {
                type_: OutputFormatType::Der,
            },
        ],
        keystores: Some(Box::new(Keystores {
            pkcs12: Some(Pkcs12Keystore {
                create: true,
                password_secret_ref: selector("keystore-password"),
                profile,
            }),
            jks: Some(JksKeystore {
                create: true,
                password_secret_ref: selector("keystore-password"),
                alias: Some("Shop".into()),
            }),
        })),
        certificate_id_key: Some("qcloud_cert_id".into()),
    }
}

fn text(derived: &Derived, key: &str) -> String {
    String::from_utf8(derived.data[key].0.clone()).expect("utf-8")
}

/// A Secret's view of `derived`, as the next reconcile reads it.
fn as_previous(derived: &Derived) -> (BTreeMap<String, ByteString>, Option<String>) {
    (
        derived.data.clone(),
        derived
            .annotations
            .get(KEYSTORES_DIGEST_ANNOTATION)
            .cloned(),
    )
}

#[test]
fn nothing_asked_nothing_added() {
    let derived = derive(
        &sample(true),
        "aBcD1234",
        &SecretOutputs::default(),
        true,
        &Passwords::default(),
        Previous::default(),
    )
    .unwrap();
    assert_eq!(derived, Derived::default());
}

#[test]
fn combined_pem_der_key_and_certificate_id() {
    let bundle = sample(true);
    let options = SecretOutputs {
        keystores: None,
        ..all_outputs(Pkcs12Profile::Modern2023)
    };
    let derived = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &Passwords::default(),
        Previous::default(),
    )
    .unwrap();
    assert_eq!(
        text(&derived, "tls-combined.pem"),
        format!("{}{}", bundle.key_pem, bundle.chain_pem)
    );
    assert_eq!(text(&derived, "qcloud_cert_id"), "aBcD1234");
    let der = &derived.data["key.der"].0;
    let key_block = &pem::parse_blocks(bundle.key_pem.as_bytes(), 4).unwrap()[0];
    assert_eq!(der, &key_block.der);
    use pkcs8::der::Decode as _;
    assert!(pkcs8::PrivateKeyInfo::from_der(der).is_ok());
    assert!(derived.annotations.is_empty(), "no keystores, no digest");
    assert_eq!(derived.data.len(), 3);
}

#[test]
fn keystores_hold_the_key_and_the_chain_with_the_root() {
    let bundle = sample(true);
    let derived = derive(
        &bundle,
        "aBcD1234",
        &all_outputs(Pkcs12Profile::Modern2023),
        true,
        &passwords(PASSWORD),
        Previous::default(),
    )
    .unwrap();
    let keys: Vec<&str> = derived.data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "key.der",
            "keystore.jks",
            "keystore.p12",
            "qcloud_cert_id",
            "tls-combined.pem",
            "truststore.jks",
            "truststore.p12"
        ]
    );
    let store = p12_keystore::KeyStore::from_pkcs12(
        &derived.data["keystore.p12"].0,
        PASSWORD,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .expect("keystore.p12 opens with the password");
    let (_, chain) = store.private_key_chain().expect("a key entry");
    assert_eq!(chain.certs().len(), 3, "leaf, intermediate, root");
    assert_eq!(chain.key().as_der(), derived.data["key.der"].0.as_slice());
    assert!(
        p12_keystore::KeyStore::from_pkcs12(
            &derived.data["keystore.p12"].0,
            "wrong",
            p12_keystore::Pkcs12ImportPolicy::Strict
        )
        .is_err()
    );
    let trust = p12_keystore::KeyStore::from_pkcs12(
        &derived.data["truststore.p12"].0,
        PASSWORD,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .expect("truststore.p12");
    assert!(trust.private_key_chain().is_none());
    assert_eq!(trust.entries_len(), 1);
    let jks = &derived.data["keystore.jks"].0;
    assert_eq!(&jks[..4], &[0xfe, 0xed, 0xfe, 0xed]);
    // The alias is written in lower case, as Java does.
    assert!(jks.windows(4).any(|w| w == b"shop"));
    assert_eq!(
        derived.annotations[KEYSTORES_DIGEST_ANNOTATION].len(),
        64,
        "hex SHA-256"
    );
}

#[test]
fn no_root_no_truststores_and_include_ca_false_drops_it() {
    let with_root = sample(true);
    for (bundle, include_ca) in [(sample(false), true), (with_root, false)] {
        let derived = derive(
            &bundle,
            "aBcD1234",
            &all_outputs(Pkcs12Profile::LegacyDES),
            include_ca,
            &passwords(PASSWORD),
            Previous::default(),
        )
        .unwrap();
        assert!(!derived.data.contains_key("truststore.p12"));
        assert!(!derived.data.contains_key("truststore.jks"));
        let store = p12_keystore::KeyStore::from_pkcs12(
            &derived.data["keystore.p12"].0,
            PASSWORD,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        assert_eq!(store.private_key_chain().unwrap().1.certs().len(), 2);
    }
}

#[test]
fn unchanged_inputs_keep_the_keystore_bytes_and_any_change_rewrites_them_once() {
    let bundle = sample(true);
    let options = all_outputs(Pkcs12Profile::Modern2023);
    let first = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        Previous::default(),
    )
    .unwrap();
    let (data, digest) = as_previous(&first);
    let previous = Previous {
        data: Some(&data),
        keystores_digest: digest.as_deref(),
    };
    // An unchanged wave: byte-identical outputs, so the Secret compares equal and nothing is written.
    let again = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        previous,
    )
    .unwrap();
    assert_eq!(again, first);

    // A new password: new keystores, new digest.
    let rotated = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords("another"),
        previous,
    )
    .unwrap();
    assert_ne!(rotated.data["keystore.p12"], first.data["keystore.p12"]);
    assert_ne!(rotated.data["keystore.jks"], first.data["keystore.jks"]);
    assert_ne!(rotated.annotations, first.annotations);
    assert_eq!(
        rotated.data["tls-combined.pem"],
        first.data["tls-combined.pem"]
    );
    // ... and once written, the rotated set is stable in turn.
    let (data2, digest2) = as_previous(&rotated);
    let stable = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords("another"),
        Previous {
            data: Some(&data2),
            keystores_digest: digest2.as_deref(),
        },
    )
    .unwrap();
    assert_eq!(stable, rotated);

    // A new profile, alias or bundle: rewritten too.
    let legacy = derive(
        &bundle,
        "aBcD1234",
        &all_outputs(Pkcs12Profile::LegacyDES),
        true,
        &passwords(PASSWORD),
        previous,
    )
    .unwrap();
    assert_ne!(legacy.annotations, first.annotations);
    let mut renamed = options.clone();
    if let Some(jks) = renamed.keystores.as_mut().and_then(|k| k.jks.as_mut()) {
        jks.alias = Some("other".into());
    }
    let realiased = derive(
        &bundle,
        "aBcD1234",
        &renamed,
        true,
        &passwords(PASSWORD),
        previous,
    )
    .unwrap();
    assert_ne!(realiased.data["keystore.jks"], first.data["keystore.jks"]);
    let renewed = derive(
        &sample(true),
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        previous,
    )
    .unwrap();
    assert_ne!(renewed.data["keystore.p12"], first.data["keystore.p12"]);
}

#[test]
fn keystore_bytes_replaced_in_the_secret_are_rewritten() {
    let bundle = sample(true);
    let options = all_outputs(Pkcs12Profile::Modern2023);
    let first = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        Previous::default(),
    )
    .unwrap();
    let (mut data, digest) = as_previous(&first);
    data.insert("keystore.jks".into(), ByteString(b"tampered".to_vec()));
    let repaired = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        Previous {
            data: Some(&data),
            keystores_digest: digest.as_deref(),
        },
    )
    .unwrap();
    assert_ne!(repaired.data["keystore.jks"].0, b"tampered");
    // A missing keystore key counts the same.
    let (mut data, digest) = as_previous(&first);
    data.remove("truststore.p12");
    let refilled = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        Previous {
            data: Some(&data),
            keystores_digest: digest.as_deref(),
        },
    )
    .unwrap();
    assert!(refilled.data.contains_key("truststore.p12"));
}

#[test]
fn a_missing_password_is_an_error_that_names_the_secret_only() {
    let err = derive(
        &sample(true),
        "aBcD1234",
        &all_outputs(Pkcs12Profile::Modern2023),
        true,
        &Passwords::default(),
        Previous::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), REASON_KEYSTORE_PASSWORD);
    assert!(err.to_string().contains("keystore-password"), "{err}");
    // `create: false` needs no password.
    let mut off = all_outputs(Pkcs12Profile::Modern2023);
    if let Some(k) = off.keystores.as_mut() {
        if let Some(p) = k.pkcs12.as_mut() {
            p.create = false;
        }
        if let Some(j) = k.jks.as_mut() {
            j.create = false;
        }
    }
    let derived = derive(
        &sample(true),
        "aBcD1234",
        &off,
        true,
        &Passwords::default(),
        Previous::default(),
    )
    .unwrap();
    assert!(!derived.data.contains_key("keystore.p12"));
}

#[test]
fn passwords_and_keys_never_reach_debug_or_errors() {
    let p = passwords(PASSWORD);
    let printed = format!("{p:?}");
    assert!(printed.contains("keystore-password/password"));
    assert!(!printed.contains(PASSWORD));
    let bundle = sample(true);
    let derived = derive(
        &bundle,
        "aBcD1234",
        &all_outputs(Pkcs12Profile::Modern2023),
        true,
        &p,
        Previous::default(),
    )
    .unwrap();
    for value in derived.annotations.values() {
        assert!(!value.contains(PASSWORD));
        assert!(!value.contains("PRIVATE KEY"));
    }
}

#[test]
fn the_digest_annotation_does_not_let_a_password_guess_be_checked() {
    let bundle = sample(true);
    let options = all_outputs(Pkcs12Profile::Modern2023);
    let derived = derive(
        &bundle,
        "aBcD1234",
        &options,
        true,
        &passwords(PASSWORD),
        Previous::default(),
    )
    .unwrap();
    let annotation = &derived.annotations[KEYSTORES_DIGEST_ANNOTATION];
    // The annotation is a function of the spec and the Secret's own data, and of no password: recomputed
    // from those alone it is the same. So whatever is guessed, there is nothing to compare the guess with:
    // it tells no one more than the keystores in the data do (opening one costs its KDF iterations).
    let inputs = keystore_inputs(&bundle, true, options.pkcs12(), options.jks());
    let stores = keystore_keys(true, true, true)
        .into_iter()
        .map(|key| (key, derived.data[key].0.as_slice()));
    assert_eq!(&keystores_digest(&inputs, stores), annotation);
    // Before: SHA-256 over the inputs *with the password* then the keystore bytes; anyone who could read
    // the annotation (and the keystore bytes and chain, or the data) confirmed a guess with one hash.
    let old_form = |guess: &str| {
        let mut old = Vec::new();
        let mut put = |bytes: &[u8]| {
            old.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            old.extend_from_slice(bytes);
        };
        put(b"tencentcert.io/keystores v1");
        put(bundle.chain_pem.as_bytes());
        put(bundle.key_pem.as_bytes());
        put(bundle.ca_pem.as_deref().unwrap_or("").as_bytes());
        put(b"pkcs12");
        put(b"Modern2023");
        put(guess.as_bytes());
        put(b"jks");
        put(b"shop");
        put(guess.as_bytes());
        let stores = keystore_keys(true, true, true)
            .into_iter()
            .map(|key| (key, derived.data[key].0.as_slice()));
        keystores_digest(&old, stores)
    };
    assert_ne!(&old_form(PASSWORD), annotation);
    assert_ne!(&old_form("wrong guess"), annotation);
    for value in derived.annotations.values() {
        assert!(!value.contains(PASSWORD));
    }
}

#[test]
fn a_password_change_alone_rewrites_each_kind_of_keystore() {
    let bundle = sample(true);
    for (pkcs12, jks) in [(true, false), (false, true)] {
        let mut options = all_outputs(Pkcs12Profile::LegacyDES);
        if let Some(k) = options.keystores.as_mut() {
            if !pkcs12 {
                k.pkcs12 = None;
            }
            if !jks {
                k.jks = None;
            }
        }
        let first = derive(
            &bundle,
            "aBcD1234",
            &options,
            true,
            &passwords(PASSWORD),
            Previous::default(),
        )
        .unwrap();
        let (data, digest) = as_previous(&first);
        let previous = Previous {
            data: Some(&data),
            keystores_digest: digest.as_deref(),
        };
        let same = derive(
            &bundle,
            "aBcD1234",
            &options,
            true,
            &passwords(PASSWORD),
            previous,
        )
        .unwrap();
        assert_eq!(same, first, "unchanged: kept, no write (pkcs12 {pkcs12})");
        let changed = derive(
            &bundle,
            "aBcD1234",
            &options,
            true,
            &passwords("new-pass"),
            previous,
        )
        .unwrap();
        let key = if pkcs12 {
            "keystore.p12"
        } else {
            "keystore.jks"
        };
        assert_ne!(changed.data[key], first.data[key], "{key}");
        if pkcs12 {
            assert!(
                p12_keystore::KeyStore::from_pkcs12(
                    &changed.data[key].0,
                    "new-pass",
                    p12_keystore::Pkcs12ImportPolicy::Strict
                )
                .is_ok()
            );
        } else {
            assert!(jks::verifies(&changed.data[key].0, "new-pass"));
        }
    }
}

#[test]
fn debug_of_outputs_and_secret_params_shows_no_key_material() {
    let bundle = sample(true);
    let derived = derive(
        &bundle,
        "aBcD1234",
        &all_outputs(Pkcs12Profile::Modern2023),
        true,
        &passwords(PASSWORD),
        Previous::default(),
    )
    .unwrap();
    let (data, digest) = as_previous(&derived);
    let previous = Previous {
        data: Some(&data),
        keystores_digest: digest.as_deref(),
    };
    let params = crate::secret::SecretParams {
        namespace: "web".into(),
        name: "shop".into(),
        outputs: derived.clone(),
        ..Default::default()
    };
    let key_body: String = bundle
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for text in [
        format!("{derived:?}"),
        format!("{derived:#?}"),
        format!("{previous:?}"),
        format!("{params:?}"),
        format!("{params:#?}"),
    ] {
        assert!(text.contains("keystore.p12"), "keys are shown: {text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains(&key_body[..32]), "{text}");
        assert!(!text.contains(digest.as_deref().unwrap()), "{text}");
        // No byte list of any value (k8s-openapi's ByteString prints its bytes).
        for value in derived.data.values() {
            let bytes = format!("{:?}", &value.0[..8.min(value.0.len())]);
            assert!(!text.contains(bytes.trim_end_matches(']')), "{text}");
        }
    }
}
