//! randbench-tch: the [`Backend`] on libtorch through the `tch` crate, on the CPU and CUDA.
//!
//! Graphs run op by op through the core's [`EagerProgram`], on libtorch's fused kernels where
//! an IR op has one (`addmm` for `Linear`, its cross-entropy). `Grad` nodes use libtorch's
//! autograd in [`GradMode::Native`], or the core's symbolic expansion in [`GradMode::Symbolic`].

use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode,
};
use randbench_core::eager::{EagerOps, EagerProgram};
use randbench_core::graph::{
    conv_transpose_output_padding, sum_to_axes, BinaryOp, CmpOp, Graph, Node, Op, UnaryOp,
};
use randbench_core::tensor::{DType, HostData, HostTensor};
/// The tch crate this backend is built on, for peers that use libtorch directly (the peer
/// benchmark's `tch::nn` idiom) with the same build.
pub use tch;
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

/// libtorch's errors as the backend's, classified by the core. libtorch appends the C++
/// stack ("Exception raised from ...") to its message; the message is what a user can act on.
trait OrLib<T> {
    fn lib(self, backend: BackendId) -> BResult<T>;
}

impl<T> OrLib<T> for Result<T, TchError> {
    fn lib(self, backend: BackendId) -> BResult<T> {
        self.map_err(|e| {
            let message = e.to_string();
            let message = message.split("\nException raised from").next().unwrap_or("");
            BackendError::library(backend, message.trim_end())
        })
    }
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

static OPENED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process has opened libtorch (set its threads, asked for CUDA): code that must
/// not, such as reading a suite, is tested with it.
pub fn opened() -> bool {
    OPENED.load(std::sync::atomic::Ordering::SeqCst)
}

impl TchBackend {
    /// A backend on `device`, computing on the CPU with `threads` threads (libtorch's intra-op
    /// pool, a setting of the whole process). Asking for a CUDA device that is not there is an
    /// error, never a silent run on the CPU.
    pub fn new(device: Device, mode: GradMode, threads: usize) -> BResult<Self> {
        OPENED.store(true, std::sync::atomic::Ordering::SeqCst);
        tch::set_num_threads(threads as i32);
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
                    return Err(BackendError::DeviceUnavailable { backend: id, reason });
                }
                tch::Device::Cuda(n)
            }
        };
        Ok(Self { device: dev, id, mode })
    }

    fn err(&self, what: &str) -> BackendError {
        BackendError::Library { backend: self.id, message: what.to_string() }
    }
}

fn f32_mask(id: BackendId, t: Tensor) -> BResult<TchTensor> {
    Ok(TchTensor(t.f_to_kind(Kind::Float).lib(id)?))
}

/// The input gradient of a convolution: a transposed convolution, with the output padding
/// that gives back the input's size (taking the larger for both sides and trimming).
fn conv_backward_input(
    id: BackendId,
    dy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: i64,
    padding: i64,
) -> BResult<Tensor> {
    let sizes = |t: &Tensor| t.size().iter().map(|&d| d as usize).collect::<Vec<_>>();
    let [pad_h, pad_w] = conv_transpose_output_padding(
        &sizes(dy),
        &sizes(w),
        x_shape,
        stride as usize,
        padding as usize,
    );
    let out_pad = pad_h.max(pad_w) as i64;
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
        .lib(id)?;
    dx.f_narrow(2, 0, x_shape[2] as i64).lib(id)?.f_narrow(3, 0, x_shape[3] as i64).lib(id)
}

