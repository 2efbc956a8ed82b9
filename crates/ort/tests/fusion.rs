//! Fused elementwise kernels (randbench.Fused) give what ONNX Runtime's own ops give, one op
//! at a time, and they do run: on a learned optimizer's unroll and on a training step.

use randbench_core::l2l::{meta_optimizer, unroll, LstmOptimizer, Outer};
use randbench_core::models::{Activation, Model};
use randbench_core::testing::{
    max_rel_diff, meta_step_inputs, mlp_batch, run_on, small_quadratics,
};
use randbench_core::train::{starting_state, training_step, Feed};
use randbench_core::{Backend, Device, Graph, HostTensor};
use randbench_ort::OrtBackend;

/// Runs `g` with fusion on and off; the outputs must agree, and fusion must have happened.
fn fused_matches_separate(g: &Graph, inputs: &[HostTensor], tol: f64) {
    let fused = OrtBackend::new(Device::Cpu, 2).unwrap();
    assert!(fused.compile(g).unwrap().fused_groups() > 0, "nothing was fused");
    let separate = OrtBackend::new(Device::Cpu, 2).unwrap().with_fusion(false);
    assert_eq!(separate.compile(g).unwrap().fused_groups(), 0);
    let (a, b) = (run_on(&fused, g, inputs), run_on(&separate, g, inputs));
    for (k, (name, _)) in g.outputs().iter().enumerate() {
        let (x, y) = (a[k].clone().into_f32().unwrap(), b[k].clone().into_f32().unwrap());
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let err = max_rel_diff(&x, &y);
        assert!(err <= tol, "{name}: fused and separate ops differ by {err:e}");
    }
}

#[test]
fn a_meta_training_unroll_runs_the_same_fused() {
    let opt = LstmOptimizer::default();
    let q = small_quadratics(16, 10);
    let g = unroll(&opt, &q, 5, Outer::Adam { lr: 1e-3 }, false).unwrap();
    fused_matches_separate(&g, &meta_step_inputs(&opt, &q, 5, 3), 1e-4);
}

#[test]
fn a_training_step_runs_the_same_fused() {
    let model = Model::mlp([1, 28, 28], &[64], 10, Activation::Relu);
    let opt = meta_optimizer(1e-3);
    let step = training_step(&model, &opt, 32, Feed::Batch, false).unwrap();
    let mut inputs = starting_state(&model.params().unwrap(), &opt, 1);
    let (x, y) = mlp_batch(32, 1);
    inputs.extend([x, y]);
    fused_matches_separate(&step.graph, &inputs, 1e-4);
}
