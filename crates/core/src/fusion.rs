//! Elementwise fusion: groups of elementwise nodes over the same number of elements that a
//! backend runs as one kernel, one pass over the data in cache-sized blocks, instead of one
//! pass over memory and one dispatch per op. A learned optimizer's unroll is ~3,000 small ops,
//! most of them elementwise over an LSTM's [20, 1280] state; per-op cost and memory traffic,
//! not arithmetic, bound it.
//!
//! [`plan`] picks the groups (and what each recomputes rather than reads); [`Kernel`] is a
//! group's program, which [`Kernel::run`] evaluates and [`Kernel::encode`] turns into integers
//! and floats a backend can carry as attributes. ONNX Runtime's CPU backend runs them.

use crate::graph::{BinaryOp, CmpOp, Graph, NodeId, Op, UnaryOp};
use crate::tensor::{numel, DType};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// One step of a kernel. Operands are registers: the kernel's inputs first, then the result
/// of each earlier instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Instr {
    Unary(UnaryOp, u32),
    Affine { x: u32, mul: f32, add: f32 },
    Clamp { x: u32, min: f32, max: f32 },
    Binary(BinaryOp, u32, u32),
    Compare(CmpOp, u32, u32),
}

const UNARY: [UnaryOp; 11] = [
    UnaryOp::Neg,
    UnaryOp::Relu,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Abs,
    UnaryOp::Sign,
    UnaryOp::Square,
    UnaryOp::Step,
];
const BINARY: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
const COMPARE: [CmpOp; 3] = [CmpOp::Eq, CmpOp::Ge, CmpOp::Gt];
const AFFINE: i64 = 20;
const CLAMP: i64 = 21;
const BINARY_BASE: i64 = 30;
const COMPARE_BASE: i64 = 40;

fn position<T: PartialEq>(all: &[T], x: &T) -> i64 {
    all.iter().position(|y| y == x).expect("every variant is listed") as i64
}

impl Instr {
    /// The first operand, and the second where there is one.
    fn operands(&self) -> (u32, Option<u32>) {
        match *self {
            Instr::Unary(_, x) | Instr::Affine { x, .. } | Instr::Clamp { x, .. } => (x, None),
            Instr::Binary(_, a, b) | Instr::Compare(_, a, b) => (a, Some(b)),
        }
    }

    /// [opcode, operand, operand] and two constants.
    fn encode(&self) -> ([i64; 3], [f32; 2]) {
        match *self {
            Instr::Unary(u, x) => ([position(&UNARY, &u), x as i64, 0], [0.0; 2]),
            Instr::Affine { x, mul, add } => ([AFFINE, x as i64, 0], [mul, add]),
            Instr::Clamp { x, min, max } => ([CLAMP, x as i64, 0], [min, max]),
            Instr::Binary(op, a, b) => {
                ([BINARY_BASE + position(&BINARY, &op), a as i64, b as i64], [0.0; 2])
            }
            Instr::Compare(op, a, b) => {
                ([COMPARE_BASE + position(&COMPARE, &op), a as i64, b as i64], [0.0; 2])
            }
        }
    }

    fn decode(code: [i64; 3], c: [f32; 2]) -> Option<Instr> {
        let reg = |v: i64| u32::try_from(v).ok();
        let (a, b) = (reg(code[1])?, reg(code[2])?);
        let pick = |base: i64, n: usize| usize::try_from(code[0] - base).ok().filter(|&i| i < n);
        Some(match code[0] {
            AFFINE => Instr::Affine { x: a, mul: c[0], add: c[1] },
            CLAMP => Instr::Clamp { x: a, min: c[0], max: c[1] },
            op if op >= COMPARE_BASE => Instr::Compare(COMPARE[pick(COMPARE_BASE, 3)?], a, b),
            op if op >= BINARY_BASE => Instr::Binary(BINARY[pick(BINARY_BASE, 4)?], a, b),
            _ => Instr::Unary(UNARY[pick(0, UNARY.len())?], a),
        })
    }
}

/// A fused group's program: `inputs` registers, then one per instruction; `outputs` name the
/// registers written out. Every input holds either as many elements as the outputs or one,
/// which is broadcast.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    inputs: usize,
    instrs: Vec<Instr>,
    outputs: Vec<u32>,
    /// The scratch slot of each instruction's result (results that are no longer read give
    /// their slot to later ones, so a block's working set stays in L1).
    slots: Vec<usize>,
    slot_count: usize,
}

