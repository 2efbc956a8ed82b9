//! randbench-ort: the [`Backend`] on ONNX Runtime, which has no autograd at run time.
//!
//! A graph's `Grad` nodes are expanded by the core's symbolic reverse mode, and the whole
//! graph — a complete training step, say — becomes one ONNX model built in memory with ONNX
//! Runtime's Model Editor API, run as one session. Tensors are ONNX Runtime values in its
//! own memory (device memory on CUDA): outputs of one run are bound as inputs of the next
//! with no copy to the host.
//!
//! ONNX Runtime is opened at run time (`load-dynamic`) from the pinned `onnxruntime` wheel in
//! the project environment; `ORT_DYLIB_PATH` overrides where.

mod fused;
mod lower;

use ort::environment::GlobalThreadPoolOptions;
#[cfg(feature = "cuda")]
use ort::ep::{ExecutionProvider, CUDA};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, DynTensorValueType, Tensor};
use ort::AsPointer;
use randbench_core::autodiff::expand_grads;
use randbench_core::backend::{
    check_inputs, BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine,
};
use randbench_core::graph::{Graph, Op};
use randbench_core::tensor::{DType, HostData, HostTensor};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub use lower::OPSET;

/// The ONNX Runtime release the project environment installs (scripts/setup-native.sh).
pub const PINNED_VERSION: &str = "1.31.1";

const SETUP_HINT: &str = "run scripts/setup-native.sh (it installs the pinned onnxruntime wheel into .venv), or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.22 or newer";

/// An ONNX Runtime tensor; clones share it.
#[derive(Clone)]
pub struct OrtTensor(Arc<DynTensor>);

/// ONNX Runtime's errors as the backend's, classified by the core.
trait OrLib<T> {
    fn lib(self, backend: BackendId) -> BResult<T>;
}

impl<T, R> OrLib<T> for Result<T, ort::Error<R>>
where
    ort::Error: From<ort::Error<R>>,
{
    fn lib(self, backend: BackendId) -> BResult<T> {
        self.map_err(|e| BackendError::library(backend, ort::Error::from(e).to_string()))
    }
}

/// Where ONNX Runtime's library is: `ORT_DYLIB_PATH`, else the project environment's.
pub fn library_path() -> Option<PathBuf> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => Some(env!("RANDBENCH_ORT_DYLIB")).filter(|p| !p.is_empty()).map(PathBuf::from),
    }
}

struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
    version: String,
    threads: usize,
}

/// Why ONNX Runtime could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime's library was not found in {venv}: {SETUP_HINT}")]
    NotInstalled { venv: &'static str },
    #[error("ONNX Runtime's library {} does not exist: {SETUP_HINT}", .0.display())]
    Missing(PathBuf),
    #[error("cannot load ONNX Runtime from {}: {source}; {SETUP_HINT}", .library.display())]
    Load { library: PathBuf, source: ort::LoadDynamicError },
    #[error("ONNX Runtime from {} failed to start: {source}", .library.display())]
    Start { library: PathBuf, source: ort::Error },
}

static RUNTIME: OnceLock<Result<Runtime, RuntimeError>> = OnceLock::new();

/// Whether this process has tried to open ONNX Runtime (its environment and thread pool):
/// code that must not, such as reading a suite, is tested with it.
pub fn started() -> bool {
    RUNTIME.get().is_some()
}

/// Opens ONNX Runtime once per process, with `threads` threads in its one pool. Checked here,
/// before ort's own loader could panic: the file must exist and report a supported version.
fn runtime(threads: usize) -> Result<&'static Runtime, &'static RuntimeError> {
    let r = RUNTIME.get_or_init(|| {
        let library = library_path()
            .ok_or(RuntimeError::NotInstalled { venv: env!("RANDBENCH_ORT_VENV") })?;
        if !library.is_file() {
            return Err(RuntimeError::Missing(library));
        }
        let builder = match ort::init_from(&library) {
            Ok(b) => b,
            Err(source) => return Err(RuntimeError::Load { library, source }),
        };
        // One thread pool for every session: a training step, its last smaller batch and the
        // evaluation are separate sessions, and pools of their own would spin against each
        // other on a small machine (it cost ort-cpu three quarters of its speed on 2 cores).
        let env = GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .and_then(|p| p.with_inter_threads(1))
            .and_then(|pool| builder.with_name("randbench").with_global_thread_pool(pool).build());
        let env = match env {
            Ok(env) => env,
            Err(source) => return Err(RuntimeError::Start { library, source }),
        };
        let version = version_of(&library);
        Ok(Runtime { env, library, version, threads })
    });
    r.as_ref()
}

