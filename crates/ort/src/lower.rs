//! IR graphs to ONNX models, built in memory with ONNX Runtime's Model Editor API.
//!
//! The graph must hold no `Grad` node (the backend expands them first). `StopGradient` is an
//! alias of its argument. A `BroadcastTo` that feeds an elementwise op is left to ONNX's own
//! broadcasting instead of being materialized with `Expand`. Every op lowers to ops of the
//! default ONNX domain at [`OPSET`], except groups of elementwise nodes, which become one
//! `randbench.Fused` node each where the caller asks for fusion (the CPU provider).

use crate::fused;
use ort::editor::{Graph as OnnxGraph, Model, Node, Opset, ONNX_DOMAIN};
use ort::memory::Allocator;
use ort::operator::Attribute;
use ort::value::{
    Outlet, PrimitiveTensorElementType, Shape, SymbolicDimensions, Tensor, TensorElementType,
    ValueType,
};
use randbench_core::fusion::{self, Fusion, Unit};
use randbench_core::graph::{
    batch_norm_axes, broadcast_shapes, conv_transpose_output_padding, per_channel_shape,
    sum_to_axes, BinaryOp, CmpOp, Graph, NodeId, Op, UnaryOp,
};
use randbench_core::tensor::{DType, HostData};
use std::collections::HashMap;

pub const OPSET: u32 = 21;

/// Why a graph could not become an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("building the ONNX model: {0}")]
    Ort(#[from] ort::Error),
    #[error("a Grad node reached the ONNX lowering; expand gradients first")]
    UnexpandedGrad,
}

type LResult<T> = Result<T, LowerError>;

fn value_type(dtype: DType, shape: &[usize]) -> ValueType {
    ValueType::Tensor {
        ty: match dtype {
            DType::F32 => TensorElementType::Float32,
            DType::I64 => TensorElementType::Int64,
        },
        shape: Shape::new(shape.iter().map(|&d| d as i64)),
        dimension_symbols: SymbolicDimensions::empty(shape.len()),
    }
}

/// What a lowered IR node comes to: an existing value (an alias, a constant), or a last ONNX
/// node still to be made, so that a graph output can be that node's own output (an Identity
/// in between would copy it: 80 µs a step for the MLP's weights).
enum Out {
    Value(String),
    Node { op: &'static str, inputs: Vec<String>, attrs: Vec<Attribute> },
}

impl Out {
    fn node(op: &'static str, inputs: &[&str], attrs: Vec<Attribute>) -> Out {
        Out::Node { op, inputs: inputs.iter().map(|s| s.to_string()).collect(), attrs }
    }
}

/// A model and the names of its inputs and outputs, in the IR graph's order.
pub struct Lowered {
    pub model: Model,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Groups of elementwise nodes lowered to one fused node each.
    pub fused_groups: usize,
}

struct Ctx {
    graph: OnnxGraph,
    counter: usize,
    /// Initializers already made, by their contents.
    constants: HashMap<String, String>,
}

impl Ctx {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attribute>) -> LResult<String> {
        let out = self.fresh(&op.to_lowercase());
        self.node_into(op, inputs, &out, attrs)?;
        Ok(out)
    }

    fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        out: &str,
        attrs: Vec<Attribute>,
    ) -> LResult<()> {
        let name = self.fresh("node");
        let node =
            Node::new(op, ONNX_DOMAIN, name, inputs, [out], attrs).map_err(LowerError::Ort)?;
        self.graph.add_node(node).map_err(LowerError::Ort)
    }

    /// An initializer holding `values`; equal constants share one.
    fn init<T: PrimitiveTensorElementType + Copy + std::fmt::Debug>(
        &mut self,
        shape: &[usize],
        values: &[T],
    ) -> LResult<String> {
        let key = format!("{}{shape:?}{values:?}", std::any::type_name::<T>());
        if let Some(n) = self.constants.get(&key) {
            return Ok(n.clone());
        }
        let mut t =
            Tensor::<T>::new(&Allocator::default(), Shape::new(shape.iter().map(|&d| d as i64)))
                .map_err(LowerError::Ort)?;
        t.extract_tensor_mut().1.copy_from_slice(values);
        let name = self.fresh("const");
        self.graph.add_initializer(&name, t, false).map_err(LowerError::Ort)?;
        self.constants.insert(key, name.clone());
        Ok(name)
    }

    fn scalar(&mut self, v: f64) -> LResult<String> {
        self.init(&[], &[v as f32])
    }

    fn ints(&mut self, v: &[usize]) -> LResult<String> {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        self.init(&[v.len()], &v)
    }

    /// Makes the last node of a lowered IR node, writing to `name` where given.
    fn finish(&mut self, out: Out, name: Option<&str>) -> LResult<String> {
        match (out, name) {
            (Out::Value(v), None) => Ok(v),
            (Out::Value(v), Some(n)) => {
                self.node_into("Identity", &[&v], n, vec![])?;
                Ok(n.to_string())
            }
            (Out::Node { op, inputs, attrs }, name) => {
                let target =
                    name.map(str::to_string).unwrap_or_else(|| self.fresh(&op.to_lowercase()));
                let ins: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
                self.node_into(op, &ins, &target, attrs)?;
                Ok(target)
            }
        }
    }
}

