//! One learned-optimizer cell: tune the baselines on training problems, meta-train by
//! truncated backpropagation through time with periodic validation (keeping the best
//! checkpoint), save the weights, then evaluate the learned optimizer and every tuned baseline
//! on the same held-out problems.
//!
//! Every program chains: the outputs of one run named like its inputs (θ, LSTM state, φ and
//! the meta-optimizer's state, a baseline's state) feed the next run. Evaluations and
//! baselines run in chunks of `unroll` steps, so one compiled program serves every horizon.

use super::{
    weights, BaselineRule, Beat, Curve, Evaluation, Family, Metrics, ProblemSpec, ProblemVariant,
    Ratio, Tuned, Validation, LEARNED,
};
use crate::families::training::{chain, upload_named, Named};
use crate::families::{Guard, Loss};
use crate::families::{Job, Record};
use crate::nvml::DeviceMemoryWatch;
use crate::slowdown;
use crate::sys;
use randbench_core::backend::{BResult, Backend, BackendError, Device};
use randbench_core::data::{Dataset, Split};
use randbench_core::graph::Graph;
use randbench_core::l2l::{
    baseline_state, baseline_unroll, meta_optimizer, meta_state, unroll, zero_state, LstmOptimizer,
    Outer, Problem,
};
use randbench_core::models::init_params;
use randbench_core::rng::Rng;
use randbench_core::stats::{mean_interval, paired_bootstrap_ratio, Summary};
use randbench_core::tensor::HostTensor;
use randbench_core::units::{Bytes, Seconds};
use randbench_schema::{Observer, Progress, Status};
use std::collections::HashMap;
use std::time::Instant;

/// Unrolls run on a throwaway problem before the clock starts.
const WARMUP_UNROLLS: usize = 2;
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A compiled program and the graph it came from (for its input and output names).
struct Compiled<B: Backend> {
    graph: Graph,
    program: B::Program,
    losses: usize,
}

fn compile<B: Backend>(b: &B, graph: Graph) -> BResult<Compiled<B>> {
    let program = b.compile(&graph)?;
    let losses = graph.outputs().iter().position(|(n, _)| n == "losses").expect("losses output");
    Ok(Compiled { graph, program, losses })
}

/// Runs `p` on the named tensors; outputs named like an input replace it. Returns the
/// outputs.
fn run_named<B: Backend>(
    b: &B,
    p: &mut Compiled<B>,
    named: &mut Named<B::Tensor>,
) -> BResult<Vec<B::Tensor>> {
    chain(b, &p.graph, &mut p.program, named)
}

fn to_f64s<B: Backend>(b: &B, t: &B::Tensor) -> BResult<Vec<f64>> {
    let h = b.download(t)?;
    Ok(h.as_f32().expect("losses are f32").iter().map(|&v| v as f64).collect())
}

/// One problem of a family: its fixed inputs (a quadratic's W and y), θ₀, and the seed of
/// its minibatches, so that every optimizer sees the same problem.
struct Instance {
    fixed: Vec<HostTensor>,
    theta: Vec<HostTensor>,
    batches: u64,
}

fn instances(problem: &Problem, rng: &mut Rng, n: usize) -> Vec<Instance> {
    (0..n)
        .map(|_| Instance {
            fixed: problem.draw_fixed(rng),
            theta: problem.draw_theta(rng),
            batches: rng.next_u64(),
        })
        .collect()
}

/// A problem with the data its programs read on the device (the MLP's images), and the
/// programs compiled for it so far.
struct Bench<'b, B: Backend> {
    b: &'b B,
    problem: Problem,
    /// The MLP's data set, named as the programs' inputs; empty for the other problems.
    data: Named<B::Tensor>,
    chunk: usize,
    learned: Option<Compiled<B>>,
    baselines: HashMap<BaselineRule, Compiled<B>>,
}