/// Why encoded integers and floats are not a kernel.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("not a fused kernel: {0}")]
pub struct DecodeError(&'static str);

impl Kernel {
    /// A kernel; every operand must name an input or an earlier instruction.
    pub fn new(inputs: usize, instrs: Vec<Instr>, outputs: Vec<u32>) -> Result<Self, DecodeError> {
        let valid = |r: u32, limit: usize| (r as usize) < limit;
        for (i, ins) in instrs.iter().enumerate() {
            let (a, b) = ins.operands();
            if !std::iter::once(a).chain(b).all(|r| valid(r, inputs + i)) {
                return Err(DecodeError("an operand names a later register"));
            }
        }
        if outputs.is_empty() || !outputs.iter().all(|&r| valid(r, inputs + instrs.len())) {
            return Err(DecodeError("an output names no register"));
        }
        // Last read of each register; outputs are read at the end.
        let mut last = vec![0usize; inputs + instrs.len()];
        for (i, ins) in instrs.iter().enumerate() {
            let (a, b) = ins.operands();
            for r in std::iter::once(a).chain(b) {
                last[r as usize] = i;
            }
        }
        for &r in &outputs {
            last[r as usize] = usize::MAX;
        }
        let mut free: Vec<usize> = Vec::new();
        let mut slot_count = 0;
        let mut slots = Vec::with_capacity(instrs.len());
        let mut release: Vec<Vec<usize>> = vec![Vec::new(); instrs.len()];
        for i in 0..instrs.len() {
            // The result's slot differs from its operands' (they are freed after it is taken).
            let s = free.pop().unwrap_or_else(|| {
                slot_count += 1;
                slot_count - 1
            });
            slots.push(s);
            match last[inputs + i] {
                usize::MAX => {}
                l if l > i => release[l].push(s),
                // Never read: free at once.
                _ => free.push(s),
            }
            free.append(&mut release[i]);
        }
        Ok(Self { inputs, instrs, outputs, slots, slot_count })
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs.len()
    }

    /// The kernel as integers ([inputs, outputs, output registers…, then opcode and two
    /// operands per instruction]) and floats (two constants per instruction), for a backend
    /// to carry as node attributes.
    pub fn encode(&self) -> (Vec<i64>, Vec<f32>) {
        let mut code = vec![self.inputs as i64, self.outputs.len() as i64];
        code.extend(self.outputs.iter().map(|&r| r as i64));
        let mut consts = Vec::with_capacity(2 * self.instrs.len());
        for ins in &self.instrs {
            let (c, f) = ins.encode();
            code.extend(c);
            consts.extend(f);
        }
        (code, consts)
    }

    pub fn decode(code: &[i64], consts: &[f32]) -> Result<Self, DecodeError> {
        let count = |v: Option<&i64>| v.and_then(|&v| usize::try_from(v).ok());
        let inputs = count(code.first()).ok_or(DecodeError("no input count"))?;
        let outputs = count(code.get(1)).ok_or(DecodeError("no output count"))?;
        let outs = code.get(2..2 + outputs).ok_or(DecodeError("too few outputs"))?;
        let outs = outs.iter().map(|&r| u32::try_from(r)).collect::<Result<_, _>>();
        let outs = outs.map_err(|_| DecodeError("a negative output register"))?;
        let body = &code[2 + outputs..];
        if !body.len().is_multiple_of(3) || consts.len() != 2 * (body.len() / 3) {
            return Err(DecodeError("instructions and constants do not match"));
        }
        let instrs = body
            .chunks(3)
            .zip(consts.chunks(2))
            .map(|(c, f)| Instr::decode([c[0], c[1], c[2]], [f[0], f[1]]))
            .collect::<Option<Vec<_>>>()
            .ok_or(DecodeError("an unknown opcode or register"))?;
        Self::new(inputs, instrs, outs)
    }

    /// Evaluates the kernel: each output gets as many elements as `outputs[0]` holds, and
    /// each input holds that many or one (broadcast).
    pub fn run(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        assert_eq!(inputs.len(), self.inputs, "kernel inputs");
        assert_eq!(outputs.len(), self.outputs.len(), "kernel outputs");
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx512f") && has!("fma") {
                // SAFETY: the CPU has the features `run_avx512` is compiled for.
                return unsafe { self.run_avx512(inputs, outputs) };
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: the CPU has the features `run_avx2` is compiled for.
                return unsafe { self.run_avx2(inputs, outputs) };
            }
        }
        self.run_blocks(inputs, outputs)
    }

    /// The same loops compiled for 16-wide vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run_avx512(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        self.run_blocks(inputs, outputs)
    }

    /// The same loops compiled for 8-wide vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        self.run_blocks(inputs, outputs)
    }

    #[inline(always)]
    fn run_blocks(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let len = outputs[0].len();
        assert!(outputs.iter().all(|o| o.len() == len), "outputs of one length");
        assert!(inputs.iter().all(|i| i.len() == len || i.len() == 1), "inputs of {len} or 1");
        let mut scratch = vec![0.0f32; self.slot_count * BLOCK];
        // Broadcast inputs, filled once.
        let mut wide = vec![0.0f32; inputs.len() * BLOCK];
        for (k, x) in inputs.iter().enumerate() {
            if x.len() == 1 && len != 1 {
                wide[k * BLOCK..(k + 1) * BLOCK].fill(x[0]);
            }
        }
        let mut start = 0;
        while start < len {
            let n = BLOCK.min(len - start);
            let base = scratch.as_mut_ptr();
            // Where register `r`'s `n` elements of this block are: an input from `start`
            // (inputs are `len` long), a broadcast block or a scratch slot.
            let reg = |r: u32| -> *const f32 {
                let r = r as usize;
                match inputs.get(r) {
                    Some(x) if x.len() == len => x[start..].as_ptr(),
                    Some(_) => wide[r * BLOCK..].as_ptr(),
                    // SAFETY: slots lie within `scratch`, which has `slot_count` blocks.
                    None => unsafe { base.add(self.slots[r - self.inputs] * BLOCK) },
                }
            };
            for (i, ins) in self.instrs.iter().enumerate() {
                // SAFETY: every register holds `n` elements, and the result's slot is none of
                // its operands' (the slot assignment keeps them apart), so `out` aliases
                // nothing that is read.
                unsafe {
                    let out = std::slice::from_raw_parts_mut(base.add(self.slots[i] * BLOCK), n);
                    let (a, b) = ins.operands();
                    let a = std::slice::from_raw_parts(reg(a), n);
                    let b = b.map(|b| std::slice::from_raw_parts(reg(b), n));
                    apply(ins, a, b, out);
                }
            }
            for (o, &r) in outputs.iter_mut().zip(&self.outputs) {
                // SAFETY: as above; outputs are separate buffers.
                let v = unsafe { std::slice::from_raw_parts(reg(r), n) };
                o[start..start + n].copy_from_slice(v);
            }
            start += n;
        }
    }
}

