//! With the `tch` feature, the binaries, tests and benches link libtorch, a shared library in
//! the project's Python environment. An rpath lets them start without LD_LIBRARY_PATH, and
//! `--no-as-needed` keeps libtorch_cuda, which no Rust code names but which CUDA needs.

fn main() {
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
