//! randbench-core: the graph IR, symbolic autodiff, optimizers as graphs, the `Backend` trait,
//! host tensors, seeded randomness, datasets and statistics. No native dependencies.

pub mod autodiff;
pub mod backend;
pub mod corrupt;
pub mod data;
pub mod eager;
pub mod fewshot;
pub mod fusion;
pub mod graph;
pub mod l2l;
pub mod models;
pub mod omniglot;
pub mod optim;
pub mod reference;
pub mod rng;
pub mod stats;
pub mod tensor;
pub mod testing;
pub mod train;
pub mod units;

pub use backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode,
};
pub use graph::{Graph, GraphError, NodeId, Op};
pub use tensor::{DType, HostData, HostTensor};
