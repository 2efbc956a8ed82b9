//! randbench-candle: the [`Backend`] on candle, CPU by default, CUDA behind the `cuda` feature.
//!
//! Graphs run op by op through the core's [`EagerProgram`]; `Grad` nodes use candle's own
//! autograd (`Var`, `backward`) in [`GradMode::Native`], or the core's symbolic expansion in
//! [`GradMode::Symbolic`].

use candle_core::{DType as CDType, Tensor, Var, D};
use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode, MemoryStats,
};
use randbench_core::eager::{EagerOps, EagerProgram};
use randbench_core::graph::{BinaryOp, CmpOp, Graph, Node, Op, UnaryOp};
use randbench_core::tensor::{DType, HostData, HostTensor};

pub const CANDLE_VERSION: &str = "0.11.1";

pub struct CandleBackend {
    device: candle_core::Device,
    id: BackendId,
    mode: GradMode,
}

fn lib_err(e: candle_core::Error) -> BackendError {
    let message = e.to_string();
    if message.contains("out of memory") || message.contains("OUT_OF_MEMORY") {
        BackendError::OutOfMemory { backend: "candle".into(), message }
    } else {
        BackendError::Library { backend: "candle".into(), message }
    }
}

trait OrLib<T> {
    fn lib(self) -> BResult<T>;
}

impl<T> OrLib<T> for candle_core::Result<T> {
    fn lib(self) -> BResult<T> {
        self.map_err(lib_err)
    }
}

impl CandleBackend {
    /// A backend on `device`. CUDA needs a binary built with the `cuda` feature and a GPU;
    /// without either this is an error, never a silent fall back to the CPU.
    pub fn new(device: Device, mode: GradMode) -> BResult<Self> {
        let id = BackendId { engine: Engine::Candle, device };
        let device = match device {
            Device::Cpu => candle_core::Device::Cpu,
            Device::Cuda(n) => Self::cuda(n)?,
        };
        Ok(Self { device, id, mode })
    }

