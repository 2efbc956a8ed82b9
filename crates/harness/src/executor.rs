//! Where a cell runs: in this process ([`InProcess`]), or in a child process of its own
//! ([`ChildProcess`]) so that a segfault, an abort in a native library, an out-of-memory kill
//! or a hang ends one cell, never the run.
//!
//! The parent starts `randbench cell` and writes a [`CellRequest`] (JSON) on its stdin. The
//! child loads the suite and the workload's data itself, runs the cell in process, and writes
//! [`Message`]s on stdout, one JSON object a line: progress as it goes, then the result. The
//! parent enforces the cell's timeout, forwards Ctrl-C, and turns a child that dies without a
//! result into a result that says how it died.

use crate::backends::{with_backend, BackendVisitor};
use crate::cell::{Cell, CellResult, MemoryUse, Message, Observer, Progress, Status};
use crate::energy::{Energy, EnergyWatch};
use crate::families::{self, Data, Record, Workload};
use crate::nvml::DeviceMemoryWatch;
use crate::runner::STOP;
use crate::suite::{self, Suite};
use crate::sys;
use randbench_core::backend::{Backend, BackendError, BackendInfo, Device, GradMode};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One cell to run, with everything the pre-flight prepared for it.
pub struct CellJob<'a> {
    pub suite: &'a Suite,
    pub workload: &'a Workload,
    pub data: &'a Data,
    pub cell: &'a Cell,
    /// Which round of the run this is (from 0).
    pub round: usize,
    pub grad: GradMode,
    /// Where a cell may write files of its own (a learned optimizer's weights); none in tests.
    pub artifacts: Option<&'a Path>,
}

/// Runs cells and answers each with a result, whatever happens to it.
pub trait Executor {
    fn execute(&mut self, job: &CellJob, obs: &mut dyn Observer) -> CellResult;
}

/// Cells in this process: no start-up cost, but a crash ends the run.
pub struct InProcess;

/// Each cell in a child process of its own.
pub struct ChildProcess;

/// Cells come from their suite's workloads, so a cell's variant and data are its workload's.
const MATCHED: &str = "the pre-flight matched every cell to its workload's family";

/// The result of a cell that measured nothing: its backend did not open, or its process died.
pub fn failed(job: &CellJob, info: BackendInfo, status: Status, error: String) -> CellResult {
    let c = job.cell;
    let metrics = families::unmeasured(job).expect(MATCHED);
    CellResult {
        suite: job.suite.name.clone(),
        cell: c.clone(),
        round: job.round,
        grad: job.grad,
        status,
        error: Some(error),
        device: info.device_name.clone(),
        backend_info: info,
        compile_seconds: None,
        first_step_seconds: None,
        memory: MemoryUse::default(),
        energy: Energy::default(),
        step_losses: vec![],
        diverged_at: None,
        started_at: crate::env::utc_now(),
        busy: vec![],
        metrics,
    }
}

fn status_of(e: &BackendError) -> Status {
    match e {
        BackendError::Unsupported { .. } => Status::Unsupported,
        BackendError::OutOfMemory { .. } => Status::Oom,
        _ => Status::Error,
    }
}