/// The version in the library's file name (libonnxruntime.so.1.31.1), else the build string.
fn version_of(library: &std::path::Path) -> String {
    let name = library.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_prefix("libonnxruntime.so.") {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => ort::info()
            .split(',')
            .find_map(|s| s.trim().strip_prefix("git-branch=rel-"))
            .unwrap_or("unknown")
            .to_string(),
    }
}

/// `RANDBENCH_ORT_FUSION`: `on` (the default) or `off`.
fn fusion_setting() -> Result<bool, String> {
    match std::env::var("RANDBENCH_ORT_FUSION").as_deref() {
        Err(_) | Ok("on") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => Err(format!("RANDBENCH_ORT_FUSION={other}: set it to `on` or `off`")),
    }
}

pub struct OrtBackend {
    id: BackendId,
    runtime: &'static Runtime,
    /// Whether groups of elementwise nodes run as fused kernels: on the CPU provider, unless
    /// `RANDBENCH_ORT_FUSION=off` (for comparisons); fused kernels are CPU code, and on CUDA
    /// they would copy every operand over.
    fuse: bool,
}

/// A compiled graph: one session, its I/O binding, and the graph for input checks.
pub struct OrtProgram {
    session: Session,
    binding: IoBinding,
    memory: MemoryInfo<'static>,
    graph: Graph,
    inputs: Vec<String>,
    outputs: Vec<String>,
    fused_groups: usize,
}

impl OrtProgram {
    /// How many groups of elementwise nodes run as fused kernels.
    pub fn fused_groups(&self) -> usize {
        self.fused_groups
    }
}

impl OrtBackend {
    /// A backend on `device`. CUDA needs ONNX Runtime built with its CUDA execution provider;
    /// without it this is an error, never a silent run on the CPU.
    /// `threads`: the size of ONNX Runtime's one thread pool, fixed by the first backend of the
    /// process; asking for another count later is an error, never a silent mismatch.
    pub fn new(device: Device, threads: usize) -> BResult<Self> {
        let id = BackendId { engine: Engine::Ort, device };
        let runtime = runtime(threads).map_err(|e| BackendError::library(id, e.to_string()))?;
        if runtime.threads != threads {
            return Err(BackendError::Unsupported {
                backend: id,
                what: format!(
                    "{threads} threads: ONNX Runtime's thread pool in this process already has {}",
                    runtime.threads
                ),
            });
        }
        if let Device::Cuda(n) = device {
            Self::check_cuda(runtime, n)?;
        }
        let setting =
            fusion_setting().map_err(|what| BackendError::Unsupported { backend: id, what })?;
        Ok(Self { id, runtime, fuse: false }.with_fusion(setting))
    }

    /// This backend with fused elementwise kernels on or off (off, whatever is asked, on CUDA).
    pub fn with_fusion(self, on: bool) -> Self {
        Self { fuse: on && self.id.device == Device::Cpu, ..self }
    }

