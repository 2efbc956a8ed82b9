//! The few-shot workloads' data sets and their splits into meta-training, validation and test
//! classes, so that test classes are never seen:
//! - **Omniglot**: the background zips, split by alphabet (test characters come from alphabets
//!   never seen), each character in four rotations as classes of their own, the standard
//!   augmentation;
//! - **Fashion-MNIST by class**: the second, quick set. Its ten classes split by name, each in
//!   four rotations, the first `per_class` training images of each.

use super::{FewShot, Method};
use crate::families::PrepareError;
use crate::spec::{Ctx, SuiteError};
use randbench_core::data::{self, DataError};
use randbench_core::fewshot::Classes;
use randbench_core::omniglot::{self, Alphabet, OfficialRun};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;

/// The data sets a few-shot workload reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FewShotSet {
    #[default]
    Omniglot,
    FashionMnist,
}

/// `data:` of a few-shot workload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFewShotData {
    set: Option<FewShotSet>,
    background: Option<Vec<PathBuf>>,
    runs: Option<PathBuf>,
    path: Option<PathBuf>,
    per_class: Option<usize>,
    side: Option<usize>,
    rotations: Option<bool>,
    train: Vec<String>,
    validation: Vec<String>,
    test: Vec<String>,
}

/// Where the classes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum FewShotSource {
    Omniglot {
        /// Background zips, read in order: an alphabet found in two is taken from the first.
        zips: Vec<PathBuf>,
        /// Lake's 20 official 20-way one-shot runs (`all_runs.zip`), scored by 20-way 1-shot
        /// cells.
        runs: PathBuf,
    },
    FashionMnist {
        /// An MNIST-layout directory (Debian's dataset-fashion-mnist by default).
        dir: PathBuf,
        /// The first this many training images of each class.
        per_class: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct FewShotDataSpec {
    pub source: FewShotSource,
    /// Images are downscaled to side × side.
    pub side: usize,
    pub rotations: bool,
    /// Classes of meta-training, validation and test: Omniglot's alphabets, Fashion-MNIST's
    /// class names.
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

/// Fashion-MNIST's classes by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images per Fashion-MNIST class unless `per_class` says otherwise: Omniglot's 20 drawings
/// a character, five times over.
const FASHION_MNIST_PER_CLASS: usize = 100;

/// A vendored file: in `data/omniglot` here, else in the nearest one above the binary (a
/// checkout's target/release/randbench finds the checkout's), as suites are found.
fn vendored(file: &str) -> PathBuf {
    let here = PathBuf::from(omniglot::VENDORED_DIR);
    let exe = std::env::current_exe().and_then(|e| e.canonicalize());
    let above = exe.iter().flat_map(|e| e.ancestors().skip(1)).map(|a| a.join(&here));
    let dir = std::iter::once(here.clone()).chain(above).find(|d| d.is_dir()).unwrap_or(here);
    dir.join(file)
}

impl FewShotDataSpec {
    pub fn validate(cx: &Ctx, r: Spanned<RawFewShotData>) -> Result<Self, SuiteError> {
        let at = r.referenced;
        let r = r.value;
        let set = r.set.unwrap_or_default();
        // Per set: what a split names, the largest side, and the other set's keys with that
        // set's name (refused rather than ignored).
        let (unit, largest, foreign, other) = match set {
            FewShotSet::Omniglot => (
                "alphabet",
                105,
                [("path", r.path.is_some()), ("per_class", r.per_class.is_some())],
                "fashion-mnist",
            ),
            FewShotSet::FashionMnist => (
                "class",
                28,
                [("background", r.background.is_some()), ("runs", r.runs.is_some())],
                "omniglot",
            ),
        };
        let side = r.side.unwrap_or(omniglot::SIDE);
        if !(4..=largest).contains(&side) {
            return Err(cx.at(at, format!("data.side: 4 to {largest} pixels, found {side}")));
        }
        let splits = [("train", &r.train), ("validation", &r.validation), ("test", &r.test)];
        for (what, names) in splits {
            if names.is_empty() {
                return Err(cx.at(at, format!("data.{what}: name at least one {unit}")));
            }
        }
        for (i, (a, names)) in splits.iter().enumerate() {
            for (b, others) in &splits[i + 1..] {
                if let Some(both) = names.iter().find(|n| others.contains(n)) {
                    return Err(cx.at(
                        at,
                        format!(
                            "{unit} {both} is in both data.{a} and data.{b}: a {unit} belongs \
                             to one split, so that test classes are never seen"
                        ),
                    ));
                }
            }
        }
        if let Some((key, _)) = foreign.iter().find(|(_, given)| *given) {
            return Err(cx.at(
                at,
                format!("data.{key} belongs to data.set: {other}: drop it or set data.set"),
            ));
        }
        let source = match set {
            FewShotSet::Omniglot => FewShotSource::Omniglot {
                zips: r.background.unwrap_or_else(|| {
                    ["images_background_small1.zip", "images_background_small2.zip"]
                        .map(vendored)
                        .into()
                }),
                runs: r.runs.unwrap_or_else(|| vendored("all_runs.zip")),
            },
            FewShotSet::FashionMnist => {
                if let Some(unknown) = (splits.iter().flat_map(|(_, names)| names.iter()))
                    .find(|n| !FASHION_MNIST_CLASSES.contains(&n.as_str()))
                {
                    return Err(cx.at(
                        at,
                        format!(
                            "no class {unknown} in Fashion-MNIST; its classes are {}",
                            FASHION_MNIST_CLASSES.join(", ")
                        ),
                    ));
                }
                let per_class = r.per_class.unwrap_or(FASHION_MNIST_PER_CLASS);
                if per_class == 0 {
                    return Err(cx.at(at, "data.per_class: at least 1 image".to_string()));
                }
                FewShotSource::FashionMnist {
                    dir: r.path.unwrap_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR)),
                    per_class,
                }
            }
        };
        Ok(FewShotDataSpec {
            source,
            side,
            rotations: r.rotations.unwrap_or(true),
            train: r.train,
            validation: r.validation,
            test: r.test,
        })
    }
}

