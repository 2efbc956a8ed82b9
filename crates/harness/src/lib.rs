//! randbench: runs the workloads of suites on every backend, writes results and reports.
//!
//! Modules in layers, each importing only its own layer and those it stands on
//! (`tests/layers.rs` checks it; analysis stands on the machine and reports, not workloads):
//! 1. the process and machine: `sys`, `slowdown`, `probe`, `compiled`, `datasets`, `nvml`,
//!    `energy`, `env`, `watch`;
//! 2. reports: `report` (tables, charts, renderers, value formatting);
//! 3. workloads: `spec` (what families validate with), `families` (the family API, the
//!    families, the registry), `suite`, `presentation` (a run's report from its lines);
//! 4. analysis, which reads result lines without the families: `compare`, `history`,
//!    `procure`, `export`;
//! 5. running: `backends` (the engines), `fault`, `executor`, `runner`, `fleet` (schedulers).
//!
//! The result schema itself is the `randbench-schema` crate, below all of them.

pub mod compiled;
pub mod datasets;
pub mod probe;
pub mod slowdown;
pub mod sys;

pub mod energy;
pub mod env;
pub mod nvml;
pub mod watch;

pub mod report;

pub mod families;
pub mod presentation;
pub mod spec;
pub mod suite;

pub mod compare;
pub mod export;
pub mod history;
pub mod procure;

pub mod backends;
pub mod executor;
#[cfg(feature = "test-faults")]
pub mod fault;
pub mod fleet;
pub mod runner;
