//! NVIDIA's management library (NVML), opened at run time: the GPUs a run's environment
//! records (name, memory, driver, CUDA version, clocks, power limit, other processes), the
//! energy counter, and the device memory of CUDA cells.
//!
//! No engine reports its CUDA memory through the `Backend` trait (candle and ONNX Runtime keep
//! no statistics; tch does not bind libtorch's), so the harness asks the driver: while a CUDA
//! cell runs, a thread samples the GPU memory this process holds, and the highest sample is
//! the cell's device peak. Where the driver's per-process figures cannot name this process (a
//! PID namespace in a container hides it), the device's used memory above its level when the
//! cell started stands in. Without an NVIDIA driver there is no figure, and no error.

use crate::env::Probe;
use randbench_core::units::Bytes;
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

type Device = *mut c_void;
type Ret = c_uint;
const SUCCESS: Ret = 0;
const INSUFFICIENT_SIZE: Ret = 7;
/// NVML's "not available" value for a process's memory (no per-process accounting).
const NOT_AVAILABLE: c_ulonglong = c_ulonglong::MAX;

/// `nvmlProcessInfo_v2_t`, what `nvmlDeviceGetComputeRunningProcesses_v3` fills.
#[allow(dead_code)] // every field is part of NVML's layout; the harness reads two
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProcessInfo {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

/// `nvmlMemory_t`.
#[allow(dead_code)] // every field is part of NVML's layout; the harness reads one
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

struct Nvml {
    count: unsafe extern "C" fn(*mut c_uint) -> Ret,
    handle: unsafe extern "C" fn(c_uint, *mut Device) -> Ret,
    processes: unsafe extern "C" fn(Device, *mut c_uint, *mut ProcessInfo) -> Ret,
    memory: unsafe extern "C" fn(Device, *mut Memory) -> Ret,
    /// Millijoules since the driver loaded (Volta and later; absent on older drivers).
    energy: Option<unsafe extern "C" fn(Device, *mut c_ulonglong) -> Ret>,
    name: unsafe extern "C" fn(Device, *mut c_char, c_uint) -> Ret,
    driver: unsafe extern "C" fn(*mut c_char, c_uint) -> Ret,
    cuda: Option<unsafe extern "C" fn(*mut c_int) -> Ret>,
    /// `nvmlDeviceGetMaxClockInfo(device, type, MHz)`.
    max_clock: Option<unsafe extern "C" fn(Device, c_uint, *mut c_uint) -> Ret>,
    /// Milliwatts.
    power_limit: Option<unsafe extern "C" fn(Device, *mut c_uint) -> Ret>,
}

/// `nvmlClockType_t`.
const CLOCK_SM: c_uint = 1;
const CLOCK_MEM: c_uint = 2;

/// One GPU as NVML describes it when the run starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub memory: Bytes,
    pub driver: String,
    /// The CUDA version the driver supports, e.g. "13.0".
    pub cuda: Option<String>,
    pub max_sm_clock_mhz: Option<u32>,
    pub max_memory_clock_mhz: Option<u32>,
    pub power_limit_watts: Option<f64>,
    /// Other processes holding memory on it when the run started.
    pub other_processes: Vec<GpuProcess>,
}

impl Gpu {
    /// One line: name, memory, driver, CUDA, clocks, power limit, other processes.
    pub fn describe(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let others: Vec<String> = self
            .other_processes
            .iter()
            .map(|p| match p.memory {
                Some(m) => format!("pid {} ({m})", p.pid),
                None => format!("pid {}", p.pid),
            })
            .collect();
        format!(
            "{}, {}, driver {}, CUDA {}, clocks up to {} MHz (SM) / {} MHz (memory), power limit \
             {} W; other processes: {}",
            self.name,
            self.memory,
            self.driver,
            opt(self.cuda.clone()),
            opt(self.max_sm_clock_mhz.map(|c| c.to_string())),
            opt(self.max_memory_clock_mhz.map(|c| c.to_string())),
            opt(self.power_limit_watts.map(|w| format!("{w:.0}"))),
            if others.is_empty() { "none".into() } else { others.join(", ") }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub memory: Option<Bytes>,
}

// SAFETY: NVML's functions are thread-safe (NVML API reference, "Thread safety").
unsafe impl Send for Nvml {}
unsafe impl Sync for Nvml {}

const LIBRARY: &str = "libnvidia-ml.so.1";

/// NVML, opened and initialized once per process, or why not.
fn nvml_or_why() -> &'static Result<Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| unsafe { open(LIBRARY) })
}

/// `None` without an NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    nvml_or_why().as_ref().ok()
}

