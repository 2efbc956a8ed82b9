//! Procurement: machines side by side from the runs in the history — for every target (fit
//! the training set, beat tuned Adam) the time each machine and engine took to reach it, and,
//! from a small price file, what reaching it costs and the energy it takes.
//!
//! The price file (YAML) names machines by their `run --machine` name, host name or
//! fingerprint (or its first characters):
//!
//! ```yaml
//! currency: USD
//! machines:
//!   c7i.2xlarge: {price_per_hour: 0.357, watts: 190}
//!   3f9a0c21: {price_per_hour: 3.72}
//! ```
//!
//! `watts` is the power the machine draws under load; without it, energy comes from the run's
//! own RAPL and NVML counters where it measured them.

use crate::env::Environment;
use crate::history::StoredRun;
use crate::report::{first_appearance, fmt_value, median, Column, Table};
use randbench_core::stats::Better;
use randbench_core::units::Bytes;
use randbench_schema::results::Catalogue;
use randbench_schema::{CellResult, Measure, MeasureKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The suite whose runs `procure` compares unless told otherwise.
pub const DEFAULT_SUITE: &str = "procurement";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    #[serde(default = "default_currency")]
    pub currency: String,
    pub machines: BTreeMap<String, MachinePrice>,
}

fn default_currency() -> String {
    "USD".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePrice {
    pub price_per_hour: f64,
    #[serde(default)]
    pub watts: Option<f64>,
}

/// What is wrong with a price file's contents.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PriceError {
    /// Not YAML, or not of the file's shape (the first line of the parser's message).
    #[error("{0}")]
    Syntax(String),
    #[error("machines.{machine}.price_per_hour: {value} is not a price; give a positive number ({currency} per hour)")]
    Price { machine: String, value: f64, currency: String },
    #[error("machines.{machine}.watts: {value} is not a power; give a positive number of watts, or leave it out to use the measured energy")]
    Watts { machine: String, value: f64 },
}

/// Why a price file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcureError {
    #[error("--prices {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Invalid { path: std::path::PathBuf, source: PriceError },
}

impl Prices {
    pub fn read(path: &Path) -> Result<Prices, ProcureError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProcureError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text)
            .map_err(|source| ProcureError::Invalid { path: path.to_path_buf(), source })
    }

    pub fn parse(text: &str) -> Result<Prices, PriceError> {
        let prices: Prices = serde_saphyr::from_str(text).map_err(|e| {
            let text = e.without_snippet().to_string();
            PriceError::Syntax(text.lines().next().unwrap_or("not YAML").to_string())
        })?;
        for (name, p) in &prices.machines {
            if !(p.price_per_hour.is_finite() && p.price_per_hour > 0.0) {
                return Err(PriceError::Price {
                    machine: name.clone(),
                    value: p.price_per_hour,
                    currency: prices.currency.clone(),
                });
            }
            if let Some(w) = p.watts.filter(|w| !(w.is_finite() && *w > 0.0)) {
                return Err(PriceError::Watts { machine: name.clone(), value: w });
            }
        }
        Ok(prices)
    }

    /// The price of the machine a run describes: by name, then host name, then fingerprint.
    pub fn of(&self, env: &Environment) -> Option<(&str, &MachinePrice)> {
        let fingerprint = env.fingerprint();
        let by = |want: &dyn Fn(&str) -> bool| {
            self.machines.iter().find(|(k, _)| want(k)).map(|(k, p)| (k.as_str(), p))
        };
        by(&|k| Some(k) == env.machine_name.as_deref())
            .or_else(|| by(&|k| Some(k) == env.host.as_deref()))
            .or_else(|| by(&|k| k.len() >= 4 && fingerprint.starts_with(k)))
    }
}

/// A time to reach a target: a speed figure in seconds, lower is better.
fn is_target(spec: &Measure) -> bool {
    spec.kind == MeasureKind::Speed && spec.better == Better::Lower && spec.unit == "s"
}

/// A rate: a speed figure, higher is better.
fn is_throughput(spec: &Measure) -> bool {
    spec.kind == MeasureKind::Speed && spec.better == Better::Higher
}

