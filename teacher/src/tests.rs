use std::path::PathBuf;

use super::*;
use crate::tiny::Tiny;

/// The Qwen2.5 tokenizer the repository carries (151,665 tokens).
fn qwen_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tokenizers/qwen2.5/tokenizer.json")
}

const VOCAB: usize = 151_936;

fn tiny(arch: Arch, format: Format) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp
        .path()
        .join(format!("{}-{}", arch.as_str(), format.as_str()));
    Tiny::new(arch, format, VOCAB)
        .write(&dir, &qwen_tokenizer())
        .unwrap();
    (tmp, dir)
}

fn greedy(max_tokens: usize, max_thinking_tokens: Option<usize>) -> Options {
    Options {
        max_tokens,
        max_thinking_tokens,
        sampling: Sampling::default(),
    }
}

#[test]
fn every_architecture_loads_and_writes_in_safetensors() {
    every_architecture_loads_and_writes(Format::Safetensors);
}

#[test]
fn every_architecture_loads_and_writes_in_gguf() {
    every_architecture_loads_and_writes(Format::Gguf);
}

fn every_architecture_loads_and_writes(format: Format) {
    for arch in Arch::ALL {
        {
            let what = format!("{} {}", arch.as_str(), format.as_str());
            let (_tmp, dir) = tiny(arch, format);
            let inspected = inspect(&dir).unwrap();
            assert_eq!((inspected.arch, inspected.format), (arch, format), "{what}");
            assert_eq!(inspected.vocab_size, VOCAB, "{what}");
            assert_eq!(inspected.context, 2048, "{what}");
            let native = arch == Arch::Qwen2 && format == Format::Safetensors;
            assert_eq!(inspected.engine_native(), native, "{what}");
            assert_eq!(engine_native(&dir).unwrap(), native, "{what}");
            // Embeddings (tied) + per layer: 2 norms, q/k/v/o, gate/up/down (+ arch extras).
            let (h, hd, i) = (64u64, 16u64, 128u64);
            let per_layer = 2 * h + h * 4 * hd * 2 + 2 * (2 * hd * h) + 3 * h * i;
            let extra = match arch {
                Arch::Qwen2 => 4 * hd + 2 * 2 * hd,
                Arch::Qwen3 => 2 * hd,
                Arch::Llama => 0,
            };
            assert_eq!(
                inspected.n_params,
                VOCAB as u64 * h + h + 2 * (per_layer + extra),
                "{what}"
            );

            let mut teacher = Teacher::load(&dir, &Device::Cpu).unwrap();
            assert_eq!(teacher.chat(), Chat::ChatMl);
            let first = teacher
                .write(None, "What is 6 times 7?", &greedy(12, None))
                .unwrap();
            assert_eq!(first.completion_tokens, 12, "{what}: {first:?}");
            assert_eq!(first.finish, "length", "{what}");
            assert!(!first.text.is_empty(), "{what}");
            // Prompt: <|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n
            let prompt = teacher.prompt(None, "What is 6 times 7?", &greedy(12, None));
            let prompt_ids = still_engine::tokenizer::encode(&teacher.tokenizer, &prompt).unwrap();
            assert_eq!(first.prompt_tokens, prompt_ids.len());
            // The cache is cleared between questions: the same question writes the same text.
            let other = teacher
                .write(None, "Name a prime.", &greedy(12, None))
                .unwrap();
            let again = teacher
                .write(None, "What is 6 times 7?", &greedy(12, None))
                .unwrap();
            assert_eq!(again, first, "{what}: greedy is deterministic");
            assert_ne!(other.text, first.text, "{what}: the question matters");
        }
    }
}

#[test]
fn the_kv_cache_gives_the_logits_a_full_recompute_gives() {
    for (arch, format) in [
        (Arch::Llama, Format::Safetensors),
        (Arch::Qwen3, Format::Gguf),
    ] {
        let (_tmp, dir) = tiny(arch, format);
        let mut teacher = Teacher::load(&dir, &Device::Cpu).unwrap();
        let ids: Vec<u32> = vec![151644, 872, 198, 3838, 374, 220, 21, 30, 151645];
        teacher.model.reset();
        let whole = teacher.model.forward(&ids, 0, &Device::Cpu).unwrap();
        teacher.model.reset();
        teacher.model.forward(&ids[..5], 0, &Device::Cpu).unwrap();
        let mut last = Vec::new();
        for (k, &id) in ids[5..].iter().enumerate() {
            last = teacher.model.forward(&[id], 5 + k, &Device::Cpu).unwrap();
        }
        let diff = whole
            .iter()
            .zip(&last)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // GGUF's Qwen3 computes in F16; F32 elsewhere.
        let tolerance = if format == Format::Gguf { 5e-2 } else { 1e-4 };
        assert!(diff < tolerance, "{arch:?} {format:?}: max diff {diff}");
    }
}

