//! One training step of the 784-512-10 MLP (batch 128, SGD momentum 0.9) on every CPU backend
//! this build has (`--features tch,ort` adds libtorch and ONNX Runtime), next to the same step
//! written by hand with candle-core and candle-nn: the ratio of randbench-candle's median to
//! the hand-written one's is the cost of the IR.
//!
//! Every sample starts again from the initial weights (outside the timed region): thousands
//! of steps on one batch drive the loss to zero and the arithmetic into denormal numbers,
//! which slowed steps by a third here, whichever implementation ran longest.

use candle_core::{DType, Device as CDevice, Tensor, Var};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use randbench::backends::BackendVisitor;
use randbench_core::models::{init_params, Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::testing::mlp_batch;
use randbench_core::train::{training_step, Feed};
use randbench_core::{Backend, Device, Engine, GradMode, Graph, HostTensor};
use std::time::Instant;

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

    fn reset(&mut self, params: &[HostTensor]) {
        *self = Self::new(params);
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

/// The timed step of one backend: parameters and state stay on the device between steps.
struct Side<'a, 'g> {
    group: &'a mut BenchmarkGroup<'g, WallTime>,
    name: String,
    graph: &'a Graph,
    state: &'a [HostTensor],
    data: [&'a HostTensor; 2],
    outputs: usize,
}

impl BackendVisitor for Side<'_, '_> {
    type Out = ();
    fn visit<B: Backend>(self, backend: &B) {
        let mut program = backend.compile(self.graph).unwrap();
        let data = self.data.map(|t| backend.upload(t).unwrap());
        self.group.bench_function(self.name, |b| {
            b.iter_custom(|iters| {
                let mut state: Vec<B::Tensor> =
                    self.state.iter().map(|t| backend.upload(t).unwrap()).collect();
                let t = Instant::now();
                for _ in 0..iters {
                    let inputs: Vec<&B::Tensor> = state.iter().chain(data.iter()).collect();
                    let mut out = backend.run(&mut program, &inputs).unwrap();
                    out.truncate(self.outputs);
                    state = out;
                }
                backend.sync().unwrap();
                t.elapsed()
            })
        });
    }
}

fn bench(c: &mut Criterion) {
    randbench::sys::tune_allocator();
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let specs = model.params().unwrap();
    let optimizer = Optimizer::momentum(LR, MOMENTUM);
    let step = training_step(&model, &optimizer, 128, Feed::Batch, false).unwrap();
    let params = init_params(&specs, 0);
    let mut initial = params.clone();
    initial.extend(
        optimizer.initial_state(&specs.iter().map(|p| p.shape.clone()).collect::<Vec<_>>()),
    );
    let (x, y) = mlp_batch(128, 0);
    let mut group = c.benchmark_group("mlp_784_512_10_step_b128");

    let mut hand = HandStep::new(&params);
    let cx = Tensor::from_slice(x.as_f32().unwrap(), x.shape(), &CDevice::Cpu).unwrap();
    let cy = Tensor::from_slice(y.as_i64().unwrap(), y.shape(), &CDevice::Cpu).unwrap();
    group.bench_function("candle-by-hand", |b| {
        b.iter_custom(|iters| {
            hand.reset(&params);
            let t = Instant::now();
            for _ in 0..iters {
                hand.step(&cx, &cy).unwrap();
            }
            CDevice::Cpu.synchronize().unwrap();
            t.elapsed()
        })
    });

    for id in randbench::backends::usable_here().into_iter().filter(|id| id.device == Device::Cpu) {
        let modes: &[GradMode] = if id.engine == Engine::Ort {
            &[GradMode::Symbolic]
        } else {
            &[GradMode::Native, GradMode::Symbolic]
        };
        for &mode in modes {
            let name = format!("randbench-{id}-{mode:?}").to_lowercase();
            let side = Side {
                group: &mut group,
                name,
                graph: &step.graph,
                state: &initial,
                data: [&x, &y],
                outputs: step.params + step.state,
            };
            randbench::backends::with_backend(id, mode, side).unwrap();
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
