//! The Secret outputs derived from a bundle besides `tls.crt`/`tls.key`/`ca.crt`: `tls-combined.pem`,
//! `key.der`, PKCS#12 and JKS keystores (and truststores), and the certificate id under a chosen key.
//! Pure apart from the random salts the keystores need: no Kubernetes, no clock.
//!
//! # Writing a keystore only when something changed
//! A keystore is different at every write (random salts and IVs), so comparing a fresh one with the
//! Secret's would rewrite it at every wave, and ingress controllers and Java services reload on each write.
//! cert-manager avoids that by re-encoding only when it re-issues. Here the Secret carries an annotation,
//! [`KEYSTORES_DIGEST_ANNOTATION`]: SHA-256 over the keystores' non-secret inputs (chain, key, root,
//! profile, alias, and *which* Secret key holds each password) followed by the keystore bytes written. The
//! Secret's keystores are kept, and nothing is written, when the annotation matches those inputs with the
//! Secret's own keystore bytes **and** each of those keystores opens with its current password; any other
//! change (an input, a password, the keystore bytes replaced by someone) gives one fresh set of keystores.
//!
//! No password goes into the digest. An unsalted SHA-256 over inputs that include the password (as before)
//! lets whoever sees the annotation test password guesses at hash speed. The annotation is now a function of
//! the Secret's data and the spec only, so it tells no one anything that the data does not: a password
//! change is seen by opening the stored keystore with the new password, as its consumer would. What the data
//! itself offers is the keystore formats' own: a PKCS#12 file costs the PBKDF2 iterations per guess, a JKS
//! file a SHA-1 (Java's format). An HMAC keyed by a secret the operator keeps in the same Secret would not
//! help: whoever reads the Secret reads that key too, and then has a fast oracle even for a PKCS#12-only
//! Secret. Opening costs a PKCS#12 import (about the keystore's PBKDF2 iterations) per reconcile that keeps
//! keystores; a JKS check is one SHA-1. Secrets written before this change carry a digest of the old form:
//! they get fresh keystores once.

pub mod jks;
pub mod spec;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use sha2::{Digest as _, Sha256};

pub use spec::{
    AdditionalOutputFormat, JksKeystore, Keystores, OutputFormatType, Pkcs12Keystore,
    Pkcs12Profile, SecretKeySelector, SecretOutputs,
};
use spec::{
    COMBINED_PEM_KEY, DER_KEY_KEY, JKS_KEYSTORE_KEY, JKS_TRUSTSTORE_KEY, PKCS12_KEYSTORE_KEY,
    PKCS12_TRUSTSTORE_KEY,
};

use tencent_ssl::bundle::CertBundle;
use tencent_ssl::bundle::pem;

/// Annotation on the Secret: the digest of the keystores' inputs and bytes (see the module docs).
pub const KEYSTORES_DIGEST_ANNOTATION: &str = "tencentcert.io/keystores-digest";
/// Alias of the root in the truststores (cert-manager's).
pub const TRUSTSTORE_ALIAS: &str = "ca";
/// PBKDF2 / PKCS#12 KDF iterations for the keystores (OpenSSL 3's default for PKCS#12 is 2048; Java's
/// 10,000).
const PKCS12_ITERATIONS: u32 = 10_000;

/// Keystore passwords read from their Secrets, by reference. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Passwords(BTreeMap<SecretKeySelector, String>);

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys().map(|k| format!("{}/{}", k.name, k.key)))
            .finish()
    }
}

impl Passwords {
    pub fn insert(&mut self, reference: SecretKeySelector, password: String) {
        self.0.insert(reference, password);
    }

    fn get(&self, reference: &SecretKeySelector) -> Result<&str, OutputError> {
        self.0
            .get(reference)
            .map(String::as_str)
            .ok_or_else(|| OutputError::PasswordNotFound {
                secret: reference.name.clone(),
                key: reference.key.clone(),
                why: "it was not read".into(),
            })
    }
}

impl PartialOrd for SecretKeySelector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SecretKeySelector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.name, &self.key).cmp(&(&other.name, &other.key))
    }
}

/// Why the outputs could not be made. Messages name Secrets and keys, never their values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OutputError {
    #[error(
        "keystore password Secret {secret} (key {key:?}) is not usable: {why}; create it in this namespace with a non-empty UTF-8 password under that key (label it tencentcert.io/credentials=true so that a change applies at once)"
    )]
    PasswordNotFound {
        secret: String,
        key: String,
        why: String,
    },
    #[error("cannot encode the {what}: {why}")]
    Encoding { what: &'static str, why: String },
}

