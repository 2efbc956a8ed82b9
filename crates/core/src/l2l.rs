//! Learning to learn (Andrychowicz et al., 2016): a coordinatewise LSTM optimizer, its
//! gradient preprocessing, the optimizee problems, and the unrolled optimization as one graph
//! (with its outer gradient and the meta-optimizer's step, so that one unroll is one program).

use crate::graph::{CmpOp, GResult, Graph, NodeId};
use crate::models::{lstm_cell, Activation, Init, ParamSpec};
use crate::optim::{defaults, Optimizer, Rule};
use crate::rng::Rng;
use crate::tensor::{numel, DType, HostTensor};
use serde::{Deserialize, Serialize};

/// How the optimizee's gradient is fed to the LSTM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// The paper's appendix: (log|g|/p, sign g) where |g| ≥ e^-p, else (-1, e^p g).
    LogSign { p: f64 },
    /// The gradient itself, one feature (the authors' `StandardDeepLSTM` default).
    None,
}

impl Preprocess {
    pub fn features(self) -> usize {
        match self {
            Preprocess::LogSign { .. } => 2,
            Preprocess::None => 1,
        }
    }

    /// The features of a gradient g [n]: [features, n].
    pub fn apply(self, g: &mut Graph, grad: NodeId) -> GResult<NodeId> {
        match self {
            Preprocess::LogSign { p } => log_sign(g, grad, p),
            Preprocess::None => {
                let n = g.shape(grad)[0];
                g.reshape(grad, &[1, n])
            }
        }
    }
}

/// How the learned optimizer's own weights start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    /// PyTorch's `LSTMCell` and `Linear` defaults: U(±1/√hidden).
    #[default]
    TorchDefault,
    /// All zeros (the authors' convergence test).
    Zeros,
}

/// A coordinatewise LSTM optimizer: `layers` LSTM layers of `hidden` units (none: a linear
/// map of the features), then a linear output times `output_scale`. Its weights are shared
/// by every coordinate of the optimizee; each coordinate has its own LSTM state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstmOptimizer {
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    #[serde(default = "default_layers")]
    pub layers: usize,
    #[serde(default = "default_preprocess")]
    pub preprocess: Preprocess,
    /// Scale of the LSTM's output (0.01 in the authors' MNIST configuration).
    #[serde(default = "default_output_scale")]
    pub output_scale: f64,
    #[serde(default)]
    pub init: WeightInit,
}

fn default_hidden() -> usize {
    20
}
fn default_layers() -> usize {
    2
}
fn default_preprocess() -> Preprocess {
    Preprocess::LogSign { p: 10.0 }
}
fn default_output_scale() -> f64 {
    0.01
}

impl Default for LstmOptimizer {
    fn default() -> Self {
        Self {
            hidden: default_hidden(),
            layers: default_layers(),
            preprocess: default_preprocess(),
            output_scale: default_output_scale(),
            init: WeightInit::default(),
        }
    }
}

impl LstmOptimizer {
    pub fn params(&self) -> Vec<ParamSpec> {
        let h = self.hidden;
        let init = |fan_in: usize| match self.init {
            WeightInit::TorchDefault => Init::torch_default(fan_in),
            WeightInit::Zeros => Init::Zeros,
        };
        let mut ps = Vec::new();
        for l in 0..self.layers {
            let input = if l == 0 { self.preprocess.features() } else { h };
            let shape = vec![input + h, 4 * h];
            ps.push(ParamSpec { name: format!("lstm{l}.weight"), shape, init: init(h) });
            ps.push(ParamSpec { name: format!("lstm{l}.bias"), shape: vec![4 * h], init: init(h) });
        }
        let last = if self.layers == 0 { self.preprocess.features() } else { h };
        ps.push(ParamSpec { name: "out.weight".into(), shape: vec![last, 1], init: init(last) });
        ps.push(ParamSpec { name: "out.bias".into(), shape: vec![1], init: init(last) });
        ps
    }

    /// (h, c) for each layer, for `n` coordinates: [hidden, n] (coordinates last, as in
    /// [`lstm_cell`]).
    pub fn state_shapes(&self, n: usize) -> Vec<Vec<usize>> {
        (0..2 * self.layers).map(|_| vec![self.hidden, n]).collect()
    }

