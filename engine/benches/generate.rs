//! Decode speed on CPU: tokens per second of greedy, KV-cached generation for the tiny and mini
//! presets at batch 1 and batch 8 (prompts of different lengths), against transformers'
//! `generate` on the same weights in the same run (`engine/benches/generate_reference.py`, run
//! with `python3`; its column says skipped when torch and transformers are not importable).
//! Each side generates exactly N new tokens per row and is timed over the whole call (prefill
//! included), best of three.
//!
//! `cargo bench -p still-engine --bench generate [-- --new-tokens N]`

use std::time::Instant;

#[global_allocator]
static ALLOCATOR: still_engine::alloc::MiMalloc = still_engine::alloc::MiMalloc;

use candle_core::{DType, Device};
use still_engine::config::Qwen2Config;
use still_engine::generate::{Decoder, Sampling};
use still_engine::model::Qwen2;
use still_engine::rng::Rng;

const VOCAB: usize = 8192;
/// Prompt lengths: batch 1 takes the first, batch 8 all of them.
const LENGTHS: [usize; 8] = [48, 31, 64, 40, 57, 33, 45, 60];

/// New tokens per second of greedy decoding, every row exactly `new_tokens` long.
fn ours(model: &Qwen2, batch: usize, new_tokens: usize) -> f64 {
    let mut rng = Rng::new(1);
    let prompts: Vec<Vec<u32>> = LENGTHS[..batch]
        .iter()
        .map(|&n| (0..n).map(|_| 3 + rng.below(VOCAB - 3) as u32).collect())
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let mut decoder = Decoder::new(model);
        for p in &prompts {
            decoder
                .add(p, p.len() + new_tokens + 1, Sampling::default())
                .expect("a row");
        }
        for step in 0..new_tokens {
            for (row, token) in decoder.step().expect("a step") {
                if step + 1 == new_tokens {
                    decoder.finish(row);
                } else {
                    decoder.feed(row, &[token]);
                }
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    (batch * new_tokens) as f64 / best
}

fn reference(preset: &str, weights: &std::path::Path, batch: usize, new_tokens: usize) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/generate_reference.py");
    let lengths = LENGTHS.map(|n| n.to_string()).join(",");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args([preset, &weights.to_string_lossy()])
        .args([
            batch.to_string(),
            new_tokens.to_string(),
            VOCAB.to_string(),
            lengths,
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "skipped: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("python failed")
                .replace('|', "/")
        ),
        Err(e) => format!("skipped: {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let new_tokens = args
        .iter()
        .position(|a| a == "--new-tokens")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let dir = tempfile::tempdir().expect("a temp dir");
    println!("{}", still_engine::simd::describe());
    println!(
        "| preset | batch | Still (tokens/s) | transformers generate (tokens/s) | Still ÷ transformers |"
    );
    println!("|---|---|---|---|---|");
    for preset in ["tiny", "mini"] {
        let config = Qwen2Config::preset(preset, VOCAB).expect("a preset");
        let model = Qwen2::new(config, DType::F32, &Device::Cpu).expect("a model");
        model.init_weights(1).expect("weights");
        let weights = dir.path().join(format!("{preset}.safetensors"));
        model.save_weights(&weights).expect("weights saved");
        for batch in [1, 8] {
            let ours = ours(&model, batch, new_tokens);
            let theirs = reference(preset, &weights, batch, new_tokens);
            let (theirs_rate, label) = match theirs.split_whitespace().collect::<Vec<_>>()[..] {
                [rate, version, threads] => (
                    rate.parse::<f64>().ok(),
                    format!("{rate} (torch {version}, {threads} threads)"),
                ),
                _ => (None, theirs.clone()),
            };
            println!(
                "| {preset} | {batch} | {ours:.1} | {label} | {} |",
                theirs_rate.map_or("–".to_string(), |t| format!("{:.2}×", ours / t))
            );
        }
    }
}