pub const REASON_KEYSTORE_PASSWORD: &str = "KeystorePasswordNotFound";
pub const REASON_OUTPUT_ENCODING: &str = "OutputEncodingFailed";

impl OutputError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PasswordNotFound { .. } => REASON_KEYSTORE_PASSWORD,
            Self::Encoding { .. } => REASON_OUTPUT_ENCODING,
        }
    }
}

/// What the outputs add to the Secret: data keys, and annotations. `Debug` shows the keys and sizes, never
/// the data (the private key, keystores).
#[derive(Clone, Default, PartialEq)]
pub struct Derived {
    pub data: BTreeMap<String, ByteString>,
    pub annotations: BTreeMap<String, String>,
}

/// What the Secret holds now (to keep its keystores when nothing changed). `Debug` as [`Derived`]'s.
#[derive(Clone, Copy, Default)]
pub struct Previous<'a> {
    pub data: Option<&'a BTreeMap<String, ByteString>>,
    pub keystores_digest: Option<&'a str>,
}

/// `key: <N bytes>` for each data key.
struct Sizes<'a>(&'a BTreeMap<String, ByteString>);

impl std::fmt::Debug for Sizes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            map.entry(key, &format_args!("<{} bytes>", value.0.len()));
        }
        map.finish()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived")
            .field("data", &Sizes(&self.data))
            .field("annotations", &self.annotations.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for Previous<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previous")
            .field("data", &self.data.map(Sizes))
            .field("keystores_digest", &self.keystores_digest.is_some())
            .finish()
    }
}

impl<'a> Previous<'a> {
    pub fn of(secret: Option<&'a k8s_openapi::api::core::v1::Secret>) -> Self {
        Self {
            data: secret.and_then(|s| s.data.as_ref()),
            keystores_digest: secret
                .and_then(|s| s.metadata.annotations.as_ref())
                .and_then(|a| a.get(KEYSTORES_DIGEST_ANNOTATION))
                .map(String::as_str),
        }
    }
}

/// The outputs `options` ask for. `include_ca`: the root goes into `ca.crt`, the keystores' chains and the
/// truststores only when the resource includes it (and the bundle has it).
pub fn derive(
    bundle: &CertBundle,
    certificate_id: &str,
    options: &SecretOutputs,
    include_ca: bool,
    passwords: &Passwords,
    previous: Previous<'_>,
) -> Result<Derived, OutputError> {
    let mut derived = Derived::default();
    if let Some(key) = &options.certificate_id_key {
        derived
            .data
            .insert(key.clone(), ByteString(certificate_id.as_bytes().to_vec()));
    }
    if options.wants(OutputFormatType::CombinedPEM) {
        let combined = format!("{}{}", bundle.key_pem, bundle.chain_pem);
        derived
            .data
            .insert(COMBINED_PEM_KEY.into(), ByteString(combined.into_bytes()));
    }
    let pkcs12 = options.pkcs12();
    let jks = options.jks();
    if !options.wants(OutputFormatType::Der) && pkcs12.is_none() && jks.is_none() {
        return Ok(derived);
    }
    let material = Material::of(bundle, include_ca)?;
    if options.wants(OutputFormatType::Der) {
        derived
            .data
            .insert(DER_KEY_KEY.into(), ByteString(material.key.clone()));
    }
    if pkcs12.is_none() && jks.is_none() {
        return Ok(derived);
    }

    let inputs = keystore_inputs(bundle, include_ca, pkcs12, jks);
    let wanted = keystore_keys(pkcs12.is_some(), jks.is_some(), material.root.is_some());
    let kept = match previous.data {
        Some(data) => kept_keystores(data, &wanted, &inputs, previous, pkcs12, jks, passwords)?,
        None => None,
    };
    let (stores, digest) = match kept {
        Some((bytes, digest)) => (
            bytes
                .into_iter()
                .map(|(k, b)| (k.to_string(), b.0.clone()))
                .collect::<Vec<_>>(),
            digest,
        ),
        None => {
            let stores = write_keystores(&material, pkcs12, jks, passwords)?;
            let digest = keystores_digest(
                &inputs,
                stores.iter().map(|(k, b)| (k.as_str(), b.as_slice())),
            );
            (stores, digest)
        }
    };
    for (key, bytes) in stores {
        derived.data.insert(key, ByteString(bytes));
    }
    derived
        .annotations
        .insert(KEYSTORES_DIGEST_ANNOTATION.into(), digest);
    Ok(derived)
}

/// Keystores kept from the Secret (data key, bytes), and their digest.
type KeptKeystores<'d> = (Vec<(&'static str, &'d ByteString)>, String);

