//! Summary statistics: medians and quartiles of timings (never a single run), means with
//! their intervals, and paired bootstrap ratios.

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

/// Mean of a sample and its normal-approximation 95% interval (mean ± 1.96·s/√n); `None`
/// for an empty sample or one with a non-finite value.
pub fn mean_interval(xs: &[f64]) -> Option<(f64, f64, f64)> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let half = 1.96 * (var / n).sqrt();
    Some((mean, mean - half, mean + half))
}

/// mean(a) / mean(b) over paired samples (a[i] and b[i] measured on the same problem), with
/// the 95% percentile interval of `resamples` bootstrap resamples of the pairs drawn by `rng`.
/// `None` when the samples differ in length, are empty, or b's mean is not positive.
pub fn paired_bootstrap_ratio(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    rng: &mut crate::rng::Rng,
) -> Option<(f64, f64, f64)> {
    let ratio = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut sa, mut sb) = (0.0, 0.0);
        for i in idx {
            sa += a[i];
            sb += b[i];
        }
        sa / sb
    };
    if a.len() != b.len() || a.is_empty() || b.iter().sum::<f64>() <= 0.0 {
        return None;
    }
    let n = a.len();
    let estimate = ratio(&mut (0..n));
    let mut draws: Vec<f64> = (0..resamples)
        .map(|_| ratio(&mut (0..n).map(|_| rng.below(n))))
        .filter(|r| r.is_finite())
        .collect();
    if draws.is_empty() {
        return None;
    }
    draws.sort_by(f64::total_cmp);
    Some((estimate, quantile_sorted(&draws, 0.025), quantile_sorted(&draws, 0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_interval_of_a_known_sample() {
        let (m, lo, hi) = mean_interval(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        // s = √(5/3), half-width 1.96·s/2.
        let half = 1.96 * (5.0f64 / 3.0).sqrt() / 2.0;
        assert_eq!(m, 2.5);
        assert!((hi - m - half).abs() < 1e-12 && (m - lo - half).abs() < 1e-12);
        assert!(mean_interval(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn paired_bootstrap_sees_a_consistent_ten_percent_gain() {
        let mut rng = crate::rng::Rng::new(1);
        let b: Vec<f64> = (0..100).map(|i| 1.0 + (i % 7) as f64).collect();
        let a: Vec<f64> =
            b.iter().enumerate().map(|(i, x)| 0.9 * x + 0.01 * (i % 3) as f64).collect();
        let (r, lo, hi) = paired_bootstrap_ratio(&a, &b, 2000, &mut rng).unwrap();
        assert!(lo <= r && r <= hi && hi < 1.0 && lo > 0.85, "{lo} {r} {hi}");
        // Unpaired noise of the same size straddles 1.
        let noisy: Vec<f64> = b.iter().rev().copied().collect();
        let (_, lo, hi) = paired_bootstrap_ratio(&noisy, &b, 2000, &mut rng).unwrap();
        assert!(lo < 1.0 && hi > 1.0, "{lo} {hi}");
    }

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
