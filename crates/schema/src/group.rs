//! Results grouped as readers need them: by cell, rounds in order, and a cell's figures over
//! its rounds.

use crate::cell::Cell;
use crate::measure::Measure;
use crate::record::CellResult;
use randbench_core::stats::SampleWarning;
use std::collections::BTreeMap;

/// Results grouped by cell in first-appearance order, rounds in order.
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

/// Every figure of a cell's rounds, by name, with its values in round order (rounds that did
/// not run measure nothing).
pub fn figures(rounds: &[CellResult]) -> BTreeMap<String, (Measure, Vec<f64>)> {
    let mut out: BTreeMap<String, (Measure, Vec<f64>)> = BTreeMap::new();
    for r in rounds.iter().filter(|r| r.status.ran()) {
        for f in &r.figures {
            out.entry(f.name().to_string())
                .or_insert_with(|| (f.measure.clone(), vec![]))
                .1
                .push(f.value);
        }
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
