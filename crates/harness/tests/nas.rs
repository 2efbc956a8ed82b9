//! The architecture-search family: the table of a small space on every CPU engine this build
//! has (same architectures and parameter counts, accuracies within the spread of seeds), and
//! a whole run whose search cell reads the table its table cell wrote.

mod common;

use common::{randbench, run_on_cpu_backends, run_suite, scratch};
use randbench::families::nas::{Metrics as NasMetrics, Strategy};
use randbench::families::{Metrics, Registry};
use randbench_schema::{results, CellResult, Status};
use std::collections::HashMap;

fn suite(seed: u64) -> String {
    format!(
        r#"
seeds: [{seed}]
workloads:
  - architecture_search:
      name: tiny-nas
      data: {{source: synthetic, train: 300, test: 150, image: [1, 8, 8]}}
      validation: 150
      space:
        mlp: {{layers: [0, 1, 2], widths: [8, 16], activations: [relu, tanh]}}
        cnn: {{layers: [1], filters: [4], kernels: [3], hidden: [8]}}
      training: {{epochs: 3, batch: 50, optimizer: {{kind: adam, lr: 0.005}}}}
      search: {{models: 5, seeds: 6, population: 3, sample: 2, replay: 16}}
      final: {{top: 2, epochs: 4}}
"#
    )
}

fn nas(r: &CellResult) -> NasMetrics {
    match Metrics::of(r).expect("the line reads as its family's") {
        Metrics::ArchitectureSearch(m) => m,
        _ => panic!("an architecture-search cell"),
    }
}

/// Validation accuracy by architecture.
fn table(m: &NasMetrics) -> HashMap<String, (usize, f64)> {
    m.rows
        .iter()
        .map(|r| (r.arch.to_string(), (r.params, r.validation_accuracy.expect("trained"))))
        .collect()
}

#[test]
fn every_engine_tabulates_the_same_space_within_the_spread_of_seeds() {
    let by_seed: Vec<Vec<CellResult>> = [0, 1].map(|s| run_on_cpu_backends(&suite(s))).into();
    let first = |s: usize| table(&nas(&by_seed[s][0]));
    let (t0, t1) = (first(0), first(1));
    // 1 linear + 2 activations × (2 + 4) MLPs, and one CNN.
    assert_eq!(t0.len(), 14);
    let n = nas(&by_seed[0][0]).validation_examples as f64;
    for (s, results) in by_seed.iter().enumerate() {
        let lead = first(s);
        for r in results {
            assert_eq!(r.status, Status::Ok, "{}: {:?}", r.cell.backend, r.error);
            let m = nas(r);
            assert!(m.rows.iter().all(|row| row.compile_seconds.0 > 0.0 && row.steps == 18));
            assert!(m.rows.iter().all(|row| row.seconds.0 >= row.train_seconds.0));
            let t = table(&m);
            assert_eq!(t.len(), lead.len(), "{}", r.cell.backend);
            for (arch, (params, acc)) in &t {
                let (lead_params, lead_acc) = lead[arch];
                assert_eq!(*params, lead_params, "{}: {arch}", r.cell.backend);
                // Engines start from the same weights on the same batches: they differ by
                // rounding, less than another seed moves the same architecture.
                let spread = (t0[arch].1 - t1[arch].1).abs().max(2.0 / n);
                assert!(
                    (acc - lead_acc).abs() <= spread,
                    "{} seed {s}: {arch} at {acc} against {lead_acc} (seed spread {spread})",
                    r.cell.backend
                );
            }
        }
    }
}

