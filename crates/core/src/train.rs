//! A whole training step as one graph, and the matching evaluation graph.
//!
//! Step inputs, in order: parameters, optimizer state (slots by parameter, then the step
//! counter where the rule has one), the batch (see [`Feed`]), dropout masks, then the learning
//! rate where it is an input ([`LearningRate::Input`]).
//! Step outputs: updated parameters, updated state, then the batch's `loss` (training accuracy
//! comes from the evaluation graph at the end of an epoch: nothing reads a batch's).

use crate::graph::{GResult, Graph, NodeId};
use crate::models::{init_params, Model, ParamSpec};
use crate::optim::Optimizer;
use crate::tensor::{DType, HostTensor};

/// Where a step's batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The batch itself is an input: `x` [b, c, h, w] and `y` [b].
    Batch,
    /// The whole data set is an input that stays on the device (`data` [N, c, h, w], `labels`
    /// [N]); the step picks rows by `indices` [b].
    Gather { examples: usize },
}

/// Whether the learning rate is a constant of the step program or an input of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearningRate {
    /// The optimizer's `lr`, built into the program.
    Constant,
    /// A scalar input `lr` (the last input): a schedule changes it without a new program.
    Input,
}

#[derive(Clone, Debug)]
pub struct TrainStep {
    pub graph: Graph,
    pub params: usize,
    pub state: usize,
    pub masks: usize,
}

impl TrainStep {}

fn batch_inputs(
    g: &mut Graph,
    model: &Model,
    batch: usize,
    feed: Feed,
) -> GResult<(NodeId, NodeId)> {
    let [c, h, w] = model.input_shape();
    match feed {
        Feed::Batch => {
            let x = g.input("x", &[batch, c, h, w], DType::F32);
            let y = g.input("y", &[batch], DType::I64);
            Ok((x, y))
        }
        Feed::Gather { examples } => {
            let data = g.input("data", &[examples, c, h, w], DType::F32);
            let labels = g.input("labels", &[examples], DType::I64);
            let idx = g.input("indices", &[batch], DType::I64);
            Ok((g.gather(data, idx)?, g.gather(labels, idx)?))
        }
    }
}

fn param_inputs(g: &mut Graph, model: &Model) -> GResult<Vec<NodeId>> {
    Ok(model.params()?.iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect())
}

/// The state a training step starts from, in its input order: the parameters drawn from the
/// seed's init stream, then the optimizer's fresh state for them.
pub fn starting_state(params: &[ParamSpec], optimizer: &Optimizer, seed: u64) -> Vec<HostTensor> {
    let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.shape.clone()).collect();
    let mut state = init_params(params, seed);
    state.extend(optimizer.initial_state(&shapes));
    state
}

/// The graph of one training step of `model` with `optimizer` on batches of `batch`, with a
/// constant learning rate.
pub fn training_step(
    model: &Model,
    optimizer: &Optimizer,
    batch: usize,
    feed: Feed,
    dropout: bool,
) -> GResult<TrainStep> {
    training_step_with(model, optimizer, batch, feed, dropout, LearningRate::Constant)
}

/// [`training_step`] with the learning rate as `lr` says.
pub fn training_step_with(
    model: &Model,
    optimizer: &Optimizer,
    batch: usize,
    feed: Feed,
    dropout: bool,
    lr: LearningRate,
) -> GResult<TrainStep> {
    let mut g = Graph::new();
    let specs = model.params()?;
    let params = param_inputs(&mut g, model)?;
    let mut slots: Vec<Vec<NodeId>> = Vec::new();
    for p in &specs {
        slots.push(
            (0..optimizer.slots_per_param())
                .map(|k| g.input(format!("{}.slot{k}", p.name), &p.shape, DType::F32))
                .collect(),
        );
    }
    let counter = optimizer.counts_steps().then(|| g.input("step", &[], DType::F32));
    let (x, y) = batch_inputs(&mut g, model, batch, feed)?;
    let masks: Vec<NodeId> = if dropout {
        model
            .dropout_sites(batch)
            .iter()
            .enumerate()
            .map(|(i, s)| g.input(format!("dropout{i}"), s, DType::F32))
            .collect()
    } else {
        vec![]
    };
    let logits = model.forward(&mut g, &params, x, &masks)?;
    let ce = g.softmax_cross_entropy(logits, y)?;
    let loss = g.mean_all(ce)?;
    let grads = g.grads(loss, &params)?;
    let lr = (lr == LearningRate::Input).then(|| g.input("lr", &[], DType::F32));
    let scalars = optimizer.begin_step(&mut g, counter, lr)?;
    let mut new_params = Vec::new();
    let mut new_slots = Vec::new();
    for ((&p, &grad), s) in params.iter().zip(&grads).zip(&slots) {
        let (np, ns) = optimizer.update(&mut g, p, grad, s, &scalars)?;
        new_params.push(np);
        new_slots.extend(ns);
    }
    for (spec, np) in specs.iter().zip(&new_params) {
        g.output(spec.name.clone(), *np);
    }
    for (k, ns) in new_slots.iter().enumerate() {
        g.output(format!("slot{k}"), *ns);
    }
    if let Some(t) = scalars.counter {
        g.output("step", t);
    }
    g.output("loss", loss);
    let state = new_slots.len() + usize::from(counter.is_some());
    Ok(TrainStep { graph: g, params: params.len(), state, masks: masks.len() })
}

