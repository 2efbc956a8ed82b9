//! Reports rendered from result lines: comparison tables, one row per condition and one
//! column group per backend. The tables are built once ([`Table`]); each format is a
//! [`Reporter`] in a module of its own.

mod markdown;
mod terminal;

pub use markdown::Markdown;
pub use terminal::Terminal;

use crate::env::Environment;
use crate::results::{CellResult, Status};
use randbench_core::stats::Summary;
use randbench_core::units::Seconds;

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

/// A column heading; `group` is the backend a column belongs to, where it belongs to one.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub group: Option<String>,
    pub name: String,
}

impl Column {
    fn plain(name: &str) -> Self {
        Self { group: None, name: name.to_string() }
    }
}

pub trait Reporter {
    fn render(
        &self,
        suite: &str,
        env: Option<&Environment>,
        tables: &[Table],
        warnings: &[String],
    ) -> String;
}

/// Two backends' losses at a step agree when |a − b| ≤ PARITY_ABS + PARITY_REL·|a|.
pub const PARITY_REL: f64 = 1e-3;
pub const PARITY_ABS: f64 = 1e-5;

const METRICS: [&str; 6] = ["fit", "time to fit", "× true", "train acc", "test acc", "steps/s"];

fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    Summary::of(&xs.collect::<Vec<_>>()).map(|s| s.median)
}

fn percent(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "-".into())
}

/// The status column: epochs to fit, or what went wrong; "k/n" when seeds disagree.
fn fit_cell(cells: &[&CellResult]) -> String {
    let ok: Vec<&&CellResult> = cells.iter().filter(|c| c.status == Status::Ok).collect();
    let epochs = median(ok.iter().filter_map(|c| c.epochs_to_fit.map(|e| e as f64)));
    match (ok.len(), epochs) {
        (n, Some(e)) if n == cells.len() => format!("{e:.0} ep"),
        (0, _) => {
            let first = cells[0];
            let all_same = cells.iter().all(|c| c.status == first.status);
            let label = if all_same { first.status.label() } else { "mixed" };
            match first.status {
                Status::NoFit if all_same => format!("no fit ({} ep)", first.epochs),
                _ => label.to_string(),
            }
        }
        (n, e) => format!(
            "{} ep, {n}/{} ok",
            e.map(|e| format!("{e:.0}")).unwrap_or_default(),
            cells.len()
        ),
    }
}

/// The report's tables: one comparison table per workload, then the parity table.
pub fn tables(results: &[CellResult]) -> Vec<Table> {
    let workloads = first_appearance(results.iter().map(|r| r.workload.as_str()));
    let mut out: Vec<Table> = workloads
        .into_iter()
        .map(|w| workload_table(w, results.iter().filter(|r| r.workload == w).collect()))
        .collect();
    out.extend(parity_table(results));
    out
}

fn first_appearance<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn is_baseline(condition: &str) -> bool {
    condition == "true_labels" || condition == "corrupt_labels_0"
}

