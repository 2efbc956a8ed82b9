//! Learning to learn (Andrychowicz et al., 2016): a coordinatewise LSTM optimizer, its
//! gradient preprocessing, the quadratic optimizees, and the unrolled meta-loss graph.

use crate::graph::{CmpOp, GResult, Graph, NodeId};
use crate::models::{lstm_cell, Init, ParamSpec};
use crate::rng::Rng;
use crate::tensor::{DType, HostTensor};

/// A two-layer (by default) LSTM applied to every coordinate of the optimizee separately,
/// its weights shared by all coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmOptimizer {
    pub hidden: usize,
    pub layers: usize,
    /// The preprocessing constant p of the paper's appendix.
    pub preprocess: f64,
    /// Scale of the LSTM's output (0.01 in the authors' code).
    pub output_scale: f64,
}

impl Default for LstmOptimizer {
    fn default() -> Self {
        Self { hidden: 20, layers: 2, preprocess: 10.0, output_scale: 0.01 }
    }
}

impl LstmOptimizer {
    pub fn params(&self) -> Vec<ParamSpec> {
        let h = self.hidden;
        let lstm_init = Init::torch_default(h);
        let mut ps = Vec::new();
        for l in 0..self.layers {
            let input = if l == 0 { 2 } else { h };
            ps.push(ParamSpec {
                name: format!("lstm{l}.weight"),
                shape: vec![input + h, 4 * h],
                init: lstm_init,
            });
            ps.push(ParamSpec {
                name: format!("lstm{l}.bias"),
                shape: vec![4 * h],
                init: lstm_init,
            });
        }
        ps.push(ParamSpec {
            name: "out.weight".into(),
            shape: vec![h, 1],
            init: Init::torch_default(h),
        });
        ps.push(ParamSpec {
            name: "out.bias".into(),
            shape: vec![1],
            init: Init::torch_default(h),
        });
        ps
    }

    /// (h, c) for each layer, for `n` coordinates.
    pub fn state_shapes(&self, n: usize) -> Vec<Vec<usize>> {
        (0..2 * self.layers).map(|_| vec![n, self.hidden]).collect()
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
        let mut x = preprocess_gradient(g, grad, self.preprocess)?;
        let mut new_state = Vec::with_capacity(state.len());
        for l in 0..self.layers {
            let (h, c) =
                lstm_cell(g, x, state[2 * l], state[2 * l + 1], phi[2 * l], phi[2 * l + 1])?;
            new_state.extend([h, c]);
            x = h;
        }
        let k = 2 * self.layers;
        let out = g.linear(x, phi[k], phi[k + 1])?;
        let out = g.reshape(out, &[n])?;
        Ok((g.scale(out, self.output_scale)?, new_state))
    }
}

/// The paper's preprocessing of a gradient g [n] into two features [n, 2]:
/// (log|g|/p, sign g) where |g| ≥ e^-p, else (-1, e^p g).
pub fn preprocess_gradient(g: &mut Graph, grad: NodeId, p: f64) -> GResult<NodeId> {
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
    let f1 = g.reshape(f1, &[n, 1])?;
    let f2 = g.reshape(f2, &[n, 1])?;
    g.concat(&[f1, f2], 1)
}

/// A batch of random quadratics f(θ) = ‖Wθ − y‖², as in the authors' code (uniform W and y,
/// θ₀ ~ N(0, 0.01²)); the loss is the mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quadratics {
    pub functions: usize,
    pub dim: usize,
}

impl Quadratics {
    /// Draws W [B,d,d], y [B,d] and θ₀ [B,d].
    pub fn sample(&self, rng: &mut Rng) -> [HostTensor; 3] {
        let (b, d) = (self.functions, self.dim);
        let mut draw = |n: usize, f: &mut dyn FnMut(&mut Rng) -> f64| -> Vec<f32> {
            (0..n).map(|_| f(rng) as f32).collect()
        };
        let w = draw(b * d * d, &mut |r| r.uniform());
        let y = draw(b * d, &mut |r| r.uniform());
        let theta = draw(b * d, &mut |r| 0.01 * r.normal());
        [
            HostTensor::f32(vec![b, d, d], w).expect("shape"),
            HostTensor::f32(vec![b, d], y).expect("shape"),
            HostTensor::f32(vec![b, d], theta).expect("shape"),
        ]
    }

    /// mean_b ‖W_b θ_b − y_b‖² for W [B,d,d], y [B,d], θ [B,d].
    pub fn loss(&self, g: &mut Graph, w: NodeId, y: NodeId, theta: NodeId) -> GResult<NodeId> {
        let (b, d) = (self.functions, self.dim);
        let row = g.reshape(theta, &[b, 1, d])?;
        let prod = g.mul(w, row)?;
        let wt = g.sum(prod, &[2], false)?;
        let r = g.sub(wt, y)?;
        let sq = g.square(r)?;
        let per_fn = g.sum(sq, &[1], false)?;
        g.mean_all(per_fn)
    }
}

/// The unrolled optimization of `unroll` steps of a quadratic batch by the LSTM optimizer.
///
/// Inputs: the optimizer's parameters φ, then `w`, `y`, `theta` and the LSTM state.
/// Outputs: `meta_loss` = Σ_{t=1..T} f(θ_t), `final_loss` = f(θ_T), `theta` = θ_T, the state
/// after the unroll, and `grad.<name>` = ∂ meta_loss / ∂φ for every parameter.
/// As in the paper, the optimizee's gradient enters the LSTM through StopGradient (no second
/// derivatives); `second_order` keeps them instead, for comparison.
pub fn quadratic_unroll(
    opt: &LstmOptimizer,
    q: &Quadratics,
    unroll: usize,
    second_order: bool,
) -> GResult<Graph> {
    let mut g = Graph::new();
    let specs = opt.params();
    let phi: Vec<NodeId> =
        specs.iter().map(|p| g.input(p.name.clone(), &p.shape, DType::F32)).collect();
    let (b, d) = (q.functions, q.dim);
    let w = g.input("w", &[b, d, d], DType::F32);
    let y = g.input("y", &[b, d], DType::F32);
    let mut theta = g.input("theta", &[b, d], DType::F32);
    let mut state: Vec<NodeId> = opt
        .state_shapes(b * d)
        .iter()
        .enumerate()
        .map(|(i, s)| g.input(format!("state{i}"), s, DType::F32))
        .collect();
    let mut meta_loss = None;
    let mut f = q.loss(&mut g, w, y, theta)?;
    for _ in 0..unroll {
        let grad = g.grad(f, theta)?;
        let grad = if second_order { grad } else { g.stop_gradient(grad) };
        let flat = g.reshape(grad, &[b * d])?;
        let (update, next) = opt.step(&mut g, &phi, flat, &state)?;
        let update = g.reshape(update, &[b, d])?;
        theta = g.add(theta, update)?;
        state = next;
        f = q.loss(&mut g, w, y, theta)?;
        meta_loss = Some(match meta_loss {
            Some(m) => g.add(m, f)?,
            None => f,
        });
    }
    let meta_loss = meta_loss.unwrap_or(f);
    g.output("meta_loss", meta_loss);
    g.output("final_loss", f);
    g.output("theta", theta);
    for (i, s) in state.iter().enumerate() {
        g.output(format!("state{i}"), *s);
    }
    for (spec, &p) in specs.iter().zip(&phi) {
        let dp = g.grad(meta_loss, p)?;
        g.output(format!("grad.{}", spec.name), dp);
    }
    Ok(g)
}
