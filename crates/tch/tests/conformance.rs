//! The shared backend checks, on tch-cpu with libtorch's autograd and with the core's
//! symbolic expansion.

use randbench_core::{Device, GradMode};
use randbench_tch::TchBackend;

mod native {
    use super::*;
    randbench_core::backend_conformance_tests!(
        TchBackend::new(Device::Cpu, GradMode::Native, 2).unwrap()
    );
}

mod symbolic {
    use super::*;
    randbench_core::backend_conformance_tests!(
        TchBackend::new(Device::Cpu, GradMode::Symbolic, 2).unwrap()
    );
}

#[test]
fn asking_for_a_missing_cuda_device_is_an_error_not_a_cpu_run() {
    let n = tch::Cuda::device_count() as usize;
    match TchBackend::new(Device::Cuda(n), GradMode::Native, 2) {
        Err(e) => assert!(e.to_string().contains(&format!("cuda:{n}")), "{e}"),
        Ok(_) => panic!("cuda:{n} does not exist, yet a backend was made"),
    }
}

#[test]
fn libtorch_cuda_is_linked_so_cuda_can_be_found() {
    // Without --no-as-needed the linker drops libtorch_cuda and CUDA looks absent on a GPU
    // machine; on this one the library must at least be loaded.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(maps.contains("libtorch_cuda.so"), "libtorch_cuda.so is not loaded");
}

/// The same checks on tch-cuda:0, in a build with `--features cuda` for a machine with an
/// NVIDIA GPU (`scripts/gpu-build.sh` builds them, `scripts/gpu-check.sh` runs them there).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    mod native {
        use super::*;
        randbench_core::backend_conformance_tests!(TchBackend::new(
            Device::Cuda(0),
            GradMode::Native,
            2
        )
        .unwrap());
    }

    mod symbolic {
        use super::*;
        randbench_core::backend_conformance_tests!(TchBackend::new(
            Device::Cuda(0),
            GradMode::Symbolic,
            2
        )
        .unwrap());
    }
}
