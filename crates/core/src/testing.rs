//! Shared test material: one small graph per IR op with random inputs, and finite
//! differences. Every backend's test suite runs the same catalogue, so an op added here is
//! checked on every engine.

use crate::autodiff::simplify;
use crate::graph::{BinaryOp, CmpOp, GResult, Graph, NodeId, UnaryOp};
use crate::reference::{evaluate_values, RefValue};
use crate::rng::Rng;
use crate::tensor::{numel, DType, HostTensor};

/// One op applied to random inputs: `graph` has output `y`.
#[derive(Clone, Debug)]
pub struct OpCase {
    pub name: String,
    pub graph: Graph,
    pub inputs: Vec<HostTensor>,
    /// Which inputs a gradient is taken with respect to.
    pub differentiable: Vec<bool>,
}

fn uniform(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> HostTensor {
    HostTensor::f32(
        shape.to_vec(),
        (0..numel(shape)).map(|_| rng.uniform_in(lo, hi) as f32).collect(),
    )
    .expect("shape")
}

/// Values in ±[0.1, 1.5]: far from the kinks of relu, abs and sign at zero.
fn away_from_zero(rng: &mut Rng, shape: &[usize]) -> HostTensor {
    let data = (0..numel(shape))
        .map(|_| {
            let m = rng.uniform_in(0.1, 1.5);
            (if rng.bernoulli(0.5) { m } else { -m }) as f32
        })
        .collect();
    HostTensor::f32(shape.to_vec(), data).expect("shape")
}

/// Distinct values (no ties for max-pooling), shuffled.
fn distinct(rng: &mut Rng, shape: &[usize]) -> HostTensor {
    let n = numel(shape);
    let perm = rng.permutation(n);
    let data =
        perm.iter().map(|&p| (p as f64 / n as f64 * 2.0 - 1.0 + 0.3 / n as f64) as f32).collect();
    HostTensor::f32(shape.to_vec(), data).expect("shape")
}

fn labels(rng: &mut Rng, n: usize, classes: usize) -> HostTensor {
    HostTensor::i64(vec![n], (0..n).map(|_| rng.below(classes) as i64).collect()).expect("shape")
}

struct Catalogue {
    cases: Vec<OpCase>,
}

impl Catalogue {
    fn add(
        &mut self,
        name: impl Into<String>,
        inputs: Vec<(HostTensor, bool)>,
        build: impl FnOnce(&mut Graph, &[NodeId]) -> GResult<NodeId>,
    ) {
        let mut g = Graph::new();
        let ids: Vec<NodeId> = inputs
            .iter()
            .enumerate()
            .map(|(i, (t, _))| g.input(format!("x{i}"), t.shape(), t.dtype()))
            .collect();
        let y = build(&mut g, &ids).expect("catalogue graphs are well-formed");
        g.output("y", y);
        let (inputs, differentiable) = inputs.into_iter().unzip();
        self.cases.push(OpCase { name: name.into(), graph: g, inputs, differentiable });
    }
}

/// Every IR op (but `Grad` and `StopGradient`, which the autodiff tests cover), with shapes
/// drawn from `seed`.
pub fn op_cases(seed: u64) -> Vec<OpCase> {
    let mut rng = Rng::stream(seed, "op-cases");
    let r = &mut rng;
    let mut c = Catalogue { cases: Vec::new() };
    let d = |r: &mut Rng, lo: usize, hi: usize| lo + r.below(hi - lo + 1);
    let (m, n) = (d(r, 1, 4), d(r, 2, 5));

    for u in [
        UnaryOp::Neg,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Abs,
        UnaryOp::Square,
        UnaryOp::Sign,
        UnaryOp::Step,
    ] {
        c.add(format!("{u:?}"), vec![(away_from_zero(r, &[m, n]), true)], |g, x| g.unary(u, x[0]));
    }
    for u in [UnaryOp::Log, UnaryOp::Sqrt] {
        c.add(format!("{u:?}"), vec![(uniform(r, &[m, n], 0.2, 2.0), true)], |g, x| {
            g.unary(u, x[0])
        });
    }
    c.add("Affine", vec![(uniform(r, &[m, n], -1.0, 1.0), true)], |g, x| g.affine(x[0], 1.7, -0.3));
    // Values near ±0.5 would sit on the clamp's kinks; keep them at least 0.01 away.
    let mut cl = uniform(r, &[m, n], -1.0, 1.0).into_f32().expect("f32");
    for v in &mut cl {
        if (v.abs() - 0.5).abs() < 0.01 {
            *v += 0.03;
        }
    }
    c.add("Clamp", vec![(HostTensor::f32(vec![m, n], cl).expect("shape"), true)], |g, x| {
        g.clamp(x[0], -0.5, 0.5)
    });

    for b in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        let rhs = |r: &mut Rng, s: &[usize]| {
            if b == BinaryOp::Div {
                away_from_zero(r, s)
            } else {
                uniform(r, s, -1.0, 1.0)
            }
        };
        c.add(
            format!("{b:?}"),
            vec![(uniform(r, &[m, n], -1.0, 1.0), true), (rhs(r, &[m, n]), true)],
            |g, x| g.binary(b, x[0], x[1]),
        );
        c.add(
            format!("{b:?}/row-broadcast"),
            vec![(uniform(r, &[m, n], -1.0, 1.0), true), (rhs(r, &[n]), true)],
            |g, x| g.binary(b, x[0], x[1]),
        );
        c.add(
            format!("{b:?}/scalar"),
            vec![(rhs(r, &[]), true), (uniform(r, &[m, n], -1.0, 1.0), true)],
            |g, x| g.binary(b, x[0], x[1]),
        );
        c.add(
            format!("{b:?}/outer"),
            vec![(uniform(r, &[m, 1], -1.0, 1.0), true), (rhs(r, &[1, n]), true)],
            |g, x| g.binary(b, x[0], x[1]),
        );
    }
    for op in [CmpOp::Eq, CmpOp::Ge, CmpOp::Gt] {
        // Half the entries equal, so Eq and Ge are exercised on ties.
        let a = uniform(r, &[m, n], -1.0, 1.0).into_f32().expect("f32");
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 2 == 0 { v } else { v + 0.25 * (r.uniform() as f32 - 0.5) })
            .collect();
        c.add(
            format!("Compare{op:?}"),
            vec![
                (HostTensor::f32(vec![m, n], a).expect("shape"), false),
                (HostTensor::f32(vec![m, n], b).expect("shape"), false),
            ],
            |g, x| g.compare(op, x[0], x[1]),
        );
    }

    let k = d(r, 1, 4);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let sa = if ta { [k, m] } else { [m, k] };
        let sb = if tb { [n, k] } else { [k, n] };
        c.add(
            format!("MatMul/{ta}/{tb}"),
            vec![(uniform(r, &sa, -1.0, 1.0), true), (uniform(r, &sb, -1.0, 1.0), true)],
            |g, x| g.matmul_t(x[0], x[1], ta, tb),
        );
    }
    c.add(
        "Linear",
        vec![
            (uniform(r, &[m, k], -1.0, 1.0), true),
            (uniform(r, &[k, n], -1.0, 1.0), true),
            (uniform(r, &[n], -1.0, 1.0), true),
        ],
        |g, x| g.linear(x[0], x[1], x[2]),
    );

    let (bn, ci, co, hw) = (d(r, 1, 2), d(r, 1, 3), d(r, 1, 3), d(r, 4, 6));
    for (stride, padding) in [(1, 0), (1, 1), (2, 1)] {
        let xs = [bn, ci, hw, hw];
        let ws = [co, ci, 3, 3];
        c.add(
            format!("Conv2d/s{stride}p{padding}"),
            vec![(uniform(r, &xs, -1.0, 1.0), true), (uniform(r, &ws, -1.0, 1.0), true)],
            |g, x| g.conv2d(x[0], x[1], stride, padding),
        );
        let ys = crate::graph::conv2d_output_shape(&xs, &ws, stride, padding).expect("fits");
        c.add(
            format!("Conv2dBackwardInput/s{stride}p{padding}"),
            vec![(uniform(r, &ys, -1.0, 1.0), true), (uniform(r, &ws, -1.0, 1.0), true)],
            |g, x| g.conv2d_backward_input(x[0], x[1], &xs, stride, padding),
        );
        c.add(
            format!("Conv2dBackwardWeight/s{stride}p{padding}"),
            vec![(uniform(r, &xs, -1.0, 1.0), true), (uniform(r, &ys, -1.0, 1.0), true)],
            |g, x| g.conv2d_backward_weight(x[0], x[1], &ws, stride, padding),
        );
    }
    c.add("MaxPool2d", vec![(distinct(r, &[bn, ci, 4, 6]), true)], |g, x| g.max_pool2d(x[0], 2));

    let classes = d(r, 2, 6);
    c.add("Softmax", vec![(uniform(r, &[m, classes], -2.0, 2.0), true)], |g, x| g.softmax(x[0]));
    c.add(
        "SoftmaxCrossEntropy",
        vec![(uniform(r, &[m, classes], -2.0, 2.0), true), (labels(r, m, classes), false)],
        |g, x| g.softmax_cross_entropy(x[0], x[1]),
    );
    c.add("OneHot", vec![(labels(r, m, classes), false)], |g, x| g.one_hot(x[0], classes));
    c.add(
        "CorrectPredictions",
        vec![(distinct(r, &[m, classes]), true), (labels(r, m, classes), false)],
        |g, x| g.correct_predictions(x[0], x[1]),
    );

    let s3 = [d(r, 1, 3), d(r, 2, 4), d(r, 1, 3)];
    for (axes, keep) in
        [(vec![0], false), (vec![1], true), (vec![0, 2], false), (vec![0, 1, 2], false)]
    {
        let name = format!("Sum/{axes:?}/{keep}");
        c.add(name, vec![(uniform(r, &s3, -1.0, 1.0), true)], |g, x| g.sum(x[0], &axes, keep));
    }
    c.add("BroadcastTo", vec![(uniform(r, &[s3[1], 1], -1.0, 1.0), true)], |g, x| {
        g.broadcast_to(x[0], &[s3[0], s3[1], s3[2] + 1])
    });
    c.add("SumTo", vec![(uniform(r, &[s3[0], s3[1], s3[2] + 1], -1.0, 1.0), true)], |g, x| {
        g.sum_to(x[0], &[s3[1], 1])
    });
    c.add("Reshape", vec![(uniform(r, &s3, -1.0, 1.0), true)], |g, x| {
        g.reshape(x[0], &[s3[0] * s3[1], s3[2]])
    });
    c.add("Permute", vec![(uniform(r, &s3, -1.0, 1.0), true)], |g, x| g.permute(x[0], &[2, 0, 1]));
    c.add("Slice", vec![(uniform(r, &[m, n + 2], -1.0, 1.0), true)], |g, x| {
        g.slice(x[0], 1, 1, n + 1)
    });
    c.add("Pad", vec![(uniform(r, &[m, n], -1.0, 1.0), true)], |g, x| g.pad(x[0], 0, 1, 2));
    c.add(
        "Concat",
        vec![
            (uniform(r, &[m, 1], -1.0, 1.0), true),
            (uniform(r, &[m, n], -1.0, 1.0), true),
            (uniform(r, &[m, 2], -1.0, 1.0), true),
        ],
        |g, x| g.concat(x, 1),
    );
    let rows = d(r, 2, 5);
    let idx = HostTensor::i64(vec![m + 1], (0..=m).map(|_| r.below(rows) as i64).collect())
        .expect("shape");
    c.add("Gather", vec![(uniform(r, &[rows, n], -1.0, 1.0), false), (idx, false)], |g, x| {
        g.gather(x[0], x[1])
    });
    // At least four values per channel, so that no channel's variance is near zero.
    let ch = d(r, 1, 3);
    let rank4 = vec![d(r, 2, 3), ch, d(r, 1, 2), d(r, 2, 3)];
    for (name, xs) in [("BatchNorm/rank4", rank4), ("BatchNorm/rank2", vec![d(r, 4, 6), ch])] {
        c.add(
            name,
            vec![
                (uniform(r, &xs, -1.0, 1.0), true),
                (away_from_zero(r, &[ch]), true),
                (uniform(r, &[ch], -1.0, 1.0), true),
            ],
            |g, x| g.batch_norm(x[0], x[1], x[2], 1e-5),
        );
    }
    c.cases
}

