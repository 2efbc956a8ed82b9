//! The learned-optimizer family on every engine this build has: the authors' convergence test,
//! the meta-gradient across engines and gradient modes, weights that move between engines,
//! and determinism.

mod common;

use common::{cpu_backend_ids, Quiet};
use randbench::backends::{with_backend, BackendVisitor};
use randbench::executor::{CellJob, Executor, InProcess};
use randbench::families::l2l::weights;
use randbench::families::Metrics;
use randbench::suite::parse;
use randbench_core::l2l::{unroll, LstmOptimizer, Outer};
use randbench_core::models::init_params;
use randbench_core::testing::{max_rel_diff, meta_inputs, run_on, small_quadratics};
use randbench_core::{Backend, BackendId, Engine, GradMode, HostTensor};

/// Runs the suite's one workload on `backend` in this process, seed 0.
fn run_cell(
    text: &str,
    backend: BackendId,
    artifacts: Option<&std::path::Path>,
) -> randbench_schema::CellResult {
    let suite = parse(text, std::path::Path::new("l2l.yaml")).unwrap();
    let workload = &suite.workloads[0];
    let data = workload.prepare().unwrap();
    let cell = suite.cells(&[backend]).remove(0);
    let grad = if backend.engine == Engine::Ort { GradMode::Symbolic } else { GradMode::Native };
    let job =
        CellJob { suite: &suite, workload, data: &data, cell: &cell, round: 0, grad, artifacts };
    InProcess.execute(&job, &mut Quiet)
}

fn metrics(r: &randbench_schema::CellResult) -> randbench::families::l2l::Metrics {
    match Metrics::of(r).expect("the line reads as its family's") {
        Metrics::LearnedOptimizer(m) => m,
        _ => panic!("a learned-optimizer cell"),
    }
}

/// The authors' convergence_test.py: f(x) = x², x₀ = 1, a net with no LSTM layers and zero
/// initial weights, unrolls of 20, meta-lr 0.01, 500 epochs: the loss must fall below 1e-5.
const SIMPLE: &str = r#"
seeds: [0]
workloads:
  - learned_optimizer:
      problem: {simple: {}}
      optimizer: {layers: 0, preprocess: none, output_scale: 1.0, init: zeros}
      meta: {epochs: 500, horizon: 20, unroll: 20, lr: 0.01, eval_every: 500, validation_problems: 1}
      evaluation: {problems: 1, steps: 20}
      baselines: {rules: [sgd], lrs: [0.1], tuning_problems: 1}
      memory_unrolls: []
"#;

#[test]
fn the_simple_problem_converges_on_every_engine() {
    for id in cpu_backend_ids() {
        let r = run_cell(SIMPLE, id, None);
        assert_eq!(r.status, randbench_schema::Status::Ok, "{id}: {:?}", r.error);
        let m = metrics(&r);
        assert_eq!(m.epochs, 500);
        let learned = &m.evaluations[0].curves[0];
        assert_eq!(learned.optimizer, "learned");
        let last = learned.final_mean().unwrap();
        assert!(last < 1e-5, "{id}: x² after 20 steps of the learned optimizer is {last}");
    }
}

#[test]
fn the_same_seed_gives_the_same_meta_training() {
    let short =
        SIMPLE.replace("epochs: 500", "epochs: 30").replace("eval_every: 500", "eval_every: 10");
    let id = cpu_backend_ids()[0];
    let (a, b) = (run_cell(&short, id, None), run_cell(&short, id, None));
    assert_eq!(a.step_losses.len(), 30);
    assert_eq!(a.step_losses, b.step_losses);
    assert_eq!(metrics(&a).validations.len(), 3);
    let losses = |r: &randbench_schema::CellResult| -> Vec<Option<f64>> {
        metrics(r).validations.iter().map(|v| v.loss).collect()
    };
    assert_eq!(losses(&a), losses(&b));
    let other = short.replace("seeds: [0]", "seeds: [1]");
    // x₀ = 1 whatever the seed, and zero initial weights: the seed changes nothing here, so
    // the quadratic's trajectory is the check that seeds matter.
    let quad = |seed: u64| {
        other
            .replace("problem: {simple: {}}", "problem: {quadratic: {functions: 4, dim: 3}}")
            .replace("seeds: [1]", &format!("seeds: [{seed}]"))
            .replace("layers: 0, preprocess: none, output_scale: 1.0, init: zeros", "hidden: 4")
    };
    let (q0, q0b, q1) =
        (run_cell(&quad(0), id, None), run_cell(&quad(0), id, None), run_cell(&quad(1), id, None));
    assert_eq!(q0.step_losses, q0b.step_losses);
    assert_ne!(q0.step_losses, q1.step_losses);
}

/// The outer gradient of a two-step unroll on each engine and gradient mode.
struct MetaGradient<'a>(&'a randbench_core::Graph, &'a [HostTensor]);

impl BackendVisitor for MetaGradient<'_> {
    type Out = Vec<Vec<f64>>;
    fn visit<B: Backend>(self, b: &B) -> Vec<Vec<f64>> {
        let out = run_on(b, self.0, self.1);
        self.0
            .outputs()
            .iter()
            .zip(out)
            .filter(|((name, _), _)| name.starts_with("grad."))
            .map(|(_, t)| t.as_f32().unwrap().iter().map(|&v| v as f64).collect())
            .collect()
    }
}

