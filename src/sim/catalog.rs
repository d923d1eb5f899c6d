//! The certificates a simulator serves: generated from `--certificate ID[:OPTIONS]` specs, or loaded from a
//! directory of `<id>.zip` archives.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::layout::{self, LayoutOptions, ZipLayout, ZipParts};
use super::pki::{KeyKind, LeafSpec, Pki, PkiError};
use super::state::SimCertificate;
use crate::tencent::client::STATUS_ISSUED;

/// One generated certificate. CLI form: `ID[:OPTION,…]` with options
/// `domain=D` (default `<id>.example.test`), `san=A+B` (more DNS names), `key=rsa2048|rsa4096|p256|p384`
/// (default p256), `no-key` (requested with the user's own CSR: the ZIP has no private key), `expired`,
/// `status=N` (Tencent status code; default 1, issued), `layout=folders|folders-root|flat`
/// (default `folders-root`, what DownloadCertificate returns today), `with-root` (bundle the root CA too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub id: String,
    pub domain: Option<String>,
    pub extra_names: Vec<String>,
    pub key: KeyKind,
    pub include_key: bool,
    pub expired: bool,
    pub status: i64,
    pub layout: ZipLayout,
    pub include_root: bool,
}

impl CertificateSpec {
    /// An issued, valid ECDSA certificate for `<id>.example.test`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            domain: None,
            extra_names: Vec::new(),
            key: KeyKind::EcdsaP256,
            include_key: true,
            expired: false,
            status: STATUS_ISSUED,
            layout: ZipLayout::ServerFoldersWithRoot,
            include_root: false,
        }
    }

    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("{}.example.test", self.id.to_ascii_lowercase()))
    }
}

/// Tencent certificate ids are short alphanumeric strings (e.g. `aBcD1234`).
pub fn is_valid_certificate_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