/// The case's graph extended with `loss` = Σ y⊙R (R a fixed random weight) and `grad.<i>`
/// = ∂loss/∂x_i for every differentiable input; ops with an i64 output get no loss.
pub fn with_gradients(case: &OpCase, seed: u64) -> Graph {
    let mut g = case.graph.clone();
    let y = g.outputs()[0].1;
    if g.dtype(y) != DType::F32 {
        return g;
    }
    let mut rng = Rng::stream(seed, "loss-weights");
    let weights = uniform(&mut rng, g.shape(y), -1.0, 1.0);
    let w = g.constant(weights);
    let yw = g.mul(y, w).expect("same shape");
    let loss = g.sum_all(yw).expect("f32");
    g.output("loss", loss);
    for (i, &x) in g.inputs().to_vec().iter().enumerate() {
        if case.differentiable[i] {
            let dx = g.grad(loss, x).expect("f32 input");
            g.output(format!("grad.{i}"), dx);
        }
    }
    g
}

/// Central differences of the graph's output `out` (a scalar) with respect to input `which`.
pub fn finite_differences(
    g: &Graph,
    out: usize,
    inputs: &[RefValue],
    which: usize,
    h: f64,
) -> GResult<Vec<f64>> {
    let mut only = g.clone();
    only.set_outputs(vec![g.outputs()[out].clone()]);
    let only = simplify(&only);
    let mut x = inputs.to_vec();
    let mut grad = Vec::with_capacity(x[which].data.len());
    for j in 0..x[which].data.len() {
        let orig = x[which].data[j];
        x[which].data[j] = orig + h;
        let plus = evaluate_values(&only, &x)?[0].data[0];
        x[which].data[j] = orig - h;
        let minus = evaluate_values(&only, &x)?[0].data[0];
        x[which].data[j] = orig;
        grad.push((plus - minus) / (2.0 * h));
    }
    Ok(grad)
}

