//! NVIDIA's management library (NVML), opened at run time: the GPUs a run's environment
//! records (name, memory, driver, CUDA version, clocks, power limit, other processes), the
//! energy counter, and the device memory of CUDA cells.
//!
//! No engine reports its CUDA memory (candle and ONNX Runtime keep no statistics; tch does not
//! bind libtorch's), so the harness asks the driver: while a CUDA cell runs, a thread samples
//! the GPU memory this process holds on the cell's device, and the highest sample is the
//! cell's device peak. Where the driver's per-process figures cannot name this process (a
//! PID namespace in a container hides it), the device's used memory above its level when the
//! cell started stands in. Without an NVIDIA driver there is no figure, and no error.
//!
//! A cell names its GPU by CUDA ordinal, and CUDA numbers devices in its own order
//! (`CUDA_DEVICE_ORDER`, `CUDA_VISIBLE_DEVICES`) where NVML numbers them in PCI order, so the
//! two meet by PCI bus id, which the CUDA driver's library (`libcuda.so.1`, also opened at run
//! time) gives for an ordinal.

use crate::probe::Probe;
use randbench_core::units::Bytes;
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
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

/// `nvmlPciInfo_t`, what `nvmlDeviceGetPciInfo_v3` fills.
#[allow(dead_code)] // every field is part of NVML's layout; the harness reads one
#[repr(C)]
#[derive(Default)]
struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
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
    /// `nvmlDeviceGetHandleByPciBusId_v2(bus id, device)`.
    by_bus_id: Option<unsafe extern "C" fn(*const c_char, *mut Device) -> Ret>,
    /// `nvmlDeviceGetPciInfo_v3(device, info)`.
    pci_info: Option<unsafe extern "C" fn(Device, *mut PciInfo) -> Ret>,
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
        by_bus_id: symbol(lib, c"nvmlDeviceGetHandleByPciBusId_v2"),
        pci_info: symbol(lib, c"nvmlDeviceGetPciInfo_v3"),
    })
}

/// The CUDA driver's library, for the one thing NVML cannot tell: which device a CUDA ordinal
/// names.
struct Cuda {
    /// `cuDeviceGet(device, ordinal)`.
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> c_int,
    /// `cuDeviceGetPCIBusId(buffer, length, device)`.
    bus_id: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int,
}

const CUDA_LIBRARY: &str = "libcuda.so.1";

/// The CUDA driver, opened and initialized once per process; `None` without one.
fn cuda() -> Option<&'static Cuda> {
    static CUDA: OnceLock<Option<Cuda>> = OnceLock::new();
    CUDA.get_or_init(|| unsafe { open_cuda(CUDA_LIBRARY) }).as_ref()
}

/// Opens the CUDA driver's library at `path` and calls `cuInit`; `None` where it is absent,
/// lacks a symbol, or sees no device.
unsafe fn open_cuda(path: &str) -> Option<Cuda> {
    let c_path = CString::new(path).ok()?;
    let lib = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
    if lib.is_null() {
        return None;
    }
    let init: unsafe extern "C" fn(c_uint) -> c_int = symbol(lib, c"cuInit")?;
    if init(0) != 0 {
        return None;
    }
    Some(Cuda {
        device_get: symbol(lib, c"cuDeviceGet")?,
        bus_id: symbol(lib, c"cuDeviceGetPCIBusId")?,
    })
}

impl Cuda {
    /// The PCI bus id of CUDA device `ordinal` as CUDA writes it ("0000:3B:00.0").
    fn bus_id(&self, ordinal: usize) -> Option<String> {
        let ordinal = c_int::try_from(ordinal).ok()?;
        let mut dev: c_int = 0;
        let mut buf = [0 as c_char; 32];
        // SAFETY: an out-pointer to a local, and a buffer of the length given.
        unsafe {
            if (self.device_get)(&mut dev, ordinal) != 0
                || (self.bus_id)(buf.as_mut_ptr(), buf.len() as c_int, dev) != 0
            {
                return None;
            }
        }
        Some(c_string(&buf))
    }
}

