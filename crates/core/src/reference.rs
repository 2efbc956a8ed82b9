//! A plain f64 evaluator of graphs on the host: the ground truth that gradient rules and
//! backends are tested against. Written for clarity, not speed.

use crate::graph::{conv2d_output_shape, BinaryOp, CmpOp, GResult, Graph, GraphError, Op, UnaryOp};
use crate::tensor::{numel, HostData, HostTensor};

/// A value of the reference evaluator; i64 labels are held exactly as f64.
#[derive(Clone, Debug, PartialEq)]
pub struct RefValue {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl RefValue {
    pub fn from_host(t: &HostTensor) -> Self {
        let data = match t.data() {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        };
        Self { shape: t.shape().to_vec(), data }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn unravel(mut idx: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        c[i] = idx % shape[i];
        idx /= shape[i];
    }
    c
}

fn ravel(coords: &[usize], shape: &[usize]) -> usize {
    coords.iter().zip(shape).fold(0, |acc, (&c, &d)| acc * d + c)
}

/// Evaluates all outputs of `g` (which must hold no `Grad` node) for the given inputs.
pub fn evaluate(g: &Graph, inputs: &[HostTensor]) -> GResult<Vec<RefValue>> {
    let values: Vec<RefValue> = inputs.iter().map(RefValue::from_host).collect();
    evaluate_values(g, &values)
}

/// As [`evaluate`], with inputs already in f64 (finite differences perturb them there).
pub fn evaluate_values(g: &Graph, inputs: &[RefValue]) -> GResult<Vec<RefValue>> {
    if inputs.len() != g.inputs().len() {
        return Err(GraphError::Invalid(format!(
            "graph has {} inputs, {} given",
            g.inputs().len(),
            inputs.len()
        )));
    }
    let mut vals: Vec<Option<RefValue>> = vec![None; g.len()];
    for (pos, id) in g.inputs().iter().enumerate() {
        if inputs[pos].shape != g.shape(*id) {
            return Err(GraphError::Invalid(format!(
                "input {} has shape {:?}, the graph expects {:?}",
                g.input_name(*id),
                inputs[pos].shape,
                g.shape(*id)
            )));
        }
        vals[id.index()] = Some(inputs[pos].clone());
    }
    for (i, node) in g.nodes().iter().enumerate() {
        if vals[i].is_some() {
            continue;
        }
        let args: Vec<&RefValue> =
            node.args.iter().map(|a| vals[a.index()].as_ref().expect("topological")).collect();
        let data = eval_op(&node.op, &args, &node.shape)?;
        debug_assert_eq!(data.len(), numel(&node.shape), "{:?}", node.op);
        vals[i] = Some(RefValue { shape: node.shape.clone(), data });
    }
    Ok(g.outputs().iter().map(|(_, id)| vals[id.index()].clone().expect("evaluated")).collect())
}

fn eval_op(op: &Op, a: &[&RefValue], out_shape: &[usize]) -> GResult<Vec<f64>> {
    let map1 = |f: &dyn Fn(f64) -> f64| a[0].data.iter().map(|&x| f(x)).collect::<Vec<_>>();
    let map2 = |f: &dyn Fn(f64, f64) -> f64| {
        a[0].data.iter().zip(&a[1].data).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>()
    };
    Ok(match op {
        Op::Input { name } => {
            return Err(GraphError::Invalid(format!("input {name} was not given")))
        }
        Op::Const(t) => RefValue::from_host(t).data,
        Op::Unary(u) => match u {
            UnaryOp::Neg => map1(&|x| -x),
            UnaryOp::Relu => map1(&|x| x.max(0.0)),
            UnaryOp::Sigmoid => map1(&|x| 1.0 / (1.0 + (-x).exp())),
            UnaryOp::Tanh => map1(&f64::tanh),
            UnaryOp::Exp => map1(&f64::exp),
            UnaryOp::Log => map1(&f64::ln),
            UnaryOp::Sqrt => map1(&f64::sqrt),
            UnaryOp::Abs => map1(&f64::abs),
            UnaryOp::Sign => map1(&|x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }),
            UnaryOp::Square => map1(&|x| x * x),
            UnaryOp::Step => map1(&|x| if x > 0.0 { 1.0 } else { 0.0 }),
        },
        Op::Affine { mul, add } => map1(&|x| x * mul + add),
        Op::Clamp { min, max } => map1(&|x| x.clamp(*min, *max)),
        Op::Binary(b) => match b {
            BinaryOp::Add => map2(&|x, y| x + y),
            BinaryOp::Sub => map2(&|x, y| x - y),
            BinaryOp::Mul => map2(&|x, y| x * y),
            BinaryOp::Div => map2(&|x, y| x / y),
        },
        Op::Compare(c) => match c {
            CmpOp::Eq => map2(&|x, y| (x == y) as u8 as f64),
            CmpOp::Ge => map2(&|x, y| (x >= y) as u8 as f64),
            CmpOp::Gt => map2(&|x, y| (x > y) as u8 as f64),
        },
        Op::MatMul { ta, tb } => matmul(a[0], a[1], *ta, *tb),
        Op::Linear => {
            let mut y = matmul(a[0], a[1], false, false);
            let o = out_shape[1];
            for (i, v) in y.iter_mut().enumerate() {
                *v += a[2].data[i % o];
            }
            y
        }
        Op::Conv2d { stride, padding } => conv2d(a[0], a[1], *stride, *padding),
        Op::Conv2dBackwardInput { stride, padding } => {
            conv2d_backward_input(a[0], a[1], out_shape, *stride, *padding)
        }
        Op::Conv2dBackwardWeight { stride, padding } => {
            conv2d_backward_weight(a[0], a[1], out_shape, *stride, *padding)
        }
        Op::MaxPool2d { k } => {
            let s = &a[0].shape;
            let mut y = vec![f64::NEG_INFINITY; numel(out_shape)];
            for (i, &v) in a[0].data.iter().enumerate() {
                let c = unravel(i, s);
                let o = ravel(&[c[0], c[1], c[2] / k, c[3] / k], out_shape);
                y[o] = y[o].max(v);
            }
            y
        }
        Op::BatchNorm { eps } => batch_norm(a[0], &a[1].data, &a[2].data, *eps),
        Op::Softmax => {
            let c = *a[0].shape.last().expect("rank >= 1");
            a[0].data.chunks(c).flat_map(softmax_row).collect()
        }
        Op::SoftmaxCrossEntropy => {
            let c = a[0].shape[1];
            a[0].data
                .chunks(c)
                .zip(&a[1].data)
                .map(|(row, &label)| -softmax_row(row)[label as usize].ln())
                .collect()
        }
        Op::OneHot { classes } => {
            let mut y = vec![0.0; numel(out_shape)];
            for (i, &label) in a[0].data.iter().enumerate() {
                let l = label as usize;
                if l < *classes {
                    y[i * classes + l] = 1.0;
                }
            }
            y
        }
        Op::CorrectPredictions => {
            let c = a[0].shape[1];
            a[0].data
                .chunks(c)
                .zip(&a[1].data)
                .map(|(row, &label)| (argmax(row) == label as usize) as u8 as f64)
                .collect()
        }
        Op::Sum { axes, .. } => {
            let s = &a[0].shape;
            let keep: Vec<usize> =
                s.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
            let mut y = vec![0.0; numel(&keep)];
            for (i, &v) in a[0].data.iter().enumerate() {
                let mut c = unravel(i, s);
                for &ax in axes {
                    c[ax] = 0;
                }
                y[ravel(&c, &keep)] += v;
            }
            y
        }
        Op::BroadcastTo => {
            let s = &a[0].shape;
            let off = out_shape.len() - s.len();
            (0..numel(out_shape))
                .map(|i| {
                    let c = unravel(i, out_shape);
                    let src: Vec<usize> = s
                        .iter()
                        .enumerate()
                        .map(|(j, &d)| if d == 1 { 0 } else { c[j + off] })
                        .collect();
                    a[0].data[ravel(&src, s)]
                })
                .collect()
        }
        Op::SumTo => {
            let s = &a[0].shape;
            let off = s.len() - out_shape.len();
            let mut y = vec![0.0; numel(out_shape)];
            for (i, &v) in a[0].data.iter().enumerate() {
                let c = unravel(i, s);
                let dst: Vec<usize> = out_shape
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| if d == 1 { 0 } else { c[j + off] })
                    .collect();
                y[ravel(&dst, out_shape)] += v;
            }
            y
        }
        Op::Reshape | Op::StopGradient => a[0].data.clone(),
        Op::Permute { perm } => {
            let s = &a[0].shape;
            (0..numel(out_shape))
                .map(|i| {
                    let c = unravel(i, out_shape);
                    let mut src = vec![0; s.len()];
                    for (j, &p) in perm.iter().enumerate() {
                        src[p] = c[j];
                    }
                    a[0].data[ravel(&src, s)]
                })
                .collect()
        }
        Op::Slice { axis, start, .. } => (0..numel(out_shape))
            .map(|i| {
                let mut c = unravel(i, out_shape);
                c[*axis] += start;
                a[0].data[ravel(&c, &a[0].shape)]
            })
            .collect(),
        Op::Pad { axis, before, .. } => {
            let s = &a[0].shape;
            (0..numel(out_shape))
                .map(|i| {
                    let mut c = unravel(i, out_shape);
                    if c[*axis] < *before || c[*axis] >= before + s[*axis] {
                        return 0.0;
                    }
                    c[*axis] -= before;
                    a[0].data[ravel(&c, s)]
                })
                .collect()
        }
        Op::Concat { axis } => (0..numel(out_shape))
            .map(|i| {
                let mut c = unravel(i, out_shape);
                for part in a {
                    if c[*axis] < part.shape[*axis] {
                        return part.data[ravel(&c, &part.shape)];
                    }
                    c[*axis] -= part.shape[*axis];
                }
                unreachable!("concat index in range")
            })
            .collect(),
        Op::Gather => {
            let row = numel(&a[0].shape[1..]);
            let n = a[0].shape[0];
            let mut y = Vec::with_capacity(numel(out_shape));
            for &idx in &a[1].data {
                let r = idx as usize;
                if idx < 0.0 || r >= n {
                    return Err(GraphError::Invalid(format!(
                        "gather index {idx} out of range 0..{n}"
                    )));
                }
                y.extend_from_slice(&a[0].data[r * row..(r + 1) * row]);
            }
            y
        }
        Op::Grad => {
            return Err(GraphError::Invalid(
                "expand Grad nodes before evaluating on the reference".into(),
            ))
        }
    })
}

