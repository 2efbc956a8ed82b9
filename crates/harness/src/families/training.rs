//! Training and evaluation on a data set kept on the device, for the families that train a
//! model several times in one cell (loss surfaces, random-weight networks, architecture search):
//! step programs per optimizer, a trainer that runs them over given batches with snapshots, and
//! evaluation of per-example outputs summed over a data set.

use crate::families::{Fit, Record, WARMUP_STEPS};
use crate::families::{Guard, Loss};
use crate::slowdown;
use randbench_core::backend::{BResult, Backend};
use randbench_core::data::Dataset;
use randbench_core::graph::Graph;
use randbench_core::models::Model;
use randbench_core::optim::Optimizer;
use randbench_core::rng::Rng;
use randbench_core::train::{eval_graph, training_step, Feed};
use randbench_core::HostTensor;
use randbench_schema::Observer;
use std::collections::HashMap;
use std::time::Instant;

/// One optimizer's step programs (a full batch, and the last smaller one of an epoch).
pub struct Steps<B: Backend> {
    pub optimizer: Optimizer,
    full: B::Program,
    rest: Option<B::Program>,
    params: usize,
    state: usize,
}

/// Uploads host tensors to the device, in order.
pub fn upload_all<B: Backend>(b: &B, ts: &[HostTensor]) -> BResult<Vec<B::Tensor>> {
    ts.iter().map(|t| b.upload(t)).collect()
}

/// Tensors by input name: what a chained program reads, updated from its outputs.
pub type Named<T> = HashMap<String, T>;

/// Runs the program of `graph` on the named tensors; outputs named like an input replace it,
/// so that one run's parameters and state feed the next. Returns the outputs.
pub fn chain<B: Backend>(
    b: &B,
    graph: &Graph,
    program: &mut B::Program,
    named: &mut Named<B::Tensor>,
) -> BResult<Vec<B::Tensor>> {
    let refs: Vec<&B::Tensor> = graph
        .inputs()
        .iter()
        .map(|&id| named.get(graph.input_name(id)).expect("every input is named"))
        .collect();
    let out = b.run(program, &refs)?;
    for (k, (name, _)) in graph.outputs().iter().enumerate() {
        if graph.input_index(name).is_some() {
            named.insert(name.clone(), out[k].clone());
        }
    }
    Ok(out)
}

/// Uploads host tensors under the given names.
pub fn upload_named<B: Backend>(
    b: &B,
    named: &mut Named<B::Tensor>,
    names: impl IntoIterator<Item = String>,
    tensors: &[HostTensor],
) -> BResult<()> {
    for (name, t) in names.into_iter().zip(tensors) {
        named.insert(name, b.upload(t)?);
    }
    Ok(())
}

/// The example indices of the chunk of `chunk` examples from `start` of a data set of `n`: the
/// last chunk is padded with repeats of its first example, whose results the caller drops.
/// Also how many of the chunk's results are real.
pub fn padded_indices(start: usize, chunk: usize, n: usize) -> (HostTensor, usize) {
    let valid = chunk.min(n - start);
    let idx = (0..chunk).map(|i| (start + if i < valid { i } else { 0 }) as i64).collect();
    (HostTensor::i64(vec![chunk], idx).expect("length"), valid)
}

impl<B: Backend> Steps<B> {
    /// The parameters given and the optimizer's fresh state, on the device.
    fn fresh_state(
        &self,
        b: &B,
        params: &[HostTensor],
        shapes: &[Vec<usize>],
    ) -> BResult<Vec<B::Tensor>> {
        let mut state: Vec<HostTensor> = params.to_vec();
        state.extend(self.optimizer.initial_state(shapes));
        upload_all(b, &state)
    }

    /// The step programs of `model` with `optimizer` on batches of `batch` from a data set of
    /// `examples` on the device.
    pub fn compile(
        b: &B,
        model: &Model,
        optimizer: Optimizer,
        batch: usize,
        examples: usize,
    ) -> BResult<Self> {
        let feed = Feed::Gather { examples };
        let step = training_step(model, &optimizer, batch, feed, false)?;
        let rest = match examples % batch {
            0 => None,
            r => Some(b.compile(&training_step(model, &optimizer, r, feed, false)?.graph)?),
        };
        Ok(Steps {
            optimizer,
            full: b.compile(&step.graph)?,
            rest,
            params: step.params,
            state: step.state,
        })
    }