/// The largest difference between two value lists, relative to max(1, |expected|).
pub fn max_rel_diff(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual.iter().zip(expected).map(|(a, e)| (a - e).abs() / e.abs().max(1.0)).fold(0.0, f64::max)
}

// ---- conformance checks that every backend's test suite runs ----

use crate::autodiff::expand_grads;
use crate::backend::Backend;
use crate::fewshot;
use crate::l2l::{meta_state, unroll, zero_state, Distribution, LstmOptimizer, Outer, Problem};
use crate::models::{init_params, Activation, Model};
use crate::optim::Optimizer;
use crate::train::{starting_state, training_step, Feed};

fn to_f64(t: &HostTensor) -> Vec<f64> {
    RefValue::from_host(t).data
}

/// Runs `g` on the backend and downloads every output.
pub fn run_on<B: Backend>(b: &B, g: &Graph, inputs: &[HostTensor]) -> Vec<HostTensor> {
    let mut p = b.compile(g).unwrap_or_else(|e| panic!("{}: compile: {e}", b.id()));
    let ts: Vec<B::Tensor> = inputs.iter().map(|t| b.upload(t).expect("upload")).collect();
    let refs: Vec<&B::Tensor> = ts.iter().collect();
    let outs = b.run(&mut p, &refs).unwrap_or_else(|e| panic!("{}: run: {e}", b.id()));
    outs.iter().map(|t| b.download(t).expect("download")).collect()
}

