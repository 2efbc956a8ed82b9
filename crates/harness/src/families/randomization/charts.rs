//! The randomization test's charts, after Zhang et al.'s Figure 1: training accuracy against
//! epoch for each condition (1a), and time to fit and test error against the share of
//! corrupted labels (1b, 1c), each engine its own line.

use super::Family;
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::{first_appearance, median, Chart};

type Row<'a> = Entry<'a, Family>;

pub fn all(rs: &[Row]) -> Vec<Chart> {
    let mut out = accuracy_by_epoch(rs);
    out.extend(by_corruption(rs));
    out
}

/// Per backend, the first seed's first round: one line per condition (and regularizer).
fn accuracy_by_epoch(rs: &[Row]) -> Vec<Chart> {
    let workload = &rs[0].result.cell.workload;
    let seed = rs[0].result.cell.seed;
    let first: Vec<&Row> =
        rs.iter().filter(|r| r.result.round == 0 && r.result.cell.seed == seed).collect();
    first_appearance(first.iter().map(|r| r.result.cell.backend))
        .into_iter()
        .map(|backend| {
            let series = first
                .iter()
                .filter(|r| r.result.cell.backend == backend)
                .map(|r| {
                    Polyline::new(
                        r.variant.to_string(),
                        r.metrics
                            .history
                            .iter()
                            .map(|e| (e.epoch as f64, 100.0 * e.train_accuracy))
                            .collect(),
                    )
                })
                .collect();
            Chart {
                title: format!("{workload} on {backend}: training accuracy"),
                caption: format!(
                    "seed {seed}; each condition trains until it fits the training set (after \
                     Zhang et al., Figure 1a)"
                ),
                kind: ChartKind::Lines(Lines {
                    x_label: "epoch".into(),
                    y_label: "training accuracy (%)".into(),
                    log_y: false,
                    series,
                }),
            }
        })
        .collect()
}

/// With two or more shares of corrupted labels (without regularizers): the median over
/// seeds and rounds of time to fit, and of test error, against the share.
fn by_corruption(rs: &[Row]) -> Vec<Chart> {
    let plain: Vec<&Row> = rs
        .iter()
        .filter(|r| {
            r.variant.regularizer.is_none() && r.variant.condition.label_corruption().is_some()
        })
        .collect();
    let levels = first_appearance(
        plain.iter().filter_map(|r| r.variant.condition.label_corruption().map(f64::to_bits)),
    );
    if levels.len() < 2 {
        return vec![];
    }
    let workload = &rs[0].result.cell.workload;
    let backends = first_appearance(plain.iter().map(|r| r.result.cell.backend));
    let line = |figure: &dyn Fn(&Row) -> Option<f64>| -> Vec<Polyline> {
        backends
            .iter()
            .map(|&b| {
                let mut points: Vec<(f64, f64)> = levels
                    .iter()
                    .filter_map(|&bits| {
                        let level = f64::from_bits(bits);
                        let at = plain.iter().filter(|r| {
                            r.result.cell.backend == b
                                && r.variant.condition.label_corruption() == Some(level)
                        });
                        Some((level, median(at.filter_map(|r| figure(r)))?))
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Polyline::new(b.to_string(), points)
            })
            .collect()
    };
    let chart = |title: &str, y_label: &str, caption: &str, series| Chart {
        title: format!("{workload}: {title}"),
        caption: caption.into(),
        kind: ChartKind::Lines(Lines {
            x_label: "share of labels corrupted".into(),
            y_label: y_label.into(),
            log_y: false,
            series,
        }),
    };
    vec![
        chart(
            "time to fit against label corruption",
            "seconds to fit",
            "median over seeds and rounds; a cell that never fitted leaves a gap (after Zhang \
             et al., Figure 1b: random labels cost a small constant factor more)",
            line(&|r: &Row| r.metrics.seconds_to_fit.map(|s| s.0)),
        ),
        chart(
            "test error against label corruption",
            "test error (%)",
            "median over seeds and rounds; chance is 90% for ten classes (after Zhang et al., \
             Figure 1c)",
            line(&|r: &Row| r.metrics.test_accuracy.map(|a| 100.0 * (1.0 - a))),
        ),
    ]
}
