//! The backend's module graph follows ARCHITECTURE.md: areas in folders, arrows pointing down.
//! Read from the sources' `crate::…` paths, so a new import that breaks a rule fails here with
//! the file that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use still_tests::repo_root;

/// Areas of `backend/src/` (folders); everything else at the root is either composition
/// (`lib.rs`'s `AppState`, `kinds.rs`, `demo.rs`, `cli/`) or a leaf every area may use.
const AREAS: &[&str] = &[
    "compare",
    "curations",
    "data",
    "evals",
    "generations",
    "http",
    "jobs",
    "live",
    "models",
    "runs",
    "serving",
    "store",
];
/// Root modules every area may import; they import no area themselves.
const LEAVES: &[&str] = &["db", "error", "failpoints", "names"];
/// What each area may import besides the leaves and `crate::AppState`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("http", &[]),
    ("store", &[]),
    ("jobs", &["http", "store"]),
    ("data", &["http"]),
    ("models", &["data", "http"]),
    ("evals", &["data", "http", "jobs", "models", "store"]),
    ("generations", &["data", "http", "jobs", "models", "store"]),
    (
        "runs",
        &["data", "evals", "http", "jobs", "models", "store"],
    ),
    ("live", &["http", "runs", "store"]),
    ("curations", &["data", "evals", "http", "jobs", "models"]),
    ("compare", &["http", "models", "runs", "store"]),
    ("serving", &["http", "models"]),
];

/// The top-level modules a file names with `crate::x` (including `use crate::{x, y::z}`) in
/// its code; comments (prose that names a module) are skipped.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// area -> (imported area -> the files that import it).
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = repo_root().join("backend/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for target in crate_paths(&text) {
            if target != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

#[test]
fn crate_paths_are_read_from_plain_and_grouped_uses() {
    let found = crate_paths(
        "use crate::{AppState, data::datasets};\n//! see `crate::live`\nlet x = crate::jobs::queue::claim; // crate::kinds",
    );
    let expected: BTreeSet<String> = ["AppState", "data", "jobs"].map(String::from).into();
    assert_eq!(found, expected);
}

#[test]
fn areas_import_only_what_lies_below_them_and_leaves_import_no_area() {
    let graph = graph();
    // The reading works: arrows the code is known to have are found.
    for (from, to) in [
        ("runs", "jobs"),
        ("jobs", "store"),
        ("live", "runs"),
        ("data", "http"),
    ] {
        assert!(
            graph.get(from).is_some_and(|m| m.contains_key(to)),
            "{from} -> {to} not found: {graph:?}"
        );
    }
    for area in AREAS {
        assert!(
            repo_root().join("backend/src").join(area).is_dir(),
            "backend/src/{area}/ is an area folder"
        );
    }
    let mut broken = Vec::new();
    for (module, imports) in &graph {
        let allowed: Option<&[&str]> = if LEAVES.contains(&module.as_str()) {
            Some(&[])
        } else {
            ALLOWED
                .iter()
                .find(|(a, _)| a == module)
                .map(|(_, allowed)| *allowed)
        };
        let Some(allowed) = allowed else { continue }; // composition: lib, kinds, demo, cli
        for (target, files) in imports {
            let is_area = AREAS.contains(&target.as_str());
            let is_top = ["kinds", "demo", "cli"].contains(&target.as_str());
            if (is_area || is_top) && !allowed.contains(&target.as_str()) {
                broken.push(format!("{module} imports {target} (in {files:?})"));
            }
            if LEAVES.contains(&module.as_str()) && target == "AppState" {
                broken.push(format!("{module} imports AppState (in {files:?})"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layout:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_areas_form_no_cycle() {
    let graph = graph();
    // Depth-first search over area -> area edges.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for target in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if AREAS.contains(&target.as_str())
                && let Some(cycle) = visit(target, graph, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for area in AREAS {
        if let Some(cycle) = visit(area, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "the areas import each other in a cycle: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn only_kinds_rs_and_the_workers_run_job_match_on_job_kinds() {
    // The queue knows no job kind: a `JobKind::`/`JobWork::` variant is named only where a kind
    // meets its area (and where a run, an eval or a generation queues its job).
    let mut files = Vec::new();
    sources(&repo_root().join("backend/src"), &mut files);
    sources(&repo_root().join("worker/src"), &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let names_a_variant = |prefix: &str| {
            text.match_indices(prefix).any(|(at, _)| {
                text[at + prefix.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            })
        };
        if names_a_variant("JobKind::") || names_a_variant("JobWork::") {
            found.insert(
                file.strip_prefix(repo_root())
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
    }
    let expected: BTreeSet<String> = [
        "backend/src/evals/routes.rs",
        "backend/src/generations/routes.rs",
        "backend/src/kinds.rs",
        "backend/src/runs/routes.rs",
        "worker/src/lib.rs",
    ]
    .map(String::from)
    .into();
    assert_eq!(found, expected);
}
