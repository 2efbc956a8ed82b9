//! Suites: YAML files naming workloads, their parameters, the backends to run on, seeds and
//! budgets. Parsed with serde-saphyr (maintained, panic-free, and its errors carry line and
//! column); every mistake becomes one line `file:line:column: what is wrong, what is valid`.

use crate::compiled;
use crate::families::{self, RawWorkload, Workload};
use crate::spec::{yaml_error, Ctx, SuiteError};
use randbench_core::{BackendId, GradMode};
use randbench_schema::{Cell, Shard};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    #[serde(default)]
    description: String,
    backends: Option<Vec<Spanned<String>>>,
    seeds: Option<Spanned<Vec<u64>>>,
    grad: Option<GradMode>,
    rounds: Option<Spanned<usize>>,
    compare: Option<RawCompare>,
    workloads: Spanned<Vec<Spanned<RawWorkload>>>,
}

/// How `randbench compare` judges this suite's runs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    /// The smallest change that counts, per figure (0.05: 5%).
    #[serde(default)]
    thresholds: BTreeMap<String, Spanned<f64>>,
}

// ---- the validated suite ----

#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// As listed in the file; None means every backend usable here.
    pub backends: Option<Vec<BackendId>>,
    pub seeds: Vec<u64>,
    /// The suite's gradient mode for every backend; `None`: each backend's default
    /// ([`crate::backends::default_grad`]).
    pub grad: Option<GradMode>,
    /// How many times every cell runs, the backends taking turns within each round.
    pub rounds: usize,
    /// The smallest change that counts, for the figures whose default the suite overrides.
    pub thresholds: BTreeMap<String, f64>,
    pub workloads: Vec<Workload>,
}

/// Finds a suite by path, or by name in `bench-suites/` (here, then above the binary).
pub fn resolve(arg: &str) -> Result<PathBuf, SuiteError> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    for dir in suite_dirs() {
        let candidate = dir.join(format!("{arg}.yaml"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let known: Vec<String> = available().into_iter().map(|(n, _)| n).collect();
    Err(SuiteError::NotFound(format!(
        "no suite file '{arg}' and no suite of that name in bench-suites/; the suites are: {}",
        if known.is_empty() { "(none found)".to_string() } else { known.join(", ") }
    )))
}

/// `bench-suites/` here, then the nearest one above the binary (a checkout's
/// target/release/randbench finds the checkout's), so that names work from any directory and
/// a binary never depends on where it was compiled.
fn suite_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("bench-suites")];
    let exe = std::env::current_exe().and_then(|e| e.canonicalize());
    if let Some(dir) = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1))
        .map(|a| a.join("bench-suites"))
        .find(|d| d.is_dir())
    {
        dirs.push(dir);
    }
    dirs
}

/// (name, path) of every suite in bench-suites/.
pub fn available() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in suite_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "yaml") {
                let name = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
                if !found.iter().any(|(n, _)| *n == name) {
                    found.push((name, path));
                }
            }
        }
    }
    found.sort();
    found
}

pub fn load(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SuiteError::Io { path: path.display().to_string(), source })?;
    parse(&text, path)
}

/// Parses and validates a suite; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Suite, SuiteError> {
    let shown = path.display().to_string();
    let cx = Ctx::new(&shown);
    let raw: RawSuite = serde_saphyr::from_str(text).map_err(|e| yaml_error(&cx, &e))?;
    let name = raw
        .name
        .unwrap_or_else(|| path.file_stem().unwrap_or_default().to_string_lossy().to_string());
    let backends = match &raw.backends {
        None => None,
        Some(list) => Some(list.iter().map(|b| backend(&cx, b)).collect::<Result<Vec<_>, _>>()?),
    };
    let seeds = match raw.seeds {
        None => vec![0],
        Some(s) => {
            cx.check(
                &s,
                |v| !v.is_empty(),
                |_| "the seed list is empty: give at least one seed, e.g. `seeds: [0]`".into(),
            )?;
            s.value
        }
    };
    let rounds = match raw.rounds {
        None => 1,
        Some(r) => {
            cx.check(&r, |&n| n >= 1, |_| "rounds must be 1 or more".into())?;
            r.value
        }
    };
    let thresholds = raw.compare.map(|c| c.thresholds).unwrap_or_default();
    for (name, t) in &thresholds {
        if families::measure_named(name).is_none() {
            let known: Vec<&str> = families::all_measures().map(|m| &*m.name).collect();
            return Err(cx.at(
                t.referenced,
                format!("compare: no figure is named '{name}'; figures: {}", known.join(", ")),
            ));
        }
        cx.check(
            t,
            |&v| v > 0.0 && v < 10.0,
            |v| {
                format!(
                    "compare: threshold {v} for {name}: give a fraction above 0, e.g. 0.05 for 5%"
                )
            },
        )?;
    }
    let thresholds = thresholds.into_iter().map(|(k, v)| (k, v.value)).collect();
    cx.check(&raw.workloads, |w| !w.is_empty(), |_| "the suite names no workload".into())?;
    let workloads = raw
        .workloads
        .value
        .into_iter()
        .enumerate()
        .map(|(i, w)| w.value.validate(&cx, i, w.referenced))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = workloads.iter().map(|w| w.name()).collect();
    names.sort_unstable();
    if let Some(d) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(cx.at(
            raw.workloads.referenced,
            format!("two workloads are named '{}': give each a distinct `name`", d[0]),
        ));
    }
    Ok(Suite {
        name,
        description: raw.description,
        path: path.to_path_buf(),
        backends,
        seeds,
        grad: raw.grad,
        rounds,
        thresholds,
        workloads,
    })
}

fn backend(cx: &Ctx, b: &Spanned<String>) -> Result<BackendId, SuiteError> {
    let id: BackendId =
        b.value.parse().map_err(|e: randbench_core::backend::ParseBackendError| {
            cx.at(b.referenced, format!("{e}; this binary has: {}", compiled::names().join(", ")))
        })?;
    // Whether it is compiled in, from the build alone: parsing a suite opens no engine.
    match compiled::missing(id) {
        Some(hint) => {
            Err(cx
                .at(b.referenced, format!("backend {id} is not compiled into this binary: {hint}")))
        }
        None => Ok(id),
    }
}

impl Suite {
    /// Every cell of the suite on `backends`, in the order they run: by workload, seed and
    /// variant, the backends taking turns innermost (so a drifting machine slows them alike).
    pub fn cells(&self, backends: &[BackendId]) -> Vec<Cell> {
        let mut cells = Vec::new();
        for w in &self.workloads {
            for &seed in &self.seeds {
                for variant in w.variants() {
                    for &backend in backends {
                        cells.push(Cell {
                            workload: w.name().to_string(),
                            seed,
                            variant: variant.to_tagged(),
                            backend,
                            label: variant.to_string(),
                        });
                    }
                }
            }
        }
        cells
    }

    /// The cells of one shard (all of them for `None`): whole experiments, each with every
    /// backend, so that comparisons taken in turns stay on one machine.
    pub fn shard_cells(&self, backends: &[BackendId], shard: Option<Shard>) -> Vec<Cell> {
        let all = self.cells(backends);
        let Some(shard) = shard else { return all };
        all.chunks(backends.len().max(1))
            .enumerate()
            .filter(|(experiment, _)| shard.holds(*experiment))
            .flat_map(|(_, cells)| cells.iter().cloned())
            .collect()
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name() == name)
    }
}