/// Every op of the catalogue gives the reference's values (relative tolerance `tol`).
pub fn check_forward<B: Backend>(b: &B, seeds: std::ops::Range<u64>, tol: f64) {
    for seed in seeds {
        for case in op_cases(seed) {
            let expected =
                crate::reference::evaluate(&case.graph, &case.inputs).expect("reference");
            let got = run_on(b, &case.graph, &case.inputs);
            assert_eq!(
                got[0].shape(),
                expected[0].shape.as_slice(),
                "{}: {} shape",
                b.id(),
                case.name
            );
            let err = max_rel_diff(&to_f64(&got[0]), &expected[0].data);
            assert!(
                err < tol,
                "{}: {} (seed {seed}) differs from the reference by {err:e}",
                b.id(),
                case.name
            );
        }
    }
}

/// Every op's gradient, as the backend computes it, equals the reference's symbolic one.
pub fn check_gradients<B: Backend>(b: &B, seeds: std::ops::Range<u64>, tol: f64) {
    for seed in seeds {
        for case in op_cases(seed) {
            let g = with_gradients(&case, seed);
            if g.outputs().len() < 3 {
                continue;
            }
            let expected =
                crate::reference::evaluate(&expand_grads(&g).expect("expand"), &case.inputs)
                    .expect("reference");
            let got = run_on(b, &g, &case.inputs);
            for (k, (name, _)) in g.outputs().iter().enumerate().skip(1) {
                let err = max_rel_diff(&to_f64(&got[k]), &expected[k].data);
                assert!(
                    err < tol,
                    "{}: {} (seed {seed}) output {name} differs from the reference by {err:e}",
                    b.id(),
                    case.name
                );
            }
        }
    }
}

/// A max-pooling input with ties: 2×2 windows of four equal values, of two tied maxima, and
/// of one maximum; the gradient of Σ w·maxpool(x) and the gradient expected, which goes to the
/// first maximum of each window in row-major order (as PyTorch routes it).
pub fn max_pool_ties() -> (Graph, Vec<HostTensor>, Vec<f64>) {
    #[rustfmt::skip]
    let x: Vec<f32> = vec![
        0.0, 0.0,   1.0, 3.0,   -2.0, 5.0,
        0.0, 0.0,   3.0, 3.0,    5.0, 5.0,

        7.0, 1.0,   4.0, 4.0,    0.5, 0.5,
        2.0, 7.0,   1.0, 0.0,    0.5, 0.25,
    ];
    let w: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    #[rustfmt::skip]
    let expected = vec![
        1.0, 0.0,   0.0, 2.0,    0.0, 3.0,
        0.0, 0.0,   0.0, 0.0,    0.0, 0.0,

        4.0, 0.0,   5.0, 0.0,    6.0, 0.0,
        0.0, 0.0,   0.0, 0.0,    0.0, 0.0,
    ];
    let mut g = Graph::new();
    let xi = g.input("x", &[1, 1, 4, 6], DType::F32);
    let wi = g.input("w", &[1, 1, 2, 3], DType::F32);
    let build = |g: &mut Graph| -> GResult<()> {
        let y = g.max_pool2d(xi, 2)?;
        let weighted = g.mul(y, wi)?;
        let total = g.sum_all(weighted)?;
        let grads = g.grads(total, &[xi])?;
        g.output("grad.x", grads[0]);
        Ok(())
    };
    build(&mut g).expect("well-formed");
    let inputs = vec![
        HostTensor::f32(vec![1, 1, 4, 6], x).expect("shape"),
        HostTensor::f32(vec![1, 1, 2, 3], w).expect("shape"),
    ];
    (g, inputs, expected)
}

