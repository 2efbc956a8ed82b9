//! A binary run away from its source, with no git on PATH, still records the commit it was
//! built from and finds the suites by name.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const TINY: &str = r#"
backends: [candle-cpu]
seeds: [0]
workloads:
  - randomization:
      name: tiny
      data: {source: synthetic, train: 100, test: 50, image: [1, 8, 8]}
      model:
        mlp: {hidden: [8]}
      optimizer: {kind: sgd, lr: 0.1}
      batch: 50
      conditions: [true_labels]
      max_epochs: 1
"#;

/// The binary, run in `dir` with a PATH holding nothing, so that no helper program (git above
/// all) can be what it relies on.
fn randbench_in(dir: &Path, args: &[&str]) -> Output {
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(args)
        .current_dir(dir)
        .env("PATH", &empty)
        .env_remove("RANDBENCH_TEST_DELAY")
        .output()
        .expect("randbench runs")
}

/// What the source tree is at now, as this test (which may run git) sees it.
fn head_now() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_run_records_the_commit_the_binary_was_built_from_without_git() {
    let dir = common::scratch("provenance", "commit");
    std::fs::write(dir.join("tiny.yaml"), TINY).unwrap();
    let o = randbench_in(
        &dir,
        &["run", "tiny.yaml", "--backends", "candle-cpu", "--isolate", "none", "--out", "run"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/environment.json")).unwrap())
            .unwrap();
    let recorded = env["git_commit"].as_str().map(str::to_string);
    // The build script's values reach this test too: a build without git left them unset.
    let built = option_env!("RANDBENCH_GIT_COMMIT").map(str::to_string);
    match head_now() {
        Some(head) => {
            assert_eq!(recorded.as_deref(), Some(head.as_str()), "the binary's commit");
            assert_eq!(recorded, built);
        }
        None => assert_eq!(recorded, built, "a build without git records no commit"),
    }
    assert_eq!(env["git_dirty"].is_boolean(), recorded.is_some(), "{}", env["git_dirty"]);
}

#[test]
fn suites_are_found_by_name_outside_the_tree() {
    let dir = common::scratch("provenance", "suites");
    let o = randbench_in(&dir, &["list"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-suites");
    let mut names = 0;
    for e in std::fs::read_dir(source).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            assert!(
                listed.lines().any(|l| l.trim_start().starts_with(&format!("{name} "))),
                "{name} missing from:\n{listed}"
            );
            names += 1;
        }
    }
    assert!(names > 0);

    // A name resolves (and its suite loads) before the bad backend stops the run; an unknown
    // name stops it sooner, saying so.
    let named = randbench_in(&dir, &["run", "quick", "--backends", "no-such-backend"]);
    let unknown = randbench_in(&dir, &["run", "no-such-suite", "--backends", "candle-cpu"]);
    let (named, unknown) =
        (String::from_utf8_lossy(&named.stderr), String::from_utf8_lossy(&unknown.stderr));
    assert!(unknown.contains("no suite file 'no-such-suite'"), "{unknown}");
    assert!(unknown.contains("quick"), "the known suites are named: {unknown}");
    assert!(!named.contains("no suite file"), "{named}");
    assert!(named.contains("--backends"), "{named}");
}
