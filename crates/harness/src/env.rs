//! The environment a run happened in, recorded next to its results.

use crate::nvml::Gpu;
use crate::probe::Probe;
use randbench_core::backend::{BackendId, BackendInfo};
use randbench_core::units::Bytes;
use serde::{Deserialize, Serialize};

pub const ENV_FILE: &str = "environment.json";

/// Reads `gpus` as this version writes it, or as versions before NVML's description wrote
/// it (`nvidia-smi` lines).
fn gpus_or_older<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Probe<Vec<Gpu>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Probe(Probe<Vec<Gpu>>),
        Older(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Probe(p) => p,
        Either::Older(lines) if lines.is_empty() => Probe::default(),
        Either::Older(lines) => {
            Probe::Absent { why: format!("not recorded; nvidia-smi said {}", lines.join("; ")) }
        }
    })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub randbench_version: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub started_at: String,
    pub command: Vec<String>,
    pub host: Option<String>,
    /// The name given with `run --machine` (a cloud instance type, a lab name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_name: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub cpu: Option<String>,
    pub logical_cpus: usize,
    pub physical_cores: Option<usize>,
    pub memory: Bytes,
    /// The GPUs NVML describes, or why it could not (no NVIDIA driver).
    #[serde(default, deserialize_with = "gpus_or_older")]
    pub gpus: Probe<Vec<Gpu>>,
    /// The CPU packages' RAPL energy counters, or why there are none.
    #[serde(default)]
    pub rapl: Probe<Vec<String>>,
    /// The CPU's vector and matrix extensions that decide kernel speed (AVX2, AVX-512, AMX,
    /// NEON/SVE…), as the kernel lists them.
    #[serde(default)]
    pub cpu_features: Vec<String>,
    /// The CPU frequency governor (`performance`, `powersave`, …) where the kernel exposes
    /// it; virtual machines often do not.
    #[serde(default)]
    pub governor: Option<String>,
    pub backends: Vec<(BackendId, BackendInfo)>,
}

impl Environment {
    /// The machine's hardware as one line: CPU, cores, memory, GPUs (without driver versions).
    pub fn hardware(&self) -> String {
        let gpus: Vec<String> = self
            .gpus
            .present()
            .map(|gs| gs.iter().map(|g| format!("{}, {} MiB", g.name, g.memory.0 >> 20)).collect())
            .unwrap_or_default();
        format!(
            "{}; {} logical CPUs, {} cores; {} GiB; GPUs: {}",
            self.cpu.as_deref().unwrap_or("unknown CPU"),
            self.logical_cpus,
            self.physical_cores.map_or("?".into(), |c| c.to_string()),
            (self.memory.0 as f64 / (1u64 << 30) as f64).round(),
            if gpus.is_empty() { "none".into() } else { gpus.join(" + ") }
        )
    }

    /// The environment as (what, value) lines, for the top of every report.
    pub fn facts(&self) -> Vec<(String, String)> {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let mut facts = vec![
            ("machine".into(), format!("{} ({})", self.fingerprint(), self.hardware())),
            (
                "host".into(),
                match &self.machine_name {
                    Some(name) => format!("{} (named {name})", or(&self.host)),
                    None => or(&self.host),
                },
            ),
            ("run started".into(), self.started_at.clone()),
            (
                "CPU".into(),
                format!(
                    "{}; features: {}; frequency governor: {}",
                    or(&self.cpu),
                    if self.cpu_features.is_empty() {
                        "none listed".into()
                    } else {
                        self.cpu_features.join(" ")
                    },
                    self.governor.as_deref().unwrap_or("not exposed"),
                ),
            ),
            ("memory".into(), self.memory.to_string()),
            (
                "GPUs".into(),
                match &self.gpus {
                    Probe::Present { value } if value.is_empty() => "NVML sees none".into(),
                    Probe::Present { value } => {
                        value.iter().map(Gpu::describe).collect::<Vec<_>>().join("; ")
                    }
                    Probe::Absent { why } => format!("none recorded: {why}"),
                },
            ),
            (
                "CPU energy (RAPL)".into(),
                match &self.rapl {
                    Probe::Present { value } => value.join(", "),
                    Probe::Absent { why } => format!("absent: {why}"),
                },
            ),
            ("OS".into(), format!("{}, kernel {}", or(&self.os), or(&self.kernel))),
            (
                "randbench".into(),
                format!(
                    "{} at commit {}{}",
                    self.randbench_version,
                    or(&self.git_commit),
                    if self.git_dirty == Some(true) { " (with uncommitted changes)" } else { "" }
                ),
            ),
            ("command".into(), self.command.join(" ")),
        ];
        for (id, info) in &self.backends {
            facts.push((
                id.to_string(),
                format!("{}, device {}, {} threads", info.library, info.device_name, info.threads),
            ));
        }
        facts
    }

