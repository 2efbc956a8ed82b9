//! An op-by-op interpreter of graphs for engines with their own autograd (candle, libtorch).
//!
//! A backend implements [`EagerOps`] (one method per kind of work: run an op, make a leaf
//! that records history, detach, backward); [`EagerProgram`] plans and runs graphs on it.
//!
//! In [`GradMode::Native`], `Grad` nodes are grouped by the scalar they differentiate and
//! planned one of three ways:
//! - **leaf groups**: every `wrt` is a graph input. Those inputs become autograd leaves when
//!   the program starts, and one backward call answers the group (a training step).
//! - **recomputed groups**: some `wrt` is an intermediate value. The part of the graph between
//!   the `wrt`s and `of` is evaluated again from detached copies, and differentiated there.
//!   For `StopGradient(Grad(f(θ_t), θ_t))` in an unrolled optimizer this costs one extra
//!   forward of f instead of a backward pass through every earlier step (O(T) not O(T²)).
//! - **differentiated groups**: a `Grad` whose value flows, without `StopGradient`, into the
//!   scalar of another `Grad` needs a higher-order derivative. The core expands those
//!   symbolically before planning, so the engines only ever take first derivatives.

use crate::autodiff::{expand_grads, expand_grads_where, gradient_path};
use crate::backend::{check_inputs, BResult, GradMode};
use crate::graph::{BinaryOp, Graph, Node, NodeId, Op, UnaryOp};
use crate::tensor::{DType, HostTensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The primitive work an autograd engine does for [`EagerProgram`].
pub trait EagerOps {
    type T: Clone;
    fn constant(&self, t: &HostTensor) -> BResult<Self::T>;
    /// Runs one ordinary op (never `Input`, `Const`, `StopGradient` or `Grad`).
    fn apply(&self, node: &Node, args: &[&Self::T]) -> BResult<Self::T>;
    /// A leaf of the same value that records the history of what is computed from it.
    fn track(&self, t: &Self::T) -> BResult<Self::T>;
    /// The same value without history.
    fn detach(&self, t: &Self::T) -> BResult<Self::T>;
    /// Gradients of the scalar `of` with respect to tracked leaves; `None` where no path.
    fn grads(&self, of: &Self::T, wrt: &[&Self::T]) -> BResult<Vec<Option<Self::T>>>;
    fn zeros(&self, shape: &[usize]) -> BResult<Self::T>;
    fn shape_dtype(&self, t: &Self::T) -> (Vec<usize>, DType);
    /// Runs the elementwise `node` as [`apply`](Self::apply) does, but may write the result
    /// into the buffer of `args[into]`: a value of the node's shape that nothing else holds
    /// and nothing reads afterwards (see [`EagerProgram`]'s reuse plan). Engines with in-place
    /// ops override it to save an allocation and a pass over memory.
    fn apply_into(&self, node: &Node, args: &[&Self::T], into: usize) -> BResult<Self::T> {
        let _ = into;
        self.apply(node, args)
    }
    /// `a + alpha·x` (f32, one shape), for the graph's `a ± Affine(x)` where nothing else
    /// reads the affine map (an optimizer's update: `g + μv`, `θ − ηv`). The default runs the
    /// two ops; engines with a fused form override it.
    fn scaled_add(&self, a: &Self::T, x: &Self::T, alpha: f64) -> BResult<Self::T> {
        let (shape, dtype) = self.shape_dtype(a);
        let node = |op| Node { op, args: vec![], shape: shape.clone(), dtype };
        let scaled = self.apply(&node(Op::Affine { mul: alpha, add: 0.0 }), &[x])?;
        self.apply(&node(Op::Binary(BinaryOp::Add)), &[a, &scaled])
    }
    /// `g · 1[x > 0]` (f32, one shape), for the graph's `g · Step(x)` where nothing else reads
    /// the step: a ReLU's gradient. The default runs the two ops; engines with a fused form
    /// override it.
    fn gate_by_step(&self, g: &Self::T, x: &Self::T) -> BResult<Self::T> {
        let (shape, dtype) = self.shape_dtype(g);
        let node = |op| Node { op, args: vec![], shape: shape.clone(), dtype };
        let mask = self.apply(&node(Op::Unary(UnaryOp::Step)), &[x])?;
        self.apply(&node(Op::Binary(BinaryOp::Mul)), &[g, &mask])
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Node(usize),
    /// `a + alpha·x` at node `node`, in place of `a ± Affine(x)` (the affine node runs no step
    /// of its own).
    ScaledAdd {
        node: usize,
        a: NodeId,
        x: NodeId,
        alpha: f64,
    },
    /// `g · 1[x > 0]` at node `node`, in place of `g · Step(x)` (the step node runs no step
    /// of its own).
    Gated {
        node: usize,
        g: NodeId,
        x: NodeId,
    },
    LeafGrad(usize),
    RecomputedGrad(usize),
}

#[derive(Clone, Debug)]
struct GradGroup {
    of: NodeId,
    /// The group's distinct wrt nodes.
    wrt: Vec<NodeId>,
    /// (Grad node, index into `wrt`, or None where the gradient is zero by construction).
    answers: Vec<(NodeId, Option<usize>)>,
    /// For recomputed groups: nodes between wrt and `of`, in order, and the values they read.
    segment: Vec<NodeId>,
    boundary: Vec<NodeId>,
}

/// A planned graph; `T` is the engine's tensor type.
pub struct EagerProgram<T> {
    graph: Graph,
    steps: Vec<Step>,
    groups: Vec<GradGroup>,
    tracked_input: Vec<bool>,
    consts: HashMap<usize, T>,
    /// Values no later step reads, dropped after each step to bound memory.
    drop_after: Vec<Vec<usize>>,
    /// Per step: the argument whose buffer an elementwise op may write its result into.
    reuse: Vec<Option<usize>>,
}

impl<T: Clone> EagerProgram<T> {
    pub fn compile(g: &Graph, mode: GradMode) -> BResult<Self> {
        let graph = match mode {
            GradMode::Symbolic => expand_grads(g)?,
            GradMode::Native => {
                let differentiated = differentiated_grad_groups(g);
                if differentiated.is_empty() {
                    g.clone()
                } else {
                    expand_grads_where(g, |of| differentiated.contains(&of))?
                }
            }
        };
        let groups = plan_groups(&graph);
        let mut tracked_input = vec![false; graph.inputs().len()];
        let mut group_of_grad: HashMap<NodeId, usize> = HashMap::new();
        for (gi, grp) in groups.iter().enumerate() {
            for (gn, _) in &grp.answers {
                group_of_grad.insert(*gn, gi);
            }
            if grp.segment.is_empty() {
                for w in &grp.wrt {
                    let pos = graph
                        .inputs()
                        .iter()
                        .position(|i| i == w)
                        .expect("leaf group wrt is an input");
                    tracked_input[pos] = true;
                }
            }
        }
        let uses = use_counts(&graph, &groups);
        let scaled = plan_scaled_adds(&graph, &uses);
        let gated = plan_step_gates(&graph, &uses);
        let folded: HashSet<NodeId> =
            scaled.values().map(|s| s.2).chain(gated.values().map(|s| s.2)).collect();
        let mut steps = Vec::new();
        let mut planned_groups = HashSet::new();
        for (i, node) in graph.nodes().iter().enumerate() {
            if let Some(&(a, x, _, alpha)) = scaled.get(&i) {
                steps.push(Step::ScaledAdd { node: i, a, x, alpha });
                continue;
            }
            if let Some(&(g, x, _)) = gated.get(&i) {
                steps.push(Step::Gated { node: i, g, x });
                continue;
            }
            match node.op {
                Op::Input { .. } | Op::Const(_) => {}
                _ if folded.contains(&NodeId(i as u32)) => {}
                Op::Grad => {
                    let gi = group_of_grad[&NodeId(i as u32)];
                    if planned_groups.insert(gi) {
                        steps.push(if groups[gi].segment.is_empty() {
                            Step::LeafGrad(gi)
                        } else {
                            Step::RecomputedGrad(gi)
                        });
                    }
                }
                _ => steps.push(Step::Node(i)),
            }
        }
        let drop_after = plan_drops(&graph, &steps, &groups);
        let reuse = plan_reuse(&graph, &steps, &uses);
        Ok(Self { graph, steps, groups, tracked_input, consts: HashMap::new(), drop_after, reuse })
    }

    /// The graph this program runs (after any symbolic expansion).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn run<E: EagerOps<T = T>>(&mut self, e: &E, inputs: &[&T]) -> BResult<Vec<T>> {
        let shapes: Vec<(Vec<usize>, DType)> = inputs.iter().map(|t| e.shape_dtype(t)).collect();
        check_inputs(&self.graph, shapes.iter().map(|(s, d)| (s.as_slice(), *d)))?;
        let g = &self.graph;
        let mut vals: Vec<Option<T>> = vec![None; g.len()];
        for (pos, id) in g.inputs().iter().enumerate() {
            let t = inputs[pos];
            vals[id.index()] = Some(if self.tracked_input[pos] { e.track(t)? } else { t.clone() });
        }
        for (i, node) in g.nodes().iter().enumerate() {
            if let Op::Const(c) = &node.op {
                let t = match self.consts.get(&i) {
                    Some(t) => t.clone(),
                    None => {
                        let t = e.constant(c)?;
                        self.consts.insert(i, t.clone());
                        t
                    }
                };
                vals[i] = Some(t);
            }
        }
        let get = |vals: &[Option<T>], id: NodeId| -> T {
            vals[id.index()].clone().expect("value planned before use")
        };
        for (si, step) in self.steps.iter().enumerate() {
            match step {
                Step::Node(i) => {
                    let node = &g.nodes()[*i];
                    // The reused argument leaves `vals` first, so that nothing else holds it.
                    let dead = self.reuse[si].map(|k| {
                        let a = node.args[k].index();
                        (a, vals[a].take().expect("planned"))
                    });
                    let out = {
                        let args: Vec<&T> = node
                            .args
                            .iter()
                            .map(|a| match &dead {
                                Some((d, t)) if *d == a.index() => t,
                                _ => vals[a.index()].as_ref().expect("planned"),
                            })
                            .collect();
                        match self.reuse[si] {
                            _ if node.op == Op::StopGradient => e.detach(args[0])?,
                            Some(k) => e.apply_into(node, &args, k)?,
                            None => e.apply(node, &args)?,
                        }
                    };
                    vals[*i] = Some(out);
                }
                Step::ScaledAdd { node, a, x, alpha } => {
                    let read = |id: &NodeId| vals[id.index()].as_ref().expect("planned");
                    vals[*node] = Some(e.scaled_add(read(a), read(x), *alpha)?);
                }
                Step::Gated { node, g, x } => {
                    let read = |id: &NodeId| vals[id.index()].as_ref().expect("planned");
                    vals[*node] = Some(e.gate_by_step(read(g), read(x))?);
                }
                Step::LeafGrad(gi) => {
                    let grp = &self.groups[*gi];
                    let of = get(&vals, grp.of);
                    let wrt: Vec<T> = grp.wrt.iter().map(|w| get(&vals, *w)).collect();
                    let grads = e.grads(&of, &wrt.iter().collect::<Vec<_>>())?;
                    store_answers(e, g, grp, grads, &mut vals)?;
                }
                Step::RecomputedGrad(gi) => {
                    let grp = &self.groups[*gi];
                    let mut local: HashMap<NodeId, T> = HashMap::new();
                    for &b in &grp.boundary {
                        local.insert(b, e.detach(&get(&vals, b))?);
                    }
                    let mut leaves = Vec::with_capacity(grp.wrt.len());
                    for &w in &grp.wrt {
                        let leaf = e.track(&e.detach(&get(&vals, w))?)?;
                        local.insert(w, leaf.clone());
                        leaves.push(leaf);
                    }
                    for &s in &grp.segment {
                        let node = g.node(s);
                        let out = {
                            let args: Vec<&T> = node.args.iter().map(|a| &local[a]).collect();
                            e.apply(node, &args)?
                        };
                        local.insert(s, out);
                    }
                    let grads = match local.get(&grp.of) {
                        Some(of) => e.grads(of, &leaves.iter().collect::<Vec<_>>())?,
                        None => vec![None; leaves.len()],
                    };
                    store_answers(e, g, grp, grads, &mut vals)?;
                }
            }
            for &d in &self.drop_after[si] {
                vals[d] = None;
            }
        }
        let tracked = !self.groups.is_empty();
        g.outputs()
            .iter()
            .map(|(_, id)| {
                let v = get(&vals, *id);
                if tracked {
                    e.detach(&v)
                } else {
                    Ok(v)
                }
            })
            .collect()
    }
}

fn store_answers<E: EagerOps>(
    e: &E,
    g: &Graph,
    grp: &GradGroup,
    grads: Vec<Option<E::T>>,
    vals: &mut [Option<E::T>],
) -> BResult<()> {
    for &(gn, wi) in &grp.answers {
        let v = match wi.and_then(|w| grads[w].clone()) {
            Some(t) => t,
            None => e.zeros(g.shape(gn))?,
        };
        vals[gn.index()] = Some(v);
    }
    Ok(())
}

/// The `of` nodes of Grad groups whose value is differentiated by another Grad.
fn differentiated_grad_groups(g: &Graph) -> HashSet<NodeId> {
    let ofs: BTreeMap<NodeId, ()> =
        g.nodes().iter().filter(|n| n.op == Op::Grad).map(|n| (n.args[0], ())).collect();
    let mut found = HashSet::new();
    for &of in ofs.keys() {
        let mut seen = vec![false; of.index() + 1];
        let mut stack = vec![of];
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id.index()], true) {
                continue;
            }
            let node = g.node(id);
            match node.op {
                Op::StopGradient => continue,
                Op::Grad => {
                    found.insert(node.args[0]);
                }
                _ => {}
            }
            stack.extend(node.args.iter().copied());
        }
    }
    found
}