/// The comparison: a table of the machines, then one table per target.
pub fn tables(
    runs: &[StoredRun],
    prices: Option<&Prices>,
    catalogue: &dyn Catalogue,
) -> Vec<Table> {
    let currency = prices.map_or("", |p| p.currency.as_str());
    let price_of = |env: &Environment| prices.and_then(|p| p.of(env)).map(|(_, p)| *p);
    let mut out = vec![machines_table(runs, prices)];
    // Targets in the order they first appear: (workload, variant, figure).
    let mut targets: Vec<(String, String, Measure)> = Vec::new();
    for run in runs {
        for r in &run.results {
            // Every target the cell's family reports, reached or not, and any the line has.
            let family = catalogue.measures(&r.metrics.family);
            let mine = family.into_iter().chain(r.figures.iter().map(|f| f.measure.clone()));
            for spec in mine.filter(is_target) {
                let t = (r.cell.workload.clone(), r.cell.variant_label(), spec);
                if !targets.iter().any(|x| x.0 == t.0 && x.1 == t.1 && x.2.name == t.2.name) {
                    targets.push(t);
                }
            }
        }
    }
    for (workload, variant, spec) in targets {
        let mut rows = Vec::new();
        let mut best: Vec<(f64, String)> = Vec::new();
        for run in runs {
            let mine: Vec<&CellResult> = run
                .results
                .iter()
                .filter(|r| r.cell.workload == workload && r.cell.variant_label() == variant)
                .collect();
            for backend in first_appearance(mine.iter().map(|r| r.cell.backend)) {
                let cells: Vec<&CellResult> =
                    mine.iter().copied().filter(|r| r.cell.backend == backend).collect();
                let figure = |name: &str| {
                    median(cells.iter().filter_map(|r| r.figure(name)).map(|f| f.value))
                };
                let seconds = figure(&spec.name);
                let throughput = cells
                    .iter()
                    .flat_map(|r| &r.figures)
                    .find(|f| is_throughput(&f.measure))
                    .map(|f| (&f.measure, figure(f.name())));
                let price = price_of(&run.env);
                let cost = match (seconds, price) {
                    (Some(s), Some(p)) => {
                        let c = s / 3600.0 * p.price_per_hour;
                        best.push((c, format!("{} {backend}", run.env.machine())));
                        format!("{} {currency}", money(c))
                    }
                    (None, _) => "-".into(),
                    (Some(_), None) => "no price".into(),
                };
                let measured_watts = median(cells.iter().filter_map(|r| r.energy.watts()));
                let energy = match (seconds, price.and_then(|p| p.watts), measured_watts) {
                    (None, _, _) => "-".into(),
                    (Some(s), Some(w), _) => format!("{} Wh", fmt_value(w * s / 3600.0)),
                    (Some(s), None, Some(w)) => {
                        format!("{} Wh (measured)", fmt_value(w * s / 3600.0))
                    }
                    (Some(_), None, None) => "no power".into(),
                };
                let peak = median(cells.iter().filter_map(|r| {
                    r.memory.device_peak.or(r.memory.host_peak).map(|b| b.0 as f64)
                }));
                rows.push(vec![
                    run.env.machine(),
                    backend.to_string(),
                    seconds.map_or_else(|| reached_not(&cells), |s| format!("{} s", fmt_value(s))),
                    cost,
                    energy,
                    match throughput {
                        Some((spec, Some(v))) => format!("{} {}", fmt_value(v), spec.unit),
                        _ => "-".into(),
                    },
                    peak.map_or("-".into(), |b| Bytes(b as u64).to_string()),
                ]);
            }
        }
        let mut notes = vec![
            "time: median over seeds and rounds of the latest run on each machine; cost: time \
             × the machine's price per hour; energy: time × the machine's given watts, else \
             the run's own RAPL/NVML average power (measured)"
                .to_string(),
        ];
        if rows.iter().any(|r| r[4] == "no power") {
            notes.push(
                "no power: give the machine's `watts:` in the price file, or run where RAPL \
                 (/sys/class/powercap) or NVML counters are readable"
                    .into(),
            );
        }
        best.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((c, who)) = best.first() {
            notes.push(format!("cheapest: {who}, {} {currency}", money(*c)));
        }
        out.push(Table {
            title: format!("{workload} {variant}: {}", spec.name),
            caption: "what reaching the target takes on each machine and engine".into(),
            header: vec![
                Column::plain("machine"),
                Column::plain("backend"),
                Column::figure("time"),
                Column::figure("cost"),
                Column::figure("energy"),
                Column::figure("throughput"),
                Column::figure("peak memory"),
            ],
            rows,
            notes,
        });
    }
    out
}