/// Max-pooling with tied window values gives each window's gradient to one input, the first
/// maximum, on this backend.
pub fn check_max_pool_ties<B: Backend>(b: &B) {
    let (g, inputs, expected) = max_pool_ties();
    let got = to_f64(&run_on(b, &g, &inputs)[0]);
    assert_eq!(got, expected, "{}: max-pool gradient with ties", b.id());
}

/// Second derivatives through batch normalization, as second-order MAML takes them: with
/// y = BatchNorm(x, γ, β) (x of shape `shape`, eps 1e-5) and a fixed weight w, the outputs are
/// `loss` L = Σ (∂/∂x Σ y·w)² and its gradients `grad.gamma` and `grad.x`. Returns the graph
/// and its inputs x, γ, β, w drawn from `seed`.
pub fn batch_norm_second_order(shape: &[usize], seed: u64) -> (Graph, Vec<HostTensor>) {
    let mut rng = Rng::stream(seed, "batch-norm-second-order");
    let ch = [shape[1]];
    let inputs = vec![
        uniform(&mut rng, shape, -1.0, 1.0),
        away_from_zero(&mut rng, &ch),
        uniform(&mut rng, &ch, -1.0, 1.0),
        uniform(&mut rng, shape, -1.0, 1.0),
    ];
    let mut g = Graph::new();
    let ids: Vec<NodeId> = ["x", "gamma", "beta", "w"]
        .iter()
        .zip(&inputs)
        .map(|(name, t)| g.input(*name, t.shape(), DType::F32))
        .collect();
    let build = |g: &mut Graph| -> GResult<()> {
        let (x, gamma) = (ids[0], ids[1]);
        let y = g.batch_norm(x, gamma, ids[2], 1e-5)?;
        let yw = g.mul(y, ids[3])?;
        let inner = g.sum_all(yw)?;
        let dx = g.grad(inner, x)?;
        let dx2 = g.square(dx)?;
        let loss = g.sum_all(dx2)?;
        let grads = g.grads(loss, &[gamma, x])?;
        g.output("loss", loss);
        g.output("grad.gamma", grads[0]);
        g.output("grad.x", grads[1]);
        Ok(())
    };
    build(&mut g).expect("well-formed");
    (g, inputs)
}

/// Second derivatives through batch normalization, of inputs of rank 4 and 2, equal the
/// reference's on this backend.
pub fn check_batch_norm_second_order<B: Backend>(b: &B, tol: f64) {
    for shape in [&[3, 2, 2, 3][..], &[5, 3]] {
        let (g, inputs) = batch_norm_second_order(shape, 7);
        let expected = crate::reference::evaluate(&expand_grads(&g).expect("expand"), &inputs)
            .expect("reference");
        let got = run_on(b, &g, &inputs);
        for (k, (name, _)) in g.outputs().iter().enumerate() {
            let err = max_rel_diff(&to_f64(&got[k]), &expected[k].data);
            assert!(
                err < tol,
                "{}: batch norm {shape:?}, output {name} differs from the reference by {err:e}",
                b.id()
            );
        }
    }
}

/// `n` classes of five random side × side images each.
pub fn random_classes(n: usize, side: usize, seed: u64) -> fewshot::Classes {
    let mut rng = Rng::stream(seed, "images");
    let mut image = || (0..side * side).map(|_| rng.uniform() as f32).collect::<Vec<f32>>();
    let classes = (0..n).map(|_| (0..5).map(|_| image()).collect()).collect();
    fewshot::Classes { side, classes }
}

