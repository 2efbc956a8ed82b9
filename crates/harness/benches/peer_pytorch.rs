//! randbench's backends against their peer, a plain PyTorch eager Python loop running the
//! same work (scripts/peers/pytorch_eager.py, with the project environment's python), side by
//! side in one run, and the ratios.
//!
//!   cargo bench -p randbench --features tch --bench peer_pytorch                 # MLP step, L2L unroll, few-shot
//!   cargo bench -p randbench --features tch --bench peer_pytorch -- --suite      # and the randomization suite
//!   cargo bench -p randbench --features tch --bench peer_pytorch -- --few-shot   # the few-shot steps alone
//!
//! `--suite` runs the whole randomization suite on every side in turns (the idioms on
//! randbench's data, weights and batch order), each side between two runs of its own
//! fixed-batch steps, and compares rates over all steps (see [`compare_suite`]).
//!
//! The step: 784-512-10 MLP, batch 128, SGD momentum, on a fixed batch; timed step by step
//! after warm-up, weights reset every 50 steps (untimed) on both sides. All sides take turns,
//! three rounds each, and the medians of the rounds are compared: this machine's speed drifts
//! by as much as a factor of two over minutes, so only measurements taken in turn compare.
//! "host round trip" downloads the parameters and optimizer state after every step and
//! uploads them again, inside the timed step: what keeping state on the device saves.
//! "fusion off" runs ONNX Runtime's own ops one by one instead of randbench's fused
//! elementwise kernels (`RANDBENCH_ORT_FUSION=off`): what fusion saves, on the step and the
//! unroll.
//!
//! Each engine's own idiom takes its turn too: the step as its documentation teaches it,
//! from randbench's initial weights (peers/): candle-nn (`VarMap`, `linear`, an `Optimizer`),
//! tch's `nn` (`VarStore`, `nn::seq`, `nn::Sgd`, `backward_step`), and burn's book (`nn`
//! modules, `backward`, its SGD: scripts/peers/burn_idiom, a process of its own). randbench's
//! side against its engine's idiom is what driving the engine through the IR costs or saves.
//! The products table puts each engine's matrix products alone side by side, and the step
//! rate they bound. The fairness tables (randbench against each idiom and against PyTorch)
//! are printed and written to reports/fairness/ (report.md, report.html).
//!
//! The unroll: one meta-training unroll of the learned optimizer (scripts/peers/pytorch_l2l.py):
//! a 2×20 LSTM on 128 quadratics of dimension 10, 20 steps, the outer gradient and an Adam
//! step; a new problem every 5 unrolls on both sides. Three rounds in turns, as the step.
//!
//! Few-shot: one meta-training step of the few-shot learner (scripts/peers/pytorch_maml.py,
//! with functional parameters and `torch.autograd.grad`): the four-block convolutional learner
//! (32 filters, batch norm) on 28×28 images, 5-way 1-shot episodes with 15 queries, 4 tasks,
//! the meta-gradient and an Adam step; MAML with one inner step, second order (through the
//! inner gradient) and first order, and the meta-learner LSTM (12 updates). The episodes are
//! fixed random images on both sides; randbench chains the meta-parameters and Adam's state
//! from step to step and reads the meta-loss every step. Three rounds in turns, each of
//! [`few_shot_steps`] steps after 2 untimed; printed only (no idioms to judge it by).

use randbench::backends::BackendVisitor;
use randbench::datasets::{load_data, DataSource, DataSpec};
use randbench::report::{Column, Document, Html, Markdown, Reporter, Table, Terminal};
use randbench_core::corrupt::Condition;
use randbench_core::data::{Dataset, Split};
use randbench_core::fewshot::{Inner, Order};
use randbench_core::l2l::{carried, unroll, LstmOptimizer, Outer};
use randbench_core::models::{init_params, Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::rng::Rng;
use randbench_core::stats::Summary;
use randbench_core::testing::{meta_step_inputs, mlp_batch, small_quadratics};
use randbench_core::train::{starting_state, training_step, Feed};
use randbench_core::{Backend, BackendId, DType, GradMode, Graph, HostTensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const STEPS: usize = 400;
const RESET_EVERY: usize = 50;
const WARMUP: usize = 20;
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;

/// A training loop as an engine's own documentation teaches it (peers/): the 784-512-10 MLP
/// built from the engine's layer modules, its loss, `backward` and its optimizer. Every idiom
/// starts from randbench's initial weights and is fed randbench's batches.
trait Idiom: Sized {
    type Tensor;
    const NAME: &'static str;
    /// The model holding `initial` (randbench's [w1 [784, 512], b1, w2 [512, 10], b2]) and a
    /// fresh SGD with momentum.
    fn new(initial: &[HostTensor], lr: f64, momentum: f64) -> Self;
    /// A host tensor (f32 or i64) on the engine's CPU device.
    fn upload(t: &HostTensor) -> Self::Tensor;
    /// The rows `examples` of `data`.
    fn gather(data: &Self::Tensor, examples: &[usize]) -> Self::Tensor;
    /// One training step on the batch (images flattened to [n, 784], labels).
    fn step(&mut self, x: &Self::Tensor, y: &Self::Tensor);
    /// The share of `x` classified as `y`.
    fn accuracy(&self, x: &Self::Tensor, y: &Self::Tensor) -> f64;
}

#[path = "peers/candle_nn.rs"]
mod candle_nn_idiom;
#[path = "common/fewshot.rs"]
mod fewshot;
#[path = "peers/tch_nn.rs"]
mod tch_nn_idiom;
use candle_nn_idiom::CandleNn;
use tch_nn_idiom::TchNn;

/// Images as the MLP takes them: [n, 784].
fn flat(x: HostTensor) -> HostTensor {
    let n = x.shape()[0];
    let pixels = x.into_f32().expect("f32 images");
    HostTensor::f32(vec![n, pixels.len() / n], pixels).expect("length")
}

/// The seconds of `steps` timed steps of idiom `I` on the fixed batch, timed as [`StepTimer`]
/// times randbench's.
fn idiom_step_times<I: Idiom>(steps: usize) -> Vec<f64> {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let params = init_params(&model.params().unwrap(), 0);
    let (x, y) = mlp_batch(128, 0);
    let (x, y) = (I::upload(&flat(x)), I::upload(&y));
    timed_steps(steps, || I::new(&params, LR, MOMENTUM), |idiom| idiom.step(&x, &y))
}

/// The seconds of `steps` timed calls of `step` on a state from `fresh`, made again every
/// `RESET_EVERY` steps (untimed), after `WARMUP` untimed steps. What `step` returns is
/// dropped after the clock stops.
fn timed_steps<S, R>(
    steps: usize,
    mut fresh: impl FnMut() -> S,
    mut step: impl FnMut(&mut S) -> R,
) -> Vec<f64> {
    let mut times = Vec::new();
    let mut warm = WARMUP;
    while times.len() < steps {
        let mut state = fresh();
        for _ in 0..RESET_EVERY {
            let t = Instant::now();
            let done = step(&mut state);
            let dt = t.elapsed().as_secs_f64();
            drop(done);
            if warm > 0 {
                warm -= 1
            } else {
                times.push(dt)
            }
        }
    }
    times
}

/// Median seconds of `f` over `reps` calls, after one untimed.
fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&times)
}

