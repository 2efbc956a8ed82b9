//! What a run's report shows, from its result lines: each workload's family tables and
//! charts, the rounds table, speed and memory charts, and loss-trajectory parity across
//! backends.

use crate::env::Environment;
use crate::families;
use crate::report::chart::{self, Chart};
use crate::report::{first_appearance, fmt_value, Column, Document, Table};
use randbench_core::backend::BackendId;
use randbench_core::stats::{self, Outliers, Summary};
use randbench_core::units::Seconds;
use randbench_schema::group::{busy_warning, by_cell, figures};
use randbench_schema::{CellResult, MeasureKind, Status};

/// The report of a run's results: each workload's family tables and charts, then the rounds
/// and parity tables and the speed and memory charts, and the warnings given.
pub fn document<'a>(
    suite: &'a str,
    env: Option<&'a Environment>,
    dir: &'a std::path::Path,
    results: &[CellResult],
    warnings: Vec<String>,
) -> Document<'a> {
    let (mut tables, mut charts) = (Vec::new(), Vec::new());
    for w in first_appearance(results.iter().map(|r| r.cell.workload.as_str())) {
        let mine: Vec<&CellResult> = results.iter().filter(|r| r.cell.workload == w).collect();
        let (t, c) = families::presentation(&mine);
        tables.extend(t);
        charts.extend(c);
    }
    tables.extend(setup_table(results));
    tables.extend(rounds_table(results));
    tables.extend(parity_table(results));
    charts.extend(speed_charts(results));
    charts.extend(memory_chart(results));
    Document { suite, env, dir: Some(dir), tables, charts, warnings }
}

/// Two backends' losses at a step agree when |a − b| ≤ PARITY_ABS + PARITY_REL·|a|.
pub const PARITY_REL: f64 = 1e-3;
pub const PARITY_ABS: f64 = 1e-5;

/// Each speed figure's median per cell, with the 95% bootstrap interval of the median over
/// the rounds where there are two or more.
fn speed_charts(results: &[CellResult]) -> Vec<Chart> {
    let by_cell = by_cell(results.to_vec());
    let rounds = results.iter().map(|r| r.round + 1).max().unwrap_or(1);
    let mut charts: Vec<(String, String, Vec<chart::Bar>)> = Vec::new();
    let mut rng = randbench_core::rng::Rng::stream(0, "report");
    for (cell, cell_rounds) in &by_cell {
        for (name, (spec, xs)) in figures(cell_rounds) {
            if spec.kind != MeasureKind::Speed || spec.better != stats::Better::Higher {
                continue;
            }
            let Some(estimate) = stats::bootstrap_median(&xs, 2000, &mut rng) else { continue };
            let bar = chart::Bar {
                label: format!("{} {} s{}", cell.backend, cell.variant_label(), cell.seed),
                value: estimate.value,
                interval: (xs.len() >= 2).then_some((estimate.lo, estimate.hi)),
            };
            let title = format!("{} {name}", cell.workload);
            match charts.iter_mut().find(|c| c.0 == title) {
                Some(c) => c.2.push(bar),
                None => charts.push((title, spec.unit.to_string(), vec![bar])),
            }
        }
    }
    charts
        .into_iter()
        .map(|(title, unit, bars)| Chart {
            caption: if rounds >= 2 {
                format!(
                    "median over {rounds} rounds, whiskers: its 95% bootstrap interval; \
                     longer is faster"
                )
            } else {
                "one round: no interval (run with --rounds 5 or more for 95% intervals); \
                 longer is faster"
                    .into()
            },
            title,
            kind: chart::ChartKind::Bars(chart::Bars { value_label: unit, bars }),
        })
        .collect()
}

/// Peak memory of each cell (first round): the process's resident set, and the device's
/// where a GPU reported it.
fn memory_chart(results: &[CellResult]) -> Option<Chart> {
    let mib = |b: randbench_core::units::Bytes| b.0 as f64 / (1u64 << 20) as f64;
    let bars: Vec<chart::Bar> = results
        .iter()
        .filter(|r| r.round == 0)
        .flat_map(|r| {
            let label = |what: &str| format!("{} {what}", r.cell.compact());
            r.memory
                .host_peak
                .map(|b| chart::Bar { label: label("host"), value: mib(b), interval: None })
                .into_iter()
                .chain(r.memory.device_peak.map(|b| chart::Bar {
                    label: label("device"),
                    value: mib(b),
                    interval: None,
                }))
        })
        .collect();
    (!bars.is_empty()).then(|| Chart {
        title: "peak memory".into(),
        caption: "host: the peak resident memory of the process during the cell; device: the \
                  GPU memory the cell held"
            .into(),
        kind: chart::ChartKind::Bars(chart::Bars { value_label: "MiB".into(), bars }),
    })
}

