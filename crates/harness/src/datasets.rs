//! Data sets as suites describe them: where they come from, how much of them, and loading them
//! (any family that trains on images uses these).

use randbench_core::data::{self, DataError, Split};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// Generated from the seed; needs no file.
    Synthetic,
    /// Debian's dataset-fashion-mnist (or `path`, an MNIST-layout directory).
    FashionMnist,
    /// Any MNIST-layout directory of IDX files (`path`).
    Idx,
    /// The CIFAR-10 binary distribution's directory (`path`).
    Cifar10,
}

/// `data:` as written in a suite.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub(crate) source: DataSource,
    pub(crate) path: Option<PathBuf>,
    pub(crate) train: Option<Spanned<usize>>,
    pub(crate) test: Option<Spanned<usize>>,
    pub(crate) image: Option<Spanned<[usize; 3]>>,
    pub(crate) classes: Option<Spanned<usize>>,
    pub(crate) normalize: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: DataSource,
    pub path: Option<PathBuf>,
    /// Training examples to use (the first n); all when None.
    pub train: Option<usize>,
    pub test: Option<usize>,
    /// Image shape of synthetic data.
    pub image: [usize; 3],
    pub classes: usize,
    /// Standardize pixels with the full training set's per-channel mean and deviation.
    pub normalize: bool,
}

/// Loads a data set as its suite describes it.
pub fn load_data(spec: &DataSpec) -> Result<Split, DataError> {
    let mut split = match spec.source {
        DataSource::Synthetic => {
            let train = spec.train.expect("validated: synthetic data has a size");
            // The data are a fixed set (seed 0): seeds vary initialisation, order and corruption.
            data::synthetic(train, spec.test.unwrap_or(1000), spec.image, spec.classes, 0)
        }
        DataSource::FashionMnist => {
            let dir = spec.path.clone().unwrap_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR));
            data::load_mnist_dir(&dir, 10)?
        }
        DataSource::Idx => {
            data::load_mnist_dir(spec.path.as_deref().expect("validated"), spec.classes)?
        }
        DataSource::Cifar10 => data::load_cifar10_dir(spec.path.as_deref().expect("validated"))?,
    };
    // Statistics of the whole training set, before taking a subset (as torchvision users do).
    if spec.normalize {
        split.standardize();
    }
    if let Some(n) = spec.train {
        split.train = split.train.take(n).map_err(|e| e.context("data.train"))?;
    }
    if let Some(n) = spec.test {
        split.test = split.test.take(n).map_err(|e| e.context("data.test"))?;
    }
    Ok(split)
}
