//! Cells in child processes: a segfault, an abort in a native library, an out-of-memory kill
//! or a hang ends one cell, never the run.
//!
//! The parent runs `randbench cell SUITE --workload W --condition I --regularizer J --seed S
//! --backend B --grad G`. The child loads the suite and data itself, trains, and writes lines
//! on stdout: `epoch E ACC` as it goes, then `result JSON`. The parent enforces the cell's
//! timeout, forwards Ctrl-C, and turns a child that dies without a result into a result line
//! that says how it died.

use crate::randomization::{failed_cell, run_cell_on, CellPlan, Observer};
use crate::results::{CellResult, Status};
use crate::runner::{load_data, STOP};
use crate::suite::{self, Randomization, Workload};
use randbench_core::backend::{BackendId, GradMode};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which cell of a suite to run: enough for a child to find it again.
#[derive(Clone, Debug)]
pub struct CellRef {
    pub suite: std::path::PathBuf,
    pub workload: String,
    pub condition: usize,
    pub regularizer: usize,
    pub seed: u64,
    pub backend: BackendId,
    pub grad: GradMode,
}

impl CellRef {
    fn args(&self) -> Vec<String> {
        vec![
            "cell".into(),
            self.suite.display().to_string(),
            "--workload".into(),
            self.workload.clone(),
            "--condition".into(),
            self.condition.to_string(),
            "--regularizer".into(),
            self.regularizer.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--backend".into(),
            self.backend.to_string(),
            "--grad".into(),
            format!("{:?}", self.grad).to_lowercase(),
        ]
    }
}

/// How long after a cell's own timeout the parent kills it: the child stops by itself between
/// steps, and only a step that never returns needs the kill.
fn kill_after(timeout: Duration) -> Duration {
    timeout + (timeout / 10).max(Duration::from_secs(2))
}

enum Line {
    Epoch(usize, f64),
    Result(Box<CellResult>),
    Other,
}

fn parse(line: &str) -> Line {
    if let Some(json) = line.strip_prefix("result ") {
        if let Ok(r) = serde_json::from_str(json) {
            return Line::Result(Box::new(r));
        }
    }
    let mut parts = line.split_whitespace();
    if parts.next() == Some("epoch") {
        if let (Some(Ok(e)), Some(Ok(a))) =
            (parts.next().map(str::parse), parts.next().map(str::parse))
        {
            return Line::Epoch(e, a);
        }
    }
    Line::Other
}

/// Runs one cell in a child process; `plan` describes it for a result line of a child that
/// died. `progress` hears each epoch's training accuracy.
pub fn run_in_child(
    cell: &CellRef,
    plan: &CellPlan,
    timeout: Option<Duration>,
    progress: &mut dyn FnMut(usize, f64),
) -> CellResult {
    let failed = |status: Status, why: String| failed_cell(plan, cell.backend, status, why);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return failed(
                Status::Error,
                format!("cannot find randbench's own executable to start the cell: {e}"),
            )
        }
    };
    let mut child = match Command::new(exe)
        .args(cell.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(Status::Error, format!("cannot start the cell's process: {e}")),
    };
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
    let (mut result, mut killed_for_time, mut forwarded) = (None, false, false);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(line)) => match parse(&line) {
                Line::Epoch(e, a) => progress(e, a),
                Line::Result(r) => result = Some(*r),
                Line::Other => {}
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

/// What a child's exit without a result means.
fn classify(s: ExitStatus, stderr: &str) -> (Status, String) {
    use std::os::unix::process::ExitStatusExt;
    let alloc_failed = stderr.contains("memory allocation of") || stderr.contains("out of memory");
    match (s.signal(), s.code()) {
        // Ctrl-C reached the child before it could install its own handler (while the dynamic
        // loader was still opening libtorch, say).
        (Some(libc::SIGINT), _) => (Status::Interrupted, "stopped by Ctrl-C before its cell began".into()),
        (Some(libc::SIGKILL), _) => (Status::Oom, "killed by SIGKILL, which nothing in randbench sends: most likely the kernel's out-of-memory killer".into()),
        (Some(libc::SIGABRT), _) if alloc_failed => (Status::Oom, "aborted after a failed memory allocation".into()),
        (Some(libc::SIGSEGV), _) => (Status::Crashed, "segmentation fault (SIGSEGV)".into()),
        (Some(libc::SIGABRT), _) => (Status::Crashed, "aborted (SIGABRT)".into()),
        (Some(sig), _) => (Status::Crashed, format!("killed by signal {sig}")),
        (None, Some(code)) => (Status::Crashed, format!("exited with code {code} without a result")),
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

struct LineObserver;

impl Observer for LineObserver {
    fn epoch(&mut self, epoch: usize, train_accuracy: f64) {
        println!("epoch {epoch} {train_accuracy}");
        let _ = std::io::stdout().flush();
    }
    fn should_stop(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// The child's side: runs the cell and prints its result line. Errors here are the parent's
/// mistakes (it validated everything), so they are plain messages on stderr.
pub fn child_main(cell: &CellRef) -> Result<(), String> {
    let suite = suite::load(&cell.suite).map_err(|e| e.to_string())?;
    let w: &Randomization = suite
        .workloads
        .iter()
        .map(|w| match w {
            Workload::Randomization(r) => r,
        })
        .find(|r| r.name == cell.workload)
        .ok_or_else(|| format!("no workload {} in {}", cell.workload, cell.suite.display()))?;
    let condition = *w.conditions.get(cell.condition).ok_or("condition index out of range")?;
    let regularizer =
        *w.regularizers.get(cell.regularizer).ok_or("regularizer index out of range")?;
    let mut split = load_data(&w.data)?;
    condition.apply(&mut split, cell.seed);
    let plan = CellPlan {
        suite: &suite.name,
        workload: w,
        condition,
        regularizer,
        seed: cell.seed,
        split: &split,
    };
    let result = run_cell_on(cell.backend, cell.grad, &plan, &mut LineObserver);
    println!("result {}", serde_json::to_string(&result).map_err(|e| e.to_string())?);
    std::io::stdout().flush().map_err(|e| e.to_string())
}
