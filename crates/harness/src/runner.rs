//! Running a suite: checks before any work, then every cell in turn, each result appended as
//! soon as it exists, then the tables.

use crate::backends::{self, Availability, BackendVisitor};
use crate::env::{self, Environment, ENV_FILE};
use crate::isolate::{run_in_child, CellRef};
use crate::randomization::{run_cell_on, CellPlan, Observer};
use crate::report::{self, Markdown, Reporter, Terminal};
use crate::results::{self, CellResult};
use crate::suite::{self, DataSource, DataSpec, Randomization, Suite, Workload};
use indicatif::{ProgressBar, ProgressStyle};
use randbench_core::backend::{Backend, BackendId, GradMode};
use randbench_core::data::{self, Split};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the user asks the run to stop (Ctrl-C).
pub static STOP: AtomicBool = AtomicBool::new(false);

pub const REPORT_FILE: &str = "report.md";

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
    pub isolate: Isolation,
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

/// Loads a workload's data as its suite describes it (before any corruption).
pub fn load_data(spec: &DataSpec) -> Result<Split, String> {
    let mut split = match spec.source {
        DataSource::Synthetic => {
            let train = spec.train.expect("validated: synthetic data has a size");
            // The data are a fixed set (seed 0): seeds vary initialisation, order and corruption.
            data::synthetic(train, spec.test.unwrap_or(1000), spec.image, spec.classes, 0)
        }
        DataSource::FashionMnist => {
            let dir = spec.path.clone().unwrap_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR));
            data::load_mnist_dir(&dir, 10).map_err(|e| e.to_string())?
        }
        DataSource::Idx => {
            data::load_mnist_dir(spec.path.as_deref().expect("validated"), spec.classes)
                .map_err(|e| e.to_string())?
        }
        DataSource::Cifar10 => data::load_cifar10_dir(spec.path.as_deref().expect("validated"))
            .map_err(|e| e.to_string())?,
    };
    // Statistics of the whole training set, before taking a subset (as torchvision users do).
    if spec.normalize {
        split.standardize();
    }
    if let Some(n) = spec.train {
        split.train = split.train.take(n).map_err(|e| format!("data.train: {e}"))?;
    }
    if let Some(n) = spec.test {
        split.test = split.test.take(n).map_err(|e| format!("data.test: {e}"))?;
    }
    Ok(split)
}

/// Checks everything a run needs before it starts: the backends exist and work here, the data
/// load and fit the batch size. Returns the backends to run on and each workload's data.
pub fn preflight(
    suite: &Suite,
    requested: Option<Vec<BackendId>>,
) -> Result<(Vec<BackendId>, Vec<Split>), RunError> {
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
    let mut splits = Vec::new();
    for w in &suite.workloads {
        let Workload::Randomization(r) = w;
        let at = format!("{}:{}:{}", suite.path.display(), r.location.0, r.location.1);
        let split = load_data(&r.data)
            .map_err(|e| RunError::Input(format!("{at}: workload {}: {e}", r.name)))?;
        if r.batch > split.train.len() {
            return Err(RunError::Input(format!(
                "{at}: workload {}: batch {} is larger than the {} training examples",
                r.name,
                r.batch,
                split.train.len()
            )));
        }
        splits.push(split);
    }
    Ok((ids, splits))
}

fn default_out(suite: &str) -> PathBuf {
    let stamp =
        env::utc_now().replace([':', '-'], "").replace('T', "-").trim_end_matches('Z').to_string();
    PathBuf::from("reports").join(format!("{suite}-{stamp}"))
}

/// Writes a file whole or not at all: to a temporary file, then renamed over the target.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

struct ProgressObserver<'a> {
    bar: &'a ProgressBar,
    label: String,
    max_epochs: usize,
}

