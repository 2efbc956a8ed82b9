//! Any result line survives being written and read back, numbers that are not finite
//! included, and lines written before the schema had a version still read.

use proptest::prelude::*;
use randbench_core::backend::{BackendId, BackendInfo, Device, Engine, GradMode};
use randbench_core::stats::Better;
use randbench_core::units::{Bytes, Seconds};
use randbench_schema::real::same;
use randbench_schema::results::{self, LineProblem};
use randbench_schema::*;
use std::path::Path;

fn real() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e6..1e6f64
    ]
}

fn real32() -> impl Strategy<Value = f32> {
    prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), -10.0..10.0f32]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::NoFit),
        Just(Status::Diverged),
        Just(Status::Unsupported),
        Just(Status::Error),
        Just(Status::Crashed),
        Just(Status::Oom),
        Just(Status::Timeout),
        Just(Status::Interrupted),
    ]
}

fn backend() -> impl Strategy<Value = BackendId> {
    let engine = prop_oneof![Just(Engine::Candle), Just(Engine::Tch), Just(Engine::Ort)];
    let device = prop_oneof![Just(Device::Cpu), (0usize..8).prop_map(Device::Cuda)];
    (engine, device).prop_map(|(engine, device)| BackendId { engine, device })
}

fn figure() -> impl Strategy<Value = Figure> {
    ("[a-z_]{1,12}", "[a-z/]{0,6}", any::<bool>(), any::<bool>(), 0.0..1.0f64, real()).prop_map(
        |(name, unit, higher, speed, threshold, value)| Figure {
            measure: Measure {
                name: name.into(),
                unit: unit.into(),
                better: if higher { Better::Higher } else { Better::Lower },
                kind: if speed { MeasureKind::Speed } else { MeasureKind::Outcome },
                threshold,
            },
            value,
        },
    )
}

/// JSON a family might write as its metrics (JSON itself has no NaN).
fn payload() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e9..1e9f64).prop_map(serde_json::Value::from),
        "[ -~]{0,10}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn result()(
        family in "[a-z_]{1,10}",
        variant in payload(),
        metrics in payload(),
        seed in any::<u64>(),
        backend in backend(),
        round in 0usize..100,
        native in any::<bool>(),
        status in status(),
        error in proptest::option::of("[ -~]{0,30}"),
        compile in proptest::option::of(0.0..100.0f64),
        host in proptest::option::of(any::<u64>()),
        process_peak in any::<bool>(),
        joules in proptest::option::of(real()),
        losses in prop::collection::vec(real32(), 0..20),
        diverged_at in proptest::option::of(0usize..1000),
        figures in prop::collection::vec(figure(), 0..5),
        label in "[a-z_]{0,12}",
    ) -> CellResult {
        CellResult {
            schema: SCHEMA_VERSION,
            suite: "suite".into(),
            cell: Cell {
                workload: "w".into(),
                seed,
                variant: Tagged::new(family.clone(), variant),
                backend,
                label,
            },
            round,
            grad: if native { GradMode::Native } else { GradMode::Symbolic },
            status,
            error,
            device: "cpu".into(),
            backend_info: BackendInfo::default(),
            compile_seconds: compile.map(Seconds),
            first_step_seconds: None,
            memory: MemoryUse {
                device_peak: None,
                host_peak: host.map(Bytes),
                host_peak_since: if process_peak { PeakSince::Process } else { PeakSince::Cell },
            },
            energy: Energy { cpu_joules: joules, gpu_joules: None, seconds: Some(1.0) },
            step_losses: losses,
            diverged_at,
            started_at: "2026-12-05T00:00:00.000Z".into(),
            busy: vec![BusyProcess { name: "cc".into(), pid: 7, core_percent: 55.0 }],
            metrics: Tagged::new(family, metrics),
            figures,
        }
    }
}

/// Equal, NaN equal to NaN.
fn same_result(a: &CellResult, b: &CellResult) -> bool {
    let floats_a: Vec<f64> = a.step_losses.iter().map(|&x| x as f64).collect();
    let floats_b: Vec<f64> = b.step_losses.iter().map(|&x| x as f64).collect();
    let numbers_same = floats_a.len() == floats_b.len()
        && floats_a.iter().zip(&floats_b).all(|(x, y)| same(*x, *y))
        && a.figures.len() == b.figures.len()
        && a.figures
            .iter()
            .zip(&b.figures)
            .all(|(x, y)| same(x.value, y.value) && x.measure == y.measure)
        && match (a.energy.cpu_joules, b.energy.cpu_joules) {
            (Some(x), Some(y)) => same(x, y),
            (x, y) => x.is_none() && y.is_none(),
        };
    let strip = |r: &CellResult| {
        let mut r = r.clone();
        r.step_losses.clear();
        r.figures.clear();
        r.energy.cpu_joules = None;
        r
    };
    numbers_same && strip(a) == strip(b) && a.cell.label == b.cell.label
}

