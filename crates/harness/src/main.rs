//! The `randbench` command line.

use clap::{Parser, Subcommand, ValueEnum};
use randbench::backends::{self, Availability};
use randbench::compare;
use randbench::executor::child_main;
use randbench::export;
use randbench::history;
use randbench::procure;
use randbench::report::{Report, Reporter, Terminal};
use randbench::runner::{self, Isolation, RunError, RunOptions, STOP};
use randbench::suite;
use randbench_core::backend::{BackendId, Device, Engine, GradMode};
use std::path::PathBuf;
use std::process::ExitCode;

/// Cross-backend benchmarks of the randomization experiments of deep learning.
#[derive(Parser)]
#[command(name = "randbench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Grad {
    /// Each engine's own autograd (ONNX Runtime always uses the symbolic expansion).
    Native,
    /// The core's symbolic reverse mode, on every engine.
    Symbolic,
}

#[derive(Clone, Copy, ValueEnum)]
enum Isolate {
    /// Child processes when the run has more than one backend.
    Auto,
    /// Every cell in a child process: a crash or hang costs only that cell.
    Process,
    /// Every cell in this process.
    None,
}

fn grad_mode(g: Grad) -> GradMode {
    match g {
        Grad::Native => GradMode::Native,
        Grad::Symbolic => GradMode::Symbolic,
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a suite: a name in bench-suites/ (e.g. quick) or a YAML file.
    Run {
        suite: String,
        /// Backends to run on, e.g. candle-cpu,tch-cpu (default: the suite's list, else every
        /// backend usable here).
        #[arg(long, value_delimiter = ',')]
        backends: Option<Vec<String>>,
        /// Directory for results.jsonl, environment.json, report.md and report.html
        /// (default: reports/SUITE-TIMESTAMP).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How engines with autograd compute gradients (default: the suite's `grad`, else each
        /// engine's faster mode, today the symbolic expansion everywhere).
        #[arg(long, value_enum)]
        grad: Option<Grad>,
        /// Run every cell this many times, the backends taking turns within each round
        /// (default: the suite's `rounds`, else 1). Comparisons need 4 or more.
        #[arg(long)]
        rounds: Option<usize>,
        /// Where cells run.
        #[arg(long, value_enum, default_value = "auto")]
        isolate: Isolate,
        /// A name for this machine in procurement reports, e.g. a cloud instance type
        /// (default: the host name).
        #[arg(long)]
        machine: Option<String>,
    },
    /// Run one cell, sent as JSON on stdin, and write its progress and result as JSON lines
    /// (what `run` starts in child processes).
    #[command(hide = true)]
    Cell,
    /// Workloads, suites, and backends: compiled in, usable here, or what to do to get them.
    List,
    /// Re-render the tables, report.md and report.html of a finished run from its directory.
    Report { dir: PathBuf },
    /// A run's figures (medians over rounds) as JSON for continuous-benchmarking services.
    Export {
        dir: PathBuf,
        #[arg(long, value_enum)]
        format: export::Format,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Store run directories in the history (SQLite by default, or PostgreSQL); storing a
    /// run again adds nothing.
    Ingest {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// A SQLite file (or sqlite://PATH), or a postgres://USER@HOST:PORT/DATABASE URL.
        #[arg(long, default_value = history::DEFAULT_DB)]
        db: String,
    },
    /// A figure's series over the stored runs, for each cell and machine, with the runs where
    /// it changed flagged.
    History {
        /// The figure, e.g. steps_per_second (see `randbench compare`).
        #[arg(long)]
        figure: String,
        #[arg(long)]
        workload: Option<String>,
        /// The variant as tables show it, e.g. random_labels.
        #[arg(long)]
        variant: Option<String>,
        #[arg(long)]
        backend: Option<String>,
        /// A machine fingerprint (or its first characters).
        #[arg(long)]
        machine: Option<String>,
        /// How many of the latest runs to show.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Each run is judged against up to this many runs before it…
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// …and only when there are at least this many.
        #[arg(long, default_value_t = 3)]
        min_points: usize,
        /// The smallest change that counts (default: the figure's own, e.g. 0.05).
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long, default_value = history::DEFAULT_DB)]
        db: String,
    },
    /// Machines side by side from the history: for each target (fit the training set, beat
    /// tuned Adam) the time each machine and engine took, and with a price file the cost and
    /// energy of reaching it.
    Procure {
        /// The suite whose runs to compare.
        #[arg(long, default_value = procure::DEFAULT_SUITE)]
        suite: String,
        /// A YAML file of prices per hour (and optionally watts) per machine, keyed by the
        /// `run --machine` name, host name or fingerprint; see docs/prices.example.yaml.
        #[arg(long)]
        prices: Option<PathBuf>,
        #[arg(long, default_value = history::DEFAULT_DB)]
        db: String,
    },
    /// Compare a run with a baseline run, figure by figure. Exit code 0: nothing regressed;
    /// 1: something regressed (or failed); 3: too noisy to tell (too few rounds, or too much
    /// spread); 2: bad input.
    Compare {
        baseline: PathBuf,
        current: PathBuf,
        /// The smallest change that counts for a figure, e.g. steps_per_second=0.1 (or 10%);
        /// repeat for several (default: the current run's suite, else 5% for speed).
        #[arg(long = "threshold", value_parser = compare::parse_threshold)]
        thresholds: Vec<(String, f64)>,
        /// Also write the comparison as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn history_error(e: history::HistoryError) -> RunError {
    match e {
        history::HistoryError::Input(m) => RunError::Input(m),
        other => RunError::Failed(other.to_string()),
    }
}

fn ingest(dirs: &[PathBuf], db: &str) -> Result<u8, RunError> {
    let mut store = history::Db::open(db).map_err(history_error)?;
    for dir in dirs {
        let i = store.ingest(dir).map_err(history_error)?;
        for w in &i.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}: run {}: {} new cell results, {} new figures",
            dir.display(),
            i.run,
            i.added_cells,
            i.added_figures
        );
    }
    Ok(0)
}

