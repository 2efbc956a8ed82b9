//! The shared backend checks on ort-cpu: every op's ONNX lowering, forward and with its
//! gradient expanded, against the reference; training steps as whole ONNX sessions.

use randbench_core::Device;
use randbench_ort::OrtBackend;

/// ONNX Runtime's one thread pool per process: every backend of this test binary asks for it.
const THREADS: usize = 2;

randbench_core::backend_conformance_tests!(OrtBackend::new(Device::Cpu, THREADS).unwrap());

#[test]
fn another_thread_count_in_the_same_process_is_an_error_not_ignored() {
    OrtBackend::new(Device::Cpu, THREADS).unwrap();
    let err = OrtBackend::new(Device::Cpu, THREADS + 1).err().expect("a second count was taken");
    let msg = err.to_string();
    assert!(msg.contains("already has 2") && msg.contains("ort-cpu"), "{msg}");
}

#[test]
fn asking_for_cuda_without_its_provider_is_an_error_not_a_cpu_run() {
    match OrtBackend::new(Device::Cuda(0), THREADS) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda:0") && msg.contains("CUDA execution provider"), "{msg}");
        }
        // Only where onnxruntime-gpu is installed and a GPU is present.
        Ok(b) => assert_eq!(randbench_core::Backend::id(&b).to_string(), "ort-cuda:0"),
    }
}
