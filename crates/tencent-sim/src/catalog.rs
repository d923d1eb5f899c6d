//! The certificates a simulator serves: generated from `--certificate ID[:OPTIONS]` specs, or loaded from a
//! directory of `<id>.zip` archives.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::layout::{self, LayoutOptions, ZipLayout, ZipParts};
use super::pki::{KeyKind, LeafSpec, Pki, PkiError};
use super::state::{SimCertificate, SimLinks};
use tencent_ssl::client::STATUS_ISSUED;

/// Validity of a generated certificate unless `valid-days` says otherwise (Tencent's free certificates).
pub const DEFAULT_VALID_DAYS: i64 = 90;

/// One generated certificate. CLI form: `ID[:OPTION,…]` with options
/// `domain=D` (default `<id>.example.test`), `san=A+B` (more DNS names), `key=rsa2048|rsa4096|p256|p384`
/// (default p256), `no-key` (requested with the user's own CSR: the ZIP has no private key), `expired`,
/// `future` (valid from 10 days ahead), `valid-days=N` (default 90),
/// `status=N` (Tencent status code; default 1, issued), `layout=folders|folders-root|flat`
/// (default `folders-root`, what DownloadCertificate returns today), `with-root` (bundle the root CA too),
/// renewal links `renewed-by=ID` (`RenewOrder`), `replaced-by=ID` (`ReplacedBy`, a reissue),
/// `hosting-renew=ID` (`HostingRenewCertId`), `service-renew=ID` (`ServiceRenewCertificateId`), and list
/// attributes `project=N`, `tag=KEY=VALUE` (repeatable), `alias=TEXT`, `from=BRAND` (default `trustasia`;
/// `upload` marks an uploaded certificate), `package=N` (`PackageType`, default 83: free; see [`crate::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub id: String,
    pub domain: Option<String>,
    pub extra_names: Vec<String>,
    pub key: KeyKind,
    pub include_key: bool,
    pub expired: bool,
    /// Valid from 10 days in the future.
    pub not_yet_valid: bool,
    pub valid_days: i64,
    pub status: i64,
    pub layout: ZipLayout,
    pub include_root: bool,
    /// Forward links only; the backward ones are derived when certificates are stored.
    pub links: SimLinks,
    pub project_id: u64,
    pub tags: Vec<(String, String)>,
    pub alias: Option<String>,
    pub from: Option<String>,
    /// `PackageType` (default 83, the free TrustAsia DV; e.g. `2` for a paid one; none when uploaded).
    pub package_type: Option<String>,
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
            not_yet_valid: false,
            valid_days: DEFAULT_VALID_DAYS,
            status: STATUS_ISSUED,
            layout: ZipLayout::ServerFoldersWithRoot,
            include_root: false,
            links: SimLinks::default(),
            project_id: 0,
            tags: Vec::new(),
            alias: None,
            from: None,
            package_type: None,
        }
    }

    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("{}.example.test", self.id.to_ascii_lowercase()))
    }
}

fn link_target(value: &str) -> Result<Option<String>, String> {
    if is_valid_certificate_id(value) {
        Ok(Some(value.to_string()))
    } else {
        Err(format!("link target {value:?} is not a certificate id"))
    }
}

