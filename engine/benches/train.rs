//! Training throughput on CPU for a fixed config (hidden 256, 4 layers, 4 heads / 2 KV heads,
//! vocab 8192, batch 8 × 256, f32), with where the time goes; and, with `-- --learn`, the
//! wall time for the synthetic addition task to reach 90% held-out accuracy.
//!
//! `cargo bench -p still-engine --bench train [-- --steps N] [-- --learn] [-- --bf16]`
//! (`--small` measures the `--learn` run's shapes instead; `--kd` distils from a teacher of
//! the same config through the fused loss, `--kd-composed` through the composed losses; `--steps 0` skips the throughput table; `--learn` takes `--batch`, `--lr`, `--max-steps` and
//! `--eval-every` to try other recipes). When
//! Python with torch and transformers is importable, the same config runs through
//! `Qwen2ForCausalLM` (`engine/benches/torch_reference.py`) for comparison; otherwise that row
//! says it was skipped. `--bf16` measures mixed precision (bf16 compute over f32 master weights)
//! instead of f32, in its own process so that the peak RSS is its own.

use std::time::Instant;

// The same allocator as the `still` binary, set up the same way (`still_engine::alloc`).
#[global_allocator]
static ALLOCATOR: still_engine::alloc::MiMalloc = still_engine::alloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use still_engine::config::Qwen2Config;
use still_engine::loss;
use still_engine::model::Qwen2;
use still_engine::optim::{AdamW, AdamWConfig};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The benchmark's model and batch: the engine's fixed config, or with `--small` the shapes of
/// the `--learn` run (tiny preset, hidden 128, short rows), where per-kernel overheads show.
struct Shapes {
    preset: &'static str,
    batch: usize,
    seq: usize,
    vocab: usize,
}

impl Shapes {
    fn from_args(args: &[String]) -> Self {
        if args.iter().any(|a| a == "--small") {
            Shapes {
                preset: "tiny",
                batch: 32,
                seq: 64,
                vocab: 400,
            }
        } else {
            Shapes {
                preset: "mini",
                batch: 8,
                seq: 256,
                vocab: 8192,
            }
        }
    }
}

/// The loss the bench trains with: SFT, or logit distillation (forward KL, T = 2, α = 0.5)
/// from a teacher of the same config, through the fused output-layer loss or (`--kd-composed`)
/// the composed losses over whole logits tensors.
#[derive(Clone, Copy, PartialEq)]
enum Objective {
    Sft,
    Kd { fused: bool },
}

impl Objective {
    fn from_args(args: &[String]) -> Self {
        if args.iter().any(|a| a == "--kd-composed") {
            Objective::Kd { fused: false }
        } else if args.iter().any(|a| a == "--kd") {
            Objective::Kd { fused: true }
        } else {
            Objective::Sft
        }
    }

    fn label(self) -> &'static str {
        match self {
            Objective::Sft => "SFT",
            Objective::Kd { fused: true } => "KD, fused loss",
            Objective::Kd { fused: false } => "KD, composed losses",
        }
    }
}

/// One step's loss (summed over targets, not yet averaged) for `objective`.
fn step_loss(
    model: &Qwen2,
    teacher: Option<&Qwen2>,
    (ids, host_ids, weights): (&Tensor, &[u32], &[f32]),
    lengths: &[usize],
    objective: Objective,
) -> Tensor {
    use still_engine::head_loss::{Distill, TeacherRows};
    use still_engine::loss::Divergence;
    let hidden = model.forward_hidden(ids, lengths).unwrap();
    let (temperature, alpha) = (2.0, 0.5);
    match (objective, teacher) {
        (Objective::Kd { fused }, Some(teacher)) => {
            let th = teacher.forward_hidden(ids, lengths).unwrap().detach();
            let vocab = model.config.vocab_size;
            if fused {
                let distill = Distill {
                    alpha,
                    temperature,
                    divergence: Divergence::ForwardKl,
                    vocab,
                    teacher: TeacherRows::Model {
                        hidden: th.flatten_to(1).unwrap(),
                        weight: teacher.lm_head().clone(),
                    },
                };
                return loss::next_token_distill_sum(
                    &hidden,
                    model.lm_head(),
                    host_ids,
                    weights,
                    distill,
                )
                .unwrap()
                .0;
            }
            let w = Tensor::from_slice(weights, ids.dims(), ids.device()).unwrap();
            let logits = model.logits(&hidden).unwrap();
            let ce = loss::cross_entropy_sum(&logits, ids, &w).unwrap();
            let t_logits = teacher.logits(&th).unwrap().detach();
            let kd = loss::distill_sum(&logits, &t_logits, &w, temperature, Divergence::ForwardKl)
                .unwrap();
            ((ce * (1.0 - alpha)).unwrap() + (kd * (alpha * temperature * temperature)).unwrap())
                .unwrap()
        }
        // The SFT loss as training computes it (the output layer's gradient is made in the
        // forward, chunk by chunk: see `still_engine::head_loss`).
        _ => {
            loss::next_token_cross_entropy_sum(&hidden, model.lm_head(), host_ids, weights).unwrap()
        }
    }
}

