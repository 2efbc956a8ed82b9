//! Symbolic gradients against central finite differences, in f64 on the host.

use randbench_core::autodiff::expand_grads;
use randbench_core::graph::{Graph, GraphError, Op};
use randbench_core::l2l::{unroll, LstmOptimizer, Outer};
use randbench_core::models::init_params;
use randbench_core::reference::{evaluate_values, RefValue};
use randbench_core::rng::Rng;
use randbench_core::testing::{
    batch_norm_second_order, finite_differences, max_rel_diff, meta_inputs, op_cases,
    small_quadratics, with_gradients,
};
use randbench_core::DType;

const TOL: f64 = 1e-6;

#[test]
fn every_op_gradient_matches_finite_differences() {
    let mut checked = 0;
    for seed in 0..6 {
        for case in op_cases(seed) {
            let g = with_gradients(&case, seed);
            let expanded = expand_grads(&g).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert!(!expanded.has_grad_nodes());
            let inputs: Vec<RefValue> = case.inputs.iter().map(RefValue::from_host).collect();
            let vals = evaluate_values(&expanded, &inputs).unwrap();
            let mut out = 2; // outputs: y, loss, then one gradient per differentiable input
            for (i, &diff) in case.differentiable.iter().enumerate() {
                if !diff {
                    continue;
                }
                let fd = finite_differences(&g, 1, &inputs, i, 1e-6).unwrap();
                let err = max_rel_diff(&vals[out].data, &fd);
                assert!(
                    err < TOL,
                    "{} (seed {seed}) input {i}: symbolic {:?} vs finite differences {:?}",
                    case.name,
                    vals[out].data,
                    fd
                );
                out += 1;
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "only {checked} gradients checked");
}

#[test]
fn second_derivatives_through_nested_grad_match_finite_differences() {
    // h(x, W) = Σ (∂f/∂W)², f = Σ tanh(x·W)²: the outer Grad differentiates an inner one.
    let mut g = Graph::new();
    let x = g.input("x", &[3, 4], DType::F32);
    let w = g.input("w", &[4, 2], DType::F32);
    let xw = g.matmul(x, w).unwrap();
    let t = g.tanh(xw).unwrap();
    let sq = g.square(t).unwrap();
    let f = g.sum_all(sq).unwrap();
    let dw = g.grad(f, w).unwrap();
    let dw2 = g.square(dw).unwrap();
    let h = g.sum_all(dw2).unwrap();
    let dx = g.grad(h, x).unwrap();
    let dww = g.grad(h, w).unwrap();
    g.output("h", h);
    g.output("dx", dx);
    g.output("dw", dww);
    let expanded = expand_grads(&g).unwrap();
    let mut rng = Rng::new(11);
    let inputs: Vec<RefValue> = [vec![3, 4], vec![4, 2]]
        .iter()
        .map(|s| RefValue {
            shape: s.clone(),
            data: (0..s.iter().product()).map(|_| rng.uniform_in(-1.0, 1.0)).collect(),
        })
        .collect();
    let vals = evaluate_values(&expanded, &inputs).unwrap();
    for (which, out) in [(0, 1), (1, 2)] {
        let fd = finite_differences(&expanded, 0, &inputs, which, 1e-6).unwrap();
        assert!(
            max_rel_diff(&vals[out].data, &fd) < TOL,
            "input {which}: {:?} vs {fd:?}",
            vals[out].data
        );
    }
}

#[test]
fn second_derivatives_through_batch_norm_match_finite_differences() {
    // L = Σ (∂/∂x Σ y·w)², y = BatchNorm(x, γ, β): the outer Grad differentiates the op's VJP.
    for shape in [&[3, 2, 2, 3][..], &[5, 3]] {
        let (g, inputs) = batch_norm_second_order(shape, 2);
        let e = expand_grads(&g).unwrap();
        assert!(!e.has_grad_nodes());
        let inputs: Vec<RefValue> = inputs.iter().map(RefValue::from_host).collect();
        let vals = evaluate_values(&e, &inputs).unwrap();
        // Outputs: loss, grad.gamma, grad.x; inputs: x, gamma, beta, w.
        for (which, out) in [(1, 1), (0, 2)] {
            let fd = finite_differences(&e, 0, &inputs, which, 1e-6).unwrap();
            let sym = &vals[out].data;
            assert!(max_rel_diff(sym, &fd) < TOL, "{shape:?} input {which}: {sym:?} vs {fd:?}");
        }
    }
}

#[test]
fn stop_gradient_blocks_exactly_its_path() {
    // y = Σ x ⊙ stop(x): dy/dx = x, not 2x.
    let mut g = Graph::new();
    let x = g.input("x", &[4], DType::F32);
    let s = g.stop_gradient(x);
    let p = g.mul(x, s).unwrap();
    let y = g.sum_all(p).unwrap();
    let dx = g.grad(y, x).unwrap();
    g.output("dx", dx);
    let e = expand_grads(&g).unwrap();
    let xv = RefValue { shape: vec![4], data: vec![1.0, -2.0, 3.0, 0.5] };
    assert_eq!(evaluate_values(&e, std::slice::from_ref(&xv)).unwrap()[0].data, xv.data);
}

#[test]
fn gradient_of_unrelated_input_is_zero_and_grads_of_one_scalar_share_a_sweep() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 3], DType::F32);
    let b = g.input("b", &[2, 3], DType::F32);
    let unused = g.input("c", &[5], DType::F32);
    let p = g.mul(a, b).unwrap();
    let y = g.sum_all(p).unwrap();
    let grads = g.grads(y, &[a, b, unused]).unwrap();
    for (i, d) in grads.iter().enumerate() {
        g.output(format!("d{i}"), *d);
    }
    let e = expand_grads(&g).unwrap();
    // One backward sweep: a Mul per gradient; the forward product is dead (y is no output).
    let muls = e
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Binary(randbench_core::graph::BinaryOp::Mul)))
        .count();
    assert_eq!(muls, 2, "{}", e.dump());
    let av = RefValue { shape: vec![2, 3], data: vec![1., 2., 3., 4., 5., 6.] };
    let bv = RefValue { shape: vec![2, 3], data: vec![6., 5., 4., 3., 2., 1.] };
    let cv = RefValue { shape: vec![5], data: vec![1.0; 5] };
    let v = evaluate_values(&e, &[av.clone(), bv.clone(), cv]).unwrap();
    assert_eq!(v[0].data, bv.data);
    assert_eq!(v[1].data, av.data);
    assert_eq!(v[2].data, vec![0.0; 5]);
}

