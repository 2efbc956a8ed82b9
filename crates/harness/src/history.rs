//! The history: runs from any number of machines stored in one database, SQLite by default
//! (embedded, nothing to install) or PostgreSQL for several machines reporting to one server.
//! `randbench ingest` stores run directories (idempotent: a run's id is a hash of its
//! environment, every insert skips rows already there); `randbench history` shows a figure's
//! series for a cell and flags the run where it changed.

use crate::env::{fnv1a, Environment, ENV_FILE};
use crate::report::{fmt_value, Column, Table};
use randbench_core::rng::Rng;
use randbench_core::stats::{self, Verdict};
use randbench_schema::results::{
    self, write_atomic, Catalogue, ResultsError, RunInfo, RESULTS_FILE, RUN_FILE,
};
use randbench_schema::{Cell, CellResult, Measure, Shard, Status};
use std::path::{Path, PathBuf};

/// Why a `--db` value that is not a PostgreSQL URL is no file path either: another scheme, or
/// a mistyped URL (`user@host://…`).
fn not_a_path(url: &str) -> Option<&'static str> {
    let scheme = url.find("://")?;
    if url.starts_with("sqlite://") {
        return None;
    }
    if url[..scheme].contains('@') {
        Some("'@' comes before '://'")
    } else {
        Some("only postgres://, postgresql:// and sqlite:// URLs are understood")
    }
}

/// Whether `--db` names a PostgreSQL server.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite file a `--db` value names (`sqlite://PATH` or a plain path); `None` for a
/// PostgreSQL URL and for any other scheme, which [`Db::open`] refuses.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    if is_postgres(url) || not_a_path(url).is_some() {
        return None;
    }
    Some(PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url)))
}

/// SQLite's answer to a file that is not one of its databases.
fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Where `ingest` and `history` keep the history unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "reports/history.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{db}: {source}")]
    Sqlite { db: String, source: rusqlite::Error },
    #[error("{db}: {}", postgres_words(source))]
    Postgres { db: String, source: Box<postgres::Error> },
    #[error(
        "--db {db}: cannot connect: {source}; check that the server runs and the URL \
         (postgres://USER@HOST:PORT/DATABASE)"
    )]
    Connect { db: String, source: Box<postgres::Error> },
    #[error(
        "--db {db}: {why}; write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or a file path"
    )]
    BadUrl { db: String, why: &'static str },
    #[error("--db {db}: not a SQLite database ({source}); give a history file made by randbench, or a new path")]
    NotADatabase { db: String, source: rusqlite::Error },
    #[error("--db {db}: cannot create {dir}: {source}")]
    CreateDir { db: String, dir: PathBuf, source: std::io::Error },
    #[error("{path}: {source}; give a directory written by `randbench run`")]
    NoEnvironment { path: PathBuf, source: std::io::Error },
    #[error("{path}: damaged environment file: {source}")]
    DamagedEnvironment { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{db}: run {run}: damaged {what}: {source}")]
    DamagedStored { db: String, run: String, what: &'static str, source: serde_json::Error },
    #[error("--figure {name}: no such figure; figures: {}", known.join(", "))]
    UnknownFigure { name: String, known: Vec<String> },
    #[error("{db}: no stored values of {figure} match; `randbench ingest DIR` stores runs")]
    NoValues { db: String, figure: String },
    #[error("{db}: no run {run}; {}", if known.is_empty() { "the history holds no run yet".to_string() } else { format!("the latest runs there: {}", known.join(", ")) })]
    UnknownRun { db: String, run: String, known: Vec<String> },
    #[error("--db {db}: no such file; `randbench run --db` or `randbench ingest` makes a history")]
    NoHistory { db: String },
    #[error("run {run} is in {had} shards; give `submit --shards {had}` or `run --shard I/{had}` (another count shares its experiments out differently)")]
    ShardCount { run: String, had: usize },
    #[error("{}: cannot write the gathered run: {source}", path.display())]
    WriteRun { path: PathBuf, source: std::io::Error },
    #[error(
        "{db}: run {run} has no results yet; `randbench status {run} --db {db}` shows its shards"
    )]
    NoResults { db: String, run: String },
}

impl HistoryError {
    /// Whether the user gave something wrong (exit 2), rather than the database failing.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            HistoryError::Sqlite { .. }
                | HistoryError::Postgres { .. }
                | HistoryError::WriteRun { .. }
        )
    }
}

/// An open history database.
pub struct Db {
    conn: Conn,
    /// The URL or path, for messages (a password in a URL is not shown).
    name: String,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

/// A value bound to or read from a query.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
    Real(f64),
    Null,
}

