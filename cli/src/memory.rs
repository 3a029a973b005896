//! Allocator tuning for glibc.
//!
//! glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB).
//! After the first 16 MiB pack buffer is freed, pack buffers and 1-8 MiB chunks come from
//! per-thread arenas, which keep freed memory: a first backup whose live heap peaks at 82 MiB
//! (heaptrack) had a peak RSS of 150-210 MiB. A fixed threshold keeps every block of 4 MiB or
//! more in its own mapping, returned to the system when freed: the same backup peaks at about
//! 78 MiB, most of it the 64 MiB key derivation at the start.

/// Sets a fixed mmap threshold of 4 MiB (this also stops glibc from raising it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called once, first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Other allocators need no tuning.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
