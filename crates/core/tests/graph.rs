//! The graph IR's typed errors and the shape helpers every engine shares.

use randbench_core::backend::{reports_out_of_memory, BackendError, BackendId};
use randbench_core::graph::{
    batch_norm_axes, conv2d_output_shape, conv_transpose_output_padding, per_channel_shape,
    sum_to_axes, Graph, GraphError, Op,
};
use randbench_core::testing::op_cases;
use randbench_core::DType;

#[test]
fn shape_errors_carry_the_operands_shapes_as_values() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 3], DType::F32);
    let b = g.input("b", &[4, 5], DType::F32);
    let err = g.matmul(a, b).unwrap_err();
    match &err {
        GraphError::Shape { op, operands, .. } => {
            assert_eq!(*op, "MatMul");
            assert_eq!(operands, &vec![vec![2, 3], vec![4, 5]]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(err.to_string().ends_with("(shapes [2, 3], [4, 5])"), "{err}");
    let labels = g.input("y", &[2], DType::F32);
    assert_eq!(
        g.one_hot(labels, 10).unwrap_err(),
        GraphError::DType { op: "OneHot", expected: DType::I64, actual: DType::F32 }
    );
}

#[test]
fn every_op_has_a_static_name_of_its_own() {
    let mut names = std::collections::BTreeSet::new();
    for case in op_cases(0) {
        for node in case.graph.nodes() {
            let name = node.op.name();
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            names.insert(name);
        }
    }
    assert_eq!(Op::Input { name: "pixels".into() }.name(), "Input");
    assert!(names.len() > 20, "only {} op names seen: {names:?}", names.len());
}

#[test]
fn convolution_shapes_and_the_transposed_padding_that_inverts_them() {
    // 7×8 input, 3×3 kernel, stride 2, padding 1: sides (7+2-3)/2+1 = 4 and (8+2-3)/2+1 = 4.
    let (x, w) = ([5, 3, 7, 8], [6, 3, 3, 3]);
    let y = conv2d_output_shape(&x, &w, 2, 1).unwrap();
    assert_eq!(y, vec![5, 6, 4, 4]);
    // The transposed convolution gives (4-1)·2 - 2 + 3 = 7 per side: 0 short of 7, 1 of 8.
    assert_eq!(conv_transpose_output_padding(&y, &w, &x, 2, 1), [0, 1]);
    assert!(conv2d_output_shape(&x, &[6, 3, 11, 3], 1, 1).is_err(), "kernel taller than input");
    assert!(conv2d_output_shape(&x, &[6, 4, 3, 3], 1, 1).is_err(), "channels differ");
    assert!(conv2d_output_shape(&x, &w, 0, 1).is_err(), "stride 0");
}

#[test]
fn sum_to_removes_leading_axes_and_reduces_broadcast_ones() {
    assert_eq!(sum_to_axes(&[2, 3, 4], &[3, 1]), vec![0, 2]);
    assert_eq!(sum_to_axes(&[2, 3], &[2, 3]), Vec::<usize>::new());
    assert_eq!(sum_to_axes(&[4, 1], &[1]), vec![0]);
}

#[test]
fn batch_norm_takes_rank_2_or_4_one_gamma_and_beta_per_channel_and_a_usable_eps() {
    assert_eq!(batch_norm_axes(4), vec![0, 2, 3]);
    assert_eq!(per_channel_shape(&[5, 3, 2, 2]), vec![1, 3, 1, 1]);
    assert_eq!(per_channel_shape(&[5, 3]), vec![1, 3]);
    let mut g = Graph::new();
    let x = g.input("x", &[4, 3, 2, 2], DType::F32);
    let c3 = g.input("c3", &[3], DType::F32);
    let c2 = g.input("c2", &[2], DType::F32);
    let rank3 = g.input("rank3", &[4, 3, 4], DType::F32);
    let labels = g.input("labels", &[4, 3], DType::I64);
    let y = g.batch_norm(x, c3, c3, 1e-5).unwrap();
    assert_eq!(g.shape(y), &[4, 3, 2, 2]);
    let operands = |e: GraphError| match e {
        GraphError::Shape { op: "BatchNorm", operands, .. } => operands,
        other => panic!("expected a BatchNorm shape error, got {other:?}"),
    };
    assert_eq!(operands(g.batch_norm(rank3, c3, c3, 1e-5).unwrap_err()), vec![vec![4, 3, 4]]);
    assert_eq!(
        operands(g.batch_norm(x, c3, c2, 1e-5).unwrap_err()),
        vec![vec![4, 3, 2, 2], vec![3], vec![2]]
    );
    for eps in [-1e-5, f64::NAN, f64::INFINITY] {
        assert!(operands(g.batch_norm(x, c3, c3, eps).unwrap_err()).is_empty(), "eps {eps}");
    }
    assert_eq!(
        g.batch_norm(labels, c3, c3, 1e-5).unwrap_err(),
        GraphError::DType { op: "BatchNorm", expected: DType::F32, actual: DType::I64 }
    );
}

#[test]
fn needed_by_follows_what_each_node_reads() {
    let mut g = Graph::new();
    let x = g.input("x", &[3], DType::F32);
    let unused = g.exp(x).unwrap();
    let y = g.relu(x).unwrap();
    let z = g.neg(y).unwrap();
    let all = g.needed_by([z], |id| g.node(id).args.clone());
    assert_eq!(all, vec![true, false, true, true]);
    // A reader that stops at relu: x is not needed through it.
    let cut = g.needed_by([z], |id| if id == y { vec![] } else { g.node(id).args.clone() });
    assert_eq!(cut, vec![false, false, true, true]);
    let _ = unused;
}

#[test]
fn out_of_memory_is_recognized_in_every_engines_words() {
    let id: BackendId = "tch-cuda:0".parse().unwrap();
    for text in [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes",
        "Failed to allocate memory for requested buffer of size 4096",
        "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
        "memory allocation of 8589934592 bytes failed",
    ] {
        assert!(reports_out_of_memory(text), "{text}");
        assert!(matches!(
            BackendError::library(id, text),
            BackendError::OutOfMemory { backend, .. } if backend == id
        ));
    }
    let other = BackendError::library(id, "shape mismatch in addmm");
    assert!(matches!(other, BackendError::Library { .. }));
    assert_eq!(other.to_string(), "tch-cuda:0: shape mismatch in addmm");
}

#[test]
fn gradients_of_slices_that_partition_a_tensor_join_into_one_concatenation() {
    // An LSTM's gates: four slices of one product, each used once.
    let mut g = Graph::new();
    let x = g.input("x", &[3, 8], DType::F32);
    let mut total = None;
    for k in 0..4 {
        let part = g.slice(x, 1, 2 * k, 2 * k + 2).unwrap();
        let act = g.sigmoid(part).unwrap();
        let s = g.sum_all(act).unwrap();
        total = Some(match total {
            Some(t) => g.add(t, s).unwrap(),
            None => s,
        });
    }
    let dx = g.grad(total.unwrap(), x).unwrap();
    g.output("dx", dx);
    let e = randbench_core::autodiff::expand_grads(&g).unwrap();
    let count = |name: &str| e.nodes().iter().filter(|n| n.op.name() == name).count();
    assert_eq!(count("Pad"), 0, "{}", e.dump());
    // One concatenation of the four parts, not three nested pairwise ones.
    assert_eq!(count("Concat"), 1, "{}", e.dump());
    let concat = e.nodes().iter().find(|n| n.op.name() == "Concat").unwrap();
    assert_eq!(concat.args.len(), 4, "{}", e.dump());
}

#[test]
fn constants_fold_and_a_spread_value_is_spread_once() {
    let mut g = Graph::new();
    let one = g.scalar(1.0);
    // A mean's gradient seed: 1/n of a constant is a constant.
    let seed = g.affine(one, 0.25, 0.5).unwrap();
    match &g.node(seed).op {
        Op::Const(t) => assert_eq!(t.to_scalar().unwrap(), 0.75),
        other => panic!("expected a constant, got {other:?}"),
    }
    let column = g.reshape(seed, &[1, 1]).unwrap();
    assert!(matches!(g.node(column).op, Op::Const(_)));
    // Spread to [4], reshaped to [4, 1], spread to [4, 3]: one spread of the scalar.
    let spread = g.broadcast_to(seed, &[4]).unwrap();
    let reshaped = g.reshape(spread, &[4, 1]).unwrap();
    let wide = g.broadcast_to(reshaped, &[4, 3]).unwrap();
    assert_eq!(g.node(wide).op, Op::BroadcastTo);
    assert_eq!(g.node(wide).args, vec![seed]);
    assert_eq!(g.shape(wide), &[4, 3]);
}
