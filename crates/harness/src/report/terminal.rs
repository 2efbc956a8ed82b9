//! Tables for the terminal: box drawing, figures right-aligned.

use super::{Document, Reporter, Table};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement};

pub struct Terminal;

pub fn grid(t: &Table, style: comfy_table::TableStyle) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(style).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(t.header.iter().map(|c| Cell::new(&c.name)));
    for row in &t.rows {
        table.add_row(row.iter().enumerate().map(|(i, v)| {
            let cell = Cell::new(v);
            if t.header[i].numeric {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table.to_string()
}

impl Reporter for Terminal {
    fn render(&self, r: &Document) -> String {
        let mut out = String::new();
        // One line of the environment (the files hold all of it): which machine and build.
        if let Some(e) = r.env {
            out += &format!(
                "{}: machine {} ({}), randbench {} at {}\n",
                r.suite,
                e.fingerprint(),
                e.hardware(),
                e.randbench_version,
                e.git_commit.as_deref().map_or("an unknown commit", |c| &c[..c.len().min(10)]),
            );
        }
        for w in &r.warnings {
            out += &format!("warning: {w}\n");
        }
        for t in &r.tables {
            out += &format!("\n{} / {}: {}\n", r.suite, t.title, t.caption);
            out += &grid(t, UTF8_FULL_CONDENSED);
            out += "\n";
            for n in &t.notes {
                out += &format!("  {n}\n");
            }
        }
        out
    }
}
