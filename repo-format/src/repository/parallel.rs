//! A small work-sharing map for operations that read or delete many objects (check, restore,
//! prune, forget, loading index files and snapshots): a fixed number of scoped threads take
//! items in order from a shared counter, so memory in flight is one item per thread, and
//! results come back in the items' order. [`try_each`] stops at the first failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many threads a read-side operation uses: at least one per core (decrypting and hashing
/// are CPU work), at least `connections` (each thread waits on one request at a time), at most 16.
pub fn threads_for(connections: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.max(connections).clamp(1, 16)
}

/// As [`threads_for`], for an operation that reads every byte once through
/// [`Storage::with_range_direct`]: one thread more where those reads wait for the disk, so that
/// the cores stay busy meanwhile.
///
/// [`Storage::with_range_direct`]: crate::storage::Storage::with_range_direct
pub fn threads_for_reading(storage: &crate::storage::Storage) -> usize {
    threads_for(storage.connections()) + usize::from(storage.reads_directly())
}

/// Applies `f` to every item with `threads` threads and returns the results in item order.
/// Once `stop` is set (by the caller, or by `f` through it) no new item is started; the results
/// of items never started are `None`.
pub fn map<T, R, F>(items: &[T], threads: usize, stop: &AtomicBool, f: F) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let threads = threads.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let r = f(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// As [`map`] with nothing to stop it: every item is done, and the results come back in item
/// order.
pub fn map_all<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let never = AtomicBool::new(false);
    map(items, threads, &never, f)
        .into_iter()
        .map(|r| r.expect("map leaves an item undone only once stopped, and nothing stops it"))
        .collect()
}

/// Applies `f` to every item with `threads` threads until one fails: after a failure no new
/// item is started, and once those in flight are done the first error in item order is
/// returned.
pub fn try_each<T, E, F>(items: &[T], threads: usize, f: F) -> Result<(), E>
where
    T: Sync,
    E: Send,
    F: Fn(&T) -> Result<(), E> + Sync,
{
    let stop = AtomicBool::new(false);
    let results = map(items, threads, &stop, |item| {
        let result = f(item);
        if result.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        result
    });
    results
        .into_iter()
        .flatten()
        .find_map(|r| r.err())
        .map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_stop_stops() {
        let items: Vec<u32> = (0..1000).collect();
        let stop = AtomicBool::new(false);
        let out = map(&items, 4, &stop, |x| x * 2);
        assert_eq!(out, items.iter().map(|x| Some(x * 2)).collect::<Vec<_>>());
        let stop = AtomicBool::new(false);
        let out = map(&items, 3, &stop, |&x| {
            if x == 10 {
                stop.store(true, Ordering::Relaxed);
            }
            x
        });
        assert_eq!(out[10], Some(10));
        // Each thread finishes at most the item it holds.
        assert!(out.iter().filter(|r| r.is_some()).count() <= 13);
        assert!(out[999].is_none());
    }

    #[test]
    fn map_all_does_every_item_and_try_each_stops_at_the_first_failure() {
        let items: Vec<u32> = (0..500).collect();
        assert_eq!(map_all(&items, 3, |x| x + 1), (1..501).collect::<Vec<_>>());
        let fail = |&x: &u32| if x == 20 || x == 30 { Err(x) } else { Ok(()) };
        // The first failure in item order, whichever thread met which first.
        assert_eq!(try_each(&items, 3, fail), Err(20));
        // On one thread nothing after the failure is started.
        let done = AtomicUsize::new(0);
        let counted = |x: &u32| {
            done.fetch_add(1, Ordering::Relaxed);
            fail(x)
        };
        assert_eq!(try_each(&items, 1, counted), Err(20));
        assert_eq!(done.load(Ordering::Relaxed), 21);
        assert_eq!(try_each(&items, 3, |_| Ok::<(), u32>(())), Ok(()));
    }
}