#[test]
fn the_outer_gradient_agrees_across_engines_and_gradient_modes() {
    // The paper's optimizer on 16 quadratics: candle's and libtorch's autograd, and the
    // symbolic expansion (the only mode ONNX Runtime has).
    let opt = LstmOptimizer::default();
    let q = small_quadratics(16, 10);
    let g = unroll(&opt, &q, 2, Outer::Gradient, false).unwrap();
    let inputs = meta_inputs(&opt, &q, 2, 3);
    let reference =
        with_backend(cpu_backend_ids()[0], GradMode::Symbolic, MetaGradient(&g, &inputs)).unwrap();
    let mut compared = 0;
    for id in cpu_backend_ids() {
        for mode in [GradMode::Native, GradMode::Symbolic] {
            let got = with_backend(id, mode, MetaGradient(&g, &inputs)).unwrap();
            for (k, (a, b)) in got.iter().zip(&reference).enumerate() {
                let err = max_rel_diff(a, b);
                assert!(err < 1e-4, "{id} {mode:?}: gradient {k} differs by {err:e}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 2);
}

/// θ after five steps of the learned optimizer with weights `phi`.
struct FiveSteps<'a>(&'a [HostTensor]);

impl BackendVisitor for FiveSteps<'_> {
    type Out = Vec<f64>;
    fn visit<B: Backend>(self, b: &B) -> Vec<f64> {
        let opt = LstmOptimizer::default();
        let q = small_quadratics(8, 10);
        let g = unroll(&opt, &q, 5, Outer::None, false).unwrap();
        let mut inputs = self.0.to_vec();
        inputs.extend(meta_inputs(&opt, &q, 5, 4).split_off(self.0.len()));
        let out = run_on(b, &g, &inputs);
        let theta = g.outputs().iter().position(|(n, _)| n == "theta0").unwrap();
        out[theta].as_f32().unwrap().iter().map(|&v| v as f64).collect()
    }
}

#[test]
fn weights_saved_on_one_engine_give_the_same_updates_on_another() {
    let dir = common::scratch("l2l", "weights");
    // Meta-train briefly on the first engine: the run saves its optimizer's weights.
    let short = SIMPLE
        .replace("problem: {simple: {}}", "problem: {quadratic: {functions: 8, dim: 10}}")
        .replace("layers: 0, preprocess: none, output_scale: 1.0, init: zeros", "hidden: 20")
        .replace("epochs: 500", "epochs: 5");
    let ids = cpu_backend_ids();
    let r = run_cell(&short, ids[0], Some(&dir));
    let path = metrics(&r).weights.clone().expect("the weights were saved");
    let opt = LstmOptimizer::default();
    let saved = weights::load(&path, &opt).unwrap();
    assert_ne!(saved, init_params(&opt.params(), 0), "meta-training changed φ");
    let first = with_backend(ids[0], GradMode::Native, FiveSteps(&saved)).unwrap();
    for &id in &ids[1..] {
        let grad = if id.engine == Engine::Ort { GradMode::Symbolic } else { GradMode::Native };
        let got = with_backend(id, grad, FiveSteps(&saved)).unwrap();
        let err = max_rel_diff(&got, &first);
        assert!(err < 1e-4, "{id}: θ after five learned steps differs by {err:e}");
    }
}

#[test]
fn mistakes_in_a_learned_optimizer_workload_name_their_place() {
    let check = |body: &str, expected: &str| {
        let text = format!(
            "seeds: [0]\nworkloads:\n  - learned_optimizer:\n      problem: {{quadratic: {{}}}}\n{body}"
        );
        let err = parse(&text, std::path::Path::new("bad.yaml")).unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml:") && err.contains(expected), "{err}");
    };
    check("      meta: {epochs: 10, unroll: 30}\n", "meta.unroll 30 must divide meta.horizon 100");
    check("      meta: {epochs: 0}\n", "meta.epochs must be at least 1");
    check(
        "      meta: {epochs: 1}\n      variants: [{name: wide, hidden: [40]}]\n",
        "only the mlp problem has `hidden` and `activation`",
    );
    check(
        "      meta: {epochs: 1}\n      load: /nonexistent/phi.safetensors\n",
        "does not exist (a .safetensors file a run saved)",
    );
    check("      meta: {epochs: 1, lr: -1}\n", "meta.lr must be a positive number");
}

#[test]
fn a_saved_optimizer_of_another_configuration_stops_the_run_before_it_starts() {
    let dir = common::scratch("l2l", "foreign");
    let path = dir.join("small.safetensors");
    let small = LstmOptimizer { hidden: 4, ..LstmOptimizer::default() };
    weights::save(&path, &small, &init_params(&small.params(), 0)).unwrap();
    let text = format!(
        "seeds: [0]\nworkloads:\n  - learned_optimizer:\n      problem: {{quadratic: {{}}}}\n      \
         meta: {{epochs: 1}}\n      load: {}\n",
        path.display()
    );
    let suite = parse(&text, std::path::Path::new("load.yaml")).unwrap();
    let err = suite.workloads[0].prepare().err().expect("a foreign file was accepted");
    assert!(err.to_string().contains("hidden: 4"), "{err}");
}
