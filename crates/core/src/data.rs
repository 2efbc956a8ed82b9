//! Image classification data: IDX files (MNIST, Fashion-MNIST, EMNIST), the CIFAR-10 binary
//! format, and a synthetic set with real class structure that needs no file.

use crate::rng::Rng;
use crate::tensor::{numel, HostTensor};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Idx { path: PathBuf, source: IdxError },
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// The error with `what` (the setting it concerns) in front.
    pub fn context(self, what: &str) -> DataError {
        DataError::Invalid(format!("{what}: {self}"))
    }
}

fn format_err(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::Format { path: path.to_path_buf(), detail: detail.into() }
}

/// Images [n, c, h, w] with pixel values in [0, 1], and their class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// (channels, height, width) of one image.
    pub shape: [usize; 3],
    pub classes: usize,
    /// Per channel, the value a black (0) pixel has as the images are now scaled: 0, or its
    /// standardized value after [`Split::standardize`]. Padding fills with it.
    pub background: Vec<f32>,
}

impl Dataset {
    pub fn new(
        images: Vec<f32>,
        labels: Vec<i64>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self, DataError> {
        if images.len() != labels.len() * numel(&shape) {
            return Err(DataError::Invalid(format!(
                "{} labels need {} pixel values of images {shape:?}, found {}",
                labels.len(),
                labels.len() * numel(&shape),
                images.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
            return Err(DataError::Invalid(format!("label {bad} is outside 0..{classes}")));
        }
        Ok(Self { images, labels, shape, classes, background: vec![0.0; shape[0]] })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_size(&self) -> usize {
        numel(&self.shape)
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let s = self.image_size();
        &self.images[i * s..(i + 1) * s]
    }

    /// The first `n` examples.
    pub fn take(&self, n: usize) -> Result<Self, DataError> {
        self.rows(0..n)
    }

    /// The examples in `range`.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<Self, DataError> {
        if range.end > self.len() {
            return Err(DataError::Invalid(format!(
                "asked for {} examples, the data set has {}",
                range.end,
                self.len()
            )));
        }
        let s = self.image_size();
        Ok(Self {
            images: self.images[range.start * s..range.end * s].to_vec(),
            labels: self.labels[range.clone()].to_vec(),
            shape: self.shape,
            classes: self.classes,
            background: self.background.clone(),
        })
    }

    /// Images as [n, c, h, w] and labels as [n].
    pub fn tensors(&self) -> (HostTensor, HostTensor) {
        let [c, h, w] = self.shape;
        (
            HostTensor::f32(vec![self.len(), c, h, w], self.images.clone()).expect("consistent"),
            HostTensor::i64(vec![self.len()], self.labels.clone()).expect("consistent"),
        )
    }

    /// The examples at `indices`, as tensors.
    pub fn batch(&self, indices: &[usize]) -> (HostTensor, HostTensor) {
        let s = self.image_size();
        let mut images = Vec::with_capacity(indices.len() * s);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let [c, h, w] = self.shape;
        (
            HostTensor::f32(vec![indices.len(), c, h, w], images).expect("consistent"),
            HostTensor::i64(vec![indices.len()], labels).expect("consistent"),
        )
    }
}

/// (mean, standard deviation) of each channel over a whole set.
pub fn channel_stats(set: &Dataset) -> Vec<(f64, f64)> {
    let [c, h, w] = set.shape;
    let plane = h * w;
    (0..c)
        .map(|ch| {
            let (mut n, mut sum, mut sq) = (0f64, 0f64, 0f64);
            for img in set.images.chunks(c * plane) {
                for &v in &img[ch * plane..(ch + 1) * plane] {
                    n += 1.0;
                    sum += v as f64;
                    sq += (v as f64) * (v as f64);
                }
            }
            let mean = sum / n;
            (mean, (sq / n - mean * mean).max(0.0).sqrt())
        })
        .collect()
}

/// A training and a test set.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

impl Split {
    /// Standardizes both sets per channel with the training set's mean and deviation (as
    /// torchvision's `Normalize` with the data set's statistics); returns those statistics.
    pub fn standardize(&mut self) -> Vec<(f64, f64)> {
        let stats = channel_stats(&self.train);
        let [c, h, w] = self.train.shape;
        let plane = h * w;
        let scale = |ch: usize, v: f64| {
            let (mean, std) = stats[ch];
            let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
            ((v - mean) * inv) as f32
        };
        for set in [&mut self.train, &mut self.test] {
            for img in set.images.chunks_mut(c * plane) {
                for (ch, px) in img.chunks_mut(plane).enumerate() {
                    for p in px {
                        *p = scale(ch, *p as f64);
                    }
                }
            }
            set.background = (0..c).map(|ch| scale(ch, set.background[ch] as f64)).collect();
        }
        stats
    }
}

// ---- IDX ----

/// An IDX file's dimensions and unsigned-byte contents.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw =
        std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("gzip data is damaged or truncated: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file of unsigned bytes, gzipped or not.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let bytes = read_file(path)?;
    parse_idx(&bytes).map_err(|source| DataError::Idx { path: path.to_path_buf(), source })
}

/// What is wrong with the bytes of an IDX file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdxError {
    #[error("too short for an IDX header ({0} bytes)")]
    ShortHeader(usize),
    #[error("wrong magic number {0:02x?}: not an IDX file")]
    Magic([u8; 4]),
    #[error("element type 0x{0:02x} is not supported (only unsigned bytes, 0x08)")]
    ElementType(u8),
    #[error("header of {0} dimensions is truncated")]
    TruncatedHeader(usize),
    #[error("truncated: dimensions {dims:?} need {need} bytes of data, the file has {have}")]
    TruncatedData { dims: Vec<usize>, need: usize, have: usize },
    #[error("{extra} bytes of trailing data after dimensions {dims:?}")]
    TrailingData { dims: Vec<usize>, extra: usize },
}

fn parse_idx(b: &[u8]) -> Result<Idx, IdxError> {
    if b.len() < 4 {
        return Err(IdxError::ShortHeader(b.len()));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(IdxError::Magic([b[0], b[1], b[2], b[3]]));
    }
    if b[2] != 0x08 {
        return Err(IdxError::ElementType(b[2]));
    }
    let ndim = b[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || b.len() < header {
        return Err(IdxError::TruncatedHeader(ndim));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let need = numel(&dims);
    let have = b.len() - header;
    if have < need {
        return Err(IdxError::TruncatedData { dims, need, have });
    }
    if have > need {
        return Err(IdxError::TrailingData { dims, extra: have - need });
    }
    Ok(Idx { dims, data: b[header..].to_vec() })
}

/// Writes an IDX file of unsigned bytes (the format's own byte order: big-endian dimensions).
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<(), DataError> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(path, b).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

/// Images and labels from a pair of IDX files (pixels scaled to [0, 1]).
pub fn load_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let im = read_idx(images)?;
    let lb = read_idx(labels)?;
    if im.dims.len() != 3 {
        return Err(format_err(
            images,
            format!("expected images of dimensions [n, h, w], found {:?}", im.dims),
        ));
    }
    if lb.dims.len() != 1 {
        return Err(format_err(
            labels,
            format!("expected labels of dimensions [n], found {:?}", lb.dims),
        ));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(format_err(
            labels,
            format!("{} labels for {} images in {}", lb.dims[0], im.dims[0], images.display()),
        ));
    }
    if let Some(pos) = lb.data.iter().position(|&l| l as usize >= classes) {
        return Err(format_err(
            labels,
            format!("label {} of example {pos} is outside 0..{classes}", lb.data[pos]),
        ));
    }
    let pixels = im.data.iter().map(|&p| p as f32 / 255.0).collect();
    let label_values = lb.data.iter().map(|&l| l as i64).collect();
    Dataset::new(pixels, label_values, [1, im.dims[1], im.dims[2]], classes)
}

/// The file `name` in `dir`, gzipped (`name.gz`) or not.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(format!("{name}.gz")), dir.join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Invalid(format!(
        "{}: neither {name} nor {name}.gz is there (for Fashion-MNIST: `apt-get install dataset-fashion-mnist`, or scripts/setup-data.sh)",
        dir.display()
    )))
}

