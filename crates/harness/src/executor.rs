//! Where a cell runs: in this process ([`InProcess`]), or in a child process of its own
//! ([`ChildProcess`]) so that a segfault, an abort in a native library, an out-of-memory kill
//! or a hang ends one cell, never the run.
//!
//! The parent starts `randbench cell` and writes a [`CellRequest`] (JSON) on its stdin. The
//! child loads the suite and the workload's data itself, runs the cell in process, and writes
//! [`Message`]s, one JSON object a line, on a pipe of their own (file descriptor 3, not
//! stdout, which native libraries print on): progress as it goes, then the result. Every line
//! on that pipe is randbench's, so one that does not read is a protocol error, reported as
//! such. The parent enforces the cell's timeout, forwards Ctrl-C, and turns a child that dies
//! without a result into a result that says how it died.

use crate::backends::{with_backend, BackendVisitor};
use crate::families::{self, CellRun, Data, Metrics, Record, Workload};
use crate::suite::{self, Suite};
use crate::watch::{self, Scope};
use randbench_core::backend::{Backend, BackendError, BackendInfo, GradMode};
use randbench_schema::{
    Cell, CellResult, Energy, MemoryUse, Message, Observer, Progress, Status, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set when the user asks the run to stop (Ctrl-C).
pub static STOP: AtomicBool = AtomicBool::new(false);

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

impl<'a> CellJob<'a> {
    /// What the family needs of the job, which started at `started`.
    fn run(&self, started: Instant) -> CellRun<'a> {
        CellRun {
            suite: &self.suite.name,
            workload: self.workload,
            data: self.data,
            cell: self.cell,
            artifacts: self.artifacts,
            started,
        }
    }

    /// The result of this cell that measured nothing, to be filled in.
    fn result(&self, info: BackendInfo, status: Status, error: Option<String>) -> CellResult {
        let unmeasured = families::unmeasured(&self.run(Instant::now())).expect(MATCHED);
        let (metrics, _) = unmeasured.seal().expect("a cell's set-up values are finite");
        CellResult {
            schema: SCHEMA_VERSION,
            suite: self.suite.name.clone(),
            cell: self.cell.clone(),
            round: self.round,
            grad: self.grad,
            status,
            error,
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
            figures: vec![],
        }
    }
}