fn to_f32(x: &str) -> LResult<Out> {
    // 1 is TensorProto.FLOAT.
    Ok(Out::node("Cast", &[x], vec![attr("to", 1i64)?]))
}

impl Ctx {}

fn attr(name: &str, v: impl ort::operator::ToAttribute) -> LResult<Attribute> {
    Attribute::new(name, v).map_err(LowerError::Ort)
}

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// The argument an elementwise op can read in place of a `BroadcastTo`, letting ONNX
/// broadcast: the broadcast's source where that still gives the node's shape.
fn operands(g: &Graph, node: NodeId) -> Vec<NodeId> {
    let n = g.node(node);
    let mut args = n.args.clone();
    for i in 0..args.len() {
        let a = g.node(args[i]);
        if a.op != Op::BroadcastTo {
            continue;
        }
        let source = a.args[0];
        let mut shapes: Vec<&[usize]> = args.iter().map(|x| g.shape(*x)).collect();
        shapes[i] = g.shape(source);
        let joined =
            shapes.iter().skip(1).try_fold(shapes[0].to_vec(), |acc, s| broadcast_shapes(&acc, s));
        if joined.as_deref() == Some(n.shape.as_slice()) {
            args[i] = source;
        }
    }
    args
}

/// The arguments each node really reads (elementwise broadcasts resolved).
fn reads(g: &Graph, id: NodeId) -> Vec<NodeId> {
    match g.node(id).op {
        Op::Binary(_) | Op::Compare(_) => operands(g, id),
        _ => g.node(id).args.clone(),
    }
}

