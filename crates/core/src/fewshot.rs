//! Few-shot classification after Finn et al. (MAML, ICML 2017): the four-block learner of the
//! few-shot papers, N-way K-shot episodes drawn from classes of images, and the programs that
//! adapt the learner to an episode and meta-train its initial parameters; and the baselines of
//! a network pretrained on the meta-training classes (fine-tuning, nearest neighbour in its
//! embedding).

use crate::graph::{GResult, Graph, GraphError, NodeId};
use crate::l2l::{flatten, meta_optimizer, stack_scalars, unflatten, Outer, Preprocess};
use crate::models::{lstm_cell, Init, ParamSpec};
use crate::optim::Optimizer;
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
                init: Init::Constant(1.0),
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

    /// How many of [`Learner::params`] are the body's (the blocks'): the rest are the head's.
    pub fn body(&self) -> usize {
        3 * self.blocks
    }

    /// The body's features [n, f], the last maps flattened, for images x [n, 1, side, side];
    /// `body` holds the blocks' parameters.
    pub fn features(&self, g: &mut Graph, body: &[NodeId], x: NodeId) -> GResult<NodeId> {
        let n = g.shape(x)[0];
        let mut h = x;
        for b in 0..self.blocks {
            h = g.conv2d(h, body[3 * b], 1, 1)?;
            h = g.batch_norm(h, body[3 * b + 1], body[3 * b + 2], BATCH_NORM_EPS)?;
            h = g.relu(h)?;
            let side = g.shape(h)[2];
            if side % 2 == 1 {
                h = g.slice(h, 2, 0, side - 1)?;
                h = g.slice(h, 3, 0, side - 1)?;
            }
            h = g.max_pool2d(h, 2)?;
        }
        let features = g.shape(h)[1..].iter().product();
        g.reshape(h, &[n, features])
    }

    /// Logits [n, way] for images x [n, 1, side, side].
    pub fn logits(&self, g: &mut Graph, params: &[NodeId], x: NodeId) -> GResult<NodeId> {
        let (body, head) = params.split_at(self.body());
        let h = self.features(g, body, x)?;
        g.linear(h, head[0], head[1])
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
        scores(g, logits, y)
    }
}

