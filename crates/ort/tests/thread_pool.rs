//! Every session runs on ONNX Runtime's one thread pool: compiling and running more programs
//! starts no more threads. (A pool per session once spun its idle threads against the working
//! one, and ort-cpu took twice as long over the randomization suite.) A binary of its own, so
//! that no other test's threads come and go while it counts.

use randbench_core::models::{Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::testing::mlp_batch;
use randbench_core::train::{starting_state, training_step, Feed};
use randbench_core::{Backend, Device};
use randbench_ort::{OrtBackend, OrtProgram};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

/// A training step on batches of `batch`, compiled and run once; kept, as a session is while
/// its program lives.
fn compile_and_run(b: &OrtBackend, batch: usize) -> OrtProgram {
    let model = Model::mlp([1, 28, 28], &[32], 10, Activation::Relu);
    let opt = Optimizer::momentum(0.01, 0.9);
    let step = training_step(&model, &opt, batch, Feed::Batch, false).unwrap();
    let mut prog = b.compile(&step.graph).unwrap();
    let mut host = starting_state(&model.params().unwrap(), &opt, 0);
    let (x, y) = mlp_batch(batch, 0);
    host.extend([x, y]);
    let inputs: Vec<_> = host.iter().map(|t| b.upload(t).unwrap()).collect();
    b.run(&mut prog, &inputs.iter().collect::<Vec<_>>()).unwrap();
    prog
}

#[test]
fn more_sessions_start_no_more_threads() {
    let b = OrtBackend::new(Device::Cpu, 2).unwrap();
    let mut programs = vec![compile_and_run(&b, 8)];
    let with_one = threads();
    programs.extend([4, 5, 6, 7].map(|batch| compile_and_run(&b, batch)));
    assert_eq!(threads(), with_one, "4 more sessions started threads of their own");
}
