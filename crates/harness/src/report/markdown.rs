//! `report.md`: the same tables as Markdown, with the run's environment.

use super::chart::ChartKind;
use super::terminal::grid;
use super::{Document, Reporter};
use comfy_table::presets::ASCII_MARKDOWN;

pub struct Markdown;

impl Reporter for Markdown {
    fn render(&self, r: &Document) -> String {
        let mut out = format!("# randbench report: {}\n\n", r.suite);
        if let Some(e) = r.env {
            for (what, value) in e.facts() {
                out += &format!("- **{what}**: {value}\n");
            }
            out += "\n";
        }
        for w in &r.warnings {
            out += &format!("> warning: {w}\n\n");
        }
        if !r.charts.is_empty() {
            out +=
                &format!("Charts ({}) are in report.html next to this file.\n\n", r.charts.len());
        }
        for c in &r.charts {
            if let ChartKind::Picture { file } = &c.kind {
                out += &format!("![{}]({file})\n\n{}\n\n", c.title, c.caption);
            }
        }
        for t in &r.tables {
            out += &format!("## {}\n\n{}\n\n", t.title, t.caption);
            out += &grid(t, ASCII_MARKDOWN);
            out += "\n\n";
            for n in &t.notes {
                out += &format!("- {n}\n");
            }
            out += "\n";
        }
        out
    }
}
