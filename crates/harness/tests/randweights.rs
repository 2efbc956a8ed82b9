//! The random-weights family on every CPU engine this build has: the gradient with respect to
//! the input against finite differences, and reconstructions that reduce the feature loss
//! alike on every engine.

mod common;

use common::{cpu_backend_ids, run_on_cpu_backends, RunGraph};
use randbench::backends::with_backend;
use randbench::families::Metrics;
use randbench_core::models::{init_params, CnnSpec, Model};
use randbench_core::optim::Optimizer;
use randbench_core::reference::{evaluate_values, RefValue};
use randbench_core::rng::Rng;
use randbench_core::train::{features_graph, inversion_step, Feed};
use randbench_core::{GradMode, HostTensor};

#[test]
fn the_input_gradient_of_a_small_conv_net_matches_finite_differences_on_every_engine() {
    let model = Model::Cnn {
        input: [1, 8, 8],
        spec: CnnSpec { channels: vec![3, 4], kernel: 3, hidden: 5 },
        classes: 3,
    };
    let depth = 2;
    let specs = model.params().unwrap();
    let params = init_params(&specs, 7)[..2 * depth].to_vec();
    let mut rng = Rng::stream(1, "test");
    let pixels: Vec<f32> = (0..64).map(|_| rng.uniform() as f32).collect();
    let x = HostTensor::f32(vec![1, 1, 8, 8], pixels.clone()).unwrap();
    let width = 4 * 2 * 2;
    let target =
        HostTensor::f32(vec![1, width], (0..width).map(|_| rng.uniform() as f32).collect())
            .unwrap();
    // The loss in f64 on the host, from the core's reference evaluator.
    let features = features_graph(&model, depth, 1, Feed::Batch).unwrap();
    let loss_at = |image: &[f64]| -> f64 {
        let mut inputs: Vec<RefValue> = params.iter().map(RefValue::from_host).collect();
        inputs.push(RefValue { shape: vec![1, 1, 8, 8], data: image.to_vec() });
        inputs.push(RefValue { shape: vec![1], data: vec![0.0] });
        let f = &evaluate_values(&features, &inputs).unwrap()[0].data;
        let t = target.as_f32().unwrap();
        f.iter().zip(t).map(|(a, b)| (a - *b as f64).powi(2)).sum::<f64>() / width as f64
    };
    let base: Vec<f64> = pixels.iter().map(|&v| v as f64).collect();
    let h = 1e-4;
    let numeric: Vec<f64> = (0..64)
        .map(|i| {
            let (mut up, mut down) = (base.clone(), base.clone());
            up[i] += h;
            down[i] -= h;
            (loss_at(&up) - loss_at(&down)) / (2.0 * h)
        })
        .collect();
    assert!(numeric.iter().any(|g| g.abs() > 1e-4), "a gradient to compare: {numeric:?}");
    // The engine's gradient: one plain gradient step of size 1 moves x by −∇.
    let step = inversion_step(&model, depth, 1, &Optimizer::sgd(1.0)).unwrap();
    let mut inputs = params.clone();
    inputs.extend([x, target.clone()]);
    for id in cpu_backend_ids() {
        for mode in [GradMode::Native, GradMode::Symbolic] {
            let out = with_backend(id, mode, RunGraph(&step.graph, &inputs)).unwrap();
            let moved = out[0].as_f32().unwrap();
            for (i, g) in numeric.iter().enumerate() {
                let engine = (pixels[i] - moved[i]) as f64;
                assert!(
                    (engine - g).abs() <= 1e-5 + 2e-2 * g.abs(),
                    "{id} ({mode:?}): ∂loss/∂x[{i}] is {engine:e}, finite differences say {g:e}"
                );
            }
        }
    }
}

const SUITE: &str = r#"
seeds: [0]
workloads:
  - random_weights:
      name: tiny
      data: {source: synthetic, train: 200, test: 50, image: [1, 8, 8]}
      model:
        cnn: {channels: [3, 4], kernel: 3, hidden: 8}
      images: 2
      reconstruction: {steps: 60, lr: 0.05}
      training: {epochs: 2, batch: 50, optimizer: {kind: adam, lr: 0.01}}
      probe: {epochs: 3, lr: 0.01}
"#;

fn metrics(r: &randbench_schema::CellResult) -> randbench::families::randweights::Metrics {
    match Metrics::of(r).expect("the line reads as its family's") {
        Metrics::RandomWeights(m) => m,
        _ => panic!("a random-weights cell"),
    }
}

#[test]
fn a_reconstruction_on_a_tiny_image_reduces_the_feature_loss_alike_on_every_engine() {
    let results = run_on_cpu_backends(SUITE);
    let first = metrics(&results[0]);
    // Two depths, random and trained weights.
    assert_eq!(first.reconstructions.len(), 4);
    for r in &results {
        assert_eq!(r.status, randbench_schema::Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        let m = metrics(r);
        for (x, f) in m.reconstructions.iter().zip(&first.reconstructions) {
            let (start, end) = (x.start_loss.unwrap(), x.end_loss.unwrap());
            assert!(end < 0.5 * start, "{} {x:?}: the feature loss did not fall", r.cell.backend);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 + 1e-2 * b.abs();
            assert!(
                close(end, f.end_loss.unwrap()) && (x.psnr - f.psnr).abs() < 0.1,
                "{}: {x:?} against {f:?}",
                r.cell.backend
            );
        }
        assert!(m.probe_features == 16 && m.probe_test_accuracy.is_some());
        assert!(
            (m.probe_test_accuracy.unwrap() - first.probe_test_accuracy.unwrap()).abs() <= 0.02
        );
    }
}