fn throughput(steps: usize, bf16: bool, shapes: &Shapes, objective: Objective) -> Vec<String> {
    let (batch, seq, vocab) = (shapes.batch, shapes.seq, shapes.vocab);
    let config = Qwen2Config::preset(shapes.preset, vocab).unwrap();
    let teacher = matches!(objective, Objective::Kd { .. }).then(|| {
        let mut t = Qwen2::new(config.clone(), DType::F32, &Device::Cpu).unwrap();
        t.init_weights(2).unwrap();
        t.freeze();
        t
    });
    let precision = if bf16 {
        still_engine::train::Precision::Bf16
    } else {
        still_engine::train::Precision::F32
    };
    let estimate = still_engine::memory::estimate(
        &config,
        teacher.as_ref().map(|_| &config),
        None,
        batch,
        seq,
        precision,
        objective != Objective::Kd { fused: false },
    );
    let mut model = Qwen2::new(config, DType::F32, &Device::Cpu).unwrap();
    model.init_weights(1).unwrap();
    if bf16 {
        model.set_compute_dtype(DType::BF16);
    }
    let vars = model.named_vars();
    let mut opt = AdamW::new(
        vars,
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 1e-4,
            max_grad_norm: Some(1.0),
        },
    )
    .unwrap();
    let mut rng = still_engine::rng::Rng::new(5);
    let host_ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(vocab) as u32).collect();
    let ids = Tensor::from_slice(&host_ids, (batch, seq), &Device::Cpu).unwrap();
    let weights = vec![1f32; batch * seq];
    let lengths = vec![seq; batch];
    let (mut fwd, mut bwd, mut optim) = (0f64, 0f64, 0f64);
    let warmup = 2;
    for step in 0..steps + warmup {
        let t0 = Instant::now();
        let sum = step_loss(
            &model,
            teacher.as_ref(),
            (&ids, &host_ids, &weights),
            &lengths,
            objective,
        );
        let loss = (sum / (batch * seq) as f64).unwrap();
        loss.to_scalar::<f32>().unwrap();
        let t1 = Instant::now();
        let grads = loss.backward().unwrap();
        let t2 = Instant::now();
        opt.step(&grads, 1e-4).unwrap();
        let t3 = Instant::now();
        if step >= warmup {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            optim += (t3 - t2).as_secs_f64();
        }
    }
    let n = steps as f64;
    let step_s = (fwd + bwd + optim) / n;
    let tokens = (batch * seq) as f64;
    vec![
        format!(
            "| Still (candle 0.11, {}, {}, {} threads) | {:.3} s | fwd {:.3} / bwd {:.3} / optimizer {:.3} | {:.0} | {:.0} MiB |",
            if bf16 {
                "bf16 compute over f32 master weights"
            } else {
                "f32"
            },
            objective.label(),
            candle_core::utils::get_num_threads(),
            step_s,
            fwd / n,
            bwd / n,
            optim / n,
            tokens / step_s,
            peak_rss_mib()
        ),
        match objective {
            Objective::Sft => torch_reference(steps, shapes),
            _ => "| PyTorch + transformers | not run (its reference script trains SFT) | | | |"
                .to_string(),
        },
        String::new(),
        format!(
            "Still's memory estimate for this run (`still_engine::memory::estimate`, what the queue \
             checks against a worker's memory): {:.0} MiB",
            estimate.total_bytes as f64 / (1024.0 * 1024.0)
        ),
    ]
}

fn torch_reference(steps: usize, shapes: &Shapes) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_reference.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(steps.to_string())
        .args([
            shapes.preset,
            &shapes.batch.to_string(),
            &shapes.seq.to_string(),
            &shapes.vocab.to_string(),
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "| PyTorch + transformers | skipped: {} | | | |",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("python failed")
                .replace('|', "/")
        ),
        Err(e) => format!("| PyTorch + transformers | skipped: {e} | | | |"),
    }
}

/// The number after `flag` on the command line, if the flag is given.
fn number_arg(args: &[String], flag: &str) -> Option<f64> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("{flag} wants a number, got '{v}'"))
        })
}

/// The recipe of the `--learn` run; each field can be overridden on the command line
/// (`--batch N --lr X --max-steps N --eval-every N`) to compare recipes.
struct Recipe {
    batch: usize,
    lr: f64,
    max_steps: usize,
    eval_every: usize,
}

impl Recipe {
    fn from_args(args: &[String]) -> Self {
        let value = |flag: &str| number_arg(args, flag);
        Recipe {
            batch: value("--batch").map_or(32, |v| v as usize),
            lr: value("--lr").unwrap_or(3e-3),
            max_steps: value("--max-steps").map_or(2000, |v| v as usize),
            eval_every: value("--eval-every").map_or(125, |v| v as usize),
        }
    }
}