impl Executor for InProcess {
    fn execute(&mut self, job: &CellJob, obs: &mut dyn Observer) -> CellResult {
        struct Visit<'a, 'j> {
            job: &'a CellJob<'j>,
            obs: &'a mut dyn Observer,
        }
        impl BackendVisitor for Visit<'_, '_> {
            type Out = CellResult;
            fn visit<B: Backend>(self, b: &B) -> CellResult {
                #[cfg(feature = "test-faults")]
                crate::fault::inject(self.job.cell);
                let job = self.job;
                let started_at = crate::env::utc_now();
                sys::reset_peak_memory();
                let c = job.cell;
                let device_watch = match c.backend.device {
                    Device::Cuda(_) => DeviceMemoryWatch::start(),
                    Device::Cpu => None,
                };
                let energy_watch = EnergyWatch::start(c.backend.device);
                let mut record = Record::default();
                let outcome = families::run_cell(b, job, &mut record, self.obs).expect(MATCHED);
                let energy = energy_watch.finish();
                let watched = device_watch.and_then(DeviceMemoryWatch::finish);
                let device_peak = b.memory().peak.or(watched);
                let memory = MemoryUse { device_peak, host_peak: sys::peak_memory() };
                let info = b.info();
                let (metrics, error) = match outcome {
                    Ok(m) => (m, None),
                    Err(e) => {
                        record.status = status_of(&e);
                        (families::unmeasured(job).expect(MATCHED), Some(e.to_string()))
                    }
                };
                CellResult {
                    suite: job.suite.name.clone(),
                    cell: c.clone(),
                    round: job.round,
                    grad: job.grad,
                    status: record.status,
                    error,
                    device: info.device_name.clone(),
                    backend_info: info,
                    compile_seconds: record.compile_seconds,
                    first_step_seconds: record.first_step_seconds,
                    memory,
                    energy,
                    step_losses: record.step_losses,
                    diverged_at: record.diverged_at,
                    started_at,
                    busy: vec![],
                    metrics,
                }
            }
        }
        with_backend(job.cell.backend, job.grad, Visit { job, obs })
            .unwrap_or_else(|e| failed(job, BackendInfo::default(), status_of(&e), e.to_string()))
    }
}

/// What the parent asks a child process to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRequest {
    pub suite: PathBuf,
    pub cell: Cell,
    pub round: usize,
    pub grad: GradMode,
    pub artifacts: Option<PathBuf>,
}

/// How long after a cell's own timeout the parent kills it: the child stops by itself between
/// steps, and only a step that never returns needs the kill.
fn kill_after(timeout: Duration) -> Duration {
    timeout + (timeout / 10).max(Duration::from_secs(2))
}

/// The program running now, to start cells with: on Linux `/proc/self/exe`, which still
/// names this program after a rebuild replaced or deleted its file (a nightly run whose binary
/// is rebuilt mid-run; `current_exe` then names a path that is gone), elsewhere `current_exe`.
fn own_executable() -> std::io::Result<PathBuf> {
    let running = Path::new("/proc/self/exe");
    if running.exists() {
        Ok(running.to_path_buf())
    } else {
        std::env::current_exe()
    }
}

impl Executor for ChildProcess {
    fn execute(&mut self, job: &CellJob, obs: &mut dyn Observer) -> CellResult {
        let failed = |status, why| failed(job, BackendInfo::default(), status, why);
        let request = CellRequest {
            suite: job.suite.path.clone(),
            cell: job.cell.clone(),
            round: job.round,
            grad: job.grad,
            artifacts: job.artifacts.map(Path::to_path_buf),
        };
        let exe = match own_executable() {
            Ok(e) => e,
            Err(e) => {
                return failed(
                    Status::Error,
                    format!("cannot find randbench's own executable to start the cell: {e}"),
                )
            }
        };
        let mut child = match Command::new(exe)
            .arg("cell")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return failed(Status::Error, format!("cannot start the cell's process: {e}"))
            }
        };
        let mut stdin = child.stdin.take().expect("piped");
        let sent = serde_json::to_writer(&mut stdin, &request).map_err(std::io::Error::other);
        drop(stdin);
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(Some(line));
            }
            let _ = tx.send(None);
        });
        let mut stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let start = Instant::now();
        let timeout = job.workload.timeout().map(|t| Duration::from_secs_f64(t.0));
        let (mut result, mut killed_for_time, mut forwarded) = (None, false, false);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(line)) => match serde_json::from_str::<Message>(&line) {
                    Ok(Message::Progress(p)) => obs.progress(p),
                    Ok(Message::Result(r)) => result = Some(*r),
                    // Native libraries may print on stdout; only our messages count.
                    Err(_) => {}
                },
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if STOP.load(Ordering::SeqCst) && !forwarded {
                // The child finishes or abandons its cell and reports it as interrupted.
                // SAFETY: kill only sends a signal to our own child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                forwarded = true;
            }
            if timeout.is_some_and(|t| start.elapsed() > kill_after(t)) && !killed_for_time {
                let _ = child.kill();
                killed_for_time = true;
            }
        }
        let status = child.wait();
        let _ = reader.join();
        let stderr = errors.join().unwrap_or_default();
        if let Some(r) = result {
            return r;
        }
        let tail = last_lines(&stderr, 3);
        if let Err(e) = sent {
            return failed(
                Status::Error,
                format!("cannot send the cell to its process: {e}{tail}"),
            );
        }
        match status {
            _ if killed_for_time => failed(
                Status::Timeout,
                format!(
                    "no result after {:.0} s; the cell's process was killed{tail}",
                    start.elapsed().as_secs_f64()
                ),
            ),
            Ok(s) => {
                let (status, why) = classify(s, &stderr);
                failed(status, format!("{why}{tail}"))
            }
            Err(e) => failed(Status::Crashed, format!("lost the cell's process: {e}")),
        }
    }
}

