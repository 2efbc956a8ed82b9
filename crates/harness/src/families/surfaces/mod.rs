//! Loss surfaces of different optimizers (Im, Tao and Branson, arXiv 1612.04010): from one
//! initial point, train the same network with each optimizer for the same budget, and with one
//! optimizer switched for another part-way; then walk the straight line between end points,
//! θ(α) = (1−α)·θ_a + α·θ_b, and measure loss and accuracy along it. A barrier on the line says
//! the two ended in different minima; the paper finds that each optimizer ends in minima of
//! its own kind, that a late switch still ends where the second optimizer would, and that
//! the different minima generalize alike. The cost is mostly forward passes, run as programs
//! that evaluate every point of a line at once.

mod charts;
mod run;
mod tables;

use super::randomization::{ModelSpec, RawModel};
use super::{Entry, Fit, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
use crate::datasets::{DataSpec, RawData};
use crate::report::{Chart, Table};
use crate::spec::{Ctx, RawOptimizer, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::data::Split;
use randbench_core::optim::Optimizer;
use randbench_core::stats::{Better, Summary};
use randbench_core::units::Seconds;
use randbench_schema::{CellResult, Figure, Measure, MeasureKind, Observer, STEPS_PER_SECOND};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;

pub struct Family;

// ---- the workload as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLossSurface {
    name: Option<String>,
    data: Spanned<RawData>,
    model: Spanned<RawModel>,
    batch: Spanned<usize>,
    epochs: Spanned<usize>,
    optimizers: Spanned<Vec<RawOptimizer>>,
    switches: Option<Vec<Spanned<RawSwitch>>>,
    interpolation: Option<Spanned<RawGrid>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    from: String,
    to: String,
    at: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    from: f64,
    to: f64,
    points: usize,
}

// ---- validated ----

/// Training with optimizer `from` up to the fraction `at` of the budget, then with `to`
/// (its state fresh) for the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switch {
    /// Indices into the workload's optimizers.
    pub from: usize,
    pub to: usize,
    pub at: f64,
}

impl Switch {
    /// The step at which the switch happens, of `steps`.
    pub fn step(&self, steps: usize) -> usize {
        ((self.at * steps as f64).round() as usize).min(steps)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LossSurface {
    pub name: String,
    pub data: DataSpec,
    pub model: ModelSpec,
    pub batch: usize,
    pub epochs: usize,
    /// Named by their kind, each kind once.
    pub optimizers: Vec<Optimizer>,
    pub switches: Vec<Switch>,
    /// The α of every point on a line.
    pub grid: Vec<f64>,
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl LossSurface {
    /// An end point's name: the optimizer's, or `sgd→adam@50%` for a switch.
    pub fn switch_name(&self, s: &Switch) -> String {
        format!(
            "{}→{}@{}%",
            self.optimizers[s.from].name(),
            self.optimizers[s.to].name(),
            (100.0 * s.at).round()
        )
    }
}

impl WorkloadSpec for LossSurface {
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

/// One cell runs the whole experiment on its engine: the lines need every end point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant;

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("optimizers")
    }
}

/// Where one training run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    /// The step at which its loss stopped being finite; it then has no fits and no lines.
    pub diverged_at: Option<usize>,
    pub train: Option<Fit>,
    pub test: Option<Fit>,
}

/// The straight line between two end points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub a: String,
    pub b: String,
    /// Euclidean distance between the two parameter vectors (not finite where a run's last
    /// update blew its weights up).
    #[serde(with = "randbench_schema::real")]
    pub distance: f64,
    pub alphas: Vec<f64>,
    pub train: Vec<Fit>,
    pub test: Vec<Fit>,
    /// The highest loss on the segment between the two (α in [0, 1], ends included) minus
    /// the higher end's: 0 when the loss never rises above the ends.
    pub train_barrier: Option<f64>,
    pub test_barrier: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub model: String,
    pub batch: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Steps of every training run (the budget).
    pub steps: usize,
    pub endpoints: Vec<Endpoint>,
    pub lines: Vec<Line>,
    /// Timed training steps of every run.
    pub train_seconds: Seconds,
    pub steps_per_second: Option<Summary>,
    /// Evaluating every line: its points times the training and test examples.
    pub line_seconds: Seconds,
    pub line_examples_per_second: Option<f64>,
}

impl Metrics {
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "loss_surface";
    const ABOUT: &'static str = "Im et al. (2016): one initial point, five optimizers and \
                                 switches between them; loss along the lines between end points";
    type Raw = RawLossSurface;
    type Workload = LossSurface;
    type Variant = Variant;
    type Metrics = Metrics;
    type Data = Split;

