//! Reports rendered from result lines: comparison tables, one row per condition (or problem)
//! and backend, so that a run on three engines fits a terminal, and charts for the HTML page.
//! The tables and charts are built once ([`Report`]); each format is a [`Reporter`] in a
//! module of its own.

pub mod chart;
mod html;
mod markdown;
mod terminal;

pub use chart::Chart;
pub use html::Html;
pub use markdown::Markdown;
pub use terminal::Terminal;

use crate::cell::{CellResult, Status};
use crate::compare;
use crate::env::Environment;
use crate::families;
use crate::families::MeasureKind;
use randbench_core::backend::BackendId;
use randbench_core::stats::{self, Outliers, Summary};

/// A titled grid of text, ready for any format.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub title: String,
    /// A line under the title: what was run.
    pub caption: String,
    pub header: Vec<Column>,
    pub rows: Vec<Vec<String>>,
    /// Notes under the table.
    pub notes: Vec<String>,
}

/// A column heading; figures are right-aligned in the terminal.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub numeric: bool,
}

impl Column {
    pub fn plain(name: &str) -> Self {
        Self { name: name.to_string(), numeric: false }
    }

    /// A column of figures.
    pub fn figure(name: &str) -> Self {
        Self { name: name.to_string(), numeric: true }
    }
}

/// Everything a report shows, whatever its format.
#[derive(Clone, Debug, Default)]
pub struct Report<'a> {
    pub suite: &'a str,
    pub env: Option<&'a Environment>,
    /// The run's directory, where pictures are.
    pub dir: Option<&'a std::path::Path>,
    pub tables: Vec<Table>,
    /// Drawn only where a format can draw (HTML).
    pub charts: Vec<Chart>,
    pub warnings: Vec<String>,
}

impl<'a> Report<'a> {
    /// The report of a run's results: tables, charts, and the warnings given.
    pub fn of(
        suite: &'a str,
        env: Option<&'a Environment>,
        dir: &'a std::path::Path,
        results: &[CellResult],
        warnings: Vec<String>,
    ) -> Self {
        Report {
            suite,
            env,
            dir: Some(dir),
            tables: tables(results),
            charts: charts(results),
            warnings,
        }
    }

    /// Tables alone (history, comparisons).
    pub fn tables(suite: &'a str, tables: Vec<Table>) -> Self {
        Report { suite, tables, ..Default::default() }
    }
}

pub trait Reporter {
    fn render(&self, report: &Report) -> String;
}

/// Two backends' losses at a step agree when |a − b| ≤ PARITY_ABS + PARITY_REL·|a|.
pub const PARITY_REL: f64 = 1e-3;
pub const PARITY_ABS: f64 = 1e-5;

/// The report's tables: each workload's family tables, then the parity table.
pub fn tables(results: &[CellResult]) -> Vec<Table> {
    let workloads = first_appearance(results.iter().map(|r| r.cell.workload.as_str()));
    let mut out: Vec<Table> = Vec::new();
    for w in workloads {
        let mine: Vec<&CellResult> = results.iter().filter(|r| r.cell.workload == w).collect();
        out.extend(families::presentation(&mine).0);
    }
    out.extend(rounds_table(results));
    out.extend(parity_table(results));
    out
}

/// The report's charts: each workload's family charts, then speed and memory per cell.
pub fn charts(results: &[CellResult]) -> Vec<Chart> {
    let workloads = first_appearance(results.iter().map(|r| r.cell.workload.as_str()));
    let mut out: Vec<Chart> = Vec::new();
    for w in &workloads {
        let mine: Vec<&CellResult> = results.iter().filter(|r| r.cell.workload == *w).collect();
        out.extend(families::presentation(&mine).1);
    }
    out.extend(speed_charts(results));
    out.extend(memory_chart(results));
    out
}

/// Each speed figure's median per cell, with the 95% bootstrap interval of the median over
/// the rounds where there are two or more.
fn speed_charts(results: &[CellResult]) -> Vec<Chart> {
    let by_cell = compare::by_cell(results.to_vec());
    let rounds = results.iter().map(|r| r.round + 1).max().unwrap_or(1);
    let mut charts: Vec<(String, &'static str, Vec<chart::Bar>)> = Vec::new();
    let mut rng = randbench_core::rng::Rng::stream(0, "report");
    for (cell, cell_rounds) in &by_cell {
        for (name, (spec, xs)) in compare::figures(cell_rounds) {
            if spec.kind != MeasureKind::Speed || spec.better != stats::Better::Higher {
                continue;
            }
            let Some(estimate) = stats::bootstrap_median(&xs, 2000, &mut rng) else { continue };
            let bar = chart::Bar {
                label: format!("{} {} s{}", cell.backend, cell.variant, cell.seed),
                value: estimate.value,
                interval: (xs.len() >= 2).then_some((estimate.lo, estimate.hi)),
            };
            let title = format!("{} {name}", cell.workload);
            match charts.iter_mut().find(|c| c.0 == title) {
                Some(c) => c.2.push(bar),
                None => charts.push((title, spec.unit, vec![bar])),
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
            kind: chart::ChartKind::Bars(chart::Bars { value_label: unit.into(), bars }),
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

/// With more than one round: every speed figure of every cell over its rounds — median,
/// quartiles, how many rounds it rests on, Tukey outliers and warnings.
pub fn rounds_table(results: &[CellResult]) -> Option<Table> {
    if results.iter().all(|r| r.round == 0) {
        return None;
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (cell, rounds) in compare::by_cell(results.to_vec()) {
        for (name, (spec, xs)) in compare::figures(&rounds) {
            if spec.kind != MeasureKind::Speed {
                continue;
            }
            let Some(s) = Summary::of(&xs) else { continue };
            let outliers = Outliers::of(&xs);
            rows.push(vec![
                cell.compact(),
                name.to_string(),
                compare::fmt_value(s.median),
                format!("{} – {}", compare::fmt_value(s.q1), compare::fmt_value(s.q3)),
                format!("{} of {}", xs.len(), rounds.len()),
                outliers.total().to_string(),
            ]);
            for w in stats::sample_warnings(&xs, spec.better) {
                notes.push(format!("{cell} {name}: {w}"));
            }
        }
        if let Some(w) = compare::busy_warning(&rounds) {
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

pub fn first_appearance<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

pub fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    Summary::of(&xs.collect::<Vec<_>>()).map(|s| s.median)
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
                r.cell.variant.to_string(),
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
            crate::cell::TRACE_STEPS
        )],
    })
}
