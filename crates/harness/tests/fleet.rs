//! Fleets end to end: a suite in shards (a partition, whole experiments per shard), shards
//! storing concurrently into one history (SQLite and a real PostgreSQL server) and gathered
//! into one report equal to the unsharded run's, Slurm job arrays on a real one-machine
//! cluster (scripts/setup-slurm.sh) with a task cancelled and the run resumed, and the
//! Kubernetes manifest read back into the API's own types.

mod common;

use common::{randbench, Postgres};
use randbench_schema::{CellResult, Shard};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Six experiments (two conditions, three seeds) of a few seconds each on candle-cpu.
const SUITE: &str = r#"
backends: [candle-cpu]
seeds: [1, 2, 3]
workloads:
  - randomization:
      name: tiny
      data: {source: synthetic, train: 200, test: 100, image: [1, 16, 16]}
      model:
        mlp: {hidden: [32]}
      optimizer: {kind: momentum, lr: 0.1, momentum: 0.9}
      batch: 50
      conditions: [true_labels, random_labels]
      max_epochs: 30
"#;

fn write_suite(dir: &Path) -> String {
    let path = dir.join("fleet.yaml");
    std::fs::write(&path, SUITE).unwrap();
    path.to_str().unwrap().to_string()
}

fn ok(o: &std::process::Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn results(dir: &Path) -> Vec<CellResult> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A value with every timing left out: what must not depend on where or when a cell ran.
fn science(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.contains("second"))
                .map(|(k, v)| (k.clone(), science(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(science).collect()),
        other => other.clone(),
    }
}

/// Each cell's status, metrics and loss trace, timings left out, keyed by the cell.
fn outcomes(results: &[CellResult]) -> BTreeMap<String, Value> {
    results
        .iter()
        .map(|r| {
            let key = format!("{} round {}", r.cell, r.round);
            let v = serde_json::json!({
                "status": r.status.label(),
                "metrics": science(&serde_json::to_value(&r.metrics).unwrap()),
                "step_losses": serde_json::to_value(&r.step_losses).unwrap(),
                "diverged_at": r.diverged_at,
            });
            (key, v)
        })
        .collect()
}

/// The suite run whole on this machine, for the shards to be held against.
fn unsharded(dir: &Path, suite: &str) -> Vec<CellResult> {
    let out = dir.join("whole");
    ok(&randbench(&["run", suite, "--out", out.to_str().unwrap()], &[]));
    results(&out)
}

/// The run gathered from the history equals the unsharded run, cell for cell and to the last
/// digit of every loss and accuracy.
fn gathered_equals(dir: &Path, db: &str, run: &str, whole: &[CellResult]) {
    let out = dir.join(format!("gathered-{run}"));
    ok(&randbench(&["report", "--db", db, "--run", run, "--out", out.to_str().unwrap()], &[]));
    assert!(out.join("report.md").is_file() && out.join("report.html").is_file());
    let gathered = results(&out);
    assert_eq!(gathered.len(), whole.len());
    assert_eq!(outcomes(&gathered), outcomes(whole));
}

#[test]
fn shards_partition_any_suite_into_whole_experiments() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-suites");
    let suite = randbench::suite::load(&root.join("quick.yaml")).unwrap();
    let backends: Vec<randbench_core::BackendId> =
        ["candle-cpu", "tch-cpu", "ort-cpu"].iter().map(|b| b.parse().unwrap()).collect();
    let all = suite.cells(&backends);
    let experiments = all.len() / backends.len();
    for count in 1..=experiments + 3 {
        let mut seen: Vec<randbench_schema::Cell> = Vec::new();
        for index in 0..count {
            let shard = suite.shard_cells(&backends, Some(Shard { index, count }));
            // Whole experiments: every backend of each, in turns.
            assert_eq!(shard.len() % backends.len(), 0);
            for chunk in shard.chunks(backends.len()) {
                assert!(chunk.iter().all(|c| c.workload == chunk[0].workload
                    && c.seed == chunk[0].seed
                    && c.variant == chunk[0].variant));
                let ids: Vec<_> = chunk.iter().map(|c| c.backend).collect();
                assert_eq!(ids, backends);
            }
            seen.extend(shard);
        }
        // Every cell once, for any number of shards (more shards than experiments included).
        assert_eq!(seen.len(), all.len(), "{count} shards");
        assert!(all.iter().all(|c| seen.iter().filter(|s| *s == c).count() == 1));
    }
}

