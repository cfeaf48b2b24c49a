//! The engine on tiny models made here, on the CPU: gradients, HF folders, the loss mask,
//! distillation, exact resume, and that training actually learns.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use still_api::ExampleFields;
use still_engine::config::Qwen2Config;
use still_engine::data::{self, ChatTemplate, LongExamples};
use still_engine::hf;
use still_engine::loss::{self, Divergence};
use still_engine::model::Qwen2;
use still_engine::synth;
use still_engine::train::{self, Event, Method, Precision, StepMetrics, TrainConfig};

fn tiny_config(vocab: usize, tied: bool) -> Qwen2Config {
    let mut c = Qwen2Config::preset("tiny", vocab).unwrap();
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    c
}

/// A tiny model folder with a tokenizer trained on synthetic addition rows.
fn tiny_folder(dir: &Path, rows: &[ExampleFields], seed: u64) -> hf::ModelFolder {
    let texts: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {}", r.question, r.thinking, r.answer))
        .collect();
    hf::create(dir, "tiny", &texts, 400, seed).unwrap()
}

/// A tensor's elements row-major, in `T` (the host arrays the SFT loss takes).
fn flat<T: candle_core::WithDType>(t: &Tensor) -> Vec<T> {
    t.flatten_all()
        .unwrap()
        .to_dtype(T::DTYPE)
        .unwrap()
        .to_vec1::<T>()
        .unwrap()
}

