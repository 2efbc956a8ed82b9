//! randbench's backends against their peer, a plain PyTorch eager Python loop running the
//! same work (scripts/peers/pytorch_eager.py, with the project environment's python), side by
//! side in one run, and the ratios.
//!
//!   cargo bench -p randbench --features tch --bench peer_pytorch             # MLP step, L2L unroll
//!   cargo bench -p randbench --features tch --bench peer_pytorch -- --suite  # and the randomization suite
//!
//! `--suite` runs the whole randomization suite on every side in turns, each side between two
//! runs of its own fixed-batch steps, and compares rates over all steps (see [`compare_suite`]).
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
//! The same step written by hand with candle-core and candle-nn ("candle by hand") takes its
//! turn too: randbench's candle-cpu against it is the cost of the IR. So does the step as
//! burn's book teaches it ("burn idiom": its `nn` modules, `backward`, its SGD), against
//! randbench's burn-cpu.
//!
//! The unroll: one meta-training unroll of the learned optimizer (scripts/peers/pytorch_l2l.py):
//! a 2×20 LSTM on 128 quadratics of dimension 10, 20 steps, the outer gradient and an Adam
//! step; a new problem every 5 unrolls on both sides. Three rounds in turns, as the step.

use candle_core::{DType, Device as CDevice, Tensor, Var};
use randbench::backends::BackendVisitor;
use randbench_core::l2l::{carried, unroll, LstmOptimizer, Outer};
use randbench_core::models::{init_params, Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::stats::Summary;
use randbench_core::testing::{meta_step_inputs, mlp_batch, small_quadratics};
use randbench_core::train::{starting_state, training_step, Feed};
use randbench_core::{Backend, BackendId, GradMode, HostTensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const STEPS: usize = 400;
const RESET_EVERY: usize = 50;
const WARMUP: usize = 20;
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;

struct HandStep {
    vars: Vec<Var>,
    bufs: Vec<Tensor>,
}

impl HandStep {
    fn new(params: &[HostTensor]) -> Self {
        let vars: Vec<Var> = params
            .iter()
            .map(|p| Var::from_slice(p.as_f32().unwrap(), p.shape(), &CDevice::Cpu).unwrap())
            .collect();
        let bufs = vars.iter().map(|v| v.zeros_like().unwrap()).collect();
        Self { vars, bufs }
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let [w1, b1, w2, b2] = [&self.vars[0], &self.vars[1], &self.vars[2], &self.vars[3]];
        let h =
            x.reshape((128, 784))?.matmul(w1.as_tensor())?.broadcast_add(b1.as_tensor())?.relu()?;
        let logits = h.matmul(w2.as_tensor())?.broadcast_add(b2.as_tensor())?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        let accuracy =
            logits.argmax(1)?.to_dtype(DType::I64)?.eq(y)?.to_dtype(DType::F32)?.mean_all()?;
        let grads = loss.backward()?;
        for (v, buf) in self.vars.iter().zip(self.bufs.iter_mut()) {
            let g = grads.get(v.as_tensor()).expect("every parameter has a gradient");
            *buf = (buf.affine(MOMENTUM, 0.0)? + g)?;
            v.set(&(v.as_tensor() - buf.affine(LR, 0.0)?)?)?;
        }
        Ok((loss, accuracy))
    }
}

/// Median seconds of one training step written by hand with candle, timed as [`StepTimer`].
fn hand_step_median() -> f64 {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let params = init_params(&model.params().unwrap(), 0);
    let (x, y) = mlp_batch(128, 0);
    let cx = Tensor::from_slice(x.as_f32().unwrap(), x.shape(), &CDevice::Cpu).unwrap();
    let cy = Tensor::from_slice(y.as_i64().unwrap(), y.shape(), &CDevice::Cpu).unwrap();
    let mut times = Vec::new();
    let mut warm = WARMUP;
    while times.len() < STEPS {
        let mut hand = HandStep::new(&params);
        for _ in 0..RESET_EVERY {
            let t = Instant::now();
            hand.step(&cx, &cy).unwrap();
            let dt = t.elapsed().as_secs_f64();
            if warm > 0 {
                warm -= 1
            } else {
                times.push(dt)
            }
        }
    }
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
        let mut times = Vec::new();
        let mut warm = WARMUP;
        while times.len() < self.steps {
            let mut state: Vec<B::Tensor> = initial.iter().map(|t| b.upload(t).unwrap()).collect();
            for _ in 0..RESET_EVERY {
                let t = Instant::now();
                let inputs: Vec<&B::Tensor> = state.iter().chain(data.iter()).collect();
                let mut out = b.run(&mut prog, &inputs).unwrap();
                out.truncate(n);
                if self.round_trip {
                    out = out.iter().map(|t| b.upload(&b.download(t).unwrap()).unwrap()).collect();
                }
                b.sync().unwrap();
                let dt = t.elapsed().as_secs_f64();
                state = out;
                if warm > 0 {
                    warm -= 1
                } else {
                    times.push(dt)
                }
            }
        }
        times
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

fn compare_step() {
    let sides = sides(&[Variant::Plain, Variant::HostRoundTrip, Variant::FusionOff]);
    let mut peer = Vec::new();
    let mut hand = Vec::new();
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
        hand.push(hand_step_median());
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
    let h = median(&hand);
    println!("  {:<32} {:>8.0} steps/s   {:.2}× PyTorch", "candle by hand", 1.0 / h, p / h);
    let idiom = (!burn.is_empty()).then(|| (median(&burn), median(&burn_tuned)));
    if let Some((b, bt)) = idiom {
        for (name, t) in [("burn idiom (nn, optim)", b), ("burn idiom, randbench's malloc", bt)] {
            println!("  {name:<32} {:>8.0} steps/s   {:.2}× PyTorch", 1.0 / t, p / t);
        }
    }
    for (side, t) in sides.iter().zip(&ours) {
        let t = median(t);
        let ir = match (side.id.engine, idiom) {
            (randbench_core::Engine::Candle, _) => format!("   {:.2}× candle by hand", h / t),
            (randbench_core::Engine::Burn, Some((b, bt))) => {
                format!("   {:.2}× burn idiom ({:.2}× with its malloc)", b / t, bt / t)
            }
            _ => String::new(),
        };
        println!(
            "  {:<32} {:>8.0} steps/s   {:.2}× PyTorch{ir}",
            format!("randbench {}", side.name),
            1.0 / t,
            p / t
        );
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

/// Rounds of the suite comparison: each runs the whole suite once on every side.
const SUITE_ROUNDS: usize = 2;
/// Timed steps on the fixed batch before and after each side's suite run.
const SUITE_FIXED_STEPS: usize = 1000;

/// The randomization suite's conditions, in the suite's order.
const CONDITIONS: [&str; 5] =
    ["true_labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian"];

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
                let p = &peer[c];
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
                        if r.cell.variant_label() == *c =>
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
fn compare_suite() {
    let sides = sides(&[Variant::Plain]);
    let names: Vec<String> = std::iter::once("PyTorch eager (python)".to_string())
        .chain(sides.iter().map(|side| format!("randbench {}", side.name)))
        .collect();
    let fixed_steps = SUITE_FIXED_STEPS.to_string();
    // Steps per second over all timed steps on the fixed batch; `None` is the peer.
    let fixed_rate = |side: Option<&Side>| match side {
        None => {
            let p = python("pytorch_eager.py", &["step", "--steps", &fixed_steps]);
            1.0 / p["mean_step_seconds"].as_f64().unwrap()
        }
        Some(side) => {
            let times = side.visit(StepTimer { round_trip: false, steps: SUITE_FIXED_STEPS });
            times.len() as f64 / times.iter().sum::<f64>()
        }
    };
    // Per side (the peer first): fixed-batch rates, suite rates, the last suite run.
    let n = names.len();
    let (mut fixed, mut suite) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut runs: Vec<Option<SuiteRun>> = (0..n).map(|_| None).collect();
    for round in 1..=SUITE_ROUNDS {
        for k in 0..n {
            let side = k.checked_sub(1).map(|i| &sides[i]);
            // The fixed batch right before and right after the suite brackets it in time.
            fixed[k].push(fixed_rate(side));
            let run = match side {
                None => peer_suite(),
                Some(side) => randbench_suite(side.id, side.grad),
            };
            fixed[k].push(fixed_rate(side));
            suite[k].push(run.rate());
            eprintln!("round {round}: {} {:.0} steps/s over the suite", names[k], run.rate());
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
    let peer_suite_rate = median(&suite[0]);
    for (k, name) in names.iter().enumerate() {
        let (f, s) = (median(&fixed[k]), median(&suite[k]));
        println!(
            "  {:<32} {:>8.0} /s {:>8.0} /s {:>11.2}× {:>11.2}×",
            name,
            f,
            s,
            s / f,
            s / peer_suite_rate
        );
    }
    println!(
        "\nOutcomes of the last round: epochs to fit (– if not within 400) and test accuracy."
    );
    println!("The PyTorch side draws other random numbers than randbench, so its epochs differ.");
    print!("  {:<32}", "");
    for c in CONDITIONS {
        print!(" {c:>16}");
    }
    println!();
    for (name, run) in names.iter().zip(&runs) {
        print!("  {name:<32}");
        for (epochs, _, _, test) in &run.as_ref().unwrap().conditions {
            let e = epochs.map(|e| e.to_string()).unwrap_or_else(|| "–".into());
            print!(" {:>16}", format!("{e} ep {:.1}%", 100.0 * test));
        }
        println!();
    }
}

fn main() {
    randbench::sys::tune_allocator();
    randbench::backends::configure_cpu_threads().expect("RANDBENCH_THREADS");
    compare_step();
    compare_unroll();
    if std::env::args().any(|a| a == "--suite") {
        compare_suite();
    }
}
