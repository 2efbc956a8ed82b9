//! Running a suite: checks before any work, then every cell in turn, each result appended as
//! soon as it exists, then the tables.

use crate::backends::{self, Availability, BackendVisitor};
use crate::compiled;
use crate::env::{self, Environment, ENV_FILE};
use crate::executor::{CellJob, ChildProcess, Executor, InProcess, STOP};
use crate::families::{self, Data, PrepareError, Registry};
use crate::history::{self, HistoryError};
use crate::presentation;
use crate::report::{Html, Markdown, Reporter, Terminal};
use crate::spec::SuiteError;
use crate::suite::{self, Suite};
use crate::watch::{self, Scope};
use indicatif::{ProgressBar, ProgressStyle};
use randbench_core::backend::{Backend, BackendId, Device, Engine, GradMode, ParseBackendError};
use randbench_schema::group::busy_warning;
use randbench_schema::results::{self, write_atomic, ResultsError, RunInfo, RUN_FILE};
use randbench_schema::{Cell, CellResult, Observer, Progress, Shard, ShardError, Status};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

pub const REPORT_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";

/// Why a run did not start, or stopped; [`RunError::is_input`] tells the user's mistakes
/// (nothing was run or written) from failures on the way.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("--backends: {source}; this binary has: {}", compiled.join(", "))]
    UnknownBackend { source: ParseBackendError, compiled: Vec<String> },
    #[error("{id} is not compiled into this binary: {hint}")]
    NotCompiled { id: BackendId, hint: String },
    #[error("{id} is not usable here: {reason}; {hint}")]
    Unusable { id: BackendId, reason: String, hint: String },
    #[error("no backend is usable on this machine (see `randbench list`)")]
    NoBackend,
    #[error("{at}: workload {workload}: {source}")]
    Prepare { at: String, workload: String, source: PrepareError },
    #[error("--rounds: give 1 or more")]
    NoRounds,
    #[error("--out {}: cannot create the directory: {source}", out.display())]
    CreateOut { out: PathBuf, source: std::io::Error },
    #[error("--out {}: not writable: {source}", out.display())]
    NotWritable { out: PathBuf, source: std::io::Error },
    #[error("--out {}: another randbench run is writing there; wait for it to finish or choose another --out", out.display())]
    Locked { out: PathBuf },
    #[error("--out {}: cannot lock {}: {source}", out.display(), lock.display())]
    Lock { out: PathBuf, lock: PathBuf, source: std::io::Error },
    #[error("{}: no results yet", path.display())]
    NoResults { path: PathBuf },
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{}: cannot append the result: {source}", path.display())]
    Append { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(
        "--run-id {0}: use 1 to 64 letters, digits, '.', '_' or '-' (it names files and jobs)"
    )]
    BadRunId(String),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("--resume needs --run-id RUN_ID and --db URL: the history says which cells of that run are finished")]
    ResumeWithoutRun,
}

impl RunError {
    /// Whether the user gave something wrong (exit 2) rather than the run failing (exit 1).
    pub fn is_input(&self) -> bool {
        match self {
            RunError::Append { .. } | RunError::Write { .. } => false,
            RunError::History(e) => e.is_input(),
            _ => true,
        }
    }
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
    /// The share of the suite to run, as `I/N`; `None`: all of it.
    pub shard: Option<String>,
    /// The run this shard belongs to (default: a hash of this run's environment).
    pub run_id: Option<String>,
    /// A history to store each result in as soon as it exists.
    pub db: Option<String>,
    /// Run only the cells the history does not hold as finished for `run_id`.
    pub resume: bool,
}

