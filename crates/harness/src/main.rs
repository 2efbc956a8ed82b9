//! The `randbench` command line.

use clap::{Parser, Subcommand, ValueEnum};
use randbench::backends;
use randbench::compare::{self, CompareError, EXIT_SKIPPED_LINES};
use randbench::executor::{child_main, own_executable, STOP};
use randbench::export;
use randbench::families::{self, Registry};
use randbench::fleet::{self, FleetError, ShardCommand};
use randbench::history::{self, HistoryError};
use randbench::procure::{self, ProcureError};
use randbench::report::{Document, Reporter, Terminal};
use randbench::runner::{self, Isolation, RunError, RunOptions};
use randbench_core::backend::GradMode;
use randbench_schema::results::{write_atomic, ResultsError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Every way a command can fail; [`CliError::exit_code`] is 2 for the user's mistakes (nothing
/// was run or written), 1 for failures on the way.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Procure(#[from] ProcureError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("{db}: no run of suite {suite}; on each machine run `randbench run {suite} --machine NAME`, then `randbench ingest DIR --db {db}`")]
    NoRun { db: String, suite: String },
    #[error("{flag} {}: {source}", path.display())]
    Write { flag: &'static str, path: PathBuf, source: std::io::Error },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        let input = match self {
            CliError::Run(e) => e.is_input(),
            CliError::History(e) => e.is_input(),
            CliError::Fleet(e) => e.is_input(),
            CliError::Compare(_) | CliError::Procure(_) | CliError::Results(_) => true,
            CliError::NoRun { .. } => true,
            CliError::Write { .. } => false,
        };
        if input {
            2
        } else {
            1
        }
    }
}

