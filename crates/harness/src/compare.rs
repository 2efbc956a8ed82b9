//! `randbench compare BASELINE CURRENT`: every figure of every cell the two runs share, as the
//! ratio of medians over rounds with its bootstrap interval, the Mann–Whitney p-value and a
//! verdict; the exit code says whether anything regressed, so that CI and cron can act on it.

use crate::cell::{Cell, CellResult, Status};
use crate::families::{self, MeasureKind, MeasureSpec};
use crate::report::{Column, Table};
use crate::results::{self, RunInfo};
use crate::runner::RunError;
use randbench_core::rng::Rng;
use randbench_core::stats::{self, Comparison, SampleWarning, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Exit codes of `randbench compare` (2 is a usage or input error, as for every command).
pub const EXIT_REGRESSED: u8 = 1;
pub const EXIT_TOO_NOISY: u8 = 3;

/// What became of one figure of one cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    Compared(Comparison),
    /// Measured in the baseline, not in the current run: the cell failed or, for an outcome
    /// such as epochs to fit, it no longer reached its target.
    Lost {
        statuses: Vec<Status>,
    },
    /// Measured now, not in the baseline.
    Gained,
}

impl Outcome {
    pub fn regressed(&self) -> bool {
        matches!(self, Outcome::Lost { .. })
            || matches!(self, Outcome::Compared(c) if c.verdict == Verdict::Regressed)
    }

    pub fn too_noisy(&self) -> bool {
        matches!(self, Outcome::Compared(c) if c.verdict == Verdict::TooNoisy)
    }
}

/// One figure of one cell in both runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub cell: Cell,
    pub measure: &'static str,
    pub unit: &'static str,
    pub kind: MeasureKind,
    pub threshold: f64,
    /// Per-round figures, in round order.
    pub baseline: Vec<f64>,
    pub current: Vec<f64>,
    pub outcome: Outcome,
    /// About the current run's figures (too few rounds, spread, a slow first round).
    pub warnings: Vec<String>,
}

impl Row {
    /// The verdict in the figure's own words: faster/slower, better/worse.
    pub fn verdict(&self) -> String {
        match &self.outcome {
            Outcome::Compared(c) => self.kind.verdict_words(c.verdict).to_string(),
            Outcome::Lost { statuses } => {
                let labels: Vec<&str> = statuses.iter().map(|s| s.label()).collect();
                let worse = self.kind.verdict_words(Verdict::Regressed);
                format!("{worse}: no longer measured ({})", labels.join(", "))
            }
            Outcome::Gained => "new".into(),
        }
    }
}

/// Everything `compare` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub baseline: String,
    pub current: String,
    pub rows: Vec<Row>,
    /// Cells only one run has.
    pub notes: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        if self.rows.iter().any(|r| r.outcome.regressed()) {
            EXIT_REGRESSED
        } else if self.rows.iter().any(|r| r.outcome.too_noisy()) {
            EXIT_TOO_NOISY
        } else {
            0
        }
    }

    pub fn table(&self) -> Table {
        let header =
            ["cell", "figure", "baseline", "current", "ratio [95% CI]", "p", "rounds", "verdict"]
                .iter()
                .map(|h| Column::plain(h))
                .collect();
        let median = |xs: &[f64]| stats::median(xs).map(fmt_value).unwrap_or_else(|| "-".into());
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let (ratio, p) = match &r.outcome {
                    Outcome::Compared(c) => (
                        format!("{:.3} [{:.3}, {:.3}]", c.ratio.value, c.ratio.lo, c.ratio.hi),
                        format!("{:.3}", c.p),
                    ),
                    _ => ("-".into(), "-".into()),
                };
                vec![
                    r.cell.compact(),
                    r.measure.to_string(),
                    median(&r.baseline),
                    median(&r.current),
                    ratio,
                    p,
                    format!("{} / {}", r.baseline.len(), r.current.len()),
                    r.verdict(),
                ]
            })
            .collect();
        let mut notes = vec![format!(
            "ratio: current / baseline median over rounds; a change counts when the \
             Mann–Whitney p < {} and the ratio's interval excludes 1, and it exceeds the \
             figure's threshold (5% unless the suite says otherwise)",
            stats::SIGNIFICANCE
        )];
        for r in &self.rows {
            notes.extend(r.warnings.iter().map(|w| format!("{} {}: {w}", r.cell, r.measure)));
        }
        notes.extend(self.notes.iter().cloned());
        Table {
            title: "compare".into(),
            caption: format!("{} (current) against {} (baseline)", self.current, self.baseline),
            header,
            rows,
            notes,
        }
    }
}

/// A figure with about four significant digits, in scientific notation when very large or
/// small.
pub fn fmt_value(x: f64) -> String {
    match x.abs() {
        a if a != 0.0 && !(1e-2..1e5).contains(&a) => format!("{x:.3e}"),
        a if a >= 100.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.3}"),
        _ => format!("{x:.4}"),
    }
}

/// A run directory's results, grouped by cell in first-appearance order, rounds in order.
pub fn by_cell(results: Vec<CellResult>) -> Vec<(Cell, Vec<CellResult>)> {
    let mut out: Vec<(Cell, Vec<CellResult>)> = Vec::new();
    for r in results {
        match out.iter_mut().find(|(c, _)| *c == r.cell) {
            Some((_, rs)) => rs.push(r),
            None => out.push((r.cell.clone(), vec![r])),
        }
    }
    for (_, rs) in &mut out {
        rs.sort_by_key(|r| r.round);
    }
    out
}