/// Normalizes each channel (axis 1) of x by its mean and biased variance over the other axes,
/// then scales by gamma and shifts by beta.
fn batch_norm(x: &RefValue, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let (c, inner) = (x.shape[1], numel(&x.shape[2..]));
    let channel = |i: usize| i / inner % c;
    let count = (x.data.len() / c) as f64;
    let mut mean = vec![0.0; c];
    for (i, &v) in x.data.iter().enumerate() {
        mean[channel(i)] += v / count;
    }
    let mut var = vec![0.0; c];
    for (i, &v) in x.data.iter().enumerate() {
        var[channel(i)] += (v - mean[channel(i)]).powi(2) / count;
    }
    x.data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = channel(i);
            gamma[ch] * (v - mean[ch]) / (var[ch] + eps).sqrt() + beta[ch]
        })
        .collect()
}

fn softmax_row(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Index of the first maximum, as argmax in every backend.
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn matmul(a: &RefValue, b: &RefValue, ta: bool, tb: bool) -> Vec<f64> {
    let (sa, sb) = (strides(&a.shape), strides(&b.shape));
    let (m, k) = if ta { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
    let n = if tb { b.shape[0] } else { b.shape[1] };
    let at = |i: usize, j: usize| if ta { a.data[j * sa[0] + i] } else { a.data[i * sa[0] + j] };
    let bt = |i: usize, j: usize| if tb { b.data[j * sb[0] + i] } else { b.data[i * sb[0] + j] };
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
        }
    }
    y
}

