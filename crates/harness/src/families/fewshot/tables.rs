//! The few-shot tables and chart: test accuracy with its 95% interval per method, episode form
//! and backend, with nearest neighbour and the pretrained network's baselines on the same
//! episodes; meta-training speed; validation accuracy against meta-training time.

use super::{Accuracy, Family, Gates, Method, Metrics, OfficialRuns};
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::{first_appearance, fmt_value, Chart, Column, Table};
use randbench_core::fewshot::Learner;
use randbench_schema::CellResult;

type Row<'a> = Entry<'a, Family>;

/// "4×[conv 3×3 32, batch norm, relu, pool 2] → linear 5".
pub fn describe(l: &Learner) -> String {
    format!("{}×[conv 3×3 {}, batch norm, relu, pool 2] → linear {}", l.blocks, l.filters, l.way)
}

fn accuracy(a: Option<Accuracy>) -> String {
    a.map_or("-".into(), |a| format!("{:.1}% ± {:.1}", 100.0 * a.mean, 100.0 * (a.hi - a.mean)))
}

/// Each cell's first round (of the first seed).
fn firsts<'a>(rs: &'a [Row<'a>]) -> Vec<&'a Row<'a>> {
    let seed = rs[0].result.cell.seed;
    rs.iter().filter(|r| r.result.cell.seed == seed && r.result.round == 0).collect()
}