impl CertificateSpec {
    /// Applies one `name[=value]` option of the CLI form (also used by the JSON form of the control API).
    pub fn apply_option(&mut self, name: &str, value: Option<&str>) -> Result<(), String> {
        match (name, value) {
            ("domain", Some(domain)) if !domain.is_empty() => {
                self.domain = Some(domain.to_string())
            }
            ("san", Some(names)) => {
                self.extra_names = names
                    .split('+')
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect()
            }
            ("key", Some(kind)) => {
                self.key = match kind {
                    "rsa2048" => KeyKind::Rsa2048,
                    "rsa4096" => KeyKind::Rsa4096,
                    "p256" => KeyKind::EcdsaP256,
                    "p384" => KeyKind::EcdsaP384,
                    other => return Err(format!("unknown key kind {other:?}")),
                }
            }
            ("no-key", None) => self.include_key = false,
            ("expired", None) => self.expired = true,
            ("future", None) => self.not_yet_valid = true,
            ("with-root", None) => self.include_root = true,
            ("valid-days", Some(days)) => {
                self.valid_days = days
                    .parse()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| format!("bad valid-days {days:?} (1..=3650)"))?
            }
            ("status", Some(status)) => {
                self.status = status
                    .parse()
                    .map_err(|_| format!("bad status {status:?}"))?
            }
            ("layout", Some(layout)) => {
                self.layout = match layout {
                    "folders" => ZipLayout::ServerFolders,
                    "folders-root" => ZipLayout::ServerFoldersWithRoot,
                    "flat" => ZipLayout::FlatNginx,
                    other => return Err(format!("unknown layout {other:?}")),
                }
            }
            ("renewed-by", Some(id)) => self.links.renew_order = link_target(id)?,
            ("replaced-by", Some(id)) => self.links.replaced_by = link_target(id)?,
            ("hosting-renew", Some(id)) => self.links.hosting_renew_cert_id = link_target(id)?,
            ("service-renew", Some(id)) => {
                self.links.service_renew_certificate_id = link_target(id)?
            }
            ("project", Some(project)) => {
                self.project_id = project
                    .parse()
                    .map_err(|_| format!("bad project id {project:?}"))?
            }
            ("tag", Some(tag)) => match tag.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    self.tags.push((key.to_string(), value.to_string()))
                }
                _ => return Err(format!("expected tag=KEY=VALUE, got tag={tag}")),
            },
            ("alias", Some(alias)) => self.alias = Some(alias.to_string()),
            ("from", Some(from)) if !from.is_empty() => self.from = Some(from.to_string()),
            ("package", Some(package)) if !package.is_empty() => {
                self.package_type = Some(package.to_string())
            }
            _ => {
                let option = match value {
                    Some(value) => format!("{name}={value}"),
                    None => name.to_string(),
                };
                return Err(format!("unknown certificate option {option:?}"));
            }
        }
        Ok(())
    }

    /// The JSON form used by `POST /_sim/certificates`: either the CLI string, or an object with `id` and
    /// the CLI options as keys: `{"id": "new1", "domain": "shop.example.com", "san": ["www.shop.example.com"],
    /// "status": 0, "no-key": true, "renewed-by": "new2", "tag": {"env": "prod"}}`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        use serde_json::Value;
        let object = match value {
            Value::String(text) => return text.parse(),
            Value::Object(object) => object,
            _ => return Err("expected a certificate spec: a string or an object".to_string()),
        };
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| "the spec has no \"id\" string".to_string())?;
        if !is_valid_certificate_id(id) {
            return Err(format!(
                "certificate id {id:?} must be 1-32 ASCII letters and digits"
            ));
        }
        let mut spec = CertificateSpec::new(id);
        for (name, value) in object.iter().filter(|(name, _)| *name != "id") {
            match (name.as_str(), value) {
                (_, Value::Bool(true)) => spec.apply_option(name, None)?,
                // A flag set to false is the default; still refuse names that are not flags.
                (_, Value::Bool(false)) => spec.clone().apply_option(name, None)?,
                (_, Value::String(text)) => spec.apply_option(name, Some(text))?,
                (_, Value::Number(number)) => spec.apply_option(name, Some(&number.to_string()))?,
                ("san", Value::Array(names)) => {
                    let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
                    let names = names.ok_or_else(|| "san must list strings".to_string())?;
                    spec.apply_option("san", Some(&names.join("+")))?
                }
                ("tag", Value::Object(tags)) => {
                    for (key, value) in tags {
                        let value = value
                            .as_str()
                            .ok_or_else(|| format!("tag {key:?} must have a string value"))?;
                        spec.apply_option("tag", Some(&format!("{key}={value}")))?
                    }
                }
                _ => return Err(format!("option {name:?} has an unsupported value {value}")),
            }
        }
        Ok(spec)
    }

    /// The validity window at `now`.
    pub fn validity(&self, now: jiff::Timestamp) -> (jiff::Timestamp, jiff::Timestamp) {
        if self.expired {
            (now - days(100), now - days(10))
        } else if self.not_yet_valid {
            (now + days(10), now + days(10 + self.valid_days))
        } else {
            (now - days(1), now + days(self.valid_days))
        }
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
            spec.apply_option(name, value)
                .map_err(|why| format!("{why} in {text:?}"))?;
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
    if specs.is_empty() {
        return finish(Vec::new(), zip_dir);
    }
    build_with(&Pki::generate(KeyKind::EcdsaP256)?, specs, zip_dir)
}

/// Like [`build`], with the CA the caller keeps (to issue renewals later under the same root).
pub fn build_with(
    pki: &Pki,
    specs: &[CertificateSpec],
    zip_dir: Option<&Path>,
) -> Result<Vec<SimCertificate>, CatalogError> {
    let certificates = specs
        .iter()
        .map(|spec| generate(pki, spec))
        .collect::<Result<Vec<_>, _>>()?;
    finish(certificates, zip_dir)
}