/// Median seconds of one step of burn's own loop (scripts/peers/burn_idiom, a crate of its
/// own: burn's `nn` and `optim` cannot share this workspace's build, see Cargo.toml). With
/// `randbench_allocator`, glibc is told what `sys::tune_allocator` tells it in randbench's
/// processes (keep freed megabyte blocks), so that the two differ only in the code.
fn burn_idiom_median(randbench_allocator: bool) -> f64 {
    let peer = root().join("scripts/peers/burn_idiom");
    let mut cmd = Command::new(root().join("target/peers/release/burn_idiom"));
    cmd.args(["step", "--steps", &STEPS.to_string()]);
    if randbench_allocator {
        cmd.env("GLIBC_TUNABLES", randbench::sys::allocator_tunables());
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{}: {e}", peer.display()));
    assert!(out.status.success(), "burn_idiom failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the peer");
    v["median_step_seconds"].as_f64().unwrap()
}

/// Builds burn's idiomatic peer (untimed) before the rounds begin.
fn build_burn_idiom() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root().join("scripts/peers/burn_idiom/Cargo.toml"))
        .arg("--target-dir")
        .arg(root().join("target/peers"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "scripts/peers/burn_idiom does not build");
}

fn median(v: &[f64]) -> f64 {
    Summary::of(v).expect("measurements").median
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let py = root().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(root().join("scripts/peers").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup-native.sh)", py.display()));
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from the peer")
}

/// The seconds of every timed training step through randbench on backend `b`.
struct StepTimer {
    round_trip: bool,
    steps: usize,
}

impl BackendVisitor for StepTimer {
    type Out = Vec<f64>;
    fn visit<B: Backend>(self, b: &B) -> Vec<f64> {
        let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
        let opt = Optimizer::momentum(0.01, 0.9);
        let step = training_step(&model, &opt, 128, Feed::Batch, false).unwrap();
        let mut prog = b.compile(&step.graph).unwrap();
        let initial = starting_state(&model.params().unwrap(), &opt, 0);
        let (x, y) = mlp_batch(128, 0);
        let data = [b.upload(&x).unwrap(), b.upload(&y).unwrap()];
        let n = step.params + step.state;
        let fresh = || -> Vec<B::Tensor> { initial.iter().map(|t| b.upload(t).unwrap()).collect() };
        // The step's new state replaces the old, which is dropped after the clock stops.
        timed_steps(self.steps, fresh, |state| {
            let inputs: Vec<&B::Tensor> = state.iter().chain(data.iter()).collect();
            let mut out = b.run(&mut prog, &inputs).unwrap();
            out.truncate(n);
            if self.round_trip {
                out = out.iter().map(|t| b.upload(&b.download(t).unwrap()).unwrap()).collect();
            }
            b.sync().unwrap();
            std::mem::replace(state, out)
        })
    }
}

/// One randbench side of the comparison.
struct Side {
    name: String,
    id: BackendId,
    grad: GradMode,
    variant: Variant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The backend as the randbench binary runs it.
    Plain,
    /// State downloaded and uploaded again every step (the MLP step only).
    HostRoundTrip,
    /// ONNX Runtime's own ops one by one (`RANDBENCH_ORT_FUSION=off`): what fusion saves.
    FusionOff,
}

impl Side {
    /// Runs `v` on this side's backend.
    fn visit<V: BackendVisitor>(&self, v: V) -> V::Out {
        // The backend reads the variable when it is made; this bench runs on one thread.
        if self.variant == Variant::FusionOff {
            std::env::set_var(FUSION, "off");
        }
        let out = randbench::backends::with_backend(self.id, self.grad, v);
        std::env::remove_var(FUSION);
        out.unwrap()
    }
}