impl FromStr for CertificateSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, options) = match text.split_once(':') {
            Some((id, options)) => (id, Some(options)),
            None => (text, None),
        };
        if !is_valid_certificate_id(id) {
            return Err(format!(
                "certificate id {id:?} must be 1-32 ASCII letters and digits"
            ));
        }
        let mut spec = CertificateSpec::new(id);
        for option in options.into_iter().flat_map(|o| o.split(',')) {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (option, None),
            };
            match (name, value) {
                ("domain", Some(domain)) if !domain.is_empty() => {
                    spec.domain = Some(domain.to_string())
                }
                ("san", Some(names)) => {
                    spec.extra_names = names
                        .split('+')
                        .filter(|n| !n.is_empty())
                        .map(String::from)
                        .collect()
                }
                ("key", Some(kind)) => {
                    spec.key = match kind {
                        "rsa2048" => KeyKind::Rsa2048,
                        "rsa4096" => KeyKind::Rsa4096,
                        "p256" => KeyKind::EcdsaP256,
                        "p384" => KeyKind::EcdsaP384,
                        other => return Err(format!("unknown key kind {other:?} in {text:?}")),
                    }
                }
                ("no-key", None) => spec.include_key = false,
                ("expired", None) => spec.expired = true,
                ("with-root", None) => spec.include_root = true,
                ("status", Some(status)) => {
                    spec.status = status
                        .parse()
                        .map_err(|_| format!("bad status {status:?} in {text:?}"))?
                }
                ("layout", Some(layout)) => {
                    spec.layout = match layout {
                        "folders" => ZipLayout::ServerFolders,
                        "folders-root" => ZipLayout::ServerFoldersWithRoot,
                        "flat" => ZipLayout::FlatNginx,
                        other => return Err(format!("unknown layout {other:?} in {text:?}")),
                    }
                }
                _ => return Err(format!("unknown certificate option {option:?} in {text:?}")),
            }
        }
        Ok(spec)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("generating test certificates failed: {0}")]
    Pki(#[from] PkiError),
    #[error("building the ZIP for {id} failed: {detail}")]
    Zip { id: String, detail: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the file name must be <certificate id>.zip with an alphanumeric id")]
    BadZipName { path: PathBuf },
    #[error("certificate {0} is defined twice")]
    Duplicate(String),
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

fn sha1_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// Generates every spec'd certificate under one test CA, then adds the archives of `zip_dir`.
pub fn build(
    specs: &[CertificateSpec],
    zip_dir: Option<&Path>,
) -> Result<Vec<SimCertificate>, CatalogError> {
    let mut certificates = Vec::new();
    if !specs.is_empty() {
        let pki = Pki::generate(KeyKind::EcdsaP256)?;
        for spec in specs {
            certificates.push(generate(&pki, spec)?);
        }
    }
    if let Some(dir) = zip_dir {
        certificates.extend(load_zip_dir(dir)?);
    }
    let mut seen = std::collections::HashSet::new();
    for certificate in &certificates {
        if !seen.insert(certificate.id.clone()) {
            return Err(CatalogError::Duplicate(certificate.id.clone()));
        }
    }
    Ok(certificates)
}

fn generate(pki: &Pki, spec: &CertificateSpec) -> Result<SimCertificate, CatalogError> {
    let domain = spec.domain();
    let now = jiff::Timestamp::now();
    let (not_before, not_after) = if spec.expired {
        (now - days(100), now - days(10))
    } else {
        (now - days(1), now + days(90))
    };
    let mut domains = vec![domain.clone()];
    domains.extend(spec.extra_names.iter().cloned());
    let leaf = pki.issue_leaf(&LeafSpec {
        domains,
        ip_addresses: Vec::new(),
        key: spec.key,
        not_before,
        not_after,
    })?;
    let parts = ZipParts {
        domain: domain.clone(),
        leaf_pem: leaf.cert_pem.clone(),
        intermediates_pem: vec![pki.intermediate.cert_pem.clone()],
        root_pem: spec.include_root.then(|| pki.root.cert_pem.clone()),
        key_pem: spec.include_key.then(|| leaf.key_pem.clone()),
        csr_pem: leaf.csr_pem.clone(),
    };
    let zip = layout::build_zip(spec.layout, &parts, &LayoutOptions::default()).map_err(|e| {
        CatalogError::Zip {
            id: spec.id.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok(SimCertificate {
        id: spec.id.clone(),
        domain,
        subject_alt_names: spec.extra_names.clone(),
        status: spec.status,
        not_before: Some(not_before),
        not_after: Some(not_after),
        from: "trustasia".to_string(),
        fingerprint_sha1: Some(sha1_hex(&leaf.cert_der)),
        zip,
    })
}

/// Serves each `<id>.zip` as it is; its metadata comes from the archive when it can be read.
fn load_zip_dir(dir: &Path) -> Result<Vec<SimCertificate>, CatalogError> {
    let read_err = |path: &Path, source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut certificates = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "zip"))
        .collect();
    entries.sort();
    for path in entries {
        let id = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|id| is_valid_certificate_id(id))
            .ok_or_else(|| CatalogError::BadZipName { path: path.clone() })?
            .to_string();
        let zip = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
        let mut certificate = SimCertificate {
            id: id.clone(),
            domain: format!("{}.example.test", id.to_ascii_lowercase()),
            subject_alt_names: Vec::new(),
            status: STATUS_ISSUED,
            not_before: None,
            not_after: None,
            from: "upload".to_string(),
            fingerprint_sha1: None,
            zip,
        };
        if let Ok(bundle) = crate::bundle::extract(&certificate.zip) {
            let meta = &bundle.meta;
            if let Some(cn) = meta.subject_cn.clone() {
                certificate.domain = cn;
            }
            certificate.subject_alt_names = meta
                .dns_names
                .iter()
                .filter(|name| **name != certificate.domain)
                .cloned()
                .collect();
            certificate.not_before = Some(meta.not_before);
            certificate.not_after = Some(meta.not_after);
        }
        certificates.push(certificate);
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_specs_parse_every_option() {
        let spec: CertificateSpec =
            "aBcD1234:domain=shop.example.com,san=www.shop.example.com+api.shop.example.com,key=rsa2048,no-key,expired,status=3,layout=flat,with-root"
                .parse()
                .unwrap();
        assert_eq!(spec.id, "aBcD1234");
        assert_eq!(spec.domain(), "shop.example.com");
        assert_eq!(
            spec.extra_names,
            vec!["www.shop.example.com", "api.shop.example.com"]
        );
        assert_eq!(spec.key, KeyKind::Rsa2048);
        assert!(!spec.include_key && spec.expired && spec.include_root);
        assert_eq!(spec.status, 3);
        assert_eq!(spec.layout, ZipLayout::FlatNginx);
        let plain: CertificateSpec = "demo0001".parse().unwrap();
        assert_eq!(plain, CertificateSpec::new("demo0001"));
        assert_eq!(plain.domain(), "demo0001.example.test");
    }

    #[test]
    fn bad_certificate_specs_are_rejected() {
        for bad in [
            "",
            "bad id",
            "a/b",
            "abc:key=dsa",
            "abc:layout=iis",
            "abc:status=x",
            "abc:frobnicate",
            "abc:domain=",
        ] {
            assert!(bad.parse::<CertificateSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zip_directories_are_served_with_metadata_read_from_the_archives() {
        let dir = std::env::temp_dir().join(format!("tco-zipdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = build(&[CertificateSpec::new("src1")], None).unwrap();
        std::fs::write(dir.join("upload01.zip"), &generated[0].zip).unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let loaded = build(&[], Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, "upload01");
        assert_eq!(loaded[0].domain, "src1.example.test");
        assert_eq!(
            loaded[0].not_after.map(|t| t.as_second()),
            generated[0].not_after.map(|t| t.as_second())
        );
        assert_eq!(loaded[0].zip, generated[0].zip);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let spec = CertificateSpec::new("dup1");
        let err = build(&[spec.clone(), spec], None).unwrap_err();
        assert!(matches!(err, CatalogError::Duplicate(id) if id == "dup1"));
    }

    #[test]
    fn generated_certificates_carry_metadata_and_a_zip() {
        let mut expired = CertificateSpec::new("old1");
        expired.expired = true;
        let built = build(&[CertificateSpec::new("new1"), expired], None).unwrap();
        let now = jiff::Timestamp::now();
        assert!(built[0].not_after.unwrap() > now);
        assert!(built[1].not_after.unwrap() < now);
        assert!(built[0].zip.starts_with(b"PK"));
        assert_eq!(built[0].fingerprint_sha1.as_ref().unwrap().len(), 40);
    }
}
