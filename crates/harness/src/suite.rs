//! Suites: YAML files naming workloads, their parameters, the backends to run on, seeds and
//! budgets. Parsed with serde-saphyr (maintained, panic-free, and its errors carry line and
//! column); every mistake becomes one line `file:line:column: what is wrong, what is valid`.

use crate::backends::{self, Availability};
use crate::cell::Cell;
use crate::datasets::{DataSource, DataSpec, RawData};
use crate::families::{self, RawWorkload, Workload};
use randbench_core::optim::{defaults, Optimizer, Rule};
use randbench_core::units::Seconds;
use randbench_core::{BackendId, GradMode};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{path}: cannot read the suite: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    At { path: String, line: u64, column: u64, message: String },
    #[error("{0}")]
    NotFound(String),
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOptimizer {
    kind: Spanned<OptimizerKind>,
    lr: Spanned<f64>,
    momentum: Option<Spanned<f64>>,
    alpha: Option<Spanned<f64>>,
    beta1: Option<Spanned<f64>>,
    beta2: Option<Spanned<f64>>,
    eps: Option<Spanned<f64>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OptimizerKind {
    Sgd,
    Momentum,
    Nesterov,
    Rmsprop,
    Adam,
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

/// The suite file being validated: its errors carry its name and a place in it. Families
/// validate their workloads with its helpers.
pub struct Ctx<'a> {
    path: &'a str,
}

impl Ctx<'_> {
    pub fn at(&self, loc: Location, message: impl Into<String>) -> SuiteError {
        SuiteError::At {
            path: self.path.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }

    pub fn check<T>(
        &self,
        v: &Spanned<T>,
        ok: impl Fn(&T) -> bool,
        message: impl FnOnce(&T) -> String,
    ) -> Result<(), SuiteError> {
        if ok(&v.value) {
            Ok(())
        } else {
            Err(self.at(v.referenced, message(&v.value)))
        }
    }
}

/// Finds a suite by path, or by name in `bench-suites/` (here, then in the source tree).
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

fn suite_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("bench-suites")];
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-suites");
    if source.is_dir() {
        dirs.push(source);
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
    let cx = Ctx { path: &shown };
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
            let known: Vec<&str> = families::all_measures().map(|m| m.name).collect();
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
            cx.at(
                b.referenced,
                format!("{e}; this binary has: {}", backends::compiled_names().join(", ")),
            )
        })?;
    match backends::availability(id) {
        Availability::NotCompiled { hint } => {
            Err(cx
                .at(b.referenced, format!("backend {id} is not compiled into this binary: {hint}")))
        }
        _ => Ok(id),
    }
}

/// One line from a YAML error, with a suggestion where a key or value was misspelt.
fn yaml_error(cx: &Ctx, e: &serde_saphyr::Error) -> SuiteError {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("").trim();
    // "error: line 3 column 1: unknown field ..." -> "unknown field ..."
    let message = match first.find("column") {
        Some(c) => first[c..].split_once(": ").map(|(_, m)| m).unwrap_or(first),
        None => first.trim_start_matches("error: "),
    };
    // serde-saphyr repeats the place at the end; we lead with it already.
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains("column") => &message[..i],
        _ => message,
    };
    let message = match message {
        "invalid u64" | "invalid usize" | "invalid u32" => {
            "expected a whole number of 0 or more".to_string()
        }
        "invalid f64" | "invalid f32" => "expected a number".to_string(),
        m => with_suggestion(m),
    };
    match e.location() {
        Some(loc) => cx.at(loc, message),
        None => SuiteError::At { path: cx.path.to_string(), line: 0, column: 0, message },
    }
}

