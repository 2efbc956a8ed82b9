//! The MLP and its training as candle-nn's documentation teaches them: a `VarMap` holding the
//! variables, `candle_nn::linear` layers behind the `Module` trait, `cross_entropy`, and an
//! optimizer's `backward_step`. candle-nn's own `SGD` has no momentum ("contrary to the
//! PyTorch implementation"), so momentum comes as candle-nn asks for one's own optimizer: its
//! `Optimizer` trait, implemented in a few lines.

use super::Idiom;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use randbench_core::HostTensor;

struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }
}

/// SGD with momentum as PyTorch defines it (dampening 0): v ← μv + g, θ ← θ − ηv.
struct SgdMomentum {
    vars: Vec<Var>,
    velocity: Vec<Tensor>,
    lr: f64,
    momentum: f64,
}

impl Optimizer for SgdMomentum {
    type Config = (f64, f64);

    fn new(vars: Vec<Var>, (lr, momentum): (f64, f64)) -> Result<Self> {
        let velocity = vars.iter().map(|v| v.zeros_like()).collect::<Result<_>>()?;
        Ok(Self { vars, velocity, lr, momentum })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, v) in self.vars.iter().zip(self.velocity.iter_mut()) {
            if let Some(g) = grads.get(var) {
                *v = ((&*v * self.momentum)? + g)?;
                var.set(&(var.as_tensor() - (&*v * self.lr)?)?)?;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr
    }
}

pub struct CandleNn {
    model: Mlp,
    optimizer: SgdMomentum,
}

impl Idiom for CandleNn {
    type Tensor = Tensor;
    const NAME: &'static str = "candle-nn idiom";

    fn new(initial: &[HostTensor], lr: f64, momentum: f64) -> Self {
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Mlp {
            hidden: linear(784, 512, vb.pp("hidden")).unwrap(),
            out: linear(512, 10, vb.pp("out")).unwrap(),
        };
        // randbench's dense weights are [in, out]; candle-nn's Linear holds [out, in].
        for (name, t) in
            ["hidden.weight", "hidden.bias", "out.weight", "out.bias"].iter().zip(initial)
        {
            let value = Self::upload(t);
            let value =
                if value.rank() == 2 { value.t().unwrap().contiguous().unwrap() } else { value };
            varmap.set_one(name, value).unwrap();
        }
        let optimizer = SgdMomentum::new(varmap.all_vars(), (lr, momentum)).unwrap();
        Self { model, optimizer }
    }

    fn upload(t: &HostTensor) -> Tensor {
        match t.as_f32() {
            Ok(v) => Tensor::from_slice(v, t.shape(), &Device::Cpu),
            Err(_) => Tensor::from_slice(t.as_i64().expect("f32 or i64"), t.shape(), &Device::Cpu),
        }
        .unwrap()
    }

    fn gather(data: &Tensor, examples: &[usize]) -> Tensor {
        let idx: Vec<u32> = examples.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, examples.len(), &Device::Cpu).unwrap();
        data.index_select(&idx, 0).unwrap()
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) {
        let loss = candle_nn::loss::cross_entropy(&self.model.forward(x).unwrap(), y).unwrap();
        self.optimizer.backward_step(&loss).unwrap();
    }

    fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        let predicted = self.model.forward(x).unwrap().argmax(1).unwrap();
        let right = predicted.eq(&y.to_dtype(DType::U32).unwrap()).unwrap();
        right.to_dtype(DType::F64).unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap()
    }
}
