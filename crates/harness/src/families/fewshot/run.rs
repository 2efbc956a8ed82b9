//! One few-shot cell on one engine: meta-train the learner's initial parameters on episodes of
//! the training alphabets, validating on the same validation episodes every `validate_every`
//! steps (keeping the best parameters), then adapt and score on the test episodes, where
//! nearest neighbour in pixel space is scored on the very same episodes.
//!
//! The meta-training step and the adaptation are one program each; their outputs named like
//! their inputs (θ and Adam's state) feed the next run.

use super::data::OFFICIAL_RUNS;
use super::{Accuracy, FewShot, Gates, Metrics, OfficialRuns, Validation};
use crate::families::training::{chain, upload_named, Named};
use crate::families::{Guard, Loss};
use crate::families::{Job, Record, WorkloadFamily};
use randbench_core::backend::{BResult, Backend};
use randbench_core::fewshot::{
    adaptation_graph, draw_episodes, meta_step_graph, nearest_neighbour, Classes, EpisodeShape,
    Episodes,
};
use randbench_core::graph::Graph;
use randbench_core::l2l::{meta_optimizer, Outer};
use randbench_core::models::init_params;
use randbench_core::omniglot::OfficialRun;
use randbench_core::rng::Rng;
use randbench_core::stats::{mean_interval, Summary};
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use randbench_schema::{Observer, Progress, Status};
use std::time::Instant;

pub(super) fn upload_episodes<B: Backend>(
    b: &B,
    named: &mut Named<B::Tensor>,
    e: Episodes,
) -> BResult<()> {
    upload_named(b, named, Episodes::INPUTS.map(String::from), &e.into_tensors())
}

pub(super) fn scalar<B: Backend>(b: &B, t: &B::Tensor) -> BResult<f64> {
    Ok(b.download(t)?.to_scalar().expect("a scalar output") as f64)
}

/// The adaptation program, and the meta-learner's gates summed over the episodes it adapted
/// to since they were last taken.
pub(super) struct Adapter<'a, B: Backend> {
    b: &'a B,
    graph: Graph,
    program: B::Program,
    gate_sums: Vec<f64>,
    episodes: usize,
}

impl<'a, B: Backend> Adapter<'a, B> {
    pub(super) fn compile(b: &'a B, graph: Graph) -> BResult<Self> {
        Ok(Adapter { b, program: b.compile(&graph)?, graph, gate_sums: vec![], episodes: 0 })
    }

    /// Query accuracy after adapting to `e` from the parameters in `named`.
    pub(super) fn accuracy(&mut self, named: &mut Named<B::Tensor>, e: Episodes) -> BResult<f64> {
        let output = |name: &str| self.graph.outputs().iter().position(|(n, _)| n == name);
        let (at, gates) = (output("accuracy").expect("queries are scored"), output("gates"));
        upload_episodes(self.b, named, e)?;
        let outs = chain(self.b, &self.graph, &mut self.program, named)?;
        if let Some(k) = gates {
            let g = self.b.download(&outs[k])?;
            let g = g.as_f32().expect("gates are f32");
            self.gate_sums.resize(g.len(), 0.0);
            self.gate_sums.iter_mut().zip(g).for_each(|(s, &v)| *s += v as f64);
        }
        self.episodes += 1;
        scalar(self.b, &outs[at])
    }

    /// The mean gates per update since the last call.
    fn take_gates(&mut self) -> Vec<Gates> {
        let n = self.episodes.max(1) as f64;
        let gates = self.gate_sums.chunks(2).map(|g| Gates { input: g[0] / n, forget: g[1] / n });
        let gates = gates.collect();
        (self.gate_sums, self.episodes) = (vec![], 0);
        gates
    }

    /// Per-episode query accuracy on `count` episodes drawn from `rng`; `each` also sees
    /// every episode (for baselines).
    /// Mean query accuracy on the workload's validation episodes (the same ones every time).
    pub(super) fn validation_accuracy(
        &mut self,
        named: &mut Named<B::Tensor>,
        job: &Job<super::Family>,
        shape: EpisodeShape,
    ) -> BResult<f64> {
        let mut rng = Rng::stream(job.seed, "episodes.validation");
        let episodes = (job.workload.validation_episodes, &mut rng);
        let a = self.accuracies(named, &job.data.validation, shape, episodes, |_| {})?;
        Ok(a.iter().sum::<f64>() / a.len() as f64)
    }

