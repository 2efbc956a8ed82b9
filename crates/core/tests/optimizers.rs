//! Each optimizer's graph does PyTorch's arithmetic: two steps from the same gradients agree
//! with the update rules of torch.optim written out by hand.

use randbench_core::autodiff::expand_grads;
use randbench_core::graph::Graph;
use randbench_core::optim::{Optimizer, Rule};
use randbench_core::reference::{evaluate_values, RefValue};
use randbench_core::DType;

/// One step for parameter p of loss Σ c⊙p (gradient c): returns (new p, new state).
fn graph_step(
    opt: &Optimizer,
    p: &[f64],
    c: &[f64],
    state: &[RefValue],
) -> (Vec<f64>, Vec<RefValue>) {
    let n = p.len();
    let mut g = Graph::new();
    let pi = g.input("p", &[n], DType::F32);
    let slots: Vec<_> =
        (0..opt.slots_per_param()).map(|k| g.input(format!("s{k}"), &[n], DType::F32)).collect();
    let counter = opt.counts_steps().then(|| g.input("t", &[], DType::F32));
    let ci = g.input("c", &[n], DType::F32);
    let prod = g.mul(pi, ci).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let grad = g.grad(loss, pi).unwrap();
    let scalars = opt.begin_step(&mut g, counter, None).unwrap();
    let (np, ns) = opt.update(&mut g, pi, grad, &slots, &scalars).unwrap();
    g.output("p", np);
    for (k, s) in ns.iter().enumerate() {
        g.output(format!("s{k}"), *s);
    }
    if let Some(t) = scalars.counter {
        g.output("t", t);
    }
    let mut inputs = vec![RefValue { shape: vec![n], data: p.to_vec() }];
    inputs.extend(state.iter().cloned());
    inputs.push(RefValue { shape: vec![n], data: c.to_vec() });
    let out = evaluate_values(&expand_grads(&g).unwrap(), &inputs).unwrap();
    (out[0].data.clone(), out[1..].to_vec())
}

#[test]
fn two_steps_of_every_rule_match_torch_optim() {
    let p0 = [0.5, -1.0, 2.0];
    let grads = [[0.1, -0.2, 0.3], [-0.4, 0.05, 0.2]];
    let (lr, wd) = (0.1, 0.01);
    for rule in [
        Rule::Sgd,
        Rule::Momentum { momentum: 0.9 },
        Rule::Nesterov { momentum: 0.9 },
        Rule::Rmsprop { alpha: 0.99, eps: 1e-8 },
        Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    ] {
        let opt = Optimizer { rule, lr, weight_decay: wd };
        let mut state: Vec<RefValue> =
            opt.initial_state(&[vec![3]]).iter().map(RefValue::from_host).collect();
        let mut p = p0.to_vec();
        // torch.optim by hand.
        let mut q = p0.to_vec();
        let (mut buf, mut sq, mut m, mut v) = ([0.0; 3], [0.0; 3], [0.0; 3], [0.0; 3]);
        for (t, c) in grads.iter().enumerate() {
            (p, state) = graph_step(&opt, &p, c, &state);
            for i in 0..3 {
                let g = c[i] + wd * q[i];
                q[i] -= match rule {
                    Rule::Sgd => lr * g,
                    Rule::Momentum { momentum } => {
                        buf[i] = momentum * buf[i] + g;
                        lr * buf[i]
                    }
                    Rule::Nesterov { momentum } => {
                        buf[i] = momentum * buf[i] + g;
                        lr * (g + momentum * buf[i])
                    }
                    Rule::Rmsprop { alpha, eps } => {
                        sq[i] = alpha * sq[i] + (1.0 - alpha) * g * g;
                        lr * g / (sq[i].sqrt() + eps)
                    }
                    Rule::Adam { beta1, beta2, eps } => {
                        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                        let step = (t + 1) as i32;
                        let (bc1, bc2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
                        lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps)
                    }
                };
            }
            for i in 0..3 {
                assert!((p[i] - q[i]).abs() < 1e-9, "{rule:?} step {}: {p:?} vs {q:?}", t + 1);
            }
        }
    }
}
