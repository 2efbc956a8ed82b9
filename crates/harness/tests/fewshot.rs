//! The few-shot family on every CPU engine this build has: meta-training that agrees step by
//! step across engines and repeats for a seed, and test episodes shared by every engine.

mod common;

use common::run_on_cpu_backends;
use randbench::families::Metrics;
use randbench_schema::{CellResult, Status};

fn suite() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/omniglot");
    format!(
        r#"
seeds: [3]
workloads:
  - few_shot:
      name: tiny
      data:
        background: ["{dir}/images_background_small1.zip"]
        runs: "{dir}/all_runs.zip"
        side: 8
        train: [Korean, Latin]
        validation: [Balinese]
        test: [Greek]
      episodes: [{{way: 3, shot: 1}}]
      query: 2
      learner: {{filters: 4, blocks: 2}}
      methods: [maml]
      inner: {{lr: 0.4, steps: 1, test_steps: 2}}
      meta: {{steps: 6, tasks: 2, lr: 0.003, validate_every: 3, validation_episodes: 4}}
      test_episodes: 6
"#
    )
}

fn metrics(r: &CellResult) -> randbench::families::fewshot::Metrics {
    match Metrics::of(r).expect("the line reads as its family's") {
        Metrics::FewShot(m) => m,
        _ => panic!("a few-shot cell"),
    }
}

#[test]
fn maml_meta_trains_alike_on_every_engine_and_repeats_for_a_seed() {
    let text = suite();
    let results = run_on_cpu_backends(&text);
    let first = &results[0];
    let m0 = metrics(first);
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        let m = metrics(r);
        assert_eq!((m.meta_steps, r.step_losses.len(), m.validations.len()), (6, 6, 2));
        for (step, (a, b)) in r.step_losses.iter().zip(&first.step_losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 + 1e-3 * b.abs(),
                "{} at step {step}: meta-loss {a} against {b} on {}",
                r.cell.backend,
                first.cell.backend
            );
        }
        // The same test episodes everywhere: nearest neighbour, on the host, agrees exactly.
        assert_eq!(m.nearest_neighbour, m0.nearest_neighbour);
        let t = m.test.expect("tested");
        assert!(t.episodes == 6 && t.lo <= t.mean && t.mean <= t.hi, "{t:?}");
        assert!((0.0..=1.0).contains(&t.mean));
        assert!(m.episodes_per_second.is_some_and(|s| s.median > 0.0));
    }
    let again = run_on_cpu_backends(&text);
    assert_eq!(again[0].step_losses, first.step_losses, "{}: same seed", first.cell.backend);
    assert_eq!(metrics(&again[0]).test, m0.test);
}

#[test]
fn a_split_that_names_an_unknown_alphabet_or_one_alphabet_twice_is_refused() {
    let text = suite().replace("test: [Greek]", "test: [Klingon]");
    let s = randbench::suite::parse(&text, std::path::Path::new("t.yaml")).unwrap();
    let err = match s.workloads[0].prepare() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("Klingon is not in the set"),
    };
    assert!(err.contains("no alphabet Klingon") && err.contains("Korean"), "{err}");
    let text = suite().replace("test: [Greek]", "test: [Latin]");
    let err = randbench::suite::parse(&text, std::path::Path::new("t.yaml")).unwrap_err();
    assert!(err.to_string().contains("Latin is in both data.train and data.test"), "{err}");
}

#[test]
fn a_twenty_way_one_shot_cell_scores_lakes_official_runs() {
    let text = suite()
        .replace("[{way: 3, shot: 1}]", "[{way: 20, shot: 1}]")
        .replace("query: 2", "query: 1")
        .replace("steps: 6,", "steps: 2,");
    let results = run_on_cpu_backends(&text);
    let runs = |r: &CellResult| metrics(r).official_runs.expect("20-way 1-shot scores the runs");
    let first = runs(&results[0]);
    assert_eq!((first.method.len(), first.nearest_neighbour.len()), (20, 20));
    let mean = first.nearest_neighbour.iter().sum::<f64>() / 20.0;
    assert!(mean > 2.0 / 20.0, "nearest neighbour is at chance on the runs: {mean}");
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        assert!(runs(r).method.iter().all(|a| (0.0..=1.0).contains(a)));
        assert_eq!(runs(r).nearest_neighbour, first.nearest_neighbour);
    }
}

#[test]
fn the_meta_learner_lstm_meta_trains_alike_on_every_engine_and_reports_its_gates() {
    let text = suite().replace(
        "methods: [maml]",
        "methods: [meta_learner_lstm]\n      meta_learner: {hidden: 3, steps: 2}",
    );
    let results = run_on_cpu_backends(&text);
    let first = &results[0];
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        assert_eq!(r.step_losses.len(), 6);
        for (a, b) in r.step_losses.iter().zip(&first.step_losses) {
            assert!((a - b).abs() <= 1e-4 + 1e-3 * b.abs(), "{}: {a} against {b}", r.cell.backend);
        }
        let gates = metrics(r).gates;
        assert_eq!(gates.len(), 2, "one pair per update");
        // Near where they started: forget σ(5), input σ(−4.5), after six meta-steps.
        for g in &gates {
            assert!((0.9..1.0).contains(&g.forget) && (0.0..0.05).contains(&g.input), "{g:?}");
        }
    }
}

