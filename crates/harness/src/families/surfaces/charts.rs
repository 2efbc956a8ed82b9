//! The loss-surface charts (Im et al., Figures 2–5): training and test loss along the lines
//! between end points — the optimizers' pairs in one chart, each switch's lines in another.

use super::Family;
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::Chart;

type Row<'a> = Entry<'a, Family>;

pub fn all(rs: &[Row]) -> Vec<Chart> {
    // One engine's lines: the engines agree to rounding (the tables show each).
    let Some(r) = rs.iter().find(|r| r.result.round == 0 && !r.metrics.lines.is_empty()) else {
        return vec![];
    };
    let workload = &r.result.cell.workload;
    let is_switch = |name: &str| name.contains('→');
    let chart = |title: String, caption: &str, test: bool, pick: &dyn Fn(&str, &str) -> bool| {
        let series: Vec<Polyline> = r
            .metrics
            .lines
            .iter()
            .filter(|l| pick(&l.a, &l.b))
            .map(|l| {
                let fits = if test { &l.test } else { &l.train };
                Polyline::new(
                    format!("{} — {}", l.a, l.b),
                    l.alphas.iter().zip(fits).filter_map(|(a, f)| Some((*a, f.loss?))).collect(),
                )
            })
            .collect();
        (!series.is_empty()).then(|| Chart {
            title,
            caption: format!(
                "{caption}; on {}, seed {}",
                r.result.cell.backend, r.result.cell.seed
            ),
            kind: ChartKind::Lines(Lines {
                x_label: "α (0: the first end point, 1: the second)".into(),
                y_label: if test { "test loss" } else { "training loss" }.into(),
                log_y: true,
                series,
            }),
        })
    };
    let mut out = Vec::new();
    for test in [false, true] {
        let which = if test { "test" } else { "training" };
        out.extend(chart(
            format!("{workload}: {which} loss between the optimizers' end points"),
            "a bump between α = 0 and 1 is a barrier: the two ended in different minima",
            test,
            &|a, b| !is_switch(a) && !is_switch(b),
        ));
    }
    out.extend(chart(
        format!("{workload}: training loss from each switched run's end point"),
        "α = 0: the switched run's end; α = 1: the end of the optimizer named second",
        false,
        &|a, _| is_switch(a),
    ));
    out
}