impl Value {
    fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS machines (
    fingerprint TEXT PRIMARY KEY,
    hardware TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    machine TEXT NOT NULL REFERENCES machines (fingerprint),
    host TEXT,
    suite TEXT NOT NULL,
    started_at TEXT NOT NULL,
    git_commit TEXT,
    rounds BIGINT NOT NULL,
    environment TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    run TEXT NOT NULL REFERENCES runs (id),
    workload TEXT NOT NULL,
    variant TEXT NOT NULL,
    seed BIGINT NOT NULL,
    backend TEXT NOT NULL,
    round BIGINT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (run, workload, variant, seed, backend, round)
);
CREATE TABLE IF NOT EXISTS figures (
    run TEXT NOT NULL REFERENCES runs (id),
    workload TEXT NOT NULL,
    variant TEXT NOT NULL,
    seed BIGINT NOT NULL,
    backend TEXT NOT NULL,
    round BIGINT NOT NULL,
    figure TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run, workload, variant, seed, backend, round, figure)
);
CREATE TABLE IF NOT EXISTS shards (
    run TEXT NOT NULL REFERENCES runs (id),
    shard BIGINT NOT NULL,
    shards BIGINT NOT NULL,
    machine TEXT NOT NULL REFERENCES machines (fingerprint),
    host TEXT,
    started_at TEXT NOT NULL,
    environment TEXT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (run, shard)
);
CREATE TABLE IF NOT EXISTS planned (
    run TEXT NOT NULL REFERENCES runs (id),
    shard BIGINT NOT NULL,
    workload TEXT NOT NULL,
    variant TEXT NOT NULL,
    seed BIGINT NOT NULL,
    backend TEXT NOT NULL,
    round BIGINT NOT NULL,
    PRIMARY KEY (run, workload, variant, seed, backend, round)
);
CREATE TABLE IF NOT EXISTS submissions (
    run TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    job TEXT NOT NULL,
    shards BIGINT NOT NULL,
    suite TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    PRIMARY KEY (run, job)
);
";

/// The key of the PostgreSQL advisory lock taken while the tables are created.
const SCHEMA_LOCK: i64 = 0x7261_6e64_6265_6e63; // "randbenc"

/// A PostgreSQL error in words: the server's message (its Display says only "db error").
fn postgres_words(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut words = format!("{}: {}", d.severity(), d.message());
            if let Some(detail) = d.detail() {
                words += &format!(" ({detail})");
            }
            words
        }
        None => e.to_string(),
    }
}