/// A PCI bus id in NVML's form, "00000000:3B:00.0", from "domain:bus:device.function" as CUDA
/// or NVML writes it: hexadecimal in either case, a domain of any width or none (domain 0).
/// `None` if it is not a bus id.
fn normal_bus_id(id: &str) -> Option<String> {
    let (rest, function) = id.trim().rsplit_once('.')?;
    let (domain, bus, device) = match rest.split(':').collect::<Vec<_>>()[..] {
        [domain, bus, device] => (domain, bus, device),
        [bus, device] => ("0", bus, device),
        _ => return None,
    };
    let hex = |s: &str, max: u32| {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        u32::from_str_radix(s, 16).ok().filter(|&v| digits && v <= max)
    };
    Some(format!(
        "{:08X}:{:02X}:{:02X}.{:X}",
        hex(domain, u32::MAX)?,
        hex(bus, 0xFF)?,
        hex(device, 0x1F)?,
        hex(function, 7)?
    ))
}

/// Of devices listed with their bus ids, the one at bus id `id`, the ids compared in one form.
fn choose<T: Copy>(listed: &[(String, T)], id: &str) -> Option<T> {
    let id = normal_bus_id(id)?;
    listed.iter().find(|(b, _)| normal_bus_id(b).as_ref() == Some(&id)).map(|&(_, d)| d)
}

/// NVML's device for CUDA device `ordinal`; `None` without libcuda, NVML, or the device.
fn cuda_device(nvml: &Nvml, ordinal: usize) -> Option<Device> {
    nvml.device_at(&cuda()?.bus_id(ordinal)?)
}

