//! Model builders: parameters with their initialisers, and forward passes as graphs.

use crate::graph::{GResult, Graph, GraphError, NodeId};
use crate::rng::Rng;
use crate::tensor::{numel, HostTensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    pub fn apply(self, g: &mut Graph, x: NodeId) -> GResult<NodeId> {
        match self {
            Activation::Relu => g.relu(x),
            Activation::Sigmoid => g.sigmoid(x),
            Activation::Tanh => g.tanh(x),
        }
    }
}

/// How a parameter's initial values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-bound, bound).
    Uniform {
        bound: f64,
    },
    Normal {
        std: f64,
    },
    Zeros,
    /// Every value the same: a batch norm's scale (1), a gate's bias.
    Constant(f64),
}

impl Init {
    /// PyTorch's default for `Linear` and `Conv2d` weights and biases: U(±1/√fan_in).
    pub fn torch_default(fan_in: usize) -> Self {
        Init::Uniform { bound: 1.0 / (fan_in as f64).sqrt() }
    }
    /// Kaiming (He) uniform for ReLU layers: U(±√(6/fan_in)).
    pub fn kaiming_uniform(fan_in: usize) -> Self {
        Init::Uniform { bound: (6.0 / fan_in as f64).sqrt() }
    }
    /// Xavier (Glorot) uniform: U(±√(6/(fan_in+fan_out))).
    pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Self {
        Init::Uniform { bound: (6.0 / (fan_in + fan_out) as f64).sqrt() }
    }

    pub fn sample(self, shape: &[usize], rng: &mut Rng) -> HostTensor {
        let n = numel(shape);
        let data = match self {
            Init::Uniform { bound } => {
                (0..n).map(|_| rng.uniform_in(-bound, bound) as f32).collect()
            }
            Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Zeros => vec![0.0; n],
            Init::Constant(v) => vec![v as f32; n],
        };
        HostTensor::f32(shape.to_vec(), data).expect("length matches shape")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Draws every parameter from the seed's "init" stream, in order.
pub fn init_params(params: &[ParamSpec], seed: u64) -> Vec<HostTensor> {
    let mut rng = Rng::stream(seed, "init");
    params.iter().map(|p| p.init.sample(&p.shape, &mut rng)).collect()
}

/// A small convolutional network: [conv k×k (same padding) → relu → max-pool 2] per entry of
/// `channels`, then a dense hidden layer (relu, dropout site) and the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    #[serde(default = "CnnSpec::default_channels")]
    pub channels: Vec<usize>,
    #[serde(default = "CnnSpec::default_kernel")]
    pub kernel: usize,
    #[serde(default = "CnnSpec::default_hidden")]
    pub hidden: usize,
}

impl CnnSpec {
    fn default_channels() -> Vec<usize> {
        vec![16, 32]
    }
    fn default_kernel() -> usize {
        3
    }
    fn default_hidden() -> usize {
        128
    }
}

impl Default for CnnSpec {
    fn default() -> Self {
        Self {
            channels: Self::default_channels(),
            kernel: Self::default_kernel(),
            hidden: Self::default_hidden(),
        }
    }
}

/// A classifier of examples of shape `input` (c, h, w) into `classes`.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// Fully connected: input → hidden... → classes.
    Mlp {
        input: [usize; 3],
        hidden: Vec<usize>,
        classes: usize,
        activation: Activation,
    },
    Cnn {
        input: [usize; 3],
        spec: CnnSpec,
        classes: usize,
    },
}

