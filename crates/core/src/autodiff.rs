//! Symbolic reverse mode: `Grad` nodes become ordinary ops, one gradient rule per op.
//!
//! Expansion walks the graph in topological order, so a `Grad` nested inside the function
//! that an outer `Grad` differentiates is already plain ops when the outer one is expanded.
//! All `Grad` nodes that share one `of` are answered by a single backward sweep.

use crate::graph::{
    batch_norm_axes, per_channel_shape, BinaryOp, CmpOp, GResult, Graph, GraphError, NodeId, Op,
    UnaryOp,
};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Expands every `Grad` node.
pub fn expand_grads(g: &Graph) -> GResult<Graph> {
    expand_grads_where(g, |_| true)
}

/// Expands the `Grad` nodes whose `of` node (an id in `g`) the predicate selects; the other
/// `Grad` nodes are copied unchanged. The result is simplified (see [`simplify`]).
pub fn expand_grads_where(g: &Graph, select: impl Fn(NodeId) -> bool) -> GResult<Graph> {
    let mut ng = Graph::new();
    let mut map: Vec<NodeId> = Vec::with_capacity(g.len());
    // For each selected `of` (old id): gradient (new id) by wrt (old id).
    let mut answered: HashMap<NodeId, HashMap<NodeId, NodeId>> = HashMap::new();
    for (i, node) in g.nodes().iter().enumerate() {
        let is_selected_grad = node.op == Op::Grad && select(node.args[0]);
        if !is_selected_grad {
            let args = node.args.iter().map(|a| map[a.index()]).collect();
            map.push(ng.push_node(node, args));
            continue;
        }
        let (of, wrt) = (node.args[0], node.args[1]);
        if let Entry::Vacant(slot) = answered.entry(of) {
            // Every Grad of this `of` whose wrt exists by now; a wrt created later cannot be an
            // ancestor of `of`, and gets zeros when its Grad node is reached.
            let mut wrts: Vec<NodeId> = g.nodes()[i..]
                .iter()
                .filter(|n| n.op == Op::Grad && n.args[0] == of && n.args[1].index() < i)
                .map(|n| n.args[1])
                .collect();
            wrts.sort_unstable();
            wrts.dedup();
            let new_wrts: Vec<NodeId> = wrts.iter().map(|w| map[w.index()]).collect();
            let grads = backward(&mut ng, map[of.index()], &new_wrts)?;
            slot.insert(wrts.into_iter().zip(grads).collect());
        }
        let grad = match answered[&of].get(&wrt) {
            Some(&gid) => gid,
            None => {
                let shape = g.shape(wrt).to_vec();
                ng.full(0.0, &shape)?
            }
        };
        map.push(grad);
    }
    let outputs = g.outputs().iter().map(|(n, id)| (n.clone(), map[id.index()])).collect();
    ng.set_outputs(outputs);
    Ok(simplify(&ng))
}

/// Appends to `g` the gradients of the scalar `of` with respect to each of `wrt`.
pub fn backward(g: &mut Graph, of: NodeId, wrt: &[NodeId]) -> GResult<Vec<NodeId>> {
    let n = of.index() + 1;
    let relevant = gradient_path(g, wrt, of);

    let mut grads: HashMap<usize, NodeId> = HashMap::new();
    let mut results: HashMap<usize, NodeId> = HashMap::new();
    if relevant[of.index()] {
        grads.insert(of.index(), g.scalar(1.0));
    }
    for i in (0..n).rev() {
        if !relevant[i] {
            continue;
        }
        let Some(dy) = grads.remove(&i) else { continue };
        if wrt.iter().any(|w| w.index() == i) {
            results.insert(i, dy);
        }
        let node = g.nodes()[i].clone();
        if node.op == Op::Grad {
            return Err(GraphError::GradUnsupported {
                op: "Grad",
                arg: 0,
                why: "a Grad node on the path must be expanded first (higher-order derivative)"
                    .into(),
            });
        }
        for (k, a) in node.args.iter().enumerate() {
            if !relevant[a.index()] {
                continue;
            }
            if let Some(contrib) = vjp(g, NodeId(i as u32), k, dy)? {
                let acc = match grads.get(&a.index()) {
                    Some(&prev) => g.add(prev, contrib)?,
                    None => contrib,
                };
                grads.insert(a.index(), acc);
            }
        }
    }
    wrt.iter()
        .map(|w| match results.get(&w.index()) {
            Some(&r) => Ok(r),
            None => {
                let shape = g.shape(*w).to_vec();
                g.full(0.0, &shape)
            }
        })
        .collect()
}

