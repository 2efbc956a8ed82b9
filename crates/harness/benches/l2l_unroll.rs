//! One meta-training unroll of the learned optimizer on every CPU backend this build has
//! (`--features tch,ort` adds libtorch and ONNX Runtime): the paper's configuration, a 2×20
//! LSTM with log-sign preprocessing on 128 quadratics of dimension 10, 20 steps, the outer
//! gradient and the meta-optimizer's Adam step, all one program.
//!
//! Each sample starts from the same φ, problem and state (outside the timed region); within
//! a sample the unrolls chain as in meta-training (φ, Adam state, θ and LSTM state carried).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use randbench::backends::BackendVisitor;
use randbench_core::l2l::{carried, unroll, LstmOptimizer, Outer};
use randbench_core::testing::{meta_step_inputs, small_quadratics};
use randbench_core::{Backend, Device, Engine, GradMode, Graph, HostTensor};
use std::time::Instant;

const UNROLL: usize = 20;

/// The timed unroll of one backend.
struct Side<'a, 'g> {
    group: &'a mut BenchmarkGroup<'g, WallTime>,
    name: String,
    graph: &'a Graph,
    inputs: &'a [HostTensor],
    /// Output k feeds input carried[k] of the next unroll.
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

fn unrolls(c: &mut Criterion) {
    let opt = LstmOptimizer::default();
    let problem = small_quadratics(128, 10);
    let graph = unroll(&opt, &problem, UNROLL, Outer::Adam { lr: 1e-3 }, false).unwrap();
    let inputs = meta_step_inputs(&opt, &problem, UNROLL, 0);
    let carried = carried(&graph);
    let mut group = c.benchmark_group("l2l_quadratic_unroll20");
    group.sample_size(20);
    for engine in Engine::ALL {
        let id = randbench_core::BackendId { engine, device: Device::Cpu };
        if !randbench::backends::usable_here().contains(&id) {
            continue;
        }
        let modes: &[GradMode] = match engine {
            Engine::Ort => &[GradMode::Symbolic],
            _ => &[GradMode::Native, GradMode::Symbolic],
        };
        for &mode in modes {
            let name = format!("{id}-{mode:?}").to_lowercase();
            let side =
                Side { group: &mut group, name, graph: &graph, inputs: &inputs, carried: &carried };
            randbench::backends::with_backend(id, mode, side).unwrap();
        }
    }
    group.finish();
}

criterion_group!(benches, unrolls);
criterion_main!(benches);