/// Elements per block: a kernel's live results for one block fit in L1.
const BLOCK: usize = 256;

#[inline(always)]
fn map1(out: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[inline(always)]
fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[inline(always)]
fn apply(ins: &Instr, a: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    match *ins {
        Instr::Unary(u, _) => match u {
            UnaryOp::Neg => map1(out, a, |x| -x),
            UnaryOp::Relu => map1(out, a, |x| x.max(0.0)),
            UnaryOp::Sigmoid => map1(out, a, |x| 0.5 + 0.5 * tanh(0.5 * x)),
            UnaryOp::Tanh => map1(out, a, tanh),
            UnaryOp::Exp => map1(out, a, f32::exp),
            UnaryOp::Log => map1(out, a, f32::ln),
            UnaryOp::Sqrt => map1(out, a, f32::sqrt),
            UnaryOp::Abs => map1(out, a, f32::abs),
            UnaryOp::Sign => map1(out, a, |x| ((x > 0.0) as u8 as f32) - ((x < 0.0) as u8 as f32)),
            UnaryOp::Square => map1(out, a, |x| x * x),
            UnaryOp::Step => map1(out, a, |x| (x > 0.0) as u8 as f32),
        },
        Instr::Affine { mul, add, .. } => map1(out, a, |x| x * mul + add),
        Instr::Clamp { min, max, .. } => map1(out, a, |x| x.max(min).min(max)),
        Instr::Binary(op, ..) => {
            let b = b.expect("binary ops have two operands");
            match op {
                BinaryOp::Add => map2(out, a, b, |x, y| x + y),
                BinaryOp::Sub => map2(out, a, b, |x, y| x - y),
                BinaryOp::Mul => map2(out, a, b, |x, y| x * y),
                BinaryOp::Div => map2(out, a, b, |x, y| x / y),
            }
        }
        Instr::Compare(op, ..) => {
            let b = b.expect("comparisons have two operands");
            match op {
                CmpOp::Eq => map2(out, a, b, |x, y| (x == y) as u8 as f32),
                CmpOp::Ge => map2(out, a, b, |x, y| (x >= y) as u8 as f32),
                CmpOp::Gt => map2(out, a, b, |x, y| (x > y) as u8 as f32),
            }
        }
    }
}

/// tanh as a rational function (Eigen's and ONNX Runtime's MLAS single-precision
/// coefficients), branch-free so that it vectorizes; within 4e-7 of tanh (3 ulp of 1).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    for c in
        [2.000_188e-13, -8.604_672e-11, 5.122_297e-8, 1.485_722_4e-5, 6.372_619e-4, 4.893_524_6e-3]
    {
        p = p.mul_add(x2, c);
    }
    let mut q = 1.198_258_4e-6f32;
    for c in [1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3] {
        q = q.mul_add(x2, c);
    }
    x * p / q
}

/// Groups of a graph's elementwise nodes, each run as one [`Kernel`].
pub struct Fusion {
    pub groups: Vec<Group>,
    /// The group that computes each node, or writes it (a concatenation it writes in place).
    group_of: Vec<Option<usize>>,
    /// Nodes nothing runs on their own: values every reader recomputes, slices every reader
    /// reads in place, concatenations a group writes in place.
    absorbed: Vec<bool>,
}

/// A fused group: its members in graph order (reshapes and `StopGradient`s among them cost
/// nothing); the nodes its kernel reads, in order, each from an element offset (a slice read
/// in place is its source from the slice's start); and what it writes, in order: its members
/// read outside it or by the graph's outputs, then concatenations of its members. Its kernel
/// may also compute cheap values of other groups again instead of reading them.
pub struct Group {
    pub members: Vec<NodeId>,
    pub inputs: Vec<NodeId>,
    pub offsets: Vec<usize>,
    pub outputs: Vec<NodeId>,
    pub kernel: Kernel,
}