/// The Secret's keystores under `wanted`, with their digest, when they can stay: the annotation matches
/// `inputs` with their bytes, and each opens with its current password.
fn kept_keystores<'d>(
    data: &'d BTreeMap<String, ByteString>,
    wanted: &[&'static str],
    inputs: &[u8],
    previous: Previous<'_>,
    pkcs12: Option<&Pkcs12Keystore>,
    jks: Option<&JksKeystore>,
    passwords: &Passwords,
) -> Result<Option<KeptKeystores<'d>>, OutputError> {
    let Some(bytes) = wanted
        .iter()
        .map(|key| data.get(*key).map(|b| (*key, b)))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let digest = keystores_digest(inputs, bytes.iter().map(|(k, b)| (*k, b.0.as_slice())));
    if previous.keystores_digest != Some(digest.as_str()) {
        return Ok(None);
    }
    for (key, store) in &bytes {
        if !opens_with_current_password(key, &store.0, pkcs12, jks, passwords)? {
            return Ok(None);
        }
    }
    Ok(Some((bytes, digest)))
}

/// Whether the keystore under data key `key` opens with the password the spec names for it now.
fn opens_with_current_password(
    key: &str,
    store: &[u8],
    pkcs12: Option<&Pkcs12Keystore>,
    jks: Option<&JksKeystore>,
    passwords: &Passwords,
) -> Result<bool, OutputError> {
    match (key, pkcs12, jks) {
        (PKCS12_KEYSTORE_KEY | PKCS12_TRUSTSTORE_KEY, Some(options), _) => {
            let password = passwords.get(&options.password_secret_ref)?;
            Ok(p12_keystore::KeyStore::from_pkcs12(
                store,
                password,
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .is_ok())
        }
        (JKS_KEYSTORE_KEY | JKS_TRUSTSTORE_KEY, _, Some(options)) => {
            let password = passwords.get(&options.password_secret_ref)?;
            Ok(jks::verifies(store, password))
        }
        _ => Ok(false),
    }
}

/// The keystore data keys, in a fixed order.
fn keystore_keys(pkcs12: bool, jks: bool, root: bool) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if pkcs12 {
        keys.push(PKCS12_KEYSTORE_KEY);
        if root {
            keys.push(PKCS12_TRUSTSTORE_KEY);
        }
    }
    if jks {
        keys.push(JKS_KEYSTORE_KEY);
        if root {
            keys.push(JKS_TRUSTSTORE_KEY);
        }
    }
    keys
}

/// The bundle as DER: key (PKCS#8), chain (leaf first), root.
struct Material {
    key: Vec<u8>,
    chain: Vec<Vec<u8>>,
    root: Option<Vec<u8>>,
    not_before_ms: i64,
}

impl Material {
    fn of(bundle: &CertBundle, include_ca: bool) -> Result<Self, OutputError> {
        let blocks = |text: &str, what: &'static str| {
            pem::parse_blocks(text.as_bytes(), 64)
                .map(|blocks| blocks.into_iter().map(|b| b.der).collect::<Vec<_>>())
                .map_err(|err| OutputError::Encoding {
                    what,
                    why: err.to_string(),
                })
        };
        let key = blocks(&bundle.key_pem, "private key")?
            .into_iter()
            .next()
            .ok_or_else(|| OutputError::Encoding {
                what: "private key",
                why: "the bundle has no key block".into(),
            })?;
        let chain = blocks(&bundle.chain_pem, "chain")?;
        if chain.is_empty() {
            return Err(OutputError::Encoding {
                what: "chain",
                why: "the bundle has no certificate".into(),
            });
        }
        let root = match (&bundle.ca_pem, include_ca) {
            (Some(ca), true) => blocks(ca, "root certificate")?.into_iter().next(),
            _ => None,
        };
        Ok(Self {
            key,
            chain,
            root,
            not_before_ms: bundle.meta.not_before.as_millisecond(),
        })
    }

    /// The keystores' chain: leaf, intermediates, and the root when included.
    fn full_chain(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.chain.iter().chain(self.root.iter())
    }
}

/// Length-prefixed encoding of what the keystores are made from, except the passwords (see the module
/// docs): where each password is read from stands for it.
fn keystore_inputs(
    bundle: &CertBundle,
    include_ca: bool,
    pkcs12: Option<&Pkcs12Keystore>,
    jks: Option<&JksKeystore>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    put(b"tencentcert.io/keystores v2");
    put(bundle.chain_pem.as_bytes());
    put(bundle.key_pem.as_bytes());
    put(bundle
        .ca_pem
        .as_deref()
        .filter(|_| include_ca)
        .unwrap_or("")
        .as_bytes());
    match pkcs12 {
        Some(k) => {
            put(b"pkcs12");
            put(k.profile.as_str().as_bytes());
            put(k.password_secret_ref.name.as_bytes());
            put(k.password_secret_ref.key.as_bytes());
        }
        None => put(b""),
    }
    match jks {
        Some(k) => {
            put(b"jks");
            put(k.alias().as_bytes());
            put(k.password_secret_ref.name.as_bytes());
            put(k.password_secret_ref.key.as_bytes());
        }
        None => put(b""),
    }
    out
}

