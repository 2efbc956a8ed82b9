//! A run's figures in the JSON formats continuous-benchmarking services read: Bencher's
//! Metric Format (BMF), and github-action-benchmark's `customSmallerIsBetter` and
//! `customBiggerIsBetter`. Each figure is its median over the run's rounds.

use randbench_core::stats::{Better, Summary};
use randbench_schema::group::{by_cell, figures};
use randbench_schema::results::{self, Catalogue, ResultsError};
use randbench_schema::Measure;
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Bencher Metric Format: {benchmark: {measure: {value, lower_value, upper_value}}}, the
    /// bounds being the quartiles over rounds.
    Bencher,
    /// github-action-benchmark, tool `customSmallerIsBetter`: every figure where lower is
    /// better, and rates as their reciprocals (seconds per step, per unroll).
    GithubSmaller,
    /// github-action-benchmark, tool `customBiggerIsBetter`: every figure where higher is better.
    GithubBigger,
}

/// One figure of one cell over the run's rounds.
struct Figure {
    benchmark: String,
    spec: Measure,
    summary: Summary,
}

/// A run's figures in an exporter's format, and the lines of its results that could not be
/// read (what was exported is the rest).
pub struct Exported {
    pub json: Value,
    pub skipped: Vec<String>,
}

fn collect(
    dir: &Path,
    catalogue: &dyn Catalogue,
) -> Result<(Vec<Figure>, Vec<String>), ResultsError> {
    let read = results::read(dir, catalogue)?;
    let mut out = Vec::new();
    for (cell, rounds) in by_cell(read.results) {
        for (_, (spec, xs)) in figures(&rounds) {
            if let Some(summary) = Summary::of(&xs) {
                out.push(Figure { benchmark: cell.to_string(), spec, summary });
            }
        }
    }
    Ok((out, read.skipped.iter().map(ToString::to_string).collect()))
}

/// The run in `dir` as JSON in `format`.
pub fn export(
    dir: &Path,
    format: Format,
    catalogue: &dyn Catalogue,
) -> Result<Exported, ResultsError> {
    let (figures, skipped) = collect(dir, catalogue)?;
    let json = match format {
        Format::Bencher => {
            let mut benchmarks = Map::new();
            for f in figures {
                let entry = benchmarks.entry(f.benchmark).or_insert_with(|| json!({}));
                entry[&*f.spec.name] = json!({
                    "value": f.summary.median,
                    "lower_value": f.summary.q1,
                    "upper_value": f.summary.q3,
                });
            }
            Value::Object(benchmarks)
        }
        Format::GithubSmaller | Format::GithubBigger => {
            let want = match format {
                Format::GithubBigger => Better::Higher,
                _ => Better::Lower,
            };
            let entries = figures.into_iter().filter_map(|f| {
                let (name, unit, s) = match (f.spec.better, want) {
                    (b, w) if b == w => (f.spec.name.to_string(), f.spec.unit.to_string(), f.summary),
                    // A rate, where smaller is wanted: its reciprocal, seconds per unit.
                    (Better::Higher, Better::Lower) if f.spec.unit.ends_with("/s") => (
                        format!("seconds_per_{}", f.spec.unit.trim_end_matches("s/s")),
                        "s".to_string(),
                        f.summary.reciprocal(),
                    ),
                    _ => return None,
                };
                Some(json!({
                    "name": format!("{} / {name}", f.benchmark),
                    "unit": unit,
                    "value": s.median,
                    "range": format!("{:.4e} to {:.4e} (quartiles over {} rounds)", s.q1, s.q3, s.n),
                }))
            });
            Value::Array(entries.collect())
        }
    };
    Ok(Exported { json, skipped })
}
