//! Builds the ZIP archives that Tencent Cloud's `DownloadCertificate` returns, in each known era's layout
//! (see `tencent-api.md` §3), from PEM parts. Used by the simulator and by the bundle extraction tests.
//!
//! File names use the certificate's main domain `D`. How Tencent writes a wildcard's `*` in a file name is
//! unknown; this module guesses `_` (`*.example.com` → `_.example.com`), which is why the extractor must never
//! rely on names.

use std::io::{Cursor, Write as _};

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

use crate::pki::{IssuedCert, Pki};

/// Content of the placeholder `keystorePass.txt` files. The real ones hold the PFX/JKS password, which the
/// operator must never copy anywhere; tests check that this string never reaches a bundle.
pub const KEYSTORE_PASSWORD_PLACEHOLDER: &str = "simulated-keystore-password-do-not-copy";

/// Placeholder bytes for the IIS `.pfx` and Tomcat `.jks` keystores, which extraction ignores.
const KEYSTORE_PLACEHOLDER: &[u8] =
    b"\x30\x82placeholder keystore: binary PKCS#12/JKS in real ZIPs\x00\x01";

/// A ZIP layout, by era.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZipLayout {
    /// Era A (≤2020): root `D.csr`; `Nginx/`, `Apache/`, `IIS/`, `Tomcat/` folders with numbered files.
    ServerFolders,
    /// Era B (current API): era A plus root-level `D.key`, `D.pem` (full chain) and `D.csr`.
    ServerFoldersWithRoot,
    /// Era C (console per-server download): one `D_nginx/` folder with `D_bundle.crt`, `D_bundle.pem`,
    /// `D.key`, `D.csr`.
    FlatNginx,
}

impl ZipLayout {
    /// Every layout, for table-driven tests.
    pub const ALL: [ZipLayout; 3] = [
        Self::ServerFolders,
        Self::ServerFoldersWithRoot,
        Self::FlatNginx,
    ];
}

/// The PEM parts a ZIP is built from.
#[derive(Clone, PartialEq, Eq)]
pub struct ZipParts {
    /// The certificate's main domain, used in file names.
    pub domain: String,
    /// The leaf certificate PEM.
    pub leaf_pem: String,
    /// Intermediate CA PEMs, issuer of the leaf first.
    pub intermediates_pem: Vec<String>,
    /// The root CA PEM, appended after the intermediates in the chain files when present.
    pub root_pem: Option<String>,
    /// The private key PEM. `None` models a certificate requested with the user's own CSR: Tencent never had
    /// the key, so the ZIP has no key files and no IIS/Tomcat keystores.
    pub key_pem: Option<String>,
    /// The CSR PEM (Tencent ships it only for keys it generated).
    pub csr_pem: Option<String>,
}

impl ZipParts {
    /// Parts for `leaf` issued by `pki`: intermediate, root, key and CSR included.
    pub fn from_pki(domain: &str, pki: &Pki, leaf: &IssuedCert) -> Self {
        Self {
            domain: domain.to_owned(),
            leaf_pem: leaf.cert_pem.clone(),
            intermediates_pem: vec![pki.intermediate.cert_pem.clone()],
            root_pem: Some(pki.root.cert_pem.clone()),
            key_pem: Some(leaf.key_pem.clone()),
            csr_pem: leaf.csr_pem.clone(),
        }
    }

    /// Leaf, intermediates, then the root when present.
    fn full_chain(&self) -> String {
        join_pems(std::iter::once(&self.leaf_pem).chain(self.ca_pems()))
    }

    /// Intermediates, then the root when present (Apache's misnamed `root_bundle`).
    fn ca_chain(&self) -> String {
        join_pems(self.ca_pems())
    }

    fn ca_pems(&self) -> impl Iterator<Item = &String> {
        self.intermediates_pem.iter().chain(self.root_pem.as_ref())
    }
}

// The key is secret: never print it.
impl std::fmt::Debug for ZipParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipParts")
            .field("domain", &self.domain)
            .field("intermediates", &self.intermediates_pem.len())
            .field("root", &self.root_pem.is_some())
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("csr", &self.csr_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Text encoding variations seen in the wild, applied to PEM entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayoutOptions {
    /// Write CRLF line endings.
    pub crlf: bool,
    /// Start each PEM entry with a UTF-8 byte order mark.
    pub utf8_bom: bool,
}

/// One file of a ZIP.
#[derive(Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Path inside the archive (`/` separated).
    pub name: String,
    /// File contents.
    pub contents: Vec<u8>,
    /// Whether the contents are PEM text (subject to [`LayoutOptions`]).
    pub is_pem: bool,
}

impl std::fmt::Debug for ZipEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipEntry")
            .field("name", &self.name)
            .field("len", &self.contents.len())
            .finish_non_exhaustive()
    }
}

