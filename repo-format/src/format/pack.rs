//! Pack files: `data/<first two hex digits>/<pack id>`.
//!
//! A pack is a run of sealed blobs followed by a sealed header and the header's length:
//!
//! ```text
//! blob_0 || blob_1 || ... || blob_{n-1} || header || header_length (u32 LE)
//! blob_i = seal(encryption key, AAD = "CFFRblob" || kind || compression || id, payload_i)
//! header = sealed object of kind PackHeader whose plaintext is
//!          count (u32 LE) || count * (kind u8 || compression u8 || length u32 LE ||
//!                                     raw_length u32 LE || id [32])
//! ```
//! Blob offsets are implicit: blob i starts where blob i-1 ends. `payload_i` is the plaintext or
//! its zstd frame; `raw_length` is the plaintext length. The pack id is the BLAKE3 of the whole
//! file, so a pack can be verified without any key. Because the header is self-contained, the
//! index can be rebuilt from the packs alone.

use crate::error::{Error, Result};
use crate::format::compress;
use crate::format::id::{storage_hash, BlobId, PackId};
use crate::format::key::ObjectKey;
use crate::format::sealed::{self, ObjectKind};
use coffer_crypto::MasterKeys;

/// Largest plaintext of one blob accepted from storage (bytes).
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;
/// Largest pack header accepted from storage (bytes).
pub const MAX_HEADER_SIZE: u32 = 32 * 1024 * 1024;
/// Bytes per header entry.
pub const HEADER_ENTRY_LEN: usize = 42;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 0,
    /// A serialized directory tree.
    Tree = 1,
}

impl BlobKind {
    fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// How a blob's payload is encoded before encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is (zstd did not make it smaller).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedBlob {
    pub kind: BlobKind,
    pub compression: Compression,
    pub id: BlobId,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

pub(crate) fn decode_kind(v: u8, what: &'static str, id: &str) -> Result<BlobKind> {
    BlobKind::from_u8(v).ok_or_else(|| Error::corrupt(what, id, format!("unknown blob kind {v}")))
}

pub(crate) fn decode_compression(v: u8, what: &'static str, id: &str) -> Result<Compression> {
    Compression::from_u8(v)
        .ok_or_else(|| Error::corrupt(what, id, format!("unknown compression {v}")))
}

/// The associated data that binds a sealed blob to its kind, encoding and id.
fn blob_aad(kind: BlobKind, compression: Compression, id: &BlobId) -> [u8; 42] {
    let mut aad = [0u8; 42];
    aad[..8].copy_from_slice(b"CFFRblob");
    aad[8] = kind as u8;
    aad[9] = compression as u8;
    aad[10..].copy_from_slice(&id.0);
    aad
}

/// A blob ready to be appended to a pack.
pub struct SealedBlob {
    pub kind: BlobKind,
    pub compression: Compression,
    pub id: BlobId,
    pub raw_length: u32,
    pub bytes: Vec<u8>,
}

/// Seals a blob's plaintext, or its zstd frame when `compressed` is one (see
/// [`BlobCompressor::compress`], the one place that decides how a blob is compressed).
///
/// [`BlobCompressor::compress`]: crate::format::compress::BlobCompressor::compress
pub fn seal_blob(
    keys: &MasterKeys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
    compressed: Option<&[u8]>,
) -> Result<SealedBlob> {
    let raw_length = u32::try_from(plaintext.len())
        .ok()
        .filter(|&n| n <= MAX_BLOB_SIZE)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "blob of {} bytes exceeds the maximum",
                plaintext.len()
            ))
        })?;
    let (compression, payload) = match compressed {
        Some(c) => (Compression::Zstd, c),
        None => (Compression::None, plaintext),
    };
    let bytes = keys.seal(&blob_aad(kind, compression, &id), payload)?;
    Ok(SealedBlob {
        kind,
        compression,
        id,
        raw_length,
        bytes,
    })
}

/// Opens a sealed blob found at `blob`'s place and checks its id. `pack` names it in errors.
pub fn open_blob(
    keys: &MasterKeys,
    pack: &PackId,
    blob: &PackedBlob,
    sealed_bytes: &[u8],
) -> Result<Vec<u8>> {
    open_blob_with_frame(keys, pack, blob, sealed_bytes).map(|opened| opened.plaintext)
}

/// A blob opened and checked against its id: its plaintext and, when it was stored
/// compressed, the zstd frame it was stored as (which decodes to exactly that plaintext).
pub struct OpenedBlob {
    pub plaintext: Vec<u8>,
    pub frame: Option<Vec<u8>>,
}