/// Three shards at once into one history, gathered: exactly the unsharded run's cells.
fn three_concurrent_shards(dir: &Path, db: &str, whole: &[CellResult], suite: &str) {
    // Two runs of three shards each, all six processes at once on one SQLite file.
    let children: Vec<_> = ["concurrent-1", "concurrent-2"]
        .iter()
        .flat_map(|run| (0..3).map(move |i| (run, i)))
        .map(|(run, i)| {
            let out = dir.join(format!("{run}-shard-{i}"));
            Command::new(env!("CARGO_BIN_EXE_randbench"))
                .args(["run", suite, "--shard", &format!("{i}/3"), "--run-id", run])
                .args(["--db", db, "--out", out.to_str().unwrap()])
                .env_remove("RANDBENCH_TEST_DELAY")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(!err.contains("locked") && !err.contains("warning"), "{err}");
    }
    for run in ["concurrent-1", "concurrent-2"] {
        gathered_equals(dir, db, run, whole);
        let status = ok(&randbench(&["status", run, "--db", db], &[]));
        assert_eq!(status.matches("done").count(), 3, "{status}");
    }
    // A run the history does not hold is named, with those it does.
    for args in [
        vec!["status", "nosuch", "--db", db],
        vec!["report", "--db", db, "--run", "nosuch"],
        vec!["run", suite, "--resume", "--run-id", "nosuch", "--db", db],
    ] {
        let o = randbench(&args, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("no run nosuch; the latest runs there: concurrent-"), "{err}");
    }
    // Resumed in another number of shards, the experiments would be shared out differently.
    let o = randbench(
        &["submit", "slurm", suite, "--shards", "2", "--db", db, "--resume", "concurrent-1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`submit --shards 3`"));
}

#[test]
fn concurrent_shards_into_sqlite_gather_into_the_unsharded_run() {
    let dir = common::scratch("fleet", "sqlite");
    let suite = write_suite(&dir);
    let whole = unsharded(&dir, &suite);
    let db = dir.join("history.sqlite");
    three_concurrent_shards(&dir, db.to_str().unwrap(), &whole, &suite);
}

#[test]
fn concurrent_shards_into_postgres_gather_into_the_unsharded_run() {
    let Some(pg) = Postgres::start() else { return };
    let dir = common::scratch("fleet", "postgres");
    let suite = write_suite(&dir);
    let whole = unsharded(&dir, &suite);
    three_concurrent_shards(&dir, &pg.url(), &whole, &suite);
    // compare and procure take runs of the history by id.
    let o = randbench(&["compare", "concurrent-1", "concurrent-2", "--db", &pg.url()], &[]);
    assert_ne!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("steps_per_second"));
    let o = randbench(
        &["procure", "--suite", "fleet", "--run", "concurrent-1", "--db", &pg.url()],
        &[],
    );
    let tables = ok(&o);
    assert!(
        tables.contains("tiny true_labels") && tables.contains("tiny random_labels"),
        "{tables}"
    );
}