fn sample_ids(vocab: u32) -> Tensor {
    Tensor::new(&[[1u32, 5, 9, 3, 7, 2], [4, 8, 6, 0, 0, 0]], &Device::Cpu)
        .unwrap()
        .clamp(0u32, vocab - 1)
        .unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    let config = tiny_config(12, false);
    let model = Qwen2::new(config, DType::F64, &Device::Cpu).unwrap();
    model.init_weights(3).unwrap();
    // Larger weights than the 0.02 init make every path matter numerically.
    for (_, var) in model.named_vars() {
        let scaled = (var.as_tensor() * 10.0).unwrap();
        var.set(&scaled).unwrap();
    }
    let ids = sample_ids(12);
    let lengths = [6, 3];
    let weights = Tensor::new(
        &[[0f32, 1., 1., 1., 1., 1.], [0., 1., 1., 0., 0., 0.]],
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(DType::F64)
    .unwrap();
    // The SFT loss as training computes it: the output layer and the loss as one node.
    let loss_of = |m: &Qwen2| -> Tensor {
        let hidden = m.forward_hidden(&ids, &lengths).unwrap();
        loss::next_token_cross_entropy_sum(&hidden, m.lm_head(), &flat(&ids), &flat(&weights))
            .unwrap()
    };
    let grads = loss_of(&model).backward().unwrap();
    let checks = [
        ("model.embed_tokens.weight", 7usize),
        ("model.layers.0.self_attn.q_proj.weight", 33),
        ("model.layers.0.self_attn.k_proj.bias", 3),
        ("model.layers.1.self_attn.v_proj.weight", 20),
        ("model.layers.1.mlp.down_proj.weight", 50),
        ("model.layers.0.input_layernorm.weight", 5),
        ("model.norm.weight", 2),
        ("lm_head.weight", 40),
    ];
    let vars: std::collections::HashMap<String, candle_core::Var> =
        model.named_vars().into_iter().collect();
    for (name, index) in checks {
        let var = &vars[name];
        let analytic = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[index];
        let original = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let eps = 1e-6;
        let at = |delta: f64| -> f64 {
            let mut values = original.clone();
            values[index] += delta;
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss_of(&model)
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        var.set(&Tensor::from_vec(original, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let scale = analytic.abs().max(numeric.abs()).max(1e-3);
        assert!(
            (analytic - numeric).abs() / scale < 1e-4,
            "{name}[{index}]: autograd {analytic} vs finite difference {numeric}"
        );
    }
}

#[test]
fn a_frozen_model_builds_no_graph_and_computes_the_same() {
    let mut model = Qwen2::new(tiny_config(12, false), DType::F32, &Device::Cpu).unwrap();
    model.init_weights(4).unwrap();
    let ids = sample_ids(12);
    let before = model.forward(&ids, &[6, 3]).unwrap();
    assert!(before.track_op(), "a trainable model's forward is tracked");
    model.freeze();
    let after = model.forward(&ids, &[6, 3]).unwrap();
    assert!(
        !after.track_op(),
        "a frozen model's forward builds no graph"
    );
    assert_eq!(flat::<f32>(&before), flat::<f32>(&after));
}

#[test]
fn every_parameter_receives_a_gradient() {
    for tied in [false, true] {
        let model = Qwen2::new(tiny_config(12, tied), DType::F32, &Device::Cpu).unwrap();
        model.init_weights(1).unwrap();
        let ids = sample_ids(12);
        let hidden = model.forward_hidden(&ids, &[6, 3]).unwrap();
        let weights = Tensor::ones((2, 6), DType::F32, &Device::Cpu).unwrap();
        let grads = loss::next_token_cross_entropy_sum(
            &hidden,
            model.lm_head(),
            &flat(&ids),
            &flat(&weights),
        )
        .unwrap()
        .backward()
        .unwrap();
        let vars = model.named_vars();
        assert_eq!(vars.iter().any(|(n, _)| n == "lm_head.weight"), !tied);
        for (name, var) in vars {
            let g = grads
                .get(&var)
                .unwrap_or_else(|| panic!("{name} got no gradient (tied={tied})"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient (tied={tied})");
        }
    }
}

#[test]
fn cached_generation_path_agrees_with_the_training_forward() {
    let model = Qwen2::new(tiny_config(12, true), DType::F32, &Device::Cpu).unwrap();
    model.init_weights(5).unwrap();
    for (_, var) in model.named_vars() {
        var.set(&(var.as_tensor() * 20.0).unwrap()).unwrap();
    }
    let ids: Vec<u32> = vec![1, 5, 9, 3, 7, 2, 11];
    let full = model
        .forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            &[7],
        )
        .unwrap();
    let mut cache = model.new_cache(16);
    // Prefill 4 tokens, then one at a time.
    let mut last = model
        .forward_cached(
            &Tensor::new(&ids[..4], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            &mut cache,
        )
        .unwrap();
    let expect = |pos: usize| {
        full.get(0)
            .unwrap()
            .get(pos)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    assert!(close(&last.to_vec1::<f32>().unwrap(), &expect(3)));
    for pos in 4..7 {
        last = model
            .forward_cached(
                &Tensor::new(&ids[pos..pos + 1], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                &mut cache,
            )
            .unwrap();
        assert!(
            close(&last.to_vec1::<f32>().unwrap(), &expect(pos)),
            "position {pos}: {:?} vs {:?}",
            last.to_vec1::<f32>().unwrap(),
            expect(pos)
        );
    }
}

#[test]
fn a_saved_folder_loads_and_saves_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rows = synth::addition(2, 200, 1);
    let folder = tiny_folder(&dir.path().join("a"), &rows, 9);
    let loaded = hf::load(&dir.path().join("a"), DType::F32, &Device::Cpu).unwrap();
    hf::save(
        &dir.path().join("b"),
        &loaded.model,
        &loaded.tokenizer,
        &loaded.special,
    )
    .unwrap();
    let a = candle_core::safetensors::load(dir.path().join("a/model.safetensors"), &Device::Cpu)
        .unwrap();
    let b = candle_core::safetensors::load(dir.path().join("b/model.safetensors"), &Device::Cpu)
        .unwrap();
    assert_eq!(a.len(), b.len());
    assert!(
        !a.contains_key("lm_head.weight"),
        "tied: no lm_head tensor, as transformers writes it"
    );
    for (name, t) in &a {
        let (x, y) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} changed"
        );
    }
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(dir.path().join("a").join(file)).unwrap(),
            std::fs::read(dir.path().join("b").join(file)).unwrap(),
            "{file}"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["Qwen2ForCausalLM"])
    );
    assert_eq!(config["model_type"], "qwen2");
    assert_eq!(
        config["vocab_size"].as_u64().unwrap() as usize,
        folder.tokenizer.get_vocab_size(true)
    );
    // Not a folder: a clear message instead of a download attempt.
    let err = hf::load(
        Path::new("Qwen/Qwen2.5-0.5B-Instruct"),
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cannot be downloaded here"), "{err}");
}

#[test]
fn the_loss_covers_thinking_and_answer_only() {
    let dir = tempfile::tempdir().unwrap();
    let rows = synth::addition(2, 200, 2);
    let folder = tiny_folder(dir.path(), &rows, 1);
    let template = ChatTemplate::default();
    let prepared = data::prepare(
        &rows[..1],
        &folder.tokenizer,
        &template,
        512,
        LongExamples::Truncate,
    )
    .unwrap();
    let seq = &prepared.sequences[0];
    let prompt_len =
        still_engine::tokenizer::encode(&folder.tokenizer, &template.prompt(&rows[0].question))
            .unwrap()
            .len();
    assert!(
        seq.train[..prompt_len].iter().all(|t| !t),
        "no prompt token is a target"
    );
    assert!(
        seq.train[prompt_len..].iter().all(|t| *t),
        "every response token is a target"
    );
    let response =
        still_engine::tokenizer::decode(&folder.tokenizer, &seq.ids[prompt_len..], false).unwrap();
    assert_eq!(response, template.response(&rows[0]));

    // With fixed hidden states and output layer: relabelling a prompt position changes nothing,
    // an answer position does.
    let l = seq.ids.len();
    let vocab = folder.tokenizer.get_vocab_size(true);
    let hidden = Tensor::randn(0f32, 1.0, (1, l, 16), &Device::Cpu).unwrap();
    let head = Tensor::randn(0f32, 1.0, (vocab, 16), &Device::Cpu).unwrap();
    let weights = Tensor::from_vec(
        seq.train
            .iter()
            .map(|&t| if t { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (1, l),
        &Device::Cpu,
    )
    .unwrap();
    let ce = |ids: &[u32]| -> f32 {
        let ids = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        loss::next_token_cross_entropy_sum(&hidden, &head, &flat(&ids), &flat(&weights))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let base = ce(&seq.ids);
    let mut prompt_changed = seq.ids.clone();
    prompt_changed[prompt_len - 2] = (prompt_changed[prompt_len - 2] + 1) % vocab as u32;
    assert_eq!(ce(&prompt_changed), base);
    let mut answer_changed = seq.ids.clone();
    answer_changed[l - 2] = (answer_changed[l - 2] + 1) % vocab as u32;
    assert_ne!(ce(&answer_changed), base);
}

fn quick_config(steps: usize) -> TrainConfig {
    TrainConfig {
        lr: 3e-3,
        epochs: 100,
        max_steps: Some(steps),
        batch_size: 4,
        grad_accum: 2,
        max_seq_len: 128,
        warmup_ratio: 0.1,
        weight_decay: 0.0,
        seed: 11,
        ..Default::default()
    }
}

fn losses(events: &[Event]) -> Vec<StepMetrics> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Step(m) = e {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn distilling_from_itself_costs_nothing_and_a_different_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rows = synth::addition(2, 64, 3);
    tiny_folder(&dir.path().join("model"), &rows, 4);
    let student = hf::load(&dir.path().join("model"), DType::F32, &Device::Cpu).unwrap();
    let config = TrainConfig {
        method: Method::Kd {
            teacher: dir.path().join("model"),
            alpha: 1.0,
            temperature: 1.0,
            divergence: Divergence::ForwardKl,
            top_k: None,
        },
        ..quick_config(1)
    };
    let mut events = Vec::new();
    train::train(
        student,
        &rows,
        &config,
        &dir.path().join("out"),
        None,
        &mut |e: &Event| events.push(e.clone()),
        None,
    )
    .unwrap();
    let first = &losses(&events)[0];
    assert!(
        first.loss.abs() < 1e-6,
        "KD loss against itself: {}",
        first.loss
    );
    assert!(
        first.ce > 1.0,
        "the CE part is still reported: {}",
        first.ce
    );

    // A teacher whose tokenizer differs: refused before training.
    let other_rows: Vec<ExampleFields> = (0..64)
        .map(|i| ExampleFields {
            question: format!("zz{i} qq"),
            answer: "ww".into(),
            ..Default::default()
        })
        .collect();
    tiny_folder(&dir.path().join("other"), &other_rows, 4);
    let student = hf::load(&dir.path().join("model"), DType::F32, &Device::Cpu).unwrap();
    let config = TrainConfig {
        method: Method::Kd {
            teacher: dir.path().join("other"),
            alpha: 0.5,
            temperature: 2.0,
            divergence: Divergence::Jsd { beta: 0.5 },
            top_k: None,
        },
        ..quick_config(1)
    };
    let err = train::train(
        student,
        &rows,
        &config,
        &dir.path().join("out2"),
        None,
        &mut |_: &Event| {},
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("logit distillation needs the same tokenizer"),
        "{err}"
    );
}

/// Trains 3 steps of KD from `teacher` in `precision` and returns the events.
fn kd_run(
    precision: Precision,
    student: &Path,
    teacher: &Path,
    top_k: Option<usize>,
    cache: Option<&Path>,
    rows: &[ExampleFields],
    out: &Path,
) -> Result<Vec<Event>, String> {
    let config = TrainConfig {
        precision,
        method: Method::Kd {
            teacher: teacher.to_path_buf(),
            alpha: 0.5,
            temperature: 2.0,
            divergence: Divergence::ForwardKl,
            top_k,
        },
        cache_dir: cache.map(Path::to_path_buf),
        ..quick_config(3)
    };
    let student = hf::load(student, DType::F32, &Device::Cpu).unwrap();
    let mut events = Vec::new();
    train::train(
        student,
        rows,
        &config,
        out,
        None,
        &mut |e: &Event| events.push(e.clone()),
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(events)
}

/// The last loss of a curve, as bits.
fn a_bits(curve: &[StepMetrics]) -> u64 {
    curve.last().expect("a step").loss.to_bits()
}

fn top_k_event(events: &[Event]) -> (usize, bool, std::path::PathBuf) {
    events
        .iter()
        .find_map(|e| match e {
            Event::TeacherTopK {
                positions,
                reused,
                path,
                ..
            } => Some((*positions, *reused, path.clone())),
            _ => None,
        })
        .expect("a teacher top-k event")
}

#[test]
fn distilling_from_a_precomputed_teacher_top_k_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let rows = synth::addition(2, 48, 3);
    let vocab = tiny_folder(&p.join("student"), &rows, 9)
        .tokenizer
        .get_vocab_size(true);
    tiny_folder(&p.join("teacher"), &rows, 4);
    let (student, teacher) = (p.join("student"), p.join("teacher"));

    // k = vocab − 1 keeps the whole distribution: the same curve as distilling from the model.
    let full = losses(
        &kd_run(
            Precision::F32,
            &student,
            &teacher,
            None,
            None,
            &rows,
            &p.join("full"),
        )
        .unwrap(),
    );
    let events = kd_run(
        Precision::F32,
        &student,
        &teacher,
        Some(vocab - 1),
        None,
        &rows,
        &p.join("all"),
    )
    .unwrap();
    let (positions, reused, path) = top_k_event(&events);
    assert!(positions > 100 && !reused, "{positions} {reused}");
    assert!(
        path.starts_with(p.join("all")),
        "kept in the run folder without a cache dir"
    );
    let all = losses(&events);
    assert_eq!(all.len(), 3);
    for (a, b) in full.iter().zip(&all) {
        assert!(a.kd.unwrap() > 1e-3, "teacher and student differ");
        assert!(
            (a.loss - b.loss).abs() < 1e-4 * a.loss.max(1.0),
            "step {}: full {} vs top-k {}",
            a.step,
            a.loss,
            b.loss
        );
    }

    // In mixed precision (bf16 student compute, a bf16 teacher, a top-k table made by the bf16
    // teacher) both follow the f32 curves up to bf16 rounding.
    for (top_k, f32_curve, out) in [
        (None, &full, "full-bf16"),
        (Some(vocab - 1), &all, "all-bf16"),
    ] {
        let events = kd_run(
            Precision::Bf16,
            &student,
            &teacher,
            top_k,
            None,
            &rows,
            &p.join(out),
        )
        .unwrap();
        let mixed = losses(&events);
        assert_eq!(mixed.len(), 3);
        for (a, b) in f32_curve.iter().zip(&mixed) {
            assert!(b.kd.unwrap() > 1e-3, "{out}: teacher and student differ");
            assert!(
                (a.loss - b.loss).abs() / a.loss < 0.03,
                "{out} step {}: f32 {} vs bf16 {}",
                a.step,
                a.loss,
                b.loss
            );
        }
        assert_ne!(a_bits(f32_curve), a_bits(&mixed), "{out}: computed in bf16");
    }

    // A small k, cached: the second run finds the table without loading the teacher (it is gone).
    let cache = p.join("cache");
    let first = kd_run(
        Precision::F32,
        &student,
        &teacher,
        Some(8),
        Some(&cache),
        &rows,
        &p.join("k8"),
    )
    .unwrap();
    let (_, reused, table) = top_k_event(&first);
    assert!(!reused && table.starts_with(&cache));
    let k8 = losses(&first);
    assert!(k8[0].kd.unwrap() > 1e-3 && k8[0].kd.unwrap() < full[0].kd.unwrap() + 1e-6);
    std::fs::rename(&teacher, p.join("teacher-moved")).unwrap();
    let again = kd_run(
        Precision::F32,
        &student,
        &teacher,
        Some(8),
        Some(&cache),
        &rows,
        &p.join("k8b"),
    )
    .unwrap();
    assert!(top_k_event(&again).1, "found in the cache");
    let curve = |m: &[StepMetrics]| -> Vec<(f64, Option<f64>, f64)> {
        m.iter().map(|m| (m.loss, m.kd, m.grad_norm)).collect()
    };
    assert_eq!(curve(&k8), curve(&losses(&again)));

    // The table file itself can stand for the teacher; another temperature is refused.
    let direct = kd_run(
        Precision::F32,
        &student,
        &table,
        None,
        None,
        &rows,
        &p.join("direct"),
    )
    .unwrap();
    assert_eq!(losses(&direct)[0].loss, k8[0].loss);
    let config = TrainConfig {
        method: Method::Kd {
            teacher: table.clone(),
            alpha: 0.5,
            temperature: 1.0,
            divergence: Divergence::ForwardKl,
            top_k: None,
        },
        ..quick_config(1)
    };
    let err = train::train(
        hf::load(&student, DType::F32, &Device::Cpu).unwrap(),
        &rows,
        &config,
        &p.join("hot"),
        None,
        &mut |_: &Event| {},
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("computed at temperature 2"), "{err}");
}

#[test]
fn resume_continues_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let rows = synth::addition(2, 96, 5);
    tiny_folder(&dir.path().join("base"), &rows, 6);
    let config = TrainConfig {
        checkpoint_every: Some(3),
        ..quick_config(7)
    };

    let mut whole = Vec::new();
    let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
    train::train(
        student,
        &rows,
        &config,
        &dir.path().join("whole"),
        None,
        &mut |e: &Event| whole.push(e.clone()),
        None,
    )
    .unwrap();
    let whole = losses(&whole);
    assert_eq!(whole.len(), 7);
    assert!(
        dir.path()
            .join("whole/checkpoints/step-3/optimizer.safetensors")
            .is_file()
    );
    assert!(
        dir.path()
            .join("whole/checkpoints/step-6/trainer_state.json")
            .is_file()
    );
    assert!(dir.path().join("whole/final/model.safetensors").is_file());

    // A fresh process would start from the base model and resume from step 3.
    let mut resumed = Vec::new();
    let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
    let checkpoint = dir.path().join("whole/checkpoints/step-3");
    train::train(
        student,
        &rows,
        &config,
        &dir.path().join("resumed"),
        Some(&checkpoint),
        &mut |e: &Event| resumed.push(e.clone()),
        None,
    )
    .unwrap();
    let resumed = losses(&resumed);
    assert_eq!(
        resumed.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    for (a, b) in whole[3..].iter().zip(&resumed) {
        assert_eq!(
            a.loss.to_bits(),
            b.loss.to_bits(),
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
        assert_eq!(a.lr, b.lr);
    }

    // A checkpoint of an f32 run does not continue as a bf16 one.
    let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
    let err = train::train(
        student,
        &rows,
        &TrainConfig {
            precision: Precision::Bf16,
            ..config.clone()
        },
        &dir.path().join("mixed"),
        Some(&checkpoint),
        &mut |_: &Event| {},
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("F32") && err.contains("Bf16"), "{err}");
}

#[test]
fn bf16_mixed_precision_trains_the_f32_master_weights() {
    // Every parameter gets an f32 gradient through the bf16 forward.
    let mut model = Qwen2::new(tiny_config(12, true), DType::F32, &Device::Cpu).unwrap();
    model.init_weights(1).unwrap();
    model.set_compute_dtype(DType::BF16);
    let ids = sample_ids(12);
    let logits = model.forward(&ids, &[6, 3]).unwrap();
    assert_eq!(logits.dtype(), DType::BF16);
    let weights = Tensor::ones((2, 6), DType::F32, &Device::Cpu).unwrap();
    let grads = loss::cross_entropy_sum(&logits, &ids, &weights)
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in model.named_vars() {
        let g = grads
            .get(&var)
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        assert_eq!((var.dtype(), g.dtype()), (DType::F32, DType::F32), "{name}");
    }

    // ... and those gradients are the f32 ones up to bf16 rounding, also for the parameters
    // whose gradient sums over every row (biases, norm weights): 16 × 48 rows here.
    let mut rng = still_engine::rng::Rng::new(3);
    let ids: Vec<u32> = (0..16 * 48).map(|_| rng.below(12) as u32).collect();
    let ids = Tensor::from_vec(ids, (16, 48), &Device::Cpu).unwrap();
    let weights = Tensor::ones((16, 48), DType::F32, &Device::Cpu).unwrap();
    let grads_in = |model: &Qwen2| {
        let logits = model.forward(&ids, &[48; 16]).unwrap();
        loss::cross_entropy_sum(&logits, &ids, &weights)
            .unwrap()
            .backward()
            .unwrap()
    };
    let mixed = grads_in(&model);
    model.set_compute_dtype(DType::F32);
    let full = grads_in(&model);
    for (name, var) in model.named_vars() {
        let (a, b) = (full.get(&var).unwrap(), mixed.get(&var).unwrap());
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        let relative = norm(&(a - b).unwrap()) / norm(a);
        // Measured 0.4–1.3%; norm weights reached 3.4% while the norm ran in bf16.
        assert!(relative < 0.02, "{name}: bf16 gradient off by {relative}");
    }

    // Training in bf16 follows the f32 curve closely, keeps f32 weights, and saves them in f32.
    let dir = tempfile::tempdir().unwrap();
    let rows = synth::addition(2, 96, 5);
    tiny_folder(&dir.path().join("base"), &rows, 6);
    let run = |precision: Precision, out: &str| -> Vec<StepMetrics> {
        let mut events = Vec::new();
        let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
        train::train(
            student,
            &rows,
            &TrainConfig {
                precision,
                ..quick_config(6)
            },
            &dir.path().join(out),
            None,
            &mut |e: &Event| events.push(e.clone()),
            None,
        )
        .unwrap();
        losses(&events)
    };
    let (full, mixed) = (run(Precision::F32, "f32"), run(Precision::Bf16, "bf16"));
    assert_eq!(mixed.len(), 6);
    for (a, b) in full.iter().zip(&mixed) {
        // bf16 keeps 8 bits of mantissa: a relative difference of a few 1e-3 per step.
        assert!(
            (a.loss - b.loss).abs() / a.loss < 0.03,
            "step {}: f32 {} vs bf16 {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    assert_ne!(
        full.last().unwrap().loss.to_bits(),
        mixed.last().unwrap().loss.to_bits(),
        "the bf16 run computed in bf16"
    );
    assert!(mixed.last().unwrap().loss < mixed[0].loss, "it learns");
    let saved = candle_core::safetensors::load(
        dir.path().join("bf16/final/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(saved.values().all(|t| t.dtype() == DType::F32));
}

#[test]
fn a_tiny_model_learns_addition_from_scratch() {
    // Short by default (about 4 minutes on 2 cores); STILL_SLOW_TESTS=1 trains to 90%.
    // Measured on the CLI with this config: 2.5% held-out exact match at 500 steps, 42% at 750,
    // 95% at 1000 (the model first learns the format, then to read digits from the question).
    let slow = std::env::var_os("STILL_SLOW_TESTS").is_some();
    let (digits, steps, threshold) = if slow { (2, 1500, 0.9) } else { (2, 900, 0.3) };
    let dir = tempfile::tempdir().unwrap();
    let train_rows = synth::addition(digits, 2000, 1);
    let held_out: Vec<ExampleFields> = synth::addition(digits, 400, 99)
        .into_iter()
        .filter(|r| !train_rows.iter().any(|t| t.question == r.question))
        .take(40)
        .collect();
    tiny_folder(&dir.path().join("base"), &train_rows, 7);
    let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
    let config = TrainConfig {
        lr: 3e-3,
        epochs: 100,
        max_steps: Some(steps),
        batch_size: 32,
        grad_accum: 1,
        max_seq_len: 160,
        warmup_ratio: 0.02,
        weight_decay: 0.0,
        seed: 3,
        ..Default::default()
    };
    let final_dir = train::train(
        student,
        &train_rows,
        &config,
        &dir.path().join("run"),
        None,
        &mut |_: &Event| {},
        None,
    )
    .unwrap();
    let trained = hf::load(&final_dir, DType::F32, &Device::Cpu).unwrap();
    let settings = still_engine::eval::EvalSettings {
        budgets: vec![still_engine::budget::Budget {
            max_thinking_tokens: Some(100),
            ..Default::default()
        }],
        forcing: still_engine::budget::Forcing {
            max_answer_tokens: 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let results = still_engine::eval::evaluate(
        &trained,
        &held_out,
        &ChatTemplate::default(),
        &settings,
        |_, _| false,
        |_| Ok(()),
    )
    .unwrap();
    let summary = still_engine::eval::summarize(&settings.budgets, &results);
    // Chance is about 1 in 100 for a 2-digit sum (sums span 20..198).
    assert!(
        summary.performance >= threshold,
        "held-out accuracy {} (first: {:?})",
        summary.performance,
        results.first()
    );
}

#[test]
fn cutting_thinking_short_costs_accuracy_on_the_counting_task() {
    // s1's effect on a laptop: a tiny model trained for 300 steps (about a minute in a release build) on
    // a task whose answer needs all of its thinking, evaluated with its thinking cut at a few
    // tokens and at enough. Measured on the CLI (vocabulary 300): after 400 steps 3% held-out
    // accuracy at 4 thinking tokens, 21% at 32, 81% at 48; after 250 steps 2% at 6, 73% at 64.
    let dir = tempfile::tempdir().unwrap();
    let train_rows = synth::counting(12, 4000, 1);
    let held_out = synth::counting(12, 60, 99);
    tiny_folder(&dir.path().join("base"), &train_rows, 7);
    let student = hf::load(&dir.path().join("base"), DType::F32, &Device::Cpu).unwrap();
    let config = TrainConfig {
        lr: 3e-3,
        epochs: 100,
        max_steps: Some(300),
        batch_size: 32,
        grad_accum: 1,
        max_seq_len: 128,
        ..Default::default()
    };
    let final_dir = train::train(
        student,
        &train_rows,
        &config,
        &dir.path().join("run"),
        None,
        &mut |_: &Event| {},
        None,
    )
    .unwrap();
    let trained = hf::load(&final_dir, DType::F32, &Device::Cpu).unwrap();
    let budget = |max| still_engine::budget::Budget {
        max_thinking_tokens: Some(max),
        ..Default::default()
    };
    let settings = still_engine::eval::EvalSettings {
        budgets: vec![budget(6), budget(64)],
        forcing: still_engine::budget::Forcing {
            max_answer_tokens: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let records = still_engine::eval::evaluate(
        &trained,
        &held_out,
        &ChatTemplate::default(),
        &settings,
        |_, _| false,
        |_| Ok(()),
    )
    .unwrap();
    let report = still_engine::eval::summarize(&settings.budgets, &records);
    let (short, enough) = (report.budgets[0].accuracy, report.budgets[1].accuracy);
    assert!(
        enough >= short + 0.4,
        "accuracy {short} with 6 thinking tokens, {enough} with 64: {report:?}"
    );
    // Cut at 6, thinking never ran past it; with 64 the model ended its thinking itself.
    assert!(report.budgets[0].mean_thinking_tokens <= 6.0);
    assert!(report.budgets[1].mean_thinking_tokens < 64.0);
    assert!(report.scaling.unwrap() > 0.0);
}
