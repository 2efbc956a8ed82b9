//! randbench-burn: the [`Backend`] on burn 0.21: the CPU through burn-flex (pure Rust), CUDA
//! through burn-cuda behind the `cuda` feature.
//!
//! Graphs run op by op through the core's [`EagerProgram`], on burn's backend primitives
//! (`B::float_add`, `B::conv2d`, …), whose rank is known only at run time as the IR's is.
//! The gradient mode picks the burn backend: [`GradMode::Native`] runs under burn's
//! `Autodiff` decorator and its `backward`; [`GradMode::Symbolic`] runs the core's expansion
//! on the bare backend. Not both under `Autodiff`: the decorator records every op, tracked or
//! not, until a `backward` clears the record, so a program with no `backward` (every
//! symbolic step) grew the process by about 110 KB a step.

use burn_backend::ops::{ConvOptions, ConvTransposeOptions, FloatTensorOps};
use burn_backend::tensor::{BoolTensor, FloatTensor, IntTensor};
use burn_backend::{
    get_device_settings, read_sync, AutodiffBackend, Backend as BurnEngine, BoolDType, Element,
    ExecutionError, FloatDType, IntDType, Scalar, Shape, Slice, TensorData, TensorMetadata,
};
use randbench_core::backend::{
    BResult, Backend, BackendError, BackendId, BackendInfo, Device, Engine, GradMode,
};
use randbench_core::eager::{EagerOps, EagerProgram};
use randbench_core::graph::{
    batch_norm_axes, conv_transpose_output_padding, per_channel_shape, sum_to_axes, BinaryOp,
    CmpOp, Graph, Node, Op, UnaryOp,
};
use randbench_core::tensor::{DType, HostData, HostTensor};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const BURN_VERSION: &str = "0.21.0";

pub use burn_flex::Flex;
/// burn-flex under burn's autograd: the CPU in [`GradMode::Native`].
pub type FlexAutodiff = burn_autodiff::Autodiff<Flex>;
#[cfg(feature = "cuda")]
pub use burn_cuda::Cuda;
/// burn-cuda under burn's autograd: CUDA in [`GradMode::Native`].
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn_autodiff::Autodiff<Cuda>;

/// A burn backend with or without autograd: what [`EagerOps::track`] and
/// [`EagerOps::grads`] need, answered by burn's `Autodiff` decorator and refused by a bare
/// backend (which runs only symbolic programs, whose gradients are ordinary ops).
pub trait Tape: BurnEngine {
    /// The gradient mode this backend computes in.
    const MODE: GradMode;
    /// The same value as a leaf whose gradient is wanted; `None` without autograd.
    fn track(t: FloatTensor<Self>) -> Option<FloatTensor<Self>>;
    /// Gradients of the scalar `of` with respect to tracked leaves; `None` without autograd.
    fn grads(
        of: FloatTensor<Self>,
        wrt: &[&FloatTensor<Self>],
    ) -> Option<Vec<Option<FloatTensor<Self>>>>;
}

impl<I: BurnEngine> Tape for burn_autodiff::Autodiff<I> {
    const MODE: GradMode = GradMode::Native;
    fn track(t: FloatTensor<Self>) -> Option<FloatTensor<Self>> {
        Some(Self::float_set_require_grad(Self::float_detach(t), true))
    }
    fn grads(
        of: FloatTensor<Self>,
        wrt: &[&FloatTensor<Self>],
    ) -> Option<Vec<Option<FloatTensor<Self>>>> {
        let grads = Self::backward(of);
        Some(wrt.iter().map(|w| Self::grad(w, &grads).map(Self::from_inner)).collect())
    }
}

/// A bare backend (no autograd) runs symbolic programs.
macro_rules! bare_tape {
    ($b:ty) => {
        impl Tape for $b {
            const MODE: GradMode = GradMode::Symbolic;
            fn track(_: FloatTensor<Self>) -> Option<FloatTensor<Self>> {
                None
            }
            fn grads(
                _: FloatTensor<Self>,
                _: &[&FloatTensor<Self>],
            ) -> Option<Vec<Option<FloatTensor<Self>>>> {
                None
            }
        }
    };
}
bare_tape!(Flex);
#[cfg(feature = "cuda")]
bare_tape!(Cuda);

