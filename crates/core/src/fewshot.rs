//! Few-shot classification after Finn et al. (MAML, ICML 2017): the four-block learner of the
//! few-shot papers, N-way K-shot episodes drawn from classes of images, and the programs that
//! adapt the learner to an episode and meta-train its initial parameters.

use crate::graph::{GResult, Graph, GraphError, NodeId};
use crate::l2l::{meta_optimizer, Outer};
use crate::models::{Init, ParamSpec};
use crate::rng::Rng;
use crate::tensor::HostTensor;
use crate::DType;
use serde::{Deserialize, Serialize};

/// PyTorch's `BatchNorm2d` default.
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// The learner of the few-shot papers: per block a 3×3 convolution (same padding), batch
/// normalization with the batch's statistics, ReLU and 2×2 max pooling, then a linear head on
/// the last maps. Pooling is PyTorch's floor mode: an odd side loses its last row and column
/// first, so 28×28 images end as 1×1 maps after four blocks, as in MAML's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learner {
    /// Images are 1 × side × side.
    pub side: usize,
    pub filters: usize,
    pub blocks: usize,
    /// Classes told apart: the episodes' N.
    pub way: usize,
}

impl Learner {
    /// The side of the last feature maps.
    pub fn feature_side(&self) -> usize {
        (0..self.blocks).fold(self.side, |s, _| s / 2)
    }

    /// Per block the kernel, the batch norm's scale and shift; then the head's weight and bias.
    /// The convolutions have no bias: the batch norm's mean subtraction would cancel it.
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::with_capacity(3 * self.blocks + 2);
        let mut channels = 1;
        for b in 0..self.blocks {
            let fan_in = channels * 9;
            specs.push(ParamSpec {
                name: format!("conv{b}.weight"),
                shape: vec![self.filters, channels, 3, 3],
                init: Init::torch_default(fan_in),
            });
            specs.push(ParamSpec {
                name: format!("bn{b}.scale"),
                shape: vec![self.filters],
                init: Init::Ones,
            });
            specs.push(ParamSpec {
                name: format!("bn{b}.shift"),
                shape: vec![self.filters],
                init: Init::Zeros,
            });
            channels = self.filters;
        }
        let features = self.filters * self.feature_side().pow(2);
        specs.push(ParamSpec {
            name: "head.weight".into(),
            shape: vec![features, self.way],
            init: Init::torch_default(features),
        });
        specs.push(ParamSpec {
            name: "head.bias".into(),
            shape: vec![self.way],
            init: Init::torch_default(features),
        });
        specs
    }

    /// Logits [n, way] for images x [n, 1, side, side].
    pub fn logits(&self, g: &mut Graph, params: &[NodeId], x: NodeId) -> GResult<NodeId> {
        let n = g.shape(x)[0];
        let mut h = x;
        for b in 0..self.blocks {
            h = g.conv2d(h, params[3 * b], 1, 1)?;
            h = g.batch_norm(h, params[3 * b + 1], params[3 * b + 2], BATCH_NORM_EPS)?;
            h = g.relu(h)?;
            let side = g.shape(h)[2];
            if side % 2 == 1 {
                h = g.slice(h, 2, 0, side - 1)?;
                h = g.slice(h, 3, 0, side - 1)?;
            }
            h = g.max_pool2d(h, 2)?;
        }
        let features = g.shape(h)[1..].iter().product();
        h = g.reshape(h, &[n, features])?;
        let k = 3 * self.blocks;
        g.linear(h, params[k], params[k + 1])
    }

    /// Mean cross-entropy and mean accuracy of the learner on a labelled batch.
    fn loss_and_accuracy(
        &self,
        g: &mut Graph,
        params: &[NodeId],
        x: NodeId,
        y: NodeId,
    ) -> GResult<(NodeId, NodeId)> {
        let logits = self.logits(g, params, x)?;
        let losses = g.softmax_cross_entropy(logits, y)?;
        let correct = g.correct_predictions(logits, y)?;
        Ok((g.mean_all(losses)?, g.mean_all(correct)?))
    }
}

/// An episode's N-way K-shot form with Q queries per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeShape {
    pub way: usize,
    pub shot: usize,
    pub query: usize,
}

impl EpisodeShape {
    pub fn support(&self) -> usize {
        self.way * self.shot
    }
    pub fn queries(&self) -> usize {
        self.way * self.query
    }
}

/// Images grouped by class, all 1 × side × side: `classes[c]` holds class c's images.
#[derive(Clone, Debug, PartialEq)]
pub struct Classes {
    pub side: usize,
    pub classes: Vec<Vec<Vec<f32>>>,
}

impl Classes {
    /// The fewest images any class has: the most an episode can draw from each.
    pub fn fewest_images(&self) -> usize {
        self.classes.iter().map(Vec::len).min().unwrap_or(0)
    }
}

