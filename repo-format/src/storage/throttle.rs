//! Bandwidth limits (`--limit-upload`, `--limit-download`, in KiB/s as restic's): a backend
//! wrapped in [`Throttled`] holds every request back so that the bytes it moves, summed over
//! all threads, never go faster than the limit on average. An upload waits before it is sent
//! for as long as its bytes take at the limit; a download waits after it arrives, so the next
//! one starts only when the limit allows. Works the same on every store (a local directory
//! too, where it is a way to spare a busy disk). May use the backend trait only.

use super::backend::{Backend, ObjectInfo, RangeSink, ReadCost};
use crate::error::Result;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate shared by every thread: bytes are booked one after another on one timeline at the
/// limit, and each booking waits until its bytes' slot on that timeline has passed.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    /// When the bytes booked so far will have gone at the limit.
    free_at: Mutex<Option<Instant>>,
}

/// How much may be booked ahead of the clock without waiting: a burst of one second's worth,
/// so that a short pause is not made up for by a burst above the limit for long.
const BURST: Duration = Duration::from_secs(1);

impl Throttle {
    /// A limit of `kib_per_second` KiB/s (at least 1).
    pub fn new(kib_per_second: u64) -> Throttle {
        Throttle {
            bytes_per_second: kib_per_second.max(1).saturating_mul(1024),
            free_at: Mutex::new(None),
        }
    }

    /// Books `bytes` at `now`: returns how long the caller waits before (upload) or after
    /// (download) moving them. Pure but for the booking itself, so it is tested without a
    /// clock.
    pub fn book(&self, bytes: u64, now: Instant) -> Duration {
        let takes = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let mut free_at = crate::sync::lock(&self.free_at);
        // Time not used since the last booking is lost beyond one burst's worth.
        let start = match *free_at {
            Some(at) if at + BURST > now => at,
            _ => now.checked_sub(BURST).unwrap_or(now),
        };
        let end = start + takes;
        *free_at = Some(end);
        end.saturating_duration_since(now)
    }

    /// Waits until `bytes` may have moved.
    fn wait(&self, bytes: u64) {
        let wait = self.book(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A backend whose transfers are held to the limits given.
pub struct Throttled {
    inner: std::sync::Arc<dyn Backend>,
    upload: Option<Throttle>,
    download: Option<Throttle>,
}

impl Throttled {
    /// `inner` limited to `upload` and `download` KiB/s (`None`: no limit that way).
    pub fn new(
        inner: std::sync::Arc<dyn Backend>,
        upload: Option<u64>,
        download: Option<u64>,
    ) -> Throttled {
        Throttled {
            inner,
            upload: upload.map(Throttle::new),
            download: download.map(Throttle::new),
        }
    }

    fn downloaded(&self, bytes: u64) {
        if let Some(t) = &self.download {
            t.wait(bytes);
        }
    }
}

impl Backend for Throttled {
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        if let Some(t) = &self.upload {
            t.wait(bytes.len() as u64);
        }
        self.inner.put_new(key, bytes)
    }

    fn put_data_pack(&self, key: &str, bytes: Bytes) -> Result<()> {
        if let Some(t) = &self.upload {
            t.wait(bytes.len() as u64);
        }
        self.inner.put_data_pack(key, bytes)
    }

    fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let bytes = self.inner.get(what, key)?;
        self.downloaded(bytes.len() as u64);
        Ok(bytes)
    }

    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        known_size: Option<u64>,
    ) -> Result<Bytes> {
        let bytes = self.inner.get_bounded(what, key, max, known_size)?;
        self.downloaded(bytes.len() as u64);
        Ok(bytes)
    }

    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self.inner.get_range(what, key, range)?;
        self.downloaded(bytes.len() as u64);
        Ok(bytes)
    }

    fn with_range(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        let len = range.end.saturating_sub(range.start);
        self.inner.with_range(what, key, range, sink)?;
        self.downloaded(len);
        Ok(())
    }

    fn with_range_direct(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        let len = range.end.saturating_sub(range.start);
        self.inner.with_range_direct(what, key, range, sink)?;
        self.downloaded(len);
        Ok(())
    }

    fn prefetches(&self) -> bool {
        self.inner.prefetches()
    }

    fn prefetch(&self, key: &str, range: Range<u64>) {
        self.inner.prefetch(key, range)
    }

    fn reads_directly(&self) -> bool {
        self.inner.reads_directly()
    }

    fn read_cost(&self) -> ReadCost {
        self.inner.read_cost()
    }

    fn forget(&self, key: &str) {
        self.inner.forget(key)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(dir)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn staging_leftovers(&self) -> Result<Vec<ObjectInfo>> {
        self.inner.staging_leftovers()
    }

    fn delete_staging(&self, key: &str) -> Result<()> {
        self.inner.delete_staging(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_follow_the_limit_after_one_burst() {
        let t = Throttle::new(100); // 102,400 bytes a second
        let now = Instant::now() + Duration::from_secs(10);
        // One second's worth goes at once (the burst), the next second's waits a second.
        assert_eq!(t.book(102_400, now), Duration::ZERO);
        assert_eq!(t.book(102_400, now), Duration::from_secs(1));
        // Booked from several threads, bytes queue on one timeline.
        assert_eq!(t.book(51_200, now), Duration::from_millis(1500));
        // Two seconds later the queue has drained.
        assert_eq!(
            t.book(51_200, now + Duration::from_secs(2)),
            Duration::from_millis(0)
        );
        // A long pause is not saved up beyond one burst.
        let later = now + Duration::from_secs(60);
        assert_eq!(t.book(102_400, later), Duration::ZERO);
        assert_eq!(t.book(102_400, later), Duration::from_secs(1));
    }

    #[test]
    fn a_throttled_store_moves_the_same_bytes() {
        use crate::storage::MemoryBackend;
        let inner = std::sync::Arc::new(MemoryBackend::new());
        let store = Throttled::new(inner, Some(1 << 20), Some(1 << 20));
        store
            .put_new("data/ab/x", Bytes::from_static(b"hello"))
            .unwrap();
        assert_eq!(&store.get("x", "data/ab/x").unwrap()[..], b"hello");
        assert_eq!(&store.get_range("x", "data/ab/x", 1..3).unwrap()[..], b"el");
        assert_eq!(store.list("data").unwrap().len(), 1);
        assert_eq!(store.read_cost(), ReadCost::LOCAL);
    }
}