/// The GPUs NVML sees, or why there is no answer (no driver: absent, not an error).
pub fn gpus() -> Probe<Vec<Gpu>> {
    match nvml_or_why() {
        Ok(n) => Probe::Present { value: n.describe() },
        Err(why) => Probe::Absent { why: why.clone() },
    }
}

unsafe fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Option<T> {
    let p = libc::dlsym(lib, name.as_ptr() as *const c_char);
    // SAFETY: the caller names T as the C signature of the symbol.
    (!p.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, T>(&p))
}

/// Opens and initializes the library at `path` (a name the dynamic loader searches for, or a
/// file).
unsafe fn open(path: &str) -> Result<Nvml, String> {
    let c_path = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    let lib = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
    if lib.is_null() {
        return Err(format!("{path} not found: no NVIDIA driver on this machine"));
    }
    let missing = |name: &CStr| format!("{path}: no {}: too old a driver", name.to_string_lossy());
    macro_rules! required {
        ($name:expr) => {
            symbol(lib, $name).ok_or_else(|| missing($name))?
        };
    }
    let init: unsafe extern "C" fn() -> Ret = required!(c"nvmlInit_v2");
    let status = init();
    if status != SUCCESS {
        return Err(format!("{path}: nvmlInit failed with NVML error {status}"));
    }
    Ok(Nvml {
        count: required!(c"nvmlDeviceGetCount_v2"),
        handle: required!(c"nvmlDeviceGetHandleByIndex_v2"),
        processes: required!(c"nvmlDeviceGetComputeRunningProcesses_v3"),
        memory: required!(c"nvmlDeviceGetMemoryInfo"),
        energy: symbol(lib, c"nvmlDeviceGetTotalEnergyConsumption"),
        name: required!(c"nvmlDeviceGetName"),
        driver: required!(c"nvmlSystemGetDriverVersion"),
        cuda: symbol(lib, c"nvmlSystemGetCudaDriverVersion_v2"),
        max_clock: symbol(lib, c"nvmlDeviceGetMaxClockInfo"),
        power_limit: symbol(lib, c"nvmlDeviceGetPowerManagementLimit"),
    })
}