    #[cfg(feature = "cuda")]
    fn check_cuda(runtime: &Runtime, n: usize) -> BResult<()> {
        if CUDA::is_available().unwrap_or(false) {
            return Ok(());
        }
        Err(BackendError::DeviceUnavailable {
            backend: BackendId { engine: Engine::Ort, device: Device::Cuda(n) },
            reason: format!(
                "ONNX Runtime at {} has no CUDA execution provider (the onnxruntime wheel is CPU-only; onnxruntime-gpu=={PINNED_VERSION} has it)",
                runtime.library.display()
            ),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn check_cuda(_: &Runtime, n: usize) -> BResult<()> {
        Err(BackendError::DeviceUnavailable {
            backend: BackendId { engine: Engine::Ort, device: Device::Cuda(n) },
            reason: "this binary was built without ONNX Runtime's CUDA execution provider; rebuild with `--features cuda`".into(),
        })
    }

    fn memory_info(&self) -> BResult<MemoryInfo<'static>> {
        match self.id.device {
            Device::Cpu => MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            ),
            Device::Cuda(n) => MemoryInfo::new(
                AllocationDevice::CUDA,
                n as i32,
                AllocatorType::Device,
                MemoryType::Default,
            ),
        }
        .lib(self.id)
    }

    fn session(
        &self,
        model: ort::editor::Model,
        level: GraphOptimizationLevel,
    ) -> BResult<Session> {
        let mut builder = Session::builder(&self.runtime.env)
            .lib(self.id)?
            .with_optimization_level(level)
            .lib(self.id)?;
        // The session must use the environment's one thread pool. ort asks for that when it
        // commits a session from a file or bytes, but `Model::into_session` skips the step, so
        // every session made its own pool, whose idle threads spun against the working one.
        // SAFETY: the builder's options pointer is valid for as long as `builder` lives, and
        // the returned status is taken over (and released) by `result_from_status`.
        unsafe {
            ort::Error::result_from_status((ort::api().DisablePerSessionThreads)(builder.ptr_mut()))
        }
        .lib(self.id)?;
        // RANDBENCH_ORT_PROFILE=PREFIX writes ONNX Runtime's per-node profile of each session.
        if let Ok(prefix) = std::env::var("RANDBENCH_ORT_PROFILE") {
            builder = builder.with_profiling(prefix).lib(self.id)?;
        }
        #[cfg(feature = "cuda")]
        if let Device::Cuda(n) = self.id.device {
            // error_on_failure: a provider that fails to load is an error, never a CPU run.
            builder = builder
                .with_execution_providers([CUDA::default()
                    .with_device_id(n as i32)
                    .build()
                    .error_on_failure()])
                .map_err(|e| BackendError::DeviceUnavailable {
                    backend: self.id,
                    reason: e.to_string(),
                })?;
        }
        if self.fuse {
            builder = builder.with_operators(fused::domain().lib(self.id)?).lib(self.id)?;
            let mut session = builder.edit_from_memory(&fused::base_model(OPSET)).lib(self.id)?;
            session.apply_model(&model).lib(self.id)?;
            return session.into_session().lib(self.id);
        }
        model.into_session(&builder).lib(self.id)
    }

    fn providers(&self) -> &'static str {
        match self.id.device {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda(_) => "CUDAExecutionProvider",
        }
    }
}