impl<'b, B: Backend> Bench<'b, B> {
    fn new(b: &'b B, problem: Problem, data: Option<&Dataset>, chunk: usize) -> BResult<Self> {
        let mut named = Named::new();
        if let Some(set) = data {
            let n = set.len();
            let pixels = set.image_size();
            let images = HostTensor::f32(vec![n, pixels], set.images.clone()).expect("sizes");
            let labels = HostTensor::i64(vec![n], set.labels.clone()).expect("sizes");
            upload_named(b, &mut named, ["data".into(), "labels".into()], &[images, labels])?;
        }
        Ok(Self { b, problem, data: named, chunk, learned: None, baselines: HashMap::new() })
    }

    /// Inputs of one run on `inst`: the data set, its fixed inputs and θ₀.
    fn start(&self, inst: &Instance) -> BResult<Named<B::Tensor>> {
        let mut named = self.data.clone();
        // The MLP's fixed inputs are its data set, already there: its instances have none.
        let fixed_names = self.problem.fixed_inputs().into_iter().map(|(n, _, _)| n);
        upload_named(self.b, &mut named, fixed_names, &inst.fixed)?;
        let theta_names = (0..inst.theta.len()).map(|i| format!("theta{i}"));
        upload_named(self.b, &mut named, theta_names, &inst.theta)?;
        Ok(named)
    }

    /// Draws from `rng` the per-step inputs (minibatches) of a run of `steps` steps.
    fn upload_steps(
        &self,
        named: &mut Named<B::Tensor>,
        rng: &mut Rng,
        steps: usize,
    ) -> BResult<()> {
        let per_step = self.problem.draw_steps(rng, steps);
        let names = self.problem.step_inputs(steps).into_iter().map(|(n, _, _)| n);
        upload_named(self.b, named, names, &per_step)
    }

    /// A fresh LSTM state of `opt` for this problem.
    fn reset_state(&self, named: &mut Named<B::Tensor>, opt: &LstmOptimizer) -> BResult<()> {
        let state = zero_state(opt, &self.problem);
        let names = (0..state.len()).map(|i| format!("state{i}"));
        upload_named(self.b, named, names, &state)
    }

    /// Runs `steps` steps in chunks, drawing each chunk's minibatches; the losses f(θ_0..θ_T).
    fn chain(
        &self,
        p: &mut Compiled<B>,
        named: &mut Named<B::Tensor>,
        inst: &Instance,
        steps: usize,
    ) -> BResult<Vec<f64>> {
        let mut rng = Rng::new(inst.batches);
        let mut losses = Vec::with_capacity(steps + 1);
        for c in 0..steps.div_ceil(self.chunk) {
            self.upload_steps(named, &mut rng, self.chunk)?;
            let out = run_named(self.b, p, named)?;
            let chunk = to_f64s(self.b, &out[p.losses])?;
            let keep = (steps - c * self.chunk).min(self.chunk);
            let skip = usize::from(c > 0); // f(θ) at a chunk's start ended the chunk before
            losses.extend(&chunk[skip..=keep]);
        }
        Ok(losses)
    }

    /// The learned optimizer φ on `inst` for `steps` steps.
    fn learned(
        &mut self,
        opt: &LstmOptimizer,
        phi: &[HostTensor],
        inst: &Instance,
        steps: usize,
    ) -> BResult<Vec<f64>> {
        let mut p = match self.learned.take() {
            Some(p) => p,
            None => compile(self.b, unroll(opt, &self.problem, self.chunk, Outer::None, false)?)?,
        };
        let result = (|| {
            let mut named = self.start(inst)?;
            let names = opt.params().into_iter().map(|s| s.name);
            upload_named(self.b, &mut named, names, phi)?;
            self.reset_state(&mut named, opt)?;
            self.chain(&mut p, &mut named, inst, steps)
        })();
        self.learned = Some(p);
        result
    }

