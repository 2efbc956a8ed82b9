//! The shared backend checks, on burn-cpu: burn-flex under burn's autograd, and bare with the
//! core's symbolic expansion.

use randbench_burn::{BurnBackend, Flex, FlexAutodiff};

mod native {
    use super::*;
    randbench_core::backend_conformance_tests!(BurnBackend::<FlexAutodiff>::cpu());
}

mod symbolic {
    use super::*;
    randbench_core::backend_conformance_tests!(BurnBackend::<Flex>::cpu());
}

/// burn's autograd and the core's symbolic expansion agree directly, output for output, on
/// the unrolled meta-graph and on a training step.
#[test]
fn native_and_symbolic_agree_on_meta_graph_and_training_step() {
    use randbench_core::l2l::{unroll, LstmOptimizer, Outer};
    use randbench_core::testing::{
        fixed_batch_losses, max_rel_diff, meta_inputs, run_on, small_quadratics,
    };
    let native = BurnBackend::<FlexAutodiff>::cpu();
    let symbolic = BurnBackend::<Flex>::cpu();
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let opt = LstmOptimizer::default();
    let q = small_quadratics(8, 10);
    let g = unroll(&opt, &q, 2, Outer::Gradient, false).unwrap();
    let inputs = meta_inputs(&opt, &q, 2, 4);
    let (a, b) = (run_on(&native, &g, &inputs), run_on(&symbolic, &g, &inputs));
    for (k, (name, _)) in g.outputs().iter().enumerate() {
        let err = max_rel_diff(&f64s(a[k].as_f32().unwrap()), &f64s(b[k].as_f32().unwrap()));
        assert!(err < 1e-5, "{name}: native and symbolic differ by {err:e}");
    }
    let opt = randbench_core::optim::Optimizer::momentum(0.01, 0.9);
    let la = fixed_batch_losses(&native, &opt, 10, 1);
    let lb = fixed_batch_losses(&symbolic, &opt, 10, 1);
    let err = max_rel_diff(&f64s(&la), &f64s(&lb));
    assert!(err < 1e-5, "loss trajectories differ by {err:e}: {la:?} {lb:?}");
}