impl Model {
    pub fn mlp(
        input: [usize; 3],
        hidden: &[usize],
        classes: usize,
        activation: Activation,
    ) -> Self {
        Model::Mlp { input, hidden: hidden.to_vec(), classes, activation }
    }

    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Model::Mlp { input, .. } | Model::Cnn { input, .. } => *input,
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Model::Mlp { classes, .. } | Model::Cnn { classes, .. } => *classes,
        }
    }

    /// Layer widths of an MLP, input and output included.
    fn mlp_sizes(input: &[usize; 3], hidden: &[usize], classes: usize) -> Vec<usize> {
        std::iter::once(numel(input)).chain(hidden.iter().copied()).chain([classes]).collect()
    }

    /// Spatial size after the CNN's pooling stages.
    fn cnn_flat(input: &[usize; 3], spec: &CnnSpec) -> GResult<usize> {
        let (mut h, mut w) = (input[1], input[2]);
        for _ in &spec.channels {
            if h % 2 != 0 || w % 2 != 0 {
                return Err(GraphError::Invalid(format!(
                    "the CNN's {} pooling stages need image sides divisible by {}, the input is {}×{}",
                    spec.channels.len(), 1 << spec.channels.len(), input[1], input[2]
                )));
            }
            h /= 2;
            w /= 2;
        }
        Ok(spec.channels.last().copied().unwrap_or(input[0]) * h * w)
    }

    pub fn params(&self) -> GResult<Vec<ParamSpec>> {
        let mut ps = Vec::new();
        let dense = |ps: &mut Vec<ParamSpec>, name: String, i: usize, o: usize| {
            ps.push(ParamSpec {
                name: format!("{name}.weight"),
                shape: vec![i, o],
                init: Init::torch_default(i),
            });
            ps.push(ParamSpec {
                name: format!("{name}.bias"),
                shape: vec![o],
                init: Init::torch_default(i),
            });
        };
        match self {
            Model::Mlp { input, hidden, classes, .. } => {
                let sizes = Self::mlp_sizes(input, hidden, *classes);
                for (l, w) in sizes.windows(2).enumerate() {
                    dense(&mut ps, format!("fc{l}"), w[0], w[1]);
                }
            }
            Model::Cnn { input, spec, classes } => {
                let mut c_in = input[0];
                for (l, &c) in spec.channels.iter().enumerate() {
                    let fan_in = c_in * spec.kernel * spec.kernel;
                    let init = Init::torch_default(fan_in);
                    ps.push(ParamSpec {
                        name: format!("conv{l}.weight"),
                        shape: vec![c, c_in, spec.kernel, spec.kernel],
                        init,
                    });
                    ps.push(ParamSpec { name: format!("conv{l}.bias"), shape: vec![c], init });
                    c_in = c;
                }
                let flat = Self::cnn_flat(input, spec)?;
                dense(&mut ps, "fc0".into(), flat, spec.hidden);
                dense(&mut ps, "fc1".into(), spec.hidden, *classes);
            }
        }
        Ok(ps)
    }

    /// Shapes of the dropout masks a batch needs: one per hidden dense layer.
    pub fn dropout_sites(&self, batch: usize) -> Vec<Vec<usize>> {
        match self {
            Model::Mlp { hidden, .. } => hidden.iter().map(|&h| vec![batch, h]).collect(),
            Model::Cnn { spec, .. } => vec![vec![batch, spec.hidden]],
        }
    }

    /// A CNN's feature maps after its first `depth` blocks (convolution, bias, ReLU, 2×2 max
    /// pooling) for x [b, c, h, w]; `params` needs only those blocks' weights and biases.
    pub fn conv_features(
        &self,
        g: &mut Graph,
        params: &[NodeId],
        x: NodeId,
        depth: usize,
    ) -> GResult<NodeId> {
        let Model::Cnn { spec, .. } = self else {
            return Err(GraphError::Invalid("feature maps are a CNN's".into()));
        };
        if depth > spec.channels.len() {
            return Err(GraphError::Invalid(format!(
                "the CNN has {} blocks, not {depth}",
                spec.channels.len()
            )));
        }
        let mut h = x;
        for l in 0..depth {
            h = g.conv2d(h, params[2 * l], 1, spec.kernel / 2)?;
            let c = spec.channels[l];
            let bias = g.reshape(params[2 * l + 1], &[1, c, 1, 1])?;
            h = g.add(h, bias)?;
            h = g.relu(h)?;
            h = g.max_pool2d(h, 2)?;
        }
        Ok(h)
    }

    /// Logits [b, classes] for x [b, c, h, w]. `masks` is empty (no dropout) or one
    /// mask per dropout site, holding 0 or 1/(1-p), multiplied into the activation.
    pub fn forward(
        &self,
        g: &mut Graph,
        params: &[NodeId],
        x: NodeId,
        masks: &[NodeId],
    ) -> GResult<NodeId> {
        let b = g.shape(x)[0];
        let mask = |g: &mut Graph, h: NodeId, site: usize| -> GResult<NodeId> {
            match masks.get(site) {
                Some(&m) => g.mul(h, m),
                None => Ok(h),
            }
        };
        match self {
            Model::Mlp { input, hidden, activation, .. } => {
                let mut h = g.reshape(x, &[b, numel(input)])?;
                let layers = hidden.len() + 1;
                for l in 0..layers {
                    h = g.linear(h, params[2 * l], params[2 * l + 1])?;
                    if l + 1 < layers {
                        h = activation.apply(g, h)?;
                        h = mask(g, h, l)?;
                    }
                }
                Ok(h)
            }
            Model::Cnn { spec, .. } => {
                let mut h = self.conv_features(g, params, x, spec.channels.len())?;
                let k = 2 * spec.channels.len();
                let flat = g.shape(h)[1..].iter().product();
                h = g.reshape(h, &[b, flat])?;
                h = g.linear(h, params[k], params[k + 1])?;
                h = g.relu(h)?;
                h = mask(g, h, 0)?;
                g.linear(h, params[k + 2], params[k + 3])
            }
        }
    }
}