const FUSION: &str = "RANDBENCH_ORT_FUSION";

/// The randbench sides of the comparison: every CPU backend this binary has, in the
/// `variants` asked for.
fn sides(variants: &[Variant]) -> Vec<Side> {
    let mut v = Vec::new();
    for id in randbench::backends::usable_here()
        .into_iter()
        .filter(|id| id.device == randbench_core::Device::Cpu)
    {
        let mut side = |name: String, grad: GradMode, variant: Variant| {
            if variants.contains(&variant) {
                v.push(Side { name, id, grad, variant });
            }
        };
        if id.engine == randbench_core::Engine::Ort {
            side(format!("{id}"), GradMode::Symbolic, Variant::Plain);
            side(format!("{id}, host round trip"), GradMode::Symbolic, Variant::HostRoundTrip);
            side(format!("{id}, fusion off"), GradMode::Symbolic, Variant::FusionOff);
        } else {
            side(format!("{id}, native"), GradMode::Native, Variant::Plain);
            side(format!("{id}, symbolic"), GradMode::Symbolic, Variant::Plain);
        }
    }
    v
}

/// Each engine's own idiom, where it has one in this bench, for the ratio randbench's path
/// is judged by (ONNX Runtime has no training idiom of its own in Rust).
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdiomSide {
    CandleNn,
    TchNn,
}

impl IdiomSide {
    const ALL: [IdiomSide; 2] = [IdiomSide::CandleNn, IdiomSide::TchNn];

    fn name(self) -> &'static str {
        match self {
            IdiomSide::CandleNn => CandleNn::NAME,
            IdiomSide::TchNn => TchNn::NAME,
        }
    }

    fn engine(self) -> randbench_core::Engine {
        match self {
            IdiomSide::CandleNn => randbench_core::Engine::Candle,
            IdiomSide::TchNn => randbench_core::Engine::Tch,
        }
    }

    fn step_times(self, steps: usize) -> Vec<f64> {
        match self {
            IdiomSide::CandleNn => idiom_step_times::<CandleNn>(steps),
            IdiomSide::TchNn => idiom_step_times::<TchNn>(steps),
        }
    }

    fn suite(self, data: &SuiteData) -> SuiteRun {
        match self {
            IdiomSide::CandleNn => idiom_suite::<CandleNn>(data),
            IdiomSide::TchNn => idiom_suite::<TchNn>(data),
        }
    }
}

/// The idiom of `engine`'s own, if this bench has one.
fn idiom_of(engine: randbench_core::Engine) -> Option<IdiomSide> {
    IdiomSide::ALL.into_iter().find(|i| i.engine() == engine)
}

fn compare_step() -> Vec<FairnessRow> {
    let sides = sides(&[Variant::Plain, Variant::HostRoundTrip, Variant::FusionOff]);
    let mut peer = Vec::new();
    let mut idioms = vec![Vec::new(); IdiomSide::ALL.len()];
    let with_burn = sides.iter().any(|s| s.id.engine == randbench_core::Engine::Burn);
    if with_burn {
        build_burn_idiom();
    }
    let (mut burn, mut burn_tuned) = (Vec::new(), Vec::new());
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let steps = STEPS.to_string();
    for _ in 0..3 {
        peer.push(
            python("pytorch_eager.py", &["step", "--steps", &steps])["median_step_seconds"]
                .as_f64()
                .unwrap(),
        );
        for (k, idiom) in IdiomSide::ALL.iter().enumerate() {
            idioms[k].push(median(&idiom.step_times(STEPS)));
        }
        if with_burn {
            burn.push(burn_idiom_median(false));
            burn_tuned.push(burn_idiom_median(true));
        }
        for (k, side) in sides.iter().enumerate() {
            let round_trip = side.variant == Variant::HostRoundTrip;
            let times = side.visit(StepTimer { round_trip, steps: STEPS });
            ours[k].push(median(&times));
        }
    }
    let p = median(&peer);
    println!("MLP 784-512-10 training step, batch 128, SGD momentum (median of 3 rounds of {STEPS} steps)");
    println!("  {:<32} {:>8.0} steps/s", "PyTorch eager (python)", 1.0 / p);
    let idioms: Vec<f64> = idioms.iter().map(|t| median(t)).collect();
    for (idiom, t) in IdiomSide::ALL.iter().zip(&idioms) {
        println!("  {:<32} {:>8.0} steps/s   {:.2}× PyTorch", idiom.name(), 1.0 / t, p / t);
    }
    let burn = (!burn.is_empty()).then(|| (median(&burn), median(&burn_tuned)));
    if let Some((b, bt)) = burn {
        for (name, t) in [("burn idiom (nn, optim)", b), ("burn idiom, randbench's malloc", bt)] {
            println!("  {name:<32} {:>8.0} steps/s   {:.2}× PyTorch", 1.0 / t, p / t);
        }
    }
    // Each engine's own idiom and its median step.
    let mut own_idioms: Vec<(randbench_core::Engine, &str, f64)> =
        IdiomSide::ALL.iter().zip(&idioms).map(|(i, &t)| (i.engine(), i.name(), t)).collect();
    own_idioms.extend(burn.map(|(b, _)| (randbench_core::Engine::Burn, "burn idiom", b)));
    let mut fairness = Vec::new();
    for (side, t) in sides.iter().zip(&ours) {
        let t = median(t);
        let own = own_idioms.iter().find(|i| i.0 == side.id.engine).map(|&(_, name, o)| (name, o));
        let vs_own = own.map(|(name, o)| format!("   {:.2}× {name}", o / t)).unwrap_or_default();
        let tuned = match (side.id.engine, burn) {
            (randbench_core::Engine::Burn, Some((_, bt))) => {
                format!(" ({:.2}× with its malloc)", bt / t)
            }
            _ => String::new(),
        };
        println!(
            "  {:<32} {:>8.0} steps/s   {:.2}× PyTorch{vs_own}{tuned}",
            format!("randbench {}", side.name),
            1.0 / t,
            p / t
        );
        if side.variant == Variant::Plain {
            fairness.push(FairnessRow {
                side: side.name.clone(),
                rate: 1.0 / t,
                idiom: own.map(|(name, o)| (name.to_string(), 1.0 / o)),
                pytorch: 1.0 / p,
            });
        }
    }
    fairness
}

