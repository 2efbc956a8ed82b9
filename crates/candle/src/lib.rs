//! randbench-candle: the [`Backend`] on candle, CPU by default, CUDA behind the `cuda` feature.
//!
//! Graphs run op by op through the core's [`EagerProgram`]; `Grad` nodes use candle's own
//! autograd (`Var`, `backward`) in [`GradMode::Native`], or the core's symbolic expansion in
//! [`GradMode::Symbolic`].

use candle_core::{DType as CDType, Tensor, Var, D};
use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode,
};
use randbench_core::eager::{EagerOps, EagerProgram};
use randbench_core::graph::{
    batch_norm_axes, conv_transpose_output_padding, per_channel_shape, sum_to_axes, BinaryOp,
    CmpOp, Graph, Node, Op, UnaryOp,
};
use randbench_core::tensor::{DType, HostData, HostTensor};

pub const CANDLE_VERSION: &str = "0.11.1";

pub struct CandleBackend {
    device: candle_core::Device,
    id: BackendId,
    mode: GradMode,
}

/// candle's errors as the backend's, classified by the core.
trait OrLib<T> {
    fn lib(self, backend: BackendId) -> BResult<T>;
}

impl<T> OrLib<T> for candle_core::Result<T> {
    fn lib(self, backend: BackendId) -> BResult<T> {
        self.map_err(|e| BackendError::library(backend, e.to_string()))
    }
}

impl CandleBackend {
    /// A backend on `device`. CUDA needs a binary built with the `cuda` feature and a GPU;
    /// without either this is an error, never a silent fall back to the CPU.
    pub fn new(device: Device, mode: GradMode) -> BResult<Self> {
        let id = BackendId { engine: Engine::Candle, device };
        let device = match device {
            Device::Cpu => candle_core::Device::Cpu,
            Device::Cuda(n) => Self::cuda(id, n)?,
        };
        Ok(Self { device, id, mode })
    }