/// The result of a cell that measured nothing: its backend did not open, or its process died.
pub fn failed(job: &CellJob, info: BackendInfo, status: Status, error: String) -> CellResult {
    job.result(info, status, Some(error))
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
            started: Instant,
        }
        impl BackendVisitor for Visit<'_, '_> {
            type Out = CellResult;
            fn visit<B: Backend>(self, b: &B) -> CellResult {
                #[cfg(feature = "test-faults")]
                crate::fault::inject(self.job.cell);
                let job = self.job;
                let mut result = job.result(b.info(), Status::Error, None);
                let watches = watch::start(Scope::CellProcess, job.cell.backend.device);
                let mut record = Record::default();
                let outcome = families::run_cell(b, &job.run(self.started), &mut record, self.obs);
                watch::record(watches, &mut result);
                result.status = record.status;
                result.compile_seconds = record.compile_seconds;
                result.first_step_seconds = record.first_step_seconds;
                result.step_losses = record.step_losses;
                result.diverged_at = record.diverged_at;
                match outcome.expect(MATCHED).map(|m| Metrics::seal(&m)) {
                    Ok(Ok((metrics, figures))) => {
                        result.metrics = metrics;
                        result.figures = figures;
                    }
                    Ok(Err(e)) => {
                        result.status = Status::Error;
                        result.error = Some(format!("the cell's metrics cannot be recorded: {e}"));
                    }
                    Err(e) => {
                        result.status = status_of(&e);
                        result.error = Some(e.to_string());
                    }
                }
                result
            }
        }
        // The cell's clock starts before its engine opens: opening counts against its timeout.
        let started = Instant::now();
        with_backend(job.cell.backend, job.grad, Visit { job, obs, started })
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
pub fn own_executable() -> std::io::Result<PathBuf> {
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
        let (messages, their_end) = match message_pipe() {
            Ok(p) => p,
            Err(e) => return failed(Status::Error, format!("cannot make the cell's pipe: {e}")),
        };
        let fd = their_end.as_raw_fd();
        let mut command = Command::new(exe);
        command.arg("cell").env(MESSAGE_FD_VAR, MESSAGE_FD.to_string());
        command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: between fork and exec, only dup2, which is async-signal-safe. The messages'
        // end becomes fd 3 (dup2 clears close-on-exec on the copy); what native libraries
        // print on stdout joins stderr, the cell's last words.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec: clear it by hand then.
                let copied = if fd == MESSAGE_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, MESSAGE_FD)
                };
                if copied < 0 || libc::dup2(2, 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        drop(their_end);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return failed(Status::Error, format!("cannot start the cell's process: {e}"))
            }
        };
        let mut stdin = child.stdin.take().expect("piped");
        let sent = serde_json::to_writer(&mut stdin, &request).map_err(std::io::Error::other);
        drop(stdin);
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(messages)).lines() {
                match line {
                    Ok(l) => {
                        let _ = tx.send(Some(l));
                    }
                    Err(e) => {
                        let _ = tx.send(Some(format!("(unreadable: {e})")));
                        break;
                    }
                }
            }
            let _ = tx.send(None);
        });
        let stderr = child.stderr.take().expect("piped");
        let errors = Tail::read(stderr);
        let start = Instant::now();
        let timeout = job.workload.timeout().map(|t| Duration::from_secs_f64(t.0));
        let (mut result, mut killed_for_time, mut forwarded) = (None, false, false);
        let mut protocol: Option<ProtocolError> = None;
        let mut exited: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(line)) => match serde_json::from_str::<Message>(&line) {
                    Ok(Message::Progress(p)) => obs.progress(p),
                    Ok(Message::Result(r)) => result = Some(*r),
                    Err(e) => {
                        protocol.get_or_insert(ProtocolError { text: clip(&line), error: e });
                    }
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
            // A process the cell started may hold the pipe open after the cell's own exit:
            // what the cell wrote arrives within the grace, and nothing waits longer.
            if exited.is_none() && matches!(child.try_wait(), Ok(Some(_))) {
                exited = Some(Instant::now());
            }
            if exited.is_some_and(|t| t.elapsed() > EXIT_GRACE) {
                break;
            }
        }
        let status = child.wait();
        drop(reader);
        let stderr = errors.text(EXIT_GRACE);
        let tail = last_lines(&stderr, 3);
        match (result, protocol) {
            (Some(r), None) => return r,
            // The result read: keep it, and say what else came that did not.
            (Some(mut r), Some(p)) => {
                r.error = Some(match r.error.take() {
                    Some(e) => format!("{e}; {p}"),
                    None => p.to_string(),
                });
                return r;
            }
            (None, Some(p)) => return failed(Status::Error, format!("{p}{tail}")),
            (None, None) => {}
        }
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

/// The file descriptor a cell's process writes its messages to, and the variable that tells
/// it so (a `randbench cell` started by hand writes them on stdout).
const MESSAGE_FD: libc::c_int = 3;
const MESSAGE_FD_VAR: &str = "RANDBENCH_MESSAGE_FD";

/// A pipe for a child's messages: our end to read, and its end, both closed on exec (the child
/// gets a copy of its end at [`MESSAGE_FD`]).
fn message_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into the array, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are open and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How long the parent reads a cell's pipes after its process ended.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The last bytes a child wrote on stderr (where its stdout goes too): native libraries can
/// print without end, and only the last words are reported.
struct Tail {
    kept: std::sync::Arc<Mutex<std::collections::VecDeque<u8>>>,
    /// Hears when the stream ended.
    ended: mpsc::Receiver<()>,
}

