//! randbench-tch: the [`Backend`] on libtorch through the `tch` crate, on the CPU and CUDA.
//!
//! Graphs run op by op through the core's [`EagerProgram`], on libtorch's fused kernels where
//! an IR op has one (`addmm` for `Linear`, its cross-entropy). `Grad` nodes use libtorch's
//! autograd in [`GradMode::Native`], or the core's symbolic expansion in [`GradMode::Symbolic`].

use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode, MemoryStats,
};
use randbench_core::eager::{EagerOps, EagerProgram};
use randbench_core::graph::{BinaryOp, CmpOp, Graph, Node, Op, UnaryOp};
use randbench_core::tensor::{DType, HostData, HostTensor};
use tch::{Kind, Reduction, TchError, Tensor};

/// The PyTorch release tch 0.24 binds; the project environment installs exactly this one.
pub const TORCH_VERSION: &str = "2.11.0";

/// A libtorch tensor; clones share storage (tch's `shallow_clone`).
pub struct TchTensor(pub Tensor);

impl Clone for TchTensor {
    fn clone(&self) -> Self {
        TchTensor(self.0.shallow_clone())
    }
}

pub struct TchBackend {
    device: tch::Device,
    id: BackendId,
    mode: GradMode,
}

fn lib_err(e: TchError) -> BackendError {
    let message = e.to_string();
    if message.contains("out of memory") {
        BackendError::OutOfMemory {
            backend: "tch".into(),
            message: message.lines().next().unwrap_or("").to_string(),
        }
    } else {
        BackendError::Library { backend: "tch".into(), message }
    }
}

trait OrLib<T> {
    fn lib(self) -> BResult<T>;
}

impl<T> OrLib<T> for Result<T, TchError> {
    fn lib(self) -> BResult<T> {
        self.map_err(lib_err)
    }
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

impl TchBackend {
    /// A backend on `device`. Asking for a CUDA device that is not there is an error, never
    /// a silent run on the CPU.
    pub fn new(device: Device, mode: GradMode) -> BResult<Self> {
        let id = BackendId { engine: Engine::Tch, device };
        let dev = match device {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(n) => {
                let count = tch::Cuda::device_count();
                if (n as i64) >= count {
                    let reason = if count == 0 {
                        "libtorch sees no CUDA device (no GPU or driver, or libtorch_cuda was not linked)".to_string()
                    } else {
                        format!("libtorch sees {count} CUDA device(s), numbered from 0")
                    };
                    return Err(BackendError::DeviceUnavailable {
                        backend: "tch".into(),
                        device: format!("cuda:{n}"),
                        reason,
                    });
                }
                tch::Device::Cuda(n)
            }
        };
        Ok(Self { device: dev, id, mode })
    }

    fn err(&self, what: &str) -> BackendError {
        BackendError::Library { backend: "tch".into(), message: what.to_string() }
    }
}

fn f32_mask(t: Tensor) -> BResult<TchTensor> {
    Ok(TchTensor(t.f_to_kind(Kind::Float).lib()?))
}

/// The input gradient of a convolution: a transposed convolution, with the output padding
/// that gives back the input's size (taking the larger for both sides and trimming).
fn conv_backward_input(
    dy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: i64,
    padding: i64,
) -> BResult<Tensor> {
    let size = |i: i64, k: i64| (i - 1) * stride + k - 2 * padding;
    let (dys, ws) = (dy.size(), w.size());
    let pad_h = x_shape[2] as i64 - size(dys[2], ws[2]);
    let pad_w = x_shape[3] as i64 - size(dys[3], ws[3]);
    let out_pad = pad_h.max(pad_w).max(0);
    let dx = dy
        .f_conv_transpose2d(
            w,
            None::<Tensor>,
            [stride, stride],
            [padding, padding],
            [out_pad, out_pad],
            1,
            [1, 1],
        )
        .lib()?;
    dx.f_narrow(2, 0, x_shape[2] as i64).lib()?.f_narrow(3, 0, x_shape[3] as i64).lib()
}

/// The weight gradient: the transposed input convolved with the transposed output gradient,
/// dilated by the stride.
fn conv_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    w_shape: &[usize],
    stride: i64,
    padding: i64,
) -> BResult<Tensor> {
    let xt = x.f_transpose(0, 1).lib()?;
    let dyt = dy.f_transpose(0, 1).lib()?;
    let gw = xt
        .f_conv2d(&dyt, None::<Tensor>, [1, 1], [padding, padding], [stride, stride], 1)
        .lib()?
        .f_transpose(0, 1)
        .lib()?;
    gw.f_narrow(2, 0, w_shape[2] as i64).lib()?.f_narrow(3, 0, w_shape[3] as i64).lib()
}

impl EagerOps for TchBackend {
    type T = TchTensor;

