//! The pretrained-network cell: no meta-learning. The learner is trained to classify every
//! meta-training class (all their images, in seeded batches); its head is then replaced by a
//! fresh one of the episode's way (zeros) and fine-tuned on each episode's support set, the
//! head alone or the whole network, at the rate of a grid that does best on the validation
//! episodes; and nearest neighbour runs in its body's features. All are scored on the test
//! episodes every other cell sees.

use super::run::{
    interval, neighbour_accuracy, neighbour_accuracy_of, official_episodes, scalar, Adapter,
};
use super::{Baseline, BaselineRuns, BaselineScore, FewShot, Method, Metrics, OfficialRuns};
use crate::families::training::{chain, upload_named, Named};
use crate::families::{Guard, Job, Loss, Record, WorkloadFamily};
use randbench_core::backend::{BResult, Backend};
use randbench_core::fewshot::{
    adaptation_graph, draw_episodes, embedding_graph, pretrain_step_graph, Adaptation, Classes,
    Episodes, Inner,
};
use randbench_core::graph::Graph;
use randbench_core::l2l::meta_optimizer;
use randbench_core::models::init_params;
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use randbench_schema::{Observer, Progress, Status};
use std::time::Instant;

/// The fine-tuning rates tried on the validation episodes: plain gradient descent from a zero
/// head, a few to tens of steps. From a zero head the first step's direction alone decides
/// the predictions (the class means of the features, in effect), so the low end reaches
/// where smaller rates change nothing more.
const FINE_TUNE_RATES: [f64; 7] = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0];

/// A batch of meta-training images, `picked` indexing `(class, image)` pairs: x and its labels
/// (the classes).
fn batch(classes: &Classes, images: &[(usize, usize)], picked: &[usize]) -> [HostTensor; 2] {
    let s = classes.side;
    let x = picked.iter().flat_map(|&i| {
        let (c, k) = images[i];
        classes.classes[c][k].iter().copied()
    });
    let y = picked.iter().map(|&i| images[i].0 as i64).collect();
    [
        HostTensor::f32(vec![picked.len(), 1, s, s], x.collect()).expect("whole images"),
        HostTensor::i64(vec![picked.len()], y).expect("a label each"),
    ]
}

/// The body's features of a set of images, by a program of that many.
struct Embedder<B: Backend> {
    graph: Graph,
    program: B::Program,
}

/// Nearest neighbour's query accuracy on `e` in the body's features, `support` and `query`
/// embedding the episode's two sets.
fn embedding_neighbour_accuracy<B: Backend>(
    b: &B,
    named: &mut Named<B::Tensor>,
    (support, query): (&mut Embedder<B>, &mut Embedder<B>),
    e: &Episodes,
) -> BResult<f64> {
    let support = support.features(b, named, &e.support)?;
    let query = query.features(b, named, &e.query)?;
    let width = support.len() / e.support.shape()[0];
    Ok(neighbour_accuracy_of(e, &support, &query, width))
}

