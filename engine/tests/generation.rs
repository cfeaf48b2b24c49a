//! Generation on tiny models made here: cached decoding against recomputing the whole sequence,
//! a batch against each prompt alone, seeded sampling, stop strings, and s1's budget forcing.

use std::path::Path;

use candle_core::{Device, Tensor};
use still_engine::budget::{self, Budget, Forcing, ThinkRequest};
use still_engine::data::ChatTemplate;
use still_engine::generate::{self, Finish, Request, Sampling};
use still_engine::hf::{self, ModelFolder};
use still_engine::{synth, tokenizer};

/// A tiny model with a tokenizer trained on addition rows; weights scaled up so its logits are
/// far apart (greedy picks are then not decided by rounding).
fn folder(dir: &Path, seed: u64) -> ModelFolder {
    let texts: Vec<String> = synth::addition(2, 200, seed)
        .iter()
        .map(|r| format!("{} {} {}", r.question, r.thinking, r.answer))
        .collect();
    let folder = hf::create(dir, "tiny", &texts, 400, seed).unwrap();
    for (_, var) in folder.model.named_vars() {
        var.set(&(var.as_tensor() * 4.0).unwrap()).unwrap();
    }
    folder
}

fn prompt(folder: &ModelFolder, question: &str) -> Vec<u32> {
    tokenizer::encode(&folder.tokenizer, &ChatTemplate::default().prompt(question)).unwrap()
}

fn request(prompt: Vec<u32>, max_new_tokens: usize, sampling: Sampling) -> Request {
    Request {
        prompt,
        max_new_tokens,
        sampling,
        stop_strings: Vec::new(),
        stop_tokens: Vec::new(),
    }
}

fn argmax(values: &[f32]) -> u32 {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0 as u32
}

#[test]
fn cached_decoding_gives_the_tokens_of_recomputing_the_whole_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 1);
    let prompt = prompt(&folder, "What is 47 + 38?");
    let out = generate::generate(&folder, &[request(prompt.clone(), 48, Sampling::default())])
        .unwrap()
        .remove(0);
    assert!(out.ids.len() >= 16, "{out:?}");
    let mut ids = prompt.clone();
    for (step, &token) in out.ids.iter().enumerate() {
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = folder.model.forward(&input, &[ids.len()]).unwrap();
        let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap();
        assert_eq!(
            argmax(&last.to_vec1::<f32>().unwrap()),
            token,
            "step {step}: the cache and the full forward disagree"
        );
        ids.push(token);
    }
}

#[test]
fn a_batch_of_8_prompts_of_different_lengths_gives_what_each_gives_alone() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 2);
    let questions = [
        "1+1",
        "What is 12 + 30?",
        "Add 99 and 1, then tell me the sum please.",
        "7+8=?",
        "Compute 45 plus 45 and explain every step of the work in detail.",
        "3 + 4",
        "What is the sum of 10 and 20 and 30?",
        "Sum: 5 + 6",
    ];
    let samplings = [
        Sampling::default(),
        Sampling {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 20,
            seed: 7,
        },
    ];
    for sampling in samplings {
        let requests: Vec<Request> = questions
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let s = Sampling {
                    seed: sampling.seed + i as u64,
                    ..sampling
                };
                request(prompt(&folder, q), 24, s)
            })
            .collect();
        let lengths: std::collections::BTreeSet<usize> =
            requests.iter().map(|r| r.prompt.len()).collect();
        assert!(
            lengths.len() >= 6,
            "prompts of different lengths: {lengths:?}"
        );
        let batch = generate::generate(&folder, &requests).unwrap();
        for (i, r) in requests.iter().enumerate() {
            let alone = generate::generate(&folder, std::slice::from_ref(r)).unwrap();
            assert_eq!(
                batch[i].ids, alone[0].ids,
                "prompt {i} ({sampling:?}): batched and alone differ"
            );
            assert_eq!(batch[i].finish, alone[0].finish);
        }
    }
}

#[test]
fn sampling_is_reproducible_with_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 3);
    let p = prompt(&folder, "What is 21 + 21?");
    let with_seed = |seed| {
        let s = Sampling {
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        generate::generate(&folder, &[request(p.clone(), 32, s)])
            .unwrap()
            .remove(0)
            .ids
    };
    assert_eq!(with_seed(11), with_seed(11));
    assert_ne!(with_seed(11), with_seed(12));
    // top_k = 1 is greedy whatever the temperature.
    let greedy = generate::generate(&folder, &[request(p.clone(), 32, Sampling::default())])
        .unwrap()
        .remove(0)
        .ids;
    let top1 = Sampling {
        temperature: 1.5,
        top_k: 1,
        seed: 5,
        ..Default::default()
    };
    let one = generate::generate(&folder, &[request(p.clone(), 32, top1)])
        .unwrap()
        .remove(0)
        .ids;
    assert_eq!(one, greedy);
}