#[test]
fn the_thinking_is_opened_and_closed_at_its_budget() {
    let (_tmp, dir) = tiny(Arch::Qwen3, Format::Gguf);
    let mut teacher = Teacher::load(&dir, &Device::Cpu).unwrap();
    let options = greedy(40, Some(10));
    assert!(
        teacher
            .prompt(None, "Add 2 and 3.", &options)
            .ends_with("<|im_start|>assistant\n<think>\n")
    );
    let written = teacher.write(None, "Add 2 and 3.", &options).unwrap();
    assert_eq!(written.finish, "thinking_cut", "{written:?}");
    assert!(written.text.starts_with("<think>\n"), "{:?}", written.text);
    let (thinking, _answer) = written.text.split_once("\n</think>\n\n").unwrap();
    // Ten thinking tokens, then the forced close; the rest is the answer, up to 40 in all.
    let thinking_ids = still_engine::tokenizer::encode(
        &teacher.tokenizer,
        thinking.strip_prefix("<think>\n").unwrap(),
    )
    .unwrap();
    assert!(
        (8..=12).contains(&thinking_ids.len()),
        "{} thinking tokens re-encoded",
        thinking_ids.len()
    );
    assert!(written.completion_tokens <= 40);
    assert!(written.completion_tokens > 10 + teacher.close_ids.len());

    // A budget past max_tokens: the limit comes first and nothing is forced.
    let long = teacher
        .write(None, "Add 2 and 3.", &greedy(6, Some(100)))
        .unwrap();
    assert_eq!((long.finish, long.completion_tokens), ("length", 6));
    assert!(!long.text.contains("</think>"));
}

#[test]
fn sampling_is_seeded_and_a_prompt_past_the_context_is_refused() {
    let (_tmp, dir) = tiny(Arch::Llama, Format::Gguf);
    let mut teacher = Teacher::load(&dir, &Device::Cpu).unwrap();
    let sampled = |seed| Options {
        max_tokens: 16,
        max_thinking_tokens: None,
        sampling: Sampling {
            temperature: 1.0,
            top_p: 0.95,
            top_k: 0,
            seed,
        },
    };
    let a = teacher.write(None, "Hello", &sampled(1)).unwrap();
    let b = teacher.write(None, "Hello", &sampled(1)).unwrap();
    let c = teacher.write(None, "Hello", &sampled(2)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.text, c.text);
    let long = "word ".repeat(3000);
    let err = teacher.write(None, &long, &greedy(4, None)).unwrap_err();
    assert!(
        err.to_string().contains("the model's context is 2048"),
        "{err}"
    );
    assert!(
        err.is::<PromptTooLong>(),
        "a row's error, told apart: {err:?}"
    );
    let bad = Options {
        sampling: Sampling {
            temperature: -1.0,
            ..Sampling::default()
        },
        ..greedy(4, None)
    };
    assert!(
        teacher
            .write(None, "Hello", &bad)
            .unwrap_err()
            .to_string()
            .contains("temperature")
    );
}

#[test]
fn bad_teacher_folders_are_refused_with_the_file_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let message = |dir: &Path| format!("{:#}", inspect(dir).unwrap_err());

    assert!(message(&tmp.path().join("missing")).contains("not a folder"));

    // An architecture Still does not run.
    let (_t, dir) = tiny(Arch::Llama, Format::Safetensors);
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"llama\"", "\"gemma\"")).unwrap();
    let m = message(&dir);
    assert!(m.contains("'gemma'") && m.contains("config.json"), "{m}");

    // A config missing a field its architecture needs.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("num_attention_heads");
    std::fs::write(&config, value.to_string()).unwrap();
    let m = message(&dir);
    assert!(m.contains("num_attention_heads"), "{m}");

    // A GGUF without its tokenizer, two GGUF files, a file that is not GGUF.
    let (_t, dir) = tiny(Arch::Qwen3, Format::Gguf);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(message(&dir).contains("no tokenizer.json"));
    std::fs::copy(qwen_tokenizer(), dir.join("tokenizer.json")).unwrap();
    std::fs::copy(dir.join("model-q8_0.gguf"), dir.join("model-q4.gguf")).unwrap();
    let m = message(&dir);
    assert!(
        m.contains("2 .gguf files") && m.contains("model-q4.gguf"),
        "{m}"
    );
    std::fs::remove_file(dir.join("model-q8_0.gguf")).unwrap();
    std::fs::write(dir.join("model-q4.gguf"), b"not a gguf at all").unwrap();
    let m = message(&dir);
    assert!(
        m.contains("model-q4.gguf") && m.contains("not a GGUF file"),
        "{m}"
    );

    // A tokenizer larger than the embeddings.
    let small = tmp.path().join("small");
    Tiny::new(Arch::Llama, Format::Gguf, 1000)
        .write(&small, &qwen_tokenizer())
        .unwrap();
    let m = message(&small);
    assert!(m.contains("151665 tokens but the model only 1000"), "{m}");
}

#[test]
fn the_llama3_chat_format_matches_its_template() {
    assert_eq!(
        Chat::Llama3.prompt(Some("Be brief."), "Hi", Some("<|begin_of_text|>")),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        Chat::ChatMl.prompt(Some("Be brief."), "Hi", None),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}
