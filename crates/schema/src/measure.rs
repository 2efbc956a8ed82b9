//! Figures: what a cell measured, each with what a reader needs to judge it — its name, unit,
//! which way is better and whether it is the engine's speed or the experiment's outcome — so
//! that comparisons, the history and exports read any line without the family that wrote it.

use randbench_core::stats::{Better, Verdict};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What a figure says about: the engine's speed, or the experiment's scientific outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureKind {
    Speed,
    Outcome,
}

impl MeasureKind {
    /// A verdict in a figure's words: faster/slower for speed, better/worse for outcomes.
    pub fn verdict_words(self, v: Verdict) -> &'static str {
        match (v, self) {
            (Verdict::Improved, MeasureKind::Speed) => "faster",
            (Verdict::Regressed, MeasureKind::Speed) => "slower",
            (Verdict::Improved, MeasureKind::Outcome) => "better",
            (Verdict::Regressed, MeasureKind::Outcome) => "worse",
            (Verdict::Unchanged, _) => "unchanged",
            (Verdict::TooNoisy, _) => "too noisy to tell",
        }
    }
}

/// A figure a family's cells report, that comparisons and the history track. Families declare
/// theirs as constants; read from a line, the strings are owned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Its name in suites (`compare: thresholds:`), comparisons and the history.
    pub name: Cow<'static, str>,
    pub unit: Cow<'static, str>,
    pub better: Better,
    pub kind: MeasureKind,
    /// The smallest change (0.05: 5%) that counts, unless the suite sets another.
    pub threshold: f64,
}

impl Measure {
    pub const fn new(
        name: &'static str,
        unit: &'static str,
        better: Better,
        kind: MeasureKind,
        threshold: f64,
    ) -> Self {
        Measure { name: Cow::Borrowed(name), unit: Cow::Borrowed(unit), better, kind, threshold }
    }

    /// This measure's value for one cell.
    pub fn of(&self, value: f64) -> Figure {
        Figure { measure: self.clone(), value }
    }
}

/// One figure of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    #[serde(flatten)]
    pub measure: Measure,
    #[serde(with = "crate::real")]
    pub value: f64,
}

impl Figure {
    pub fn name(&self) -> &str {
        &self.measure.name
    }

    /// The figures a cell has, of those it might: a family's figures in one line. A value
    /// that is not finite is no figure to compare (the cell's status says it diverged).
    pub fn present<'a>(
        figures: impl IntoIterator<Item = (&'a Measure, Option<f64>)>,
    ) -> Vec<Figure> {
        figures
            .into_iter()
            .filter_map(|(m, v)| v.filter(|v| v.is_finite()).map(|value| m.of(value)))
            .collect()
    }
}

/// Timed training steps per second (the median over every timed step): families that train
/// share it, so that the history and comparisons read it alike.
pub const STEPS_PER_SECOND: Measure =
    Measure::new("steps_per_second", "steps/s", Better::Higher, MeasureKind::Speed, 0.05);