/// Hides the password of a `postgres://user:password@host/db` URL.
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 && url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').expect("checked");
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Opens a history that must be there already: a SQLite file that does not exist is an
    /// error, not a new, empty history (for commands that only read, or resume).
    pub fn open_existing(url: &str) -> Result<Db, HistoryError> {
        if sqlite_file(url).is_some_and(|path| !path.exists()) {
            return Err(HistoryError::NoHistory { db: url.to_string() });
        }
        Db::open(url)
    }

    /// Opens (and creates, the first time) the history at `url`: a `postgres://` or
    /// `postgresql://` URL, else a SQLite file (`sqlite://PATH` or a plain path).
    pub fn open(url: &str) -> Result<Db, HistoryError> {
        let name = shown(url);
        let conn = if is_postgres(url) {
            let client = postgres::Client::connect(url, postgres::NoTls)
                .map_err(|e| HistoryError::Connect { db: name.clone(), source: Box::new(e) })?;
            Conn::Postgres(Box::new(client))
        } else {
            if let Some(why) = not_a_path(url) {
                return Err(HistoryError::BadUrl { db: name, why });
            }
            let path = sqlite_file(url).expect("neither PostgreSQL nor another scheme");
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir {
                    db: name.clone(),
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
            let conn = rusqlite::Connection::open(&path)
                .map_err(|source| HistoryError::Sqlite { db: name.clone(), source })?;
            // Several processes may ingest at once: wait for a writer instead of failing.
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .map_err(|source| HistoryError::Sqlite { db: name.clone(), source })?;
            Conn::Sqlite(conn)
        };
        let mut db = Db { conn, name };
        // Shards opening a new history at once would race to create its tables, and
        // PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic: one creates, the others wait.
        let create = match db.conn {
            Conn::Sqlite(_) => format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"),
            Conn::Postgres(_) => {
                format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;")
            }
        };
        match db.batch(&create) {
            Err(HistoryError::Sqlite { db, source }) if is_not_a_database(&source) => {
                Err(HistoryError::NotADatabase { db, source })
            }
            other => other.map(|()| db),
        }
    }

    /// The error of either engine, naming this database.
    fn failed(&self, f: Failure) -> HistoryError {
        let db = self.name.clone();
        match f {
            Failure::Sqlite(source) => HistoryError::Sqlite { db, source },
            Failure::Postgres(source) => HistoryError::Postgres { db, source: Box::new(source) },
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), HistoryError> {
        let r: Result<(), Failure> = match &mut self.conn {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(Into::into),
            Conn::Postgres(c) => c.batch_execute(sql).map_err(Into::into),
        };
        r.map_err(|f| self.failed(f))
    }

    /// Runs one statement whose parameters are `$1, $2, …` in order of first appearance (so
    /// that SQLite's numbering of named parameters is PostgreSQL's); returns the rows changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, HistoryError> {
        let r: Result<u64, Failure> = match &mut self.conn {
            Conn::Sqlite(c) => c
                .execute(sql, rusqlite::params_from_iter(args.iter().map(to_sqlite)))
                .map(|n| n as u64)
                .map_err(Into::into),
            Conn::Postgres(c) => {
                with_postgres_params(args, |params| c.execute(sql, params)).map_err(Into::into)
            }
        };
        r.map_err(|f| self.failed(f))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, HistoryError> {
        let r: Result<Vec<Vec<Value>>, Failure> = match &mut self.conn {
            Conn::Sqlite(c) => (|| {
                let mut st = c.prepare(sql)?;
                let columns = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(args.iter().map(to_sqlite)), |row| {
                        (0..columns).map(|i| row.get_ref(i).map(from_sqlite)).collect()
                    })?;
                rows.collect::<Result<Vec<_>, _>>()
            })()
            .map_err(Into::into),
            Conn::Postgres(c) => with_postgres_params(args, |params| c.query(sql, params))
                .map(|rows| rows.iter().map(from_postgres).collect())
                .map_err(Into::into),
        };
        r.map_err(|f| self.failed(f))
    }

    /// Stores a run directory. Idempotent: ingesting it again adds nothing (and a run ingested
    /// while it was still going gains only its new cells).
    pub fn ingest(
        &mut self,
        dir: &Path,
        catalogue: &dyn Catalogue,
    ) -> Result<Ingested, HistoryError> {
        let env_path = dir.join(ENV_FILE);
        let env_text = std::fs::read_to_string(&env_path)
            .map_err(|source| HistoryError::NoEnvironment { path: env_path.clone(), source })?;
        let env: Environment = serde_json::from_str(&env_text)
            .map_err(|source| HistoryError::DamagedEnvironment { path: env_path, source })?;
        let read = results::read(dir, catalogue)?;
        let (results, skipped) = (read.results, read.skipped);
        let info = RunInfo::read(dir)?;
        let run = match info.as_ref().and_then(|i| i.run_id.clone()) {
            Some(id) => id,
            None => env_run_id(&env_text),
        };
        let suite = info
            .as_ref()
            .map(|i| i.suite.clone())
            .or_else(|| results.first().map(|r| r.suite.clone()))
            .unwrap_or_default();
        let rounds = info.as_ref().map_or(1, |i| i.rounds) as i64;
        let added = self.transaction(|db| {
            db.store_run(&run, &env, &env_text, &suite, rounds)?;
            if let Some(info) = info.as_ref().filter(|i| i.shard.is_some()) {
                db.store_shard(&run, info, &env, &env_text, &[])?;
            }
            let (mut cells, mut figures) = (0, 0);
            for r in &results {
                let (c, f) = db.store_cell(&run, r)?;
                cells += c;
                figures += f;
            }
            Ok((cells, figures))
        })?;
        let skipped = skipped.iter().map(ToString::to_string).collect();
        Ok(Ingested { run, added_cells: added.0, added_figures: added.1, skipped })
    }

    /// Runs `f` in one transaction, rolled back if it fails. SQLite's takes the write lock at
    /// once, so concurrent writers wait on the busy timeout instead of failing as deadlocked.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        let begin = match self.conn {
            Conn::Sqlite(_) => "BEGIN IMMEDIATE",
            Conn::Postgres(_) => "BEGIN",
        };
        self.batch(begin)?;
        match f(self) {
            Ok(out) => match self.batch("COMMIT") {
                Ok(()) => Ok(out),
                Err(e) => {
                    let _ = self.batch("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The run's row (and its machine's), unless it is there already: the first shard to
    /// start describes a sharded run.
    fn store_run(
        &mut self,
        run: &str,
        env: &Environment,
        env_text: &str,
        suite: &str,
        rounds: i64,
    ) -> Result<(), HistoryError> {
        let machine = env.fingerprint();
        self.execute(
            "INSERT INTO machines (fingerprint, hardware) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[text(&machine), text(&env.hardware())],
        )?;
        self.execute(
            "INSERT INTO runs (id, machine, host, suite, started_at, git_commit, rounds, environment) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                text(run),
                text(&machine),
                optional(&env.host),
                text(suite),
                text(&env.started_at),
                optional(&env.git_commit),
                Value::Int(rounds),
                text(env_text),
            ],
        )?;
        Ok(())
    }

    /// A shard's row (replaced when the shard starts again on resume) and the cells it plans.
    fn store_shard(
        &mut self,
        run: &str,
        info: &RunInfo,
        env: &Environment,
        env_text: &str,
        planned: &[(&Cell, usize)],
    ) -> Result<(), HistoryError> {
        let shard = info.shard.unwrap_or(Shard { index: 0, count: 1 });
        let info_text = serde_json::to_string(info).expect("serializable");
        self.execute(
            "INSERT INTO shards (run, shard, shards, machine, host, started_at, environment, info) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (run, shard) DO UPDATE SET shards = excluded.shards, \
             machine = excluded.machine, host = excluded.host, started_at = excluded.started_at, \
             environment = excluded.environment, info = excluded.info",
            &[
                text(run),
                Value::Int(shard.index as i64),
                Value::Int(shard.count as i64),
                text(&env.fingerprint()),
                optional(&env.host),
                text(&env.started_at),
                text(env_text),
                text(&info_text),
            ],
        )?;
        for (cell, round) in planned {
            let mut args = cell_key(run, cell, *round).to_vec();
            args.push(Value::Int(shard.index as i64));
            self.execute(
                "INSERT INTO planned (run, workload, variant, seed, backend, round, shard) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &args,
            )?;
        }
        Ok(())
    }

    /// One cell's result and its figures; returns the rows added. A cell the history holds as
    /// interrupted is replaced by its rerun; any other stays as it is (idempotent).
    fn store_cell(&mut self, run: &str, r: &CellResult) -> Result<(u64, u64), HistoryError> {
        let key = cell_key(run, &r.cell, r.round);
        let json = serde_json::to_string(r).expect("serializable");
        let mut args = key.to_vec();
        args.extend([text(r.status.label()), text(&json), text(Status::Interrupted.label())]);
        let cells = self.execute(
            "INSERT INTO cells (run, workload, variant, seed, backend, round, status, result) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (run, workload, variant, seed, backend, round) DO UPDATE \
             SET status = excluded.status, result = excluded.result \
             WHERE cells.status = $9 AND excluded.status <> $9",
            &args,
        )?;
        let mut figures = 0;
        // Only the figures of the result the history now holds (not of one it kept out).
        if cells > 0 && r.status.ran() {
            for f in r.figures.iter().filter(|f| f.value.is_finite()) {
                let mut args = key.to_vec();
                args.extend([text(f.name()), Value::Real(f.value)]);
                figures += self.execute(
                    "INSERT INTO figures (run, workload, variant, seed, backend, round, figure, value) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &args,
                )?;
            }
        }
        Ok((cells, figures))
    }

    /// The latest stored run of `suite` on each machine (as [`Environment::machine`] names
    /// it), in the order the machines first ran it.
    pub fn latest_runs(
        &mut self,
        suite: &str,
        catalogue: &dyn Catalogue,
    ) -> Result<Vec<StoredRun>, HistoryError> {
        let rows = self.query(
            "SELECT id, environment FROM runs WHERE suite = $1 ORDER BY started_at, id",
            &[Value::Text(suite.to_string())],
        )?;
        let mut latest: Vec<(String, Environment)> = Vec::new();
        for row in rows {
            let (Some(id), Some(text)) = (row[0].text(), row[1].text()) else { continue };
            let env: Environment =
                serde_json::from_str(text).map_err(|source| HistoryError::DamagedStored {
                    db: self.name.clone(),
                    run: id.to_string(),
                    what: "environment",
                    source,
                })?;
            match latest.iter_mut().find(|(_, e)| e.machine() == env.machine()) {
                Some(slot) => *slot = (id.to_string(), env),
                None => latest.push((id.to_string(), env)),
            }
        }
        let mut out = Vec::new();
        for (id, env) in latest {
            let results = self.results(&id, catalogue)?;
            out.push(StoredRun { id, env, results });
        }
        Ok(out)
    }

    /// One run as [`latest_runs`](Self::latest_runs) gives them, for `procure --run`.
    pub fn stored_run(
        &mut self,
        run: &str,
        catalogue: &dyn Catalogue,
    ) -> Result<StoredRun, HistoryError> {
        let rows = self.query("SELECT environment FROM runs WHERE id = $1", &[text(run)])?;
        let Some(env_text) = rows.first().and_then(|r| r[0].text()) else {
            return Err(self.unknown_run(run));
        };
        let env = self.parse_stored(run, "environment", env_text)?;
        let results = self.results(run, catalogue)?;
        Ok(StoredRun { id: run.to_string(), env, results })
    }

    fn parse_stored<T: serde::de::DeserializeOwned>(
        &self,
        run: &str,
        what: &'static str,
        text: &str,
    ) -> Result<T, HistoryError> {
        serde_json::from_str(text).map_err(|source| HistoryError::DamagedStored {
            db: self.name.clone(),
            run: run.to_string(),
            what,
            source,
        })
    }

    /// A run's results from all its shards, in the order they ran (round, then start).
    fn results(
        &mut self,
        run: &str,
        catalogue: &dyn Catalogue,
    ) -> Result<Vec<CellResult>, HistoryError> {
        let rows = self.query("SELECT result FROM cells WHERE run = $1", &[text(run)])?;
        let mut results = rows
            .iter()
            .filter_map(|r| r[0].text())
            .map(|t| {
                let mut r: CellResult = self.parse_stored(run, "result", t)?;
                // A result stored before lines carried their figures: the catalogue derives
                // them; one it cannot read counts as having none.
                if catalogue.upgrade(&mut r).is_err() {
                    r.figures.clear();
                }
                Ok(r)
            })
            .collect::<Result<Vec<CellResult>, HistoryError>>()?;
        results.sort_by(|a, b| (a.round, &a.started_at).cmp(&(b.round, &b.started_at)));
        Ok(results)
    }

    /// The error for a run id the history does not hold, naming the latest it does.
    fn unknown_run(&mut self, run: &str) -> HistoryError {
        let known = self
            .query(
                "SELECT id FROM (SELECT id, started_at AS at FROM runs UNION \
                 SELECT run, submitted_at FROM submissions) AS k \
                 GROUP BY id ORDER BY MAX(at) DESC LIMIT 5",
                &[],
            )
            .map(|rows| rows.iter().filter_map(|r| r[0].text().map(str::to_string)).collect())
            .unwrap_or_default();
        HistoryError::UnknownRun { db: self.name.clone(), run: run.to_string(), known }
    }

    /// Whether the history knows this run: started by a shard, or submitted.
    pub fn check_run(&mut self, run: &str) -> Result<(), HistoryError> {
        let rows = self.query(
            "SELECT id FROM runs WHERE id = $1 UNION SELECT run FROM submissions WHERE run = $1",
            &[text(run)],
        )?;
        if rows.is_empty() {
            return Err(self.unknown_run(run));
        }
        Ok(())
    }

    /// How many shards the run was given (its shards' own count, else its submission's).
    pub fn shard_count(&mut self, run: &str) -> Result<Option<usize>, HistoryError> {
        // The shards' own count first: what ran, whatever a submission said.
        for table in ["shards", "submissions"] {
            let rows = self.query(
                &format!("SELECT shards FROM {table} WHERE run = $1 LIMIT 1"),
                &[text(run)],
            )?;
            if let Some(r) = rows.first() {
                return Ok(Some(int(&r[0]) as usize));
            }
        }
        Ok(None)
    }

    /// Records that a shard starts: the run (if it is the first), the shard, and the cells it
    /// plans, so that `status` can tell which are missing.
    pub fn start_shard(
        &mut self,
        run: &str,
        info: &RunInfo,
        env: &Environment,
        env_text: &str,
        planned: &[(&Cell, usize)],
    ) -> Result<(), HistoryError> {
        self.transaction(|db| {
            db.store_run(run, env, env_text, &info.suite, info.rounds as i64)?;
            db.store_shard(run, info, env, env_text, planned)
        })
    }

    /// Stores one cell's result as soon as it exists; idempotent.
    pub fn record(&mut self, run: &str, r: &CellResult) -> Result<(), HistoryError> {
        self.transaction(|db| db.store_cell(run, r).map(|_| ()))
    }

    /// The cells of a run that the history holds as finished (every status but interrupted:
    /// a crash or a time-out is an answer too), for `--resume`.
    pub fn finished(&mut self, run: &str) -> Result<Vec<StoredCell>, HistoryError> {
        let rows = self.query(
            "SELECT workload, variant, seed, backend, round FROM cells WHERE run = $1 AND status <> $2",
            &[text(run), text(Status::Interrupted.label())],
        )?;
        Ok(rows.iter().map(|r| StoredCell::from_row(r)).collect())
    }

    /// Records a submission to a scheduler, so that `status` can ask it about the run.
    pub fn record_submission(&mut self, s: &Submission) -> Result<(), HistoryError> {
        self.execute(
            "INSERT INTO submissions (run, scheduler, job, shards, suite, submitted_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                text(&s.run),
                text(&s.scheduler),
                text(&s.job),
                Value::Int(s.shards as i64),
                text(&s.suite),
                text(&s.submitted_at),
            ],
        )?;
        Ok(())
    }

    /// Per shard, the cells planned, finished, failed and missing, and the run's submissions.
    pub fn status(&mut self, run: &str) -> Result<RunStatus, HistoryError> {
        self.check_run(run)?;
        let submissions = self
            .query(
                "SELECT scheduler, job, shards, suite, submitted_at FROM submissions \
                 WHERE run = $1 ORDER BY submitted_at",
                &[text(run)],
            )?
            .iter()
            .map(|r| Submission {
                run: run.to_string(),
                scheduler: r[0].text().unwrap_or("").to_string(),
                job: r[1].text().unwrap_or("").to_string(),
                shards: int(&r[2]) as usize,
                suite: r[3].text().unwrap_or("").to_string(),
                submitted_at: r[4].text().unwrap_or("").to_string(),
            })
            .collect::<Vec<_>>();
        let started = self.query(
            "SELECT shard, shards, host, started_at FROM shards WHERE run = $1 ORDER BY shard",
            &[text(run)],
        )?;
        let counts = self.query(
            "SELECT p.shard, COUNT(*), \
                    SUM(CASE WHEN c.status IN ($1, $2, $3) THEN 1 ELSE 0 END), \
                    SUM(CASE WHEN c.status IS NOT NULL AND c.status <> $4 THEN 1 ELSE 0 END) \
             FROM planned p LEFT JOIN cells c ON c.run = p.run AND c.workload = p.workload \
                  AND c.variant = p.variant AND c.seed = p.seed AND c.backend = p.backend \
                  AND c.round = p.round \
             WHERE p.run = $5 GROUP BY p.shard",
            // Numbered in the order they appear: SQLite numbers them so.
            &[
                text(Status::Ok.label()),
                text(Status::NoFit.label()),
                text(Status::Diverged.label()),
                text(Status::Interrupted.label()),
                text(run),
            ],
        )?;
        let count = started
            .first()
            .map(|r| int(&r[1]) as usize)
            .or_else(|| submissions.last().map(|s| s.shards))
            .unwrap_or(1);
        let shards = (0..count)
            .map(|index| {
                let row = started.iter().find(|r| int(&r[0]) as usize == index);
                let counted = counts.iter().find(|r| int(&r[0]) as usize == index);
                let (planned, ran, finished) =
                    counted.map_or((0, 0, 0), |r| (int(&r[1]), int(&r[2]), int(&r[3])));
                ShardState {
                    shard: Shard { index, count },
                    host: row.and_then(|r| r[2].text().map(str::to_string)),
                    started_at: row.and_then(|r| r[3].text().map(str::to_string)),
                    planned: planned as usize,
                    ran: ran as usize,
                    failed: (finished - ran) as usize,
                    missing: (planned - finished) as usize,
                }
            })
            .collect();
        Ok(RunStatus { run: run.to_string(), shards, submissions })
    }

    /// Writes a run's directory from the history, all shards gathered: `environment.json`
    /// (the first shard's), `run.json` (the whole run's: no shard) and `results.jsonl`, for
    /// `report`, `compare` and `export` to read as they read any run.
    pub fn write_run(
        &mut self,
        run: &str,
        dir: &Path,
        catalogue: &dyn Catalogue,
    ) -> Result<usize, HistoryError> {
        self.check_run(run)?;
        let results = self.results(run, catalogue)?;
        if results.is_empty() {
            return Err(HistoryError::NoResults { db: self.name.clone(), run: run.to_string() });
        }
        let first = self.query(
            "SELECT environment, info FROM shards WHERE run = $1 ORDER BY shard LIMIT 1",
            &[text(run)],
        )?;
        let (env_text, info) = match first.first() {
            Some(r) => {
                let mut info: RunInfo =
                    self.parse_stored(run, "run description", r[1].text().unwrap_or(""))?;
                info.shard = None;
                (r[0].text().unwrap_or("").to_string(), Some(info))
            }
            None => {
                let rows =
                    self.query("SELECT environment FROM runs WHERE id = $1", &[text(run)])?;
                (rows[0][0].text().unwrap_or("").to_string(), None)
            }
        };
        let write = |file: &str, contents: &str| {
            write_atomic(&dir.join(file), contents)
                .map_err(|source| HistoryError::WriteRun { path: dir.join(file), source })
        };
        std::fs::create_dir_all(dir)
            .map_err(|source| HistoryError::WriteRun { path: dir.to_path_buf(), source })?;
        write(ENV_FILE, &env_text)?;
        if let Some(info) = info {
            write(RUN_FILE, &serde_json::to_string_pretty(&info).expect("serializable"))?;
        }
        let lines: String = results
            .iter()
            .map(|r| serde_json::to_string(r).expect("serializable") + "\n")
            .collect();
        write(RESULTS_FILE, &lines)?;
        Ok(results.len())
    }

    /// Every stored value of a figure that matches the filter, oldest run first.
    pub fn series(&mut self, q: &SeriesQuery) -> Result<Vec<RunSeries>, HistoryError> {
        let rows = self.query(
            "SELECT m.fingerprint, m.hardware, f.workload, f.variant, f.seed, f.backend, \
                    r.id, r.started_at, r.git_commit, f.value \
             FROM figures f JOIN runs r ON r.id = f.run JOIN machines m ON m.fingerprint = r.machine \
             WHERE f.figure = $1 ORDER BY r.started_at, r.id, f.round",
            &[Value::Text(q.figure.name.to_string())],
        )?;
        let mut out: Vec<RunSeries> = Vec::new();
        for row in rows {
            let t = |i: usize| row[i].text().unwrap_or("").to_string();
            let key = SeriesKey {
                machine: t(0),
                hardware: t(1),
                workload: t(2),
                variant: t(3),
                seed: match row[4] {
                    Value::Int(s) => s as u64,
                    _ => 0,
                },
                backend: t(5),
            };
            if !q.matches(&key) {
                continue;
            }
            let Value::Real(value) = row[9] else { continue };
            let series = match out.iter_mut().position(|s| s.key == key) {
                Some(i) => &mut out[i],
                None => {
                    out.push(RunSeries { key, points: vec![] });
                    out.last_mut().expect("just pushed")
                }
            };
            let run = t(6);
            match series.points.last_mut().filter(|p| p.run == run) {
                Some(p) => p.samples.push(value),
                None => series.points.push(Point {
                    run,
                    started_at: t(7),
                    commit: row[8].text().map(str::to_string),
                    samples: vec![value],
                }),
            }
        }
        Ok(out)
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn optional(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Real(x) => *x as i64,
        Value::Text(t) => t.parse().unwrap_or(0),
        Value::Null => 0,
    }
}

/// The columns that name a cell of a run: run, workload, variant, seed, backend, round.
fn cell_key(run: &str, cell: &Cell, round: usize) -> [Value; 6] {
    [
        text(run),
        text(&cell.workload),
        text(&cell.variant_label()),
        Value::Int(cell.seed as i64),
        text(&cell.backend.to_string()),
        Value::Int(round as i64),
    ]
}

/// The history's name for a run without a `--run-id`: a hash of its environment file.
pub fn env_run_id(env_text: &str) -> String {
    format!("{:016x}", fnv1a(env_text.as_bytes()))
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(x) => rusqlite::types::Value::Real(*x),
        Value::Null => rusqlite::types::Value::Null,
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef) -> Value {
    match v {
        rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into()),
        rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
        rusqlite::types::ValueRef::Real(x) => Value::Real(x),
        _ => Value::Null,
    }
}

/// What failed in either engine, before it is named with the database.
enum Failure {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Postgres(e)
    }
}

