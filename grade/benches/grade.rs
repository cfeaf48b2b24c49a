//! The answer checker's speed on real outputs: every MATH-500 solution and every GSM8K test
//! worked answer graded against its reference (the target: well under a second for
//! both). Prints a table; run with `cargo bench -p still-grade`.

use std::path::PathBuf;
use std::time::Instant;

use still_grade::{Preset, grade};

fn rows(relative: &str) -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

fn main() {
    let math: Vec<(String, String)> = rows("math500/test.jsonl")
        .iter()
        .map(|r| {
            (
                r["answer"].as_str().unwrap().to_string(),
                r["solution"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let gsm8k: Vec<(String, String)> = rows("gsm8k/test.jsonl")
        .iter()
        .map(|r| {
            let answer = r["answer"].as_str().unwrap();
            let label = answer.rsplit("#### ").next().unwrap().trim().to_string();
            (label, answer.to_string())
        })
        .collect();
    println!("| set | outputs | correct | best of 5 (ms) | per output (µs) | target |");
    println!("|---|---|---|---|---|---|");
    for (name, set, preset) in [
        ("MATH-500 solutions", &math, Preset::Math),
        ("GSM8K test answers", &gsm8k, Preset::Gsm8k),
    ] {
        let mut best = f64::INFINITY;
        let mut correct = 0;
        for _ in 0..5 {
            let started = Instant::now();
            correct = set
                .iter()
                .filter(|(reference, output)| grade(reference, output, preset).correct)
                .count();
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "| {name} | {} | {correct} | {:.1} | {:.1} | < 1000 ms for both |",
            set.len(),
            best * 1e3,
            best * 1e6 / set.len() as f64
        );
    }
}
