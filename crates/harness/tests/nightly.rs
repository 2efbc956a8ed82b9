//! scripts/nightly.sh end to end, on a tiny suite: the first night has nothing to compare
//! with, the second is judged unchanged and exits 0, a night whose steps were slowed on purpose
//! exits 1 and names the cell. Every night leaves its dated report and exports.

mod common;

use common::{DELAY, TIMED_SUITE};
use std::path::{Path, PathBuf};
use std::process::Command;

fn night(dir: &Path, delay: Option<&str>) -> (Option<i32>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nightly.sh");
    let mut c = Command::new("bash");
    c.arg(script)
        .env("RANDBENCH_BIN", env!("CARGO_BIN_EXE_randbench"))
        .env("NIGHTLY_SUITE", dir.join("tiny.yaml"))
        .env("NIGHTLY_DIR", dir.join("nights"))
        .env("NIGHTLY_DB", dir.join("history.sqlite"))
        .env_remove("NIGHTLY_BASELINE")
        .env_remove("RANDBENCH_TEST_DELAY");
    if let Some(d) = delay {
        c.env("RANDBENCH_TEST_DELAY", d);
    }
    let o = c.output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code(), text)
}

fn nights(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("nights")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn nightly_passes_an_unchanged_night_and_fails_a_slowed_one() {
    let dir = common::scratch("nightly", "nights");
    std::fs::write(dir.join("tiny.yaml"), TIMED_SUITE).unwrap();

    let (code, text) = night(&dir, None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to compare with"), "{text}");

    // Unchanged: with four rounds a side and thresholds of 2×, the same build can only be
    // judged unchanged (seeded outcomes tie exactly; speed would have to halve).
    let (code, text) = night(&dir, None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nightly: no regression against"), "{text}");
    let dated = nights(&dir);
    assert_eq!(dated.len(), 2);
    for d in &dated {
        for f in ["report.md", "results.jsonl", "bencher.json", "github-smaller-is-better.json"] {
            assert!(d.join(f).exists(), "{} has no {f}", d.display());
        }
    }
    assert!(dated[1].join("compare.txt").exists());

    let (code, text) = night(&dir, Some(DELAY));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("REGRESSION"), "{text}");
    assert!(text.contains("candle-cpu tiny true_labels s3") && text.contains("slower"), "{text}");
    assert_eq!(nights(&dir).len(), 3);

    // The three nights are in the history.
    let o = common::randbench(
        &[
            "history",
            "--db",
            dir.join("history.sqlite").to_str().unwrap(),
            "--figure",
            "steps_per_second",
            "--min-points",
            "2",
            "--threshold",
            "1.0",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("CHANGED: slower"), "{text}");
}
