//! The energy a cell used: the CPU packages' RAPL counters where the kernel exposes them
//! (`/sys/class/powercap`, read twice a second so that a counter's wrap-around is never
//! missed), and on a CUDA cell its GPU's cumulative energy counter from NVML. Absent, not an
//! error, where neither is there (virtual machines rarely expose RAPL).

use crate::nvml;
use crate::probe::Probe;
use randbench_core::backend::Device;
use randbench_schema::Energy;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const POWERCAP: &str = "/sys/class/powercap";

/// Faster than once a second, MLPerf's power rule, and than any RAPL counter can wrap.
const PERIOD: Duration = Duration::from_millis(500);

/// One RAPL package zone: `intel-rapl:N` (AMD's packages use the same names); its
/// sub-zones (`intel-rapl:N:M`, cores and uncore) are inside it and not counted again.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    energy_uj: PathBuf,
    max_range_uj: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The package zones under `root` whose counters this process can read.
pub fn zones(root: &Path) -> Vec<Zone> {
    let Ok(entries) = std::fs::read_dir(root) else { return vec![] };
    let mut zones: Vec<(String, Zone)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let package = name.strip_prefix("intel-rapl:")?;
            if package.contains(':') {
                return None;
            }
            let dir = e.path();
            let energy_uj = dir.join("energy_uj");
            read_u64(&energy_uj)?;
            Some((
                name,
                Zone { energy_uj, max_range_uj: read_u64(&dir.join("max_energy_range_uj"))? },
            ))
        })
        .collect();
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    zones.into_iter().map(|(_, z)| z).collect()
}

/// Whether this machine exposes RAPL: the package zones' names, or why there are none.
pub fn rapl(root: &Path) -> Probe<Vec<String>> {
    let zones = zones(root);
    if zones.is_empty() {
        return Probe::Absent {
            why: format!(
                "no readable RAPL package counter under {} (virtual machines rarely expose \
                 them; on bare metal, reading them may need root)",
                root.display()
            ),
        };
    }
    let names = zones
        .iter()
        .filter_map(|z| z.energy_uj.parent()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Probe::Present { value: names }
}

/// Sums the increments of wrapping counters between readings.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    last: Vec<u64>,
    total_uj: u64,
}

impl Accumulator {
    /// Takes one reading per zone; a counter below its last reading wrapped at its range.
    pub fn update(&mut self, zones: &[Zone], readings: &[u64]) {
        if self.last.len() == readings.len() {
            for ((z, &now), &before) in zones.iter().zip(readings).zip(&self.last) {
                self.total_uj +=
                    if now >= before { now - before } else { z.max_range_uj - before + now };
            }
        }
        self.last = readings.to_vec();
    }

    pub fn joules(&self) -> f64 {
        self.total_uj as f64 / 1e6
    }
}

fn read_zones(zones: &[Zone]) -> Option<Vec<u64>> {
    zones.iter().map(|z| read_u64(&z.energy_uj)).collect()
}

/// Measures energy from `start` to `finish` on a thread of its own.
pub struct EnergyWatch {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Option<f64>>,
    gpu_start: Option<(usize, u64)>,
    started: std::time::Instant,
}

impl EnergyWatch {
    pub fn start(device: Device) -> Self {
        Self::start_at(Path::new(POWERCAP), device)
    }

    fn start_at(root: &Path, device: Device) -> Self {
        let zones = zones(root);
        // The first reading now, so that the interval starts with the cell.
        let first = read_zones(&zones).filter(|_| !zones.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut acc = Accumulator::default();
            acc.update(&zones, &first?);
            loop {
                // Sleep in short slices so that finishing does not wait a whole period.
                for _ in 0..10 {
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(PERIOD / 10);
                }
                let last = stopped.load(Ordering::Acquire);
                // A reading that fails (a counter briefly unreadable) is skipped, except the
                // last, which is tried again.
                let tries = if last { 5 } else { 1 };
                for _ in 0..tries {
                    if let Some(r) = read_zones(&zones) {
                        acc.update(&zones, &r);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if last {
                    return Some(acc.joules());
                }
            }
        });
        let gpu_start = match device {
            Device::Cuda(n) => nvml::total_energy_mj(n).map(|e| (n, e)),
            Device::Cpu => None,
        };
        EnergyWatch { stop, sampler, gpu_start, started: std::time::Instant::now() }
    }

    pub fn finish(self) -> Energy {
        self.stop.store(true, Ordering::Release);
        let cpu_joules = self.sampler.join().ok().flatten();
        let gpu_joules = self.gpu_start.and_then(|(n, start)| {
            nvml::total_energy_mj(n).map(|end| end.saturating_sub(start) as f64 / 1e3)
        });
        let seconds = (cpu_joules.is_some() || gpu_joules.is_some())
            .then(|| self.started.elapsed().as_secs_f64());
        Energy { cpu_joules, gpu_joules, seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(dir: &Path, name: &str, energy: u64, range: u64) {
        let z = dir.join(name);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("energy_uj"), format!("{energy}\n")).unwrap();
        std::fs::write(z.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
    }

    #[test]
    fn packages_are_counted_once_and_wraps_are_undone() {
        let root = randbench_core::testing::Scratch::new("rapl", "zones");
        zone(&root, "intel-rapl:0", 900, 1000);
        zone(&root, "intel-rapl:0:0", 5, 1000); // the cores, inside package 0
        zone(&root, "intel-rapl:1", 100, 5000);
        let zs = zones(&root);
        assert_eq!(zs.len(), 2, "{zs:?}");
        let mut acc = Accumulator::default();
        acc.update(&zs, &[900, 100]);
        // Package 0 wrapped at 1000: 900 -> 1000 -> 50 is 150 µJ; package 1 rose by 400.
        acc.update(&zs, &[50, 500]);
        acc.update(&zs, &[250, 600]);
        assert_eq!(acc.total_uj, 150 + 400 + 200 + 100);
        assert_eq!(acc.joules(), 850e-6);

        // The watch reads the same files, and finds nothing where there is nothing.
        let w = EnergyWatch::start_at(&root, Device::Cpu);
        zone(&root, "intel-rapl:0", 950, 1000);
        zone(&root, "intel-rapl:1", 200, 5000);
        let e = w.finish();
        // 900 -> 950 and 100 -> 200: 150 µJ.
        assert_eq!((e.cpu_joules, e.gpu_joules), (Some(150e-6), None));
        assert!(e.seconds.is_some_and(|s| s > 0.0) && e.watts().is_some(), "{e:?}");
        let none = EnergyWatch::start_at(&root.join("absent"), Device::Cpu).finish();
        assert_eq!(none, Energy::default());

        // The environment records which zones there are, or why there are none.
        assert_eq!(
            rapl(&root),
            Probe::Present { value: vec!["intel-rapl:0".into(), "intel-rapl:1".into()] }
        );
        let absent = rapl(&root.join("absent"));
        assert!(
            matches!(&absent, Probe::Absent { why } if why.contains("no readable RAPL")),
            "{absent:?}"
        );
    }
}
