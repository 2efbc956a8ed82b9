//! The cell — one (workload, seed, variant, backend) combination — as the result lines name
//! it, and what a line records besides the family's own figures.

use randbench_core::backend::BackendId;
use randbench_core::units::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// A value of one workload family, tagged with the family's key: `{"randomization": {…}}`
/// in JSON, the form result lines have always had. Readers that do not know the family keep
/// it as JSON; the family's own code reads it into its typed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Tagged {
    pub family: String,
    pub value: serde_json::Value,
}

impl Tagged {
    pub fn new(family: impl Into<String>, value: serde_json::Value) -> Self {
        Tagged { family: family.into(), value }
    }
}

impl Serialize for Tagged {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(&self.family, &self.value)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tagged {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneKey;
        impl<'de> Visitor<'de> for OneKey {
            type Value = Tagged;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with one key, the workload family")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tagged, A::Error> {
                let (family, value) = map
                    .next_entry::<String, serde_json::Value>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(2, &self));
                }
                Ok(Tagged { family, value })
            }
        }
        d.deserialize_map(OneKey)
    }
}

/// One unit of work and of results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// The workload's name in its suite.
    pub workload: String,
    pub seed: u64,
    /// What varies within the workload (for the randomization test: condition × regularizer).
    pub variant: Tagged,
    pub backend: BackendId,
    /// The variant as its family writes it (`true_labels`), for tables that do not know the
    /// family. Derived from `variant`, so not part of the cell's identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        self.same_experiment(other) && self.backend == other.backend
    }
}

impl Cell {
    /// The cell without its backend: cells that agree on it ran the same experiment.
    pub fn same_experiment(&self, other: &Cell) -> bool {
        self.workload == other.workload && self.seed == other.seed && self.variant == other.variant
    }

    /// The variant's label, or its JSON where no family gave one.
    pub fn variant_label(&self) -> String {
        if self.label.is_empty() {
            self.variant.value.to_string()
        } else {
            self.label.clone()
        }
    }

    /// The cell in a table's first column: `backend workload variant sSEED`.
    pub fn compact(&self) -> String {
        format!("{} {} {} s{}", self.backend, self.workload, self.variant_label(), self.seed)
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} seed {}", self.backend, self.workload, self.variant_label(), self.seed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reached the target.
    Ok,
    /// Trained for the whole budget without reaching the target.
    NoFit,
    /// A loss or figure became NaN or infinite.
    Diverged,
    /// The backend cannot run this cell.
    Unsupported,
    Error,
    /// The cell's process died (signal or abort).
    Crashed,
    Oom,
    Timeout,
    /// Stopped by the user (Ctrl-C).
    Interrupted,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NoFit => "no fit",
            Status::Diverged => "diverged",
            Status::Unsupported => "unsupported",
            Status::Error => "error",
            Status::Crashed => "crashed",
            Status::Oom => "oom",
            Status::Timeout => "timeout",
            Status::Interrupted => "interrupted",
        }
    }

    /// Whether the cell ran to an end of its own (fitted, out of budget, or diverged): its
    /// measurements are whole.
    pub fn ran(self) -> bool {
        matches!(self, Status::Ok | Status::NoFit | Status::Diverged)
    }
}

/// Since when a host peak counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakSince {
    /// The cell's start: the kernel's high-water mark was reset then.
    #[default]
    Cell,
    /// The process's start: the reset failed (no `/proc/self/clear_refs`), so the peak may
    /// be an earlier cell's.
    Process,
}

impl PeakSince {
    fn is_cell(&self) -> bool {
        *self == PeakSince::Cell
    }
}

/// Memory one cell used: on a GPU, the device memory the driver (NVML) reports, and the host
/// process's peak resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryUse {
    /// Peak bytes on the device (GPU cells where the driver reports it).
    pub device_peak: Option<Bytes>,
    /// Peak resident memory of the process.
    pub host_peak: Option<Bytes>,
    #[serde(default, skip_serializing_if = "PeakSince::is_cell")]
    pub host_peak_since: PeakSince,
}

/// Joules a cell used, where they could be measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// Every CPU package's RAPL energy while the cell ran (the whole package, not only this
    /// process).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::real::option")]
    pub cpu_joules: Option<f64>,
    /// The cell's GPU's energy while it ran (NVML's total energy consumption counter).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::real::option")]
    pub gpu_joules: Option<f64>,
    /// How long the measurement ran (the whole cell), for its average power.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::real::option")]
    pub seconds: Option<f64>,
}

impl Energy {
    /// Joules of CPU and GPU together; `None` where neither was measured.
    pub fn joules(&self) -> Option<f64> {
        match (self.cpu_joules, self.gpu_joules) {
            (None, None) => None,
            (c, g) => Some(c.unwrap_or(0.0) + g.unwrap_or(0.0)),
        }
    }

    /// The average power over the cell, in watts.
    pub fn watts(&self) -> Option<f64> {
        Some(self.joules()? / self.seconds.filter(|s| *s > 0.0)?)
    }
}

/// Another process that was busy while a cell ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusyProcess {
    pub name: String,
    pub pid: u32,
    /// Its CPU use over the cell, in percent of one core.
    pub core_percent: f32,
}

impl BusyProcess {
    /// The program, without its load: `name (pid N)`.
    pub fn who(&self) -> String {
        format!("{} (pid {})", self.name, self.pid)
    }
}

impl std::fmt::Display for BusyProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, {:.0}% of a core)", self.name, self.pid, self.core_percent)
    }
}