/// The model of `g`; `fuse` runs groups of elementwise nodes as fused kernels.
pub fn lower(g: &Graph, fuse: bool) -> LResult<Lowered> {
    let mut cx = Ctx {
        graph: OnnxGraph::new().map_err(LowerError::Ort)?,
        counter: 0,
        constants: HashMap::new(),
    };
    let n = g.len();
    let reads = |id: NodeId| reads(g, id);
    // Which nodes the outputs need, reading through the substitutions above.
    let needed = g.needed_by(g.output_ids(), reads);
    let fusion = if fuse { fusion::plan(g, &needed, reads) } else { Fusion::none(g) };
    let mut names: Vec<String> = vec![String::new(); n];
    let mut inputs = Vec::new();
    let mut input_outlets = Vec::new();
    for (pos, &id) in g.inputs().iter().enumerate() {
        let name = format!("input{pos}");
        input_outlets.push(Outlet::new(&name, value_type(g.dtype(id), g.shape(id))));
        names[id.index()] = name.clone();
        inputs.push(name);
    }
    // Each node that is a graph output writes to the output's name itself (its first output).
    let outputs: Vec<String> = (0..g.outputs().len()).map(|k| format!("output{k}")).collect();
    let mut claimed: HashMap<NodeId, usize> = HashMap::new();
    for (k, (_, id)) in g.outputs().iter().enumerate() {
        if !matches!(g.node(*id).op, Op::Input { .. }) {
            claimed.entry(*id).or_insert(k);
        }
    }
    let target = |id: NodeId| claimed.get(&id).map(|&k| outputs[k].clone());
    for unit in fusion.order(g, &needed, reads) {
        match unit {
            Unit::Node(id) => {
                let a: Vec<String> = reads(id).iter().map(|x| names[x.index()].clone()).collect();
                let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
                let out = emit(&mut cx, g, id, &a)?;
                let name = target(id);
                names[id.index()] = cx.finish(out, name.as_deref())?;
            }
            Unit::Group(c) => {
                let group = &fusion.groups[c];
                let a: Vec<String> =
                    group.inputs.iter().map(|x| names[x.index()].clone()).collect();
                let outs: Vec<String> = group
                    .outputs
                    .iter()
                    .map(|&m| target(m).unwrap_or_else(|| cx.fresh("fused")))
                    .collect();
                let (code, consts) = group.kernel.encode();
                let shapes = fused::encode_shapes(group.outputs.iter().map(|&m| g.shape(m)));
                let offsets: Vec<i64> = group.offsets.iter().map(|&o| o as i64).collect();
                let attrs = vec![
                    attr(fused::CODE, code)?,
                    attr(fused::CONSTS, consts)?,
                    attr(fused::OFFSETS, offsets)?,
                    attr(fused::SHAPES, shapes)?,
                ];
                let name = cx.fresh("node");
                let node = Node::new(fused::OP, fused::DOMAIN, name, &a, &outs, attrs)
                    .map_err(LowerError::Ort)?;
                cx.graph.add_node(node).map_err(LowerError::Ort)?;
                for (&m, o) in group.outputs.iter().zip(outs) {
                    names[m.index()] = o;
                }
            }
        }
    }
    let mut output_outlets = Vec::new();
    for (k, (_, id)) in g.outputs().iter().enumerate() {
        if names[id.index()] != outputs[k] {
            // An input, or a node that is an earlier output too.
            cx.node_into("Identity", &[&names[id.index()]], &outputs[k], vec![])?;
        }
        output_outlets.push(Outlet::new(&outputs[k], value_type(g.dtype(*id), g.shape(*id))));
    }
    cx.graph.set_inputs(input_outlets).map_err(LowerError::Ort)?;
    cx.graph.set_outputs(output_outlets).map_err(LowerError::Ort)?;
    let mut opsets = vec![Opset::new(ONNX_DOMAIN, OPSET).map_err(LowerError::Ort)?];
    if !fusion.groups.is_empty() {
        opsets.push(Opset::new(fused::DOMAIN, fused::VERSION).map_err(LowerError::Ort)?);
    }
    let mut model = Model::new(opsets).map_err(LowerError::Ort)?;
    model.set_graph(cx.graph).map_err(LowerError::Ort)?;
    Ok(Lowered { model, inputs, outputs, fused_groups: fusion.groups.len() })
}

