//! The loss-surface tables: where each run ended (a row per end point and backend), the
//! barriers and distances between end points (a row per line and backend), and speed.

use super::{Family, Fit, Metrics};
use crate::families::Entry;
use crate::report::fmt_value;
use crate::report::{first_appearance, Column, Table};
use randbench_schema::CellResult;

type Row<'a> = Entry<'a, Family>;

/// The first seed's first round of each backend (more seeds and rounds add result lines).
fn firsts<'a>(rs: &'a [Row<'a>]) -> Vec<&'a Row<'a>> {
    let seed = rs[0].result.cell.seed;
    let backends = first_appearance(rs.iter().map(|r| r.result.cell.backend));
    backends
        .into_iter()
        .filter_map(|b| {
            rs.iter().find(|r| {
                r.result.cell.backend == b && r.result.cell.seed == seed && r.result.round == 0
            })
        })
        .collect()
}

fn fit_cells(f: Option<Fit>) -> [String; 2] {
    match f {
        Some(f) => [
            f.loss.map_or("not finite".into(), |l| format!("{l:.4}")),
            format!("{:.1}%", 100.0 * f.accuracy),
        ],
        None => ["-".into(), "-".into()],
    }
}

pub fn all(rs: &[Row]) -> Vec<Table> {
    let firsts = firsts(rs);
    let Some(first) = firsts.first() else { return vec![] };
    let m = first.metrics;
    let caption = format!(
        "{}, {} training / {} test examples, batch {}, {} steps a run, from one initial point \
         (seed {})",
        m.model, m.train_examples, m.test_examples, m.batch, m.steps, first.result.cell.seed
    );
    vec![endpoints(&firsts, &caption), lines(&firsts, &caption), speed(&firsts)]
}

fn endpoints(firsts: &[&Row], caption: &str) -> Table {
    let names = first_appearance(
        firsts.iter().flat_map(|r| r.metrics.endpoints.iter().map(|e| e.name.clone())),
    );
    let mut rows = Vec::new();
    for name in &names {
        for r in firsts {
            let Some(e) = r.metrics.endpoint(name) else { continue };
            let mut row = vec![name.clone(), r.result.cell.backend.to_string()];
            match e.diverged_at {
                Some(step) => row.extend([
                    format!("diverged (step {step})"),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
                None => {
                    row.extend(fit_cells(e.train));
                    row.extend(fit_cells(e.test));
                }
            }
            rows.push(row);
        }
    }
    Table {
        title: format!("{} / end points", firsts[0].result.cell.workload),
        caption: caption.to_string(),
        header: vec![
            Column::plain("end point"),
            Column::plain("backend"),
            Column::figure("train loss"),
            Column::figure("train acc"),
            Column::figure("test loss"),
            Column::figure("test acc"),
        ],
        rows,
        notes: vec![
            "a→b@f%: trained with a for that share of the budget, then with b (its state fresh) \
             for the rest, on the same batches as every other run"
                .into(),
        ],
    }
}

fn lines(firsts: &[&Row], caption: &str) -> Table {
    let pairs = first_appearance(
        firsts.iter().flat_map(|r| r.metrics.lines.iter().map(|l| (l.a.clone(), l.b.clone()))),
    );
    let mut rows = Vec::new();
    for (a, b) in &pairs {
        for r in firsts {
            let Some(l) = r.metrics.lines.iter().find(|l| &l.a == a && &l.b == b) else {
                continue;
            };
            let or_dash = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.4}"));
            rows.push(vec![
                format!("{a} — {b}"),
                r.result.cell.backend.to_string(),
                fmt_value(l.distance),
                or_dash(l.train_barrier),
                or_dash(l.test_barrier),
            ]);
        }
    }
    let alphas = firsts[0].metrics.lines.first().map(|l| &l.alphas);
    Table {
        title: format!("{} / lines between end points", firsts[0].result.cell.workload),
        caption: caption.to_string(),
        header: vec![
            Column::plain("line"),
            Column::plain("backend"),
            Column::figure("distance"),
            Column::figure("train barrier"),
            Column::figure("test barrier"),
        ],
        rows,
        notes: vec![format!(
            "θ(α) = (1−α)·θ_a + α·θ_b at {} points from α = {} to {}; barrier: the highest loss \
             on the segment between the two (0 ≤ α ≤ 1) minus the higher end's — above 0, the \
             line climbs a ridge between different minima; distance: ‖θ_a − θ_b‖",
            alphas.map_or(0, |a| a.len()),
            alphas.and_then(|a| a.first()).map_or("-".into(), |v| v.to_string()),
            alphas.and_then(|a| a.last()).map_or("-".into(), |v| v.to_string()),
        )],
    }
}

fn speed(firsts: &[&Row]) -> Table {
    let rows = firsts
        .iter()
        .map(|r| {
            let m: &Metrics = r.metrics;
            vec![
                r.result.cell.backend.to_string(),
                m.steps_per_second.map_or("-".into(), |s| format!("{:.0}", s.median)),
                m.train_seconds.to_string(),
                m.line_examples_per_second.map_or("-".into(), |v| format!("{v:.0}")),
                m.line_seconds.to_string(),
            ]
        })
        .collect();
    Table {
        title: format!("{} / speed", firsts[0].result.cell.workload),
        caption: "training steps of every run; the lines' forward passes (every point of a line \
                  in one program)"
            .into(),
        header: vec![
            Column::plain("backend"),
            Column::figure("steps/s"),
            Column::figure("training"),
            Column::figure("line examples/s"),
            Column::figure("lines"),
        ],
        rows,
        notes: vec![],
    }
}

pub fn headline(r: &CellResult, m: &Metrics) -> String {
    let top = m
        .lines
        .iter()
        .filter_map(|l| Some((l.train_barrier?, l)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match top {
        Some((barrier, l)) => format!(
            "{} end points, {} lines; highest training-loss barrier {barrier:.4} ({} — {})",
            m.endpoints.len(),
            m.lines.len(),
            l.a,
            l.b
        ),
        None => format!("{} after {} end points", r.status.label(), m.endpoints.len()),
    }
}
