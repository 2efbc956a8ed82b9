//! Fleets: one suite spread over the scheduler a fleet already has. `submit slurm` writes a
//! job array whose tasks run `randbench run … --shard $SLURM_ARRAY_TASK_ID/N`; `submit k8s`
//! writes an Indexed Job whose pods run `--shard $(JOB_COMPLETION_INDEX)/N`. Every shard
//! stores its cells in one history under one run id, so `status`, `report --run`, `compare`
//! and `procure` read the run whole, and `--resume` reruns only what is missing.

use crate::env;
use crate::executor::own_executable;
use crate::history::{self, HistoryError, RunStatus, Submission};
use crate::report::{Column, Table};
use crate::runner::{self, check_run_id, RunError};
use crate::suite;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a submission did not happen; every one is the user's to fix (exit 2), but a scheduler
/// that refused the job.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("--shards: give 1 or more")]
    NoShards,
    #[error("--max-parallel: give 1 or more")]
    NoParallel,
    #[error(
        "sbatch: not found on PATH; submit from a Slurm login node, or give --dry-run to only \
         write the script"
    )]
    NoSbatch,
    #[error("sbatch refused the job ({status}): {stderr}")]
    Refused { status: std::process::ExitStatus, stderr: String },
    #[error("sbatch answered '{0}', not a job id")]
    NoJobId(String),
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot find this program to name it in the job: {0}")]
    NoExecutable(std::io::Error),
    #[error("--db {0}: every pod needs to reach the history: give a postgres:// URL")]
    NoDb(String),
    #[error("{0}: a suite file of this host is not in the image; give the name of a suite in bench-suites/, or build the file into the image")]
    SuiteFile(String),
    #[error("{0}: Slurm's #SBATCH lines take no spaces, quotes, '%' or '$' in paths; choose another --out, or submit from another directory")]
    SlurmDir(String),
}

impl FleetError {
    pub fn is_input(&self) -> bool {
        match self {
            FleetError::Run(e) => e.is_input(),
            FleetError::History(e) => e.is_input(),
            FleetError::Refused { .. } | FleetError::NoJobId(_) | FleetError::Write { .. } => false,
            _ => true,
        }
    }
}

/// What every scheduler's shards run: `randbench run` with these, plus the shard.
#[derive(Clone, Debug, Default)]
pub struct ShardCommand {
    /// A suite name or file; a file is given to the nodes by its absolute path.
    pub suite: String,
    pub shards: usize,
    pub db: String,
    /// `None`: a new run id is made.
    pub run_id: Option<String>,
    pub backends: Option<Vec<String>>,
    pub machine: Option<String>,
    /// Run only what the history does not hold as finished for `run_id`.
    pub resume: bool,
}

impl ShardCommand {
    /// Checks what can be checked before anything is written: the suite loads, the run id is
    /// well formed, the history opens where `reach` says this host must reach it, and holds
    /// the run being resumed. Returns the run id, and the history where it was opened.
    fn prepare(&mut self, reach: bool) -> Result<(String, Option<history::Db>), FleetError> {
        if self.shards == 0 {
            return Err(FleetError::NoShards);
        }
        let path = suite::resolve(&self.suite).map_err(RunError::from)?;
        let loaded = suite::load(&path).map_err(RunError::from)?;
        if let Some(names) = &self.backends {
            runner::parse_backends(names)?;
        }
        if Path::new(&self.suite).is_file() {
            self.suite = absolute(Path::new(&self.suite)).display().to_string();
        }
        if let Some(path) = history::sqlite_file(&self.db) {
            // A relative SQLite path would mean a different file in each task's directory.
            self.db = absolute(&path).display().to_string();
        }
        let (id, db) = match (&self.run_id, self.resume) {
            (Some(id), true) => {
                check_run_id(id)?;
                let mut db = history::Db::open_existing(&self.db)?;
                db.check_run(id)?;
                match db.shard_count(id)? {
                    Some(had) if had != self.shards => {
                        return Err(HistoryError::ShardCount { run: id.clone(), had }.into())
                    }
                    _ => (id.clone(), Some(db)),
                }
            }
            (None, true) => return Err(RunError::ResumeWithoutRun.into()),
            (Some(id), false) => {
                check_run_id(id)?;
                (id.clone(), None)
            }
            (None, false) => {
                let id = new_run_id(&loaded.name);
                check_run_id(&id)?;
                (id, None)
            }
        };
        let db = match db {
            None if reach => Some(history::Db::open(&self.db)?),
            db => db,
        };
        self.run_id = Some(id.clone());
        Ok((id, db))
    }

