//! Optimizers as graph update rules, written once so every backend does the same arithmetic.
//! The rules follow PyTorch's `torch.optim` (dampening 0, L2 weight decay added to the gradient).

use crate::graph::{GResult, Graph, NodeId};
use crate::models::ParamSpec;
use crate::tensor::DType;
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Rule {
    Sgd,
    Momentum {
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    Nesterov {
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    Rmsprop {
        #[serde(default = "default_alpha")]
        alpha: f64,
        #[serde(default = "default_eps")]
        eps: f64,
    },
    Adam {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
    },
}

/// torch.optim's defaults, for every place that fills in a rule's unset hyperparameters.
pub mod defaults {
    pub const MOMENTUM: f64 = 0.9;
    pub const ALPHA: f64 = 0.99;
    pub const EPS: f64 = 1e-8;
    pub const BETA1: f64 = 0.9;
    pub const BETA2: f64 = 0.999;
}

fn default_momentum() -> f64 {
    defaults::MOMENTUM
}
fn default_alpha() -> f64 {
    defaults::ALPHA
}
fn default_eps() -> f64 {
    defaults::EPS
}
fn default_beta1() -> f64 {
    defaults::BETA1
}
fn default_beta2() -> f64 {
    defaults::BETA2
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optimizer {
    pub rule: Rule,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Optimizer {
    pub fn new(rule: Rule, lr: f64) -> Self {
        Self { rule, lr, weight_decay: 0.0 }
    }

    pub fn sgd(lr: f64) -> Self {
        Self::new(Rule::Sgd, lr)
    }

    pub fn momentum(lr: f64, momentum: f64) -> Self {
        Self::new(Rule::Momentum { momentum }, lr)
    }

    pub fn name(&self) -> &'static str {
        match self.rule {
            Rule::Sgd => "sgd",
            Rule::Momentum { .. } => "momentum",
            Rule::Nesterov { .. } => "nesterov",
            Rule::Rmsprop { .. } => "rmsprop",
            Rule::Adam { .. } => "adam",
        }
    }

    /// State tensors kept per parameter (momentum buffer, squared-gradient average, ...).
    pub fn slots_per_param(&self) -> usize {
        match self.rule {
            Rule::Sgd => 0,
            Rule::Momentum { .. } | Rule::Nesterov { .. } | Rule::Rmsprop { .. } => 1,
            Rule::Adam { .. } => 2,
        }
    }

    /// Whether the rule keeps a step counter (a scalar shared by all parameters).
    pub fn counts_steps(&self) -> bool {
        matches!(self.rule, Rule::Adam { .. })
    }

    /// Initial state for parameters of these shapes: slots by parameter, then the counter.
    pub fn initial_state(&self, param_shapes: &[Vec<usize>]) -> Vec<HostTensor> {
        let mut s: Vec<HostTensor> = param_shapes
            .iter()
            .flat_map(|shape| (0..self.slots_per_param()).map(move |_| HostTensor::zeros(shape)))
            .collect();
        if self.counts_steps() {
            s.push(HostTensor::scalar(0.0));
        }
        s
    }

    /// The updated step counter, and scalars the rule needs once per step (not per parameter).
    /// `lr`: a scalar input holding the learning rate, where it changes during training (a
    /// schedule), so that the program need not be rebuilt; else the rate is a constant.
    pub fn begin_step(
        &self,
        g: &mut Graph,
        counter: Option<NodeId>,
        lr: Option<NodeId>,
    ) -> GResult<StepScalars> {
        match (self.rule, counter) {
            (Rule::Adam { beta1, beta2, .. }, Some(t)) => {
                let t1 = g.affine(t, 1.0, 1.0)?;
                // 1 - beta^t, as exp(t ln beta) so it is one graph whatever t is.
                let bc = |g: &mut Graph, beta: f64| -> GResult<NodeId> {
                    let e = g.scale(t1, beta.ln())?;
                    let p = g.exp(e)?;
                    g.affine(p, -1.0, 1.0)
                };
                let bc1 = bc(g, beta1)?;
                let bc2 = bc(g, beta2)?;
                let sqrt_bc2 = g.sqrt(bc2)?;
                Ok(StepScalars { counter: Some(t1), adam: Some((bc1, sqrt_bc2)), lr })
            }
            _ => Ok(StepScalars { counter: None, adam: None, lr }),
        }
    }

    /// Adds the update of parameter `p` with gradient `grad` and its `slots`; returns the new
    /// parameter and the new slots.
    pub fn update(
        &self,
        g: &mut Graph,
        p: NodeId,
        grad: NodeId,
        slots: &[NodeId],
        step: &StepScalars,
    ) -> GResult<(NodeId, Vec<NodeId>)> {
        let grad = if self.weight_decay != 0.0 {
            let decay = g.scale(p, self.weight_decay)?;
            g.add(grad, decay)?
        } else {
            grad
        };
        let descend = |g: &mut Graph, direction: NodeId| -> GResult<NodeId> {
            let d = match step.lr {
                Some(lr) => g.mul(direction, lr)?,
                None => g.scale(direction, self.lr)?,
            };
            g.sub(p, d)
        };
        Ok(match self.rule {
            Rule::Sgd => (descend(g, grad)?, vec![]),
            Rule::Momentum { momentum } => {
                let decayed = g.scale(slots[0], momentum)?;
                let buf = g.add(decayed, grad)?;
                (descend(g, buf)?, vec![buf])
            }
            Rule::Nesterov { momentum } => {
                let decayed = g.scale(slots[0], momentum)?;
                let buf = g.add(decayed, grad)?;
                let ahead = g.scale(buf, momentum)?;
                let dir = g.add(grad, ahead)?;
                (descend(g, dir)?, vec![buf])
            }
            Rule::Rmsprop { alpha, eps } => {
                let decayed = g.scale(slots[0], alpha)?;
                let sq = g.square(grad)?;
                let fresh = g.scale(sq, 1.0 - alpha)?;
                let avg = g.add(decayed, fresh)?;
                let root = g.sqrt(avg)?;
                let denom = g.affine(root, 1.0, eps)?;
                let dir = g.div(grad, denom)?;
                (descend(g, dir)?, vec![avg])
            }
            Rule::Adam { beta1, beta2, eps } => {
                let (bc1, sqrt_bc2) = step.adam.expect("begin_step ran for Adam");
                let m0 = g.scale(slots[0], beta1)?;
                let m1 = g.scale(grad, 1.0 - beta1)?;
                let m = g.add(m0, m1)?;
                let v0 = g.scale(slots[1], beta2)?;
                let sq = g.square(grad)?;
                let v1 = g.scale(sq, 1.0 - beta2)?;
                let v = g.add(v0, v1)?;
                // PyTorch: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
                let root = g.sqrt(v)?;
                let corrected = g.div(root, sqrt_bc2)?;
                let denom = g.affine(corrected, 1.0, eps)?;
                let ratio = g.div(m, denom)?;
                let step_size = g.div(ratio, bc1)?;
                (descend(g, step_size)?, vec![m, v])
            }
        })
    }
}

/// The optimizer's state as named graph inputs and outputs, so that one step's outputs feed
/// the next run of a chained program.
impl Optimizer {
    /// The names of an optimizer's state for parameters `specs`, in
    /// [`Optimizer::initial_state`]'s order: per parameter its slots (`adam.m.<name>`,
    /// `adam.v.<name>`; `<rule>.buf.<name>` for one-slot rules), then the step counter
    /// (`adam.step`) where the rule counts steps.
    pub fn state_names(&self, specs: &[ParamSpec]) -> Vec<String> {
        let slots: &[&str] = if self.slots_per_param() == 2 { &["m", "v"] } else { &["buf"] };
        let slots = &slots[..self.slots_per_param()];
        let mut names: Vec<String> = specs
            .iter()
            .flat_map(|p| slots.iter().map(move |k| format!("{}.{k}.{}", self.name(), p.name)))
            .collect();
        if self.counts_steps() {
            names.push(format!("{}.step", self.name()));
        }
        names
    }

    /// The optimizer's state as inputs named by [`Optimizer::state_names`]: the slots, then the
    /// counter.
    pub fn state_inputs(
        &self,
        g: &mut Graph,
        specs: &[ParamSpec],
    ) -> (Vec<NodeId>, Option<NodeId>) {
        let shapes =
            specs.iter().flat_map(|p| std::iter::repeat_n(&p.shape, self.slots_per_param()));
        let names = self.state_names(specs);
        let slots =
            names.iter().zip(shapes).map(|(n, s)| g.input(n.clone(), s, DType::F32)).collect();
        let counter = self
            .counts_steps()
            .then(|| g.input(names.last().expect("a counter").clone(), &[], DType::F32));
        (slots, counter)
    }

    /// One optimizer step on `params` with `grads`: outputs the updated parameters under their
    /// names, then the updated state under its input names, so that one step's outputs feed the
    /// next.
    pub fn step_outputs(
        &self,
        g: &mut Graph,
        specs: &[ParamSpec],
        (params, grads): (&[NodeId], &[NodeId]),
        (slots, counter): (Vec<NodeId>, Option<NodeId>),
    ) -> GResult<()> {
        let step = self.begin_step(g, counter, None)?;
        let per = self.slots_per_param();
        let mut new_slots = Vec::with_capacity(slots.len());
        for (i, ((spec, &p), &dp)) in specs.iter().zip(params).zip(grads).enumerate() {
            let (p2, s2) = self.update(g, p, dp, &slots[per * i..per * (i + 1)], &step)?;
            g.output(spec.name.clone(), p2);
            new_slots.extend(s2);
        }
        let names = self.state_names(specs);
        for (name, s) in names.iter().zip(new_slots) {
            g.output(name.clone(), s);
        }
        if let Some(t) = step.counter {
            g.output(names.last().expect("a counter").clone(), t);
        }
        Ok(())
    }
}

/// Per-step scalars shared by every parameter's update.
#[derive(Clone, Copy, Debug)]
pub struct StepScalars {
    /// The incremented step counter, an output of the step.
    pub counter: Option<NodeId>,
    adam: Option<(NodeId, NodeId)>,
    lr: Option<NodeId>,
}
