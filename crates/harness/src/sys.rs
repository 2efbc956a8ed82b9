//! Process-level facts and settings: peak memory, the allocator, other programs busy on the
//! machine.

use randbench_core::units::Bytes;
use randbench_schema::BusyProcess;

/// Blocks below this many bytes come from the heap, not their own mmap (glibc's largest).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap kept, not returned to the OS, up to this many bytes.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Keeps glibc from returning large freed blocks to the OS. Training frees and reallocates the
/// same megabyte-sized tensors every step; with glibc's defaults each step page-faults them in
/// again, which cost the 784-512-10 step on candle about a quarter of its time.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// [`tune_allocator`]'s settings as a `GLIBC_TUNABLES` value, for a process that is not
/// randbench's (a peer compared with it).
pub fn allocator_tunables() -> String {
    format!(
        "glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
    )
}

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts a new peak-memory measurement (Linux: resets the resident-set high-water mark).
/// Freed heap is returned to the OS first: [`tune_allocator`] keeps glibc from doing so by
/// itself, and an in-process cell would otherwise start from the earlier cells' freed memory.
/// Returns whether the mark was reset: where it was not (no `clear_refs`, as in some
/// sandboxes), the peak is the process's since it started.
pub fn reset_peak_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of the heaps.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's resident memory now.
pub fn resident_memory() -> Option<Bytes> {
    status_kib("VmRSS:").map(|k| Bytes(k * 1024))
}

/// The process's peak resident memory since the last reset.
pub fn peak_memory() -> Option<Bytes> {
    status_kib("VmHWM:").map(|k| Bytes(k * 1024))
}

/// Another process using more than this share of one core (in percent) while a cell ran
/// counts as busy beside it.
pub const BUSY_CPU_PERCENT: f32 = 20.0;

/// Watches the CPU use of every process outside this one and its children (the cells), so
/// that results can say what else was running.
/// Where the system cannot be read, it sees nothing.
pub struct BusyWatch {
    sys: Option<sysinfo::System>,
    me: sysinfo::Pid,
}

impl BusyWatch {
    pub fn start() -> Self {
        let mut watch = BusyWatch {
            sys: sysinfo::System::new().ok(),
            me: sysinfo::Pid::from_u32(std::process::id()),
        };
        watch.busy_since_last();
        watch
    }

    fn ours(sys: &sysinfo::System, me: sysinfo::Pid, pid: sysinfo::Pid) -> bool {
        let mut at = Some(pid);
        for _ in 0..64 {
            match at {
                Some(p) if p == me => return true,
                Some(p) => at = sys.process(p).and_then(|p| p.parent()),
                None => return false,
            }
        }
        false
    }

    /// The processes that were busy since the last call, busiest first.
    pub fn busy_since_last(&mut self) -> Vec<BusyProcess> {
        let me = self.me;
        let Some(sys) = &mut self.sys else { return vec![] };
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::All,
            true,
            sysinfo::ProcessRefreshKind::nothing().with_cpu(),
        );
        let sys = &*sys;
        let mut busy: Vec<BusyProcess> = sys
            .processes()
            .iter()
            .filter(|(&pid, p)| p.cpu_usage() > BUSY_CPU_PERCENT && !Self::ours(sys, me, pid))
            .map(|(pid, p)| BusyProcess {
                name: p.name().to_string_lossy().into_owned(),
                pid: pid.as_u32(),
                core_percent: p.cpu_usage(),
            })
            .collect();
        busy.sort_by(|a, b| b.core_percent.total_cmp(&a.core_percent));
        busy
    }
}
