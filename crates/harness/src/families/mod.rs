//! Workload families. A family is a module that declares, behind [`WorkloadFamily`], its suite
//! schema, the variants a workload expands into, how it runs one cell on any [`Backend`], its
//! typed metrics and its tables. The `families!` line at the end of this file registers each
//! one; adding a family is its module plus that line.

pub mod l2l;
pub mod randomization;
pub mod randweights;
pub mod surfaces;
mod training;

use crate::cell::{CellResult, Observer, Status};
use crate::executor::CellJob;
use crate::report::{Chart, Table};
use crate::suite::{Ctx, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::stats::{Better, Verdict};
use randbench_core::units::Seconds;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_saphyr::Location;
use std::fmt::{Debug, Display};

/// What every validated workload tells the harness, whatever its family.
pub trait WorkloadSpec {
    fn name(&self) -> &str;
    /// Wall-clock limit of one cell.
    fn timeout(&self) -> Option<Seconds>;
    /// Where the workload is written in its suite file (line, column), for later errors.
    fn location(&self) -> (u64, u64);
}

/// Why a workload's inputs do not do: the pre-flight's error, before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Data(#[from] randbench_core::data::DataError),
    /// The data load but do not fit the workload (batch, model, test set).
    #[error("{0}")]
    Mismatch(String),
}

/// Measurements every family's cell fills in as it goes, next to its own metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub status: Status,
    pub compile_seconds: Option<Seconds>,
    pub first_step_seconds: Option<Seconds>,
    pub step_losses: Vec<f32>,
    pub diverged_at: Option<usize>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            status: Status::Error,
            compile_seconds: None,
            first_step_seconds: None,
            step_losses: vec![],
            diverged_at: None,
        }
    }
}

/// What a figure says about: the engine's speed, or the experiment's scientific outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureKind {
    Speed,
    Outcome,
}

/// A figure a family's cells report, that comparisons and the history track.
#[derive(Debug, PartialEq)]
pub struct MeasureSpec {
    /// Its name in suites (`compare: thresholds:`), comparisons and the history.
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub kind: MeasureKind,
    /// The smallest change (0.05: 5%) that counts, unless the suite sets another.
    pub threshold: f64,
}

impl MeasureKind {
    /// A verdict in a figure's words: faster/slower for speed, better/worse for outcomes.
    pub fn verdict_words(self, v: Verdict) -> &'static str {
        match (v, self) {
            (Verdict::Improved, MeasureKind::Speed) => "faster",
            (Verdict::Regressed, MeasureKind::Speed) => "slower",
            (Verdict::Improved, MeasureKind::Outcome) => "better",
            (Verdict::Regressed, MeasureKind::Outcome) => "worse",
            (Verdict::Unchanged, _) => "unchanged",
            (Verdict::TooNoisy, _) => "too noisy to tell",
        }
    }
}

/// Mean loss and accuracy of parameters over a data set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// None where the loss was not finite (JSON has no NaN).
    pub loss: Option<f64>,
    pub accuracy: f64,
}

/// Steps run before the clock starts, on a throwaway copy of the state: the first runs pay
/// for lazy library loading, first-run planning and allocator growth. The same count on every
/// engine and family (and in the PyTorch peer).
pub const WARMUP_STEPS: usize = 5;

/// Timed training steps per second (the median over every timed step): families that train
/// share it, so that the history and comparisons read it alike.
pub const STEPS_PER_SECOND: MeasureSpec = MeasureSpec {
    name: "steps_per_second",
    unit: "steps/s",
    better: Better::Higher,
    kind: MeasureKind::Speed,
    threshold: 0.05,
};

/// One figure of one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub spec: &'static MeasureSpec,
    pub value: f64,
}

impl Measured {
    /// The figures a cell has, of those it might: a family's `measures` in one line.
    pub fn present(
        figures: impl IntoIterator<Item = (&'static MeasureSpec, Option<f64>)>,
    ) -> Vec<Measured> {
        figures
            .into_iter()
            .filter_map(|(spec, v)| v.map(|value| Measured { spec, value }))
            .collect()
    }
}

/// One cell of a family, ready to run: its workload, the data loaded for it, seed, variant.
pub struct Job<'a, F: WorkloadFamily + ?Sized> {
    pub suite: &'a str,
    pub workload: &'a F::Workload,
    pub data: &'a F::Data,
    pub seed: u64,
    pub variant: &'a F::Variant,
    /// Where the cell may write files of its own; none in tests.
    pub artifacts: Option<&'a std::path::Path>,
}

