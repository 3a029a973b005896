//! Locking shared by every floor: a mutex whose holder panicked still gives its data (every
//! lock here guards bookkeeping a panicking thread leaves consistent: listings, counters,
//! buffers kept for reuse), so one thread's panic becomes that thread's error, not a cascade of
//! poisoned-lock panics in the others. Uses nothing but `std`.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