/// An MNIST-layout directory (MNIST, Fashion-MNIST): train- and t10k- images and labels.
pub fn load_mnist_dir(dir: &Path, classes: usize) -> Result<Split, DataError> {
    Ok(Split { train: load_mnist_train(dir, classes)?, test: mnist_part(dir, "t10k", classes)? })
}

/// The training set alone of an MNIST-layout directory, for a reader that needs no test set.
pub fn load_mnist_train(dir: &Path, classes: usize) -> Result<Dataset, DataError> {
    mnist_part(dir, "train", classes)
}

/// The `prefix`- images and labels of an MNIST-layout directory.
fn mnist_part(dir: &Path, prefix: &str, classes: usize) -> Result<Dataset, DataError> {
    let images = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    load_idx_pair(&images, &labels, classes)
}

// ---- square images ----

/// Rotates a side×side image by quarter turns (0..4) counterclockwise.
pub fn rotate(image: &[f32], side: usize, quarter_turns: usize) -> Vec<f32> {
    assert_eq!(image.len(), side * side, "rotate: image is not {side}×{side}");
    let mut out = image.to_vec();
    for _ in 0..quarter_turns % 4 {
        // A counterclockwise turn brings the right column to the top row.
        out = (0..side * side).map(|i| out[(i % side) * side + (side - 1 - i / side)]).collect();
    }
    out
}

