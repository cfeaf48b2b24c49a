//! `still generate`, `still eval` and `still grade`: generation (with budget forcing when a
//! budget is given), evaluation over a list of budgets, and the answer checker on outputs
//! produced anywhere (vLLM, lm-eval). All three use the engine's one generation API and the one
//! checker the eval job uses.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use still_api::ExampleFields;
use still_engine::budget::{self, Budget, Forcing, ThinkRequest, Thought};
use still_engine::candle::DType;
use still_engine::data::ChatTemplate;
use still_engine::eval::{self, EvalSettings, Preset};
use still_engine::generate::{self, Request, Sampling};
use still_engine::{hf, tokenizer};

/// Decoding settings shared by `generate` and `eval`.
#[derive(Args, Clone)]
pub struct DecodingArgs {
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// 0: all tokens.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl DecodingArgs {
    fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        }
    }
}

/// What budget forcing writes.
#[derive(Args, Clone)]
pub struct ForcingArgs {
    /// Answer tokens after thinking.
    #[arg(long, default_value_t = 256)]
    max_answer_tokens: usize,
    /// Appended instead of the end-of-thinking delimiter to extend thinking.
    #[arg(long, default_value = "Wait")]
    wait_string: String,
    /// Appended after the delimiter when thinking is cut.
    #[arg(long, default_value = "Final Answer:")]
    final_answer: String,
}

