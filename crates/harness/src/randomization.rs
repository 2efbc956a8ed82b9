//! The randomization workload: train until the training set is fitted (or the budget ends),
//! on one backend, and measure the time it took and what the model learned.

use crate::backends::{with_backend, BackendVisitor};
use crate::results::{CellResult, EpochRecord, Status};
use crate::suite::{Randomization, Regularizer};
use crate::sys;
use randbench_core::backend::{BResult, Backend, BackendError, BackendId, BackendInfo, GradMode};
use randbench_core::corrupt::Condition;
use randbench_core::data::{translate_batch, Split};
use randbench_core::models::{dropout_masks, init_params, Model};
use randbench_core::optim::Optimizer;
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::train::{eval_graph, training_step, Feed, TrainStep};
use randbench_core::units::Seconds;
use randbench_core::HostTensor;
use std::time::Instant;

/// Steps at the start of a cell left out of the step-rate statistics.
pub const WARMUP_STEPS: usize = 5;
/// How many per-step losses a result keeps for parity comparisons.
pub const TRACE_STEPS: usize = 256;
/// Examples per evaluation run.
const EVAL_CHUNK: usize = 1000;

/// Everything one cell needs, the data already corrupted.
#[derive(Clone, Copy)]
pub struct CellPlan<'a> {
    pub suite: &'a str,
    pub workload: &'a Randomization,
    pub condition: Condition,
    pub regularizer: Regularizer,
    pub seed: u64,
    pub split: &'a Split,
}

/// Hears about training as it goes, and may stop it.
pub trait Observer {
    fn epoch(&mut self, epoch: usize, train_accuracy: f64);
    fn should_stop(&self) -> bool;
}

struct Outcome {
    status: Status,
    epochs: usize,
    steps: usize,
    fit: Option<(usize, usize, Seconds)>,
    train_seconds: Seconds,
    step_seconds: Vec<(f64, usize)>,
    history: Vec<EpochRecord>,
    step_losses: Vec<f32>,
    diverged_at: Option<(usize, f64)>,
    test: Option<(f64, f64)>,
}

/// A result line for the cell with nothing measured yet.
fn blank_result(
    plan: &CellPlan,
    backend: BackendId,
    info: BackendInfo,
    optimizer: Optimizer,
) -> CellResult {
    let (w, train) = (plan.workload, &plan.split.train);
    CellResult {
        suite: plan.suite.to_string(),
        workload: w.name.clone(),
        condition: plan.condition.to_string(),
        regularizer: plan.regularizer.label(),
        model: w.model.name(train.shape, train.classes),
        backend,
        device: info.device_name.clone(),
        seed: plan.seed,
        status: Status::Error,
        error: None,
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
        peak_memory: None,
        batch: w.batch,
        train_examples: train.len(),
        test_examples: plan.split.test.len(),
        optimizer,
        backend_info: info,
        diverged_at: None,
        history: vec![],
        step_losses: vec![],
        started_at: crate::env::utc_now(),
    }
}

fn error_status(e: &BackendError) -> Status {
    match e {
        BackendError::Unsupported { .. } => Status::Unsupported,
        BackendError::OutOfMemory { .. } => Status::Oom,
        _ => Status::Error,
    }
}

/// The result of a cell that produced none itself: its backend did not open, or its process
/// died.
pub fn failed_cell(
    plan: &CellPlan,
    backend: BackendId,
    status: Status,
    error: String,
) -> CellResult {
    let mut r = blank_result(plan, backend, BackendInfo::default(), plan.workload.optimizer);
    r.status = status;
    r.error = Some(error);
    r
}

/// Runs a cell on the backend `id`; one that cannot be opened gives the cell's error line.
pub fn run_cell_on(
    id: BackendId,
    grad: GradMode,
    plan: &CellPlan,
    obs: &mut dyn Observer,
) -> CellResult {
    struct Visit<'a, 'p> {
        plan: &'a CellPlan<'p>,
        obs: &'a mut dyn Observer,
    }
    impl BackendVisitor for Visit<'_, '_> {
        type Out = CellResult;
        fn visit<B: Backend>(self, b: &B) -> CellResult {
            crate::fault::inject(self.plan);
            run_cell(b, self.plan, self.obs)
        }
    }
    with_backend(id, grad, Visit { plan, obs })
        .unwrap_or_else(|e| failed_cell(plan, id, error_status(&e), e.to_string()))
}

