//! Verifying one pack: its header against the index, or (read whole) its name against the hash
//! of its bytes and every blob against its id. What each finds is returned as
//! [`PackFindings`], so several packs are verified at once and applied in pack order.
//!
//! May use: `format/`, `storage/`.

use super::plan::damaged_in;
use super::Problem;
use crate::error::{Error, Result};
use crate::format::id::{storage_hash, BlobId, PackId};
use crate::format::index::MasterIndex;
use crate::format::pack::{self, PackedBlob};
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use std::collections::HashMap;

/// What checking one pack found, applied to the report in pack order.
#[derive(Default)]
pub(super) struct PackFindings {
    pub errors: Vec<Problem>,
    pub damaged: Vec<(BlobId, String)>,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub blobs_verified: u64,
}

impl PackFindings {
    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            object: object.into(),
            message: message.into(),
        });
    }
}

/// Compares a present pack's header with the index; on damage, the blobs whose chosen copy
/// is in it are damaged.
pub(super) fn header_findings(
    storage: &Storage,
    keys: &MasterKeys,
    index: &MasterIndex,
    pack_id: &PackId,
    size: u64,
    blobs: &[PackedBlob],
) -> PackFindings {
    let mut found = PackFindings::default();
    if let Err(e) = check_header(storage, keys, pack_id, size, blobs) {
        found.error(pack::pack_key(pack_id), e.to_string());
        let why = format!("the header of pack {} is damaged", pack_id.short());
        found.damaged = damaged_in(index, pack_id, blobs, &why);
    }
    found
}

/// Reads only a pack's header and compares it with the index's entries.
fn check_header(
    storage: &Storage,
    keys: &MasterKeys,
    id: &PackId,
    size: u64,
    blobs: &[PackedBlob],
) -> Result<()> {
    let key = pack::pack_key(id);
    if size < 4 {
        return Err(Error::corrupt(
            "pack",
            id,
            format!("truncated: {size} bytes"),
        ));
    }
    // One request for the header and its length together: the tail read is sized from the
    // index (generously per entry), and only a header larger than that needs a second read.
    let guess = (blobs.len() as u64 * 128 + 4096).min(size);
    let tail = storage.get_range("pack", &key, size - guess..size)?;
    let n = tail.len();
    let length = tail
        .get(n.saturating_sub(4)..)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| Error::corrupt("pack", id, "a tail read shorter than asked"))?;
    let header_len = pack::header_length(id, length, size)?;
    let start = size - 4 - u64::from(header_len);
    let listed = if start >= size - guess {
        let from = (start - (size - guess)) as usize;
        pack::parse_header(keys, id, &tail[from..n - 4], start)?
    } else {
        let header = storage.get_range("pack", &key, start..size - 4)?;
        pack::parse_header(keys, id, &header, start)?
    };
    compare(id, &listed, blobs)
}

fn compare(id: &PackId, header: &[PackedBlob], index: &[PackedBlob]) -> Result<()> {
    let by_id: HashMap<BlobId, &PackedBlob> = header.iter().map(|b| (b.id, b)).collect();
    for b in index {
        match by_id.get(&b.id) {
            Some(h) if *h == b => {}
            Some(_) => {
                return Err(Error::corrupt(
                    "pack",
                    id,
                    format!("header and index disagree about blob {}", b.id),
                ))
            }
            None => {
                return Err(Error::corrupt(
                    "pack",
                    id,
                    format!("index lists blob {} that the header does not", b.id),
                ))
            }
        }
    }
    Ok(())
}

/// Reads one pack whole (`size` bytes, as listed) and verifies every blob; returns what is
/// damaged.
pub(super) fn read_pack(
    storage: &Storage,
    keys: &MasterKeys,
    index: &MasterIndex,
    id: &PackId,
    size: u64,
    max: u64,
    expected: &[PackedBlob],
) -> PackFindings {
    let mut found = PackFindings::default();
    let key = pack::pack_key(id);
    // Into this thread's reused buffer: no fresh pages per pack.
    let read = if size > max {
        Err(Error::corrupt(
            "pack",
            &key,
            format!("{size} bytes is more than the maximum of {max} bytes for a pack"),
        ))
    } else {
        storage.with_range_direct("pack", &key, 0..size, |bytes| {
            verify_pack(keys, index, id, &key, bytes, expected, &mut found);
            Ok(())
        })
    };
    if let Err(e) = read {
        found.error(&key, e.to_string());
        let why = format!("pack {} unreadable", id.short());
        found.damaged = damaged_in(index, id, expected, &why);
    }
    found
}

/// Verifies a pack's name, header and every blob in `expected` against its bytes.
fn verify_pack(
    keys: &MasterKeys,
    index: &MasterIndex,
    id: &PackId,
    key: &str,
    bytes: &[u8],
    expected: &[PackedBlob],
    found: &mut PackFindings,
) {
    found.packs_read = 1;
    found.bytes_read = bytes.len() as u64;
    if storage_hash(bytes) != id.0 {
        found.error(
            key,
            "content does not match its name (the file was altered)",
        );
    }
    match pack::parse_pack(keys, id, bytes) {
        Ok(header) => {
            if let Err(e) = compare(id, &header, expected) {
                found.error(key, e.to_string());
            }
        }
        Err(e) => found.error(key, e.to_string()),
    }
    for blob in expected {
        let range = blob.offset as usize..blob.offset as usize + blob.length as usize;
        let result = match bytes.get(range) {
            Some(sealed) => pack::open_blob(keys, id, blob, sealed).map(|_| ()),
            None => Err(Error::corrupt("pack", id, "shorter than the index says")),
        };
        match result {
            Ok(()) => found.blobs_verified += 1,
            Err(e) => {
                found.error(format!("blob {}", blob.id), e.to_string());
                let why = format!("blob {} in pack {} is damaged", blob.id.short(), id.short());
                found
                    .damaged
                    .extend(damaged_in(index, id, std::slice::from_ref(blob), &why));
            }
        }
    }
}
