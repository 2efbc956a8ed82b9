//! The few-shot meta-training steps the `engines` and `peer_pytorch` benches time, in the
//! configuration of scripts/peers/pytorch_maml.py's defaults: the four-block learner (32
//! filters) on 28×28 images, 5-way 1-shot episodes with 15 queries per class, 4 tasks a step,
//! Adam at 1e-3 on the meta-parameters; MAML with one inner step at rate 0.4, second or first
//! order, and the meta-learner LSTM with 20 units and 12 updates (few-shot-omniglot's).

use randbench_core::fewshot::{
    draw_episodes, meta_step_graph, Adaptation, Classes, EpisodeShape, Episodes, Inner, Learner,
    MetaLearner, Order,
};
use randbench_core::l2l::{meta_optimizer, Outer};
use randbench_core::models::init_params;
use randbench_core::rng::Rng;
use randbench_core::{Graph, HostTensor};
use std::collections::HashMap;

pub const LEARNER: Learner = Learner { side: 28, filters: 32, blocks: 4, way: 5 };
pub const SHAPE: EpisodeShape = EpisodeShape { way: 5, shot: 1, query: 15 };
pub const TASKS: usize = 4;
pub const INNER: Adaptation = Adaptation { lr: 0.4, steps: 1 };
pub const META_LEARNER: MetaLearner = MetaLearner { hidden: 20, steps: 12 };
pub const META_LR: f64 = 1e-3;

/// A method the benches time, by the names the benches and the peer give it.
#[derive(Clone, Copy)]
pub struct Method {
    pub inner: Inner,
    /// Its name in both benches: the peer bench's column, the engines bench's group
    /// (`{key}_step_28px_5w1s_t4`).
    pub key: &'static str,
}

pub const METHODS: [Method; 3] = [
    Method {
        inner: Inner::Gradient { adaptation: INNER, order: Order::Second },
        key: "maml_second",
    },
    Method { inner: Inner::Gradient { adaptation: INNER, order: Order::First }, key: "maml_first" },
    Method { inner: Inner::MetaLearner(META_LEARNER), key: "meta_learner" },
];

/// The meta-training step of `inner` and its inputs in the program's order: the
/// meta-parameters from seed 0, Adam's fresh state, and `TASKS` episodes of random images in
/// [0, 1) (fixed: the timing needs only their shapes).
pub fn meta_step(inner: Inner) -> (Graph, Vec<HostTensor>) {
    let outer = Outer::Adam { lr: META_LR };
    let graph = meta_step_graph(&LEARNER, SHAPE, TASKS, &inner, outer).unwrap();
    let specs = inner.meta_params(&LEARNER);
    let mut named: HashMap<String, HostTensor> =
        specs.iter().map(|p| p.name.clone()).zip(init_params(&specs, 0)).collect();
    let shapes: Vec<Vec<usize>> = specs.iter().map(|p| p.shape.clone()).collect();
    let adam = meta_optimizer(META_LR);
    named.extend(adam.state_names(&specs).into_iter().zip(adam.initial_state(&shapes)));
    let side = LEARNER.side;
    let mut rng = Rng::stream(0, "images");
    let mut image = || (0..side * side).map(|_| rng.uniform() as f32).collect::<Vec<f32>>();
    let per_class = SHAPE.shot + SHAPE.query;
    let classes = (0..SHAPE.way).map(|_| (0..per_class).map(|_| image()).collect()).collect();
    let classes = Classes { side, classes };
    let e = draw_episodes(&classes, SHAPE, TASKS, &mut Rng::stream(0, "episodes")).unwrap();
    named.extend(Episodes::INPUTS.map(String::from).into_iter().zip(e.into_tensors()));
    let inputs = graph
        .inputs()
        .iter()
        .map(|&id| named.remove(graph.input_name(id)).expect("every input is made"))
        .collect();
    (graph, inputs)
}