/// Trains the tiny preset from scratch on 2-digit addition (the CLI quick start's config) and
/// evaluates every checkpoint on 100 held-out questions until one reaches 90%.
fn learn(recipe: &Recipe) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use still_engine::budget::{Budget, Forcing};
    use still_engine::{data::ChatTemplate, eval, hf, synth, train};
    let dir = tempfile::tempdir().unwrap();
    let train_rows = synth::addition(2, 2000, 1);
    let held_out: Vec<_> = synth::addition(2, 1000, 99)
        .into_iter()
        .filter(|r| !train_rows.iter().any(|t| t.question == r.question))
        .take(100)
        .collect();
    let texts: Vec<String> = train_rows
        .iter()
        .map(|r| format!("{} {} {}", r.question, r.thinking, r.answer))
        .collect();
    let base = hf::create(&dir.path().join("base"), "tiny", &texts, 400, 0).unwrap();
    let config = train::TrainConfig {
        lr: recipe.lr,
        epochs: 1000,
        max_steps: Some(recipe.max_steps),
        batch_size: recipe.batch,
        grad_accum: 1,
        max_seq_len: 160,
        warmup_ratio: 0.02,
        weight_decay: 0.0,
        checkpoint_every: Some(recipe.eval_every),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut reached: Option<(usize, f64, f64)> = None;
    let mut training_s = 0f64;
    let mut evaluating_s = 0f64;
    let mut observer = |event: &train::Event| {
        if let train::Event::Checkpoint { step, path } = event {
            let paused = Instant::now();
            let model = hf::load(path, DType::F32, &Device::Cpu).unwrap();
            let settings = eval::EvalSettings {
                budgets: vec![Budget {
                    max_thinking_tokens: Some(60),
                    ..Default::default()
                }],
                forcing: Forcing {
                    max_answer_tokens: 20,
                    ..Default::default()
                },
                ..Default::default()
            };
            let records = eval::evaluate(
                &model,
                &held_out,
                &ChatTemplate::default(),
                &settings,
                |_, _| false,
                |_| Ok(()),
            )
            .unwrap();
            let accuracy = eval::summarize(&settings.budgets, &records).performance;
            evaluating_s += paused.elapsed().as_secs_f64();
            training_s = started.elapsed().as_secs_f64() - evaluating_s;
            eprintln!(
                "step {step}: held-out accuracy {:.2} after {:.0} s ({training_s:.0} s training, {evaluating_s:.0} s evaluating)",
                accuracy,
                started.elapsed().as_secs_f64()
            );
            if accuracy >= 0.9 && reached.is_none() {
                reached = Some((*step, accuracy, started.elapsed().as_secs_f64()));
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    let _ = train::train(
        base,
        &train_rows,
        &config,
        &dir.path().join("run"),
        None,
        &mut observer,
        Some(stop.clone()),
    );
    match reached {
        Some((step, acc, wall)) => format!(
            "| 2-digit addition, tiny preset (0.8 M parameters), from scratch, batch {}, lr {}, cosine over {} steps | 90% held-out exact match at step {step} ({acc:.2}): {wall:.0} s wall ({training_s:.0} s training, {evaluating_s:.0} s evaluating) | < 600 s |",
            recipe.batch, recipe.lr, recipe.max_steps
        ),
        None => format!(
            "| 2-digit addition, tiny preset, from scratch, batch {}, lr {} | 90% not reached in {} steps ({training_s:.0} s training) | < 600 s |",
            recipe.batch, recipe.lr, recipe.max_steps
        ),
    }
}

fn main() {
    let kept = still_engine::alloc::keep_freed_memory();
    eprintln!("allocator keeps freed memory: {kept}");
    println!("{}", still_engine::simd::describe());
    let args: Vec<String> = std::env::args().collect();
    let steps = number_arg(&args, "--steps").map_or(5, |v| v as usize);
    if steps > 0 {
        let shapes = Shapes::from_args(&args);
        println!(
            "| engine | step ({} × {} tokens, {} preset, vocab {}) | where the time goes (s) | tokens/s | peak RSS |",
            shapes.batch, shapes.seq, shapes.preset, shapes.vocab
        );
        println!("|---|---|---|---|---|");
        let objective = Objective::from_args(&args);
        for line in throughput(
            steps,
            args.iter().any(|a| a == "--bf16"),
            &shapes,
            objective,
        ) {
            println!("{line}");
        }
        println!(
            "(Still's fwd includes the output layer's backward, which its fused loss does in the \
             forward pass; PyTorch's bwd has it.)"
        );
    }
    if args.iter().any(|a| a == "--learn") {
        println!();
        println!("| task | result | target |");
        println!("|---|---|---|");
        println!("{}", learn(&Recipe::from_args(&args)));
    }
}
