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

/// The number of inputs or outputs ONNX Runtime gives the node must be the one its kernel and
/// `shapes` attribute expect.
fn check_count(what: &str, expected: usize, given: usize) -> Result<(), String> {
    if given == expected {
        return Ok(());
    }
    Err(format!("{OP}: {given} {what} where its attributes declare {expected}"))
}

/// The length of each kernel output when outputs of `lens` elements hold `parts` kernel
/// outputs end to end, each output a whole number of them; `None` if they cannot.
fn part_length(lens: &[usize], parts: usize) -> Option<usize> {
    let total: usize = lens.iter().sum();
    let len = total.checked_div(parts).filter(|&len| len > 0 && len * parts == total)?;
    lens.iter().all(|n| n % len == 0).then_some(len)
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
        // Before any index: a node that disagrees with its attributes must fail the run, and a
        // panic here would abort the process (it cannot unwind into ONNX Runtime).
        check_count("inputs", self.kernel.inputs(), ctx.num_inputs()?).map_err(ort::Error::new)?;
        check_count("outputs", self.shapes.len(), ctx.num_outputs()?).map_err(ort::Error::new)?;
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
        let lens: Vec<usize> = written.iter().map(|o| o.len()).collect();
        let len = part_length(&lens, self.kernel.outputs())
            .ok_or_else(|| error("outputs that are not the kernel's outputs end to end"))?;
        let mut outputs: Vec<&mut [f32]> =
            written.into_iter().flat_map(|o| o.chunks_mut(len)).collect();
        // Each input from its offset; a single value is broadcast. (The kernel asserts the
        // lengths; a panic must not cross into ONNX Runtime.)
        let inputs = sources
            .iter()
            .zip(&self.offsets)
            .map(|(x, &at)| match x.get(at..at.saturating_add(len)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrtBackend;
    use ort::editor::{Graph, Model, Node, Opset, ONNX_DOMAIN};
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    use ort::operator::Attribute;
    use ort::session::builder::GraphOptimizationLevel;
    use ort::session::Session;
    use ort::value::{Outlet, Tensor};
    use randbench_core::fusion::Instr;
    use randbench_core::graph::UnaryOp;
    use randbench_core::Device;

    #[test]
    fn counts_must_match_the_kernel() {
        assert!(check_count("outputs", 2, 2).is_ok());
        let err = check_count("outputs", 1, 2).unwrap_err();
        assert!(err.contains("2 outputs where its attributes declare 1"), "{err}");
        assert!(check_count("inputs", 2, 1).is_err());
        assert!(check_count("inputs", 1, 0).is_err());
    }

    #[test]
    fn outputs_split_into_the_kernel_outputs() {
        assert_eq!(part_length(&[12], 3), Some(4));
        assert_eq!(part_length(&[8, 4], 3), Some(4));
        assert_eq!(part_length(&[4, 4, 4], 3), Some(4));
        // Not whole parts, too few elements, parts of different lengths, no parts at all.
        assert_eq!(part_length(&[10], 3), None);
        assert_eq!(part_length(&[2], 3), None);
        assert_eq!(part_length(&[6, 6], 3), None);
        assert_eq!(part_length(&[8, 6], 2), None);
        assert_eq!(part_length(&[4], 0), None);
        assert_eq!(part_length(&[], 1), None);
        assert_eq!(part_length(&[0, 0], 2), None);
    }

    fn vector(n: usize) -> ValueType {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::new([n as i64]),
            dimension_symbols: SymbolicDimensions::empty(1),
        }
    }

    /// A session of one fused node reading `inputs` and writing `outputs` (4 elements each);
    /// its kernel negates its first input into each of its `kernel.1` outputs, and its `shapes`
    /// attribute has `shapes` outputs of 4 elements.
    fn session(
        inputs: &[&str],
        outputs: &[&str],
        kernel: (usize, usize),
        shapes: usize,
    ) -> Session {
        // First: ONNX Runtime is loaded when the backend starts.
        let backend = OrtBackend::new(Device::Cpu, 2).unwrap().with_fusion(true);
        let k = Kernel::new(
            kernel.0,
            vec![Instr::Unary(UnaryOp::Neg, 0)],
            vec![kernel.0 as u32; kernel.1],
        )
        .unwrap();
        let (code, consts) = k.encode();
        let attrs = vec![
            Attribute::new(CODE, code).unwrap(),
            Attribute::new(CONSTS, consts).unwrap(),
            Attribute::new(OFFSETS, vec![0i64; kernel.0]).unwrap(),
            Attribute::new(SHAPES, encode_shapes(vec![&[4usize][..]; shapes])).unwrap(),
        ];
        let mut g = Graph::new().unwrap();
        g.set_inputs(inputs.iter().map(|&n| Outlet::new(n, vector(4)))).unwrap();
        g.set_outputs(outputs.iter().map(|&n| Outlet::new(n, vector(4)))).unwrap();
        g.add_node(Node::new(OP, DOMAIN, "fused", inputs, outputs, attrs).unwrap()).unwrap();
        let opsets =
            [Opset::new(ONNX_DOMAIN, crate::OPSET).unwrap(), Opset::new(DOMAIN, VERSION).unwrap()];
        let mut model = Model::new(opsets).unwrap();
        model.set_graph(g).unwrap();
        backend.session(model, GraphOptimizationLevel::Level1).unwrap()
    }

    /// Runs `s` on 4-element `inputs`, bound as the backend binds them; its first output.
    fn run(s: &mut Session, inputs: &[&str], outputs: &[&str]) -> ort::Result<Vec<f32>> {
        let x = Tensor::from_array((vec![4i64], vec![1.0f32, -2.0, 3.0, -4.0]))?;
        let cpu =
            MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)?;
        let mut binding = s.create_binding()?;
        for &n in inputs {
            binding.bind_input(n, &x)?;
        }
        for &n in outputs {
            binding.bind_output_to_device(n, &cpu)?;
        }
        let out = s.run_binding(&binding)?;
        Ok(out[outputs[0]].try_extract_tensor::<f32>()?.1.to_vec())
    }

    #[test]
    fn a_node_that_fits_its_kernel_runs() {
        let mut s = session(&["x"], &["y"], (1, 1), 1);
        assert_eq!(run(&mut s, &["x"], &["y"]).unwrap(), [-1.0, 2.0, -3.0, 4.0]);
        let mut s = session(&["x", "w"], &["y", "z"], (2, 2), 2);
        assert_eq!(run(&mut s, &["x", "w"], &["y", "z"]).unwrap(), [-1.0, 2.0, -3.0, 4.0]);
    }

    /// A node reading `inputs` and writing `outputs` whose kernel and `shapes` attribute
    /// disagree with it: its run fails with the count check's error, neither aborting (a panic
    /// in the kernel would) nor stopped first by a check of ONNX Runtime's.
    fn fails_the_count_check(
        inputs: &[&str],
        outputs: &[&str],
        kernel: (usize, usize),
        message: &str,
    ) {
        let mut s = session(inputs, outputs, kernel, kernel.1);
        let err = run(&mut s, inputs, outputs).expect_err("a node unlike its kernel ran");
        assert!(err.to_string().contains(message), "{err}");
    }

    #[test]
    fn a_node_with_more_outputs_than_its_kernel_fails() {
        fails_the_count_check(
            &["x"],
            &["y", "z"],
            (1, 1),
            "2 outputs where its attributes declare 1",
        );
    }

    #[test]
    fn a_node_with_fewer_outputs_than_its_kernel_fails() {
        fails_the_count_check(&["x"], &["y"], (1, 2), "1 outputs where its attributes declare 2");
    }

    #[test]
    fn a_node_with_more_or_fewer_inputs_than_its_kernel_fails() {
        fails_the_count_check(
            &["x", "w"],
            &["y"],
            (1, 1),
            "2 inputs where its attributes declare 1",
        );
        fails_the_count_check(&["x"], &["y"], (2, 1), "1 inputs where its attributes declare 2");
    }
}