/// What each engine pays before a cell's timed work, per workload and backend: building and
/// compiling the cell's graphs, and the first step on them. No speed figure includes either.
pub fn setup_table(results: &[CellResult]) -> Option<Table> {
    let mut rows = Vec::new();
    for w in first_appearance(results.iter().map(|r| r.cell.workload.as_str())) {
        let mine = || results.iter().filter(move |r| r.cell.workload == w);
        for b in first_appearance(mine().map(|r| r.cell.backend)) {
            let cells: Vec<&CellResult> = mine().filter(|r| r.cell.backend == b).collect();
            let compile: Vec<f64> =
                cells.iter().filter_map(|r| r.compile_seconds).map(|s| s.0).collect();
            let first: Vec<f64> =
                cells.iter().filter_map(|r| r.first_step_seconds).map(|s| s.0).collect();
            if compile.is_empty() && first.is_empty() {
                continue;
            }
            let spread = |xs: &[f64]| match Summary::of(xs) {
                Some(s) => {
                    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (Seconds(s.median).to_string(), Seconds(max).to_string())
                }
                None => ("-".into(), "-".into()),
            };
            let ((cm, cx), (fm, fx)) = (spread(&compile), spread(&first));
            rows.push(vec![w.to_string(), b.to_string(), cells.len().to_string(), cm, cx, fm, fx]);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let header = ["workload", "backend", "cells", "compile", "max", "first step", "max"]
        .iter()
        .enumerate()
        .map(|(k, h)| if k < 2 { Column::plain(h) } else { Column::figure(h) })
        .collect();
    let notes =
        vec!["compile: building a cell's graphs and the engine's own preparation of them (ONNX \
         Runtime's sessions, libtorch's and candle's op plans, burn's), median and largest over \
         the cells; first step: the first step on them, which pays lazy allocation and kernel \
         choice. Both come before the clock: no speed figure includes them. Architecture \
         search compiles a graph per model, so its cells sum its models' (its own table gives \
         the median per model)."
            .into()];
    Some(Table {
        title: "set-up cost".into(),
        caption: "what each cell paid before its timed work".into(),
        header,
        rows,
        notes,
    })
}

/// With more than one round: every speed figure of every cell over its rounds — median,
/// quartiles, how many rounds it rests on, Tukey outliers and warnings.
pub fn rounds_table(results: &[CellResult]) -> Option<Table> {
    if results.iter().all(|r| r.round == 0) {
        return None;
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (cell, rounds) in by_cell(results.to_vec()) {
        for (name, (spec, xs)) in figures(&rounds) {
            if spec.kind != MeasureKind::Speed {
                continue;
            }
            let Some(s) = Summary::of(&xs) else { continue };
            let outliers = Outliers::of(&xs);
            rows.push(vec![
                cell.compact(),
                name.to_string(),
                fmt_value(s.median),
                format!("{} – {}", fmt_value(s.q1), fmt_value(s.q3)),
                format!("{} of {}", xs.len(), rounds.len()),
                outliers.total().to_string(),
            ]);
            for w in stats::sample_warnings(&xs, spec.better) {
                notes.push(format!("{cell} {name}: {w}"));
            }
        }
        if let Some(w) = busy_warning(&rounds) {
            notes.push(format!("{cell}: {w}"));
        }
    }
    notes.push(
        "each round ran every cell once, the backends taking turns; a figure is the median of \
         the rounds' own figures (rounds that failed measure nothing); outliers: beyond Tukey's \
         fences (1.5 IQR), counted, not dropped"
            .into(),
    );
    let header = ["cell (s: seed)", "figure", "median", "quartiles", "rounds", "outliers"]
        .iter()
        .map(|h| Column::plain(h))
        .collect();
    Some(Table { title: "rounds".into(), caption: "speed over rounds".into(), header, rows, notes })
}

/// How one backend's loss trajectory compares with the reference backend's.
#[derive(Clone, Debug, PartialEq)]
pub enum Parity {
    /// Both ran; the largest differences and the first step over the tolerance, if any.
    Compared { steps: usize, max_abs: f64, max_rel: f64, first_over: Option<usize> },
    /// One side's loss stopped being finite at this step (1-based) while the other's did not,
    /// or at another step.
    Diverged { backend: BackendId, step: usize },
    /// One side has no trajectory: it failed before training.
    Missing { backend: BackendId, status: Status },
    /// One side's trajectory ends early without diverging (it stopped: a timeout, Ctrl-C, an
    /// error): the steps both have agree, the rest was never compared.
    Shorter { backend: BackendId, steps: usize, of: usize },
}

impl Parity {
    pub fn of(reference: &CellResult, other: &CellResult) -> Parity {
        for r in [reference, other] {
            if !r.status.ran() && r.step_losses.is_empty() {
                return Parity::Missing { backend: r.cell.backend, status: r.status };
            }
        }
        let n = reference.step_losses.len().min(other.step_losses.len());
        let (a, b) = (&reference.step_losses[..n], &other.step_losses[..n]);
        let diffs: Vec<(f64, f64)> =
            a.iter().zip(b).map(|(&x, &y)| (x as f64, (x as f64 - y as f64).abs())).collect();
        let first_over =
            diffs.iter().position(|(x, d)| *d > PARITY_ABS + PARITY_REL * x.abs()).map(|s| s + 1);
        // A divergence counts where it happens within the compared steps, unless both sides
        // diverged at the same step (then the trajectories agree to the end).
        let diverged = match (reference.diverged_at, other.diverged_at) {
            (Some(x), Some(y)) if x == y => None,
            (x, y) => [(x, reference), (y, other)]
                .into_iter()
                .filter_map(|(d, r)| d.map(|s| (s, r.cell.backend)))
                .filter(|(s, _)| *s <= n + 1)
                .min(),
        };
        if let Some((step, backend)) = diverged {
            if first_over.is_none_or(|f| step <= f) {
                return Parity::Diverged { backend, step };
            }
        }
        let longest = reference.step_losses.len().max(other.step_losses.len());
        if first_over.is_none() && n < longest {
            let short = if other.step_losses.len() < longest { other } else { reference };
            return Parity::Shorter { backend: short.cell.backend, steps: n, of: longest };
        }
        Parity::Compared {
            steps: n,
            max_abs: diffs.iter().map(|d| d.1).fold(0.0, f64::max),
            max_rel: diffs
                .iter()
                .map(|(x, d)| d / x.abs().max(f64::MIN_POSITIVE))
                .fold(0.0, f64::max),
            first_over,
        }
    }
}

/// Loss-trajectory parity: for every cell run on two or more backends, the largest per-step
/// loss difference from the first backend, and the first step where the difference exceeds
/// the tolerance; a divergence or a missing trajectory is said as such. `None` when no cell
/// ran on two backends.
pub fn parity_table(results: &[CellResult]) -> Option<Table> {
    // Later rounds repeat the first's seeded computation: its trajectories stand for all.
    let results: Vec<&CellResult> = results.iter().filter(|r| r.round == 0).collect();
    let mut rows = Vec::new();
    let mut seen: Vec<&CellResult> = Vec::new();
    for &r in &results {
        if seen.iter().any(|s| s.cell.same_experiment(&r.cell)) {
            continue;
        }
        seen.push(r);
        let group: Vec<&CellResult> =
            results.iter().copied().filter(|o| o.cell.same_experiment(&r.cell)).collect();
        let Some((reference, others)) = group.split_first() else { continue };
        for other in others {
            let mut row = vec![
                r.cell.workload.clone(),
                r.cell.variant_label(),
                r.cell.seed.to_string(),
                format!("{} vs {}", other.cell.backend, reference.cell.backend),
            ];
            let dash = || "-".to_string();
            row.extend(match Parity::of(reference, other) {
                Parity::Compared { steps, max_abs, max_rel, first_over } => [
                    steps.to_string(),
                    format!("{max_abs:.2e}"),
                    format!("{max_rel:.2e}"),
                    first_over.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                ],
                Parity::Diverged { backend, step } => {
                    [dash(), dash(), dash(), format!("{backend} diverged at step {step}")]
                }
                Parity::Missing { backend, status } => {
                    [dash(), dash(), dash(), format!("missing: {backend} {}", status.label())]
                }
                Parity::Shorter { backend, steps, of } => [
                    steps.to_string(),
                    dash(),
                    dash(),
                    format!("{backend} stopped after {steps} of {of} steps"),
                ],
            });
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let header = [
        "workload",
        "variant",
        "seed",
        "backends",
        "steps",
        "max abs Δ loss",
        "max rel Δ",
        "first over",
    ]
    .iter()
    .map(|h| Column::plain(h))
    .collect();
    Some(Table {
        title: "parity".into(),
        caption: "per-step training loss (for a learned optimizer: each unroll's meta-loss) of \
                  each backend against the first, same seed, same initial weights, same data \
                  order"
            .into(),
        header,
        rows,
        notes: vec![format!(
            "first over: the first step whose difference exceeds the tolerance, |Δ| ≤ \
             {PARITY_ABS:e} + {PARITY_REL:e}·|loss|; steps are counted from 1, \
             over the first {} steps of each cell. Rounding differences between engines grow \
             until trajectories part: in training once losses approach zero, in meta-training \
             after about a hundred unrolls, as each engine's optimizer drifts its own way.",
            randbench_schema::TRACE_STEPS
        )],
    })
}
