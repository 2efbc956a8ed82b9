//! Training steps do not grow the process. burn's `Autodiff` decorator records every op,
//! tracked or not, until a `backward` clears the record: symbolic programs (no `backward`)
//! ran under it grew by about 110 KB a step, so they run on the bare backend. (One test in
//! its own binary: the resident set is the process's.)

use randbench_burn::{BurnBackend, Flex, FlexAutodiff, Tape};
use randbench_core::models::{Activation, Model};
use randbench_core::optim::Optimizer;
use randbench_core::testing::mlp_batch;
use randbench_core::train::{starting_state, training_step, Feed};
use randbench_core::Backend;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux's /proc");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident KiB gained from step 100 to step 600 of the 784-512-10 MLP's training step.
fn growth<B: Tape>(b: &BurnBackend<B>) -> u64 {
    let model = Model::mlp([1, 28, 28], &[512], 10, Activation::Relu);
    let opt = Optimizer::momentum(0.01, 0.9);
    let step = training_step(&model, &opt, 128, Feed::Batch, false).unwrap();
    let mut prog = b.compile(&step.graph).unwrap();
    let (x, y) = mlp_batch(128, 0);
    let data = [b.upload(&x).unwrap(), b.upload(&y).unwrap()];
    let initial = starting_state(&model.params().unwrap(), &opt, 0);
    let mut state: Vec<_> = initial.iter().map(|t| b.upload(t).unwrap()).collect();
    let mut before = 0;
    for k in 0..600 {
        if k == 100 {
            before = resident_kib();
        }
        let inputs: Vec<_> = state.iter().chain(data.iter()).collect();
        let mut out = b.run(&mut prog, &inputs).unwrap();
        out.truncate(step.params + step.state);
        state = out;
    }
    resident_kib().saturating_sub(before)
}

#[test]
fn five_hundred_training_steps_do_not_grow_the_process() {
    for (mode, kib) in [
        ("symbolic", growth(&BurnBackend::<Flex>::cpu())),
        ("native", growth(&BurnBackend::<FlexAutodiff>::cpu())),
    ] {
        // A leak of the recorded kind would be about 55 MB here.
        assert!(kib < 8 * 1024, "{mode}: the process grew by {kib} KiB over 500 steps");
    }
}
