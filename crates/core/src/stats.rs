//! Summary statistics of timings: medians and quartiles, never a single run.

use serde::{Deserialize, Serialize};

/// The q-quantile (0 ≤ q ≤ 1) of sorted data by linear interpolation (numpy's default).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no data");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median and quartiles of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for an empty sample; NaNs are ignored.
    pub fn of(xs: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            median: quantile_sorted(&v, 0.5),
            q1: quantile_sorted(&v, 0.25),
            q3: quantile_sorted(&v, 0.75),
            n: v.len(),
        })
    }

    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }

    /// The summary of 1/x (rates from durations): quartiles swap under the inversion.
    pub fn reciprocal(&self) -> Self {
        Self { median: 1.0 / self.median, q1: 1.0 / self.q3, q3: 1.0 / self.q1, n: self.n }
    }

    pub fn scaled(&self, c: f64) -> Self {
        Self { median: self.median * c, q1: self.q1 * c, q3: self.q3 * c, n: self.n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_match_numpy() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 10.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (2.0, 3.0, 4.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.75, 2.5, 3.25));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn reciprocal_swaps_quartiles() {
        let s = Summary::of(&[1.0, 2.0, 4.0]).unwrap().reciprocal();
        assert!(s.q1 <= s.median && s.median <= s.q3);
        assert_eq!(s.median, 0.5);
    }
}