/// As [`open_blob`], keeping the zstd frame of a compressed blob (copy seals it again for
/// another repository instead of compressing the plaintext anew).
pub fn open_blob_with_frame(
    keys: &MasterKeys,
    pack: &PackId,
    blob: &PackedBlob,
    sealed_bytes: &[u8],
) -> Result<OpenedBlob> {
    let what = "blob";
    let name = || format!("{} in pack {}", blob.id, pack);
    let payload = open_payload(keys, pack, blob, sealed_bytes)?;
    let (plaintext, frame) = match blob.compression {
        Compression::None => (payload, None),
        Compression::Zstd => (
            compress::decompress(&payload, blob.raw_length as usize)
                .map_err(|e| Error::corrupt(what, name(), format!("zstd: {e}")))?,
            Some(payload),
        ),
    };
    if plaintext.len() != blob.raw_length as usize {
        return Err(Error::corrupt(
            what,
            name(),
            format!(
                "decoded {} bytes, expected {}",
                plaintext.len(),
                blob.raw_length
            ),
        ));
    }
    let actual = BlobId(keys.content_id(&plaintext));
    if actual != blob.id {
        return Err(Error::corrupt(
            what,
            name(),
            "content does not match its id",
        ));
    }
    Ok(OpenedBlob { plaintext, frame })
}

/// Checks that `sealed_bytes` are exactly what was sealed for `blob` (its kind, compression and
/// id are the associated data of the seal), without decompressing or hashing the content: what
/// prune needs before it moves the bytes, unchanged, to another pack. Whether the content
/// matches its id is checked where it is decoded (restore, `check --read-data`).
pub fn authenticate_blob(
    keys: &MasterKeys,
    pack: &PackId,
    blob: &PackedBlob,
    sealed_bytes: &[u8],
) -> Result<()> {
    let payload = open_payload(keys, pack, blob, sealed_bytes)?;
    if blob.compression == Compression::None && payload.len() != blob.raw_length as usize {
        return Err(Error::corrupt(
            "blob",
            format!("{} in pack {}", blob.id, pack),
            format!(
                "holds {} bytes, expected {}",
                payload.len(),
                blob.raw_length
            ),
        ));
    }
    Ok(())
}

/// Opens the seal of a blob: its (possibly compressed) payload.
fn open_payload(
    keys: &MasterKeys,
    pack: &PackId,
    blob: &PackedBlob,
    sealed_bytes: &[u8],
) -> Result<Vec<u8>> {
    let name = || format!("{} in pack {}", blob.id, pack);
    if blob.raw_length > MAX_BLOB_SIZE {
        return Err(Error::corrupt(
            "blob",
            name(),
            format!("raw length {} exceeds the maximum", blob.raw_length),
        ));
    }
    keys.open(
        &blob_aad(blob.kind, blob.compression, &blob.id),
        sealed_bytes,
    )
    .map_err(|e| Error::corrupt("blob", name(), e))
}

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackWriter {
    bytes: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: bytes::Bytes,
    pub blobs: Vec<PackedBlob>,
}

impl PackWriter {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PackWriter {
        PackWriter {
            bytes: Vec::with_capacity(capacity),
            blobs: Vec::new(),
        }
    }

    /// Takes `buffer` (its content is discarded) as the pack's memory; for an empty pack.
    pub fn reuse(&mut self, mut buffer: Vec<u8>) {
        debug_assert!(self.is_empty());
        buffer.clear();
        self.bytes = buffer;
    }

