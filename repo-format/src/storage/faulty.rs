//! A fault-injecting store: wraps any [`Backend`] and makes its requests fail the way real
//! stores fail, by a seeded plan, so that tests can prove every operation ends in success or a
//! clear error and loses nothing (`repo-format/tests/faults.rs`). Faults: a share of requests
//! of a kind fail (before the request, or after a write took effect, as a timeout after the
//! server acted does), the Nth request of a kind fails, requests are delayed, reads come back
//! short or with a flipped bit, listings miss the most recent objects (eventual consistency),
//! deletes fail.
//!
//! Not used by the program itself: a test tool, public so that integration tests can build it.
//!
//! May use: the storage floor's trait and error constructors.

use super::backend::{Backend, ObjectInfo, RangeSink, ReadCost};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kind of request, as faults are planned and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Size,
}

const OPS: [Op; 5] = [Op::Put, Op::Get, Op::List, Op::Delete, Op::Size];

/// What to inject. Shares are probabilities per request, drawn from the seeded generator.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// Share of requests of every kind that fail before reaching the store.
    pub fail_share: f64,
    /// Share of puts that take effect and then report a failure (a timeout after success).
    pub fail_after_put_share: f64,
    /// The Nth request (1-based) of a kind fails.
    pub fail_nth: Option<(Op, u64)>,
    /// Every request waits this long first.
    pub delay: Option<Duration>,
    /// Share of reads returned one or more bytes short.
    pub truncate_share: f64,
    /// Share of reads returned with one bit flipped.
    pub flip_share: f64,
    /// Listings leave out the objects written by the last this-many puts.
    pub stale_listing: usize,
    /// Share of deletes that fail (the object stays).
    pub fail_delete_share: f64,
}

/// What was injected, for the test's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub requests: u64,
    pub failed: u64,
    pub failed_after_put: u64,
    pub truncated: u64,
    pub flipped: u64,
    pub stale_listings: u64,
    pub failed_deletes: u64,
}

/// The wrapping store; see the module doc.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    state: Mutex<State>,
    counts: [AtomicU64; 5],
}

struct State {
    rng: u64,
    enabled: bool,
    recent_puts: std::collections::VecDeque<String>,
    injected: Injected,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> FaultyBackend {
        FaultyBackend {
            inner,
            state: Mutex::new(State {
                rng: plan.seed ^ 0x9e37_79b9_7f4a_7c15,
                enabled: true,
                recent_puts: Default::default(),
                injected: Injected::default(),
            }),
            plan,
            counts: Default::default(),
        }
    }

    /// Turns injection on or off (a test verifies the repository with faults off).
    pub fn set_enabled(&self, enabled: bool) {
        self.state().enabled = enabled;
    }

    /// What has been injected so far.
    pub fn injected(&self) -> Injected {
        self.state().injected
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the request and decides whether it fails before reaching the store.
    fn before(&self, op: Op, key: &str) -> Result<()> {
        let n = self.counts[OPS.iter().position(|o| *o == op).unwrap_or(0)]
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if let Some(d) = self.plan.delay {
            std::thread::sleep(d);
        }
        let mut st = self.state();
        st.injected.requests += 1;
        if !st.enabled {
            return Ok(());
        }
        let nth = self.plan.fail_nth == Some((op, n));
        if nth || st.chance(self.plan.fail_share) {
            st.injected.failed += 1;
            return Err(injected(op, key, "the request failed"));
        }
        Ok(())
    }

    /// Damages a read's bytes by the plan.
    fn after_read(&self, key: &str, bytes: Bytes) -> Bytes {
        let mut st = self.state();
        if !st.enabled || bytes.is_empty() {
            return bytes;
        }
        if st.chance(self.plan.truncate_share) {
            st.injected.truncated += 1;
            let keep = (st.next() % bytes.len() as u64) as usize;
            return bytes.slice(..keep);
        }
        if st.chance(self.plan.flip_share) {
            st.injected.flipped += 1;
            let mut v = bytes.to_vec();
            let at = (st.next() % v.len() as u64) as usize;
            v[at] ^= 1 << (st.next() % 8);
            let _ = key;
            return Bytes::from(v);
        }
        bytes
    }
}

impl State {
    /// splitmix64: small, seeded, good enough to spread faults.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, share: f64) -> bool {
        share > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= share
    }
}

