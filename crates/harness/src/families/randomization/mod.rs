//! The randomization test (Zhang et al., ICLR 2017): train until the training set is fitted (or
//! the budget ends) under true labels, corrupted or random labels, shuffled or random pixels
//! and Gaussian inputs, with and without explicit regularizers; measure the time it took and
//! what the model learned.

mod charts;
mod tables;
mod train;

use super::{Entry, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
use crate::datasets::{load_data, DataSpec, RawData};
use crate::report::{Chart, Table};
use crate::spec::{Ctx, RawOptimizer, SuiteError};
use randbench_core::backend::{BResult, Backend};
use randbench_core::corrupt::Condition;
use randbench_core::data::Split;
use randbench_core::models::{Activation, CnnSpec, Model};
use randbench_core::optim::Optimizer;
use randbench_core::stats::{Better, Summary};
use randbench_core::train::{eval_graph, Feed};
use randbench_core::units::Seconds;
use randbench_schema::{CellResult, Figure, Measure, MeasureKind, Observer, STEPS_PER_SECOND};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;

/// The family's marker type.
pub struct Family;

// ---- the workload as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRandomization {
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
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawModel {
    Mlp { hidden: Spanned<Vec<usize>>, activation: Option<Activation> },
    Cnn(CnnSpec),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRegularizer {
    weight_decay: Option<Spanned<f64>>,
    dropout: Option<Spanned<f64>>,
    augment: Option<Spanned<usize>>,
}

// ---- validated ----

#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    Mlp { hidden: Vec<usize>, activation: Activation },
    Cnn(CnnSpec),
}

impl ModelSpec {
    /// Checks a model as written: positive widths; for a CNN, an odd kernel.
    pub(crate) fn validate(cx: &Ctx, raw: Spanned<RawModel>) -> Result<ModelSpec, SuiteError> {
        let model_at = raw.referenced;
        Ok(match raw.value {
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
                    return Err(cx.at(
                        model_at,
                        "cnn needs non-empty positive `channels`, an odd `kernel` and a \
                         positive `hidden`",
                    ));
                }
                ModelSpec::Cnn(spec)
            }
        })
    }

    pub fn model(&self, input: [usize; 3], classes: usize) -> Model {
        match self {
            ModelSpec::Mlp { hidden, activation } => {
                Model::mlp(input, hidden, classes, *activation)
            }
            ModelSpec::Cnn(spec) => Model::Cnn { input, spec: spec.clone(), classes },
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
}

impl fmt::Display for Regularizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" + "))
        }
    }
}

impl ModelSpec {
    /// Loads a workload's images and checks them against its batch and model before anything
    /// runs: a batch larger than the training set, an empty test set, or a model too deep for
    /// the images fail here, not in every cell.
    pub(crate) fn prepare_images(
        &self,
        data: &DataSpec,
        batch: usize,
    ) -> Result<Split, PrepareError> {
        let split = load_data(data)?;
        if batch > split.train.len() {
            return Err(PrepareError::Mismatch(format!(
                "batch {batch} is larger than the {} training examples",
                split.train.len()
            )));
        }
        if split.test.is_empty() {
            return Err(PrepareError::Mismatch(
                "the test set is empty: give `data.test` of at least 1, or data with a test \
                 split"
                    .into(),
            ));
        }
        let model = self.model(split.train.shape, split.train.classes);
        eval_graph(&model, 1, Feed::Batch).map_err(|e| {
            PrepareError::Mismatch(format!(
                "the model does not fit {:?} images: {e}",
                split.train.shape
            ))
        })?;
        Ok(split)
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
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl WorkloadSpec for Randomization {
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

/// A condition of the randomization test under one regularizer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub condition: Condition,
    pub regularizer: Regularizer,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.regularizer.is_none() {
            write!(f, "{}", self.condition)
        } else {
            write!(f, "{} [{}]", self.condition, self.regularizer)
        }
    }
}

/// Training loss and accuracy after one epoch (accuracy over the whole training set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// None where the loss was not finite (JSON has no NaN).
    pub train_loss: Option<f64>,
    pub train_accuracy: f64,
    /// Training time so far (timed steps only).
    pub seconds: Seconds,
}