/// Calls `f` with `args` as PostgreSQL parameters.
fn with_postgres_params<R>(
    args: &[Value],
    f: impl FnOnce(&[&(dyn postgres::types::ToSql + Sync)]) -> R,
) -> R {
    let owned: Vec<Box<dyn postgres::types::ToSql + Sync>> = args.iter().map(to_postgres).collect();
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        owned.iter().map(|b| b.as_ref()).collect();
    f(&params)
}

fn to_postgres(v: &Value) -> Box<dyn postgres::types::ToSql + Sync> {
    match v {
        Value::Text(s) => Box::new(s.clone()),
        Value::Int(i) => Box::new(*i),
        Value::Real(x) => Box::new(*x),
        Value::Null => Box::new(None::<String>),
    }
}

fn from_postgres(row: &postgres::Row) -> Vec<Value> {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT8 => row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
            Type::FLOAT8 => row.get::<_, Option<f64>>(i).map_or(Value::Null, Value::Real),
            _ => row.get::<_, Option<String>>(i).map_or(Value::Null, Value::Text),
        })
        .collect()
}

/// A run as the history holds it.
#[derive(Clone, Debug)]
pub struct StoredRun {
    pub id: String,
    pub env: Environment,
    pub results: Vec<CellResult>,
}

/// A cell of a run, as the history keys it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCell {
    pub workload: String,
    pub variant: String,
    pub seed: u64,
    pub backend: String,
    pub round: usize,
}