/// A value on a burn device. A value of rank 0 in the IR is kept as shape [1]: CubeCL,
/// burn-cuda's runtime, has no rank-0 tensors (its layouts refuse them, and its fusion reads
/// their last axis), so a loss summed to a scalar failed every burn-cuda cell.
pub struct BurnTensor<B: BurnEngine> {
    value: Value<B>,
    /// Rank 0 in the IR (shape [1] on the device).
    scalar: bool,
}

/// The IR's two dtypes (f32, i64) as burn's primitives.
enum Value<B: BurnEngine> {
    Float(FloatTensor<B>),
    Int(IntTensor<B>),
}

impl<B: BurnEngine> Clone for Value<B> {
    fn clone(&self) -> Self {
        match self {
            Value::Float(t) => Value::Float(t.clone()),
            Value::Int(t) => Value::Int(t.clone()),
        }
    }
}

impl<B: BurnEngine> Clone for BurnTensor<B> {
    fn clone(&self) -> Self {
        Self { value: self.value.clone(), scalar: self.scalar }
    }
}

impl<B: BurnEngine> BurnTensor<B> {
    /// `value`, whose shape in the IR is `shape`.
    fn new(value: Value<B>, shape: &[usize]) -> Self {
        Self { value, scalar: shape.is_empty() }
    }

    /// `f`, an f32 value of this one's IR shape (its gradient, a copy detached or tracked).
    fn float_like(&self, f: FloatTensor<B>) -> Self {
        Self { value: Value::Float(f), scalar: self.scalar }
    }

    fn float(&self) -> Option<&FloatTensor<B>> {
        match &self.value {
            Value::Float(f) => Some(f),
            Value::Int(_) => None,
        }
    }

    /// The shape in the IR.
    fn dims(&self) -> Vec<usize> {
        match &self.value {
            _ if self.scalar => vec![],
            Value::Float(f) => dims(f),
            Value::Int(i) => dims(i),
        }
    }
}

/// The shape a value of IR shape `shape` has on the device: rank 0 as [1] (see [`BurnTensor`]).
fn device_shape(shape: &[usize]) -> Shape {
    Shape::from(if shape.is_empty() { vec![1] } else { shape.to_vec() })
}

pub struct BurnBackend<B: Tape> {
    device: B::Device,
    id: BackendId,
    bools: BoolDType,
}

impl<B: Tape<Device = burn_flex::FlexDevice>> BurnBackend<B> {
    /// The CPU: `BurnBackend::<FlexAutodiff>` for burn's autograd, `BurnBackend::<Flex>` for
    /// the symbolic expansion.
    pub fn cpu() -> Self {
        Self::on(burn_flex::FlexDevice, Device::Cpu)
    }
}

#[cfg(feature = "cuda")]
impl<B: Tape<Device = burn_cuda::CudaDevice>> BurnBackend<B> {
    /// CUDA device `n`. burn-cuda loads the driver and NVRTC when it first computes, on a
    /// thread of its own; a machine without them fails there (a panic of that thread, then
    /// of this one). One small op runs here to turn that into
    /// [`BackendError::DeviceUnavailable`], with the first panic's words (the driver's error),
    /// never a silent CPU run.
    pub fn cuda(n: usize) -> BResult<Self> {
        let id = BackendId { engine: Engine::Burn, device: Device::Cuda(n) };
        let first = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = first.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut first = seen.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(panic_words(info.payload()));
            }
        }));
        let opened = catch_unwind(|| {
            let b = Self::on(burn_cuda::CudaDevice::new(n), Device::Cuda(n));
            let one = HostTensor::new(vec![1], HostData::F32(vec![1.0])).expect("one element");
            let t = b.upload(&one)?;
            b.download(&t)?;
            Ok::<_, BackendError>(b)
        });
        let _ = std::panic::take_hook();
        std::panic::set_hook(previous);
        let unavailable = |reason| BackendError::DeviceUnavailable { backend: id, reason };
        match opened {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(panic) => {
                let first = first.lock().unwrap_or_else(|e| e.into_inner()).take();
                Err(unavailable(first.unwrap_or_else(|| panic_words(panic.as_ref()))))
            }
        }
    }
}

/// What a panic said.
fn panic_words(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "burn panicked".into())
}

const F32: FloatDType = FloatDType::F32;
const I64: IntDType = IntDType::I64;

fn dims<T: TensorMetadata>(t: &T) -> Vec<usize> {
    t.shape().to_vec()
}