proptest! {
    #[test]
    fn any_line_reads_back_as_written(r in result()) {
        let dir = tempdir();
        results::append(&dir, &r).unwrap();
        results::append(&dir, &r).unwrap();
        let read = results::read(&dir, &Uncatalogued).unwrap();
        prop_assert!(read.skipped.is_empty(), "{:?}", read.skipped);
        prop_assert_eq!(read.results.len(), 2);
        for back in &read.results {
            prop_assert!(same_result(&r, back), "wrote {:?}\nread {:?}", r, back);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "randbench-schema-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A line as randbench wrote it before the schema had a version (a randomization cell).
const VERSION_0: &str = r#"{"suite":"quick","cell":{"workload":"synthetic-mlp","seed":0,"variant":{"randomization":{"condition":"true_labels","regularizer":{"weight_decay":0.0,"dropout":0.0,"augment":false}}},"backend":"candle-cpu"},"round":0,"grad":"symbolic","status":"ok","device":"cpu","backend_info":{"library":"candle 0.11.1","device_name":"cpu","threads":2},"compile_seconds":0.01,"first_step_seconds":0.002,"memory":{"device_peak":null,"host_peak":401604608},"energy":{},"step_losses":[2.3,1.9],"started_at":"2026-11-30T10:00:00.000Z","metrics":{"randomization":{"epochs":8}}}"#;

#[test]
fn lines_from_before_versions_read_and_a_catalogue_fills_their_figures() {
    struct Fills;
    impl Catalogue for Fills {
        fn upgrade(&self, r: &mut CellResult) -> Result<(), UpgradeError> {
            if r.schema == 0 {
                let epochs = r.metrics.value["epochs"].as_f64().unwrap();
                r.figures = vec![Measure::new(
                    "epochs",
                    "epochs",
                    Better::Lower,
                    MeasureKind::Outcome,
                    0.1,
                )
                .of(epochs)];
                r.cell.label = "true_labels".into();
            }
            Ok(())
        }
        fn measures(&self, _: &str) -> Vec<Measure> {
            vec![]
        }
    }
    let read = results::parse(Path::new("old.jsonl"), &format!("{VERSION_0}\n"), &Fills);
    assert!(read.skipped.is_empty(), "{:?}", read.skipped);
    let r = &read.results[0];
    assert_eq!(r.schema, 0);
    assert_eq!(r.cell.variant.family, "randomization");
    assert_eq!(r.figure("epochs").unwrap().value, 8.0);
    assert_eq!(r.cell.compact(), "candle-cpu synthetic-mlp true_labels s0");
    // Written again, the line is of the current schema and needs no catalogue.
    let mut now = r.clone();
    now.schema = SCHEMA_VERSION;
    let again = serde_json::to_string(&now).unwrap();
    let back = results::parse(Path::new("new.jsonl"), &format!("{again}\n"), &Uncatalogued);
    assert_eq!(back.results[0].figures, r.figures);
}

#[test]
fn a_damaged_line_in_the_middle_is_skipped_and_named_and_the_rest_is_read() {
    let text = format!("{VERSION_0}\n{{\"suite\": \"quick\", garbage\n{VERSION_0}\n{{\"suite\"");
    let read = results::parse(Path::new("r.jsonl"), &text, &Uncatalogued);
    assert_eq!(read.results.len(), 2);
    assert_eq!(read.skipped.len(), 2);
    assert_eq!(read.skipped[0].line, 2);
    assert!(matches!(read.skipped[0].problem, LineProblem::Damaged(_)));
    assert!(read.skipped[0].to_string().starts_with("r.jsonl:2: skipped not a result line"));
    assert!(matches!(read.skipped[1].problem, LineProblem::Truncated(_)));
}

#[test]
fn a_file_with_no_readable_line_is_an_error() {
    let dir = tempdir();
    std::fs::write(dir.join(results::RESULTS_FILE), "garbage\n").unwrap();
    let e = results::read(&dir, &Uncatalogued).unwrap_err();
    assert!(e.to_string().contains("no line of it could be read (1 skipped)"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
