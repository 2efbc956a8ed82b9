//! Device memory of CUDA cells, from NVIDIA's management library (NVML), opened at run time.
//!
//! No engine reports its CUDA memory through the `Backend` trait (candle and ONNX Runtime keep
//! no statistics; tch does not bind libtorch's), so the harness asks the driver: while a CUDA
//! cell runs, a thread samples the GPU memory this process holds, and the highest sample is
//! the cell's device peak. Where the driver's per-process figures cannot name this process (a
//! PID namespace in a container hides it), the device's used memory above its level when the
//! cell started stands in. Without an NVIDIA driver there is no figure, and no error.

use randbench_core::units::Bytes;
use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr};
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
}

// SAFETY: NVML's functions are thread-safe (NVML API reference, "Thread safety").
unsafe impl Send for Nvml {}
unsafe impl Sync for Nvml {}

/// NVML, opened and initialized once per process; `None` without an NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| unsafe { open() }).as_ref()
}

unsafe fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Option<T> {
    let p = libc::dlsym(lib, name.as_ptr() as *const c_char);
    // SAFETY: the caller names T as the C signature of the symbol.
    (!p.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, T>(&p))
}

unsafe fn open() -> Option<Nvml> {
    let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
    if lib.is_null() {
        return None;
    }
    let init: unsafe extern "C" fn() -> Ret = symbol(lib, c"nvmlInit_v2")?;
    if init() != SUCCESS {
        return None;
    }
    Some(Nvml {
        count: symbol(lib, c"nvmlDeviceGetCount_v2")?,
        handle: symbol(lib, c"nvmlDeviceGetHandleByIndex_v2")?,
        processes: symbol(lib, c"nvmlDeviceGetComputeRunningProcesses_v3")?,
        memory: symbol(lib, c"nvmlDeviceGetMemoryInfo")?,
        energy: symbol(lib, c"nvmlDeviceGetTotalEnergyConsumption"),
    })
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
        let mut infos = vec![ProcessInfo::default(); 64];
        loop {
            let mut n = infos.len() as c_uint;
            // SAFETY: `infos` holds `n` entries; NVML writes at most that many.
            match unsafe { (self.processes)(d, &mut n, infos.as_mut_ptr()) } {
                SUCCESS => {
                    return infos[..n as usize]
                        .iter()
                        .find(|p| p.pid == pid && p.used_gpu_memory != NOT_AVAILABLE)
                        .map(|p| p.used_gpu_memory);
                }
                INSUFFICIENT_SIZE if (n as usize) > infos.len() => {
                    infos.resize(n as usize, ProcessInfo::default())
                }
                _ => return None,
            }
        }
    }

    fn used(&self, d: Device) -> Option<u64> {
        let mut m = Memory::default();
        // SAFETY: an out-pointer to a local of NVML's layout.
        (unsafe { (self.memory)(d, &mut m) } == SUCCESS).then_some(m.used)
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