    /// The update for gradient `grad` [n] and the new LSTM state.
    pub fn step(
        &self,
        g: &mut Graph,
        phi: &[NodeId],
        grad: NodeId,
        state: &[NodeId],
    ) -> GResult<(NodeId, Vec<NodeId>)> {
        let n = g.shape(grad)[0];
        let mut x = self.preprocess.apply(g, grad)?;
        let mut new_state = Vec::with_capacity(state.len());
        for l in 0..self.layers {
            let (h, c) =
                lstm_cell(g, x, state[2 * l], state[2 * l + 1], phi[2 * l], phi[2 * l + 1])?;
            new_state.extend([h, c]);
            x = h;
        }
        let k = 2 * self.layers;
        // w [features, 1] and b [1] of a linear map, applied to x [features, n].
        let out = g.matmul_t(phi[k], x, true, false)?;
        let bias = g.reshape(phi[k + 1], &[1, 1])?;
        let bias = g.broadcast_to(bias, &[1, n])?;
        let out = g.add(out, bias)?;
        let out = g.reshape(out, &[n])?;
        Ok((g.scale(out, self.output_scale)?, new_state))
    }
}

/// The paper's preprocessing of a gradient g [n] into two features [2, n].
fn log_sign(g: &mut Graph, grad: NodeId, p: f64) -> GResult<NodeId> {
    let n = g.shape(grad)[0];
    let threshold = (-p).exp();
    let a = g.abs(grad)?;
    let t = g.scalar(threshold as f32);
    let big = g.compare(CmpOp::Ge, a, t)?;
    let small = g.affine(big, -1.0, 1.0)?;
    // Clamped so the log is finite where the branch is not taken.
    let safe = g.clamp(a, threshold, f64::INFINITY)?;
    let log = g.log(safe)?;
    let log = g.scale(log, 1.0 / p)?;
    let f1_big = g.mul(big, log)?;
    let f1 = g.sub(f1_big, small)?;
    let sign = g.sign(grad)?;
    let f2_big = g.mul(big, sign)?;
    let scaled = g.scale(grad, p.exp())?;
    let f2_small = g.mul(small, scaled)?;
    let f2 = g.add(f2_big, f2_small)?;
    let f1 = g.reshape(f1, &[1, n])?;
    let f2 = g.reshape(f2, &[1, n])?;
    g.concat(&[f1, f2], 0)
}

/// How a quadratic's W and y are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// U[0, 1): the authors' code.
    #[default]
    Uniform,
    /// N(0, 1): the paper's text.
    Gaussian,
}

/// A problem the learned optimizer optimizes: its parameters θ, the inputs fixed for a
/// problem, the inputs drawn for each step (minibatches), and its loss.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// f(θ) = mean over `functions` of ‖W θ − y‖², θ ∈ R^dim, θ₀ ~ N(0, 0.01²).
    Quadratic { functions: usize, dim: usize, distribution: Distribution },
    /// An image classifier (`hidden` layers of `activation`, softmax cross-entropy) trained on
    /// minibatches of `batch` drawn with replacement from `examples` images of `pixels`
    /// values; weights and biases N(0, 0.01²).
    Mlp {
        pixels: usize,
        classes: usize,
        examples: usize,
        hidden: Vec<usize>,
        activation: Activation,
        batch: usize,
    },
    /// f(x) = x², x₀ = 1: the authors' convergence test.
    Simple,
}

/// An input of a problem's programs: name, shape, dtype.
pub type InputSpec = (String, Vec<usize>, DType);

impl Problem {
    /// The optimizee's parameters (their initial values come from [`Problem::draw_theta`]).
    pub fn theta_shapes(&self) -> Vec<Vec<usize>> {
        match self {
            Problem::Quadratic { functions, dim, .. } => vec![vec![*functions, *dim]],
            Problem::Mlp { pixels, classes, hidden, .. } => {
                let mut widths = vec![*pixels];
                widths.extend(hidden);
                widths.push(*classes);
                widths.windows(2).flat_map(|w| [vec![w[0], w[1]], vec![w[1]]]).collect()
            }
            Problem::Simple => vec![vec![1]],
        }
    }

    /// Coordinates of θ: the LSTM's batch.
    pub fn coordinates(&self) -> usize {
        self.theta_shapes().iter().map(|s| numel(s)).sum()
    }

    /// Inputs fixed for one problem (a quadratic's W and y; the MLP's whole data set).
    pub fn fixed_inputs(&self) -> Vec<InputSpec> {
        match self {
            Problem::Quadratic { functions: b, dim: d, .. } => vec![
                ("w".into(), vec![*b, *d, *d], DType::F32),
                ("y".into(), vec![*b, *d], DType::F32),
            ],
            Problem::Mlp { pixels, examples, .. } => vec![
                ("data".into(), vec![*examples, *pixels], DType::F32),
                ("labels".into(), vec![*examples], DType::I64),
            ],
            Problem::Simple => vec![],
        }
    }