fn plan_groups(g: &Graph) -> Vec<GradGroup> {
    let mut by_of: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for (i, n) in g.nodes().iter().enumerate() {
        if n.op == Op::Grad {
            by_of.entry(n.args[0]).or_default().push(NodeId(i as u32));
        }
    }
    let is_input = |id: NodeId| matches!(g.node(id).op, Op::Input { .. });
    by_of
        .into_iter()
        .map(|(of, grad_nodes)| {
            let first = grad_nodes[0];
            let mut wrt: Vec<NodeId> =
                grad_nodes.iter().map(|gn| g.node(*gn).args[1]).filter(|w| *w < first).collect();
            wrt.sort_unstable();
            wrt.dedup();
            let answers = grad_nodes
                .iter()
                .map(|gn| (*gn, wrt.iter().position(|w| *w == g.node(*gn).args[1])))
                .collect();
            let (segment, boundary) = if wrt.iter().all(|w| is_input(*w)) {
                (vec![], vec![])
            } else {
                segment_between(g, &wrt, of)
            };
            GradGroup { of, wrt, answers, segment, boundary }
        })
        .collect()
}

/// Nodes through which a derivative flows from `wrt` to `of`, and the other values they read.
fn segment_between(g: &Graph, wrt: &[NodeId], of: NodeId) -> (Vec<NodeId>, Vec<NodeId>) {
    let path = gradient_path(g, wrt, of);
    let segment: Vec<NodeId> = (0..path.len())
        .filter(|&i| path[i] && !wrt.contains(&NodeId(i as u32)))
        .map(|i| NodeId(i as u32))
        .collect();
    let inside: HashSet<NodeId> = segment.iter().chain(wrt).copied().collect();
    let mut boundary: Vec<NodeId> = segment
        .iter()
        .flat_map(|s| g.node(*s).args.iter().copied())
        .filter(|a| !inside.contains(a))
        .collect();
    boundary.sort_unstable();
    boundary.dedup();
    (segment, boundary)
}