/// Median seconds of one f32 product [m, k] · [k, n] through randbench on backend `b` (a
/// graph of one `MatMul`, inputs on the device, synchronized).
struct ProductTimer {
    m: usize,
    k: usize,
    n: usize,
}

impl BackendVisitor for ProductTimer {
    type Out = f64;
    fn visit<B: Backend>(self, b: &B) -> f64 {
        let (m, k, n) = (self.m, self.k, self.n);
        let mut g = Graph::new();
        let (x, w) = (g.input("a", &[m, k], DType::F32), g.input("b", &[k, n], DType::F32));
        let product = g.matmul(x, w).unwrap();
        g.output("product", product);
        let mut prog = b.compile(&g).unwrap();
        let mut rng = Rng::stream(0, "products");
        let mut host = |rows, cols| {
            let v = (0..rows * cols).map(|_| rng.uniform() as f32).collect();
            b.upload(&HostTensor::f32(vec![rows, cols], v).unwrap()).unwrap()
        };
        let inputs = [host(m, k), host(k, n)];
        median_seconds(PRODUCT_REPS, || {
            b.run(&mut prog, &[&inputs[0], &inputs[1]]).unwrap();
            b.sync().unwrap();
        })
    }
}

const PRODUCT_REPS: usize = 200;

/// The MLP step's large products on every engine, in turns: each engine's products alone, and
/// the step rate they bound. The step's products are [128, 784]·[784, 512] forward and
/// [784, 128]·[128, 512] for the weights' gradient (the second layer's three are 2% of it);
/// an evaluation chunk's is [1000, 784]·[784, 512].
fn compare_products() {
    let sides = sides(&[Variant::Plain]);
    let sides: Vec<&Side> = randbench_core::Engine::ALL
        .iter()
        .filter_map(|e| sides.iter().find(|s| s.id.engine == *e))
        .collect();
    let shapes = [(128, 784, 512), (784, 128, 512), (1000, 784, 512)];
    let mut seconds = vec![vec![Vec::new(); shapes.len()]; sides.len()];
    for _ in 0..3 {
        for (side, secs) in sides.iter().zip(seconds.iter_mut()) {
            for (&(m, k, n), s) in shapes.iter().zip(secs.iter_mut()) {
                s.push(side.visit(ProductTimer { m, k, n }));
            }
        }
    }
    println!(
        "\nf32 matrix products through each engine (GFLOP/s, median of 3 rounds of \
         {PRODUCT_REPS}, in turns); the step's bound: its two large products alone"
    );
    print!("  {:<14}", "");
    for (m, k, n) in shapes {
        print!(" {:>20}", format!("[{m}, {k}]·[{k}, {n}]"));
    }
    println!(" {:>18}", "step bound");
    for (side, secs) in sides.iter().zip(&seconds) {
        print!("  {:<14}", side.id.to_string());
        for (&(m, k, n), s) in shapes.iter().zip(secs) {
            print!(" {:>20.1}", 2.0 * (m * k * n) as f64 / median(s) / 1e9);
        }
        println!(" {:>11.0} steps/s", 1.0 / (median(&secs[0]) + median(&secs[1])));
    }
}

const UNROLLS: usize = 100;

/// Median seconds of one meta-training unroll through randbench: θ and the LSTM state start
/// again every 5 unrolls (a new problem, untimed), φ and Adam's state go on.
struct UnrollTimer;

impl BackendVisitor for UnrollTimer {
    type Out = f64;
    fn visit<B: Backend>(self, b: &B) -> f64 {
        let opt = LstmOptimizer::default();
        let problem = small_quadratics(128, 10);
        let g = unroll(&opt, &problem, 20, Outer::Adam { lr: 1e-3 }, false).unwrap();
        let carried = carried(&g);
        let fresh: Vec<usize> = g
            .inputs()
            .iter()
            .enumerate()
            .filter(|(_, &id)| {
                let name = g.input_name(id);
                name.starts_with("theta") || name.starts_with("state")
            })
            .map(|(k, _)| k)
            .collect();
        let mut prog = b.compile(&g).unwrap();
        let initial = meta_step_inputs(&opt, &problem, 20, 0);
        let mut inputs: Vec<B::Tensor> = initial.iter().map(|t| b.upload(t).unwrap()).collect();
        let mut times = Vec::new();
        for k in 0..UNROLLS + 2 {
            if k % 5 == 0 {
                for &i in &fresh {
                    inputs[i] = b.upload(&initial[i]).unwrap();
                }
            }
            let t = Instant::now();
            let refs: Vec<&B::Tensor> = inputs.iter().collect();
            let out = b.run(&mut prog, &refs).unwrap();
            b.sync().unwrap();
            let dt = t.elapsed().as_secs_f64();
            for &(o, i) in &carried {
                inputs[i] = out[o].clone();
            }
            if k >= 2 {
                times.push(dt);
            }
        }
        median(&times)
    }
}