impl Backend for OrtBackend {
    type Tensor = OrtTensor;
    type Program = OrtProgram;

    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            library: format!("onnxruntime {}", self.runtime.version),
            device_name: self.id.device.to_string(),
            threads: self.runtime.threads,
            extra: vec![
                ("providers".into(), self.providers().into()),
                ("opset".into(), OPSET.to_string()),
                ("fusion".into(), if self.fuse { "on" } else { "off" }.into()),
                ("library_path".into(), self.runtime.library.display().to_string()),
            ],
        }
    }

    fn upload(&self, t: &HostTensor) -> BResult<OrtTensor> {
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let host: DynTensor = match t.data() {
            HostData::F32(v) => Tensor::from_array((shape, v.clone())).lib(self.id)?.upcast(),
            HostData::I64(v) => Tensor::from_array((shape, v.clone())).lib(self.id)?.upcast(),
        };
        let value = match self.id.device {
            Device::Cpu => host,
            Device::Cuda(n) => host.to(AllocationDevice::CUDA, n as i32).lib(self.id)?,
        };
        Ok(OrtTensor(Arc::new(value)))
    }

    fn download(&self, t: &OrtTensor) -> BResult<HostTensor> {
        let host = if t.0.memory_info().allocation_device() == AllocationDevice::CPU {
            None
        } else {
            Some(t.0.to(AllocationDevice::CPU, 0).lib(self.id)?)
        };
        let v = host.as_ref().unwrap_or(&t.0);
        let shape: Vec<usize> = v.shape().iter().map(|&d| d as usize).collect();
        let data = match v.data_type() {
            ort::value::TensorElementType::Int64 => {
                HostData::I64(v.try_extract_tensor::<i64>().lib(self.id)?.1.to_vec())
            }
            _ => HostData::F32(v.try_extract_tensor::<f32>().lib(self.id)?.1.to_vec()),
        };
        HostTensor::new(shape, data).map_err(|e| BackendError::library(self.id, e.to_string()))
    }

    fn compile(&self, g: &Graph) -> BResult<OrtProgram> {
        let graph = expand_grads(g)?;
        let lowered = lower::lower(&graph, self.fuse)
            .map_err(|e| BackendError::library(self.id, e.to_string()))?;
        let session = self.session(lowered.model, optimization_level(&graph))?;
        let binding = session.create_binding().lib(self.id)?;
        let memory = self.memory_info()?;
        Ok(OrtProgram {
            session,
            binding,
            memory,
            graph,
            inputs: lowered.inputs,
            outputs: lowered.outputs,
            fused_groups: lowered.fused_groups,
        })
    }

    fn run(&self, p: &mut OrtProgram, inputs: &[&OrtTensor]) -> BResult<Vec<OrtTensor>> {
        let shapes: Vec<(Vec<usize>, DType)> = inputs.iter().map(|t| shape_dtype(t)).collect();
        check_inputs(&p.graph, shapes.iter().map(|(s, d)| (s.as_slice(), *d)))?;
        for (name, t) in p.inputs.iter().zip(inputs) {
            p.binding.bind_input(name, t.0.as_ref()).lib(self.id)?;
        }
        // Fresh output buffers every run. A binding keeps the last run's outputs, and would
        // write the next run's into them: into this run's inputs, which are those very
        // values. A parameter updated in place before a backward op read it made ort-cpu's
        // losses part from the other engines' after a dozen steps.
        p.binding.clear_outputs();
        for name in &p.outputs {
            p.binding.bind_output_to_device(name, &p.memory).lib(self.id)?;
        }
        let mut out = p.session.run_binding(&p.binding).lib(self.id)?;
        p.outputs
            .iter()
            .map(|name| {
                let v = out.remove(name.as_str()).ok_or_else(|| BackendError::Library {
                    backend: self.id,
                    message: format!("ONNX Runtime returned no output {name}"),
                })?;
                Ok(OrtTensor(Arc::new(v.downcast::<DynTensorValueType>().lib(self.id)?)))
            })
            .collect()
    }

    fn sync(&self) -> BResult<()> {
        // Runs return after the device has finished (ONNX Runtime synchronizes the bound outputs).
        Ok(())
    }
}

/// ONNX Runtime's graph optimizations for `g`: all of them where it convolves, since the
/// layout ones (NCHWc) pay there (a Fashion-MNIST CNN's step took 51 ms with the basic level
/// against 39 with all); the basic level elsewhere, where the others found nothing to improve
/// (elementwise groups are fused already) and cost session time: the MLP's training step
/// compiled in 2.2 ms against 2.7, and ran as fast.
fn optimization_level(g: &Graph) -> GraphOptimizationLevel {
    let convolves = g.nodes().iter().any(|n| {
        matches!(
            n.op,
            Op::Conv2d { .. }
                | Op::Conv2dBackwardInput { .. }
                | Op::Conv2dBackwardWeight { .. }
                | Op::MaxPool2d { .. }
        )
    });
    if convolves {
        GraphOptimizationLevel::All
    } else {
        GraphOptimizationLevel::Level1
    }
}

fn shape_dtype(t: &OrtTensor) -> (Vec<usize>, DType) {
    let shape = t.0.shape().iter().map(|&d| d as usize).collect();
    let dtype = if *t.0.data_type() == ort::value::TensorElementType::Int64 {
        DType::I64
    } else {
        DType::F32
    };
    (shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use randbench_core::models::{Activation, CnnSpec, Model};
    use randbench_core::optim::Optimizer;
    use randbench_core::train::{training_step, Feed};

    #[test]
    fn only_graphs_that_convolve_get_the_layout_optimizations() {
        let step = |model: &Model| {
            training_step(model, &Optimizer::momentum(0.01, 0.9), 8, Feed::Batch, false)
                .unwrap()
                .graph
        };
        let mlp = Model::mlp([1, 8, 8], &[16], 10, Activation::Relu);
        let spec = CnnSpec { channels: vec![4], kernel: 3, hidden: 16 };
        let cnn = Model::Cnn { input: [1, 8, 8], spec, classes: 10 };
        assert_eq!(optimization_level(&step(&mlp)), GraphOptimizationLevel::Level1);
        assert_eq!(optimization_level(&step(&cnn)), GraphOptimizationLevel::All);
    }
}
