//! Omniglot (Lake, Salakhutdinov & Tenenbaum 2015), read straight from the published zips: the
//! background sets (`<set>/<Alphabet>/characterNN/*.png`) and the 20 official one-shot runs
//! (`all_runs.zip`). The repository vendors the small sets in [`VENDORED_DIR`].

use crate::data::downscale;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use png::{ColorType, Transformations};
use zip::result::ZipError;
use zip::ZipArchive;

/// The repository's vendored copy, relative to the repository root.
pub const VENDORED_DIR: &str = "data/omniglot";

/// The side length models see: Omniglot's drawings downscaled, as is usual, to 28×28.
pub const SIDE: usize = 28;

/// The side of every drawing in the published zips.
const DRAWN: usize = 105;

/// One alphabet's characters, each character's drawings as images of side × side pixels.
#[derive(Debug, Clone)]
pub struct Alphabet {
    pub name: String,
    /// characters[c] holds the drawings of character c (in the zip's `characterNN` order), each
    /// `side*side` f32 in [0, 1], row-major, ink = 1, paper = 0.
    pub characters: Vec<Vec<Vec<f32>>>,
}

/// One of Lake's official 20-way one-shot runs from all_runs.zip: 20 training images (one per
/// class) and 20 test images, with for each test image the index of its class among the
/// training images (from class_labels.txt).
#[derive(Debug, Clone)]
pub struct OfficialRun {
    pub training: Vec<Vec<f32>>,
    pub test: Vec<Vec<f32>>,
    pub answers: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum OmniglotError {
    #[error("{}: cannot open: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable zip archive: {source}", path.display())]
    NotZip { path: PathBuf, source: ZipError },
    #[error("{}: cannot read {entry}: {source}", path.display())]
    Read { path: PathBuf, entry: String, source: std::io::Error },
    #[error("{}: {entry} is not a grayscale PNG that decodes: {reason}", path.display())]
    Png { path: PathBuf, entry: String, reason: String },
    #[error("{}: {entry} is {width}×{height}, not {DRAWN}×{DRAWN}", path.display())]
    Size { path: PathBuf, entry: String, width: u32, height: u32 },
    #[error("{}: holds no Omniglot drawings (<set>/<Alphabet>/characterNN/*.png)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: has no {entry}", path.display())]
    MissingRun { path: PathBuf, entry: String },
    #[error("{}: {labels} names {entry}, which is not there", path.display())]
    Missing { path: PathBuf, labels: String, entry: String },
    #[error("{}: {labels}: {line:?} is not `<test image> <training image>`", path.display())]
    BadLabels { path: PathBuf, labels: String, line: String },
}

/// Reads an Omniglot background/evaluation zip (`images_background_small1.zip` layout:
/// `<set>/<Alphabet>/characterNN/*.png`, 105×105 1-bit or 8-bit grayscale PNGs), alphabets
/// sorted by name, characters by number, drawings by file name; images downscaled to
/// `side`×`side` by area averaging (each output pixel the mean of the input area it covers,
/// with fractional coverage at the edges — exact box filter).
pub fn read_alphabets(zip: &Path, side: usize) -> Result<Vec<Alphabet>, OmniglotError> {
    let (mut archive, names) = open(zip)?;
    // Sorted maps give the promised orders; character numbers are zero-padded, so name order
    // is number order.
    let mut alphabets: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f32>>>> =
        BTreeMap::new();
    for name in &names {
        let [_set, alphabet, character, file] = name.split('/').collect::<Vec<_>>()[..] else {
            continue;
        };
        if !file.ends_with(".png") {
            continue;
        }
        let image = read_image(&mut archive, zip, name, side)?.expect("listed entry");
        alphabets
            .entry(alphabet.to_owned())
            .or_default()
            .entry(character.to_owned())
            .or_default()
            .insert(file.to_owned(), image);
    }
    if alphabets.is_empty() {
        return Err(OmniglotError::Empty { path: zip.to_owned() });
    }
    Ok(alphabets
        .into_iter()
        .map(|(name, characters)| Alphabet {
            name,
            characters: characters
                .into_values()
                .map(|drawings| drawings.into_values().collect())
                .collect(),
        })
        .collect())
}

/// Reads all 20 runs (run01..run20), images downscaled like read_alphabets.
pub fn read_official_runs(zip: &Path, side: usize) -> Result<Vec<OfficialRun>, OmniglotError> {
    let (mut archive, names) = open(zip)?;
    (1..=20)
        .map(|r| {
            let run = format!("run{r:02}");
            let labels = format!("{run}/class_labels.txt");
            let text = read_entry(&mut archive, zip, &labels)?.ok_or_else(|| {
                OmniglotError::MissingRun { path: zip.to_owned(), entry: labels.clone() }
            })?;
            // The answers index the training images in file order (class01..class20).
            let mut classes: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with(&format!("{run}/training/")) && n.ends_with(".png"))
                .collect();
            classes.sort();
            let training = classes
                .iter()
                .map(|name| Ok(read_image(&mut archive, zip, name, side)?.expect("listed entry")))
                .collect::<Result<_, OmniglotError>>()?;
            let missing = |entry: &str| OmniglotError::Missing {
                path: zip.to_owned(),
                labels: labels.clone(),
                entry: entry.to_owned(),
            };
            let (mut test, mut answers) = (Vec::new(), Vec::new());
            for line in String::from_utf8_lossy(&text).lines().filter(|l| !l.trim().is_empty()) {
                let [item, class] = line.split_whitespace().collect::<Vec<_>>()[..] else {
                    return Err(OmniglotError::BadLabels {
                        path: zip.to_owned(),
                        labels: labels.clone(),
                        line: line.to_owned(),
                    });
                };
                answers
                    .push(classes.iter().position(|c| *c == class).ok_or_else(|| missing(class))?);
                test.push(read_image(&mut archive, zip, item, side)?.ok_or_else(|| missing(item))?);
            }
            Ok(OfficialRun { training, test, answers })
        })
        .collect()
}

