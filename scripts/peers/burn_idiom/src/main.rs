//! The peer randbench's burn-cpu is compared with: the MLP training step of
//! `pytorch_eager.py step` as burn's book writes it — a `Module` of `nn::Linear` layers,
//! burn's cross-entropy loss, `backward`, `GradientsParams` and its SGD with momentum — on
//! burn-flex under burn's autograd.
//!
//!     burn_idiom step [--steps N]
//!
//! 784-512-10 MLP, batch 128, SGD momentum 0.9 (dampening 0, as PyTorch's), lr 0.01, on a
//! fixed batch; timed step by step after 20 warm-up steps; every 50 steps the model and the
//! optimizer start again (untimed), as in randbench's own step benchmark. Threads: rayon's
//! (`RAYON_NUM_THREADS`, which the benchmark sets). Prints one JSON object on stdout.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use std::time::Instant;

type B = Autodiff<Flex>;

const BATCH: usize = 128;
const RESET_EVERY: usize = 50;
const WARMUP: usize = 20;

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    hidden: Linear<B>,
    out: Linear<B>,
    relu: Relu,
}

impl<B: Backend> Mlp<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            hidden: LinearConfig::new(784, 512).init(device),
            out: LinearConfig::new(512, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.out.forward(self.relu.forward(self.hidden.forward(x)))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = match args.as_slice() {
        [cmd] if cmd == "step" => 400,
        [cmd, flag, n] if cmd == "step" && flag == "--steps" => {
            n.parse().unwrap_or_else(|_| usage(&format!("--steps {n}: give a whole number")))
        }
        _ => usage("unknown arguments"),
    };
    let device = Default::default();
    B::seed(&device, 0);
    let x = Tensor::<B, 2>::random([BATCH, 784], Distribution::Uniform(0.0, 1.0), &device);
    let y = Tensor::<B, 1, Int>::random([BATCH], Distribution::Uniform(0.0, 10.0), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)));
    let initial = Mlp::<B>::new(&device);
    let mut times = Vec::with_capacity(steps);
    let mut warm = WARMUP;
    while times.len() < steps {
        let mut model = initial.clone();
        let mut optim = sgd.init();
        for _ in 0..RESET_EVERY {
            let t = Instant::now();
            let logits = model.forward(x.clone());
            let loss = loss_fn.forward(logits.clone(), y.clone());
            let _accuracy = logits.argmax(1).equal(y.clone().unsqueeze_dim(1)).float().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
            B::sync(&device).expect("the device finishes its work");
            let dt = t.elapsed().as_secs_f64();
            if warm > 0 {
                warm -= 1
            } else {
                times.push(dt)
            }
        }
    }
    times.truncate(steps);
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    let out = serde_json::json!({
        "peer": "burn idiom",
        "burn": "0.21.0 (autodiff<flex>)",
        "threads": std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "rayon's default".into()),
        "steps": times.len(),
        "median_step_seconds": median,
    });
    println!("{out}");
}

fn usage(why: &str) -> ! {
    eprintln!("burn_idiom: {why}\nusage: burn_idiom step [--steps N]");
    std::process::exit(2)
}