fn injected(op: Op, key: &str, what: &str) -> Error {
    Error::Storage {
        operation: match op {
            Op::Put => "write",
            Op::Get => "read",
            Op::List => "listing",
            Op::Delete => "delete",
            Op::Size => "size query",
        },
        path: key.to_string(),
        reason: format!("injected fault: {what}"),
    }
}

impl Backend for FaultyBackend {
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.before(Op::Put, key)?;
        self.inner.put_new(key, bytes)?;
        let mut st = self.state();
        if self.plan.stale_listing > 0 {
            st.recent_puts.push_back(key.to_string());
            while st.recent_puts.len() > self.plan.stale_listing {
                st.recent_puts.pop_front();
            }
        }
        if st.enabled && st.chance(self.plan.fail_after_put_share) {
            st.injected.failed_after_put += 1;
            return Err(injected(
                Op::Put,
                key,
                "timed out after the write took effect",
            ));
        }
        Ok(())
    }

    fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        self.before(Op::Get, key)?;
        Ok(self.after_read(key, self.inner.get(what, key)?))
    }

    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        known_size: Option<u64>,
    ) -> Result<Bytes> {
        self.before(Op::Get, key)?;
        let bytes = self.inner.get_bounded(what, key, max, known_size)?;
        Ok(self.after_read(key, bytes))
    }

    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.before(Op::Get, key)?;
        let bytes = self.inner.get_range(what, key, range)?;
        Ok(self.after_read(key, bytes))
    }

    fn with_range(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        sink(&self.get_range(what, key, range)?)
    }

    fn read_cost(&self) -> ReadCost {
        self.inner.read_cost()
    }

    fn forget(&self, key: &str) {
        self.inner.forget(key)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.before(Op::Size, key)?;
        self.inner.size(key)
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.before(Op::List, dir)?;
        let mut listed = self.inner.list(dir)?;
        let mut st = self.state();
        if st.enabled && !st.recent_puts.is_empty() {
            let before = listed.len();
            let recent = &st.recent_puts;
            listed.retain(|o| !recent.contains(&o.key));
            if listed.len() != before {
                st.injected.stale_listings += 1;
            }
        }
        Ok(listed)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.before(Op::Delete, key)?;
        let mut st = self.state();
        if st.enabled && st.chance(self.plan.fail_delete_share) {
            st.injected.failed_deletes += 1;
            return Err(injected(Op::Delete, key, "the delete failed"));
        }
        drop(st);
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
    use crate::storage::memory::MemoryBackend;

    #[test]
    fn the_nth_request_fails_and_faults_stop_when_disabled() {
        let plan = FaultPlan {
            fail_nth: Some((Op::Get, 2)),
            ..FaultPlan::default()
        };
        let b = FaultyBackend::new(Arc::new(MemoryBackend::new()), plan);
        b.put_new("config", Bytes::from_static(b"abc")).unwrap();
        assert!(b.get("config", "config").is_ok());
        let e = b.get("config", "config").unwrap_err();
        assert!(e.to_string().contains("injected fault"), "{e}");
        assert!(b.get("config", "config").is_ok());
        assert_eq!(b.injected().failed, 1);
    }

    #[test]
    fn reads_are_damaged_and_listings_stale_by_the_plan() {
        let plan = FaultPlan {
            seed: 7,
            flip_share: 1.0,
            stale_listing: 1,
            ..FaultPlan::default()
        };
        let b = FaultyBackend::new(Arc::new(MemoryBackend::new()), plan);
        b.put_new("index/aa", Bytes::from_static(b"first")).unwrap();
        b.put_new("index/bb", Bytes::from_static(b"second"))
            .unwrap();
        assert_ne!(&b.get("index", "index/aa").unwrap()[..], b"first");
        let listed: Vec<String> = b
            .list("index")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(listed, vec!["index/aa".to_string()]);
        b.set_enabled(false);
        assert_eq!(&b.get("index", "index/aa").unwrap()[..], b"first");
        assert_eq!(b.list("index").unwrap().len(), 2);
    }
}
