//! Few-shot meta-learning on Omniglot after Finn et al. (MAML, ICML 2017) and Ravi & Larochelle
//! (ICLR 2017): the four-block learner's initial parameters meta-trained so that a few
//! gradient steps on an episode's support set classify its queries, second order (through the
//! inner gradients) and first order; or a meta-learner LSTM trained to make the updates. Tested
//! on episodes of alphabets never seen in meta-training, against nearest neighbour in pixel
//! space on the same episodes; and against the baselines of a network pretrained to classify
//! every meta-training class (fine-tuned, or its embedding's nearest neighbour).

mod data;
mod pretrained;
mod run;
mod tables;

pub use data::FewShotData;

use super::{Entry, Job, PrepareError, Record, WorkloadFamily, WorkloadSpec};
use crate::report::{Chart, Table};
use crate::spec::{Ctx, SuiteError};
use data::{FewShotDataSpec, RawFewShotData};
use randbench_core::backend::{BResult, Backend};
use randbench_core::fewshot::{Adaptation, EpisodeShape, Inner, Learner, MetaLearner, Order};
use randbench_core::stats::{Better, Summary};
use randbench_core::units::Seconds;
use randbench_schema::{CellResult, Figure, Measure, MeasureKind, Observer};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use std::fmt;

pub struct Family;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFewShot {
    name: Option<String>,
    data: Spanned<RawFewShotData>,
    episodes: Spanned<Vec<RawEpisode>>,
    query: Option<Spanned<usize>>,
    learner: Option<Spanned<RawLearner>>,
    methods: Spanned<Vec<Method>>,
    inner: Option<Spanned<RawInner>>,
    meta_learner: Option<Spanned<MetaLearner>>,
    meta: Spanned<RawMeta>,
    pretrain: Option<Spanned<RawPretrain>>,
    test_episodes: Option<Spanned<usize>>,
    timeout: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEpisode {
    way: usize,
    shot: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLearner {
    filters: usize,
    blocks: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInner {
    lr: f64,
    steps: usize,
    test_steps: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    steps: usize,
    tasks: usize,
    lr: f64,
    validate_every: usize,
    validation_episodes: usize,
    /// A validation accuracy whose first reaching is timed.
    target: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPretrain {
    epochs: usize,
    batch: usize,
    lr: f64,
    fine_tune_steps: usize,
}

/// The pretrained-network baselines' settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pretrain {
    /// Passes over every meta-training image, classifying all the meta-training classes.
    pub epochs: usize,
    pub batch: usize,
    /// Adam's rate.
    pub lr: f64,
    /// Gradient steps of fine-tuning on an episode's support set.
    pub fine_tune_steps: usize,
}

/// A meta-learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// MAML: the outer gradient goes through the inner updates (second derivatives).
    Maml,
    /// First-order MAML: the inner gradients are constants to the outer one.
    FirstOrderMaml,
    /// Ravi & Larochelle's meta-learner LSTM.
    MetaLearnerLstm,
    /// No meta-learning: the baselines of a network pretrained on the meta-training classes.
    Pretrained,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Maml => "maml",
            Method::FirstOrderMaml => "first-order maml",
            Method::MetaLearnerLstm => "meta-learner lstm",
            Method::Pretrained => "pretrained",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FewShot {
    pub name: String,
    pub data: FewShotDataSpec,
    pub episodes: Vec<(usize, usize)>,
    pub query: usize,
    pub filters: usize,
    pub blocks: usize,
    pub methods: Vec<Method>,
    /// MAML's inner loop in meta-training; at test the same rate for `test_steps` steps.
    pub inner: Adaptation,
    pub test_steps: usize,
    pub meta_learner: MetaLearner,
    pub meta_steps: usize,
    /// Episodes per meta-training step (the meta-batch).
    pub tasks: usize,
    /// Adam's rate on the initial parameters.
    pub meta_lr: f64,
    pub validate_every: usize,
    pub validation_episodes: usize,
    pub target: Option<f64>,
    pub pretrain: Pretrain,
    pub test_episodes: usize,
    pub timeout: Option<Seconds>,
    pub location: (u64, u64),
}

impl FewShot {
    pub fn learner(&self, way: usize) -> Learner {
        Learner { side: self.data.side, filters: self.filters, blocks: self.blocks, way }
    }

    pub fn shape(&self, v: &Variant) -> EpisodeShape {
        EpisodeShape { way: v.way, shot: v.shot, query: self.query }
    }

    /// How a meta-learning `method` adapts in meta-training, and at test; none for
    /// [`Method::Pretrained`], which is not meta-trained.
    pub fn inner(&self, method: Method) -> Option<(Inner, Inner)> {
        let gradient = |order, steps| Inner::Gradient {
            adaptation: Adaptation { lr: self.inner.lr, steps },
            order,
        };
        Some(match method {
            Method::Maml => (
                gradient(Order::Second, self.inner.steps),
                gradient(Order::Second, self.test_steps),
            ),
            Method::FirstOrderMaml => {
                (gradient(Order::First, self.inner.steps), gradient(Order::First, self.test_steps))
            }
            Method::MetaLearnerLstm => {
                (Inner::MetaLearner(self.meta_learner), Inner::MetaLearner(self.meta_learner))
            }
            Method::Pretrained => return None,
        })
    }
}

impl WorkloadSpec for FewShot {
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

/// One method on one episode form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub method: Method,
    pub way: usize,
    pub shot: usize,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-way {}-shot", self.method, self.way, self.shot)
    }
}

/// Mean accuracy over episodes with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub episodes: usize,
}

/// Validation during meta-training: mean accuracy over the validation episodes (the same
/// ones every time) after `step` meta-training steps and `seconds` of them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub step: usize,
    pub seconds: Seconds,
    pub accuracy: f64,
}

