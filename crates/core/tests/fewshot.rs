//! MAML's programs against central finite differences in f64 on the host, the meta-learner
//! LSTM against SGD, fine-tuning the head against logistic regression on the embedding, and
//! episodes that repeat for a seed.

use randbench_core::autodiff::expand_grads;
use randbench_core::fewshot::{
    adaptation_graph, draw_episodes, embedding_graph, nearest_neighbour, Adaptation, EpisodeShape,
    Inner, Learner, MetaLearner, Order,
};
use randbench_core::models::init_params;
use randbench_core::reference::{evaluate_values, RefValue};
use randbench_core::rng::Rng;
use randbench_core::testing::{
    finite_differences, max_rel_diff, random_classes, tiny_few_shot, TINY_MAML,
};
use randbench_core::HostTensor;

#[test]
fn second_order_maml_meta_gradient_matches_finite_differences() {
    let (g, inputs) = tiny_few_shot(&TINY_MAML, 3);
    let expanded = expand_grads(&g).unwrap();
    let inputs: Vec<RefValue> = inputs.iter().map(RefValue::from_host).collect();
    let values = evaluate_values(&expanded, &inputs).unwrap();
    let params = g.outputs().iter().filter(|(n, _)| n.starts_with("grad.")).count();
    assert_eq!(params, 5);
    for p in 0..params {
        let symbolic = &values[2 + p].data;
        let fd = finite_differences(&expanded, 0, &inputs, p, 1e-6).unwrap();
        let err = max_rel_diff(symbolic, &fd);
        assert!(err < 1e-6, "{}: {symbolic:?} vs finite differences {fd:?}", g.outputs()[2 + p].0);
    }
    // First order drops the inner gradients' derivatives: a different, cheaper gradient.
    let first_order =
        Inner::Gradient { adaptation: Adaptation { lr: 0.4, steps: 2 }, order: Order::First };
    let (first, _) = tiny_few_shot(&first_order, 3);
    let first = evaluate_values(&expand_grads(&first).unwrap(), &inputs).unwrap();
    assert!(max_rel_diff(&first[0].data, &values[0].data) < 1e-12, "the same meta-loss");
    let conv = max_rel_diff(&first[2].data, &values[2].data);
    assert!(conv > 1e-3, "first and second order agree on the kernel's gradient ({conv:e})");
}