    fn validate(
        cx: &Ctx,
        r: RawLossSurface,
        index: usize,
        at: Location,
    ) -> Result<LossSurface, SuiteError> {
        let data = cx.data(r.data.value, r.data.referenced)?;
        let model = ModelSpec::validate(cx, r.model)?;
        cx.check(&r.batch, |b| *b > 0, |_| "batch must be at least 1".into())?;
        if let Some(n) = data.train {
            cx.check(
                &r.batch,
                |b| *b <= n,
                |b| format!("batch {b} is larger than the {n} training examples"),
            )?;
        }
        cx.check(&r.epochs, |e| *e > 0, |_| "epochs must be at least 1".into())?;
        cx.check(
            &r.optimizers,
            |o| o.len() >= 2,
            |_| "give at least two optimizers: the lines join their end points".into(),
        )?;
        let mut optimizers: Vec<Optimizer> = Vec::new();
        for o in &r.optimizers.value {
            let opt = cx.optimizer(o)?;
            if optimizers.iter().any(|p| p.name() == opt.name()) {
                return Err(cx.at(
                    r.optimizers.referenced,
                    format!("{} is listed twice: each kind of optimizer once", opt.name()),
                ));
            }
            optimizers.push(opt);
        }
        let names: Vec<&str> = optimizers.iter().map(|o| o.name()).collect();
        let mut switches = Vec::new();
        for s in r.switches.unwrap_or_default() {
            let index_of = |name: &str| {
                names.iter().position(|n| *n == name).ok_or_else(|| {
                    cx.at(
                        s.referenced,
                        format!(
                            "switch names {name}, not one of the optimizers: {}",
                            names.join(", ")
                        ),
                    )
                })
            };
            let (from, to) = (index_of(&s.value.from)?, index_of(&s.value.to)?);
            if from == to {
                return Err(cx.at(s.referenced, "a switch goes from one optimizer to another"));
            }
            if s.value.at.is_empty() {
                return Err(
                    cx.at(s.referenced, "`at` lists no fraction: e.g. at: [0.25, 0.5, 0.9]")
                );
            }
            for &f in &s.value.at {
                if !(f > 0.0 && f < 1.0) {
                    return Err(cx.at(
                        s.referenced,
                        format!("switch fractions are in (0, 1), of the budget; found {f}"),
                    ));
                }
                switches.push(Switch { from, to, at: f });
            }
        }
        let grid = match r.interpolation {
            None => grid(-0.5, 1.5, 21),
            Some(g) => {
                let v = &g.value;
                if !(v.from.is_finite() && v.to.is_finite() && v.from < v.to && v.points >= 2) {
                    return Err(cx.at(
                        g.referenced,
                        "interpolation needs from < to and at least 2 points, e.g. {from: -0.5, \
                         to: 1.5, points: 21}",
                    ));
                }
                if v.points > 64 {
                    return Err(cx.at(
                        g.referenced,
                        format!("interpolation: at most 64 points a line (one program holds them all), found {}", v.points),
                    ));
                }
                grid(v.from, v.to, v.points)
            }
        };
        Ok(LossSurface {
            name: Ctx::workload_name(r.name, "loss_surface", index),
            data,
            model,
            batch: r.batch.value,
            epochs: r.epochs.value,
            optimizers,
            switches,
            grid,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &LossSurface) -> Result<Split, PrepareError> {
        w.model.prepare_images(&w.data, w.batch)
    }

    fn variants(_: &LossSurface) -> Vec<Variant> {
        vec![Variant]
    }

    fn run<B: Backend>(
        b: &B,
        job: &Job<Self>,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<Metrics> {
        run::run(b, job, record, obs)
    }

    fn unmeasured(job: &Job<Self>) -> Metrics {
        let (w, train) = (job.workload, &job.data.train);
        Metrics {
            model: w.model.name(train.shape, train.classes),
            batch: w.batch,
            train_examples: train.len(),
            test_examples: job.data.test.len(),
            steps: w.epochs * train.len().div_ceil(w.batch),
            endpoints: vec![],
            lines: vec![],
            train_seconds: Seconds(0.0),
            steps_per_second: None,
            line_seconds: Seconds(0.0),
            line_examples_per_second: None,
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

    const MEASURES: &'static [Measure] = &[STEPS_PER_SECOND, LINE_EXAMPLES_PER_SECOND];

    fn measures(m: &Metrics) -> Vec<Figure> {
        Figure::present([
            (&STEPS_PER_SECOND, m.steps_per_second.map(|s| s.median)),
            (&LINE_EXAMPLES_PER_SECOND, m.line_examples_per_second),
        ])
    }
}

/// `points` evenly spaced values from `from` to `to`, both included.
pub fn grid(from: f64, to: f64, points: usize) -> Vec<f64> {
    (0..points).map(|i| from + (to - from) * i as f64 / (points - 1) as f64).collect()
}

const LINE_EXAMPLES_PER_SECOND: Measure = Measure::new(
    "line_examples_per_second",
    "examples/s",
    Better::Higher,
    MeasureKind::Speed,
    0.05,
);