impl Observer for ProgressObserver<'_> {
    fn epoch(&mut self, epoch: usize, train_accuracy: f64) {
        self.bar.set_message(epoch_message(&self.label, epoch, self.max_epochs, train_accuracy));
    }
    fn should_stop(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Runs a suite and writes `results.jsonl`, `environment.json` and `report.md` under the
/// output directory; prints the tables.
pub fn run(opts: &RunOptions) -> Result<RunSummary, RunError> {
    let path = suite::resolve(&opts.suite).map_err(|e| RunError::Input(e.to_string()))?;
    let suite = suite::load(&path).map_err(|e| RunError::Input(e.to_string()))?;
    let requested = opts.backends.as_deref().map(parse_backends).transpose()?;
    let (ids, splits) = preflight(&suite, requested)?;
    let grad = opts.grad.unwrap_or(suite.grad);
    let out = opts.out.clone().unwrap_or_else(|| default_out(&suite.name));
    std::fs::create_dir_all(&out).map_err(|e| {
        RunError::Input(format!("--out {}: cannot create the directory: {e}", out.display()))
    })?;
    let _lock = lock_dir(&out)?;
    let isolate = match opts.isolate {
        Isolation::Auto => ids.len() > 1,
        Isolation::Process => true,
        Isolation::None => false,
    };
    let infos = ids
        .iter()
        .filter_map(|&id| backends::with_backend(id, grad, InfoOf).ok().map(|i| (id, i)))
        .collect();
    let environment = env::capture(infos);
    let env_json = serde_json::to_string_pretty(&environment).expect("serializable");
    write_atomic(&out.join(ENV_FILE), &env_json)
        .map_err(|e| RunError::Input(format!("--out {}: not writable: {e}", out.display())))?;

    let total: usize = suite
        .workloads
        .iter()
        .map(|w| {
            let Workload::Randomization(r) = w;
            r.conditions.len() * r.regularizers.len()
        })
        .sum::<usize>()
        * suite.seeds.len()
        * ids.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("[{pos}/{len}] {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let mut done = Vec::new();
    let mut interrupted = false;
    'all: for (w, split) in suite.workloads.iter().zip(&splits) {
        let Workload::Randomization(r) = w;
        for &seed in &suite.seeds {
            for (ci, &condition) in r.conditions.iter().enumerate() {
                // A child corrupts the data itself; here a copy is needed only to train in
                // this process (a failed child's result line reads just the sizes).
                let corrupted = (!isolate).then(|| {
                    let mut c = split.clone();
                    condition.apply(&mut c, seed);
                    c
                });
                let data = corrupted.as_ref().unwrap_or(split);
                for (ri, &regularizer) in r.regularizers.iter().enumerate() {
                    for &id in &ids {
                        if STOP.load(Ordering::SeqCst) {
                            interrupted = true;
                            break 'all;
                        }
                        let plan = CellPlan {
                            suite: &suite.name,
                            workload: r,
                            condition,
                            regularizer,
                            seed,
                            split: data,
                        };
                        let result = if isolate {
                            let cell = CellRef {
                                suite: suite.path.clone(),
                                workload: r.name.clone(),
                                condition: ci,
                                regularizer: ri,
                                seed,
                                backend: id,
                                grad,
                            };
                            let label = cell_label(r, condition, regularizer, seed, id);
                            bar.set_message(format!("{label} starting"));
                            let timeout =
                                r.timeout.map(|t| std::time::Duration::from_secs_f64(t.0));
                            run_in_child(&cell, &plan, timeout, &mut |e, a| {
                                bar.set_message(epoch_message(&label, e, r.max_epochs, a))
                            })
                        } else {
                            run_one(plan, id, grad, &bar)
                        };
                        results::append(&out, &result).map_err(|e| {
                            RunError::Failed(format!(
                                "{}: cannot append the result: {e}",
                                out.join(results::RESULTS_FILE).display()
                            ))
                        })?;
                        bar.println(cell_line(&result));
                        bar.inc(1);
                        interrupted |= result.status == results::Status::Interrupted;
                        done.push(result);
                    }
                }
            }
        }
    }
    // A Ctrl-C during the last cell may leave that cell finished normally; the run still stops
    // as interrupted.
    interrupted |= STOP.load(Ordering::SeqCst);
    bar.finish_and_clear();
    let text =
        render(&out, Some(&environment), &done, &[], &suite.name).map_err(RunError::Failed)?;
    print!("{text}");
    Ok(RunSummary { out, results: done, interrupted })
}

fn cell_label(
    r: &Randomization,
    condition: randbench_core::corrupt::Condition,
    regularizer: suite::Regularizer,
    seed: u64,
    id: BackendId,
) -> String {
    format!(
        "{id} {} {}{} seed {seed}",
        r.name,
        condition,
        if regularizer.is_none() { String::new() } else { format!(" [{}]", regularizer.label()) }
    )
}

fn epoch_message(label: &str, epoch: usize, max_epochs: usize, train_accuracy: f64) -> String {
    format!("{label} epoch {epoch}/{max_epochs}, train acc {:.1}%", 100.0 * train_accuracy)
}

/// Runs a cell in this process.
fn run_one(plan: CellPlan, id: BackendId, grad: GradMode, bar: &ProgressBar) -> CellResult {
    let label = cell_label(plan.workload, plan.condition, plan.regularizer, plan.seed, id);
    bar.set_message(format!("{label} compiling"));
    let max_epochs = plan.workload.max_epochs;
    run_cell_on(id, grad, &plan, &mut ProgressObserver { bar, label, max_epochs })
}

fn cell_line(r: &CellResult) -> String {
    let fit = match (r.epochs_to_fit, r.seconds_to_fit) {
        (Some(e), Some(s)) => format!("fit in {e} epochs, {s}"),
        _ => format!("{} after {} epochs", r.status.label(), r.epochs),
    };
    let test = r.test_accuracy.map(|a| format!(", test acc {:.1}%", 100.0 * a)).unwrap_or_default();
    format!(
        "{} {} {} [{}] seed {}: {fit}{test}",
        r.backend, r.workload, r.condition, r.regularizer, r.seed
    )
}

struct InfoOf;
impl BackendVisitor for InfoOf {
    type Out = randbench_core::BackendInfo;
    fn visit<B: Backend>(self, b: &B) -> Self::Out {
        b.info()
    }
}

/// Renders the terminal tables and writes `report.md` for the results in `out`.
pub fn render(
    out: &Path,
    env: Option<&Environment>,
    results: &[CellResult],
    warnings: &[String],
    suite: &str,
) -> Result<String, String> {
    let tables = report::tables(results);
    let md = Markdown.render(suite, env, &tables, warnings);
    write_atomic(&out.join(REPORT_FILE), &md)
        .map_err(|e| format!("{}: {e}", out.join(REPORT_FILE).display()))?;
    Ok(Terminal.render(suite, env, &tables, warnings))
}

/// Re-renders a finished (or interrupted) run's report from its files.
pub fn report(dir: &Path) -> Result<String, RunError> {
    let (results, warnings) = results::read(dir).map_err(RunError::Input)?;
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
    render(dir, env.as_ref(), &results, &warnings, &suite).map_err(RunError::Failed)
}