/// A tiny few-shot problem: a one-block learner on 4×4 images, 2-way 2-shot episodes with
/// two queries, two tasks; the meta-gradient program of `inner` and its inputs (the
/// meta-parameters from `seed`, then the episodes, drawn from random classes).
pub fn tiny_few_shot(inner: &fewshot::Inner, seed: u64) -> (Graph, Vec<HostTensor>) {
    use fewshot::{EpisodeShape, Learner};
    let learner = Learner { side: 4, filters: 2, blocks: 1, way: 2 };
    let shape = EpisodeShape { way: 2, shot: 2, query: 2 };
    let g =
        fewshot::meta_step_graph(&learner, shape, 2, inner, Outer::Gradient).expect("well-formed");
    let classes = random_classes(6, 4, seed);
    let mut inputs = init_params(&inner.meta_params(&learner), seed);
    let e = fewshot::draw_episodes(&classes, shape, 2, &mut Rng::stream(seed, "episodes"))
        .expect("enough classes");
    inputs.extend(e.into_tensors());
    (g, inputs)
}

/// Second-order MAML with two inner steps at rate 0.4.
pub const TINY_MAML: fewshot::Inner = fewshot::Inner::Gradient {
    adaptation: fewshot::Adaptation { lr: 0.4, steps: 2 },
    order: fewshot::Order::Second,
};
/// A meta-learner LSTM of 3 units and 2 updates.
pub const TINY_META_LEARNER: fewshot::Inner =
    fewshot::Inner::MetaLearner(fewshot::MetaLearner { hidden: 3, steps: 2 });

/// The meta-gradients of second-order MAML (through batch norm, convolutions, pooling and two
/// inner steps) and of the meta-learner LSTM equal the reference's on this backend.
pub fn check_few_shot_meta_gradients<B: Backend>(b: &B, tol: f64) {
    for inner in [TINY_MAML, TINY_META_LEARNER] {
        let (g, inputs) = tiny_few_shot(&inner, 3);
        let expected = crate::reference::evaluate(&expand_grads(&g).expect("expand"), &inputs)
            .expect("reference");
        let got = run_on(b, &g, &inputs);
        for (k, (name, _)) in g.outputs().iter().enumerate() {
            let err = max_rel_diff(&to_f64(&got[k]), &expected[k].data);
            assert!(err < tol, "{}: {inner:?} output {name} differs by {err:e}", b.id());
        }
    }
}

/// A small batch of uniform quadratics, for checks of the meta-graph.
pub fn small_quadratics(functions: usize, dim: usize) -> Problem {
    Problem::Quadratic { functions, dim, distribution: Distribution::Uniform }
}

/// Inputs of an unroll program without a meta-optimizer state (see [`unroll`]): φ, the
/// problem, its per-step inputs, θ₀, zero LSTM state.
pub fn meta_inputs(
    opt: &LstmOptimizer,
    problem: &Problem,
    steps: usize,
    seed: u64,
) -> Vec<HostTensor> {
    let mut inputs = init_params(&opt.params(), seed);
    let mut rng = Rng::stream(seed, "problem");
    inputs.extend(problem.draw_fixed(&mut rng));
    inputs.extend(problem.draw_steps(&mut rng, steps));
    inputs.extend(problem.draw_theta(&mut rng));
    inputs.extend(zero_state(opt, problem));
    inputs
}

/// Inputs of a meta-training unroll program ([`Outer::Adam`]): φ, a fresh meta-optimizer
/// state, then as [`meta_inputs`].
pub fn meta_step_inputs(
    opt: &LstmOptimizer,
    problem: &Problem,
    steps: usize,
    seed: u64,
) -> Vec<HostTensor> {
    let mut inputs = meta_inputs(opt, problem, steps, seed);
    let rest = inputs.split_off(opt.params().len());
    inputs.extend(meta_state(opt));
    inputs.extend(rest);
    inputs
}

/// A two-step unroll of a learned optimizer: the backend's meta-gradient equals the symbolic one.
pub fn check_meta_gradient<B: Backend>(b: &B, tol: f64) {
    let opt = LstmOptimizer { hidden: 6, ..Default::default() };
    let q = small_quadratics(3, 4);
    let g = unroll(&opt, &q, 2, Outer::Gradient, false).expect("graph");
    let inputs = meta_inputs(&opt, &q, 2, 9);
    let expected =
        crate::reference::evaluate(&expand_grads(&g).expect("expand"), &inputs).expect("reference");
    let got = run_on(b, &g, &inputs);
    let mut checked = 0;
    for (k, (name, _)) in g.outputs().iter().enumerate() {
        let err = max_rel_diff(&to_f64(&got[k]), &expected[k].data);
        assert!(
            err < tol,
            "{}: meta-graph output {name} differs from the reference by {err:e}",
            b.id()
        );
        checked += name.starts_with("grad.") as usize;
    }
    assert_eq!(checked, opt.params().len());
}

