//! The repository is self-contained: a plain clone passes its own tests.

use std::path::{Path, PathBuf};

use still_tests::repo_root;

/// Folders that are build output or data, not sources.
const SKIPPED: &[&str] = &["target", "dist", ".git", "still-data", "node_modules"];

fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED.contains(&name.as_str()) && path != repo_root().join("tests/data") {
                text_files(&path, out);
            }
        } else if let Ok(text) = std::fs::read(&path)
            && !text.contains(&0)
        {
            out.push(path);
        }
    }
}

#[test]
fn no_source_test_bench_or_script_names_a_path_outside_the_repository() {
    // Spelled in pieces so this file does not match itself.
    let needles = [
        format!("..{}shared", '/'),
        format!("shared{}data", '/'),
        format!("STILL_{}", "SHARED_DATA"),
    ];
    let mut files = Vec::new();
    text_files(&repo_root(), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("tests/lib.rs")),
        "the scan must see the sources ({} files)",
        files.len()
    );
    let mut hits = Vec::new();
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                hits.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "paths outside the repository (put the data in tests/data):\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_test_data_folder_has_its_licence_and_readme() {
    let data = repo_root().join("tests/data");
    for folder in [
        "gsm8k",
        "math500",
        "traces",
        "tokenizers/qwen2.5",
        "grader-cases",
    ] {
        let dir = data.join(folder);
        assert!(dir.join("LICENSE").is_file(), "{folder}: LICENSE missing");
        let readme = if folder.starts_with("tokenizers") {
            data.join("tokenizers/README.md")
        } else {
            dir.join("README.md")
        };
        assert!(readme.is_file(), "{folder}: README.md missing");
    }
}