/// One result of a family, with its variant and metrics typed.
pub struct Entry<'a, F: WorkloadFamily + ?Sized> {
    pub result: &'a CellResult,
    pub variant: &'a F::Variant,
    pub metrics: &'a F::Metrics,
}

impl<F: WorkloadFamily + ?Sized> Clone for Entry<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: WorkloadFamily + ?Sized> Copy for Entry<'_, F> {}

pub trait WorkloadFamily {
    /// The key that names the family in suites, e.g. `randomization`.
    const KEY: &'static str;
    /// One line for `randbench list`.
    const ABOUT: &'static str;
    /// The workload as written in a suite (serde-saphyr, with locations).
    type Raw: DeserializeOwned;
    /// The workload validated.
    type Workload: WorkloadSpec + Clone + Debug + PartialEq;
    /// What varies between a workload's cells, besides seed and backend.
    type Variant: Clone + Debug + PartialEq + Display + Serialize + DeserializeOwned;
    /// What one cell measures.
    type Metrics: Clone + Debug + PartialEq + Serialize + DeserializeOwned;
    /// Inputs loaded once, before any cell runs (so that bad data stops a run before it starts).
    type Data;

    /// Checks a workload; errors name the place in the file (`index`: its position in the suite).
    fn validate(
        cx: &Ctx,
        raw: Self::Raw,
        index: usize,
        at: Location,
    ) -> Result<Self::Workload, SuiteError>;
    /// Loads and checks the workload's inputs: the pre-flight, and each child process again.
    fn prepare(w: &Self::Workload) -> Result<Self::Data, PrepareError>;
    fn variants(w: &Self::Workload) -> Vec<Self::Variant>;
    /// Runs one cell; `record` takes the measurements common to every family.
    fn run<B: Backend>(
        b: &B,
        job: &Job<Self>,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<Self::Metrics>;
    /// The metrics of a cell that measured nothing (its backend did not open, it crashed):
    /// the set-up, so that tables still say what was meant to run.
    fn unmeasured(job: &Job<Self>) -> Self::Metrics;
    /// The comparison tables of one workload's results.
    fn tables(results: &[Entry<Self>]) -> Vec<Table>;
    /// The charts of one workload's results, for the HTML report.
    fn charts(results: &[Entry<Self>]) -> Vec<Chart>;
    /// One line about a finished cell, for the progress output.
    fn headline(result: &CellResult, metrics: &Self::Metrics) -> String;
    /// Every figure the family's cells may report.
    const MEASURES: &'static [MeasureSpec];
    /// The figures one cell measured (those it has: a cell that never fitted has no time to fit).
    fn measures(metrics: &Self::Metrics) -> Vec<Measured>;
}

/// Generates the enums over every family and their dispatch; one line per family.
macro_rules! families {
    ($($variant:ident => $module:ident),* $(,)?) => {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub(crate) enum RawWorkload {
            $($variant(Box<<$module::Family as WorkloadFamily>::Raw>),)*
        }

        #[derive(Clone, Debug, PartialEq)]
        pub enum Workload {
            $($variant(<$module::Family as WorkloadFamily>::Workload),)*
        }

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Variant {
            $($variant(<$module::Family as WorkloadFamily>::Variant),)*
        }

        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Metrics {
            $($variant(<$module::Family as WorkloadFamily>::Metrics),)*
        }

        /// A workload's inputs, loaded by the pre-flight.
        pub enum Data {
            $($variant(<$module::Family as WorkloadFamily>::Data),)*
        }

        /// (key, description) of every family, for `randbench list`.
        pub const FAMILIES: &[(&str, &str)] = &[
            $((<$module::Family as WorkloadFamily>::KEY, <$module::Family as WorkloadFamily>::ABOUT),)*
        ];

        impl RawWorkload {
            pub(crate) fn validate(self, cx: &Ctx, index: usize, at: Location) -> Result<Workload, SuiteError> {
                match self {
                    $(RawWorkload::$variant(r) => {
                        <$module::Family as WorkloadFamily>::validate(cx, *r, index, at).map(Workload::$variant)
                    })*
                }
            }
        }

        impl Workload {
            fn spec(&self) -> &dyn WorkloadSpec {
                match self {
                    $(Workload::$variant(w) => w,)*
                }
            }

            pub fn prepare(&self) -> Result<Data, PrepareError> {
                match self {
                    $(Workload::$variant(w) => <$module::Family as WorkloadFamily>::prepare(w).map(Data::$variant),)*
                }
            }

            pub fn variants(&self) -> Vec<Variant> {
                match self {
                    $(Workload::$variant(w) => <$module::Family as WorkloadFamily>::variants(w)
                        .into_iter()
                        .map(Variant::$variant)
                        .collect(),)*
                }
            }
        }

        impl Display for Variant {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $(Variant::$variant(v) => Display::fmt(v, f),)*
                }
            }
        }

