//! One cell's result — one line of `results.jsonl` — and the messages a cell's process sends
//! its parent.

use crate::cell::{BusyProcess, Cell, Energy, MemoryUse, Status};
use crate::measure::Figure;
use randbench_core::backend::{BackendInfo, GradMode};
use randbench_core::units::Seconds;
use serde::{Deserialize, Serialize};

/// How many per-step training losses a result keeps, for parity comparisons.
pub const TRACE_STEPS: usize = 256;

/// One cell's result: one line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The schema the line was written with; lines from before versions existed read as 0.
    #[serde(default)]
    pub schema: u32,
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
    /// Training loss of the first timed steps, for loss-trajectory parity across backends; a
    /// diverged cell's trace ends before its first loss that is not finite (`diverged_at`).
    #[serde(with = "crate::real::vec_f32")]
    pub step_losses: Vec<f32>,
    /// The step at which the loss (or a figure) stopped being finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<usize>,
    pub started_at: String,
    /// Other processes that used more than a fifth of a core while the cell ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<BusyProcess>,
    /// What the workload's family measured, in its own terms.
    pub metrics: crate::cell::Tagged,
    /// The figures comparisons, the history and exports read (absent from version-0 lines,
    /// which the family's catalogue fills in when read).
    #[serde(default)]
    pub figures: Vec<Figure>,
}

impl CellResult {
    /// The figure of that name, if the cell has it.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name() == name)
    }
}

/// What a cell's child process tells its parent, one JSON object a line on a pipe of its own.
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
        #[serde(with = "crate::real")]
        score: f64,
    },
}

/// Hears about a cell as it goes, and may stop it.
pub trait Observer {
    fn progress(&mut self, p: Progress);
    fn should_stop(&self) -> bool;
}