pub fn all(rs: &[Row]) -> Vec<Table> {
    let firsts = firsts(rs);
    let Some(first) = firsts.first() else { return vec![] };
    let workload = &first.result.cell.workload;
    let m = first.metrics;
    let mut rows = Vec::new();
    for (way, shot) in first_appearance(firsts.iter().map(|r| (r.variant.way, r.variant.shot))) {
        let of_form: Vec<&&Row> =
            firsts.iter().filter(|r| (r.variant.way, r.variant.shot) == (way, shot)).collect();
        for r in &of_form {
            let x = r.metrics;
            if r.variant.method == Method::Pretrained {
                // Not meta-trained: a row per baseline, its steps the pretraining's.
                for s in &x.baselines {
                    let lr = s.lr.map_or(String::new(), |lr| format!(" (lr {lr})"));
                    rows.push(vec![
                        format!("{way}-way {shot}-shot"),
                        format!("{}{lr}", s.baseline),
                        r.result.cell.backend.to_string(),
                        accuracy(Some(s.test)),
                        s.validation.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v)),
                        x.meta_steps.to_string(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
                continue;
            }
            let speed = x.episodes_per_second.map_or("-".into(), |s| {
                format!("{} [{}–{}]", fmt_value(s.median), fmt_value(s.q1), fmt_value(s.q3))
            });
            rows.push(vec![
                format!("{way}-way {shot}-shot"),
                r.variant.method.to_string(),
                r.result.cell.backend.to_string(),
                accuracy(x.test),
                x.best_validation().map_or("-".into(), |v| format!("{:.1}%", 100.0 * v)),
                x.meta_steps.to_string(),
                speed,
                x.seconds_to_target.map_or("-".into(), |s| s.to_string()),
            ]);
        }
        // Nearest neighbour learns nothing and runs on the host: every cell of the form scored
        // it on the same episodes, so one row says it.
        if let Some(r) = of_form.iter().find(|r| r.metrics.nearest_neighbour.is_some()) {
            let dash = || "-".to_string();
            rows.push(vec![
                format!("{way}-way {shot}-shot"),
                "nearest neighbour (pixels)".into(),
                "host".into(),
                accuracy(r.metrics.nearest_neighbour),
                dash(),
                dash(),
                dash(),
                dash(),
            ]);
        }
    }
    let mut tables = vec![Table {
        title: format!("{workload} / test accuracy"),
        caption: format!(
            "{} on {} queries per class, meta-trained on {} episodes a step; tested on episodes \
             of alphabets unseen in meta-training (seed {})",
            m.learner, m.query, m.tasks, first.result.cell.seed
        ),
        header: vec![
            Column::plain("episodes"),
            Column::plain("method"),
            Column::plain("backend"),
            Column::figure("test accuracy ± 95%"),
            Column::figure("best validation"),
            Column::figure("meta steps"),
            Column::figure("episodes/s [q1–q3]"),
            Column::figure("time to target"),
        ],
        rows,
        notes: vec![
            "test accuracy: mean over the test episodes after adapting from the parameters of \
             the best validation, ± the half-width of its 95% interval; every method and \
             backend sees the same episodes"
                .into(),
            "episodes/s: meta-training episodes per second per step (the meta-batch over the \
             step's time, its upload included); time to target: meta-training seconds to the \
             first validation at the workload's target"
                .into(),
            "fine-tune and nearest neighbour (embedding): a network pretrained to classify \
             every meta-training class (meta steps: its pretraining steps), its head replaced \
             by zeros and trained by gradient descent on the support set, alone or with the \
             whole network, at the rate best on the validation episodes (best validation); or \
             nearest neighbour in its body's features"
                .into(),
        ],
    }];
    tables.extend(official_runs(&firsts));
    tables
}

/// Lake's 20 official 20-way one-shot runs, where a 20-way 1-shot cell scored them.
fn official_runs(firsts: &[&Row]) -> Option<Table> {
    let scored: Vec<(&&Row, &OfficialRuns)> =
        firsts.iter().filter_map(|r| Some((r, r.metrics.official_runs.as_ref()?))).collect();
    let (first, _) = scored.first()?;
    let row = |method: String, backend: String, xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let (lo, hi) = xs.iter().fold((1.0f64, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        vec![method, backend, pct(mean), pct(1.0 - mean), pct(lo), pct(hi)]
    };
    let mut rows = Vec::new();
    for (r, o) in &scored {
        let backend = r.result.cell.backend.to_string();
        if !o.method.is_empty() {
            rows.push(row(r.variant.method.to_string(), backend.clone(), &o.method));
        }
        for s in &o.baselines {
            rows.push(row(
                format!("{}: {}", r.variant.method, s.baseline),
                backend.clone(),
                &s.runs,
            ));
        }
    }
    rows.push(row(
        "nearest neighbour (pixels)".into(),
        "host".into(),
        &scored[0].1.nearest_neighbour,
    ));
    Some(Table {
        title: format!("{} / Lake's 20 official one-shot runs", first.result.cell.workload),
        caption: "20-way 1-shot: each run's 20 training images (one per character) the support, \
                  its 20 test images the queries; characters of Omniglot's evaluation alphabets"
            .into(),
        header: vec![
            Column::plain("method"),
            Column::plain("backend"),
            Column::figure("mean accuracy"),
            Column::figure("error"),
            Column::figure("worst run"),
            Column::figure("best run"),
        ],
        rows,
        notes: vec![
            "Lake et al. (Science, 2015) report error rates on these runs of 4.5% for people \
             and 3.3% for their Bayesian program learning"
                .into(),
        ],
    })
}

pub fn charts(rs: &[Row]) -> Vec<Chart> {
    let firsts = firsts(rs);
    let Some(first) = firsts.first() else { return vec![] };
    let workload = &first.result.cell.workload;
    let forms = first_appearance(firsts.iter().map(|r| (r.variant.way, r.variant.shot)));
    let mut charts = validation_charts(workload, &firsts, &forms);
    for (way, shot) in forms {
        let learned: Vec<&&Row> = firsts
            .iter()
            .filter(|r| {
                (r.variant.way, r.variant.shot) == (way, shot) && !r.metrics.gates.is_empty()
            })
            .collect();
        let gate = |name: &str, value: fn(&Gates) -> f64| -> Vec<Polyline> {
            learned
                .iter()
                .map(|r| {
                    let points = r.metrics.gates.iter().enumerate();
                    let points = points.map(|(t, g)| ((t + 1) as f64, value(g))).collect();
                    Polyline::new(format!("{name} on {}", r.result.cell.backend), points)
                })
                .collect()
        };
        for (name, value) in [
            ("input gate", (|g: &Gates| g.input) as fn(&Gates) -> f64),
            ("forget gate", |g| g.forget),
        ] {
            let series = gate(name, value);
            if series.is_empty() {
                continue;
            }
            charts.push(Chart {
                title: format!("{workload}: the meta-learner's {name}, {way}-way {shot}-shot"),
                caption: format!(
                    "mean over the learner's parameters and the test episodes after each update \
                     (Ravi & Larochelle's Figure 2: the {name} the meta-learner learned)"
                ),
                kind: ChartKind::Lines(Lines {
                    x_label: "update".into(),
                    y_label: name.into(),
                    log_y: false,
                    series,
                }),
            });
        }
    }
    charts
}

/// Validation accuracy against meta-training time, per episode form.
fn validation_charts(workload: &str, firsts: &[&Row], forms: &[(usize, usize)]) -> Vec<Chart> {
    forms
        .iter()
        .copied()
        .filter_map(|(way, shot)| {
            let series: Vec<Polyline> = firsts
                .iter()
                .filter(|r| (r.variant.way, r.variant.shot) == (way, shot))
                .filter(|r| !r.metrics.validations.is_empty())
                .map(|r| {
                    let points =
                        r.metrics.validations.iter().map(|v| (v.seconds.0, v.accuracy)).collect();
                    Polyline::new(
                        format!("{} on {}", r.variant.method, r.result.cell.backend),
                        points,
                    )
                })
                .collect();
            (!series.is_empty()).then(|| Chart {
                title: format!("{workload}: {way}-way {shot}-shot meta-training"),
                caption: "mean query accuracy on the validation episodes (the same every time) \
                          against meta-training seconds (timed steps only)"
                    .into(),
                kind: ChartKind::Lines(Lines {
                    x_label: "meta-training seconds".into(),
                    y_label: "validation accuracy".into(),
                    log_y: false,
                    series,
                }),
            })
        })
        .collect()
}

pub fn headline(r: &CellResult, m: &Metrics) -> String {
    if !m.baselines.is_empty() {
        let scores: Vec<String> = m
            .baselines
            .iter()
            .map(|s| format!("{} {}", s.baseline, accuracy(Some(s.test))))
            .collect();
        return format!(
            "{} (nearest neighbour {}), {} pretraining steps",
            scores.join(", "),
            accuracy(m.nearest_neighbour),
            m.meta_steps
        );
    }
    match m.test {
        Some(_) => format!(
            "test {} (nearest neighbour {}), {} meta steps",
            accuracy(m.test),
            accuracy(m.nearest_neighbour),
            m.meta_steps
        ),
        None => format!("{} after {} meta steps", r.status.label(), m.meta_steps),
    }
}