/// A baseline of the network pretrained on the meta-training classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Gradient descent on the head alone (from zeros) on the support set.
    FineTuneHead,
    /// Gradient descent on the whole network (the head from zeros).
    FineTuneWhole,
    /// Nearest neighbour in the body's features.
    NearestNeighbourEmbedding,
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Baseline::FineTuneHead => "fine-tune head",
            Baseline::FineTuneWhole => "fine-tune whole",
            Baseline::NearestNeighbourEmbedding => "nearest neighbour (embedding)",
        })
    }
}

/// A baseline on the test episodes; for fine-tuning the rate the validation episodes chose,
/// with its validation accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineScore {
    pub baseline: Baseline,
    pub lr: Option<f64>,
    pub validation: Option<f64>,
    pub test: Accuracy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub learner: String,
    pub query: usize,
    pub tasks: usize,
    /// Meta-training steps run (fewer than asked where the cell stopped early); for
    /// [`Method::Pretrained`] its pretraining steps, and `meta_train_seconds` their time.
    pub meta_steps: usize,
    /// Meta-training episodes per second over the timed steps (tasks per step's time).
    pub episodes_per_second: Option<Summary>,
    pub meta_train_seconds: Seconds,
    pub validations: Vec<Validation>,
    /// Meta-training seconds to the first validation at or above the workload's target.
    pub seconds_to_target: Option<Seconds>,
    /// The method on the test episodes, from the parameters of the best validation.
    pub test: Option<Accuracy>,
    /// Nearest neighbour in pixel space on the same test episodes.
    pub nearest_neighbour: Option<Accuracy>,
    /// Lake's 20 official 20-way one-shot runs, where the variant is 20-way 1-shot.
    pub official_runs: Option<OfficialRuns>,
    /// The meta-learner's mean input and forget gates after each update, over the test
    /// episodes; empty for MAML.
    pub gates: Vec<Gates>,
    /// Pretraining images per second over the timed steps (batch over step time), for
    /// [`Method::Pretrained`].
    pub pretrain_images_per_second: Option<Summary>,
    /// The pretrained network's baselines, for [`Method::Pretrained`] (whose `test` is none).
    pub baselines: Vec<BaselineScore>,
}

/// The meta-learner's gates after one update, averaged over coordinates and test episodes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    pub input: f64,
    pub forget: f64,
}

/// Accuracy on each of Lake's official runs, in order (run01 first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OfficialRuns {
    /// The cell's meta-learned method; empty for [`Method::Pretrained`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub method: Vec<f64>,
    /// The pretrained network's baselines, for [`Method::Pretrained`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<BaselineRuns>,
    pub nearest_neighbour: Vec<f64>,
}