/// Area-averaging (box filter) resize of an n×n image to side×side, done one axis at a time.
/// Each axis sums integer-weighted pixels and divides by the total weight n once: with all
/// pixels in [0, 1], the result cannot round past 1.
pub fn downscale(image: &[f32], n: usize, side: usize) -> Vec<f32> {
    let weights = box_weights(n, side);
    let average = |taps: &[(usize, f32)], pixel: &dyn Fn(usize) -> f32| {
        taps.iter().map(|&(i, w)| w * pixel(i)).sum::<f32>() / n as f32
    };
    let mut rows = vec![0.0; n * side]; // n rows of side columns
    for (y, row) in image.chunks(n).enumerate() {
        for (x, taps) in weights.iter().enumerate() {
            rows[y * side + x] = average(taps, &|i| row[i]);
        }
    }
    let mut out = vec![0.0; side * side];
    for (y, taps) in weights.iter().enumerate() {
        for x in 0..side {
            out[y * side + x] = average(taps, &|i| rows[i * side + x]);
        }
    }
    out
}

/// For each of `side` output pixels along an axis of `n` input pixels, the input pixels it
/// covers and by how much. Measured in units of 1/side of an input pixel, input pixel i spans
/// [i·side, (i+1)·side) and output pixel o spans [o·n, (o+1)·n): the overlaps are integers
/// (exact in f32) and sum to n.
fn box_weights(n: usize, side: usize) -> Vec<Vec<(usize, f32)>> {
    (0..side)
        .map(|o| {
            let (lo, hi) = (o * n, (o + 1) * n);
            (lo / side..hi.div_ceil(side))
                .map(|i| (i, (hi.min((i + 1) * side) - lo.max(i * side)) as f32))
                .collect()
        })
        .collect()
}

// ---- CIFAR-10 ----

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// One CIFAR-10 binary batch file: records of a label byte and 3×32×32 pixel bytes.
pub fn read_cifar_batch(path: &Path) -> Result<Dataset, DataError> {
    let bytes = read_file(path)?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
        return Err(format_err(path, format!("{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records (truncated?)", bytes.len())));
    }
    let n = bytes.len() / CIFAR_RECORD;
    let mut images = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks(CIFAR_RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(format_err(
                path,
                format!("label {} of record {i} is outside 0..10", rec[0]),
            ));
        }
        labels.push(rec[0] as i64);
        images.extend(rec[1..].iter().map(|&p| p as f32 / 255.0));
    }
    Dataset::new(images, labels, [3, 32, 32], 10)
}

