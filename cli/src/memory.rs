//! Allocator tuning for glibc.
//!
//! glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB).
//! After the first 16 MiB pack buffer is freed, pack buffers and 1-8 MiB chunks come from
//! per-thread arenas, which keep freed memory: a first backup whose live heap peaks at 82 MiB
//! (heaptrack) had a peak RSS of 150-210 MiB. A fixed threshold keeps every block of 4 MiB or
//! more in its own mapping, returned to the system when freed: the same backup peaks at about
//! 78 MiB, most of it the 64 MiB key derivation at the start.

//!
//! The other direction costs time: glibc gives the free top of a heap back to the system once
//! it exceeds 128 KiB, so the next 1 MiB file chunk or zstd workspace lands on fresh pages, and
//! every fresh page is a fault and a zeroing (on the benchmark VM a first touch of anonymous
//! memory ran at about 1 GB/s). A trim threshold of 8 MiB keeps that memory for reuse (first
//! backup of the benchmark: 234,000 page faults -> about 50,000 with the reused pack and
//! chunker buffers, kernel time 1.5 s -> 0.8 s).

/// Sets a fixed mmap threshold of 4 MiB (this also stops glibc from raising it) and a trim
/// threshold of 8 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called once, first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Other allocators need no tuning.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