    /// Runs `WARMUP_STEPS` steps (and the last batch's program once) on a throwaway state
    /// from `params`, with indices drawn from `rng`; returns the first step's time.
    pub fn warm_up(
        &mut self,
        t: &Trainer<B>,
        params: &[HostTensor],
        shapes: &[Vec<usize>],
        batch: usize,
        rng: &mut Rng,
    ) -> BResult<f64> {
        let mut state = self.fresh_state(t.b, params, shapes)?;
        let mut first = 0.0;
        for k in 0..WARMUP_STEPS {
            let chunk: Vec<usize> = (0..batch).map(|_| rng.below(t.examples)).collect();
            let (mut out, dt) = t.step(&mut self.full, &state, &chunk)?;
            if k == 0 {
                first = dt;
            }
            out.truncate(self.params + self.state);
            state = out;
        }
        if let Some(rest) = self.rest.as_mut() {
            let chunk: Vec<usize> = (0..t.examples % batch).collect();
            t.step(rest, &state, &chunk)?;
        }
        Ok(first)
    }
}

/// The training data on the device, and what a step is fed besides its state.
pub struct Trainer<'a, B: Backend> {
    pub b: &'a B,
    /// Images and labels.
    pub data: (B::Tensor, B::Tensor),
    examples: usize,
    delay: Option<std::time::Duration>,
    guard: Guard,
}

/// Where one run ended, and what it left on the way.
pub struct Trained {
    /// The parameters at the end; `None` if the loss stopped being finite.
    pub params: Option<Vec<HostTensor>>,
    pub diverged_at: Option<usize>,
    /// The parameters before the global step of each requested snapshot.
    pub snapshots: Vec<(usize, Vec<HostTensor>)>,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Uploads a data set for training on `b`; `guard` is the cell's clock and budget.
    pub fn new(b: &'a B, data: &Dataset, guard: Guard) -> BResult<Self> {
        let (x, y) = data.tensors();
        Ok(Trainer {
            b,
            data: (b.upload(&x)?, b.upload(&y)?),
            examples: data.len(),
            delay: slowdown::step_delay(b.id()),
            guard,
        })
    }

    /// `epochs` shuffled passes over the data, from the seed's `order` stream: the batches
    /// (as example indices) of every step.
    pub fn batches(&self, seed: u64, epochs: usize, batch: usize) -> Vec<Vec<usize>> {
        let mut order_rng = Rng::stream(seed, "order");
        (0..epochs)
            .flat_map(|_| {
                let order = order_rng.permutation(self.examples);
                order.chunks(batch).map(|c| c.to_vec()).collect::<Vec<_>>()
            })
            .collect()
    }

    /// One step: its indices uploaded, the program run, the device waited for.
    pub fn step(
        &self,
        prog: &mut B::Program,
        state: &[B::Tensor],
        chunk: &[usize],
    ) -> BResult<(Vec<B::Tensor>, f64)> {
        let t0 = Instant::now();
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let idx = HostTensor::i64(vec![chunk.len()], chunk.iter().map(|&i| i as i64).collect())
            .expect("length");
        let idx = self.b.upload(&idx)?;
        let mut inputs: Vec<&B::Tensor> = state.iter().collect();
        inputs.extend([&self.data.0, &self.data.1, &idx]);
        let out = self.b.run(prog, &inputs)?;
        self.b.sync()?;
        Ok((out, t0.elapsed().as_secs_f64()))
    }

