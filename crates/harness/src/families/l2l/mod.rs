//! Learned optimizers (Andrychowicz et al., NIPS 2016): meta-train a coordinatewise LSTM
//! optimizer by truncated backpropagation through unrolled optimization, then compare it on
//! held-out problems with SGD, Nesterov momentum, RMSprop and Adam at their tuned rates.
//!
//! One cell is one meta-training run (workload × seed × backend): it tunes the baselines,
//! meta-trains with periodic validation (the best checkpoint is kept), saves the optimizer's
//! weights, and evaluates everything on the same held-out problems.

mod charts;
mod meta;
mod tables;
pub mod weights;

use super::{Entry, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
use crate::datasets::{load_data, DataSpec, RawData};
use crate::report::{Chart, Table};
use crate::spec::{Ctx, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::data::Split;
use randbench_core::l2l::{Distribution, LstmOptimizer, Preprocess};
use randbench_core::models::Activation;
use randbench_core::optim::{defaults, Rule};
use randbench_core::stats::{Better, Summary};
use randbench_core::units::{Bytes, Seconds};
use randbench_schema::{CellResult, Figure, Measure, MeasureKind, Observer};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;
use std::path::PathBuf;

/// The family's marker type.
pub struct Family;

// ---- the workload as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLearnedOptimizer {
    name: Option<String>,
    problem: Spanned<RawProblem>,
    optimizer: Option<LstmOptimizer>,
    meta: Spanned<RawMeta>,
    evaluation: Option<RawEvaluation>,
    baselines: Option<RawBaselines>,
    variants: Option<Vec<Spanned<RawVariant>>>,
    memory_unrolls: Option<Spanned<Vec<usize>>>,
    /// Evaluate this saved optimizer instead of meta-training one.
    load: Option<Spanned<PathBuf>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawProblem {
    Quadratic {
        functions: Option<Spanned<usize>>,
        dim: Option<Spanned<usize>>,
        distribution: Option<Distribution>,
    },
    Mlp(Box<RawMlp>),
    Simple {},
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMlp {
    data: Spanned<RawData>,
    hidden: Option<Spanned<Vec<usize>>>,
    activation: Option<Activation>,
    batch: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    epochs: Spanned<usize>,
    horizon: Option<Spanned<usize>>,
    unroll: Option<Spanned<usize>>,
    lr: Option<Spanned<f64>>,
    eval_every: Option<Spanned<usize>>,
    validation_problems: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvaluation {
    problems: Option<Spanned<usize>>,
    steps: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaselines {
    rules: Option<Vec<BaselineRule>>,
    lrs: Option<Spanned<Vec<f64>>>,
    tuning_problems: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: String,
    steps: Option<Spanned<usize>>,
    hidden: Option<Spanned<Vec<usize>>>,
    activation: Option<Activation>,
}

// ---- validated ----

/// A hand-designed optimizer the learned one is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineRule {
    Sgd,
    Nesterov,
    Rmsprop,
    Adam,
}

impl BaselineRule {
    pub const ALL: [BaselineRule; 4] =
        [BaselineRule::Sgd, BaselineRule::Nesterov, BaselineRule::Rmsprop, BaselineRule::Adam];

    /// torch.optim's rule with its default hyperparameters (Nesterov momentum 0.9).
    pub fn rule(self) -> Rule {
        match self {
            BaselineRule::Sgd => Rule::Sgd,
            BaselineRule::Nesterov => Rule::Nesterov { momentum: defaults::MOMENTUM },
            BaselineRule::Rmsprop => Rule::Rmsprop { alpha: defaults::ALPHA, eps: defaults::EPS },
            BaselineRule::Adam => {
                Rule::Adam { beta1: defaults::BETA1, beta2: defaults::BETA2, eps: defaults::EPS }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BaselineRule::Sgd => "sgd",
            BaselineRule::Nesterov => "nesterov",
            BaselineRule::Rmsprop => "rmsprop",
            BaselineRule::Adam => "adam",
        }
    }
}

/// The optimizee, before the data set is known.
#[derive(Clone, Debug, PartialEq)]
pub enum ProblemSpec {
    Quadratic { functions: usize, dim: usize, distribution: Distribution },
    Mlp { data: DataSpec, hidden: Vec<usize>, activation: Activation, batch: usize },
    Simple,
}

impl ProblemSpec {
    pub fn describe(&self) -> String {
        match self {
            ProblemSpec::Quadratic { functions, dim, distribution } => {
                format!("{functions} quadratics of dimension {dim}, W and y {distribution:?}")
                    .to_lowercase()
            }
            ProblemSpec::Mlp { data, hidden, activation, batch } => format!(
                "mlp {:?} {} on {:?}, batch {batch}",
                hidden,
                format!("{activation:?}").to_lowercase(),
                data.source
            )
            .to_lowercase(),
            ProblemSpec::Simple => "f(x) = x², x₀ = 1".into(),
        }
    }
}

/// A problem the learned optimizer is evaluated on besides the one it was trained on (the
/// paper's generalization figures): more steps, a wider or deeper network, another activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemVariant {
    pub name: String,
    pub steps: usize,
    /// For the MLP problem: its hidden layers and activation here.
    pub hidden: Option<Vec<usize>>,
    pub activation: Option<Activation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetaSpec {
    pub epochs: usize,
    /// Optimizee steps per problem; the LSTM state and θ start afresh for each problem.
    pub horizon: usize,
    /// Steps per truncation (one program: the unroll, its outer gradient, the Adam step).
    pub unroll: usize,
    pub lr: f64,
    /// Validation every this many epochs (and after the last).
    pub eval_every: usize,
    pub validation_problems: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LearnedOptimizerWorkload {
    pub name: String,
    pub problem: ProblemSpec,
    pub optimizer: LstmOptimizer,
    pub meta: MetaSpec,
    /// Held-out problems and their steps.
    pub eval_problems: usize,
    pub eval_steps: usize,
    pub baselines: Vec<BaselineRule>,
    pub lrs: Vec<f64>,
    pub tuning_problems: usize,
    /// The first is the training problem itself, at `eval_steps`.
    pub variants: Vec<ProblemVariant>,
    pub memory_unrolls: Vec<usize>,
    pub load: Option<PathBuf>,
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl WorkloadSpec for LearnedOptimizerWorkload {
    fn name(&self) -> &str {
        &self.name
    }
    fn timeout(&self) -> Option<Seconds> {
        self.timeout
    }
    fn location(&self) -> (u64, u64) {
        self.location
    }
}

/// 1 down to 1e-5 in half-decades: the baselines' learning-rate grid.
pub fn default_lrs() -> Vec<f64> {
    (0..=10).map(|k| 10f64.powf(-(k as f64) / 2.0)).collect()
}

/// A learned-optimizer cell has no variant besides its workload: one meta-training run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant;

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("meta-training")
    }
}

/// A baseline's tuned rate: the grid's rate with the lowest mean last-step loss on the tuning
/// problems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    pub rule: BaselineRule,
    pub lr: f64,
    /// Mean last-step loss on the tuning problems for each rate of the grid (None: diverged).
    pub grid: Vec<(f64, Option<f64>)>,
}

/// The learned optimizer's name among the curves.
pub const LEARNED: &str = "learned";

/// Mean and normal 95% interval of the loss at every step over the held-out problems (None
/// at steps where some problem's loss was not finite: JSON has no NaN).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// [`LEARNED`] or a baseline's name.
    pub optimizer: String,
    pub lr: Option<f64>,
    pub mean: Vec<Option<f64>>,
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
    /// The last step's loss of each held-out problem, in problem order (for paired tests).
    pub last: Vec<Option<f64>>,
}

impl Curve {
    /// The mean loss at the last step.
    pub fn final_mean(&self) -> Option<f64> {
        self.mean.last().copied().flatten()
    }

    /// Every problem's last-step loss, where all are finite.
    pub fn finite_last(&self) -> Option<Vec<f64>> {
        self.last.iter().copied().collect()
    }
}

/// A ratio with its paired bootstrap 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    #[serde(with = "randbench_schema::real")]
    pub estimate: f64,
    #[serde(with = "randbench_schema::real")]
    pub lo: f64,
    #[serde(with = "randbench_schema::real")]
    pub hi: f64,
}

/// Held-out results on one problem (the training problem or a variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub problem: String,
    pub steps: usize,
    pub problems: usize,
    pub curves: Vec<Curve>,
    /// Mean last-step loss of the learned optimizer over tuned Adam's, paired bootstrap.
    pub ratio_to_adam: Option<Ratio>,
    /// The baselines tuned for this problem and number of steps.
    pub tuned: Vec<Tuned>,
}

/// One validation of the learned optimizer during meta-training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub epoch: usize,
    /// Meta-training time so far (timed unrolls only).
    pub seconds: Seconds,
    /// Mean last-step loss over the validation problems (None: not finite).
    pub loss: Option<f64>,
}