#[test]
fn the_search_reads_the_table_of_its_run_and_repeats_with_its_seed() {
    let dir = scratch("nas", "search");
    let run = |name: &str| {
        let out = run_suite(&dir, &suite(3), name, &["--backends", "candle-cpu"], &[]);
        let read = results::read(&out, &Registry).unwrap();
        assert!(read.skipped.is_empty());
        read.results
    };
    let (a, b) = (run("a"), run("b"));
    assert_eq!(a.len(), 2, "the table, then the search");
    let (table_cell, search_cell) = (nas(&a[0]), nas(&a[1]));
    assert_eq!(table_cell.rows.len(), 14);
    let s = search_cell.search.as_ref().expect("the search cell searched");
    assert_eq!((s.rows_read, s.rows_trained), (14, 0), "the search trained nothing itself");
    assert!(search_cell.rows.is_empty());
    let best = table_cell.best_row().unwrap();
    assert_eq!(s.best, best.arch);
    for c in &s.curves {
        assert_eq!(c.by_models.len(), 5);
        assert_eq!(c.found.len(), 6);
        let last = c.by_models.last().unwrap();
        assert!(last.mean >= 0.0 && last.low <= last.mean && last.mean <= last.high);
        // Regret falls (or stays) as models are trained.
        assert!(c.by_models.windows(2).all(|w| w[1].mean <= w[0].mean + 1e-12));
    }
    assert!(s.curve(Strategy::QLearning).is_some());
    assert!(!s.finals.is_empty() && s.finals.len() <= 2);
    assert!(s.finals.iter().all(|f| f.test_accuracy.is_some()));
    // Seeded: the same run again gives the same table and the same searches.
    let (table_b, search_b) = (nas(&b[0]), nas(&b[1]));
    assert_eq!(table(&table_b), table(&table_cell));
    let sb = search_b.search.unwrap();
    assert_eq!(
        sb.curves.iter().map(|c| &c.found).collect::<Vec<_>>(),
        s.curves.iter().map(|c| &c.found).collect::<Vec<_>>()
    );
    assert_eq!(
        sb.curves.iter().map(|c| &c.by_models).collect::<Vec<_>>(),
        s.curves.iter().map(|c| &c.by_models).collect::<Vec<_>>()
    );
    // The figures a comparison reads.
    for name in ["candidates_per_second", "compile_seconds_per_model", "best_validation_accuracy"] {
        assert!(a[0].figure(name).is_some(), "{name}");
    }
    for name in [
        "regret_random",
        "regret_q_learning",
        "regret_walk",
        "regret_evolution",
        "final_test_accuracy",
    ] {
        assert!(a[1].figure(name).is_some(), "{name}");
    }
}

#[test]
fn a_workload_that_cannot_run_says_what_to_change_before_anything_runs() {
    let check = |from: &str, to: &str, expected: &str| {
        let text = suite(0).replace(from, to);
        let e = randbench::suite::parse(&text, std::path::Path::new("nas.yaml")).unwrap_err();
        assert!(e.to_string().contains(expected), "{e}");
    };
    check("models: 5,", "models: 50,", "search.models must be 1 to the space's 14 architectures");
    check("kernels: [3]", "kernels: [4]", "odd sizes");
    check("sample: 2", "sample: 9", "sample ≤ population");
    check("synthetic, train: 300, test: 150, image: [1, 8, 8]", "fashion-mnist", "`data.train`");
}

#[test]
fn candidates_that_diverge_are_rows_without_an_accuracy_in_a_readable_run() {
    let dir = scratch("nas", "diverge");
    let text = suite(0).replace("lr: 0.005", "lr: 1.0e30");
    let out = run_suite(&dir, &text, "run", &["--backends", "candle-cpu"], &[]);
    let read = results::read(&out, &Registry).unwrap();
    assert!(read.skipped.is_empty(), "{:?}", read.skipped);
    // A diverged candidate is a finding about the architecture and recipe, not a failed cell.
    assert!(read.results.iter().all(|r| r.status == Status::Ok));
    let table = nas(&read.results[0]);
    assert!(table.rows.iter().any(|r| r.validation_accuracy.is_none()));
    assert!(read.results[0].step_losses.iter().all(|l| l.is_finite()));
    let search = nas(&read.results[1]).search.unwrap();
    assert_eq!(search.rows_read, 14);
    let o = randbench(&["report", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("diverged"));
}
