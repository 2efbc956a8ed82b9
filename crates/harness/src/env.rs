//! The environment a run happened in, recorded next to its results.

use randbench_core::backend::{BackendId, BackendInfo};
use randbench_core::units::Bytes;
use serde::{Deserialize, Serialize};
use std::process::Command;

pub const ENV_FILE: &str = "environment.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub randbench_version: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub started_at: String,
    pub command: Vec<String>,
    pub host: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub cpu: Option<String>,
    pub logical_cpus: usize,
    pub physical_cores: Option<usize>,
    pub memory: Bytes,
    /// `nvidia-smi` lines: name, memory, driver.
    pub gpus: Vec<String>,
    pub backends: Vec<(BackendId, BackendInfo)>,
}

fn git(args: &[&str]) -> Option<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn capture(backends: Vec<(BackendId, BackendInfo)>) -> Environment {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let gpus = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect())
        .unwrap_or_default();
    Environment {
        randbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        started_at: utc_now(),
        command: std::env::args().collect(),
        host: System::host_name().ok(),
        os: System::long_os_version().ok(),
        kernel: System::kernel_version().ok(),
        cpu: sys.as_ref().and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_string())),
        logical_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        physical_cores: System::physical_core_count().ok(),
        memory: Bytes(sys.as_ref().map(|s| s.total_memory()).unwrap_or(0)),
        gpus,
        backends,
    }
}

/// The current time in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
