//! The custom operator that runs a fused group of elementwise nodes
//! ([`randbench_core::fusion`]) on ONNX Runtime's CPU provider: `randbench.Fused`, its kernel
//! carried in the node's attributes, its work split over the session's thread pool.

use ort::operator::{
    ComputeContext, Kernel as OrtKernel, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput, ShapeInferenceContext,
};
use ort::value::{Shape, SymbolicDimensions, TensorElementType, ValueType};
use randbench_core::fusion::Kernel;

/// The operator domain of randbench's own ops.
pub const DOMAIN: &str = "randbench";
pub const OP: &str = "Fused";
pub const VERSION: u32 = 1;
/// Attributes: the kernel's code and constants ([`Kernel::encode`]); the element offset each
/// input is read from; and the outputs' shapes (each its rank, then its dimensions). An output
/// holds one or more of the kernel's outputs, end to end.
pub const CODE: &str = "code";
pub const CONSTS: &str = "consts";
pub const OFFSETS: &str = "offsets";
pub const SHAPES: &str = "shapes";

/// About how many elements each task of the thread pool takes; fewer than two tasks' worth
/// run on the calling thread, where handing work over would cost more than it saves.
const TASK: usize = 4096;

/// The domain holding the fused operator, to register on a session.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(FusedOp)
}

/// An empty ONNX model (IR version 10) importing the default domain at `opset` and this one:
/// what a session that runs fused nodes starts from. ONNX Runtime registers a session's custom
/// operators only when it loads a model from bytes or a file; a session made straight from an
/// editor-built model (`CreateSessionFromModel`) looks them up before they are registered, so
/// the editor's model is applied onto this one instead.
pub fn base_model(opset: u32) -> Vec<u8> {
    // Protobuf by hand, field by field: ir_version, two opset_imports, a graph named "g";
    // every number below 128, so each varint is one byte.
    assert!(opset < 128 && VERSION < 128, "one-byte varints");
    let mut m = vec![0x08, 10];
    m.extend([0x42, 2, 0x10, opset as u8]);
    let domain = DOMAIN.as_bytes();
    m.extend([0x42, (4 + domain.len()) as u8, 0x0A, domain.len() as u8]);
    m.extend(domain);
    m.extend([0x10, VERSION as u8]);
    m.extend([0x3A, 3, 0x12, 1, b'g']);
    m
}

/// Output shapes as the `shapes` attribute holds them.
pub fn encode_shapes<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> Vec<i64> {
    let mut v = Vec::new();
    for s in shapes {
        v.push(s.len() as i64);
        v.extend(s.iter().map(|&d| d as i64));
    }
    v
}

fn decode_shapes(v: &[i64]) -> ort::Result<Vec<Vec<i64>>> {
    let mut shapes = Vec::new();
    let mut rest = v;
    while let Some((&rank, tail)) = rest.split_first() {
        let rank = usize::try_from(rank).map_err(|_| ort::Error::new("negative rank"))?;
        let dims = tail.get(..rank).ok_or_else(|| ort::Error::new("shapes cut short"))?;
        shapes.push(dims.to_vec());
        rest = &tail[rank..];
    }
    Ok(shapes)
}

struct FusedOp;

impl Operator for FusedOp {
    type Kernel<'attr> = FusedKernel;

    fn name(&self) -> &str {
        OP
    }

    // ort's default range ends at u32::MAX, which ONNX Runtime reads as -1: an empty range.
    fn versions(&self) -> std::ops::RangeInclusive<u32> {
        VERSION..=VERSION
    }

