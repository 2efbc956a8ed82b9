//! The shared backend checks, on candle-cpu with candle's autograd and with the core's
//! symbolic expansion.

use randbench_candle::CandleBackend;
use randbench_core::{Device, GradMode};

mod native {
    use super::*;
    randbench_core::backend_conformance_tests!(
        CandleBackend::new(Device::Cpu, GradMode::Native).unwrap()
    );
}

mod symbolic {
    use super::*;
    randbench_core::backend_conformance_tests!(
        CandleBackend::new(Device::Cpu, GradMode::Symbolic).unwrap()
    );
}

/// candle's own max_pool2d backward gives a single window maximum 1/k² of its gradient; the
/// backend routes tracked values around it. If this starts failing, candle fixed it upstream
/// and the workaround in `apply` can go.
#[test]
fn upstream_max_pool2d_backward_is_still_scaled() {
    use candle_core::{Tensor, Var};
    let x = Var::from_tensor(
        &Tensor::arange(0f32, 16., &candle_core::Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap(),
    )
    .unwrap();
    let grads = x.as_tensor().max_pool2d(2).unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(g.iter().sum::<f32>(), 1.0, "4 windows, each passing 1/4 instead of 1: {g:?}");
}

/// candle's autograd and the core's symbolic expansion agree directly, output for output, on
/// the unrolled meta-graph and on a training step.
#[test]
fn native_and_symbolic_agree_on_meta_graph_and_training_step() {
    use randbench_core::l2l::{unroll, LstmOptimizer, Outer};
    use randbench_core::testing::{max_rel_diff, meta_inputs, run_on, small_quadratics};
    let native = CandleBackend::new(Device::Cpu, GradMode::Native).unwrap();
    let symbolic = CandleBackend::new(Device::Cpu, GradMode::Symbolic).unwrap();
    let f64s = |t: &randbench_core::HostTensor| {
        t.as_f32().unwrap().iter().map(|&v| v as f64).collect::<Vec<_>>()
    };
    let opt = LstmOptimizer::default();
    let q = small_quadratics(8, 10);
    let g = unroll(&opt, &q, 2, Outer::Gradient, false).unwrap();
    let inputs = meta_inputs(&opt, &q, 2, 4);
    let (a, b) = (run_on(&native, &g, &inputs), run_on(&symbolic, &g, &inputs));
    for (k, (name, _)) in g.outputs().iter().enumerate() {
        let err = max_rel_diff(&f64s(&a[k]), &f64s(&b[k]));
        assert!(err < 1e-5, "{name}: native and symbolic differ by {err:e}");
    }
    let opt = randbench_core::optim::Optimizer::momentum(0.01, 0.9);
    let la = randbench_core::testing::fixed_batch_losses(&native, &opt, 10, 1);
    let lb = randbench_core::testing::fixed_batch_losses(&symbolic, &opt, 10, 1);
    let err = max_rel_diff(
        &la.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &lb.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    assert!(err < 1e-5, "loss trajectories differ by {err:e}: {la:?} {lb:?}");
}