    /// What reports call the machine: the name given with `run --machine`, else the host name.
    pub fn machine(&self) -> String {
        self.machine_name
            .clone()
            .or_else(|| self.host.clone())
            .unwrap_or_else(|| self.fingerprint())
    }

    /// A hash of [`hardware`](Self::hardware): machines alike in hardware share it, so that
    /// their histories line up whatever their host names; a changed driver keeps it.
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", fnv1a(self.hardware().as_bytes()))
    }
}

/// 64-bit FNV-1a: a hash that stays the same across builds and platforms (std's does not).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The extensions that matter for dense kernels, of those the kernel lists for CPU 0.
const CPU_FEATURES: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
];

/// `flags` (x86) or `Features` (Arm) of /proc/cpuinfo, filtered to [`CPU_FEATURES`].
pub fn cpu_features(cpuinfo: &str) -> Vec<String> {
    let listed: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    CPU_FEATURES.iter().filter(|f| listed.contains(f)).map(|f| f.to_string()).collect()
}

pub fn capture(
    backends: Vec<(BackendId, BackendInfo)>,
    machine_name: Option<String>,
) -> Environment {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    Environment {
        randbench_version: env!("CARGO_PKG_VERSION").to_string(),
        // From build.rs: the source this binary was built from, wherever it runs now.
        git_commit: option_env!("RANDBENCH_GIT_COMMIT").map(str::to_string),
        git_dirty: option_env!("RANDBENCH_GIT_DIRTY").map(|d| d == "true"),
        started_at: utc_now(),
        command: std::env::args().collect(),
        host: System::host_name().ok(),
        machine_name,
        os: System::long_os_version().ok(),
        kernel: System::kernel_version().ok(),
        cpu: sys.as_ref().and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_string())),
        logical_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        physical_cores: System::physical_core_count().ok(),
        memory: Bytes(sys.as_ref().map(|s| s.total_memory()).unwrap_or(0)),
        gpus: crate::nvml::gpus(),
        rapl: crate::energy::rapl(std::path::Path::new(crate::energy::POWERCAP)),
        cpu_features: std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| cpu_features(&t))
            .unwrap_or_default(),
        governor: std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .ok()
            .map(|g| g.trim().to_string()),
        backends,
    }
}

/// The time now as a file name's part: `20261205-073012`.
pub fn stamp() -> String {
    utc_now()[..19].replace([':', '-'], "").replace('T', "-")
}

