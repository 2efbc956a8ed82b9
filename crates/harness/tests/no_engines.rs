//! Reading suites and listing what exists open no engine: ONNX Runtime's environment and
//! thread pool and libtorch's set-up are a cell's own, and a cell's process opens only its
//! engine. (One test in its own binary: the engines' state is the process's.)

use randbench::suite;

#[test]
fn parsing_every_suite_and_listing_open_no_engine() {
    let threads = || std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    let before = threads();
    let suites = suite::available();
    assert!(suites.len() >= 5, "{suites:?}");
    for (name, path) in &suites {
        suite::load(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A suite naming every engine, as the fuzz test and every cell's process parse them.
    let text = "backends: [candle-cpu, tch-cpu, ort-cpu, burn-cpu]\nworkloads:\n  - randomization:\n      \
                data: {source: synthetic, train: 100, test: 50}\n      model: {mlp: {hidden: [8]}}\n      \
                optimizer: {kind: sgd, lr: 0.1}\n      batch: 10\n      conditions: [true_labels]\n      \
                max_epochs: 1\n";
    let parsed = suite::parse(text, std::path::Path::new("all.yaml"));
    // Without an engine compiled in, naming it is an error; either way nothing opens.
    if cfg!(all(feature = "tch", feature = "ort", feature = "burn")) {
        parsed.unwrap();
    }
    let listed = randbench::runner::list(std::path::Path::new(env!("CARGO_BIN_EXE_randbench")));
    assert!(listed.contains("candle-cpu"), "{listed}");
    assert!(listed.contains("usable"), "{listed}");
    #[cfg(feature = "ort")]
    assert!(!randbench_ort::started(), "ONNX Runtime was started");
    #[cfg(feature = "tch")]
    assert!(!randbench_tch::opened(), "libtorch was opened");
    assert_eq!(threads(), before, "threads started while reading suites and listing");
}