    /// The arguments after the program, with `shard` standing for the index (a shell or
    /// Kubernetes variable).
    fn args(&self, shard: &str, out: &str) -> Vec<String> {
        let mut a = vec!["run".to_string(), self.suite.clone()];
        a.extend(["--shard".into(), format!("{shard}/{}", self.shards)]);
        a.extend(["--run-id".into(), self.run_id.clone().unwrap_or_default()]);
        a.extend(["--db".into(), self.db.clone()]);
        a.extend(["--out".into(), out.to_string()]);
        // Every cell in a process of its own: on a node, a crash costs one cell.
        a.extend(["--isolate".into(), "process".into()]);
        if let Some(b) = &self.backends {
            a.extend(["--backends".into(), b.join(",")]);
        }
        if let Some(m) = &self.machine {
            a.extend(["--machine".into(), m.clone()]);
        }
        if self.resume {
            a.push("--resume".into());
        }
        a
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `SUITE-YYYYMMDD-HHMMSS-XXXX`: sortable by time, and unlikely to meet another's.
pub fn new_run_id(suite: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let salt = env::fnv1a(format!("{nanos}-{}", std::process::id()).as_bytes()) & 0xffff;
    // 32 + 16 + 5 characters: within the 64 a run id may have.
    let suite: String =
        suite.chars().take(32).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{suite}-{}-{salt:04x}", env::stamp())
}

/// A word the shell reads back as itself.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-,:=@+%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Options of `submit slurm` beyond what every shard runs.
#[derive(Clone, Debug, Default)]
pub struct Slurm {
    pub partition: Option<String>,
    /// Each task's time limit, as sbatch takes it (`1:00:00`).
    pub time: Option<String>,
    /// Generic resources per task, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// At most this many tasks at once (`%K`).
    pub max_parallel: Option<usize>,
    /// Each task alone on its node: timings not shared with other jobs.
    pub exclusive: bool,
    /// Where the script, the tasks' logs and their result directories go (default:
    /// reports/RUN_ID).
    pub dir: Option<PathBuf>,
    /// Only write the script.
    pub dry_run: bool,
}

/// The sbatch script of a run's job array.
pub fn slurm_script(cmd: &ShardCommand, slurm: &Slurm, exe: &Path, dir: &Path) -> String {
    let id = cmd.run_id.as_deref().unwrap_or_default();
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# randbench run {id}: {} shards of {}\n", cmd.shards, cmd.suite);
    s += &format!("#SBATCH --job-name=randbench-{id}\n");
    let limit = slurm.max_parallel.map_or(String::new(), |k| format!("%{k}"));
    s += &format!("#SBATCH --array=0-{}{limit}\n", cmd.shards - 1);
    s += &format!("#SBATCH --output={}/slurm-%A_%a.out\n", dir.display());
    s += &format!("#SBATCH --chdir={}\n", absolute(Path::new(".")).display());
    for (flag, value) in
        [("partition", &slurm.partition), ("time", &slurm.time), ("gres", &slurm.gres)]
    {
        if let Some(v) = value {
            s += &format!("#SBATCH --{flag}={v}\n");
        }
    }
    if slurm.exclusive {
        s += "#SBATCH --exclusive\n";
    }
    s += "set -euo pipefail\n";
    // The task's index is the shell's to expand: outside single quotes.
    let task = "\"${SLURM_ARRAY_TASK_ID}\"";
    let mut words = vec![shell_word(&exe.display().to_string())];
    for a in cmd.args("{TASK}", "{OUT}") {
        words.push(if a == "{OUT}" {
            format!("{}/shard-{task}", shell_word(&dir.display().to_string()))
        } else if let Some(rest) = a.strip_prefix("{TASK}") {
            format!("{task}{}", shell_word(rest))
        } else {
            shell_word(&a)
        });
    }
    s += &format!("exec {}\n", words.join(" "));
    s
}

/// The program on PATH, if there is one.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// What `submit` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    pub run: String,
    /// The scheduler's job (`None`: only written).
    pub job: Option<String>,
    /// The script or manifest.
    pub file: PathBuf,
}

/// Writes the run's sbatch script and, unless `dry_run`, submits it and records the job.
pub fn submit_slurm(mut cmd: ShardCommand, slurm: &Slurm) -> Result<Submitted, FleetError> {
    if slurm.max_parallel == Some(0) {
        return Err(FleetError::NoParallel);
    }
    // A login node reaches the history its compute nodes store into.
    let sbatch = match slurm.dry_run {
        true => None,
        false => Some(on_path("sbatch").ok_or(FleetError::NoSbatch)?),
    };
    // The output directory and the working directory go into #SBATCH lines (a run id, the
    // default's last part, is made of safe characters).
    let out = slurm.dir.clone().unwrap_or_else(|| PathBuf::from("reports"));
    for path in [absolute(&out), absolute(Path::new("."))] {
        let shown = path.display().to_string();
        if shown.contains(|c: char| c.is_whitespace() || "%$'\"\\`".contains(c)) {
            return Err(FleetError::SlurmDir(shown));
        }
    }
    let (run, db) = cmd.prepare(true)?;
    let exe = own_executable().and_then(|e| e.canonicalize()).map_err(FleetError::NoExecutable)?;
    let dir = absolute(&slurm.dir.clone().unwrap_or_else(|| PathBuf::from("reports").join(&run)));
    let file = dir.join(if cmd.resume {
        format!("submit-resume-{}.sbatch", env::stamp())
    } else {
        "submit.sbatch".to_string()
    });
    let script = slurm_script(&cmd, slurm, &exe, &dir);
    write_file(&file, &script)?;
    let Some(sbatch) = sbatch else { return Ok(Submitted { run, job: None, file }) };
    let output = Command::new(sbatch)
        .arg("--parsable")
        .arg(&file)
        .output()
        .map_err(|_| FleetError::NoSbatch)?;
    if !output.status.success() {
        return Err(FleetError::Refused {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let job = answer.split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        return Err(FleetError::NoJobId(answer));
    }
    // The job runs whatever happens now: say so, and which, even if the history is away.
    if let Err(e) = record(db, &cmd, "slurm", &job) {
        eprintln!("warning: the history does not record the job ({e}); `status` will not ask Slurm about it");
    }
    Ok(Submitted { run, job: Some(job), file })
}

fn write_file(path: &Path, text: &str) -> Result<(), FleetError> {
    let fail = |source| FleetError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    randbench_schema::results::write_atomic(path, text).map_err(fail)
}

/// Records the submission in the history: on the connection `prepare` opened, else a new one.
fn record(
    db: Option<history::Db>,
    cmd: &ShardCommand,
    scheduler: &str,
    job: &str,
) -> Result<(), FleetError> {
    let mut db = match db {
        Some(db) => db,
        None => history::Db::open(&cmd.db)?,
    };
    db.record_submission(&Submission {
        run: cmd.run_id.clone().unwrap_or_default(),
        scheduler: scheduler.to_string(),
        job: job.to_string(),
        shards: cmd.shards,
        suite: cmd.suite.clone(),
        submitted_at: env::utc_now(),
    })?;
    Ok(())
}

/// Options of `submit k8s` beyond what every shard runs.
#[derive(Clone, Debug, Default)]
pub struct Kubernetes {
    /// The container image with randbench, its native libraries and its data (see the
    /// Dockerfile).
    pub image: String,
    /// GPUs per pod (`nvidia.com/gpu`).
    pub gpus: Option<u32>,
    /// CPUs and memory each pod asks for, as Kubernetes writes quantities (`4`, `16Gi`).
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// At most this many pods at once.
    pub parallelism: Option<usize>,
    pub namespace: Option<String>,
    /// Where the manifest goes (default: reports/RUN_ID).
    pub dir: Option<PathBuf>,
    pub dry_run: bool,
}

/// Where the image keeps the program and each pod's results (see the Dockerfile).
pub const IMAGE_PROGRAM: &str = "/opt/randbench/bin/randbench";
const POD_RESULTS: &str = "/tmp/randbench";

/// A Kubernetes object's name from a run id (and a resumption's stamp): lower case,
/// letters, digits and '-', at most 63.
fn k8s_name(run: &str, attempt: Option<&str>) -> String {
    let suffix = attempt.map_or(String::new(), |a| format!("-resume-{a}"));
    let name: String = format!("randbench-{run}")
        .chars()
        .take(63 - suffix.len())
        .chain(suffix.chars())
        .collect::<String>()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    name.trim_end_matches('-').to_string()
}

/// The run's Indexed Job: `shards` completions, each pod running one shard; `attempt` names
/// a resumption.
pub fn k8s_job(cmd: &ShardCommand, k: &Kubernetes, attempt: Option<&str>) -> Job {
    let run = cmd.run_id.clone().unwrap_or_default();
    let index = "JOB_COMPLETION_INDEX";
    let labels = BTreeMap::from([("app".to_string(), "randbench".to_string())]);
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(g) = k.gpus {
        // Kubernetes takes extended resources as limits; requests default to them.
        limits.insert("nvidia.com/gpu".to_string(), Quantity(g.to_string()));
    }
    for (name, value) in [("cpu", &k.cpu), ("memory", &k.memory)] {
        if let Some(v) = value {
            requests.insert(name.to_string(), Quantity(v.clone()));
            // A benchmark sharing its cores with a neighbour measures the neighbour too.
            limits.insert(name.to_string(), Quantity(v.clone()));
        }
    }
    let container = Container {
        name: "randbench".into(),
        image: Some(k.image.clone()),
        command: Some(vec![IMAGE_PROGRAM.to_string()]),
        // Kubernetes expands $(VAR) in args from the container's environment.
        args: Some(cmd.args(&format!("$({index})"), &format!("{POD_RESULTS}/shard-$({index})"))),
        // The Job controller sets the index too; naming it here makes the $(…) above
        // valid by construction.
        env: Some(vec![EnvVar {
            name: index.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                        .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        resources: (!limits.is_empty() || !requests.is_empty()).then(|| ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(k8s_name(&run, attempt)),
            namespace: k.namespace.clone(),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "randbench".to_string()),
                ("randbench/run".to_string(), k8s_name(&run, None)),
            ])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(cmd.shards as i32),
            parallelism: Some(k.parallelism.unwrap_or(cmd.shards) as i32),
            // A failed pod is retried once for its own index; the others go on.
            backoff_limit_per_index: Some(1),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes the run's Job manifest (JSON, which `kubectl` reads as it reads YAML) and applies
/// it where `kubectl` has a cluster configured.
pub fn submit_k8s(mut cmd: ShardCommand, k: &Kubernetes) -> Result<Submitted, FleetError> {
    if k.parallelism == Some(0) {
        return Err(FleetError::NoParallel);
    }
    if !history::is_postgres(&cmd.db) {
        return Err(FleetError::NoDb(cmd.db));
    }
    if Path::new(&cmd.suite).is_file() {
        return Err(FleetError::SuiteFile(cmd.suite));
    }
    // The history may be a service inside the cluster, out of this host's reach.
    let (run, db) = cmd.prepare(false)?;
    // A Job's pod template cannot change: a resumption is a Job of its own.
    let attempt = cmd.resume.then(env::stamp);
    let job = k8s_job(&cmd, k, attempt.as_deref());
    let dir = absolute(&k.dir.clone().unwrap_or_else(|| PathBuf::from("reports").join(&run)));
    let file = dir.join(match &attempt {
        Some(stamp) => format!("job-resume-{stamp}.json"),
        None => "job.json".to_string(),
    });
    write_file(&file, &(serde_json::to_string_pretty(&job).expect("serializable") + "\n"))?;
    let configured = !k.dry_run
        && on_path("kubectl").is_some()
        && Command::new("kubectl")
            .args(["config", "current-context"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !configured {
        return Ok(Submitted { run, job: None, file });
    }
    let output = Command::new("kubectl")
        .arg("apply")
        .arg("-f")
        .arg(&file)
        .output()
        .map_err(|source| FleetError::Write { path: file.clone(), source })?;
    if !output.status.success() {
        return Err(FleetError::Refused {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let name = job.metadata.name.clone().unwrap_or_default();
    if let Err(e) = record(db, &cmd, "kubernetes", &name) {
        eprintln!("warning: the history does not record the submission ({e}); the pods still store their cells");
    }
    Ok(Submitted { run, job: Some(name), file })
}

/// The state Slurm gives each task of a job array, where `squeue` answers: `(task, state)`,
/// e.g. `("0", "RUNNING")`; empty once the job has left the queue.
pub fn squeue(job: &str) -> Option<Vec<(String, String)>> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-j", job, "-o", "%i %T"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, state)| {
                let task = id.rsplit_once('_').map_or(id, |(_, t)| t);
                (task.to_string(), state.trim().to_string())
            })
            .collect(),
    )
}

/// The table `randbench status` prints: per shard, the history's counts and, for Slurm jobs
/// still queued, the scheduler's state.
pub fn status_table(status: &RunStatus) -> Table {
    let queued: Vec<(String, String)> = status
        .submissions
        .iter()
        .filter(|s| s.scheduler == "slurm")
        .filter_map(|s| squeue(&s.job))
        .flatten()
        .collect();
    let rows = status
        .shards
        .iter()
        .map(|s| {
            let task = s.shard.index.to_string();
            let scheduler: Vec<&str> =
                queued.iter().filter(|(t, _)| *t == task).map(|(_, st)| st.as_str()).collect();
            let state = if !scheduler.is_empty() {
                scheduler.join(", ").to_ascii_lowercase()
            } else if s.started_at.is_none() {
                "not started".to_string()
            } else if s.missing == 0 {
                "done".to_string()
            } else {
                "stopped; resume it".to_string()
            };
            vec![
                s.shard.to_string(),
                s.host.clone().unwrap_or_else(|| "-".into()),
                s.planned.to_string(),
                s.ran.to_string(),
                s.failed.to_string(),
                s.missing.to_string(),
                state,
            ]
        })
        .collect();
    let jobs: Vec<String> =
        status.submissions.iter().map(|s| format!("{} job {}", s.scheduler, s.job)).collect();
    let missing: usize = status.shards.iter().map(|s| s.missing).sum();
    let unstarted = status.shards.iter().filter(|s| s.started_at.is_none()).count();
    let mut notes = vec![
        "ran: finished with whole measurements; failed: crashed, out of memory, timed out or \
         unsupported (an answer too); missing: not run yet, or interrupted"
            .to_string(),
    ];
    if missing > 0 || (unstarted > 0 && queued.is_empty()) {
        notes.push(format!(
            "{missing} cells missing, {unstarted} shards not started: once no shard runs, \
             `randbench submit … --resume {}` runs only what is missing",
            status.run
        ));
    }
    Table {
        title: format!("run {}", status.run),
        caption: if jobs.is_empty() { "started by hand".into() } else { jobs.join("; ") },
        header: ["shard", "host", "cells", "ran", "failed", "missing", "state"]
            .iter()
            .map(|h| Column::plain(h))
            .collect(),
        rows,
        notes,
    }
}