/// A baseline of the pretrained network on each of Lake's official runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRuns {
    pub baseline: Baseline,
    pub runs: Vec<f64>,
}

impl Metrics {
    pub fn best_validation(&self) -> Option<f64> {
        self.validations.iter().map(|v| v.accuracy).reduce(f64::max)
    }
}

impl WorkloadFamily for Family {
    const KEY: &'static str = "few_shot";
    const ABOUT: &'static str = "Finn et al. and Ravi & Larochelle (2017): MAML (second and \
                                 first order) and the meta-learner LSTM, meta-trained on \
                                 Omniglot alphabets and tested on unseen ones, against nearest \
                                 neighbour and a pretrained network's baselines";
    type Raw = RawFewShot;
    type Workload = FewShot;
    type Variant = Variant;
    type Metrics = Metrics;
    type Data = FewShotData;

    fn validate(
        cx: &Ctx,
        r: RawFewShot,
        index: usize,
        at: Location,
    ) -> Result<FewShot, SuiteError> {
        let data = FewShotDataSpec::validate(cx, r.data)?;
        cx.check(
            &r.episodes,
            |e| !e.is_empty(),
            |_| "episodes: give at least one, e.g. [{way: 5, shot: 1}]".into(),
        )?;
        cx.check(
            &r.episodes,
            |e| e.iter().all(|e| e.way >= 2 && e.shot >= 1),
            |_| "episodes need way ≥ 2 and shot ≥ 1".into(),
        )?;
        let episodes: Vec<(usize, usize)> =
            r.episodes.value.iter().map(|e| (e.way, e.shot)).collect();
        let query = match &r.query {
            Some(q) => {
                cx.check(q, |q| *q >= 1, |_| "query: at least one query per class".into())?;
                q.value
            }
            None => 15,
        };
        let (filters, blocks) = match &r.learner {
            Some(l) => {
                let v = &l.value;
                let fits =
                    v.filters >= 1 && (1..=6).contains(&v.blocks) && data.side >> v.blocks >= 1;
                if !fits {
                    return Err(cx.at(
                        l.referenced,
                        format!(
                            "learner needs filters ≥ 1 and 1 to 6 blocks whose poolings leave a \
                             map of {}-pixel images, e.g. {{filters: 32, blocks: 4}}",
                            data.side
                        ),
                    ));
                }
                (v.filters, v.blocks)
            }
            None => (32, 4),
        };
        cx.check(
            &r.methods,
            |m| !m.is_empty(),
            |_| "methods: give at least one, e.g. [maml]".into(),
        )?;
        let (inner, test_steps) = match &r.inner {
            Some(s) => {
                let v = &s.value;
                if !(v.lr.is_finite() && v.lr > 0.0) || v.steps == 0 || v.test_steps == 0 {
                    return Err(cx.at(
                        s.referenced,
                        "inner needs a positive lr and steps, test_steps ≥ 1, e.g. {lr: 0.4, \
                         steps: 1, test_steps: 3}",
                    ));
                }
                (Adaptation { lr: v.lr, steps: v.steps }, v.test_steps)
            }
            // The paper's 5-way Omniglot setting.
            None => (Adaptation { lr: 0.4, steps: 1 }, 3),
        };
        let meta_learner =
            match &r.meta_learner {
                Some(s) => {
                    cx.check(
                    s,
                    |m| m.hidden >= 1 && m.steps >= 1,
                    |_| "meta_learner needs hidden ≥ 1 and steps ≥ 1, e.g. {hidden: 20, steps: 12}"
                        .into(),
                )?;
                    s.value
                }
                // The authors' 1-shot configuration: 12 updates; a first layer of 20 units.
                None => MetaLearner { hidden: 20, steps: 12 },
            };
        let m = &r.meta.value;
        let meta_ok = m.steps >= 1
            && m.tasks >= 1
            && m.lr.is_finite()
            && m.lr > 0.0
            && m.validate_every >= 1
            && m.validation_episodes >= 1
            && m.target.is_none_or(|t| (0.0..=1.0).contains(&t));
        if !meta_ok {
            return Err(cx.at(
                r.meta.referenced,
                "meta needs steps, tasks, validate_every, validation_episodes ≥ 1, a positive \
                 lr and a target in [0, 1] if any, e.g. {steps: 2000, tasks: 4, lr: 0.001, \
                 validate_every: 200, validation_episodes: 100, target: 0.9}",
            ));
        }
        let pretrain = match &r.pretrain {
            Some(s) => {
                let v = &s.value;
                if v.epochs == 0
                    || v.batch == 0
                    || !(v.lr.is_finite() && v.lr > 0.0)
                    || v.fine_tune_steps == 0
                {
                    return Err(cx.at(
                        s.referenced,
                        "pretrain needs epochs, batch, fine_tune_steps ≥ 1 and a positive lr, \
                         e.g. {epochs: 5, batch: 64, lr: 0.001, fine_tune_steps: 10}",
                    ));
                }
                Pretrain {
                    epochs: v.epochs,
                    batch: v.batch,
                    lr: v.lr,
                    fine_tune_steps: v.fine_tune_steps,
                }
            }
            None => Pretrain { epochs: 5, batch: 64, lr: 0.001, fine_tune_steps: 10 },
        };
        let test_episodes = match &r.test_episodes {
            Some(s) => {
                cx.check(s, |n| *n >= 2, |_| "test_episodes: at least 2, for an interval".into())?;
                s.value
            }
            None => 600,
        };
        Ok(FewShot {
            name: Ctx::workload_name(r.name, Self::KEY, index),
            data,
            episodes,
            query,
            filters,
            blocks,
            methods: r.methods.value,
            inner,
            test_steps,
            meta_learner,
            meta_steps: m.steps,
            tasks: m.tasks,
            meta_lr: m.lr,
            validate_every: m.validate_every,
            validation_episodes: m.validation_episodes,
            target: m.target,
            pretrain,
            test_episodes,
            timeout: cx.timeout(&r.timeout)?,
            location: (at.line(), at.column()),
        })
    }

