//! Faults on purpose, for the robustness tests only (compiled in with the `test-faults`
//! feature, which only the tests enable): `RANDBENCH_TEST_FAULT=KIND[:VARIANT]` makes a cell
//! (of that variant only, as the tables name it, where one is given) die the way native
//! libraries die — `segfault`, `abort`, `oom` (a failed allocation) — or `hang`; `message`
//! makes a cell's process send its parent a line that is no message (see `executor`).

use randbench_schema::Cell;
use std::time::Duration;

/// The fault asked for this cell, if any.
fn asked(cell: &Cell) -> Option<String> {
    let spec = std::env::var("RANDBENCH_TEST_FAULT").ok()?;
    let (kind, variant) = match spec.split_once(':') {
        Some((k, v)) => (k, Some(v)),
        None => (spec.as_str(), None),
    };
    if variant.is_some_and(|v| v != cell.variant_label()) {
        return None;
    }
    Some(kind.to_string())
}

/// Whether the fault `kind` is asked for this cell.
pub fn wants(kind: &str, cell: &Cell) -> bool {
    asked(cell).as_deref() == Some(kind)
}

pub fn inject(cell: &Cell) {
    let Some(kind) = asked(cell) else { return };
    match kind.as_str() {
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
