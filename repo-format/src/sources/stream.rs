//! Facts about a stream source as it passes into the chunker: its length and SHA-256 (recorded
//! in the snapshot, so a restore can be checked), and for a custom-format dump a tee of its head
//! into `pg_restore --list`. Used for standard input, commands and PostgreSQL dumps alike.

use crate::sources::postgres::TocCheck;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// What a dump stream's tee measured.
#[derive(Default)]
pub struct StreamFacts {
    pub bytes: u64,
    pub sha256: Option<sha2::Sha256>,
}

/// A reader that hashes what passes and hands the head to `pg_restore --list`.
pub struct DumpTee<R> {
    inner: R,
    facts: Arc<Mutex<StreamFacts>>,
    toc: Option<TocCheck>,
    toc_out: Arc<Mutex<Option<TocCheck>>>,
}

impl<R: Read> DumpTee<R> {
    /// The tee and the shared facts, filled in as the stream is read; the `TocCheck` comes back
    /// through the last value once the stream ended.
    #[allow(clippy::type_complexity)]
    pub fn new(
        inner: R,
        toc: Option<TocCheck>,
    ) -> (
        DumpTee<R>,
        Arc<Mutex<StreamFacts>>,
        Arc<Mutex<Option<TocCheck>>>,
    ) {
        use sha2::Digest;
        let facts = Arc::new(Mutex::new(StreamFacts {
            bytes: 0,
            sha256: Some(sha2::Sha256::new()),
        }));
        let toc_out = Arc::new(Mutex::new(None));
        (
            DumpTee {
                inner,
                facts: facts.clone(),
                toc,
                toc_out: toc_out.clone(),
            },
            facts,
            toc_out,
        )
    }
}

impl<R: Read> Read for DumpTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        if let Ok(mut facts) = self.facts.lock() {
            facts.bytes += n as u64;
            if let Some(h) = facts.sha256.as_mut() {
                h.update(&buf[..n]);
            }
        }
        if n == 0 {
            if let (Some(toc), Ok(mut out)) = (self.toc.take(), self.toc_out.lock()) {
                *out = Some(toc);
            }
        } else if let Some(toc) = self.toc.as_mut() {
            toc.feed(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R> Drop for DumpTee<R> {
    fn drop(&mut self) {
        if let (Some(toc), Ok(mut out)) = (self.toc.take(), self.toc_out.lock()) {
            *out = Some(toc);
        }
    }
}

/// The final SHA-256 of a tee'd stream, as hex.
pub fn finish_sha256(facts: &Mutex<StreamFacts>) -> (u64, String) {
    use sha2::Digest;
    let mut facts = match facts.lock() {
        Ok(f) => f,
        Err(p) => p.into_inner(),
    };
    let digest = facts
        .sha256
        .take()
        .map(|h| hex::encode(h.finalize()))
        .unwrap_or_default();
    (facts.bytes, digest)
}