/// Checks a run id: it names directories, Slurm jobs and Kubernetes objects.
pub fn check_run_id(id: &str) -> Result<(), RunError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 64 || !id.chars().all(fine) || id.starts_with(['.', '-']) {
        return Err(RunError::BadRunId(id.to_string()));
    }
    Ok(())
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
        .map_err(|source| RunError::NotWritable { out: out.to_path_buf(), source })?;
    match f.try_lock() {
        Ok(()) => Ok(DirLock(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Locked { out: out.to_path_buf() }),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(RunError::Lock { out: out.to_path_buf(), lock: path, source })
        }
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
            n.parse()
                .map_err(|source| RunError::UnknownBackend { source, compiled: compiled::names() })
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
        return Err(RunError::NoBackend);
    }
    for &id in &ids {
        match backends::availability(id) {
            Availability::Usable => {}
            Availability::NotCompiled { hint } => return Err(RunError::NotCompiled { id, hint }),
            Availability::Unavailable { reason, hint } => {
                return Err(RunError::Unusable { id, reason, hint })
            }
        }
    }
    let data = suite
        .workloads
        .iter()
        .map(|w| {
            w.prepare().map_err(|source| RunError::Prepare {
                at: w.at(&suite.path),
                workload: w.name().to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, data))
}

/// `reports/SUITE-TIMESTAMP`, or for a shard `reports/RUN_ID/shard-I`.
fn default_out(suite: &str, run_id: Option<&str>, shard: Option<Shard>) -> PathBuf {
    match (run_id, shard) {
        (Some(id), Some(shard)) => PathBuf::from("reports").join(id).join(shard_dir(shard)),
        (Some(id), None) => PathBuf::from("reports").join(id),
        _ => PathBuf::from("reports").join(format!("{suite}-{}", env::stamp())),
    }
}

/// A shard's directory under its run's: `shard-I`.
pub fn shard_dir(shard: Shard) -> String {
    format!("shard-{}", shard.index)
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
    let path = suite::resolve(&opts.suite)?;
    let suite = suite::load(&path)?;
    let requested = opts.backends.as_deref().map(parse_backends).transpose()?;
    let (ids, data) = preflight(&suite, requested)?;
    let asked = opts.grad.or(suite.grad);
    let grad =
        |id| backends::effective_grad(id, asked.unwrap_or_else(|| backends::default_grad(id)));
    let rounds = opts.rounds.unwrap_or(suite.rounds);
    if rounds == 0 {
        return Err(RunError::NoRounds);
    }
    let shard: Option<Shard> = opts.shard.as_deref().map(str::parse).transpose()?;
    if let Some(id) = &opts.run_id {
        check_run_id(id)?;
    }
    if opts.resume && (opts.run_id.is_none() || opts.db.is_none()) {
        return Err(RunError::ResumeWithoutRun);
    }
    // The history first: an unreachable database or an unknown run stops the run before it
    // writes anything.
    let open = if opts.resume { history::Db::open_existing } else { history::Db::open };
    let mut history = opts.db.as_deref().map(open).transpose()?;
    // A shard that starts again (resumed, requeued by the scheduler, resubmitted) runs only
    // the cells the history does not hold as finished.
    let finished = match (&mut history, &opts.run_id) {
        (Some(db), Some(id)) => {
            if opts.resume {
                db.check_run(id)?;
            }
            match db.shard_count(id)? {
                Some(had) if had != shard.map_or(1, |s| s.count) => {
                    return Err(HistoryError::ShardCount { run: id.clone(), had }.into())
                }
                _ => db.finished(id)?,
            }
        }
        _ => vec![],
    };
    let out =
        opts.out.clone().unwrap_or_else(|| default_out(&suite.name, opts.run_id.as_deref(), shard));
    std::fs::create_dir_all(&out)
        .map_err(|source| RunError::CreateOut { out: out.clone(), source })?;
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
        measures: suite_measures(&suite),
        run_id: opts.run_id.clone(),
        shard,
    };
    let info_json = serde_json::to_string_pretty(&info).expect("serializable");
    for (file, json) in [(ENV_FILE, &env_json), (RUN_FILE, &info_json)] {
        write_atomic(&out.join(file), json)
            .map_err(|source| RunError::NotWritable { out: out.clone(), source })?;
    }

    // Round after round, and within a round each experiment on every backend in turn
    // (ABCABC…), so that a machine's drift over minutes falls on every backend alike.
    let cells = suite.shard_cells(&ids, shard);
    let planned: Vec<(&Cell, usize)> =
        (0..rounds).flat_map(|round| cells.iter().map(move |c| (c, round))).collect();
    let run_id = opts.run_id.clone().unwrap_or_else(|| history::env_run_id(&env_json));
    if let Some(db) = &mut history {
        db.start_shard(&run_id, &info, &environment, &env_json, &planned)?;
    }
    let order: Vec<(usize, &Cell)> = planned
        .iter()
        .filter(|(c, round)| !finished.iter().any(|f| f.is(c, *round)))
        .map(|&(c, round)| (round, c))
        .collect();
    let resumed = order.len() < planned.len();
    if resumed {
        eprintln!(
            "run {run_id}: {} of this shard's {} cells are finished in the history; running the rest",
            planned.len() - order.len(),
            planned.len()
        );
    }
    let bar = ProgressBar::new(order.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{pos}/{len}] {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let mut done = Vec::new();
    let mut interrupted = false;
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
        let watches = watch::start(Scope::Runner, cell.backend.device);
        let mut result = executor.execute(&job, &mut ProgressObserver { bar: &bar, label });
        watch::record(watches, &mut result);
        results::append(&out, &result)
            .map_err(|source| RunError::Append { path: out.join(results::RESULTS_FILE), source })?;
        if let Some(Err(e)) = history.as_mut().map(|db| db.record(&run_id, &result)) {
            // The results file holds every line; `ingest` stores them later.
            bar.println(format!(
                "warning: the history stores no more of this run: {e}; later, `randbench \
                 ingest {} --db {}` stores them",
                out.display(),
                history::shown(opts.db.as_deref().unwrap_or_default())
            ));
            history = None;
        }
        bar.println(cell_line(&result, rounds));
        bar.inc(1);
        interrupted |= result.status == Status::Interrupted;
        done.push(result);
    }
    // A Ctrl-C during the last cell may leave that cell finished normally; the run still stops
    // as interrupted.
    interrupted |= STOP.load(Ordering::SeqCst);
    bar.finish_and_clear();
    // A resumed shard reports all its lines in this directory, each cell's latest (a rerun
    // replaces its interrupted line); in a new directory, what it ran now.
    let shown = match !resumed || !out.join(results::RESULTS_FILE).exists() {
        true => done.clone(),
        false => latest_per_cell(results::read(&out, &Registry)?.results),
    };
    let text = render(&out, Some(&environment), &shown, &[], &suite.name)?;
    print!("{text}");
    Ok(RunSummary { out, results: done, interrupted })
}

