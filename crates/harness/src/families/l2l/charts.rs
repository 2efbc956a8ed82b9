//! The learned optimizer's charts, after Andrychowicz et al.: loss against step on held-out
//! problems, learned against the tuned baselines, and meta-training's validation loss against
//! time with tuned Adam's as the line to beat.

use super::{Family, LEARNED};
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::fmt_value;
use crate::report::{first_appearance, Chart};

type Row<'a> = Entry<'a, Family>;

pub fn all(rs: &[Row]) -> Vec<Chart> {
    let workload = &rs[0].result.cell.workload;
    let seed = rs[0].result.cell.seed;
    let mut out = Vec::new();
    for backend in first_appearance(rs.iter().map(|r| r.result.cell.backend)) {
        let Some(r) = rs.iter().find(|r| {
            r.result.cell.backend == backend && r.result.cell.seed == seed && r.result.round == 0
        }) else {
            continue;
        };
        for e in &r.metrics.evaluations {
            let series = e
                .curves
                .iter()
                .map(|c| {
                    let at = |v: &[Option<f64>]| -> Vec<(usize, f64)> {
                        v.iter().enumerate().filter_map(|(i, y)| Some((i, (*y)?))).collect()
                    };
                    let name = match c.lr {
                        Some(lr) if c.optimizer != LEARNED => {
                            format!("{} (lr {})", c.optimizer, fmt_value(lr))
                        }
                        _ => c.optimizer.clone(),
                    };
                    Polyline {
                        name,
                        points: at(&c.mean).into_iter().map(|(i, y)| (i as f64, y)).collect(),
                        band: at(&c.lo)
                            .into_iter()
                            .zip(at(&c.hi))
                            .filter(|((i, _), (j, _))| i == j)
                            .map(|((i, lo), (_, hi))| (i as f64, lo, hi))
                            .collect(),
                    }
                })
                .collect();
            out.push(Chart {
                title: format!("{workload} on {backend}: {} over {} steps", e.problem, e.steps),
                caption: format!(
                    "mean loss over {} held-out problems, band: its 95% interval; every \
                     baseline at its tuned learning rate (after Andrychowicz et al., Figures \
                     2–5)",
                    e.problems
                ),
                kind: ChartKind::Lines(Lines {
                    x_label: "step".into(),
                    y_label: "loss".into(),
                    log_y: true,
                    series,
                }),
            });
        }
        let m = r.metrics;
        let learned: Vec<(f64, f64)> =
            m.validations.iter().filter_map(|v| Some((v.seconds.0, v.loss?))).collect();
        if learned.is_empty() {
            continue;
        }
        let mut series = vec![Polyline::new(LEARNED, learned.clone())];
        if let Some(adam) = m.adam_validation_loss {
            let span = [learned[0].0, learned[learned.len() - 1].0];
            series.push(Polyline::new("tuned adam", span.iter().map(|&t| (t, adam)).collect()));
        }
        out.push(Chart {
            title: format!("{workload} on {backend}: meta-training"),
            caption: "the learned optimizer's mean last-step loss on the validation problems \
                      against meta-training time (timed unrolls only); below tuned Adam's \
                      line it beats Adam"
                .into(),
            kind: ChartKind::Lines(Lines {
                x_label: "meta-training seconds".into(),
                y_label: "validation loss".into(),
                log_y: true,
                series,
            }),
        });
    }
    out
}
