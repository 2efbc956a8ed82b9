//! Loaders and the randomization test's corruptions.

use flate2::{write::GzEncoder, Compression};
use randbench_core::corrupt::Condition;
use randbench_core::data::{
    channel_stats, load_idx_pair, load_mnist_dir, read_cifar_batch, read_idx, synthetic,
    translate_batch, write_idx, Dataset, Split, FASHION_MNIST_DIR,
};
use randbench_core::rng::Rng;
use randbench_core::testing::{fashion_mnist_installed, Scratch};
use std::io::Write;

fn tmp(name: &str) -> Scratch {
    Scratch::new("data", name)
}

#[test]
fn idx_round_trip_plain_and_gzipped() {
    let dir = tmp("idx");
    let dims = [3, 4, 5];
    let data: Vec<u8> = (0..60).collect();
    let plain = dir.join("x-idx3-ubyte");
    write_idx(&plain, &dims, &data).unwrap();
    let back = read_idx(&plain).unwrap();
    assert_eq!(back.dims, dims);
    assert_eq!(back.data, data);
    let gz = dir.join("x-idx3-ubyte.gz");
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(read_idx(&gz).unwrap(), back);
}

#[test]
fn truncated_or_foreign_idx_files_are_errors_naming_the_file() {
    let dir = tmp("bad-idx");
    let good = dir.join("good");
    write_idx(&good, &[2, 2, 2], &[1; 8]).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated-images");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let msg = read_idx(&truncated).unwrap_err().to_string();
    assert!(msg.contains("truncated-images") && msg.contains("truncated"), "{msg}");
    let foreign = dir.join("foreign.bin");
    std::fs::write(&foreign, b"\x89PNG\r\n\x1a\n....").unwrap();
    let msg = read_idx(&foreign).unwrap_err().to_string();
    assert!(msg.contains("foreign.bin") && msg.contains("magic"), "{msg}");
    let bad_gz = dir.join("damaged.gz");
    std::fs::write(&bad_gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let msg = read_idx(&bad_gz).unwrap_err().to_string();
    assert!(msg.contains("damaged.gz") && msg.contains("gzip"), "{msg}");
    let missing = dir.join("missing");
    let msg = read_idx(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn idx_pair_checks_counts_and_label_range() {
    let dir = tmp("pair");
    let images = dir.join("images");
    write_idx(&images, &[2, 2, 2], &[0, 255, 0, 255, 128, 0, 0, 0]).unwrap();
    let labels = dir.join("labels");
    write_idx(&labels, &[2], &[3, 9]).unwrap();
    let d = load_idx_pair(&images, &labels, 10).unwrap();
    assert_eq!(d.shape, [1, 2, 2]);
    assert_eq!(d.images[1], 1.0);
    assert_eq!(d.labels, vec![3, 9]);
    write_idx(&labels, &[2], &[3, 10]).unwrap();
    let msg = load_idx_pair(&images, &labels, 10).unwrap_err().to_string();
    assert!(msg.contains("labels") && msg.contains("label 10"), "{msg}");
    write_idx(&labels, &[3], &[1, 2, 3]).unwrap();
    let msg = load_idx_pair(&images, &labels, 10).unwrap_err().to_string();
    assert!(msg.contains("3 labels for 2 images"), "{msg}");
}

#[test]
fn cifar_batches_read_and_truncation_is_reported() {
    let dir = tmp("cifar");
    let mut bytes = Vec::new();
    for k in 0..3u8 {
        bytes.push(k);
        bytes.extend(std::iter::repeat_n(k * 10, 3072));
    }
    let f = dir.join("data_batch_1.bin");
    std::fs::write(&f, &bytes).unwrap();
    let d = read_cifar_batch(&f).unwrap();
    assert_eq!((d.len(), d.shape, d.labels.clone()), (3, [3, 32, 32], vec![0, 1, 2]));
    assert_eq!(d.image(2)[100], 20.0 / 255.0);
    std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
    let msg = read_cifar_batch(&f).unwrap_err().to_string();
    assert!(msg.contains("data_batch_1.bin") && msg.contains("truncated"), "{msg}");
}

#[test]
fn fashion_mnist_from_the_debian_package() {
    if !fashion_mnist_installed() {
        return;
    }
    let s = load_mnist_dir(std::path::Path::new(FASHION_MNIST_DIR), 10).unwrap();
    assert_eq!((s.train.len(), s.test.len(), s.train.shape), (60_000, 10_000, [1, 28, 28]));
    let mut counts = [0; 10];
    for &l in &s.train.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
}

/// Images whose pixel values are their own positions plus 1000·image index, so a
/// permutation can be read back from the corrupted images.
fn numbered(n: usize) -> Split {
    let make = |n: usize| {
        let images = (0..n).flat_map(|i| (0..16).map(move |p| (i * 1000 + p) as f32)).collect();
        Dataset::new(images, (0..n as i64).map(|i| i % 4).collect(), [1, 4, 4], 4).unwrap()
    };
    Split { train: make(n), test: make(n) }
}

fn permutation_of(img: &[f32], index: usize) -> Vec<usize> {
    img.iter().map(|&v| v as usize - index * 1000).collect()
}

#[test]
fn shuffled_pixels_use_one_permutation_for_all_train_and_test_images() {
    let mut s = numbered(20);
    Condition::ShuffledPixels.apply(&mut s, 1);
    let first = permutation_of(s.train.image(0), 0);
    assert_ne!(first, (0..16).collect::<Vec<_>>(), "not shuffled");
    for set in [&s.train, &s.test] {
        for i in 0..set.len() {
            assert_eq!(permutation_of(set.image(i), i), first, "image {i}");
        }
    }
}

#[test]
fn random_pixels_use_a_new_permutation_for_each_image() {
    let mut s = numbered(20);
    Condition::RandomPixels.apply(&mut s, 1);
    let mut distinct = std::collections::HashSet::new();
    for set in [&s.train, &s.test] {
        for i in 0..set.len() {
            let mut p = permutation_of(set.image(i), i);
            distinct.insert(p.clone());
            p.sort_unstable();
            assert_eq!(p, (0..16).collect::<Vec<_>>(), "image {i} is not a permutation of itself");
        }
    }
    assert_eq!(distinct.len(), 40);
}

#[test]
fn corrupted_label_fraction_is_nine_tenths_of_p() {
    let n = 20_000;
    for p in [0.0, 0.2, 0.5, 0.8, 1.0] {
        let mut s = synthetic(n, 10, [1, 4, 4], 10, 3);
        let before = s.train.labels.clone();
        let cond = if p == 1.0 { Condition::RandomLabels } else { Condition::CorruptLabels(p) };
        cond.apply(&mut s, 7);
        let changed =
            before.iter().zip(&s.train.labels).filter(|(a, b)| a != b).count() as f64 / n as f64;
        let q = 0.9 * p;
        let sigma = (q * (1.0 - q) / n as f64).sqrt();
        assert!(
            (changed - q).abs() <= 4.0 * sigma + 1e-12,
            "p={p}: {changed} changed, expected {q} ± {}",
            4.0 * sigma
        );
        assert!(s.train.labels.iter().all(|&l| (0..10).contains(&l)));
    }
    // The test labels stay true.
    let mut s = synthetic(100, 100, [1, 4, 4], 10, 3);
    let test = s.test.labels.clone();
    Condition::RandomLabels.apply(&mut s, 7);
    assert_eq!(s.test.labels, test);
}

#[test]
fn gaussian_inputs_match_the_data_mean_and_variance() {
    let mut s = synthetic(3000, 500, [1, 12, 12], 10, 4);
    let before = channel_stats(&s.train);
    Condition::Gaussian.apply(&mut s, 2);
    let after = channel_stats(&s.train);
    let test = channel_stats(&s.test);
    for ((m0, s0), (m1, s1)) in before.iter().zip(&after) {
        assert!(
            (m0 - m1).abs() < 0.005 && (s0 - s1).abs() < 0.005,
            "before ({m0}, {s0}) after ({m1}, {s1})"
        );
    }
    assert!((test[0].0 - before[0].0).abs() < 0.01);
}

#[test]
fn corruptions_are_seeded() {
    for cond in [
        Condition::RandomLabels,
        Condition::ShuffledPixels,
        Condition::RandomPixels,
        Condition::Gaussian,
    ] {
        let (mut a, mut b, mut c) = (numbered(10), numbered(10), numbered(10));
        cond.apply(&mut a, 5);
        cond.apply(&mut b, 5);
        cond.apply(&mut c, 6);
        assert_eq!(a, b, "{cond}");
        assert_ne!(a, c, "{cond}");
    }
}

#[test]
fn synthetic_data_is_seeded_and_class_structured() {
    let a = synthetic(200, 50, [1, 28, 28], 10, 1);
    assert_eq!(a, synthetic(200, 50, [1, 28, 28], 10, 1));
    assert_ne!(a, synthetic(200, 50, [1, 28, 28], 10, 2));
    // Nearest class mean classifies held-out examples far above chance.
    let size = a.train.image_size();
    let mut means = vec![vec![0f64; size]; 10];
    for i in 0..a.train.len() {
        for (m, &p) in means[a.train.labels[i] as usize].iter_mut().zip(a.train.image(i)) {
            *m += p as f64 / 20.0;
        }
    }
    let correct = (0..a.test.len())
        .filter(|&i| {
            let d = |k: usize| {
                means[k]
                    .iter()
                    .zip(a.test.image(i))
                    .map(|(m, &p)| (m - p as f64).powi(2))
                    .sum::<f64>()
            };
            (0..10).min_by(|&x, &y| d(x).total_cmp(&d(y))).unwrap() as i64 == a.test.labels[i]
        })
        .count();
    assert!(correct as f64 / a.test.len() as f64 > 0.6, "{correct}/50");
}

/// `img` (one channel, h×w) moved by (dy, dx), uncovered pixels `fill`.
fn shifted(img: &[f32], h: usize, w: usize, dy: isize, dx: isize, fill: f32) -> Vec<f32> {
    let mut out = vec![fill; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let (sy, sx) = (y + dy, x + dx);
            if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                out[(y * w as isize + x) as usize] = img[(sy * w as isize + sx) as usize];
            }
        }
    }
    out
}

#[test]
fn translation_moves_each_image_by_its_own_offset_and_fills_with_the_background() {
    let orig: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let copies = 40;
    let mut batch: Vec<f32> = orig.iter().copied().cycle().take(16 * copies).collect();
    let fill = -0.42;
    let mut rng = Rng::new(1);
    translate_batch(&mut batch, [1, 4, 4], 1, &[fill], &mut rng);
    let mut offsets = std::collections::HashSet::new();
    for img in batch.chunks(16) {
        let offset = (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| shifted(&orig, 4, 4, dy, dx, fill) == img)
            .unwrap_or_else(|| panic!("not a translation of the image by at most 1: {img:?}"));
        offsets.insert(offset);
    }
    // Nine offsets are possible; an identity (or one offset for the batch) gives one.
    assert!(offsets.len() >= 7, "offsets drawn: {offsets:?}");
}

#[test]
fn standardizing_sets_the_background_that_padding_fills_with() {
    let mut s = synthetic(200, 50, [1, 8, 8], 10, 1);
    assert_eq!(s.train.background, vec![0.0]);
    let (mean, sd) = s.standardize()[0];
    let expected = (-mean / sd) as f32;
    assert!((s.train.background[0] - expected).abs() < 1e-6);
    assert_eq!(s.test.background, s.train.background, "the test set is scaled alike");
}

#[test]
fn standardizing_uses_training_statistics_for_both_sets() {
    let mut s = synthetic(500, 200, [1, 8, 8], 10, 1);
    let before = channel_stats(&s.train)[0];
    let stats = s.standardize();
    assert_eq!(stats[0], before);
    let (m, sd) = channel_stats(&s.train)[0];
    assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-4, "{m} {sd}");
    let (tm, tsd) = channel_stats(&s.test)[0];
    assert!(
        tm.abs() < 0.1 && (tsd - 1.0).abs() < 0.1,
        "test set uses the training statistics: {tm} {tsd}"
    );
}
