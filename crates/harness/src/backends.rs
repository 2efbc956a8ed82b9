//! Which backends this binary has, which are usable on this machine, and how to reach one.

use crate::compiled::{self, cuda_compiled, enable_hint, engine_compiled};
use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, Device, Engine, GradMode,
};

/// Whether a backend can run here, and if not, what to do about it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Usable,
    NotCompiled { hint: String },
    Unavailable { reason: String, hint: String },
}

pub fn availability(id: BackendId) -> Availability {
    if let Some(hint) = compiled::missing(id) {
        return Availability::NotCompiled { hint };
    }
    match probe(id) {
        Ok(()) => Availability::Usable,
        Err(e) => Availability::Unavailable { reason: e.to_string(), hint: unavailable_hint(id) },
    }
}

/// [`availability`] asked of a process of its own (`exe probe ID`), so that this one opens
/// no engine: `randbench list` says what works without loading every library itself.
pub fn availability_elsewhere(exe: &std::path::Path, id: BackendId) -> Availability {
    if let Some(hint) = compiled::missing(id) {
        return Availability::NotCompiled { hint };
    }
    let out = std::process::Command::new(exe).args(["probe", &id.to_string()]).output();
    let unknown = |reason: String| Availability::Unavailable {
        reason,
        hint: "run `randbench probe BACKEND` to see more".into(),
    };
    match out {
        Ok(o) => serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            unknown(format!(
                "its probe answered no availability ({e}; {})",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }),
        Err(e) => unknown(format!("cannot start its probe: {e}")),
    }
}

/// What to do when a compiled-in backend does not work here; the reason itself says more.
fn unavailable_hint(id: BackendId) -> String {
    match id.device {
        Device::Cuda(_) => {
            "run on a machine with an NVIDIA GPU and driver, or pick a -cpu backend".into()
        }
        Device::Cpu => format!("see `randbench list` for the state of {}", id.engine.name()),
    }
}

/// Opens the backend once to see that it works here.
fn probe(id: BackendId) -> BResult<()> {
    struct Probe;
    impl BackendVisitor for Probe {
        type Out = ();
        fn visit<B: Backend>(self, _: &B) {}
    }
    with_backend(id, GradMode::Native, Probe)
}

/// Every backend this binary has that works on this machine, CPU ones first.
pub fn usable_here() -> Vec<BackendId> {
    let mut ids = Vec::new();
    for e in Engine::ALL.into_iter().filter(|&e| engine_compiled(e)) {
        ids.push(BackendId { engine: e, device: Device::Cpu });
    }
    for e in Engine::ALL.into_iter().filter(|&e| cuda_compiled(e)) {
        for n in 0..16 {
            let id = BackendId { engine: e, device: Device::Cuda(n) };
            if availability(id) != Availability::Usable {
                break;
            }
            ids.push(id);
        }
    }
    ids.retain(|&id| id.device != Device::Cpu || availability(id) == Availability::Usable);
    ids
}

/// The gradient mode a backend runs by default: its faster correct one. Measured in turns
/// (`cargo bench --bench peer_pytorch`, 2-core CPU): the symbolic expansion ran candle's MLP
/// step at 389 steps/s against its autograd's 256 (1.52×) and the learned optimizer's unroll
/// 1.12× faster; on libtorch 687 against 678 steps/s (even) and the unroll 1.13× faster; on
/// burn (bare burn-flex against `Autodiff<Flex>`) 378 against 363 steps/s and the unroll 1.84×
/// faster. ONNX Runtime has only the expansion. No CUDA measurement yet: the same choice there.
pub fn default_grad(_id: BackendId) -> GradMode {
    GradMode::Symbolic
}

/// The mode a backend really computes with when asked for `asked` (ONNX Runtime has no
/// autograd: always the symbolic expansion), as results record it.
pub fn effective_grad(id: BackendId, asked: GradMode) -> GradMode {
    match id.engine {
        Engine::Ort => GradMode::Symbolic,
        _ => asked,
    }
}

/// Generic work to do with whichever concrete backend an id names.
pub trait BackendVisitor {
    type Out;
    fn visit<B: Backend>(self, backend: &B) -> Self::Out;
}