/// The current time in UTC as `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds: runs that start
/// within one second still sort in order in the history).
pub fn utc_now() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    fn h200(driver: &str) -> crate::nvml::Gpu {
        crate::nvml::Gpu {
            name: "NVIDIA H200".into(),
            memory: randbench_core::units::Bytes(143_771 << 20),
            driver: driver.into(),
            cuda: Some("13.0".into()),
            max_sm_clock_mhz: Some(1980),
            max_memory_clock_mhz: Some(3201),
            power_limit_watts: Some(700.0),
            other_processes: vec![],
        }
    }

    #[test]
    fn fingerprints_follow_hardware_not_names_or_drivers() {
        let a = super::Environment {
            host: Some("night-1".into()),
            cpu: Some("AMD EPYC 9654".into()),
            logical_cpus: 2,
            physical_cores: Some(1),
            memory: randbench_core::units::Bytes(24 << 30),
            gpus: super::Probe::Present { value: vec![h200("580.65")] },
            ..Default::default()
        };
        let b = super::Environment {
            host: Some("night-2".into()),
            gpus: super::Probe::Present { value: vec![h200("590.10")] },
            ..a.clone()
        };
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.hardware(),
            "AMD EPYC 9654; 2 logical CPUs, 1 cores; 24 GiB; GPUs: NVIDIA H200, 143771 MiB"
        );
        let c = super::Environment { logical_cpus: 4, ..a.clone() };
        assert_ne!(a.fingerprint(), c.fingerprint());
        // FNV-1a's published test vector.
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn gpus_and_rapl_are_recorded_present_or_absent_with_the_reason() {
        let fact = |e: &super::Environment, what: &str| {
            e.facts().into_iter().find(|(w, _)| w == what).map(|(_, v)| v).unwrap()
        };
        // This machine, as it is: without a driver or RAPL the reason is recorded.
        let here = super::capture(vec![], Some("ci".into()));
        let nvml_loadable =
            unsafe { !libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW).is_null() };
        if !nvml_loadable {
            assert!(
                matches!(&here.gpus, super::Probe::Absent { why } if why.contains("no NVIDIA driver"))
            );
            assert!(fact(&here, "GPUs").starts_with("none recorded: "));
        } else {
            // With a driver: the GPUs it lists, each in the report's line, or why it said none.
            match &here.gpus {
                super::Probe::Present { value } => {
                    for g in value {
                        assert!(fact(&here, "GPUs").contains(&g.name), "{g:?}");
                    }
                }
                super::Probe::Absent { why } => assert!(!why.contains("no NVIDIA driver"), "{why}"),
            }
        }
        let zones = crate::energy::zones(std::path::Path::new(crate::energy::POWERCAP));
        if zones.is_empty() {
            assert!(fact(&here, "CPU energy (RAPL)").starts_with("absent: no readable RAPL"));
        } else {
            // With RAPL: one recorded package per readable zone.
            assert_eq!(here.rapl.present().map(Vec::len), Some(zones.len()), "{:?}", here.rapl);
        }
        assert_eq!(here.machine(), "ci");
        // A machine with both: what NVML and the kernel said, in the report's lines.
        let there = super::Environment {
            gpus: super::Probe::Present { value: vec![h200("580.65")] },
            rapl: super::Probe::Present { value: vec!["intel-rapl:0".into()] },
            ..Default::default()
        };
        assert_eq!(
            fact(&there, "GPUs"),
            "NVIDIA H200, 140.40 GiB, driver 580.65, CUDA 13.0, clocks up to 1980 MHz (SM) / \
             3201 MHz (memory), power limit 700 W; other processes: none"
        );
        assert_eq!(fact(&there, "CPU energy (RAPL)"), "intel-rapl:0");
        // An environment file from before the probes says so.
        let old: super::Environment = serde_json::from_str(
            r#"{"randbench_version":"0.1.0","git_commit":null,"git_dirty":null,"started_at":"",
               "command":[],"host":null,"os":null,"kernel":null,"cpu":null,"logical_cpus":2,
               "physical_cores":null,"memory":0,"gpus":[],"backends":[]}"#,
        )
        .unwrap();
        assert_eq!(old.gpus, super::Probe::Absent { why: "not recorded".into() });
    }

    #[test]
    fn cpu_features_come_from_the_kernels_list() {
        let x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f amx_tile\n";
        assert_eq!(super::cpu_features(x86), ["avx", "avx2", "fma", "avx512f", "amx_tile"]);
        let arm = "processor\t: 0\nFeatures\t: fp asimd sve bf16\n";
        assert_eq!(super::cpu_features(arm), ["asimd", "sve", "bf16"]);
        assert!(super::cpu_features("nothing here").is_empty());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
