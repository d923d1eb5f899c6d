//! Every derived output read back with tools that share no code with the operator: `openssl pkcs12` for the
//! PKCS#12 stores (password, chain, key, profile), `openssl pkey` for `key.der`, and Java's `keytool` for
//! the JKS stores. Each tool missing from the machine skips its part with a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tencent_cert_operator::outputs::{
    self, AdditionalOutputFormat, Derived, JksKeystore, Keystores, OutputFormatType, Passwords,
    Pkcs12Keystore, Pkcs12Profile, Previous, SecretKeySelector, SecretOutputs,
};
use tencent_sim::pki::{KeyKind, LeafSpec, Pki};
use tencent_ssl::bundle::{self, CertBundle};

const PASSWORD: &str = "correct horse battery staple";

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIP: {name} is not installed; its read-back is not checked here");
    }
    found
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

struct Fixture {
    bundle: CertBundle,
    leaf_pem: String,
    intermediate_pem: String,
    root_pem: String,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(kind: KeyKind, name: &str) -> Fixture {
    let pki = Pki::generate(kind).expect("pki");
    let leaf = pki
        .issue_leaf(&LeafSpec::valid_now(&["shop.example.test"], kind))
        .expect("leaf");
    let bundle = bundle::from_pem_entries(&[
        ("leaf", leaf.cert_pem.as_bytes()),
        ("intermediate", pki.intermediate.cert_pem.as_bytes()),
        ("root", pki.root.cert_pem.as_bytes()),
        ("key", leaf.key_pem.as_bytes()),
    ])
    .expect("bundle");
    let dir = std::env::temp_dir().join(format!("tco-outputs-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    Fixture {
        bundle,
        leaf_pem: leaf.cert_pem.clone(),
        intermediate_pem: pki.intermediate.cert_pem.clone(),
        root_pem: pki.root.cert_pem.clone(),
        dir,
    }
}

fn options(profile: Pkcs12Profile) -> SecretOutputs {
    let password = SecretKeySelector {
        name: "keystore-password".into(),
        key: "password".into(),
    };
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
                password_secret_ref: password.clone(),
                profile,
            }),
            jks: Some(JksKeystore {
                create: true,
                password_secret_ref: password,
                alias: None,
            }),
        })),
        certificate_id_key: Some("qcloud_cert_id".into()),
    }
}

fn derive(f: &Fixture, profile: Pkcs12Profile) -> Derived {
    let mut passwords = Passwords::default();
    passwords.insert(
        SecretKeySelector {
            name: "keystore-password".into(),
            key: "password".into(),
        },
        PASSWORD.into(),
    );
    outputs::derive(
        &f.bundle,
        "aBcD1234",
        &options(profile),
        true,
        &passwords,
        Previous::default(),
    )
    .expect("derive")
}

fn write(dir: &Path, data: &BTreeMap<String, k8s_openapi::ByteString>) {
    for (key, value) in data {
        std::fs::write(dir.join(key), &value.0).expect("write");
    }
}

/// The certificates of a PEM text, normalised to their base64 bodies (for comparing with openssl's output).
fn cert_bodies(text: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => current = Some(String::new()),
            "-----END CERTIFICATE-----" => bodies.extend(current.take()),
            body => {
                if let Some(c) = current.as_mut() {
                    c.push_str(body);
                }
            }
        }
    }
    bodies
}

