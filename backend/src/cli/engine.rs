//! The engine's command-line subcommands: `synth`, `model new`, `train`, `teacher-topk`
//! (`generate`, `eval` and `grade` are in `evals`).
//! They call `still-engine` directly (no server, no database).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use still_engine::candle::DType;
use still_engine::data::{ChatTemplate, LongExamples};
use still_engine::loss::Divergence;
use still_engine::train::{Event, Method, TrainConfig};
use still_engine::{hf, synth, train};

#[derive(Args)]
pub struct SynthArgs {
    /// `addition` (column-by-column traces) or `count` (a running count whose answer needs all
    /// of its thinking: cutting it short costs accuracy).
    #[arg(long, default_value = "addition")]
    task: String,
    /// Digits per operand (addition).
    #[arg(long, default_value_t = 3)]
    digits: usize,
    /// Letters per list, at most (count; at least half as many).
    #[arg(long, default_value_t = 12)]
    items: usize,
    #[arg(long, default_value_t = 5000)]
    n: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Create a model from scratch: a size preset and a BPE tokenizer trained on a dataset.
    New(ModelNewArgs),
}

#[derive(Args)]
pub struct ModelNewArgs {
    /// `tiny` (hidden 128, 4 layers), `mini` (hidden 256, 4 layers) or `small` (hidden 512, 8 layers).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Canonical JSONL whose text trains the tokenizer.
    #[arg(long)]
    tokenizer_from: PathBuf,
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MethodArg {
    Sft,
    Kd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DivergenceArg {
    ForwardKl,
    ReverseKl,
    Jsd,
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value = "sft")]
    method: MethodArg,
    /// The student (an HF model folder).
    #[arg(long)]
    model: PathBuf,
    /// The teacher for `--method kd` (same tokenizer as the student): an HF model folder, or a
    /// table written by `still teacher-topk`.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// KD: distil against the teacher's top K next tokens, computed once before training (the
    /// teacher then leaves memory) and kept in --cache-dir.
    #[arg(long)]
    top_k: Option<usize>,
    /// Where tables computed once per dataset are kept (default: --out).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Canonical JSONL (question, thinking, answer, …).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Forward passes per optimizer step (s1: global batch 16).
    #[arg(long, default_value_t = 16)]
    grad_accum: usize,
    #[arg(long, default_value_t = 4096)]
    max_seq_len: usize,
    /// Skip examples longer than --max-seq-len instead of truncating them.
    #[arg(long)]
    skip_long: bool,
    #[arg(long, default_value_t = 0.05)]
    warmup_ratio: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// A checkpoint folder (`OUT/checkpoints/step-N`) to continue from.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// KD: weight of the distillation term.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// KD: softmax temperature.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    #[arg(long, value_enum, default_value = "forward-kl")]
    divergence: DivergenceArg,
    /// KD with `--divergence jsd`: the mixture weight β.
    #[arg(long, default_value_t = 0.5)]
    jsd_beta: f64,
    /// `cpu` or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `f32`, or `bf16`: compute in bf16 over f32 master weights and optimizer state (pays on
    /// GPUs; slower than f32 on the CPU).
    #[arg(long, default_value = "f32")]
    precision: still_engine::train::Precision,
    /// Print metrics as JSON lines instead of a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TeacherTopKArgs {
    /// The teacher (an HF model folder).
    #[arg(long)]
    teacher: PathBuf,
    /// Canonical JSONL: the dataset the students will train on.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 32)]
    top_k: usize,
    /// The distillation temperature the students will use.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// As the students' --max-seq-len and --skip-long: the table is per tokenised sequence.
    #[arg(long, default_value_t = 4096)]
    max_seq_len: usize,
    #[arg(long)]
    skip_long: bool,
    /// Sequences per teacher forward.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The table (safetensors); pass it to `still train --method kd --teacher FILE`.
    #[arg(long)]
    out: PathBuf,
}

fn load_model(dir: &Path, device: &str) -> anyhow::Result<hf::ModelFolder> {
    let device = still_engine::device(device)?;
    Ok(hf::load(dir, DType::F32, &device)?)
}

pub fn synth_cmd(args: SynthArgs) -> anyhow::Result<()> {
    let (rows, what) = match args.task.as_str() {
        "addition" => {
            if !(1..=18).contains(&args.digits) {
                bail!("--digits must be between 1 and 18");
            }
            (
                synth::addition(args.digits, args.n, args.seed),
                format!("addition rows ({} digits", args.digits),
            )
        }
        "count" => {
            if !(2..=200).contains(&args.items) {
                bail!("--items must be between 2 and 200");
            }
            (
                synth::counting(args.items, args.n, args.seed),
                format!("counting rows (up to {} items", args.items),
            )
        }
        other => bail!("--task '{other}': use addition or count"),
    };
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?,
    );
    for row in &rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    println!(
        "{}: {} {what}, seed {})",
        args.out.display(),
        rows.len(),
        args.seed
    );
    Ok(())
}

