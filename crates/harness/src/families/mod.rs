//! Workload families. A family is a module that declares, behind [`WorkloadFamily`], its suite
//! schema, the variants a workload expands into, how it runs one cell on any [`Backend`], its
//! typed metrics and its tables. The `families!` line at the end of this file registers each
//! one; adding a family is its module plus that line.

pub mod fewshot;
mod guard;
pub mod l2l;
pub mod nas;
pub mod randomization;
pub mod randweights;
pub mod surfaces;
mod training;

pub use guard::{Guard, Loss};

use crate::report::{Chart, Table};
use crate::spec::{Ctx, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::units::Seconds;
use randbench_schema::results::{Catalogue, UpgradeError};
use randbench_schema::{Cell, CellResult, Figure, Measure, Observer, Status, Tagged};
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

/// One cell of a family, ready to run: its workload, the data loaded for it, seed, variant.
pub struct Job<'a, F: WorkloadFamily + ?Sized> {
    pub suite: &'a str,
    pub workload: &'a F::Workload,
    pub data: &'a F::Data,
    pub seed: u64,
    pub variant: &'a F::Variant,
    /// Where the cell may write files of its own; none in tests.
    pub artifacts: Option<&'a std::path::Path>,
    /// When the cell started: its timeout counts from here in every loop.
    pub started: std::time::Instant,
}

impl<F: WorkloadFamily + ?Sized> Job<'_, F> {
    /// The cell's clock and budget, for its loops.
    pub fn guard(&self) -> Guard {
        Guard::new(self.started, self.workload.timeout())
    }
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
    const MEASURES: &'static [Measure];
    /// The figures one cell measured (those it has: a cell that never fitted has no time to fit).
    fn measures(metrics: &Self::Metrics) -> Vec<Figure>;
}

/// One cell to run, with what the pre-flight prepared for it.
pub struct CellRun<'a> {
    pub suite: &'a str,
    pub workload: &'a Workload,
    pub data: &'a Data,
    pub cell: &'a Cell,
    /// Where a cell may write files of its own (a learned optimizer's weights); none in tests.
    pub artifacts: Option<&'a std::path::Path>,
    /// When the cell started in the process that runs it, before its engine opened.
    pub started: std::time::Instant,
}

/// Why a cell cannot be run or read as its family's: its variant or metrics belong to another
/// family, or do not read as the family's types.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("the cell's variant is of family '{variant}', its workload of another")]
    Family { variant: String },
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

fn typed<T: DeserializeOwned>(t: &Tagged) -> Result<T, UpgradeError> {
    serde_json::from_value(t.value.clone())
        .map_err(|source| UpgradeError::Metrics { family: t.family.clone(), source })
}

fn untyped<T: Serialize>(key: &str, v: &T) -> Result<Tagged, UpgradeError> {
    serde_json::to_value(v)
        .map(|value| Tagged::new(key, value))
        .map_err(|source| UpgradeError::Metrics { family: key.to_string(), source })
}

