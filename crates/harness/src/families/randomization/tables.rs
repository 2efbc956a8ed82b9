//! The randomization test's comparison table: a row per condition (and regularizer) and
//! backend, so that three engines fit an 80–120 column terminal.

use super::Metrics;
use crate::families::Entry;
use crate::report::{first_appearance, fmt_percent, median, Column, Table};
use randbench_core::units::{Bytes, Seconds};
use randbench_schema::{CellResult, Status};

const METRICS: [&str; 7] =
    ["fit", "time to fit", "× true", "train acc", "test acc", "steps/s", "memory"];

type Row<'a> = Entry<'a, super::Family>;

/// The status column: epochs to fit, or what went wrong; "k/n" when seeds disagree.
fn fit_cell(cells: &[Row]) -> String {
    let ok: Vec<&Row> = cells.iter().filter(|c| c.result.status == Status::Ok).collect();
    let epochs = median(ok.iter().filter_map(|c| c.metrics.epochs_to_fit.map(|e| e as f64)));
    match (ok.len(), epochs) {
        (n, Some(e)) if n == cells.len() => format!("{e:.0} ep"),
        (0, _) => {
            let (first, m) = (cells[0].result, cells[0].metrics);
            let all_same = cells.iter().all(|c| c.result.status == first.status);
            match first.status {
                Status::NoFit if all_same => format!("no fit ({} ep)", m.epochs),
                Status::Diverged if all_same => match first.diverged_at {
                    Some(step) => format!("diverged (step {step})"),
                    None => "diverged".into(),
                },
                _ if all_same => first.status.label().to_string(),
                _ => "mixed".into(),
            }
        }
        (n, e) => format!(
            "{} ep, {n}/{} ok",
            e.map(|e| format!("{e:.0}")).unwrap_or_default(),
            cells.len()
        ),
    }
}

/// Peak memory of the cells: the device's where the driver reports it, else the host's.
fn memory_cell(cells: &[Row]) -> String {
    let peak = |r: &CellResult| r.memory.device_peak.or(r.memory.host_peak).map(|b| b.0 as f64);
    median(cells.iter().filter_map(|c| peak(c.result)))
        .map(|b| Bytes(b as u64).to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn comparison(rs: &[Row]) -> Table {
    let backends = first_appearance(rs.iter().map(|r| r.result.cell.backend));
    let variants = first_appearance(rs.iter().map(|r| *r.variant));
    let seeds = first_appearance(rs.iter().map(|r| r.result.cell.seed));
    let with_regularizers = variants.iter().any(|v| !v.regularizer.is_none());
    let threads = first_appearance(rs.iter().map(|r| r.result.backend_info.threads));
    let mut header = vec![Column::plain("condition")];
    if with_regularizers {
        header.push(Column::plain("regularizer"));
    }
    header.push(Column::plain("backend"));
    header.extend(METRICS.iter().map(|m| Column::figure(m)));
    let cells = |v: &super::Variant, b| -> Vec<Row> {
        rs.iter().copied().filter(|r| r.variant == v && r.result.cell.backend == b).collect()
    };
    let fit_seconds =
        |cs: &[Row]| median(cs.iter().filter_map(|c| c.metrics.seconds_to_fit.map(|s| s.0)));
    let mut table_rows = Vec::new();
    for v in &variants {
        for &b in &backends {
            let cs = cells(v, b);
            if cs.is_empty() {
                continue;
            }
            let mut row = vec![v.condition.to_string()];
            if with_regularizers {
                row.push(v.regularizer.to_string());
            }
            // Thread counts differ only when set so; then the backend says its own.
            row.push(match threads.len() {
                1 => b.to_string(),
                _ => format!("{b} ({} threads)", cs[0].result.backend_info.threads),
            });
            let secs = fit_seconds(&cs);
            let baseline = variants
                .iter()
                .find(|o| o.condition.is_baseline() && o.regularizer == v.regularizer)
                .and_then(|o| fit_seconds(&cells(o, b)));
            let ratio = match (secs, baseline) {
                (Some(s), Some(base)) if base > 0.0 => format!("{:.2}×", s / base),
                _ => "-".into(),
            };
            row.push(fit_cell(&cs));
            row.push(secs.map(|s| Seconds(s).to_string()).unwrap_or_else(|| "-".into()));
            row.push(ratio);
            row.push(fmt_percent(median(cs.iter().filter_map(|c| c.metrics.train_accuracy))));
            row.push(fmt_percent(median(cs.iter().filter_map(|c| c.metrics.test_accuracy))));
            row.push(
                median(cs.iter().filter_map(|c| c.metrics.steps_per_second.map(|s| s.median)))
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(memory_cell(&cs));
            table_rows.push(row);
        }
    }
    let (first, m) = (rs[0].result, rs[0].metrics);
    let caption = format!(
        "{}, {} training / {} test examples, {} lr {}, batch {}, seed{} {}",
        m.model,
        m.train_examples,
        m.test_examples,
        m.optimizer.name(),
        m.optimizer.lr,
        m.batch,
        if seeds.len() > 1 { "s" } else { "" },
        seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    );
    let mut notes = vec![
        "fit: epochs to reach the target training accuracy; time to fit: timed training steps \
         only (no set-up, no warm-up, no evaluation); × true: time to fit relative to true \
         labels with the same regularizer and backend; steps/s: median over timed steps \
         (warm-up ran before the clock, on a throwaway state); memory: peak GPU memory \
         (from NVML) on a GPU, else the process's peak resident memory."
            .to_string(),
    ];
    for b in &backends {
        let total: f64 = rs
            .iter()
            .filter(|r| r.result.cell.backend == *b)
            .map(|r| r.metrics.train_seconds.0)
            .sum();
        notes.push(format!(
            "{b}: {} of training in all (compile and first step: the set-up cost table).",
            Seconds(total)
        ));
    }
    for r in rs.iter().map(|e| e.result).filter(|r| r.error.is_some()) {
        notes.push(format!(
            "{} {} seed {}: {}: {}",
            r.cell.backend,
            r.cell.variant_label(),
            r.cell.seed,
            r.status.label(),
            r.error.as_deref().unwrap_or("")
        ));
    }
    Table { title: first.cell.workload.clone(), caption, header, rows: table_rows, notes }
}

/// One line about a finished cell.
pub fn headline(r: &CellResult, m: &Metrics) -> String {
    let fit = match (m.epochs_to_fit, m.seconds_to_fit) {
        (Some(e), Some(s)) => format!("fit in {e} epochs, {s}"),
        _ => format!("{} after {} epochs", r.status.label(), m.epochs),
    };
    let test = m.test_accuracy.map(|a| format!(", test acc {:.1}%", 100.0 * a)).unwrap_or_default();
    format!("{fit}{test}")
}