/// Why a ZIP could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("writing the ZIP failed: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing a ZIP entry failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The file-name stem for `domain` (wildcard `*` → `_`, a guess: see the module docs).
pub fn file_stem(domain: &str) -> String {
    domain.replace('*', "_")
}

/// The files of `layout` for `parts`, in archive order, before [`LayoutOptions`] are applied.
pub fn entries(layout: ZipLayout, parts: &ZipParts) -> Vec<ZipEntry> {
    let stem = file_stem(&parts.domain);
    let mut files = Files::default();
    match layout {
        ZipLayout::ServerFolders | ZipLayout::ServerFoldersWithRoot => {
            if let Some(csr) = &parts.csr_pem {
                files.pem(format!("{stem}.csr"), csr.clone());
            }
            if layout == ZipLayout::ServerFoldersWithRoot {
                if let Some(key) = &parts.key_pem {
                    files.pem(format!("{stem}.key"), key.clone());
                }
                files.pem(format!("{stem}.pem"), parts.full_chain());
            }
            files.pem(format!("Nginx/1_{stem}_bundle.crt"), parts.full_chain());
            if let Some(key) = &parts.key_pem {
                files.pem(format!("Nginx/2_{stem}.key"), key.clone());
            }
            let ca_chain = parts.ca_chain();
            if !ca_chain.is_empty() {
                files.pem("Apache/1_root_bundle.crt".to_owned(), ca_chain);
            }
            files.pem(format!("Apache/2_{stem}.crt"), parts.leaf_pem.clone());
            if let Some(key) = &parts.key_pem {
                files.pem(format!("Apache/3_{stem}.key"), key.clone());
                // Keystores need the key, so they exist only when Tencent generated it.
                files.binary(format!("IIS/{stem}.pfx"), KEYSTORE_PLACEHOLDER);
                files.binary(
                    "IIS/keystorePass.txt".to_owned(),
                    KEYSTORE_PASSWORD_PLACEHOLDER.as_bytes(),
                );
                files.binary(format!("Tomcat/{stem}.jks"), KEYSTORE_PLACEHOLDER);
                files.binary(
                    "Tomcat/keystorePass.txt".to_owned(),
                    KEYSTORE_PASSWORD_PLACEHOLDER.as_bytes(),
                );
            }
        }
        ZipLayout::FlatNginx => {
            let folder = format!("{stem}_nginx");
            files.pem(format!("{folder}/{stem}_bundle.crt"), parts.full_chain());
            files.pem(format!("{folder}/{stem}_bundle.pem"), parts.full_chain());
            if let Some(key) = &parts.key_pem {
                files.pem(format!("{folder}/{stem}.key"), key.clone());
            }
            if let Some(csr) = &parts.csr_pem {
                files.pem(format!("{folder}/{stem}.csr"), csr.clone());
            }
        }
    }
    files.0
}

/// Builds the ZIP bytes of `layout` for `parts` (deflate-compressed, folders as directory entries).
pub fn build_zip(
    layout: ZipLayout,
    parts: &ZipParts,
    options: &LayoutOptions,
) -> Result<Vec<u8>, LayoutError> {
    let entries: Vec<ZipEntry> = entries(layout, parts)
        .into_iter()
        .map(|entry| {
            if entry.is_pem {
                apply_options(entry, options)
            } else {
                entry
            }
        })
        .collect();
    write_zip(&entries)
}

/// Writes `entries` into a deflate-compressed ZIP, adding a directory entry before each new folder.
pub fn write_zip(entries: &[ZipEntry]) -> Result<Vec<u8>, LayoutError> {
    let file_options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let mut folders: Vec<&str> = Vec::new();
    for entry in entries {
        if let Some((folder, _)) = entry.name.rsplit_once('/')
            && !folders.contains(&folder)
        {
            writer.add_directory(format!("{folder}/"), file_options)?;
            folders.push(folder);
        }
        writer.start_file(entry.name.as_str(), file_options)?;
        writer.write_all(&entry.contents)?;
    }
    Ok(writer.finish()?.into_inner())
}

fn apply_options(mut entry: ZipEntry, options: &LayoutOptions) -> ZipEntry {
    if options.crlf {
        let mut converted = Vec::with_capacity(entry.contents.len() * 41 / 40);
        for &byte in &entry.contents {
            if byte == b'\n' {
                converted.push(b'\r');
            }
            converted.push(byte);
        }
        entry.contents = converted;
    }
    if options.utf8_bom {
        entry.contents.splice(0..0, *b"\xEF\xBB\xBF");
    }
    entry
}

fn join_pems<'a>(pems: impl Iterator<Item = &'a String>) -> String {
    let mut joined = String::new();
    for pem in pems {
        joined.push_str(pem);
        if !pem.ends_with('\n') {
            joined.push('\n');
        }
    }
    joined
}