/// Per-example loss and correctness (`loss`, `correct`, both [b]) with the given parameters.
/// Inputs: parameters, then the batch as [`Feed`] says.
pub fn eval_graph(model: &Model, batch: usize, feed: Feed) -> GResult<Graph> {
    let mut g = Graph::new();
    let params = param_inputs(&mut g, model)?;
    let (x, y) = batch_inputs(&mut g, model, batch, feed)?;
    let logits = model.forward(&mut g, &params, x, &[])?;
    let loss = g.softmax_cross_entropy(logits, y)?;
    let correct = g.correct_predictions(logits, y)?;
    g.output("loss", loss);
    g.output("correct", correct);
    Ok(g)
}

/// The loss landscape along the line through two parameter points, at `points` places in one
/// program (Im, Tao and Branson's interpolations): θ(α) = θ_a + α·(θ_b − θ_a).
/// Inputs: θ_a's parameters, θ_b's, one scalar `alpha{k}` per place, then the batch as
/// [`Feed`] says. Outputs, per place k: `loss{k}` and `correct{k}`, both per example [b].
pub fn interpolation_graph(
    model: &Model,
    batch: usize,
    feed: Feed,
    points: usize,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = model.params()?;
    let a: Vec<NodeId> =
        specs.iter().map(|p| g.input(format!("a.{}", p.name), &p.shape, DType::F32)).collect();
    let b: Vec<NodeId> =
        specs.iter().map(|p| g.input(format!("b.{}", p.name), &p.shape, DType::F32)).collect();
    let alphas: Vec<NodeId> =
        (0..points).map(|k| g.input(format!("alpha{k}"), &[], DType::F32)).collect();
    let (x, y) = batch_inputs(&mut g, model, batch, feed)?;
    let mut directions = Vec::new();
    for (&pa, &pb) in a.iter().zip(&b) {
        directions.push(g.sub(pb, pa)?);
    }
    for (k, &alpha) in alphas.iter().enumerate() {
        let mut params = Vec::new();
        for (&pa, &d) in a.iter().zip(&directions) {
            let step = g.mul(d, alpha)?;
            params.push(g.add(pa, step)?);
        }
        let logits = model.forward(&mut g, &params, x, &[])?;
        let loss = g.softmax_cross_entropy(logits, y)?;
        let correct = g.correct_predictions(logits, y)?;
        g.output(format!("loss{k}"), loss);
        g.output(format!("correct{k}"), correct);
    }
    Ok(g)
}

/// A CNN's feature maps after its first `depth` blocks, flattened: `features` [b, F].
/// Inputs: those blocks' parameters (2 per block), then the batch as [`Feed`] says (its
/// labels unused but kept, so that every data program takes the data alike).
pub fn features_graph(model: &Model, depth: usize, batch: usize, feed: Feed) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = model.params()?;
    let params: Vec<NodeId> =
        specs[..2 * depth].iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect();
    let (x, _) = batch_inputs(&mut g, model, batch, feed)?;
    let h = model.conv_features(&mut g, &params, x, depth)?;
    let flat = g.shape(h)[1..].iter().product();
    let features = g.reshape(h, &[batch, flat])?;
    g.output("features", features);
    Ok(g)
}

/// One step of reconstructing `images` inputs from their feature maps (He, Wang and Hopcroft):
/// the loss is the mean squared difference between the feature maps of `x` after `depth`
/// blocks and `target`, its gradient is taken with respect to the input, and `optimizer`
/// updates the input. Inputs: the blocks' parameters, `x` [images, c, h, w], the optimizer's
/// slots for `x` and its step counter where it keeps one, then `target` [images, F]. Outputs:
/// the new `x`, the new slots (and counter), then `loss` (of the `x` given) — so that a run's
/// first outputs feed the next run's `x` and state.
pub fn inversion_step(
    model: &Model,
    depth: usize,
    images: usize,
    optimizer: &Optimizer,
) -> GResult<TrainStep> {
    let mut g = Graph::new();
    let specs = model.params()?;
    let params: Vec<NodeId> =
        specs[..2 * depth].iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect();
    let [c, h, w] = model.input_shape();
    let x = g.input("x", &[images, c, h, w], DType::F32);
    let slots: Vec<NodeId> = (0..optimizer.slots_per_param())
        .map(|k| g.input(format!("x.slot{k}"), &[images, c, h, w], DType::F32))
        .collect();
    let counter = optimizer.counts_steps().then(|| g.input("step", &[], DType::F32));
    let maps = model.conv_features(&mut g, &params, x, depth)?;
    let flat: usize = g.shape(maps)[1..].iter().product();
    let target = g.input("target", &[images, flat], DType::F32);
    let features = g.reshape(maps, &[images, flat])?;
    let diff = g.sub(features, target)?;
    let squared = g.square(diff)?;
    let loss = g.mean_all(squared)?;
    let grads = g.grads(loss, &[x])?;
    let scalars = optimizer.begin_step(&mut g, counter, None)?;
    let (new_x, new_slots) = optimizer.update(&mut g, x, grads[0], &slots, &scalars)?;
    g.output("x", new_x);
    for (k, s) in new_slots.iter().enumerate() {
        g.output(format!("slot{k}"), *s);
    }
    if let Some(t) = scalars.counter {
        g.output("step", t);
    }
    g.output("loss", loss);
    let state = new_slots.len() + usize::from(counter.is_some());
    Ok(TrainStep { graph: g, params: 1, state, masks: 0 })
}