/// A shard stopped as schedulers stop one (SIGTERM) mid-cell, then resumed, on PostgreSQL:
/// the interrupted cell is replaced by its rerun, nothing else runs again, and the shard's
/// cells equal the unsharded run's.
#[test]
fn a_shard_stopped_by_sigterm_resumes_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let dir = common::scratch("fleet", "sigterm");
    let suite = write_suite(&dir);
    let whole = unsharded(&dir, &suite);
    let db = pg.url();
    let out = dir.join("shard-0");
    let args = [
        "run",
        &suite,
        "--shard",
        "0/2",
        "--run-id",
        "stopped",
        "--db",
        &db,
        "--out",
        out.to_str().unwrap(),
        // Cells in processes of their own, as with a fleet's several backends: the test sees
        // when the second cell begins.
        "--isolate",
        "process",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_randbench"))
        .args(args)
        .env("RANDBENCH_TEST_DELAY", "candle-cpu=200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stop it inside its second cell: the first cell's process has exited before its line is
    // stored, so a process of the run's after that line is the second cell's. A stop between
    // cells (while the first line goes to PostgreSQL) would leave nothing interrupted.
    let start = Instant::now();
    while results_so_far(&out) < 1 || !has_child(child.id()) {
        assert!(start.elapsed() < Duration::from_secs(300), "no second cell began");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let stopped = results(&out);
    assert_eq!(stopped.last().unwrap().status, randbench_schema::Status::Interrupted);
    let table = ok(&randbench(&["status", "stopped", "--db", &db], &[]));
    assert!(table.contains("stopped; resume it"), "{table}");

    let mut again = args.to_vec();
    again.push("--resume");
    ok(&randbench(&again, &[]));
    let lines = results(&out);
    let rerun = lines.len() - stopped.len();
    // The shard's three experiments: those not stored, and the interrupted one.
    let missing = 3 - stopped.iter().filter(|r| r.status.ran()).count();
    assert_eq!(rerun, missing, "ran {rerun} cells again, {missing} were missing");
    let gathered = dir.join("gathered");
    ok(&randbench(
        &["report", "--db", &db, "--run", "stopped", "--out", gathered.to_str().unwrap()],
        &[],
    ));
    let mine: Vec<CellResult> =
        whole.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, r)| r.clone()).collect();
    assert_eq!(outcomes(&results(&gathered)), outcomes(&mine));
}

/// Whether process `pid` has a child now (any of its threads may have started it).
fn has_child(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
    })
}

fn results_so_far(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("results.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
fn bad_fleet_input_is_one_line_exit_2_and_writes_nothing() {
    let dir = common::scratch("fleet", "bad");
    let suite = write_suite(&dir);
    let db = dir.join("h.sqlite");
    let db = db.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let spaced = format!("{}/with space", dir.display());
    let no_sbatch = dir.join("empty-path");
    std::fs::create_dir_all(&no_sbatch).unwrap();
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (vec!["run", &suite, "--shard", "3/3", "--out", o], vec![], "from 0 to 2"),
        (vec!["run", &suite, "--shard", "0/0", "--out", o], vec![], "1 or more"),
        (
            vec!["run", &suite, "--db", "postgres://nobody@127.0.0.1:1/none", "--out", o],
            vec![],
            "cannot connect",
        ),
        (
            vec!["run", &suite, "--resume", "--run-id", "nosuch", "--db", db, "--out", o],
            vec![],
            "no such file",
        ),
        (vec!["run", &suite, "--run-id", "a b", "--out", o], vec![], "--run-id a b"),
        (vec!["status", "nosuch", "--db", db], vec![], "no such file"),
        (vec!["report", "--db", db, "--run", "nosuch", "--out", o], vec![], "no such file"),
        (
            vec!["submit", "slurm", &suite, "--shards", "3", "--db", db, "--out", o],
            vec![("PATH", no_sbatch.to_str().unwrap())],
            "sbatch: not found",
        ),
        (
            vec!["submit", "slurm", &suite, "--shards", "2", "--db", db, "--out", &spaced],
            vec![],
            "Slurm's #SBATCH lines take no spaces",
        ),
        (
            vec!["submit", "slurm", &suite, "--shards", "0", "--db", db, "--out", o],
            vec![],
            "--shards: give 1 or more",
        ),
        (
            vec!["submit", "slurm", &suite, "--shards", "2", "--db", db, "--resume", "gone"],
            vec![],
            "no such file",
        ),
        (
            vec![
                "submit",
                "k8s",
                &suite,
                "--shards",
                "2",
                "--image",
                "i",
                "--db",
                "postgres://h/d",
            ],
            vec![],
            "not in the image",
        ),
    ];
    for (args, env, words) in cases {
        let o = randbench(&args, &env);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
        // Reading commands, and a submission that cannot be made, leave no history behind.
        assert!(!Path::new(db).exists(), "{args:?} made {db}");
    }
}

#[test]
fn kubernetes_manifest_reads_back_into_the_api_types() {
    use k8s_openapi::api::batch::v1::Job;
    let dir = common::scratch("fleet", "k8s");
    let suite = write_suite(&dir);
    let db = "postgres://randbench@db.example:5432/history";
    let out = dir.join("k8s");
    let o = randbench(
        &[
            "submit",
            "k8s",
            "quick",
            "--shards",
            "4",
            "--gpu",
            "1",
            "--cpu",
            "8",
            "--memory",
            "32Gi",
            "--image",
            "registry.example/randbench:1",
            "--db",
            db,
            "--run-id",
            "Nightly_2026.12",
            "--dry-run",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = ok(&o);
    assert!(stdout.contains("run Nightly_2026.12"), "{stdout}");
    let text = std::fs::read_to_string(out.join("job.json")).unwrap();
    let job: Job = serde_json::from_str(&text).unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("randbench-nightly-2026-12"));
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.completions, Some(4));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example/randbench:1"));
    let args = c.args.clone().unwrap();
    let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(args[0], "run");
    assert_eq!(after("--shard"), "$(JOB_COMPLETION_INDEX)/4");
    assert_eq!(after("--run-id"), "Nightly_2026.12");
    assert_eq!(after("--db"), db);
    assert_eq!(args[1], "quick");
    let env = c.env.clone().unwrap();
    let index = env.iter().find(|e| e.name == "JOB_COMPLETION_INDEX").unwrap();
    let field = index.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert!(field.field_path.contains("job-completion-index"));
    let resources = c.resources.as_ref().unwrap();
    let limits = resources.limits.as_ref().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert_eq!(limits["cpu"].0, "8");
    assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "32Gi");
    // A SQLite file cannot be every pod's history.
    let o = randbench(
        &["submit", "k8s", &suite, "--shards", "2", "--image", "i", "--db", "sqlite://h.sqlite"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("every pod needs to reach the history"));
}

// ---- Slurm, on the one-machine cluster of scripts/setup-slurm.sh ----

/// The cluster's configuration, or `None` (the test skips) when it is not running and
/// RANDBENCH_REQUIRE_SLURM is unset.
fn slurm() -> Option<PathBuf> {
    let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/slurm/slurm.conf")
    });
    let up = conf.is_file()
        && Command::new("sinfo")
            .env("SLURM_CONF", &conf)
            .args(["-h", "-o", "%t"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var_os("RANDBENCH_REQUIRE_SLURM").is_none(),
            "no Slurm cluster at {}: run scripts/setup-slurm.sh",
            conf.display()
        );
        eprintln!("skipped: no Slurm cluster (scripts/setup-slurm.sh starts one)");
        return None;
    }
    Some(conf)
}

