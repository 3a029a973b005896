//! Sources: the named parts of an application that one snapshot holds together (a PostgreSQL
//! database, an uploads tree, a `.env`), and the helpers around them: dump orchestration
//! ([`postgres`]), child processes ([`child`]), stream facts ([`stream`]), manifest import
//! ([`manifest_labels`]) and dump recognition ([`sniff`]).

pub mod child;
pub mod postgres;
pub mod restore;
pub mod stream;

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Largest manifest file read (bytes).
pub const MAX_MANIFEST_SIZE: u64 = 1024 * 1024;

/// Labels from a manifest file: a JSON object (nested objects become `a.b` keys, arrays and
/// other values their JSON text) or `key=value` lines (`#` comments and blank lines skipped).
pub fn manifest_labels(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::InvalidInput(format!(
            "manifest {name} is larger than {MAX_MANIFEST_SIZE} bytes"
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::InvalidInput(format!("manifest {name} is not UTF-8 text")))?;
    let mut out = BTreeMap::new();
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("manifest {name} is not valid JSON: {e}")))?;
        flatten("", &value, &mut out);
        return Ok(out);
    }
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::InvalidInput(format!(
                "manifest {name} line {}: expected key=value or a JSON object",
                n + 1
            ))
        })?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::InvalidInput(format!(
                "manifest {name} line {}: {key:?} is not a valid key",
                n + 1
            )));
        }
        out.insert(key.to_string(), value.trim().to_string());
    }
    Ok(out)
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), String::new());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// `pg_dump -Fc` without compression: deduplicates well with dump chunking.
    CustomDumpUncompressed,
    /// `pg_dump -Fc` with compression: every change reshuffles the compressed bytes.
    CustomDumpCompressed,
    /// A plain SQL dump (`-- PostgreSQL database dump`).
    PlainSqlDump,
    /// A dump (custom format or SQL) compressed with gzip (`pg_dump | gzip`).
    GzipDump,
    Other,
}

impl Sniffed {
    /// Whether the content should get the small dump chunks.
    pub fn dump_chunking(self) -> bool {
        matches!(
            self,
            Sniffed::CustomDumpUncompressed | Sniffed::PlainSqlDump
        )
    }

    /// Whether it is a dump that will deduplicate poorly.
    pub fn compressed_dump(self) -> bool {
        matches!(self, Sniffed::CustomDumpCompressed | Sniffed::GzipDump)
    }
}

/// Bytes [`sniff`] needs to decide, except for gzip data ([`SNIFF_GZIP_LEN`]).
pub const SNIFF_LEN: usize = 64;

/// Bytes [`sniff`] needs to look inside gzip data: the gzip header with its file name, and the
/// first deflate block's code tables before the first decompressed byte.
pub const SNIFF_GZIP_LEN: usize = 64 << 10;

/// Whether `head` starts as gzip data does (then [`sniff`] wants [`SNIFF_GZIP_LEN`] bytes).
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Recognises dumps by content. The custom format header is `PGDMP`, major, minor, revision,
/// int size, offset size, format; from archive version 1.15 (PostgreSQL 16) a compression
/// algorithm byte follows (0 = none), before it a signed int with the zlib level (0 = none).
/// gzip data is a dump only if what it decompresses to starts as one: a `NEWS.Debian.gz` is
/// just a file.
pub fn sniff(head: &[u8]) -> Sniffed {
    if is_gzip(head) {
        return match sniff_plain(&gunzip_head(head)) {
            Sniffed::Other => Sniffed::Other,
            _ => Sniffed::GzipDump,
        };
    }
    sniff_plain(head)
}

