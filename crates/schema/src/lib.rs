//! randbench's result schema: the cell key, result lines with their self-describing figures,
//! a cell process's messages, `results.jsonl` and `run.json`. Every reader of results depends
//! on this crate, and it depends on no workload family and no engine, so comparisons, the
//! history, exports and reports read any line without linking the code that wrote it.

pub mod cell;
pub mod group;
pub mod measure;
pub mod real;
pub mod record;
pub mod results;
pub mod shard;

pub use cell::{BusyProcess, Cell, Energy, MemoryUse, PeakSince, Status, Tagged};
pub use measure::{Figure, Measure, MeasureKind, STEPS_PER_SECOND};
pub use record::{CellResult, Message, Observer, Progress, TRACE_STEPS};
pub use results::{Catalogue, Read, RunInfo, Skipped, Uncatalogued, UpgradeError};
pub use shard::{Shard, ShardError};

/// The version result lines are written with. 0: lines from before versions existed, without
/// `figures` (the family's catalogue derives them when read). 1: figures in every line;
/// numbers that are not finite written as strings.
pub const SCHEMA_VERSION: u32 = 1;
