//! Records where the project environment keeps ONNX Runtime's shared library (the pinned
//! `onnxruntime` wheel that scripts/setup-native.sh installs), so the binary finds it without
//! ORT_DYLIB_PATH. Nothing is linked: the library is opened when a backend is first made.

use std::path::{Path, PathBuf};

fn find(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for py in std::fs::read_dir(&lib).ok()?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        if let Some(found) = libs.pop() {
            return Some(found);
        }
    }
    None
}

fn main() {
    // The project's own environment, whichever Python environment the shell has active.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv");
    println!("cargo:rerun-if-changed={}", venv.display());
    let found = find(&venv).map(|p| p.display().to_string()).unwrap_or_default();
    println!("cargo:rustc-env=RANDBENCH_ORT_DYLIB={found}");
    println!("cargo:rustc-env=RANDBENCH_ORT_VENV={}", venv.display());
}
