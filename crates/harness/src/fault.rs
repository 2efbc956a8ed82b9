//! Faults on purpose, for the robustness tests only: `RANDBENCH_TEST_FAULT=KIND[:CONDITION]`
//! makes a cell (of that condition only, where one is given) die the way native libraries
//! die — `segfault`, `abort`, `oom` (a failed allocation) — or `hang`.

use crate::randomization::CellPlan;
use std::time::Duration;

pub fn inject(plan: &CellPlan) {
    let Ok(spec) = std::env::var("RANDBENCH_TEST_FAULT") else { return };
    let (kind, condition) = match spec.split_once(':') {
        Some((k, c)) => (k, Some(c)),
        None => (spec.as_str(), None),
    };
    if condition.is_some_and(|c| c != plan.condition.to_string()) {
        return;
    }
    match kind {
        "segfault" => {
            // SAFETY: restores the default action (Rust's own handler would return) and raises.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        "abort" => std::process::abort(),
        "oom" => {
            let v: Vec<u8> = Vec::with_capacity(1 << 50);
            std::hint::black_box(v);
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
}
