//! The architecture-search tables and charts: what evaluating the space cost each engine
//! (compilation and set-up against training steps), the strategies' regret at the budget,
//! the top architectures retrained, the space's best rows side by side across engines; regret
//! against models and against engine seconds.

use super::search::Band;
use super::{best, median_of, models_per_second, outside_steps};
use super::{Family, Metrics, Row, SearchOutcome, Strategy, Variant};
use crate::families::Entry;
use crate::report::chart::{ChartKind, Lines, Polyline};
use crate::report::{first_appearance, fmt_percent, fmt_value, Chart, Column, Table};
use randbench_core::backend::BackendId;
use randbench_schema::CellResult;

type E<'a> = Entry<'a, Family>;

/// The first round's (backend, seed) experiments, in order.
fn experiments(rs: &[E]) -> Vec<(BackendId, u64)> {
    first_appearance(rs.iter().map(|r| (r.result.cell.backend, r.result.cell.seed)))
}

/// Every row trained for one engine and seed (its table cells and its search cell), round 0.
fn rows_of<'a>(rs: &'a [E<'a>], key: (BackendId, u64)) -> Vec<&'a Row> {
    rs.iter()
        .filter(|r| (r.result.cell.backend, r.result.cell.seed) == key && r.result.round == 0)
        .flat_map(|r| &r.metrics.rows)
        .collect()
}

fn search_of<'a>(rs: &'a [E<'a>], key: (BackendId, u64)) -> Option<&'a SearchOutcome> {
    rs.iter()
        .filter(|r| (r.result.cell.backend, r.result.cell.seed) == key && r.result.round == 0)
        .filter(|r| *r.variant == Variant::Search)
        .find_map(|r| r.metrics.search.as_ref())
}

fn band(b: &Band, scale: f64) -> String {
    format!("{:.2} [{:.2}, {:.2}]", scale * b.mean, scale * b.low, scale * b.high)
}

fn millis(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}", 1e3 * v))
}

pub fn all(rs: &[E]) -> Vec<Table> {
    let Some(first) = rs.first() else { return vec![] };
    let workload = &first.result.cell.workload;
    let space = first.metrics.space;
    let mut out = vec![];

    // What the space cost each engine.
    let mut cost = Vec::new();
    for key in experiments(rs) {
        let rows = rows_of(rs, key);
        if rows.is_empty() {
            continue;
        }
        let best = best(rows.iter().copied()).expect("rows");
        let or_dash = |x: Option<f64>, f: fn(f64) -> String| x.map_or("-".into(), f);
        cost.push(vec![
            key.0.to_string(),
            key.1.to_string(),
            format!("{}/{space}", rows.len()),
            fmt_value(rows.iter().map(|r| r.seconds.0).sum()),
            or_dash(models_per_second(&rows), |v| format!("{v:.2}")),
            millis(median_of(&rows, |r| r.compile_seconds.0)),
            millis(median_of(&rows, |r| r.first_step_seconds.0)),
            millis(median_of(&rows, |r| r.train_seconds.0 / r.steps.max(1) as f64)),
            or_dash(outside_steps(&rows), |v| format!("{:.0}%", 100.0 * v)),
            rows.iter().filter(|r| r.validation_accuracy.is_none()).count().to_string(),
            best.arch.to_string(),
            fmt_percent(best.validation_accuracy),
        ]);
    }
    // A shard of searches alone has no rows: the table cells ran elsewhere.
    if !cost.is_empty() {
        out.push(Table {
            title: format!("{workload}: the space, trained once per engine"),
            caption: format!(
                "every architecture trained by one recipe on {} examples and scored on {} \
             validation examples",
                first.metrics.train_examples, first.metrics.validation_examples
            ),
            header: [
                ("backend", false),
                ("seed", false),
                ("models", true),
                ("seconds", true),
                ("models/s", true),
                ("compile ms (median)", true),
                ("first step ms", true),
                ("step ms", true),
                ("outside steps", true),
                ("diverged", true),
                ("best", false),
                ("validation", true),
            ]
            .iter()
            .map(|&(n, fig)| if fig { Column::figure(n) } else { Column::plain(n) })
            .collect(),
            rows: cost,
            notes: vec![
            "compile: building the step and evaluation graphs and compiling them on the engine; \
             first step: the first training step of each new graph; outside steps: the share \
             of all candidates' time not in training steps (compilation, uploads, evaluation); \
             diverged: candidates whose loss stopped being finite (a search scores them 0)"
                .into(),
        ],
        });
    }

    // The strategies at the budget.
    let mut strategies = Vec::new();
    let mut notes = Vec::new();
    let mut finals = Vec::new();
    for key in experiments(rs) {
        let Some(s) = search_of(rs, key) else { continue };
        for c in &s.curves {
            let last = c.by_models.last().expect("a budget of at least one model");
            strategies.push(vec![
                key.0.to_string(),
                key.1.to_string(),
                c.strategy.to_string(),
                band(last, 100.0),
                band(&c.best, 100.0),
                format!("{}/{}", c.found_best, s.seeds),
                fmt_value(c.seconds.mean),
            ]);
        }
        let versus = |a: Strategy, b: Strategy| -> Option<String> {
            let last = |st: Strategy| s.curve(st).and_then(|c| c.by_models.last());
            let (x, y) = (last(a)?, last(b)?);
            Some(if x.high < y.low {
                format!("{a}'s regret is below {b}'s (the intervals do not overlap)")
            } else if y.high < x.low {
                format!("{b}'s regret is below {a}'s (the intervals do not overlap)")
            } else {
                format!("{a} and {b} cannot be told apart (the intervals overlap)")
            })
        };
        for (a, b) in
            [(Strategy::QLearning, Strategy::Random), (Strategy::QLearning, Strategy::Walk)]
        {
            if let Some(verdict) = versus(a, b) {
                notes.push(format!("{} seed {}: {verdict}", key.0, key.1));
            }
        }
        for f in &s.finals {
            finals.push(vec![
                key.0.to_string(),
                f.arch.to_string(),
                f.params.to_string(),
                fmt_percent(Some(f.validation_accuracy)),
                fmt_percent(f.test_accuracy),
                f.found_by.to_string(),
                fmt_value(f.seconds.0),
            ]);
        }
    }
    if let Some(s) = rs.iter().find_map(|r| r.metrics.search.as_ref()) {
        out.push(Table {
            title: format!("{workload}: search strategies after {} models", s.models),
            caption: format!(
                "{} searches per strategy, each over the same table; regret: the space's best \
                 validation accuracy less the best found (percentage points); mean and 95% \
                 interval over searches",
                s.seeds
            ),
            header: vec![
                Column::plain("backend"),
                Column::plain("seed"),
                Column::plain("strategy"),
                Column::figure("regret"),
                Column::figure("best found"),
                Column::figure("found the best"),
                Column::figure("engine seconds"),
            ],
            rows: strategies,
            notes,
        });
        out.push(Table {
            title: format!("{workload}: the top architectures found, retrained"),
            caption: "each search's best, ranked by validation accuracy; retrained longer from \
                      the same initial weights and scored on the test subset"
                .into(),
            header: vec![
                Column::plain("backend"),
                Column::plain("architecture"),
                Column::figure("parameters"),
                Column::figure("validation"),
                Column::figure("test"),
                Column::figure("found by"),
                Column::figure("seconds"),
            ],
            rows: finals,
            notes: vec!["found by: how many searches (all strategies and seeds) ended on it".into()],
        });
    }

    // The space's best rows, side by side across engines (first seed).
    let keys = experiments(rs);
    let seed = keys.first().map(|k| k.1).unwrap_or(0);
    let engines: Vec<BackendId> = keys.iter().filter(|k| k.1 == seed).map(|k| k.0).collect();
    let tables: Vec<Vec<&Row>> = engines.iter().map(|&b| rows_of(rs, (b, seed))).collect();
    if let Some(lead) = tables.iter().find(|t| !t.is_empty()) {
        let mut ranked: Vec<&Row> = lead.to_vec();
        ranked.sort_by(|a, b| b.score().total_cmp(&a.score()));
        let rows = ranked
            .iter()
            .take(10)
            .map(|r| {
                let mut row = vec![r.arch.to_string(), r.params.to_string()];
                row.extend(tables.iter().map(|t| {
                    fmt_percent(
                        t.iter().find(|x| x.arch == r.arch).and_then(|x| x.validation_accuracy),
                    )
                }));
                row
            })
            .collect();
        let mut header = vec![Column::plain("architecture"), Column::figure("parameters")];
        header.extend(engines.iter().map(|b| Column::figure(&b.to_string())));
        out.push(Table {
            title: format!("{workload}: the space's best ten, on each engine"),
            caption: format!("validation accuracy, seed {seed}; ranked on the first engine"),
            header,
            rows,
            notes: vec![],
        });
    }
    out
}

pub fn charts(rs: &[E]) -> Vec<Chart> {
    let mut out = Vec::new();
    for key in experiments(rs) {
        let Some(s) = search_of(rs, key) else { continue };
        let workload = &rs[0].result.cell.workload;
        let lines = |by_seconds: bool| -> Vec<Polyline> {
            s.curves
                .iter()
                .map(|c| {
                    let xs: Vec<f64> = match by_seconds {
                        true => s.grid.clone(),
                        false => (1..=c.by_models.len()).map(|k| k as f64).collect(),
                    };
                    let bands = if by_seconds { &c.by_seconds } else { &c.by_models };
                    let mut p = Polyline::new(
                        c.strategy.to_string(),
                        xs.iter().zip(bands).map(|(x, b)| (*x, 100.0 * b.mean)).collect(),
                    );
                    p.band = xs
                        .iter()
                        .zip(bands)
                        .map(|(x, b)| (*x, 100.0 * b.low, 100.0 * b.high))
                        .collect();
                    p
                })
                .collect()
        };
        for by_seconds in [false, true] {
            out.push(Chart {
                title: format!(
                    "{workload}: regret against {} — {}, seed {}",
                    if by_seconds { "engine seconds" } else { "models trained" },
                    key.0,
                    key.1
                ),
                caption: format!(
                    "mean over {} searches with its 95% interval; regret: the space's best \
                     validation accuracy ({:.1}%, {}) less the best found",
                    s.seeds,
                    100.0 * s.best_validation_accuracy,
                    s.best
                ),
                kind: ChartKind::Lines(Lines {
                    x_label: if by_seconds { "engine seconds" } else { "models trained" }.into(),
                    y_label: "regret (percentage points)".into(),
                    log_y: false,
                    series: lines(by_seconds),
                }),
            });
        }
    }
    out
}

pub fn headline(r: &CellResult, m: &Metrics) -> String {
    if let Some(s) = &m.search {
        let regret = |st: Strategy| {
            s.curve(st)
                .and_then(|c| c.by_models.last())
                .map_or("-".into(), |b| format!("{:.2}", 100.0 * b.mean))
        };
        let test = s.finals.first().and_then(|f| f.test_accuracy);
        return format!(
            "regret after {} models (points): random {}, Q-learning {}, its walk unlearned {}, \
             evolution {}; top found {} on test",
            s.models,
            regret(Strategy::Random),
            regret(Strategy::QLearning),
            regret(Strategy::Walk),
            regret(Strategy::Evolution),
            fmt_percent(test)
        );
    }
    let rows = m.row_refs();
    match m.best_row() {
        Some(best) => format!(
            "{} models at {:.2}/s, compile {} ms (median), {:.0}% outside steps; best {} {}",
            m.rows.len(),
            models_per_second(&rows).unwrap_or(0.0),
            millis(median_of(&rows, |r| r.compile_seconds.0)),
            100.0 * outside_steps(&rows).unwrap_or(0.0),
            best.arch,
            fmt_percent(best.validation_accuracy)
        ),
        None => format!("{} (no model trained)", r.status.label()),
    }
}
