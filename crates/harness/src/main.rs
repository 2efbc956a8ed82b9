//! The `randbench` command line.

use clap::{Parser, Subcommand, ValueEnum};
use randbench::backends::{self, Availability};
use randbench::runner::{self, RunError, RunOptions};
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

#[derive(Subcommand)]
enum Command {
    /// Run a suite: a name in bench-suites/ (e.g. quick) or a YAML file.
    Run {
        suite: String,
        /// Backends to run on, e.g. candle-cpu,tch-cpu (default: the suite's list, else every
        /// backend usable here).
        #[arg(long, value_delimiter = ',')]
        backends: Option<Vec<String>>,
        /// Directory for results.jsonl, environment.json and report.md
        /// (default: reports/SUITE-TIMESTAMP).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How engines with autograd compute gradients (default: the suite's `grad`, else native).
        #[arg(long, value_enum)]
        grad: Option<Grad>,
    },
    /// Workloads, suites, and backends: compiled in, usable here, or what to do to get them.
    List,
    /// Re-render the tables and report.md of a finished run from its directory.
    Report { dir: PathBuf },
}

fn list() -> String {
    let mut out = String::from("Workloads:\n");
    for (name, about) in suite::WORKLOADS {
        out += &format!("  {name:<16} {about}\n");
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
                Availability::Unavailable { reason, hint } => format!("not usable here: {reason}; {hint}"),
            };
            out += &format!("  {:<16} {line}\n", id.to_string());
        }
    }
    out
}

fn main() -> ExitCode {
    randbench::sys::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { suite, backends, out, grad } => {
            let grad = grad.map(|g| match g {
                Grad::Native => GradMode::Native,
                Grad::Symbolic => GradMode::Symbolic,
            });
            runner::run(&RunOptions { suite, backends, out, grad }).map(|s| {
                eprintln!("results in {}", s.out.display());
                if s.interrupted { 130 } else { 0 }
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
