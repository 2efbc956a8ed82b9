//! randbench: runs the workloads of suites on every backend, writes results and reports.

pub mod backends;
pub mod env;
pub mod fault;
pub mod isolate;
pub mod randomization;
pub mod report;
pub mod results;
pub mod runner;
pub mod suite;
pub mod sys;
