//! Running a suite: checks before any work, then every cell in turn, each result appended as
//! soon as it exists, then the tables.

use crate::backends::{self, Availability, BackendVisitor};
use crate::cell::{Cell, CellResult, Observer, Progress, Status};
use crate::compare;
use crate::env::{self, Environment, ENV_FILE};
use crate::executor::{CellJob, ChildProcess, Executor, InProcess};
use crate::families::{self, Data};
use crate::report::{Html, Markdown, Report, Reporter, Terminal};
use crate::results::{self, RunInfo, RUN_FILE};
use crate::suite::{self, Suite};
use crate::sys;
use indicatif::{ProgressBar, ProgressStyle};
use randbench_core::backend::{Backend, BackendId, GradMode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the user asks the run to stop (Ctrl-C).
pub static STOP: AtomicBool = AtomicBool::new(false);

pub const REPORT_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Something the user gave is wrong; nothing was run or written.
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
}

/// Where cells run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// In child processes when the run has more than one backend, else in this process.
    #[default]
    Auto,
    /// Each cell in a child process of its own: crashes and hangs cost one cell.
    Process,
    /// Every cell in this process: no start-up cost, but a crash ends the run.
    None,
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub suite: String,
    pub backends: Option<Vec<String>>,
    pub out: Option<PathBuf>,
    pub grad: Option<GradMode>,
    /// Overrides the suite's `rounds`.
    pub rounds: Option<usize>,
    pub isolate: Isolation,
    /// What procurement and the history call this machine (default: its host name).
    pub machine: Option<String>,
}

pub const LOCK_FILE: &str = ".randbench.lock";