pub fn model_cmd(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::New(args) => {
            let rows = still_engine::data::read_jsonl(&args.tokenizer_from)?;
            let texts: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{}\n{}\n{}\n{}",
                        r.question,
                        r.thinking,
                        r.answer,
                        r.solution.as_deref().unwrap_or("")
                    )
                })
                .collect();
            let folder = hf::create(&args.out, &args.preset, &texts, args.vocab_size, args.seed)?;
            println!(
                "{}: new '{}' model, {} parameters, vocabulary {}",
                args.out.display(),
                args.preset,
                folder.model.n_params(),
                folder.tokenizer.get_vocab_size(true)
            );
            Ok(())
        }
    }
}

fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

pub fn train_cmd(args: TrainArgs) -> anyhow::Result<()> {
    let method = match args.method {
        MethodArg::Sft => Method::Sft,
        MethodArg::Kd => Method::Kd {
            teacher: args
                .teacher
                .clone()
                .context("--method kd needs --teacher DIR")?,
            alpha: args.alpha,
            temperature: args.temperature,
            divergence: match args.divergence {
                DivergenceArg::ForwardKl => Divergence::ForwardKl,
                DivergenceArg::ReverseKl => Divergence::ReverseKl,
                DivergenceArg::Jsd => Divergence::Jsd {
                    beta: args.jsd_beta,
                },
            },
            top_k: args.top_k,
        },
    };
    if args.top_k.is_some() && matches!(args.method, MethodArg::Sft) {
        bail!("--top-k is for --method kd");
    }
    let config = TrainConfig {
        method,
        lr: args.lr,
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_seq_len: args.max_seq_len,
        long_examples: if args.skip_long {
            LongExamples::Skip
        } else {
            LongExamples::Truncate
        },
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        cache_dir: args.cache_dir.clone(),
        precision: args.precision,
        ..Default::default()
    };
    let rows = still_engine::data::read_jsonl(&args.data)?;
    let student = load_model(&args.model, &args.device)?;
    let json = args.json;
    let bar = !json && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut observer = |event: &Event| {
        if json {
            println!(
                "{}",
                serde_json::to_string(event).expect("events serialise")
            );
            return;
        }
        match event {
            Event::Started {
                total_steps,
                start_step,
                n_examples,
                n_truncated,
                n_skipped,
                n_params,
            } => eprintln!(
                "training {n_params} parameters on {n_examples} examples ({n_truncated} truncated, {n_skipped} skipped), \
                 steps {}..{total_steps}",
                start_step + 1
            ),
            Event::Step(m) => {
                let per_step = started.elapsed().as_secs_f64() / m.step.max(1) as f64;
                let eta = format_duration(per_step * (m.total_steps - m.step) as f64);
                let width = 30;
                let filled = width * m.step / m.total_steps.max(1);
                let line = format!(
                    "[{}{}] {}/{} loss {:.4} lr {:.2e} |g| {:.2} {:.0} tok/s ETA {eta}",
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    m.step,
                    m.total_steps,
                    m.loss,
                    m.lr,
                    m.grad_norm,
                    m.tokens_per_s
                );
                if bar {
                    eprint!("\r{line}");
                    if m.step == m.total_steps {
                        eprintln!();
                    }
                } else if m.step % 10 == 0 || m.step == m.total_steps || m.step == 1 {
                    eprintln!("{line}");
                }
            }
            Event::TeacherTopK { .. } => {
                eprintln!("{}", event.message().unwrap_or_default())
            }
            Event::Checkpoint { step, path } => {
                if bar {
                    eprintln!();
                }
                eprintln!("checkpoint at step {step}: {}", path.display());
            }
            Event::Finished { steps, final_dir } => {
                eprintln!("done after {steps} steps: {}", final_dir.display())
            }
        }
    };
    train::train(
        student,
        &rows,
        &config,
        &args.out,
        args.resume.as_deref(),
        &mut observer,
        None,
    )?;
    Ok(())
}

pub fn teacher_topk_cmd(args: TeacherTopKArgs) -> anyhow::Result<()> {
    let rows = still_engine::data::read_jsonl(&args.data)?;
    let teacher = load_model(&args.teacher, &args.device)?;
    let prepared = still_engine::data::prepare(
        &rows,
        &teacher.tokenizer,
        &ChatTemplate::default(),
        args.max_seq_len,
        if args.skip_long {
            LongExamples::Skip
        } else {
            LongExamples::Truncate
        },
    )?;
    let started = Instant::now();
    let table = still_engine::topk::TeacherTopK::compute(
        &teacher,
        &prepared.sequences,
        args.top_k,
        args.temperature,
        args.batch_size,
        &mut |done, total| {
            if done == total || done % 50 < args.batch_size.max(1) {
                eprintln!("{done}/{total} sequences");
            }
        },
    )?;
    table.save(&args.out)?;
    println!(
        "{}: teacher top-{} at temperature {} for {} sequences ({} positions, {:.1} MiB) in {:.1} s",
        args.out.display(),
        table.meta.k,
        table.meta.temperature,
        table.meta.sequences,
        table.meta.positions,
        table.bytes() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