impl ForcingArgs {
    fn forcing(&self) -> Forcing {
        Forcing {
            wait: self.wait_string.clone(),
            final_answer: self.final_answer.clone(),
            max_answer_tokens: self.max_answer_tokens,
            ..Forcing::from_template(&ChatTemplate::default())
        }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Put the prompt in the chat template as a question.
    #[arg(long)]
    chat: bool,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Budget forcing (implies --chat): cut thinking at N tokens.
    #[arg(long)]
    max_thinking: Option<usize>,
    /// Budget forcing: answer tries to stop before N thinking tokens with `Wait`.
    #[arg(long)]
    min_thinking: Option<usize>,
    /// Budget forcing: answer the first N tries to stop with `Wait`.
    #[arg(long)]
    wait: Option<usize>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    forcing: ForcingArgs,
}

fn load_model(dir: &Path) -> anyhow::Result<hf::ModelFolder> {
    let device = still_engine::device("cpu")?;
    hf::load(dir, DType::F32, &device).with_context(|| format!("loading {}", dir.display()))
}

/// A thought's thinking and answer, with each forced `Wait` and the cut marked.
fn print_thought(thought: &Thought) {
    let mut marks: Vec<(usize, String)> = thought
        .waits
        .iter()
        .map(|w| (w.char, "⟦forced⟧".to_string()))
        .collect();
    if let Some(cut) = thought.cut {
        marks.push((cut.char, "⟦cut⟧".to_string()));
    }
    marks.sort();
    let mut text = thought.thinking.clone();
    for (at, mark) in marks.iter().rev() {
        if text.is_char_boundary(*at) {
            text.insert_str(*at, mark);
        }
    }
    println!(
        "── thinking: {} tokens, {} forced Wait, {}",
        thought.thinking_tokens,
        thought.waits.len(),
        match thought.cut {
            Some(c) => format!("cut at {}", c.token),
            None => "ended by the model".into(),
        }
    );
    println!("{text}");
    println!("── answer: {} tokens", thought.answer_tokens);
    println!("{}", thought.answer);
}

pub fn generate_cmd(args: GenerateArgs) -> anyhow::Result<()> {
    let folder = load_model(&args.model)?;
    let template = ChatTemplate::default();
    if args.max_thinking.is_some() || args.min_thinking.is_some() || args.wait.is_some() {
        let request = ThinkRequest {
            prompt: template.prompt(&args.prompt),
            budget: Budget {
                max_thinking_tokens: args.max_thinking,
                min_thinking_tokens: args.min_thinking.unwrap_or(0),
                wait_extensions: args.wait.unwrap_or(0),
            },
            sampling: args.decoding.sampling(),
        };
        let thought = budget::think(&folder, &[request], &args.forcing.forcing())?.remove(0);
        print_thought(&thought);
        return Ok(());
    }
    let text = if args.chat {
        template.prompt(&args.prompt)
    } else {
        args.prompt.clone()
    };
    let request = Request {
        prompt: tokenizer::encode(&folder.tokenizer, &text)?,
        max_new_tokens: args.max_new_tokens,
        sampling: args.decoding.sampling(),
        stop_strings: args.stop.clone(),
        stop_tokens: Vec::new(),
    };
    let completion = generate::generate(&folder, &[request])?.remove(0);
    println!("{}", completion.text);
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// JSONL rows with `question` (or `problem`) and `answer` (or `gold_answer`; a GSM8K
    /// `#### n` line is read as its label).
    #[arg(long)]
    data: PathBuf,
    /// Thinking budgets, comma-separated (`none`: uncut).
    #[arg(long, value_delimiter = ',', default_value = "256")]
    max_thinking: Vec<String>,
    /// Wait extensions, comma-separated; every value is run with every budget.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    wait: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    min_thinking: usize,
    /// How answers are extracted: math, gsm8k or choice.
    #[arg(long, default_value = "math")]
    preset: Preset,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Evaluate only the first N rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Per-record results (JSONL); default `<model>/eval-<data stem>.jsonl`.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    forcing: ForcingArgs,
}

/// The first of `names` that `value` has as a string or number, as text.
fn text_field(value: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match &value[*n] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Rows to evaluate: a question and a reference answer per line.
fn read_eval_rows(path: &Path) -> anyhow::Result<Vec<ExampleFields>> {
    read_objects(path)?
        .into_iter()
        .map(|(line, value)| {
            let at = || format!("{} line {line}", path.display());
            let Some(question) = text_field(&value, &["question", "problem"]) else {
                bail!("{}: no `question` (or `problem`) field", at());
            };
            let Some(answer) = text_field(&value, &["answer", "gold_answer"]) else {
                bail!("{}: no `answer` (or `gold_answer`) field", at());
            };
            Ok(ExampleFields {
                question,
                answer,
                ..Default::default()
            })
        })
        .collect()
}

fn budget_label(b: &Budget) -> String {
    let mut parts = vec![match b.max_thinking_tokens {
        Some(m) => format!("max {m}"),
        None => "uncut".to_string(),
    }];
    if b.min_thinking_tokens > 0 {
        parts.push(format!("min {}", b.min_thinking_tokens));
    }
    parts.push(format!("wait {}", b.wait_extensions));
    parts.join(" · ")
}

pub fn eval_cmd(args: EvalArgs) -> anyhow::Result<()> {
    let folder = load_model(&args.model)?;
    let mut rows = read_eval_rows(&args.data)?;
    if let Some(limit) = args.limit {
        rows.truncate(limit);
    }
    let mut budgets = Vec::new();
    for max in &args.max_thinking {
        let max_thinking_tokens =
            match max.trim() {
                "none" => None,
                n => Some(n.parse::<usize>().with_context(|| {
                    format!("--max-thinking {n:?}: a number of tokens or `none`")
                })?),
            };
        for &wait in &args.wait {
            budgets.push(Budget {
                max_thinking_tokens,
                min_thinking_tokens: args.min_thinking,
                wait_extensions: wait,
            });
        }
    }
    let settings = EvalSettings {
        budgets,
        forcing: args.forcing.forcing(),
        sampling: args.decoding.sampling(),
        preset: args.preset,
        batch_size: args.batch,
    };
    let out_path = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .data
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.model.join(format!("eval-{stem}.jsonl"))
    });
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    );
    let total = rows.len() * settings.budgets.len();
    let mut written = 0;
    let started = std::time::Instant::now();
    let records = eval::evaluate(
        &folder,
        &rows,
        &ChatTemplate::default(),
        &settings,
        |_, _| false,
        |record| {
            serde_json::to_writer(&mut out, record)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| still_engine::EngineError::Data(format!("writing results: {e}")))?;
            written += 1;
            if written % 10 == 0 {
                eprintln!("{written}/{total}");
            }
            Ok(())
        },
    )?;
    out.flush()?;
    let report = eval::summarize(&settings.budgets, &records);
    println!(
        "{:<28} {:>5} {:>9} {:>14} {:>8}",
        "budget", "n", "accuracy", "mean thinking", "control"
    );
    for r in &report.budgets {
        println!(
            "{:<28} {:>5} {:>9.3} {:>14.1} {:>8.3}",
            budget_label(&r.budget),
            r.n,
            r.accuracy,
            r.mean_thinking_tokens,
            r.control
        );
    }
    println!(
        "Control {:.3} · Scaling {} · Performance {:.3} · {} records in {:.1} s; per-record results in {}",
        report.control,
        report.scaling.map_or("n/a".to_string(), |s| format!(
            "{:.2} per 1k thinking tokens",
            s * 1000.0
        )),
        report.performance,
        records.len(),
        started.elapsed().as_secs_f64(),
        out_path.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct GradeArgs {
    /// The reference rows (JSONL): `answer` (or `gold_answer`), and an `id` or `unique_id`
    /// when predictions name rows by id.
    #[arg(long)]
    data: PathBuf,
    /// Model outputs (JSONL): `output` (the whole output), and `id` or nothing (line order).
    #[arg(long)]
    predictions: PathBuf,
    #[arg(long, default_value = "math")]
    preset: Preset,
    /// Where each row's extracted answer, verdict and reason go; default
    /// `<predictions stem>.graded.jsonl` beside the predictions.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn id_of(value: &Value) -> Option<String> {
    text_field(value, &["id", "unique_id"])
}

fn read_objects(path: &Path) -> anyhow::Result<Vec<(usize, Value)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if !value.is_object() {
            bail!("{} line {}: not a JSON object", path.display(), i + 1);
        }
        rows.push((i + 1, value));
    }
    Ok(rows)
}

