//! Results: one JSON line per cell in `DIR/results.jsonl`, appended as soon as the cell ends.

use randbench_core::backend::{BackendId, BackendInfo};
use randbench_core::optim::Optimizer;
use randbench_core::stats::Summary;
use randbench_core::units::{Bytes, Seconds};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const RESULTS_FILE: &str = "results.jsonl";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reached the target training accuracy.
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
}

/// Training loss and accuracy after one epoch (accuracy over the whole training set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// Training time so far (timed steps only).
    pub seconds: Seconds,
}

/// One (workload, condition, regularizer, backend, seed) cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub suite: String,
    pub workload: String,
    pub condition: String,
    pub regularizer: String,
    pub model: String,
    pub backend: BackendId,
    pub device: String,
    pub seed: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub epochs: usize,
    pub steps: usize,
    pub epochs_to_fit: Option<usize>,
    pub steps_to_fit: Option<usize>,
    pub seconds_to_fit: Option<Seconds>,
    /// All timed training (steps only: no set-up, no evaluation).
    pub train_seconds: Seconds,
    pub train_accuracy: Option<f64>,
    pub train_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    /// Over timed steps after warm-up.
    pub steps_per_second: Option<Summary>,
    pub examples_per_second: Option<Summary>,
    pub peak_memory: Option<Bytes>,
    pub batch: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub optimizer: Optimizer,
    pub backend_info: BackendInfo,
    /// The step at which the loss stopped being finite, and the last finite loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<(usize, f64)>,
    pub history: Vec<EpochRecord>,
    /// Training loss of the first steps, for loss-trajectory parity across backends.
    pub step_losses: Vec<f32>,
    pub started_at: String,
}

/// Appends one line, written whole and flushed to the disk before returning.
pub fn append(dir: &Path, r: &CellResult) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join(RESULTS_FILE))?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Reads a results file; a damaged last line (a run cut off mid-write) is skipped with a
/// warning, damage elsewhere is an error naming the line.
pub fn read(dir: &Path) -> Result<(Vec<CellResult>, Vec<String>), String> {
    let path = dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CellResult>(line) {
            Ok(r) => out.push(r),
            Err(e) if i + 1 == lines.len() && !text.ends_with('\n') => {
                warnings.push(format!(
                    "{}:{}: skipped a truncated last line ({e})",
                    path.display(),
                    i + 1
                ));
            }
            Err(e) => return Err(format!("{}:{}: not a result line: {e}", path.display(), i + 1)),
        }
    }
    Ok((out, warnings))
}