fn compare_unroll() {
    let sides = sides(&[Variant::Plain, Variant::FusionOff]);
    let mut peer = Vec::new();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let unrolls = UNROLLS.to_string();
    for _ in 0..3 {
        let p = python("pytorch_l2l.py", &["unroll", "--unrolls", &unrolls]);
        peer.push(p["median_unroll_seconds"].as_f64().unwrap());
        for (k, side) in sides.iter().enumerate() {
            ours[k].push(side.visit(UnrollTimer));
        }
    }
    let p = median(&peer);
    println!(
        "\nLearned-optimizer meta-training unroll: 2×20 LSTM, 128 quadratics of dimension 10, \
         20 steps with outer gradient and Adam step (median of 3 rounds of {UNROLLS} unrolls)"
    );
    println!("  {:<32} {:>8.1} unrolls/s", "PyTorch eager (python)", 1.0 / p);
    for (side, t) in sides.iter().zip(&ours) {
        let t = median(t);
        println!(
            "  {:<32} {:>8.1} unrolls/s   {:.2}× PyTorch",
            format!("randbench {}", side.name),
            1.0 / t,
            p / t
        );
    }
}

/// Timed meta-training steps per round and side: a MAML step takes 0.1–1.5 s on a 2-core CPU,
/// the meta-learner's (12 updates) about ten times as long.
fn few_shot_steps(m: &fewshot::Method) -> usize {
    match m.inner {
        Inner::MetaLearner(_) => 3,
        _ => 10,
    }
}

/// scripts/peers/pytorch_maml.py's arguments for the same step as `m`'s.
fn peer_args(m: &fewshot::Method) -> Vec<String> {
    match m.inner {
        Inner::Gradient { adaptation, order } => {
            let order = if order == Order::Second { "second" } else { "first" };
            let steps = adaptation.steps.to_string();
            let lr = adaptation.lr.to_string();
            ["--method", "maml", "--order", order, "--inner-steps", &steps, "--inner-lr", &lr]
                .map(String::from)
                .into()
        }
        Inner::MetaLearner(l) => {
            let (hidden, updates) = (l.hidden.to_string(), l.steps.to_string());
            ["--method", "meta-learner", "--hidden", &hidden, "--updates", &updates]
                .map(String::from)
                .into()
        }
        Inner::FineTune { .. } => unreachable!("fine-tuning is not meta-trained"),
    }
}

/// Median seconds of one few-shot meta-training step through randbench, after 2 untimed: the
/// meta-parameters and Adam's state chained from step to step by name, the meta-loss read
/// every step.
struct FewShotTimer {
    method: fewshot::Method,
}

impl BackendVisitor for FewShotTimer {
    type Out = f64;
    fn visit<B: Backend>(self, b: &B) -> f64 {
        let (g, initial) = fewshot::meta_step(self.method.inner);
        let carried = carried(&g);
        let meta_loss = g.outputs().iter().position(|(n, _)| n == "meta_loss").unwrap();
        let mut prog = b.compile(&g).unwrap();
        let mut inputs: Vec<B::Tensor> = initial.iter().map(|t| b.upload(t).unwrap()).collect();
        let mut times = Vec::new();
        for k in 0..few_shot_steps(&self.method) + 2 {
            let t = Instant::now();
            let refs: Vec<&B::Tensor> = inputs.iter().collect();
            let out = b.run(&mut prog, &refs).unwrap();
            let loss = b.download(&out[meta_loss]).unwrap().to_scalar().unwrap();
            b.sync().unwrap();
            let dt = t.elapsed().as_secs_f64();
            assert!(loss.is_finite(), "the meta-loss diverged");
            for &(o, i) in &carried {
                inputs[i] = out[o].clone();
            }
            if k >= 2 {
                times.push(dt);
            }
        }
        median(&times)
    }
}

/// The few-shot meta-training steps (MAML second and first order, the meta-learner LSTM) on
/// every side in turns: per round the PyTorch peer and then every randbench side, each method
/// in its turn.
fn compare_few_shot() {
    let methods = fewshot::METHODS;
    let sides = sides(&[Variant::Plain]);
    let mut peer = vec![Vec::new(); methods.len()];
    let mut ours = vec![vec![Vec::new(); methods.len()]; sides.len()];
    for _ in 0..3 {
        for (k, m) in methods.iter().enumerate() {
            let mut args = peer_args(m);
            args.extend(["--steps".to_string(), few_shot_steps(m).to_string()]);
            let p = python("pytorch_maml.py", &args.iter().map(String::as_str).collect::<Vec<_>>());
            peer[k].push(p["median_step_seconds"].as_f64().unwrap());
        }
        for (side, times) in sides.iter().zip(ours.iter_mut()) {
            for (k, &method) in methods.iter().enumerate() {
                times[k].push(side.visit(FewShotTimer { method }));
            }
        }
    }
    let (l, s) = (fewshot::LEARNER, fewshot::SHAPE);
    println!(
        "\nFew-shot meta-training step: {}-block learner ({} filters) on {}×{} images, {}-way \
         {}-shot, {} queries per class, {} tasks, Adam {}; MAML {} inner step(s) at {}, the \
         meta-learner LSTM {} units and {} updates (median of 3 rounds in turns)",
        l.blocks,
        l.filters,
        l.side,
        l.side,
        s.way,
        s.shot,
        s.query,
        fewshot::TASKS,
        fewshot::META_LR,
        fewshot::INNER.steps,
        fewshot::INNER.lr,
        fewshot::META_LEARNER.hidden,
        fewshot::META_LEARNER.steps,
    );
    print!("{:<34}", "");
    for m in &methods {
        print!(" {:<31}", m.key);
    }
    println!();
    let p: Vec<f64> = peer.iter().map(|t| median(t)).collect();
    print!("  {:<32}", "PyTorch eager (python)");
    for t in &p {
        print!(" {:>8.2} steps/s {:>13}", 1.0 / t, "");
    }
    println!();
    for (side, times) in sides.iter().zip(&ours) {
        print!("  {:<32}", format!("randbench {}", side.name));
        for (t, p) in times.iter().zip(&p) {
            let t = median(t);
            print!(" {:>8.2} steps/s {:>5.2}× PyTorch", 1.0 / t, p / t);
        }
        println!();
    }
}