impl<B: Tape> BurnBackend<B> {
    fn on(device: B::Device, on: Device) -> Self {
        let bools = get_device_settings::<B>(&device).bool_dtype;
        Self { device, id: BackendId { engine: Engine::Burn, device: on }, bools }
    }

    fn no_tape(&self) -> BackendError {
        BackendError::Unsupported {
            backend: self.id,
            what: "autograd on a burn backend without `Autodiff` (symbolic mode)".into(),
        }
    }

    fn float(&self, t: &BurnTensor<B>, node: &Node) -> BResult<FloatTensor<B>> {
        t.float().cloned().ok_or_else(|| self.unsupported(node, "i64 operands"))
    }

    fn int(&self, t: &BurnTensor<B>, node: &Node) -> BResult<IntTensor<B>> {
        match &t.value {
            Value::Int(i) => Ok(i.clone()),
            Value::Float(_) => Err(self.unsupported(node, "an f32 operand where i64 is read")),
        }
    }

    fn unsupported(&self, node: &Node, what: &str) -> BackendError {
        BackendError::Unsupported {
            backend: self.id,
            what: format!("{} on {what}", node.op.name()),
        }
    }

    fn mask(&self, t: BoolTensor<B>) -> Value<B> {
        Value::Float(B::bool_into_float(t, F32))
    }

    /// Sums over `axes` (kept), then takes `shape`.
    fn sum(&self, mut t: FloatTensor<B>, axes: &[usize], shape: &[usize]) -> FloatTensor<B> {
        for &a in axes {
            t = B::float_sum_dim(t, a);
        }
        B::float_reshape(t, device_shape(shape))
    }

    /// log softmax over the last axis, shifted by the (constant) row maximum.
    fn log_softmax(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        let shape = x.shape();
        let last = shape.num_dims() - 1;
        let max =
            B::float_expand(B::float_detach(B::float_max_dim(x.clone(), last)), shape.clone());
        let shifted = B::float_sub(x, max);
        let sum = B::float_sum_dim(B::float_exp(shifted.clone()), last);
        B::float_sub(shifted, B::float_expand(B::float_log(sum), shape))
    }

    /// Batch normalization with the batch's statistics, from burn's differentiable primitives
    /// (per-channel values spread explicitly, as `Linear`'s bias is).
    fn batch_norm(
        &self,
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        eps: f64,
    ) -> FloatTensor<B> {
        let shape = x.shape();
        let axes = batch_norm_axes(shape.num_dims());
        let channel = Shape::from(per_channel_shape(&dims(&x)));
        // Means over each axis in turn, keeping it: [1, C, 1, …].
        let mean = |mut t: FloatTensor<B>| {
            for &a in &axes {
                t = B::float_mean_dim(t, a);
            }
            t
        };
        let mu = mean(x.clone());
        let centered = B::float_sub(x, B::float_expand(mu, shape.clone()));
        let var = mean(B::float_mul(centered.clone(), centered.clone()));
        let s = B::float_sqrt(B::float_add_scalar(var, Scalar::from(eps)));
        // γ/s per channel first: one pass over x fewer than dividing x by s.
        let scale = B::float_div(B::float_reshape(gamma, channel.clone()), s);
        let scaled = B::float_mul(centered, B::float_expand(scale, shape.clone()));
        B::float_add(scaled, B::float_expand(B::float_reshape(beta, channel), shape))
    }

    fn zeros_like_on_axis(&self, x: &FloatTensor<B>, axis: usize, n: usize) -> FloatTensor<B> {
        let mut d = dims(x);
        d[axis] = n;
        B::float_zeros(Shape::from(d), &self.device, F32)
    }

    fn slices(d: &[usize], axis: usize, start: usize, end: usize) -> Vec<Slice> {
        (0..d.len())
            .map(|i| if i == axis { Slice::from(start..end) } else { Slice::from(0..d[i]) })
            .collect()
    }