/// The nodes, up to `of`, through which a derivative flows from some of `wrt` to `of`: those
/// that depend on a `wrt` and that `of` reads. A StopGradient blocks the flow; ops whose output
/// is piecewise constant (masks, labels) carry none either.
pub fn gradient_path(g: &Graph, wrt: &[NodeId], of: NodeId) -> Vec<bool> {
    let n = of.index() + 1;
    let mut depends = vec![false; n];
    for w in wrt.iter().filter(|w| w.index() < n) {
        depends[w.index()] = true;
    }
    let first = wrt.iter().map(|w| w.index()).min().unwrap_or(n);
    for i in first..n {
        let node = &g.nodes()[i];
        if !depends[i] && !is_constant_valued(&node.op) {
            depends[i] = node.args.iter().any(|a| depends[a.index()]);
        }
    }
    let feeds_of = g.needed_by([of], |id| match g.node(id).op {
        Op::StopGradient => vec![],
        _ => g.node(id).args.clone(),
    });
    (0..n).map(|i| depends[i] && feeds_of[i]).collect()
}

/// Ops whose output does not change under small changes of their inputs.
fn is_constant_valued(op: &Op) -> bool {
    matches!(
        op,
        Op::Input { .. }
            | Op::Const(_)
            | Op::Compare(_)
            | Op::Unary(UnaryOp::Sign | UnaryOp::Step)
            | Op::OneHot { .. }
            | Op::CorrectPredictions
            | Op::StopGradient
    )
}

/// Nearest-neighbour upsampling by k of [n,c,h,w], written with reshapes and a broadcast.
fn upsample(g: &mut Graph, t: NodeId, k: usize) -> GResult<NodeId> {
    let s = g.shape(t).to_vec();
    let r = g.reshape(t, &[s[0], s[1], s[2], 1, s[3], 1])?;
    let b = g.broadcast_to(r, &[s[0], s[1], s[2], k, s[3], k])?;
    g.reshape(b, &[s[0], s[1], s[2] * k, s[3] * k])
}

/// 1 at the first maximum (row-major window order) of each k×k window of x [n,c,h,w], whose
/// window maxima are y; 0 elsewhere. Written with comparisons, slices and concatenations, so
/// every engine computes it, and it is constant (no gradient flows through it).
fn first_max_mask(g: &mut Graph, x: NodeId, y: NodeId, k: usize) -> GResult<NodeId> {
    let s = g.shape(x).to_vec();
    let (hh, ww) = (s[2] / k, s[3] / k);
    let windows = g.reshape(x, &[s[0], s[1], hh, k, ww, k])?;
    let top = g.reshape(y, &[s[0], s[1], hh, 1, ww, 1])?;
    let top = g.broadcast_to(top, &[s[0], s[1], hh, k, ww, k])?;
    let equal = g.compare(CmpOp::Eq, windows, top)?;
    let mut seen: Option<NodeId> = None;
    let mut rows = Vec::with_capacity(k);
    for a in 0..k {
        let mut row = Vec::with_capacity(k);
        for b in 0..k {
            let at_a = g.slice(equal, 3, a, a + 1)?;
            let e = g.slice(at_a, 5, b, b + 1)?;
            let first = match seen {
                None => e,
                Some(sn) => {
                    let unseen = g.affine(sn, -1.0, 1.0)?;
                    g.mul(e, unseen)?
                }
            };
            seen = Some(match seen {
                None => first,
                Some(sn) => g.add(sn, first)?,
            });
            row.push(first);
        }
        rows.push(g.concat(&row, 5)?);
    }
    let mask = g.concat(&rows, 3)?;
    g.reshape(mask, &s)
}

/// Batch normalization's normalized input x̂ = (x − μ)/s and s = √(σ² + eps) ([1, C, 1, …]),
/// recomputed from x in IR ops (not read from the op's output, which gamma may zero), so a
/// gradient built on them differentiates again.
fn batch_norm_normalized(g: &mut Graph, x: NodeId, eps: f64) -> GResult<(NodeId, NodeId)> {
    let axes = batch_norm_axes(g.shape(x).len());
    let mean = g.mean(x, &axes, true)?;
    let centered = g.sub(x, mean)?;
    let squared = g.square(centered)?;
    let var = g.mean(squared, &axes, true)?;
    let shifted = g.affine(var, 1.0, eps)?;
    let s = g.sqrt(shifted)?;
    Ok((g.div(centered, s)?, s))
}