/// Each cell and round once, its last line kept, in the order the last lines were written.
fn latest_per_cell(lines: Vec<CellResult>) -> Vec<CellResult> {
    let mut out: Vec<CellResult> = Vec::new();
    for r in lines {
        out.retain(|o| !(o.cell == r.cell && o.round == r.round));
        out.push(r);
    }
    out
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
    if let Some(w) = busy_warning(results) {
        warnings.push(format!("{busy_cells} of {} cells: {w}", results.len()));
    }
    let report = presentation::document(suite, env, out, results, warnings);
    for (file, text) in [(REPORT_FILE, Markdown.render(&report)), (HTML_FILE, Html.render(&report))]
    {
        let path = out.join(file);
        write_atomic(&path, &text).map_err(|source| RunError::Write { path, source })?;
    }
    Ok(Terminal.render(&report))
}

/// Re-renders a finished (or interrupted) run's report from its files: the lines that can be
/// read, with a warning naming each that cannot (and a damaged environment file).
pub fn report(dir: &Path) -> Result<String, RunError> {
    let read = results::read(dir, &Registry)?;
    if read.results.is_empty() {
        return Err(RunError::NoResults { path: dir.join(results::RESULTS_FILE) });
    }
    let mut warnings: Vec<String> = read.skipped.iter().map(ToString::to_string).collect();
    let env_path = dir.join(ENV_FILE);
    let env: Option<Environment> = match std::fs::read_to_string(&env_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(env) => Some(env),
            Err(e) => {
                warnings.push(format!(
                    "{}: damaged, so the report says nothing of the machine: {e}",
                    env_path.display()
                ));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("{}: {e}", env_path.display()));
            None
        }
    };
    let suite = read.results[0].suite.clone();
    render(dir, env.as_ref(), &read.results, &warnings, &suite)
}

/// Every figure the suite's families may report, for `run.json`'s catalogue.
fn suite_measures(suite: &Suite) -> Vec<randbench_schema::Measure> {
    let mut out: Vec<randbench_schema::Measure> = Vec::new();
    for w in &suite.workloads {
        for m in families::family_measures(w.family()) {
            if !out.iter().any(|o| o.name == m.name) {
                out.push(m.clone());
            }
        }
    }
    out
}
/// What `randbench list` prints: the families, the suites, and every backend's state, each
/// asked of a process of its own started from `exe` (this one opens no engine).
pub fn list(exe: &Path) -> String {
    let mut out = String::from("Workloads:\n");
    let width = families::FAMILIES.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, about) in families::FAMILIES {
        out += &format!("  {name:<width$} {about}\n");
    }
    out += "\nSuites (bench-suites/):\n";
    for (name, path) in suite::available() {
        let about = match suite::load(&path) {
            Ok(s) => s.description.lines().next().unwrap_or("").to_string(),
            Err(e) => format!("(does not load: {e})"),
        };
        out += &format!("  {name:<20} {about}\n");
    }
    out += "\nBackends:\n";
    for engine in Engine::ALL {
        for device in [Device::Cpu, Device::Cuda(0)] {
            let id = BackendId { engine, device };
            let line = match backends::availability_elsewhere(exe, id) {
                Availability::Usable => "usable".to_string(),
                Availability::NotCompiled { hint } => format!("not compiled in: {hint}"),
                Availability::Unavailable { reason, hint } => {
                    format!("not usable here: {reason}; {hint}")
                }
            };
            out += &format!("  {:<16} {line}\n", id.to_string());
        }
    }
    out
}