    fn apply_op(&self, node: &Node, a: &[&BurnTensor<B>]) -> BResult<Value<B>> {
        let shape = node.shape.as_slice();
        let f = |i: usize| self.float(a[i], node);
        use Value::{Float, Int};
        Ok(match &node.op {
            Op::Unary(u) => {
                let x = f(0)?;
                Float(match u {
                    UnaryOp::Neg => B::float_neg(x),
                    UnaryOp::Relu => B::relu(x),
                    UnaryOp::Sigmoid => B::sigmoid(x),
                    UnaryOp::Tanh => B::float_tanh(x),
                    UnaryOp::Exp => B::float_exp(x),
                    UnaryOp::Log => B::float_log(x),
                    UnaryOp::Sqrt => B::float_sqrt(x),
                    UnaryOp::Abs => B::float_abs(x),
                    UnaryOp::Sign => B::float_sign(x),
                    UnaryOp::Square => B::float_mul(x.clone(), x),
                    UnaryOp::Step => {
                        return Ok(self.mask(B::float_greater_elem(
                            x,
                            Scalar::from(0.0),
                            self.bools,
                        )))
                    }
                })
            }
            Op::Affine { mul, add } => {
                let mut x = f(0)?;
                if *mul != 1.0 {
                    x = B::float_mul_scalar(x, Scalar::from(*mul));
                }
                if *add != 0.0 {
                    x = B::float_add_scalar(x, Scalar::from(*add));
                }
                Float(x)
            }
            Op::Clamp { min, max } => {
                Float(B::float_clamp(f(0)?, Scalar::from(*min), Scalar::from(*max)))
            }
            Op::Binary(b) => {
                let (l, r) = (f(0)?, f(1)?);
                Float(match b {
                    BinaryOp::Add => B::float_add(l, r),
                    BinaryOp::Sub => B::float_sub(l, r),
                    BinaryOp::Mul => B::float_mul(l, r),
                    BinaryOp::Div => B::float_div(l, r),
                })
            }
            Op::Compare(c) => match (&a[0].value, &a[1].value) {
                (Int(l), Int(r)) if *c == CmpOp::Eq => {
                    self.mask(B::int_equal(l.clone(), r.clone(), self.bools))
                }
                _ => {
                    let (l, r) = (f(0)?, f(1)?);
                    self.mask(match c {
                        CmpOp::Eq => B::float_equal(l, r, self.bools),
                        CmpOp::Ge => B::float_greater_equal(l, r, self.bools),
                        CmpOp::Gt => B::float_greater(l, r, self.bools),
                    })
                }
            },
            Op::MatMul { ta, tb } => {
                let l = if *ta { B::float_transpose(f(0)?) } else { f(0)? };
                let r = if *tb { B::float_transpose(f(1)?) } else { f(1)? };
                Float(B::float_matmul(l, r))
            }
            Op::Linear => {
                let y = B::float_matmul(f(0)?, f(1)?);
                Float(B::float_add(y, B::float_expand(f(2)?, device_shape(shape))))
            }
            Op::Conv2d { stride, padding } => Float(B::conv2d(
                f(0)?,
                f(1)?,
                None,
                ConvOptions::new([*stride; 2], [*padding; 2], [1, 1], 1),
            )),
            Op::Conv2dBackwardInput { stride, padding } => {
                let (dy, w) = (f(0)?, f(1)?);
                let out_pad =
                    conv_transpose_output_padding(&dims(&dy), &dims(&w), shape, *stride, *padding);
                Float(B::conv_transpose2d(
                    dy,
                    w,
                    None,
                    ConvTransposeOptions::new([*stride; 2], [*padding; 2], out_pad, [1, 1], 1),
                ))
            }
            Op::Conv2dBackwardWeight { stride, padding } => {
                // A convolution of the transposed input by the transposed output gradient,
                // dilated by the stride (as candle's and burn's own backward), cut to the kernel.
                let (x, dy) = (f(0)?, f(1)?);
                let gw = B::float_swap_dims(
                    B::conv2d(
                        B::float_swap_dims(x, 0, 1),
                        B::float_swap_dims(dy, 0, 1),
                        None,
                        ConvOptions::new([1, 1], [*padding; 2], [*stride; 2], 1),
                    ),
                    0,
                    1,
                );
                let d = dims(&gw);
                let cut: Vec<Slice> = (0..4).map(|i| Slice::from(0..shape[i].min(d[i]))).collect();
                Float(B::float_slice(gw, &cut))
            }
            Op::MaxPool2d { k } => {
                Float(B::max_pool2d(f(0)?, [*k; 2], [*k; 2], [0, 0], [1, 1], false))
            }
            Op::BatchNorm { eps } => Float(self.batch_norm(f(0)?, f(1)?, f(2)?, *eps)),
            Op::Softmax => Float(B::float_exp(self.log_softmax(f(0)?))),
            Op::SoftmaxCrossEntropy => {
                let labels = self.int(a[1], node)?;
                let n = dims(&labels)[0];
                let picked = B::float_gather(
                    1,
                    self.log_softmax(f(0)?),
                    B::int_reshape(labels, Shape::from(vec![n, 1])),
                );
                Float(B::float_neg(B::float_reshape(picked, Shape::from(vec![n]))))
            }
            Op::OneHot { classes } => {
                let labels = self.int(a[0], node)?;
                let n = dims(&labels)[0];
                let to = Shape::from(vec![n, *classes]);
                let range = B::int_arange(0..*classes as i64, &self.device, I64);
                let range = B::int_expand(
                    B::int_reshape(range, Shape::from(vec![1, *classes])),
                    to.clone(),
                );
                let labels = B::int_expand(B::int_reshape(labels, Shape::from(vec![n, 1])), to);
                self.mask(B::int_equal(labels, range, self.bools))
            }
            Op::CorrectPredictions => {
                let labels = self.int(a[1], node)?;
                let pred = B::float_argmax(f(0)?, 1, I64);
                let pred = B::int_reshape(pred, labels.shape());
                self.mask(B::int_equal(pred, labels, self.bools))
            }
            Op::Sum { axes, .. } => Float(self.sum(f(0)?, axes, shape)),
            Op::SumTo => {
                let x = f(0)?;
                let axes = sum_to_axes(&dims(&x), shape);
                Float(self.sum(x, &axes, shape))
            }
            Op::BroadcastTo => match &a[0].value {
                Int(i) => Int(B::int_expand(i.clone(), device_shape(shape))),
                Float(x) => Float(B::float_expand(x.clone(), device_shape(shape))),
            },
            Op::Reshape => match &a[0].value {
                Int(i) => Int(B::int_reshape(i.clone(), device_shape(shape))),
                Float(x) => Float(B::float_reshape(x.clone(), device_shape(shape))),
            },
            Op::Permute { perm } => match &a[0].value {
                Int(i) => Int(B::int_permute(i.clone(), perm)),
                Float(x) => Float(B::float_permute(x.clone(), perm)),
            },
            Op::Slice { axis, start, end } => match &a[0].value {
                Int(i) => {
                    Int(B::int_slice(i.clone(), &Self::slices(&dims(i), *axis, *start, *end)))
                }
                Float(x) => {
                    Float(B::float_slice(x.clone(), &Self::slices(&dims(x), *axis, *start, *end)))
                }
            },
            Op::Pad { axis, before, after } => {
                let x = f(0)?;
                let mut parts = Vec::with_capacity(3);
                if *before > 0 {
                    parts.push(self.zeros_like_on_axis(&x, *axis, *before));
                }
                let zeros_after = (*after > 0).then(|| self.zeros_like_on_axis(&x, *axis, *after));
                parts.push(x);
                parts.extend(zeros_after);
                Float(B::float_cat(parts, *axis))
            }
            Op::Concat { axis } => match &a[0].value {
                Int(_) => Int(B::int_cat(
                    a.iter().map(|t| self.int(t, node)).collect::<BResult<_>>()?,
                    *axis,
                )),
                Float(_) => Float(B::float_cat(
                    a.iter().map(|t| self.float(t, node)).collect::<BResult<_>>()?,
                    *axis,
                )),
            },
            Op::Gather => {
                let rows = self.int(a[1], node)?;
                match &a[0].value {
                    Int(i) => Int(B::int_select(i.clone(), 0, rows)),
                    Float(x) => Float(B::float_select(x.clone(), 0, rows)),
                }
            }
            Op::Input { .. } | Op::Const(_) | Op::StopGradient | Op::Grad => {
                unreachable!("EagerProgram handles {:?} itself", node.op)
            }
        })
    }

