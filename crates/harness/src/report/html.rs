//! `report.html`: one self-contained page — the environment, warnings, charts as inline SVG
//! and every table. Its content security policy forbids every fetch, so the page opens the
//! same offline and can never call out.

use super::chart::{escape, ChartKind};
use super::{Document, Reporter, Table};
use std::path::Path;

pub struct Html;

const STYLE: &str = "
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.env { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.env dt { font-weight: bold; } dl.env dd { margin: 0; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #555; max-width: 720px; }
.warning { background: #fff4d6; padding: 0.4em 0.8em; border-left: 4px solid #e6a700; }
.notes { font-size: 0.85em; color: #555; }
";

/// A PNG of the run's directory, inline (a data URL: the page stays one file).
fn picture(dir: Option<&Path>, file: &str) -> String {
    match dir.map(|d| std::fs::read(d.join(file))) {
        Some(Ok(bytes)) => format!(
            "<img class=\"picture\" alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
            escape(file),
            base64(&bytes)
        ),
        Some(Err(e)) => {
            format!("<p class=\"warning\">{}: {}</p>\n", escape(file), escape(&e.to_string()))
        }
        None => format!("<p>{}</p>\n", escape(file)),
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn table(t: &Table) -> String {
    let class = |numeric: bool| if numeric { " class=\"num\"" } else { "" };
    let mut out = format!(
        "<h3>{}</h3>\n<p>{}</p>\n<table>\n<thead><tr>",
        escape(&t.title),
        escape(&t.caption)
    );
    for c in &t.header {
        out += &format!("<th{}>{}</th>", class(c.numeric), escape(&c.name));
    }
    out += "</tr></thead>\n<tbody>\n";
    for row in &t.rows {
        out += "<tr>";
        for (v, c) in row.iter().zip(&t.header) {
            out += &format!("<td{}>{}</td>", class(c.numeric), escape(v));
        }
        out += "</tr>\n";
    }
    out += "</tbody>\n</table>\n";
    if !t.notes.is_empty() {
        out += "<ul class=\"notes\">\n";
        for n in &t.notes {
            out += &format!("<li>{}</li>\n", escape(n));
        }
        out += "</ul>\n";
    }
    out
}

impl Reporter for Html {
    fn render(&self, r: &Document) -> String {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; img-src data:\">\n<title>randbench report: {suite}</title>\n\
             <style>{STYLE}</style>\n</head>\n<body>\n<h1>randbench report: {suite}</h1>\n",
            suite = escape(r.suite)
        );
        if let Some(env) = r.env {
            out += "<h2 id=\"environment\">Environment</h2>\n<dl class=\"env\">\n";
            for (what, value) in env.facts() {
                out += &format!("<dt>{}</dt><dd>{}</dd>\n", escape(&what), escape(&value));
            }
            out += "</dl>\n";
        }
        for w in &r.warnings {
            out += &format!("<p class=\"warning\">warning: {}</p>\n", escape(w));
        }
        if !r.charts.is_empty() {
            out += "<h2 id=\"charts\">Charts</h2>\n";
            for c in &r.charts {
                let body = match (&c.kind, c.svg()) {
                    (_, Some(svg)) => svg,
                    (ChartKind::Picture { file }, None) => picture(r.dir, file),
                    (_, None) => String::new(),
                };
                out += &format!(
                    "<figure class=\"chart\">\n<h3>{}</h3>\n{body}<figcaption>{}</figcaption>\n</figure>\n",
                    escape(&c.title),
                    escape(&c.caption)
                );
            }
        }
        out += "<h2 id=\"tables\">Tables</h2>\n";
        for t in &r.tables {
            out += &table(t);
        }
        out += "</body>\n</html>\n";
        out
    }
}
