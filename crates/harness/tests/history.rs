//! The history end to end: runs ingested into SQLite (nothing installed) and into a real
//! PostgreSQL server that this test starts on loopback; re-ingesting adds nothing; the run
//! whose steps were slowed on purpose is flagged as the change.

mod common;

use common::{randbench, run_tiny, Postgres, DELAY};
use std::path::{Path, PathBuf};

/// Three runs as they are, then one slowed: the history must flag the fourth.
fn four_runs(dir: &Path) -> Vec<PathBuf> {
    let _timing = common::timing_lock();
    let mut runs: Vec<PathBuf> =
        (0..3).map(|i| run_tiny(dir, &format!("night{i}"), &[], &[])).collect();
    runs.push(run_tiny(dir, "slowed", &[], &[("RANDBENCH_TEST_DELAY", DELAY)]));
    runs
}

fn ingest(db: &str, runs: &[PathBuf]) -> String {
    let mut args = vec!["ingest", "--db", db];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    let o = randbench(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_history(db: &str, runs: &[PathBuf]) {
    let first = ingest(db, runs);
    assert_eq!(first.matches(": 4 new cell results, 16 new figures").count(), 4, "{first}");
    let again = ingest(db, runs);
    assert_eq!(again.matches(": 0 new cell results, 0 new figures").count(), 4, "{again}");

    let o = randbench(
        &[
            "history",
            "--db",
            db,
            "--figure",
            "steps_per_second",
            "--backend",
            "candle-cpu",
            "--threshold",
            "1.0",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<&str> =
        text.lines().filter(|l| l.starts_with('│') && l.contains("Z ┆")).collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[..3].iter().all(|r| !r.contains("CHANGED")), "{text}");
    assert!(rows[3].contains("CHANGED: slower"), "{text}");

    let o = randbench(&["history", "--db", db, "--figure", "steps_per_sec"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("figures: steps_per_second"));
}

#[test]
fn sqlite_history_flags_the_slowed_run_and_ingests_once() {
    let dir = common::scratch("history", "sqlite");
    let runs = four_runs(&dir);
    check_history(dir.join("history.sqlite").to_str().unwrap(), &runs);
}

#[test]
fn postgres_history_flags_the_slowed_run_and_ingests_once() {
    let Some(pg) = Postgres::start() else { return };
    let dir = common::scratch("history", "postgres");
    let runs = four_runs(&dir);
    check_history(&pg.url(), &runs);
    // A server that is not there: a clear error, exit code 2.
    let o = randbench(
        &["ingest", "--db", "postgres://randbench@127.0.0.1:1/none", runs[0].to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What `--db` gets wrong is bad input (exit 2, one line), never a panic or a failure of the
/// history: a URL with `@` before `://`, a file that is not a database; and a run whose
/// environment file is damaged is named.
#[test]
fn bad_history_input_is_named_and_exits_2() {
    let dir = common::scratch("history", "bad-db");
    let run = run_tiny(&dir, "run", &[], &[]);
    let run = run.to_str().unwrap();
    let not_db = dir.join("notes.txt");
    std::fs::write(&not_db, "these are not the droids you are looking for\n".repeat(200)).unwrap();
    let cases = [
        ("user@host://db", "'@' comes before '://'"),
        ("mysql://host/db", "only postgres://, postgresql:// and sqlite:// URLs"),
        (not_db.to_str().unwrap(), "not a SQLite database"),
    ];
    for (db, words) in cases {
        let o = randbench(&["ingest", "--db", db, run], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{db}: {err}");
        assert!(err.contains(words) && err.lines().count() == 1, "{db}: {err}");
    }
    // The file that is not a database is left as it was.
    assert!(std::fs::read_to_string(&not_db).unwrap().starts_with("these are not"));

    std::fs::write(Path::new(run).join("environment.json"), "{\"randbench_version\": ").unwrap();
    let db = dir.join("h.sqlite");
    let o = randbench(&["ingest", "--db", db.to_str().unwrap(), run], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("environment.json: damaged environment file"), "{err}");
    let o = randbench(&["report", run], &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("environment.json: damaged, so the report says nothing of the machine"));
}
