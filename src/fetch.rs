//! `tencent-cert-operator fetch`: download one certificate with env credentials and turn it into a Secret
//! manifest or PEM files, with no cluster involved.

use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;

use crate::secret::{self, SecretParams};
use tencent_ssl::bundle::{self, BundleError, CertBundle};
use tencent_ssl::credentials::CredentialsError;
use tencent_ssl::{Client, Credentials, ErrorClass, TencentError};

/// Process exit codes, one per kind of failure, so scripts can tell them apart.
pub mod exit_code {
    pub const OK: u8 = 0;
    /// Bad command line (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// Credentials missing, rejected by Tencent, or a clock skew.
    pub const CREDENTIALS: u8 = 3;
    /// Network faults, rate limits, Tencent-side errors: try again later.
    pub const TRANSIENT: u8 = 4;
    /// Unknown certificate, bad request, download not allowed.
    pub const PERMANENT: u8 = 5;
    /// The certificate is not issued (yet).
    pub const NOT_ISSUED: u8 = 6;
    /// The archive has no usable bundle (no key, encrypted key, SM2, …).
    pub const BUNDLE: u8 = 7;
    /// Writing the output failed or would overwrite files.
    pub const OUTPUT: u8 = 8;
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "Tencent Cloud credentials: {0} (set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY)"
    )]
    Credentials(#[from] CredentialsError),
    #[error("{err}; {}", fetch_hint(err))]
    Tencent { err: TencentError },
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// The endpoint settings are refused (e.g. plain http without `--allow-insecure-endpoint`).
    #[error("{0}")]
    Endpoint(#[from] tencent_ssl::client::ClientBuildError),
    #[error("{0}")]
    Output(String),
}

/// The error's hint, for `fetch`: its credentials come from the environment, not from a Secret.
fn fetch_hint(err: &TencentError) -> &'static str {
    match err.reason() {
        tencent_ssl::error::reason::AUTH_FAILED => {
            "check TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY (and TENCENTCLOUD_SESSION_TOKEN for temporary credentials) in this environment, and that the key's CAM policy allows ssl:DownloadCertificate on this certificate"
        }
        _ => err.hint(),
    }
}

impl From<TencentError> for FetchError {
    fn from(err: TencentError) -> Self {
        Self::Tencent { err }
    }
}

impl FetchError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Credentials(_) => exit_code::CREDENTIALS,
            Self::Tencent { err } => match err.class() {
                ErrorClass::Credentials => exit_code::CREDENTIALS,
                ErrorClass::Transient => exit_code::TRANSIENT,
                ErrorClass::Permanent => exit_code::PERMANENT,
                ErrorClass::NotYetIssued => exit_code::NOT_ISSUED,
            },
            Self::Bundle(_) => exit_code::BUNDLE,
            Self::Endpoint(_) => exit_code::USAGE,
            Self::Output(_) => exit_code::OUTPUT,
        }
    }
}

/// Downloads and extracts one certificate.
pub async fn fetch(
    client: &Client,
    credentials: &Credentials,
    certificate_id: &str,
) -> Result<CertBundle, FetchError> {
    let download = client
        .download_certificate(credentials, certificate_id)
        .await?;
    Ok(bundle::extract(&download.zip)?)
}

/// A one-line human summary: never key material.
pub fn summary(certificate_id: &str, bundle: &CertBundle, now: jiff::Timestamp) -> String {
    let meta = &bundle.meta;
    let days_left = (meta.not_after.as_second() - now.as_second()).div_euclid(86_400);
    let validity = if meta.is_expired_at(now) {
        format!("EXPIRED on {}", crate::status::format_time(meta.not_after))
    } else {
        format!(
            "expires {} ({days_left} days)",
            crate::status::format_time(meta.not_after)
        )
    };
    let mut names = meta.dns_names.clone();
    names.extend(meta.ip_addresses.iter().cloned());
    format!(
        "certificate {certificate_id}: subject {}, SANs [{}], {validity}, {} key, issuer {}, sha256 {}",
        meta.subject_cn.as_deref().unwrap_or("-"),
        names.join(", "),
        meta.key_algorithm,
        meta.issuer_cn.as_deref().unwrap_or("-"),
        meta.fingerprint_sha256
    )
}