impl StoredCell {
    fn from_row(r: &[Value]) -> Self {
        StoredCell {
            workload: r[0].text().unwrap_or("").to_string(),
            variant: r[1].text().unwrap_or("").to_string(),
            seed: int(&r[2]) as u64,
            backend: r[3].text().unwrap_or("").to_string(),
            round: int(&r[4]) as usize,
        }
    }

    pub fn is(&self, cell: &Cell, round: usize) -> bool {
        self.workload == cell.workload
            && self.variant == cell.variant_label()
            && self.seed == cell.seed
            && self.backend == cell.backend.to_string()
            && self.round == round
    }
}

/// A run handed to a scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    pub run: String,
    /// `slurm` or `kubernetes`.
    pub scheduler: String,
    /// The scheduler's name for it: Slurm's job id, the Kubernetes Job's name.
    pub job: String,
    pub shards: usize,
    pub suite: String,
    pub submitted_at: String,
}

/// One shard of a run as the history sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardState {
    pub shard: Shard,
    /// Where and when it last started; `None`: not started.
    pub host: Option<String>,
    pub started_at: Option<String>,
    /// Its cells (every round).
    pub planned: usize,
    /// Finished with whole measurements (fitted, out of budget, diverged).
    pub ran: usize,
    /// Finished without them (crashed, out of memory, timed out, error, unsupported).
    pub failed: usize,
    /// Not finished: not run yet, or interrupted.
    pub missing: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunStatus {
    pub run: String,
    pub shards: Vec<ShardState>,
    pub submissions: Vec<Submission>,
}

