//! The learned optimizer's tables: held-out losses of every optimizer (a row per problem,
//! optimizer and backend), and meta-training's cost per backend.

use super::{Family, Metrics, LEARNED};
use crate::families::Entry;
use crate::report::{first_appearance, Column, Table};
use randbench_core::units::Seconds;
use randbench_schema::CellResult;

type Row<'a> = Entry<'a, Family>;

fn or_dash<T>(x: Option<T>, f: impl FnOnce(T) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".into())
}

fn loss(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// The first seed's cell of a backend (tables show one seed; more seeds add rows to results).
fn cell_of<'a>(rs: &'a [Row<'a>], backend: randbench_core::BackendId) -> Option<&'a Row<'a>> {
    rs.iter().find(|r| r.result.cell.backend == backend)
}

pub fn all(rs: &[Row]) -> Vec<Table> {
    vec![held_out(rs), meta_training(rs)]
}

fn held_out(rs: &[Row]) -> Table {
    let backends = first_appearance(rs.iter().map(|r| r.result.cell.backend));
    let mut header =
        vec![Column::plain("problem"), Column::plain("optimizer"), Column::plain("backend")];
    header.extend(["lr", "last-step loss [95% CI]", "× adam [95% CI]"].map(Column::figure));
    let first = rs[0].metrics;
    let problems: Vec<(String, usize)> = first_appearance(
        rs.iter().flat_map(|r| r.metrics.evaluations.iter().map(|e| (e.problem.clone(), e.steps))),
    );
    let optimizers = first_appearance(rs.iter().flat_map(|r| {
        r.metrics.evaluations.iter().flat_map(|e| e.curves.iter().map(|c| c.optimizer.clone()))
    }));
    let mut rows = Vec::new();
    for (problem, steps) in &problems {
        for opt in &optimizers {
            for &b in &backends {
                let eval = cell_of(rs, b)
                    .and_then(|r| r.metrics.evaluations.iter().find(|e| &e.problem == problem));
                let curve = eval.and_then(|e| e.curves.iter().find(|c| &c.optimizer == opt));
                let mut row =
                    vec![format!("{problem} ({steps} steps)"), opt.clone(), b.to_string()];
                row.push(or_dash(curve.and_then(|c| c.lr), |lr| format!("{lr:.0e}")));
                row.push(or_dash(curve, |c| match (c.final_mean(), c.lo.last(), c.hi.last()) {
                    (Some(m), Some(Some(lo)), Some(Some(hi))) => {
                        format!("{} [{}, {}]", loss(m), loss(*lo), loss(*hi))
                    }
                    _ => "not finite".into(),
                }));
                let ratio = eval.and_then(|e| e.ratio_to_adam).filter(|_| opt == LEARNED);
                row.push(or_dash(ratio, |r| {
                    format!("{:.3} [{:.3}, {:.3}]", r.estimate, r.lo, r.hi)
                }));
                rows.push(row);
            }
        }
    }
    let held = first.evaluations.first().map(|e| e.problems).unwrap_or(0);
    let caption = format!(
        "{} ({} coordinates), learned: {}×{} LSTM, {:?}, output × {}; {held} held-out problems, \
         the same for every optimizer",
        first.problem,
        first.coordinates,
        first.optimizer.layers,
        first.optimizer.hidden,
        first.optimizer.preprocess,
        first.optimizer.output_scale,
    );
    let notes = vec![
        "last-step loss: mean over the held-out problems with its normal 95% interval; lr: the \
         baseline's rate tuned on training problems (mean last-step loss, grid 1 … 1e-5 in \
         half-decades); × adam: the learned optimizer's mean last-step loss over tuned Adam's, \
         with a paired bootstrap 95% interval over the problems."
            .to_string(),
    ];
    let title = format!("{} / held-out", rs[0].result.cell.workload);
    Table { title, caption, header, rows, notes }
}

fn meta_training(rs: &[Row]) -> Table {
    let backends = first_appearance(rs.iter().map(|r| r.result.cell.backend));
    let memory = first_appearance(
        rs.iter().flat_map(|r| r.metrics.memory_by_unroll.iter().map(|(k, _)| *k)),
    );
    // Thread counts and coordinate-steps/s stay in the results: the table fits a terminal.
    let mut header = vec![Column::plain("backend")];
    header.extend(
        [
            "epochs",
            "meta-training",
            "unrolls/s [IQR]",
            "best val (epoch)",
            "adam val",
            "beat adam at",
        ]
        .map(Column::figure),
    );
    header.extend(memory.iter().map(|k| Column::figure(&format!("memory u{k}"))));
    let mut rows = Vec::new();
    for &b in &backends {
        let Some(r) = cell_of(rs, b) else { continue };
        let m = r.metrics;
        let best = m.best_epoch.and_then(|e| {
            let v = m.validations.iter().find(|v| v.epoch == e)?;
            Some(format!("{} ({e})", loss(v.loss?)))
        });
        let mut row = vec![
            b.to_string(),
            format!("{} [{}]", m.epochs, r.result.status.label()),
            m.meta_seconds.to_string(),
            or_dash(m.unrolls_per_second, |s| format!("{:.1} [{:.1}–{:.1}]", s.median, s.q1, s.q3)),
            best.unwrap_or_else(|| "-".into()),
            or_dash(m.adam_validation_loss, loss),
            or_dash(m.time_to_beat_adam, |t| format!("{} (epoch {})", t.seconds, t.epoch)),
        ];
        for k in &memory {
            let peak = m.memory_by_unroll.iter().find(|(u, _)| u == k).and_then(|(_, p)| *p);
            row.push(or_dash(peak, |p| p.to_string()));
        }
        rows.push(row);
    }
    let first = rs[0].metrics;
    let caption = format!(
        "unrolls of {} steps over horizons of {}, meta-optimizer Adam; seed {}",
        first.unroll, first.horizon, rs[0].result.cell.seed
    );
    let mut notes = vec![
        "meta time: meta-training's timed unrolls only (each one program: the unroll, its outer gradient, \
         the Adam step; warm-up ran before the clock); unrolls/s: median and quartiles over \
         every unroll; beat adam at: meta-training time and epoch when the validation loss \
         first fell below tuned Adam's; memory uN: what compiling and running one unroll program \
         of that length takes (on a GPU the process's peak device memory, on the CPU the \
         growth of the resident set)."
            .to_string(),
    ];
    for r in rs.iter().map(|e| e.result).filter(|r| r.error.is_some()) {
        notes.push(format!(
            "{} seed {}: {}: {}",
            r.cell.backend,
            r.cell.seed,
            r.status.label(),
            r.error.as_deref().unwrap_or("")
        ));
    }
    let title = format!("{} / meta-training", rs[0].result.cell.workload);
    Table { title, caption, header, rows, notes }
}

/// One line about a finished cell.
pub fn headline(r: &CellResult, m: &Metrics) -> String {
    let rate = or_dash(m.unrolls_per_second, |s| format!("{:.1} unrolls/s", s.median));
    let ratio = m
        .evaluations
        .first()
        .and_then(|e| e.ratio_to_adam)
        .map(|x| format!(", × adam {:.3} [{:.3}, {:.3}]", x.estimate, x.lo, x.hi))
        .unwrap_or_default();
    format!(
        "{} after {} epochs ({}), {rate}{ratio}",
        r.status.label(),
        m.epochs,
        Seconds(m.meta_seconds.0)
    )
}
