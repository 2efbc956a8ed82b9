//! Results files: one JSON line per cell in `DIR/results.jsonl`, appended as soon as the cell
//! ends, next to `run.json`, what the run was asked to do.

use crate::measure::Measure;
use crate::record::CellResult;
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
    /// Every figure the suite's families may report (absent before the schema had versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<Measure>,
    /// The run this directory belongs to, shared by all its shards (`--run-id`, or one that
    /// `submit` made); `None`: a run of its own, named in the history by its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The share of the suite this directory holds; `None`: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::Shard>,
}

impl RunInfo {
    /// `None` for a run directory without `run.json` (written before rounds existed).
    pub fn read(dir: &Path) -> Result<Option<Self>, ResultsError> {
        let path = dir.join(RUN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| ResultsError::Damaged { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ResultsError::Io { path, source }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: damaged: {source}")]
    Damaged { path: PathBuf, source: serde_json::Error },
    #[error("{path}: no line of it could be read ({skipped} skipped)")]
    Unreadable { path: PathBuf, skipped: usize },
}

/// Why a line of a results file was not read.
#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    /// The last line, without its newline: a run cut off mid-write.
    #[error("a truncated last line ({0})")]
    Truncated(serde_json::Error),
    #[error("not a result line: {0}")]
    Damaged(serde_json::Error),
    /// The line reads, but its family's figures cannot be derived from it.
    #[error("{0}")]
    Upgrade(UpgradeError),
}

/// A line of an earlier schema whose figures the catalogue could not fill in.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no workload family is named '{0}' in this build")]
    UnknownFamily(String),
    #[error("its {family} metrics do not read: {source}")]
    Metrics { family: String, source: serde_json::Error },
}

/// A line that was not read, and why.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    /// From 1.
    pub line: usize,
    pub problem: LineProblem,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: skipped {}", self.path.display(), self.line, self.problem)
    }
}

/// What the families know about their lines: fills in what a line of an earlier schema
/// lacks (its figures, its variant's label). The workload registry implements it; readers
/// that must not link the families can pass [`Uncatalogued`].
pub trait Catalogue {
    fn upgrade(&self, r: &mut CellResult) -> Result<(), UpgradeError>;
    /// Every figure the family of that key may report (a cell that did not reach a target
    /// has no figure for it, but the target is still the family's).
    fn measures(&self, family: &str) -> Vec<Measure>;
}

/// Leaves earlier lines as they are (without figures), and knows no family's figures.
pub struct Uncatalogued;

impl Catalogue for Uncatalogued {
    fn upgrade(&self, _: &mut CellResult) -> Result<(), UpgradeError> {
        Ok(())
    }
    fn measures(&self, _: &str) -> Vec<Measure> {
        vec![]
    }
}

/// A results file as read: every line that could be, and those that could not.
#[derive(Debug, Default)]
pub struct Read {
    pub results: Vec<CellResult>,
    pub skipped: Vec<Skipped>,
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

/// Reads a results file. A line that cannot be read (cut off, damaged by hand or by the disk,
/// of a family this build does not know) is skipped and named; the rest is read. Only a file
/// none of whose lines read is an error.
pub fn read(dir: &Path, catalogue: &dyn Catalogue) -> Result<Read, ResultsError> {
    let path = dir.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|source| ResultsError::Io { path: path.clone(), source })?;
    let out = parse(&path, &text, catalogue);
    if out.results.is_empty() && !out.skipped.is_empty() {
        return Err(ResultsError::Unreadable { path, skipped: out.skipped.len() });
    }
    Ok(out)
}

/// [`read`] over text already in memory; `path` only names it.
pub fn parse(path: &Path, text: &str, catalogue: &dyn Catalogue) -> Read {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Read::default();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let last_cut = i + 1 == lines.len() && !text.ends_with('\n');
        let problem = match serde_json::from_str::<CellResult>(line) {
            Ok(mut r) => match catalogue.upgrade(&mut r) {
                Ok(()) => {
                    out.results.push(r);
                    continue;
                }
                Err(e) => LineProblem::Upgrade(e),
            },
            Err(e) if last_cut => LineProblem::Truncated(e),
            Err(e) => LineProblem::Damaged(e),
        };
        out.skipped.push(Skipped { path: path.to_path_buf(), line: i + 1, problem });
    }
    out
}

/// Writes a file whole or not at all: to a temporary file, synced to the disk, renamed over
/// the target, and the directory synced so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_ref())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}
