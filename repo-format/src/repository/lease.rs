//! The maintenance lease at run time: taking it, the heartbeat that refreshes it, releasing
//! it, and `unlock` (the protocol is in `format/lease.rs` and docs/maintenance.md).
//!
//! Uses storage (through `repository/stored.rs` for reads), the clock and the process table;
//! the record's encoding is [`crate::format::lease`]'s.

use crate::error::{Error, Result};
use crate::format::key::{ObjectClass, ObjectKey};
use crate::format::lease::LeaseRecord;
use crate::repository::stored::read_bounded;
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

impl LeaseRecord {
    /// Why this record no longer holds the lease at `now`, or `None` if it still does.
    pub fn stale_reason(&self, now: i64, this_host: &str) -> Option<String> {
        if self.released {
            return Some("released".into());
        }
        if now >= self.expires {
            return Some(format!("expired {} s ago", now - self.expires));
        }
        if self.hostname == this_host && self.pid != std::process::id() && !pid_alive(self.pid) {
            return Some(format!("process {} on this host is gone", self.pid));
        }
        None
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    // Signal 0 checks existence only. EPERM means it exists under another user.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn key_of(seq: u64) -> String {
    ObjectKey::Lease(seq).to_string()
}

/// Every lease object: sequence number and key, lowest first. Objects in `locks/` that are not
/// lease objects (`lease-` and exactly 20 digits, [`ObjectKey::parse`]) are ignored.
pub fn list(storage: &Storage) -> Result<Vec<(u64, String)>> {
    // Always a fresh listing: the protocol depends on seeing other processes' records.
    let mut out: Vec<(u64, String)> = storage
        .list_uncached(ObjectClass::Lease.dir())?
        .into_iter()
        .filter_map(
            |(key, _)| match ObjectKey::parse_as(ObjectClass::Lease, &key)? {
                ObjectKey::Lease(seq) => Some((seq, key)),
                _ => None,
            },
        )
        .collect();
    out.sort();
    Ok(out)
}

/// Reads lease record `seq` (`None` if it is gone).
pub fn read(storage: &Storage, keys: &MasterKeys, seq: u64) -> Result<Option<LeaseRecord>> {
    match read_bounded(storage, &ObjectKey::Lease(seq)) {
        Ok(bytes) => LeaseRecord::from_stored(keys, seq, &bytes).map(Some),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a lease lives and how often it is refreshed.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub operation: String,
    pub hostname: String,
    /// A record expires this long after it is written.
    pub lifetime: Duration,
    /// The heartbeat writes a new record this often (well below `lifetime`).
    pub refresh: Duration,
}

impl LeaseOptions {
    /// Five-minute records refreshed every minute.
    pub fn new(operation: &str, hostname: &str) -> LeaseOptions {
        LeaseOptions {
            operation: operation.into(),
            hostname: hostname.into(),
            lifetime: Duration::from_secs(300),
            refresh: Duration::from_secs(60),
        }
    }
}

struct State {
    seq: u64,
    record: LeaseRecord,
    /// Why the lease was lost, once it was.
    lost: Option<String>,
}

struct Inner {
    storage: Storage,
    keys: MasterKeys,
    options: LeaseOptions,
    state: Mutex<State>,
}

impl Inner {
    /// Writes `record` as sequence `seq` and reads it back: true if it is ours.
    fn create(&self, seq: u64, record: &LeaseRecord) -> Result<bool> {
        self.write(seq, record)?;
        self.is_ours(seq, record)
    }

    fn write(&self, seq: u64, record: &LeaseRecord) -> Result<()> {
        self.storage
            .put_new(&key_of(seq), record.to_stored(&self.keys)?.into())
    }

    /// Whether record `seq` is `record` (put_new treats "already exists" as success; whoever's
    /// record is there won).
    fn is_ours(&self, seq: u64, record: &LeaseRecord) -> Result<bool> {
        Ok(read(&self.storage, &self.keys, seq)?.is_some_and(|r| r.holder == record.holder))
    }

    fn refresh(&self) -> Result<()> {
        let (seq, mut record) = {
            let state = crate::sync::lock(&self.state);
            if state.lost.is_some() {
                return Ok(());
            }
            (state.seq, state.record.clone())
        };
        record.written = now_seconds();
        record.expires = record.written + self.options.lifetime.as_secs() as i64;
        if self.create(seq + 1, &record)? {
            let mut state = crate::sync::lock(&self.state);
            state.seq = seq + 1;
            state.record = record;
            drop(state);
            // The older record is below the newest one, so deleting it is allowed.
            self.storage.delete(&key_of(seq))?;
        } else {
            crate::sync::lock(&self.state).lost =
                Some(format!("another process took lease {} over", seq + 1));
        }
        Ok(())
    }
}

/// A held maintenance lease. Dropping it releases it.
pub struct Lease {
    inner: Arc<Inner>,
    stop: Option<crossbeam_channel::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
    /// The records that were below ours when it was taken (a previous holder's): removed on
    /// release, with ours, rather than one round trip before the work starts.
    older: Vec<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

/// A lease record written but not yet confirmed ([`Lease::claim`]): [`Claim::confirm_while`]
/// makes it a [`Lease`] or gives it up. Dropped unconfirmed, it is released (L4).
pub struct Claim {
    inner: Arc<Inner>,
    seq: u64,
    record: LeaseRecord,
    /// The records below ours when we listed: deleted when the lease is released.
    older: Vec<String>,
    /// Confirmed or given up: nothing to release on drop.
    settled: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").finish_non_exhaustive()
    }
}

impl Claim {
    /// Confirms the claim (L2): reads our record back and lists `locks/` again, both after
    /// the write, and meanwhile runs `meanwhile` (reads that may start once our record is
    /// written: if the claim is lost, their result is dropped with the error). On success
    /// the lease is held and its heartbeat runs.
    pub fn confirm_while<T: Send>(
        mut self,
        meanwhile: impl FnOnce() -> T + Send,
    ) -> Result<(Lease, T)> {
        let (inner, seq, record) = (self.inner.clone(), self.seq, self.record.clone());
        let storage = &inner.storage;
        let (ours, after, done) = std::thread::scope(|scope| {
            let after = scope.spawn(|| list(storage));
            let done = scope.spawn(meanwhile);
            let ours = inner.is_ours(seq, &record);
            let after = after
                .join()
                .unwrap_or_else(|_| Err(Error::Locked("listing the leases failed".into())));
            (ours, after, done.join())
        });
        let done = done.map_err(|_| Error::Locked("reading under the lease failed".into()))?;
        if !ours? {
            // The record at our number is someone else's: nothing of ours to release.
            self.settled = true;
            return Err(Error::Locked(
                "another process took the lease at the same moment".into(),
            ));
        }
        let after = after?;
        if after.iter().any(|(s, _)| *s > seq) {
            self.settled = true;
            storage.delete(&key_of(seq))?;
            return Err(Error::Locked(
                "another process took the lease at the same moment".into(),
            ));
        }
        self.settled = true;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let beat = inner.clone();
        let heartbeat = std::thread::Builder::new()
            .name("coffer-lease".into())
            .spawn(move || {
                let period = beat.options.refresh;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(period)
                {
                    // A failed refresh is retried at the next beat; `check` refuses to go on
                    // once too little of the lease is left.
                    let _ = beat.refresh();
                }
            })
            .map_err(|e| Error::io("starting the lease heartbeat for", "prune", e))?;
        Ok((
            Lease {
                inner,
                stop: Some(stop_tx),
                heartbeat: Some(heartbeat),
                older: std::mem::take(&mut self.older),
            },
            done,
        ))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            let mut record = self.record.clone();
            record.released = true;
            record.written = now_seconds();
            if self.inner.write(self.seq + 1, &record).is_ok() {
                let _ = self.inner.storage.delete(&key_of(self.seq));
            }
        }
    }
}

impl Lease {
    /// Takes the lease, or fails with [`Error::Locked`] naming the holder.
    pub fn acquire(storage: &Storage, keys: &MasterKeys, options: LeaseOptions) -> Result<Lease> {
        Self::claim(storage, keys, options)?
            .confirm_while(|| ())
            .map(|(lease, ())| lease)
    }