/// The weight gradient: the transposed input convolved with the transposed output gradient,
/// dilated by the stride.
fn conv_backward_weight(
    id: BackendId,
    x: &Tensor,
    dy: &Tensor,
    w_shape: &[usize],
    stride: i64,
    padding: i64,
) -> BResult<Tensor> {
    let xt = x.f_transpose(0, 1).lib(id)?;
    let dyt = dy.f_transpose(0, 1).lib(id)?;
    let gw = xt
        .f_conv2d(&dyt, None::<Tensor>, [1, 1], [padding, padding], [stride, stride], 1)
        .lib(id)?
        .f_transpose(0, 1)
        .lib(id)?;
    gw.f_narrow(2, 0, w_shape[2] as i64).lib(id)?.f_narrow(3, 0, w_shape[3] as i64).lib(id)
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
                UnaryOp::Step => return f32_mask(self.id, a[0].f_gt(0.0).lib(self.id)?),
            }
            .lib(self.id)?,
            Op::Affine { mul, add } => match (*mul == 1.0, *add == 0.0) {
                (true, true) => a[0].shallow_clone(),
                (true, false) => a[0].f_add_scalar(*add).lib(self.id)?,
                // The product is a new buffer: the shift goes into it.
                (false, _) => {
                    let mut scaled = a[0].f_mul_scalar(*mul).lib(self.id)?;
                    if *add != 0.0 {
                        scaled = scaled.f_add_scalar_(*add).lib(self.id)?;
                    }
                    scaled
                }
            },
            Op::Clamp { min, max } => a[0].f_clamp(*min, *max).lib(self.id)?,
            Op::Binary(b) => match b {
                BinaryOp::Add => a[0].f_add(a[1]),
                BinaryOp::Sub => a[0].f_sub(a[1]),
                BinaryOp::Mul => a[0].f_mul(a[1]),
                BinaryOp::Div => a[0].f_div(a[1]),
            }
            .lib(self.id)?,
            Op::Compare(c) => {
                return f32_mask(
                    self.id,
                    match c {
                        CmpOp::Eq => a[0].f_eq_tensor(a[1]),
                        CmpOp::Ge => a[0].f_ge_tensor(a[1]),
                        CmpOp::Gt => a[0].f_gt_tensor(a[1]),
                    }
                    .lib(self.id)?,
                )
            }
            Op::MatMul { ta, tb } => {
                let l = if *ta { a[0].f_tr().lib(self.id)? } else { a[0].shallow_clone() };
                let r = if *tb { a[1].f_tr().lib(self.id)? } else { a[1].shallow_clone() };
                l.f_mm(&r).lib(self.id)?
            }
            Op::Linear => a[2].f_addmm(a[0], a[1]).lib(self.id)?,
            Op::Conv2d { stride, padding } => {
                let (s, p) = (*stride as i64, *padding as i64);
                a[0].f_conv2d(a[1], None::<Tensor>, [s, s], [p, p], [1, 1], 1).lib(self.id)?
            }
            Op::Conv2dBackwardInput { stride, padding } => {
                conv_backward_input(self.id, a[0], a[1], shape, *stride as i64, *padding as i64)?
            }
            Op::Conv2dBackwardWeight { stride, padding } => {
                conv_backward_weight(self.id, a[0], a[1], shape, *stride as i64, *padding as i64)?
            }
            Op::MaxPool2d { k } => {
                let k = *k as i64;
                a[0].f_max_pool2d([k, k], [k, k], [0, 0], [1, 1], false).lib(self.id)?
            }
            // Training mode: the batch's statistics. Without running statistics the momentum
            // is unused; cuDNN where libtorch may take it, as PyTorch's default.
            Op::BatchNorm { eps } => a[0]
                .f_batch_norm(Some(a[1]), Some(a[2]), None, None, true, 0.1, *eps, true)
                .lib(self.id)?,
            Op::Softmax => a[0].f_softmax(-1, Kind::Float).lib(self.id)?,
            Op::SoftmaxCrossEntropy => a[0]
                .f_cross_entropy_loss(a[1], None::<Tensor>, Reduction::None, -100, 0.0)
                .lib(self.id)?,
            // Ones scattered into zeros: libtorch's one_hot checks the labels' range first
            // (two reductions) and makes i64, then a copy to f32.
            Op::OneHot { .. } => {
                let mut hot = self.zeros(shape)?.0;
                hot.f_scatter_value_(1, &a[0].f_unsqueeze(1).lib(self.id)?, 1.0).lib(self.id)?
            }
            Op::CorrectPredictions => {
                return f32_mask(
                    self.id,
                    a[0].f_argmax(1, false).lib(self.id)?.f_eq_tensor(a[1]).lib(self.id)?,
                )
            }
            Op::Sum { axes, .. } => a[0]
                .f_sum_dim_intlist(dims(axes), false, Kind::Float)
                .lib(self.id)?
                .f_reshape(dims(shape))
                .lib(self.id)?,
            Op::BroadcastTo => a[0].f_expand(dims(shape), false).lib(self.id)?,
            Op::SumTo => {
                let from: Vec<usize> = a[0].size().iter().map(|&d| d as usize).collect();
                let axes: Vec<i64> = sum_to_axes(&from, shape).iter().map(|&i| i as i64).collect();
                a[0].f_sum_dim_intlist(axes, false, Kind::Float)
                    .lib(self.id)?
                    .f_reshape(dims(shape))
                    .lib(self.id)?
            }
            Op::Reshape => a[0].f_reshape(dims(shape)).lib(self.id)?,
            Op::Permute { perm } => a[0].f_permute(dims(perm)).lib(self.id)?,
            Op::Slice { axis, start, end } => {
                a[0].f_narrow(*axis as i64, *start as i64, (end - start) as i64).lib(self.id)?
            }
            Op::Pad { axis, before, after } => {
                // constant_pad_nd lists (before, after) pairs from the last axis backwards.
                let rank = shape.len();
                let mut pad = vec![0i64; 2 * (rank - axis)];
                let k = 2 * (rank - 1 - axis);
                pad[k] = *before as i64;
                pad[k + 1] = *after as i64;
                a[0].f_constant_pad_nd(pad).lib(self.id)?
            }
            Op::Concat { axis } => Tensor::f_cat(&a, *axis as i64).lib(self.id)?,
            Op::Gather => a[0].f_index_select(0, a[1]).lib(self.id)?,
            Op::Input { .. } | Op::Const(_) | Op::StopGradient | Op::Grad => {
                unreachable!("EagerProgram handles {:?} itself", node.op)
            }
        };
        Ok(TchTensor(t))
    }

    fn track(&self, t: &TchTensor) -> BResult<TchTensor> {
        Ok(TchTensor(t.0.f_detach().lib(self.id)?.set_requires_grad(true)))
    }

    fn detach(&self, t: &TchTensor) -> BResult<TchTensor> {
        Ok(TchTensor(t.0.f_detach().lib(self.id)?))
    }

    fn grads(&self, of: &TchTensor, wrt: &[&TchTensor]) -> BResult<Vec<Option<TchTensor>>> {
        if !of.0.requires_grad() {
            return Ok(vec![None; wrt.len()]);
        }
        let inputs: Vec<&Tensor> = wrt.iter().map(|t| &t.0).collect();
        // keep_graph: other groups of the same program may still walk shared parts.
        let grads = Tensor::f_run_backward(&[&of.0], &inputs, true, false).lib(self.id)?;
        Ok(grads.into_iter().map(|g| g.defined().then_some(TchTensor(g))).collect())
    }

    /// libtorch's in-place and `out=` forms write into the dead argument's buffer. Not where
    /// autograd records the op (`--grad native`'s forward pass): it refuses `out=` there.
    fn apply_into(&self, node: &Node, args: &[&TchTensor], into: usize) -> BResult<TchTensor> {
        if args.iter().any(|t| t.0.requires_grad()) {
            return self.apply(node, args);
        }
        let a: Vec<&Tensor> = args.iter().map(|t| &t.0).collect();
        let mut out = a[into].shallow_clone();
        let written = match &node.op {
            Op::Unary(u) => match u {
                UnaryOp::Neg => out.f_neg_(),
                UnaryOp::Relu => out.f_relu_(),
                UnaryOp::Sigmoid => out.f_sigmoid_(),
                UnaryOp::Tanh => out.f_tanh_(),
                UnaryOp::Exp => out.f_exp_(),
                UnaryOp::Log => out.f_log_(),
                UnaryOp::Sqrt => out.f_sqrt_(),
                UnaryOp::Abs => out.f_abs_(),
                UnaryOp::Sign => out.f_sign_(),
                UnaryOp::Square => out.f_square_(),
                UnaryOp::Step => return self.apply(node, args),
            },
            Op::Affine { mul, add } => {
                if *mul != 1.0 {
                    out = out.f_mul_scalar_(*mul).lib(self.id)?;
                }
                if *add == 0.0 {
                    return Ok(TchTensor(out));
                }
                out.f_add_scalar_(*add)
            }
            Op::Clamp { min, max } => out.f_clamp_(*min, *max),
            Op::Binary(b) => match b {
                BinaryOp::Add => a[0].f_add_out(&out, a[1]),
                BinaryOp::Sub => a[0].f_sub_out(&out, a[1]),
                BinaryOp::Mul => a[0].f_mul_out(&out, a[1]),
                BinaryOp::Div => a[0].f_div_out(&out, a[1]),
            },
            _ => return self.apply(node, args),
        };
        Ok(TchTensor(written.lib(self.id)?))
    }

    /// One pass, with no temporary: `addcmul` by a zero-dimensional tensor, which libtorch
    /// takes as a scalar on any device.
    fn scaled_add(&self, a: &TchTensor, x: &TchTensor, alpha: f64) -> BResult<TchTensor> {
        let alpha = Tensor::f_scalar_tensor(alpha, (Kind::Float, tch::Device::Cpu)).lib(self.id)?;
        Ok(TchTensor(a.0.f_addcmul(&x.0, &alpha).lib(self.id)?))
    }

    /// libtorch's own ReLU backward: one pass, where a mask and a product took two and a
    /// temporary (60 + 10 µs against 18 for the MLP's [128, 512] on two cores). Where x is
    /// NaN it passes g on (the mask would zero it); the loss is NaN by then, and the run's
    /// divergence guard stops it.
    fn gate_by_step(&self, g: &TchTensor, x: &TchTensor) -> BResult<TchTensor> {
        Ok(TchTensor(x.0.f_threshold_backward(&g.0, 0.0).lib(self.id)?))
    }

    fn zeros(&self, shape: &[usize]) -> BResult<TchTensor> {
        Ok(TchTensor(Tensor::f_zeros(dims(shape), (Kind::Float, self.device)).lib(self.id)?))
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
            HostData::F32(v) => Tensor::f_from_slice(v).lib(self.id)?,
            HostData::I64(v) => Tensor::f_from_slice(v).lib(self.id)?,
        };
        let shaped = host.f_reshape(dims(t.shape())).lib(self.id)?;
        Ok(TchTensor(if self.device == tch::Device::Cpu {
            shaped
        } else {
            shaped.f_to(self.device).lib(self.id)?
        }))
    }

    fn download(&self, t: &TchTensor) -> BResult<HostTensor> {
        let shape: Vec<usize> = t.0.size().iter().map(|&d| d as usize).collect();
        let flat =
            t.0.f_to(tch::Device::Cpu)
                .lib(self.id)?
                .f_reshape([-1])
                .lib(self.id)?
                .f_contiguous()
                .lib(self.id)?;
        let n = flat.numel();
        let data = if t.0.kind() == Kind::Int64 {
            let mut v = vec![0i64; n];
            flat.f_copy_data(&mut v, n).lib(self.id)?;
            HostData::I64(v)
        } else {
            let f = flat.f_to_kind(Kind::Float).lib(self.id)?;
            let mut v = vec![0f32; n];
            f.f_copy_data(&mut v, n).lib(self.id)?;
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
}