/// Calls `f(n, o, c, oy, ox, iy, ix)` for every kernel tap that lands inside the input.
fn conv_taps(
    x: &[usize],
    w: &[usize],
    stride: usize,
    padding: usize,
    mut f: impl FnMut([usize; 7]),
) {
    let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (o, kh, kw) = (w[0], w[2], w[3]);
    let out = conv2d_output_shape(x, w, stride, padding).expect("checked when the graph was built");
    let (oh, ow) = (out[2], out[3]);
    for b in 0..n {
        for oc in 0..o {
            for ic in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - padding as isize;
                                let ix = (ox * stride + kx) as isize - padding as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    f([
                                        b,
                                        oc,
                                        ic,
                                        oy,
                                        ox,
                                        ky * kw + kx,
                                        (iy as usize) * wd + ix as usize,
                                    ]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn conv2d(x: &RefValue, w: &RefValue, stride: usize, padding: usize) -> Vec<f64> {
    let (xs, ws) = (&x.shape, &w.shape);
    let out =
        conv2d_output_shape(xs, ws, stride, padding).expect("checked when the graph was built");
    let (oh, ow) = (out[2], out[3]);
    let mut y = vec![0.0; numel(&out)];
    conv_taps(xs, ws, stride, padding, |[b, oc, ic, oy, ox, kk, ii]| {
        y[((b * ws[0] + oc) * oh + oy) * ow + ox] += x.data[(b * xs[1] + ic) * xs[2] * xs[3] + ii]
            * w.data[(oc * ws[1] + ic) * ws[2] * ws[3] + kk];
    });
    y
}

fn conv2d_backward_input(
    dy: &RefValue,
    w: &RefValue,
    xs: &[usize],
    stride: usize,
    padding: usize,
) -> Vec<f64> {
    let ws = &w.shape;
    let (oh, ow) = (dy.shape[2], dy.shape[3]);
    let mut dx = vec![0.0; numel(xs)];
    conv_taps(xs, ws, stride, padding, |[b, oc, ic, oy, ox, kk, ii]| {
        dx[(b * xs[1] + ic) * xs[2] * xs[3] + ii] += dy.data
            [((b * ws[0] + oc) * oh + oy) * ow + ox]
            * w.data[(oc * ws[1] + ic) * ws[2] * ws[3] + kk];
    });
    dx
}

fn conv2d_backward_weight(
    x: &RefValue,
    dy: &RefValue,
    ws: &[usize],
    stride: usize,
    padding: usize,
) -> Vec<f64> {
    let xs = &x.shape;
    let (oh, ow) = (dy.shape[2], dy.shape[3]);
    let mut dw = vec![0.0; numel(ws)];
    conv_taps(xs, ws, stride, padding, |[b, oc, ic, oy, ox, kk, ii]| {
        dw[(oc * ws[1] + ic) * ws[2] * ws[3] + kk] += dy.data
            [((b * ws[0] + oc) * oh + oy) * ow + ox]
            * x.data[(b * xs[1] + ic) * xs[2] * xs[3] + ii];
    });
    dw
}