    pub(super) fn accuracies(
        &mut self,
        named: &mut Named<B::Tensor>,
        classes: &Classes,
        shape: EpisodeShape,
        (count, rng): (usize, &mut Rng),
        mut each: impl FnMut(&Episodes),
    ) -> BResult<Vec<f64>> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let e = draw_episodes(classes, shape, 1, rng)?;
            each(&e);
            out.push(self.accuracy(named, e)?);
        }
        Ok(out)
    }
}

/// Nearest neighbour's query accuracy on one episode in pixel space.
pub(super) fn neighbour_accuracy(e: &Episodes) -> f64 {
    let (support, query) = (e.support.as_f32(), e.query.as_f32());
    let pixels = e.support.shape()[2..].iter().product();
    let (support, query) = (support.expect("images are f32"), query.expect("images are f32"));
    neighbour_accuracy_of(e, support, query, pixels)
}

/// Nearest neighbour's query accuracy on one episode whose support and query images are
/// rows `width` wide (pixels, or features).
pub(super) fn neighbour_accuracy_of(
    e: &Episodes,
    support: &[f32],
    query: &[f32],
    width: usize,
) -> f64 {
    let predicted = nearest_neighbour(
        support,
        e.support_labels.as_i64().expect("labels are i64"),
        query,
        width,
    );
    let truth = e.query_labels.as_i64().expect("labels are i64");
    let right = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    right as f64 / truth.len() as f64
}

/// Lake's official runs as episodes, where the cell is of their form (20-way 1-shot) and its
/// data holds them, with their shape: one query per class.
pub(super) fn official_episodes(job: &Job<super::Family>) -> Option<(EpisodeShape, Vec<Episodes>)> {
    let (v, runs) = (job.variant, &job.data.official_runs);
    if (v.way, v.shot) != OFFICIAL_RUNS || runs.is_empty() {
        return None;
    }
    let shape = EpisodeShape { way: v.way, shot: 1, query: 1 };
    Some((shape, runs.iter().map(|r| official_episode(r, job.workload.data.side)).collect()))
}

/// One of Lake's runs as an episode: the training images the support (class i labelled i),
/// the test images the queries, labelled by their answers.
fn official_episode(run: &OfficialRun, side: usize) -> Episodes {
    let images = |xs: &[Vec<f32>]| {
        HostTensor::f32(vec![xs.len(), 1, side, side], xs.concat()).expect("whole images")
    };
    let labels = |ys: Vec<i64>| HostTensor::i64(vec![ys.len()], ys).expect("a label each");
    Episodes {
        support: images(&run.training),
        support_labels: labels((0..run.training.len() as i64).collect()),
        query: images(&run.test),
        query_labels: labels(run.answers.iter().map(|&a| a as i64).collect()),
    }
}