/// The classes of each split.
pub struct FewShotData {
    pub train: Classes,
    pub validation: Classes,
    pub test: Classes,
    /// The official runs, read where a 20-way 1-shot variant scores them; else empty.
    pub official_runs: Vec<OfficialRun>,
}

/// The episode form of Lake's official runs.
pub const OFFICIAL_RUNS: (usize, usize) = (20, 1);

/// Named groups of classes, each class its images: Omniglot's alphabets of characters, or
/// Fashion-MNIST's classes (a group of one each).
type Groups = Vec<(String, Vec<Vec<Vec<f32>>>)>;

/// Every class of the named groups (an alphabet's characters, or one Fashion-MNIST class), in
/// four rotations each where asked.
fn classes(
    groups: &Groups,
    names: &[String],
    side: usize,
    rotations: bool,
    missing: impl Fn(&str) -> String,
) -> Result<Classes, PrepareError> {
    let turns = if rotations { 4 } else { 1 };
    let mut out = Vec::new();
    for name in names {
        let Some((_, members)) = groups.iter().find(|(n, _)| n == name) else {
            return Err(PrepareError::Mismatch(missing(name)));
        };
        for images in members {
            for turn in 0..turns {
                out.push(images.iter().map(|d| data::rotate(d, side, turn)).collect());
            }
        }
    }
    Ok(Classes { side, classes: out })
}

/// A set that cannot be read, with where the vendored one is.
fn omniglot_unreadable(e: omniglot::OmniglotError) -> PrepareError {
    PrepareError::Mismatch(format!(
        "{e} (the vendored sets are in {} of the repository: run randbench from its root, or \
         give data.background and data.runs)",
        omniglot::VENDORED_DIR
    ))
}

