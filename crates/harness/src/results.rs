//! Results: one JSON line per cell in `DIR/results.jsonl`, appended as soon as the cell ends,
//! next to `run.json`, what the run was asked to do.

use crate::cell::CellResult;
use randbench_core::backend::{BackendId, GradMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const RESULTS_FILE: &str = "results.jsonl";
pub const RUN_FILE: &str = "run.json";

/// What a run was asked to do, written before its first cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub suite: String,
    pub backends: Vec<BackendId>,
    /// The gradient mode asked for (`--grad` or the suite's); `None`: each backend's default.
    /// Every result line records the mode its backend really used.
    pub grad: Option<GradMode>,
    pub rounds: usize,
    /// The suite's thresholds for `randbench compare`, where it overrides the defaults.
    pub thresholds: BTreeMap<String, f64>,
}

impl RunInfo {
    /// `None` for a run directory without `run.json` (written before rounds existed).
    pub fn read(dir: &Path) -> Result<Option<Self>, ResultsError> {
        let path = dir.join(RUN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| ResultsError::Damaged { path, line: 1, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ResultsError::Io { path, source }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: not a result line: {source}")]
    Damaged { path: PathBuf, line: usize, source: serde_json::Error },
}

/// Appends one line, written whole and synced to the disk before returning. A failed or short
/// write (a full disk) is undone: the file is cut back to its length before the append, so
/// that every line on disk stays whole.
pub fn append(dir: &Path, r: &CellResult) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join(RESULTS_FILE))?;
    let before = f.metadata()?.len();
    let written = f.write_all(line.as_bytes()).and_then(|()| f.sync_data());
    if written.is_err() {
        // Best effort: truncating frees blocks, so it works on a full disk.
        let _ = f.set_len(before).and_then(|()| f.sync_data());
    }
    written
}

/// Reads a results file; a damaged last line (a run cut off mid-write) is skipped with a
/// warning, damage elsewhere is an error naming the line.
pub fn read(dir: &Path) -> Result<(Vec<CellResult>, Vec<String>), ResultsError> {
    let path = dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|source| ResultsError::Io { path: path.clone(), source })?;
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
            Err(source) => {
                return Err(ResultsError::Damaged { path: path.clone(), line: i + 1, source })
            }
        }
    }
    Ok((out, warnings))
}
