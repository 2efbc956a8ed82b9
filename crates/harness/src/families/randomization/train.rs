//! One cell of the randomization test on one backend: corrupt the data as the condition says,
//! compile, warm up on a throwaway state, then train epoch by epoch until the training set is
//! fitted or the budget ends.

use super::{EpochRecord, Metrics, Randomization};
use crate::families::training::{fits, upload_all};
use crate::families::{Fit, Job, Record, WorkloadFamily, WARMUP_STEPS};
use crate::families::{Guard, Loss};
use crate::slowdown;
use randbench_core::backend::{BResult, Backend};
use randbench_core::corrupt::Condition;
use randbench_core::data::{translate_batch, Dataset, Split};
use randbench_core::models::{dropout_masks, Model};
use randbench_core::optim::Optimizer;
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::train::{
    eval_graph, starting_state, training_step_with, Feed, LearningRate, TrainStep,
};
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use randbench_schema::{Observer, Progress, Status};
use std::borrow::Cow;
use std::time::Instant;

/// Examples per evaluation run.
const EVAL_CHUNK: usize = 1000;

struct StepPrograms<B: Backend> {
    step: TrainStep,
    full: B::Program,
    /// The program for the last, smaller batch of an epoch.
    rest: Option<B::Program>,
}

/// What a step program is fed besides the state: the batch, its masks, the learning rate.
struct StepFeed {
    feed: Feed,
    dropout: f64,
    augment: usize,
    lr: LearningRate,
}

impl StepFeed {
    /// The host tensors of one step on the examples `chunk` (not timed).
    fn host_inputs(
        &self,
        train: &Dataset,
        chunk: &[usize],
        sites: &[Vec<usize>],
        dropout_rng: &mut Rng,
        augment_rng: &mut Rng,
    ) -> Vec<HostTensor> {
        let size = chunk.len();
        let mut host = match self.feed {
            Feed::Gather { .. } => {
                vec![HostTensor::i64(vec![size], chunk.iter().map(|&i| i as i64).collect())
                    .expect("length")]
            }
            Feed::Batch => {
                let (x, y) = train.batch(chunk);
                let shape = x.shape().to_vec();
                let mut pixels = x.into_f32().expect("f32");
                translate_batch(
                    &mut pixels,
                    train.shape,
                    self.augment,
                    &train.background,
                    augment_rng,
                );
                vec![HostTensor::f32(shape, pixels).expect("length"), y]
            }
        };
        if self.dropout > 0.0 {
            let s: Vec<Vec<usize>> = sites
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s[0] = size;
                    s
                })
                .collect();
            host.extend(dropout_masks(&s, self.dropout, dropout_rng));
        }
        host
    }
}

fn compile_steps<B: Backend>(
    b: &B,
    model: &Model,
    opt: &Optimizer,
    batch: usize,
    n: usize,
    feed: &StepFeed,
) -> BResult<StepPrograms<B>> {
    let dropout = feed.dropout > 0.0;
    let step = training_step_with(model, opt, batch, feed.feed, dropout, feed.lr)?;
    let full = b.compile(&step.graph)?;
    let rest = match n % batch {
        0 => None,
        r => {
            Some(b.compile(&training_step_with(model, opt, r, feed.feed, dropout, feed.lr)?.graph)?)
        }
    };
    Ok(StepPrograms { step, full, rest })
}