/// The vector-Jacobian product of node `y`'s output gradient `dy` for its argument `k`.
/// `None` means no gradient flows to that argument.
fn vjp(g: &mut Graph, y: NodeId, k: usize, dy: NodeId) -> GResult<Option<NodeId>> {
    let node = g.node(y).clone();
    let x = |i: usize| node.args[i];
    let unsupported = |why: &str| GraphError::GradUnsupported {
        op: node.op.name(),
        arg: k,
        why: why.to_string(),
    };
    let r = match &node.op {
        Op::Input { .. }
        | Op::Const(_)
        | Op::Compare(_)
        | Op::OneHot { .. }
        | Op::CorrectPredictions
        | Op::StopGradient => return Ok(None),
        Op::Unary(u) => match u {
            UnaryOp::Neg => g.neg(dy)?,
            UnaryOp::Relu => {
                let m = g.step(x(0))?;
                g.mul(dy, m)?
            }
            UnaryOp::Sigmoid => {
                let one_minus = g.affine(y, -1.0, 1.0)?;
                let d = g.mul(y, one_minus)?;
                g.mul(dy, d)?
            }
            UnaryOp::Tanh => {
                let sq = g.square(y)?;
                let d = g.affine(sq, -1.0, 1.0)?;
                g.mul(dy, d)?
            }
            UnaryOp::Exp => g.mul(dy, y)?,
            UnaryOp::Log => g.div(dy, x(0))?,
            UnaryOp::Sqrt => {
                let q = g.div(dy, y)?;
                g.scale(q, 0.5)?
            }
            UnaryOp::Abs => {
                let s = g.sign(x(0))?;
                g.mul(dy, s)?
            }
            UnaryOp::Square => {
                let two_x = g.scale(x(0), 2.0)?;
                g.mul(dy, two_x)?
            }
            UnaryOp::Sign | UnaryOp::Step => return Ok(None),
        },
        Op::Affine { mul, .. } => g.scale(dy, *mul)?,
        Op::Clamp { .. } => {
            // Passes the gradient where the value was not clipped (boundaries included, as PyTorch).
            let inside = g.compare(CmpOp::Eq, y, x(0))?;
            g.mul(dy, inside)?
        }
        Op::Binary(b) => match (b, k) {
            (BinaryOp::Add, _) | (BinaryOp::Sub, 0) => dy,
            (BinaryOp::Sub, _) => g.neg(dy)?,
            (BinaryOp::Mul, 0) => g.mul(dy, x(1))?,
            (BinaryOp::Mul, _) => g.mul(dy, x(0))?,
            (BinaryOp::Div, 0) => g.div(dy, x(1))?,
            (BinaryOp::Div, _) => {
                let t = g.mul(dy, y)?;
                let q = g.div(t, x(1))?;
                g.neg(q)?
            }
        },
        Op::MatMul { ta, tb } => {
            let (a, b) = (x(0), x(1));
            match (ta, tb, k) {
                (false, false, 0) => g.matmul_t(dy, b, false, true)?,
                (false, false, _) => g.matmul_t(a, dy, true, false)?,
                (false, true, 0) => g.matmul_t(dy, b, false, false)?,
                (false, true, _) => g.matmul_t(dy, a, true, false)?,
                (true, false, 0) => g.matmul_t(b, dy, false, true)?,
                (true, false, _) => g.matmul_t(a, dy, false, false)?,
                (true, true, 0) => g.matmul_t(b, dy, true, true)?,
                (true, true, _) => g.matmul_t(dy, a, true, true)?,
            }
        }
        Op::Linear => match k {
            0 => g.matmul_t(dy, x(1), false, true)?,
            1 => g.matmul_t(x(0), dy, true, false)?,
            _ => g.sum(dy, &[0], false)?,
        },
        Op::Conv2d { stride, padding } => {
            let (xs, ws) = (g.shape(x(0)).to_vec(), g.shape(x(1)).to_vec());
            match k {
                0 => g.conv2d_backward_input(dy, x(1), &xs, *stride, *padding)?,
                _ => g.conv2d_backward_weight(x(0), dy, &ws, *stride, *padding)?,
            }
        }
        // Both backward convolutions are bilinear: their gradients are convolutions again.
        Op::Conv2dBackwardInput { stride, padding } => {
            let (gy, w) = (x(0), x(1));
            match k {
                0 => g.conv2d(dy, w, *stride, *padding)?,
                _ => {
                    let ws = g.shape(w).to_vec();
                    g.conv2d_backward_weight(dy, gy, &ws, *stride, *padding)?
                }
            }
        }
        Op::Conv2dBackwardWeight { stride, padding } => {
            let (xin, gy) = (x(0), x(1));
            match k {
                0 => {
                    let xs = g.shape(xin).to_vec();
                    g.conv2d_backward_input(gy, dy, &xs, *stride, *padding)?
                }
                _ => g.conv2d(xin, dy, *stride, *padding)?,
            }
        }
        Op::MaxPool2d { k: win } => {
            // The gradient goes to one input per window: the first equal to the window's
            // maximum in window order, as PyTorch routes it (to every tied input, a window of
            // equal values would pass on k times the gradient).
            let mask = first_max_mask(g, x(0), y, *win)?;
            let up_dy = upsample(g, dy, *win)?;
            g.mul(up_dy, mask)?
        }
        Op::BatchNorm { eps } => {
            let axes = batch_norm_axes(g.shape(x(0)).len());
            if k == 2 {
                g.sum(dy, &axes, false)?
            } else {
                let (xhat, s) = batch_norm_normalized(g, x(0), *eps)?;
                let dy_xhat = g.mul(dy, xhat)?;
                if k == 1 {
                    g.sum(dy_xhat, &axes, false)?
                } else {
                    // dx = γ/s · (dy − mean(dy) − x̂·mean(dy·x̂)), means per channel.
                    let mean_dy = g.mean(dy, &axes, true)?;
                    let mean_dy_xhat = g.mean(dy_xhat, &axes, true)?;
                    let along = g.mul(xhat, mean_dy_xhat)?;
                    let centered = g.sub(dy, mean_dy)?;
                    let inner = g.sub(centered, along)?;
                    let gamma = g.reshape(x(1), &per_channel_shape(&node.shape))?;
                    let scale = g.div(gamma, s)?;
                    g.mul(inner, scale)?
                }
            }
        }
        Op::Softmax => {
            let last = g.shape(y).len() - 1;
            let dyy = g.mul(dy, y)?;
            let s = g.sum(dyy, &[last], true)?;
            let centered = g.sub(dy, s)?;
            g.mul(y, centered)?
        }
        Op::SoftmaxCrossEntropy => {
            if k == 1 {
                return Ok(None);
            }
            let (logits, labels) = (x(0), x(1));
            let s = g.shape(logits).to_vec();
            let p = g.softmax(logits)?;
            let oh = g.one_hot(labels, s[1])?;
            let diff = g.sub(p, oh)?;
            let col = g.reshape(dy, &[s[0], 1])?;
            g.mul(diff, col)?
        }
        Op::Sum { axes, .. } => {
            let xs = g.shape(x(0)).to_vec();
            let kept: Vec<usize> = xs
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            let r = g.reshape(dy, &kept)?;
            g.broadcast_to(r, &xs)?
        }
        Op::BroadcastTo => {
            let xs = g.shape(x(0)).to_vec();
            g.sum_to(dy, &xs)?
        }
        Op::SumTo => {
            let xs = g.shape(x(0)).to_vec();
            g.broadcast_to(dy, &xs)?
        }
        Op::Reshape => {
            let xs = g.shape(x(0)).to_vec();
            g.reshape(dy, &xs)?
        }
        Op::Permute { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            g.permute(dy, &inv)?
        }
        Op::Slice { axis, start, end } => {
            let len = g.shape(x(0))[*axis];
            g.pad(dy, *axis, *start, len - end)?
        }
        Op::Pad { axis, before, .. } => {
            let len = g.shape(x(0))[*axis];
            g.slice(dy, *axis, *before, before + len)?
        }
        Op::Concat { axis } => {
            let offset: usize = node.args[..k].iter().map(|a| g.shape(*a)[*axis]).sum();
            let len = g.shape(x(k))[*axis];
            g.slice(dy, *axis, offset, offset + len)?
        }
        Op::Gather => {
            if k == 1 {
                return Ok(None);
            }
            return Err(unsupported(
                "gathered data carries no gradient in this IR; feed parameters directly",
            ));
        }
        Op::Grad => {
            return Err(unsupported("a Grad node must be expanded before it is differentiated"))
        }
    };
    Ok(Some(r))
}

/// Removes nodes that no output needs (inputs always stay, so a program's signature does not
/// change) and merges nodes that compute the same op on the same arguments.
pub fn simplify(g: &Graph) -> Graph {
    let live = g.needed_by(g.output_ids(), |id| g.node(id).args.clone());
    let mut ng = Graph::new();
    let mut map: Vec<Option<NodeId>> = vec![None; g.len()];
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    for (i, node) in g.nodes().iter().enumerate() {
        let is_input = matches!(node.op, Op::Input { .. });
        if !live[i] && !is_input {
            continue;
        }
        let args: Vec<NodeId> =
            node.args.iter().map(|a| map[a.index()].expect("argument is live")).collect();
        if is_input {
            map[i] = Some(ng.push_node(node, args));
            continue;
        }
        let key = format!("{:?}|{:?}|{:?}", node.op, args, node.shape);
        let id = *seen.entry(key).or_insert_with(|| ng.push_node(node, args));
        map[i] = Some(id);
    }
    let outputs = g
        .outputs()
        .iter()
        .map(|(n, id)| (n.clone(), map[id.index()].expect("output is live")))
        .collect();
    ng.set_outputs(outputs);
    ng
}