/// Episodes stacked along the first axis: `support` [e·N·K, 1, s, s] with labels [e·N·K], and
/// `query` [e·N·Q, 1, s, s] with labels; within an episode, class by class.
#[derive(Clone, Debug, PartialEq)]
pub struct Episodes {
    pub support: HostTensor,
    pub support_labels: HostTensor,
    pub query: HostTensor,
    pub query_labels: HostTensor,
}

/// Draws `count` episodes: per episode N distinct classes, labelled 0..N in the order drawn,
/// and K + Q distinct images of each, the first K its support. Every method and engine given
/// the same stream sees the same episodes.
pub fn draw_episodes(
    classes: &Classes,
    shape: EpisodeShape,
    count: usize,
    rng: &mut Rng,
) -> GResult<Episodes> {
    let per_class = shape.shot + shape.query;
    if classes.classes.len() < shape.way || classes.fewest_images() < per_class {
        return Err(GraphError::Invalid(format!(
            "{}-way {}-shot episodes with {} queries need {} classes of {} images; there are {} \
             classes, the smallest with {} images",
            shape.way,
            shape.shot,
            shape.query,
            shape.way,
            per_class,
            classes.classes.len(),
            classes.fewest_images()
        )));
    }
    let pixels = classes.side * classes.side;
    let (mut sx, mut sy, mut qx, mut qy) = (vec![], vec![], vec![], vec![]);
    for _ in 0..count {
        let picked = choose(rng, classes.classes.len(), shape.way);
        for (label, &c) in picked.iter().enumerate() {
            let images = &classes.classes[c];
            let order = choose(rng, images.len(), per_class);
            for (k, &i) in order.iter().enumerate() {
                let (x, y) = if k < shape.shot { (&mut sx, &mut sy) } else { (&mut qx, &mut qy) };
                x.extend_from_slice(&images[i]);
                y.push(label as i64);
            }
        }
    }
    let side = classes.side;
    let tensor = |x: Vec<f32>| {
        let n = x.len() / pixels;
        HostTensor::f32(vec![n, 1, side, side], x).expect("whole images")
    };
    let labels = |y: Vec<i64>| HostTensor::i64(vec![y.len()], y).expect("one label each");
    Ok(Episodes {
        support: tensor(sx),
        support_labels: labels(sy),
        query: tensor(qx),
        query_labels: labels(qy),
    })
}

/// `k` distinct numbers below `n` in random order (a partial Fisher–Yates shuffle).
fn choose(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        all.swap(i, j);
    }
    all.truncate(k);
    all
}

/// Whether the outer gradient goes through the inner updates' gradients (MAML) or treats them
/// as constants (first-order MAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    First,
    Second,
}

/// MAML's inner loop: `steps` steps of gradient descent at rate `lr` from θ on the support set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adaptation {
    pub lr: f64,
    pub steps: usize,
}

/// θ after the inner loop on (x, y). With `Order::First` every inner gradient enters through
/// StopGradient, so an outer gradient sees θ_T = θ − α Σ constants.
fn adapt(
    g: &mut Graph,
    learner: &Learner,
    theta: &[NodeId],
    (x, y): (NodeId, NodeId),
    inner: Adaptation,
    order: Order,
) -> GResult<Vec<NodeId>> {
    let mut theta = theta.to_vec();
    for _ in 0..inner.steps {
        let (loss, _) = learner.loss_and_accuracy(g, &theta, x, y)?;
        let grads = g.grads(loss, &theta)?;
        theta = theta
            .iter()
            .zip(grads)
            .map(|(&p, dp)| {
                let dp = match order {
                    Order::First => g.stop_gradient(dp),
                    Order::Second => dp,
                };
                let step = g.scale(dp, inner.lr)?;
                g.sub(p, step)
            })
            .collect::<GResult<_>>()?;
    }
    Ok(theta)
}

/// The learner's parameters as inputs named by their specs.
fn param_inputs(g: &mut Graph, learner: &Learner) -> Vec<NodeId> {
    learner.params().iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect()
}

/// One episode's support and query sets as inputs.
fn episode_inputs(g: &mut Graph, side: usize, shape: EpisodeShape, episodes: usize) -> [NodeId; 4] {
    let (s, q) = (episodes * shape.support(), episodes * shape.queries());
    [
        g.input("support", &[s, 1, side, side], DType::F32),
        g.input("support_labels", &[s], DType::I64),
        g.input("query", &[q, 1, side, side], DType::F32),
        g.input("query_labels", &[q], DType::I64),
    ]
}

/// Adapts θ to one episode and scores its queries. Inputs: θ (by the learner's parameter
/// names), then `support`, `support_labels`, `query`, `query_labels` of one episode.
/// Outputs: the query set's mean `loss` and `accuracy`. The queries are one batch, so batch
/// normalization uses their statistics, as MAML's evaluation does.
pub fn adaptation_graph(
    learner: &Learner,
    shape: EpisodeShape,
    inner: Adaptation,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let theta = param_inputs(&mut g, learner);
    let [sx, sy, qx, qy] = episode_inputs(&mut g, learner.side, shape, 1);
    // No outer gradient: first order keeps every inner gradient a plain backward pass.
    let adapted = adapt(&mut g, learner, &theta, (sx, sy), inner, Order::First)?;
    let (loss, accuracy) = learner.loss_and_accuracy(&mut g, &adapted, qx, qy)?;
    g.output("loss", loss);
    g.output("accuracy", accuracy);
    Ok(g)
}

