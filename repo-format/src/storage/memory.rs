//! The in-memory store: a map from key to bytes inside one process, for tests (the library's own
//! and the conformance suite) and as the inner store of the coming fault-injecting backend. It
//! keeps the [`Backend`] contract exactly, so code tested on it behaves the same on disk or S3.
//! Uses only the backend trait and `std`.

use super::backend::{missing, short_read, too_large, Backend, ObjectInfo};
use crate::error::Result;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

/// Objects held in memory, by key. Clones of a [`Storage`](super::Storage) over it share it.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (Bytes, jiff::Timestamp)>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// The bytes under `key` (a cheap clone of shared bytes).
    fn bytes(&self, what: &'static str, key: &str) -> Result<Bytes> {
        crate::sync::lock(&self.objects)
            .get(key)
            .map(|(bytes, _)| bytes.clone())
            .ok_or_else(|| missing(what, key))
    }
}

impl Backend for MemoryBackend {
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        crate::sync::lock(&self.objects)
            .entry(key.to_string())
            .or_insert_with(|| (bytes, jiff::Timestamp::now()));
        Ok(())
    }

    fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        self.bytes(what, key)
    }

    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        _known_size: Option<u64>,
    ) -> Result<Bytes> {
        let bytes = self.bytes(what, key)?;
        if bytes.len() as u64 > max {
            return Err(too_large(what, key, bytes.len() as u64, max));
        }
        Ok(bytes)
    }

    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self.bytes(what, key)?;
        let len = bytes.len() as u64;
        if range.start > range.end || range.end > len {
            let got = len
                .saturating_sub(range.start)
                .min(range.end.saturating_sub(range.start));
            return Err(short_read(what, key, got as usize, &range));
        }
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(crate::sync::lock(&self.objects)
            .get(key)
            .map(|(bytes, _)| bytes.len() as u64))
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{dir}/");
        Ok(crate::sync::lock(&self.objects)
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, (bytes, modified))| ObjectInfo {
                key: key.clone(),
                size: bytes.len() as u64,
                modified: *modified,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        crate::sync::lock(&self.objects).remove(key);
        Ok(())
    }
}