        /// Runs the cell `job` on `b`; `None` when its variant or data belong to another
        /// family than its workload (a caller's mistake).
        pub fn run_cell<B: Backend>(
            b: &B,
            job: &CellJob,
            record: &mut Record,
            obs: &mut dyn Observer,
        ) -> Option<BResult<Metrics>> {
            #[allow(unreachable_patterns)]
            match (job.workload, job.data, &job.cell.variant) {
                $((Workload::$variant(w), Data::$variant(d), Variant::$variant(v)) => {
                    let job = Job { suite: &job.suite.name, workload: w, data: d, seed: job.cell.seed, variant: v, artifacts: job.artifacts };
                    Some(<$module::Family as WorkloadFamily>::run(b, &job, record, obs).map(Metrics::$variant))
                })*
                _ => None,
            }
        }

        /// The metrics of the cell `job` when it measured nothing; `None` on mismatched families.
        pub fn unmeasured(job: &CellJob) -> Option<Metrics> {
            #[allow(unreachable_patterns)]
            match (job.workload, job.data, &job.cell.variant) {
                $((Workload::$variant(w), Data::$variant(d), Variant::$variant(v)) => {
                    let job = Job { suite: &job.suite.name, workload: w, data: d, seed: job.cell.seed, variant: v, artifacts: job.artifacts };
                    Some(Metrics::$variant(<$module::Family as WorkloadFamily>::unmeasured(&job)))
                })*
                _ => None,
            }
        }

        /// The family tables and charts of one workload's results (all of one family).
        pub fn presentation(results: &[&CellResult]) -> (Vec<Table>, Vec<Chart>) {
            let mut out = (Vec::new(), Vec::new());
            $(
                let mine: Vec<Entry<$module::Family>> = results
                    .iter()
                    .filter_map(|r| match (&r.cell.variant, &r.metrics) {
                        (Variant::$variant(variant), Metrics::$variant(metrics)) => {
                            Some(Entry { result: *r, variant, metrics })
                        }
                        #[allow(unreachable_patterns)]
                        _ => None,
                    })
                    .collect();
                if !mine.is_empty() {
                    out.0.extend(<$module::Family as WorkloadFamily>::tables(&mine));
                    out.1.extend(<$module::Family as WorkloadFamily>::charts(&mine));
                }
            )*
            out
        }

        /// Every figure any family reports, each name once (families share some).
        pub fn all_measures() -> impl Iterator<Item = &'static MeasureSpec> {
            let mut seen: Vec<&'static str> = Vec::new();
            [$(<$module::Family as WorkloadFamily>::MEASURES,)*]
                .into_iter()
                .flatten()
                .filter(move |m| {
                    let new = !seen.contains(&m.name);
                    seen.push(m.name);
                    new
                })
        }

        /// Every figure the family of a cell may report.
        pub fn family_measures(r: &CellResult) -> &'static [MeasureSpec] {
            match &r.metrics {
                $(Metrics::$variant(_) => <$module::Family as WorkloadFamily>::MEASURES,)*
            }
        }

        /// The figures a cell measured.
        pub fn measures(r: &CellResult) -> Vec<Measured> {
            match &r.metrics {
                $(Metrics::$variant(m) => <$module::Family as WorkloadFamily>::measures(m),)*
            }
        }

        /// One line about a finished cell.
        pub fn headline(r: &CellResult) -> String {
            match &r.metrics {
                $(Metrics::$variant(m) => <$module::Family as WorkloadFamily>::headline(r, m),)*
            }
        }
    };
}

/// The figure of that name, in any family.
pub fn measure_named(name: &str) -> Option<&'static MeasureSpec> {
    all_measures().find(|m| m.name == name)
}

impl Workload {
    pub fn name(&self) -> &str {
        self.spec().name()
    }

    pub fn timeout(&self) -> Option<Seconds> {
        self.spec().timeout()
    }

    /// "file:line:column" of the workload in its suite.
    pub fn at(&self, suite: &std::path::Path) -> String {
        let (line, column) = self.spec().location();
        format!("{}:{line}:{column}", suite.display())
    }
}

families! {
    Randomization => randomization,
    LearnedOptimizer => l2l,
    LossSurface => surfaces,
    RandomWeights => randweights,
}
