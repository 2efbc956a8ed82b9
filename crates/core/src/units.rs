//! Distinct types for distinct units, so a duration is never mistaken for a rate.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

/// Events per second (steps, examples).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerSecond(pub f64);

impl Seconds {
    /// The rate of `count` events in this time.
    pub fn rate(self, count: f64) -> PerSecond {
        PerSecond(count / self.0)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s >= 100.0 {
            write!(f, "{s:.0} s")
        } else if s >= 1.0 {
            write!(f, "{s:.2} s")
        } else if s >= 1e-3 {
            write!(f, "{:.2} ms", s * 1e3)
        } else {
            write!(f, "{:.1} µs", s * 1e6)
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        const MIB: f64 = 1024.0 * 1024.0;
        if b >= 1024.0 * MIB {
            write!(f, "{:.2} GiB", b / (1024.0 * MIB))
        } else if b >= MIB {
            write!(f, "{:.1} MiB", b / MIB)
        } else {
            write!(f, "{:.0} KiB", b / 1024.0)
        }
    }
}

impl fmt::Display for PerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        if r >= 10_000.0 {
            write!(f, "{:.0}k/s", r / 1e3)
        } else if r >= 100.0 {
            write!(f, "{r:.0}/s")
        } else {
            write!(f, "{r:.1}/s")
        }
    }
}
