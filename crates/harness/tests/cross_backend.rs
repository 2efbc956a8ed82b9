//! Every engine compiled in against candle, op by op: the ONNX lowering and libtorch's kernels
//! give candle's values, forward and with gradients (candle's autograd on one side).
#![cfg(all(feature = "candle", any(feature = "tch", feature = "ort")))]

mod common;

use common::RunGraph;
use randbench::backends::{usable_here, with_backend};
use randbench_core::testing::{max_rel_diff, op_cases, with_gradients};
use randbench_core::{BackendId, Device, Engine, GradMode, HostTensor};

fn values(t: &HostTensor) -> Vec<f64> {
    match t.data() {
        randbench_core::HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        randbench_core::HostData::I64(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

#[test]
fn every_op_forward_and_gradient_agrees_with_candle() {
    let candle = BackendId { engine: Engine::Candle, device: Device::Cpu };
    let others: Vec<BackendId> = usable_here()
        .into_iter()
        .filter(|id| id.engine != Engine::Candle && id.device == Device::Cpu)
        .collect();
    assert!(!others.is_empty());
    let mut compared = 0;
    for seed in 0..3 {
        for case in op_cases(seed) {
            let g = with_gradients(&case, seed);
            let expected =
                with_backend(candle, GradMode::Native, RunGraph(&g, &case.inputs)).unwrap();
            for &id in &others {
                let got = with_backend(id, GradMode::Native, RunGraph(&g, &case.inputs)).unwrap();
                for (k, (name, _)) in g.outputs().iter().enumerate() {
                    let err = max_rel_diff(&values(&got[k]), &values(&expected[k]));
                    assert!(
                        err < 1e-4,
                        "{id} vs candle-cpu: {} (seed {seed}) output {name} differs by {err:e}",
                        case.name
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 200 * others.len());
}