fn check_pkcs12(f: &Fixture, profile: Pkcs12Profile, expect_in_info: &[&str]) {
    if !tool("openssl") {
        return;
    }
    let derived = derive(f, profile);
    write(&f.dir, &derived.data);
    let p12 = f.dir.join("keystore.p12");
    let p12 = p12.to_str().expect("path");
    let pass = format!("pass:{PASSWORD}");

    // The profile: algorithms and MAC as openssl reports them.
    let (ok, info) = run(
        "openssl",
        &["pkcs12", "-in", p12, "-passin", &pass, "-info", "-noout"],
    );
    assert!(ok, "openssl pkcs12 -info failed: {info}");
    for wanted in expect_in_info {
        assert!(info.contains(wanted), "{wanted:?} not in:\n{info}");
    }
    eprintln!("openssl pkcs12 -info ({}):\n{info}", profile.as_str());

    // The chain: leaf, intermediate and root, as certificates openssl decrypts.
    let (ok, certs) = run(
        "openssl",
        &["pkcs12", "-in", p12, "-passin", &pass, "-nokeys"],
    );
    assert!(ok, "{certs}");
    let mut got = cert_bodies(&certs);
    let mut want: Vec<String> = [&f.leaf_pem, &f.intermediate_pem, &f.root_pem]
        .iter()
        .flat_map(|p| cert_bodies(p))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "keystore.p12 holds the whole chain");

    // The key: the same key as tls.key, compared by openssl's own PKCS#8 re-encoding.
    let (ok, key) = run(
        "openssl",
        &["pkcs12", "-in", p12, "-passin", &pass, "-nocerts", "-nodes"],
    );
    assert!(ok, "openssl pkcs12 -nocerts failed");
    let key_file = f.dir.join("from-p12.key");
    std::fs::write(&key_file, key).expect("write");
    let tls_key = f.dir.join("tls.key");
    std::fs::write(&tls_key, &f.bundle.key_pem).expect("write");
    let normalised = |path: &Path| {
        let (ok, out) = run("openssl", &["pkey", "-in", path.to_str().expect("path")]);
        assert!(ok, "openssl pkey failed");
        out
    };
    assert_eq!(normalised(&key_file), normalised(&tls_key));

    // A wrong password is refused.
    let (ok, _) = run(
        "openssl",
        &["pkcs12", "-in", p12, "-passin", "pass:wrong", "-noout"],
    );
    assert!(!ok, "a wrong password must not open keystore.p12");

    // The truststore: the root only, no key.
    let trust = f.dir.join("truststore.p12");
    let (ok, trusted) = run(
        "openssl",
        &[
            "pkcs12",
            "-in",
            trust.to_str().expect("path"),
            "-passin",
            &pass,
            "-nokeys",
        ],
    );
    assert!(ok, "{trusted}");
    assert_eq!(cert_bodies(&trusted), cert_bodies(&f.root_pem));
}

#[test]
fn pkcs12_modern2023_reads_back_with_openssl() {
    let f = fixture(KeyKind::EcdsaP256, "modern");
    check_pkcs12(
        &f,
        Pkcs12Profile::Modern2023,
        &[
            "MAC: sha256",
            "PBES2, PBKDF2, AES-256-CBC",
            "Iteration 10000",
        ],
    );
}

#[test]
fn pkcs12_legacy_des_reads_back_with_openssl() {
    let f = fixture(KeyKind::Rsa2048, "legacy");
    check_pkcs12(
        &f,
        Pkcs12Profile::LegacyDES,
        &["MAC: sha1", "pbeWithSHA1And3-KeyTripleDES-CBC"],
    );
}

#[test]
fn der_key_and_combined_pem_read_back_with_openssl() {
    if !tool("openssl") {
        return;
    }
    let f = fixture(KeyKind::EcdsaP384, "der");
    let derived = derive(&f, Pkcs12Profile::Modern2023);
    write(&f.dir, &derived.data);
    let tls_key = f.dir.join("tls.key");
    std::fs::write(&tls_key, &f.bundle.key_pem).expect("write");
    let (ok, from_der) = run(
        "openssl",
        &[
            "pkey",
            "-inform",
            "DER",
            "-in",
            f.dir.join("key.der").to_str().expect("path"),
        ],
    );
    assert!(ok, "openssl pkey -inform DER failed: {from_der}");
    let (ok, from_pem) = run("openssl", &["pkey", "-in", tls_key.to_str().expect("path")]);
    assert!(ok);
    assert_eq!(from_der, from_pem, "key.der is tls.key");
    let (ok, text) = run(
        "openssl",
        &[
            "pkey",
            "-inform",
            "DER",
            "-in",
            f.dir.join("key.der").to_str().expect("path"),
            "-noout",
            "-text",
        ],
    );
    assert!(ok);
    assert!(text.contains("NIST CURVE: P-384"), "{text}");

    // tls-combined.pem: the key first, then the chain; openssl reads both out of the one file.
    let combined = f.dir.join("tls-combined.pem");
    let combined = combined.to_str().expect("path");
    let (ok, key) = run("openssl", &["pkey", "-in", combined]);
    assert!(ok);
    assert_eq!(key, from_pem);
    let text = std::fs::read_to_string(combined).expect("read");
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    let (ok, subject) = run("openssl", &["x509", "-in", combined, "-noout", "-subject"]);
    assert!(ok);
    assert!(subject.contains("shop.example.test"), "{subject}");
    assert_eq!(
        cert_bodies(&text),
        cert_bodies(&format!("{}{}", f.leaf_pem, f.intermediate_pem))
    );
}

