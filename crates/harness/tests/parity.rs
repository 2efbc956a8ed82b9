//! Loss-trajectory parity across engines: the same initial weights, data order and optimizer
//! give the same per-step training losses on candle, libtorch and ONNX Runtime.
#![cfg(all(feature = "candle", any(feature = "tch", feature = "ort")))]

mod common;

use common::Quiet;

use randbench::backends::usable_here;
use randbench::executor::{CellJob, Executor, InProcess};
use randbench::families::Metrics;
use randbench::presentation::{PARITY_ABS, PARITY_REL};
use randbench::suite::parse;
use randbench_core::{BackendId, GradMode};

/// 2,560 synthetic 28×28 images, batch 128: 20 steps an epoch, 10 epochs, 200 steps; a small
/// learning rate so the training set is not fitted (and training not stopped) before.
const SUITE: &str = r#"
workloads:
  - randomization:
      data: {source: synthetic, train: 2560, test: 256}
      model:
        mlp: {hidden: [512]}
      optimizer: {kind: momentum, lr: 0.003, momentum: 0.9}
      batch: 128
      conditions: [true_labels]
      max_epochs: 10
"#;

#[test]
fn two_hundred_momentum_steps_agree_on_every_engine() {
    let mut suite = parse(SUITE, std::path::Path::new("parity.yaml")).unwrap();
    suite.seeds = vec![7];
    let workload = &suite.workloads[0];
    let data = workload.prepare().unwrap();
    let run = |backend: &str| {
        let id: BackendId = backend.parse().unwrap();
        let cell = suite.cells(&[id]).remove(0);
        let job = CellJob {
            suite: &suite,
            workload,
            data: &data,
            cell: &cell,
            round: 0,
            grad: GradMode::Native,
            artifacts: None,
        };
        let r = InProcess.execute(&job, &mut Quiet);
        let Ok(Metrics::Randomization(m)) = Metrics::of(&r) else { panic!("a randomization cell") };
        assert_eq!(m.steps, 200, "{backend}: {:?} {:?}", r.status, r.error);
        r
    };
    let candle = run("candle-cpu");
    assert!(
        candle.step_losses[199] < 0.8 * candle.step_losses[0],
        "the losses should fall: {:?}",
        candle.step_losses
    );
    let others: Vec<String> = usable_here()
        .iter()
        .filter(|id| id.device == randbench_core::Device::Cpu && id.to_string() != "candle-cpu")
        .map(|id| id.to_string())
        .collect();
    assert!(!others.is_empty());
    for other in others {
        let r = run(&other);
        // A shorter trajectory is a failure, not fewer steps compared.
        assert_eq!(r.step_losses.len(), candle.step_losses.len(), "{other}: steps traced");
        for (step, (a, b)) in candle.step_losses.iter().zip(&r.step_losses).enumerate() {
            let (a, b) = (*a as f64, *b as f64);
            assert!(
                (a - b).abs() <= PARITY_ABS + PARITY_REL * a.abs(),
                "step {}: candle-cpu {a} vs {other} {b}",
                step + 1
            );
        }
    }
}
