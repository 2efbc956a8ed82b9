//! No import cycles, in any crate of the workspace, and the harness in layers: each of its
//! modules imports only modules of its own layer or of the layers it stands on. Read from the
//! sources (`crate::` paths, at the level of a crate's top-level modules), so a change that
//! closes a cycle or reaches up a layer fails here, in CI, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The harness's layers, lowest first, and the layers each may import besides its own.
const LAYERS: &[(&str, &[&str], &[&str])] = &[
    (
        "machine",
        &["sys", "slowdown", "probe", "compiled", "datasets", "nvml", "energy", "env", "watch"],
        &[],
    ),
    ("report", &["report"], &["machine"]),
    ("workloads", &["spec", "families", "suite", "presentation"], &["machine", "report"]),
    // Comparisons, the history, procurement and exports read result lines alone.
    ("analysis", &["compare", "history", "procure", "export"], &["machine", "report"]),
    (
        "running",
        &["backends", "fault", "executor", "runner", "fleet"],
        &["machine", "report", "workloads", "analysis"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/a.rs`, `src/a/b.rs` → `a`); `None` for the
/// crate root and binaries.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
}

/// The top-level modules a file names through `crate::`, comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::X, b}`: each path's first name.
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String =
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Module → the other modules of the crate it imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let uses = g.entry(m.clone()).or_default();
        uses.extend(imports(&text).into_iter().filter(|u| *u != m));
    }
    let known: BTreeSet<String> = g.keys().cloned().collect();
    for uses in g.values_mut() {
        uses.retain(|u| known.contains(u));
    }
    g
}

/// A cycle in the graph, as the modules along it, if there is one.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_crate_has_an_import_cycle() {
    let crates = workspace().join("crates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let g = graph(&src);
        if let Some(c) = cycle(&g) {
            panic!("{}: import cycle {}", src.display(), c.join(" → "));
        }
        checked += 1;
    }
    assert!(checked >= 6, "checked {checked} crates");
}

#[test]
fn the_harness_is_in_layers() {
    let g = graph(&workspace().join("crates/harness/src"));
    let layer_of = |m: &str| {
        LAYERS.iter().find(|(_, ms, _)| ms.contains(&m)).map(|(l, _, _)| *l).unwrap_or_else(|| {
            panic!("module {m} is in no layer: add it to LAYERS here and to lib.rs's list")
        })
    };
    for (m, uses) in &g {
        let mine = layer_of(m);
        let below = LAYERS.iter().find(|(l, _, _)| *l == mine).unwrap().2;
        for u in uses {
            let theirs = layer_of(u);
            assert!(
                theirs == mine || below.contains(&theirs),
                "{m} ({mine}) imports {u} ({theirs}), which is not below it"
            );
        }
    }
}

#[test]
fn the_schema_crate_links_no_family_and_no_engine() {
    let manifest = std::fs::read_to_string(workspace().join("crates/schema/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for dep in
        deps.lines().filter_map(|l| l.split(['.', ' ', '=']).next()).filter(|d| !d.is_empty())
    {
        assert!(
            ["randbench-core", "thiserror", "serde", "serde_json"].contains(&dep),
            "randbench-schema depends on {dep}"
        );
    }
}

#[test]
fn the_checker_finds_cycles_and_grouped_imports() {
    let text = "use crate::{a::X, b};\n// crate::c in a comment\nlet x = crate::d::f();";
    let names: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(names, ["a", "b", "d"]);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
    g.get_mut("c").unwrap().insert("a".into());
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}
