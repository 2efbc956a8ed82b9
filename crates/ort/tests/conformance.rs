//! The shared backend checks on ort-cpu: every op's ONNX lowering, forward and with its
//! gradient expanded, against the reference; training steps as whole ONNX sessions.

use randbench_core::Device;
use randbench_ort::OrtBackend;

randbench_core::backend_conformance_tests!(OrtBackend::new(Device::Cpu).unwrap());

#[test]
fn asking_for_cuda_without_its_provider_is_an_error_not_a_cpu_run() {
    match OrtBackend::new(Device::Cuda(0)) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda:0") && msg.contains("CUDA execution provider"), "{msg}");
        }
        // Only where onnxruntime-gpu is installed and a GPU is present.
        Ok(b) => assert_eq!(randbench_core::Backend::id(&b).to_string(), "ort-cuda:0"),
    }
}
