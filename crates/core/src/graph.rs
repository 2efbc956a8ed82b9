//! The graph IR: typed nodes in topological order, built through shape-checking methods.
//!
//! Every node has a static shape and dtype. Binary elementwise ops take operands of one
//! shape; the builder methods insert explicit [`Op::BroadcastTo`] nodes (numpy rules) so that
//! gradient rules stay one line each (the gradient of a broadcast is a [`Op::SumTo`]).
//! Nodes are appended only after their arguments, so the node order is a topological order.

use crate::tensor::{numel, DType, HostData, HostTensor};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of the node at position `i` of a graph's node list.
    pub fn from_index(i: usize) -> Self {
        NodeId(i as u32)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Abs,
    Sign,
    Square,
    /// 1 where x > 0, else 0 (the derivative of relu).
    Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Comparisons give an f32 mask of 0 and 1; they have no gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ge,
    Gt,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A value fed at run time; inputs are numbered in creation order.
    Input {
        name: String,
    },
    Const(HostTensor),
    Unary(UnaryOp),
    /// x * mul + add, with constants known when the graph is built.
    Affine {
        mul: f64,
        add: f64,
    },
    Clamp {
        min: f64,
        max: f64,
    },
    Binary(BinaryOp),
    Compare(CmpOp),
    /// 2-D product op(a)·op(b), op transposing where `ta`/`tb` say so.
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// x[b,i]·w[i,o] + bias[o]: one fused kernel where the backend has one (addmm, Gemm).
    Linear,
    /// x[n,c,h,w] ⊛ w[o,c,kh,kw], no bias.
    Conv2d {
        stride: usize,
        padding: usize,
    },
    /// The input gradient of a convolution: args (dy, w); the node's shape is the input's.
    Conv2dBackwardInput {
        stride: usize,
        padding: usize,
    },
    /// The weight gradient of a convolution: args (x, dy); the node's shape is the weight's.
    Conv2dBackwardWeight {
        stride: usize,
        padding: usize,
    },
    /// Max pooling with kernel = stride = k (non-overlapping windows, no padding).
    MaxPool2d {
        k: usize,
    },
    /// Batch normalization with the batch's statistics (PyTorch's training-mode `batch_norm`,
    /// no running statistics): args (x, gamma, beta), x of rank 2 [N, C] or 4 [N, C, H, W],
    /// gamma and beta [C]; y = gamma·(x − μ)/√(σ² + eps) + beta, where μ and the biased
    /// variance σ² are taken over every axis but 1.
    BatchNorm {
        eps: f64,
    },
    /// Softmax over the last axis.
    Softmax,
    /// Per-example softmax cross-entropy: logits[b,c], labels i64[b] -> f32[b].
    SoftmaxCrossEntropy,
    /// labels i64[b] -> f32[b, classes].
    OneHot {
        classes: usize,
    },
    /// 1 where argmax(logits[b,c]) == labels[b], else 0: f32[b].
    CorrectPredictions,
    Sum {
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Numpy-style broadcast to the node's shape.
    BroadcastTo,
    /// Sums the broadcast axes away: the inverse of `BroadcastTo`, to the node's shape.
    SumTo,
    Reshape,
    Permute {
        perm: Vec<usize>,
    },
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Zero padding along one axis.
    Pad {
        axis: usize,
        before: usize,
        after: usize,
    },
    Concat {
        axis: usize,
    },
    /// Rows of data[N, ...] picked by indices i64[b]: [b, ...].
    Gather,
    /// The value of its argument, through which no gradient flows.
    StopGradient,
    /// The gradient of the scalar `of` (arg 0) with respect to the node `wrt` (arg 1).
    Grad,
}

impl Op {
    /// A short name for error messages and dumps.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Const(_) => "Const",
            Op::Unary(u) => match u {
                UnaryOp::Neg => "Neg",
                UnaryOp::Relu => "Relu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Abs => "Abs",
                UnaryOp::Sign => "Sign",
                UnaryOp::Square => "Square",
                UnaryOp::Step => "Step",
            },
            Op::Affine { .. } => "Affine",
            Op::Clamp { .. } => "Clamp",
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
            },
            Op::Compare(c) => match c {
                CmpOp::Eq => "CompareEq",
                CmpOp::Ge => "CompareGe",
                CmpOp::Gt => "CompareGt",
            },
            Op::MatMul { .. } => "MatMul",
            Op::Linear => "Linear",
            Op::Conv2d { .. } => "Conv2d",
            Op::Conv2dBackwardInput { .. } => "Conv2dBackwardInput",
            Op::Conv2dBackwardWeight { .. } => "Conv2dBackwardWeight",
            Op::MaxPool2d { .. } => "MaxPool2d",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::Softmax => "Softmax",
            Op::SoftmaxCrossEntropy => "SoftmaxCrossEntropy",
            Op::OneHot { .. } => "OneHot",
            Op::CorrectPredictions => "CorrectPredictions",
            Op::Sum { .. } => "Sum",
            Op::BroadcastTo => "BroadcastTo",
            Op::SumTo => "SumTo",
            Op::Reshape => "Reshape",
            Op::Permute { .. } => "Permute",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Concat { .. } => "Concat",
            Op::Gather => "Gather",
            Op::StopGradient => "StopGradient",
            Op::Grad => "Grad",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// Operands whose shapes the op cannot take; `operands` are their shapes, in order.
    #[error("{op}: {detail}{}", ShapeList(.operands))]
    Shape { op: &'static str, operands: Vec<Vec<usize>>, detail: String },
    #[error("{op}: expected {expected} operand, found {actual}")]
    DType { op: &'static str, expected: DType, actual: DType },
    #[error("cannot differentiate {op} with respect to its argument {arg}: {why}")]
    GradUnsupported { op: &'static str, arg: usize, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// Shapes in an error message: ` (shapes [2, 3], [4])`, nothing when there are none.
struct ShapeList<'a>(&'a [Vec<usize>]);

impl fmt::Display for ShapeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let shapes: Vec<String> = self.0.iter().map(|s| format!("{s:?}")).collect();
        write!(f, " (shapes {})", shapes.join(", "))
    }
}

fn shape_err(op: &'static str, operands: &[&[usize]], detail: impl Into<String>) -> GraphError {
    GraphError::Shape {
        op,
        operands: operands.iter().map(|s| s.to_vec()).collect(),
        detail: detail.into(),
    }
}

/// The output shape of a convolution of `x[n,c,h,w]` by `w[o,c,kh,kw]`.
pub fn conv2d_output_shape(
    x: &[usize],
    w: &[usize],
    stride: usize,
    padding: usize,
) -> GResult<Vec<usize>> {
    const OP: &str = "Conv2d";
    if x.len() != 4 || w.len() != 4 {
        return Err(shape_err(OP, &[x, w], "the input and the kernel must have rank 4"));
    }
    if stride == 0 {
        return Err(shape_err(OP, &[x, w], "stride must be at least 1"));
    }
    if x[1] != w[1] {
        return Err(shape_err(OP, &[x, w], "the input's channels differ from the kernel's"));
    }
    let side = |len: usize, k: usize| (len + 2 * padding).checked_sub(k).map(|d| d / stride + 1);
    match (side(x[2], w[2]), side(x[3], w[3])) {
        (Some(h), Some(wd)) => Ok(vec![x[0], w[0], h, wd]),
        _ => {
            Err(shape_err(OP, &[x, w], format!("kernel larger than the input padded by {padding}")))
        }
    }
}

/// The output padding per spatial axis that makes a transposed convolution of the output
/// gradient `dy` by the kernel `w` give back the convolution's input size `x`: the transposed
/// convolution's side is (i-1)·stride - 2·padding + k, short of the input by what the forward
/// stride dropped.
pub fn conv_transpose_output_padding(
    dy: &[usize],
    w: &[usize],
    x: &[usize],
    stride: usize,
    padding: usize,
) -> [usize; 2] {
    let extra =
        |axis: usize| (x[axis] + 2 * padding).saturating_sub((dy[axis] - 1) * stride + w[axis]);
    [extra(2), extra(3)]
}

/// The axes batch normalization's statistics run over, for an input of rank `rank`: all
/// but the channels' (axis 1).
pub fn batch_norm_axes(rank: usize) -> Vec<usize> {
    (0..rank).filter(|&a| a != 1).collect()
}

/// The shape [1, C, 1, …] in which a per-channel value [C] broadcasts against batch
/// normalization's input of shape `x`.
pub fn per_channel_shape(x: &[usize]) -> Vec<usize> {
    (0..x.len()).map(|a| if a == 1 { x[1] } else { 1 }).collect()
}

/// The axes of `from` that summing down to `to` (which broadcasts to `from`) removes or
/// reduces to 1: the leading axes `to` lacks, then those where `to` has 1 and `from` not.
pub fn sum_to_axes(from: &[usize], to: &[usize]) -> Vec<usize> {
    let lead = from.len() - to.len();
    (0..from.len()).filter(|&i| i < lead || (to[i - lead] == 1 && from[i] != 1)).collect()
}

pub type GResult<T> = Result<T, GraphError>;

/// A computation graph with named inputs and outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
    inputs: Vec<NodeId>,
    outputs: Vec<(String, NodeId)>,
}

