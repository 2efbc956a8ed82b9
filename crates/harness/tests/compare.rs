//! Rounds and `randbench compare` end to end: the same build twice is unchanged, a step slowed
//! on purpose (the RANDBENCH_TEST_DELAY hook) is a regression with exit code 1, too few
//! rounds are "too noisy to tell" with exit code 3.

mod common;

use common::{randbench, run_tiny as run, DELAY, TIMED_SUITE as SUITE};
use std::path::Path;

fn compare(a: &Path, b: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["compare", a.to_str().unwrap(), b.to_str().unwrap()];
    args.extend(extra);
    let o = randbench(&args, &[]);
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code(), text)
}

fn verdicts(json: &Path) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let verdict = match r["outcome"]["kind"].as_str().unwrap() {
                "compared" => r["outcome"]["verdict"].as_str().unwrap().to_string(),
                other => other.to_string(),
            };
            (r["measure"].as_str().unwrap().to_string(), verdict)
        })
        .collect()
}

#[test]
fn the_same_build_is_unchanged_and_a_slowed_step_is_a_regression() {
    let _timing = common::timing_lock();
    let dir = common::scratch("compare", "delay");
    let base = run(&dir, "base", &[], &[]);
    let again = run(&dir, "again", &[], &[]);
    let slowed = run(&dir, "slowed", &[], &[("RANDBENCH_TEST_DELAY", DELAY)]);

    // No regression. A machine busy with something else can make a speed figure "too noisy
    // to tell" (exit 3), which is still no regression; the outcomes are always unchanged.
    let json = dir.join("same.json");
    let (code, text) = compare(&base, &again, &["--json", json.to_str().unwrap()]);
    let v = verdicts(&json);
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(
        v.iter().all(|(_, verdict)| verdict == "unchanged" || verdict == "too_noisy"),
        "{v:?}\n{text}"
    );
    for figure in ["epochs_to_fit", "test_accuracy"] {
        assert!(v.contains(&(figure.to_string(), "unchanged".to_string())), "{v:?}");
    }
    let expected = if v.iter().all(|(_, verdict)| verdict == "unchanged") { 0 } else { 3 };
    assert_eq!(code, Some(expected), "{text}");

    let json = dir.join("slowed.json");
    let (code, text) = compare(&base, &slowed, &["--json", json.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("candle-cpu tiny true_labels s3"), "{text}");
    let v = verdicts(&json);
    for figure in ["steps_per_second", "seconds_to_fit"] {
        assert!(v.contains(&(figure.to_string(), "regressed".to_string())), "{v:?}");
    }
    // The delay sits in timed steps only: what the network learns is the same.
    for figure in ["epochs_to_fit", "test_accuracy"] {
        assert!(v.contains(&(figure.to_string(), "unchanged".to_string())), "{v:?}");
    }
    assert!(text.contains("slower"), "{text}");

    // The other way round the change is an improvement: nothing regressed.
    let (code, text) = compare(&slowed, &base, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("faster"), "{text}");
}

#[test]
fn too_few_rounds_are_too_noisy_to_tell() {
    let _timing = common::timing_lock();
    let dir = common::scratch("compare", "few");
    let a = run(&dir, "a", &["--rounds", "2"], &[]);
    let b = run(&dir, "b", &["--rounds", "2"], &[("RANDBENCH_TEST_DELAY", DELAY)]);
    let (code, text) = compare(&a, &b, &[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("too noisy to tell"), "{text}");
    assert!(text.contains("--rounds 4"), "the fix is named: {text}");
}

#[test]
fn rounds_take_turns_and_say_how_many_a_figure_rests_on() {
    let dir = common::scratch("compare", "turns");
    let cpu = common::cpu_backends();
    let out = run(&dir, "out", &["--rounds", "2", "--backends", &cpu], &[]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Round 0 on every backend in turn, then round 1 likewise: ABCABC.
    let order: Vec<(u64, String)> = lines
        .iter()
        .map(|l| (l["round"].as_u64().unwrap(), l["cell"]["backend"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(u64, String)> =
        (0..2).flat_map(|r| cpu.split(',').map(move |b| (r, b.to_string()))).collect();
    assert_eq!(order, expected);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["rounds"], 2);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("2 of 2"), "the rounds table: {report}");
}

#[test]
fn bad_comparison_input_is_refused_clearly() {
    let dir = common::scratch("compare", "bad");
    let (code, text) = compare(&dir.join("nowhere"), &dir.join("nothing"), &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("results.jsonl"), "{text}");

    let a = run(&dir, "a", &["--rounds", "1"], &[]);
    let (code, text) = compare(&a, &a, &["--threshold", "steps_per_sec=0.1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("no figure is named 'steps_per_sec'") && text.contains("steps_per_second"),
        "{text}"
    );
    let (code, text) = compare(&a, &a, &["--threshold", "steps_per_second"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("FIGURE=FRACTION"), "{text}");

    let o = randbench(&["list"], &[("RANDBENCH_TEST_DELAY", "candle-cpu")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("write BACKEND=MS"));

    let suite = dir.join("bad-threshold.yaml");
    std::fs::write(&suite, SUITE.replace("seconds_to_fit: 1.0", "seconds_to_fits: 1.0")).unwrap();
    let o =
        randbench(&["run", suite.to_str().unwrap(), "--out", dir.join("x").to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad-threshold.yaml:6:")
            && err.contains("no figure is named 'seconds_to_fits'"),
        "{err}"
    );
}

/// Writes `from`'s run as randbench wrote runs before result lines had a schema version: no
/// `schema`, no `figures`, no variant `label` (every other field is as it was), and no
/// catalogue of measures in `run.json`.
fn as_version_0(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["environment.json", "run.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("run.json")).unwrap()).unwrap();
    info.as_object_mut().unwrap().remove("measures");
    std::fs::write(to.join("run.json"), info.to_string()).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(from.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("schema").is_some() && o.remove("figures").is_some());
            v["cell"].as_object_mut().unwrap().remove("label");
            v.to_string()
        })
        .collect();
    std::fs::write(to.join("results.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn results_written_before_the_schema_had_versions_compare_with_results_written_after() {
    let _timing = common::timing_lock();
    let dir = common::scratch("compare", "versions");
    let base = run(&dir, "base", &[], &[]);
    let old = dir.join("old");
    as_version_0(&base, &old);
    let now = run(&dir, "now", &[], &[]);
    for (a, b) in [(&old, &now), (&now, &old)] {
        let json = dir.join("versions.json");
        let (code, text) = compare(a, b, &["--json", json.to_str().unwrap()]);
        assert!(matches!(code, Some(0 | 3)), "{text}");
        let v = verdicts(&json);
        // Every figure of the family, read off the old lines by the family's catalogue.
        let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["epochs_to_fit", "seconds_to_fit", "steps_per_second", "test_accuracy"]);
        for figure in ["epochs_to_fit", "test_accuracy"] {
            assert!(v.contains(&(figure.to_string(), "unchanged".to_string())), "{v:?}");
        }
    }
    // The history keys old and new lines alike, so they form one series.
    let db = dir.join("history.sqlite");
    let db = db.to_str().unwrap();
    let o = randbench(&["ingest", old.to_str().unwrap(), now.to_str().unwrap(), "--db", db], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = randbench(&["history", "--db", db, "--figure", "epochs_to_fit"], &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert_eq!(text.matches("candle-cpu tiny true_labels seed 3").count(), 1, "{text}");
    // A row per run, each starting with when it started.
    assert_eq!(text.lines().filter(|l| l.starts_with("│ 20")).count(), 2, "{text}");
}
