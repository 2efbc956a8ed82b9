//! Architecture search (Zoph & Le; Baker et al.'s MetaQNN, ICLR 2017; Real et al.'s
//! regularized evolution, 2019; Li & Talwalkar's random-search baseline, 2019; and MetaQNN's
//! walks without learning, the control that says what Q-learning learned) over a space
//! small enough to evaluate whole, as the tabular benchmarks (NAS-Bench-101/201) do: every
//! architecture is trained once per engine and seed by one recipe and scored on a validation
//! subset (the table), and each strategy then searches the table for many seeds at the cost of
//! lookups. The top architectures found are retrained longer and scored on the test subset.
//!
//! A workload's cells: the table in `parts` parts (each a cell, so a fleet's shards spread
//! them), then the search, which reads the parts from the run's results and trains any row it
//! does not find there itself.

mod run;
mod search;
mod space;
mod tables;

pub use search::{Band, Curve, Settings, Strategy};
pub use space::{Arch, Space};

use super::{Entry, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
use crate::datasets::{load_data, DataSpec, RawData};
use crate::report::{Chart, Table};
use crate::spec::{Ctx, RawOptimizer, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::data::Dataset;
use randbench_core::optim::Optimizer;
use randbench_core::stats::{median, Better};
use randbench_core::train::{eval_graph, Feed};
use randbench_core::units::Seconds;
use randbench_schema::{CellResult, Figure, Measure, MeasureKind, Observer};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;

pub struct Family;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchitectureSearch {
    name: Option<String>,
    data: Spanned<RawData>,
    validation: Spanned<usize>,
    space: Spanned<Space>,
    training: RawTraining,
    search: Spanned<RawSearch>,
    #[serde(rename = "final")]
    retrain: Option<Spanned<RawFinal>>,
    parts: Option<Spanned<usize>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraining {
    epochs: Spanned<usize>,
    batch: Spanned<usize>,
    optimizer: RawOptimizer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    models: usize,
    seeds: Option<usize>,
    population: Option<usize>,
    sample: Option<usize>,
    replay: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    top: usize,
    epochs: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ArchitectureSearch {
    pub name: String,
    /// `train` examples to train on; the validation subset is the next `validation` examples
    /// of the training file; the test subset is the test file's first `test`.
    pub data: DataSpec,
    pub validation: usize,
    pub space: Space,
    /// The recipe every candidate is trained with.
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: Optimizer,
    pub settings: Settings,
    /// Search seeds per strategy.
    pub seeds: usize,
    /// The top architectures found, retrained for `final_epochs` and scored on the test subset.
    pub top: usize,
    pub final_epochs: usize,
    pub parts: usize,
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl WorkloadSpec for ArchitectureSearch {
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

/// The three fixed subsets every candidate sees.
pub struct Subsets {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Rows `i` of the space with `i % parts == part`.
    Table { part: usize, parts: usize },
    /// The strategies over the whole table, and the final retraining.
    Search,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Table { parts: 1, .. } => f.write_str("table"),
            Variant::Table { part, parts } => write!(f, "table {}/{parts}", part + 1),
            Variant::Search => f.write_str("search"),
        }
    }
}

/// One architecture trained by the recipe and scored on the validation subset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub arch: Arch,
    pub params: usize,
    /// None where training diverged.
    pub validation_accuracy: Option<f64>,
    pub steps: usize,
    /// Building the step and evaluation graphs and compiling them on the engine.
    pub compile_seconds: Seconds,
    /// The first training step (lazy set-up inside the engine shows here).
    pub first_step_seconds: Seconds,
    /// Every training step, the first included.
    pub train_seconds: Seconds,
    /// The whole candidate: compilation, uploads, training and evaluation.
    pub seconds: Seconds,
}

impl Row {
    /// What a search scores the row: a diverged candidate scores 0.
    pub fn score(&self) -> f64 {
        self.validation_accuracy.unwrap_or(0.0)
    }
}

/// The row of the highest score, the first of equals (as the search ranks them).
pub fn best<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<&'a Row> {
    rows.fold(None, |b: Option<&Row>, r| match b {
        Some(b) if b.score() >= r.score() => Some(b),
        _ => Some(r),
    })
}

/// An architecture found by the searches, retrained longer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Final {
    pub arch: Arch,
    pub params: usize,
    pub validation_accuracy: f64,
    /// Searches (of every strategy and seed) whose best it was.
    pub found_by: usize,
    pub test_accuracy: Option<f64>,
    pub seconds: Seconds,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    /// Rows read from the run's table cells, and rows this cell trained itself.
    pub rows_read: usize,
    pub rows_trained: usize,
    /// The space's best row by validation accuracy.
    pub best: Arch,
    pub best_validation_accuracy: f64,
    pub models: usize,
    pub seeds: usize,
    /// Engine seconds at which `Curve::by_seconds` is read.
    pub grid: Vec<f64>,
    pub curves: Vec<Curve>,
    pub finals: Vec<Final>,
}

impl SearchOutcome {
    pub fn curve(&self, s: Strategy) -> Option<&Curve> {
        self.curves.iter().find(|c| c.strategy == s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Architectures in the space.
    pub space: usize,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub test_examples: usize,
    /// The rows this cell trained.
    pub rows: Vec<Row>,
    pub search: Option<SearchOutcome>,
}

/// Candidates trained per second of their own time.
pub fn models_per_second(rows: &[&Row]) -> Option<f64> {
    let total: f64 = rows.iter().map(|r| r.seconds.0).sum();
    (total > 0.0).then(|| rows.len() as f64 / total)
}

/// The share of the candidates' time spent outside training steps (compilation, uploads,
/// evaluation).
pub fn outside_steps(rows: &[&Row]) -> Option<f64> {
    let total: f64 = rows.iter().map(|r| r.seconds.0).sum();
    let steps: f64 = rows.iter().map(|r| r.train_seconds.0).sum();
    (total > 0.0).then(|| 1.0 - steps / total)
}

pub fn median_of(rows: &[&Row], f: impl Fn(&Row) -> f64) -> Option<f64> {
    median(&rows.iter().map(|r| f(r)).collect::<Vec<_>>())
}

impl Metrics {
    /// The cell's rows, for the cost figures above.
    pub fn row_refs(&self) -> Vec<&Row> {
        self.rows.iter().collect()
    }

    pub fn best_row(&self) -> Option<&Row> {
        best(self.rows.iter())
    }
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "architecture_search";
    const ABOUT: &'static str = "Architecture search over a tabulated space: random search, \
                                 MetaQNN's Q-learning and regularized evolution; compile and \
                                 set-up cost per new graph";
    type Raw = RawArchitectureSearch;
    type Workload = ArchitectureSearch;
    type Variant = Variant;
    type Metrics = Metrics;
    type Data = Subsets;

    fn validate(
        cx: &Ctx,
        r: RawArchitectureSearch,
        index: usize,
        at: Location,
    ) -> Result<ArchitectureSearch, SuiteError> {
        let data_at = r.data.referenced;
        let data = cx.data(r.data.value, data_at)?;
        if data.train.is_none() {
            return Err(cx.at(
                data_at,
                "architecture_search trains every candidate on one fixed subset: give \
                 `data.train`, e.g. 2000",
            ));
        }
        cx.check(&r.validation, |v| *v > 0, |_| "validation must be at least 1".into())?;
        let space_at = r.space.referenced;
        let space = r.space.value;
        space.check().map_err(|what| cx.at(space_at, what))?;
        let size = space.architectures().len();
        let t = &r.training;
        cx.check(&t.epochs, |e| *e > 0, |_| "training.epochs must be at least 1".into())?;
        cx.check(&t.batch, |b| *b > 0, |_| "training.batch must be at least 1".into())?;
        let optimizer = cx.optimizer(&t.optimizer)?;
        let s = &r.search.value;
        let settings = Settings {
            models: s.models,
            population: s.population.unwrap_or(20),
            sample: s.sample.unwrap_or(5),
            replay: s.replay.unwrap_or(128),
        };
        let seeds = s.seeds.unwrap_or(10);
        if settings.models == 0 || settings.models > size {
            return Err(cx.at(
                r.search.referenced,
                format!(
                    "search.models must be 1 to the space's {size} architectures, found {}",
                    settings.models
                ),
            ));
        }
        if seeds < 2
            || settings.population < 2
            || settings.sample == 0
            || settings.sample > settings.population
        {
            return Err(cx.at(
                r.search.referenced,
                "search needs seeds ≥ 2 (for an interval), population ≥ 2 and 1 ≤ sample ≤ \
                 population, e.g. {models: 60, seeds: 10, population: 20, sample: 5}",
            ));
        }
        let (top, final_epochs) = match &r.retrain {
            Some(f) if f.value.top == 0 || f.value.epochs == 0 => {
                return Err(cx.at(
                    f.referenced,
                    "final needs top ≥ 1 and epochs ≥ 1, e.g. {top: 5, epochs: 10}",
                ))
            }
            Some(f) => (f.value.top, f.value.epochs),
            None => (5, 4 * t.epochs.value),
        };
        let parts = match &r.parts {
            Some(p) => {
                cx.check(
                    p,
                    |n| (1..=size).contains(n),
                    |n| format!("parts: 1 to the space's {size} architectures, found {n}"),
                )?;
                p.value
            }
            None => 1,
        };
        Ok(ArchitectureSearch {
            name: Ctx::workload_name(r.name, Self::KEY, index),
            data,
            validation: r.validation.value,
            space,
            epochs: t.epochs.value,
            batch: t.batch.value,
            optimizer,
            settings,
            seeds,
            top,
            final_epochs,
            parts,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &ArchitectureSearch) -> Result<Subsets, PrepareError> {
        let train = w.data.train.expect("validated: a training subset");
        let mut spec = w.data.clone();
        spec.train = Some(train + w.validation);
        let split = load_data(&spec)?;
        let all = split.train;
        let subsets = Subsets {
            train: all.rows(0..train)?,
            validation: all.rows(train..train + w.validation)?,
            test: split.test,
        };
        if w.batch > train {
            return Err(PrepareError::Mismatch(format!(
                "batch {} is larger than the {train} training examples",
                w.batch
            )));
        }
        if subsets.test.is_empty() {
            return Err(PrepareError::Mismatch(
                "the test subset is empty: give `data.test`".into(),
            ));
        }
        let (shape, classes) = (subsets.train.shape, subsets.train.classes);
        for arch in w.space.architectures() {
            eval_graph(&arch.model(shape, classes), 1, Feed::Batch).map_err(|e| {
                PrepareError::Mismatch(format!("{arch} does not fit {shape:?} images: {e}"))
            })?;
        }
        Ok(subsets)
    }

    fn variants(w: &ArchitectureSearch) -> Vec<Variant> {
        (0..w.parts)
            .map(|part| Variant::Table { part, parts: w.parts })
            .chain([Variant::Search])
            .collect()
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
        let d = job.data;
        Metrics {
            space: job.workload.space.architectures().len(),
            train_examples: d.train.len(),
            validation_examples: d.validation.len(),
            test_examples: d.test.len(),
            rows: vec![],
            search: None,
        }
    }

    fn tables(results: &[Entry<Self>]) -> Vec<Table> {
        tables::all(results)
    }

    fn charts(results: &[Entry<Self>]) -> Vec<Chart> {
        tables::charts(results)
    }

    fn headline(result: &CellResult, metrics: &Metrics) -> String {
        tables::headline(result, metrics)
    }

    const MEASURES: &'static [Measure] = &[
        CANDIDATES_PER_SECOND,
        COMPILE_SECONDS,
        FIRST_STEP_SECONDS,
        OUTSIDE_STEPS,
        BEST_VALIDATION_ACCURACY,
        REGRET_RANDOM,
        REGRET_Q_LEARNING,
        REGRET_WALK,
        REGRET_EVOLUTION,
        FINAL_TEST_ACCURACY,
    ];

    fn measures(m: &Metrics) -> Vec<Figure> {
        let regret = |s: Strategy| {
            m.search
                .as_ref()
                .and_then(|o| o.curve(s))
                .and_then(|c| c.by_models.last())
                .map(|b| b.mean)
        };
        let best_test = m.search.as_ref().and_then(|o| {
            o.finals
                .iter()
                .filter_map(|f| f.test_accuracy)
                .fold(None, |b: Option<f64>, a| Some(b.map_or(a, |b| b.max(a))))
        });
        let table = m.search.is_none();
        let rows = m.row_refs();
        Figure::present([
            (&CANDIDATES_PER_SECOND, models_per_second(&rows).filter(|_| table)),
            (&COMPILE_SECONDS, median_of(&rows, |r| r.compile_seconds.0).filter(|_| table)),
            (&FIRST_STEP_SECONDS, median_of(&rows, |r| r.first_step_seconds.0).filter(|_| table)),
            (&OUTSIDE_STEPS, outside_steps(&rows).filter(|_| table)),
            (&BEST_VALIDATION_ACCURACY, m.best_row().map(Row::score).filter(|_| table)),
            (&REGRET_RANDOM, regret(Strategy::Random)),
            (&REGRET_Q_LEARNING, regret(Strategy::QLearning)),
            (&REGRET_WALK, regret(Strategy::Walk)),
            (&REGRET_EVOLUTION, regret(Strategy::Evolution)),
            (&FINAL_TEST_ACCURACY, best_test),
        ])
    }
}

const CANDIDATES_PER_SECOND: Measure =
    Measure::new("candidates_per_second", "models/s", Better::Higher, MeasureKind::Speed, 0.05);
/// Medians over the cell's candidates: the cost of a new graph.
const COMPILE_SECONDS: Measure =
    Measure::new("compile_seconds_per_model", "s", Better::Lower, MeasureKind::Speed, 0.10);
const FIRST_STEP_SECONDS: Measure =
    Measure::new("first_step_seconds_per_model", "s", Better::Lower, MeasureKind::Speed, 0.10);
const OUTSIDE_STEPS: Measure =
    Measure::new("share_outside_steps", "", Better::Lower, MeasureKind::Speed, 0.05);
/// Seeded: the same every run; a change is a change of the computation.
const BEST_VALIDATION_ACCURACY: Measure =
    Measure::new("best_validation_accuracy", "", Better::Higher, MeasureKind::Outcome, 0.01);
/// Mean regret at the budget over the search seeds.
const REGRET_RANDOM: Measure =
    Measure::new("regret_random", "", Better::Lower, MeasureKind::Outcome, 0.10);
const REGRET_Q_LEARNING: Measure =
    Measure::new("regret_q_learning", "", Better::Lower, MeasureKind::Outcome, 0.10);
const REGRET_WALK: Measure =
    Measure::new("regret_walk", "", Better::Lower, MeasureKind::Outcome, 0.10);
const REGRET_EVOLUTION: Measure =
    Measure::new("regret_evolution", "", Better::Lower, MeasureKind::Outcome, 0.10);
/// The best test accuracy of the retrained top architectures.
const FINAL_TEST_ACCURACY: Measure =
    Measure::new("final_test_accuracy", "", Better::Higher, MeasureKind::Outcome, 0.02);