/// Shape of broadcasting `a` and `b` together (numpy rules), if they are compatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Whether `from` broadcasts to exactly `to`.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len() && broadcast_shapes(from, to).as_deref() == Some(to)
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    pub fn output_ids(&self) -> Vec<NodeId> {
        self.outputs.iter().map(|(_, id)| *id).collect()
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.index()].shape
    }

    pub fn dtype(&self, id: NodeId) -> DType {
        self.nodes[id.index()].dtype
    }

    pub fn input_name(&self, id: NodeId) -> &str {
        match &self.node(id).op {
            Op::Input { name } => name,
            _ => "?",
        }
    }

    /// The position of the input with this name.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|&id| self.input_name(id) == name)
    }

    pub fn has_grad_nodes(&self) -> bool {
        self.nodes.iter().any(|n| n.op == Op::Grad)
    }

    /// Appends a node whose shape and dtype the caller has already checked.
    pub(crate) fn push(
        &mut self,
        op: Op,
        args: Vec<NodeId>,
        shape: Vec<usize>,
        dtype: DType,
    ) -> NodeId {
        debug_assert!(args.iter().all(|a| a.index() < self.nodes.len()));
        let id = NodeId(self.nodes.len() as u32);
        if matches!(op, Op::Input { .. }) {
            self.inputs.push(id);
        }
        self.nodes.push(Node { op, args, shape, dtype });
        id
    }

    /// Re-creates `node` (already checked in another graph) with new arguments.
    pub(crate) fn push_node(&mut self, node: &Node, args: Vec<NodeId>) -> NodeId {
        self.push(node.op.clone(), args, node.shape.clone(), node.dtype)
    }

    pub fn output(&mut self, name: impl Into<String>, id: NodeId) {
        self.outputs.push((name.into(), id));
    }

    pub(crate) fn set_outputs(&mut self, outputs: Vec<(String, NodeId)>) {
        self.outputs = outputs;
    }

    /// Marks the nodes that `roots` need: the roots and, transitively, what `reads` says each
    /// needed node reads. One backward pass, as the node order is topological.
    pub fn needed_by(
        &self,
        roots: impl IntoIterator<Item = NodeId>,
        reads: impl Fn(NodeId) -> Vec<NodeId>,
    ) -> Vec<bool> {
        let mut needed = vec![false; self.len()];
        for id in roots {
            needed[id.index()] = true;
        }
        for i in (0..self.len()).rev() {
            if needed[i] {
                for a in reads(NodeId::from_index(i)) {
                    needed[a.index()] = true;
                }
            }
        }
        needed
    }

    fn expect_f32(&self, op: &'static str, id: NodeId) -> GResult<()> {
        let actual = self.dtype(id);
        if actual != DType::F32 {
            return Err(GraphError::DType { op, expected: DType::F32, actual });
        }
        Ok(())
    }

    fn expect_dtype(&self, op: &'static str, id: NodeId, expected: DType) -> GResult<()> {
        let actual = self.dtype(id);
        if actual != expected {
            return Err(GraphError::DType { op, expected, actual });
        }
        Ok(())
    }

    fn expect_rank(&self, op: &'static str, id: NodeId, rank: usize, what: &str) -> GResult<()> {
        let s = self.shape(id);
        if s.len() != rank {
            return Err(shape_err(op, &[s], format!("{what} must have rank {rank}")));
        }
        Ok(())
    }

    // ---- leaves ----

    pub fn input(&mut self, name: impl Into<String>, shape: &[usize], dtype: DType) -> NodeId {
        self.push(Op::Input { name: name.into() }, vec![], shape.to_vec(), dtype)
    }

    pub fn constant(&mut self, t: HostTensor) -> NodeId {
        let (shape, dtype) = (t.shape().to_vec(), t.dtype());
        self.push(Op::Const(t), vec![], shape, dtype)
    }

    pub fn scalar(&mut self, v: f32) -> NodeId {
        self.constant(HostTensor::scalar(v))
    }

    /// A tensor of one value, as a broadcast scalar.
    pub fn full(&mut self, v: f32, shape: &[usize]) -> GResult<NodeId> {
        let s = self.scalar(v);
        self.broadcast_to(s, shape)
    }

    // ---- elementwise ----

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> GResult<NodeId> {
        self.expect_f32(Op::Unary(op).name(), x)?;
        let shape = self.shape(x).to_vec();
        Ok(self.push(Op::Unary(op), vec![x], shape, DType::F32))
    }

    pub fn neg(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Neg, x)
    }
    pub fn relu(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Relu, x)
    }
    pub fn sigmoid(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Sigmoid, x)
    }
    pub fn tanh(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Tanh, x)
    }
    pub fn exp(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Exp, x)
    }
    pub fn log(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Log, x)
    }
    pub fn sqrt(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Sqrt, x)
    }
    pub fn abs(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Abs, x)
    }
    pub fn sign(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Sign, x)
    }
    pub fn square(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Square, x)
    }
    pub fn step(&mut self, x: NodeId) -> GResult<NodeId> {
        self.unary(UnaryOp::Step, x)
    }

    /// x * mul + add. The identity is not recorded, and affine maps compose.
    pub fn affine(&mut self, x: NodeId, mul: f64, add: f64) -> GResult<NodeId> {
        self.expect_f32("Affine", x)?;
        if mul == 1.0 && add == 0.0 {
            return Ok(x);
        }
        if let Op::Affine { mul: m0, add: a0 } = self.node(x).op {
            let inner = self.node(x).args[0];
            return self.affine(inner, m0 * mul, a0 * mul + add);
        }
        // A constant's map is a constant (a gradient's seed scaled by a mean's 1/n), in f32
        // as the engines would compute it, rather than an op every run.
        if let Op::Const(c) = &self.node(x).op {
            if let HostData::F32(v) = c.data() {
                let (m, a) = (mul as f32, add as f32);
                let mapped = v.iter().map(|&e| if a == 0.0 { e * m } else { e * m + a }).collect();
                let t = HostTensor::f32(c.shape().to_vec(), mapped).expect("same shape");
                return Ok(self.constant(t));
            }
        }
        let shape = self.shape(x).to_vec();
        Ok(self.push(Op::Affine { mul, add }, vec![x], shape, DType::F32))
    }

    pub fn scale(&mut self, x: NodeId, c: f64) -> GResult<NodeId> {
        self.affine(x, c, 0.0)
    }

    pub fn clamp(&mut self, x: NodeId, min: f64, max: f64) -> GResult<NodeId> {
        self.expect_f32("Clamp", x)?;
        if min > max {
            return Err(shape_err("Clamp", &[], format!("min {min} exceeds max {max}")));
        }
        let shape = self.shape(x).to_vec();
        Ok(self.push(Op::Clamp { min, max }, vec![x], shape, DType::F32))
    }

    /// Broadcasts both operands to a common shape.
    fn broadcast_pair(
        &mut self,
        op: &'static str,
        a: NodeId,
        b: NodeId,
    ) -> GResult<(NodeId, NodeId)> {
        self.expect_f32(op, a)?;
        self.expect_f32(op, b)?;
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        let out = broadcast_shapes(&sa, &sb)
            .ok_or_else(|| shape_err(op, &[&sa, &sb], "the operands do not broadcast together"))?;
        Ok((self.broadcast_to(a, &out)?, self.broadcast_to(b, &out)?))
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> GResult<NodeId> {
        let (a, b) = self.broadcast_pair(Op::Binary(op).name(), a, b)?;
        let shape = self.shape(a).to_vec();
        Ok(self.push(Op::Binary(op), vec![a, b], shape, DType::F32))
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> GResult<NodeId> {
        if let Some(joined) = self.join_pads(a, b)? {
            return Ok(joined);
        }
        self.binary(BinaryOp::Add, a, b)
    }

    /// Pad(x) + Pad(y) where x and y fill adjacent ranges of one axis is Pad(Concat(x, y)):
    /// the gradients of slices that partition a tensor (an LSTM's gates) then accumulate into
    /// one concatenation instead of a padded copy per slice and an addition per pair.
    fn join_pads(&mut self, a: NodeId, b: NodeId) -> GResult<Option<NodeId>> {
        let pad = |g: &Graph, id: NodeId| match g.node(id).op {
            Op::Pad { axis, before, after } => Some((g.node(id).args[0], axis, before, after)),
            _ => None,
        };
        let (Some(pa), Some(pb)) = (pad(self, a), pad(self, b)) else { return Ok(None) };
        if self.shape(a) != self.shape(b) || pa.1 != pb.1 {
            return Ok(None);
        }
        // Order the two by position along the axis; they must touch.
        let (first, second) = if pa.2 <= pb.2 { (pa, pb) } else { (pb, pa) };
        let axis = first.1;
        let first_len = self.shape(first.0)[axis];
        if first.2 + first_len != second.2 {
            return Ok(None);
        }
        let joined = self.concat(&[first.0, second.0], axis)?;
        Ok(Some(self.pad(joined, axis, first.2, second.3)?))
    }
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> GResult<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> GResult<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: NodeId, b: NodeId) -> GResult<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }

    pub fn compare(&mut self, op: CmpOp, a: NodeId, b: NodeId) -> GResult<NodeId> {
        let (a, b) = self.broadcast_pair(Op::Compare(op).name(), a, b)?;
        let shape = self.shape(a).to_vec();
        Ok(self.push(Op::Compare(op), vec![a, b], shape, DType::F32))
    }

    // ---- linear algebra ----

    pub fn matmul_t(&mut self, a: NodeId, b: NodeId, ta: bool, tb: bool) -> GResult<NodeId> {
        const OP: &str = "MatMul";
        self.expect_f32(OP, a)?;
        self.expect_f32(OP, b)?;
        self.expect_rank(OP, a, 2, "the left operand")?;
        self.expect_rank(OP, b, 2, "the right operand")?;
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (m, k1) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        let (k2, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
        if k1 != k2 {
            let detail = format!("inner sizes differ (transposed: left {ta}, right {tb})");
            return Err(shape_err(OP, &[sa, sb], detail));
        }
        Ok(self.push(Op::MatMul { ta, tb }, vec![a, b], vec![m, n], DType::F32))
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> GResult<NodeId> {
        self.matmul_t(a, b, false, false)
    }

    pub fn linear(&mut self, x: NodeId, w: NodeId, bias: NodeId) -> GResult<NodeId> {
        const OP: &str = "Linear";
        for id in [x, w, bias] {
            self.expect_f32(OP, id)?;
        }
        self.expect_rank(OP, x, 2, "the input")?;
        self.expect_rank(OP, w, 2, "the weight")?;
        self.expect_rank(OP, bias, 1, "the bias")?;
        let (sx, sw, sb) = (self.shape(x), self.shape(w), self.shape(bias));
        if sx[1] != sw[0] || sb[0] != sw[1] {
            return Err(shape_err(OP, &[sx, sw, sb], "the input, weight and bias do not fit"));
        }
        let shape = vec![sx[0], sw[1]];
        Ok(self.push(Op::Linear, vec![x, w, bias], shape, DType::F32))
    }

    pub fn conv2d(
        &mut self,
        x: NodeId,
        w: NodeId,
        stride: usize,
        padding: usize,
    ) -> GResult<NodeId> {
        const OP: &str = "Conv2d";
        self.expect_f32(OP, x)?;
        self.expect_f32(OP, w)?;
        self.expect_rank(OP, x, 4, "the input")?;
        self.expect_rank(OP, w, 4, "the kernel")?;
        let shape = conv2d_output_shape(self.shape(x), self.shape(w), stride, padding)?;
        Ok(self.push(Op::Conv2d { stride, padding }, vec![x, w], shape, DType::F32))
    }

    /// The gradient of a convolution with respect to its input of shape `input_shape`.
    pub fn conv2d_backward_input(
        &mut self,
        dy: NodeId,
        w: NodeId,
        input_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> GResult<NodeId> {
        let fwd_out = conv2d_output_shape(input_shape, self.shape(w), stride, padding)?;
        if self.shape(dy) != fwd_out.as_slice() {
            let detail = "the gradient does not match the convolution's output";
            return Err(shape_err("Conv2dBackwardInput", &[self.shape(dy), &fwd_out], detail));
        }
        Ok(self.push(
            Op::Conv2dBackwardInput { stride, padding },
            vec![dy, w],
            input_shape.to_vec(),
            DType::F32,
        ))
    }

    /// The gradient of a convolution with respect to its kernel of shape `kernel_shape`.
    pub fn conv2d_backward_weight(
        &mut self,
        x: NodeId,
        dy: NodeId,
        kernel_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> GResult<NodeId> {
        let fwd_out = conv2d_output_shape(self.shape(x), kernel_shape, stride, padding)?;
        if self.shape(dy) != fwd_out.as_slice() {
            let detail = "the gradient does not match the convolution's output";
            return Err(shape_err("Conv2dBackwardWeight", &[self.shape(dy), &fwd_out], detail));
        }
        Ok(self.push(
            Op::Conv2dBackwardWeight { stride, padding },
            vec![x, dy],
            kernel_shape.to_vec(),
            DType::F32,
        ))
    }

    pub fn max_pool2d(&mut self, x: NodeId, k: usize) -> GResult<NodeId> {
        const OP: &str = "MaxPool2d";
        self.expect_f32(OP, x)?;
        self.expect_rank(OP, x, 4, "the input")?;
        let s = self.shape(x).to_vec();
        if k == 0 || !s[2].is_multiple_of(k) || !s[3].is_multiple_of(k) {
            return Err(shape_err(OP, &[&s], format!("window {k} must divide the spatial size")));
        }
        Ok(self.push(
            Op::MaxPool2d { k },
            vec![x],
            vec![s[0], s[1], s[2] / k, s[3] / k],
            DType::F32,
        ))
    }

    /// Batch normalization of x [N, C] or [N, C, H, W] by the batch's own statistics, scaled
    /// by gamma [C] and shifted by beta [C] (see [`Op::BatchNorm`]).
    pub fn batch_norm(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f64,
    ) -> GResult<NodeId> {
        const OP: &str = "BatchNorm";
        for id in [x, gamma, beta] {
            self.expect_f32(OP, id)?;
        }
        self.expect_rank(OP, gamma, 1, "gamma")?;
        self.expect_rank(OP, beta, 1, "beta")?;
        let (sx, sg, sb) = (self.shape(x), self.shape(gamma), self.shape(beta));
        if sx.len() != 2 && sx.len() != 4 {
            return Err(shape_err(OP, &[sx], "the input must have rank 2 or 4"));
        }
        if sg[0] != sx[1] || sb[0] != sx[1] {
            let detail = "gamma and beta must hold one value per channel (the input's axis 1)";
            return Err(shape_err(OP, &[sx, sg, sb], detail));
        }
        if numel(sx) == 0 {
            return Err(shape_err(OP, &[sx], "needs at least one value per channel"));
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(shape_err(OP, &[], format!("eps {eps} must be finite and at least 0")));
        }
        let shape = sx.to_vec();
        Ok(self.push(Op::BatchNorm { eps }, vec![x, gamma, beta], shape, DType::F32))
    }

    // ---- classification heads ----

    pub fn softmax(&mut self, x: NodeId) -> GResult<NodeId> {
        self.expect_f32("Softmax", x)?;
        if self.shape(x).is_empty() {
            return Err(shape_err("Softmax", &[&[]], "needs at least one axis"));
        }
        let shape = self.shape(x).to_vec();
        Ok(self.push(Op::Softmax, vec![x], shape, DType::F32))
    }

    fn check_logits_labels(
        &self,
        op: &'static str,
        logits: NodeId,
        labels: NodeId,
    ) -> GResult<usize> {
        self.expect_f32(op, logits)?;
        self.expect_rank(op, logits, 2, "the logits")?;
        self.expect_rank(op, labels, 1, "the labels")?;
        self.expect_dtype(op, labels, DType::I64)?;
        let (sl, sy) = (self.shape(logits), self.shape(labels));
        if sl[0] != sy[0] {
            return Err(shape_err(
                op,
                &[sl, sy],
                "the logits' rows and the labels differ in number",
            ));
        }
        Ok(sl[0])
    }

    pub fn softmax_cross_entropy(&mut self, logits: NodeId, labels: NodeId) -> GResult<NodeId> {
        let b = self.check_logits_labels("SoftmaxCrossEntropy", logits, labels)?;
        Ok(self.push(Op::SoftmaxCrossEntropy, vec![logits, labels], vec![b], DType::F32))
    }

    pub fn correct_predictions(&mut self, logits: NodeId, labels: NodeId) -> GResult<NodeId> {
        let b = self.check_logits_labels("CorrectPredictions", logits, labels)?;
        Ok(self.push(Op::CorrectPredictions, vec![logits, labels], vec![b], DType::F32))
    }

    pub fn one_hot(&mut self, labels: NodeId, classes: usize) -> GResult<NodeId> {
        self.expect_rank("OneHot", labels, 1, "the labels")?;
        self.expect_dtype("OneHot", labels, DType::I64)?;
        let b = self.shape(labels)[0];
        Ok(self.push(Op::OneHot { classes }, vec![labels], vec![b, classes], DType::F32))
    }

    // ---- reductions and shapes ----

    pub fn sum(&mut self, x: NodeId, axes: &[usize], keep_dims: bool) -> GResult<NodeId> {
        self.expect_f32("Sum", x)?;
        let s = self.shape(x).to_vec();
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        if let Some(&a) = axes.iter().find(|&&a| a >= s.len()) {
            return Err(shape_err("Sum", &[&s], format!("axis {a} out of range")));
        }
        if axes.is_empty() {
            return Ok(x);
        }
        let shape: Vec<usize> = if keep_dims {
            s.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
        } else {
            s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
        };
        Ok(self.push(Op::Sum { axes, keep_dims }, vec![x], shape, DType::F32))
    }

    pub fn sum_all(&mut self, x: NodeId) -> GResult<NodeId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.sum(x, &axes, false)
    }

    pub fn mean(&mut self, x: NodeId, axes: &[usize], keep_dims: bool) -> GResult<NodeId> {
        let s = self.shape(x).to_vec();
        let n: usize = axes.iter().filter_map(|&a| s.get(a)).product();
        let total = self.sum(x, axes, keep_dims)?;
        self.scale(total, 1.0 / n.max(1) as f64)
    }

    pub fn mean_all(&mut self, x: NodeId) -> GResult<NodeId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.mean(x, &axes, false)
    }

    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> GResult<NodeId> {
        let s = self.shape(x);
        if s == shape {
            return Ok(x);
        }
        if !broadcasts_to(s, shape) {
            return Err(shape_err(
                "BroadcastTo",
                &[s, shape],
                "the first does not broadcast to the second",
            ));
        }
        // Broadcasts compose: spread the original once.
        if let Op::BroadcastTo = self.node(x).op {
            let inner = self.node(x).args[0];
            return self.broadcast_to(inner, shape);
        }
        let dtype = self.dtype(x);
        Ok(self.push(Op::BroadcastTo, vec![x], shape.to_vec(), dtype))
    }

    /// Sums `x` down to `shape`, which must broadcast to x's shape.
    pub fn sum_to(&mut self, x: NodeId, shape: &[usize]) -> GResult<NodeId> {
        self.expect_f32("SumTo", x)?;
        let s = self.shape(x);
        if s == shape {
            return Ok(x);
        }
        if !broadcasts_to(shape, s) {
            return Err(shape_err(
                "SumTo",
                &[s, shape],
                "the target does not broadcast to the operand",
            ));
        }
        Ok(self.push(Op::SumTo, vec![x], shape.to_vec(), DType::F32))
    }

    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> GResult<NodeId> {
        let s = self.shape(x);
        if s == shape {
            return Ok(x);
        }
        if numel(s) != numel(shape) {
            return Err(shape_err("Reshape", &[s, shape], "the element counts differ"));
        }
        match &self.node(x).op {
            Op::Reshape => {
                let inner = self.node(x).args[0];
                return self.reshape(inner, shape);
            }
            Op::Const(c) => {
                let t = HostTensor::new(shape.to_vec(), c.data().clone()).expect("same count");
                return Ok(self.constant(t));
            }
            // One value spread out, reshaped, is that value spread to the new shape (a mean's
            // gradient: no copy of the spread value on engines whose reshape of a broadcast
            // copies).
            Op::BroadcastTo if numel(self.shape(self.node(x).args[0])) == 1 => {
                let one = self.node(x).args[0];
                let scalar = self.reshape(one, &[])?;
                return self.broadcast_to(scalar, shape);
            }
            _ => {}
        }
        let dtype = self.dtype(x);
        Ok(self.push(Op::Reshape, vec![x], shape.to_vec(), dtype))
    }

    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> GResult<NodeId> {
        let s = self.shape(x).to_vec();
        let mut seen = perm.to_vec();
        seen.sort_unstable();
        if seen != (0..s.len()).collect::<Vec<_>>() {
            let detail = format!("{perm:?} is not a permutation of the axes");
            return Err(shape_err("Permute", &[&s], detail));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        let shape = perm.iter().map(|&p| s[p]).collect();
        let dtype = self.dtype(x);
        Ok(self.push(Op::Permute { perm: perm.to_vec() }, vec![x], shape, dtype))
    }

    pub fn transpose(&mut self, x: NodeId) -> GResult<NodeId> {
        self.expect_rank("Transpose", x, 2, "the operand")?;
        self.permute(x, &[1, 0])
    }

    pub fn slice(&mut self, x: NodeId, axis: usize, start: usize, end: usize) -> GResult<NodeId> {
        let s = self.shape(x).to_vec();
        if axis >= s.len() || start > end || end > s[axis] {
            let detail = format!("[{start}..{end}] on axis {axis} is out of range");
            return Err(shape_err("Slice", &[&s], detail));
        }
        if start == 0 && end == s[axis] {
            return Ok(x);
        }
        let mut shape = s;
        shape[axis] = end - start;
        let dtype = self.dtype(x);
        Ok(self.push(Op::Slice { axis, start, end }, vec![x], shape, dtype))
    }

    pub fn pad(&mut self, x: NodeId, axis: usize, before: usize, after: usize) -> GResult<NodeId> {
        self.expect_f32("Pad", x)?;
        let s = self.shape(x).to_vec();
        if axis >= s.len() {
            return Err(shape_err("Pad", &[&s], format!("axis {axis} out of range")));
        }
        if before == 0 && after == 0 {
            return Ok(x);
        }
        let mut shape = s;
        shape[axis] += before + after;
        Ok(self.push(Op::Pad { axis, before, after }, vec![x], shape, DType::F32))
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> GResult<NodeId> {
        let first =
            *xs.first().ok_or_else(|| shape_err("Concat", &[], "needs at least one operand"))?;
        if xs.len() == 1 {
            return Ok(first);
        }
        let mut shape = self.shape(first).to_vec();
        if axis >= shape.len() {
            return Err(shape_err("Concat", &[&shape], format!("axis {axis} out of range")));
        }
        // A concatenation of concatenations along the same axis is one: each part is copied
        // once (the gradients of an LSTM's four gate slices join pairwise into nested ones).
        let xs: Vec<NodeId> = xs
            .iter()
            .flat_map(|&x| match self.node(x).op {
                Op::Concat { axis: inner } if inner == axis => self.node(x).args.clone(),
                _ => vec![x],
            })
            .collect();
        let xs = xs.as_slice();
        let dtype = self.dtype(first);
        let mut total = 0;
        for &x in xs {
            let s = self.shape(x);
            let same_elsewhere = s.len() == shape.len()
                && s.iter().zip(&shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same_elsewhere || self.dtype(x) != dtype {
                let detail = format!("the operand does not fit the first along axis {axis}");
                return Err(shape_err("Concat", &[s, &shape], detail));
            }
            total += s[axis];
        }
        shape[axis] = total;
        Ok(self.push(Op::Concat { axis }, xs.to_vec(), shape, dtype))
    }

    pub fn gather(&mut self, data: NodeId, indices: NodeId) -> GResult<NodeId> {
        self.expect_rank("Gather", indices, 1, "the indices")?;
        self.expect_dtype("Gather", indices, DType::I64)?;
        let mut shape = self.shape(data).to_vec();
        if shape.is_empty() {
            return Err(shape_err("Gather", &[&shape], "data must have at least one axis"));
        }
        shape[0] = self.shape(indices)[0];
        let dtype = self.dtype(data);
        Ok(self.push(Op::Gather, vec![data, indices], shape, dtype))
    }

    // ---- gradients ----

    pub fn stop_gradient(&mut self, x: NodeId) -> NodeId {
        if self.node(x).op == Op::StopGradient {
            return x;
        }
        let (shape, dtype) = (self.shape(x).to_vec(), self.dtype(x));
        self.push(Op::StopGradient, vec![x], shape, dtype)
    }

    /// d(of)/d(wrt): `of` must be an f32 scalar; the result has the shape of `wrt`.
    pub fn grad(&mut self, of: NodeId, wrt: NodeId) -> GResult<NodeId> {
        self.expect_f32("Grad", of)?;
        self.expect_f32("Grad", wrt)?;
        if !self.shape(of).is_empty() {
            return Err(shape_err("Grad", &[self.shape(of)], "can only differentiate a scalar"));
        }
        let shape = self.shape(wrt).to_vec();
        Ok(self.push(Op::Grad, vec![of, wrt], shape, DType::F32))
    }

    /// The gradients of `of` with respect to each of `wrt`.
    pub fn grads(&mut self, of: NodeId, wrt: &[NodeId]) -> GResult<Vec<NodeId>> {
        wrt.iter().map(|&w| self.grad(of, w)).collect()
    }

    /// A readable listing, one node a line.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let args: Vec<String> = match &n.op {
                Op::Input { name } => vec![name.clone()],
                _ => n.args.iter().map(|a| a.to_string()).collect(),
            };
            s += &format!(
                "%{i} = {}({}) : {}{:?}\n",
                n.op.name(),
                args.join(", "),
                n.dtype,
                n.shape
            );
        }
        for (name, id) in &self.outputs {
            s += &format!("output {name} = {id}\n");
        }
        s
    }
}