    fn constant(&self, t: &HostTensor) -> BResult<TchTensor> {
        self.upload(t)
    }

    fn apply(&self, node: &Node, args: &[&TchTensor]) -> BResult<TchTensor> {
        let a: Vec<&Tensor> = args.iter().map(|t| &t.0).collect();
        let shape = node.shape.as_slice();
        let t = match &node.op {
            Op::Unary(u) => match u {
                UnaryOp::Neg => a[0].f_neg(),
                UnaryOp::Relu => a[0].f_relu(),
                UnaryOp::Sigmoid => a[0].f_sigmoid(),
                UnaryOp::Tanh => a[0].f_tanh(),
                UnaryOp::Exp => a[0].f_exp(),
                UnaryOp::Log => a[0].f_log(),
                UnaryOp::Sqrt => a[0].f_sqrt(),
                UnaryOp::Abs => a[0].f_abs(),
                UnaryOp::Sign => a[0].f_sign(),
                UnaryOp::Square => a[0].f_square(),
                UnaryOp::Step => return f32_mask(a[0].f_gt(0.0).lib()?),
            }
            .lib()?,
            Op::Affine { mul, add } => {
                let scaled = if *mul == 1.0 {
                    a[0].shallow_clone()
                } else {
                    a[0].f_mul_scalar(*mul).lib()?
                };
                if *add == 0.0 {
                    scaled
                } else {
                    scaled.f_add_scalar(*add).lib()?
                }
            }
            Op::Clamp { min, max } => a[0].f_clamp(*min, *max).lib()?,
            Op::Binary(b) => match b {
                BinaryOp::Add => a[0].f_add(a[1]),
                BinaryOp::Sub => a[0].f_sub(a[1]),
                BinaryOp::Mul => a[0].f_mul(a[1]),
                BinaryOp::Div => a[0].f_div(a[1]),
            }
            .lib()?,
            Op::Compare(c) => {
                return f32_mask(
                    match c {
                        CmpOp::Eq => a[0].f_eq_tensor(a[1]),
                        CmpOp::Ge => a[0].f_ge_tensor(a[1]),
                        CmpOp::Gt => a[0].f_gt_tensor(a[1]),
                    }
                    .lib()?,
                )
            }
            Op::MatMul { ta, tb } => {
                let l = if *ta { a[0].f_tr().lib()? } else { a[0].shallow_clone() };
                let r = if *tb { a[1].f_tr().lib()? } else { a[1].shallow_clone() };
                l.f_mm(&r).lib()?
            }
            Op::Linear => a[2].f_addmm(a[0], a[1]).lib()?,
            Op::Conv2d { stride, padding } => {
                let (s, p) = (*stride as i64, *padding as i64);
                a[0].f_conv2d(a[1], None::<Tensor>, [s, s], [p, p], [1, 1], 1).lib()?
            }
            Op::Conv2dBackwardInput { stride, padding } => {
                conv_backward_input(a[0], a[1], shape, *stride as i64, *padding as i64)?
            }
            Op::Conv2dBackwardWeight { stride, padding } => {
                conv_backward_weight(a[0], a[1], shape, *stride as i64, *padding as i64)?
            }
            Op::MaxPool2d { k } => {
                let k = *k as i64;
                a[0].f_max_pool2d([k, k], [k, k], [0, 0], [1, 1], false).lib()?
            }
            Op::Softmax => a[0].f_softmax(-1, Kind::Float).lib()?,
            Op::SoftmaxCrossEntropy => {
                a[0].f_cross_entropy_loss(a[1], None::<Tensor>, Reduction::None, -100, 0.0).lib()?
            }
            Op::OneHot { classes } => return f32_mask(a[0].f_one_hot(*classes as i64).lib()?),
            Op::CorrectPredictions => {
                return f32_mask(a[0].f_argmax(1, false).lib()?.f_eq_tensor(a[1]).lib()?)
            }
            Op::Sum { axes, .. } => a[0]
                .f_sum_dim_intlist(dims(axes), false, Kind::Float)
                .lib()?
                .f_reshape(dims(shape))
                .lib()?,
            Op::BroadcastTo => a[0].f_expand(dims(shape), false).lib()?,
            Op::SumTo => {
                let from = a[0].size();
                let off = from.len() - shape.len();
                let axes: Vec<i64> = (0..from.len())
                    .filter(|&i| i < off || (shape[i - off] == 1 && from[i] != 1))
                    .map(|i| i as i64)
                    .collect();
                a[0].f_sum_dim_intlist(axes, false, Kind::Float)
                    .lib()?
                    .f_reshape(dims(shape))
                    .lib()?
            }
            Op::Reshape => a[0].f_reshape(dims(shape)).lib()?,
            Op::Permute { perm } => a[0].f_permute(dims(perm)).lib()?,
            Op::Slice { axis, start, end } => {
                a[0].f_narrow(*axis as i64, *start as i64, (end - start) as i64).lib()?
            }
            Op::Pad { axis, before, after } => {
                // constant_pad_nd lists (before, after) pairs from the last axis backwards.
                let rank = shape.len();
                let mut pad = vec![0i64; 2 * (rank - axis)];
                let k = 2 * (rank - 1 - axis);
                pad[k] = *before as i64;
                pad[k + 1] = *after as i64;
                a[0].f_constant_pad_nd(pad).lib()?
            }
            Op::Concat { axis } => Tensor::f_cat(&a, *axis as i64).lib()?,
            Op::Gather => a[0].f_index_select(0, a[1]).lib()?,
            Op::Input { .. } | Op::Const(_) | Op::StopGradient | Op::Grad => {
                unreachable!("EagerProgram handles {:?} itself", node.op)
            }
        };
        Ok(TchTensor(t))
    }