pub(super) fn interval(xs: &[f64]) -> Option<Accuracy> {
    mean_interval(xs).map(|(mean, lo, hi)| Accuracy { mean, lo, hi, episodes: xs.len() })
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w: &FewShot = job.workload;
    let v = job.variant;
    let (learner, shape) = (w.learner(v.way), w.shape(v));
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);

    obs.progress(Progress::Compiling);
    let compiling = Instant::now();
    let outer = Outer::Adam { lr: w.meta_lr };
    let (inner, test_inner) = w.inner(v.method).expect("a meta-learning method");
    let step_graph = meta_step_graph(&learner, shape, w.tasks, &inner, outer)?;
    let mut step = b.compile(&step_graph)?;
    let mut adapter = Adapter::compile(b, adaptation_graph(&learner, shape, &test_inner)?)?;
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));

    let specs = inner.meta_params(&learner);
    let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
    let names: Vec<String> = specs.iter().map(|p| p.name.clone()).collect();
    let mut named = Named::new();
    upload_named(b, &mut named, names.clone(), &init_params(&specs, job.seed))?;
    let adam = meta_optimizer(w.meta_lr);
    upload_named(b, &mut named, adam.state_names(&specs), &adam.initial_state(&shapes))?;
    let meta_loss = 0;
    debug_assert_eq!(step_graph.outputs()[meta_loss].0, "meta_loss");

    // The first run pays for lazy loading and planning: one step on a throwaway copy.
    let mut warm = named.clone();
    let mut warm_rng = Rng::stream(job.seed, "warmup");
    let first = Instant::now();
    upload_episodes(b, &mut warm, draw_episodes(&job.data.train, shape, w.tasks, &mut warm_rng)?)?;
    let out = chain(b, &step_graph, &mut step, &mut warm)?;
    scalar(b, &out[meta_loss])?;
    record.first_step_seconds = Some(Seconds(first.elapsed().as_secs_f64()));
    drop(warm);

    let mut rng = Rng::stream(job.seed, "episodes.meta-training");
    let validations = w.meta_steps.div_ceil(w.validate_every);
    let mut times = Vec::with_capacity(w.meta_steps);
    let mut best: Option<(f64, Vec<HostTensor>)> = None;
    let guard = job.guard();
    for s in 1..=w.meta_steps {
        if guard.halt(obs, record) {
            return Ok(m);
        }
        let episodes = draw_episodes(&job.data.train, shape, w.tasks, &mut rng)?;
        let t0 = Instant::now();
        upload_episodes(b, &mut named, episodes)?;
        let out = chain(b, &step_graph, &mut step, &mut named)?;
        // Reading the loss waits for the step: the time is the step's.
        let loss = scalar(b, &out[meta_loss])?;
        times.push(t0.elapsed().as_secs_f64());
        m.meta_steps = s;
        if let Loss::Diverged { step } = Guard::loss(record, s, loss, true) {
            Guard::diverged(record, step);
            return Ok(m);
        }
        if s % w.validate_every == 0 || s == w.meta_steps {
            let accuracy = adapter.validation_accuracy(&mut named, job, shape)?;
            let seconds = Seconds(times.iter().sum());
            m.validations.push(Validation { step: s, seconds, accuracy });
            if m.seconds_to_target.is_none() && w.target.is_some_and(|t| accuracy >= t) {
                m.seconds_to_target = Some(seconds);
            }
            if best.as_ref().is_none_or(|(a, _)| accuracy > *a) {
                let theta = names.iter().map(|n| b.download(&named[n])).collect::<BResult<_>>()?;
                best = Some((accuracy, theta));
            }
            let of = validations + 1;
            obs.progress(Progress::Epoch { epoch: m.validations.len(), of, score: accuracy });
        }
    }
    m.meta_train_seconds = Seconds(times.iter().sum());
    m.episodes_per_second =
        Summary::of(&times.iter().map(|t| w.tasks as f64 / t).collect::<Vec<_>>());

    // The test: adapt from the best validation's parameters; nearest neighbour on the same
    // episodes.
    let (_, theta) = best.expect("the last step validates");
    upload_named(b, &mut named, names, &theta)?;
    let mut neighbour = Vec::with_capacity(w.test_episodes);
    adapter.take_gates();
    let mut test_rng = Rng::stream(job.seed, "episodes.test");
    let accuracy = adapter.accuracies(
        &mut named,
        &job.data.test,
        shape,
        (w.test_episodes, &mut test_rng),
        |e| neighbour.push(neighbour_accuracy(e)),
    )?;
    m.gates = adapter.take_gates();
    m.test = interval(&accuracy);
    m.nearest_neighbour = interval(&neighbour);
    if let Some((one_each, episodes)) = official_episodes(job) {
        // An adaptation program of the runs' form.
        let mut runs = Adapter::compile(b, adaptation_graph(&learner, one_each, &test_inner)?)?;
        let method = episodes.iter().map(|e| runs.accuracy(&mut named, e.clone()));
        m.official_runs = Some(OfficialRuns {
            method: method.collect::<BResult<_>>()?,
            baselines: vec![],
            nearest_neighbour: episodes.iter().map(neighbour_accuracy).collect(),
        });
    }
    record.status = Status::Ok;
    obs.progress(Progress::Epoch {
        epoch: validations + 1,
        of: validations + 1,
        score: m.test.map_or(0.0, |a| a.mean),
    });
    Ok(m)
}