impl Tail {
    const KEEP: usize = 64 << 10;

    fn read(mut from: impl Read + Send + 'static) -> Tail {
        let kept = std::sync::Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let into = std::sync::Arc::clone(&kept);
        let (tx, ended) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = from.read(&mut chunk) {
                let mut k = into.lock().unwrap_or_else(|e| e.into_inner());
                k.extend(&chunk[..n]);
                let over = k.len().saturating_sub(Self::KEEP);
                k.drain(..over);
            }
            let _ = tx.send(());
        });
        Tail { kept, ended }
    }

    /// What was kept once the stream ended, or after `wait` where something the child started
    /// still holds it open: its last words (an allocator's message) may still be in the pipe
    /// when the child's exit is seen.
    fn text(&self, wait: Duration) -> String {
        let _ = self.ended.recv_timeout(wait);
        let k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&k.iter().copied().collect::<Vec<u8>>()).into_owned()
    }
}

/// A line on the message pipe that is not a message: the two sides disagree on the schema.
#[derive(Debug, thiserror::Error)]
#[error("the cell's process sent a message randbench cannot read ({error}): {text}")]
pub struct ProtocolError {
    text: String,
    error: serde_json::Error,
}

/// The start of a long line, for an error message.
fn clip(line: &str) -> String {
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
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
        // A scheduler stopping the task (Slurm's scancel or time limit, Kubernetes) sends
        // SIGTERM to every process of it; the parent forwards a SIGINT too, and a child that
        // has both exits at once (130 and 143 are randbench's own exits on a second signal).
        (Some(libc::SIGTERM), _) | (None, Some(130 | 143)) => {
            (Status::Interrupted, "stopped (Ctrl-C or the scheduler) before its result".into())
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

/// Sends progress as messages.
struct MessageObserver;

/// Where this process's messages go: the parent's pipe, or stdout where none was given.
fn channel() -> &'static Mutex<Box<dyn Write + Send>> {
    static CHANNEL: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
    CHANNEL.get_or_init(|| {
        let out: Box<dyn Write + Send> = match std::env::var(MESSAGE_FD_VAR) {
            Ok(v) if v == MESSAGE_FD.to_string() => {
                // Processes this one starts (a native library's helpers) must not inherit the
                // pipe, or the parent would wait on them for the end of our messages.
                std::env::remove_var(MESSAGE_FD_VAR);
                // SAFETY: the parent opened this descriptor for us (see `message_pipe`), and
                // nothing else in this process uses it; fcntl only sets its close-on-exec flag.
                unsafe {
                    libc::fcntl(MESSAGE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
                    Box::new(std::fs::File::from_raw_fd(MESSAGE_FD))
                }
            }
            _ => Box::new(std::io::stdout()),
        };
        Mutex::new(out)
    })
}

fn send(m: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = channel().lock().unwrap_or_else(|e| e.into_inner());
    out.write_all(&line)?;
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
    Suite(#[from] crate::spec::SuiteError),
    #[error("no workload {workload} in {suite}")]
    NoWorkload { workload: String, suite: String },
    #[error(transparent)]
    Data(#[from] families::PrepareError),
    #[error("cannot write the result: {0}")]
    Write(#[from] std::io::Error),
}

/// The child's side: reads the request, runs the cell here and writes its result.
pub fn child_main() -> Result<(), ChildError> {
    // Takes the message pipe now, before anything could start a process that inherits it.
    channel();
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
    // The robustness tests' schema mismatch: a line the parent cannot read as a message.
    #[cfg(feature = "test-faults")]
    if crate::fault::wants("message", &req.cell) {
        let mut out = channel().lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(b"{\"result\": 42}\n")?;
    }
    send(&Message::Result(Box::new(result)))?;
    Ok(())
}