    /// Reserves room for `additional` more bytes of blob data.
    pub fn reserve(&mut self, additional: usize) {
        self.bytes.reserve(additional);
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, blob: SealedBlob) {
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(&blob.bytes);
        self.blobs.push(PackedBlob {
            kind: blob.kind,
            compression: blob.compression,
            id: blob.id,
            offset,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// No blob yet.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends the sealed header and its length; names the pack by its hash.
    pub fn finish(mut self, keys: &MasterKeys) -> Result<FinishedPack> {
        let mut header = Vec::with_capacity(4 + self.blobs.len() * HEADER_ENTRY_LEN);
        header.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            header.push(b.kind as u8);
            header.push(b.compression as u8);
            header.extend_from_slice(&b.length.to_le_bytes());
            header.extend_from_slice(&b.raw_length.to_le_bytes());
            header.extend_from_slice(&b.id.0);
        }
        let sealed_header = sealed::seal(keys, ObjectKind::PackHeader, &header)?;
        self.bytes.extend_from_slice(&sealed_header);
        self.bytes
            .extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
        let id = PackId(storage_hash(&self.bytes));
        Ok(FinishedPack {
            id,
            bytes: self.bytes.into(),
            blobs: self.blobs,
        })
    }
}

/// The largest pack file a repository with target pack size `pack_size` writes: the target,
/// the one blob that may overflow it, and the largest header. A larger file under a pack's name
/// is refused before it is read whole.
pub fn max_pack_size(pack_size: u32) -> u64 {
    u64::from(pack_size) + u64::from(MAX_BLOB_SIZE) + u64::from(MAX_HEADER_SIZE)
}

/// Storage key of a pack: `data/<first two hex digits>/<id>` ([`ObjectKey::Pack`]).
pub fn pack_key(id: &PackId) -> String {
    ObjectKey::Pack(*id).to_string()
}

/// Reads the header of a whole pack file (as fetched) and checks that the blobs tile the data
/// area exactly.
pub fn parse_pack(keys: &MasterKeys, id: &PackId, pack: &[u8]) -> Result<Vec<PackedBlob>> {
    let name = id.to_hex();
    let what = "pack";
    if pack.len() < 4 {
        return Err(Error::corrupt(
            what,
            &name,
            format!("truncated: {} bytes", pack.len()),
        ));
    }
    let (rest, len_bytes) = pack.split_at(pack.len() - 4);
    let header_len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    if header_len > MAX_HEADER_SIZE || header_len as usize > rest.len() {
        return Err(Error::corrupt(
            what,
            &name,
            format!("header length {header_len} does not fit the pack"),
        ));
    }
    let (data, header) = rest.split_at(rest.len() - header_len as usize);
    parse_header(keys, id, header, data.len() as u64)
}

/// Length of the sealed header, from the last 4 bytes of a pack of `pack_size` bytes; checked
/// against the pack size and [`MAX_HEADER_SIZE`].
pub fn header_length(id: &PackId, tail: [u8; 4], pack_size: u64) -> Result<u32> {
    let header_len = u32::from_le_bytes(tail);
    if header_len > MAX_HEADER_SIZE || u64::from(header_len) + 4 > pack_size {
        return Err(Error::corrupt(
            "pack",
            id,
            format!("header length {header_len} does not fit the pack"),
        ));
    }
    Ok(header_len)
}

/// Opens a pack's sealed header (without its length suffix) and checks that its blobs tile a
/// data area of `data_len` bytes exactly. Lets `check` verify headers without reading the data.
pub fn parse_header(
    keys: &MasterKeys,
    id: &PackId,
    header: &[u8],
    data_len: u64,
) -> Result<Vec<PackedBlob>> {
    let name = id.to_hex();
    let what = "pack";
    let plain = sealed::open(keys, ObjectKind::PackHeader, "pack header", &name, header)?;
    let blobs = decode_header(&name, &plain)?;
    let mut offset: u64 = 0;
    let mut out = Vec::with_capacity(blobs.len());
    for (kind, compression, length, raw_length, blob_id) in blobs {
        let end = offset + u64::from(length);
        if end > data_len {
            return Err(Error::corrupt(
                what,
                &name,
                "header names blobs past the end of the data",
            ));
        }
        out.push(PackedBlob {
            kind,
            compression,
            id: blob_id,
            offset: offset as u32,
            length,
            raw_length,
        });
        offset = end;
    }
    if offset != data_len {
        return Err(Error::corrupt(
            what,
            &name,
            "header does not account for every byte of the pack",
        ));
    }
    Ok(out)
}

type HeaderEntry = (BlobKind, Compression, u32, u32, BlobId);

fn decode_header(name: &str, plain: &[u8]) -> Result<Vec<HeaderEntry>> {
    let what = "pack header";
    if plain.len() < 4 {
        return Err(Error::corrupt(what, name, "truncated"));
    }
    let count = u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
    if plain.len() != 4 + count * HEADER_ENTRY_LEN {
        return Err(Error::corrupt(
            what,
            name,
            format!("{} bytes cannot hold {count} entries", plain.len()),
        ));
    }
    let mut out = Vec::with_capacity(count);
    for e in plain[4..].chunks_exact(HEADER_ENTRY_LEN) {
        let kind = decode_kind(e[0], what, name)?;
        let compression = decode_compression(e[1], what, name)?;
        let length = u32::from_le_bytes([e[2], e[3], e[4], e[5]]);
        let raw_length = u32::from_le_bytes([e[6], e[7], e[8], e[9]]);
        let id =
            BlobId::from_slice(&e[10..42]).ok_or_else(|| Error::corrupt(what, name, "bad id"))?;
        out.push((kind, compression, length, raw_length, id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(keys: &MasterKeys, blobs: &[Vec<u8>]) -> FinishedPack {
        let levels = compress::CompressionLevels {
            file_data: 3,
            dump_data: 1,
            tree: 3,
        };
        let mut c = compress::BlobCompressor::new(levels);
        let mut w = PackWriter::with_capacity(1024);
        for b in blobs {
            let id = BlobId(keys.content_id(b));
            let compressed = c.compress(compress::BlobClass::FileData, b).unwrap();
            w.add(seal_blob(keys, BlobKind::Data, id, b, compressed.as_deref()).unwrap());
        }
        w.finish(keys).unwrap()
    }

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..20000), 0..6)) {
            let keys = MasterKeys::generate().unwrap();
            let pack = build(&keys, &blobs);
            prop_assert_eq!(PackId(storage_hash(&pack.bytes)), pack.id);
            let parsed = parse_pack(&keys, &pack.id, &pack.bytes).unwrap();
            prop_assert_eq!(&parsed, &pack.blobs);
            for (entry, plain) in parsed.iter().zip(&blobs) {
                let s = &pack.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
                prop_assert_eq!(&open_blob(&keys, &pack.id, entry, s).unwrap(), plain);
            }
        }
    }

    #[test]
    fn compressible_blobs_are_compressed_and_random_ones_are_not() {
        let keys = MasterKeys::generate().unwrap();
        let zeros = vec![0u8; 100_000];
        let mut random = vec![0u8; 100_000];
        coffer_crypto::random_fill(&mut random).unwrap();
        let pack = build(&keys, &[zeros, random]);
        assert_eq!(pack.blobs[0].compression, Compression::Zstd);
        assert!(pack.blobs[0].length < 1000);
        assert_eq!(pack.blobs[1].compression, Compression::None);
    }

    #[test]
    fn a_blob_zstd_does_not_shrink_is_stored_raw() {
        let mut random = vec![0u8; 20_000];
        coffer_crypto::random_fill(&mut random).unwrap();
        let keys = MasterKeys::generate().unwrap();
        let pack = build(&keys, &[random]);
        assert_eq!(pack.blobs[0].compression, Compression::None);
    }

    #[test]
    fn tampering_is_detected_and_named() {
        let keys = MasterKeys::generate().unwrap();
        let pack = build(&keys, &[b"hello world".repeat(100), b"second".to_vec()]);
        let entry = pack.blobs[1];
        let mut bytes = pack.bytes.to_vec();
        bytes[entry.offset as usize + 30] ^= 0x40;
        let s = &bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
        let err = open_blob(&keys, &pack.id, &entry, s)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&entry.id.to_hex()) && err.contains(&pack.id.to_hex()),
            "{err}"
        );
        // A swapped id (blob presented as another) fails authentication.
        let mut wrong = entry;
        wrong.id = pack.blobs[0].id;
        let s = &pack.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
        assert!(open_blob(&keys, &pack.id, &wrong, s).is_err());
        // Truncations never panic.
        for cut in [0, 3, 4, 10, pack.bytes.len() - 1] {
            assert!(parse_pack(&keys, &pack.id, &pack.bytes[..cut]).is_err());
        }
        let mut bad_len = pack.bytes.to_vec();
        let n = bad_len.len();
        bad_len[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_pack(&keys, &pack.id, &bad_len).is_err());
    }

    /// What prune checks before it moves a blob: any changed byte, a blob presented under
    /// another id, kind or compression, or a stored length that disagrees, is refused.
    #[test]
    fn authentication_refuses_every_change_to_a_sealed_blob() {
        let keys = MasterKeys::generate().unwrap();
        let mut random = vec![0u8; 5000];
        coffer_crypto::random_fill(&mut random).unwrap();
        let pack = build(&keys, &[b"compressible ".repeat(200), random]);
        let sealed =
            |e: &PackedBlob| &pack.bytes[e.offset as usize..(e.offset + e.length) as usize];
        for entry in &pack.blobs {
            authenticate_blob(&keys, &pack.id, entry, sealed(entry)).unwrap();
            for at in [0, entry.length as usize / 2, entry.length as usize - 1] {
                let mut bytes = sealed(entry).to_vec();
                bytes[at] ^= 1;
                let err = authenticate_blob(&keys, &pack.id, entry, &bytes)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&entry.id.to_hex()), "{err}");
            }
            assert!(authenticate_blob(&keys, &pack.id, entry, &sealed(entry)[1..]).is_err());
            let mut kind = *entry;
            kind.kind = BlobKind::Tree;
            assert!(authenticate_blob(&keys, &pack.id, &kind, sealed(entry)).is_err());
            let mut compression = *entry;
            compression.compression = match entry.compression {
                Compression::None => Compression::Zstd,
                Compression::Zstd => Compression::None,
            };
            assert!(authenticate_blob(&keys, &pack.id, &compression, sealed(entry)).is_err());
        }
        let (first, second) = (pack.blobs[0], pack.blobs[1]);
        assert_eq!(first.compression, Compression::Zstd);
        assert_eq!(second.compression, Compression::None);
        let mut other_id = second;
        other_id.id = first.id;
        assert!(authenticate_blob(&keys, &pack.id, &other_id, sealed(&second)).is_err());
        // An uncompressed blob's payload is its content: the index's length must agree.
        let mut longer = second;
        longer.raw_length += 1;
        let err = authenticate_blob(&keys, &pack.id, &longer, sealed(&second))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 5001"), "{err}");
    }
}