/// How many times each value is read: by nodes, by gradient groups, as an output.
fn use_counts(g: &Graph, groups: &[GradGroup]) -> Vec<usize> {
    let mut uses = vec![0usize; g.len()];
    for n in g.nodes() {
        for a in &n.args {
            uses[a.index()] += 1;
        }
    }
    for grp in groups {
        for r in std::iter::once(&grp.of).chain(&grp.wrt).chain(&grp.boundary) {
            uses[r.index()] += 1;
        }
    }
    for (_, id) in g.outputs() {
        uses[id.index()] += 1;
    }
    uses
}

/// The nodes `a + Affine(x)`, `Affine(x) + a` and `a − Affine(x)` (f32, the affine map a
/// scaling read by that node alone) that run as `a + alpha·x`: node → (a, x, the affine
/// node, alpha).
fn plan_scaled_adds(g: &Graph, uses: &[usize]) -> HashMap<usize, (NodeId, NodeId, NodeId, f64)> {
    let scaling = |id: NodeId| match g.node(id).op {
        Op::Affine { mul, add } if add == 0.0 && uses[id.index()] == 1 => Some(mul),
        _ => None,
    };
    g.nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.dtype == DType::F32)
        .filter_map(|(i, n)| {
            let (l, r) = match n.args[..] {
                [l, r] => (l, r),
                _ => return None,
            };
            let found = match n.op {
                Op::Binary(BinaryOp::Add) => match (scaling(r), scaling(l)) {
                    (Some(m), _) => Some((l, r, m)),
                    (None, Some(m)) => Some((r, l, m)),
                    _ => None,
                },
                Op::Binary(BinaryOp::Sub) => scaling(r).map(|m| (l, r, -m)),
                _ => None,
            };
            found.map(|(a, affine, alpha)| (i, (a, g.node(affine).args[0], affine, alpha)))
        })
        .collect()
}