/// A NUL-terminated string in a buffer (all of it if no NUL ends it).
fn c_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
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

    /// The device at PCI bus id `id` (in any form [`normal_bus_id`] reads).
    fn device_at(&self, id: &str) -> Option<Device> {
        let id = normal_bus_id(id)?;
        if let Some(f) = self.by_bus_id {
            let c_id = CString::new(id.as_str()).ok()?;
            let mut d: Device = std::ptr::null_mut();
            // SAFETY: a NUL-terminated string and an out-pointer to a local.
            if unsafe { f(c_id.as_ptr(), &mut d) } == SUCCESS {
                return Some(d);
            }
        }
        // A driver without the lookup, or one that reads the id otherwise: its devices' own ids.
        let f = self.pci_info?;
        let listed: Vec<(String, Device)> = self
            .devices()
            .into_iter()
            .filter_map(|d| {
                let mut info = PciInfo::default();
                // SAFETY: an out-pointer to a local of NVML's layout.
                (unsafe { f(d, &mut info) } == SUCCESS).then(|| (c_string(&info.bus_id), d))
            })
            .collect();
        choose(&listed, &id)
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

/// Millijoules CUDA device `n` has used since the driver loaded; `None` without NVML,
/// libcuda, the device, or the counter.
pub fn total_energy_mj(n: usize) -> Option<u64> {
    let nvml = nvml()?;
    let d = cuda_device(nvml, n)?;
    let mut mj: c_ulonglong = 0;
    // SAFETY: an out-pointer to a local, as NVML's signature takes it.
    (unsafe { (nvml.energy?)(d, &mut mj) } == SUCCESS).then_some(mj)
}

/// How one sample of `d` is taken: this process's own figure, or the device's used memory
/// above `baseline`.
fn sample(nvml: &Nvml, d: Device, pid: u32, baseline: Option<u64>) -> Option<u64> {
    nvml.process_memory(d, pid).or_else(|| Some(nvml.used(d)?.saturating_sub(baseline?)))
}

/// Samples the GPU memory of this process while a cell runs.
pub struct DeviceMemoryWatch {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Option<u64>>,
}

/// How often the watch samples: often enough to see a training step's peak on small models.
const PERIOD: Duration = Duration::from_millis(5);

impl DeviceMemoryWatch {
    /// Starts watching CUDA device `ordinal`; `None` where NVML or libcuda is absent or
    /// neither sees the device.
    pub fn start(ordinal: usize) -> Option<Self> {
        let nvml = nvml()?;
        Some(Self::watch(nvml, cuda_device(nvml, ordinal)?))
    }

    fn watch(nvml: &'static Nvml, device: Device) -> Self {
        let baseline = nvml.used(device);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let pid = std::process::id();
        // A raw device handle is a plain index into the driver's table: safe to send.
        let device = device as usize;
        let sampler = std::thread::spawn(move || {
            let device = device as Device;
            let mut peak = None;
            loop {
                let last = stopped.load(Ordering::Acquire);
                if let Some(s) = sample(nvml, device, pid, baseline) {
                    peak = Some(peak.map_or(s, |p: u64| p.max(s)));
                }
                if last {
                    return peak;
                }
                std::thread::sleep(PERIOD);
            }
        });
        Self { stop, sampler }
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
    fn bus_ids_compare_in_one_form() {
        let nvml_form = Some("00000000:3B:00.0".to_string());
        for id in ["00000000:3B:00.0", "0000:3b:00.0", "0:3B:0.0", "3b:00.0", " 0000:3B:00.0\n"] {
            assert_eq!(normal_bus_id(id), nvml_form, "{id}");
        }
        assert_eq!(normal_bus_id("0001:3B:00.0").as_deref(), Some("00000001:3B:00.0"));
        assert_eq!(normal_bus_id("0000:3B:1f.7").as_deref(), Some("00000000:3B:1F.7"));
        for bad in [
            "",
            "3B",
            "0000:3B:00",
            "0000:3G:00.0",
            "0000:3B:00.8",
            "0000:100:00.0",
            "0:0:3B:00.0",
            "0000:+3:00.0",
        ] {
            assert_eq!(normal_bus_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_device_is_chosen_by_bus_id_not_by_place() {
        let listed = [("00000000:1A:00.0".to_string(), 'a'), ("00000000:3B:00.0".to_string(), 'b')];
        assert_eq!(choose(&listed, "0000:3b:00.0"), Some('b'));
        assert_eq!(choose(&listed, "0000:1A:00.0"), Some('a'));
        assert_eq!(choose(&listed, "0000:5E:00.0"), None);
        assert_eq!(choose(&listed, "not a bus id"), None);
        assert_eq!(choose::<char>(&[], "0000:3B:00.0"), None);
    }

    /// Two GPUs in NVML's (PCI) order, at 1A and 3B, on which this process holds 5 and 2 GiB;
    /// each device's used memory grows by that much after its first reading. HIDDEN: NVML
    /// lists no process (a PID namespace). NO_LOOKUP: a driver without the bus-id lookup.
    const FAKE_NVML_TWO: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
typedef struct { unsigned pid; unsigned long long used; unsigned gi, ci; } proc_t;
typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct { char legacy[16]; unsigned domain, bus, device, id, sub; char bus_id[32]; } pci_t;
static const char *ids[2] = {"00000000:1A:00.0", "00000000:3B:00.0"};
static const unsigned long long gib = 1ull << 30, own[2] = {5, 2};
static int reads[2];
static int index_of(void *d) { return (int)((long)d - 0x10); }
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **d) { *d = (void *)(0x10l + i); return i < 2 ? 0 : 2; }
#ifndef NO_LOOKUP
int nvmlDeviceGetHandleByPciBusId_v2(const char *id, void **d) {
  for (int i = 0; i < 2; i++) if (strcmp(id, ids[i]) == 0) { *d = (void *)(0x10l + i); return 0; }
  return 6;
}
#endif
int nvmlDeviceGetPciInfo_v3(void *d, pci_t *p) { memset(p, 0, sizeof *p); strcpy(p->bus_id, ids[index_of(d)]); return 0; }
int nvmlDeviceGetComputeRunningProcesses_v3(void *d, unsigned *n, proc_t *p) {
#ifdef HIDDEN
  *n = 0; return 0;
#else
  if (*n < 1) { *n = 1; return 7; }
  p[0] = (proc_t){(unsigned)getpid(), own[index_of(d)] * gib, 0, 0};
  *n = 1; return 0;
#endif
}
int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) {
  int i = index_of(d);
  m->total = 100 * gib; m->used = 10 * gib + (reads[i]++ ? own[i] * gib : 0); m->free = m->total - m->used;
  return 0;
}
int nvmlDeviceGetName(void *d, char *b, unsigned n) { strncpy(b, "NVIDIA H200", n); return 0; }
int nvmlSystemGetDriverVersion(char *b, unsigned n) { strncpy(b, "580.65.06", n); return 0; }
"#;

    /// CUDA's order, the reverse of NVML's: device 0 is at 3B, device 1 at 1A (lower case,
    /// four-digit domain, as CUDA writes them).
    const FAKE_CUDA: &str = r#"
#include <stdio.h>
int cuInit(unsigned flags) { return flags; }
int cuDeviceGet(int *d, int ordinal) { *d = 100 + ordinal; return ordinal < 2 ? 0 : 101; }
int cuDeviceGetPCIBusId(char *b, int n, int d) { snprintf(b, n, "%s", d == 100 ? "0000:3b:00.0" : "0000:1a:00.0"); return 0; }
"#;

    /// Builds C `source` with `defines` into a shared library in `dir`.
    fn build(dir: &std::path::Path, name: &str, source: &str, defines: &[&str]) -> String {
        let (src, lib) = (dir.join(format!("{name}.c")), dir.join(format!("lib{name}.so")));
        std::fs::write(&src, source).unwrap();
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src)
            .args(defines)
            .status()
            .expect("a C compiler (cc), which Rust's linking needs anyway");
        assert!(built.success());
        lib.to_str().unwrap().to_string()
    }

    /// The NVML device a CUDA ordinal names through the fake libraries, as its NVML index.
    fn nvml_index(nvml: &Nvml, cuda: &Cuda, ordinal: usize) -> Option<usize> {
        let d = nvml.device_at(&cuda.bus_id(ordinal)?)?;
        nvml.devices().iter().position(|&e| e == d)
    }

    #[test]
    fn a_cuda_ordinal_names_the_nvml_device_at_its_bus_id() {
        let dir = randbench_core::testing::Scratch::new("nvml", "bus-id");
        let cuda = unsafe { open_cuda(&build(&dir, "cuda", FAKE_CUDA, &[])) }.unwrap();
        assert_eq!(cuda.bus_id(0).as_deref(), Some("0000:3b:00.0"));
        assert_eq!(cuda.bus_id(2), None);
        // With NVML's lookup, and without it (each device's own id compared).
        for defines in [&[][..], &["-DNO_LOOKUP"]] {
            // A file of its own each: dlopen would give the first library again for a name.
            let name = format!("nvml{}", defines.len());
            let nvml = unsafe { open(&build(&dir, &name, FAKE_NVML_TWO, defines)) }.unwrap();
            assert_eq!(nvml.by_bus_id.is_some(), defines.is_empty());
            assert_eq!(nvml_index(&nvml, &cuda, 0), Some(1), "{defines:?}");
            assert_eq!(nvml_index(&nvml, &cuda, 1), Some(0), "{defines:?}");
            assert_eq!(nvml_index(&nvml, &cuda, 2), None, "{defines:?}");
        }
    }

    #[test]
    fn a_watch_counts_its_own_device_only() {
        let dir = randbench_core::testing::Scratch::new("nvml", "watch");
        let cuda = unsafe { open_cuda(&build(&dir, "cuda", FAKE_CUDA, &[])) }.unwrap();
        // This process's own figure on CUDA device 0 (NVML's second): 2 GiB, not 5 or 7.
        let listed = unsafe { open(&build(&dir, "listed", FAKE_NVML_TWO, &[])) }.unwrap();
        let nvml: &'static Nvml = Box::leak(Box::new(listed));
        let d = nvml.device_at(&cuda.bus_id(0).unwrap()).unwrap();
        assert_eq!(DeviceMemoryWatch::watch(nvml, d).finish(), Some(Bytes(2 << 30)));
        // Hidden from the driver's list: the device's growth since the start, again its own.
        let hidden = unsafe { open(&build(&dir, "hidden", FAKE_NVML_TWO, &["-DHIDDEN"])) }.unwrap();
        let nvml: &'static Nvml = Box::leak(Box::new(hidden));
        let d = nvml.device_at(&cuda.bus_id(0).unwrap()).unwrap();
        assert_eq!(DeviceMemoryWatch::watch(nvml, d).finish(), Some(Bytes(2 << 30)));
    }

    #[test]
    fn this_machines_driver_answers_or_there_is_no_figure_and_no_error() {
        let Some(nvml) = nvml() else {
            assert!(matches!(gpus(), Probe::Absent { .. }));
            assert!(DeviceMemoryWatch::start(0).is_none());
            assert!(total_energy_mj(0).is_none());
            return;
        };
        // Every device NVML counts is described.
        let mut count: c_uint = 0;
        assert_eq!(unsafe { (nvml.count)(&mut count) }, SUCCESS);
        let described = gpus().present().map(Vec::len);
        assert_eq!(described, Some(count as usize));
        // CUDA's device 0, where CUDA sees one, is an NVML device, and watching it gives a
        // figure (this process's own, or the device's growth).
        match cuda().and_then(|c| c.bus_id(0)) {
            Some(id) => {
                assert!(nvml.device_at(&id).is_some(), "NVML has no device at CUDA's {id}");
                let watch = DeviceMemoryWatch::start(0).expect("a watch on CUDA device 0");
                assert!(watch.finish().is_some());
            }
            None => assert!(DeviceMemoryWatch::start(0).is_none()),
        }
    }
}