    fn prepare(w: &FewShot) -> Result<FewShotData, PrepareError> {
        data::prepare(w)
    }

    fn variants(w: &FewShot) -> Vec<Variant> {
        w.episodes
            .iter()
            .flat_map(|&(way, shot)| {
                w.methods.iter().map(move |&method| Variant { method, way, shot })
            })
            .collect()
    }

    fn run<B: Backend>(
        b: &B,
        job: &Job<Self>,
        record: &mut Record,
        obs: &mut dyn Observer,
    ) -> BResult<Metrics> {
        match job.variant.method {
            Method::Pretrained => pretrained::run(b, job, record, obs),
            _ => run::run(b, job, record, obs),
        }
    }

    fn unmeasured(job: &Job<Self>) -> Metrics {
        let w = job.workload;
        Metrics {
            learner: tables::describe(&w.learner(job.variant.way)),
            query: w.query,
            tasks: w.tasks,
            meta_steps: 0,
            episodes_per_second: None,
            meta_train_seconds: Seconds(0.0),
            validations: vec![],
            seconds_to_target: None,
            test: None,
            nearest_neighbour: None,
            official_runs: None,
            gates: vec![],
            pretrain_images_per_second: None,
            baselines: vec![],
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

    const MEASURES: &'static [Measure] = &[EPISODES_PER_SECOND, TEST_ACCURACY, SECONDS_TO_TARGET];

    fn measures(m: &Metrics) -> Vec<Figure> {
        Figure::present([
            (&EPISODES_PER_SECOND, m.episodes_per_second.map(|s| s.median)),
            (&TEST_ACCURACY, m.test.map(|a| a.mean)),
            (&SECONDS_TO_TARGET, m.seconds_to_target.map(|s| s.0)),
        ])
    }
}

const EPISODES_PER_SECOND: Measure = Measure::new(
    "meta_episodes_per_second",
    "episodes/s",
    Better::Higher,
    MeasureKind::Speed,
    0.05,
);
/// Seeded: the same every run; a change is a change of the computation.
const TEST_ACCURACY: Measure =
    Measure::new("few_shot_test_accuracy", "", Better::Higher, MeasureKind::Outcome, 0.01);
const SECONDS_TO_TARGET: Measure =
    Measure::new("seconds_to_validation_target", "s", Better::Lower, MeasureKind::Speed, 0.05);
