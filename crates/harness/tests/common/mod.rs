//! Helpers the harness's integration tests share (each test file compiles its own copy).
#![allow(dead_code)]

pub use randbench_core::testing::Scratch;
use randbench_schema::{Observer, Progress};
use std::path::PathBuf;
use std::process::Command;

/// An observer that shows nothing and never asks a cell to stop.
pub struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: Progress) {}
    fn should_stop(&self) -> bool {
        false
    }
}

/// A fresh, empty directory for one test: `randbench-KIND-PID-NAME` under the temp dir,
/// removed when the test passes.
pub fn scratch(kind: &str, name: &str) -> Scratch {
    Scratch::new(kind, name)
}

/// The bytes of an IDX file of unsigned bytes with these dimensions.
pub fn idx(dims: &[u32], bytes: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(bytes);
    b
}

/// A tiny suite of timed steps, four rounds. Speed thresholds of 100%: only a change beyond
/// 2× counts, so that this shared, noisy machine (runs minutes apart, other tests beside them)
/// cannot raise a false alarm, while [`DELAY`] slows the step far more than that.
pub const TIMED_SUITE: &str = r#"
backends: [candle-cpu]
seeds: [3]
rounds: 4
compare:
  thresholds: {steps_per_second: 1.0, seconds_to_fit: 1.0}
workloads:
  - randomization:
      name: tiny
      data: {source: synthetic, train: 200, test: 100, image: [1, 16, 16]}
      model:
        mlp: {hidden: [32]}
      optimizer: {kind: momentum, lr: 0.1, momentum: 0.9}
      batch: 50
      conditions: [true_labels]
      max_epochs: 20
"#;

/// RANDBENCH_TEST_DELAY for [`TIMED_SUITE`]: 5 ms a step, some 40 times a step of its network.
pub const DELAY: &str = "candle-cpu=5";

/// Runs the randbench binary (without any delay the caller's environment may hold).
pub fn randbench(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_randbench"));
    c.args(args).env_remove("RANDBENCH_TEST_DELAY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("randbench runs")
}

/// Runs [`TIMED_SUITE`] into `dir/name` and returns that directory.
pub fn run_tiny(
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> PathBuf {
    run_suite(dir, TIMED_SUITE, name, extra, env)
}

/// Writes `text` to `dir/tiny.yaml`, runs it into `dir/name` (which must succeed), and
/// returns that directory.
pub fn run_suite(
    dir: &std::path::Path,
    text: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> PathBuf {
    let suite = dir.join("tiny.yaml");
    std::fs::write(&suite, text).unwrap();
    let out = dir.join(name);
    let mut args = vec!["run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = randbench(&args, env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Every CPU backend usable here.
pub fn cpu_backend_ids() -> Vec<randbench_core::BackendId> {
    randbench::backends::usable_here()
        .into_iter()
        .filter(|id| id.device == randbench_core::Device::Cpu)
        .collect()
}

/// Every CPU backend usable here, as `--backends` takes them (`candle-cpu,tch-cpu,…`).
pub fn cpu_backends() -> String {
    cpu_backend_ids().iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// Runs a graph once on a backend: `with_backend(id, mode, RunGraph(&graph, &inputs))`.
pub struct RunGraph<'a>(pub &'a randbench_core::Graph, pub &'a [randbench_core::HostTensor]);

impl randbench::backends::BackendVisitor for RunGraph<'_> {
    type Out = Vec<randbench_core::HostTensor>;
    fn visit<B: randbench_core::Backend>(self, b: &B) -> Self::Out {
        randbench_core::testing::run_on(b, self.0, self.1)
    }
}

/// The first cell of a suite's first workload, run in this process on every CPU backend
/// (each in its default gradient mode), seed as the suite says.
pub fn run_on_cpu_backends(suite_text: &str) -> Vec<randbench_schema::CellResult> {
    use randbench::executor::Executor;
    let suite = randbench::suite::parse(suite_text, std::path::Path::new("test.yaml")).unwrap();
    let workload = &suite.workloads[0];
    let data = workload.prepare().unwrap();
    cpu_backend_ids()
        .into_iter()
        .map(|id| {
            let cell = suite.cells(&[id]).remove(0);
            let job = randbench::executor::CellJob {
                suite: &suite,
                workload,
                data: &data,
                cell: &cell,
                round: 0,
                grad: randbench::backends::default_grad(id),
                artifacts: None,
            };
            randbench::executor::InProcess.execute(&job, &mut Quiet)
        })
        .collect()
}

/// Held by the tests of one file that time real runs, so that they do not run beside each
/// other (cargo runs a file's tests in parallel) and slow each other's steps.
pub fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A PostgreSQL server of its own in a temporary directory, on a free loopback port; stopped
/// when dropped. Run as the `postgres` user when the tests run as root (the server refuses
/// root).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_user: Option<&'static str>,
}

impl Postgres {
    /// `None` when no server is installed (scripts/setup-postgres.sh installs Debian's) and
    /// RANDBENCH_REQUIRE_POSTGRES is unset; with it set (as scripts/test.sh does), a missing
    /// server fails the test.
    pub fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("RANDBENCH_REQUIRE_POSTGRES").is_none(),
                "no PostgreSQL server under /usr/lib/postgresql: run scripts/setup-postgres.sh"
            );
            eprintln!("skipped: no PostgreSQL server installed (scripts/setup-postgres.sh)");
            return None;
        };
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("randbench-pg-{}-{nth}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let as_user = (unsafe { libc::geteuid() } == 0).then_some("postgres");
        if let Some(user) = as_user {
            let ok =
                Command::new("chown").args([&format!("{user}:"), root.to_str().unwrap()]).status();
            assert!(ok.unwrap().success(), "chown {user} {}", root.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { bin, data: root.join("data"), port, as_user };
        pg.tool(
            "initdb",
            &["-D", pg.data.to_str().unwrap(), "-A", "trust", "-U", "randbench", "--no-sync"],
        );
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", root.display());
        let log = root.join("log");
        pg.tool(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        Some(pg)
    }

    fn tool(&self, name: &str, args: &[&str]) {
        let exe = self.bin.join(name);
        let mut c = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let o = c.args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://randbench@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.tool("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap());
    }
}