/// Holds the output directory for one run: a second run on the same directory fails clearly
/// instead of interleaving its lines with ours. Released when dropped (or the process ends).
pub struct DirLock(#[allow(dead_code)] std::fs::File);

pub fn lock_dir(out: &Path) -> Result<DirLock, RunError> {
    let path = out.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RunError::Input(format!("--out {}: not writable: {e}", out.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(DirLock(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Input(format!(
            "--out {}: another randbench run is writing there; wait for it to finish or choose another --out",
            out.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(RunError::Input(format!("--out {}: cannot lock {}: {e}", out.display(), path.display()))),
    }
}

pub struct RunSummary {
    pub out: PathBuf,
    pub results: Vec<CellResult>,
    pub interrupted: bool,
}

/// Parses backend names given on the command line, listing the valid ones on a mistake
/// (whether they work here is the pre-flight's question).
pub fn parse_backends(names: &[String]) -> Result<Vec<BackendId>, RunError> {
    names
        .iter()
        .map(|n| {
            n.parse().map_err(|e| {
                RunError::Input(format!(
                    "--backends: {e}; this binary has: {}",
                    backends::compiled_names().join(", ")
                ))
            })
        })
        .collect()
}

/// Checks everything a run needs before it starts: the backends exist and work here, every
/// workload's inputs load and fit it. Returns the backends to run on and each workload's data.
pub fn preflight(
    suite: &Suite,
    requested: Option<Vec<BackendId>>,
) -> Result<(Vec<BackendId>, Vec<Data>), RunError> {
    let ids = match requested.or_else(|| suite.backends.clone()) {
        Some(ids) => ids,
        None => backends::usable_here(),
    };
    if ids.is_empty() {
        return Err(RunError::Input(
            "no backend is usable on this machine (see `randbench list`)".into(),
        ));
    }
    for &id in &ids {
        match backends::availability(id) {
            Availability::Usable => {}
            Availability::NotCompiled { hint } => {
                return Err(RunError::Input(format!(
                    "{id} is not compiled into this binary: {hint}"
                )))
            }
            Availability::Unavailable { reason, hint } => {
                return Err(RunError::Input(format!("{id} is not usable here: {reason}; {hint}")))
            }
        }
    }
    let data = suite
        .workloads
        .iter()
        .map(|w| {
            w.prepare().map_err(|e| {
                RunError::Input(format!("{}: workload {}: {e}", w.at(&suite.path), w.name()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, data))
}

fn default_out(suite: &str) -> PathBuf {
    let stamp = env::utc_now()[..19].replace([':', '-'], "").replace('T', "-");
    PathBuf::from("reports").join(format!("{suite}-{stamp}"))
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

struct ProgressObserver<'a> {
    bar: &'a ProgressBar,
    label: String,
}

impl Observer for ProgressObserver<'_> {
    fn progress(&mut self, p: Progress) {
        self.bar.set_message(match p {
            Progress::Compiling => format!("{} compiling", self.label),
            Progress::Epoch { epoch, of, score } => {
                format!("{} epoch {epoch}/{of}, {:.1}%", self.label, 100.0 * score)
            }
        });
    }
    fn should_stop(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Runs a suite and writes `results.jsonl`, `environment.json` and `report.md` (and `report.html`) under the
/// output directory; prints the tables.
pub fn run(opts: &RunOptions) -> Result<RunSummary, RunError> {
    let path = suite::resolve(&opts.suite).map_err(|e| RunError::Input(e.to_string()))?;
    let suite = suite::load(&path).map_err(|e| RunError::Input(e.to_string()))?;
    let requested = opts.backends.as_deref().map(parse_backends).transpose()?;
    let (ids, data) = preflight(&suite, requested)?;
    let asked = opts.grad.or(suite.grad);
    let grad =
        |id| backends::effective_grad(id, asked.unwrap_or_else(|| backends::default_grad(id)));
    let rounds = opts.rounds.unwrap_or(suite.rounds);
    if rounds == 0 {
        return Err(RunError::Input("--rounds: give 1 or more".into()));
    }
    let out = opts.out.clone().unwrap_or_else(|| default_out(&suite.name));
    std::fs::create_dir_all(&out).map_err(|e| {
        RunError::Input(format!("--out {}: cannot create the directory: {e}", out.display()))
    })?;
    let _lock = lock_dir(&out)?;
    let mut executor: Box<dyn Executor> = match opts.isolate {
        Isolation::Auto if ids.len() > 1 => Box::new(ChildProcess),
        Isolation::Process => Box::new(ChildProcess),
        Isolation::Auto | Isolation::None => Box::new(InProcess),
    };
    let infos = ids
        .iter()
        .filter_map(|&id| backends::with_backend(id, grad(id), InfoOf).ok().map(|i| (id, i)))
        .collect();
    let environment = env::capture(infos, opts.machine.clone());
    let env_json = serde_json::to_string_pretty(&environment).expect("serializable");
    let info = RunInfo {
        suite: suite.name.clone(),
        backends: ids.clone(),
        grad: asked,
        rounds,
        thresholds: suite.thresholds.clone(),
    };
    let info_json = serde_json::to_string_pretty(&info).expect("serializable");
    for (file, json) in [(ENV_FILE, &env_json), (RUN_FILE, &info_json)] {
        write_atomic(&out.join(file), json)
            .map_err(|e| RunError::Input(format!("--out {}: not writable: {e}", out.display())))?;
    }

    // Round after round, and within a round each experiment on every backend in turn
    // (ABCABC…), so that a machine's drift over minutes falls on every backend alike.
    let cells = suite.cells(&ids);
    let order: Vec<(usize, &Cell)> =
        (0..rounds).flat_map(|round| cells.iter().map(move |c| (round, c))).collect();
    let bar = ProgressBar::new(order.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{pos}/{len}] {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let mut done = Vec::new();
    let mut interrupted = false;
    let mut busy = sys::BusyWatch::start();
    for (round, cell) in order {
        if STOP.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let index = suite.workloads.iter().position(|w| w.name() == cell.workload);
        let index = index.expect("cells come from the suite's workloads");
        let job = CellJob {
            suite: &suite,
            workload: &suite.workloads[index],
            data: &data[index],
            cell,
            round,
            grad: grad(cell.backend),
            artifacts: Some(&out),
        };
        let label = match rounds {
            1 => cell.to_string(),
            _ => format!("round {}/{rounds} {cell}", round + 1),
        };
        bar.set_message(format!("{label} starting"));
        busy.busy_since_last();
        let mut result = executor.execute(&job, &mut ProgressObserver { bar: &bar, label });
        result.busy = busy.busy_since_last();
        results::append(&out, &result).map_err(|e| {
            RunError::Failed(format!(
                "{}: cannot append the result: {e}",
                out.join(results::RESULTS_FILE).display()
            ))
        })?;
        bar.println(cell_line(&result, rounds));
        bar.inc(1);
        interrupted |= result.status == Status::Interrupted;
        done.push(result);
    }
    // A Ctrl-C during the last cell may leave that cell finished normally; the run still stops
    // as interrupted.
    interrupted |= STOP.load(Ordering::SeqCst);
    bar.finish_and_clear();
    let text = render(&out, Some(&environment), &done, &[], &suite.name)?;
    print!("{text}");
    Ok(RunSummary { out, results: done, interrupted })
}

fn cell_line(r: &CellResult, rounds: usize) -> String {
    let what = match &r.error {
        Some(e) => format!("{}: {e}", r.status.label()),
        None => families::headline(r),
    };
    match rounds {
        1 => format!("{}: {what}", r.cell),
        _ => format!("round {}/{rounds} {}: {what}", r.round + 1, r.cell),
    }
}

struct InfoOf;
impl BackendVisitor for InfoOf {
    type Out = randbench_core::BackendInfo;
    fn visit<B: Backend>(self, b: &B) -> Self::Out {
        b.info()
    }
}

/// Renders the terminal tables and writes `report.md` and `report.html` for the results in
/// `out`.
pub fn render(
    out: &Path,
    env: Option<&Environment>,
    results: &[CellResult],
    warnings: &[String],
    suite: &str,
) -> Result<String, RunError> {
    let mut warnings = warnings.to_vec();
    let busy_cells = results.iter().filter(|r| !r.busy.is_empty()).count();
    if let Some(w) = compare::busy_warning(results) {
        warnings.push(format!("{busy_cells} of {} cells: {w}", results.len()));
    }
    let report = Report::of(suite, env, out, results, warnings);
    for (file, text) in [(REPORT_FILE, Markdown.render(&report)), (HTML_FILE, Html.render(&report))]
    {
        write_atomic(&out.join(file), &text)
            .map_err(|e| RunError::Failed(format!("{}: {e}", out.join(file).display())))?;
    }
    Ok(Terminal.render(&report))
}

/// Re-renders a finished (or interrupted) run's report from its files.
pub fn report(dir: &Path) -> Result<String, RunError> {
    let (results, warnings) = results::read(dir).map_err(|e| RunError::Input(e.to_string()))?;
    if results.is_empty() {
        return Err(RunError::Input(format!(
            "{}: no results yet",
            dir.join(results::RESULTS_FILE).display()
        )));
    }
    let env: Option<Environment> = std::fs::read_to_string(dir.join(ENV_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let suite = results[0].suite.clone();
    render(dir, env.as_ref(), &results, &warnings, &suite)
}
