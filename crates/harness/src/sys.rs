//! Process-level facts and settings: peak memory, the allocator.

use randbench_core::units::Bytes;

/// Keeps glibc from returning large freed blocks to the OS. Training frees and reallocates the
/// same megabyte-sized tensors every step; with glibc's defaults each step page-faults them in
/// again, which cost the 784-512-10 step on candle about a quarter of its time.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts a new peak-memory measurement (Linux: resets the resident-set high-water mark).
/// Freed heap is returned to the OS first: [`tune_allocator`] keeps glibc from doing so by
/// itself, and an in-process cell would otherwise start from the earlier cells' freed memory.
pub fn reset_peak_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of the heaps.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's resident memory now.
pub fn resident_memory() -> Option<Bytes> {
    status_kib("VmRSS:").map(|k| Bytes(k * 1024))
}

/// The process's peak resident memory since the last reset.
pub fn peak_memory() -> Option<Bytes> {
    status_kib("VmHWM:").map(|k| Bytes(k * 1024))
}