fn run_cell<B: Backend>(b: &B, plan: &CellPlan, obs: &mut dyn Observer) -> CellResult {
    sys::reset_peak_memory();
    let train = &plan.split.train;
    let model = plan.workload.model.model(train.shape, train.classes);
    let mut optimizer = plan.workload.optimizer;
    optimizer.weight_decay = plan.regularizer.weight_decay;
    let mut r = blank_result(plan, b.id(), b.info(), optimizer);
    let outcome = train_cell(b, plan, &model, &optimizer, obs);
    r.peak_memory = b.memory().peak.or_else(sys::peak_memory);
    match outcome {
        Ok(o) => {
            let timed = if o.step_seconds.len() > WARMUP_STEPS {
                &o.step_seconds[WARMUP_STEPS..]
            } else {
                &o.step_seconds[..]
            };
            let rates: Vec<f64> = timed.iter().map(|(s, _)| 1.0 / s).collect();
            let examples: Vec<f64> = timed.iter().map(|(s, n)| *n as f64 / s).collect();
            r.status = o.status;
            r.epochs = o.epochs;
            r.steps = o.steps;
            r.epochs_to_fit = o.fit.map(|f| f.0);
            r.steps_to_fit = o.fit.map(|f| f.1);
            r.seconds_to_fit = o.fit.map(|f| f.2);
            r.train_seconds = o.train_seconds;
            r.train_accuracy = o.history.last().map(|h| h.train_accuracy);
            r.train_loss = o.history.last().map(|h| h.train_loss);
            r.test_loss = o.test.map(|t| t.0);
            r.test_accuracy = o.test.map(|t| t.1);
            r.steps_per_second = Summary::of(&rates);
            r.examples_per_second = Summary::of(&examples);
            r.diverged_at = o.diverged_at;
            r.history = o.history;
            r.step_losses = o.step_losses;
        }
        Err(e) => {
            r.status = error_status(&e);
            r.error = Some(e.to_string());
        }
    }
    r
}

struct StepPrograms<B: Backend> {
    step: TrainStep,
    full: B::Program,
    /// The program for the last, smaller batch of an epoch.
    rest: Option<B::Program>,
}