#[test]
fn the_same_seed_draws_the_same_episodes_and_labels_follow_the_classes() {
    let classes = random_classes(6, 4, 1);
    let shape = EpisodeShape { way: 2, shot: 2, query: 2 };
    let draw = |seed| draw_episodes(&classes, shape, 3, &mut Rng::stream(seed, "e")).unwrap();
    let (a, b, c) = (draw(5), draw(5), draw(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.support.shape(), &[3 * 4, 1, 4, 4]);
    assert_eq!(a.query_labels.as_i64().unwrap(), &[0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]);
    // Within an episode, the support and query images of a class are distinct drawings of it.
    let images = a.support.as_f32().unwrap().chunks(16).chain(a.query.as_f32().unwrap().chunks(16));
    let images: Vec<&[f32]> = images.collect();
    let episode_one = [&images[0..4], &images[12..16]].concat();
    for (i, x) in episode_one.iter().enumerate() {
        assert!(episode_one[i + 1..].iter().all(|y| y != x), "image {i} drawn twice");
        assert!(classes.classes.iter().any(|c| c.iter().any(|y| y == x)), "an image of the set");
    }
    let too_many = EpisodeShape { way: 7, shot: 1, query: 1 };
    let err = draw_episodes(&classes, too_many, 1, &mut Rng::new(0)).unwrap_err();
    assert!(err.to_string().contains("7 classes"), "{err}");
}

#[test]
fn nearest_neighbour_picks_the_closest_support_image() {
    let support = [0.0, 0.0, 1.0, 1.0, 5.0, 5.0];
    let labels = [2, 0, 1];
    let query = [0.9, 1.2, 4.0, 6.0, -1.0, 0.0];
    assert_eq!(nearest_neighbour(&support, &labels, &query, 2), vec![0, 1, 2]);
}

#[test]
fn the_learner_ends_in_one_by_one_maps_on_28_pixel_images() {
    let l = Learner { side: 28, filters: 32, blocks: 4, way: 5 };
    assert_eq!(l.feature_side(), 1);
    let shapes: Vec<Vec<usize>> = l.params().into_iter().map(|p| p.shape).collect();
    assert_eq!(shapes[0], vec![32, 1, 3, 3]);
    assert_eq!(shapes[12], vec![32, 5]);
    let mut g = randbench_core::Graph::new();
    let params: Vec<_> =
        l.params().iter().map(|p| g.input(&p.name, &p.shape, randbench_core::DType::F32)).collect();
    let x = g.input("x", &[3, 1, 28, 28], randbench_core::DType::F32);
    let logits = l.logits(&mut g, &params, x).unwrap();
    assert_eq!(g.shape(logits), &[3, 5]);
}

#[test]
fn a_meta_learner_with_forget_gate_one_and_input_gate_alpha_is_sgd_at_rate_alpha() {
    let learner = Learner { side: 4, filters: 2, blocks: 1, way: 2 };
    let shape = EpisodeShape { way: 2, shot: 2, query: 2 };
    let meta = MetaLearner { hidden: 3, steps: 3 };
    let lstm = Inner::MetaLearner(meta);
    let mut weights = init_params(&lstm.meta_params(&learner), 4);
    // Gate weights 0; σ(40) is 1 in f64, and σ(b) is the rate.
    let b = -1.5f64;
    let alpha = 1.0 / (1.0 + (-b).exp());
    let set = |w: &mut HostTensor, v: f64| {
        *w = HostTensor::f32(w.shape(), vec![v as f32; w.numel()]).unwrap()
    };
    set(&mut weights[2], 0.0);
    set(&mut weights[3], 40.0);
    set(&mut weights[4], 0.0);
    set(&mut weights[5], b);
    let e = draw_episodes(&random_classes(4, 4, 2), shape, 1, &mut Rng::new(5)).unwrap();
    let episode = e.into_tensors();
    let run = |g: &randbench_core::Graph, inputs: &[HostTensor]| {
        evaluate_values(g, &inputs.iter().map(RefValue::from_host).collect::<Vec<_>>()).unwrap()
    };
    let mut lstm_inputs = weights.clone();
    lstm_inputs.extend(episode.iter().cloned());
    let by_lstm = run(
        &expand_grads(&adaptation_graph(&learner, shape, &lstm).unwrap()).unwrap(),
        &lstm_inputs,
    );
    let sgd =
        Inner::Gradient { adaptation: Adaptation { lr: alpha, steps: 3 }, order: Order::First };
    let mut sgd_inputs = weights[6..].to_vec();
    sgd_inputs.extend(episode.iter().cloned());
    let by_sgd =
        run(&expand_grads(&adaptation_graph(&learner, shape, &sgd).unwrap()).unwrap(), &sgd_inputs);
    // The learning rate is an f64 constant on one side and σ(b) from an f32 input on the other.
    let lr_rounding = (alpha - (1.0 / (1.0 + (-(b as f32) as f64).exp()))).abs() / alpha;
    assert!(lr_rounding < 1e-15);
    for k in 0..2 {
        let err = max_rel_diff(&by_lstm[k].data, &by_sgd[k].data);
        assert!(err < 1e-12, "output {k}: {:?} vs SGD {:?}", by_lstm[k].data, by_sgd[k].data);
    }
    // Its gates say so: input α and forget 1 at every update.
    let gates = &by_lstm[2].data;
    assert_eq!(gates.len(), 6);
    for step in gates.chunks(2) {
        assert!((step[0] - alpha).abs() < 1e-15 && step[1] == 1.0, "{step:?}");
    }
}

#[test]
fn fine_tuning_the_head_is_logistic_regression_on_the_fixed_embedding() {
    let learner = Learner { side: 4, filters: 3, blocks: 1, way: 2 };
    let shape = EpisodeShape { way: 2, shot: 3, query: 2 };
    let adaptation = Adaptation { lr: 0.5, steps: 3 };
    let k = learner.body();
    // The body pretrained (here: drawn), the head fresh: zeros, as the harness starts it.
    let mut params = init_params(&learner.params(), 6);
    for p in &mut params[k..] {
        *p = HostTensor::zeros(p.shape());
    }
    let e = draw_episodes(&random_classes(4, 4, 3), shape, 1, &mut Rng::new(2)).unwrap();
    let run = |g: &randbench_core::Graph, inputs: &[HostTensor]| {
        let inputs: Vec<RefValue> = inputs.iter().map(RefValue::from_host).collect();
        evaluate_values(&expand_grads(g).unwrap(), &inputs).unwrap()
    };
    let embed = |x: &HostTensor| {
        let g = embedding_graph(&learner, x.shape()[0]).unwrap();
        let mut inputs = params[..k].to_vec();
        inputs.push(x.clone());
        run(&g, &inputs).remove(0)
    };
    let (fs, fq) = (embed(&e.support), embed(&e.query));
    let f = fs.shape[1];
    assert_eq!(f, 3 * 2 * 2);
    // Softmax probabilities of features `x` under the head (w [f, way], b [way]).
    let probabilities = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<Vec<f64>> {
        x.chunks(f)
            .map(|row| {
                let z: Vec<f64> = (0..2)
                    .map(|c| {
                        b[c] + row.iter().enumerate().map(|(i, v)| v * w[i * 2 + c]).sum::<f64>()
                    })
                    .collect();
                let top = z.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = z.iter().map(|v| (v - top).exp()).sum();
                z.iter().map(|v| (v - top).exp() / sum).collect()
            })
            .collect()
    };
    let (mut w, mut b) = (vec![0.0; f * 2], vec![0.0; 2]);
    let ys = e.support_labels.as_i64().unwrap();
    for _ in 0..adaptation.steps {
        let p = probabilities(&fs.data, &w, &b);
        let n = ys.len() as f64;
        for (j, (row, &y)) in fs.data.chunks(f).zip(ys).enumerate() {
            for c in 0..2 {
                let d = (p[j][c] - f64::from(u8::from(y == c as i64))) / n;
                b[c] -= adaptation.lr * d;
                for i in 0..f {
                    w[i * 2 + c] -= adaptation.lr * d * row[i];
                }
            }
        }
    }
    let yq = e.query_labels.as_i64().unwrap();
    let p = probabilities(&fq.data, &w, &b);
    let loss = -yq.iter().enumerate().map(|(j, &y)| p[j][y as usize].ln()).sum::<f64>() / 4.0;
    let episode = e.into_tensors();
    let mut inputs = params.clone();
    inputs.extend(episode.iter().cloned());
    let adapt = |whole| {
        let inner = Inner::FineTune { adaptation, whole };
        run(&adaptation_graph(&learner, shape, &inner).unwrap(), &inputs)[0].data[0]
    };
    let head = adapt(false);
    // The graph's constants (the rate, the means' 1/n) are f32.
    assert!((head - loss).abs() < 1e-6 * loss.abs(), "{head} against {loss} by hand");
    // The whole network moves its body too after the first step (the zero head passes no
    // gradient to the body at first).
    let whole = adapt(true);
    assert!((whole - head).abs() > 1e-3, "the whole network: {whole}, the head: {head}");
}
