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
    randbench_core::testing::check_native_and_symbolic_agree(
        &BurnBackend::<FlexAutodiff>::cpu(),
        &BurnBackend::<Flex>::cpu(),
    );
}

/// The same checks on burn-cuda:0, in a build with `--features cuda` for a machine with an
/// NVIDIA GPU (`scripts/gpu-build.sh` builds them, `scripts/gpu-check.sh` runs them there).
#[cfg(feature = "cuda")]
mod cuda {
    use randbench_burn::{BurnBackend, Cuda, CudaAutodiff};

    mod native {
        use super::*;
        randbench_core::backend_conformance_tests!(BurnBackend::<CudaAutodiff>::cuda(0).unwrap());
    }

    mod symbolic {
        use super::*;
        randbench_core::backend_conformance_tests!(BurnBackend::<Cuda>::cuda(0).unwrap());
    }
}
