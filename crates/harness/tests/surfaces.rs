//! The loss-surface family on every CPU engine this build has: the line program against the
//! host-side interpolation, and a whole cell on every engine with the same numbers.

mod common;

use common::{cpu_backend_ids, run_on_cpu_backends, RunGraph};
use randbench::backends::with_backend;
use randbench::families::Metrics;
use randbench_core::models::{init_params, Activation, CnnSpec, Model};
use randbench_core::reference::{evaluate, RefValue};
use randbench_core::rng::Rng;
use randbench_core::train::{eval_graph, interpolation_graph, Feed};
use randbench_core::{GradMode, HostTensor};

fn f32s(t: &HostTensor) -> Vec<f64> {
    t.as_f32().unwrap().iter().map(|&v| v as f64).collect()
}

#[test]
fn the_line_program_matches_the_host_side_interpolation_at_a_few_alphas() {
    let models = [
        Model::mlp([1, 6, 6], &[8], 3, Activation::Relu),
        Model::Cnn {
            input: [1, 8, 8],
            spec: CnnSpec { channels: vec![2], kernel: 3, hidden: 6 },
            classes: 3,
        },
    ];
    let alphas = [-0.5, 0.3, 1.0];
    for model in models {
        let specs = model.params().unwrap();
        let (a, b) = (init_params(&specs, 1), init_params(&specs, 2));
        let [c, h, w] = model.input_shape();
        let mut rng = Rng::stream(3, "test");
        let batch = 5;
        let x = HostTensor::f32(
            vec![batch, c, h, w],
            (0..batch * c * h * w).map(|_| rng.normal() as f32).collect(),
        )
        .unwrap();
        let y = HostTensor::i64(vec![batch], (0..batch).map(|_| rng.below(3) as i64).collect())
            .unwrap();
        let line = interpolation_graph(&model, batch, Feed::Batch, alphas.len()).unwrap();
        let mut inputs: Vec<HostTensor> = a.iter().chain(&b).cloned().collect();
        inputs.extend(alphas.iter().map(|&al| HostTensor::scalar(al as f32)));
        inputs.extend([x.clone(), y.clone()]);
        // The host side: each point's parameters mixed here, evaluated by the core's f64
        // reference evaluator on the plain evaluation graph.
        let eval = eval_graph(&model, batch, Feed::Batch).unwrap();
        let expected: Vec<(Vec<f64>, Vec<f64>)> = alphas
            .iter()
            .map(|&al| {
                let mut point: Vec<HostTensor> = a
                    .iter()
                    .zip(&b)
                    .map(|(pa, pb)| {
                        let mixed = f32s(pa)
                            .iter()
                            .zip(f32s(pb))
                            .map(|(p, q)| ((1.0 - al) * p + al * q) as f32)
                            .collect();
                        HostTensor::f32(pa.shape().to_vec(), mixed).unwrap()
                    })
                    .collect();
                point.extend([x.clone(), y.clone()]);
                let out: Vec<RefValue> = evaluate(&eval, &point).unwrap();
                (out[0].data.clone(), out[1].data.clone())
            })
            .collect();
        for id in cpu_backend_ids() {
            let out = with_backend(id, GradMode::Native, RunGraph(&line, &inputs)).unwrap();
            for (k, (loss, correct)) in expected.iter().enumerate() {
                let got = f32s(&out[2 * k]);
                for (g, e) in got.iter().zip(loss) {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{id}, α = {}: loss {g} against the host's {e}",
                        alphas[k]
                    );
                }
                assert_eq!(&f32s(&out[2 * k + 1]), correct, "{id}, α = {}", alphas[k]);
            }
        }
    }
}

const SUITE: &str = r#"
seeds: [0]
workloads:
  - loss_surface:
      name: tiny
      data: {source: synthetic, train: 300, test: 100, image: [1, 8, 8]}
      model:
        mlp: {hidden: [16]}
      batch: 50
      epochs: 4
      optimizers:
        - {kind: sgd, lr: 0.1}
        - {kind: nesterov, lr: 0.05, momentum: 0.9}
        - {kind: adam, lr: 0.01}
      switches:
        - {from: sgd, to: adam, at: [0.5]}
      interpolation: {from: -0.5, to: 1.5, points: 9}
"#;

fn surface(r: &randbench_schema::CellResult) -> randbench::families::surfaces::Metrics {
    match Metrics::of(r).expect("the line reads as its family's") {
        Metrics::LossSurface(m) => m,
        _ => panic!("a loss-surface cell"),
    }
}

#[test]
fn every_engine_walks_the_same_lines() {
    let results = run_on_cpu_backends(SUITE);
    let first = surface(&results[0]);
    // Three optimizers and one switch: four end points; three pairs and the switch's two lines.
    let names: Vec<&str> = first.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["sgd", "nesterov", "adam", "sgd→adam@50%"]);
    assert_eq!(first.lines.len(), 3 + 2);
    assert_eq!(first.lines[3].a, "sgd→adam@50%");
    for l in &first.lines {
        assert_eq!(l.alphas.len(), 9);
        assert!(l.train_barrier.unwrap() >= 0.0 && l.distance > 0.0, "{l:?}");
    }
    assert!(first.line_examples_per_second.unwrap() > 0.0);
    for r in &results {
        assert_eq!(r.status, randbench_schema::Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        let m = surface(r);
        for (e, f) in m.endpoints.iter().zip(&first.endpoints) {
            let (te, tf) = (e.test.unwrap(), f.test.unwrap());
            assert!(
                (te.accuracy - tf.accuracy).abs() <= 0.02,
                "{} {}: test accuracy {} against {}",
                r.cell.backend,
                e.name,
                te.accuracy,
                tf.accuracy
            );
        }
        for (l, f) in m.lines.iter().zip(&first.lines) {
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 + 1e-2 * y.abs();
            assert!(close(l.distance, f.distance), "{}: {l:?} against {f:?}", r.cell.backend);
            assert!(
                close(l.train_barrier.unwrap(), f.train_barrier.unwrap()),
                "{}: {} — {} barrier {:?} against {:?}",
                r.cell.backend,
                l.a,
                l.b,
                l.train_barrier,
                f.train_barrier
            );
        }
    }
}