/// A family's metrics as a line holds them, checked to read back: a value serde_json cannot
/// write (NaN in a field not marked `randbench_schema::real`) would otherwise make the line
/// unreadable.
fn sealed<F: WorkloadFamily>(m: &F::Metrics) -> Result<Tagged, UpgradeError> {
    let t = untyped(F::KEY, m)?;
    typed::<F::Metrics>(&t).map(|_| t)
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

        #[derive(Clone, Debug, PartialEq)]
        pub enum Variant {
            $($variant(<$module::Family as WorkloadFamily>::Variant),)*
        }

        #[derive(Clone, Debug, PartialEq)]
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
            /// The key of the workload's family.
            pub fn family(&self) -> &'static str {
                match self {
                    $(Workload::$variant(_) => <$module::Family as WorkloadFamily>::KEY,)*
                }
            }

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

        impl Variant {
            /// As a result line names it.
            pub fn to_tagged(&self) -> Tagged {
                match self {
                    $(Variant::$variant(v) => untyped(<$module::Family as WorkloadFamily>::KEY, v)
                        .expect("variants hold names and suite values, which serialize"),)*
                }
            }

            /// The typed variant of a line's cell.
            pub fn of(t: &Tagged) -> Result<Variant, UpgradeError> {
                $(if t.family == <$module::Family as WorkloadFamily>::KEY {
                    return typed(t).map(Variant::$variant);
                })*
                Err(UpgradeError::UnknownFamily(t.family.clone()))
            }
        }

        impl Metrics {
            /// The typed metrics of a line.
            pub fn of(r: &CellResult) -> Result<Metrics, UpgradeError> {
                let t = &r.metrics;
                $(if t.family == <$module::Family as WorkloadFamily>::KEY {
                    return typed(t).map(Metrics::$variant);
                })*
                Err(UpgradeError::UnknownFamily(t.family.clone()))
            }

            /// As a result line holds them, with the figures read off them.
            pub fn seal(&self) -> Result<(Tagged, Vec<Figure>), UpgradeError> {
                let tagged = match self {
                    $(Metrics::$variant(m) => sealed::<$module::Family>(m)?,)*
                };
                Ok((tagged, self.figures()))
            }

            /// The figures of these metrics.
            pub fn figures(&self) -> Vec<Figure> {
                match self {
                    $(Metrics::$variant(m) => <$module::Family as WorkloadFamily>::measures(m),)*
                }
            }
        }

        /// Runs the cell `job` on `b`.
        pub fn run_cell<B: Backend>(
            b: &B,
            job: &CellRun,
            record: &mut Record,
            obs: &mut dyn Observer,
        ) -> Result<BResult<Metrics>, Mismatch> {
            let variant = Variant::of(&job.cell.variant)?;
            #[allow(unreachable_patterns)]
            match (job.workload, job.data, &variant) {
                $((Workload::$variant(w), Data::$variant(d), Variant::$variant(v)) => {
                    let job = Job { suite: job.suite, workload: w, data: d, seed: job.cell.seed, variant: v, artifacts: job.artifacts, started: job.started };
                    Ok(<$module::Family as WorkloadFamily>::run(b, &job, record, obs).map(Metrics::$variant))
                })*
                _ => Err(Mismatch::Family { variant: job.cell.variant.family.clone() }),
            }
        }

        /// The metrics of the cell `job` when it measured nothing.
        pub fn unmeasured(job: &CellRun) -> Result<Metrics, Mismatch> {
            let variant = Variant::of(&job.cell.variant)?;
            #[allow(unreachable_patterns)]
            match (job.workload, job.data, &variant) {
                $((Workload::$variant(w), Data::$variant(d), Variant::$variant(v)) => {
                    let job = Job { suite: job.suite, workload: w, data: d, seed: job.cell.seed, variant: v, artifacts: job.artifacts, started: job.started };
                    Ok(Metrics::$variant(<$module::Family as WorkloadFamily>::unmeasured(&job)))
                })*
                _ => Err(Mismatch::Family { variant: job.cell.variant.family.clone() }),
            }
        }

        /// The family tables and charts of one workload's results (all of one family; lines
        /// whose values do not read as the family's are left out).
        pub fn presentation(results: &[&CellResult]) -> (Vec<Table>, Vec<Chart>) {
            let mut out = (Vec::new(), Vec::new());
            $(
                let read: Vec<(&CellResult, <$module::Family as WorkloadFamily>::Variant, <$module::Family as WorkloadFamily>::Metrics)> = results
                    .iter()
                    .filter(|r| r.metrics.family == <$module::Family as WorkloadFamily>::KEY)
                    .filter_map(|r| Some((*r, typed(&r.cell.variant).ok()?, typed(&r.metrics).ok()?)))
                    .collect();
                let mine: Vec<Entry<$module::Family>> = read
                    .iter()
                    .map(|(result, variant, metrics)| Entry { result, variant, metrics })
                    .collect();
                if !mine.is_empty() {
                    out.0.extend(<$module::Family as WorkloadFamily>::tables(&mine));
                    out.1.extend(<$module::Family as WorkloadFamily>::charts(&mine));
                }
            )*
            out
        }

        /// Every figure any family reports, each name once (families share some).
        pub fn all_measures() -> impl Iterator<Item = &'static Measure> {
            let mut seen: Vec<&'static Measure> = Vec::new();
            [$(<$module::Family as WorkloadFamily>::MEASURES,)*]
                .into_iter()
                .flatten()
                .filter(move |m| {
                    let new = !seen.iter().any(|s| s.name == m.name);
                    seen.push(m);
                    new
                })
        }

        /// Every figure the family of that key may report; none for a key this build lacks.
        pub fn family_measures(key: &str) -> &'static [Measure] {
            $(if key == <$module::Family as WorkloadFamily>::KEY {
                return <$module::Family as WorkloadFamily>::MEASURES;
            })*
            &[]
        }

        /// One line about a finished cell.
        pub fn headline(r: &CellResult) -> String {
            match Metrics::of(r) {
                $(Ok(Metrics::$variant(m)) => <$module::Family as WorkloadFamily>::headline(r, &m),)*
                Err(e) => format!("{}: {e}", r.status.label()),
            }
        }
    };
}

/// The figure of that name, in any family.
pub fn measure_named(name: &str) -> Option<&'static Measure> {
    all_measures().find(|m| m.name == name)
}

/// The catalogue of every family in this build: fills in the figures and variant label of
/// lines written before result lines carried them.
pub struct Registry;

impl Catalogue for Registry {
    fn upgrade(&self, r: &mut CellResult) -> Result<(), UpgradeError> {
        if r.schema == 0 {
            r.figures = Metrics::of(r)?.figures();
            r.cell.label = Variant::of(&r.cell.variant)?.to_string();
        }
        Ok(())
    }

    fn measures(&self, family: &str) -> Vec<Measure> {
        family_measures(family).to_vec()
    }
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
    ArchitectureSearch => nas,
    FewShot => fewshot,
}