    #[cfg(feature = "cuda")]
    fn cuda(id: BackendId, n: usize) -> BResult<candle_core::Device> {
        candle_core::Device::new_cuda(n)
            .map_err(|e| BackendError::DeviceUnavailable { backend: id, reason: e.to_string() })
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(id: BackendId, _: usize) -> BResult<candle_core::Device> {
        Err(BackendError::DeviceUnavailable {
            backend: id,
            reason: "this binary was built without CUDA support for candle; rebuild with `--features cuda`".into(),
        })
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    fn conv_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> BResult<Tensor> {
        // One output_padding serves both sides: take the larger and trim the other side.
        let [pad_h, pad_w] =
            conv_transpose_output_padding(dy.dims(), w.dims(), x_shape, stride, padding);
        let out_pad = pad_h.max(pad_w);
        let dx = dy.conv_transpose2d(w, padding, out_pad, stride, 1).lib(self.id)?;
        dx.narrow(2, 0, x_shape[2]).lib(self.id)?.narrow(3, 0, x_shape[3]).lib(self.id)
    }

    fn conv_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> BResult<Tensor> {
        // As candle's own Conv2D backward: a convolution of the transposed input by the
        // transposed output gradient, dilated by the stride.
        let gw = x
            .transpose(0, 1)
            .lib(self.id)?
            .conv2d(&dy.transpose(0, 1).lib(self.id)?, padding, 1, stride, 1)
            .lib(self.id)?
            .transpose(0, 1)
            .lib(self.id)?;
        gw.narrow(2, 0, w_shape[2]).lib(self.id)?.narrow(3, 0, w_shape[3]).lib(self.id)
    }

    /// Batch normalization with the batch's statistics, composed of candle's ops, which its
    /// autograd differentiates.
    fn batch_norm(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> BResult<Tensor> {
        let axes = batch_norm_axes(x.rank());
        let channel = per_channel_shape(x.dims());
        let mean = x.mean_keepdim(axes.as_slice()).lib(self.id)?;
        let centered = x.broadcast_sub(&mean).lib(self.id)?;
        let var = centered.sqr().lib(self.id)?.mean_keepdim(axes.as_slice()).lib(self.id)?;
        let s = var.affine(1.0, eps).lib(self.id)?.sqrt().lib(self.id)?;
        // γ/s per channel first: one pass over x fewer than dividing x by s.
        let scale = gamma.reshape(channel.as_slice()).lib(self.id)?.div(&s).lib(self.id)?;
        let beta = beta.reshape(channel.as_slice()).lib(self.id)?;
        centered.broadcast_mul(&scale).lib(self.id)?.broadcast_add(&beta).lib(self.id)
    }
}

fn to_core_dtype(d: CDType) -> DType {
    match d {
        CDType::I64 | CDType::U32 | CDType::U8 => DType::I64,
        _ => DType::F32,
    }
}

fn mask(id: BackendId, t: Tensor) -> BResult<Tensor> {
    t.to_dtype(CDType::F32).lib(id)
}

impl EagerOps for CandleBackend {
    type T = Tensor;

    fn constant(&self, t: &HostTensor) -> BResult<Tensor> {
        self.upload(t)
    }

    fn apply(&self, node: &Node, a: &[&Tensor]) -> BResult<Tensor> {
        let shape = node.shape.as_slice();
        Ok(match &node.op {
            Op::Unary(u) => match u {
                UnaryOp::Neg => a[0].neg(),
                UnaryOp::Relu => a[0].relu(),
                UnaryOp::Sigmoid => candle_nn::ops::sigmoid(a[0]),
                UnaryOp::Tanh => a[0].tanh(),
                UnaryOp::Exp => a[0].exp(),
                UnaryOp::Log => a[0].log(),
                UnaryOp::Sqrt => a[0].sqrt(),
                UnaryOp::Abs => a[0].abs(),
                UnaryOp::Sign => a[0].sign(),
                UnaryOp::Square => a[0].sqr(),
                UnaryOp::Step => return mask(self.id, a[0].gt(0f64).lib(self.id)?),
            }
            .lib(self.id)?,
            Op::Affine { mul, add } => a[0].affine(*mul, *add).lib(self.id)?,
            Op::Clamp { min, max } => a[0].clamp(*min, *max).lib(self.id)?,
            Op::Binary(b) => match b {
                BinaryOp::Add => a[0].add(a[1]),
                BinaryOp::Sub => a[0].sub(a[1]),
                BinaryOp::Mul => a[0].mul(a[1]),
                BinaryOp::Div => a[0].div(a[1]),
            }
            .lib(self.id)?,
            Op::Compare(c) => mask(
                self.id,
                match c {
                    CmpOp::Eq => a[0].eq(a[1]),
                    CmpOp::Ge => a[0].ge(a[1]),
                    CmpOp::Gt => a[0].gt(a[1]),
                }
                .lib(self.id)?,
            )?,
            Op::MatMul { ta, tb } => {
                let l = if *ta { a[0].t().lib(self.id)? } else { a[0].clone() };
                let r = if *tb { a[1].t().lib(self.id)? } else { a[1].clone() };
                l.matmul(&r).lib(self.id)?
            }
            Op::Linear => a[0].matmul(a[1]).lib(self.id)?.broadcast_add(a[2]).lib(self.id)?,
            Op::Conv2d { stride, padding } => {
                a[0].conv2d(a[1], *padding, *stride, 1, 1).lib(self.id)?
            }
            Op::Conv2dBackwardInput { stride, padding } => {
                self.conv_backward_input(a[0], a[1], shape, *stride, *padding)?
            }
            Op::Conv2dBackwardWeight { stride, padding } => {
                self.conv_backward_weight(a[0], a[1], shape, *stride, *padding)?
            }
            Op::MaxPool2d { k } => {
                if a[0].track_op() {
                    // candle 0.11's own max_pool2d backward scales the gradient by 1/k² (it
                    // multiplies by the window's average of the max mask), and a max over
                    // window axes passes it to every tied input. The window sum of x times a
                    // constant one-hot of the first maximum (argmax keeps the first) is the
                    // maximum, and its gradient goes to that one input, as in PyTorch.
                    let (n, c, h, w) = a[0].dims4().lib(self.id)?;
                    let (hh, ww) = (h / k, w / k);
                    let windows = a[0]
                        .reshape((n, c, hh, *k, ww, *k))
                        .lib(self.id)?
                        .permute((0, 1, 2, 4, 3, 5))
                        .lib(self.id)?
                        .reshape((n, c, hh, ww, k * k))
                        .lib(self.id)?;
                    let first = windows.detach().argmax_keepdim(4).lib(self.id)?;
                    let positions =
                        Tensor::arange(0u32, (k * k) as u32, &self.device).lib(self.id)?;
                    let one_hot = mask(self.id, first.broadcast_eq(&positions).lib(self.id)?)?;
                    (windows * one_hot)
                        .lib(self.id)?
                        .sum(4)
                        .lib(self.id)?
                        .reshape(shape)
                        .lib(self.id)?
                } else {
                    a[0].max_pool2d(*k).lib(self.id)?
                }
            }
            Op::BatchNorm { eps } => self.batch_norm(a[0], a[1], a[2], *eps)?,
            Op::Softmax => {
                // The fused kernel has no backward; tracked values take the composite path.
                if a[0].track_op() {
                    candle_nn::ops::softmax(a[0], D::Minus1).lib(self.id)?
                } else {
                    candle_nn::ops::softmax_last_dim(&a[0].contiguous().lib(self.id)?)
                        .lib(self.id)?
                }
            }
            Op::SoftmaxCrossEntropy => {
                let logp = candle_nn::ops::log_softmax(a[0], D::Minus1).lib(self.id)?;
                logp.gather(&a[1].unsqueeze(1).lib(self.id)?, 1)
                    .lib(self.id)?
                    .squeeze(1)
                    .lib(self.id)?
                    .neg()
                    .lib(self.id)?
            }
            Op::OneHot { classes } => {
                let range = Tensor::arange(0i64, *classes as i64, &self.device)
                    .lib(self.id)?
                    .unsqueeze(0)
                    .lib(self.id)?;
                mask(self.id, a[0].unsqueeze(1).lib(self.id)?.broadcast_eq(&range).lib(self.id)?)?
            }
            Op::CorrectPredictions => {
                let pred = a[0].argmax(1).lib(self.id)?.to_dtype(CDType::I64).lib(self.id)?;
                mask(self.id, pred.eq(a[1]).lib(self.id)?)?
            }
            Op::Sum { axes, .. } => {
                a[0].sum_keepdim(axes.as_slice()).lib(self.id)?.reshape(shape).lib(self.id)?
            }
            Op::BroadcastTo => a[0].broadcast_as(shape).lib(self.id)?,
            Op::SumTo => {
                let axes = sum_to_axes(a[0].dims(), shape);
                a[0].sum_keepdim(axes.as_slice()).lib(self.id)?.reshape(shape).lib(self.id)?
            }
            Op::Reshape => a[0].reshape(shape).lib(self.id)?,
            Op::Permute { perm } => a[0].permute(perm.as_slice()).lib(self.id)?,
            Op::Slice { axis, start, end } => {
                a[0].narrow(*axis, *start, end - start).lib(self.id)?
            }
            Op::Pad { axis, before, after } => {
                a[0].pad_with_zeros(*axis, *before, *after).lib(self.id)?
            }
            Op::Concat { axis } => Tensor::cat(a, *axis).lib(self.id)?,
            Op::Gather => a[0].index_select(a[1], 0).lib(self.id)?,
            Op::Input { .. } | Op::Const(_) | Op::StopGradient | Op::Grad => {
                unreachable!("EagerProgram handles {:?} itself", node.op)
            }
        })
    }

    fn track(&self, t: &Tensor) -> BResult<Tensor> {
        Ok(Var::from_tensor(t).lib(self.id)?.into_inner())
    }

    fn detach(&self, t: &Tensor) -> BResult<Tensor> {
        Ok(t.detach())
    }

    fn grads(&self, of: &Tensor, wrt: &[&Tensor]) -> BResult<Vec<Option<Tensor>>> {
        let store = of.backward().lib(self.id)?;
        Ok(wrt.iter().map(|w| store.get(w).cloned()).collect())
    }

    fn zeros(&self, shape: &[usize]) -> BResult<Tensor> {
        Tensor::zeros(shape, CDType::F32, &self.device).lib(self.id)
    }

    fn shape_dtype(&self, t: &Tensor) -> (Vec<usize>, DType) {
        (t.dims().to_vec(), to_core_dtype(t.dtype()))
    }
}

impl Backend for CandleBackend {
    type Tensor = Tensor;
    type Program = EagerProgram<Tensor>;

    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            library: format!("candle {CANDLE_VERSION}"),
            device_name: self.id.device.to_string(),
            threads: candle_core::utils::get_num_threads(),
            extra: vec![
                ("grad".into(), format!("{:?}", self.mode).to_lowercase()),
                // How long its elementwise pool spins after an op (randbench sets it short).
                (
                    "spin_limit".into(),
                    std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT")
                        .unwrap_or_else(|_| "candle's default".into()),
                ),
            ],
        }
    }

    fn upload(&self, t: &HostTensor) -> BResult<Tensor> {
        match t.data() {
            HostData::F32(v) => Tensor::from_slice(v, t.shape(), &self.device),
            HostData::I64(v) => Tensor::from_slice(v, t.shape(), &self.device),
        }
        .lib(self.id)
    }

    fn download(&self, t: &Tensor) -> BResult<HostTensor> {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all().lib(self.id)?;
        let data = match t.dtype() {
            CDType::I64 => HostData::I64(flat.to_vec1::<i64>().lib(self.id)?),
            _ => HostData::F32(
                flat.to_dtype(CDType::F32).lib(self.id)?.to_vec1::<f32>().lib(self.id)?,
            ),
        };
        HostTensor::new(shape, data).map_err(|e| BackendError::library(self.id, e.to_string()))
    }

    fn compile(&self, g: &Graph) -> BResult<Self::Program> {
        EagerProgram::compile(g, self.mode)
    }

    fn run(&self, p: &mut Self::Program, inputs: &[&Tensor]) -> BResult<Vec<Tensor>> {
        p.run(self, inputs)
    }

    fn sync(&self) -> BResult<()> {
        self.device.synchronize().lib(self.id)
    }
}