#[test]
fn the_pretrained_baselines_pretrain_alike_on_every_engine_and_score_the_test_episodes() {
    let text = suite().replace(
        "methods: [maml]",
        "methods: [pretrained]\n      pretrain: {epochs: 1, batch: 128, lr: 0.01, fine_tune_steps: 3}",
    );
    let results = run_on_cpu_backends(&text);
    let first = &results[0];
    let m0 = metrics(first);
    // Korean and Latin: 66 characters in four rotations, 20 drawings each.
    let steps = 66 * 4 * 20 / 128;
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        let m = metrics(r);
        assert_eq!((m.meta_steps, r.step_losses.len()), (steps, steps));
        for (step, (a, b)) in r.step_losses.iter().zip(&first.step_losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 + 1e-3 * b.abs(),
                "{} at step {step}: loss {a} against {b} on {}",
                r.cell.backend,
                first.cell.backend
            );
        }
        let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
        let (start, end) = (mean(&r.step_losses[..5]), mean(&r.step_losses[steps - 5..]));
        assert!(end < start - 0.25, "{}: the loss went from {start} to {end}", r.cell.backend);
        assert!(m.test.is_none() && m.pretrain_images_per_second.is_some_and(|s| s.median > 0.0));
        let names: Vec<String> = m.baselines.iter().map(|s| s.baseline.to_string()).collect();
        assert_eq!(names, ["fine-tune head", "fine-tune whole", "nearest neighbour (embedding)"]);
        for s in &m.baselines {
            let t = s.test;
            assert!(t.episodes == 6 && (0.0..=1.0).contains(&t.mean), "{s:?}");
            assert_eq!(s.lr.is_some(), s.validation.is_some(), "{s:?}");
        }
        assert_eq!(m.nearest_neighbour, m0.nearest_neighbour);
    }
}

#[test]
fn a_twenty_way_one_shot_pretrained_cell_scores_lakes_official_runs_with_every_baseline() {
    let text = suite()
        .replace("[{way: 3, shot: 1}]", "[{way: 20, shot: 1}]")
        .replace("query: 2", "query: 1")
        .replace(
            "methods: [maml]",
            "methods: [pretrained]\n      pretrain: {epochs: 1, batch: 128, lr: 0.01, fine_tune_steps: 3}",
        );
    let results = run_on_cpu_backends(&text);
    let runs = |r: &CellResult| metrics(r).official_runs.expect("20-way 1-shot scores the runs");
    let first = runs(&results[0]);
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        let o = runs(r);
        assert!(o.method.is_empty(), "the pretrained cell has no meta-learned method");
        let names: Vec<String> = o.baselines.iter().map(|s| s.baseline.to_string()).collect();
        assert_eq!(names, ["fine-tune head", "fine-tune whole", "nearest neighbour (embedding)"]);
        for s in &o.baselines {
            assert_eq!(s.runs.len(), 20, "{s:?}");
            assert!(s.runs.iter().all(|a| (0.0..=1.0).contains(a)), "{s:?}");
        }
        assert_eq!(o.nearest_neighbour, first.nearest_neighbour);
    }
}

/// A tiny Fashion-MNIST-by-class workload: classes split by name, in four rotations each.
fn fashion_mnist_suite() -> String {
    suite()
        .replace(
            "background: [\"",
            "set: fashion-mnist\n        per_class: 6\n        # background: [\"",
        )
        .replace("runs: \"", "# runs: \"")
        .replace("train: [Korean, Latin]", "train: [T-shirt/top, Trouser, Sandal]")
        .replace("validation: [Balinese]", "validation: [Bag]")
        .replace("test: [Greek]", "test: [Ankle boot]")
}

#[test]
fn few_shot_on_fashion_mnist_by_class_meta_trains_alike_on_every_engine() {
    if !randbench_core::testing::fashion_mnist_installed() {
        return;
    }
    let text = fashion_mnist_suite();
    let s = randbench::suite::parse(&text, std::path::Path::new("t.yaml")).unwrap();
    let data = s.workloads[0].prepare().unwrap();
    let randbench::families::Data::FewShot(d) = &data else { panic!("few-shot data") };
    // Three classes in four rotations of six images each, 8×8; one class each to validate and
    // test, its four rotations the episode's three ways' pool.
    assert_eq!(
        (d.train.classes.len(), d.validation.classes.len(), d.test.classes.len()),
        (12, 4, 4)
    );
    assert!(d.train.classes.iter().all(|c| c.len() == 6 && c[0].len() == 64));
    let results = run_on_cpu_backends(&text);
    let first = &results[0];
    for r in &results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
        for (a, b) in r.step_losses.iter().zip(&first.step_losses) {
            assert!((a - b).abs() <= 1e-4 + 1e-3 * b.abs(), "{}: {a} against {b}", r.cell.backend);
        }
        assert_eq!(metrics(r).nearest_neighbour, metrics(first).nearest_neighbour);
    }
}

#[test]
fn a_fashion_mnist_split_names_its_classes_and_takes_no_omniglot_keys() {
    let parse = |text: &str| {
        randbench::suite::parse(text, std::path::Path::new("t.yaml")).err().map(|e| e.to_string())
    };
    let err = parse(&fashion_mnist_suite().replace("test: [Ankle boot]", "test: [Sock]"))
        .expect("Fashion-MNIST has no socks");
    assert!(err.contains("no class Sock in Fashion-MNIST") && err.contains("Ankle boot"), "{err}");
    let err = parse(&fashion_mnist_suite().replace("# runs: \"", "runs: \""))
        .expect("runs are Omniglot's");
    assert!(err.contains("data.runs belongs to data.set: omniglot"), "{err}");
    let err = parse(&suite().replace("side: 8", "side: 8\n        per_class: 3"))
        .expect("per_class is Fashion-MNIST's");
    assert!(err.contains("data.per_class belongs to data.set: fashion-mnist"), "{err}");
}
