//! The Omniglot loader on the vendored zips (data/omniglot).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use randbench_core::data::rotate;
use randbench_core::omniglot::{
    read_alphabets, read_official_runs, Alphabet, OmniglotError, SIDE, VENDORED_DIR,
};

fn vendored(file: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(VENDORED_DIR).join(file)
}

fn small1() -> &'static [Alphabet] {
    static SET: OnceLock<Vec<Alphabet>> = OnceLock::new();
    SET.get_or_init(|| read_alphabets(&vendored("images_background_small1.zip"), SIDE).unwrap())
}

fn names_and_counts(set: &[Alphabet]) -> Vec<(&str, usize)> {
    set.iter().map(|a| (a.name.as_str(), a.characters.len())).collect()
}

/// Every character has 20 drawings of SIDE×SIDE pixels in [0, 1]; returns the mean ink.
fn check_drawings(set: &[Alphabet]) -> f64 {
    let (mut ink, mut pixels) = (0.0, 0);
    for alphabet in set {
        for drawings in &alphabet.characters {
            assert_eq!(drawings.len(), 20, "{}", alphabet.name);
            for image in drawings {
                assert_eq!(image.len(), SIDE * SIDE);
                assert!(image.iter().all(|p| (0.0..=1.0).contains(p)));
                ink += image.iter().map(|&p| f64::from(p)).sum::<f64>();
                pixels += image.len();
            }
        }
    }
    ink / pixels as f64
}

#[test]
fn small1_alphabets() {
    let set = small1();
    assert_eq!(
        names_and_counts(set),
        [("Balinese", 24), ("Early_Aramaic", 22), ("Greek", 24), ("Korean", 40), ("Latin", 26)]
    );
    let ink = check_drawings(set);
    assert!((0.05..0.15).contains(&ink), "mean ink {ink}");
}

#[test]
fn small2_alphabets() {
    let set = read_alphabets(&vendored("images_background_small2.zip"), SIDE).unwrap();
    assert_eq!(
        names_and_counts(&set),
        [
            ("Greek", 24),
            ("Japanese_(katakana)", 47),
            ("Latin", 26),
            ("Sanskrit", 42),
            ("Tagalog", 17)
        ]
    );
    let ink = check_drawings(&set);
    assert!((0.05..0.15).contains(&ink), "mean ink {ink}");
}

/// At full size the 1-bit drawings are exactly 0 or 1, with paper in the corners; the box
/// filter keeps the mean ink of each drawing.
#[test]
fn downscaling_keeps_the_ink() {
    let runs = read_official_runs(&vendored("all_runs.zip"), 105).unwrap();
    let full = &runs[0].training;
    let small = &read_official_runs(&vendored("all_runs.zip"), SIDE).unwrap()[0].training;
    for (full, small) in full.iter().zip(small) {
        assert!(full.iter().all(|&p| p == 0.0 || p == 1.0));
        assert_eq!([full[0], full[104], full[104 * 105], full[105 * 105 - 1]], [0.0; 4]);
        let mean = |image: &[f32]| image.iter().sum::<f32>() / image.len() as f32;
        assert!((mean(full) - mean(small)).abs() < 1e-5, "{} vs {}", mean(full), mean(small));
    }
}

#[test]
fn rotation() {
    // 0 1 2        2 5 8
    // 3 4 5  ->    1 4 7   (a counterclockwise quarter turn)
    // 6 7 8        0 3 6
    let image: Vec<f32> = (0..9).map(|v| v as f32).collect();
    assert_eq!(rotate(&image, 3, 1), [2., 5., 8., 1., 4., 7., 0., 3., 6.]);
    assert_eq!(rotate(&image, 3, 2), [8., 7., 6., 5., 4., 3., 2., 1., 0.]);
    assert_eq!(rotate(&rotate(&image, 3, 1), 3, 3), image);
    let drawing = &small1()[0].characters[0][0];
    let four = (0..4).fold(drawing.clone(), |image, _| rotate(&image, SIDE, 1));
    assert_eq!(&four, drawing);
    assert_eq!(&rotate(drawing, SIDE, 0), drawing);
}

#[test]
fn official_runs() {
    let runs = read_official_runs(&vendored("all_runs.zip"), SIDE).unwrap();
    assert_eq!(runs.len(), 20);
    for run in &runs {
        assert_eq!((run.training.len(), run.test.len(), run.answers.len()), (20, 20, 20));
        assert!(run.answers.iter().all(|&a| a < 20));
        assert!(run.training.iter().chain(&run.test).all(|image| image.len() == SIDE * SIDE));
    }
    // run01/class_labels.txt: item01 is class08, item02 class09, item03 class02.
    assert_eq!(runs[0].answers[..3], [7, 8, 1]);
}

#[test]
fn damaged_zips_are_named() {
    let dir = std::env::temp_dir().join(format!("randbench-omniglot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.zip");
    std::fs::write(&garbage, b"this is not a zip archive, only some bytes").unwrap();
    let err = read_alphabets(&garbage, SIDE).unwrap_err();
    assert!(matches!(&err, OmniglotError::NotZip { path, .. } if *path == garbage), "{err}");
    assert!(err.to_string().contains("garbage.zip"), "{err}");
    let err = read_official_runs(&garbage, SIDE).unwrap_err();
    assert!(matches!(err, OmniglotError::NotZip { .. }), "{err}");

    let absent = dir.join("absent.zip");
    let err = read_alphabets(&absent, SIDE).unwrap_err();
    assert!(matches!(&err, OmniglotError::Open { path, .. } if *path == absent), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A background zip is not a set of runs, and the runs are not a background set.
    let err = read_official_runs(&vendored("images_background_small1.zip"), SIDE).unwrap_err();
    assert!(
        matches!(&err, OmniglotError::MissingRun { entry, .. } if entry == "run01/class_labels.txt")
    );
    let err = read_alphabets(&vendored("all_runs.zip"), SIDE).unwrap_err();
    assert!(matches!(err, OmniglotError::Empty { .. }), "{err}");
}