/// Mean cross-entropy and mean accuracy of logits against labels.
fn scores(g: &mut Graph, logits: NodeId, y: NodeId) -> GResult<(NodeId, NodeId)> {
    let losses = g.softmax_cross_entropy(logits, y)?;
    let correct = g.correct_predictions(logits, y)?;
    Ok((g.mean_all(losses)?, g.mean_all(correct)?))
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

impl Episodes {
    /// The programs' input names of the four tensors, in [`Episodes::into_tensors`]' order.
    pub const INPUTS: [&'static str; 4] = ["support", "support_labels", "query", "query_labels"];

    pub fn into_tensors(self) -> [HostTensor; 4] {
        [self.support, self.support_labels, self.query, self.query_labels]
    }
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

/// Ravi & Larochelle's meta-learner (ICLR 2017): a coordinatewise two-layer LSTM whose second
/// layer's cell state is the learner's parameters, c_t = f_t ⊙ c_{t−1} − i_t ⊙ ∇_t. The first
/// layer is a plain LSTM of `hidden` units over the log-sign preprocessed gradient and loss
/// (Andrychowicz et al.'s, p = 10); the forget and input gates read its output, the parameter
/// and the gate's previous value, with weights shared across coordinates. The gradient and
/// loss enter through StopGradient (the paper's first-order choice); the learner's initial
/// parameters c_0 are learned too.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaLearner {
    pub hidden: usize,
    /// Updates on the support set.
    pub steps: usize,
}

/// The preprocessing of the gradient and loss the meta-learner reads.
const LOG_SIGN: Preprocess = Preprocess::LogSign { p: 10.0 };
/// The gates' starting biases, the authors' ranges' middles (U(4, 6) and U(−5, −4)): forget
/// near 1 and a small learning rate, so the first updates are gentle gradient descent.
const FORGET_BIAS: f64 = 5.0;
const INPUT_BIAS: f64 = -4.5;

impl MetaLearner {
    /// The first layer's weight [4 + H, 4H] and bias (as `models::lstm_cell` takes them), then
    /// each gate's weight [H + 2, 1] over (output, parameter, previous gate) and bias [1].
    pub fn params(&self) -> Vec<ParamSpec> {
        let h = self.hidden;
        let spec =
            |name: &str, shape: Vec<usize>, init| ParamSpec { name: name.into(), shape, init };
        let small = Init::Uniform { bound: 0.01 };
        vec![
            spec("lstm.weight", vec![LOG_SIGN.features() * 2 + h, 4 * h], Init::torch_default(h)),
            spec("lstm.bias", vec![4 * h], Init::torch_default(h)),
            spec("forget.weight", vec![h + 2, 1], small),
            spec("forget.bias", vec![1], Init::Constant(FORGET_BIAS)),
            spec("input.weight", vec![h + 2, 1], small),
            spec("input.bias", vec![1], Init::Constant(INPUT_BIAS)),
        ]
    }
}

/// How the learner is adapted to an episode's support set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Inner {
    /// MAML: gradient descent from learned initial parameters.
    Gradient { adaptation: Adaptation, order: Order },
    /// The meta-learner LSTM.
    MetaLearner(MetaLearner),
    /// The baseline of a pretrained network: plain (first-order) gradient descent from the
    /// given parameters on the whole network, or on the head alone (`whole: false`: the body's
    /// features are fixed, so the head is logistic regression on them). Not meta-trained.
    FineTune { adaptation: Adaptation, whole: bool },
}

/// The meta-learner's gradients are clipped to this norm before its Adam step (the authors'
/// configuration).
pub const META_LEARNER_CLIP: f64 = 0.25;

impl Inner {
    /// What meta-training learns: MAML the learner's initial parameters; the meta-learner its
    /// own weights, then the learner's initial parameters.
    pub fn meta_params(&self, learner: &Learner) -> Vec<ParamSpec> {
        match self {
            Inner::Gradient { .. } | Inner::FineTune { .. } => learner.params(),
            Inner::MetaLearner(m) => m.params().into_iter().chain(learner.params()).collect(),
        }
    }

    /// The adapted parameters, and for the meta-learner its gates' means after each update
    /// ([steps, 2]: input, forget).
    fn adapt(
        &self,
        g: &mut Graph,
        learner: &Learner,
        meta: &[NodeId],
        (x, y): (NodeId, NodeId),
    ) -> GResult<(Vec<NodeId>, Option<NodeId>)> {
        match *self {
            Inner::Gradient { adaptation, order } => {
                let loss = |g: &mut Graph, theta: &[NodeId]| {
                    Ok(learner.loss_and_accuracy(g, theta, x, y)?.0)
                };
                Ok((descend(g, meta.to_vec(), adaptation, order, loss)?, None))
            }
            Inner::FineTune { adaptation, whole: true } => {
                Inner::Gradient { adaptation, order: Order::First }.adapt(g, learner, meta, (x, y))
            }
            Inner::FineTune { adaptation, whole: false } => {
                let (body, head) = meta.split_at(learner.body());
                // The body is fixed: its features are computed once.
                let features = learner.features(g, body, x)?;
                let loss = |g: &mut Graph, head: &[NodeId]| {
                    let logits = g.linear(features, head[0], head[1])?;
                    Ok(scores(g, logits, y)?.0)
                };
                let head = descend(g, head.to_vec(), adaptation, Order::First, loss)?;
                Ok((body.iter().copied().chain(head).collect(), None))
            }
            Inner::MetaLearner(m) => {
                let (phi, theta0) = meta.split_at(6);
                let [w, b, wf, bf, wi, bi] = phi else { unreachable!("six weights") };
                let mut c = flatten(g, theta0)?;
                let n = g.shape(c)[0];
                let mut h = g.full(0.0, &[m.hidden, n])?;
                let mut cell = g.full(0.0, &[m.hidden, n])?;
                let mut forget = g.full(0.0, &[1, n])?;
                let mut input = g.full(0.0, &[1, n])?;
                let mut gates = Vec::with_capacity(2 * m.steps);
                for _ in 0..m.steps {
                    let theta = unflatten(g, c, theta0)?;
                    let (loss, _) = learner.loss_and_accuracy(g, &theta, x, y)?;
                    let grads = g.grads(loss, &theta)?;
                    let grad = flatten(g, &grads)?;
                    let grad = g.stop_gradient(grad);
                    let loss = g.stop_gradient(loss);
                    let grad_features = LOG_SIGN.apply(g, grad)?;
                    let loss = g.reshape(loss, &[1])?;
                    let loss_features = LOG_SIGN.apply(g, loss)?;
                    let loss_features = g.broadcast_to(loss_features, &[2, n])?;
                    let features = g.concat(&[grad_features, loss_features], 0)?;
                    (h, cell) = lstm_cell(g, features, h, cell, *w, *b)?;
                    let row = g.reshape(c, &[1, n])?;
                    let gate = |g: &mut Graph, previous, weight, bias| -> GResult<NodeId> {
                        let z = g.concat(&[h, row, previous], 0)?;
                        let pre = g.matmul_t(weight, z, true, false)?;
                        let bias = g.reshape(bias, &[1, 1])?;
                        let bias = g.broadcast_to(bias, &[1, n])?;
                        let pre = g.add(pre, bias)?;
                        g.sigmoid(pre)
                    };
                    forget = gate(g, forget, *wf, *bf)?;
                    input = gate(g, input, *wi, *bi)?;
                    let kept = g.mul(forget, row)?;
                    let grad = g.reshape(grad, &[1, n])?;
                    let step = g.mul(input, grad)?;
                    let next = g.sub(kept, step)?;
                    c = g.reshape(next, &[n])?;
                    gates.push(g.mean_all(input)?);
                    gates.push(g.mean_all(forget)?);
                }
                let theta = unflatten(g, c, theta0)?;
                let gates = stack_scalars(g, &gates)?;
                let gates = g.reshape(gates, &[m.steps, 2])?;
                Ok((theta, Some(gates)))
            }
        }
    }
}

/// `steps` steps of gradient descent at rate `lr` on `loss` from `theta`.
fn descend(
    g: &mut Graph,
    mut theta: Vec<NodeId>,
    adaptation: Adaptation,
    order: Order,
    loss: impl Fn(&mut Graph, &[NodeId]) -> GResult<NodeId>,
) -> GResult<Vec<NodeId>> {
    for _ in 0..adaptation.steps {
        let l = loss(g, &theta)?;
        let grads = g.grads(l, &theta)?;
        theta = theta
            .iter()
            .zip(grads)
            .map(|(&p, dp)| {
                let dp = match order {
                    Order::First => g.stop_gradient(dp),
                    Order::Second => dp,
                };
                let step = g.scale(dp, adaptation.lr)?;
                g.sub(p, step)
            })
            .collect::<GResult<_>>()?;
    }
    Ok(theta)
}

/// Inputs named by their specs.
fn named_inputs(g: &mut Graph, specs: &[ParamSpec]) -> Vec<NodeId> {
    specs.iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect()
}

/// One episode's support and query sets as inputs, named by [`Episodes::INPUTS`].
fn episode_inputs(g: &mut Graph, side: usize, shape: EpisodeShape, episodes: usize) -> [NodeId; 4] {
    let (s, q) = (episodes * shape.support(), episodes * shape.queries());
    let [sx, sy, qx, qy] = Episodes::INPUTS;
    [
        g.input(sx, &[s, 1, side, side], DType::F32),
        g.input(sy, &[s], DType::I64),
        g.input(qx, &[q, 1, side, side], DType::F32),
        g.input(qy, &[q], DType::I64),
    ]
}

/// Adapts to one episode and scores its queries. Inputs: the meta-parameters
/// ([`Inner::meta_params`], by name), then `support`, `support_labels`, `query`,
/// `query_labels` of one episode. Outputs: the query set's mean `loss` and `accuracy`, and for
/// the meta-learner its `gates`. The queries are one batch, so batch normalization uses their
/// statistics, as MAML's evaluation does.
pub fn adaptation_graph(learner: &Learner, shape: EpisodeShape, inner: &Inner) -> GResult<Graph> {
    let mut g = Graph::new();
    let meta = named_inputs(&mut g, &inner.meta_params(learner));
    let [sx, sy, qx, qy] = episode_inputs(&mut g, learner.side, shape, 1);
    // No outer gradient here: first order keeps every inner gradient a plain backward pass.
    let inner = match *inner {
        Inner::Gradient { adaptation, .. } => Inner::Gradient { adaptation, order: Order::First },
        other => other,
    };
    let (adapted, gates) = inner.adapt(&mut g, learner, &meta, (sx, sy))?;
    let (loss, accuracy) = learner.loss_and_accuracy(&mut g, &adapted, qx, qy)?;
    g.output("loss", loss);
    g.output("accuracy", accuracy);
    if let Some(gates) = gates {
        g.output("gates", gates);
    }
    Ok(g)
}

/// One meta-training step on a meta-batch of `tasks` episodes: each adapted on its support
/// set, the meta-loss the mean of their query losses after adaptation.
///
/// Inputs: the meta-parameters ([`Inner::meta_params`]); for [`Outer::Adam`] its state (m and
/// v per parameter, then the step counter); then `support`, `support_labels`, `query`,
/// `query_labels` holding the `tasks` episodes stacked. Outputs: `meta_loss`, `accuracy` (the
/// queries' mean after adaptation), then `grad.<name>` per parameter ([`Outer::Gradient`]) or
/// the updated parameters and Adam state under their input names ([`Outer::Adam`]), so that
/// one step's outputs feed the next. The meta-learner's gradients are clipped to
/// [`META_LEARNER_CLIP`] in norm before its Adam step.
pub fn meta_step_graph(
    learner: &Learner,
    shape: EpisodeShape,
    tasks: usize,
    inner: &Inner,
    outer: Outer,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = inner.meta_params(learner);
    let meta = named_inputs(&mut g, &specs);
    let adam = match outer {
        Outer::Adam { lr } => {
            let o = meta_optimizer(lr);
            let state = o.state_inputs(&mut g, &specs);
            Some((o, state))
        }
        _ => None,
    };
    let [sx, sy, qx, qy] = episode_inputs(&mut g, learner.side, shape, tasks);
    let (s, q) = (shape.support(), shape.queries());
    let (mut losses, mut accuracies) = (Vec::with_capacity(tasks), Vec::with_capacity(tasks));
    for t in 0..tasks {
        let task_x = g.slice(sx, 0, t * s, (t + 1) * s)?;
        let task_y = g.slice(sy, 0, t * s, (t + 1) * s)?;
        let (adapted, _) = inner.adapt(&mut g, learner, &meta, (task_x, task_y))?;
        let query_x = g.slice(qx, 0, t * q, (t + 1) * q)?;
        let query_y = g.slice(qy, 0, t * q, (t + 1) * q)?;
        let (loss, accuracy) = learner.loss_and_accuracy(&mut g, &adapted, query_x, query_y)?;
        losses.push(loss);
        accuracies.push(accuracy);
    }
    if tasks == 0 {
        return Err(GraphError::Invalid("a meta-batch needs at least one task".into()));
    }
    let mean = |g: &mut Graph, xs: &[NodeId]| -> GResult<NodeId> {
        let stacked = stack_scalars(g, xs)?;
        g.mean_all(stacked)
    };
    let meta_loss = mean(&mut g, &losses)?;
    let accuracy = mean(&mut g, &accuracies)?;
    g.output("meta_loss", meta_loss);
    g.output("accuracy", accuracy);
    let mut grads = g.grads(meta_loss, &meta)?;
    if matches!(inner, Inner::MetaLearner(_)) && matches!(outer, Outer::Adam { .. }) {
        grads = clip_by_norm(&mut g, &grads, META_LEARNER_CLIP)?;
    }
    match (outer, adam) {
        (Outer::Gradient, _) => {
            for (spec, dp) in specs.iter().zip(grads) {
                g.output(format!("grad.{}", spec.name), dp);
            }
        }
        (Outer::Adam { .. }, Some((o, state))) => {
            o.step_outputs(&mut g, &specs, (&meta, &grads), state)?
        }
        _ => {}
    }
    Ok(g)
}

/// One step of plain classification training of the learner (its `way` the number of
/// classes) on a batch: the pretraining of the pretrained-network baselines.
///
/// Inputs: the learner's parameters by name, the optimizer's state ([`Optimizer::state_names`]), then
/// `x` [batch, 1, side, side] and `y` [batch] (i64). Outputs: the batch's mean `loss`, then
/// the updated parameters and state under their input names.
pub fn pretrain_step_graph(learner: &Learner, batch: usize, o: &Optimizer) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = learner.params();
    let params = named_inputs(&mut g, &specs);
    let state = o.state_inputs(&mut g, &specs);
    let s = learner.side;
    let x = g.input("x", &[batch, 1, s, s], DType::F32);
    let y = g.input("y", &[batch], DType::I64);
    let (loss, _) = learner.loss_and_accuracy(&mut g, &params, x, y)?;
    g.output("loss", loss);
    let grads = g.grads(loss, &params)?;
    o.step_outputs(&mut g, &specs, (&params, &grads), state)?;
    Ok(g)
}