#[test]
fn jks_reads_back_with_keytool() {
    if !tool("keytool") {
        return;
    }
    let f = fixture(KeyKind::Rsa2048, "jks");
    let derived = derive(&f, Pkcs12Profile::Modern2023);
    write(&f.dir, &derived.data);
    let jks = f.dir.join("keystore.jks");
    let jks = jks.to_str().expect("path");
    let (ok, list) = run(
        "keytool",
        &[
            "-list",
            "-v",
            "-storetype",
            "JKS",
            "-keystore",
            jks,
            "-storepass",
            PASSWORD,
        ],
    );
    assert!(ok, "keytool -list failed:\n{list}");
    assert!(list.contains("Alias name: certificate"), "{list}");
    assert!(list.contains("Entry type: PrivateKeyEntry"), "{list}");
    assert!(list.contains("Certificate chain length: 3"), "{list}");
    assert!(list.contains("CN=shop.example.test"), "{list}");
    let summary: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.starts_with("Keystore type")
                || l.starts_with("Alias name")
                || l.starts_with("Entry type")
                || l.starts_with("Certificate chain length")
                || l.starts_with("Owner")
        })
        .collect();
    eprintln!("keytool -list -v keystore.jks:\n{}", summary.join("\n"));

    // The key entry decrypts with the password (keytool re-exports it as PKCS#12, which openssl reads).
    let exported = f.dir.join("from-jks.p12");
    let exported = exported.to_str().expect("path");
    let (ok, out) = run(
        "keytool",
        &[
            "-importkeystore",
            "-srckeystore",
            jks,
            "-srcstoretype",
            "JKS",
            "-srcstorepass",
            PASSWORD,
            "-destkeystore",
            exported,
            "-deststoretype",
            "PKCS12",
            "-deststorepass",
            PASSWORD,
            "-noprompt",
        ],
    );
    assert!(ok, "keytool -importkeystore failed:\n{out}");
    if tool("openssl") {
        let (ok, key) = run(
            "openssl",
            &[
                "pkcs12",
                "-in",
                exported,
                "-passin",
                &format!("pass:{PASSWORD}"),
                "-nocerts",
                "-nodes",
            ],
        );
        assert!(ok);
        let key_file = f.dir.join("from-jks.key");
        std::fs::write(&key_file, key).expect("write");
        std::fs::write(f.dir.join("tls.key"), &f.bundle.key_pem).expect("write");
        let pkey = |p: &Path| run("openssl", &["pkey", "-in", p.to_str().expect("path")]).1;
        assert_eq!(pkey(&key_file), pkey(&f.dir.join("tls.key")));
    }

    // A wrong password fails the integrity check.
    let (ok, _) = run(
        "keytool",
        &[
            "-list",
            "-storetype",
            "JKS",
            "-keystore",
            jks,
            "-storepass",
            "wrong-one",
        ],
    );
    assert!(!ok, "keytool must refuse a wrong store password");

    let trust = f.dir.join("truststore.jks");
    let (ok, list) = run(
        "keytool",
        &[
            "-list",
            "-v",
            "-storetype",
            "JKS",
            "-keystore",
            trust.to_str().expect("path"),
            "-storepass",
            PASSWORD,
        ],
    );
    assert!(ok, "{list}");
    assert!(list.contains("Alias name: ca"), "{list}");
    assert!(list.contains("Entry type: trustedCertEntry"), "{list}");

    // Java also reads the PKCS#12 keystore (Modern2023 needs Java 8u301+ / 11.0.12+ / 17).
    let (ok, list) = run(
        "keytool",
        &[
            "-list",
            "-storetype",
            "PKCS12",
            "-keystore",
            f.dir.join("keystore.p12").to_str().expect("path"),
            "-storepass",
            PASSWORD,
        ],
    );
    assert!(ok, "keytool cannot read keystore.p12:\n{list}");
    assert!(list.contains("PrivateKeyEntry"), "{list}");
}
