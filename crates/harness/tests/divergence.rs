//! A loss or figure that stops being finite, in any family, leaves a readable result line with
//! status `diverged` and its step — in this process and in a cell's child process alike — and
//! every reader of results (`report`, `compare`, `ingest`, `export`) then reads the run.

mod common;

use common::{randbench, run_suite, scratch};
use randbench::families::Registry;
use randbench_schema::{results, Status};
use std::path::Path;

/// Each family, set up to blow up.
const SUITES: &[(&str, &str)] = &[
    (
        "randomization",
        r#"
workloads:
  - randomization:
      data: {source: synthetic, train: 200, test: 100, image: [1, 16, 16]}
      model:
        mlp: {hidden: [32]}
      optimizer: {kind: momentum, lr: 1000000.0, momentum: 0.9}
      batch: 50
      conditions: [true_labels]
      max_epochs: 5
"#,
    ),
    // A huge output scale and meta learning rate: the first meta-steps throw the optimizee's
    // parameters to infinity.
    (
        "learned_optimizer",
        r#"
workloads:
  - learned_optimizer:
      problem: {simple: {}}
      optimizer: {layers: 1, hidden: 4, preprocess: none, output_scale: 1.0e30}
      meta: {epochs: 20, horizon: 20, unroll: 20, lr: 1.0e10, eval_every: 20, validation_problems: 1}
      evaluation: {problems: 1, steps: 20}
      baselines: {rules: [sgd], lrs: [0.1], tuning_problems: 1}
      memory_unrolls: []
"#,
    ),
    (
        "loss_surface",
        r#"
workloads:
  - loss_surface:
      data: {source: synthetic, train: 300, test: 100, image: [1, 8, 8]}
      model:
        mlp: {hidden: [16]}
      batch: 50
      epochs: 2
      optimizers:
        - {kind: sgd, lr: 1.0e30}
        - {kind: adam, lr: 0.01}
      interpolation: {from: 0.0, to: 1.0, points: 3}
"#,
    ),
    // A reconstruction whose steps (Adam on the image, each about the learning rate) leave
    // the range of f32 features.
    (
        "random_weights",
        r#"
workloads:
  - random_weights:
      data: {source: synthetic, train: 200, test: 50, image: [1, 8, 8]}
      model:
        cnn: {channels: [3], kernel: 3, hidden: 8}
      images: 2
      reconstruction: {steps: 5, lr: 1.0e30}
      training: {epochs: 1, batch: 50, optimizer: {kind: adam, lr: 0.01}}
      probe: {epochs: 1, lr: 0.01}
"#,
    ),
];

fn check_run(out: &Path, family: &str, how: &str) {
    let read = results::read(out, &Registry).unwrap();
    assert!(read.skipped.is_empty(), "{family} {how}: {:?}", read.skipped);
    assert!(!read.results.is_empty(), "{family} {how}: no results");
    for r in &read.results {
        assert_eq!(r.status, Status::Diverged, "{family} {how}: {:?} {:?}", r.status, r.error);
        assert!(r.diverged_at.is_some(), "{family} {how}: no step");
        assert!(r.step_losses.iter().all(|l| l.is_finite()), "{family} {how}");
        assert_eq!(r.metrics.family, family);
    }
}

#[test]
fn every_family_records_a_divergence_readably_in_process_and_in_a_child() {
    let backend = "candle-cpu";
    for (family, text) in SUITES {
        let dir = scratch("diverge", family);
        let here =
            run_suite(&dir, text, "here", &["--backends", backend, "--isolate", "none"], &[]);
        check_run(&here, family, "in process");
        let child =
            run_suite(&dir, text, "child", &["--backends", backend, "--isolate", "process"], &[]);
        check_run(&child, family, "in a child process");

        let (here, child) = (here.to_str().unwrap(), child.to_str().unwrap());
        let o = randbench(&["report", child], &[]);
        assert!(o.status.success(), "{family}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("diverged"), "{family}");
        // One round each: too noisy to judge speed (3) or unchanged (0), never unreadable.
        let o = randbench(&["compare", here, child], &[]);
        assert!(matches!(o.status.code(), Some(0 | 3)), "{family}: {o:?}");
        let db = dir.join("history.sqlite");
        let o = randbench(&["ingest", here, child, "--db", db.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(0), "{family}: {}", String::from_utf8_lossy(&o.stderr));
        for format in ["bencher", "github-smaller", "github-bigger"] {
            let o = randbench(&["export", child, "--format", format], &[]);
            assert_eq!(o.status.code(), Some(0), "{family} {format}: {o:?}");
            let _: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        }
    }
}
