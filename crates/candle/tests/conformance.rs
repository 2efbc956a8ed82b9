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
    randbench_core::testing::check_native_and_symbolic_agree(
        &CandleBackend::new(Device::Cpu, GradMode::Native).unwrap(),
        &CandleBackend::new(Device::Cpu, GradMode::Symbolic).unwrap(),
    );
}

/// The same checks on candle-cuda:0, in a build with `--features cuda` for a machine with an
/// NVIDIA GPU (`scripts/gpu-build.sh` builds them, `scripts/gpu-check.sh` runs them there).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    mod native {
        use super::*;
        randbench_core::backend_conformance_tests!(CandleBackend::new(
            Device::Cuda(0),
            GradMode::Native
        )
        .unwrap());
    }

    mod symbolic {
        use super::*;
        randbench_core::backend_conformance_tests!(CandleBackend::new(
            Device::Cuda(0),
            GradMode::Symbolic
        )
        .unwrap());
    }
}