/// One meta-training step of MAML on a meta-batch of `tasks` episodes: each adapted from θ on
/// its support set, the meta-loss the mean of their query losses after adaptation.
///
/// Inputs: θ; for [`Outer::Adam`] its state (m and v per parameter, then the step counter);
/// then `support`, `support_labels`, `query`, `query_labels` holding the `tasks` episodes
/// stacked. Outputs: `meta_loss`, `accuracy` (the queries' mean after adaptation), then
/// `grad.<name>` per parameter ([`Outer::Gradient`]) or the updated θ and Adam state under
/// their input names ([`Outer::Adam`]), so that one step's outputs feed the next.
pub fn meta_step_graph(
    learner: &Learner,
    shape: EpisodeShape,
    tasks: usize,
    inner: Adaptation,
    order: Order,
    outer: Outer,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = learner.params();
    let theta = param_inputs(&mut g, learner);
    let adam = match outer {
        Outer::Adam { lr } => {
            let mut slots = Vec::new();
            for p in &specs {
                for k in ["m", "v"] {
                    slots.push(g.input(format!("adam.{k}.{}", p.name), &p.shape, DType::F32));
                }
            }
            let counter = g.input("adam.step", &[], DType::F32);
            Some((meta_optimizer(lr), slots, counter))
        }
        _ => None,
    };
    let [sx, sy, qx, qy] = episode_inputs(&mut g, learner.side, shape, tasks);
    let (s, q) = (shape.support(), shape.queries());
    let (mut loss_sum, mut accuracy_sum) = (None, None);
    for t in 0..tasks {
        let task_x = g.slice(sx, 0, t * s, (t + 1) * s)?;
        let task_y = g.slice(sy, 0, t * s, (t + 1) * s)?;
        let adapted = adapt(&mut g, learner, &theta, (task_x, task_y), inner, order)?;
        let query_x = g.slice(qx, 0, t * q, (t + 1) * q)?;
        let query_y = g.slice(qy, 0, t * q, (t + 1) * q)?;
        let (loss, accuracy) = learner.loss_and_accuracy(&mut g, &adapted, query_x, query_y)?;
        loss_sum = Some(match loss_sum {
            Some(sum) => g.add(sum, loss)?,
            None => loss,
        });
        accuracy_sum = Some(match accuracy_sum {
            Some(sum) => g.add(sum, accuracy)?,
            None => accuracy,
        });
    }
    let (Some(loss_sum), Some(accuracy_sum)) = (loss_sum, accuracy_sum) else {
        return Err(GraphError::Invalid("a meta-batch needs at least one task".into()));
    };
    let meta_loss = g.scale(loss_sum, 1.0 / tasks as f64)?;
    let accuracy = g.scale(accuracy_sum, 1.0 / tasks as f64)?;
    g.output("meta_loss", meta_loss);
    g.output("accuracy", accuracy);
    let grads = g.grads(meta_loss, &theta)?;
    match (outer, adam) {
        (Outer::Gradient, _) => {
            for (spec, dp) in specs.iter().zip(grads) {
                g.output(format!("grad.{}", spec.name), dp);
            }
        }
        (Outer::Adam { .. }, Some((o, slots, counter))) => {
            let step = o.begin_step(&mut g, Some(counter), None)?;
            let mut new_slots = Vec::new();
            for (i, ((spec, &p), dp)) in specs.iter().zip(&theta).zip(grads).enumerate() {
                let (p2, s2) = o.update(&mut g, p, dp, &slots[2 * i..2 * i + 2], &step)?;
                g.output(spec.name.clone(), p2);
                new_slots.push((format!("adam.m.{}", spec.name), s2[0]));
                new_slots.push((format!("adam.v.{}", spec.name), s2[1]));
            }
            for (name, s) in new_slots {
                g.output(name, s);
            }
            g.output("adam.step", step.counter.expect("Adam counts steps"));
        }
        _ => {}
    }
    Ok(g)
}

/// The label of each query's nearest support image in pixel space (Euclidean distance; ties
/// go to the first), for one episode: the baseline that learns nothing.
pub fn nearest_neighbour(
    support: &[f32],
    support_labels: &[i64],
    query: &[f32],
    pixels: usize,
) -> Vec<i64> {
    query
        .chunks(pixels)
        .map(|q| {
            let distance =
                |s: &[f32]| -> f32 { s.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum() };
            let (best, _) =
                support.chunks(pixels).enumerate().fold((0, f32::INFINITY), |(bi, bd), (i, s)| {
                    let d = distance(s);
                    if d < bd {
                        (i, d)
                    } else {
                        (bi, bd)
                    }
                });
            support_labels[best]
        })
        .collect()
}
