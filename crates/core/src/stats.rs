//! Summary statistics: medians and quartiles of timings (never a single run), robust spread,
//! Tukey-fence outliers (counted, never dropped), bootstrap intervals, the Mann–Whitney U test,
//! the verdict of a comparison between two samples, and warnings about a sample that name
//! their cause and fix.

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
    /// `None` for an empty sample; values that are not finite are ignored (a rate over a step
    /// the clock could not resolve is infinite, and a summary must be written as a number).
    pub fn of(xs: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
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

/// The median of a sample; `None` for an empty one. NaNs are ignored.
pub fn median(xs: &[f64]) -> Option<f64> {
    Summary::of(xs).map(|s| s.median)
}

/// Median absolute deviation, scaled by 1.4826 so that it estimates the standard deviation of
/// normal data (scipy's `median_abs_deviation(x, scale="normal")`): a spread that a few wild
/// samples do not move.
pub fn mad(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let dev: Vec<f64> = xs.iter().filter(|x| !x.is_nan()).map(|x| (x - m).abs()).collect();
    median(&dev).map(|d| 1.482_602_218_505_602 * d)
}

/// Samples beyond Tukey's fences: mild between 1.5 and 3 interquartile ranges outside the
/// quartiles, severe beyond 3. Counted and reported; every sample stays in the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outliers {
    pub low_severe: usize,
    pub low_mild: usize,
    pub high_mild: usize,
    pub high_severe: usize,
}

impl Outliers {
    pub fn of(xs: &[f64]) -> Self {
        let Some(s) = Summary::of(xs) else { return Self::default() };
        let (iqr, mut o) = (s.iqr(), Self::default());
        for &x in xs.iter().filter(|x| !x.is_nan()) {
            if x < s.q1 - 3.0 * iqr {
                o.low_severe += 1;
            } else if x < s.q1 - 1.5 * iqr {
                o.low_mild += 1;
            } else if x > s.q3 + 3.0 * iqr {
                o.high_severe += 1;
            } else if x > s.q3 + 1.5 * iqr {
                o.high_mild += 1;
            }
        }
        o
    }

    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// A point estimate with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

fn resample_median(xs: &[f64], rng: &mut crate::rng::Rng, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend((0..xs.len()).map(|_| xs[rng.below(xs.len())]));
    scratch.sort_by(f64::total_cmp);
    quantile_sorted(scratch, 0.5)
}

fn finite(xs: &[f64]) -> Vec<f64> {
    xs.iter().copied().filter(|x| x.is_finite()).collect()
}

/// The median with the 95% percentile interval of `resamples` bootstrap resamples.
pub fn bootstrap_median(
    xs: &[f64],
    resamples: usize,
    rng: &mut crate::rng::Rng,
) -> Option<Estimate> {
    let xs = finite(xs);
    let value = median(&xs)?;
    let mut scratch = Vec::with_capacity(xs.len());
    let mut draws: Vec<f64> =
        (0..resamples).map(|_| resample_median(&xs, rng, &mut scratch)).collect();
    draws.sort_by(f64::total_cmp);
    Some(Estimate { value, lo: quantile_sorted(&draws, 0.025), hi: quantile_sorted(&draws, 0.975) })
}

/// median(a) / median(b) of two independent samples, with the 95% percentile interval of
/// `resamples` bootstrap resamples of each. `None` when either is empty or b's median is not
/// positive.
pub fn bootstrap_ratio_of_medians(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    rng: &mut crate::rng::Rng,
) -> Option<Estimate> {
    let (a, b) = (finite(a), finite(b));
    let value = median(&a)? / median(&b).filter(|m| *m > 0.0)?;
    let mut scratch = Vec::with_capacity(a.len().max(b.len()));
    let mut draws: Vec<f64> = (0..resamples)
        .map(|_| {
            let ma = resample_median(&a, rng, &mut scratch);
            ma / resample_median(&b, rng, &mut scratch)
        })
        .filter(|r| r.is_finite())
        .collect();
    if draws.is_empty() {
        return None;
    }
    draws.sort_by(f64::total_cmp);
    Some(Estimate { value, lo: quantile_sorted(&draws, 0.025), hi: quantile_sorted(&draws, 0.975) })
}

/// The two-sided Mann–Whitney U test of two independent samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample: the number of pairs (a, b) with a > b, ties counting one half.
    pub u: f64,
    pub p: f64,
    /// Whether p comes from the exact distribution of U or its normal approximation.
    pub exact: bool,
}