    /// Inputs drawn afresh for each run of `steps` steps (the MLP's minibatch indices, one
    /// row per loss evaluated: steps + 1).
    pub fn step_inputs(&self, steps: usize) -> Vec<InputSpec> {
        match self {
            Problem::Mlp { batch, .. } => {
                vec![("indices".into(), vec![steps + 1, *batch], DType::I64)]
            }
            _ => vec![],
        }
    }

    /// A quadratic's W and y from `rng`; nothing for the other problems (the MLP's data set
    /// is the caller's).
    pub fn draw_fixed(&self, rng: &mut Rng) -> Vec<HostTensor> {
        match self {
            Problem::Quadratic { functions: b, dim: d, distribution } => {
                let mut draw = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| match distribution {
                            Distribution::Uniform => rng.uniform() as f32,
                            Distribution::Gaussian => rng.normal() as f32,
                        })
                        .collect()
                };
                let w = draw(b * d * d);
                let y = draw(b * d);
                vec![
                    HostTensor::f32(vec![*b, *d, *d], w).expect("shape"),
                    HostTensor::f32(vec![*b, *d], y).expect("shape"),
                ]
            }
            _ => vec![],
        }
    }

    /// θ₀ from `rng`.
    pub fn draw_theta(&self, rng: &mut Rng) -> Vec<HostTensor> {
        match self {
            Problem::Simple => vec![HostTensor::f32(vec![1], vec![1.0]).expect("shape")],
            _ => self
                .theta_shapes()
                .iter()
                .map(|s| Init::Normal { std: 0.01 }.sample(s, rng))
                .collect(),
        }
    }

    /// The inputs of one run of `steps` steps from `rng`.
    pub fn draw_steps(&self, rng: &mut Rng, steps: usize) -> Vec<HostTensor> {
        match self {
            Problem::Mlp { examples, batch, .. } => {
                let idx = (0..(steps + 1) * batch).map(|_| rng.below(*examples) as i64).collect();
                vec![HostTensor::i64(vec![steps + 1, *batch], idx).expect("shape")]
            }
            _ => vec![],
        }
    }

    /// The loss at step `t` (0-based, up to `steps`) of θ.
    fn loss(
        &self,
        g: &mut Graph,
        fixed: &[NodeId],
        per_step: &[NodeId],
        t: usize,
        theta: &[NodeId],
    ) -> GResult<NodeId> {
        match self {
            Problem::Quadratic { functions: b, dim: d, .. } => {
                let (w, y) = (fixed[0], fixed[1]);
                let row = g.reshape(theta[0], &[*b, 1, *d])?;
                let prod = g.mul(w, row)?;
                let wt = g.sum(prod, &[2], false)?;
                let r = g.sub(wt, y)?;
                let sq = g.square(r)?;
                let per_fn = g.sum(sq, &[1], false)?;
                g.mean_all(per_fn)
            }
            Problem::Mlp { activation, batch, .. } => {
                let (data, labels) = (fixed[0], fixed[1]);
                let row = g.slice(per_step[0], 0, t, t + 1)?;
                let idx = g.reshape(row, &[*batch])?;
                let mut x = g.gather(data, idx)?;
                let y = g.gather(labels, idx)?;
                let layers = theta.len() / 2;
                for l in 0..layers {
                    x = g.linear(x, theta[2 * l], theta[2 * l + 1])?;
                    if l + 1 < layers {
                        x = activation.apply(g, x)?;
                    }
                }
                let ce = g.softmax_cross_entropy(x, y)?;
                g.mean_all(ce)
            }
            Problem::Simple => {
                let sq = g.square(theta[0])?;
                g.sum_all(sq)
            }
        }
    }
}

/// What an unroll program does with the learned optimizer's weights φ after the unroll.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outer {
    /// Nothing: an evaluation.
    None,
    /// Outputs ∂ meta_loss / ∂φ as `grad.<name>`.
    Gradient,
    /// Takes one Adam step on φ (torch.optim.Adam's defaults, this learning rate) inside the
    /// program: one unroll and its meta-update are one run.
    Adam { lr: f64 },
}

/// The meta-optimizer of [`Outer::Adam`].
pub fn meta_optimizer(lr: f64) -> Optimizer {
    let rule = Rule::Adam { beta1: defaults::BETA1, beta2: defaults::BETA2, eps: defaults::EPS };
    Optimizer::new(rule, lr)
}

