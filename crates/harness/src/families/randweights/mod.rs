//! Random-weight networks (He, Wang and Hopcroft, arXiv 1606.04801): a convolutional network
//! with random, untrained weights keeps enough of an image in its feature maps to rebuild it.
//! Reconstruct test images from their feature maps after each block by gradient descent on the
//! input (the engine computes the gradient with respect to the image), with the random weights
//! and with the same network trained end to end; and train a linear classifier on the random
//! network's features alone, against the network trained end to end.

mod run;
mod tables;

use super::randomization::{ModelSpec, RawModel};
use super::{Entry, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRandomWeights {
    name: Option<String>,
    data: Spanned<RawData>,
    model: Spanned<RawModel>,
    images: Option<Spanned<usize>>,
    reconstruction: Option<Spanned<RawReconstruction>>,
    training: RawTraining,
    probe: Option<Spanned<RawProbe>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconstruction {
    steps: usize,
    lr: f64,
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
struct RawProbe {
    epochs: usize,
    lr: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RandomWeights {
    pub name: String,
    pub data: DataSpec,
    /// A CNN: its blocks' feature maps are what images are rebuilt from.
    pub model: ModelSpec,
    /// Test images reconstructed (the first ones), all at once.
    pub images: usize,
    /// Adam steps on the image, and their learning rate.
    pub steps: usize,
    pub lr: f64,
    /// End-to-end training of the same network, for the trained weights.
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: Optimizer,
    /// The linear classifier on the random features: Adam epochs and rate.
    pub probe_epochs: usize,
    pub probe_lr: f64,
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl WorkloadSpec for RandomWeights {
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

/// One cell reconstructs with both weights: the trained ones come from the same cell.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant;

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reconstruct")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weights {
    Random,
    Trained,
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Weights::Random => "random",
            Weights::Trained => "trained",
        })
    }
}

/// The images rebuilt from the feature maps after `depth` blocks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    pub weights: Weights,
    pub depth: usize,
    /// Feature loss (mean squared difference of the maps) of the starting noise and of the
    /// last step's image; `None` where not finite.
    pub start_loss: Option<f64>,
    pub end_loss: Option<f64>,
    /// Mean squared pixel error against the originals, and the PSNR it gives (dB); NaN where
    /// the reconstruction diverged.
    #[serde(with = "randbench_schema::real")]
    pub mse: f64,
    #[serde(with = "randbench_schema::real")]
    pub psnr: f64,
    /// All steps of this reconstruction (every image at once).
    pub seconds: Seconds,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub model: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub images: usize,
    pub steps: usize,
    pub reconstructions: Vec<Reconstruction>,
    /// Test accuracy of the network as initialized, after end-to-end training, and of a
    /// linear classifier trained on the random network's last feature maps.
    pub untrained_test_accuracy: Option<f64>,
    pub trained_test_accuracy: Option<f64>,
    pub probe_test_accuracy: Option<f64>,
    pub probe_features: usize,
    /// PNG files in the run directory, one per image: the original, then its reconstruction
    /// from each depth, random weights above, trained below.
    pub pictures: Vec<String>,
    pub train_seconds: Seconds,
    pub steps_per_second: Option<Summary>,
}

impl Metrics {
    /// Seconds per reconstruction, the median over weights and depths.
    pub fn seconds_per_reconstruction(&self) -> Option<f64> {
        randbench_core::stats::median(
            &self.reconstructions.iter().map(|r| r.seconds.0).collect::<Vec<_>>(),
        )
    }
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "random_weights";
    const ABOUT: &'static str = "He et al. (2016): rebuild images from a random CNN's feature \
                                 maps, against trained weights; a linear classifier on random \
                                 features";
    type Raw = RawRandomWeights;
    type Workload = RandomWeights;
    type Variant = Variant;
    type Metrics = Metrics;
    type Data = Split;

    fn validate(
        cx: &Ctx,
        r: RawRandomWeights,
        index: usize,
        at: Location,
    ) -> Result<RandomWeights, SuiteError> {
        let data = cx.data(r.data.value, r.data.referenced)?;
        let model_at = r.model.referenced;
        let model = ModelSpec::validate(cx, r.model)?;
        if !matches!(model, ModelSpec::Cnn(_)) {
            return Err(cx.at(
                model_at,
                "random_weights rebuilds images from a CNN's feature maps: give `model: {cnn: \
                 {...}}`",
            ));
        }
        let images = match &r.images {
            Some(s) => {
                cx.check(s, |n| (1..=64).contains(n), |n| format!("images: 1 to 64, found {n}"))?;
                s.value
            }
            None => 4,
        };
        let (steps, lr) = match &r.reconstruction {
            Some(s) => {
                let v = &s.value;
                if v.steps == 0 || !(v.lr.is_finite() && v.lr > 0.0) {
                    return Err(cx.at(
                        s.referenced,
                        "reconstruction needs steps ≥ 1 and a positive lr, e.g. {steps: 200, \
                         lr: 0.05}",
                    ));
                }
                (v.steps, v.lr)
            }
            None => (200, 0.05),
        };
        let t = &r.training;
        cx.check(&t.epochs, |e| *e > 0, |_| "training.epochs must be at least 1".into())?;
        cx.check(&t.batch, |b| *b > 0, |_| "training.batch must be at least 1".into())?;
        let optimizer = cx.optimizer(&t.optimizer)?;
        let (probe_epochs, probe_lr) = match &r.probe {
            Some(s) => {
                let v = &s.value;
                if v.epochs == 0 || !(v.lr.is_finite() && v.lr > 0.0) {
                    return Err(cx.at(
                        s.referenced,
                        "probe needs epochs ≥ 1 and a positive lr, e.g. {epochs: 10, lr: 0.01}",
                    ));
                }
                (v.epochs, v.lr)
            }
            None => (10, 0.01),
        };
        Ok(RandomWeights {
            name: Ctx::workload_name(r.name, "random_weights", index),
            data,
            model,
            images,
            steps,
            lr,
            epochs: t.epochs.value,
            batch: t.batch.value,
            optimizer,
            probe_epochs,
            probe_lr,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &RandomWeights) -> Result<Split, PrepareError> {
        let split = w.model.prepare_images(&w.data, w.batch)?;
        if split.test.len() < w.images {
            return Err(PrepareError::Mismatch(format!(
                "{} images to rebuild, but the test set has {}",
                w.images,
                split.test.len()
            )));
        }
        Ok(split)
    }

    fn variants(_: &RandomWeights) -> Vec<Variant> {
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
            train_examples: train.len(),
            test_examples: job.data.test.len(),
            images: w.images,
            steps: w.steps,
            reconstructions: vec![],
            untrained_test_accuracy: None,
            trained_test_accuracy: None,
            probe_test_accuracy: None,
            probe_features: 0,
            pictures: vec![],
            train_seconds: Seconds(0.0),
            steps_per_second: None,
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

    const MEASURES: &'static [Measure] =
        &[STEPS_PER_SECOND, SECONDS_PER_RECONSTRUCTION, PROBE_TEST_ACCURACY];

    fn measures(m: &Metrics) -> Vec<Figure> {
        Figure::present([
            (&STEPS_PER_SECOND, m.steps_per_second.map(|s| s.median)),
            (&SECONDS_PER_RECONSTRUCTION, m.seconds_per_reconstruction()),
            (&PROBE_TEST_ACCURACY, m.probe_test_accuracy),
        ])
    }
}

const SECONDS_PER_RECONSTRUCTION: Measure = Measure::new(
    "seconds_per_reconstruction",
    "s/reconstruction",
    Better::Lower,
    MeasureKind::Speed,
    0.05,
);
/// Seeded: the same every run; a change is a change of the computation.
const PROBE_TEST_ACCURACY: Measure =
    Measure::new("probe_test_accuracy", "", Better::Higher, MeasureKind::Outcome, 0.02);
