//! The spec fields that ask for outputs beyond `tls.crt`/`tls.key`/`ca.crt`, named after cert-manager's
//! `Certificate` (`additionalOutputFormats`, `keystores.pkcs12`, `keystores.jks`). One struct, flattened into
//! a resource's spec, so that any resource kind that writes a Secret from a bundle can embed it as it is.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Data key of `CombinedPEM`: the private key, then the chain (cert-manager's name).
pub const COMBINED_PEM_KEY: &str = "tls-combined.pem";
/// Data key of `DER`: the private key as DER (PKCS#8).
pub const DER_KEY_KEY: &str = "key.der";
/// Data key of the PKCS#12 keystore.
pub const PKCS12_KEYSTORE_KEY: &str = "keystore.p12";
/// Data key of the PKCS#12 truststore (the root CA).
pub const PKCS12_TRUSTSTORE_KEY: &str = "truststore.p12";
/// Data key of the JKS keystore.
pub const JKS_KEYSTORE_KEY: &str = "keystore.jks";
/// Data key of the JKS truststore (the root CA).
pub const JKS_TRUSTSTORE_KEY: &str = "truststore.jks";
/// The key TKE's CLB ingress reads a Tencent Cloud certificate id from.
pub const TKE_CERTIFICATE_ID_KEY: &str = "qcloud_cert_id";
/// The JKS alias of the key entry when `alias` is not set (cert-manager's default).
pub const DEFAULT_JKS_ALIAS: &str = "certificate";

/// Outputs written into the Secret besides `tls.crt`, `tls.key` and `ca.crt`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretOutputs {
    /// Extra formats of the key and chain: `CombinedPEM` (`tls-combined.pem`: the private key, then the
    /// chain, for HAProxy and the like) and `DER` (`key.der`: the private key as PKCS#8 DER).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(validation = kube::core::Rule::new("self.all(f, self.exists_one(g, g.type == f.type))").message("each additionalOutputFormats type may appear once"))]
    pub additional_output_formats: Vec<AdditionalOutputFormat>,

    /// Keystores for Java and other consumers of PKCS#12 or JKS, protected by a password from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystores: Option<Box<Keystores>>,

    /// Also write the Tencent Cloud certificate id into the Secret under this data key. TKE's CLB ingress
    /// reads `qcloud_cert_id`: set that, and the same Secret serves the CLB and in-cluster gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[x_kube(validation = kube::core::Rule::new("!(self in ['tls.crt', 'tls.key', 'ca.crt', 'tls-combined.pem', 'key.der', 'keystore.p12', 'truststore.p12', 'keystore.jks', 'truststore.jks'])").message("certificateIdKey must not be one of the keys the operator writes itself"))]
    pub certificate_id_key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct AdditionalOutputFormat {
    #[serde(rename = "type")]
    pub type_: OutputFormatType,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum OutputFormatType {
    /// `key.der`: the private key, PKCS#8 DER.
    #[serde(rename = "DER")]
    Der,
    /// `tls-combined.pem`: the private key, then the chain (leaf first), PEM.
    CombinedPEM,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Keystores {
    /// `keystore.p12` (key and chain), plus `truststore.p12` (the root) when the root is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<Pkcs12Keystore>,
    /// `keystore.jks` (key and chain), plus `truststore.jks` (the root) when the root is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jks: Option<JksKeystore>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs12Keystore {
    /// Write the PKCS#12 keystore (and truststore).
    pub create: bool,
    /// The key of a Secret in this namespace holding the keystore password (UTF-8).
    pub password_secret_ref: SecretKeySelector,
    /// How the file is protected. `Modern2023` (default): PBES2 with PBKDF2-HMAC-SHA-256 and AES-256-CBC,
    /// HMAC-SHA-256 MAC; read by OpenSSL 1.1+/3 and Java 8u301+/11.0.12+/17+. `LegacyDES`:
    /// pbeWithSHAAnd3-KeyTripleDES-CBC and a SHA-1 MAC; read by every Java and OpenSSL version.
    #[serde(default)]
    pub profile: Pkcs12Profile,
}

/// PKCS#12 encryption profiles, named as cert-manager names them. cert-manager's `LegacyRC2` (40-bit RC2
/// over the certificates) is not offered: `LegacyDES` is read by the same old Java versions, and OpenSSL 3
/// reads RC2 only with its legacy provider.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Pkcs12Profile {
    #[default]
    Modern2023,
    LegacyDES,
}

impl Pkcs12Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modern2023 => "Modern2023",
            Self::LegacyDES => "LegacyDES",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JksKeystore {
    /// Write the JKS keystore (and truststore).
    pub create: bool,
    /// The key of a Secret in this namespace holding the keystore password (UTF-8); it protects the store
    /// and the key entry.
    pub password_secret_ref: SecretKeySelector,
    /// The alias of the key entry (default `certificate`). JKS stores aliases in lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub alias: Option<String>,
}

impl JksKeystore {
    /// The alias as written (JKS lower-cases aliases).
    pub fn alias(&self) -> String {
        self.alias
            .as_deref()
            .unwrap_or(DEFAULT_JKS_ALIAS)
            .to_ascii_lowercase()
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The data key holding the password.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl SecretOutputs {
    pub fn wants(&self, format: OutputFormatType) -> bool {
        self.additional_output_formats
            .iter()
            .any(|f| f.type_ == format)
    }

    /// The PKCS#12 keystore, when `create` is set.
    pub fn pkcs12(&self) -> Option<&Pkcs12Keystore> {
        self.keystores
            .as_ref()?
            .pkcs12
            .as_ref()
            .filter(|k| k.create)
    }

    /// The JKS keystore, when `create` is set.
    pub fn jks(&self) -> Option<&JksKeystore> {
        self.keystores.as_ref()?.jks.as_ref().filter(|k| k.create)
    }

    /// The password Secrets the outputs need, deduplicated (a Secret may serve both keystores).
    pub fn password_refs(&self) -> Vec<&SecretKeySelector> {
        let mut refs: Vec<&SecretKeySelector> = self
            .pkcs12()
            .map(|k| &k.password_secret_ref)
            .into_iter()
            .chain(self.jks().map(|k| &k.password_secret_ref))
            .collect();
        refs.dedup();
        refs
    }

    /// Whether the outputs read the Secret `name` (in the resource's namespace).
    pub fn reads_secret(&self, name: &str) -> bool {
        self.password_refs().iter().any(|r| r.name == name)
    }
}