    /// A baseline at rate `lr` on `inst` for `steps` steps.
    fn baseline(
        &mut self,
        rule: BaselineRule,
        lr: f64,
        inst: &Instance,
        steps: usize,
    ) -> BResult<Vec<f64>> {
        let mut p = match self.baselines.remove(&rule) {
            Some(p) => p,
            None => compile(self.b, baseline_unroll(rule.rule(), &self.problem, self.chunk)?)?,
        };
        let result = (|| {
            let mut named = self.start(inst)?;
            named.insert("lr".into(), self.b.upload(&HostTensor::scalar(lr as f32))?);
            let state = baseline_state(rule.rule(), &self.problem);
            let names: Vec<String> = p
                .graph
                .inputs()
                .iter()
                .map(|&id| p.graph.input_name(id).to_string())
                .filter(|n| n.starts_with("slot") || n == "step")
                .collect();
            upload_named(self.b, &mut named, names, &state)?;
            self.chain(&mut p, &mut named, inst, steps)
        })();
        self.baselines.insert(rule, p);
        result
    }
}

/// The core problem a workload's spec and variant describe, on `set` (the MLP's split part).
fn problem_of(spec: &ProblemSpec, variant: &ProblemVariant, set: Option<&Dataset>) -> Problem {
    match spec {
        ProblemSpec::Quadratic { functions, dim, distribution } => {
            Problem::Quadratic { functions: *functions, dim: *dim, distribution: *distribution }
        }
        ProblemSpec::Mlp { hidden, activation, batch, .. } => {
            let set = set.expect("the mlp problem has data");
            Problem::Mlp {
                pixels: set.image_size(),
                classes: set.classes,
                examples: set.len(),
                hidden: variant.hidden.clone().unwrap_or_else(|| hidden.clone()),
                activation: variant.activation.unwrap_or(*activation),
                batch: *batch,
            }
        }
        ProblemSpec::Simple => Problem::Simple,
    }
}

fn mean_last(losses: &[Vec<f64>]) -> Option<f64> {
    let last: Vec<f64> = losses.iter().map(|l| *l.last().expect("a loss per step")).collect();
    mean_interval(&last).map(|(m, _, _)| m)
}

/// Memory `f` takes: on a GPU the peak device memory of the process (NVML), on the CPU how far
/// the resident set grew above its size when `f` began (libraries and data already loaded are
/// not the program's).
fn peak_during<T>(device: Device, f: impl FnOnce() -> T) -> (T, Option<Bytes>) {
    sys::reset_peak_memory();
    let before = sys::resident_memory();
    let watch = match device {
        Device::Cuda(n) => DeviceMemoryWatch::start(n),
        Device::Cpu => None,
    };
    let out = f();
    let device_peak = watch.and_then(DeviceMemoryWatch::finish);
    let peak = match device {
        Device::Cuda(_) => device_peak,
        Device::Cpu => match (sys::peak_memory(), before) {
            (Some(p), Some(b)) => Some(Bytes(p.0.saturating_sub(b.0))),
            _ => None,
        },
    };
    (out, peak)
}