/// The test scipy's `mannwhitneyu(a, b)` runs by default: the exact distribution of U when
/// there are no ties and one sample has at most 8 values, else the normal approximation with
/// the tie correction and a continuity correction. `None` when a sample is empty.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (a, b) = (finite(a), finite(b));
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // Midranks of the pooled sample.
    let mut pooled: Vec<(f64, bool)> =
        a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut rank_sum_a, mut tie_term, mut ties) = (0.0, 0.0, false);
    let mut i = 0;
    while i < pooled.len() {
        let j = (i..pooled.len()).find(|&j| pooled[j].0 != pooled[i].0).unwrap_or(pooled.len());
        let t = (j - i) as f64;
        let midrank = (i + j + 1) as f64 / 2.0;
        rank_sum_a += midrank * pooled[i..j].iter().filter(|p| p.1).count() as f64;
        tie_term += t * t * t - t;
        ties |= j - i > 1;
        i = j;
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u = rank_sum_a - f1 * (f1 + 1.0) / 2.0;
    let big = u.max(f1 * f2 - u);
    if !ties && n1.min(n2) <= 8 {
        // P(U >= big) from the exact distribution, doubled.
        let counts = u_counts(n1, n2);
        let total: f64 = counts.iter().sum();
        let upper: f64 = counts[big as usize..].iter().sum();
        return Some(MannWhitney { u, p: (2.0 * upper / total).min(1.0), exact: true });
    }
    let n = f1 + f2;
    let sigma = (f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let p = if sigma > 0.0 {
        let z = (big - f1 * f2 / 2.0 - 0.5) / sigma;
        (2.0 * normal_sf(z)).min(1.0)
    } else {
        1.0
    };
    Some(MannWhitney { u, p, exact: false })
}

/// How many orderings of n1 + n2 distinct values give each U from 0 to n1·n2.
fn u_counts(n1: usize, n2: usize) -> Vec<f64> {
    // f(m, n, k): orderings of m values of the first sample and n of the second with U = k.
    // The largest value is either the first sample's (it beats all n others: U - n before it)
    // or the second's (U unchanged): f(m, n, k) = f(m-1, n, k-n) + f(m, n-1, k).
    let max = n1 * n2;
    let mut prev: Vec<Vec<f64>> = (0..=n1)
        .map(|_| {
            let mut v = vec![0.0; max + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for n in 1..=n2 {
        let mut cur = vec![vec![0.0; max + 1]; n1 + 1];
        cur[0][0] = 1.0;
        for m in 1..=n1 {
            for k in 0..=max {
                let first = if k >= n { cur[m - 1][k - n] } else { 0.0 };
                cur[m][k] = first + prev[m][k];
            }
        }
        prev = cur;
    }
    prev.swap_remove(n1)
}

/// The upper tail of the standard normal distribution (erfc, Numerical Recipes' erfcc:
/// relative error below 1.2e-7).
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

impl Better {
    /// How much worse `ratio` (current / baseline) is, on a log scale: positive is worse.
    fn worsening(self, ratio: f64) -> f64 {
        match self {
            Better::Lower => ratio.ln(),
            Better::Higher => -ratio.ln(),
        }
    }
}

/// The significance level of every comparison.
pub const SIGNIFICANCE: f64 = 0.05;

/// The outcome of comparing a current sample with a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly better, by more than the threshold over the whole interval.
    Improved,
    /// Significantly worse, by more than the threshold over the whole interval.
    Regressed,
    /// No change beyond the threshold: the interval rules out a worsening larger than it.
    Unchanged,
    /// The samples cannot tell: too few of them, or an interval wider than the threshold.
    TooNoisy,
}

/// A current sample against a baseline: the ratio of medians (current / baseline) with its
/// bootstrap interval, the Mann–Whitney p-value, and the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub ratio: Estimate,
    pub p: f64,
    pub baseline_n: usize,
    pub current_n: usize,
    pub verdict: Verdict,
}

/// Whether samples of n1 and n2 values can show any change at all: the most extreme split the
/// Mann–Whitney test can see, probability 2 / C(n1 + n2, n1), must fall below the
/// significance level (3 against 3 cannot; 4 against 4 can).
pub fn can_show_change(n1: usize, n2: usize) -> bool {
    let mut arrangements = 1.0;
    for i in 0..n1 {
        arrangements = arrangements * (n2 + i + 1) as f64 / (i + 1) as f64;
    }
    n1 > 0 && n2 > 0 && 2.0 / arrangements < SIGNIFICANCE
}

/// The fewest samples per side for which a comparison can show a change.
pub fn samples_needed() -> usize {
    (1..).find(|&n| can_show_change(n, n)).expect("some n suffices")
}

/// Compares `current` with `baseline`. A change counts only when it is significant (the
/// Mann–Whitney test and the ratio's interval agree) and larger than `threshold` (0.05: 5%)
/// over its whole interval, so that a noisy machine does not raise false alarms; without
/// one, the verdict is `Unchanged` only when the interval rules out a worsening larger than
/// the threshold, else `TooNoisy`. `None` when a sample is empty or the baseline's median is not positive.
pub fn compare(
    baseline: &[f64],
    current: &[f64],
    better: Better,
    threshold: f64,
    rng: &mut crate::rng::Rng,
) -> Option<Comparison> {
    let ratio = bootstrap_ratio_of_medians(current, baseline, 2000, rng)?;
    let test = mann_whitney_u(current, baseline)?;
    let (baseline_n, current_n) = (finite(baseline).len(), finite(current).len());
    let limit = (1.0 + threshold).ln();
    let significant = test.p < SIGNIFICANCE && !ratio.contains(1.0);
    // The interval's ends, the worse and the better one for this figure.
    let (worst_end, best_end) = match better {
        Better::Lower => (ratio.hi, ratio.lo),
        Better::Higher => (ratio.lo, ratio.hi),
    };
    let verdict = if !can_show_change(baseline_n, current_n) {
        Verdict::TooNoisy
    } else if significant && better.worsening(best_end) > limit {
        // Even the interval's most favourable end is worse by more than the threshold.
        Verdict::Regressed
    } else if significant && better.worsening(worst_end) < -limit {
        Verdict::Improved
    } else if better.worsening(worst_end) <= limit {
        Verdict::Unchanged
    } else {
        Verdict::TooNoisy
    };
    Some(Comparison { ratio, p: test.p, baseline_n, current_n, verdict })
}

/// Something about a sample that makes its figures less trustworthy, with what to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleWarning {
    TooFew {
        n: usize,
        need: usize,
    },
    /// Interquartile range over the median.
    HighSpread {
        relative: f64,
    },
    /// The first sample over the median of the others, as a slowdown factor.
    SlowFirst {
        factor: f64,
    },
    /// Other programs were busy on the machine while it ran.
    BusyMachine {
        processes: Vec<String>,
    },
}

/// Spread above this fraction of the median draws a warning.
pub const SPREAD_LIMIT: f64 = 0.10;
/// A first sample this many times slower than the rest draws a warning.
pub const SLOW_FIRST_LIMIT: f64 = 1.25;

impl std::fmt::Display for SampleWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleWarning::TooFew { n, need } => write!(
                f,
                "only {n} sample(s): no comparison can show a change with fewer than {need} per \
                 side; run with --rounds {need} or more"
            ),
            SampleWarning::HighSpread { relative } => write!(
                f,
                "spread (interquartile range) is {:.0}% of the median, above {:.0}%: the machine \
                 was noisy; stop other programs, or run more rounds",
                100.0 * relative,
                100.0 * SPREAD_LIMIT
            ),
            SampleWarning::SlowFirst { factor } => write!(
                f,
                "the first round was {factor:.2}x slower than the others: something was still \
                 warming up (caches, frequency, lazy loading); run more rounds or discard it"
            ),
            SampleWarning::BusyMachine { processes } => write!(
                f,
                "other programs were busy during the run ({}): their load skews timings; \
                 run on a quiet machine",
                processes.join(", ")
            ),
        }
    }
}