    /// A tensor's values as `E`s (converted where burn keeps another dtype).
    fn read<E: Element>(
        &self,
        pending: impl std::future::Future<Output = Result<TensorData, ExecutionError>>,
    ) -> BResult<Vec<E>> {
        let lib = |e: String| BackendError::library(self.id, e);
        let data = read_sync(pending).map_err(|e| lib(e.to_string()))?;
        let data = if data.dtype == E::dtype() { data } else { data.convert::<E>() };
        data.into_vec().map_err(|e| lib(format!("{e:?}")))
    }

    /// Runs `work`, turning a panic of burn's (its ops check shapes by panicking) into the
    /// backend's error.
    fn guarded<T>(&self, work: impl FnOnce() -> BResult<T>) -> BResult<T> {
        catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            Err(BackendError::library(self.id, panic_words(panic.as_ref())))
        })
    }
}

impl<B: Tape> EagerOps for BurnBackend<B> {
    type T = BurnTensor<B>;

    fn constant(&self, t: &HostTensor) -> BResult<Self::T> {
        self.upload(t)
    }

    fn apply(&self, node: &Node, a: &[&Self::T]) -> BResult<Self::T> {
        let value = self.guarded(|| self.apply_op(node, a))?;
        Ok(BurnTensor::new(value, &node.shape))
    }