/// Why a machine has no time for a target: within its budget, or what stopped its cells.
fn reached_not(cells: &[&CellResult]) -> String {
    let failed: Vec<&str> =
        first_appearance(cells.iter().filter(|r| !r.status.ran()).map(|r| r.status.label()));
    if failed.is_empty() {
        "not reached".into()
    } else {
        format!("not reached ({})", failed.join(", "))
    }
}

/// Money to three significant digits (a cell's cost is often a fraction of a cent), at
/// least to the cent.
fn money(x: f64) -> String {
    let decimals = if x > 0.0 { (2 - x.log10().floor() as i32).max(2) } else { 2 };
    format!("{x:.*}", decimals as usize)
}

fn machines_table(runs: &[StoredRun], prices: Option<&Prices>) -> Table {
    let mut notes = Vec::new();
    let rows = runs
        .iter()
        .map(|run| {
            let e = &run.env;
            let threads = first_appearance(e.backends.iter().map(|(_, i)| i.threads));
            let (price, watts) = match prices.map(|p| (p, p.of(e))) {
                Some((p, Some((_, m)))) => (
                    format!("{} {}/h", m.price_per_hour, p.currency),
                    m.watts.map_or("measured".into(), |w| format!("{w} W")),
                ),
                Some((_, None)) | None => {
                    notes.push(format!(
                        "{}: no price{}; add `{}: {{price_per_hour: …, watts: …}}` under \
                         `machines:` in the price file (--prices) to see cost to target",
                        e.machine(),
                        if prices.is_none() {
                            " (no --prices file given)"
                        } else {
                            " in the price file"
                        },
                        e.machine()
                    ));
                    ("no price".into(), "measured".into())
                }
            };
            vec![
                e.machine(),
                e.fingerprint(),
                e.hardware(),
                threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                e.started_at.chars().take(16).collect(),
                price,
                watts,
            ]
        })
        .collect();
    if let Some(p) = prices {
        for key in p.machines.keys() {
            if !runs.iter().any(|r| p.of(&r.env).is_some_and(|(k, _)| k == key)) {
                notes.push(format!("price file: `{key}` matches no machine with a run"));
            }
        }
    }
    Table {
        title: "machines".into(),
        caption: "the latest run on each machine".into(),
        header: ["machine", "fingerprint", "hardware", "threads", "run", "price", "power"]
            .iter()
            .map(|h| Column::plain(h))
            .collect(),
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_three_significant_digits() {
        assert_eq!(money(12.345), "12.35");
        assert_eq!(money(0.357), "0.357");
        assert_eq!(money(4.1667e-5), "0.0000417");
        assert_eq!(money(0.0), "0.00");
    }

    #[test]
    fn prices_name_machines_and_refuse_what_is_not_a_price() {
        let p = Prices::parse("machines:\n  c7i: {price_per_hour: 0.357, watts: 190}\n").unwrap();
        assert_eq!(p.currency, "USD");
        let env = Environment {
            host: Some("vm".into()),
            machine_name: Some("c7i".into()),
            ..Default::default()
        };
        assert_eq!(p.of(&env).map(|(k, m)| (k, m.watts)), Some(("c7i", Some(190.0))));
        // By fingerprint prefix, when neither name matches.
        let fp = Environment::default().fingerprint();
        let text = format!("machines:\n  {}: {{price_per_hour: 2}}\n", &fp[..8]);
        assert!(Prices::parse(&text).unwrap().of(&Environment::default()).is_some());
        let bad = Prices::parse("machines:\n  x: {price_per_hour: -1}\n").unwrap_err().to_string();
        assert!(bad.contains("machines.x.price_per_hour: -1 is not a price"), "{bad}");
        let bad = Prices::parse("machines:\n  x: {price_per_hour: 1, watts: 0}\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("machines.x.watts: 0 is not a power"), "{bad}");
        let bad = Prices::parse("machines:\n  x: {price: 1}\n").unwrap_err().to_string();
        assert!(bad.contains("unknown field"), "{bad}");
    }
}