    #[cfg(feature = "cuda")]
    fn cuda(n: usize) -> BResult<candle_core::Device> {
        candle_core::Device::new_cuda(n).map_err(|e| BackendError::DeviceUnavailable {
            backend: "candle".into(),
            device: format!("cuda:{n}"),
            reason: e.to_string(),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(n: usize) -> BResult<candle_core::Device> {
        Err(BackendError::DeviceUnavailable {
            backend: "candle".into(),
            device: format!("cuda:{n}"),
            reason: "this binary was built without CUDA support for candle; rebuild with `--features cuda`".into(),
        })
    }

    /// Whether this build can use CUDA at all (the feature is compiled in).
    pub fn cuda_compiled() -> bool {
        cfg!(feature = "cuda")
    }

    pub fn grad_mode(&self) -> GradMode {
        self.mode
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
        // conv_transpose2d's output side is (i-1)·stride - 2·padding + k + output_padding; one
        // output_padding serves both sides, so take the larger and trim the other side.
        let side = |i: usize, k: usize| ((i - 1) * stride + k) as isize - 2 * padding as isize;
        let (kh, kw) = (w.dims()[2], w.dims()[3]);
        let pad_h = x_shape[2] as isize - side(dy.dims()[2], kh);
        let pad_w = x_shape[3] as isize - side(dy.dims()[3], kw);
        let out_pad = pad_h.max(pad_w).max(0) as usize;
        let dx = dy.conv_transpose2d(w, padding, out_pad, stride, 1).lib()?;
        dx.narrow(2, 0, x_shape[2]).lib()?.narrow(3, 0, x_shape[3]).lib()
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
            .lib()?
            .conv2d(&dy.transpose(0, 1).lib()?, padding, 1, stride, 1)
            .lib()?
            .transpose(0, 1)
            .lib()?;
        gw.narrow(2, 0, w_shape[2]).lib()?.narrow(3, 0, w_shape[3]).lib()
    }
}

fn to_core_dtype(d: CDType) -> DType {
    match d {
        CDType::I64 | CDType::U32 | CDType::U8 => DType::I64,
        _ => DType::F32,
    }
}

fn mask(t: Tensor) -> BResult<Tensor> {
    t.to_dtype(CDType::F32).lib()
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
                UnaryOp::Step => return mask(a[0].gt(0f64).lib()?),
            }
            .lib()?,
            Op::Affine { mul, add } => a[0].affine(*mul, *add).lib()?,
            Op::Clamp { min, max } => a[0].clamp(*min, *max).lib()?,
            Op::Binary(b) => match b {
                BinaryOp::Add => a[0].add(a[1]),
                BinaryOp::Sub => a[0].sub(a[1]),
                BinaryOp::Mul => a[0].mul(a[1]),
                BinaryOp::Div => a[0].div(a[1]),
            }
            .lib()?,
            Op::Compare(c) => mask(
                match c {
                    CmpOp::Eq => a[0].eq(a[1]),
                    CmpOp::Ge => a[0].ge(a[1]),
                    CmpOp::Gt => a[0].gt(a[1]),
                }
                .lib()?,
            )?,
            Op::MatMul { ta, tb } => {
                let l = if *ta { a[0].t().lib()? } else { a[0].clone() };
                let r = if *tb { a[1].t().lib()? } else { a[1].clone() };
                l.matmul(&r).lib()?
            }
            Op::Linear => a[0].matmul(a[1]).lib()?.broadcast_add(a[2]).lib()?,
            Op::Conv2d { stride, padding } => a[0].conv2d(a[1], *padding, *stride, 1, 1).lib()?,
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
                    let (n, c, h, w) = a[0].dims4().lib()?;
                    let (hh, ww) = (h / k, w / k);
                    let windows = a[0]
                        .reshape((n, c, hh, *k, ww, *k))
                        .lib()?
                        .permute((0, 1, 2, 4, 3, 5))
                        .lib()?
                        .reshape((n, c, hh, ww, k * k))
                        .lib()?;
                    let first = windows.detach().argmax_keepdim(4).lib()?;
                    let positions = Tensor::arange(0u32, (k * k) as u32, &self.device).lib()?;
                    let one_hot = mask(first.broadcast_eq(&positions).lib()?)?;
                    (windows * one_hot).lib()?.sum(4).lib()?.reshape(shape).lib()?
                } else {
                    a[0].max_pool2d(*k).lib()?
                }
            }
            Op::Softmax => {
                // The fused kernel has no backward; tracked values take the composite path.
                if a[0].track_op() {
                    candle_nn::ops::softmax(a[0], D::Minus1).lib()?
                } else {
                    candle_nn::ops::softmax_last_dim(&a[0].contiguous().lib()?).lib()?
                }
            }
            Op::SoftmaxCrossEntropy => {
                let logp = candle_nn::ops::log_softmax(a[0], D::Minus1).lib()?;
                logp.gather(&a[1].unsqueeze(1).lib()?, 1).lib()?.squeeze(1).lib()?.neg().lib()?
            }
            Op::OneHot { classes } => {
                let range = Tensor::arange(0i64, *classes as i64, &self.device)
                    .lib()?
                    .unsqueeze(0)
                    .lib()?;
                mask(a[0].unsqueeze(1).lib()?.broadcast_eq(&range).lib()?)?
            }
            Op::CorrectPredictions => {
                let pred = a[0].argmax(1).lib()?.to_dtype(CDType::I64).lib()?;
                mask(pred.eq(a[1]).lib()?)?
            }
            Op::Sum { axes, .. } => {
                a[0].sum_keepdim(axes.as_slice()).lib()?.reshape(shape).lib()?
            }
            Op::BroadcastTo => a[0].broadcast_as(shape).lib()?,
            Op::SumTo => {
                let from = a[0].dims();
                let off = from.len() - shape.len();
                let axes: Vec<usize> = (0..from.len())
                    .filter(|&i| i < off || (shape[i - off] == 1 && from[i] != 1))
                    .collect();
                a[0].sum_keepdim(axes.as_slice()).lib()?.reshape(shape).lib()?
            }
            Op::Reshape => a[0].reshape(shape).lib()?,
            Op::Permute { perm } => a[0].permute(perm.as_slice()).lib()?,
            Op::Slice { axis, start, end } => a[0].narrow(*axis, *start, end - start).lib()?,
            Op::Pad { axis, before, after } => a[0].pad_with_zeros(*axis, *before, *after).lib()?,
            Op::Concat { axis } => Tensor::cat(a, *axis).lib()?,
            Op::Gather => a[0].index_select(a[1], 0).lib()?,
            Op::Input { .. } | Op::Const(_) | Op::StopGradient | Op::Grad => {
                unreachable!("EagerProgram handles {:?} itself", node.op)
            }
        })
    }

    fn track(&self, t: &Tensor) -> BResult<Tensor> {
        Ok(Var::from_tensor(t).lib()?.into_inner())
    }

    fn detach(&self, t: &Tensor) -> BResult<Tensor> {
        Ok(t.detach())
    }

    fn grads(&self, of: &Tensor, wrt: &[&Tensor]) -> BResult<Vec<Option<Tensor>>> {
        let store = of.backward().lib()?;
        Ok(wrt.iter().map(|w| store.get(w).cloned()).collect())
    }

    fn zeros(&self, shape: &[usize]) -> BResult<Tensor> {
        Tensor::zeros(shape, CDType::F32, &self.device).lib()
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
            extra: vec![("grad".into(), format!("{:?}", self.mode).to_lowercase())],
        }
    }

    fn upload(&self, t: &HostTensor) -> BResult<Tensor> {
        match t.data() {
            HostData::F32(v) => Tensor::from_slice(v, t.shape(), &self.device),
            HostData::I64(v) => Tensor::from_slice(v, t.shape(), &self.device),
        }
        .lib()
    }

    fn download(&self, t: &Tensor) -> BResult<HostTensor> {
        let shape = t.dims().to_vec();
        let flat = t.flatten_all().lib()?;
        let data = match t.dtype() {
            CDType::I64 => HostData::I64(flat.to_vec1::<i64>().lib()?),
            _ => HostData::F32(flat.to_dtype(CDType::F32).lib()?.to_vec1::<f32>().lib()?),
        };
        HostTensor::new(shape, data)
            .map_err(|e| BackendError::Library { backend: "candle".into(), message: e.to_string() })
    }

    fn compile(&self, g: &Graph) -> BResult<Self::Program> {
        EagerProgram::compile(g, self.mode)
    }

    fn run(&self, p: &mut Self::Program, inputs: &[&Tensor]) -> BResult<Vec<Tensor>> {
        p.run(self, inputs)
    }

    fn sync(&self) -> BResult<()> {
        self.device.synchronize().lib()
    }

    fn memory(&self) -> MemoryStats {
        // candle keeps no allocator statistics; the harness records the process's peak instead.
        MemoryStats::default()
    }
}
