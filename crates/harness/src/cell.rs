//! The cell — one (workload, seed, variant, backend) combination — as a typed value from the
//! suite to the report: what runs, what a child process is asked to run, what a result line
//! names, and what reports group on.

use crate::energy::Energy;
use crate::families::{Metrics, Variant};
use crate::sys::BusyProcess;
use randbench_core::backend::{BackendId, BackendInfo, GradMode};
use randbench_core::units::{Bytes, Seconds};
use serde::{Deserialize, Serialize};

/// How many per-step training losses a result keeps, for parity comparisons.
pub const TRACE_STEPS: usize = 256;

/// One unit of work and of results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The workload's name in its suite.
    pub workload: String,
    pub seed: u64,
    /// What varies within the workload (for the randomization test: condition × regularizer).
    pub variant: Variant,
    pub backend: BackendId,
}

impl Cell {
    /// The cell without its backend: cells that agree on it ran the same experiment.
    pub fn same_experiment(&self, other: &Cell) -> bool {
        self.workload == other.workload && self.seed == other.seed && self.variant == other.variant
    }
}

impl Cell {
    /// The cell in a table's first column: `backend workload variant sSEED`.
    pub fn compact(&self) -> String {
        format!("{} {} {} s{}", self.backend, self.workload, self.variant, self.seed)
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} seed {}", self.backend, self.workload, self.variant, self.seed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reached the target.
    Ok,
    /// Trained for the whole budget without reaching the target.
    NoFit,
    /// The loss became NaN or infinite.
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

/// Memory one cell used: on a GPU, the device memory the engine or the driver (NVML) reports, and
/// the host process's peak resident memory during the cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryUse {
    /// Peak bytes on the device (GPU cells whose engine or driver reports it).
    pub device_peak: Option<Bytes>,
    /// Peak resident memory of the process during the cell (reset when the cell starts).
    pub host_peak: Option<Bytes>,
}

/// One cell's result: one line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub suite: String,
    pub cell: Cell,
    /// Which round of the run (from 0): with `rounds: R` every cell runs R times.
    #[serde(default)]
    pub round: usize,
    pub grad: GradMode,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The device actually used, e.g. "cpu" or "NVIDIA H200".
    pub device: String,
    pub backend_info: BackendInfo,
    /// Building the cell's programs (graph construction and the engine's compilation).
    pub compile_seconds: Option<Seconds>,
    /// The first run of the step program, on a throwaway copy of the state, before the clock
    /// starts: lazy loading, first-run planning, allocator growth.
    pub first_step_seconds: Option<Seconds>,
    pub memory: MemoryUse,
    /// Joules the CPU packages (RAPL) and the cell's GPU (NVML) used while it ran, where the
    /// machine exposes them.
    #[serde(default)]
    pub energy: Energy,
    /// Training loss of the first timed steps, finite values only (a diverged cell's trace
    /// stops before the first non-finite loss), for loss-trajectory parity across backends.
    pub step_losses: Vec<f32>,
    /// The step at which the loss stopped being finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<usize>,
    pub started_at: String,
    /// Other processes that used more than a fifth of a core while the cell ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<BusyProcess>,
    /// What the workload's family measured.
    pub metrics: Metrics,
}

/// What a cell's child process says on stdout, one JSON object a line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Progress(Progress),
    Result(Box<CellResult>),
}

/// How far a cell has come.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    Compiling,
    /// An epoch (or meta-epoch) ended; `score` is the family's headline figure so far.
    Epoch {
        epoch: usize,
        of: usize,
        score: f64,
    },
}

/// Hears about a cell as it goes, and may stop it.
pub trait Observer {
    fn progress(&mut self, p: Progress);
    fn should_stop(&self) -> bool;
}