/// Rounds of the suite comparison: each runs the whole suite once on every side.
const SUITE_ROUNDS: usize = 2;
/// Timed steps on the fixed batch before and after each side's suite run.
const SUITE_FIXED_STEPS: usize = 1000;

/// The randomization suite's conditions, in the suite's order.
const CONDITIONS: [Condition; 5] = [
    Condition::TrueLabels,
    Condition::RandomLabels,
    Condition::ShuffledPixels,
    Condition::RandomPixels,
    Condition::Gaussian,
];
/// The suite's seed, batch and epoch budget (bench-suites/randomization.yaml).
const SUITE_SEED: u64 = 0;
const SUITE_BATCH: usize = 128;
const SUITE_MAX_EPOCHS: usize = 400;

/// One side's run of the whole suite: per condition, epochs to fit (if it fitted), training
/// seconds, steps and test accuracy.
struct SuiteRun {
    conditions: Vec<(Option<u64>, f64, f64, f64)>,
}

impl SuiteRun {
    /// Steps per second over the whole suite: all steps over all training seconds.
    fn rate(&self) -> f64 {
        let (seconds, steps) =
            self.conditions.iter().fold((0.0, 0.0), |(s, n), c| (s + c.1, n + c.2));
        steps / seconds
    }
}

fn peer_suite() -> SuiteRun {
    let peer = python("pytorch_eager.py", &["randomization"]);
    SuiteRun {
        conditions: CONDITIONS
            .iter()
            .map(|c| {
                let p = &peer[c.to_string()];
                (
                    p["epochs_to_fit"].as_u64(),
                    p["train_seconds"].as_f64().unwrap(),
                    p["steps"].as_f64().unwrap(),
                    p["test_accuracy"].as_f64().unwrap(),
                )
            })
            .collect(),
    }
}

/// The suite's data as randbench prepares it: 5,000 Fashion-MNIST training images and the test
/// set, standardized with the whole training set's mean and deviation.
struct SuiteData {
    split: Split,
}

impl SuiteData {
    fn load() -> Self {
        let spec = DataSpec {
            source: DataSource::FashionMnist,
            path: None,
            train: Some(5000),
            test: None,
            image: [1, 28, 28],
            classes: 10,
            normalize: true,
        };
        Self { split: load_data(&spec).expect("Fashion-MNIST (run scripts/setup-data.sh)") }
    }
}

/// The suite in idiom `I`, as randbench runs it: each condition's data corrupted by the
/// core, randbench's initial weights, five warm-up steps on a throwaway model, then
/// randbench's batch order, epoch by epoch until the training set is fitted; a step's time
/// takes in gathering its batch, as randbench's takes in uploading its indices.
fn idiom_suite<I: Idiom>(data: &SuiteData) -> SuiteRun {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let initial = init_params(&model.params().unwrap(), SUITE_SEED);
    let conditions = CONDITIONS
        .iter()
        .map(|condition| {
            let mut split = data.split.clone();
            condition.apply(&mut split, SUITE_SEED);
            let on_device = |set: &Dataset| {
                let (x, y) = set.tensors();
                (I::upload(&flat(x)), I::upload(&y))
            };
            let (train, test) = (on_device(&split.train), on_device(&split.test));
            let n = split.train.len();
            let step = |idiom: &mut I, examples: &[usize]| {
                let t = Instant::now();
                idiom.step(&I::gather(&train.0, examples), &I::gather(&train.1, examples));
                t.elapsed().as_secs_f64()
            };
            let mut warm_rng = Rng::stream(SUITE_SEED, "warmup");
            let mut warm = I::new(&initial, LR, MOMENTUM);
            for _ in 0..randbench::families::WARMUP_STEPS {
                let examples: Vec<usize> = (0..SUITE_BATCH).map(|_| warm_rng.below(n)).collect();
                step(&mut warm, &examples);
            }
            let mut idiom = I::new(&initial, LR, MOMENTUM);
            let mut order_rng = Rng::stream(SUITE_SEED, "order");
            let (mut seconds, mut steps, mut fit) = (0.0, 0, None);
            for epoch in 1..=SUITE_MAX_EPOCHS {
                for examples in order_rng.permutation(n).chunks(SUITE_BATCH) {
                    seconds += step(&mut idiom, examples);
                    steps += 1;
                }
                if idiom.accuracy(&train.0, &train.1) >= 1.0 {
                    fit = Some(epoch as u64);
                    break;
                }
            }
            (fit, seconds, steps as f64, idiom.accuracy(&test.0, &test.1))
        })
        .collect();
    SuiteRun { conditions }
}