fn finish(
    mut certificates: Vec<SimCertificate>,
    zip_dir: Option<&Path>,
) -> Result<Vec<SimCertificate>, CatalogError> {
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

/// Now, in whole seconds: X.509 and Tencent's times have no fractions, so the metadata the simulator
/// reports equals the dates in the certificate it serves.
pub(crate) fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Generates one certificate with the validity its spec asks for.
pub fn generate(pki: &Pki, spec: &CertificateSpec) -> Result<SimCertificate, CatalogError> {
    let (not_before, not_after) = spec.validity(now_seconds());
    generate_between(pki, spec, not_before, not_after)
}

/// Generates one certificate valid from `not_before` to `not_after`.
pub fn generate_between(
    pki: &Pki,
    spec: &CertificateSpec,
    not_before: jiff::Timestamp,
    not_after: jiff::Timestamp,
) -> Result<SimCertificate, CatalogError> {
    let domain = spec.domain();
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
        from: spec.from.clone().unwrap_or_else(|| "trustasia".to_string()),
        fingerprint_sha1: Some(sha1_hex(&leaf.cert_der)),
        zip,
        links: spec.links.clone(),
        project_id: spec.project_id,
        tags: spec.tags.clone(),
        alias: spec.alias.clone().unwrap_or_default(),
        inserted_at: jiff::Timestamp::now(),
        spec: Some(spec.clone()),
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
            links: SimLinks::default(),
            project_id: 0,
            tags: Vec::new(),
            alias: String::new(),
            inserted_at: jiff::Timestamp::now(),
            spec: None,
        };
        if let Ok(bundle) = tencent_ssl::bundle::extract(&certificate.zip) {
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
    fn renewal_links_and_list_attributes_parse() {
        let spec: CertificateSpec =
            "old1:renewed-by=new1,replaced-by=re1,hosting-renew=host1,service-renew=svc1,project=7,tag=env=prod,tag=team=web,alias=shop,from=upload,future,valid-days=30"
                .parse()
                .unwrap();
        assert_eq!(spec.links.renew_order.as_deref(), Some("new1"));
        assert_eq!(spec.links.replaced_by.as_deref(), Some("re1"));
        assert_eq!(spec.links.hosting_renew_cert_id.as_deref(), Some("host1"));
        assert_eq!(
            spec.links.service_renew_certificate_id.as_deref(),
            Some("svc1")
        );
        assert_eq!(spec.project_id, 7);
        assert_eq!(
            spec.tags,
            vec![
                ("env".to_string(), "prod".to_string()),
                ("team".to_string(), "web".to_string())
            ]
        );
        assert_eq!(spec.alias.as_deref(), Some("shop"));
        assert_eq!(spec.from.as_deref(), Some("upload"));
        let now = now_seconds();
        let (not_before, not_after) = spec.validity(now);
        assert_eq!(not_before, now + days(10));
        assert_eq!(not_after, now + days(40));
    }

    #[test]
    fn json_specs_use_the_cli_option_names() {
        use serde_json::json;
        let from_object = CertificateSpec::from_json(&json!({
            "id": "new1",
            "domain": "shop.example.com",
            "san": ["www.shop.example.com", "api.shop.example.com"],
            "status": 0,
            "no-key": true,
            "expired": false,
            "renewed-by": "new2",
            "tag": {"env": "prod"},
        }))
        .unwrap();
        let from_text: CertificateSpec =
            "new1:domain=shop.example.com,san=www.shop.example.com+api.shop.example.com,status=0,no-key,renewed-by=new2,tag=env=prod"
                .parse()
                .unwrap();
        assert_eq!(from_object, from_text);
        assert_eq!(
            CertificateSpec::from_json(&json!("new1:status=0")).unwrap(),
            "new1:status=0".parse::<CertificateSpec>().unwrap()
        );
        for bad in [
            json!({"domain": "x.test"}),
            json!({"id": "bad id"}),
            json!({"id": "a1", "frobnicate": true}),
            json!({"id": "a1", "frobnicate": false}),
            json!({"id": "a1", "san": [1]}),
            json!({"id": "a1", "key": ["p256"]}),
            json!(42),
        ] {
            assert!(CertificateSpec::from_json(&bad).is_err(), "{bad}");
        }
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
            "abc:renewed-by=bad+id",
            "abc:replaced-by=",
            "abc:valid-days=0",
            "abc:project=x",
            "abc:tag=novalue",
            "abc:tag==v",
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
