//! randbench: runs the workloads of suites on every backend, writes results and reports.

pub mod backends;
pub mod cell;
pub mod compare;
pub mod datasets;
pub mod energy;
pub mod env;
pub mod executor;
pub mod export;
pub mod families;
#[cfg(feature = "test-faults")]
pub mod fault;
pub mod history;
pub mod nvml;
pub mod procure;
pub mod report;
pub mod results;
pub mod runner;
pub mod slowdown;
pub mod suite;
pub mod sys;
