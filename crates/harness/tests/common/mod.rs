//! Helpers the harness's integration tests share (each test file compiles its own copy).
#![allow(dead_code)]

use randbench::cell::{Observer, Progress};
use std::path::PathBuf;

/// An observer that shows nothing and never asks a cell to stop.
pub struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: Progress) {}
    fn should_stop(&self) -> bool {
        false
    }
}

/// A fresh, empty directory for one test: `randbench-KIND-PID-NAME` under the temp dir.
pub fn scratch(kind: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("randbench-{kind}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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