/// What a child's exit without a result means.
fn classify(s: ExitStatus, stderr: &str) -> (Status, String) {
    use std::os::unix::process::ExitStatusExt;
    let alloc_failed = randbench_core::backend::reports_out_of_memory(stderr);
    match (s.signal(), s.code()) {
        // Ctrl-C reached the child before it could install its own handler (while the dynamic
        // loader was still opening libtorch, say).
        (Some(libc::SIGINT), _) => {
            (Status::Interrupted, "stopped by Ctrl-C before its cell began".into())
        }
        (Some(libc::SIGKILL), _) => (
            Status::Oom,
            "killed by SIGKILL, which nothing in randbench sends: most likely the kernel's \
             out-of-memory killer"
                .into(),
        ),
        (Some(libc::SIGABRT), _) if alloc_failed => {
            (Status::Oom, "aborted after a failed memory allocation".into())
        }
        (Some(libc::SIGSEGV), _) => (Status::Crashed, "segmentation fault (SIGSEGV)".into()),
        (Some(libc::SIGABRT), _) => (Status::Crashed, "aborted (SIGABRT)".into()),
        (Some(sig), _) => (Status::Crashed, format!("killed by signal {sig}")),
        (None, Some(code)) => {
            (Status::Crashed, format!("exited with code {code} without a result"))
        }
        (None, None) => (Status::Crashed, "ended without a result".into()),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("; its last words: {}", lines[lines.len().saturating_sub(n)..].join(" | "))
}

// ---- the child ----

/// Prints progress as messages on stdout.
struct MessageObserver;

fn send(m: &Message) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, m).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

impl Observer for MessageObserver {
    fn progress(&mut self, p: Progress) {
        let _ = send(&Message::Progress(p));
    }
    fn should_stop(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Why a child could not run the cell it was sent: the parent's mistakes (it validated
/// everything), reported on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot read the cell request on stdin: {0}")]
    Request(String),
    #[error(transparent)]
    Suite(#[from] suite::SuiteError),
    #[error("no workload {workload} in {suite}")]
    NoWorkload { workload: String, suite: String },
    #[error(transparent)]
    Data(#[from] families::PrepareError),
    #[error("cannot write the result: {0}")]
    Write(#[from] std::io::Error),
}

/// The child's side: reads the request, runs the cell here and writes its result.
pub fn child_main() -> Result<(), ChildError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| ChildError::Request(e.to_string()))?;
    let req: CellRequest =
        serde_json::from_str(&text).map_err(|e| ChildError::Request(e.to_string()))?;
    let suite = suite::load(&req.suite)?;
    let workload = suite.workload(&req.cell.workload).ok_or_else(|| ChildError::NoWorkload {
        workload: req.cell.workload.clone(),
        suite: req.suite.display().to_string(),
    })?;
    let data = workload.prepare()?;
    let job = CellJob {
        suite: &suite,
        workload,
        data: &data,
        cell: &req.cell,
        round: req.round,
        grad: req.grad,
        artifacts: req.artifacts.as_deref(),
    };
    let result = InProcess.execute(&job, &mut MessageObserver);
    send(&Message::Result(Box::new(result)))?;
    Ok(())
}
