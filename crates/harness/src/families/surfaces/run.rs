//! One loss-surface cell on one engine: every optimizer trained from the same initial point
//! on the same batches, the switched runs continued from the first optimizer's snapshots, then
//! every end point evaluated and every line walked by programs that evaluate all of a line's
//! points at once.

use super::{Endpoint, Line, LossSurface, Metrics};
use crate::families::training::{fits, upload_all, Steps, Trainer};
use crate::families::Guard;
use crate::families::{Fit, Job, Record, WorkloadFamily};
use randbench_core::backend::{BResult, Backend};
use randbench_core::models::init_params;
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::train::{eval_graph, interpolation_graph, Feed};
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use randbench_schema::{Observer, Progress, Status};
use std::time::Instant;

/// Examples per evaluation run of one end point.
const EVAL_CHUNK: usize = 1000;
/// Examples per run of a line's program, which holds a forward pass per point.
const LINE_CHUNK: usize = 250;

/// The highest loss on the segment α ∈ [0, 1] (the ends' own losses included) above the
/// higher end's.
pub fn barrier(
    alphas: &[f64],
    line: &[Fit],
    end_a: Option<f64>,
    end_b: Option<f64>,
) -> Option<f64> {
    let ends = end_a?.max(end_b?);
    let mut top = ends;
    for (a, f) in alphas.iter().zip(line) {
        if (0.0..=1.0).contains(a) {
            top = top.max(f.loss?);
        }
    }
    Some(top - ends)
}

