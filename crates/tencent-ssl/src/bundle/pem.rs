//! PEM reading and writing.
//!
//! Reading is deliberately lax (RFC 7468 §3 "lax" parsing): files from Tencent Cloud ZIPs may carry a UTF-8
//! BOM, CRLF line endings, blank lines and stray text between blocks, and RFC 1421 headers
//! (`Proc-Type: 4,ENCRYPTED`). The `pem` crate treats a blank line inside a block as the header separator and
//! fails a whole file on one bad block, so the scanner here is line-based and reports which block is broken.
//!
//! Writing is canonical: 64-column base64, LF line endings, one trailing newline per block, so the same DER
//! always gives the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Longest PEM label accepted as a boundary; longer `-----BEGIN …-----` lines are treated as stray text.
const MAX_LABEL_LEN: usize = 64;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One decoded PEM block.
#[derive(Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label between `BEGIN ` and `-----`, e.g. `CERTIFICATE`.
    pub label: String,
    /// RFC 1421 headers (`name: value`) found before the base64 body, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub der: Vec<u8>,
}

impl PemBlock {
    /// Whether RFC 1421 headers mark the body as encrypted (`Proc-Type: 4,ENCRYPTED`).
    pub fn has_encrypted_header(&self) -> bool {
        self.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("Proc-Type")
                && value.to_ascii_uppercase().contains("ENCRYPTED")
        })
    }
}

// The body may be a private key: never print it.
impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("headers", &self.headers.len())
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// Why a PEM block could not be read. Carries what kind of block it was (see [`block_kind`]), never body
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// A `BEGIN` line whose block never ends (truncated file or a second `BEGIN` inside the block).
    #[error("a {kind} PEM block has no matching END line")]
    Unterminated { kind: String },
    /// An `END` line with a different label than its `BEGIN`.
    #[error("a {kind} PEM block ends with a different label")]
    MismatchedEnd { kind: String },
    /// The body is not valid base64 (or is empty).
    #[error("a {kind} PEM block does not hold valid base64")]
    BadBase64 { kind: String },
    /// More blocks than the caller allows.
    #[error("more than {max} PEM blocks")]
    TooManyBlocks { max: usize },
}

/// Parses every PEM block in `input`, ignoring text outside blocks.
///
/// Returns an error when a block is broken, or when more than `max_blocks` blocks are found.
pub fn parse_blocks(input: &[u8], max_blocks: usize) -> Result<Vec<PemBlock>, PemError> {
    let input = input.strip_prefix(UTF8_BOM).unwrap_or(input);
    let mut blocks = Vec::new();
    let mut open: Option<OpenBlock> = None;
    for raw_line in input.split(|&byte| byte == b'\n') {
        let line = raw_line.trim_ascii();
        match open.as_mut() {
            None => {
                if let Some(label) = boundary_label(line, b"-----BEGIN ") {
                    open = Some(OpenBlock::new(label));
                }
            }
            Some(block) => {
                if let Some(end_label) = boundary_label(line, b"-----END ") {
                    if end_label != block.label {
                        return Err(PemError::MismatchedEnd {
                            kind: block_kind(&block.label),
                        });
                    }
                    if blocks.len() == max_blocks {
                        return Err(PemError::TooManyBlocks { max: max_blocks });
                    }
                    if let Some(finished) = open.take() {
                        blocks.push(finished.finish()?);
                    }
                } else if line.starts_with(b"-----BEGIN ") {
                    return Err(PemError::Unterminated {
                        kind: block_kind(&block.label),
                    });
                } else {
                    block.push_line(line);
                }
            }
        }
    }
    match open {
        Some(block) => Err(PemError::Unterminated {
            kind: block_kind(&block.label),
        }),
        None => Ok(blocks),
    }
}