/// A fixed batch of the 784-512-10 MLP's inputs: pixels in [0,1), labels from `seed`.
pub fn mlp_batch(batch: usize, seed: u64) -> (HostTensor, HostTensor) {
    let mut rng = Rng::stream(seed, "batch");
    let x = uniform(&mut rng, &[batch, 1, 28, 28], 0.0, 1.0);
    (x, labels(&mut rng, batch, 10))
}

/// One SGD step of a one-hidden-layer ReLU MLP computed by hand (f64, plain loops), to check
/// a backend's training step against: returns the updated parameters [w1, b1, w2, b2].
pub fn hand_sgd_step(
    params: &[HostTensor],
    x: &HostTensor,
    y: &HostTensor,
    lr: f64,
) -> Vec<Vec<f64>> {
    let (w1, b1, w2, b2) =
        (to_f64(&params[0]), to_f64(&params[1]), to_f64(&params[2]), to_f64(&params[3]));
    let (inp, hid) = (params[0].shape()[0], params[0].shape()[1]);
    let out = params[2].shape()[1];
    let xs = to_f64(x);
    let labels = y.as_i64().expect("labels");
    let bsz = labels.len();
    let (mut dw1, mut db1, mut dw2, mut db2) =
        (vec![0.0; w1.len()], vec![0.0; hid], vec![0.0; w2.len()], vec![0.0; out]);
    for n in 0..bsz {
        let xr = &xs[n * inp..(n + 1) * inp];
        let h: Vec<f64> = (0..hid)
            .map(|j| (b1[j] + (0..inp).map(|i| xr[i] * w1[i * hid + j]).sum::<f64>()).max(0.0))
            .collect();
        let z: Vec<f64> = (0..out)
            .map(|k| b2[k] + (0..hid).map(|j| h[j] * w2[j * out + k]).sum::<f64>())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let dz: Vec<f64> = (0..out)
            .map(|k| (e[k] / s - (k as i64 == labels[n]) as u8 as f64) / bsz as f64)
            .collect();
        for k in 0..out {
            db2[k] += dz[k];
            for j in 0..hid {
                dw2[j * out + k] += h[j] * dz[k];
            }
        }
        for j in 0..hid {
            if h[j] <= 0.0 {
                continue;
            }
            let dh: f64 = (0..out).map(|k| dz[k] * w2[j * out + k]).sum();
            db1[j] += dh;
            for i in 0..inp {
                dw1[i * hid + j] += xr[i] * dh;
            }
        }
    }
    let step = |p: Vec<f64>, d: Vec<f64>| p.iter().zip(&d).map(|(p, d)| p - lr * d).collect();
    vec![step(w1, dw1), step(b1, db1), step(w2, dw2), step(b2, db2)]
}

/// One SGD step of the 784-512-10 MLP built from the IR equals the hand-computed update.
pub fn check_mlp_sgd_step_by_hand<B: Backend>(b: &B) {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let lr = 0.1;
    let step = training_step(&model, &Optimizer::sgd(lr), 128, Feed::Batch, false).expect("graph");
    let params = init_params(&model.params().expect("params"), 1);
    let (x, y) = mlp_batch(128, 1);
    let mut inputs = params.clone();
    inputs.extend([x.clone(), y.clone()]);
    let got = run_on(b, &step.graph, &inputs);
    let expected = hand_sgd_step(&params, &x, &y, lr);
    for (i, e) in expected.iter().enumerate() {
        let moved = max_rel_diff(e, &to_f64(&params[i]));
        let err = max_rel_diff(&to_f64(&got[i]), e);
        assert!(moved > 1e-5, "parameter {i} did not move");
        assert!(
            err < 1e-5,
            "{}: parameter {i} after one SGD step differs from the hand-computed update by {err:e}",
            b.id()
        );
    }
}

/// Losses of `steps` training steps on one fixed batch, parameters kept on the device.
pub fn fixed_batch_losses<B: Backend>(
    b: &B,
    optimizer: &Optimizer,
    steps: usize,
    seed: u64,
) -> Vec<f32> {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let step = training_step(&model, optimizer, 128, Feed::Batch, false).expect("graph");
    let state = starting_state(&model.params().expect("params"), optimizer, seed);
    let (x, y) = mlp_batch(128, seed);
    let mut prog = b.compile(&step.graph).expect("compile");
    let mut dev: Vec<B::Tensor> = state.iter().map(|t| b.upload(t).expect("upload")).collect();
    let data = [b.upload(&x).expect("upload"), b.upload(&y).expect("upload")];
    let n_state = step.params + step.state;
    let mut losses = Vec::new();
    for _ in 0..steps {
        let inputs: Vec<&B::Tensor> = dev.iter().chain(data.iter()).collect();
        let mut out = b.run(&mut prog, &inputs).expect("run");
        let loss = out[n_state].clone();
        out.truncate(n_state);
        dev = out;
        losses.push(b.download(&loss).expect("download").to_scalar().expect("scalar"));
    }
    losses
}

