//! Which engines and devices this binary was built with: read from the build's features
//! alone, so that parsing a suite or listing what exists opens no engine.

use randbench_core::backend::{BackendId, Device, Engine};

pub fn engine_compiled(e: Engine) -> bool {
    match e {
        Engine::Candle => cfg!(feature = "candle"),
        Engine::Tch => cfg!(feature = "tch"),
        Engine::Ort => cfg!(feature = "ort"),
        Engine::Burn => cfg!(feature = "burn"),
    }
}

pub fn enable_hint(e: Engine) -> String {
    match e {
        Engine::Candle => "build with the `candle` feature (on by default)".into(),
        Engine::Tch => "run scripts/setup-native.sh, then build with `--features tch` (scripts/run.sh does both)".into(),
        Engine::Ort => "run scripts/setup-native.sh, then build with `--features ort` (scripts/run.sh does both)".into(),
        Engine::Burn => "build with the `burn` feature (on by default)".into(),
    }
}

pub fn cuda_compiled(e: Engine) -> bool {
    match e {
        Engine::Candle => cfg!(all(feature = "candle", feature = "cuda")),
        // libtorch's CUDA support is in the library itself, found at run time.
        Engine::Tch => cfg!(feature = "tch"),
        Engine::Ort => cfg!(all(feature = "ort", feature = "cuda")),
        Engine::Burn => cfg!(all(feature = "burn", feature = "cuda")),
    }
}

/// Backend names this binary can be asked for.
pub fn names() -> Vec<String> {
    Engine::ALL
        .into_iter()
        .filter(|&e| engine_compiled(e))
        .flat_map(|e| {
            let cpu = format!("{}-cpu", e.name());
            if cuda_compiled(e) {
                vec![cpu, format!("{}-cuda:N", e.name())]
            } else {
                vec![cpu]
            }
        })
        .collect()
}

/// Why `id` is not in this binary, with what to do about it; `None` if it is.
pub fn missing(id: BackendId) -> Option<String> {
    if !engine_compiled(id.engine) {
        return Some(enable_hint(id.engine));
    }
    match id.device {
        Device::Cuda(_) if !cuda_compiled(id.engine) => Some(format!(
            "this binary has no CUDA support for {}; build with `--features cuda` (see docs/gpu.md)",
            id.engine.name()
        )),
        _ => None,
    }
}