/// Draws dropout masks for one step: each unit kept with probability 1-p, scaled by 1/(1-p).
pub fn dropout_masks(sites: &[Vec<usize>], p: f64, rng: &mut Rng) -> Vec<HostTensor> {
    let keep = (1.0 / (1.0 - p)) as f32;
    sites
        .iter()
        .map(|shape| {
            let data =
                (0..numel(shape)).map(|_| if rng.bernoulli(p) { 0.0 } else { keep }).collect();
            HostTensor::f32(shape.clone(), data).expect("length matches shape")
        })
        .collect()
}

/// One LSTM cell with coordinates along the last axis: x [i, n], h and c [H, n]; w [i+H, 4H]
/// (rows for x, then for h) and b [4H], gates in the order i, f, o, g (PyTorch's LSTMCell
/// weights transposed and stacked; PyTorch orders the gates i, f, g, o).
///
/// Coordinates last make every gate, and every part of the gates' gradient, a contiguous block
/// of rows: slicing and concatenating them copies whole blocks (or nothing, where an engine
/// views them), where with coordinates first each of n rows is cut into pieces. The bias rides
/// in the product as a row of ones, and each gate is its own slice, so that the rest of the
/// cell is elementwise over [H, n]: one fused kernel where the engine fuses.
pub fn lstm_cell(
    g: &mut Graph,
    x: NodeId,
    h: NodeId,
    c: NodeId,
    w: NodeId,
    b: NodeId,
) -> GResult<(NodeId, NodeId)> {
    let (hidden, n) = (g.shape(h)[0], g.shape(h)[1]);
    let ones = g.full(1.0, &[1, n])?;
    let xh1 = g.concat(&[x, h, ones], 0)?;
    let b = g.reshape(b, &[1, 4 * hidden])?;
    let wb = g.concat(&[w, b], 0)?;
    let gates = g.matmul_t(wb, xh1, true, false)?;
    let gate = |g: &mut Graph, k: usize| g.slice(gates, 0, k * hidden, (k + 1) * hidden);
    let (i, f, o, gg) = (gate(g, 0)?, gate(g, 1)?, gate(g, 2)?, gate(g, 3)?);
    let (i, f, o) = (g.sigmoid(i)?, g.sigmoid(f)?, g.sigmoid(o)?);
    let gg = g.tanh(gg)?;
    let fc = g.mul(f, c)?;
    let ig = g.mul(i, gg)?;
    let c2 = g.add(fc, ig)?;
    let tc = g.tanh(c2)?;
    let h2 = g.mul(o, tc)?;
    Ok((h2, c2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisers_draw_within_their_bounds_and_use_them() {
        let mut rng = Rng::new(0);
        for (init, bound) in [
            (Init::torch_default(100), 0.1),
            (Init::kaiming_uniform(24), 0.5),
            (Init::xavier_uniform(16, 8), 0.5),
            (Init::Uniform { bound: 2.0 }, 2.0),
        ] {
            let v = init.sample(&[1000], &mut rng).into_f32().unwrap();
            assert!(v.iter().all(|x| x.abs() <= bound as f32), "{init:?}");
            assert!(
                v.iter().any(|x| x.abs() > 0.9 * bound as f32),
                "{init:?} does not reach its bound"
            );
        }
        let v = Init::Normal { std: 0.5 }.sample(&[20_000], &mut rng).into_f32().unwrap();
        let var = v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64;
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{var}");
        assert!(Init::Zeros.sample(&[5], &mut rng).into_f32().unwrap().iter().all(|&x| x == 0.0));
    }
}