/// Mean loss and accuracy of the parameters over a whole data set already on the device.
fn evaluate<B: Backend>(
    b: &B,
    prog: &mut B::Program,
    params: &[B::Tensor],
    data: &(B::Tensor, B::Tensor),
    n: usize,
) -> BResult<Fit> {
    let leading: Vec<&B::Tensor> = params.iter().collect();
    Ok(fits(b, prog, &leading, data, n, EVAL_CHUNK.min(n), 1)?[0])
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<super::Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w: &Randomization = job.workload;
    let reg = job.variant.regularizer;
    // True labels leave the data as prepared: no copy of the whole data set for them.
    let split: Cow<Split> = match job.variant.condition {
        Condition::TrueLabels => Cow::Borrowed(job.data),
        condition => {
            let mut corrupted = job.data.clone();
            condition.apply(&mut corrupted, job.seed);
            Cow::Owned(corrupted)
        }
    };
    let (train, test) = (&split.train, &split.test);
    let n = train.len();
    let guard = job.guard();
    let mut m = <super::Family as WorkloadFamily>::unmeasured(job);
    let model = w.model.model(train.shape, train.classes);
    let optimizer = m.optimizer;
    let feed = StepFeed {
        feed: if reg.augment > 0 { Feed::Batch } else { Feed::Gather { examples: n } },
        dropout: reg.dropout,
        augment: reg.augment,
        lr: if w.lr_decay == 1.0 { LearningRate::Constant } else { LearningRate::Input },
    };
    obs.progress(Progress::Compiling);
    let compiling = Instant::now();
    let mut progs = compile_steps(b, &model, &optimizer, w.batch, n, &feed)?;
    let gather = |examples| Feed::Gather { examples };
    let mut eval_train = b.compile(&eval_graph(&model, EVAL_CHUNK.min(n), gather(n))?)?;
    let mut eval_test =
        b.compile(&eval_graph(&model, EVAL_CHUNK.min(test.len()), gather(test.len()))?)?;
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));

    let upload_all = |ts: &[HostTensor]| upload_all(b, ts);
    let initial = starting_state(&model.params()?, &optimizer, job.seed);
    let n_params = progs.step.params;
    let n_state = n_params + progs.step.state;
    let (tx, ty) = train.tensors();
    let train_dev = (b.upload(&tx)?, b.upload(&ty)?);
    let (vx, vy) = test.tensors();
    let test_dev = (b.upload(&vx)?, b.upload(&vy)?);
    let sites = model.dropout_sites(w.batch);
    let lr_tensor = |lr: f64| b.upload(&HostTensor::scalar(lr as f32));
    let mut lr_dev = lr_tensor(optimizer.lr)?;

    let delay = slowdown::step_delay(b.id());
    // One step: the step's inputs uploaded, the program run, the device waited for.
    let step = |prog: &mut B::Program,
                state: &[B::Tensor],
                host: &[HostTensor],
                lr: &B::Tensor|
     -> BResult<(Vec<B::Tensor>, f64)> {
        let t0 = Instant::now();
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let fed = upload_all(host)?;
        let mut inputs: Vec<&B::Tensor> = state.iter().collect();
        if let Feed::Gather { .. } = feed.feed {
            inputs.extend([&train_dev.0, &train_dev.1]);
        }
        inputs.extend(fed.iter());
        if feed.lr == LearningRate::Input {
            inputs.push(lr);
        }
        let out = b.run(prog, &inputs)?;
        b.sync()?;
        Ok((out, t0.elapsed().as_secs_f64()))
    };

    // Warm-up on a throwaway state, from a stream of its own: the cell's data order, masks
    // and crops are the same with or without it.
    {
        let mut warm_rng = Rng::stream(job.seed, "warmup");
        let mut warm_masks = Rng::stream(job.seed, "warmup-masks");
        let mut state = upload_all(&initial)?;
        for i in 0..WARMUP_STEPS {
            let chunk: Vec<usize> = (0..w.batch).map(|_| warm_rng.below(n)).collect();
            let host = feed.host_inputs(train, &chunk, &sites, &mut warm_masks, &mut warm_rng);
            let (mut out, dt) = step(&mut progs.full, &state, &host, &lr_dev)?;
            if i == 0 {
                record.first_step_seconds = Some(Seconds(dt));
            }
            out.truncate(n_state);
            state = out;
        }
        if let Some(rest) = progs.rest.as_mut() {
            let chunk: Vec<usize> = (0..n % w.batch).collect();
            let host = feed.host_inputs(train, &chunk, &sites, &mut warm_masks, &mut warm_rng);
            step(rest, &state, &host, &lr_dev)?;
        }
    }
    let mut state = upload_all(&initial)?;

    let mut order_rng = Rng::stream(job.seed, "order");
    let mut dropout_rng = Rng::stream(job.seed, "dropout");
    let mut augment_rng = Rng::stream(job.seed, "augment");
    let mut step_seconds: Vec<(f64, usize)> = Vec::new();
    record.status = Status::NoFit;
    'epochs: for epoch in 1..=w.max_epochs {
        if w.lr_decay != 1.0 {
            lr_dev = lr_tensor(optimizer.lr * w.lr_decay.powi(epoch as i32 - 1))?;
        }
        let order = order_rng.permutation(n);
        for chunk in order.chunks(w.batch) {
            if guard.halt(obs, record) {
                break 'epochs;
            }
            let host = feed.host_inputs(train, chunk, &sites, &mut dropout_rng, &mut augment_rng);
            let prog = if chunk.len() == w.batch {
                &mut progs.full
            } else {
                progs.rest.as_mut().expect("a program for the last batch")
            };
            let (mut out, dt) = step(prog, &state, &host, &lr_dev)?;
            m.train_seconds.0 += dt;
            step_seconds.push((dt, chunk.len()));
            let loss = b.download(&out[n_state])?.to_scalar().expect("scalar loss");
            out.truncate(n_state);
            state = out;
            m.steps += 1;
            if let Loss::Diverged { step } = Guard::loss(record, m.steps, loss.into(), true) {
                Guard::diverged(record, step);
                m.epochs = epoch;
                break 'epochs;
            }
        }
        m.epochs = epoch;
        let Fit { loss: train_loss, accuracy: train_accuracy } =
            evaluate(b, &mut eval_train, &state[..n_params], &train_dev, n)?;
        m.history.push(EpochRecord { epoch, train_loss, train_accuracy, seconds: m.train_seconds });
        obs.progress(Progress::Epoch { epoch, of: w.max_epochs, score: train_accuracy });
        if train_accuracy >= w.target_accuracy {
            record.status = Status::Ok;
            m.epochs_to_fit = Some(epoch);
            m.steps_to_fit = Some(m.steps);
            m.seconds_to_fit = Some(m.train_seconds);
            break;
        }
    }
    m.train_accuracy = m.history.last().map(|h| h.train_accuracy);
    m.train_loss = m.history.last().and_then(|h| h.train_loss);
    if !matches!(record.status, Status::Interrupted | Status::Diverged) {
        let fit = evaluate(b, &mut eval_test, &state[..n_params], &test_dev, test.len())?;
        m.test_loss = fit.loss;
        m.test_accuracy = Some(fit.accuracy);
    }
    let rates: Vec<f64> = step_seconds.iter().map(|(s, _)| 1.0 / s).collect();
    let examples: Vec<f64> = step_seconds.iter().map(|(s, n)| *n as f64 / s).collect();
    m.steps_per_second = Summary::of(&rates);
    m.examples_per_second = Summary::of(&examples);
    Ok(m)
}