fn workload_table(name: &str, rs: Vec<&CellResult>) -> Table {
    let backends = first_appearance(rs.iter().map(|r| r.backend));
    let rows = first_appearance(rs.iter().map(|r| (r.condition.clone(), r.regularizer.clone())));
    let seeds = first_appearance(rs.iter().map(|r| r.seed));
    let with_regularizers = rows.iter().any(|(_, reg)| reg != "none");
    let mut header = vec![Column::plain("condition")];
    if with_regularizers {
        header.push(Column::plain("regularizer"));
    }
    for b in &backends {
        header.extend(
            METRICS.iter().map(|m| Column { group: Some(b.to_string()), name: m.to_string() }),
        );
    }
    let cells = |cond: &str, reg: &str, b| -> Vec<&CellResult> {
        rs.iter()
            .copied()
            .filter(|r| r.condition == cond && r.regularizer == reg && r.backend == b)
            .collect()
    };
    let fit_seconds =
        |cs: &[&CellResult]| median(cs.iter().filter_map(|c| c.seconds_to_fit.map(|s| s.0)));
    let mut table_rows = Vec::new();
    for (cond, reg) in &rows {
        let mut row = vec![cond.clone()];
        if with_regularizers {
            row.push(reg.clone());
        }
        for &b in &backends {
            let cs = cells(cond, reg, b);
            if cs.is_empty() {
                row.extend(METRICS.iter().map(|_| "-".to_string()));
                continue;
            }
            let secs = fit_seconds(&cs);
            let baseline = rows
                .iter()
                .find(|(c, r)| is_baseline(c) && r == reg)
                .and_then(|(c, r)| fit_seconds(&cells(c, r, b)));
            let ratio = match (secs, baseline) {
                (Some(s), Some(base)) if base > 0.0 => format!("{:.2}×", s / base),
                _ => "-".into(),
            };
            row.push(fit_cell(&cs));
            row.push(secs.map(|s| Seconds(s).to_string()).unwrap_or_else(|| "-".into()));
            row.push(ratio);
            row.push(percent(median(cs.iter().filter_map(|c| c.train_accuracy))));
            row.push(percent(median(cs.iter().filter_map(|c| c.test_accuracy))));
            row.push(
                median(cs.iter().filter_map(|c| c.steps_per_second.map(|s| s.median)))
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        table_rows.push(row);
    }
    let first = rs[0];
    let caption = format!(
        "{}, {} training / {} test examples, {} lr {}, batch {}, seed{} {}",
        first.model,
        first.train_examples,
        first.test_examples,
        first.optimizer.name(),
        first.optimizer.lr,
        first.batch,
        if seeds.len() > 1 { "s" } else { "" },
        seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    );
    let mut notes = vec![
        "fit: epochs to reach the target training accuracy; time to fit: timed training steps only (no set-up, no evaluation); × true: time to fit relative to true labels with the same regularizer and backend; steps/s: median over timed steps after warm-up.".to_string(),
    ];
    for b in &backends {
        let total: f64 = rs.iter().filter(|r| r.backend == *b).map(|r| r.train_seconds.0).sum();
        notes.push(format!("{b}: {} of training in all.", Seconds(total)));
    }
    for r in rs.iter().filter(|r| r.error.is_some()) {
        notes.push(format!(
            "{} {} {} seed {}: {}: {}",
            r.backend,
            r.condition,
            r.regularizer,
            r.seed,
            r.status.label(),
            r.error.as_deref().unwrap_or("")
        ));
    }
    Table { title: name.to_string(), caption, header, rows: table_rows, notes }
}

/// Loss-trajectory parity: for every cell run on two or more backends with the same seed, the
/// largest per-step loss difference from the first backend, and the first step where the
/// difference exceeds the tolerance. `None` when no cell ran on two backends.
pub fn parity_table(results: &[CellResult]) -> Option<Table> {
    let keys = first_appearance(
        results
            .iter()
            .map(|r| (r.workload.clone(), r.condition.clone(), r.regularizer.clone(), r.seed)),
    );
    let mut rows = Vec::new();
    for (w, c, reg, seed) in keys {
        let group: Vec<&CellResult> = results
            .iter()
            .filter(|r| {
                r.workload == w && r.condition == c && r.regularizer == reg && r.seed == seed
            })
            .collect();
        let Some((reference, others)) = group.split_first() else { continue };
        for other in others {
            let n = reference.step_losses.len().min(other.step_losses.len());
            let (a, b) = (&reference.step_losses[..n], &other.step_losses[..n]);
            let diffs: Vec<(f64, f64)> =
                a.iter().zip(b).map(|(&x, &y)| (x as f64, (x as f64 - y as f64).abs())).collect();
            let max_abs = diffs.iter().map(|d| d.1).fold(0.0, f64::max);
            let max_rel =
                diffs.iter().map(|(x, d)| d / x.abs().max(f64::MIN_POSITIVE)).fold(0.0, f64::max);
            let first = diffs.iter().position(|(x, d)| *d > PARITY_ABS + PARITY_REL * x.abs());
            let mut row = vec![w.clone(), c.clone()];
            row.push(reg.clone());
            row.extend([
                seed.to_string(),
                format!("{} vs {}", other.backend, reference.backend),
                n.to_string(),
                format!("{max_abs:.2e}"),
                format!("{max_rel:.2e}"),
                first.map(|s| (s + 1).to_string()).unwrap_or_else(|| "none".into()),
            ]);
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let header = [
        "workload",
        "condition",
        "regularizer",
        "seed",
        "backends",
        "steps",
        "max abs Δ loss",
        "max rel Δ",
        "first step over tolerance",
    ]
    .iter()
    .map(|h| Column::plain(h))
    .collect();
    Some(Table {
        title: "parity".into(),
        caption: "per-step training loss of each backend against the first, same seed, same initial weights, same data order".into(),
        header,
        rows,
        notes: vec![format!(
            "tolerance: |Δ| ≤ {PARITY_ABS:e} + {PARITY_REL:e}·|loss|; steps are counted from 1, over the first {} steps of each cell. Trajectories part once losses approach zero, where rounding differences are large relative to the loss.",
            crate::randomization::TRACE_STEPS
        )],
    })
}
