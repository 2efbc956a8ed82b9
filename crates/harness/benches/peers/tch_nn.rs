//! The MLP and its training as tch's `nn` module teaches them: a `VarStore`, `nn::seq` of
//! `nn::linear` layers, `cross_entropy_for_logits`, and libtorch's SGD with momentum
//! (`nn::Sgd`) stepped by `backward_step`.

use super::Idiom;
use randbench_core::HostTensor;
use randbench_tch::tch::nn::{self, Module, OptimizerConfig};
use randbench_tch::tch::{self, Device, Tensor};

pub struct TchNn {
    // The model's variables live here; the model and the optimizer refer to them.
    _vs: nn::VarStore,
    model: nn::Sequential,
    optimizer: nn::Optimizer,
}

impl Idiom for TchNn {
    type Tensor = Tensor;
    const NAME: &'static str = "tch::nn idiom";

    fn new(initial: &[HostTensor], lr: f64, momentum: f64) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let model = nn::seq()
            .add(nn::linear(&root / "hidden", 784, 512, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "out", 512, 10, Default::default()));
        // randbench's dense weights are [in, out]; tch's Linear holds [out, in].
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, t) in
                ["hidden.weight", "hidden.bias", "out.weight", "out.bias"].iter().zip(initial)
            {
                let value = Self::upload(t);
                let value = if value.dim() == 2 { value.tr() } else { value };
                vars[*name].shallow_clone().copy_(&value);
            }
        });
        let sgd = nn::Sgd { momentum, dampening: 0.0, wd: 0.0, nesterov: false };
        let optimizer = sgd.build(&vs, lr).unwrap();
        Self { _vs: vs, model, optimizer }
    }

    fn upload(t: &HostTensor) -> Tensor {
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        match t.as_f32() {
            Ok(v) => Tensor::from_slice(v),
            Err(_) => Tensor::from_slice(t.as_i64().expect("f32 or i64")),
        }
        .view(shape.as_slice())
    }

    fn gather(data: &Tensor, examples: &[usize]) -> Tensor {
        let idx: Vec<i64> = examples.iter().map(|&i| i as i64).collect();
        data.index_select(0, &Tensor::from_slice(&idx))
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) {
        let loss = self.model.forward(x).cross_entropy_for_logits(y);
        self.optimizer.backward_step(&loss);
    }

    fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        tch::no_grad(|| self.model.forward(x).accuracy_for_logits(y)).double_value(&[])
    }
}