/// An engine's own autograd (`native`) and the core's symbolic expansion (`symbolic`) agree
/// directly, output for output, on the unrolled meta-graph, and on a training step's losses.
pub fn check_native_and_symbolic_agree<N: Backend, S: Backend>(native: &N, symbolic: &S) {
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let opt = LstmOptimizer::default();
    let q = small_quadratics(8, 10);
    let g = unroll(&opt, &q, 2, Outer::Gradient, false).expect("graph");
    let inputs = meta_inputs(&opt, &q, 2, 4);
    let (a, b) = (run_on(native, &g, &inputs), run_on(symbolic, &g, &inputs));
    for (k, (name, _)) in g.outputs().iter().enumerate() {
        let (a, b) = (a[k].as_f32().expect("f32"), b[k].as_f32().expect("f32"));
        let err = max_rel_diff(&f64s(a), &f64s(b));
        assert!(err < 1e-5, "{name}: native and symbolic differ by {err:e}");
    }
    let opt = Optimizer::momentum(0.01, 0.9);
    let la = fixed_batch_losses(native, &opt, 10, 1);
    let lb = fixed_batch_losses(symbolic, &opt, 10, 1);
    let err = max_rel_diff(&f64s(&la), &f64s(&lb));
    assert!(err < 1e-5, "loss trajectories differ by {err:e}: {la:?} {lb:?}");
}

/// Defines the conformance tests for a backend built by `$make` (an expression), so every
/// engine runs the same checks.
#[macro_export]
macro_rules! backend_conformance_tests {
    ($make:expr) => {
        #[test]
        fn forward_matches_reference() {
            $crate::testing::check_forward(&$make, 0..4, 1e-4);
        }
        #[test]
        fn gradients_match_reference() {
            $crate::testing::check_gradients(&$make, 0..4, 1e-4);
        }
        #[test]
        fn max_pool_ties_route_the_gradient_to_the_first_maximum() {
            $crate::testing::check_max_pool_ties(&$make);
        }
        #[test]
        fn meta_gradient_of_two_step_unroll_matches_reference() {
            $crate::testing::check_meta_gradient(&$make, 1e-4);
        }
        #[test]
        fn few_shot_meta_gradients_match_reference() {
            $crate::testing::check_few_shot_meta_gradients(&$make, 1e-4);
        }
        #[test]
        fn batch_norm_second_derivatives_match_reference() {
            $crate::testing::check_batch_norm_second_order(&$make, 1e-4);
        }
        #[test]
        fn mlp_sgd_step_equals_hand_computed_update() {
            $crate::testing::check_mlp_sgd_step_by_hand(&$make);
        }
        #[test]
        fn momentum_training_reduces_loss_on_a_fixed_batch() {
            let losses = $crate::testing::fixed_batch_losses(
                &$make,
                &$crate::optim::Optimizer::momentum(0.05, 0.9),
                30,
                2,
            );
            assert!(losses.windows(2).take(10).all(|w| w[1] < w[0]), "losses {losses:?}");
            assert!(losses[29] < 0.5 * losses[0], "losses {losses:?}");
        }
        #[test]
        fn same_seed_same_loss_trajectory() {
            let opt = $crate::optim::Optimizer::momentum(0.01, 0.9);
            let a = $crate::testing::fixed_batch_losses(&$make, &opt, 5, 3);
            let b = $crate::testing::fixed_batch_losses(&$make, &opt, 5, 3);
            assert_eq!(a, b);
        }
    };
}

/// Whether Debian's Fashion-MNIST package is installed, for a test that reads it: a test
/// skips without it, and fails instead where `RANDBENCH_REQUIRE_DATA` is set (CI).
pub fn fashion_mnist_installed() -> bool {
    let dir = crate::data::FASHION_MNIST_DIR;
    if std::path::Path::new(dir).exists() {
        return true;
    }
    assert!(
        std::env::var_os("RANDBENCH_REQUIRE_DATA").is_none(),
        "{dir} is missing: scripts/setup-data.sh installs it"
    );
    eprintln!("skipped: {dir} is not installed (scripts/setup-data.sh installs it)");
    false
}

/// A fresh, empty directory for one test, `randbench-KIND-PID-NAME` under the temp dir,
/// removed when the test passes; a failing test's stays for a look.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(kind: &str, name: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("randbench-{kind}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("a directory under the temp dir");
        Scratch(d)
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
