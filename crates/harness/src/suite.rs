//! Suites: YAML files naming workloads, their parameters, the backends to run on, seeds and
//! budgets. Parsed with serde-saphyr (maintained, panic-free, and its errors carry line and
//! column); every mistake becomes one line `file:line:column: what is wrong, what is valid`.

use crate::backends::{self, Availability};
use randbench_core::corrupt::Condition;
use randbench_core::models::{Activation, CnnSpec};
use randbench_core::optim::{Optimizer, Rule};
use randbench_core::units::Seconds;
use randbench_core::{BackendId, GradMode};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
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
    workloads: Spanned<Vec<Spanned<RawWorkload>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawWorkload {
    Randomization(Box<RawRandomization>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandomization {
    name: Option<String>,
    data: Spanned<RawData>,
    model: Spanned<RawModel>,
    optimizer: RawOptimizer,
    batch: Spanned<usize>,
    conditions: Spanned<Vec<Spanned<Condition>>>,
    regularizers: Option<Vec<Spanned<RawRegularizer>>>,
    max_epochs: Spanned<usize>,
    target_accuracy: Option<Spanned<f64>>,
    lr_decay: Option<Spanned<f64>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    source: DataSource,
    path: Option<PathBuf>,
    train: Option<Spanned<usize>>,
    test: Option<Spanned<usize>>,
    image: Option<Spanned<[usize; 3]>>,
    classes: Option<Spanned<usize>>,
    normalize: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawModel {
    Mlp { hidden: Spanned<Vec<usize>>, activation: Option<Activation> },
    Cnn(CnnSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptimizer {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegularizer {
    weight_decay: Option<Spanned<f64>>,
    dropout: Option<Spanned<f64>>,
    augment: Option<Spanned<usize>>,
}

// ---- the validated suite ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// Generated from the seed; needs no file.
    Synthetic,
    /// Debian's dataset-fashion-mnist (or `path`, an MNIST-layout directory).
    FashionMnist,
    /// Any MNIST-layout directory of IDX files (`path`).
    Idx,
    /// The CIFAR-10 binary distribution's directory (`path`).
    Cifar10,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: DataSource,
    pub path: Option<PathBuf>,
    /// Training examples to use (the first n); all when None.
    pub train: Option<usize>,
    pub test: Option<usize>,
    /// Image shape of synthetic data.
    pub image: [usize; 3],
    pub classes: usize,
    /// Standardize pixels with the full training set's per-channel mean and deviation.
    pub normalize: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    Mlp { hidden: Vec<usize>, activation: Activation },
    Cnn(CnnSpec),
}

impl ModelSpec {
    pub fn model(&self, input: [usize; 3], classes: usize) -> randbench_core::models::Model {
        match self {
            ModelSpec::Mlp { hidden, activation } => {
                randbench_core::models::Model::mlp(input, hidden, classes, *activation)
            }
            ModelSpec::Cnn(spec) => {
                randbench_core::models::Model::Cnn { input, spec: spec.clone(), classes }
            }
        }
    }

    /// A short name such as `mlp-784-512-10` or `cnn-16-32-128`.
    pub fn name(&self, input: [usize; 3], classes: usize) -> String {
        match self {
            ModelSpec::Mlp { hidden, activation } => {
                let mut parts = vec![format!("{}", input.iter().product::<usize>())];
                parts.extend(hidden.iter().map(|h| h.to_string()));
                parts.push(classes.to_string());
                let act = if *activation == Activation::Relu {
                    String::new()
                } else {
                    format!("-{activation:?}").to_lowercase()
                };
                format!("mlp-{}{act}", parts.join("-"))
            }
            ModelSpec::Cnn(s) => {
                let ch: Vec<String> = s.channels.iter().map(|c| c.to_string()).collect();
                format!("cnn-{}-{}", ch.join("-"), s.hidden)
            }
        }
    }
}

/// Explicit regularization for one run of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Regularizer {
    pub weight_decay: f64,
    pub dropout: f64,
    /// Random translation by up to this many pixels (random crops of a padded image).
    pub augment: usize,
}

impl Regularizer {
    pub fn is_none(&self) -> bool {
        *self == Regularizer::default()
    }

    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.weight_decay != 0.0 {
            parts.push(format!("wd {}", self.weight_decay));
        }
        if self.dropout != 0.0 {
            parts.push(format!("dropout {}", self.dropout));
        }
        if self.augment != 0 {
            parts.push(format!("augment {}px", self.augment));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Randomization {
    pub name: String,
    pub data: DataSpec,
    pub model: ModelSpec,
    /// Without weight decay: that is a regularizer.
    pub optimizer: Optimizer,
    pub batch: usize,
    pub conditions: Vec<Condition>,
    pub regularizers: Vec<Regularizer>,
    pub max_epochs: usize,
    pub target_accuracy: f64,
    /// Learning-rate factor per epoch (1 keeps it constant).
    pub lr_decay: f64,
    /// Wall-clock limit of one cell.
    pub timeout: Option<Seconds>,
    /// Where the workload is written in its file, for errors found later.
    pub location: (u64, u64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Randomization(Randomization),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Randomization(r) => &r.name,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// As listed in the file; None means every backend usable here.
    pub backends: Option<Vec<BackendId>>,
    pub seeds: Vec<u64>,
    pub grad: GradMode,
    pub workloads: Vec<Workload>,
}

/// The workload kinds suites can name.
pub const WORKLOADS: &[(&str, &str)] = &[(
    "randomization",
    "Zhang et al. (ICLR 2017): fit true, corrupted and random labels, shuffled and random pixels, Gaussian inputs",
)];

struct Ctx<'a> {
    path: &'a str,
}

impl Ctx<'_> {
    fn at(&self, loc: Location, message: impl Into<String>) -> SuiteError {
        SuiteError::At {
            path: self.path.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }

    fn check<T>(
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
    cx.check(&raw.workloads, |w| !w.is_empty(), |_| "the suite names no workload".into())?;
    let workloads = raw
        .workloads
        .value
        .into_iter()
        .enumerate()
        .map(|(i, w)| match w.value {
            RawWorkload::Randomization(r) => {
                randomization(&cx, *r, i, w.referenced).map(Workload::Randomization)
            }
        })
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
        grad: raw.grad.unwrap_or_default(),
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

fn positive(cx: &Ctx, v: &Spanned<f64>, what: &str) -> Result<f64, SuiteError> {
    cx.check(
        v,
        |x| x.is_finite() && *x > 0.0,
        |x| format!("{what} must be a positive number, found {x}"),
    )?;
    Ok(v.value)
}

fn fraction(
    cx: &Ctx,
    v: &Option<Spanned<f64>>,
    what: &str,
    default: f64,
    upper_inclusive: bool,
) -> Result<f64, SuiteError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let bound = if upper_inclusive { "[0, 1]" } else { "[0, 1)" };
            cx.check(
                s,
                |x| *x >= 0.0 && if upper_inclusive { *x <= 1.0 } else { *x < 1.0 },
                |x| format!("{what} must be in {bound}, found {x}"),
            )?;
            Ok(s.value)
        }
    }
}

fn optimizer(cx: &Ctx, o: &RawOptimizer) -> Result<Optimizer, SuiteError> {
    let lr = positive(cx, &o.lr, "lr")?;
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
                return Err(cx.at(
                    s.referenced,
                    format!("`{name}` does not apply to the {kind:?} optimizer (it takes {valid})")
                        .to_lowercase(),
                ));
            }
        }
    }
    let eps = match &o.eps {
        Some(e) => positive(cx, e, "eps")?,
        None => 1e-8,
    };
    let rule = match kind {
        OptimizerKind::Sgd => Rule::Sgd,
        OptimizerKind::Momentum => {
            Rule::Momentum { momentum: fraction(cx, &o.momentum, "momentum", 0.9, false)? }
        }
        OptimizerKind::Nesterov => {
            Rule::Nesterov { momentum: fraction(cx, &o.momentum, "momentum", 0.9, false)? }
        }
        OptimizerKind::Rmsprop => {
            Rule::Rmsprop { alpha: fraction(cx, &o.alpha, "alpha", 0.99, false)?, eps }
        }
        OptimizerKind::Adam => Rule::Adam {
            beta1: fraction(cx, &o.beta1, "beta1", 0.9, false)?,
            beta2: fraction(cx, &o.beta2, "beta2", 0.999, false)?,
            eps,
        },
    };
    Ok(Optimizer::new(rule, lr))
}

fn data(cx: &Ctx, d: RawData, at: Location) -> Result<DataSpec, SuiteError> {
    let count = |v: &Option<Spanned<usize>>, what: &str| -> Result<Option<usize>, SuiteError> {
        match v {
            None => Ok(None),
            Some(s) => {
                cx.check(s, |n| *n > 0, |_| format!("data.{what} must be at least 1"))?;
                Ok(Some(s.value))
            }
        }
    };
    let train = count(&d.train, "train")?;
    let test = count(&d.test, "test")?;
    let needs_path = matches!(d.source, DataSource::Idx | DataSource::Cifar10);
    if needs_path && d.path.is_none() {
        return Err(cx.at(
            at,
            format!("data source {:?} needs `path`, the directory holding its files", d.source)
                .to_lowercase(),
        ));
    }
    let synthetic = d.source == DataSource::Synthetic;
    if !synthetic {
        if let Some(s) = &d.image {
            return Err(cx.at(
                s.referenced,
                "`image` applies to synthetic data only: files carry their own image shape",
            ));
        }
    }
    let image = match d.image {
        Some(s) => {
            cx.check(
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
            cx.check(
                &s,
                |c| *c >= 2,
                |c| format!("a classifier needs at least 2 classes, found {c}"),
            )?;
            s.value
        }
        None => 10,
    };
    if synthetic && train.is_none() {
        return Err(
            cx.at(at, "synthetic data needs `train`, the number of training examples to generate")
        );
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

fn randomization(
    cx: &Ctx,
    r: RawRandomization,
    index: usize,
    at: Location,
) -> Result<Randomization, SuiteError> {
    let optimizer = optimizer(cx, &r.optimizer)?;
    let data = data(cx, r.data.value, r.data.referenced)?;
    cx.check(&r.batch, |b| *b > 0, |_| "batch must be at least 1".into())?;
    if let Some(n) = data.train {
        cx.check(
            &r.batch,
            |b| *b <= n,
            |b| format!("batch {b} is larger than the {n} training examples"),
        )?;
    }
    cx.check(&r.max_epochs, |e| *e > 0, |_| "max_epochs must be at least 1".into())?;
    cx.check(
        &r.conditions,
        |c| !c.is_empty(),
        |_| {
            "the workload lists no condition: name at least one, e.g. `conditions: [true_labels]`"
                .into()
        },
    )?;
    for c in &r.conditions.value {
        if let Condition::CorruptLabels(p) = c.value {
            if !(0.0..=1.0).contains(&p) {
                return Err(cx.at(
                    c.referenced,
                    format!("corrupt_labels takes a probability in [0, 1], found {p}"),
                ));
            }
        }
    }
    let model_at = r.model.referenced;
    let model = match r.model.value {
        RawModel::Mlp { hidden, activation } => {
            cx.check(
                &hidden,
                |h| h.iter().all(|&w| w > 0),
                |h| format!("hidden layer widths must be positive, found {h:?}"),
            )?;
            ModelSpec::Mlp {
                hidden: hidden.value,
                activation: activation.unwrap_or(Activation::Relu),
            }
        }
        RawModel::Cnn(spec) => {
            if spec.channels.is_empty()
                || spec.channels.contains(&0)
                || spec.kernel % 2 == 0
                || spec.hidden == 0
            {
                return Err(cx.at(model_at, "cnn needs non-empty positive `channels`, an odd `kernel` and a positive `hidden`"));
            }
            ModelSpec::Cnn(spec)
        }
    };
    let mut regularizers = Vec::new();
    for reg in
        r.regularizers.unwrap_or_else(|| vec![Spanned::new(RawRegularizer::default(), at, at)])
    {
        let v = &reg.value;
        let weight_decay = match &v.weight_decay {
            Some(s) => {
                cx.check(
                    s,
                    |x| x.is_finite() && *x >= 0.0,
                    |x| format!("weight_decay must be 0 or positive, found {x}"),
                )?;
                s.value
            }
            None => 0.0,
        };
        let dropout = fraction(cx, &v.dropout, "dropout", 0.0, false)?;
        let augment = match &v.augment {
            Some(s) => {
                cx.check(
                    s,
                    |p| *p <= 8,
                    |p| format!("augment shifts by at most 8 pixels, found {p}"),
                )?;
                s.value
            }
            None => 0,
        };
        regularizers.push(Regularizer { weight_decay, dropout, augment });
    }
    let target_accuracy = fraction(cx, &r.target_accuracy, "target_accuracy", 1.0, true)?;
    let lr_decay = match &r.lr_decay {
        Some(s) => {
            cx.check(
                s,
                |x| *x > 0.0 && *x <= 1.0,
                |x| format!("lr_decay is a factor per epoch in (0, 1], found {x}"),
            )?;
            s.value
        }
        None => 1.0,
    };
    let timeout = match &r.timeout {
        Some(s) => Some(Seconds(positive(cx, s, "timeout")?)),
        None => None,
    };
    let name = r.name.unwrap_or_else(|| {
        if index == 0 {
            "randomization".into()
        } else {
            format!("randomization-{index}")
        }
    });
    Ok(Randomization {
        name,
        data,
        model,
        optimizer,
        batch: r.batch.value,
        conditions: r.conditions.value.into_iter().map(|c| c.value).collect(),
        regularizers,
        max_epochs: r.max_epochs.value,
        target_accuracy,
        lr_decay,
        timeout,
        location: (at.line(), at.column()),
    })
}