fn procurement(suite: &str, prices: Option<&std::path::Path>, db: &str) -> Result<u8, RunError> {
    let prices = prices
        .map(procure::Prices::read)
        .transpose()
        .map_err(|e| RunError::Input(e.to_string()))?;
    let runs =
        history::Db::open(db).and_then(|mut d| d.latest_runs(suite)).map_err(history_error)?;
    if runs.is_empty() {
        return Err(RunError::Input(format!(
            "{db}: no run of suite {suite}; on each machine run `randbench run {suite} --machine \
             NAME`, then `randbench ingest DIR --db {db}`"
        )));
    }
    let tables = procure::tables(&runs, prices.as_ref());
    print!("{}", Terminal.render(&Report::tables(suite, tables)));
    Ok(0)
}

fn list() -> String {
    let mut out = String::from("Workloads:\n");
    let width = randbench::families::FAMILIES.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, about) in randbench::families::FAMILIES {
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
            let line = match backends::availability(id) {
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

/// Ctrl-C once: the current cell finishes or is abandoned, what is done is written, and the
/// run exits with 130. Twice: exit at once (every line already written stays whole).
fn handle_interrupts() {
    use signal_hook::{consts::SIGINT, flag};
    let installed = flag::register_conditional_shutdown(SIGINT, 130, &STOP)
        .and_then(|_| flag::register(SIGINT, &STOP));
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will end the run without writing its report: {e}");
    }
}

fn main() -> ExitCode {
    randbench::sys::tune_allocator();
    if let Err(e) = randbench::backends::configure_cpu_threads() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = randbench::slowdown::configured() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // A file-size limit then fails a write with an error we report, instead of killing us.
    // SAFETY: sets the disposition of one signal before any threads start.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    handle_interrupts();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cell => {
            return match child_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Run { suite, backends, out, grad, rounds, isolate, machine } => {
            let isolate = match isolate {
                Isolate::Auto => Isolation::Auto,
                Isolate::Process => Isolation::Process,
                Isolate::None => Isolation::None,
            };
            runner::run(&RunOptions {
                suite,
                backends,
                out,
                grad: grad.map(grad_mode),
                rounds,
                isolate,
                machine,
            })
            .map(|s| {
                eprintln!("results in {}", s.out.display());
                if s.interrupted {
                    130
                } else {
                    0
                }
            })
        }
        Command::List => {
            print!("{}", list());
            Ok(0)
        }
        Command::Report { dir } => runner::report(&dir).map(|text| {
            print!("{text}");
            0
        }),
        Command::Export { dir, format, out } => export::export(&dir, format).and_then(|v| {
            let text = serde_json::to_string_pretty(&v).expect("serializable") + "\n";
            match out {
                Some(path) => runner::write_atomic(&path, text)
                    .map_err(|e| RunError::Failed(format!("--out {}: {e}", path.display())))?,
                None => print!("{text}"),
            }
            Ok(0)
        }),
        Command::Ingest { dirs, db } => ingest(&dirs, &db),
        Command::History {
            figure,
            workload,
            variant,
            backend,
            machine,
            last,
            window,
            min_points,
            threshold,
            db,
        } => history::figure(&figure)
            .and_then(|figure| {
                let rule = history::ChangeRule {
                    window: window.max(1),
                    min_points: min_points.max(1),
                    threshold: threshold.unwrap_or(figure.threshold),
                };
                let query = history::SeriesQuery { figure, workload, variant, backend, machine };
                let series = history::Db::open(&db)?.series(&query)?;
                if series.is_empty() {
                    return Err(history::HistoryError::Input(format!(
                        "{db}: no stored values of {} match; `randbench ingest DIR` stores runs",
                        figure.name
                    )));
                }
                let tables: Vec<_> =
                    series.iter().map(|s| history::series_table(s, figure, rule, last)).collect();
                print!("{}", Terminal.render(&Report::tables("history", tables)));
                Ok(0)
            })
            .map_err(history_error),
        Command::Procure { suite, prices, db } => procurement(&suite, prices.as_deref(), &db),
        Command::Compare { baseline, current, thresholds, json } => {
            compare::compare(&baseline, &current, &thresholds.into_iter().collect()).and_then(|r| {
                print!("{}", Terminal.render(&Report::tables("randbench", vec![r.table()])));
                if let Some(path) = json {
                    let text = serde_json::to_string_pretty(&r).expect("serializable");
                    runner::write_atomic(&path, text)
                        .map_err(|e| RunError::Failed(format!("--json {}: {e}", path.display())))?;
                }
                Ok(r.exit_code())
            })
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                RunError::Input(_) => 2,
                RunError::Failed(_) => 1,
            })
        }
    }
}
