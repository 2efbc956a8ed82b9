//! Reports: tables and charts built once as a [`Document`], and rendered by one [`Reporter`]
//! per format (terminal, Markdown, HTML), each in a module of its own; with the formatting of
//! values they share. What goes into a run's report is `presentation`'s.

pub mod chart;
mod html;
mod markdown;
mod terminal;

pub use chart::Chart;
pub use html::Html;
pub use markdown::Markdown;
pub use terminal::Terminal;

use crate::env::Environment;
use randbench_core::stats::Summary;

/// A titled grid of text, ready for any format.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub title: String,
    /// A line under the title: what was run.
    pub caption: String,
    pub header: Vec<Column>,
    pub rows: Vec<Vec<String>>,
    /// Notes under the table.
    pub notes: Vec<String>,
}

/// A column heading; figures are right-aligned in the terminal.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub numeric: bool,
}

impl Column {
    pub fn plain(name: &str) -> Self {
        Self { name: name.to_string(), numeric: false }
    }

    /// A column of figures.
    pub fn figure(name: &str) -> Self {
        Self { name: name.to_string(), numeric: true }
    }
}

/// Everything a report shows, whatever its format.
#[derive(Clone, Debug, Default)]
pub struct Document<'a> {
    pub suite: &'a str,
    pub env: Option<&'a Environment>,
    /// The run's directory, where pictures are.
    pub dir: Option<&'a std::path::Path>,
    pub tables: Vec<Table>,
    /// Drawn only where a format can draw (HTML).
    pub charts: Vec<Chart>,
    pub warnings: Vec<String>,
}

impl<'a> Document<'a> {
    /// Tables alone (history, comparisons).
    pub fn tables(suite: &'a str, tables: Vec<Table>) -> Self {
        Document { suite, tables, ..Default::default() }
    }
}

pub trait Reporter {
    fn render(&self, report: &Document) -> String;
}

pub fn first_appearance<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

pub fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    Summary::of(&xs.collect::<Vec<_>>()).map(|s| s.median)
}

/// A fraction as a percentage with one decimal, or "-" where there is none.
pub fn fmt_percent(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
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