impl<B: Backend> Embedder<B> {
    fn features(
        &mut self,
        b: &B,
        named: &mut Named<B::Tensor>,
        x: &HostTensor,
    ) -> BResult<Vec<f32>> {
        upload_named(b, named, ["x".to_string()], std::slice::from_ref(x))?;
        let out = chain(b, &self.graph, &mut self.program, named)?;
        Ok(b.download(&out[0])?.as_f32().expect("features are f32").to_vec())
    }
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w: &FewShot = job.workload;
    let v = job.variant;
    debug_assert_eq!(v.method, Method::Pretrained);
    let p = w.pretrain;
    let train = &job.data.train;
    let (pretrained, learner, shape) =
        (w.learner(train.classes.len()), w.learner(v.way), w.shape(v));
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);

    obs.progress(Progress::Compiling);
    let compiling = Instant::now();
    let optimizer = meta_optimizer(p.lr);
    let step_graph = pretrain_step_graph(&pretrained, p.batch, &optimizer)?;
    let mut step = b.compile(&step_graph)?;
    // Per fine-tuning (the head, the whole network) an adaptation program per rate: the rate
    // is a constant of the program.
    let fine_tunings = [(Baseline::FineTuneHead, false), (Baseline::FineTuneWhole, true)];
    let mut adapters = Vec::with_capacity(fine_tunings.len());
    for (_, whole) in fine_tunings {
        let mut per_rate = Vec::with_capacity(FINE_TUNE_RATES.len());
        for lr in FINE_TUNE_RATES {
            let adaptation = Adaptation { lr, steps: p.fine_tune_steps };
            let inner = Inner::FineTune { adaptation, whole };
            per_rate.push(Adapter::compile(b, adaptation_graph(&learner, shape, &inner)?)?);
        }
        adapters.push(per_rate);
    }
    let embedder = |n| -> BResult<Embedder<B>> {
        let graph = embedding_graph(&learner, n)?;
        Ok(Embedder { program: b.compile(&graph)?, graph })
    };
    let (mut embed_support, mut embed_query) =
        (embedder(shape.support())?, embedder(shape.queries())?);
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));

    let specs = pretrained.params();
    let shapes: Vec<Vec<usize>> = specs.iter().map(|s| s.shape.clone()).collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut named = Named::new();
    upload_named(b, &mut named, names, &init_params(&specs, job.seed))?;
    let state = optimizer.initial_state(&shapes);
    upload_named(b, &mut named, optimizer.state_names(&specs), &state)?;
    let images: Vec<(usize, usize)> = (train.classes.iter().enumerate())
        .flat_map(|(c, xs)| (0..xs.len()).map(move |k| (c, k)))
        .collect();
    let loss_at = 0;
    debug_assert_eq!(step_graph.outputs()[loss_at].0, "loss");
    let xy = ["x".to_string(), "y".to_string()];

    // The first run pays for lazy loading and planning: one step on a throwaway copy.
    let mut warm = named.clone();
    let first = Instant::now();
    let picked = Rng::stream(job.seed, "warmup").permutation(images.len());
    upload_named(b, &mut warm, xy.clone(), &batch(train, &images, &picked[..p.batch]))?;
    let out = chain(b, &step_graph, &mut step, &mut warm)?;
    scalar(b, &out[loss_at])?;
    record.first_step_seconds = Some(Seconds(first.elapsed().as_secs_f64()));
    drop(warm);

    let mut rng = Rng::stream(job.seed, "pretrain");
    let mut times = Vec::new();
    let guard = job.guard();
    for epoch in 1..=p.epochs {
        // Whole batches only: one program shape.
        let order = rng.permutation(images.len());
        let mut losses = Vec::new();
        for picked in order.chunks_exact(p.batch) {
            if guard.halt(obs, record) {
                return Ok(m);
            }
            let t0 = Instant::now();
            upload_named(b, &mut named, xy.clone(), &batch(train, &images, picked))?;
            let out = chain(b, &step_graph, &mut step, &mut named)?;
            // Reading the loss waits for the step: the time is the step's.
            let loss = scalar(b, &out[loss_at])?;
            times.push(t0.elapsed().as_secs_f64());
            m.meta_steps += 1;
            if let Loss::Diverged { step } = Guard::loss(record, m.meta_steps, loss, true) {
                Guard::diverged(record, step);
                return Ok(m);
            }
            losses.push(loss);
        }
        let score = losses.iter().sum::<f64>() / losses.len() as f64;
        obs.progress(Progress::Epoch { epoch, of: p.epochs + 1, score });
    }
    m.meta_train_seconds = Seconds(times.iter().sum());
    m.pretrain_images_per_second =
        Summary::of(&times.iter().map(|t| p.batch as f64 / t).collect::<Vec<_>>());

    // A fresh head of the episodes' way; the body as pretrained.
    let head = &learner.params()[learner.body()..];
    let zeros: Vec<HostTensor> = head.iter().map(|s| HostTensor::zeros(&s.shape)).collect();
    upload_named(b, &mut named, head.iter().map(|s| s.name.clone()), &zeros)?;

    // Each fine-tuning's rate: the best mean accuracy on the validation episodes (ties to the
    // lower rate).
    let mut chosen = Vec::with_capacity(fine_tunings.len());
    for per_rate in &mut adapters {
        let mut best: Option<(usize, f64)> = None;
        for (i, adapter) in per_rate.iter_mut().enumerate() {
            if guard.halt(obs, record) {
                return Ok(m);
            }
            let accuracy = adapter.validation_accuracy(&mut named, job, shape)?;
            if best.is_none_or(|(_, a)| accuracy > a) {
                best = Some((i, accuracy));
            }
        }
        chosen.push(best.expect("a rate"));
    }

    // The test: every baseline on each of the same episodes.
    let mut test_rng = Rng::stream(job.seed, "episodes.test");
    let mut scores = vec![Vec::with_capacity(w.test_episodes); fine_tunings.len() + 2];
    for _ in 0..w.test_episodes {
        if guard.halt(obs, record) {
            return Ok(m);
        }
        let e: Episodes = draw_episodes(&job.data.test, shape, 1, &mut test_rng)?;
        for (k, &(i, _)) in chosen.iter().enumerate() {
            scores[k].push(adapters[k][i].accuracy(&mut named, e.clone())?);
        }
        let embedders = (&mut embed_support, &mut embed_query);
        scores[fine_tunings.len()]
            .push(embedding_neighbour_accuracy(b, &mut named, embedders, &e)?);
        scores[fine_tunings.len() + 1].push(neighbour_accuracy(&e));
    }
    for ((baseline, _), &(i, validation)) in fine_tunings.iter().zip(&chosen) {
        m.baselines.push(BaselineScore {
            baseline: *baseline,
            lr: Some(FINE_TUNE_RATES[i]),
            validation: Some(validation),
            test: interval(&scores[m.baselines.len()]).expect("two test episodes or more"),
        });
    }
    m.baselines.push(BaselineScore {
        baseline: Baseline::NearestNeighbourEmbedding,
        lr: None,
        validation: None,
        test: interval(&scores[fine_tunings.len()]).expect("two test episodes or more"),
    });
    m.nearest_neighbour = interval(&scores[fine_tunings.len() + 1]);
    if let Some((one_each, episodes)) = official_episodes(job) {
        // Programs of the runs' form: each fine-tuning at its chosen rate, and the embedders.
        let mut baselines = Vec::with_capacity(fine_tunings.len() + 1);
        for (&(baseline, whole), &(i, _)) in fine_tunings.iter().zip(&chosen) {
            let adaptation = Adaptation { lr: FINE_TUNE_RATES[i], steps: p.fine_tune_steps };
            let inner = Inner::FineTune { adaptation, whole };
            let mut runs = Adapter::compile(b, adaptation_graph(&learner, one_each, &inner)?)?;
            let runs = episodes.iter().map(|e| runs.accuracy(&mut named, e.clone()));
            baselines.push(BaselineRuns { baseline, runs: runs.collect::<BResult<_>>()? });
        }
        let (mut support, mut query) =
            (embedder(one_each.support())?, embedder(one_each.queries())?);
        let runs = episodes
            .iter()
            .map(|e| embedding_neighbour_accuracy(b, &mut named, (&mut support, &mut query), e));
        let runs = runs.collect::<BResult<_>>()?;
        baselines.push(BaselineRuns { baseline: Baseline::NearestNeighbourEmbedding, runs });
        m.official_runs = Some(OfficialRuns {
            method: vec![],
            baselines,
            nearest_neighbour: episodes.iter().map(neighbour_accuracy).collect(),
        });
    }
    record.status = Status::Ok;
    let best = m.baselines.iter().map(|s| s.test.mean).fold(0.0, f64::max);
    obs.progress(Progress::Epoch { epoch: p.epochs + 1, of: p.epochs + 1, score: best });
    Ok(m)
}