/// Adds "did you mean `x`?" to serde's "unknown field/variant `y`, expected one of a, b".
fn with_suggestion(message: &str) -> String {
    let (Some(start), Some(list)) = (message.find('`'), message.split("expected one of ").nth(1))
    else {
        return message.to_string();
    };
    let given = message[start + 1..].split('`').next().unwrap_or("");
    let best = list
        .split(", ")
        .map(|c| c.trim_matches('`').trim())
        .min_by_key(|c| edit_distance(given, c))
        .filter(|c| edit_distance(given, c) <= 2.max(given.len() / 3));
    match best {
        Some(b) => format!("{message}; did you mean `{b}`?"),
        None => message.to_string(),
    }
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Ctx<'_> {
    /// A workload's `timeout`, in seconds, if it has one.
    pub fn timeout(&self, v: &Option<Spanned<f64>>) -> Result<Option<Seconds>, SuiteError> {
        v.as_ref().map(|s| self.positive(s, "timeout").map(Seconds)).transpose()
    }

    /// A workload's name: as written, else its family's `key` (and its position after the first).
    pub fn workload_name(name: Option<String>, key: &str, index: usize) -> String {
        name.unwrap_or_else(|| match index {
            0 => key.to_string(),
            _ => format!("{key}-{index}"),
        })
    }

    pub fn positive(&self, v: &Spanned<f64>, what: &str) -> Result<f64, SuiteError> {
        self.check(
            v,
            |x| x.is_finite() && *x > 0.0,
            |x| format!("{what} must be a positive number, found {x}"),
        )?;
        Ok(v.value)
    }

    pub fn fraction(
        &self,
        v: &Option<Spanned<f64>>,
        what: &str,
        default: f64,
        upper_inclusive: bool,
    ) -> Result<f64, SuiteError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let bound = if upper_inclusive { "[0, 1]" } else { "[0, 1)" };
                self.check(
                    s,
                    |x| *x >= 0.0 && if upper_inclusive { *x <= 1.0 } else { *x < 1.0 },
                    |x| format!("{what} must be in {bound}, found {x}"),
                )?;
                Ok(s.value)
            }
        }
    }

    pub fn optimizer(&self, o: &RawOptimizer) -> Result<Optimizer, SuiteError> {
        let lr = self.positive(&o.lr, "lr")?;
        let kind = o.kind.value;
        let allowed: &[&str] = match kind {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Momentum | OptimizerKind::Nesterov => &["momentum"],
            OptimizerKind::Rmsprop => &["alpha", "eps"],
            OptimizerKind::Adam => &["beta1", "beta2", "eps"],
        };
        for (name, v) in [
            ("momentum", &o.momentum),
            ("alpha", &o.alpha),
            ("beta1", &o.beta1),
            ("beta2", &o.beta2),
            ("eps", &o.eps),
        ] {
            if let Some(s) = v {
                if !allowed.contains(&name) {
                    let valid = if allowed.is_empty() {
                        "only lr".to_string()
                    } else {
                        format!("lr, {}", allowed.join(", "))
                    };
                    return Err(self.at(
                        s.referenced,
                        format!(
                            "`{name}` does not apply to the {kind:?} optimizer (it takes {valid})"
                        )
                        .to_lowercase(),
                    ));
                }
            }
        }
        let eps = match &o.eps {
            Some(e) => self.positive(e, "eps")?,
            None => defaults::EPS,
        };
        let rule = match kind {
            OptimizerKind::Sgd => Rule::Sgd,
            OptimizerKind::Momentum => Rule::Momentum {
                momentum: self.fraction(&o.momentum, "momentum", defaults::MOMENTUM, false)?,
            },
            OptimizerKind::Nesterov => Rule::Nesterov {
                momentum: self.fraction(&o.momentum, "momentum", defaults::MOMENTUM, false)?,
            },
            OptimizerKind::Rmsprop => Rule::Rmsprop {
                alpha: self.fraction(&o.alpha, "alpha", defaults::ALPHA, false)?,
                eps,
            },
            OptimizerKind::Adam => Rule::Adam {
                beta1: self.fraction(&o.beta1, "beta1", defaults::BETA1, false)?,
                beta2: self.fraction(&o.beta2, "beta2", defaults::BETA2, false)?,
                eps,
            },
        };
        Ok(Optimizer::new(rule, lr))
    }

    pub fn data(&self, d: RawData, at: Location) -> Result<DataSpec, SuiteError> {
        let count = |v: &Option<Spanned<usize>>, what: &str| -> Result<Option<usize>, SuiteError> {
            match v {
                None => Ok(None),
                Some(s) => {
                    self.check(s, |n| *n > 0, |_| format!("data.{what} must be at least 1"))?;
                    Ok(Some(s.value))
                }
            }
        };
        let train = count(&d.train, "train")?;
        let test = count(&d.test, "test")?;
        let needs_path = matches!(d.source, DataSource::Idx | DataSource::Cifar10);
        if needs_path && d.path.is_none() {
            return Err(self.at(
                at,
                format!("data source {:?} needs `path`, the directory holding its files", d.source)
                    .to_lowercase(),
            ));
        }
        let synthetic = d.source == DataSource::Synthetic;
        if !synthetic {
            if let Some(s) = &d.image {
                return Err(self.at(
                    s.referenced,
                    "`image` applies to synthetic data only: files carry their own image shape",
                ));
            }
        }
        let image = match d.image {
            Some(s) => {
                self.check(
                    &s,
                    |v| v.iter().all(|&x| x > 0),
                    |v| format!("image sides must be positive, found {v:?}"),
                )?;
                s.value
            }
            None if d.source == DataSource::Cifar10 => [3, 32, 32],
            None => [1, 28, 28],
        };
        let classes = match d.classes {
            Some(s) => {
                self.check(
                    &s,
                    |c| *c >= 2,
                    |c| format!("a classifier needs at least 2 classes, found {c}"),
                )?;
                s.value
            }
            None => 10,
        };
        if synthetic && train.is_none() {
            return Err(self.at(
                at,
                "synthetic data needs `train`, the number of training examples to generate",
            ));
        }
        Ok(DataSpec {
            source: d.source,
            path: d.path,
            train,
            test,
            image,
            classes,
            normalize: d.normalize.unwrap_or(true),
        })
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
                            variant: variant.clone(),
                            backend,
                        });
                    }
                }
            }
        }
        cells
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name() == name)
    }
}