fn compile_steps<B: Backend>(
    b: &B,
    model: &Model,
    opt: &Optimizer,
    batch: usize,
    n: usize,
    feed: Feed,
    dropout: bool,
) -> BResult<StepPrograms<B>> {
    let step = training_step(model, opt, batch, feed, dropout)?;
    let full = b.compile(&step.graph)?;
    let rest = match n % batch {
        0 => None,
        r => Some(b.compile(&training_step(model, opt, r, feed, dropout)?.graph)?),
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
) -> BResult<(f64, f64)> {
    let chunk = EVAL_CHUNK.min(n);
    let (mut loss, mut correct) = (0.0, 0.0);
    for start in (0..n).step_by(chunk) {
        let valid = chunk.min(n - start);
        // The last chunk is padded with repeats of its first example; their results are dropped.
        let idx: Vec<i64> =
            (0..chunk).map(|i| (start + if i < valid { i } else { 0 }) as i64).collect();
        let idx = b.upload(&HostTensor::i64(vec![chunk], idx).expect("length"))?;
        let inputs: Vec<&B::Tensor> = params.iter().chain([&data.0, &data.1, &idx]).collect();
        let out = b.run(prog, &inputs)?;
        let l = b.download(&out[0])?;
        let c = b.download(&out[1])?;
        loss += l.as_f32().expect("f32")[..valid].iter().map(|&v| v as f64).sum::<f64>();
        correct += c.as_f32().expect("f32")[..valid].iter().map(|&v| v as f64).sum::<f64>();
    }
    Ok((loss / n as f64, correct / n as f64))
}

fn train_cell<B: Backend>(
    b: &B,
    plan: &CellPlan,
    model: &Model,
    optimizer: &Optimizer,
    obs: &mut dyn Observer,
) -> BResult<Outcome> {
    let w = plan.workload;
    let reg = plan.regularizer;
    let (train, test) = (&plan.split.train, &plan.split.test);
    let n = train.len();
    let cell_start = Instant::now();
    let specs = model.params()?;
    let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
    let feed = if reg.augment > 0 { Feed::Batch } else { Feed::Gather { examples: n } };
    let dropout = reg.dropout > 0.0;
    let mut lr = optimizer.lr;
    let mut progs = compile_steps(b, model, optimizer, w.batch, n, feed, dropout)?;
    let mut eval_train =
        b.compile(&eval_graph(model, EVAL_CHUNK.min(n), Feed::Gather { examples: n })?)?;
    let mut eval_test = b.compile(&eval_graph(
        model,
        EVAL_CHUNK.min(test.len()),
        Feed::Gather { examples: test.len() },
    )?)?;

    let upload_all =
        |ts: &[HostTensor]| ts.iter().map(|t| b.upload(t)).collect::<BResult<Vec<_>>>();
    let mut state = upload_all(&init_params(&specs, plan.seed))?;
    state.extend(upload_all(&optimizer.initial_state(&shapes))?);
    let n_params = progs.step.params;
    let n_state = n_params + progs.step.state;
    let (tx, ty) = train.tensors();
    let train_dev = (b.upload(&tx)?, b.upload(&ty)?);
    let (vx, vy) = test.tensors();
    let test_dev = (b.upload(&vx)?, b.upload(&vy)?);
    let sites = model.dropout_sites(w.batch);

    let mut order_rng = Rng::stream(plan.seed, "order");
    let mut dropout_rng = Rng::stream(plan.seed, "dropout");
    let mut augment_rng = Rng::stream(plan.seed, "augment");
    let mut o = Outcome {
        status: Status::NoFit,
        epochs: 0,
        steps: 0,
        fit: None,
        train_seconds: Seconds(0.0),
        step_seconds: Vec::new(),
        history: Vec::new(),
        step_losses: Vec::new(),
        diverged_at: None,
        test: None,
    };
    let mut last_finite = f64::NAN;
    'epochs: for epoch in 1..=w.max_epochs {
        let epoch_lr = optimizer.lr * w.lr_decay.powi(epoch as i32 - 1);
        if epoch_lr != lr {
            lr = epoch_lr;
            progs = compile_steps(
                b,
                model,
                &Optimizer { lr, ..*optimizer },
                w.batch,
                n,
                feed,
                dropout,
            )?;
        }
        let order = order_rng.permutation(n);
        for chunk in order.chunks(w.batch) {
            if obs.should_stop() {
                o.status = Status::Interrupted;
                break 'epochs;
            }
            if w.timeout.is_some_and(|t| cell_start.elapsed().as_secs_f64() > t.0) {
                o.status = Status::Timeout;
                break 'epochs;
            }
            let size = chunk.len();
            // Host-side preparation (indices, augmentation, masks) is not timed.
            let host: Vec<HostTensor> = match feed {
                Feed::Gather { .. } => {
                    vec![HostTensor::i64(vec![size], chunk.iter().map(|&i| i as i64).collect())
                        .expect("length")]
                }
                Feed::Batch => {
                    let (x, y) = train.batch(chunk);
                    let shape = x.shape().to_vec();
                    let mut pixels = x.into_f32().expect("f32");
                    translate_batch(&mut pixels, train.shape, reg.augment, &mut augment_rng);
                    vec![HostTensor::f32(shape, pixels).expect("length"), y]
                }
            };
            let masks = if dropout {
                let s: Vec<Vec<usize>> = sites
                    .iter()
                    .map(|s| {
                        let mut s = s.clone();
                        s[0] = size;
                        s
                    })
                    .collect();
                dropout_masks(&s, reg.dropout, &mut dropout_rng)
            } else {
                vec![]
            };
            let prog = if size == w.batch {
                &mut progs.full
            } else {
                progs.rest.as_mut().expect("a program for the last batch")
            };
            let t0 = Instant::now();
            let fed = upload_all(&host)?;
            let mask_dev = upload_all(&masks)?;
            let mut inputs: Vec<&B::Tensor> = state.iter().collect();
            if let Feed::Gather { .. } = feed {
                inputs.extend([&train_dev.0, &train_dev.1]);
            }
            inputs.extend(fed.iter());
            inputs.extend(mask_dev.iter());
            let mut out = b.run(prog, &inputs)?;
            b.sync()?;
            let dt = t0.elapsed().as_secs_f64();
            o.train_seconds.0 += dt;
            o.step_seconds.push((dt, size));
            let loss = b.download(&out[n_state])?.to_scalar().expect("scalar loss") as f64;
            out.truncate(n_state);
            state = out;
            o.steps += 1;
            if o.step_losses.len() < TRACE_STEPS {
                o.step_losses.push(loss as f32);
            }
            if !loss.is_finite() {
                o.status = Status::Diverged;
                o.diverged_at = Some((o.steps, last_finite));
                o.epochs = epoch;
                return Ok(o);
            }
            last_finite = loss;
        }
        o.epochs = epoch;
        let (train_loss, train_acc) =
            evaluate(b, &mut eval_train, &state[..n_params], &train_dev, n)?;
        o.history.push(EpochRecord {
            epoch,
            train_loss,
            train_accuracy: train_acc,
            seconds: o.train_seconds,
        });
        obs.epoch(epoch, train_acc);
        if train_acc >= w.target_accuracy {
            o.status = Status::Ok;
            o.fit = Some((epoch, o.steps, o.train_seconds));
            break;
        }
    }
    if o.status != Status::Interrupted {
        o.test = Some(evaluate(b, &mut eval_test, &state[..n_params], &test_dev, test.len())?);
    }
    Ok(o)
}
