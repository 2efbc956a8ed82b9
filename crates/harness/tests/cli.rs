//! The randbench binary end to end: a small suite on synthetic data, bad suites, list, report.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn randbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_randbench")).args(args).output().expect("randbench runs")
}

fn scratch(name: &str) -> common::Scratch {
    common::scratch("cli", name)
}

const TINY: &str = r#"
description: a tiny suite for the end-to-end test
backends: [candle-cpu]
seeds: [3]
workloads:
  - randomization:
      name: tiny
      data: {source: synthetic, train: 200, test: 100, image: [1, 16, 16]}
      model:
        mlp: {hidden: [32]}
      optimizer: {kind: momentum, lr: 0.1, momentum: 0.9}
      batch: 50
      conditions: [true_labels, random_labels]
      max_epochs: 300
"#;

fn write_suite(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A randomization result's own metrics.
fn metrics(r: &serde_json::Value) -> &serde_json::Value {
    &r["metrics"]["randomization"]
}

fn lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_small_suite_writes_results_tables_and_report() {
    let dir = scratch("tiny");
    let suite = write_suite(&dir, "tiny.yaml", TINY);
    let out = dir.join("out");
    let o = randbench(&["run", &suite, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = lines(&out);
    assert_eq!(results.len(), 2);
    for (r, cond) in results.iter().zip(["true_labels", "random_labels"]) {
        let (cell, m) = (&r["cell"], metrics(r));
        assert_eq!(cell["variant"]["randomization"]["condition"], cond);
        assert_eq!(cell["backend"], "candle-cpu");
        assert_eq!(cell["workload"], "tiny");
        assert_eq!(cell["seed"], 3);
        assert_eq!(m["model"], "mlp-256-32-10");
        assert_eq!(r["status"], "ok", "{r}");
        // Each engine's faster mode by default: the symbolic expansion on candle.
        assert_eq!(r["grad"], "symbolic");
        assert_eq!(m["train_accuracy"], 1.0);
        for field in [
            "epochs_to_fit",
            "steps_to_fit",
            "seconds_to_fit",
            "test_accuracy",
            "steps_per_second",
            "examples_per_second",
        ] {
            assert!(!m[field].is_null(), "{field} missing in {r}");
        }
        for field in ["compile_seconds", "first_step_seconds"] {
            assert!(r[field].as_f64().unwrap() > 0.0, "{field} missing in {r}");
        }
        assert!(r["memory"]["host_peak"].as_u64().unwrap() > 0, "{r}");
        assert!(
            m["steps_per_second"]["q1"].as_f64().unwrap()
                <= m["steps_per_second"]["median"].as_f64().unwrap()
        );
        // Warm-up runs before the clock: every step of the cell is timed.
        assert_eq!(m["steps_per_second"]["n"], m["steps"], "{r}");
    }
    // Random labels take longer to fit than true labels, and generalize at chance.
    let (t, rl) = (metrics(&results[0]), metrics(&results[1]));
    assert!(rl["epochs_to_fit"].as_u64() > t["epochs_to_fit"].as_u64());
    assert!(t["test_accuracy"].as_f64().unwrap() > 0.5);
    assert!(rl["test_accuracy"].as_f64().unwrap() < 0.3);
    assert!(out.join("environment.json").is_file() && out.join("report.md").is_file());

    // The same seed trains the same way: epochs are part of the snapshot.
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    insta::with_settings!({filters => vec![
        // The machine and build line differs from machine to machine.
        (r"(?m)^tiny: machine .*$", "tiny: machine [environment]"),
        // Right-aligned figures: the padding before them varies with their width.
        (r" *\d+(\.\d+)? (µs|ms|s)\b", " [time]"),
        (r"┆ +\d+ ┆", "┆ [rate] ┆"),
        (r" *\d+(\.\d+)? (B|KiB|MiB|GiB)\b", " [bytes]"),
        (r" *\d+\.\d+×", " [ratio]"),
        // Column widths follow those figures too (peak memory near 100 MiB takes 8 or 9).
        (r"─+", "─"),
        (r"═+", "═"),
        (r" +│", " │"),
    ]}, {
        insta::assert_snapshot!("tiny_suite_table", stdout);
    });

    // `report` renders the same tables again from the directory.
    let again = randbench(&["report", out.to_str().unwrap()]);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

fn assert_bad_suite(name: &str, text: &str, expected: &[&str]) {
    let dir = scratch(name);
    let suite = write_suite(&dir, &format!("{name}.yaml"), text);
    let out = dir.join("out");
    let o = randbench(&["run", &suite, "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{name}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{name}: one line expected: {err}");
    for e in expected {
        assert!(err.contains(e), "{name}: expected `{e}` in: {err}");
    }
    assert!(!out.exists(), "{name}: nothing may be written for a bad suite");
}

#[test]
fn bad_suites_get_one_line_with_file_line_and_column_and_exit_2() {
    assert_bad_suite("syntax", "seeds: [0\nworkloads: []\n", &["syntax.yaml:", "error:"]);
    assert_bad_suite(
        "unknown-key",
        &TINY.replace("max_epochs: 300", "max_epoch: 300"),
        &["unknown-key.yaml:14:7:", "unknown field `max_epoch`", "did you mean `max_epochs`?"],
    );
    assert_bad_suite(
        "wrong-type",
        &TINY.replace("batch: 50", "batch: fifty"),
        &["wrong-type.yaml:12:14:", "expected a whole number"],
    );
    assert_bad_suite(
        "unknown-backend",
        &TINY.replace("[candle-cpu]", "[candle-cpu, tpu-cpu]"),
        &["unknown-backend.yaml:3:24:", "unknown backend 'tpu-cpu'", "candle-cpu"],
    );
    assert_bad_suite(
        "unknown-condition",
        &TINY.replace("random_labels]", "random_label]"),
        &["unknown-condition.yaml:", "did you mean `random_labels`?"],
    );
    assert_bad_suite(
        "zero-epochs",
        &TINY.replace("max_epochs: 300", "max_epochs: 0"),
        &["zero-epochs.yaml:14:19:", "max_epochs must be at least 1"],
    );
    assert_bad_suite(
        "negative-lr",
        &TINY.replace("lr: 0.1", "lr: -0.1"),
        &["negative-lr.yaml:11:39:", "lr must be a positive number"],
    );
    assert_bad_suite(
        "big-batch",
        &TINY.replace("batch: 50", "batch: 500"),
        &["big-batch.yaml:12:14:", "larger than the 200 training examples"],
    );
    assert_bad_suite(
        "no-seeds",
        &TINY.replace("seeds: [3]", "seeds: []"),
        &["no-seeds.yaml:4:8:", "seed list is empty"],
    );
    assert_bad_suite(
        "stray-option",
        &TINY.replace("momentum: 0.9}", "momentum: 0.9, beta1: 0.5}"),
        &["stray-option.yaml:", "`beta1` does not apply to the momentum optimizer"],
    );
}

// Tests are built without CUDA (scripts/test.sh), so candle-cuda is never compiled in here.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_not_compiled_in_is_a_clear_error() {
    assert_bad_suite(
        "not-compiled",
        &TINY.replace("[candle-cpu]", "[candle-cuda:0]"),
        &["not-compiled.yaml:3:12:", "not compiled into this binary", "--features cuda"],
    );
}

#[cfg(feature = "ort")]
#[test]
fn a_missing_or_foreign_onnx_runtime_library_is_a_clear_error() {
    for (lib, expected) in [
        ("/nonexistent/libonnxruntime.so.1.31.1", "does not exist"),
        ("/lib/x86_64-linux-gnu/libc.so.6", "cannot load ONNX Runtime"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_randbench"))
            .args(["run", "quick", "--backends", "ort-cpu", "--out", "/nonexistent-out"])
            .env("ORT_DYLIB_PATH", lib)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{lib}: {err}");
        assert!(
            err.contains(expected)
                && err.contains("scripts/setup-native.sh")
                && !err.contains("panicked"),
            "{lib}: {err}"
        );
    }
}

#[test]
fn unknown_backend_flag_lists_the_valid_ones() {
    let o = randbench(&["run", "quick", "--backends", "candle-gpu"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--backends") && err.contains("candle-gpu") && err.contains("candle-cpu"),
        "{err}"
    );
}

#[test]
fn list_names_workloads_suites_and_backends() {
    let o = randbench(&["list"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for want in
        ["randomization", "quick", "corruption-sweep", "candle-cpu", "usable", "tch-cpu", "ort-cpu"]
    {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}

#[test]
fn every_shipped_suite_loads() {
    for (name, path) in randbench::suite::available() {
        randbench::suite::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A small CNN with every regularizer on, on every CPU backend this build has: the cells run,
/// and since dropout masks and crops come from the host, the engines' first losses agree.
#[test]
fn a_cnn_with_dropout_weight_decay_and_crops_trains_alike_on_every_backend() {
    let dir = scratch("cnn");
    let backends: Vec<String> = randbench::backends::usable_here()
        .iter()
        .filter(|id| id.device == randbench_core::Device::Cpu)
        .map(|id| id.to_string())
        .collect();
    let suite = write_suite(
        &dir,
        "cnn.yaml",
        &format!(
            r#"
backends: [{}]
seeds: [1]
workloads:
  - randomization:
      name: cnn
      data: {{source: synthetic, train: 64, test: 32, image: [1, 8, 8]}}
      model:
        cnn: {{channels: [4, 8], kernel: 3, hidden: 16}}
      optimizer: {{kind: nesterov, lr: 0.05}}
      batch: 16
      conditions: [true_labels]
      regularizers: [{{}}, {{weight_decay: 0.001, dropout: 0.3, augment: 1}}]
      max_epochs: 2
"#,
            backends.join(", ")
        ),
    );
    // Each backend in both gradient modes: its autograd and the core's expansion are two
    // computations to compare even where candle is the only engine built in.
    let mut results = Vec::new();
    for grad in ["native", "symbolic"] {
        let out = dir.join(grad);
        let o = randbench(&[
            "run",
            &suite,
            "--isolate",
            "none",
            "--grad",
            grad,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        results.extend(lines(&out));
    }
    assert_eq!(results.len(), 2 * 2 * backends.len());
    let mut compared = 0;
    for r in &results {
        assert!(r["status"] == "no_fit" || r["status"] == "ok", "{r}");
        assert_eq!(metrics(r)["model"], "cnn-4-8-16");
        assert_eq!(metrics(r)["steps"], 8, "{r}");
        assert!(metrics(r)["test_accuracy"].as_f64().is_some());
    }
    for dropout in [0.0, 0.3] {
        let reg = format!("dropout {dropout}");
        let cells: Vec<&serde_json::Value> = results
            .iter()
            .filter(|r| r["cell"]["variant"]["randomization"]["regularizer"]["dropout"] == dropout)
            .collect();
        let first: Vec<f64> = cells[0]["step_losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for other in &cells[1..] {
            let losses: Vec<f64> = other["step_losses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(losses.len() >= 4 && first.len() >= 4, "{reg}: {first:?} vs {losses:?}");
            for (a, b) in first.iter().zip(&losses).take(4) {
                assert!(
                    (a - b).abs() <= 1e-4 + 1e-3 * a.abs(),
                    "{reg}: {} {} vs {} {}: {first:?} vs {losses:?}",
                    cells[0]["cell"]["backend"],
                    cells[0]["grad"],
                    other["cell"]["backend"],
                    other["grad"]
                );
                compared += 1;
            }
        }
    }
    // Every build compares something: at least one engine's two gradient modes.
    assert!(compared >= 2 * 4, "compared {compared} losses");
}

/// What the pre-flight finds in the data and the model, before anything runs: a CNN too deep
/// for the images, and an empty test set.
#[test]
fn a_model_that_does_not_fit_the_images_or_an_empty_test_set_is_named_before_the_run() {
    let workload = |data: &str, model: &str| {
        format!(
            r#"
backends: [candle-cpu]
workloads:
  - randomization:
      name: w
      data: {data}
      model:
        {model}
      optimizer: {{kind: sgd, lr: 0.1}}
      batch: 8
      conditions: [true_labels]
      max_epochs: 1
"#
        )
    };
    assert_bad_suite(
        "deep-cnn",
        &workload(
            "{source: synthetic, train: 16, test: 8, image: [1, 4, 4]}",
            "cnn: {channels: [2, 2, 2], kernel: 3, hidden: 4}",
        ),
        &[
            "deep-cnn.yaml:4:5: workload w: the model does not fit [1, 4, 4] images",
            "divisible by 8",
        ],
    );
    let dir = scratch("empty-test-data");
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let idx = common::idx;
    std::fs::write(data.join("train-images-idx3-ubyte"), idx(&[8, 2, 2], &[0; 32])).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx(&[8], &[0, 1, 2, 3, 0, 1, 2, 3]))
        .unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), idx(&[0, 2, 2], &[])).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx(&[0], &[])).unwrap();
    assert_bad_suite(
        "empty-test",
        &workload(&format!("{{source: idx, path: {}}}", data.display()), "mlp: {hidden: [4]}"),
        &["workload w: the test set is empty"],
    );
}

#[test]
fn every_cpu_engine_computes_with_the_thread_count_asked_for() {
    let dir = scratch("threads");
    let suite = write_suite(&dir, "one.yaml", &TINY.replace("max_epochs: 300", "max_epochs: 1"));
    let cpu = common::cpu_backends();
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(["run", &suite, "--backends", &cpu, "--out", out.to_str().unwrap()])
        .env("RANDBENCH_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = lines(&out);
    assert_eq!(results.len(), 2 * cpu.split(',').count());
    for r in &results {
        assert_eq!(r["backend_info"]["threads"], 1, "{}", r["cell"]["backend"]);
    }
    // candle's elementwise pool spins briefly after each op, unless the caller says otherwise.
    let spin_limit = |r: &serde_json::Value| {
        r["backend_info"]["extra"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|kv| (kv[0] == "spin_limit").then(|| kv[1].as_str().unwrap().to_string()))
    };
    let candle = results.iter().find(|r| r["cell"]["backend"] == "candle-cpu").unwrap();
    assert_eq!(spin_limit(candle).as_deref(), Some("1000"));
    let given = dir.join("given");
    let o = Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(["run", &suite, "--backends", "candle-cpu", "--out", given.to_str().unwrap()])
        .env("CANDLE_BARRIER_POOL_SPIN_LIMIT", "7")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(spin_limit(&lines(&given)[0]).as_deref(), Some("7"));

    let o = Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(["run", &suite, "--out", dir.join("zero").to_str().unwrap()])
        .env("RANDBENCH_THREADS", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("RANDBENCH_THREADS=0: give a positive number"), "{stderr}");
}

#[test]
fn each_result_records_the_gradient_mode_its_engine_used() {
    let dir = scratch("grad");
    let suite = write_suite(&dir, "one.yaml", &TINY.replace("max_epochs: 300", "max_epochs: 1"));
    let backends = common::cpu_backends();
    for (asked, out) in [(None, "default"), (Some("native"), "native")] {
        let out = dir.join(out);
        let out_arg = out.to_str().unwrap().to_string();
        let mut args = vec!["run", &suite, "--backends", &backends, "--out", &out_arg];
        if let Some(mode) = asked {
            args.extend(["--grad", mode]);
        }
        let o = randbench(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for r in lines(&out) {
            let backend = r["cell"]["backend"].as_str().unwrap().to_string();
            // ONNX Runtime has no autograd: it always runs the expansion, and says so.
            let expected = match asked {
                Some(mode) if !backend.starts_with("ort") => mode,
                _ => "symbolic",
            };
            assert_eq!(r["grad"], expected, "{backend} asked {asked:?}");
        }
    }
}
