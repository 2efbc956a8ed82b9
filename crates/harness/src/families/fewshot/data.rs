//! Omniglot as a few-shot workload reads it: the background zips, the split by alphabet (so
//! test characters come from alphabets never seen), and each character in four rotations as
//! classes of their own, the standard augmentation.

use super::{FewShot, Method};
use crate::families::PrepareError;
use crate::spec::{Ctx, SuiteError};
use randbench_core::fewshot::Classes;
use randbench_core::omniglot::{self, Alphabet, OfficialRun};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;

/// `data:` of a few-shot workload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOmniglot {
    background: Option<Vec<PathBuf>>,
    runs: Option<PathBuf>,
    side: Option<usize>,
    rotations: Option<bool>,
    train: Vec<String>,
    validation: Vec<String>,
    test: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OmniglotSpec {
    /// Background zips, read in order: an alphabet found in two is taken from the first.
    pub zips: Vec<PathBuf>,
    /// Lake's 20 official 20-way one-shot runs (`all_runs.zip`), scored by 20-way 1-shot cells.
    pub runs: PathBuf,
    /// Images are downscaled to side × side.
    pub side: usize,
    pub rotations: bool,
    /// Alphabets of meta-training, validation and test.
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

/// A vendored file: in `data/omniglot` here, else in the nearest one above the binary (a
/// checkout's target/release/randbench finds the checkout's), as suites are found.
fn vendored(file: &str) -> PathBuf {
    let here = PathBuf::from(omniglot::VENDORED_DIR);
    let exe = std::env::current_exe().and_then(|e| e.canonicalize());
    let above = exe.iter().flat_map(|e| e.ancestors().skip(1)).map(|a| a.join(&here));
    let dir = std::iter::once(here.clone()).chain(above).find(|d| d.is_dir()).unwrap_or(here);
    dir.join(file)
}

impl OmniglotSpec {
    pub fn validate(cx: &Ctx, r: Spanned<RawOmniglot>) -> Result<Self, SuiteError> {
        let at = r.referenced;
        let r = r.value;
        let side = r.side.unwrap_or(omniglot::SIDE);
        if !(4..=105).contains(&side) {
            return Err(cx.at(at, format!("data.side: 4 to 105 pixels, found {side}")));
        }
        let splits = [("train", &r.train), ("validation", &r.validation), ("test", &r.test)];
        for (what, names) in splits {
            if names.is_empty() {
                return Err(cx.at(at, format!("data.{what}: name at least one alphabet")));
            }
        }
        for (i, (a, names)) in splits.iter().enumerate() {
            for (b, others) in &splits[i + 1..] {
                if let Some(both) = names.iter().find(|n| others.contains(n)) {
                    return Err(cx.at(
                        at,
                        format!(
                            "alphabet {both} is in both data.{a} and data.{b}: an alphabet \
                             belongs to one split, so that test characters are never seen"
                        ),
                    ));
                }
            }
        }
        Ok(OmniglotSpec {
            zips: r.background.unwrap_or_else(|| {
                ["images_background_small1.zip", "images_background_small2.zip"]
                    .map(vendored)
                    .into()
            }),
            runs: r.runs.unwrap_or_else(|| vendored("all_runs.zip")),
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

/// Every character of the named alphabets, in four rotations each where asked.
fn classes(
    alphabets: &[Alphabet],
    names: &[String],
    side: usize,
    rotations: bool,
) -> Result<Classes, PrepareError> {
    let turns = if rotations { 4 } else { 1 };
    let mut out = Vec::new();
    for name in names {
        let Some(a) = alphabets.iter().find(|a| &a.name == name) else {
            let known: Vec<&str> = alphabets.iter().map(|a| a.name.as_str()).collect();
            return Err(PrepareError::Mismatch(format!(
                "no alphabet {name} in the background sets; they hold {}",
                known.join(", ")
            )));
        };
        for drawings in &a.characters {
            for turn in 0..turns {
                out.push(drawings.iter().map(|d| omniglot::rotate(d, side, turn)).collect());
            }
        }
    }
    Ok(Classes { side, classes: out })
}

pub fn prepare(w: &FewShot) -> Result<FewShotData, PrepareError> {
    let d = &w.data;
    let unreadable = |e: omniglot::OmniglotError| {
        PrepareError::Mismatch(format!(
            "{e} (the vendored sets are in {} of the repository: run randbench from its root, or \
             give data.background and data.runs)",
            omniglot::VENDORED_DIR
        ))
    };
    let mut alphabets: Vec<Alphabet> = Vec::new();
    for zip in &d.zips {
        let read = omniglot::read_alphabets(zip, d.side).map_err(unreadable)?;
        for a in read {
            if !alphabets.iter().any(|b| b.name == a.name) {
                alphabets.push(a);
            }
        }
    }
    let data = FewShotData {
        train: classes(&alphabets, &d.train, d.side, d.rotations)?,
        validation: classes(&alphabets, &d.validation, d.side, d.rotations)?,
        test: classes(&alphabets, &d.test, d.side, d.rotations)?,
        official_runs: match w.episodes.contains(&OFFICIAL_RUNS) {
            true => omniglot::read_official_runs(&d.runs, d.side).map_err(unreadable)?,
            false => vec![],
        },
    };
    let most_way = w.episodes.iter().map(|e| e.0).max().unwrap_or(0);
    let most_images = w.episodes.iter().map(|e| e.1).max().unwrap_or(0) + w.query;
    for (what, c) in
        [("train", &data.train), ("validation", &data.validation), ("test", &data.test)]
    {
        if c.classes.len() < most_way || c.fewest_images() < most_images {
            return Err(PrepareError::Mismatch(format!(
                "data.{what} has {} classes, the smallest with {} images; the episodes need {} \
                 classes of {} (shot + query): add alphabets or lower way, shot or query",
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