#[derive(Default)]
struct Files(Vec<ZipEntry>);

impl Files {
    fn pem(&mut self, name: String, text: String) {
        self.0.push(ZipEntry {
            name,
            contents: text.into_bytes(),
            is_pem: true,
        });
    }

    fn binary(&mut self, name: String, contents: &[u8]) {
        self.0.push(ZipEntry {
            name,
            contents: contents.to_vec(),
            is_pem: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn sample_parts(with_key: bool) -> ZipParts {
        ZipParts {
            domain: "*.example.test".to_owned(),
            leaf_pem: "LEAF\n".to_owned(),
            intermediates_pem: vec!["INTERMEDIATE\n".to_owned()],
            root_pem: Some("ROOT".to_owned()),
            key_pem: with_key.then(|| "KEY\n".to_owned()),
            csr_pem: Some("CSR\n".to_owned()),
        }
    }

    fn names(layout: ZipLayout, parts: &ZipParts) -> Vec<String> {
        entries(layout, parts)
            .into_iter()
            .map(|entry| entry.name)
            .collect()
    }

    #[test]
    fn server_folders_names() {
        assert_eq!(
            names(ZipLayout::ServerFolders, &sample_parts(true)),
            [
                "_.example.test.csr",
                "Nginx/1__.example.test_bundle.crt",
                "Nginx/2__.example.test.key",
                "Apache/1_root_bundle.crt",
                "Apache/2__.example.test.crt",
                "Apache/3__.example.test.key",
                "IIS/_.example.test.pfx",
                "IIS/keystorePass.txt",
                "Tomcat/_.example.test.jks",
                "Tomcat/keystorePass.txt",
            ]
        );
    }

    #[test]
    fn server_folders_with_root_adds_root_files() {
        let names = names(ZipLayout::ServerFoldersWithRoot, &sample_parts(true));
        for expected in [
            "_.example.test.key",
            "_.example.test.pem",
            "_.example.test.csr",
            "Nginx/2__.example.test.key",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn flat_nginx_names() {
        assert_eq!(
            names(ZipLayout::FlatNginx, &sample_parts(true)),
            [
                "_.example.test_nginx/_.example.test_bundle.crt",
                "_.example.test_nginx/_.example.test_bundle.pem",
                "_.example.test_nginx/_.example.test.key",
                "_.example.test_nginx/_.example.test.csr",
            ]
        );
    }

    #[test]
    fn no_key_means_no_key_files_and_no_keystores() {
        for layout in ZipLayout::ALL {
            let names = names(layout, &sample_parts(false));
            assert!(
                names.iter().all(|name| !name.ends_with(".key")
                    && !name.starts_with("IIS/")
                    && !name.starts_with("Tomcat/")),
                "{layout:?}: {names:?}"
            );
        }
    }

    #[test]
    fn chain_files_hold_leaf_then_chain_then_root() {
        let entries = entries(ZipLayout::ServerFolders, &sample_parts(true));
        let text = |name: &str| {
            entries
                .iter()
                .find(|entry| entry.name == name)
                .map(|entry| String::from_utf8_lossy(&entry.contents).into_owned())
        };
        assert_eq!(
            text("Nginx/1__.example.test_bundle.crt").as_deref(),
            Some("LEAF\nINTERMEDIATE\nROOT\n")
        );
        assert_eq!(
            text("Apache/1_root_bundle.crt").as_deref(),
            Some("INTERMEDIATE\nROOT\n")
        );
        assert_eq!(
            text("Apache/2__.example.test.crt").as_deref(),
            Some("LEAF\n")
        );
    }

    #[test]
    fn build_zip_applies_crlf_and_bom_to_pem_entries_only() {
        let options = LayoutOptions {
            crlf: true,
            utf8_bom: true,
        };
        let bytes =
            build_zip(ZipLayout::ServerFolders, &sample_parts(true), &options).expect("zip");
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("readable zip");
        let mut read = |name: &str| {
            let mut contents = Vec::new();
            archive
                .by_name(name)
                .expect("entry")
                .read_to_end(&mut contents)
                .expect("read");
            contents
        };
        assert_eq!(read("Apache/2__.example.test.crt"), b"\xEF\xBB\xBFLEAF\r\n");
        assert_eq!(
            read("IIS/keystorePass.txt"),
            KEYSTORE_PASSWORD_PLACEHOLDER.as_bytes()
        );
        assert!(
            archive
                .file_names()
                .any(|name| name.is_ok_and(|name| name == "Nginx/"))
        );
    }

    #[test]
    fn debug_redacts_key() {
        let text = format!("{:?}", sample_parts(true));
        assert!(!text.contains("KEY\\n") && text.contains("<redacted>"));
    }
}
