//! What is measured around a cell besides its family's own figures — the host's peak memory,
//! the device's, energy, other programs busy beside it — behind one interface, registered
//! once (as criterion's `Measurement`): each watch starts with the cell and, when the cell
//! ends, writes its reading into the cell's result.

use crate::energy::EnergyWatch;
use crate::nvml::DeviceMemoryWatch;
use crate::sys;
use randbench_core::backend::Device;
use randbench_schema::{CellResult, PeakSince};

/// A measurement taken while one cell runs.
pub trait Watch {
    /// Stops measuring and records the reading in the cell's result.
    fn record(self: Box<Self>, into: &mut CellResult);
}

/// Where a watch runs: in the process that runs the cell (a child process of its own, or
/// the runner's), or in the runner around it, whichever process runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    CellProcess,
    Runner,
}

/// Every watch of `scope` for a cell on `device`, started now.
pub fn start(scope: Scope, device: Device) -> Vec<Box<dyn Watch>> {
    let mut watches: Vec<Box<dyn Watch>> = Vec::new();
    match scope {
        Scope::CellProcess => {
            watches.push(Box::new(HostPeak::start()));
            if let Device::Cuda(n) = device {
                if let Some(w) = DeviceMemoryWatch::start(n) {
                    watches.push(Box::new(w));
                }
            }
            watches.push(Box::new(EnergyWatch::start(device)));
        }
        // The runner sees which processes are its own cells' and which are not.
        Scope::Runner => watches.push(Box::new(sys::BusyWatch::start())),
    }
    watches
}

/// Records every watch's reading.
pub fn record(watches: Vec<Box<dyn Watch>>, into: &mut CellResult) {
    for w in watches {
        w.record(into);
    }
}

/// The process's resident high-water mark, reset at the cell's start.
struct HostPeak {
    reset: bool,
}

impl HostPeak {
    fn start() -> Self {
        HostPeak { reset: sys::reset_peak_memory() }
    }
}

impl Watch for HostPeak {
    fn record(self: Box<Self>, into: &mut CellResult) {
        into.memory.host_peak = sys::peak_memory();
        into.memory.host_peak_since = if self.reset { PeakSince::Cell } else { PeakSince::Process };
    }
}

impl Watch for DeviceMemoryWatch {
    fn record(self: Box<Self>, into: &mut CellResult) {
        into.memory.device_peak = self.finish();
    }
}

impl Watch for EnergyWatch {
    fn record(self: Box<Self>, into: &mut CellResult) {
        into.energy = self.finish();
    }
}

impl Watch for sys::BusyWatch {
    fn record(mut self: Box<Self>, into: &mut CellResult) {
        into.busy = self.busy_since_last();
    }
}
