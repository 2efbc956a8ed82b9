//! libtorch is a shared library found at build time (torch-sys reads the project's Python
//! environment). Binaries that link it must find it again at run time without the user
//! setting LD_LIBRARY_PATH, and must keep libtorch_cuda although no Rust code names one of its
//! symbols (`--as-needed` would drop it, and CUDA would then look absent).
//! This script passes the directory on to the harness (`DEP_RANDBENCH_TCH_LIBTORCH_LIB`) and
//! sets the same link arguments for this crate's own tests.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:libtorch_lib={lib}");
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