/// The variable that sets how many threads every CPU engine computes with.
pub const THREADS_VAR: &str = "RANDBENCH_THREADS";

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{THREADS_VAR}={given}: give a positive number of threads, or unset it for one per physical core")]
pub struct ThreadsError {
    pub given: String,
}

/// Threads every CPU engine computes with: `RANDBENCH_THREADS`, else one per physical core.
/// candle and libtorch take one per physical core by default, ONNX Runtime one per logical
/// CPU, twice as many on a machine with SMT: engines compared side by side get one count.
pub fn cpu_threads() -> Result<usize, ThreadsError> {
    match std::env::var(THREADS_VAR) {
        Ok(given) => match given.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ThreadsError { given }),
        },
        Err(_) => Ok(sysinfo::System::physical_core_count()
            .ok()
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)),
    }
}

/// How many times candle's elementwise pool spins after an op before its threads sleep,
/// unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` says otherwise. candle runs elementwise ops on that
/// pool and products on rayon's, each with a thread per core; at candle's default (25,000
/// spins, about a millisecond here) the spinning took the cores the products needed, and two
/// threads trained no faster than one (432–442 steps/s on the 784-512-10 MLP; 550–576 with
/// short spins, the two taking turns on 2 cores).
const CANDLE_SPIN_LIMIT: &str = "1000";

/// Gives every CPU engine of this process, and of the cell processes it starts, the count
/// [`cpu_threads`] says, and candle's pool its spin limit. candle and rayon read theirs from
/// the environment when their pools start, so `main` (and each bench) calls this first,
/// before any thread exists.
pub fn configure_cpu_threads() -> Result<usize, ThreadsError> {
    let n = cpu_threads()?;
    for var in [THREADS_VAR, "RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        std::env::set_var(var, n.to_string());
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
    Ok(n)
}

/// Opens the backend `id` and hands it to `v`. CPU engines compute with [`cpu_threads`].
pub fn with_backend<V: BackendVisitor>(id: BackendId, grad: GradMode, v: V) -> BResult<V::Out> {
    let threads =
        cpu_threads().map_err(|e| BackendError::Library { backend: id, message: e.to_string() })?;
    match id.engine {
        #[cfg(feature = "candle")]
        Engine::Candle => {
            let _ = threads; // set through the environment: see configure_cpu_threads
            Ok(v.visit(&randbench_candle::CandleBackend::new(id.device, grad)?))
        }
        #[cfg(feature = "tch")]
        Engine::Tch => Ok(v.visit(&randbench_tch::TchBackend::new(id.device, grad, threads)?)),
        // ONNX Runtime has no autograd: its graphs are always expanded symbolically.
        #[cfg(feature = "ort")]
        Engine::Ort => Ok(v.visit(&randbench_ort::OrtBackend::new(id.device, threads)?)),
        // burn-flex computes on rayon's pool: its count is set through the environment too.
        // The gradient mode picks the burn backend: under burn's autograd or bare.
        #[cfg(feature = "burn")]
        Engine::Burn => {
            use randbench_burn::{BurnBackend, Flex, FlexAutodiff};
            match (id.device, grad) {
                (Device::Cpu, GradMode::Native) => Ok(v.visit(&BurnBackend::<FlexAutodiff>::cpu())),
                (Device::Cpu, GradMode::Symbolic) => Ok(v.visit(&BurnBackend::<Flex>::cpu())),
                #[cfg(feature = "cuda")]
                (Device::Cuda(n), GradMode::Native) => {
                    Ok(v.visit(&BurnBackend::<randbench_burn::CudaAutodiff>::cuda(n)?))
                }
                #[cfg(feature = "cuda")]
                (Device::Cuda(n), GradMode::Symbolic) => {
                    Ok(v.visit(&BurnBackend::<randbench_burn::Cuda>::cuda(n)?))
                }
                #[cfg(not(feature = "cuda"))]
                (Device::Cuda(_), _) => Err(BackendError::DeviceUnavailable {
                    backend: id,
                    reason: "this binary was built without CUDA support for burn; rebuild with `--features cuda`".into(),
                }),
            }
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = (grad, v, threads);
            Err(BackendError::Unsupported {
                backend: id,
                what: format!("this binary: {}", enable_hint(other)),
            })
        }
    }
}
