//! `report.md`: the same tables as Markdown, with the run's environment.

use super::terminal::grid;
use super::{Reporter, Table};
use crate::env::Environment;
use comfy_table::presets::ASCII_MARKDOWN;

pub struct Markdown;

impl Reporter for Markdown {
    fn render(
        &self,
        suite: &str,
        env: Option<&Environment>,
        tables: &[Table],
        warnings: &[String],
    ) -> String {
        let mut out = format!("# randbench report: {suite}\n\n");
        if let Some(e) = env {
            let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
            out += &format!(
                "Run {} on {} ({}, {} logical CPUs, {} memory{}), {}; randbench {} at commit {}{}.\n\n",
                e.started_at,
                or(&e.host),
                or(&e.cpu),
                e.logical_cpus,
                e.memory,
                if e.gpus.is_empty() { String::new() } else { format!(", GPU {}", e.gpus.join("; ")) },
                or(&e.os),
                e.randbench_version,
                or(&e.git_commit),
                if e.git_dirty == Some(true) { " (with uncommitted changes)" } else { "" },
            );
            out += &format!(
                "Machine {} ({}); CPU features: {}; frequency governor: {}.\n\n",
                e.fingerprint(),
                e.hardware(),
                if e.cpu_features.is_empty() {
                    "none listed".into()
                } else {
                    e.cpu_features.join(" ")
                },
                e.governor.as_deref().unwrap_or("not exposed"),
            );
            for (id, info) in &e.backends {
                out += &format!(
                    "- {id}: {}, device {}, {} threads\n",
                    info.library, info.device_name, info.threads
                );
            }
            out += "\n";
        }
        for w in warnings {
            out += &format!("> warning: {w}\n\n");
        }
        for t in tables {
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