/// Prints, on stderr, each line of a results file that could not be read; the exit code then
/// says so.
fn warn_skipped(skipped: &[String]) -> u8 {
    for s in skipped {
        eprintln!("warning: {s}");
    }
    if skipped.is_empty() {
        0
    } else {
        EXIT_SKIPPED_LINES
    }
}

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
        /// Run only shard I of N: every experiment whose index in the suite leaves I when
        /// divided by N, on all its backends (what `submit` gives each task).
        #[arg(long)]
        shard: Option<String>,
        /// The run this shard belongs to, shared by all its shards (default: a hash of this
        /// run's environment).
        #[arg(long)]
        run_id: Option<String>,
        /// Store every result in this history as soon as it exists: a SQLite file, or a
        /// postgres://USER@HOST:PORT/DATABASE URL.
        #[arg(long)]
        db: Option<String>,
        /// Run only the cells of --run-id that the history (--db) does not hold as finished.
        #[arg(long)]
        resume: bool,
    },
    /// Hand a suite to a scheduler as shards, all storing into one history under one run id.
    Submit {
        #[command(subcommand)]
        scheduler: Scheduler,
    },
    /// A run's shards: cells planned, ran, failed and missing, from the history, and the
    /// scheduler's state where `squeue` answers.
    Status {
        run: String,
        #[arg(long, default_value = history::DEFAULT_DB)]
        db: String,
    },
    /// Run one cell, sent as JSON on stdin, and write its progress and result as JSON lines
    /// (what `run` starts in child processes).
    #[command(hide = true)]
    Cell,
    /// Workloads, suites, and backends: compiled in, usable here, or what to do to get them.
    List,
    /// Opens one backend and prints whether it is usable here, as JSON (what `list` asks in a
    /// process of its own, so that it opens no engine itself).
    #[command(hide = true)]
    Probe { backend: String },
    /// Re-render the tables, report.md and report.html of a finished run from its directory,
    /// or gather a run's shards from the history (--db URL --run RUN_ID) into --out.
    Report {
        #[arg(required_unless_present = "run")]
        dir: Option<PathBuf>,
        /// The history holding the run.
        #[arg(long, requires = "run")]
        db: Option<String>,
        /// A run id in the history: its shards are gathered into one report.
        #[arg(long, requires = "db", conflicts_with = "dir")]
        run: Option<String>,
        /// Where the gathered run goes (default: reports/RUN_ID).
        #[arg(long, requires = "run")]
        out: Option<PathBuf>,
    },
    /// A run's figures (medians over rounds) as JSON for continuous-benchmarking services.
    /// Exit code 4: lines of its results could not be read (the rest was exported).
    Export {
        dir: PathBuf,
        #[arg(long, value_enum)]
        format: export::Format,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Store run directories in the history (SQLite by default, or PostgreSQL); storing a
    /// run again adds nothing. Exit code 4: lines of a results file could not be read (the
    /// rest was stored).
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
        /// Compare these runs of the history (repeat the flag) instead of each machine's
        /// latest run of the suite.
        #[arg(long = "run")]
        runs: Vec<String>,
        #[arg(long, default_value = history::DEFAULT_DB)]
        db: String,
    },
    /// Compare a run with a baseline run, figure by figure. Exit code 0: nothing regressed;
    /// 1: something regressed (or failed); 4: lines of a results file could not be read (the
    /// rest was compared); 3: too noisy to tell (too few rounds, or too much spread); 2: bad
    /// input.
    Compare {
        /// A run directory, or with --db a run id in the history.
        baseline: String,
        /// A run directory, or with --db a run id in the history.
        current: String,
        /// The history holding runs named by id.
        #[arg(long)]
        db: Option<String>,
        /// The smallest change that counts for a figure, e.g. steps_per_second=0.1 (or 10%);
        /// repeat for several (default: the current run's suite, else 5% for speed).
        #[arg(long = "threshold", value_parser = compare::parse_threshold)]
        thresholds: Vec<(String, f64)>,
        /// Also write the comparison as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Scheduler {
    /// A Slurm job array, one task per shard (`sbatch --parsable`); prints the run id and
    /// the job id.
    Slurm {
        suite: String,
        #[command(flatten)]
        shards: ShardArgs,
        #[arg(long)]
        partition: Option<String>,
        /// Each task's time limit, e.g. 2:00:00.
        #[arg(long)]
        time: Option<String>,
        /// Generic resources per task, e.g. gpu:1.
        #[arg(long)]
        gres: Option<String>,
        /// At most this many tasks at once.
        #[arg(long)]
        max_parallel: Option<usize>,
        /// Each task alone on its node, so that no other job shares its timings.
        #[arg(long)]
        exclusive: bool,
    },
    /// A Kubernetes Indexed Job, one pod per shard; applied with kubectl where a cluster is
    /// configured, else only written.
    K8s {
        suite: String,
        #[command(flatten)]
        shards: ShardArgs,
        /// The image with randbench, its libraries and data (see the Dockerfile).
        #[arg(long)]
        image: String,
        /// GPUs per pod.
        #[arg(long)]
        gpu: Option<u32>,
        /// CPUs per pod (request and limit), e.g. 4.
        #[arg(long)]
        cpu: Option<String>,
        /// Memory per pod (request and limit), e.g. 16Gi.
        #[arg(long)]
        memory: Option<String>,
        /// At most this many pods at once.
        #[arg(long)]
        parallelism: Option<usize>,
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// What every scheduler's shards are asked to do.
#[derive(clap::Args)]
struct ShardArgs {
    /// How many shards (tasks, pods) to spread the suite over.
    #[arg(long)]
    shards: usize,
    /// The history every shard stores into: postgres://… for a fleet, a SQLite file on one
    /// host or a shared file system.
    #[arg(long)]
    db: String,
    /// The run's id (default: a new one, printed).
    #[arg(long)]
    run_id: Option<String>,
    /// Submit only the cells of this run that the history does not hold as finished.
    #[arg(long, conflicts_with = "run_id")]
    resume: Option<String>,
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// A name for the machines in procurement reports.
    #[arg(long)]
    machine: Option<String>,
    /// Where the script or manifest, logs and shard directories go (default:
    /// reports/RUN_ID).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only write the script or manifest.
    #[arg(long)]
    dry_run: bool,
}

impl ShardArgs {
    fn command(&self, suite: String) -> ShardCommand {
        ShardCommand {
            suite,
            shards: self.shards,
            db: self.db.clone(),
            run_id: self.resume.clone().or_else(|| self.run_id.clone()),
            backends: self.backends.clone(),
            machine: self.machine.clone(),
            resume: self.resume.is_some(),
        }
    }
}

fn submit(scheduler: Scheduler) -> Result<u8, CliError> {
    let (submitted, db) = match scheduler {
        Scheduler::Slurm { suite, shards, partition, time, gres, max_parallel, exclusive } => {
            let slurm = fleet::Slurm {
                partition,
                time,
                gres,
                max_parallel,
                exclusive,
                dir: shards.out.clone(),
                dry_run: shards.dry_run,
            };
            (fleet::submit_slurm(shards.command(suite), &slurm)?, shards.db)
        }
        Scheduler::K8s { suite, shards, image, gpu, cpu, memory, parallelism, namespace } => {
            let k = fleet::Kubernetes {
                image,
                gpus: gpu,
                cpu,
                memory,
                parallelism,
                namespace,
                dir: shards.out.clone(),
                dry_run: shards.dry_run,
            };
            (fleet::submit_k8s(shards.command(suite), &k)?, shards.db)
        }
    };
    println!("run {}", submitted.run);
    match &submitted.job {
        Some(job) => {
            println!("job {job}");
            eprintln!(
                "submitted {}; follow it with `randbench status {} --db {db}`",
                submitted.file.display(),
                submitted.run
            );
        }
        None => eprintln!("written, not submitted: {}", submitted.file.display()),
    }
    Ok(0)
}

/// A run directory for a `compare` argument: the directory itself, or with `--db` a run of
/// the history gathered into a temporary one.
fn run_dir(
    arg: &str,
    db: Option<&mut history::Db>,
    temp: &mut Vec<PathBuf>,
) -> Result<PathBuf, CliError> {
    let path = PathBuf::from(arg);
    let Some(db) = db.filter(|_| !path.is_dir()) else { return Ok(path) };
    let dir = std::env::temp_dir().join(format!("randbench-{}-{arg}", std::process::id()));
    temp.push(dir.clone());
    db.write_run(arg, &dir, &Registry)?;
    Ok(dir)
}

fn ingest(dirs: &[PathBuf], db: &str) -> Result<u8, CliError> {
    let mut store = history::Db::open(db)?;
    let mut code = 0;
    for dir in dirs {
        let i = store.ingest(dir, &Registry)?;
        code = code.max(warn_skipped(&i.skipped));
        println!(
            "{}: run {}: {} new cell results, {} new figures",
            dir.display(),
            i.run,
            i.added_cells,
            i.added_figures
        );
    }
    Ok(code)
}

fn procurement(
    suite: &str,
    prices: Option<&std::path::Path>,
    runs: &[String],
    db: &str,
) -> Result<u8, CliError> {
    let prices = prices.map(procure::Prices::read).transpose()?;
    let mut store = history::Db::open(db)?;
    let runs = match runs {
        [] => store.latest_runs(suite, &Registry)?,
        ids => {
            ids.iter().map(|id| store.stored_run(id, &Registry)).collect::<Result<Vec<_>, _>>()?
        }
    };
    if runs.is_empty() {
        return Err(CliError::NoRun { db: db.to_string(), suite: suite.to_string() });
    }
    let tables = procure::tables(&runs, prices.as_ref(), &Registry);
    print!("{}", Terminal.render(&Document::tables(suite, tables)));
    Ok(0)
}

/// Ctrl-C once: the current cell finishes or is abandoned, what is done is written, and the
/// run exits with 130. Twice: exit at once (every line already written stays whole).
fn handle_interrupts() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    // SIGTERM is how schedulers stop a task (Slurm's scancel and time limit, Kubernetes):
    // the current cell is then written as interrupted, which `--resume` runs again.
    let installed = flag::register_conditional_shutdown(SIGINT, 130, &STOP)
        .and_then(|_| flag::register(SIGINT, &STOP))
        .and_then(|_| flag::register_conditional_shutdown(SIGTERM, 143, &STOP))
        .and_then(|_| flag::register(SIGTERM, &STOP));
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
    let result: Result<u8, CliError> = match cli.command {
        Command::Cell => {
            return match child_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Run {
            suite,
            backends,
            out,
            grad,
            rounds,
            isolate,
            machine,
            shard,
            run_id,
            db,
            resume,
        } => {
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
                shard,
                run_id,
                db,
                resume,
            })
            .map(|s| {
                eprintln!("results in {}", s.out.display());
                if s.interrupted {
                    130
                } else {
                    0
                }
            })
            .map_err(CliError::from)
        }
        Command::List => {
            // Where this program cannot be found, each probe's line says so.
            let exe = own_executable().unwrap_or_else(|_| PathBuf::from("randbench"));
            print!("{}", runner::list(&exe));
            Ok(0)
        }
        Command::Probe { backend } => runner::parse_backends(&[backend])
            .map(|ids| {
                let a = backends::availability(ids[0]);
                println!("{}", serde_json::to_string(&a).expect("serializable"));
                0
            })
            .map_err(CliError::from),
        Command::Report { dir, db, run, out } => (|| {
            let dir = match (run, db) {
                (Some(run), Some(db)) => {
                    let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&run));
                    let n = history::Db::open_existing(&db)?.write_run(&run, &out, &Registry)?;
                    eprintln!("run {run}: {n} cell results gathered into {}", out.display());
                    out
                }
                _ => dir.expect("clap requires a directory without --run"),
            };
            print!("{}", runner::report(&dir)?);
            Ok(0)
        })(),
        Command::Submit { scheduler } => submit(scheduler),
        Command::Status { run, db } => (|| {
            let status = history::Db::open_existing(&db)?.status(&run)?;
            let table = fleet::status_table(&status);
            print!("{}", Terminal.render(&Document::tables("randbench", vec![table])));
            Ok(0)
        })(),
        Command::Export { dir, format, out } => {
            export::export(&dir, format, &Registry).map_err(CliError::from).and_then(|e| {
                let text = serde_json::to_string_pretty(&e.json).expect("serializable") + "\n";
                match out {
                    Some(path) => write_atomic(&path, text).map_err(|source| CliError::Write {
                        flag: "--out",
                        path,
                        source,
                    })?,
                    None => print!("{text}"),
                }
                Ok(warn_skipped(&e.skipped))
            })
        }
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
        } => {
            let known: Vec<_> = families::all_measures().cloned().collect();
            history::figure(&figure, &known)
                .and_then(|figure| {
                    let rule = history::ChangeRule {
                        window: window.max(1),
                        min_points: min_points.max(1),
                        threshold: threshold.unwrap_or(figure.threshold),
                    };
                    let query = history::SeriesQuery {
                        figure: figure.clone(),
                        workload,
                        variant,
                        backend,
                        machine,
                    };
                    let series = history::Db::open(&db)?.series(&query)?;
                    if series.is_empty() {
                        return Err(HistoryError::NoValues {
                            db: db.clone(),
                            figure: figure.name.to_string(),
                        });
                    }
                    let tables: Vec<_> = series
                        .iter()
                        .map(|s| history::series_table(s, figure, rule, last))
                        .collect();
                    print!("{}", Terminal.render(&Document::tables("history", tables)));
                    Ok(0)
                })
                .map_err(CliError::from)
        }
        Command::Procure { suite, prices, runs, db } => {
            procurement(&suite, prices.as_deref(), &runs, &db)
        }
        Command::Compare { baseline, current, db, thresholds, json } => {
            let thresholds = thresholds.into_iter().collect();
            let mut temp = Vec::new();
            let compared = (|| {
                let mut store = db.as_deref().map(history::Db::open_existing).transpose()?;
                let baseline = run_dir(&baseline, store.as_mut(), &mut temp)?;
                let current = run_dir(&current, store.as_mut(), &mut temp)?;
                Ok::<_, CliError>(compare::compare(&baseline, &current, &thresholds, &Registry)?)
            })();
            for dir in temp {
                let _ = std::fs::remove_dir_all(dir);
            }
            compared.and_then(|r| {
                print!("{}", Terminal.render(&Document::tables("randbench", vec![r.table()])));
                warn_skipped(&r.skipped);
                if let Some(path) = json {
                    let text = serde_json::to_string_pretty(&r).expect("serializable");
                    write_atomic(&path, text).map_err(|source| CliError::Write {
                        flag: "--json",
                        path,
                        source,
                    })?;
                }
                Ok(r.exit_code())
            })
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