/// What one cell of the randomization test measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub model: String,
    pub batch: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    /// With the regularizer's weight decay.
    pub optimizer: Optimizer,
    pub epochs: usize,
    pub steps: usize,
    pub epochs_to_fit: Option<usize>,
    pub steps_to_fit: Option<usize>,
    pub seconds_to_fit: Option<Seconds>,
    /// All timed training steps (no set-up, no warm-up, no evaluation).
    pub train_seconds: Seconds,
    pub train_accuracy: Option<f64>,
    /// None also where the loss was not finite (JSON has no NaN).
    pub train_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    /// Over every timed step (warm-up ran before the clock, on a throwaway state).
    pub steps_per_second: Option<Summary>,
    pub examples_per_second: Option<Summary>,
    pub history: Vec<EpochRecord>,
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "randomization";
    const ABOUT: &'static str = "Zhang et al. (ICLR 2017): fit true, corrupted and random labels, \
                                 shuffled and random pixels, Gaussian inputs";
    type Raw = RawRandomization;
    type Workload = Randomization;
    type Variant = Variant;
    type Metrics = Metrics;
    type Data = Split;

    fn validate(
        cx: &Ctx,
        r: RawRandomization,
        index: usize,
        at: Location,
    ) -> Result<Randomization, SuiteError> {
        let optimizer = cx.optimizer(&r.optimizer)?;
        let data = cx.data(r.data.value, r.data.referenced)?;
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
                "the workload lists no condition: name at least one, e.g. \
                 `conditions: [true_labels]`"
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
        let model = ModelSpec::validate(cx, r.model)?;
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
            let dropout = cx.fraction(&v.dropout, "dropout", 0.0, false)?;
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
        let target_accuracy = cx.fraction(&r.target_accuracy, "target_accuracy", 1.0, true)?;
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
        Ok(Randomization {
            name: Ctx::workload_name(r.name, "randomization", index),
            data,
            model,
            optimizer,
            batch: r.batch.value,
            conditions: r.conditions.value.into_iter().map(|c| c.value).collect(),
            regularizers,
            max_epochs: r.max_epochs.value,
            target_accuracy,
            lr_decay,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &Randomization) -> Result<Split, PrepareError> {
        w.model.prepare_images(&w.data, w.batch)
    }

    fn variants(w: &Randomization) -> Vec<Variant> {
        w.conditions
            .iter()
            .flat_map(|&condition| {
                w.regularizers.iter().map(move |&regularizer| Variant { condition, regularizer })
            })
            .collect()
    }

    fn run<B: Backend>(
        b: &B,
        job: &Job<Self>,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<Metrics> {
        train::run(b, job, record, obs)
    }

    fn unmeasured(job: &Job<Self>) -> Metrics {
        let (w, train) = (job.workload, &job.data.train);
        let mut optimizer = w.optimizer;
        optimizer.weight_decay = job.variant.regularizer.weight_decay;
        Metrics {
            model: w.model.name(train.shape, train.classes),
            batch: w.batch,
            train_examples: train.len(),
            test_examples: job.data.test.len(),
            optimizer,
            epochs: 0,
            steps: 0,
            epochs_to_fit: None,
            steps_to_fit: None,
            seconds_to_fit: None,
            train_seconds: Seconds(0.0),
            train_accuracy: None,
            train_loss: None,
            test_accuracy: None,
            test_loss: None,
            steps_per_second: None,
            examples_per_second: None,
            history: vec![],
        }
    }

    fn tables(results: &[Entry<Self>]) -> Vec<Table> {
        vec![tables::comparison(results)]
    }

    fn charts(results: &[Entry<Self>]) -> Vec<Chart> {
        charts::all(results)
    }

    fn headline(result: &CellResult, metrics: &Metrics) -> String {
        tables::headline(result, metrics)
    }

    const MEASURES: &'static [Measure] =
        &[STEPS_PER_SECOND, SECONDS_TO_FIT, EPOCHS_TO_FIT, TEST_ACCURACY];

    fn measures(m: &Metrics) -> Vec<Figure> {
        Figure::present([
            (&STEPS_PER_SECOND, m.steps_per_second.map(|s| s.median)),
            (&SECONDS_TO_FIT, m.seconds_to_fit.map(|s| s.0)),
            (&EPOCHS_TO_FIT, m.epochs_to_fit.map(|e| e as f64)),
            (&TEST_ACCURACY, m.test_accuracy),
        ])
    }
}

const SECONDS_TO_FIT: Measure =
    Measure::new("seconds_to_fit", "s", Better::Lower, MeasureKind::Speed, 0.05);
/// Seeded cells fit in the same epoch run after run; a change is a change of the computation.
const EPOCHS_TO_FIT: Measure =
    Measure::new("epochs_to_fit", "epochs", Better::Lower, MeasureKind::Outcome, 0.10);
const TEST_ACCURACY: Measure =
    Measure::new("test_accuracy", "", Better::Higher, MeasureKind::Outcome, 0.02);