    fn execution_provider_type(&self) -> Option<&str> {
        Some("CPUExecutionProvider")
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::variadic(1).homogenous(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::variadic(1).homogenous(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, ctx: &KernelContext<'attr>) -> ort::Result<FusedKernel> {
        let attr = |name: &str| ort::Error::new(format!("{OP} has no attribute {name}"));
        let code: Vec<i64> = ctx.get(CODE).ok_or_else(|| attr(CODE))?;
        let consts: Vec<f32> = ctx.get(CONSTS).ok_or_else(|| attr(CONSTS))?;
        let offsets: Vec<i64> = ctx.get(OFFSETS).ok_or_else(|| attr(OFFSETS))?;
        let shapes: Vec<i64> = ctx.get(SHAPES).ok_or_else(|| attr(SHAPES))?;
        let kernel = Kernel::decode(&code, &consts).map_err(|e| ort::Error::new(e.to_string()))?;
        let offsets = offsets.into_iter().map(usize::try_from).collect::<Result<Vec<_>, _>>();
        let offsets = offsets.map_err(|_| ort::Error::new(format!("{OP}: a negative offset")))?;
        if offsets.len() != kernel.inputs() {
            return Err(ort::Error::new(format!("{OP}: one offset per input")));
        }
        Ok(FusedKernel { kernel, offsets, shapes: decode_shapes(&shapes)? })
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        let shapes: Vec<i64> = ctx.attr(SHAPES)?;
        for (k, s) in decode_shapes(&shapes)?.into_iter().enumerate() {
            let rank = s.len();
            let ty = ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new(s),
                dimension_symbols: SymbolicDimensions::empty(rank),
            };
            ctx.set_output(k, &ty)?;
        }
        Ok(())
    }
}

struct FusedKernel {
    kernel: Kernel,
    offsets: Vec<usize>,
    shapes: Vec<Vec<i64>>,
}

/// Output buffers shared by the pool's tasks, each writing its own range.
struct Outputs(Vec<(*mut f32, usize)>);
// SAFETY: tasks write disjoint ranges of the buffers, which outlive the parallel loop.
unsafe impl Sync for Outputs {}
unsafe impl Send for Outputs {}

impl Outputs {
    /// Each buffer's `range`.
    ///
    /// # Safety
    /// `range` lies within the buffers, and nothing else reads or writes it meanwhile.
    unsafe fn range<'a>(&self, range: std::ops::Range<usize>) -> Vec<&'a mut [f32]> {
        self.0
            .iter()
            .map(|&(p, n)| {
                debug_assert!(range.end <= n);
                unsafe { std::slice::from_raw_parts_mut(p.add(range.start), range.len()) }
            })
            .collect()
    }
}

impl OrtKernel for FusedKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let error = |what: &str| ort::Error::new(format!("{OP}: {what}"));
        let values = (0..self.kernel.inputs())
            .map(|k| ctx.input(k)?.ok_or_else(|| error("a missing input")))
            .collect::<ort::Result<Vec<_>>>()?;
        let sources = values
            .iter()
            .map(|v| Ok(v.try_extract_tensor::<f32>()?.1))
            .collect::<ort::Result<Vec<&[f32]>>>()?;
        let mut values = self
            .shapes
            .iter()
            .enumerate()
            .map(|(k, s)| ctx.output(k, s.clone())?.ok_or_else(|| error("a missing output")))
            .collect::<ort::Result<Vec<_>>>()?;
        let written = values
            .iter_mut()
            .map(|v| Ok(v.try_extract_tensor_mut::<f32>()?.1))
            .collect::<ort::Result<Vec<&mut [f32]>>>()?;
        // Every kernel output is `len` elements; an output holds one or more end to end.
        let total: usize = written.iter().map(|o| o.len()).sum();
        let len = total / self.kernel.outputs();
        if len == 0 || written.iter().any(|o| o.len() % len != 0) {
            return Err(error("outputs that are no whole number of parts"));
        }
        let mut outputs: Vec<&mut [f32]> =
            written.into_iter().flat_map(|o| o.chunks_mut(len)).collect();
        // Each input from its offset; a single value is broadcast. (The kernel asserts the
        // lengths; a panic must not cross into ONNX Runtime.)
        let inputs = sources
            .iter()
            .zip(&self.offsets)
            .map(|(x, &at)| match x.get(at..at + len) {
                _ if x.len() == 1 && at == 0 => Some(*x),
                part => part,
            })
            .collect::<Option<Vec<&[f32]>>>()
            .ok_or_else(|| error("an input shorter than its offset and length"))?;
        if len < 2 * TASK {
            self.kernel.run(&inputs, &mut outputs);
            return Ok(());
        }
        // Equal tasks, each a whole number of 16-element vectors but the last.
        let tasks = len.div_ceil(TASK);
        let each = len.div_ceil(tasks).next_multiple_of(16);
        let tasks = len.div_ceil(each);
        let buffers = Outputs(outputs.iter_mut().map(|o| (o.as_mut_ptr(), o.len())).collect());
        let (kernel, buffers) = (&self.kernel, &buffers);
        ctx.par_for(tasks, tasks, |t| {
            let range = t * each..((t + 1) * each).min(len);
            let ins: Vec<&[f32]> =
                inputs.iter().map(|x| if x.len() == 1 { *x } else { &x[range.clone()] }).collect();
            // SAFETY: `range` lies within the outputs, and each task has a range of its own.
            let mut outs = unsafe { buffers.range(range) };
            kernel.run(&ins, &mut outs);
        })
    }
}