/// The unrolled optimization of `problem` for `steps` steps by the learned optimizer.
///
/// Inputs, in order: φ; for [`Outer::Adam`] its state (m and v per parameter, then the step
/// counter); the problem's fixed inputs; its per-step inputs; θ; the LSTM state.
/// Outputs: `losses` [steps+1] = f(θ_0), …, f(θ_T); `meta_loss` = Σ_{t=1..T} f(θ_t); θ_T; the
/// LSTM state after the unroll; then `grad.<name>` per parameter ([`Outer::Gradient`]) or the
/// updated φ and Adam state ([`Outer::Adam`]). As in the paper, the optimizee's gradient enters
/// the LSTM through StopGradient; `second_order` keeps those derivatives instead.
pub fn unroll(
    opt: &LstmOptimizer,
    problem: &Problem,
    steps: usize,
    outer: Outer,
    second_order: bool,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = opt.params();
    let phi: Vec<NodeId> =
        specs.iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect();
    let adam = match outer {
        Outer::Adam { lr } => {
            let o = meta_optimizer(lr);
            let state = o.state_inputs(&mut g, &specs);
            Some((o, state))
        }
        _ => None,
    };
    let (fixed, per_step) = problem_inputs(&mut g, problem, steps);
    let mut theta = theta_inputs(&mut g, problem);
    let n = problem.coordinates();
    let mut state: Vec<NodeId> = opt
        .state_shapes(n)
        .iter()
        .enumerate()
        .map(|(i, s)| g.input(format!("state{i}"), s, DType::F32))
        .collect();
    let mut losses = Vec::with_capacity(steps + 1);
    let mut meta_loss = None;
    for t in 0..=steps {
        let f = problem.loss(&mut g, &fixed, &per_step, t, &theta)?;
        losses.push(f);
        if t > 0 {
            meta_loss = Some(match meta_loss {
                Some(m) => g.add(m, f)?,
                None => f,
            });
        }
        if t == steps {
            break;
        }
        let grads = g.grads(f, &theta)?;
        let flat = flatten(&mut g, &grads)?;
        let flat = if second_order { flat } else { g.stop_gradient(flat) };
        let (update, next) = opt.step(&mut g, &phi, flat, &state)?;
        let updates = unflatten(&mut g, update, &theta)?;
        theta = theta.iter().zip(updates).map(|(&p, u)| g.add(p, u)).collect::<GResult<_>>()?;
        state = next;
    }
    let meta_loss = meta_loss.unwrap_or(losses[0]);
    let loss_vector = stack_scalars(&mut g, &losses)?;
    g.output("losses", loss_vector);
    g.output("meta_loss", meta_loss);
    for (i, &p) in theta.iter().enumerate() {
        g.output(format!("theta{i}"), p);
    }
    for (i, &s) in state.iter().enumerate() {
        g.output(format!("state{i}"), s);
    }
    match (outer, adam) {
        (Outer::Gradient, _) => {
            for (spec, &p) in specs.iter().zip(&phi) {
                let dp = g.grad(meta_loss, p)?;
                g.output(format!("grad.{}", spec.name), dp);
            }
        }
        (Outer::Adam { .. }, Some((o, state))) => {
            let grads = g.grads(meta_loss, &phi)?;
            o.step_outputs(&mut g, &specs, (&phi, &grads), state)?;
        }
        _ => {}
    }
    Ok(g)
}

/// (output, input) pairs of the same name: what one run of an unroll program hands the next
/// (θ, the LSTM state, φ and the meta-optimizer's state; a baseline's θ and state).
pub fn carried(g: &Graph) -> Vec<(usize, usize)> {
    g.outputs()
        .iter()
        .enumerate()
        .filter_map(|(o, (name, _))| g.input_index(name).map(|i| (o, i)))
        .collect()
}

/// The problem's fixed and per-step inputs, in that order.
fn problem_inputs(g: &mut Graph, problem: &Problem, steps: usize) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut add = |specs: Vec<InputSpec>| -> Vec<NodeId> {
        specs.into_iter().map(|(name, shape, dtype)| g.input(name, &shape, dtype)).collect()
    };
    let fixed = add(problem.fixed_inputs());
    let per_step = add(problem.step_inputs(steps));
    (fixed, per_step)
}

fn theta_inputs(g: &mut Graph, problem: &Problem) -> Vec<NodeId> {
    let shapes = problem.theta_shapes();
    shapes.iter().enumerate().map(|(i, s)| g.input(format!("theta{i}"), s, DType::F32)).collect()
}