    /// Trains from `params` (with the optimizer's state fresh) on `batches`, the budget's
    /// batches from global step `first` on; snapshots the parameters before each step in
    /// `snapshot_at`.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &self,
        steps: &mut Steps<B>,
        params: &[HostTensor],
        shapes: &[Vec<usize>],
        batches: &[Vec<usize>],
        first: usize,
        snapshot_at: &[usize],
        record: &mut Record,
        trace: bool,
        times: &mut Vec<f64>,
        obs: &dyn Observer,
    ) -> BResult<Option<Trained>> {
        let b = self.b;
        let mut state = steps.fresh_state(b, params, shapes)?;
        let n_state = steps.params + steps.state;
        let download = |state: &[B::Tensor]| -> BResult<Vec<HostTensor>> {
            state[..steps.params].iter().map(|t| b.download(t)).collect()
        };
        let mut snapshots = Vec::new();
        for (i, chunk) in batches.iter().enumerate() {
            let global = first + i;
            if snapshot_at.contains(&global) {
                snapshots.push((global, download(&state)?));
            }
            if self.guard.halt(obs, record) {
                return Ok(None);
            }
            let prog = if chunk.len() == batches[0].len() {
                &mut steps.full
            } else {
                steps.rest.as_mut().expect("a program for the last batch")
            };
            let (mut out, dt) = self.step(prog, &state, chunk)?;
            times.push(dt);
            let loss = b.download(&out[n_state])?.to_scalar().expect("scalar loss");
            if let Loss::Diverged { step } = Guard::loss(record, global + 1, loss.into(), trace) {
                return Ok(Some(Trained { params: None, diverged_at: Some(step), snapshots }));
            }
            out.truncate(n_state);
            state = out;
        }
        Ok(Some(Trained { params: Some(download(&state)?), diverged_at: None, snapshots }))
    }
}

/// Examples per run of an evaluation or feature program.
pub const CHUNK: usize = 500;

/// A model's evaluation over a data set of `n` examples on the device.
pub struct Evaluation<B: Backend> {
    prog: B::Program,
    n: usize,
    chunk: usize,
}

impl<B: Backend> Evaluation<B> {
    pub fn compile(b: &B, model: &Model, n: usize) -> BResult<Self> {
        let chunk = CHUNK.min(n);
        let prog = b.compile(&eval_graph(model, chunk, Feed::Gather { examples: n })?)?;
        Ok(Evaluation { prog, n, chunk })
    }

    /// Accuracy of `params` over `data`.
    pub fn accuracy(
        &mut self,
        b: &B,
        params: &[HostTensor],
        data: &(B::Tensor, B::Tensor),
    ) -> BResult<f64> {
        let dev = upload_all(b, params)?;
        let refs: Vec<&B::Tensor> = dev.iter().collect();
        Ok(fits(b, &mut self.prog, &refs, data, self.n, self.chunk, 1)?[0].accuracy)
    }
}

/// Per-point sums of a program's per-example outputs `loss{k}`, `correct{k}` over a data set
/// on the device, in chunks of `chunk` (the last padded with repeats of its first example,
/// whose results are dropped): mean loss and accuracy per point.
pub fn fits<B: Backend>(
    b: &B,
    prog: &mut B::Program,
    leading: &[&B::Tensor],
    data: &(B::Tensor, B::Tensor),
    n: usize,
    chunk: usize,
    points: usize,
) -> BResult<Vec<Fit>> {
    let mut sums = vec![(0.0f64, 0.0f64); points];
    for start in (0..n).step_by(chunk) {
        let (idx, valid) = padded_indices(start, chunk, n);
        let idx = b.upload(&idx)?;
        let mut inputs: Vec<&B::Tensor> = leading.to_vec();
        inputs.extend([&data.0, &data.1, &idx]);
        let out = b.run(prog, &inputs)?;
        for (k, sum) in sums.iter_mut().enumerate() {
            let sum_of = |t: &B::Tensor| -> BResult<f64> {
                let h = b.download(t)?;
                Ok(h.as_f32().expect("f32")[..valid].iter().map(|&v| v as f64).sum())
            };
            sum.0 += sum_of(&out[2 * k])?;
            sum.1 += sum_of(&out[2 * k + 1])?;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(loss, correct)| Fit {
            loss: Some(loss / n as f64).filter(|l| l.is_finite()),
            accuracy: correct / n as f64,
        })
        .collect())
}