/// The suite through `randbench run` on one backend and gradient mode, in this process's turn.
fn randbench_suite(id: BackendId, grad: GradMode) -> SuiteRun {
    let out = std::env::temp_dir().join(format!("randbench-peer-{}-{id}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(["run", "randomization", "--isolate", "none", "--backends", &id.to_string()])
        .args(["--grad", if grad == GradMode::Native { "native" } else { "symbolic" }, "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("randbench runs");
    assert!(status.success(), "randbench run randomization failed on {id}");
    let results =
        randbench_schema::results::read(&out, &randbench::families::Registry).unwrap().results;
    std::fs::remove_dir_all(&out).unwrap();
    let conditions = CONDITIONS
        .iter()
        .map(|c| {
            let m = results
                .iter()
                .find_map(|r| match randbench::families::Metrics::of(r).ok()? {
                    randbench::families::Metrics::Randomization(m)
                        if r.cell.variant_label() == c.to_string() =>
                    {
                        Some(m)
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no result for {c} on {id}"));
            (
                m.epochs_to_fit.map(|e| e as u64),
                m.train_seconds.0,
                m.steps as f64,
                m.test_accuracy.unwrap_or(f64::NAN),
            )
        })
        .collect();
    SuiteRun { conditions }
}

/// The whole randomization suite against the fixed batch, every side taking turns: in each
/// round the PyTorch eager loop and then every randbench side run the suite, each between two
/// runs of its own fixed-batch steps. Both rates are all steps over all their seconds (the suite's
/// training seconds, evaluation excluded on both sides), so the tail counts as it does in a
/// real run; the medians of the rounds are compared.
/// Who runs the suite in its turn.
enum Contender<'a> {
    PyTorch,
    Idiom(IdiomSide),
    Randbench(&'a Side),
}

impl Contender<'_> {
    fn name(&self) -> String {
        match self {
            Contender::PyTorch => "PyTorch eager (python)".into(),
            Contender::Idiom(i) => i.name().into(),
            Contender::Randbench(side) => format!("randbench {}", side.name),
        }
    }

    /// Steps per second over all timed steps on the fixed batch.
    fn fixed_rate(&self) -> f64 {
        let times = match self {
            Contender::PyTorch => {
                let steps = SUITE_FIXED_STEPS.to_string();
                let p = python("pytorch_eager.py", &["step", "--steps", &steps]);
                return 1.0 / p["mean_step_seconds"].as_f64().unwrap();
            }
            Contender::Idiom(i) => i.step_times(SUITE_FIXED_STEPS),
            Contender::Randbench(side) => {
                side.visit(StepTimer { round_trip: false, steps: SUITE_FIXED_STEPS })
            }
        };
        times.len() as f64 / times.iter().sum::<f64>()
    }

    fn suite(&self, data: &SuiteData) -> SuiteRun {
        match self {
            Contender::PyTorch => peer_suite(),
            Contender::Idiom(i) => i.suite(data),
            Contender::Randbench(side) => randbench_suite(side.id, side.grad),
        }
    }
}

/// The whole randomization suite against the fixed batch, every side taking turns: in each
/// round the PyTorch eager loop, each engine's idiom and then every randbench side run the
/// suite, each between two runs of its own fixed-batch steps. Both rates are all steps over
/// all their seconds (the suite's training seconds, evaluation excluded on every side), so
/// the tail counts as it does in a real run; the medians of the rounds are compared.
fn compare_suite() -> Vec<FairnessRow> {
    let sides = sides(&[Variant::Plain]);
    let contenders: Vec<Contender> = std::iter::once(Contender::PyTorch)
        .chain(IdiomSide::ALL.into_iter().map(Contender::Idiom))
        .chain(sides.iter().map(Contender::Randbench))
        .collect();
    let data = SuiteData::load();
    // Per contender: fixed-batch rates, suite rates, the last suite run.
    let n = contenders.len();
    let (mut fixed, mut suite) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut runs: Vec<Option<SuiteRun>> = (0..n).map(|_| None).collect();
    for round in 1..=SUITE_ROUNDS {
        for (k, contender) in contenders.iter().enumerate() {
            // The fixed batch right before and right after the suite brackets it in time.
            fixed[k].push(contender.fixed_rate());
            let run = contender.suite(&data);
            fixed[k].push(contender.fixed_rate());
            suite[k].push(run.rate());
            eprintln!(
                "round {round}: {} {:.0} steps/s over the suite",
                contender.name(),
                run.rate()
            );
            runs[k] = Some(run);
        }
    }
    println!(
        "\nRandomization suite (Fashion-MNIST, 5,000 images, five conditions, to 100% training \
         accuracy) against the fixed batch, median of {SUITE_ROUNDS} rounds in turns; steps/s \
         is all steps over all training seconds (evaluation excluded)"
    );
    println!(
        "  {:<32} {:>12} {:>12} {:>12} {:>12}",
        "", "fixed batch", "suite", "suite/fixed", "vs PyTorch"
    );
    let rates: Vec<f64> = suite.iter().map(|s| median(s)).collect();
    for (k, contender) in contenders.iter().enumerate() {
        let (f, s) = (median(&fixed[k]), rates[k]);
        println!(
            "  {:<32} {:>8.0} /s {:>8.0} /s {:>11.2}× {:>11.2}×",
            contender.name(),
            f,
            s,
            s / f,
            s / rates[0]
        );
    }
    println!(
        "\nOutcomes of the last round: epochs to fit (– if not within {SUITE_MAX_EPOCHS}) and \
         test accuracy."
    );
    println!(
        "The idioms start from randbench's weights and take its batches; the PyTorch side draws \
         other random numbers, so its epochs differ."
    );
    print!("  {:<32}", "");
    for c in CONDITIONS {
        print!(" {:>16}", c.to_string());
    }
    println!();
    for (contender, run) in contenders.iter().zip(&runs) {
        print!("  {:<32}", contender.name());
        for (epochs, _, _, test) in &run.as_ref().unwrap().conditions {
            let e = epochs.map(|e| e.to_string()).unwrap_or_else(|| "–".into());
            print!(" {:>16}", format!("{e} ep {:.1}%", 100.0 * test));
        }
        println!();
    }
    let idiom_rate = |engine| {
        let i = idiom_of(engine)?;
        let k = contenders.iter().position(|c| matches!(c, Contender::Idiom(j) if *j == i))?;
        Some((i.name().to_string(), rates[k]))
    };
    contenders
        .iter()
        .zip(&rates)
        .filter_map(|(c, &rate)| match c {
            Contender::Randbench(side) => Some(FairnessRow {
                side: side.name.clone(),
                rate,
                idiom: idiom_rate(side.id.engine),
                pytorch: rates[0],
            }),
            _ => None,
        })
        .collect()
}

/// One randbench side against its engine's idiom and against PyTorch eager, in steps per
/// second measured in the same turns.
struct FairnessRow {
    side: String,
    rate: f64,
    /// The engine's own idiom and its rate, where this bench has one.
    idiom: Option<(String, f64)>,
    pytorch: f64,
}

/// The fairness table: each randbench side against its engine's idiom and PyTorch eager.
fn fairness_table(title: &str, caption: String, rows: &[FairnessRow]) -> Table {
    let header =
        ["randbench side", "steps/s", "own idiom", "idiom steps/s", "× idiom", "× PyTorch"]
            .iter()
            .enumerate()
            .map(|(k, h)| if k == 0 || k == 2 { Column::plain(h) } else { Column::figure(h) })
            .collect();
    let pytorch = rows.first().map_or(f64::NAN, |r| r.pytorch);
    let rows = rows
        .iter()
        .map(|r| {
            let (idiom, idiom_rate, vs_idiom) = match &r.idiom {
                Some((name, rate)) => {
                    (name.clone(), format!("{rate:.0}"), format!("{:.2}×", r.rate / rate))
                }
                None => ("–".into(), "–".into(), "–".into()),
            };
            vec![
                r.side.clone(),
                format!("{:.0}", r.rate),
                idiom,
                idiom_rate,
                vs_idiom,
                format!("{:.2}×", r.rate / r.pytorch),
            ]
        })
        .collect();
    let notes = vec![format!(
        "PyTorch eager (scripts/peers/pytorch_eager.py): {pytorch:.0} steps/s. × idiom, × \
         PyTorch: randbench's steps per second over theirs, measured in the same turns. The \
         idioms (crates/harness/benches/peers/, scripts/peers/burn_idiom) build the model from \
         the engine's own layers and train it with its own loss, backward and optimizer, from \
         randbench's initial weights (in the suite, on its data and batch order too). ONNX \
         Runtime has no training API in its Rust crate, so ort-cpu has no idiom of its own; \
         burn's, a program of its own, runs the fixed step only."
    )];
    Table { title: title.into(), caption, header, rows, notes }
}

/// Where the fairness report goes: reports/fairness/ (report.md, report.html).
fn write_fairness(tables: Vec<Table>) {
    let dir = root().canonicalize().unwrap().join("reports/fairness");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = Document::tables("fairness", tables);
    print!("\n{}", Terminal.render(&doc));
    for (file, text) in [("report.md", Markdown.render(&doc)), ("report.html", Html.render(&doc))] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    println!("fairness report: {}", dir.display());
}

fn main() {
    randbench::sys::tune_allocator();
    randbench::backends::configure_cpu_threads().expect("RANDBENCH_THREADS");
    let with_suite = std::env::args().any(|a| a == "--suite");
    if std::env::args().any(|a| a == "--few-shot") {
        // The few-shot steps alone: their rounds take minutes, the rest of the comparison as
        // long again.
        compare_few_shot();
        return;
    }
    let command = format!(
        "cargo bench -p randbench --features tch,ort --bench peer_pytorch{}",
        if with_suite { " -- --suite" } else { "" }
    );
    let step = compare_step();
    compare_products();
    compare_unroll();
    compare_few_shot();
    let mut tables = vec![fairness_table(
        "the MLP step",
        format!(
            "784-512-10 MLP, batch 128, SGD momentum, fixed batch; median of 3 rounds of \
             {STEPS} steps in turns; {command}"
        ),
        &step,
    )];
    if with_suite {
        let suite = compare_suite();
        tables.push(fairness_table(
            "the randomization suite",
            format!(
                "bench-suites/randomization.yaml, five conditions to 100% training accuracy; \
                 all steps over all training seconds, median of {SUITE_ROUNDS} rounds in \
                 turns; {command}"
            ),
            &suite,
        ));
    }
    write_fairness(tables);
}