/// The CIFAR-10 binary distribution's directory: data_batch_1..5.bin and test_batch.bin.
pub fn load_cifar10_dir(dir: &Path) -> Result<Split, DataError> {
    let mut train: Option<Dataset> = None;
    for k in 1..=5 {
        let part = read_cifar_batch(&find_file(dir, &format!("data_batch_{k}.bin"))?)?;
        train = Some(match train {
            None => part,
            Some(mut t) => {
                t.images.extend(part.images);
                t.labels.extend(part.labels);
                t
            }
        });
    }
    let test = read_cifar_batch(&find_file(dir, "test_batch.bin")?)?;
    Ok(Split { train: train.expect("five batches"), test })
}

// ---- synthetic ----

/// A synthetic set with real class structure: each class is a prototype made of a few
/// Gaussian blobs; an example is its class's prototype, shifted by up to 3 pixels, scaled in
/// intensity, with a distracting blob and pixel noise. Generated from `seed`, so the main job
/// and the tests run anywhere.
pub fn synthetic(train: usize, test: usize, shape: [usize; 3], classes: usize, seed: u64) -> Split {
    let [c, h, w] = shape;
    let mut rng = Rng::stream(seed, "synthetic");
    let blob = |img: &mut [f32], cy: f64, cx: f64, sigma: f64, amp: f64| {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let d2 = (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                    img[(ch * h + y) * w + x] += (amp * (-d2 / (2.0 * sigma * sigma)).exp()) as f32;
                }
            }
        }
    };
    let prototypes: Vec<Vec<(f64, f64, f64, f64)>> = (0..classes)
        .map(|_| {
            (0..3)
                .map(|_| {
                    (
                        rng.uniform_in(0.2, 0.8) * h as f64,
                        rng.uniform_in(0.2, 0.8) * w as f64,
                        rng.uniform_in(1.5, 4.0),
                        rng.uniform_in(0.5, 1.0),
                    )
                })
                .collect()
        })
        .collect();
    let mut make = |n: usize| -> Dataset {
        let mut images = vec![0f32; n * c * h * w];
        let mut labels = Vec::with_capacity(n);
        for (i, img) in images.chunks_mut(c * h * w).enumerate().take(n) {
            let k = i % classes;
            labels.push(k as i64);
            let (dy, dx) = (rng.uniform_in(-3.0, 3.0), rng.uniform_in(-3.0, 3.0));
            let gain = rng.uniform_in(0.7, 1.3);
            for &(cy, cx, s, a) in &prototypes[k] {
                blob(img, cy + dy, cx + dx, s, a * gain);
            }
            blob(
                img,
                rng.uniform_in(0.0, h as f64),
                rng.uniform_in(0.0, w as f64),
                rng.uniform_in(1.5, 3.0),
                rng.uniform_in(0.3, 0.6),
            );
            for p in img.iter_mut() {
                *p = (*p + 0.1 * rng.normal() as f32).clamp(0.0, 1.0);
            }
        }
        Dataset::new(images, labels, shape, classes).expect("consistent")
    };
    let train_set = make(train);
    let test_set = make(test);
    Split { train: train_set, test: test_set }
}

// ---- augmentation ----

/// Random translation by up to `pad` pixels each way (a random crop of the image padded by
/// `pad`), one offset per example, drawn from `rng`. Uncovered pixels take each channel's
/// `fill` value: the data set's background, as torchvision's RandomCrop before Normalize pads
/// with black.
pub fn translate_batch(
    images: &mut [f32],
    shape: [usize; 3],
    pad: usize,
    fill: &[f32],
    rng: &mut Rng,
) {
    let [c, h, w] = shape;
    let size = c * h * w;
    let mut src = vec![0f32; size];
    for img in images.chunks_mut(size) {
        let dy = rng.below(2 * pad + 1) as isize - pad as isize;
        let dx = rng.below(2 * pad + 1) as isize - pad as isize;
        src.copy_from_slice(img);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y as isize + dy, x as isize + dx);
                    let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                    img[(ch * h + y) * w + x] = if inside {
                        src[(ch * h + sy as usize) * w + sx as usize]
                    } else {
                        fill[ch]
                    };
                }
            }
        }
    }
}