pub fn run<B: Backend>(
    b: &B,
    job: &Job<Family>,
    record: &mut Record,
    obs: &mut dyn Observer,
) -> BResult<Metrics> {
    let w = job.workload;
    let opt = w.optimizer;
    let mut m = <Family as crate::families::WorkloadFamily>::unmeasured(job);
    let split: Option<&Split> = job.data.as_ref();
    let base = &w.variants[0];
    let train_problem = problem_of(&w.problem, base, split.map(|s| &s.train));
    m.coordinates = train_problem.coordinates();
    let chunk = w.meta.unroll;
    let mut train = Bench::new(b, train_problem.clone(), split.map(|s| &s.train), chunk)?;

    // ---- baselines tuned on training problems of the problem meta-training sees ----
    obs.progress(Progress::Compiling);
    m.tuned = tune(&mut train, job, base)?;
    let adam_lr = m.tuned.iter().find(|t| t.rule == BaselineRule::Adam).map(|t| t.lr);

    // ---- validation problems, and tuned Adam on them ----
    let validation = instances(
        &train_problem,
        &mut Rng::stream(job.seed, "l2l/validation"),
        w.meta.validation_problems,
    );
    if let Some(lr) = adam_lr {
        let runs: Vec<Vec<f64>> = validation
            .iter()
            .map(|inst| train.baseline(BaselineRule::Adam, lr, inst, base.steps))
            .collect::<BResult<_>>()?;
        m.adam_validation_loss = mean_last(&runs);
    }

    // ---- meta-training (or the saved optimizer) ----
    let mut phi = init_params(&opt.params(), job.seed);
    record.status = Status::Ok;
    if let Some(path) = &w.load {
        phi = weights::load(path, &opt)
            .map_err(|e| BackendError::Library { backend: b.id(), message: e.to_string() })?;
    } else {
        phi = meta_train(b, job, &mut train, &validation, phi, record, obs, &mut m)?;
        if let Some(dir) = job.artifacts {
            let path = dir.join(format!(
                "{}-seed{}-{}.safetensors",
                w.name,
                job.seed,
                b.id().to_string().replace(':', "")
            ));
            weights::save(&path, &opt, &phi).map_err(|e| BackendError::Library {
                backend: b.id(),
                message: format!("saving the learned optimizer to {}: {e}", path.display()),
            })?;
            m.weights = Some(path);
        }
    }
    if matches!(record.status, Status::Interrupted | Status::Timeout) {
        return Ok(m);
    }

    // ---- memory of one unroll program by length ----
    for &k in &w.memory_unrolls {
        let graph = unroll(&opt, &train_problem, k, Outer::Adam { lr: w.meta.lr }, false)?;
        let mut throwaway = Rng::stream(job.seed, "l2l/memory");
        let inst = &instances(&train_problem, &mut throwaway, 1)[0];
        let (done, peak) = peak_during(b.id().device, || -> BResult<()> {
            let mut p = compile(b, graph)?;
            let mut named = meta_inputs(b, &train, &opt, &phi, inst)?;
            train.upload_steps(&mut named, &mut throwaway, k)?;
            run_named(b, &mut p, &mut named)?;
            b.sync()
        });
        done?;
        m.memory_by_unroll.push((k, peak));
    }

    // ---- held-out evaluation, the same problems for every optimizer ----
    let mut rng_boot = Rng::stream(job.seed, "l2l/bootstrap");
    for variant in &w.variants {
        let set = split.map(|s| &s.test);
        let problem = problem_of(&w.problem, variant, set);
        // Each variant's baselines are tuned for it: on training problems of its own
        // architecture and steps (the base's tuning where nothing differs).
        let on_train = problem_of(&w.problem, variant, split.map(|s| &s.train));
        let tuned = if variant == base {
            m.tuned.clone()
        } else if on_train == train_problem {
            tune(&mut train, job, variant)?
        } else {
            tune(&mut Bench::new(b, on_train, split.map(|s| &s.train), chunk)?, job, variant)?
        };
        // Quadratics and x² are the same problem family held out: the training bench's
        // programs serve; the MLP is evaluated on the test split, a bench of its own.
        let mut own;
        let bench: &mut Bench<B> = if set.is_none() && problem == train_problem {
            &mut train
        } else {
            own = Bench::new(b, problem.clone(), set, chunk)?;
            &mut own
        };
        let stream = format!("l2l/heldout/{}", variant.name);
        let held = instances(&problem, &mut Rng::stream(job.seed, &stream), w.eval_problems);
        let mut curves = Vec::new();
        let learned: Vec<Vec<f64>> = held
            .iter()
            .map(|inst| bench.learned(&opt, &phi, inst, variant.steps))
            .collect::<BResult<_>>()?;
        curves.push(curve(LEARNED, None, &learned));
        for t in &tuned {
            let runs: Vec<Vec<f64>> = held
                .iter()
                .map(|inst| bench.baseline(t.rule, t.lr, inst, variant.steps))
                .collect::<BResult<_>>()?;
            curves.push(curve(t.rule.name(), Some(t.lr), &runs));
        }
        let ratio_to_adam = curves.iter().find(|c| c.optimizer == "adam").and_then(|adam| {
            let (learned, adam) = (curves[0].finite_last()?, adam.finite_last()?);
            let (r, lo, hi) =
                paired_bootstrap_ratio(&learned, &adam, BOOTSTRAP_RESAMPLES, &mut rng_boot)?;
            Some(Ratio { estimate: r, lo, hi })
        });
        m.evaluations.push(Evaluation {
            problem: variant.name.clone(),
            steps: variant.steps,
            problems: held.len(),
            curves,
            ratio_to_adam,
            tuned,
        });
    }
    Ok(m)
}