    fn track(&self, t: &TchTensor) -> BResult<TchTensor> {
        Ok(TchTensor(t.0.f_detach().lib()?.set_requires_grad(true)))
    }

    fn detach(&self, t: &TchTensor) -> BResult<TchTensor> {
        Ok(TchTensor(t.0.f_detach().lib()?))
    }

    fn grads(&self, of: &TchTensor, wrt: &[&TchTensor]) -> BResult<Vec<Option<TchTensor>>> {
        if !of.0.requires_grad() {
            return Ok(vec![None; wrt.len()]);
        }
        let inputs: Vec<&Tensor> = wrt.iter().map(|t| &t.0).collect();
        // keep_graph: other groups of the same program may still walk shared parts.
        let grads = Tensor::f_run_backward(&[&of.0], &inputs, true, false).lib()?;
        Ok(grads.into_iter().map(|g| g.defined().then_some(TchTensor(g))).collect())
    }

    fn zeros(&self, shape: &[usize]) -> BResult<TchTensor> {
        Ok(TchTensor(Tensor::f_zeros(dims(shape), (Kind::Float, self.device)).lib()?))
    }

    fn shape_dtype(&self, t: &TchTensor) -> (Vec<usize>, DType) {
        let shape = t.0.size().iter().map(|&d| d as usize).collect();
        let dtype = if t.0.kind() == Kind::Int64 { DType::I64 } else { DType::F32 };
        (shape, dtype)
    }
}

impl Backend for TchBackend {
    type Tensor = TchTensor;
    type Program = EagerProgram<TchTensor>;

    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            library: format!("libtorch {TORCH_VERSION} (tch 0.24)"),
            device_name: self.id.device.to_string(),
            threads: tch::get_num_threads().max(0) as usize,
            extra: vec![
                ("grad".into(), format!("{:?}", self.mode).to_lowercase()),
                ("cuda_devices".into(), tch::Cuda::device_count().to_string()),
            ],
        }
    }

    fn upload(&self, t: &HostTensor) -> BResult<TchTensor> {
        let host = match t.data() {
            HostData::F32(v) => Tensor::f_from_slice(v).lib()?,
            HostData::I64(v) => Tensor::f_from_slice(v).lib()?,
        };
        let shaped = host.f_reshape(dims(t.shape())).lib()?;
        Ok(TchTensor(if self.device == tch::Device::Cpu {
            shaped
        } else {
            shaped.f_to(self.device).lib()?
        }))
    }

    fn download(&self, t: &TchTensor) -> BResult<HostTensor> {
        let shape: Vec<usize> = t.0.size().iter().map(|&d| d as usize).collect();
        let flat = t.0.f_to(tch::Device::Cpu).lib()?.f_reshape([-1]).lib()?.f_contiguous().lib()?;
        let n = flat.numel();
        let data = if t.0.kind() == Kind::Int64 {
            let mut v = vec![0i64; n];
            flat.f_copy_data(&mut v, n).lib()?;
            HostData::I64(v)
        } else {
            let f = flat.f_to_kind(Kind::Float).lib()?;
            let mut v = vec![0f32; n];
            f.f_copy_data(&mut v, n).lib()?;
            HostData::F32(v)
        };
        HostTensor::new(shape, data).map_err(|e| self.err(&e.to_string()))
    }

    fn compile(&self, g: &Graph) -> BResult<Self::Program> {
        EagerProgram::compile(g, self.mode)
    }

    fn run(&self, p: &mut Self::Program, inputs: &[&TchTensor]) -> BResult<Vec<TchTensor>> {
        p.run(self, inputs)
    }

    fn sync(&self) -> BResult<()> {
        if let tch::Device::Cuda(n) = self.device {
            tch::Cuda::synchronize(n as i64);
        }
        Ok(())
    }

    fn memory(&self) -> MemoryStats {
        // tch exposes no allocator statistics; the harness records the process's peak instead.
        MemoryStats::default()
    }
}
