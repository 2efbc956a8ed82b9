//! With the `tch` feature, the binaries, tests and benches link libtorch, a shared library in
//! the project's Python environment. An rpath lets them start without LD_LIBRARY_PATH, and
//! `--no-as-needed` keeps libtorch_cuda, which no Rust code names but which CUDA needs.
//!
//! The commit and dirty state are captured here, not at run time, so that a binary records
//! the source it was built from wherever it runs, and never what happens to be checked out.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    provenance();
    println!("cargo:rerun-if-env-changed=DEP_RANDBENCH_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_RANDBENCH_TCH_LIBTORCH_LIB") else {
        return;
    };
    let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so").exists();
    // Every linked target: binaries, benches, integration tests and the library's own unit
    // tests (which `-tests` does not reach).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        // `git status` may otherwise rewrite the index, which is watched below: every build
        // would then see a changed index and run this again.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// RANDBENCH_GIT_COMMIT and RANDBENCH_GIT_DIRTY, left unset without git or a repository.
fn provenance() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let Some(commit) = git(&manifest, &["rev-parse", "HEAD"]) else { return };
    let Some(status) = git(&manifest, &["status", "--porcelain", "--untracked-files=no"]) else {
        return;
    };
    println!("cargo:rustc-env=RANDBENCH_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=RANDBENCH_GIT_DIRTY={}", !status.is_empty());

    // A new commit moves HEAD or the ref it names; staging or committing changes the index.
    // Edits not yet staged change neither, so the dirty flag may lag until the next of those
    // (watching every source file instead would rerun this on each edit).
    let Some(git_dir) = git(&manifest, &["rev-parse", "--git-dir"]) else { return };
    let git_dir = manifest.join(git_dir);
    // Refs live in the common dir, which differs from the git dir in a linked worktree.
    let common = git(&manifest, &["rev-parse", "--git-common-dir"])
        .map(|d| manifest.join(d))
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("index")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            let r = common.join(r);
            // A ref only in packed-refs gets its own file at the next commit, in this folder.
            match r.parent() {
                Some(folder) if !r.exists() => watched.push(folder.to_path_buf()),
                _ => watched.push(r),
            }
        }
    }
    // A ref may move between its own file and packed-refs.
    watched.push(common.join("packed-refs"));
    for path in watched {
        // Cargo reruns a build script on every build when a watched path is missing.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
