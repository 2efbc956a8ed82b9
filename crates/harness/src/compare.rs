//! `randbench compare BASELINE CURRENT`: every figure of every cell the two runs share, as the
//! ratio of medians over rounds with its bootstrap interval, the Mann–Whitney p-value and a
//! verdict; the exit code says whether anything regressed, so that CI and cron can act on it.

use crate::report::{fmt_value, Column, Table};
use randbench_core::rng::Rng;
use randbench_core::stats::{self, Comparison, SampleWarning, Verdict};
use randbench_schema::group::{busy_warning, by_cell, figures};
use randbench_schema::results::{self, Catalogue, ResultsError, RunInfo};
use randbench_schema::{Cell, CellResult, Measure, MeasureKind, Status};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Exit codes of `randbench compare` (2 is a usage or input error, as for every command).
pub const EXIT_REGRESSED: u8 = 1;
pub const EXIT_TOO_NOISY: u8 = 3;
/// Lines of a results file could not be read (and nothing regressed): the comparison is of
/// the rest. `ingest` and `export` exit with it too.
pub const EXIT_SKIPPED_LINES: u8 = 4;

/// Why two runs cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{0}: the run has no results")]
    Empty(String),
    #[error("--threshold: no figure is named '{name}' in these runs; figures: {}", known.join(", "))]
    UnknownFigure { name: String, known: Vec<String> },
}

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
    /// The baseline's median is 0: there is no ratio to take.
    ZeroBaseline,
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
    pub measure: String,
    pub unit: String,
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
            Outcome::ZeroBaseline if stats::median(&self.current) == Some(0.0) => {
                "unchanged (0 in both)".into()
            }
            Outcome::ZeroBaseline => "not judged: the baseline is 0, no ratio".into(),
        }
    }
}

/// Everything `compare` found.
#[derive(Clone, Debug, Serialize)]
pub struct RunComparison {
    pub baseline: String,
    pub current: String,
    pub rows: Vec<Row>,
    /// Cells only one run has.
    pub notes: Vec<String>,
    /// Lines of either results file that could not be read, and why.
    pub skipped: Vec<String>,
}

impl RunComparison {
    pub fn exit_code(&self) -> u8 {
        if self.rows.iter().any(|r| r.outcome.regressed()) {
            EXIT_REGRESSED
        } else if !self.skipped.is_empty() {
            // Damaged input outranks noise: part of a run was not compared at all.
            EXIT_SKIPPED_LINES
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
                    r.measure.clone(),
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
        notes.extend(self.skipped.iter().cloned());
        Table {
            title: "compare".into(),
            caption: format!("{} (current) against {} (baseline)", self.current, self.baseline),
            header,
            rows,
            notes,
        }
    }
}

/// A run's readable results, its `run.json`, and the lines that could not be read.
struct Loaded {
    results: Vec<CellResult>,
    info: Option<RunInfo>,
    skipped: Vec<String>,
}

fn load(dir: &Path, catalogue: &dyn Catalogue) -> Result<Loaded, CompareError> {
    let read = results::read(dir, catalogue)?;
    if read.results.is_empty() {
        return Err(CompareError::Empty(dir.display().to_string()));
    }
    let info = RunInfo::read(dir)?;
    let skipped = read.skipped.iter().map(ToString::to_string).collect();
    Ok(Loaded { results: read.results, info, skipped })
}

/// Compares the runs in two directories. `thresholds` (figure name → fraction) override the
/// current run's suite, which overrides each figure's default.
pub fn compare(
    baseline: &Path,
    current: &Path,
    thresholds: &BTreeMap<String, f64>,
    catalogue: &dyn Catalogue,
) -> Result<RunComparison, CompareError> {
    let base = load(baseline, catalogue)?;
    let cur = load(current, catalogue)?;
    let (base_results, cur_results, info) = (base.results, cur.results, cur.info);
    let mut skipped = base.skipped;
    skipped.extend(cur.skipped);
    let mut known: Vec<String> = first_names(&base_results, &cur_results);
    // Figures the runs' families may report that no cell reached (a target never met).
    let catalogued = (cur_results.iter().chain(&base_results))
        .flat_map(|r| catalogue.measures(&r.metrics.family))
        .chain(info.iter().flat_map(|i| i.measures.clone()));
    for m in catalogued {
        if !known.iter().any(|k| *k == m.name) {
            known.push(m.name.to_string());
        }
    }
    if let Some(name) = thresholds.keys().find(|n| !known.contains(n)) {
        return Err(CompareError::UnknownFigure { name: name.clone(), known });
    }
    let suite_thresholds = info.map(|i| i.thresholds).unwrap_or_default();
    let threshold = |spec: &Measure| {
        thresholds
            .get(&*spec.name)
            .or_else(|| suite_thresholds.get(&*spec.name))
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
        let names: Vec<&String> =
            before.keys().chain(now.keys().filter(|k| !before.contains_key(*k))).collect();
        for name in names {
            let spec = &before.get(name).or_else(|| now.get(name)).expect("a figure of one side").0;
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
                    None => {
                        notes.push(format!(
                            "{cell} {name}: the baseline's median is 0, so no ratio can be \
                             taken; the medians are shown"
                        ));
                        Outcome::ZeroBaseline
                    }
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
                measure: spec.name.to_string(),
                unit: spec.unit.to_string(),
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
    Ok(RunComparison {
        baseline: baseline.display().to_string(),
        current: current.display().to_string(),
        rows,
        notes,
        skipped,
    })
}

/// The names of the figures either run has, in first-appearance order.
fn first_names(a: &[CellResult], b: &[CellResult]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in a.iter().chain(b).flat_map(|r| &r.figures) {
        if !out.iter().any(|n| n == f.name()) {
            out.push(f.name().to_string());
        }
    }
    out
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
