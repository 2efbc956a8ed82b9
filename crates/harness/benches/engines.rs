//! Every engine and device this build has, side by side in criterion's report: one benchmark
//! group per workload, a line per backend and gradient mode.
//!
//!   cargo bench -p randbench --features tch,ort --bench engines
//!
//! - `train_step_mlp_784_512_10_b128`: one training step of the randomization test's MLP
//!   (SGD momentum 0.9), parameters and optimizer state staying on the device;
//! - `eval_pass_mlp_784_512_10_b1000`: one evaluation chunk as the suite runs it (per-example
//!   loss and correctness of 1,000 images);
//! - `l2l_unroll_quadratic_128x10_u20`: one meta-training unroll of the learned optimizer (a
//!   2×20 LSTM on 128 quadratics of dimension 10, 20 steps, its outer gradient and Adam step,
//!   one program), the unrolls chaining as in meta-training;
//! - `maml_second_step_28px_5w1s_t4`, `maml_first_step_28px_5w1s_t4`: one MAML meta-training
//!   step of the few-shot learner (four blocks of 32 filters on 28×28 images, 5-way 1-shot,
//!   15 queries per class, 4 tasks, one inner step, the meta-gradient of that order and an
//!   Adam step, one program) on fixed random episodes, θ and Adam's state chaining. A step
//!   takes about a second on a 2-core CPU: ten samples of one step each (flat sampling).
//!
//! Compiling, uploading and resetting happen outside the timed region; the engine's `sync`
//! is inside it. Every training sample starts again from the initial weights: thousands of
//! steps on one batch drive the loss to zero and the arithmetic into denormal numbers, which
//! slowed steps by a third here. Criterion measures one side after the other; figures that
//! compare engines with a peer or with hand-written code come from the benches that take
//! turns (`peer_pytorch`, `ir_overhead`).

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, SamplingMode};
use randbench::backends::BackendVisitor;
use randbench_core::l2l::{carried, unroll, LstmOptimizer, Outer};
use randbench_core::models::{init_params, Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::testing::{meta_step_inputs, mlp_batch, small_quadratics};
use randbench_core::train::{eval_graph, starting_state, training_step, Feed};
use randbench_core::{Backend, BackendId, Engine, GradMode, Graph, HostTensor};
use std::time::Instant;

#[path = "common/fewshot.rs"]
mod fewshot;

/// One program run over and over: `inputs` uploaded fresh for every sample, and output k fed
/// back as input `carried[k].1` between runs (the training state, the unroll's carried values).
struct Side<'a, 'g> {
    group: &'a mut BenchmarkGroup<'g, WallTime>,
    name: String,
    graph: &'a Graph,
    inputs: &'a [HostTensor],
    carried: &'a [(usize, usize)],
}

impl BackendVisitor for Side<'_, '_> {
    type Out = ();
    fn visit<B: Backend>(self, backend: &B) {
        let mut program = backend.compile(self.graph).unwrap();
        self.group.bench_function(self.name, |b| {
            b.iter_custom(|iters| {
                let mut inputs: Vec<B::Tensor> =
                    self.inputs.iter().map(|t| backend.upload(t).unwrap()).collect();
                backend.sync().unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    let refs: Vec<&B::Tensor> = inputs.iter().collect();
                    let out = backend.run(&mut program, &refs).unwrap();
                    for &(o, i) in self.carried {
                        inputs[i] = out[o].clone();
                    }
                }
                backend.sync().unwrap();
                t.elapsed()
            })
        });
    }
}

/// Every usable backend (CPU and CUDA) with each gradient mode it has.
fn sides() -> Vec<(BackendId, GradMode)> {
    randbench::backends::usable_here()
        .into_iter()
        .flat_map(|id| {
            let modes: &[GradMode] = match id.engine {
                // ONNX Runtime has no autograd: always the symbolic expansion.
                Engine::Ort => &[GradMode::Symbolic],
                _ => &[GradMode::Native, GradMode::Symbolic],
            };
            modes.iter().map(move |&m| (id, m))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn group(
    c: &mut Criterion,
    name: &str,
    samples: usize,
    graph: &Graph,
    inputs: &[HostTensor],
    carried: &[(usize, usize)],
    modes_matter: bool,
    sampling: SamplingMode,
) {
    let mut group = c.benchmark_group(name);
    group.sample_size(samples).sampling_mode(sampling);
    for (id, mode) in sides() {
        // A program without `Grad` nodes runs the same in both modes: one line per backend.
        if !modes_matter && mode == GradMode::Symbolic && id.engine != Engine::Ort {
            continue;
        }
        let name = match modes_matter {
            true => format!("{id}/{mode:?}").to_lowercase(),
            false => id.to_string(),
        };
        let side = Side { group: &mut group, name, graph, inputs, carried };
        randbench::backends::with_backend(id, mode, side).unwrap();
    }
    group.finish();
}

/// The 784-512-10 MLP the step and evaluation benchmarks run.
fn mlp() -> Model {
    Model::mlp([1, 28, 28], &[512], 10, Activation::Relu)
}

fn train_step(c: &mut Criterion) {
    let model = mlp();
    let optimizer = Optimizer::momentum(0.01, 0.9);
    let step = training_step(&model, &optimizer, 128, Feed::Batch, false).unwrap();
    let mut inputs = starting_state(&model.params().unwrap(), &optimizer, 0);
    let (x, y) = mlp_batch(128, 0);
    inputs.extend([x, y]);
    // The step's first outputs are the new parameters and optimizer state, in input order.
    let carried: Vec<(usize, usize)> = (0..step.params + step.state).map(|k| (k, k)).collect();
    group(
        c,
        "train_step_mlp_784_512_10_b128",
        60,
        &step.graph,
        &inputs,
        &carried,
        true,
        SamplingMode::Auto,
    );
}

fn eval_pass(c: &mut Criterion) {
    let model = mlp();
    let mut inputs = init_params(&model.params().unwrap(), 0);
    let graph = eval_graph(&model, 1000, Feed::Batch).unwrap();
    let (x, y) = mlp_batch(1000, 0);
    inputs.extend([x, y]);
    group(c, "eval_pass_mlp_784_512_10_b1000", 40, &graph, &inputs, &[], false, SamplingMode::Auto);
}

fn l2l_unroll(c: &mut Criterion) {
    const UNROLL: usize = 20;
    let opt = LstmOptimizer::default();
    let problem = small_quadratics(128, 10);
    let graph = unroll(&opt, &problem, UNROLL, Outer::Adam { lr: 1e-3 }, false).unwrap();
    let inputs = meta_step_inputs(&opt, &problem, UNROLL, 0);
    group(
        c,
        "l2l_unroll_quadratic_128x10_u20",
        20,
        &graph,
        &inputs,
        &carried(&graph),
        true,
        SamplingMode::Auto,
    );
}

fn few_shot_step(c: &mut Criterion) {
    for method in fewshot::METHODS {
        let (graph, inputs) = fewshot::meta_step(method.inner);
        // Criterion's fewest samples; flat sampling runs each as few steps as the time allows.
        let (name, carried) = (format!("{}_step_28px_5w1s_t4", method.key), carried(&graph));
        group(c, &name, 10, &graph, &inputs, &carried, true, SamplingMode::Flat);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(8));
    targets = train_step, eval_pass, l2l_unroll, few_shot_step
}
fn main() {
    // As the randbench binary starts: the same allocator settings and engine threads.
    randbench::sys::tune_allocator();
    randbench::backends::configure_cpu_threads().expect("RANDBENCH_THREADS");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
