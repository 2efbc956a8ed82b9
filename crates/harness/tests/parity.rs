//! Loss-trajectory parity across engines: the same initial weights, data order and optimizer
//! give the same per-step training losses on candle and libtorch.
#![cfg(all(feature = "candle", feature = "tch"))]

use randbench::backends::{with_backend, BackendVisitor};
use randbench::randomization::{run_cell, CellPlan, Observer};
use randbench::report::{PARITY_ABS, PARITY_REL};
use randbench::results::CellResult;
use randbench::runner::load_data;
use randbench::suite::{parse, Regularizer, Workload};
use randbench_core::backend::Backend;
use randbench_core::corrupt::Condition;
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

struct Quiet;
impl Observer for Quiet {
    fn epoch(&mut self, _: usize, _: f64) {}
    fn should_stop(&self) -> bool {
        false
    }
}

struct Train<'a>(CellPlan<'a>);
impl BackendVisitor for Train<'_> {
    type Out = CellResult;
    fn visit<B: Backend>(self, b: &B) -> CellResult {
        run_cell(b, &self.0, &mut Quiet)
    }
}

#[test]
fn two_hundred_momentum_steps_agree_on_candle_and_libtorch() {
    let suite = parse(SUITE, std::path::Path::new("parity.yaml")).unwrap();
    let Workload::Randomization(w) = &suite.workloads[0];
    let split = load_data(&w.data).unwrap();
    let run = |backend: &str| {
        let plan = CellPlan { suite: "parity", workload: w, condition: Condition::TrueLabels, regularizer: Regularizer::default(), seed: 7, split: &split };
        with_backend(backend.parse::<BackendId>().unwrap(), GradMode::Native, Train(plan)).unwrap()
    };
    let (candle, torch) = (run("candle-cpu"), run("tch-cpu"));
    assert_eq!(candle.steps, 200, "{:?}", candle.status);
    assert_eq!(torch.steps, 200);
    assert!(candle.step_losses[199] < 0.8 * candle.step_losses[0], "the losses should fall: {:?}", candle.step_losses);
    for (step, (a, b)) in candle.step_losses.iter().zip(&torch.step_losses).enumerate() {
        let (a, b) = (*a as f64, *b as f64);
        assert!((a - b).abs() <= PARITY_ABS + PARITY_REL * a.abs(), "step {}: candle {a} vs libtorch {b}", step + 1);
    }
}