fn keystores_digest<'a>(
    inputs: &[u8],
    stores: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut hash = Sha256::new();
    hash.update(inputs);
    for (key, bytes) in stores {
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hex::encode(hash.finalize())
}

fn write_keystores(
    material: &Material,
    pkcs12: Option<&Pkcs12Keystore>,
    jks: Option<&JksKeystore>,
    passwords: &Passwords,
) -> Result<Vec<(String, Vec<u8>)>, OutputError> {
    let mut stores = Vec::new();
    if let Some(options) = pkcs12 {
        let password = passwords.get(&options.password_secret_ref)?;
        stores.push((
            PKCS12_KEYSTORE_KEY.to_string(),
            pkcs12_keystore(material, options.profile, password)?,
        ));
        if let Some(root) = &material.root {
            stores.push((
                PKCS12_TRUSTSTORE_KEY.to_string(),
                pkcs12_truststore(root, options.profile, password)?,
            ));
        }
    }
    if let Some(options) = jks {
        let password = passwords.get(&options.password_secret_ref)?;
        let random = ring::rand::SystemRandom::new();
        let alias = options.alias();
        let keystore = jks::encode(
            &[jks::Entry::PrivateKey {
                alias: &alias,
                key_pkcs8: &material.key,
                chain: material.full_chain().map(Vec::as_slice).collect(),
            }],
            password,
            material.not_before_ms,
            &random,
        )
        .map_err(jks_error)?;
        stores.push((JKS_KEYSTORE_KEY.to_string(), keystore));
        if let Some(root) = &material.root {
            let truststore = jks::encode(
                &[jks::Entry::TrustedCertificate {
                    alias: TRUSTSTORE_ALIAS,
                    cert: root,
                }],
                password,
                material.not_before_ms,
                &random,
            )
            .map_err(jks_error)?;
            stores.push((JKS_TRUSTSTORE_KEY.to_string(), truststore));
        }
    }
    Ok(stores)
}

fn jks_error(err: jks::JksError) -> OutputError {
    OutputError::Encoding {
        what: "JKS keystore",
        why: err.to_string(),
    }
}

fn p12_error(what: &'static str) -> impl Fn(p12_keystore::error::Error) -> OutputError {
    move |err| OutputError::Encoding {
        what,
        why: err.to_string(),
    }
}

fn p12_writer<'a>(
    store: &'a p12_keystore::KeyStore,
    profile: Pkcs12Profile,
    password: &'a str,
) -> p12_keystore::Pkcs12Writer<'a, 'a> {
    use p12_keystore::{EncryptionAlgorithm, MacAlgorithm};
    let (encryption, mac) = match profile {
        Pkcs12Profile::Modern2023 => (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
        ),
        Pkcs12Profile::LegacyDES => (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
        ),
    };
    store
        .writer(password)
        .encryption_algorithm(encryption)
        .encryption_iterations(PKCS12_ITERATIONS)
        .mac_algorithm(mac)
        .mac_iterations(PKCS12_ITERATIONS)
}

fn pkcs12_keystore(
    material: &Material,
    profile: Pkcs12Profile,
    password: &str,
) -> Result<Vec<u8>, OutputError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let what = "PKCS#12 keystore";
    let certs = material
        .full_chain()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(p12_error(what))?;
    let key = PrivateKey::from_der(&material.key).map_err(p12_error(what))?;
    // The local key id ties the key to its certificate: the leaf's SHA-1, as OpenSSL and Java write it.
    let leaf_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &material.chain[0]);
    let chain = PrivateKeyChain::new(leaf_id.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry("certificate", KeyStoreEntry::PrivateKeyChain(chain));
    p12_writer(&store, profile, password)
        .write()
        .map_err(p12_error(what))
}

fn pkcs12_truststore(
    root: &[u8],
    profile: Pkcs12Profile,
    password: &str,
) -> Result<Vec<u8>, OutputError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry};
    let what = "PKCS#12 truststore";
    let cert = Certificate::from_der(root).map_err(p12_error(what))?;
    let mut store = KeyStore::new();
    store.add_entry(TRUSTSTORE_ALIAS, KeyStoreEntry::Certificate(cert));
    p12_writer(&store, profile, password)
        .write()
        .map_err(p12_error(what))
}

#[cfg(test)]
mod tests;