pub fn grade_cmd(args: GradeArgs) -> anyhow::Result<()> {
    let data = read_objects(&args.data)?;
    let predictions = read_objects(&args.predictions)?;
    let reference_of = |line: usize, row: &Value| -> anyhow::Result<String> {
        match text_field(row, &["answer", "gold_answer"]) {
            Some(a) => Ok(eval::reference(&a)),
            None => bail!(
                "{} line {line}: no `answer` (or `gold_answer`) field",
                args.data.display()
            ),
        }
    };
    let by_id: std::collections::HashMap<String, usize> = data
        .iter()
        .enumerate()
        .filter_map(|(i, (_, row))| id_of(row).map(|id| (id, i)))
        .collect();
    let named = predictions.iter().any(|(_, p)| id_of(p).is_some());
    if !named && predictions.len() != data.len() {
        bail!(
            "{} has {} rows and no ids, {} has {}: rows are matched in line order, so the counts must agree",
            args.predictions.display(),
            predictions.len(),
            args.data.display(),
            data.len()
        );
    }
    let out_path = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .predictions
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.predictions
            .with_file_name(format!("{stem}.graded.jsonl"))
    });
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    );
    let (mut right, mut total) = (0, 0);
    for (n, (line, prediction)) in predictions.iter().enumerate() {
        let at = || format!("{} line {line}", args.predictions.display());
        let index = match id_of(prediction) {
            Some(id) => *by_id.get(&id).with_context(|| {
                format!("{}: id {id:?} is not in {}", at(), args.data.display())
            })?,
            None if named => bail!("{}: no `id` while other rows have one", at()),
            None => n,
        };
        let Some(output) = prediction["output"].as_str() else {
            bail!(
                "{}: no `output` field (the model's whole output, a string)",
                at()
            );
        };
        let (data_line, row) = &data[index];
        let reference = reference_of(*data_line, row)?;
        let verdict = still_grade::grade(&reference, output, args.preset);
        total += 1;
        right += usize::from(verdict.correct);
        let mut graded = serde_json::json!({
            "line": line,
            "reference": reference,
            "extracted": verdict.extracted,
            "correct": verdict.correct,
            "reason": verdict.reason,
        });
        if let Some(id) = id_of(row) {
            graded["id"] = Value::String(id);
        }
        serde_json::to_writer(&mut out, &graded)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    println!(
        "accuracy {:.4} ({right}/{total}); per-row verdicts in {}",
        if total == 0 {
            0.0
        } else {
            right as f64 / total as f64
        },
        out_path.display()
    );
    Ok(())
}