/// The nodes `g · Step(x)` and `Step(x) · g` (the step read by that node alone) that run as
/// one gate: node → (g, x, the step node).
fn plan_step_gates(g: &Graph, uses: &[usize]) -> HashMap<usize, (NodeId, NodeId, NodeId)> {
    let step_of = |id: NodeId| match g.node(id).op {
        Op::Unary(UnaryOp::Step) if uses[id.index()] == 1 => Some(g.node(id).args[0]),
        _ => None,
    };
    g.nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op == Op::Binary(BinaryOp::Mul))
        .filter_map(|(i, n)| {
            let [l, r] = n.args[..] else { return None };
            match (step_of(r), step_of(l)) {
                (Some(x), _) => Some((i, (l, x, r))),
                (None, Some(x)) => Some((i, (r, x, l))),
                _ => None,
            }
        })
        .collect()
}

/// For each step, the argument (by position) whose buffer the step's elementwise op may write
/// its result into, if any: an f32 value of the op's shape, made by an op that returns a new
/// buffer (never a view, an input or a constant), read by this op alone (so no view of it and
/// no gradient group holds it) and not an output.
fn plan_reuse(g: &Graph, steps: &[Step], uses: &[usize]) -> Vec<Option<usize>> {
    let elementwise =
        |op: &Op| matches!(op, Op::Unary(_) | Op::Affine { .. } | Op::Binary(_) | Op::Clamp { .. });
    let new_buffer = |op: &Op| match op {
        Op::Affine { mul, add } => *mul != 1.0 || *add != 0.0,
        op => elementwise(op) || matches!(op, Op::MatMul { .. } | Op::Linear),
    };
    steps
        .iter()
        .map(|step| {
            let Step::Node(i) = step else { return None };
            let node = &g.nodes()[*i];
            if !elementwise(&node.op) || node.dtype != DType::F32 {
                return None;
            }
            node.args.iter().position(|a| {
                let arg = g.node(*a);
                uses[a.index()] == 1
                    && new_buffer(&arg.op)
                    && arg.shape == node.shape
                    && arg.dtype == DType::F32
            })
        })
        .collect()
}