fn distance(a: &[HostTensor], b: &[HostTensor]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            let (x, y) = (x.as_f32().expect("f32"), y.as_f32().expect("f32"));
            x.iter().zip(y).map(|(p, q)| (*p as f64 - *q as f64).powi(2)).collect::<Vec<_>>()
        })
        .sum::<f64>()
        .sqrt()
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w: &LossSurface = job.workload;
    let (train, test) = (&job.data.train, &job.data.test);
    let n = train.len();
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);
    let model = w.model.model(train.shape, train.classes);
    let specs = model.params()?;
    let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
    let feed = |examples| Feed::Gather { examples };

    obs.progress(Progress::Compiling);
    let compiling = Instant::now();
    let mut steps: Vec<Steps<B>> = w
        .optimizers
        .iter()
        .map(|&o| Steps::compile(b, &model, o, w.batch, n))
        .collect::<BResult<_>>()?;
    let points = w.grid.len();
    let chunk = |c: usize, of: usize| c.min(of);
    let mut eval_train = b.compile(&eval_graph(&model, chunk(EVAL_CHUNK, n), feed(n))?)?;
    let mut eval_test =
        b.compile(&eval_graph(&model, chunk(EVAL_CHUNK, test.len()), feed(test.len()))?)?;
    let mut line_train =
        b.compile(&interpolation_graph(&model, chunk(LINE_CHUNK, n), feed(n), points)?)?;
    let mut line_test = b.compile(&interpolation_graph(
        &model,
        chunk(LINE_CHUNK, test.len()),
        feed(test.len()),
        points,
    )?)?;
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));

    let trainer = Trainer::new(b, train, job.guard())?;
    let (vx, vy) = test.tensors();
    let test_dev = (b.upload(&vx)?, b.upload(&vy)?);
    let initial = init_params(&specs, job.seed);

    // Warm-up of every optimizer's programs on throwaway states and indices of their own.
    let mut warm_rng = Rng::stream(job.seed, "warmup");
    for (i, s) in steps.iter_mut().enumerate() {
        let first = s.warm_up(&trainer, &initial, &shapes, w.batch, &mut warm_rng)?;
        if i == 0 {
            record.first_step_seconds = Some(Seconds(first));
        }
    }

    // The same batches, in the same order, for every run: one permutation per epoch.
    let batches = trainer.batches(job.seed, w.epochs, w.batch);
    let total = batches.len();
    let runs = w.optimizers.len() + w.switches.len();
    let mut times: Vec<f64> = Vec::new();
    let mut ends: Vec<(String, Option<Vec<HostTensor>>, Option<usize>)> = Vec::new();
    let mut snapshots: Vec<(usize, usize, Vec<HostTensor>)> = Vec::new();
    record.status = Status::Ok;
    for (i, s) in steps.iter_mut().enumerate() {
        let at: Vec<usize> =
            w.switches.iter().filter(|sw| sw.from == i).map(|sw| sw.step(total)).collect();
        let Some(t) = trainer.train(
            s,
            &initial,
            &shapes,
            &batches,
            0,
            &at,
            record,
            i == 0,
            &mut times,
            obs,
        )?
        else {
            return Ok(m);
        };
        snapshots.extend(t.snapshots.into_iter().map(|(step, p)| (i, step, p)));
        ends.push((s.optimizer.name().to_string(), t.params, t.diverged_at));
        obs.progress(Progress::Epoch { epoch: ends.len(), of: runs, score: 0.0 });
    }
    for sw in &w.switches {
        let at = sw.step(total);
        let from = snapshots.iter().find(|(i, step, _)| *i == sw.from && *step == at);
        let name = w.switch_name(sw);
        let Some((_, _, start)) = from else {
            // The first optimizer diverged before the switch: nothing to continue from.
            let diverged = ends[sw.from].2;
            ends.push((name, None, diverged));
            continue;
        };
        let start = start.clone();
        let Some(t) = trainer.train(
            &mut steps[sw.to],
            &start,
            &shapes,
            &batches[at..],
            at,
            &[],
            record,
            false,
            &mut times,
            obs,
        )?
        else {
            return Ok(m);
        };
        ends.push((name, t.params, t.diverged_at));
        obs.progress(Progress::Epoch { epoch: ends.len(), of: runs, score: 0.0 });
    }
    // A run whose loss stopped being finite makes the cell's outcome diverged, at the first
    // such step of any run.
    if let Some(step) = ends.iter().filter_map(|e| e.2).min() {
        Guard::diverged(record, step);
    }
    m.train_seconds = Seconds(times.iter().sum());
    m.steps_per_second = Summary::of(&times.iter().map(|t| 1.0 / t).collect::<Vec<_>>());

    // Every end point on the training and test sets.
    let mut on_device: Vec<Option<Vec<B::Tensor>>> = Vec::new();
    for (name, params, diverged_at) in &ends {
        let dev = params.as_deref().map(|p| upload_all(b, p)).transpose()?;
        let (train_fit, test_fit) = match &dev {
            Some(p) => {
                let p: Vec<&B::Tensor> = p.iter().collect();
                let tr = fits(b, &mut eval_train, &p, &trainer.data, n, chunk(EVAL_CHUNK, n), 1)?;
                let te = fits(
                    b,
                    &mut eval_test,
                    &p,
                    &test_dev,
                    test.len(),
                    chunk(EVAL_CHUNK, test.len()),
                    1,
                )?;
                (Some(tr[0]), Some(te[0]))
            }
            None => (None, None),
        };
        m.endpoints.push(Endpoint {
            name: name.clone(),
            diverged_at: *diverged_at,
            train: train_fit,
            test: test_fit,
        });
        on_device.push(dev);
    }

    // The lines: between every two optimizers' end points, and from each switched run's end
    // to the end points of the optimizers it switched between.
    let pure = w.optimizers.len();
    let mut pairs: Vec<(usize, usize)> =
        (0..pure).flat_map(|i| (i + 1..pure).map(move |j| (i, j))).collect();
    for (k, sw) in w.switches.iter().enumerate() {
        pairs.extend([(pure + k, sw.from), (pure + k, sw.to)]);
    }
    let alphas = w
        .grid
        .iter()
        .map(|&a| b.upload(&HostTensor::scalar(a as f32)))
        .collect::<BResult<Vec<_>>>()?;
    let walking = Instant::now();
    for (i, j) in pairs {
        let (Some(pa), Some(pb)) = (&on_device[i], &on_device[j]) else { continue };
        let leading: Vec<&B::Tensor> = pa.iter().chain(pb).chain(&alphas).collect();
        let train_line =
            fits(b, &mut line_train, &leading, &trainer.data, n, chunk(LINE_CHUNK, n), points)?;
        let test_line = fits(
            b,
            &mut line_test,
            &leading,
            &test_dev,
            test.len(),
            chunk(LINE_CHUNK, test.len()),
            points,
        )?;
        let (ea, eb) = (&m.endpoints[i], &m.endpoints[j]);
        let end_loss =
            |e: &Endpoint, test: bool| if test { e.test } else { e.train }.and_then(|f| f.loss);
        m.lines.push(Line {
            a: ea.name.clone(),
            b: eb.name.clone(),
            distance: distance(
                ends[i].1.as_deref().expect("on the device"),
                ends[j].1.as_deref().expect("on the device"),
            ),
            alphas: w.grid.clone(),
            train_barrier: barrier(&w.grid, &train_line, end_loss(ea, false), end_loss(eb, false)),
            test_barrier: barrier(&w.grid, &test_line, end_loss(ea, true), end_loss(eb, true)),
            train: train_line,
            test: test_line,
        });
    }
    m.line_seconds = Seconds(walking.elapsed().as_secs_f64());
    let evaluated = m.lines.len() * points * (n + test.len());
    m.line_examples_per_second =
        (m.line_seconds.0 > 0.0 && evaluated > 0).then(|| evaluated as f64 / m.line_seconds.0);
    Ok(m)
}