/// The tensors as one vector, in order.
pub(crate) fn flatten(g: &mut Graph, xs: &[NodeId]) -> GResult<NodeId> {
    let flat: Vec<NodeId> = xs
        .iter()
        .map(|&x| {
            let n = numel(g.shape(x));
            g.reshape(x, &[n])
        })
        .collect::<GResult<_>>()?;
    g.concat(&flat, 0)
}

/// A vector cut into tensors shaped like `like`.
pub(crate) fn unflatten(g: &mut Graph, v: NodeId, like: &[NodeId]) -> GResult<Vec<NodeId>> {
    let mut start = 0;
    like.iter()
        .map(|&x| {
            let shape = g.shape(x).to_vec();
            let n = numel(&shape);
            let part = g.slice(v, 0, start, start + n)?;
            start += n;
            g.reshape(part, &shape)
        })
        .collect()
}

pub(crate) fn stack_scalars(g: &mut Graph, xs: &[NodeId]) -> GResult<NodeId> {
    let parts: Vec<NodeId> = xs.iter().map(|&x| g.reshape(x, &[1])).collect::<GResult<_>>()?;
    g.concat(&parts, 0)
}

/// `steps` steps of a hand-designed optimizer on `problem`, the learning rate a scalar input
/// (so one program serves a whole grid of rates).
///
/// Inputs: `lr`; the problem's fixed and per-step inputs; θ; the optimizer's state (slots by
/// parameter, then its step counter). Outputs: `losses` [steps+1], θ_T, the state.
pub fn baseline_unroll(rule: Rule, problem: &Problem, steps: usize) -> GResult<Graph> {
    let mut g = Graph::new();
    let lr = g.input("lr", &[], DType::F32);
    let (fixed, per_step) = problem_inputs(&mut g, problem, steps);
    let mut theta = theta_inputs(&mut g, problem);
    let o = Optimizer::new(rule, 0.0);
    let mut slots: Vec<NodeId> = Vec::new();
    for (i, s) in problem.theta_shapes().iter().enumerate() {
        for k in 0..o.slots_per_param() {
            slots.push(g.input(format!("slot{i}.{k}"), s, DType::F32));
        }
    }
    let mut counter = o.counts_steps().then(|| g.input("step", &[], DType::F32));
    let per = o.slots_per_param();
    let mut losses = Vec::with_capacity(steps + 1);
    for t in 0..=steps {
        let f = problem.loss(&mut g, &fixed, &per_step, t, &theta)?;
        losses.push(f);
        if t == steps {
            break;
        }
        let grads = g.grads(f, &theta)?;
        let step = o.begin_step(&mut g, counter, Some(lr))?;
        let mut next_theta = Vec::with_capacity(theta.len());
        let mut next_slots = Vec::with_capacity(slots.len());
        for (i, (&p, &dp)) in theta.iter().zip(&grads).enumerate() {
            let dp = g.stop_gradient(dp);
            let (p2, s2) = o.update(&mut g, p, dp, &slots[i * per..(i + 1) * per], &step)?;
            next_theta.push(p2);
            next_slots.extend(s2);
        }
        theta = next_theta;
        slots = next_slots;
        counter = step.counter;
    }
    let loss_vector = stack_scalars(&mut g, &losses)?;
    g.output("losses", loss_vector);
    for (i, &p) in theta.iter().enumerate() {
        g.output(format!("theta{i}"), p);
    }
    for (k, &s) in slots.iter().enumerate() {
        g.output(format!("slot{}.{}", k / per.max(1), k % per.max(1)), s);
    }
    if let Some(c) = counter {
        g.output("step", c);
    }
    Ok(g)
}

/// The initial state of a baseline's [`baseline_unroll`] program for `problem`.
pub fn baseline_state(rule: Rule, problem: &Problem) -> Vec<HostTensor> {
    Optimizer::new(rule, 0.0).initial_state(&problem.theta_shapes())
}

/// The initial state of [`Outer::Adam`]'s meta-optimizer for the optimizer's parameters.
pub fn meta_state(opt: &LstmOptimizer) -> Vec<HostTensor> {
    let shapes: Vec<Vec<usize>> = opt.params().into_iter().map(|p| p.shape).collect();
    meta_optimizer(0.0).initial_state(&shapes)
}

/// A fresh LSTM state for `problem`.
pub fn zero_state(opt: &LstmOptimizer, problem: &Problem) -> Vec<HostTensor> {
    opt.state_shapes(problem.coordinates()).iter().map(|s| HostTensor::zeros(s)).collect()
}
