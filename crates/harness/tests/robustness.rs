//! Faults and bad input never lose results: crashing, aborting, out-of-memory and hanging
//! cells, divergence, Ctrl-C, concurrent runs, damaged result files, bad data files.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn randbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_randbench"))
}

fn scratch(name: &str) -> common::Scratch {
    common::scratch("robust", name)
}

/// Two quick cells on synthetic data; `extra` lines go into the workload.
fn suite(dir: &Path, extra: &str) -> String {
    let text = format!(
        r#"
backends: [candle-cpu]
workloads:
  - randomization:
      name: tiny
      data: {{source: synthetic, train: 200, test: 100, image: [1, 16, 16]}}
      model:
        mlp: {{hidden: [32]}}
      optimizer: {{kind: momentum, lr: 0.1, momentum: 0.9}}
      batch: 50
      conditions: [true_labels, random_labels]
      max_epochs: 300
{extra}"#
    );
    let p = dir.join("suite.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn results(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_with_fault(name: &str, fault: &str, extra: &str) -> (Output, Vec<serde_json::Value>) {
    let dir = scratch(name);
    let s = suite(&dir, extra);
    let out = dir.join("out");
    let o = randbench()
        .args(["run", &s, "--isolate", "process", "--out", out.to_str().unwrap()])
        .env("RANDBENCH_TEST_FAULT", format!("{fault}:random_labels"))
        .output()
        .unwrap();
    (o, results(&out))
}

#[test]
fn a_segfault_an_abort_or_an_oom_costs_one_cell_and_the_run_goes_on() {
    for (fault, status, words) in [
        ("segfault", "crashed", "SIGSEGV"),
        ("abort", "crashed", "SIGABRT"),
        ("oom", "oom", "memory allocation"),
    ] {
        let (o, r) = run_with_fault(fault, fault, "");
        assert!(o.status.success(), "{fault}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(r.len(), 2, "{fault}");
        assert_eq!(r[0]["status"], "ok", "{fault}: the earlier cell's result is intact");
        assert_eq!(r[1]["cell"]["variant"]["randomization"]["condition"], "random_labels");
        assert_eq!(r[1]["status"], status, "{fault}: {}", r[1]);
        let err = r[1]["error"].as_str().unwrap();
        assert!(err.contains(words), "{fault}: {err}");
        let tables = String::from_utf8_lossy(&o.stdout);
        assert!(tables.contains(status), "{fault}: the table shows the failure: {tables}");
    }
}

#[test]
fn a_line_from_a_cell_that_is_no_message_is_a_protocol_error_naming_it() {
    let (o, r) = run_with_fault("message", "message", "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(r[0]["status"], "ok");
    // The result that did read is kept; the line that did not is named with it.
    assert_eq!(r[1]["status"], "ok", "{}", r[1]);
    let err = r[1]["error"].as_str().unwrap();
    assert!(err.contains("sent a message randbench cannot read"), "{err}");
    assert!(err.contains(r#"{"result": 42}"#), "{err}");
}

#[test]
fn a_hanging_cell_is_killed_at_its_timeout() {
    let start = Instant::now();
    let (o, r) = run_with_fault("hang", "hang", "      timeout: 2\n");
    assert!(o.status.success());
    assert!(start.elapsed() < Duration::from_secs(60), "the hang was not cut short");
    assert_eq!(r[0]["status"], "ok");
    assert_eq!(r[1]["status"], "timeout", "{}", r[1]);
    assert!(r[1]["error"].as_str().unwrap().contains("killed"));
}

#[test]
fn divergence_and_an_unreached_target_are_reported_not_hidden() {
    let dir = scratch("diverge");
    let text =
        std::fs::read_to_string(suite(&dir, "")).unwrap().replace("lr: 0.1", "lr: 1000000.0");
    std::fs::write(dir.join("suite.yaml"), text).unwrap();
    let out = dir.join("out");
    let o = randbench()
        .args(["run", dir.join("suite.yaml").to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    for r in results(&out) {
        assert_eq!(r["status"], "diverged", "{r}");
        let step = r["diverged_at"].as_u64().unwrap();
        assert_eq!(step, r["metrics"]["randomization"]["steps"].as_u64().unwrap(), "{r}");
        // The trace holds the finite losses before it, so the line parses and reports render.
        assert_eq!(r["step_losses"].as_array().unwrap().len() as u64, (step - 1).min(256));
    }
    let tables = String::from_utf8_lossy(&o.stdout);
    assert!(tables.contains("diverged (step"), "{tables}");
    let again = randbench().args(["report", out.to_str().unwrap()]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let out2 = dir.join("out2");
    let s = suite(&dir, "");
    let text = std::fs::read_to_string(&s).unwrap().replace("max_epochs: 300", "max_epochs: 1");
    std::fs::write(&s, text).unwrap();
    let o = randbench().args(["run", &s, "--out", out2.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    for r in results(&out2) {
        assert_eq!(r["status"], "no_fit", "{r}");
        assert_eq!(r["metrics"]["randomization"]["epochs"], 1);
        assert!(r["metrics"]["randomization"]["train_accuracy"].as_f64().unwrap() < 1.0);
    }
}

/// A suite whose first workload ends at once and whose second never fits.
fn long_suite(dir: &Path) -> String {
    let p = dir.join("long.yaml");
    std::fs::write(
        &p,
        r#"
backends: [candle-cpu]
workloads:
  - randomization:
      name: quick-one
      data: {source: synthetic, train: 100, test: 50, image: [1, 8, 8]}
      model:
        mlp: {hidden: [8]}
      optimizer: {kind: sgd, lr: 0.01}
      batch: 50
      conditions: [true_labels]
      max_epochs: 1
  - randomization:
      name: endless
      data: {source: synthetic, train: 2000, test: 50, image: [1, 8, 8]}
      model:
        mlp: {hidden: [8]}
      optimizer: {kind: sgd, lr: 0.000001}
      batch: 50
      conditions: [random_labels]
      max_epochs: 100000000
"#,
    )
    .unwrap();
    p.display().to_string()
}

fn wait_for_first_line(child: &mut Child, out: &Path) {
    let start = Instant::now();
    while !std::fs::read_to_string(out.join("results.jsonl")).is_ok_and(|t| t.lines().count() >= 1)
    {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(60), "no result within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Into the endless cell.
    std::thread::sleep(Duration::from_millis(500));
}

fn interrupt(child: &Child) {
    // SAFETY: sends SIGINT to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
}

#[test]
fn ctrl_c_once_writes_what_is_done_and_exits_130() {
    for isolate in ["none", "process"] {
        let dir = scratch(&format!("sigint-{isolate}"));
        let s = long_suite(&dir);
        let out = dir.join("out");
        let mut child = randbench()
            .args(["run", &s, "--isolate", isolate, "--out", out.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_first_line(&mut child, &out);
        interrupt(&child);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{isolate}");
        let r = results(&out);
        assert_eq!(r.len(), 2, "{isolate}: {r:?}");
        assert_eq!(r[0]["status"], "no_fit");
        assert_eq!(r[1]["status"], "interrupted", "{isolate}: {}", r[1]);
        assert!(
            out.join("report.md").is_file(),
            "{isolate}: the report of what was done is written"
        );
        let again = randbench().args(["report", out.to_str().unwrap()]).output().unwrap();
        assert!(again.status.success());
    }
}

#[test]
fn ctrl_c_twice_exits_at_once() {
    let dir = scratch("sigint-twice");
    let s = long_suite(&dir);
    let out = dir.join("out");
    let mut child = randbench()
        .args(["run", &s, "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_first_line(&mut child, &out);
    interrupt(&child);
    interrupt(&child);
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(start.elapsed() < Duration::from_secs(5));
    // Whatever was written is whole.
    for line in std::fs::read_to_string(out.join("results.jsonl")).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn a_second_run_on_the_same_directory_fails_clearly() {
    let dir = scratch("lock");
    let s = long_suite(&dir);
    let out = dir.join("out");
    let mut first = randbench()
        .args(["run", &s, "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_first_line(&mut first, &out);
    let second = randbench().args(["run", &s, "--out", out.to_str().unwrap()]).output().unwrap();
    interrupt(&first);
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another randbench run is writing there"), "{err}");
    assert_eq!(results(&out).len(), 2, "the first run's lines are not interleaved with anything");
}

#[test]
fn a_truncated_last_line_is_skipped_with_a_warning() {
    let dir = scratch("truncated");
    let s = suite(&dir, "");
    let out = dir.join("out");
    assert!(randbench()
        .args(["run", &s, "--out", out.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let first = text.lines().next().unwrap();
    std::fs::write(out.join("results.jsonl"), format!("{first}\n{}", &first[..first.len() / 2]))
        .unwrap();
    let o = randbench().args(["report", out.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("warning") && stdout.contains("truncated last line"), "{stdout}");
    assert!(stdout.contains("true_labels"));
    // Damage before the last line (a disk error, a hand edit) costs that line alone: the
    // report renders the rest and names it.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        out.join("results.jsonl"),
        format!("{}\nnot json\n{}\n", lines[0], lines[1..].join("\n")),
    )
    .unwrap();
    let o = randbench().args(["report", out.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("results.jsonl:2: skipped not a result line"), "{stdout}");
    assert!(stdout.contains("true_labels") && stdout.contains("random_labels"), "{stdout}");
    // compare, ingest and export read the rest too, name the line, and do not exit 0.
    let db = dir.join("history.sqlite");
    let run = out.to_str().unwrap();
    for args in [
        vec!["compare", run, run],
        vec!["ingest", run, "--db", db.to_str().unwrap()],
        vec!["export", run, "--format", "bencher"],
    ] {
        let o = randbench().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains("results.jsonl:2: skipped not a result line"),
            "{args:?}: {stderr}"
        );
    }
    // A file none of whose lines reads is bad input.
    std::fs::write(out.join("results.jsonl"), "not json\n").unwrap();
    let o = randbench().args(["report", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no line of it could be read"));
}

#[test]
fn bad_data_files_are_named_before_anything_runs() {
    let dir = scratch("bad-data");
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let idx = common::idx;
    let write = |name: &str, b: Vec<u8>| {
        std::fs::File::create(data.join(name)).unwrap().write_all(&b).unwrap()
    };
    write("train-images-idx3-ubyte", idx(&[4, 2, 2], &[0; 16]));
    write("train-labels-idx1-ubyte", idx(&[4], &[0, 1, 2, 3]));
    write("t10k-images-idx3-ubyte", idx(&[2, 2, 2], &[0; 8]));
    write("t10k-labels-idx1-ubyte", idx(&[2], &[0, 1]));
    let text = std::fs::read_to_string(suite(&dir, ""))
        .unwrap()
        .replace(
            "{source: synthetic, train: 200, test: 100, image: [1, 16, 16]}",
            &format!("{{source: idx, path: {}}}", data.display()),
        )
        .replace("batch: 50", "batch: 2");
    let s = dir.join("suite.yaml");
    std::fs::write(&s, text).unwrap();
    let check = |expect: &str| {
        let out = dir.join("out");
        let o = randbench()
            .args(["run", s.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(expect), "expected `{expect}` in {err}");
        assert!(!out.exists());
    };
    // Fine as it is: the run would go; break one file at a time.
    write("train-labels-idx1-ubyte", idx(&[4], &[0, 1, 2, 10]));
    check("train-labels-idx1-ubyte: label 10 of example 3 is outside 0..10");
    write("train-labels-idx1-ubyte", idx(&[4], &[0, 1, 2, 3]));
    let mut truncated = idx(&[4, 2, 2], &[0; 16]);
    truncated.truncate(20);
    write("train-images-idx3-ubyte", truncated);
    check("train-images-idx3-ubyte: truncated");
    write("train-images-idx3-ubyte", b"GIF89a.........".to_vec());
    check("train-images-idx3-ubyte: wrong magic number");
    std::fs::remove_file(data.join("train-images-idx3-ubyte")).unwrap();
    check("neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz is there");
}

#[test]
fn an_unwritable_output_directory_is_named() {
    let dir = scratch("unwritable");
    let s = suite(&dir, "");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = randbench()
        .args(["run", &s, "--out", file.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--out") && err.contains("a-file"), "{err}");
}

/// A full disk in the middle of a run (here a file-size limit, which fails writes the same
/// way: a short write, then an error): the run stops with a clear message, and every line of
/// results.jsonl on disk is whole.
#[test]
fn a_full_disk_leaves_only_whole_result_lines() {
    let dir = scratch("full-disk");
    let s = suite(&dir, "");
    let out = dir.join("out");
    let first = randbench().args(["run", &s, "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(first.status.success());
    let line = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let line_len = line.lines().next().unwrap().len() as u64 + 1;
    // Room for one line and a half: the second append is cut short.
    let limit_kib = (line_len * 3 / 2).div_ceil(1024);
    assert!(limit_kib * 1024 < 2 * line_len, "the limit must cut the second line");
    std::fs::remove_dir_all(&out).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {limit_kib} && exec \"$0\" run \"$1\" --out \"$2\"",))
        .args([env!("CARGO_BIN_EXE_randbench"), &s, out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot append the result"), "{err}");
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "a cut line was left: {} bytes", text.len());
    let r = results(&out);
    assert_eq!(r.len(), 1, "the first line stays");
}

#[test]
fn cells_still_start_after_the_binary_was_rebuilt_under_the_run() {
    let dir = scratch("rebuilt");
    let s = suite(&dir, "");
    let out = dir.join("out");
    // A second name for the binary, removed while the run goes, as a rebuild replaces it.
    let exe = dir.join("randbench-under-test");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_randbench"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_randbench"), &exe).unwrap();
    }
    let child = Command::new(&exe)
        .args(["run", &s, "--isolate", "process", "--out", out.to_str().unwrap()])
        .env("RANDBENCH_TEST_DELAY", "candle-cpu=10")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("environment.json").is_file() {
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&exe).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = results(&out);
    assert_eq!(r.len(), 2);
    for line in &r {
        assert!(line["error"].is_null(), "{line}");
    }
}