#[test]
fn gather_data_gradient_is_a_clear_error() {
    let mut g = Graph::new();
    let d = g.input("data", &[4, 2], DType::F32);
    let i = g.input("i", &[3], DType::I64);
    let r = g.gather(d, i).unwrap();
    let s = g.sum_all(r).unwrap();
    let dd = g.grad(s, d).unwrap();
    g.output("dd", dd);
    match expand_grads(&g) {
        Err(GraphError::GradUnsupported { op, .. }) => assert_eq!(op, "Gather"),
        other => panic!("expected GradUnsupported, got {other:?}"),
    }
}

#[test]
fn meta_gradient_with_second_order_terms_matches_finite_differences() {
    // Keeping the optimizee's second derivatives makes the meta-loss an ordinary function of φ,
    // so the nested expansion (an outer Grad through inner Grads) can be checked numerically.
    let opt = LstmOptimizer { hidden: 3, layers: 2, ..Default::default() };
    let q = small_quadratics(2, 3);
    let g = unroll(&opt, &q, 2, Outer::Gradient, true).unwrap();
    let e = expand_grads(&g).unwrap();
    let inputs: Vec<RefValue> =
        meta_inputs(&opt, &q, 2, 5).iter().map(RefValue::from_host).collect();
    let vals = evaluate_values(&e, &inputs).unwrap();
    let first_grad = e.outputs().iter().position(|(n, _)| n.starts_with("grad.")).unwrap();
    for p in 0..opt.params().len() {
        let fd = finite_differences(&e, 1, &inputs, p, 1e-6).unwrap();
        let sym = &vals[first_grad + p].data;
        assert!(max_rel_diff(sym, &fd) < 1e-5, "φ[{p}]: {sym:?} vs {fd:?}");
    }
}

#[test]
fn meta_gradient_without_second_order_differs_only_by_those_terms() {
    // With StopGradient the meta-gradient drops ∂²f terms: close to, but not equal to, the full one.
    let opt = LstmOptimizer { hidden: 3, layers: 2, ..Default::default() };
    let q = small_quadratics(2, 3);
    let inputs: Vec<RefValue> =
        meta_inputs(&opt, &q, 2, 5).iter().map(RefValue::from_host).collect();
    let run = |second: bool| {
        let e = expand_grads(&unroll(&opt, &q, 2, Outer::Gradient, second).unwrap()).unwrap();
        let first = e.outputs().iter().position(|(n, _)| n.starts_with("grad.")).unwrap();
        let v = evaluate_values(&e, &inputs).unwrap();
        (v[1].data[0], v[first..].iter().flat_map(|r| r.data.clone()).collect::<Vec<f64>>())
    };
    let (loss_stop, g_stop) = run(false);
    let (loss_full, g_full) = run(true);
    assert_eq!(loss_stop, loss_full, "StopGradient must not change values");
    assert_ne!(g_stop, g_full);
    assert!(max_rel_diff(&g_stop, &g_full) < 0.5);
}

#[test]
fn same_seed_gives_same_initial_weights() {
    let model = randbench_core::models::Model::mlp(
        [1, 28, 28],
        &[512],
        10,
        randbench_core::models::Activation::Relu,
    );
    let specs = model.params().unwrap();
    assert_eq!(init_params(&specs, 3), init_params(&specs, 3));
    assert_ne!(init_params(&specs, 3), init_params(&specs, 4));
    // PyTorch's default bound for the first layer: 1/√784.
    let w = init_params(&specs, 3)[0].as_f32().unwrap().to_vec();
    let bound = 1.0 / 28.0;
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound));
}

#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum_only() {
    let (g, inputs, expected) = randbench_core::testing::max_pool_ties();
    let got = randbench_core::reference::evaluate(&expand_grads(&g).unwrap(), &inputs).unwrap();
    assert_eq!(got[0].data, expected);
}