#[test]
fn a_stop_string_ends_the_completion_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 4);
    let p = prompt(&folder, "What is 33 + 44?");
    let free = generate::generate(&folder, &[request(p.clone(), 40, Sampling::default())])
        .unwrap()
        .remove(0);
    assert_eq!(free.finish, Finish::Length, "{free:?}");
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 12, "{:?}", free.text);
    let stop: String = chars[8..11].iter().collect();
    let before = &free.text[..free.text.find(&stop).unwrap()];
    let mut r = request(p, 40, Sampling::default());
    r.stop_strings = vec![stop.clone()];
    let stopped = generate::generate(&folder, &[r]).unwrap().remove(0);
    assert_eq!(stopped.finish, Finish::StopString);
    assert_eq!(stopped.text, before, "stop string {stop:?}");
    assert!(stopped.ids.len() < free.ids.len());
}

fn think(folder: &ModelFolder, budgets: &[Budget]) -> Vec<budget::Thought> {
    let template = ChatTemplate::default();
    let requests: Vec<ThinkRequest> = budgets
        .iter()
        .map(|&b| ThinkRequest {
            prompt: template.prompt("What is 56 + 17?"),
            budget: b,
            sampling: Sampling::default(),
        })
        .collect();
    let forcing = Forcing {
        max_answer_tokens: 12,
        ..Forcing::from_template(&template)
    };
    budget::think(folder, &requests, &forcing).unwrap()
}

#[test]
fn with_a_maximum_of_k_thinking_never_exceeds_k_and_the_answer_follows_final_answer() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 5);
    // The minimum equal to the maximum answers every try to stop with Wait: only the cut
    // ends thinking.
    let budgets: Vec<Budget> = [4, 9, 16, 33]
        .iter()
        .map(|&k| Budget {
            max_thinking_tokens: Some(k),
            min_thinking_tokens: k,
            wait_extensions: 0,
        })
        .collect();
    let thoughts = think(&folder, &budgets);
    let mut reached = 0;
    for (b, t) in budgets.iter().zip(&thoughts) {
        let k = b.max_thinking_tokens.unwrap();
        assert!(t.thinking_tokens <= k, "{t:?}");
        // Cut at k, or earlier where a try to stop left no room for a Wait.
        let cut = t.cut.expect("thinking is cut").token;
        assert_eq!(cut, t.thinking_tokens);
        assert!(cut == k || t.stop_attempts > 0, "{t:?}");
        reached += usize::from(cut == k);
        assert!(t.answer.starts_with("Final Answer:"), "{:?}", t.answer);
        assert!(t.answer_tokens <= 12);
    }
    assert!(reached >= 2, "{thoughts:?}");
}

#[test]
fn n_wait_extensions_put_exactly_n_waits_where_the_model_tried_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path(), 6);
    // A model that always tries to stop: a zero final norm makes every logit 0, so greedy
    // picks id 0, which the tokenizer gives to <|endoftext|>.
    assert_eq!(folder.special.end_of_text, 0);
    for (name, var) in folder.model.named_vars() {
        if name == "model.norm.weight" {
            var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        }
    }
    let wait_len = tokenizer::encode(&folder.tokenizer, "Wait").unwrap().len();
    let budgets: Vec<Budget> = (0..4)
        .map(|n| Budget {
            max_thinking_tokens: Some(64),
            min_thinking_tokens: 0,
            wait_extensions: n,
        })
        .collect();
    let thoughts = think(&folder, &budgets);
    for (n, t) in thoughts.iter().enumerate() {
        assert_eq!(t.waits.len(), n, "{t:?}");
        assert_eq!(t.stop_attempts, n + 1);
        assert_eq!(t.thinking, "Wait".repeat(n));
        assert_eq!(t.thinking_tokens, n * wait_len);
        for (i, w) in t.waits.iter().enumerate() {
            assert_eq!(w.token, i * wait_len);
            assert_eq!(w.char, i * 4);
        }
        assert_eq!(t.cut, None);
        assert_eq!(t.finish, Finish::Stop);
    }
    // A minimum extends until it is reached.
    let min = think(
        &folder,
        &[Budget {
            max_thinking_tokens: Some(64),
            min_thinking_tokens: 5,
            wait_extensions: 0,
        }],
    )
    .remove(0);
    assert!(min.thinking_tokens >= 5, "{min:?}");
    assert_eq!(min.waits.len(), 5_usize.div_ceil(wait_len));
}