/// A string NVML writes into a buffer.
fn nvml_string(f: impl FnOnce(*mut c_char, c_uint) -> Ret) -> Option<String> {
    let mut buf = [0 as c_char; 96];
    if f(buf.as_mut_ptr(), buf.len() as c_uint) != SUCCESS {
        return None;
    }
    // SAFETY: NVML NUL-terminates what it writes within the length given.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

impl Nvml {
    fn devices(&self) -> Vec<Device> {
        let mut n: c_uint = 0;
        // SAFETY: out-pointers to locals, as NVML's signatures take them.
        if unsafe { (self.count)(&mut n) } != SUCCESS {
            return vec![];
        }
        (0..n)
            .filter_map(|i| {
                let mut d: Device = std::ptr::null_mut();
                (unsafe { (self.handle)(i, &mut d) } == SUCCESS).then_some(d)
            })
            .collect()
    }

    /// Memory process `pid` holds on `d`: `None` where NVML lists no such process or cannot
    /// tell its memory.
    fn process_memory(&self, d: Device, pid: u32) -> Option<u64> {
        self.all_processes(d).into_iter().find(|p| p.pid == pid)?.memory.map(|m| m.0)
    }

    fn memory_info(&self, d: Device) -> Option<Memory> {
        let mut m = Memory::default();
        // SAFETY: an out-pointer to a local of NVML's layout.
        (unsafe { (self.memory)(d, &mut m) } == SUCCESS).then_some(m)
    }

    fn used(&self, d: Device) -> Option<u64> {
        self.memory_info(d).map(|m| m.used)
    }

    /// Every process NVML lists on `d`, with its memory where NVML can tell it.
    fn all_processes(&self, d: Device) -> Vec<GpuProcess> {
        let mut infos = vec![ProcessInfo::default(); 64];
        loop {
            let mut n = infos.len() as c_uint;
            // SAFETY: `infos` holds `n` entries; NVML writes at most that many.
            match unsafe { (self.processes)(d, &mut n, infos.as_mut_ptr()) } {
                SUCCESS => {
                    return infos[..n as usize]
                        .iter()
                        .map(|p| GpuProcess {
                            pid: p.pid,
                            memory: (p.used_gpu_memory != NOT_AVAILABLE)
                                .then_some(Bytes(p.used_gpu_memory)),
                        })
                        .collect()
                }
                INSUFFICIENT_SIZE if (n as usize) > infos.len() => {
                    infos.resize(n as usize, ProcessInfo::default())
                }
                _ => return vec![],
            }
        }
    }

    /// Every device, described.
    fn describe(&self) -> Vec<Gpu> {
        // SAFETY (all calls below): out-pointers to locals and buffers of the lengths given,
        // as NVML's signatures take them.
        let driver =
            nvml_string(|b, n| unsafe { (self.driver)(b, n) }).unwrap_or_else(|| "unknown".into());
        let cuda = self.cuda.and_then(|f| {
            let mut v: c_int = 0;
            (unsafe { f(&mut v) } == SUCCESS).then(|| format!("{}.{}", v / 1000, v % 1000 / 10))
        });
        let own = std::process::id();
        self.devices()
            .into_iter()
            .map(|d| {
                let clock = |kind| {
                    self.max_clock.and_then(|f| {
                        let mut mhz: c_uint = 0;
                        (unsafe { f(d, kind, &mut mhz) } == SUCCESS).then_some(mhz)
                    })
                };
                Gpu {
                    name: nvml_string(|b, n| unsafe { (self.name)(d, b, n) })
                        .unwrap_or_else(|| "unknown NVIDIA GPU".into()),
                    memory: Bytes(self.memory_info(d).map_or(0, |m| m.total)),
                    driver: driver.clone(),
                    cuda: cuda.clone(),
                    max_sm_clock_mhz: clock(CLOCK_SM),
                    max_memory_clock_mhz: clock(CLOCK_MEM),
                    power_limit_watts: self.power_limit.and_then(|f| {
                        let mut mw: c_uint = 0;
                        (unsafe { f(d, &mut mw) } == SUCCESS).then(|| f64::from(mw) / 1e3)
                    }),
                    other_processes: self
                        .all_processes(d)
                        .into_iter()
                        .filter(|p| p.pid != own)
                        .collect(),
                }
            })
            .collect()
    }
}

/// Millijoules device `n` (NVML's index) has used since the driver loaded; `None` without
/// NVML, the device, or the counter.
pub fn total_energy_mj(n: usize) -> Option<u64> {
    let nvml = nvml()?;
    let d = *nvml.devices().get(n)?;
    let mut mj: c_ulonglong = 0;
    // SAFETY: an out-pointer to a local, as NVML's signature takes it.
    (unsafe { (nvml.energy?)(d, &mut mj) } == SUCCESS).then_some(mj)
}

/// How one sample is taken: this process's own figure, or the devices' used memory.
fn sample(nvml: &Nvml, devices: &[Device], pid: u32, baseline: &[Option<u64>]) -> Option<u64> {
    let own: Vec<u64> = devices.iter().filter_map(|&d| nvml.process_memory(d, pid)).collect();
    if !own.is_empty() {
        return Some(own.iter().sum());
    }
    let above: Vec<u64> = devices
        .iter()
        .zip(baseline)
        .filter_map(|(&d, b)| Some(nvml.used(d)?.saturating_sub((*b)?)))
        .collect();
    (!above.is_empty()).then(|| above.iter().sum())
}

/// Samples the GPU memory of this process while a cell runs.
pub struct DeviceMemoryWatch {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Option<u64>>,
}

/// How often the watch samples: often enough to see a training step's peak on small models.
const PERIOD: Duration = Duration::from_millis(5);

impl DeviceMemoryWatch {
    /// Starts watching; `None` where NVML is absent or sees no device.
    pub fn start() -> Option<Self> {
        let nvml = nvml()?;
        let devices = nvml.devices();
        if devices.is_empty() {
            return None;
        }
        let baseline: Vec<Option<u64>> = devices.iter().map(|&d| nvml.used(d)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let pid = std::process::id();
        // Raw device handles are plain indices into the driver's table: safe to send.
        let devices: Vec<usize> = devices.into_iter().map(|d| d as usize).collect();
        let sampler = std::thread::spawn(move || {
            let devices: Vec<Device> = devices.into_iter().map(|d| d as Device).collect();
            let mut peak = None;
            loop {
                let last = stopped.load(Ordering::Acquire);
                if let Some(s) = sample(nvml, &devices, pid, &baseline) {
                    peak = Some(peak.map_or(s, |p: u64| p.max(s)));
                }
                if last {
                    return peak;
                }
                std::thread::sleep(PERIOD);
            }
        });
        Some(Self { stop, sampler })
    }

    /// Stops watching (after one last sample) and gives the peak seen.
    pub fn finish(self) -> Option<Bytes> {
        self.stop.store(true, Ordering::Release);
        self.sampler.join().ok().flatten().map(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the driver's library, answering as an H200 with one other process.
    const FAKE_NVML: &str = r#"
#include <string.h>
#include <unistd.h>
typedef struct { unsigned pid; unsigned long long used; unsigned gi, ci; } proc_t;
typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 1; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **d) { *d = (void *)0x10; return i == 0 ? 0 : 2; }
int nvmlDeviceGetComputeRunningProcesses_v3(void *d, unsigned *n, proc_t *p) {
  if (*n < 2) { *n = 2; return 7; }
  p[0] = (proc_t){4242, 1ull << 30, 0, 0};
  p[1] = (proc_t){(unsigned)getpid(), 2ull << 30, 0, 0};
  *n = 2; return 0;
}
int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) { m->total = 143771ull << 20; m->used = 3ull << 30; m->free = m->total - m->used; return 0; }
int nvmlDeviceGetName(void *d, char *b, unsigned n) { strncpy(b, "NVIDIA H200", n); return 0; }
int nvmlSystemGetDriverVersion(char *b, unsigned n) { strncpy(b, "580.65.06", n); return 0; }
int nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = 13000; return 0; }
int nvmlDeviceGetMaxClockInfo(void *d, unsigned kind, unsigned *mhz) { *mhz = kind == 1 ? 1980 : 3201; return 0; }
int nvmlDeviceGetPowerManagementLimit(void *d, unsigned *mw) { *mw = 700000; return 0; }
"#;

    #[test]
    fn a_drivers_answers_become_the_gpu_description() {
        let dir = randbench_core::testing::Scratch::new("nvml", "driver");
        let (src, lib) = (dir.join("nvml.c"), dir.join("libnvidia-ml-fake.so"));
        std::fs::write(&src, FAKE_NVML).unwrap();
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .status()
            .expect("a C compiler (cc), which Rust's linking needs anyway");
        assert!(built.success());
        let nvml = unsafe { open(lib.to_str().unwrap()) }.unwrap();
        let gpus = nvml.describe();
        assert_eq!(
            gpus,
            [Gpu {
                name: "NVIDIA H200".into(),
                memory: Bytes(143_771 << 20),
                driver: "580.65.06".into(),
                cuda: Some("13.0".into()),
                max_sm_clock_mhz: Some(1980),
                max_memory_clock_mhz: Some(3201),
                power_limit_watts: Some(700.0),
                // This process's own entry is not another process.
                other_processes: vec![GpuProcess { pid: 4242, memory: Some(Bytes(1 << 30)) }],
            }]
        );
        // The sampler's own figure: this process's memory.
        let d = nvml.devices()[0];
        assert_eq!(nvml.process_memory(d, std::process::id()), Some(2 << 30));
        // An energy counter this driver lacks is no figure, not an error.
        assert!(nvml.energy.is_none());
    }

    #[test]
    fn without_the_library_the_reason_is_recorded() {
        let why = unsafe { open("/nonexistent/libnvidia-ml.so.1") }.err().unwrap();
        assert!(why.contains("no NVIDIA driver"), "{why}");
    }

    #[test]
    fn without_an_nvidia_driver_there_is_no_figure_and_no_error() {
        let loadable = unsafe {
            let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW);
            !lib.is_null()
        };
        let watch = DeviceMemoryWatch::start();
        if !loadable {
            assert!(watch.is_none());
        }
        // On a GPU machine the watch runs and stops; what other processes do sets the figure.
        if let Some(w) = watch {
            let _ = w.finish();
        }
    }
}