fn submit(conf: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut env = env.to_vec();
    env.push(("SLURM_CONF", conf.to_str().unwrap()));
    let stdout = ok(&randbench(args, &env));
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    (field("run"), field("job"))
}

/// Waits until Slurm no longer lists the job.
fn wait_for(conf: &Path, job: &str) {
    let start = Instant::now();
    loop {
        let o = Command::new("squeue")
            .env("SLURM_CONF", conf)
            .args(["-h", "-r", "-j", job, "-o", "%i %T"])
            .output()
            .unwrap();
        // An ended job leaves the queue (or becomes unknown to it).
        if !o.status.success() || o.stdout.is_empty() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "job {job} still queued");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_rows(conf: &Path, run: &str, db: &str) -> String {
    ok(&randbench(&["status", run, "--db", db], &[("SLURM_CONF", conf.to_str().unwrap())]))
}

#[test]
fn slurm_job_array_runs_the_shards_and_resumes_a_cancelled_task() {
    let Some(conf) = slurm() else { return };
    let dir = common::scratch("fleet", "slurm");
    let suite = write_suite(&dir);
    let whole = unsharded(&dir, &suite);
    let db = dir.join("history.sqlite");
    let db = db.to_str().unwrap();
    let fleet = dir.join("fleet");
    let fleet = fleet.to_str().unwrap();

    // Three array tasks, all the way through.
    let started = Instant::now();
    let (run, job) = submit(
        &conf,
        &["submit", "slurm", &suite, "--shards", "3", "--db", db, "--out", fleet],
        &[],
    );
    let script = std::fs::read_to_string(Path::new(fleet).join("submit.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-2\n"), "{script}");
    wait_for(&conf, &job);
    eprintln!("3 shards on the local cluster: {:.1} s", started.elapsed().as_secs_f64());
    let status = status_rows(&conf, &run, db);
    assert_eq!(status.matches("done").count(), 3, "{status}");
    gathered_equals(&dir, db, &run, &whole);

    // Slowed steps, so that a task can be cancelled with a cell half done.
    let slow = [("RANDBENCH_TEST_DELAY", "candle-cpu=200")];
    let resumed = dir.join("resumed");
    let resumed = resumed.to_str().unwrap();
    let (run, job) = submit(
        &conf,
        &["submit", "slurm", &suite, "--shards", "3", "--db", db, "--out", resumed],
        &slow,
    );
    // Once shard 1 has stored its first cell, cancel it during its second.
    let start = Instant::now();
    loop {
        let s = status_rows(&conf, &run, db);
        let shard1 = s.lines().find(|l| l.contains(" 1/3 ")).unwrap_or("").to_string();
        let cells: Vec<&str> = shard1.split('┆').map(str::trim).collect();
        if cells.len() > 3 && cells[3] == "1" {
            // Its second cell runs: `status` shows Slurm's state of the task.
            let state = cells.last().unwrap().trim_end_matches('│').trim();
            assert_eq!(state, "running", "{s}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "shard 1 never stored a cell: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new("scancel").env("SLURM_CONF", &conf).arg(format!("{job}_1")).output();
    assert!(o.unwrap().status.success());
    wait_for(&conf, &job);
    let status = status_rows(&conf, &run, db);
    let shard1 = status.lines().find(|l| l.contains(" 1/3 ")).unwrap();
    assert!(shard1.contains("stopped; resume it"), "{status}");
    // The cancelled cell was written as interrupted: kept, and not taken for a result.
    let partial = results(&Path::new(resumed).join("shard-1"));
    assert!(partial.iter().any(|r| r.status == randbench_schema::Status::Interrupted));

    let (again, job) = submit(
        &conf,
        &[
            "submit", "slurm", &suite, "--shards", "3", "--db", db, "--resume", &run, "--out",
            resumed,
        ],
        &[],
    );
    assert_eq!(again, run);
    wait_for(&conf, &job);
    let status = status_rows(&conf, &run, db);
    assert_eq!(status.matches("done").count(), 3, "{status}");
    // Nothing run twice: the shards that had finished ran nothing on resume, and shard 1 ran
    // only what was missing (its directory holds its first runs' lines and the rerun's).
    for shard in [0, 2] {
        let lines = results(&Path::new(resumed).join(format!("shard-{shard}")));
        assert_eq!(lines.len(), 2, "shard {shard} ran again");
    }
    let shard1 = results(&Path::new(resumed).join("shard-1"));
    let again = shard1.len() - partial.len();
    let missing = 2 - partial.iter().filter(|r| r.status.ran()).count();
    assert_eq!(again, missing, "shard 1 reran {again} cells, {missing} were missing");
    assert!(Path::new(resumed)
        .read_dir()
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("submit-resume-") }));
    gathered_equals(&dir, db, &run, &whole);
}

/// The sbatch script hands every argument to the program as it was given, whatever quotes
/// and spaces a suite path or URL holds, with the task's index expanded by the shell.
#[test]
fn the_sbatch_script_passes_arguments_through_the_shell_intact() {
    use randbench::fleet::{slurm_script, ShardCommand, Slurm};
    let dir = common::scratch("fleet", "script");
    // A stand-in for randbench that prints its arguments, one a line.
    let exe = dir.join("args");
    std::fs::write(&exe, "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&exe).status().unwrap();
    let cmd = ShardCommand {
        suite: "/suites/it's a \"suite\" $HOME.yaml".into(),
        shards: 3,
        db: "postgres://bench@db:5432/history?options=-c search_path=x".into(),
        run_id: Some("run-1".into()),
        backends: Some(vec!["candle-cpu".into(), "tch-cpu".into()]),
        machine: Some("lab box".into()),
        resume: true,
    };
    let script =
        slurm_script(&cmd, &Slurm { max_parallel: Some(2), ..Default::default() }, &exe, &dir);
    assert!(script.contains("#SBATCH --array=0-2%2\n"), "{script}");
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let args: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect();
    let shard_dir = format!("{}/shard-2", dir.display());
    let want = [
        "run",
        &cmd.suite,
        "--shard",
        "2/3",
        "--run-id",
        "run-1",
        "--db",
        &cmd.db,
        "--out",
        &shard_dir,
        "--isolate",
        "process",
        "--backends",
        "candle-cpu,tch-cpu",
        "--machine",
        "lab box",
        "--resume",
    ];
    assert_eq!(args, want);
}
