//! A fact about the machine, present or absent with the reason: "nothing there" is never
//! mistaken for "not looked".

use serde::{Deserialize, Serialize};

/// What a probe of the machine found, or why it found nothing: a missing driver or counter is
/// recorded as such, not as an error and not as an empty answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Probe<T> {
    Present { value: T },
    Absent { why: String },
}

impl<T> Default for Probe<T> {
    /// What an environment file from before the probe existed says.
    fn default() -> Self {
        Probe::Absent { why: "not recorded".into() }
    }
}

impl<T> Probe<T> {
    pub fn present(&self) -> Option<&T> {
        match self {
            Probe::Present { value } => Some(value),
            Probe::Absent { .. } => None,
        }
    }
}
