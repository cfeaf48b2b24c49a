//! The token counter's own split against the whole `tokenizers` pipeline, text for text, on the
//! real files the repository carries: LIMO's long traces from two teachers, the full GSM8K train
//! split and MATH-500.

use std::path::PathBuf;

use still_curate::tokens::Counter;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

/// Every string field of every row.
fn strings(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(data(path)).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        for value in row.as_object().unwrap().values() {
            if let Some(s) = value.as_str() {
                out.push(s.to_string());
            }
        }
    }
    out
}

#[test]
fn counts_equal_the_tokenizer_s_on_real_traces_and_questions() {
    let counter = Counter::qwen25().unwrap();
    assert!(counter.is_fast());
    let mut compared = 0;
    let mut tokens = 0u64;
    for path in [
        "traces/limo_deepseek-r1-distill-qwen-32b.jsonl",
        "traces/limo_qwen2.5-32b-instruct.jsonl",
        "gsm8k/train.jsonl",
        "math500/test.jsonl",
    ] {
        let texts = strings(path);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let fast = counter.count_batch(&refs).unwrap();
        let whole = counter.count_whole(&refs).unwrap();
        for (i, (f, w)) in fast.iter().zip(&whole).enumerate() {
            assert_eq!(
                f,
                w,
                "{path}, text {i}: {:?}",
                &refs[i][..refs[i].len().min(200)]
            );
        }
        compared += refs.len();
        tokens += whole.iter().map(|&n| u64::from(n)).sum::<u64>();
    }
    assert!(compared > 15_000, "{compared} texts");
    assert!(tokens > 1_000_000, "{tokens} tokens");
}