fn emit(cx: &mut Ctx, g: &Graph, id: NodeId, a: &[&str]) -> LResult<Out> {
    let node = g.node(id);
    let shape = node.shape.as_slice();
    let in_shape = |k: usize| g.shape(node.args[k]);
    let cast = |cx: &mut Ctx, op: &str, inputs: &[&str]| -> LResult<Out> {
        let m = cx.node(op, inputs, vec![])?;
        to_f32(&m)
    };
    Ok(match &node.op {
        Op::Input { .. } => unreachable!("inputs are named before lowering"),
        Op::Const(t) => Out::Value(match t.data() {
            HostData::F32(v) => cx.init(t.shape(), v)?,
            HostData::I64(v) => cx.init(t.shape(), v)?,
        }),
        Op::StopGradient => Out::Value(a[0].to_string()),
        Op::Unary(u) => match u {
            UnaryOp::Neg => Out::node("Neg", a, vec![]),
            UnaryOp::Relu => Out::node("Relu", a, vec![]),
            UnaryOp::Sigmoid => Out::node("Sigmoid", a, vec![]),
            UnaryOp::Tanh => Out::node("Tanh", a, vec![]),
            UnaryOp::Exp => Out::node("Exp", a, vec![]),
            UnaryOp::Log => Out::node("Log", a, vec![]),
            UnaryOp::Sqrt => Out::node("Sqrt", a, vec![]),
            UnaryOp::Abs => Out::node("Abs", a, vec![]),
            UnaryOp::Sign => Out::node("Sign", a, vec![]),
            UnaryOp::Square => Out::node("Mul", &[a[0], a[0]], vec![]),
            UnaryOp::Step => {
                let zero = cx.scalar(0.0)?;
                cast(cx, "Greater", &[a[0], &zero])?
            }
        },
        // c - x: one node instead of a product and a sum (1 - s in sigmoid's gradient).
        Op::Affine { mul, add } if *mul == -1.0 && *add != 0.0 => {
            let c = cx.scalar(*add)?;
            Out::node("Sub", &[&c, a[0]], vec![])
        }
        Op::Affine { mul, add } => {
            let m = (*mul != 1.0).then(|| cx.scalar(*mul)).transpose()?;
            let c = (*add != 0.0).then(|| cx.scalar(*add)).transpose()?;
            match (m, c) {
                (Some(m), Some(c)) => {
                    let x = cx.node("Mul", &[a[0], &m], vec![])?;
                    Out::node("Add", &[&x, &c], vec![])
                }
                (Some(m), None) => Out::node("Mul", &[a[0], &m], vec![]),
                (None, Some(c)) => Out::node("Add", &[a[0], &c], vec![]),
                (None, None) => Out::Value(a[0].to_string()),
            }
        }
        Op::Clamp { min, max } => {
            let lo = cx.scalar(*min)?;
            if max.is_finite() {
                let hi = cx.scalar(*max)?;
                Out::node("Clip", &[a[0], &lo, &hi], vec![])
            } else {
                Out::node("Clip", &[a[0], &lo], vec![])
            }
        }
        Op::Binary(b) => {
            let op = match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
            };
            Out::node(op, a, vec![])
        }
        Op::Compare(c) => {
            let op = match c {
                CmpOp::Eq => "Equal",
                CmpOp::Ge => "GreaterOrEqual",
                CmpOp::Gt => "Greater",
            };
            cast(cx, op, a)?
        }
        Op::MatMul { ta, tb } => {
            Out::node("Gemm", a, vec![attr("transA", *ta as i64)?, attr("transB", *tb as i64)?])
        }
        Op::Linear => Out::node("Gemm", a, vec![]),
        Op::Conv2d { stride, padding } => {
            let k = &in_shape(1)[2..];
            Out::node("Conv", a, conv_attrs(k, *stride, *padding, 1)?)
        }
        Op::Conv2dBackwardInput { stride, padding } => {
            let (dy, w) = (in_shape(0), in_shape(1));
            let extra = conv_transpose_output_padding(dy, w, shape, *stride, *padding);
            let mut attrs = conv_attrs(&w[2..], *stride, *padding, 1)?;
            attrs.push(attr("output_padding", ints(&extra))?);
            Out::node("ConvTranspose", a, attrs)
        }
        Op::Conv2dBackwardWeight { stride, padding } => {
            // The transposed input convolved with the transposed output gradient, dilated by
            // the stride; cut to the kernel's size.
            let dy = in_shape(1);
            let xt = cx.node("Transpose", &[a[0]], vec![attr("perm", vec![1i64, 0, 2, 3])?])?;
            let dyt = cx.node("Transpose", &[a[1]], vec![attr("perm", vec![1i64, 0, 2, 3])?])?;
            let gw = cx.node(
                "Conv",
                &[&xt, &dyt],
                vec![
                    attr("kernel_shape", ints(&dy[2..]))?,
                    attr("pads", vec![*padding as i64; 4])?,
                    attr("strides", vec![1i64, 1])?,
                    attr("dilations", vec![*stride as i64; 2])?,
                ],
            )?;
            let gw = cx.node("Transpose", &[&gw], vec![attr("perm", vec![1i64, 0, 2, 3])?])?;
            let starts = cx.ints(&[0, 0])?;
            let ends = cx.ints(&shape[2..])?;
            let axes = cx.ints(&[2, 3])?;
            Out::node("Slice", &[&gw, &starts, &ends, &axes], vec![])
        }
        Op::MaxPool2d { k } => Out::node(
            "MaxPool",
            a,
            vec![attr("kernel_shape", vec![*k as i64; 2])?, attr("strides", vec![*k as i64; 2])?],
        ),
        // Composed: ONNX Runtime's BatchNormalization in training mode (batch statistics) is
        // in some CPU builds and not others, and its CUDA provider refuses it from opset 14.
        Op::BatchNorm { eps } => {
            let xs = in_shape(0);
            let axes = cx.ints(&batch_norm_axes(xs.len()))?;
            let mean = cx.node("ReduceMean", &[a[0], &axes], vec![attr("keepdims", 1i64)?])?;
            let centered = cx.node("Sub", &[a[0], &mean], vec![])?;
            let squared = cx.node("Mul", &[&centered, &centered], vec![])?;
            let var = cx.node("ReduceMean", &[&squared, &axes], vec![attr("keepdims", 1i64)?])?;
            let e = cx.scalar(*eps)?;
            let shifted = cx.node("Add", &[&var, &e], vec![])?;
            let s = cx.node("Sqrt", &[&shifted], vec![])?;
            let channel = cx.ints(&per_channel_shape(xs))?;
            let gamma = cx.node("Reshape", &[a[1], &channel], vec![])?;
            let beta = cx.node("Reshape", &[a[2], &channel], vec![])?;
            // γ/s per channel first: one pass over x fewer than dividing x by s.
            let scale = cx.node("Div", &[&gamma, &s], vec![])?;
            let scaled = cx.node("Mul", &[&centered, &scale], vec![])?;
            Out::node("Add", &[&scaled, &beta], vec![])
        }
        Op::Softmax => Out::node("Softmax", a, vec![attr("axis", -1i64)?]),
        Op::SoftmaxCrossEntropy => {
            Out::node("SoftmaxCrossEntropyLoss", a, vec![attr("reduction", "none".to_string())?])
        }
        Op::OneHot { classes } => {
            let depth = cx.init(&[1], &[*classes as i64])?;
            let values = cx.init(&[2], &[0.0f32, 1.0])?;
            Out::node("OneHot", &[a[0], &depth, &values], vec![attr("axis", -1i64)?])
        }
        Op::CorrectPredictions => {
            let arg =
                cx.node("ArgMax", &[a[0]], vec![attr("axis", 1i64)?, attr("keepdims", 0i64)?])?;
            cast(cx, "Equal", &[&arg, a[1]])?
        }
        Op::Sum { axes, keep_dims } => {
            let xs = in_shape(0);
            if xs.len() == 2 && axes.as_slice() == [0] && !keep_dims {
                // A bias gradient: ones · x as a product runs several times faster than
                // ReduceSum over the leading axis on ONNX Runtime's CPU provider.
                let ones = cx.init(&[xs[0]], &vec![1.0f32; xs[0]])?;
                Out::node("MatMul", &[&ones, a[0]], vec![])
            } else {
                let ax = cx.ints(axes)?;
                Out::node("ReduceSum", &[a[0], &ax], vec![attr("keepdims", *keep_dims as i64)?])
            }
        }
        Op::BroadcastTo => {
            let s = cx.ints(shape)?;
            Out::node("Expand", &[a[0], &s], vec![])
        }
        Op::SumTo => {
            let ax = cx.ints(&sum_to_axes(in_shape(0), shape))?;
            let summed = cx.node("ReduceSum", &[a[0], &ax], vec![attr("keepdims", 1i64)?])?;
            let s = cx.ints(shape)?;
            Out::node("Reshape", &[&summed, &s], vec![])
        }
        Op::Reshape => {
            let s = cx.ints(shape)?;
            Out::node("Reshape", &[a[0], &s], vec![])
        }
        Op::Permute { perm } => Out::node("Transpose", a, vec![attr("perm", ints(perm))?]),
        Op::Slice { axis, start, end } => {
            let (s, e, ax) = (cx.ints(&[*start])?, cx.ints(&[*end])?, cx.ints(&[*axis])?);
            Out::node("Slice", &[a[0], &s, &e, &ax], vec![])
        }
        Op::Pad { axis, before, after } => {
            let rank = shape.len();
            let mut pads = vec![0usize; 2 * rank];
            pads[*axis] = *before;
            pads[rank + axis] = *after;
            let p = cx.ints(&pads)?;
            Out::node("Pad", &[a[0], &p], vec![])
        }
        Op::Concat { axis } => Out::node("Concat", a, vec![attr("axis", *axis as i64)?]),
        Op::Gather => Out::node("Gather", a, vec![attr("axis", 0i64)?]),
        Op::Grad => return Err(LowerError::UnexpandedGrad),
    })
}

fn conv_attrs(
    kernel: &[usize],
    stride: usize,
    padding: usize,
    dilation: usize,
) -> LResult<Vec<Attribute>> {
    Ok(vec![
        attr("kernel_shape", ints(kernel))?,
        attr("pads", vec![padding as i64; 4])?,
        attr("strides", vec![stride as i64; 2])?,
        attr("dilations", vec![dilation as i64; 2])?,
    ])
}