/// What one `ingest` of a directory added.
#[derive(Clone, Debug, PartialEq)]
pub struct Ingested {
    pub run: String,
    pub added_cells: u64,
    pub added_figures: u64,
    /// Lines of the results file that could not be read, and why.
    pub skipped: Vec<String>,
}

/// Which series `history` shows: one figure, optionally narrowed.
pub struct SeriesQuery {
    pub figure: Measure,
    pub workload: Option<String>,
    pub variant: Option<String>,
    pub backend: Option<String>,
    /// A fingerprint, or a prefix of one.
    pub machine: Option<String>,
}

impl SeriesQuery {
    fn matches(&self, k: &SeriesKey) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.workload, &k.workload)
            && is(&self.variant, &k.variant)
            && is(&self.backend, &k.backend)
            && self.machine.as_deref().is_none_or(|m| k.machine.starts_with(m))
    }
}

/// A cell on one machine.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesKey {
    pub machine: String,
    pub hardware: String,
    pub workload: String,
    pub variant: String,
    pub seed: u64,
    pub backend: String,
}

/// One run's values of a figure for one cell: a sample per round.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub run: String,
    pub started_at: String,
    pub commit: Option<String>,
    pub samples: Vec<f64>,
}

/// One figure of one cell on one machine, run after run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSeries {
    pub key: SeriesKey,
    pub points: Vec<Point>,
}