/// Each baseline's rate: the grid's rate with the lowest mean last-step loss over `variant`'s
/// steps on the tuning problems (their own stream, the same for every variant).
fn tune<B: Backend>(
    bench: &mut Bench<B>,
    job: &Job<Family>,
    variant: &ProblemVariant,
) -> BResult<Vec<Tuned>> {
    let w = job.workload;
    let mut rng = Rng::stream(job.seed, "l2l/tuning");
    let tuning = instances(&bench.problem, &mut rng, w.tuning_problems);
    let mut tuned = Vec::with_capacity(w.baselines.len());
    for &rule in &w.baselines {
        let mut grid = Vec::with_capacity(w.lrs.len());
        for &lr in &w.lrs {
            let runs: Vec<Vec<f64>> = tuning
                .iter()
                .map(|inst| bench.baseline(rule, lr, inst, variant.steps))
                .collect::<BResult<_>>()?;
            grid.push((lr, mean_last(&runs)));
        }
        let best = grid
            .iter()
            .filter_map(|&(lr, loss)| loss.map(|l| (lr, l)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(lr, _)| lr);
        if let Some(lr) = best {
            tuned.push(Tuned { rule, lr, grid });
        }
    }
    Ok(tuned)
}

fn curve(name: &str, lr: Option<f64>, runs: &[Vec<f64>]) -> Curve {
    let steps = runs[0].len();
    let mut c = Curve {
        optimizer: name.into(),
        lr,
        mean: Vec::with_capacity(steps),
        lo: Vec::with_capacity(steps),
        hi: Vec::with_capacity(steps),
        last: runs.iter().map(|r| Some(r[steps - 1]).filter(|x| x.is_finite())).collect(),
    };
    for t in 0..steps {
        let at: Vec<f64> = runs.iter().map(|r| r[t]).collect();
        let (mean, lo, hi) = match mean_interval(&at) {
            Some((m, l, h)) => (Some(m), Some(l), Some(h)),
            None => (None, None, None),
        };
        c.mean.push(mean);
        c.lo.push(lo);
        c.hi.push(hi);
    }
    c
}

/// The inputs of a meta-training unroll at the start of a problem: φ, a fresh meta-optimizer
/// state, the problem, fresh LSTM state.
fn meta_inputs<B: Backend>(
    b: &B,
    bench: &Bench<B>,
    opt: &LstmOptimizer,
    phi: &[HostTensor],
    inst: &Instance,
) -> BResult<Named<B::Tensor>> {
    let mut named = bench.start(inst)?;
    let specs = opt.params();
    upload_named(b, &mut named, specs.iter().map(|s| s.name.clone()), phi)?;
    let adam_names = meta_optimizer(0.0).state_names(&specs);
    upload_named(b, &mut named, adam_names, &meta_state(opt))?;
    bench.reset_state(&mut named, opt)?;
    Ok(named)
}

/// Meta-trains φ; returns the best validated φ (the last one where no validation ran).
#[allow(clippy::too_many_arguments)]
fn meta_train<B: Backend>(
    b: &B,
    job: &Job<Family>,
    train: &mut Bench<B>,
    validation: &[Instance],
    phi: Vec<HostTensor>,
    record: &mut Record,
    obs: &mut dyn Observer,
    m: &mut Metrics,
) -> BResult<Vec<HostTensor>> {
    let w = job.workload;
    let guard = job.guard();
    let opt = w.optimizer;
    let unroll_len = w.meta.unroll;
    let delay = slowdown::step_delay(b.id());
    let compiling = Instant::now();
    let graph = unroll(&opt, &train.problem, unroll_len, Outer::Adam { lr: w.meta.lr }, false)?;
    let mut p = compile(b, graph)?;
    record.compile_seconds = Some(Seconds(compiling.elapsed().as_secs_f64()));
    let phi_names: Vec<String> = opt.params().into_iter().map(|s| s.name).collect();
    let meta_loss = p.graph.outputs().iter().position(|(n, _)| n == "meta_loss").expect("output");

    // Warm-up on a throwaway problem: its outputs are dropped, the clock has not started.
    let mut warm = Rng::stream(job.seed, "l2l/warmup");
    let inst = &instances(&train.problem, &mut warm, 1)[0];
    let warm_inputs = meta_inputs(b, train, &opt, &phi, inst)?;
    for k in 0..WARMUP_UNROLLS {
        let mut named = warm_inputs.clone();
        train.upload_steps(&mut named, &mut warm, unroll_len)?;
        let t = Instant::now();
        run_named(b, &mut p, &mut named)?;
        b.sync()?;
        if k == 0 {
            record.first_step_seconds = Some(Seconds(t.elapsed().as_secs_f64()));
        }
    }

    let mut rng = Rng::stream(job.seed, "l2l/train");
    // φ and a fresh meta-optimizer state; each epoch brings its own problem.
    let mut named = warm_inputs;
    let mut best: Option<(f64, Vec<HostTensor>, usize)> = None;
    let mut times = Vec::new();
    let mut seconds = 0.0;
    let unrolls_per_problem = w.meta.horizon / unroll_len;
    for epoch in 1..=w.meta.epochs {
        if guard.halt(obs, record) {
            break;
        }
        // A new problem: fresh θ and LSTM state; φ and the meta-optimizer's state go on.
        let inst = &instances(&train.problem, &mut rng, 1)[0];
        named.extend(train.start(inst)?);
        train.reset_state(&mut named, &opt)?;
        let mut batches = Rng::new(inst.batches);
        for _ in 0..unrolls_per_problem {
            train.upload_steps(&mut named, &mut batches, unroll_len)?;
            let t = Instant::now();
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            let out = run_named(b, &mut p, &mut named)?;
            b.sync()?;
            let dt = t.elapsed().as_secs_f64();
            times.push(dt);
            seconds += dt;
            let loss = to_f64s(b, &out[meta_loss])?[0];
            if let Loss::Diverged { step } = Guard::loss(record, times.len(), loss, true) {
                Guard::diverged(record, step);
                break;
            }
        }
        m.epochs = epoch;
        if record.status == Status::Diverged {
            break;
        }
        if epoch % w.meta.eval_every == 0 || epoch == w.meta.epochs {
            let current: Vec<HostTensor> =
                phi_names.iter().map(|n| b.download(&named[n])).collect::<BResult<_>>()?;
            let runs: Vec<Vec<f64>> = validation
                .iter()
                .map(|v| train.learned(&opt, &current, v, w.variants[0].steps))
                .collect::<BResult<_>>()?;
            let loss = mean_last(&runs);
            m.validations.push(Validation { epoch, seconds: Seconds(seconds), loss });
            if let (Some(l), Some(adam)) = (loss, m.adam_validation_loss) {
                if l < adam && m.time_to_beat_adam.is_none() {
                    m.time_to_beat_adam = Some(Beat { epoch, seconds: Seconds(seconds) });
                }
            }
            if let Some(l) = loss {
                if best.as_ref().is_none_or(|(b, _, _)| l < *b) {
                    best = Some((l, current, epoch));
                }
                obs.progress(Progress::Epoch { epoch, of: w.meta.epochs, score: l });
            }
        }
    }
    m.meta_seconds = Seconds(seconds);
    let rates: Vec<f64> = times.iter().map(|t| 1.0 / t).collect();
    m.unrolls_per_second = Summary::of(&rates);
    let coordinate_steps = (m.coordinates * unroll_len) as f64;
    m.coordinate_steps_per_second = m.unrolls_per_second.map(|s| s.scaled(coordinate_steps));
    match best {
        Some((_, phi, epoch)) => {
            m.best_epoch = Some(epoch);
            Ok(phi)
        }
        None => phi_names.iter().map(|n| b.download(&named[n])).collect(),
    }
}