/// Omniglot's alphabets, each a group of characters.
fn omniglot_groups(zips: &[PathBuf], side: usize) -> Result<Groups, PrepareError> {
    let mut alphabets: Vec<Alphabet> = Vec::new();
    for zip in zips {
        for a in omniglot::read_alphabets(zip, side).map_err(omniglot_unreadable)? {
            if !alphabets.iter().any(|b| b.name == a.name) {
                alphabets.push(a);
            }
        }
    }
    Ok(alphabets.into_iter().map(|a| (a.name, a.characters)).collect())
}

/// Fashion-MNIST's classes, each a group of one: the first `per_class` training images of
/// each, downscaled to side × side.
fn fashion_mnist_groups(
    dir: &std::path::Path,
    per_class: usize,
    side: usize,
) -> Result<Groups, DataError> {
    let train = data::load_mnist_train(dir, FASHION_MNIST_CLASSES.len())?;
    let n = train.shape[1];
    let mut images = vec![Vec::with_capacity(per_class); FASHION_MNIST_CLASSES.len()];
    for (i, &label) in train.labels.iter().enumerate() {
        let class: &mut Vec<Vec<f32>> = &mut images[label as usize];
        if class.len() < per_class {
            let image = train.image(i);
            class.push(if n == side { image.to_vec() } else { data::downscale(image, n, side) });
        }
    }
    if let Some((c, few)) = images.iter().enumerate().find(|(_, xs)| xs.len() < per_class) {
        return Err(DataError::Invalid(format!(
            "data.per_class is {per_class} but Fashion-MNIST's training set holds {} images of \
             {}: lower it",
            few.len(),
            FASHION_MNIST_CLASSES[c]
        )));
    }
    let names = FASHION_MNIST_CLASSES.iter().map(|c| c.to_string());
    Ok(names.zip(images.into_iter().map(|xs| vec![xs])).collect())
}

pub fn prepare(w: &FewShot) -> Result<FewShotData, PrepareError> {
    let d = &w.data;
    let (groups, [unit, units, place], official_runs) = match &d.source {
        FewShotSource::Omniglot { zips, runs } => (
            omniglot_groups(zips, d.side)?,
            ["alphabet", "alphabets", "the background sets"],
            match w.episodes.contains(&OFFICIAL_RUNS) {
                true => omniglot::read_official_runs(runs, d.side).map_err(omniglot_unreadable)?,
                false => vec![],
            },
        ),
        FewShotSource::FashionMnist { dir, per_class } => (
            fashion_mnist_groups(dir, *per_class, d.side)
                .map_err(|e| PrepareError::Mismatch(e.to_string()))?,
            ["class", "classes", "Fashion-MNIST"],
            vec![],
        ),
    };
    let missing = |name: &str| {
        let known: Vec<&str> = groups.iter().map(|(n, _)| n.as_str()).collect();
        format!("no {unit} {name} in {place}; they hold {}", known.join(", "))
    };
    let split = |names| classes(&groups, names, d.side, d.rotations, missing);
    let data = FewShotData {
        train: split(&d.train)?,
        validation: split(&d.validation)?,
        test: split(&d.test)?,
        official_runs,
    };
    let most_way = w.episodes.iter().map(|e| e.0).max().unwrap_or(0);
    let most_images = w.episodes.iter().map(|e| e.1).max().unwrap_or(0) + w.query;
    for (what, c) in
        [("train", &data.train), ("validation", &data.validation), ("test", &data.test)]
    {
        if c.classes.len() < most_way || c.fewest_images() < most_images {
            return Err(PrepareError::Mismatch(format!(
                "data.{what} has {} classes, the smallest with {} images; the episodes need {} \
                 classes of {} (shot + query): add {units} or lower way, shot or query",
                c.classes.len(),
                c.fewest_images(),
                most_way,
                most_images
            )));
        }
    }
    let images: usize = data.train.classes.iter().map(Vec::len).sum();
    if w.methods.contains(&Method::Pretrained) && images < w.pretrain.batch {
        return Err(PrepareError::Mismatch(format!(
            "pretrain.batch is {} but data.train holds {images} images: lower the batch",
            w.pretrain.batch
        )));
    }
    Ok(data)
}