    /// The first half of taking the lease (L2): lists `locks/`, reads the highest record, and
    /// if it is free, writes ours above it. [`Claim::confirm_while`] finishes.
    pub fn claim(storage: &Storage, keys: &MasterKeys, options: LeaseOptions) -> Result<Claim> {
        let existing = list(storage)?;
        let mut next = 1;
        if let Some((seq, key)) = existing.last() {
            next = seq + 1;
            match read(storage, keys, *seq) {
                Ok(Some(record)) => {
                    if record
                        .stale_reason(now_seconds(), &options.hostname)
                        .is_none()
                    {
                        return Err(Error::Locked(format!(
                            "held by {}; wait for it to finish, or run `coffer unlock` if it \
                             is certainly gone",
                            record.describe()
                        )));
                    }
                }
                // Replaced while we looked: someone else is active right now.
                Ok(None) => {
                    return Err(Error::Locked(
                        "another process changed the lease just now; try again".into(),
                    ))
                }
                Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                    return Err(Error::Locked(format!(
                        "the lease object {key} cannot be read ({e}); remove it with `coffer \
                         unlock --all` if no maintenance is running"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        let mut holder = [0u8; 16];
        coffer_crypto::random_fill(&mut holder)?;
        let written = now_seconds();
        let record = LeaseRecord {
            holder: hex::encode(holder),
            operation: options.operation.clone(),
            hostname: options.hostname.clone(),
            pid: std::process::id(),
            written,
            expires: written + options.lifetime.as_secs() as i64,
            released: false,
        };
        let inner = Arc::new(Inner {
            storage: storage.clone(),
            keys: keys.clone(),
            options,
            state: Mutex::new(State {
                seq: next,
                record: record.clone(),
                lost: None,
            }),
        });
        inner.write(next, &record)?;
        Ok(Claim {
            inner,
            seq: next,
            record,
            older: existing.into_iter().map(|(_, key)| key).collect(),
            settled: false,
        })
    }

    /// Succeeds while the lease is certainly ours for a while longer: not lost, and at least a
    /// third of its lifetime left on our clock. Call it right before every deletion.
    pub fn check(&self) -> Result<()> {
        let state = crate::sync::lock(&self.inner.state);
        if let Some(why) = &state.lost {
            return Err(Error::Locked(format!(
                "the maintenance lease was lost: {why}"
            )));
        }
        let margin = (self.inner.options.lifetime.as_secs() / 3) as i64;
        if now_seconds() + margin >= state.record.expires {
            return Err(Error::Locked(
                "the maintenance lease could not be refreshed in time; stopping before deleting"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Refreshes the lease now (also done by the heartbeat).
    pub fn refresh(&self) -> Result<()> {
        self.inner.refresh()?;
        self.check()
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }

    /// Gives the lease up: writes a released record above ours, then removes ours.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        self.stop_heartbeat();
        let (seq, mut record, lost) = {
            let mut state = crate::sync::lock(&self.inner.state);
            let lost = state.lost.is_some();
            // Mark as lost so a second call does nothing.
            state.lost.get_or_insert_with(|| "released".into());
            (state.seq, state.record.clone(), lost)
        };
        if lost {
            return Ok(());
        }
        record.released = true;
        record.written = now_seconds();
        // Once record seq+1 exists, ours or a taker's, ours is not the highest and may go
        // (docs/maintenance.md, L4): no need to read it back first.
        self.inner.write(seq + 1, &record)?;
        // Ours and the records that were below ours when it was taken, all at once.
        let mut keys = std::mem::take(&mut self.older);
        keys.push(key_of(seq));
        crate::repository::parallel::try_each(&keys, self.inner.storage.connections(), |key| {
            self.inner.storage.delete(key)
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// What `unlock` did.
#[derive(Debug, Default)]
pub struct Unlocked {
    /// The lease record that was cleared, with the reason it could be.
    pub cleared: Option<(LeaseRecord, String)>,
    /// A lease still held (left alone without `all`).
    pub held: Option<LeaseRecord>,
}

/// Clears the lease. Without `all`, only a stale lease (released, expired, or held by a dead
/// process on this host) is cleared; with `all`, a live one too, for the manual case where its
/// holder is known to be gone. Clearing writes a released record above the highest one (so
/// sequence numbers never go backwards, and a holder that is in fact alive loses its next
/// refresh and stops before deleting anything), then removes the older records.
pub fn unlock(storage: &Storage, keys: &MasterKeys, hostname: &str, all: bool) -> Result<Unlocked> {
    let existing = list(storage)?;
    let mut out = Unlocked::default();
    let Some(&(top, _)) = existing.last() else {
        return Ok(out);
    };
    let (record, reason) = match read(storage, keys, top) {
        Ok(Some(r)) => {
            let reason = match r.stale_reason(now_seconds(), hostname) {
                Some(why) => why,
                None if all => "still held; cleared with --all".to_string(),
                None => {
                    out.held = Some(r);
                    return Ok(out);
                }
            };
            (Some(r), reason)
        }
        Ok(None) => (None, "gone".to_string()),
        Err(e) if all => (None, format!("unreadable ({e}); cleared with --all")),
        Err(e) => return Err(e),
    };
    let mut holder = [0u8; 16];
    coffer_crypto::random_fill(&mut holder)?;
    let now = now_seconds();
    let marker = LeaseRecord {
        holder: hex::encode(holder),
        operation: "unlock".into(),
        hostname: hostname.into(),
        pid: std::process::id(),
        written: now,
        expires: now,
        released: true,
    };
    storage.put_new(&key_of(top + 1), marker.to_stored(keys)?.into())?;
    for (_, key) in list(storage)?.iter().filter(|(seq, _)| *seq <= top) {
        storage.delete(key)?;
    }
    if let Some(r) = record {
        out.cleared = Some((r, reason));
    } else {
        out.cleared = Some((marker, reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(lifetime: u64) -> LeaseOptions {
        LeaseOptions {
            operation: "prune".into(),
            hostname: "test-host".into(),
            lifetime: Duration::from_secs(lifetime),
            refresh: Duration::from_millis(50),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_release_frees_it() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let first = Lease::acquire(&storage, &keys, options(300)).unwrap();
        first.check().unwrap();
        let err = Lease::acquire(&storage, &keys, options(300)).unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        assert!(err.to_string().contains("test-host"), "{err}");
        // The heartbeat advances the sequence and keeps exactly one record.
        std::thread::sleep(Duration::from_millis(200));
        first.check().unwrap();
        let live = list(&storage).unwrap();
        assert_eq!(live.len(), 1, "{live:?}");
        assert!(live[0].0 > 1);
        first.release().unwrap();
        let second = Lease::acquire(&storage, &keys, options(300)).unwrap();
        // The first holder's released record stays below ours until ours is released.
        assert_eq!(list(&storage).unwrap().len(), 2);
        drop(second);
        let top = list(&storage).unwrap();
        assert_eq!(top.len(), 1, "{top:?}");
        let rec = read(&storage, &keys, top.last().unwrap().0)
            .unwrap()
            .unwrap();
        assert!(rec.released);
    }

    #[test]
    fn a_claim_given_up_unconfirmed_is_released() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let claim = Lease::claim(&storage, &keys, options(300)).unwrap();
        // Held while claimed: nobody else gets it.
        assert!(Lease::acquire(&storage, &keys, options(300)).is_err());
        drop(claim);
        let top = list(&storage).unwrap();
        assert_eq!(top.len(), 1, "{top:?}");
        assert!(read(&storage, &keys, top[0].0).unwrap().unwrap().released);
        Lease::acquire(&storage, &keys, options(300)).unwrap();
    }

    #[test]
    fn a_claim_outnumbered_while_confirming_drops_what_it_read_and_its_record() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let claim = Lease::claim(&storage, &keys, options(300)).unwrap();
        let ours = list(&storage).unwrap()[0].0;
        // A contender from an older listing wrote a higher number meanwhile: it wins.
        let mut theirs = read(&storage, &keys, ours).unwrap().unwrap();
        theirs.holder = "11".repeat(16);
        storage
            .put_new(&key_of(ours + 1), theirs.to_stored(&keys).unwrap().into())
            .unwrap();
        let ran = std::sync::atomic::AtomicBool::new(false);
        let err = claim
            .confirm_while(|| ran.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        // The reads ran (at the same time as the confirmation) and their result was dropped;
        // our record is gone and theirs is the lease.
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(list(&storage).unwrap(), vec![(ours + 1, key_of(ours + 1))]);
    }

    #[test]
    fn expired_lease_is_taken_over_and_the_old_holder_learns_it() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let mut opts = options(0);
        opts.refresh = Duration::from_secs(3600);
        let stale = Lease::acquire(&storage, &keys, opts).unwrap();
        // Lifetime 0: expired at once, and check refuses to delete under it.
        assert!(stale.check().is_err());
        let taker = Lease::acquire(&storage, &keys, options(300)).unwrap();
        taker.check().unwrap();
        // The old holder's next refresh collides with the taker's record: it has lost.
        assert!(stale.refresh().is_err());
        drop(stale);
        taker.check().unwrap();
        assert!(Lease::acquire(&storage, &keys, options(300)).is_err());
    }

    #[test]
    fn a_dead_process_on_this_host_frees_the_lease_and_unlock_respects_live_ones() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let dead = LeaseRecord {
            holder: "00".repeat(16),
            operation: "prune".into(),
            hostname: "test-host".into(),
            pid: i32::MAX as u32,
            written: now_seconds(),
            expires: now_seconds() + 3600,
            released: false,
        };
        storage
            .put_new(&key_of(7), dead.to_stored(&keys).unwrap().into())
            .unwrap();
        assert!(dead.stale_reason(now_seconds(), "test-host").is_some());
        assert!(dead.stale_reason(now_seconds(), "other-host").is_none());
        let other = options(300);
        let lease = Lease::acquire(&storage, &keys, other).unwrap();
        assert_eq!(list(&storage).unwrap().last().unwrap().0, 8);
        let kept = unlock(&storage, &keys, "test-host", false).unwrap();
        assert!(kept.held.is_some() && kept.cleared.is_none());
        let cleared = unlock(&storage, &keys, "test-host", true).unwrap();
        assert!(cleared.cleared.is_some());
        // Only the released marker is left, above every earlier number.
        let left = list(&storage).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 9);
        // The holder that was cleared loses its next refresh and stops.
        assert!(lease.refresh().is_err());
        drop(lease);
        Lease::acquire(&storage, &keys, options(300)).unwrap();
    }

    #[test]
    fn only_lease_names_count_as_lease_records() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        for stray in [
            "locks/lease-9",
            "locks/.nfs0001",
            "locks/lease-0000000000000000000x",
        ] {
            storage
                .put_new(stray, bytes::Bytes::from_static(b"not a lease"))
                .unwrap();
        }
        assert!(list(&storage).unwrap().is_empty());
        let lease = Lease::acquire(&storage, &keys, options(300)).unwrap();
        assert_eq!(list(&storage).unwrap(), vec![(1, key_of(1))]);
        lease.release().unwrap();
        // The strays are neither read nor deleted.
        assert_eq!(storage.list_uncached("locks").unwrap().len(), 4);
    }

    #[test]
    fn racing_contenders_have_one_winner() {
        for _ in 0..20 {
            let storage = Storage::in_memory().unwrap();
            let keys = MasterKeys::generate().unwrap();
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let storage = storage.clone();
                    let keys = keys.clone();
                    std::thread::spawn(move || {
                        let mut o = options(300);
                        o.refresh = Duration::from_secs(3600);
                        Lease::acquire(&storage, &keys, o).ok()
                    })
                })
                .collect();
            // Join every contender before dropping any lease, so no one wins after a release.
            let results: Vec<Option<Lease>> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners = results.iter().filter(|l| l.is_some()).count();
            assert_eq!(winners, 1, "exactly one contender must win");
        }
    }
}