/// How `history` decides that a run changed a figure: its rounds against the pooled rounds
/// of up to `window` runs before it, with at least `min_points` of them, judged as `compare`
/// judges two runs (significant and beyond the threshold).
#[derive(Clone, Copy, Debug)]
pub struct ChangeRule {
    pub window: usize,
    pub min_points: usize,
    pub threshold: f64,
}

/// What the rule says about each point of a series.
pub fn changes(series: &RunSeries, figure: &Measure, rule: ChangeRule) -> Vec<Option<Verdict>> {
    let mut rng = Rng::stream(0, "history");
    (0..series.points.len())
        .map(|i| {
            let before = &series.points[i.saturating_sub(rule.window)..i];
            if before.len() < rule.min_points {
                return None;
            }
            let pooled: Vec<f64> = before.iter().flat_map(|p| p.samples.iter().copied()).collect();
            let now = &series.points[i].samples;
            stats::compare(&pooled, now, figure.better, rule.threshold, &mut rng).map(|c| c.verdict)
        })
        .collect()
}

/// The table of one series: the last `last` runs, each flagged where the rule saw a change.
pub fn series_table(series: &RunSeries, figure: &Measure, rule: ChangeRule, last: usize) -> Table {
    let verdicts = changes(series, figure, rule);
    let skip = series.points.len().saturating_sub(last);
    let rows = series
        .points
        .iter()
        .zip(&verdicts)
        .skip(skip)
        .map(|(p, v)| {
            let flag = match v {
                None => format!("(fewer than {} runs before)", rule.min_points),
                Some(v @ (Verdict::Regressed | Verdict::Improved)) => {
                    format!("CHANGED: {}", figure.kind.verdict_words(*v))
                }
                Some(v) => figure.kind.verdict_words(*v).to_string(),
            };
            vec![
                p.started_at.clone(),
                p.commit.as_deref().map_or("-".into(), |c| c.chars().take(10).collect()),
                stats::median(&p.samples).map_or("-".into(), fmt_value),
                p.samples.len().to_string(),
                flag,
            ]
        })
        .collect();
    let k = &series.key;
    Table {
        title: format!("{} {} {} seed {}", k.backend, k.workload, k.variant, k.seed),
        caption: format!(
            "{} ({}) on machine {} ({})",
            figure.name, figure.unit, k.machine, k.hardware
        ),
        header: ["run started", "commit", "median", "rounds", "against the runs before"]
            .iter()
            .map(|h| Column::plain(h))
            .collect(),
        rows,
        notes: vec![format!(
            "a run is flagged CHANGED when its rounds differ from the pooled rounds of up to {} \
             runs before it (at least {}) significantly and by more than {:.0}%, as `randbench \
             compare` judges",
            rule.window,
            rule.min_points,
            100.0 * rule.threshold
        )],
    }
}

/// The figure of that name among `known` (the families' catalogue), or an error listing them.
pub fn figure<'a>(name: &str, known: &'a [Measure]) -> Result<&'a Measure, HistoryError> {
    known.iter().find(|m| m.name == name).ok_or_else(|| HistoryError::UnknownFigure {
        name: name.to_string(),
        known: known.iter().map(|m| m.name.to_string()).collect(),
    })
}