/// Encodes `der` as one PEM block: 64-column base64, LF line endings, trailing newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for (index, character) in body.chars().enumerate() {
        if index > 0 && index % 64 == 0 {
            out.push('\n');
        }
        out.push(character);
    }
    if !body.is_empty() {
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// How errors name a block: the label, except that every private-key label becomes "private key", so no
/// message ever carries a `PRIVATE KEY` marker that log scanners (or people) would take for a leaked key.
pub fn block_kind(label: &str) -> String {
    if label.ends_with("PRIVATE KEY") {
        "private key".to_owned()
    } else {
        format!("\"{label}\"")
    }
}

/// The label of a `-----BEGIN LABEL-----` / `-----END LABEL-----` line, if `line` is one.
fn boundary_label(line: &[u8], prefix: &[u8]) -> Option<String> {
    let label = line.strip_prefix(prefix)?.strip_suffix(b"-----")?;
    let printable = label
        .iter()
        .all(|byte| (0x20..0x7f).contains(byte) && *byte != b'-');
    if label.is_empty() || label.len() > MAX_LABEL_LEN || !printable {
        return None;
    }
    String::from_utf8(label.to_vec()).ok()
}

struct OpenBlock {
    label: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl OpenBlock {
    fn new(label: String) -> Self {
        Self {
            label,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn push_line(&mut self, line: &[u8]) {
        // RFC 1421 headers come before the body; base64 never contains ':'.
        if self.body.is_empty() && line.contains(&b':') {
            if let Some(colon) = line.iter().position(|&byte| byte == b':') {
                let (name, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                self.headers.push((
                    String::from_utf8_lossy(name.trim_ascii()).into_owned(),
                    String::from_utf8_lossy(value.trim_ascii()).into_owned(),
                ));
            }
            return;
        }
        self.body
            .extend(line.iter().filter(|byte| !byte.is_ascii_whitespace()));
    }

    fn finish(self) -> Result<PemBlock, PemError> {
        let der = STANDARD
            .decode(&self.body)
            .ok()
            .filter(|der| !der.is_empty())
            .ok_or_else(|| PemError::BadBase64 {
                kind: block_kind(&self.label),
            })?;
        Ok(PemBlock {
            label: self.label,
            headers: self.headers,
            der,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_DER: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

    #[test]
    fn encode_then_parse_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(200).collect();
        let text = encode("CERTIFICATE", &der);
        assert!(text.lines().all(|line| line.len() <= 64));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        let blocks = parse_blocks(text.as_bytes(), 10).expect("parse");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].der, der);
    }

    #[test]
    fn tolerates_bom_crlf_blank_lines_and_stray_text() {
        let one = encode("CERTIFICATE", SAMPLE_DER);
        let two = encode("PRIVATE KEY", SAMPLE_DER);
        let messy = format!(
            "\u{feff}subject=CN=x\r\n\r\n{}\r\n\r\nstray text\r\n  {}\n\n",
            one, two
        )
        .replace('\n', "\r\n");
        let blocks = parse_blocks(messy.as_bytes(), 10).expect("parse");
        let labels: Vec<&str> = blocks.iter().map(|block| block.label.as_str()).collect();
        assert_eq!(labels, ["CERTIFICATE", "PRIVATE KEY"]);
        assert!(blocks.iter().all(|block| block.der == SAMPLE_DER));
    }

    #[test]
    fn tolerates_blank_line_inside_body() {
        let text = "-----BEGIN CERTIFICATE-----\nMAMC\n\nAQU=\n\n-----END CERTIFICATE-----\n";
        let blocks = parse_blocks(text.as_bytes(), 10).expect("parse");
        assert_eq!(blocks[0].der, SAMPLE_DER);
    }

    #[test]
    fn reads_rfc1421_headers() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMAMCAQU=\n-----END RSA PRIVATE KEY-----\n";
        let blocks = parse_blocks(text.as_bytes(), 10).expect("parse");
        assert!(blocks[0].has_encrypted_header());
        assert_eq!(blocks[0].headers.len(), 2);
        let plain =
            parse_blocks(encode("RSA PRIVATE KEY", SAMPLE_DER).as_bytes(), 10).expect("parse");
        assert!(!plain[0].has_encrypted_header());
    }

    #[test]
    fn rejects_broken_blocks() {
        let unterminated = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n";
        assert!(matches!(
            parse_blocks(unterminated.as_bytes(), 10),
            Err(PemError::Unterminated { .. })
        ));
        let mismatched = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            parse_blocks(mismatched.as_bytes(), 10),
            Err(PemError::MismatchedEnd { .. })
        ));
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_blocks(bad.as_bytes(), 10),
            Err(PemError::BadBase64 { .. })
        ));
        let empty = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_blocks(empty.as_bytes(), 10),
            Err(PemError::BadBase64 { .. })
        ));
    }

    #[test]
    fn enforces_block_limit() {
        let text = encode("CERTIFICATE", SAMPLE_DER).repeat(3);
        assert_eq!(
            parse_blocks(text.as_bytes(), 3).map(|blocks| blocks.len()),
            Ok(3)
        );
        assert_eq!(
            parse_blocks(text.as_bytes(), 2),
            Err(PemError::TooManyBlocks { max: 2 })
        );
    }

    #[test]
    fn text_without_blocks_gives_nothing() {
        let garbage: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        assert_eq!(parse_blocks(&garbage, 10), Ok(Vec::new()));
    }
}