/// The first [`SNIFF_LEN`] bytes (or fewer) that the start of gzip data decompresses to; as
/// many as the given bytes yield when they are cut short or damaged.
fn gunzip_head(head: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut decoder = flate2::read::GzDecoder::new(head);
    let mut out = vec![0; SNIFF_LEN];
    let mut filled = 0;
    while filled < out.len() {
        match decoder.read(&mut out[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    out.truncate(filled);
    out
}

/// [`sniff`] for bytes that are not gzip.
fn sniff_plain(head: &[u8]) -> Sniffed {
    if let Some(rest) = head.strip_prefix(b"PGDMP") {
        let (Some(&major), Some(&minor), Some(&int_size)) =
            (rest.first(), rest.get(1), rest.get(3))
        else {
            return Sniffed::Other;
        };
        let after_format = 5 + 6;
        if (major, minor) >= (1, 15) {
            return match head.get(after_format) {
                Some(0) => Sniffed::CustomDumpUncompressed,
                Some(_) => Sniffed::CustomDumpCompressed,
                None => Sniffed::Other,
            };
        }
        // Sign byte, then `int_size` little-endian bytes.
        let start = after_format + 1;
        let Some(bytes) = head.get(start..start + usize::from(int_size)) else {
            return Sniffed::Other;
        };
        return if bytes.iter().all(|&b| b == 0) {
            Sniffed::CustomDumpUncompressed
        } else {
            Sniffed::CustomDumpCompressed
        };
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(SNIFF_LEN)]);
    let trimmed = text.trim_start_matches(['\n', '\r']);
    let trimmed = trimmed.trim_start_matches("--\n");
    if trimmed.starts_with("-- PostgreSQL database dump")
        || trimmed.starts_with("-- PostgreSQL database cluster dump")
    {
        return Sniffed::PlainSqlDump;
    }
    Sniffed::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_manifests_flatten_into_labels() {
        let labels = manifest_labels(
            "m.json",
            br#"{"appVersion":"2.3.1","db":{"host":"pg","port":5432},"keyId":null,"files":["a"]}"#,
        )
        .unwrap();
        assert_eq!(labels["appVersion"], "2.3.1");
        assert_eq!(labels["db.host"], "pg");
        assert_eq!(labels["db.port"], "5432");
        assert_eq!(labels["keyId"], "");
        assert_eq!(labels["files"], r#"["a"]"#);
    }

    #[test]
    fn key_value_sidecars_become_labels() {
        let labels = manifest_labels(
            "x.meta",
            b"# comment\ntimestamp=20260115T020000Z\ncompression=--compress=6\n\ntoc_entries=145\n",
        )
        .unwrap();
        assert_eq!(labels["compression"], "--compress=6");
        assert_eq!(labels["toc_entries"], "145");
        assert!(manifest_labels("bad", b"no equals sign").is_err());
        assert!(manifest_labels("bad", b"{not json").is_err());
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn dump_headers_are_recognised() {
        // PostgreSQL 15 (archive 1.14): sign byte 0, then a 4-byte level.
        let mut v14 = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
        let mut compressed = v14.clone();
        v14.extend_from_slice(&[0, 0, 0, 0, 0]);
        compressed.extend_from_slice(&[1, 1, 0, 0, 0]);
        assert_eq!(sniff(&v14), Sniffed::CustomDumpUncompressed);
        assert_eq!(sniff(&compressed), Sniffed::CustomDumpCompressed);
        // PostgreSQL 16 (archive 1.15): an algorithm byte.
        assert_eq!(
            sniff(b"PGDMP\x01\x0f\x00\x04\x08\x01\x00"),
            Sniffed::CustomDumpUncompressed
        );
        assert_eq!(
            sniff(b"PGDMP\x01\x0f\x00\x04\x08\x01\x03"),
            Sniffed::CustomDumpCompressed
        );
        // gzip is a dump only when a dump is inside.
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Sniffed::Other);
        assert_eq!(sniff(&gzip(b"Debian news: nothing new\n")), Sniffed::Other);
        assert_eq!(
            sniff(&gzip(
                b"--\n-- PostgreSQL database dump\n--\n\nSET x = 0;\n"
            )),
            Sniffed::GzipDump
        );
        assert_eq!(sniff(&gzip(&v14)), Sniffed::GzipDump);
        // Cut short: what the given bytes yield still tells.
        let big: Vec<u8> = b"-- PostgreSQL database cluster dump\n"
            .iter()
            .copied()
            .chain((0..200_000u32).flat_map(|i| i.to_le_bytes()))
            .collect();
        let whole = gzip(&big);
        assert_eq!(
            sniff(&whole[..SNIFF_GZIP_LEN.min(whole.len())]),
            Sniffed::GzipDump
        );
        assert_eq!(
            sniff(b"--\n-- PostgreSQL database dump\n--\n"),
            Sniffed::PlainSqlDump
        );
        assert_eq!(sniff(b"PGDMP"), Sniffed::Other);
        assert_eq!(sniff(b"hello"), Sniffed::Other);
    }
}
