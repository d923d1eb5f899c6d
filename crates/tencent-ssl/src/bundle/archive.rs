//! Reading the ZIP in memory within hard limits. Sizes declared in headers are never trusted: every entry is
//! read through a bounded reader, and the actual output is checked against the limits.

use std::io::{Cursor, Read as _};

use zip::ZipArchive;

use super::ExtractLimits;
use super::error::InvalidBundleDetail;

/// Output bytes allowed on top of `compressed size × max ratio`, so tiny entries are not flagged.
const RATIO_SLACK_BYTES: u64 = 16 * 1024;
/// Longest entry name shown in messages.
const MAX_DISPLAYED_NAME_CHARS: usize = 120;

/// A file read from the archive.
pub(crate) struct Entry {
    /// The entry name, made printable for messages.
    pub(crate) name: String,
    pub(crate) contents: Vec<u8>,
}

/// Reads every entry that can hold PEM text. Skipped without being decompressed: directories, symlinks,
/// keystores (`.pfx`, `.p12`, `.jks`), CSRs, `keystorePass.txt` (a password: never read, never copied), and
/// nested archives. Nested archives are ignored rather than opened: Tencent never nests, and opening them
/// would multiply the zip-bomb surface; a ZIP whose certificates are only inside a nested one therefore
/// fails with "no certificate".
pub(crate) fn read_entries(
    zip_bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<Vec<Entry>, InvalidBundleDetail> {
    if zip_bytes.len() > limits.max_archive_bytes {
        return Err(InvalidBundleDetail::ArchiveTooLarge {
            size: zip_bytes.len(),
            max: limits.max_archive_bytes,
        });
    }
    let mut archive =
        ZipArchive::new(Cursor::new(zip_bytes)).map_err(|error| InvalidBundleDetail::NotZip {
            reason: error.to_string(),
        })?;
    if archive.len() > limits.max_entries {
        return Err(InvalidBundleDetail::TooManyEntries {
            count: archive.len(),
            max: limits.max_entries,
        });
    }
    if archive.is_empty() {
        return Err(InvalidBundleDetail::Empty);
    }

    let mut entries = Vec::new();
    let mut total_bytes: u64 = 0;
    for index in 0..archive.len() {
        let (name, compressed_size) = {
            let metadata =
                archive
                    .by_index_data(index)
                    .map_err(|error| InvalidBundleDetail::NotZip {
                        reason: error.to_string(),
                    })?;
            let name = display_name(metadata.name_raw());
            if metadata.encrypted() {
                return Err(InvalidBundleDetail::EncryptedEntry { entry: name });
            }
            if metadata.enclosed_name().is_none() || is_unsafe_name(metadata.name_raw()) {
                return Err(InvalidBundleDetail::UnsafeEntryName { entry: name });
            }
            let raw_name = String::from_utf8_lossy(metadata.name_raw());
            if metadata.is_dir() || metadata.is_symlink() || is_ignored_name(&raw_name) {
                continue;
            }
            (name, metadata.compressed_size())
        };

        let entry_budget = limits
            .max_entry_bytes
            .min(limits.max_total_bytes.saturating_sub(total_bytes));
        let mut contents = Vec::new();
        let mut file =
            archive
                .by_index(index)
                .map_err(|error| InvalidBundleDetail::DamagedEntry {
                    entry: name.clone(),
                    reason: error.to_string(),
                })?;
        // One byte past the budget tells "exactly at the limit" from "over it".
        (&mut file)
            .take(entry_budget.saturating_add(1))
            .read_to_end(&mut contents)
            .map_err(|error| InvalidBundleDetail::DamagedEntry {
                entry: name.clone(),
                reason: error.to_string(),
            })?;
        drop(file);

        let read = u64::try_from(contents.len()).unwrap_or(u64::MAX);
        if read > limits.max_entry_bytes {
            return Err(InvalidBundleDetail::EntryTooLarge {
                entry: name,
                max: limits.max_entry_bytes,
            });
        }
        total_bytes = total_bytes.saturating_add(read);
        if total_bytes > limits.max_total_bytes {
            return Err(InvalidBundleDetail::TotalTooLarge {
                max: limits.max_total_bytes,
            });
        }
        let allowed = compressed_size
            .saturating_mul(limits.max_compression_ratio)
            .saturating_add(RATIO_SLACK_BYTES);
        if read > allowed {
            return Err(InvalidBundleDetail::CompressionRatio {
                entry: name,
                max_ratio: limits.max_compression_ratio,
            });
        }
        if is_archive(&contents) {
            continue;
        }
        entries.push(Entry { name, contents });
    }
    Ok(entries)
}

/// Absolute names, drive letters and `..` components. Nothing is ever written to disk, but Tencent never
/// produces such names, so an archive with them is not a Tencent download.
fn is_unsafe_name(raw: &[u8]) -> bool {
    let absolute = raw.starts_with(b"/") || raw.starts_with(b"\\") || raw.get(1) == Some(&b':');
    absolute
        || raw
            .split(|&byte| byte == b'/' || byte == b'\\')
            .any(|component| component == b"..")
}

/// Files that never hold what the operator needs, or must not be read at all (keystore passwords).
fn is_ignored_name(name: &str) -> bool {
    let lowercase = name.to_ascii_lowercase();
    let file_name = lowercase.rsplit('/').next().unwrap_or_default();
    const IGNORED_EXTENSIONS: [&str; 12] = [
        ".pfx",
        ".p12",
        ".jks",
        ".keystore",
        ".csr",
        ".zip",
        ".jar",
        ".gz",
        ".tgz",
        ".tar",
        ".7z",
        ".rar",
    ];
    file_name == "keystorepass.txt"
        || IGNORED_EXTENSIONS
            .iter()
            .any(|extension| file_name.ends_with(extension))
}

/// ZIP local-file or end-of-central-directory signature: a nested archive, ignored (see [`read_entries`]).
fn is_archive(contents: &[u8]) -> bool {
    contents.starts_with(b"PK\x03\x04") || contents.starts_with(b"PK\x05\x06")
}

fn display_name(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let mut name: String = lossy
        .chars()
        .take(MAX_DISPLAYED_NAME_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if lossy.chars().count() > MAX_DISPLAYED_NAME_CHARS {
        name.push('…');
    }
    format!("\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_keystores_csrs_passwords_and_archives_by_name() {
        for name in [
            "IIS/a.pfx",
            "Tomcat/a.JKS",
            "x.csr",
            "IIS/keystorePass.txt",
            "inner.zip",
            "a.p12",
        ] {
            assert!(is_ignored_name(name), "{name}");
        }
        for name in ["Nginx/1_a_bundle.crt", "a.key", "a.pem", "readme.txt"] {
            assert!(!is_ignored_name(name), "{name}");
        }
    }

    #[test]
    fn flags_unsafe_names() {
        for name in [
            "../a.pem",
            "/etc/a.pem",
            "\\a.pem",
            "C:/a.pem",
            "Nginx/../../a.pem",
            "Nginx\\..\\a.pem",
        ] {
            assert!(is_unsafe_name(name.as_bytes()), "{name}");
        }
        for name in [
            "Nginx/1_a_bundle.crt",
            "a..b.pem",
            "_.example.test_nginx/x.key",
            "Nginx\\a.key",
        ] {
            assert!(!is_unsafe_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn display_names_are_quoted_escaped_and_short() {
        assert_eq!(display_name(b"Nginx/a.key"), "\"Nginx/a.key\"");
        assert_eq!(display_name(b"a\nb"), "\"a\\nb\"");
        let long = display_name(&[b'x'; 500]);
        assert!(long.chars().count() < 130 && long.ends_with("…\""));
    }
}