type Archive = ZipArchive<BufReader<File>>;

/// Opens a zip and lists its entry names.
fn open(zip: &Path) -> Result<(Archive, Vec<String>), OmniglotError> {
    let not_zip = |source| OmniglotError::NotZip { path: zip.to_owned(), source };
    let file =
        File::open(zip).map_err(|source| OmniglotError::Open { path: zip.to_owned(), source })?;
    let archive = ZipArchive::new(BufReader::new(file)).map_err(not_zip)?;
    let names = archive
        .file_names()
        .map(|name| name.map(String::from))
        .collect::<Result<_, _>>()
        .map_err(not_zip)?;
    Ok((archive, names))
}

/// An entry's bytes, or None when the zip has no such entry.
fn read_entry(
    archive: &mut Archive,
    zip: &Path,
    entry: &str,
) -> Result<Option<Vec<u8>>, OmniglotError> {
    let read_error =
        |source| OmniglotError::Read { path: zip.to_owned(), entry: entry.to_owned(), source };
    let mut file = match archive.by_name(entry) {
        Ok(file) => file,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(read_error(e.into())),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    Ok(Some(bytes))
}

/// A drawing, decoded (ink = 1) and downscaled to side×side; None when the zip has no such entry.
fn read_image(
    archive: &mut Archive,
    zip: &Path,
    entry: &str,
    side: usize,
) -> Result<Option<Vec<f32>>, OmniglotError> {
    let Some(bytes) = read_entry(archive, zip, entry)? else {
        return Ok(None);
    };
    let png_error = |reason: String| OmniglotError::Png {
        path: zip.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // 1-bit gray comes out as 0 or 255, like 8-bit gray.
    decoder.set_transformations(Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| png_error(e.to_string()))?;
    let (width, height) = reader.info().size();
    if (width as usize, height as usize) != (DRAWN, DRAWN) {
        return Err(OmniglotError::Size {
            path: zip.to_owned(),
            entry: entry.to_owned(),
            width,
            height,
        });
    }
    let mut pixels =
        vec![0; reader.output_buffer_size().ok_or_else(|| png_error("too large".into()))?];
    let frame = reader.next_frame(&mut pixels).map_err(|e| png_error(e.to_string()))?;
    if frame.color_type != ColorType::Grayscale {
        return Err(png_error(format!("{:?} pixels", frame.color_type)));
    }
    // Omniglot draws black strokes on white paper: ink is the darkness.
    let ink: Vec<f32> = pixels[..frame.buffer_size()]
        .chunks(frame.line_size)
        .flat_map(|row| row[..DRAWN].iter().map(|&v| 1.0 - f32::from(v) / 255.0))
        .collect();
    Ok(Some(downscale(&ink, DRAWN, side)))
}