/// The learner's body as an embedding. Inputs: the body's parameters by name (the first
/// [`Learner::body`] of [`Learner::params`]), then `x` [n, 1, side, side]. Output: `features`
/// [n, f], batch normalization using the batch's statistics.
pub fn embedding_graph(learner: &Learner, n: usize) -> GResult<Graph> {
    let mut g = Graph::new();
    let body = named_inputs(&mut g, &learner.params()[..learner.body()]);
    let s = learner.side;
    let x = g.input("x", &[n, 1, s, s], DType::F32);
    let features = learner.features(&mut g, &body, x)?;
    g.output("features", features);
    Ok(g)
}

/// The gradients scaled together so that their joint norm is at most `max`.
fn clip_by_norm(g: &mut Graph, grads: &[NodeId], max: f64) -> GResult<Vec<NodeId>> {
    let squares = grads
        .iter()
        .map(|&d| {
            let sq = g.square(d)?;
            g.sum_all(sq)
        })
        .collect::<GResult<Vec<_>>>()?;
    let total = stack_scalars(g, &squares)?;
    let total = g.sum_all(total)?;
    let norm = g.sqrt(total)?;
    // max / max(norm, max): 1 below the bound.
    let floor = g.clamp(norm, max, f64::INFINITY)?;
    let one = g.scalar(max as f32);
    let factor = g.div(one, floor)?;
    grads
        .iter()
        .map(|&d| {
            let shape = g.shape(d).to_vec();
            let f = g.broadcast_to(factor, &shape)?;
            g.mul(d, f)
        })
        .collect()
}

/// The label of each query's nearest support row (Euclidean distance; ties go to the first),
/// for one episode, the rows `width` wide: in pixel space the baseline that learns nothing, in
/// a pretrained embedding ([`embedding_graph`]) the baseline of a pretrained network.
pub fn nearest_neighbour(
    support: &[f32],
    support_labels: &[i64],
    query: &[f32],
    width: usize,
) -> Vec<i64> {
    query
        .chunks(width)
        .map(|q| {
            let distance =
                |s: &[f32]| -> f32 { s.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum() };
            let (best, _) =
                support.chunks(width).enumerate().fold((0, f32::INFINITY), |(bi, bd), (i, s)| {
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