/// The Secret manifest `fetch` prints. The certificate-name label is the Secret's own name, so a
/// `TencentCertificate` of that name later adopts it seamlessly.
pub fn manifest_secret(
    bundle: &CertBundle,
    certificate_id: &str,
    namespace: &str,
    name: &str,
    include_ca: bool,
) -> Secret {
    secret::desired(
        &SecretParams {
            namespace: namespace.to_string(),
            name: name.to_string(),
            certificate_name: name.to_string(),
            certificate_id: certificate_id.to_string(),
            owner: None,
            template_labels: Default::default(),
            template_annotations: Default::default(),
            include_ca,
            outputs: Default::default(),
        },
        bundle,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

pub fn render(secret: &Secret, format: Format) -> Result<String, FetchError> {
    match format {
        Format::Yaml => serde_saphyr::to_string(secret)
            .map(|yaml| format!("---\n{yaml}"))
            .map_err(|e| FetchError::Output(format!("cannot render YAML: {e}"))),
        Format::Json => serde_json::to_string_pretty(secret)
            .map(|json| format!("{json}\n"))
            .map_err(|e| FetchError::Output(format!("cannot render JSON: {e}"))),
    }
}

/// Writes `tls.crt`, `tls.key` and (when present and wanted) `ca.crt` into `dir`, each mode 0600.
/// Refuses to replace existing files unless `force`; checks all names before writing any.
///
/// Nothing planted at the paths is followed: a symlinked `dir` is refused, a new file is created with
/// `O_EXCL` (which does not follow a symlink), and a replaced file is written to a fresh temporary file in
/// `dir` and renamed over the old name, which replaces a symlink itself, not what it points to.
pub fn write_files(
    dir: &Path,
    bundle: &CertBundle,
    include_ca: bool,
    force: bool,
) -> Result<Vec<PathBuf>, FetchError> {
    let mut files: Vec<(&str, &str)> = vec![
        (secret::TLS_CERT_KEY, &bundle.chain_pem),
        (secret::TLS_PRIVATE_KEY_KEY, &bundle.key_pem),
    ];
    if include_ca && let Some(ca) = &bundle.ca_pem {
        files.push((secret::CA_CERT_KEY, ca));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| FetchError::Output(format!("cannot create {}: {e}", dir.display())))?;
    refuse_symlinked_dir(dir)?;
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|(name, _)| dir.join(name))
            // symlink_metadata: a dangling symlink exists too.
            .filter(|path| path.symlink_metadata().is_ok())
            .map(|path| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(FetchError::Output(format!(
                "refusing to overwrite {} (use --force)",
                existing.join(", ")
            )));
        }
    }
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        let result = if force {
            replace_private(dir, name, contents.as_bytes())
        } else {
            write_new_private(&path, contents.as_bytes())
        };
        result.map_err(|e| FetchError::Output(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// The output directory itself must not be a symlink (one planted there would send the key elsewhere).
fn refuse_symlinked_dir(dir: &Path) -> Result<(), FetchError> {
    let metadata = dir
        .symlink_metadata()
        .map_err(|e| FetchError::Output(format!("cannot read {}: {e}", dir.display())))?;
    if metadata.file_type().is_symlink() {
        return Err(FetchError::Output(format!(
            "refusing to write key files through the symlink {}: pass the directory it points to",
            dir.display()
        )));
    }
    Ok(())
}

/// Creates `path` (never an existing file or symlink) with mode 0600 and writes `contents`.
fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes `contents` to a new temporary file in `dir` and renames it over `dir/name`.
fn replace_private(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let mut attempt = 0;
    let temporary = loop {
        let candidate = dir.join(format!(
            ".{name}.tmp-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match write_new_private(&candidate, contents) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(e) => {
                // Created but not fully written: ours to remove (an existing name is not ours).
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(&candidate);
                }
                return Err(e);
            }
        }
    };
    std::fs::rename(&temporary, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_has_its_own_exit_code() {
        let api = |code: &str| {
            FetchError::from(TencentError::Api {
                action: "DownloadCertificate".into(),
                code: code.into(),
                message: String::new(),
                request_id: "r".into(),
            })
        };
        assert_eq!(
            FetchError::Credentials(CredentialsError::Missing("X")).exit_code(),
            3
        );
        assert_eq!(api("AuthFailure.SignatureFailure").exit_code(), 3);
        assert_eq!(api("FailedOperation.NetworkError").exit_code(), 4);
        assert_eq!(api("FailedOperation.CertificateNotFound").exit_code(), 5);
        assert_eq!(
            api("FailedOperation.InvalidCertificateStatusCode").exit_code(),
            6
        );
        assert_eq!(
            FetchError::Bundle(BundleError::KeyMissing {
                certificate: "x".into()
            })
            .exit_code(),
            7
        );
        assert_eq!(FetchError::Output("x".into()).exit_code(), 8);
    }
}