/// For each step, the values no later step (nor the outputs) reads.
fn plan_drops(g: &Graph, steps: &[Step], groups: &[GradGroup]) -> Vec<Vec<usize>> {
    let mut last_use: HashMap<usize, usize> = HashMap::new();
    for (si, step) in steps.iter().enumerate() {
        let reads: Vec<NodeId> = match step {
            Step::Node(i) => g.nodes()[*i].args.clone(),
            Step::ScaledAdd { a, x, .. } => vec![*a, *x],
            Step::Gated { g: gate, x, .. } => vec![*gate, *x],
            Step::LeafGrad(gi) => {
                std::iter::once(groups[*gi].of).chain(groups[*gi].wrt.iter().copied()).collect()
            }
            Step::RecomputedGrad(gi) => {
                groups[*gi].boundary.iter().chain(&groups[*gi].wrt).copied().collect()
            }
        };
        for r in reads {
            last_use.insert(r.index(), si);
        }
    }
    for (_, id) in g.outputs() {
        last_use.remove(&id.index());
    }
    let mut drops = vec![Vec::new(); steps.len()];
    for (node, si) in last_use {
        if !matches!(g.nodes()[node].op, Op::Const(_)) {
            drops[si].push(node);
        }
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps that may write into an argument: (node, argument position).
    fn reused(p: &EagerProgram<()>) -> Vec<(usize, usize)> {
        p.steps
            .iter()
            .zip(&p.reuse)
            .filter_map(|(s, r)| match (s, r) {
                (Step::Node(i), Some(k)) => Some((*i, *k)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_dead_new_buffers_are_written_into() {
        let mut g = Graph::new();
        let x = g.input("x", &[4], DType::F32);
        let y = g.input("y", &[4], DType::F32);
        let a = g.affine(x, 2.0, 1.0).unwrap(); // reads an input: allocates
        let b = g.add(y, a).unwrap(); // a: a new buffer read once: into it
        let c = g.reshape(b, &[2, 2]).unwrap(); // not elementwise
        let d = g.relu(c).unwrap(); // c is a view of b: allocates
        let e = g.mul(d, d).unwrap(); // d is read twice: allocates
        let f = g.unary(UnaryOp::Exp, e).unwrap(); // e: into it
        let h = g.unary(UnaryOp::Neg, f).unwrap(); // f is an output: allocates
        g.output("f", f);
        g.output("h", h);
        let p = EagerProgram::<()>::compile(&g, GradMode::Symbolic).unwrap();
        assert_eq!(reused(&p), vec![(b.index(), 1), (f.index(), 0)]);
    }

    #[test]
    fn an_update_runs_as_scaled_adds() {
        // Momentum: v' = μv + g, θ' = θ − ηv'.
        let mut g = Graph::new();
        let theta = g.input("theta", &[4], DType::F32);
        let v = g.input("v", &[4], DType::F32);
        let grad = g.input("g", &[4], DType::F32);
        let scaled_v = g.affine(v, 0.9, 0.0).unwrap();
        let v_next = g.add(scaled_v, grad).unwrap();
        let step = g.affine(v_next, 0.01, 0.0).unwrap();
        let theta_next = g.sub(theta, step).unwrap();
        // Read twice: not folded.
        let doubled = g.affine(theta, 2.0, 0.0).unwrap();
        let both = g.add(doubled, doubled).unwrap();
        g.output("v", v_next);
        g.output("theta", theta_next);
        g.output("both", both);
        let p = EagerProgram::<()>::compile(&g, GradMode::Symbolic).unwrap();
        assert_eq!(
            p.steps,
            vec![
                Step::ScaledAdd { node: v_next.index(), a: grad, x: v, alpha: 0.9 },
                Step::ScaledAdd { node: theta_next.index(), a: theta, x: v_next, alpha: -0.01 },
                Step::Node(doubled.index()),
                Step::Node(both.index()),
            ]
        );
    }

    #[test]
    fn a_relu_gradient_runs_as_one_gate() {
        let mut g = Graph::new();
        let x = g.input("x", &[4], DType::F32);
        let dy = g.input("dy", &[4], DType::F32);
        let mask = g.unary(UnaryOp::Step, x).unwrap();
        let dx = g.mul(mask, dy).unwrap();
        // A step read twice runs as itself.
        let shared = g.unary(UnaryOp::Step, dy).unwrap();
        let twice = g.mul(x, shared).unwrap();
        g.output("dx", dx);
        g.output("twice", twice);
        g.output("shared", shared);
        let p = EagerProgram::<()>::compile(&g, GradMode::Symbolic).unwrap();
        assert_eq!(
            p.steps,
            vec![
                Step::Gated { node: dx.index(), g: dy, x },
                Step::Node(shared.index()),
                Step::Node(twice.index()),
            ]
        );
    }
}
