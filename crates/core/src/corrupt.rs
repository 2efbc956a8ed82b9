//! The randomization test's conditions (Zhang et al., ICLR 2017, section 2), seeded and fixed
//! for a whole run.

use crate::data::{channel_stats, Dataset, Split};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    TrueLabels,
    /// Each training label replaced, with probability p, by a uniformly random class.
    CorruptLabels(f64),
    /// Every training label random (CorruptLabels(1.0)).
    RandomLabels,
    /// One random permutation of pixel positions, the same for every train and test image.
    ShuffledPixels,
    /// A different random permutation for every image, train and test.
    RandomPixels,
    /// Every image replaced by Gaussian noise with the training set's mean and variance.
    Gaussian,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::TrueLabels => f.write_str("true_labels"),
            Condition::CorruptLabels(p) => write!(f, "corrupt_labels_{p}"),
            Condition::RandomLabels => f.write_str("random_labels"),
            Condition::ShuffledPixels => f.write_str("shuffled_pixels"),
            Condition::RandomPixels => f.write_str("random_pixels"),
            Condition::Gaussian => f.write_str("gaussian"),
        }
    }
}

impl Condition {
    /// Whether this condition is the reference the others are compared with.
    pub fn is_baseline(&self) -> bool {
        matches!(self, Condition::TrueLabels)
            || matches!(self, Condition::CorruptLabels(p) if *p == 0.0)
    }

    /// The share of training labels replaced by random ones, for the label-corruption
    /// conditions (Zhang et al. Figure 1b, 1c: 0 for true labels, 1 for random ones).
    pub fn label_corruption(&self) -> Option<f64> {
        match *self {
            Condition::TrueLabels => Some(0.0),
            Condition::CorruptLabels(p) => Some(p),
            Condition::RandomLabels => Some(1.0),
            Condition::ShuffledPixels | Condition::RandomPixels | Condition::Gaussian => None,
        }
    }

    /// Applies the condition to a train/test split, drawing from the seed's "corrupt" stream.
    pub fn apply(&self, split: &mut Split, seed: u64) {
        let mut rng = Rng::stream(seed, "corrupt");
        match *self {
            Condition::TrueLabels => {}
            Condition::CorruptLabels(p) => corrupt_labels(&mut split.train, p, &mut rng),
            Condition::RandomLabels => corrupt_labels(&mut split.train, 1.0, &mut rng),
            Condition::ShuffledPixels => {
                let [_, h, w] = split.train.shape;
                let perm = rng.permutation(h * w);
                permute_pixels(&mut split.train, |_| &perm);
                permute_pixels(&mut split.test, |_| &perm);
            }
            Condition::RandomPixels => {
                let [_, h, w] = split.train.shape;
                for set in [&mut split.train, &mut split.test] {
                    let perms: Vec<Vec<usize>> =
                        (0..set.len()).map(|_| rng.permutation(h * w)).collect();
                    permute_pixels(set, |i| &perms[i]);
                }
            }
            Condition::Gaussian => {
                let stats = channel_stats(&split.train);
                for set in [&mut split.train, &mut split.test] {
                    gaussian_images(set, &stats, &mut rng);
                }
            }
        }
    }
}

fn corrupt_labels(set: &mut Dataset, p: f64, rng: &mut Rng) {
    for l in set.labels.iter_mut() {
        if rng.bernoulli(p) {
            *l = rng.below(set.classes) as i64;
        }
    }
}

/// Moves pixel position `perm[j]` of each channel to position `j`.
fn permute_pixels<'a>(set: &mut Dataset, perm_of: impl Fn(usize) -> &'a Vec<usize>) {
    let [c, h, w] = set.shape;
    let plane = h * w;
    let mut buf = vec![0f32; plane];
    for (i, img) in set.images.chunks_mut(c * plane).enumerate() {
        let perm = perm_of(i);
        for ch in img.chunks_mut(plane) {
            for (j, &src) in perm.iter().enumerate() {
                buf[j] = ch[src];
            }
            ch.copy_from_slice(&buf);
        }
    }
}

fn gaussian_images(set: &mut Dataset, stats: &[(f64, f64)], rng: &mut Rng) {
    let [c, h, w] = set.shape;
    let plane = h * w;
    for img in set.images.chunks_mut(c * plane) {
        for (ch, px) in img.chunks_mut(plane).enumerate() {
            let (mean, std) = stats[ch];
            for p in px {
                *p = (mean + std * rng.normal()) as f32;
            }
        }
    }
}
