//! The `Backend` trait: what every engine (candle, libtorch, ONNX Runtime, burn) provides.

use crate::graph::{Graph, GraphError};
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The engines randbench knows, whether or not this binary was built with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Candle,
    Tch,
    Ort,
    Burn,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Candle, Engine::Tch, Engine::Ort, Engine::Burn];
    pub fn name(self) -> &'static str {
        match self {
            Engine::Candle => "candle",
            Engine::Tch => "tch",
            Engine::Ort => "ort",
            Engine::Burn => "burn",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// An engine on a device, written `candle-cpu`, `tch-cuda:0`, `ort-cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub engine: Engine,
    pub device: Device,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.engine.name(), self.device)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unknown backend '{given}': write ENGINE-DEVICE with ENGINE one of candle, tch, ort, burn and DEVICE cpu or cuda:N (for example candle-cpu, tch-cuda:0)")]
pub struct ParseBackendError {
    pub given: String,
}

impl FromStr for BackendId {
    type Err = ParseBackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseBackendError { given: s.to_string() };
        let (engine, device) = s.trim().split_once('-').ok_or_else(err)?;
        let engine = Engine::ALL.into_iter().find(|e| e.name() == engine).ok_or_else(err)?;
        let device = match device {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            d => {
                let n = d.strip_prefix("cuda:").ok_or_else(err)?;
                Device::Cuda(n.parse().map_err(|_| err())?)
            }
        };
        Ok(BackendId { engine, device })
    }
}

impl Serialize for BackendId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BackendId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a backend evaluates `Grad` nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradMode {
    /// The engine's own autograd (candle, libtorch). ONNX Runtime has none and always expands.
    Native,
    /// The core's symbolic expansion into ordinary ops.
    Symbolic,
}

/// What a backend says about itself; recorded with every result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Library and version, e.g. "candle 0.11.1".
    pub library: String,
    /// The device actually used, e.g. "cpu" or "NVIDIA H200".
    pub device_name: String,
    /// Threads the library computes with on the CPU.
    pub threads: usize,
    /// Anything else worth recording (execution providers, build flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend} does not support {what}")]
    Unsupported { backend: BackendId, what: String },
    #[error("{backend}: the device is not available: {reason}")]
    DeviceUnavailable { backend: BackendId, reason: String },
    #[error("{backend}: out of memory: {message}")]
    OutOfMemory { backend: BackendId, message: String },
    #[error("{backend}: {message}")]
    Library { backend: BackendId, message: String },
    #[error("program input {index} ({name}): {detail}")]
    Input { index: usize, name: String, detail: String },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// How the engines and the CUDA stack say that an allocation failed: candle and libtorch
/// ("CUDA out of memory", "DefaultCPUAllocator: can't allocate memory"), ONNX Runtime
/// ("Failed to allocate memory"), the CUDA driver (`CUDA_ERROR_OUT_OF_MEMORY`) and Rust's
/// allocator ("memory allocation of N bytes failed", printed before it aborts).
const OUT_OF_MEMORY_PHRASES: [&str; 6] = [
    "out of memory",
    "OUT_OF_MEMORY",
    "can't allocate memory",
    "Failed to allocate",
    "failed to allocate",
    "memory allocation of",
];

/// Whether an engine's or a process's error text reports a failed allocation.
pub fn reports_out_of_memory(message: &str) -> bool {
    OUT_OF_MEMORY_PHRASES.iter().any(|p| message.contains(p))
}

impl BackendError {
    /// An error from an engine's library: [`BackendError::OutOfMemory`] where its text reports
    /// a failed allocation, else [`BackendError::Library`]. Every adapter classifies here.
    pub fn library(backend: BackendId, message: impl Into<String>) -> Self {
        let message = message.into();
        if reports_out_of_memory(&message) {
            BackendError::OutOfMemory { backend, message }
        } else {
            BackendError::Library { backend, message }
        }
    }
}

pub type BResult<T> = Result<T, BackendError>;

/// An engine on one device that compiles and runs graphs.
///
/// Tensors live on the backend's device; parameters and optimizer state stay there between
/// runs. Timing brackets `run` with `sync`. Set-up (`compile`, `upload`) is never timed.
pub trait Backend {
    type Tensor: Clone;
    type Program;

    fn id(&self) -> BackendId;
    fn info(&self) -> BackendInfo;
    fn upload(&self, t: &HostTensor) -> BResult<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> BResult<HostTensor>;
    /// Compiles a graph; `Grad` nodes are computed as the backend's [`GradMode`] says.
    fn compile(&self, g: &Graph) -> BResult<Self::Program>;
    /// Runs a program: one tensor per graph input, in order; one result per graph output.
    fn run(&self, p: &mut Self::Program, inputs: &[&Self::Tensor]) -> BResult<Vec<Self::Tensor>>;
    /// Waits until the device has finished all queued work.
    fn sync(&self) -> BResult<()>;
}

/// Checks that `inputs` fit a graph's inputs by count, shape and dtype.
pub fn check_inputs<'a>(
    g: &Graph,
    shapes: impl ExactSizeIterator<Item = (&'a [usize], crate::DType)>,
) -> BResult<()> {
    if shapes.len() != g.inputs().len() {
        return Err(BackendError::Input {
            index: shapes.len(),
            name: String::new(),
            detail: format!(
                "the program takes {} inputs, {} were given",
                g.inputs().len(),
                shapes.len()
            ),
        });
    }
    for (index, ((shape, dtype), &id)) in shapes.zip(g.inputs()).enumerate() {
        if shape != g.shape(id) || dtype != g.dtype(id) {
            return Err(BackendError::Input {
                index,
                name: g.input_name(id).to_string(),
                detail: format!(
                    "expected {}{:?}, given {}{:?}",
                    g.dtype(id),
                    g.shape(id),
                    dtype,
                    shape
                ),
            });
        }
    }
    Ok(())
}
