//! The suite loader never panics, whatever bytes it is given: arbitrary text, and shipped
//! suites with bytes deleted, replaced or inserted. Every rejection is one line that names
//! the file. Longer runs: `PROPTEST_CASES=200000 cargo test -p randbench --test fuzz_suite`.

use proptest::prelude::*;
use randbench::spec::SuiteError;
use randbench::suite::parse;
use std::path::Path;

fn shipped() -> Vec<String> {
    randbench::suite::available()
        .into_iter()
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn check(text: &str) {
    match parse(text, Path::new("fuzz.yaml")) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.yaml"), "{msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
            assert!(matches!(e, SuiteError::At { .. }));
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "([a-z_]{1,12}: ?(\\[|\\{)?[-0-9a-z_., ]{0,20}(\\]|\\})?\n {0,8}){0,20}") {
        check(&text);
    }

    #[test]
    fn damaged_suites_never_panic(which in 0usize..16, edits in proptest::collection::vec((0usize..4096, 0u8..3, any::<char>()), 1..8)) {
        let suites = shipped();
        let mut chars: Vec<char> = suites[which % suites.len()].chars().collect();
        for (pos, kind, c) in edits {
            let i = pos % (chars.len() + 1);
            match kind {
                0 if i < chars.len() => { chars.remove(i); }
                1 if i < chars.len() => chars[i] = c,
                _ => chars.insert(i, c),
            }
        }
        check(&chars.into_iter().collect::<String>());
    }
}