    fn track(&self, t: &Self::T) -> BResult<Self::T> {
        Ok(match t.float() {
            Some(f) => t.float_like(B::track(f.clone()).ok_or_else(|| self.no_tape())?),
            None => t.clone(),
        })
    }

    fn detach(&self, t: &Self::T) -> BResult<Self::T> {
        Ok(match t.float() {
            Some(f) => t.float_like(B::float_detach(f.clone())),
            None => t.clone(),
        })
    }

    fn grads(&self, of: &Self::T, wrt: &[&Self::T]) -> BResult<Vec<Option<Self::T>>> {
        let Some(of) = of.float() else {
            return Err(BackendError::library(self.id, "a gradient of an i64 value"));
        };
        // Gradients of i64 values are none; the others are asked in one backward.
        let floats: Vec<&FloatTensor<B>> = wrt.iter().filter_map(|w| w.float()).collect();
        let mut grads = self
            .guarded(|| B::grads(of.clone(), &floats).ok_or_else(|| self.no_tape()))?
            .into_iter();
        Ok(wrt
            .iter()
            .map(|w| {
                w.float()?;
                Some(w.float_like(grads.next().flatten()?))
            })
            .collect())
    }

    fn zeros(&self, shape: &[usize]) -> BResult<Self::T> {
        let zeros = B::float_zeros(device_shape(shape), &self.device, F32);
        Ok(BurnTensor::new(Value::Float(zeros), shape))
    }

    fn shape_dtype(&self, t: &Self::T) -> (Vec<usize>, DType) {
        let dtype = match t.value {
            Value::Float(_) => DType::F32,
            Value::Int(_) => DType::I64,
        };
        (t.dims(), dtype)
    }
}

impl<B: Tape> Backend for BurnBackend<B> {
    type Tensor = BurnTensor<B>;
    type Program = EagerProgram<BurnTensor<B>>;

    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            library: format!("burn {BURN_VERSION} ({})", B::name(&self.device)),
            device_name: self.id.device.to_string(),
            threads: match self.id.device {
                Device::Cpu => rayon::current_num_threads(),
                Device::Cuda(_) => 0,
            },
            extra: vec![("grad".into(), format!("{:?}", B::MODE).to_lowercase())],
        }
    }

    fn upload(&self, t: &HostTensor) -> BResult<Self::Tensor> {
        let shape = device_shape(t.shape());
        let value = self.guarded(|| {
            Ok(match t.data() {
                HostData::F32(v) => Value::Float(B::float_from_data(
                    TensorData::new(v.to_vec(), shape),
                    &self.device,
                )),
                HostData::I64(v) => {
                    Value::Int(B::int_from_data(TensorData::new(v.to_vec(), shape), &self.device))
                }
            })
        })?;
        Ok(BurnTensor::new(value, t.shape()))
    }

    fn download(&self, t: &Self::Tensor) -> BResult<HostTensor> {
        let data = self.guarded(|| {
            Ok(match &t.value {
                Value::Float(f) => HostData::F32(self.read::<f32>(B::float_into_data(f.clone()))?),
                Value::Int(i) => HostData::I64(self.read::<i64>(B::int_into_data(i.clone()))?),
            })
        })?;
        HostTensor::new(t.dims(), data).map_err(|e| BackendError::library(self.id, e.to_string()))
    }

    fn compile(&self, g: &Graph) -> BResult<Self::Program> {
        EagerProgram::compile(g, B::MODE)
    }

    fn run(&self, p: &mut Self::Program, inputs: &[&Self::Tensor]) -> BResult<Vec<Self::Tensor>> {
        p.run(self, inputs)
    }

    fn sync(&self) -> BResult<()> {
        self.guarded(|| {
            B::sync(&self.device).map_err(|e| BackendError::library(self.id, e.to_string()))
        })
    }
}