/// When meta-training first beat tuned Adam on the validation problems.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    pub epoch: usize,
    pub seconds: Seconds,
}

/// What one meta-training cell measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub problem: String,
    pub coordinates: usize,
    pub optimizer: LstmOptimizer,
    pub unroll: usize,
    pub horizon: usize,
    pub epochs: usize,
    /// Timed unrolls (each with its outer gradient and Adam step); warm-up is not timed.
    pub meta_seconds: Seconds,
    pub unrolls_per_second: Option<Summary>,
    pub coordinate_steps_per_second: Option<Summary>,
    /// Memory that compiling and running one unroll program of each length takes (on a GPU
    /// the process's peak device memory, on the CPU the growth of the resident set).
    pub memory_by_unroll: Vec<(usize, Option<Bytes>)>,
    pub validations: Vec<Validation>,
    /// Tuned Adam's mean last-step loss on the validation problems.
    pub adam_validation_loss: Option<f64>,
    pub time_to_beat_adam: Option<Beat>,
    pub best_epoch: Option<usize>,
    /// The baselines tuned for the problem meta-training sees (validation compares with Adam).
    pub tuned: Vec<Tuned>,
    pub evaluations: Vec<Evaluation>,
    /// Where the learned optimizer's weights were saved (safetensors).
    pub weights: Option<PathBuf>,
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "learned_optimizer";
    const ABOUT: &'static str = "Andrychowicz et al. (NIPS 2016): meta-train an LSTM optimizer, \
                                 compare it with tuned SGD, Nesterov, RMSprop and Adam";
    type Raw = RawLearnedOptimizer;
    type Workload = LearnedOptimizerWorkload;
    type Variant = Variant;
    type Metrics = Metrics;
    /// The MLP problem's images; nothing for the others.
    type Data = Option<Split>;

    fn validate(
        cx: &Ctx,
        r: RawLearnedOptimizer,
        index: usize,
        at: Location,
    ) -> Result<LearnedOptimizerWorkload, SuiteError> {
        let count = |v: &Option<Spanned<usize>>, what: &str, default: usize| match v {
            None => Ok(default),
            Some(s) => {
                cx.check(s, |n| *n > 0, |_| format!("{what} must be at least 1"))?;
                Ok(s.value)
            }
        };
        let widths = |h: &Spanned<Vec<usize>>| {
            cx.check(
                h,
                |h| !h.is_empty() && h.iter().all(|&w| w > 0),
                |h| format!("hidden layer widths must be positive, found {h:?}"),
            )
            .map(|_| h.value.clone())
        };
        let problem = match r.problem.value {
            RawProblem::Quadratic { functions, dim, distribution } => ProblemSpec::Quadratic {
                functions: count(&functions, "functions", 128)?,
                dim: count(&dim, "dim", 10)?,
                distribution: distribution.unwrap_or_default(),
            },
            RawProblem::Mlp(mlp) => {
                let RawMlp { data, hidden, activation, batch } = *mlp;
                let mut spec = cx.data(data.value, data.referenced)?;
                // The authors' MNIST optimizee sees pixels in [0, 1].
                spec.normalize = false;
                ProblemSpec::Mlp {
                    data: spec,
                    hidden: match &hidden {
                        Some(h) => widths(h)?,
                        None => vec![20],
                    },
                    activation: activation.unwrap_or(Activation::Sigmoid),
                    batch: count(&batch, "batch", 128)?,
                }
            }
            RawProblem::Simple {} => ProblemSpec::Simple,
        };
        let optimizer = r.optimizer.unwrap_or_default();
        if optimizer.hidden == 0 && optimizer.layers > 0 {
            return Err(cx.at(at, "optimizer.hidden must be at least 1 when it has LSTM layers"));
        }
        if let Preprocess::LogSign { p } = optimizer.preprocess {
            if !(p.is_finite() && p > 0.0) {
                return Err(cx.at(at, format!("preprocess log_sign needs p > 0, found {p}")));
            }
        }
        let m = &r.meta.value;
        cx.check(&m.epochs, |e| *e > 0, |_| "meta.epochs must be at least 1".into())?;
        let horizon = count(&m.horizon, "meta.horizon", 100)?;
        let unroll = count(&m.unroll, "meta.unroll", 20)?;
        if let Some(u) = &m.unroll {
            cx.check(
                u,
                |u| horizon % u == 0,
                |u| format!("meta.unroll {u} must divide meta.horizon {horizon}"),
            )?;
        }
        let lr = match &m.lr {
            Some(s) => cx.positive(s, "meta.lr")?,
            None => 1e-3,
        };
        let meta = MetaSpec {
            epochs: m.epochs.value,
            horizon,
            unroll,
            lr,
            eval_every: count(&m.eval_every, "meta.eval_every", m.epochs.value.div_ceil(10))?,
            validation_problems: count(&m.validation_problems, "meta.validation_problems", 20)?,
        };
        let (eval_problems, eval_steps) = match &r.evaluation {
            Some(e) => (
                count(&e.problems, "evaluation.problems", 100)?,
                count(&e.steps, "evaluation.steps", horizon)?,
            ),
            None => (100, horizon),
        };
        let (baselines, lrs, tuning_problems) = match r.baselines {
            Some(b) => {
                let lrs = match &b.lrs {
                    Some(l) => {
                        cx.check(
                            l,
                            |v| !v.is_empty() && v.iter().all(|x| x.is_finite() && *x > 0.0),
                            |v| format!("baselines.lrs must be positive rates, found {v:?}"),
                        )?;
                        l.value.clone()
                    }
                    None => default_lrs(),
                };
                (
                    b.rules.unwrap_or_else(|| BaselineRule::ALL.to_vec()),
                    lrs,
                    count(&b.tuning_problems, "baselines.tuning_problems", 10)?,
                )
            }
            None => (BaselineRule::ALL.to_vec(), default_lrs(), 10),
        };
        let is_mlp = matches!(problem, ProblemSpec::Mlp { .. });
        let mut variants = vec![ProblemVariant {
            name: "base".into(),
            steps: eval_steps,
            hidden: None,
            activation: None,
        }];
        for v in r.variants.unwrap_or_default() {
            let (place, v) = (v.referenced, v.value);
            if !is_mlp && (v.hidden.is_some() || v.activation.is_some()) {
                return Err(cx.at(place, "only the mlp problem has `hidden` and `activation`"));
            }
            if variants.iter().any(|x| x.name == v.name) {
                return Err(cx.at(place, format!("two variants are named {}", v.name)));
            }
            variants.push(ProblemVariant {
                name: v.name,
                steps: count(&v.steps, "variant steps", eval_steps)?,
                hidden: match &v.hidden {
                    Some(h) => Some(widths(h)?),
                    None => None,
                },
                activation: v.activation,
            });
        }
        let memory_unrolls = match &r.memory_unrolls {
            Some(s) => {
                cx.check(
                    s,
                    |v| v.iter().all(|&k| k > 0),
                    |v| format!("memory_unrolls must be positive lengths, found {v:?}"),
                )?;
                s.value.clone()
            }
            None => vec![5, 20, 100],
        };
        let load = match r.load {
            Some(p) => {
                let path = p.value.clone();
                if !path.is_file() {
                    return Err(cx.at(
                        p.referenced,
                        format!(
                            "load: {} does not exist (a .safetensors file a run saved)",
                            path.display()
                        ),
                    ));
                }
                Some(path)
            }
            None => None,
        };
        Ok(LearnedOptimizerWorkload {
            name: Ctx::workload_name(r.name, "learned-optimizer", index),
            problem,
            optimizer,
            meta,
            eval_problems,
            eval_steps,
            baselines,
            lrs,
            tuning_problems,
            variants,
            memory_unrolls,
            load,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &LearnedOptimizerWorkload) -> Result<Option<Split>, PrepareError> {
        // A saved optimizer must fit the workload's configuration, whatever the problem.
        if let Some(path) = &w.load {
            weights::load(path, &w.optimizer).map_err(|e| PrepareError::Mismatch(e.to_string()))?;
        }
        // Batches are drawn with replacement: any batch size fits the data.
        let ProblemSpec::Mlp { data, .. } = &w.problem else {
            return Ok(None);
        };
        let split = load_data(data)?;
        if split.train.is_empty() || split.test.is_empty() {
            return Err(PrepareError::Mismatch(
                "the mlp problem draws batches from the training split and evaluates on the \
                 test split: both need examples"
                    .into(),
            ));
        }
        Ok(Some(split))
    }

    fn variants(_: &LearnedOptimizerWorkload) -> Vec<Variant> {
        vec![Variant]
    }

    fn run<B: Backend>(
        b: &B,
        job: &Job<Self>,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<Metrics> {
        meta::run(b, job, record, obs)
    }

    fn unmeasured(job: &Job<Self>) -> Metrics {
        let w = job.workload;
        Metrics {
            problem: w.problem.describe(),
            coordinates: 0,
            optimizer: w.optimizer,
            unroll: w.meta.unroll,
            horizon: w.meta.horizon,
            epochs: 0,
            meta_seconds: Seconds(0.0),
            unrolls_per_second: None,
            coordinate_steps_per_second: None,
            memory_by_unroll: vec![],
            validations: vec![],
            adam_validation_loss: None,
            time_to_beat_adam: None,
            best_epoch: None,
            tuned: vec![],
            evaluations: vec![],
            weights: None,
        }
    }

    fn tables(results: &[Entry<Self>]) -> Vec<Table> {
        tables::all(results)
    }

    fn charts(results: &[Entry<Self>]) -> Vec<Chart> {
        charts::all(results)
    }

    fn headline(result: &CellResult, metrics: &Metrics) -> String {
        tables::headline(result, metrics)
    }

    const MEASURES: &'static [Measure] =
        &[UNROLLS_PER_SECOND, SECONDS_TO_BEAT_ADAM, LEARNED_FINAL_LOSS, RATIO_TO_ADAM];

    fn measures(m: &Metrics) -> Vec<Figure> {
        // The first evaluation is the problem meta-training saw.
        let trained = m.evaluations.first();
        let learned = trained
            .and_then(|e| e.curves.iter().find(|c| c.optimizer == LEARNED))
            .and_then(Curve::final_mean);
        Figure::present([
            (&UNROLLS_PER_SECOND, m.unrolls_per_second.map(|s| s.median)),
            (&SECONDS_TO_BEAT_ADAM, m.time_to_beat_adam.map(|b| b.seconds.0)),
            (&LEARNED_FINAL_LOSS, learned),
            (&RATIO_TO_ADAM, trained.and_then(|e| e.ratio_to_adam).map(|r| r.estimate)),
        ])
    }
}

const UNROLLS_PER_SECOND: Measure =
    Measure::new("unrolls_per_second", "unrolls/s", Better::Higher, MeasureKind::Speed, 0.05);
const SECONDS_TO_BEAT_ADAM: Measure =
    Measure::new("seconds_to_beat_adam", "s", Better::Lower, MeasureKind::Speed, 0.05);
const LEARNED_FINAL_LOSS: Measure =
    Measure::new("learned_final_loss", "", Better::Lower, MeasureKind::Outcome, 0.05);
const RATIO_TO_ADAM: Measure =
    Measure::new("ratio_to_adam", "", Better::Lower, MeasureKind::Outcome, 0.05);