/// What a backend emits, in a valid order: a node of its own, or a fused group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Node(NodeId),
    Group(usize),
}

/// Ops that cost many times a product: their results are worth reading back rather than
/// computing again.
fn costly(u: UnaryOp) -> bool {
    matches!(u, UnaryOp::Sigmoid | UnaryOp::Tanh | UnaryOp::Exp | UnaryOp::Log | UnaryOp::Sqrt)
}

fn computes(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_) | Op::Affine { .. } | Op::Clamp { .. } | Op::Binary(_) | Op::Compare(_)
    )
}

fn aliases(op: &Op) -> bool {
    matches!(op, Op::Reshape | Op::StopGradient)
}

/// Groups the `needed` elementwise f32 nodes of `g`. `reads` says which nodes a node's
/// lowering reads, in argument order (a backend may read a broadcast's source instead of the
/// broadcast); a group's kernel reads the same ones, where they hold as many elements as the
/// node or one. A group joins nodes of one element count and never depends on itself through
/// nodes outside it; groups of a single instruction are left as plain nodes.
pub fn plan(g: &Graph, needed: &[bool], reads: impl Fn(NodeId) -> Vec<NodeId>) -> Fusion {
    let n = g.len();
    let mut group_of: Vec<Option<usize>> = vec![None; n];
    let mut members: Vec<Vec<NodeId>> = Vec::new();
    for i in 0..n {
        let id = NodeId::from_index(i);
        let node = g.node(id);
        if !needed[i] || node.dtype != DType::F32 {
            continue;
        }
        let size = numel(&node.shape);
        let args = reads(id);
        let fits =
            |a: &NodeId| g.dtype(*a) == DType::F32 && [1, size].contains(&numel(g.shape(*a)));
        let seen_in: Vec<usize> = if computes(&node.op) && args.iter().all(fits) {
            args.iter().filter_map(|a| group_of[a.index()]).collect()
        } else if aliases(&node.op) {
            group_of[node.args[0].index()].into_iter().collect()
        } else {
            continue;
        };
        let mut candidates: Vec<usize> = Vec::new();
        for c in seen_in {
            if numel(g.shape(members[c][0])) == size && !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        // Join all the groups the node reads into one with it, or else the first it can join
        // alone, or else start a group.
        let joined = merge(&mut group_of, &mut members, &candidates, id, &reads).or_else(|| {
            candidates.iter().copied().find(|&c| {
                join(&mut group_of, &mut members, &[c], id);
                let cycle = depends_outside(&group_of, &members, c, &reads);
                if cycle {
                    leave(&mut group_of, &mut members, c, id);
                }
                !cycle
            })
        });
        if joined.is_none() && computes(&node.op) {
            group_of[i] = Some(members.len());
            members.push(vec![id]);
        }
    }
    // Groups worth a kernel: two instructions or more (merged groups are left empty).
    let mut renumber: Vec<Option<usize>> = vec![None; members.len()];
    let mut kept = Vec::new();
    for (c, m) in members.into_iter().enumerate() {
        if m.iter().filter(|&&x| computes(&g.node(x).op)).count() >= 2 {
            renumber[c] = Some(kept.len());
            kept.push(m);
        }
    }
    let group_of: Vec<Option<usize>> =
        group_of.iter().map(|c| c.and_then(|c| renumber[c])).collect();
    // Each group also recomputes the cheap values it would read from another group of its
    // size, from operands it reads anyway or from that group's costly values: computing
    // σ(1 - σ) again from σ costs less than writing it out in the forward pass and reading it
    // back in the backward pass.
    let computed: Vec<Vec<NodeId>> = kept
        .iter()
        .map(|own| {
            let size = numel(g.shape(own[0]));
            let mut all: Vec<NodeId> = own.clone();
            loop {
                let mut inputs: Vec<NodeId> = all.iter().flat_map(|&m| reads(m)).collect();
                inputs.retain(|a| !all.contains(a));
                let cone = inputs.iter().find_map(|&x| {
                    let from = group_of[x.index()]?;
                    let cheap = |y: NodeId| {
                        group_of[y.index()] == Some(from)
                            && numel(g.shape(y)) == size
                            && !matches!(g.node(y).op, Op::Unary(u) if costly(u))
                    };
                    let leaf = |y: NodeId| {
                        all.contains(&y)
                            || inputs.contains(&y)
                            || numel(g.shape(y)) == 1
                            || group_of[y.index()] == Some(from)
                    };
                    let mut cone = Vec::new();
                    let mut stack = vec![x];
                    while let Some(y) = stack.pop() {
                        if cone.contains(&y) {
                            continue;
                        }
                        if !cheap(y) {
                            if leaf(y) {
                                continue;
                            }
                            return None;
                        }
                        cone.push(y);
                        stack.extend(reads(y));
                    }
                    (!cone.is_empty()).then_some(cone)
                });
                match cone {
                    Some(cone) => all.extend(cone),
                    None => break,
                }
            }
            all.sort();
            all
        })
        .collect();
    // A concatenation of a group's own values along a contiguous axis is written in place by
    // the group (an LSTM's four gate gradients), instead of each value being written out and
    // copied again.
    let mut concats: Vec<Vec<NodeId>> = vec![Vec::new(); kept.len()];
    let mut absorbed = vec![false; n];
    for i in (0..n).filter(|&i| needed[i] && group_of[i].is_none()) {
        let id = NodeId::from_index(i);
        let node = g.node(id);
        let Op::Concat { axis } = node.op else { continue };
        let Some(c) = group_of[node.args[0].index()] else { continue };
        let size = numel(g.shape(kept[c][0]));
        let own = |a: &NodeId| kept[c].binary_search(a).is_ok() && numel(g.shape(*a)) == size;
        if contiguous(&node.shape, axis) && node.args.iter().all(own) {
            concats[c].push(id);
            absorbed[i] = true;
        }
    }
    // Who reads each member from outside the groups that compute it (a group reading a slice
    // in place reads the slice's source).
    let mut graph_output = vec![false; n];
    for (_, id) in g.outputs() {
        graph_output[id.index()] = true;
    }
    let mut read_outside = graph_output.clone();
    let mut plain_read = vec![false; n];
    for i in (0..n).filter(|&i| needed[i] && group_of[i].is_none() && !absorbed[i]) {
        for a in reads(NodeId::from_index(i)) {
            read_outside[a.index()] = true;
            plain_read[a.index()] = true;
        }
    }
    for nodes in &computed {
        for &m in nodes {
            for a in reads(m) {
                if nodes.binary_search(&a).is_err() {
                    let (source, _) = view(g, a);
                    read_outside[source.index()] = true;
                }
            }
        }
    }
    // Slices that only groups read, in place, are never made.
    for i in 0..n {
        let a = NodeId::from_index(i);
        if needed[i] && view(g, a).0 != a && !plain_read[i] && !graph_output[i] {
            absorbed[i] = true;
        }
    }
    // A group whose every value is recomputed where it is read is not run at all.
    let mut groups = Vec::new();
    let mut renumber: Vec<Option<usize>> = vec![None; kept.len()];
    for (c, ((own, nodes), cats)) in kept.into_iter().zip(computed).zip(concats).enumerate() {
        if own.iter().any(|m| read_outside[m.index()]) || !cats.is_empty() {
            renumber[c] = Some(groups.len());
            groups.push(build_group(g, own, nodes, cats, &read_outside, &reads));
        } else {
            own.iter().for_each(|m| absorbed[m.index()] = true);
        }
    }
    let mut group_of: Vec<Option<usize>> =
        group_of.iter().map(|c| c.and_then(|c| renumber[c])).collect();
    for (c, group) in groups.iter().enumerate() {
        for &out in &group.outputs {
            group_of[out.index()] = Some(c);
        }
    }
    Fusion { groups, group_of, absorbed }
}

/// Whether a slice or concatenation along `axis` of a tensor of `shape` is one contiguous
/// range per part: every axis before it has one element.
fn contiguous(shape: &[usize], axis: usize) -> bool {
    shape[..axis].iter().all(|&d| d == 1)
}

/// What reading `a` reads: a slice that is one contiguous range of its source (through
/// slices of slices) is its source from an element offset; anything else is itself from 0.
fn view(g: &Graph, a: NodeId) -> (NodeId, usize) {
    match g.node(a).op {
        Op::Slice { axis, start, .. } => {
            let source = g.node(a).args[0];
            let shape = g.shape(source);
            if !contiguous(shape, axis) {
                return (a, 0);
            }
            let (root, offset) = view(g, source);
            (root, offset + start * numel(&shape[axis + 1..]))
        }
        _ => (a, 0),
    }
}

/// Puts `id` and the members of all `groups` into the first of them, keeping graph order.
fn join(group_of: &mut [Option<usize>], members: &mut [Vec<NodeId>], groups: &[usize], id: NodeId) {
    let c = groups[0];
    for &d in &groups[1..] {
        let moved = std::mem::take(&mut members[d]);
        for m in &moved {
            group_of[m.index()] = Some(c);
        }
        members[c].extend(moved);
    }
    members[c].push(id);
    members[c].sort();
    group_of[id.index()] = Some(c);
}

/// Takes `id` out of group `c` again.
fn leave(group_of: &mut [Option<usize>], members: &mut [Vec<NodeId>], c: usize, id: NodeId) {
    members[c].retain(|&m| m != id);
    group_of[id.index()] = None;
}

/// Merges `groups` (two or more) and `id` into one group, unless that group would depend on
/// itself; the merged group's number, or `None` with nothing changed.
fn merge(
    group_of: &mut [Option<usize>],
    members: &mut [Vec<NodeId>],
    groups: &[usize],
    id: NodeId,
    reads: &impl Fn(NodeId) -> Vec<NodeId>,
) -> Option<usize> {
    if groups.len() < 2 {
        return None;
    }
    let saved: Vec<Vec<NodeId>> = groups.iter().map(|&c| members[c].clone()).collect();
    join(group_of, members, groups, id);
    if !depends_outside(group_of, members, groups[0], reads) {
        return Some(groups[0]);
    }
    for (&c, m) in groups.iter().zip(saved) {
        for x in &m {
            group_of[x.index()] = Some(c);
        }
        members[c] = m;
    }
    group_of[id.index()] = None;
    None
}

/// Whether group `c` depends on itself through a node or group outside it: it could then not
/// run as one kernel.
fn depends_outside(
    group_of: &[Option<usize>],
    members: &[Vec<NodeId>],
    c: usize,
    reads: &impl Fn(NodeId) -> Vec<NodeId>,
) -> bool {
    // Below `lo` no group reaches above it: nodes there read only nodes there, so they
    // cannot depend on `c`, whose members all come later.
    let mut lo = members[c][0].index();
    loop {
        let straddling = members.iter().filter(|m| m.last().is_some_and(|last| last.index() >= lo));
        let next = straddling.map(|m| m[0].index()).min().unwrap_or(lo).min(lo);
        if next == lo {
            break;
        }
        lo = next;
    }
    let top = members.iter().flatten().map(|x| x.index()).max().unwrap_or(lo);
    let mut seen = vec![false; top + 1 - lo.min(top)];
    let mut stack: Vec<NodeId> = members[c]
        .iter()
        .flat_map(|&m| reads(m))
        .filter(|a| group_of[a.index()] != Some(c))
        .collect();
    while let Some(x) = stack.pop() {
        let i = x.index();
        if i < lo || seen[i - lo] {
            continue;
        }
        seen[i - lo] = true;
        match group_of[i] {
            Some(d) if d == c => return true,
            // A group runs as one: it needs everything any member reads.
            Some(d) => {
                for &m in &members[d] {
                    stack.extend(reads(m));
                    seen[m.index() - lo] = true;
                }
            }
            None => stack.extend(reads(x)),
        }
    }
    false
}

/// A group's kernel: `nodes` (its own members and what it recomputes, in graph order) as
/// instructions; as outputs, its own members that are read outside, then the concatenations
/// of its values it writes in place (each output one register per part).
fn build_group(
    g: &Graph,
    members: Vec<NodeId>,
    nodes: Vec<NodeId>,
    concats: Vec<NodeId>,
    read_outside: &[bool],
    reads: &impl Fn(NodeId) -> Vec<NodeId>,
) -> Group {
    let mut inputs: Vec<NodeId> = Vec::new();
    let mut offsets: Vec<usize> = Vec::new();
    let mut reg: HashMap<NodeId, u32> = HashMap::new();
    let mut viewed: HashMap<(NodeId, usize), u32> = HashMap::new();
    for &m in &nodes {
        for a in reads(m) {
            if nodes.binary_search(&a).is_err() && !reg.contains_key(&a) {
                let source = view(g, a);
                let r = *viewed.entry(source).or_insert_with(|| {
                    inputs.push(source.0);
                    offsets.push(source.1);
                    inputs.len() as u32 - 1
                });
                reg.insert(a, r);
            }
        }
    }
    let mut instrs = Vec::new();
    for &m in &nodes {
        let node = g.node(m);
        let args: Vec<u32> = reads(m).iter().map(|a| reg[a]).collect();
        let ins = match &node.op {
            Op::Reshape | Op::StopGradient => {
                reg.insert(m, args[0]);
                continue;
            }
            Op::Unary(u) => Instr::Unary(*u, args[0]),
            Op::Affine { mul, add } => {
                Instr::Affine { x: args[0], mul: *mul as f32, add: *add as f32 }
            }
            Op::Clamp { min, max } => {
                Instr::Clamp { x: args[0], min: *min as f32, max: *max as f32 }
            }
            Op::Binary(b) => Instr::Binary(*b, args[0], args[1]),
            Op::Compare(c) => Instr::Compare(*c, args[0], args[1]),
            _ => unreachable!("only elementwise nodes and aliases join groups"),
        };
        reg.insert(m, (inputs.len() + instrs.len()) as u32);
        instrs.push(ins);
    }
    let mut outputs: Vec<NodeId> =
        members.iter().copied().filter(|m| read_outside[m.index()]).collect();
    let mut out_regs: Vec<u32> = outputs.iter().map(|m| reg[m]).collect();
    for c in concats {
        out_regs.extend(g.node(c).args.iter().map(|a| reg[a]));
        outputs.push(c);
    }
    let kernel = Kernel::new(inputs.len(), instrs, out_regs).expect("registers in order");
    Group { members, inputs, offsets, outputs, kernel }
}

impl Fusion {
    /// No groups: every node runs alone.
    pub fn none(g: &Graph) -> Self {
        Self { groups: Vec::new(), group_of: vec![None; g.len()], absorbed: vec![false; g.len()] }
    }

    /// The group a node belongs to.
    pub fn group_of(&self, id: NodeId) -> Option<usize> {
        self.group_of[id.index()]
    }

    /// The `needed` nodes that are not graph inputs and the groups, in an order where each
    /// comes after what it reads (a group may have to move past nodes that read it).
    pub fn order(
        &self,
        g: &Graph,
        needed: &[bool],
        reads: impl Fn(NodeId) -> Vec<NodeId>,
    ) -> Vec<Unit> {
        let n = g.len();
        let unit_of = |id: NodeId| match self.group_of[id.index()] {
            Some(c) => Unit::Group(c),
            None => Unit::Node(id),
        };
        let key = |u: Unit| match u {
            Unit::Node(id) => id.index(),
            Unit::Group(c) => n + c,
        };
        let is_input = |id: NodeId| matches!(g.node(id).op, Op::Input { .. });
        let deps = |u: Unit| -> Vec<Unit> {
            let ids = match u {
                Unit::Node(id) => reads(id),
                Unit::Group(c) => self.groups[c].inputs.clone(),
            };
            ids.into_iter().filter(|&a| !is_input(a)).map(unit_of).collect()
        };
        let units: Vec<Unit> = (0..n)
            .map(NodeId::from_index)
            .filter(|&id| needed[id.index()] && !is_input(id) && !self.absorbed[id.index()])
            .map(unit_of)
            .filter(|u| matches!(u, Unit::Node(_)))
            .chain((0..self.groups.len()).map(Unit::Group))
            .collect();
        // Kahn's algorithm; ties go to the unit whose last node comes first in the graph.
        let mut waiting = vec![0usize; n + self.groups.len()];
        let mut readers: Vec<Vec<Unit>> = vec![Vec::new(); n + self.groups.len()];
        for &u in &units {
            let mut ds = deps(u);
            ds.sort_by_key(|&d| key(d));
            ds.dedup();
            waiting[key(u)] = ds.len();
            for d in ds {
                readers[key(d)].push(u);
            }
        }
        let position = |u: Unit| match u {
            Unit::Node(id) => id.index(),
            Unit::Group(c) => self.groups[c].members.last().expect("groups are not empty").index(),
        };
        let mut ready: BinaryHeap<Reverse<(usize, usize)>> = units
            .iter()
            .filter(|&&u| waiting[key(u)] == 0)
            .map(|&u| Reverse((position(u), key(u))))
            .collect();
        let from_key =
            |k: usize| if k < n { Unit::Node(NodeId::from_index(k)) } else { Unit::Group(k - n) };
        let mut order = Vec::with_capacity(units.len());
        while let Some(Reverse((_, k))) = ready.pop() {
            let u = from_key(k);
            order.push(u);
            for &r in &readers[k] {
                waiting[key(r)] -= 1;
                if waiting[key(r)] == 0 {
                    ready.push(Reverse((position(r), key(r))));
                }
            }
        }
        assert_eq!(order.len(), units.len(), "fused groups form no cycle");
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::expand_grads;
    use crate::l2l::{unroll, LstmOptimizer, Outer};
    use crate::reference::evaluate;
    use crate::tensor::HostTensor;
    use crate::testing::{meta_step_inputs, small_quadratics};

    fn plain_reads(g: &Graph) -> impl Fn(NodeId) -> Vec<NodeId> + '_ {
        |id| g.node(id).args.clone()
    }

    /// Every node of `g` as an output, evaluated by the reference evaluator.
    fn all_values(g: &Graph, inputs: &[HostTensor]) -> Vec<Vec<f64>> {
        let mut every = g.clone();
        for i in 0..g.len() {
            every.output(format!("node{i}"), NodeId::from_index(i));
        }
        let values = evaluate(&every, inputs).expect("reference");
        values[g.outputs().len()..].iter().map(|v| v.data.clone()).collect()
    }

    #[test]
    fn tanh_is_within_4e_7_of_tanh() {
        let worst = (-12_000..=12_000)
            .map(|k| k as f32 * 1e-3)
            .map(|x| (tanh(x) as f64 - (x as f64).tanh()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 4e-7, "{worst}");
    }

    #[test]
    fn kernels_survive_encoding_and_bad_codes_are_refused() {
        let instrs = vec![
            Instr::Affine { x: 0, mul: -1.0, add: 1.0 },
            Instr::Binary(BinaryOp::Mul, 2, 1),
            Instr::Unary(UnaryOp::Step, 3),
            Instr::Compare(CmpOp::Ge, 4, 0),
            Instr::Clamp { x: 5, min: 0.5, max: f32::INFINITY },
        ];
        let k = Kernel::new(2, instrs, vec![6, 3]).unwrap();
        let (code, consts) = k.encode();
        assert_eq!(Kernel::decode(&code, &consts).unwrap(), k);
        assert!(Kernel::decode(&code, &consts[1..]).is_err());
        let mut later = code.clone();
        later[5] = 9; // the first instruction reads a register not yet made
        assert!(Kernel::decode(&later, &consts).is_err());
        let mut unknown = code;
        unknown[4] = 99;
        assert!(Kernel::decode(&unknown, &consts).is_err());
    }

    #[test]
    fn a_kernel_broadcasts_single_values_and_spans_blocks() {
        // out = (x - y) * 2 over 1000 elements, y a single value.
        let k = Kernel::new(
            2,
            vec![Instr::Binary(BinaryOp::Sub, 0, 1), Instr::Affine { x: 2, mul: 2.0, add: 0.0 }],
            vec![3, 2],
        )
        .unwrap();
        let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let (mut out, mut diff) = (vec![0.0; 1000], vec![0.0; 1000]);
        k.run(&[&x, &[3.0]], &mut [&mut out, &mut diff]);
        assert!(out.iter().enumerate().all(|(i, &v)| v == 2.0 * (i as f32 - 3.0)));
        assert!(diff.iter().enumerate().all(|(i, &v)| v == i as f32 - 3.0));
    }

    #[test]
    fn a_node_that_would_close_a_cycle_starts_a_group_of_its_own() {
        let mut g = Graph::new();
        let x = g.input("x", &[4, 4], DType::F32);
        let w = g.input("w", &[4, 4], DType::F32);
        let a = g.affine(x, 2.0, 1.0).unwrap();
        let a = g.tanh(a).unwrap();
        let m = g.matmul(a, w).unwrap();
        // Joining a's group would make it read m, which reads the group.
        let b = g.add(a, m).unwrap();
        let b = g.square(b).unwrap();
        g.output("b", b);
        let needed = vec![true; g.len()];
        let f = plan(&g, &needed, plain_reads(&g));
        assert_eq!(f.groups.len(), 2);
        assert_ne!(f.group_of(a), f.group_of(b));
        let order = f.order(&g, &needed, plain_reads(&g));
        let expected = [Unit::Group(0), Unit::Node(m), Unit::Group(1)];
        assert_eq!(order, expected);
    }

    #[test]
    fn fused_groups_of_an_unroll_compute_what_their_nodes_do() {
        let opt = LstmOptimizer { hidden: 6, ..Default::default() };
        let q = small_quadratics(3, 4);
        let g =
            expand_grads(&unroll(&opt, &q, 2, Outer::Adam { lr: 1e-3 }, false).unwrap()).unwrap();
        let inputs = meta_step_inputs(&opt, &q, 2, 5);
        let values = all_values(&g, &inputs);
        let needed = g.needed_by(g.output_ids(), plain_reads(&g));
        let f = plan(&g, &needed, plain_reads(&g));
        assert!(f.groups.len() >= 10, "{} groups", f.groups.len());
        let mut concats = 0;
        for group in &f.groups {
            let size = numel(g.shape(group.members[0]));
            let ins: Vec<Vec<f32>> = group
                .inputs
                .iter()
                .zip(&group.offsets)
                .map(|(a, &at)| {
                    let v = &values[a.index()];
                    let part = if v.len() == 1 { &v[..] } else { &v[at..at + size] };
                    part.iter().map(|&v| v as f32).collect()
                })
                .collect();
            let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
            let mut outs: Vec<Vec<f32>> =
                group.outputs.iter().map(|o| vec![0.0; numel(g.shape(*o))]).collect();
            concats += outs.iter().filter(|o| o.len() > size).count();
            let mut parts: Vec<&mut [f32]> =
                outs.iter_mut().flat_map(|v| v.chunks_mut(size)).collect();
            group.kernel.run(&refs, &mut parts);
            for (m, got) in group.outputs.iter().zip(&outs) {
                for (&v, &want) in got.iter().zip(&values[m.index()]) {
                    let err = (v as f64 - want).abs();
                    let op = &g.node(*m).op;
                    assert!(err <= 1e-5 * want.abs().max(1.0), "{op:?}: {v} vs {want}");
                }
            }
        }
        assert!(concats > 0, "no concatenation was written in place");
        let views = f.groups.iter().flat_map(|group| &group.offsets).filter(|&&o| o > 0).count();
        assert!(views > 0, "no slice was read in place");
        // Each needed node is emitted at most once, alone or in its group, after what it reads.
        let order = f.order(&g, &needed, plain_reads(&g));
        let mut done = vec![false; g.len()];
        for &id in g.inputs() {
            done[id.index()] = true;
        }
        for u in order {
            let (members, reads) = match u {
                Unit::Node(id) => (vec![id], g.node(id).args.clone()),
                Unit::Group(c) => {
                    let group = &f.groups[c];
                    let mut made = group.members.clone();
                    made.extend(group.outputs.iter().filter(|o| !group.members.contains(o)));
                    (made, group.inputs.clone())
                }
            };
            assert!(reads.iter().all(|a| done[a.index()]), "{u:?} before what it reads");
            for m in members {
                assert!(!done[m.index()], "{m:?} twice");
                done[m.index()] = true;
            }
        }
        // The rest are elementwise values every reader recomputes, or slices read in place.
        let absorbed = |i: usize| {
            let op = &g.node(NodeId::from_index(i)).op;
            computes(op) || matches!(op, Op::Slice { .. })
        };
        assert!((0..g.len()).all(|i| done[i] || !needed[i] || absorbed(i)));
    }
}