/// The other programs busy during any of a cell's rounds, as a warning.
pub fn busy_warning(rounds: &[CellResult]) -> Option<SampleWarning> {
    let mut processes: Vec<String> = Vec::new();
    for p in rounds.iter().flat_map(|r| &r.busy) {
        // One mention per program and pid, however many cells it was busy beside.
        let who = p.who();
        if !processes.contains(&who) {
            processes.push(who);
        }
    }
    (!processes.is_empty()).then_some(SampleWarning::BusyMachine { processes })
}

/// Every figure of a cell's rounds, in round order (rounds that did not run measure nothing).
pub fn figures(rounds: &[CellResult]) -> BTreeMap<&'static str, (&'static MeasureSpec, Vec<f64>)> {
    let mut out: BTreeMap<&'static str, (&'static MeasureSpec, Vec<f64>)> = BTreeMap::new();
    for r in rounds.iter().filter(|r| r.status.ran()) {
        for m in families::measures(r) {
            out.entry(m.spec.name).or_insert((m.spec, vec![])).1.push(m.value);
        }
    }
    out
}

fn load(dir: &Path) -> Result<(Vec<CellResult>, Option<RunInfo>), RunError> {
    let (results, _) = results::read(dir).map_err(|e| RunError::Input(e.to_string()))?;
    if results.is_empty() {
        return Err(RunError::Input(format!("{}: the run has no results", dir.display())));
    }
    let info = RunInfo::read(dir).map_err(|e| RunError::Input(e.to_string()))?;
    Ok((results, info))
}

/// Compares the runs in two directories. `thresholds` (figure name → fraction) override the
/// current run's suite, which overrides each figure's default.
pub fn compare(
    baseline: &Path,
    current: &Path,
    thresholds: &BTreeMap<String, f64>,
) -> Result<Report, RunError> {
    for name in thresholds.keys() {
        if families::measure_named(name).is_none() {
            let known: Vec<&str> = families::all_measures().map(|m| m.name).collect();
            return Err(RunError::Input(format!(
                "--threshold: no figure is named '{name}'; figures: {}",
                known.join(", ")
            )));
        }
    }
    let (base_results, _) = load(baseline)?;
    let (cur_results, info) = load(current)?;
    let suite_thresholds = info.map(|i| i.thresholds).unwrap_or_default();
    let threshold = |spec: &MeasureSpec| {
        thresholds
            .get(spec.name)
            .or_else(|| suite_thresholds.get(spec.name))
            .copied()
            .unwrap_or(spec.threshold)
    };
    let base = by_cell(base_results);
    let cur = by_cell(cur_results);
    // One seeded stream for every bootstrap: the same runs give the same report.
    let mut rng = Rng::stream(0, "compare");
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (cell, cur_rounds) in &cur {
        let Some((_, base_rounds)) = base.iter().find(|(c, _)| c == cell) else {
            notes.push(format!("{cell}: not in the baseline"));
            continue;
        };
        let (before, now) = (figures(base_rounds), figures(cur_rounds));
        let names: Vec<&'static str> =
            before.keys().chain(now.keys().filter(|k| !before.contains_key(*k))).copied().collect();
        for name in names {
            let spec = before.get(name).or_else(|| now.get(name)).expect("a figure of one side").0;
            let b = before.get(name).map(|f| f.1.clone()).unwrap_or_default();
            let c = now.get(name).map(|f| f.1.clone()).unwrap_or_default();
            let t = threshold(spec);
            let outcome = match (b.is_empty(), c.is_empty()) {
                (false, true) => {
                    Outcome::Lost { statuses: cur_rounds.iter().map(|r| r.status).collect() }
                }
                (true, _) => Outcome::Gained,
                (false, false) => match stats::compare(&b, &c, spec.better, t, &mut rng) {
                    Some(cmp) => Outcome::Compared(cmp),
                    // A baseline median of zero: no ratio to take.
                    None => continue,
                },
            };
            let warnings = match spec.kind {
                MeasureKind::Speed => {
                    let mut w = stats::sample_warnings(&c, spec.better);
                    w.extend(busy_warning(cur_rounds));
                    w
                }
                // Seeded outcomes repeat exactly: only their number of rounds matters.
                MeasureKind::Outcome => stats::sample_warnings(&c, spec.better)
                    .into_iter()
                    .filter(|w| matches!(w, SampleWarning::TooFew { .. }))
                    .collect(),
            };
            rows.push(Row {
                cell: cell.clone(),
                measure: spec.name,
                unit: spec.unit,
                kind: spec.kind,
                threshold: t,
                baseline: b,
                current: c,
                outcome,
                warnings: warnings.iter().map(ToString::to_string).collect(),
            });
        }
    }
    for (cell, _) in &base {
        if !cur.iter().any(|(c, _)| c == cell) {
            notes.push(format!("{cell}: in the baseline only (not run this time)"));
        }
    }
    Ok(Report {
        baseline: baseline.display().to_string(),
        current: current.display().to_string(),
        rows,
        notes,
    })
}

/// Parses `--threshold FIGURE=FRACTION`.
pub fn parse_threshold(arg: &str) -> Result<(String, f64), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("'{arg}': write FIGURE=FRACTION, e.g. steps_per_second=0.1"))?;
    let v: f64 = value
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{value}': not a number; e.g. 0.1 for 10%"))?;
    let v = if value.trim().ends_with('%') { v / 100.0 } else { v };
    if !(v > 0.0 && v < 10.0) {
        return Err(format!("'{value}': give a fraction above 0, e.g. 0.1 for 10%"));
    }
    Ok((name.trim().to_string(), v))
}