/// Warnings about one figure's samples, in the order they were taken.
pub fn sample_warnings(in_order: &[f64], better: Better) -> Vec<SampleWarning> {
    let xs = finite(in_order);
    let mut out = Vec::new();
    let need = samples_needed();
    if xs.len() < need {
        out.push(SampleWarning::TooFew { n: xs.len(), need });
    }
    if let Some(s) = Summary::of(&xs).filter(|s| s.median > 0.0) {
        if s.iqr() / s.median > SPREAD_LIMIT {
            out.push(SampleWarning::HighSpread { relative: s.iqr() / s.median });
        }
    }
    if xs.len() >= 3 {
        if let Some(rest) = median(&xs[1..]).filter(|m| *m > 0.0 && xs[0] > 0.0) {
            let factor = match better {
                Better::Lower => xs[0] / rest,
                Better::Higher => rest / xs[0],
            };
            if factor > SLOW_FIRST_LIMIT {
                out.push(SampleWarning::SlowFirst { factor });
            }
        }
    }
    out
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

    // Reference values from numpy 2.4 and scipy 1.17 (np.percentile, stats.median_abs_deviation
    // with scale="normal", stats.mannwhitneyu with its defaults).
    const WILD: [f64; 11] = [2.1, 2.3, 2.2, 2.0, 9.5, 2.4, 2.2, -3.0, 2.25, 2.15, 2.7];

    #[test]
    fn robust_spread_and_tukey_fences_match_numpy_and_scipy() {
        let s = Summary::of(&WILD).unwrap();
        // np.percentile(x, [25, 50, 75]) = 2.125, 2.2, 2.35
        assert!((s.q1 - 2.125).abs() < 1e-12 && (s.q3 - 2.35).abs() < 1e-12);
        assert_eq!(median(&WILD), Some(2.2));
        // stats.median_abs_deviation(x, scale="normal") = 0.14826022185056031
        assert!((mad(&WILD).unwrap() - 0.148_260_221_850_560_31).abs() < 1e-12);
        // Fences: mild 1.7875 / 2.6875, severe 1.45 / 3.025.
        let o = Outliers::of(&WILD);
        assert_eq!(o, Outliers { low_severe: 1, low_mild: 0, high_mild: 1, high_severe: 1 });
        assert_eq!(o.total(), 3);
    }

    #[test]
    fn mann_whitney_matches_scipy() {
        let close = |got: f64, want: f64| (got - want).abs() < 1e-6 * want.max(1e-3);
        // Exact (no ties, a sample of at most 8): U = 1, p = 0.008658008658008658.
        let a = [10.2, 11.5, 9.8, 10.9, 12.1, 10.4];
        let b = [12.3, 13.1, 11.9, 12.8, 14.0];
        let t = mann_whitney_u(&a, &b).unwrap();
        assert!(t.exact && t.u == 1.0 && close(t.p, 0.008_658_008_658_008_658), "{t:?}");
        // Exact, 4 against 4 fully separated: p = 0.02857142857142857; 3 against 3: 0.1.
        let t = mann_whitney_u(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]).unwrap();
        assert!(t.u == 0.0 && close(t.p, 0.028_571_428_571_428_57));
        assert!(close(mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap().p, 0.1));
        // Ties: the normal approximation with tie and continuity corrections:
        // U = 18, p = 0.009702476038481312.
        let c = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 4.0, 5.0, 6.0, 7.0];
        let d = [3.0, 4.0, 5.0, 5.0, 6.0, 7.0, 8.0, 8.0, 9.0, 10.0, 11.0];
        let t = mann_whitney_u(&c, &d).unwrap();
        assert!(!t.exact && t.u == 18.0 && close(t.p, 0.009_702_476_038_481_312), "{t:?}");
        // Both samples above 8, no ties: U = 45, p = 0.12602212177037309.
        let g: Vec<f64> = (1..13).map(f64::from).collect();
        let h: Vec<f64> = (3..15).map(|v| f64::from(v) + 0.5).collect();
        let t = mann_whitney_u(&g, &h).unwrap();
        assert!(!t.exact && t.u == 45.0 && close(t.p, 0.126_022_121_770_373_09), "{t:?}");
        // Identical samples: no evidence of a difference at all.
        assert_eq!(mann_whitney_u(&[3.0; 5], &[3.0; 5]).unwrap().p, 1.0);
    }

    #[test]
    fn bootstrap_intervals_hold_their_estimates() {
        let mut rng = crate::rng::Rng::new(7);
        let m = bootstrap_median(&WILD, 2000, &mut rng).unwrap();
        assert_eq!(m.value, 2.2);
        assert!(m.lo <= 2.2 && m.hi >= 2.2 && m.lo > 2.0 && m.hi < 2.5, "{m:?}");
        let slow: Vec<f64> = WILD.iter().map(|x| 2.0 * x).collect();
        let r = bootstrap_ratio_of_medians(&slow, &WILD, 2000, &mut rng).unwrap();
        assert_eq!(r.value, 2.0);
        assert!(r.contains(2.0) && r.lo > 1.6 && r.hi < 2.5, "{r:?}");
        assert!(bootstrap_ratio_of_medians(&WILD, &[0.0, 0.0], 100, &mut rng).is_none());
    }

    #[test]
    fn comparisons_need_significance_size_and_enough_samples() {
        let mut rng = crate::rng::Rng::new(3);
        let base = [100.0, 102.0, 98.0, 101.0, 99.0, 100.5];
        let compare = |cur: &[f64], better, t, rng: &mut _| compare(&base, cur, better, t, rng);
        // Throughput halved: a regression; the same figures as durations: an improvement.
        let half: Vec<f64> = base.iter().map(|x| x / 2.0).collect();
        let c = compare(&half, Better::Higher, 0.05, &mut rng).unwrap();
        assert_eq!(c.verdict, Verdict::Regressed);
        assert_eq!(
            compare(&half, Better::Lower, 0.05, &mut rng).unwrap().verdict,
            Verdict::Improved
        );
        // Significant but within the threshold: unchanged.
        let slight: Vec<f64> = base.iter().map(|x| x * 0.98).collect();
        assert_eq!(
            compare(&slight, Better::Higher, 0.05, &mut rng).unwrap().verdict,
            Verdict::Unchanged
        );
        // The same figures again: unchanged.
        assert_eq!(
            compare(&base, Better::Higher, 0.05, &mut rng).unwrap().verdict,
            Verdict::Unchanged
        );
        // Three rounds against three cannot show anything, however far apart.
        let c = super::compare(&base[..3], &half[..3], Better::Higher, 0.05, &mut rng).unwrap();
        assert_eq!(c.verdict, Verdict::TooNoisy);
        // Significant, the median 8% slower, but the interval reaches back within 5%: too
        // noisy to call it a regression (same-build runs minutes apart differ this much here).
        let drift = [90.0, 96.5, 91.0, 97.0, 89.0, 93.0];
        let c = compare(&drift, Better::Higher, 0.05, &mut rng).unwrap();
        assert!(c.p < 0.05 && c.ratio.value < 1.0 / 1.05 && c.ratio.hi > 1.0 / 1.05, "{c:?}");
        assert_eq!(c.verdict, Verdict::TooNoisy);
        // Wild samples whose interval reaches past the threshold: too noisy, not unchanged.
        let wild = [60.0, 140.0, 95.0, 120.0, 70.0, 105.0];
        assert_eq!(
            compare(&wild, Better::Higher, 0.05, &mut rng).unwrap().verdict,
            Verdict::TooNoisy
        );
        assert!(!can_show_change(3, 3) && can_show_change(4, 4) && can_show_change(3, 5));
        assert_eq!(samples_needed(), 4);
    }

    #[test]
    fn warnings_name_cause_and_fix() {
        let w = sample_warnings(&[10.0, 10.0], Better::Higher);
        assert_eq!(w, vec![SampleWarning::TooFew { n: 2, need: 4 }]);
        assert!(w[0].to_string().contains("--rounds 4"));
        // Rates whose first round was half the others: slow first round.
        let w = sample_warnings(&[5.0, 10.0, 10.2, 9.9, 10.1], Better::Higher);
        assert_eq!(w.len(), 1);
        assert!(matches!(w[0], SampleWarning::SlowFirst { factor } if (factor - 2.0).abs() < 0.03));
        // Durations spread by a third of the median.
        let w = sample_warnings(&[1.0, 1.5, 1.0, 1.4, 1.1, 1.6], Better::Lower);
        assert!(
            matches!(w[..], [SampleWarning::HighSpread { relative }] if relative > 0.1),
            "{w:?}"
        );
        assert!(sample_warnings(&[10.0, 10.1, 9.9, 10.0], Better::Lower).is_empty());
    }
}
