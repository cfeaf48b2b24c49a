//! The `generate` job: a teacher answers the generation's pinned questions, `n` samples each;
//! each answer is split into thinking and answer, graded against the row's reference, and
//! uploaded as soon as it is made (an endpoint's at once, with whatever else arrived
//! meanwhile; an engine batch when it is decoded), so a restart asks again only for what was in
//! flight. Rows an earlier attempt stored are never asked for again.
//!
//! Teachers: a registry model run by the engine with s1's budget forcing (batched, on this
//! worker's device); a generation-only registry model (Qwen3, Llama, GGUF) through
//! `still-teacher` and candle-transformers, a sequence at a time; or an OpenAI-compatible endpoint (`{base_url}/chat/completions`),
//! `concurrency` requests at a time, each retried with backoff on 429, 5xx, timeouts and
//! dropped connections. A request the endpoint refuses (another 4xx) is recorded as that row's
//! error; a refused key or an unknown model (401, 403, 404), or a request that still fails
//! after its retries, stops the job, which the queue retries and which resumes where it was.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use still_api::{
    ClaimedJob, ExampleFields, GenerationRecord, GenerationRowUpload, GenerationSettings,
    GenerationWork,
};
use still_engine::budget::{Budget, Forcing, ThinkRequest};
use still_engine::data::ChatTemplate;
use still_engine::generate::Sampling;

use crate::WorkerOptions;
use crate::client::Client;
use crate::report::RunLog;
use crate::transfer::{fetch_model, fetch_rows};

/// Rows sent in one upload at most.
const UPLOAD_BATCH: usize = 16;
/// Rows a registry teacher decodes together.
const ENGINE_BATCH: usize = 8;
/// Retry lines written to the log before the rest are only counted.
const MAX_RETRY_LINES: u32 = 50;
/// The longest pause between retries, and the longest `Retry-After` honoured.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One (question, sample) to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Task {
    example: usize,
    sample: usize,
}

/// What the teacher's text came to, before grading.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub thinking: String,
    pub answer: String,
    pub split: &'static str,
    pub finish: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub retries: u32,
}

pub fn run(
    client: &Client,
    options: &WorkerOptions,
    job: &ClaimedJob,
    work: &GenerationWork,
    stop: Arc<AtomicBool>,
    log: &RunLog,
) -> anyhow::Result<()> {
    let settings = &work.settings;
    let mut rows = fetch_rows(
        client,
        job.job_id,
        "generation/dataset",
        &options.work_dir.join("datasets"),
    )?;
    let n = usize::try_from(work.n_examples).context("n_examples")?;
    if rows.len() < n {
        anyhow::bail!(
            "dataset version {} has {} rows; the generation needs {n}",
            work.dataset_version_id,
            rows.len()
        );
    }
    rows.truncate(n);
    let done: HashSet<(i64, i64)> = work.done.iter().copied().collect();
    let samples = settings.n as usize;
    let tasks: Vec<Task> = (0..n)
        .flat_map(|example| (0..samples).map(move |sample| Task { example, sample }))
        .filter(|t| !done.contains(&(t.example as i64, t.sample as i64)))
        .collect();
    let teacher = match work.teacher.base_url.as_deref() {
        Some(url) => format!("'{}' at {url}", work.teacher.model),
        None => format!("registry model '{}'", work.teacher.model),
    };
    log.info(format!(
        "asking {teacher} about {n} rows × {samples} sample(s): {} of {} already stored, {} to ask",
        done.len(),
        n * samples,
        tasks.len()
    ));
    let uploader = Uploader::new(client, job.job_id);
    let started = Instant::now();
    let asked = tasks.len();
    match work.teacher.base_url.as_deref() {
        Some(base_url) => {
            let endpoint = Endpoint::new(base_url, &work.teacher, settings);
            remote(&endpoint, &rows, tasks, settings, &stop, log, uploader)?
        }
        None => {
            let model_id = work
                .teacher
                .model_id
                .context("a registry teacher without a model id")?;
            let on_worker = work.teacher.model_origin.as_deref() == Some("worker");
            let dir = fetch_model(
                client,
                options,
                model_id,
                (&work.teacher.model, on_worker),
                log,
            )?;
            if still_teacher::engine_native(&dir)? {
                local(options, &dir, &rows, tasks, settings, &stop, uploader)?
            } else {
                let inspected = still_teacher::inspect(&dir)?;
                log.info(format!(
                    "the teacher is a {} model in {} ({} parameters): generation through \
                     candle-transformers, one sequence at a time",
                    inspected.arch.as_str(),
                    inspected.format.as_str(),
                    inspected.n_params
                ));
                transformers(options, &dir, &rows, tasks, settings, &stop, uploader)?
            }
        }
    }
    log.info(format!(
        "asked for {asked} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The row's reference answer (its `answer`, or a GSM8K label), if it has one.
fn reference(row: &ExampleFields) -> Option<String> {
    let r = still_engine::eval::reference(&row.answer);
    if !r.is_empty() {
        return Some(r);
    }
    row.solution
        .as_deref()
        .and_then(still_engine::eval::last_boxed)
        .map(str::to_string)
}

/// The user turn for a row.
fn user_turn(settings: &GenerationSettings, row: &ExampleFields) -> String {
    settings.prompt.replace("{question}", &row.question)
}

/// Per-row seed: the generation's seed moved by the row and sample, so samples differ and a
/// rerun gives the same ones.
fn seed_of(settings: &GenerationSettings, task: Task) -> u64 {
    settings
        .seed
        .wrapping_add((task.example as u64) * u64::from(settings.n) + task.sample as u64)
}

/// A row ready to upload: graded against its reference.
fn finished(
    settings: &GenerationSettings,
    row: &ExampleFields,
    task: Task,
    result: Result<Answer, String>,
    seconds: f64,
) -> GenerationRowUpload {
    match result {
        Ok(a) => {
            let verdict = reference(row).map(|r| {
                let text = if a.answer.trim().is_empty() {
                    &a.thinking
                } else {
                    &a.answer
                };
                let preset = settings
                    .preset
                    .parse()
                    .unwrap_or(still_engine::eval::Preset::Math);
                still_grade::grade(&r, text, preset)
            });
            GenerationRowUpload {
                example_index: task.example as i64,
                sample_index: task.sample as i64,
                error: None,
                correct: verdict.as_ref().map(|v| v.correct),
                prompt_tokens: a.prompt_tokens,
                completion_tokens: a.completion_tokens,
                record: GenerationRecord {
                    thinking: a.thinking,
                    answer: a.answer,
                    split: a.split.to_string(),
                    finish: a.finish,
                    extracted: verdict.as_ref().and_then(|v| v.extracted.clone()),
                    reason: verdict.map(|v| v.reason),
                    retries: a.retries,
                    seconds,
                },
            }
        }
        Err(error) => GenerationRowUpload {
            example_index: task.example as i64,
            sample_index: task.sample as i64,
            error: Some(error),
            correct: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            record: GenerationRecord {
                split: "none".into(),
                seconds,
                ..Default::default()
            },
        },
    }
}

/// Sends finished rows in batches.
struct Uploader<'c> {
    client: &'c Client,
    path: String,
    pending: Vec<GenerationRowUpload>,
}

impl<'c> Uploader<'c> {
    fn new(client: &'c Client, job_id: i64) -> Self {
        Self {
            client,
            path: format!("/api/worker/jobs/{job_id}/generation/rows"),
            pending: Vec::new(),
        }
    }

    fn push(&mut self, row: GenerationRowUpload) -> anyhow::Result<()> {
        self.pending.push(row);
        if self.pending.len() >= UPLOAD_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.pending.is_empty() {
            self.client
                .post::<_, serde_json::Value>(&self.path, &self.pending)
                .context("uploading generated rows")?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// A registry teacher: the engine decodes [`ENGINE_BATCH`] rows at a time under s1's budget
/// forcing (thinking cut at `max_thinking_tokens`, default `max_tokens`; the answer up to
/// `max_tokens`).
fn local(
    options: &WorkerOptions,
    dir: &std::path::Path,
    rows: &[ExampleFields],
    tasks: Vec<Task>,
    settings: &GenerationSettings,
    stop: &AtomicBool,
    mut uploader: Uploader,
) -> anyhow::Result<()> {
    let device = still_engine::device(&options.device)?;
    let folder = still_engine::hf::load(dir, still_engine::candle::DType::F32, &device)?;
    let template = ChatTemplate {
        system: settings.system.clone(),
        ..ChatTemplate::default()
    };
    let forcing = Forcing {
        max_answer_tokens: settings.max_tokens as usize,
        ..Forcing::from_template(&template)
    };
    let budget = Budget {
        max_thinking_tokens: Some(
            settings.max_thinking_tokens.unwrap_or(settings.max_tokens) as usize
        ),
        min_thinking_tokens: 0,
        wait_extensions: 0,
    };
    for batch in tasks.chunks(ENGINE_BATCH) {
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped: the job was cancelled or its lease lost");
        }
        let started = Instant::now();
        let prompts: Vec<String> = batch
            .iter()
            .map(|t| template.prompt(&user_turn(settings, &rows[t.example])))
            .collect();
        let requests: Vec<ThinkRequest> = batch
            .iter()
            .zip(&prompts)
            .map(|(&t, prompt)| ThinkRequest {
                prompt: prompt.clone(),
                budget,
                sampling: Sampling {
                    temperature: settings.temperature,
                    top_p: settings.top_p,
                    top_k: 0,
                    seed: seed_of(settings, t),
                },
            })
            .collect();
        let thoughts = still_engine::budget::think(&folder, &requests, &forcing)?;
        let seconds = started.elapsed().as_secs_f64() / batch.len() as f64;
        for ((&task, thought), prompt) in batch.iter().zip(thoughts).zip(&prompts) {
            let prompt_tokens =
                still_engine::tokenizer::encode(&folder.tokenizer, prompt)?.len() as i64;
            let answer = Answer {
                thinking: thought.thinking,
                answer: thought.answer.trim().to_string(),
                split: "budget_forcing",
                finish: Some(
                    match thought.cut {
                        Some(_) => "thinking_cut",
                        None => "stop",
                    }
                    .to_string(),
                ),
                prompt_tokens,
                completion_tokens: (thought.thinking_tokens + thought.answer_tokens) as i64,
                retries: 0,
            };
            uploader.push(finished(
                settings,
                &rows[task.example],
                task,
                Ok(answer),
                seconds,
            ))?;
        }
        uploader.flush()?;
    }
    Ok(())
}

/// How often a one-at-a-time teacher's rows go up at least.
const UPLOAD_EVERY: Duration = Duration::from_secs(2);

/// A generation-only registry teacher (Qwen3, Llama, any GGUF) through candle-transformers: a
/// sequence at a time; with `max_thinking_tokens` the prompt opens `<think>` and the thinking
/// is closed at the budget, and the answer is split from the tags.
fn transformers(
    options: &WorkerOptions,
    dir: &std::path::Path,
    rows: &[ExampleFields],
    tasks: Vec<Task>,
    settings: &GenerationSettings,
    stop: &AtomicBool,
    mut uploader: Uploader,
) -> anyhow::Result<()> {
    let device = still_engine::device(&options.device)?;
    let mut teacher = still_teacher::Teacher::load(dir, &device)?;
    let system = settings.system.as_deref();
    let mut uploaded = Instant::now();
    for task in tasks {
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped: the job was cancelled or its lease lost");
        }
        let started = Instant::now();
        let opts = still_teacher::Options {
            max_tokens: settings.max_tokens as usize,
            max_thinking_tokens: settings.max_thinking_tokens.map(|t| t as usize),
            sampling: Sampling {
                temperature: settings.temperature,
                top_p: settings.top_p,
                top_k: 0,
                seed: seed_of(settings, task),
            },
        };
        let user = user_turn(settings, &rows[task.example]);
        // A prompt too long for the model is that row's error; anything else stops the job.
        let result = match teacher.write(system, &user, &opts) {
            Ok(written) => {
                let (thinking, answer, split) = split_think_tags(&written.text);
                Ok(Answer {
                    thinking,
                    answer,
                    split,
                    finish: Some(written.finish.to_string()),
                    prompt_tokens: written.prompt_tokens as i64,
                    completion_tokens: written.completion_tokens as i64,
                    retries: 0,
                })
            }
            Err(e) if e.is::<still_teacher::PromptTooLong>() => Err(format!("{e:#}")),
            Err(e) => return Err(e),
        };
        let seconds = started.elapsed().as_secs_f64();
        uploader.push(finished(
            settings,
            &rows[task.example],
            task,
            result,
            seconds,
        ))?;
        if uploaded.elapsed() >= UPLOAD_EVERY {
            uploader.flush()?;
            uploaded = Instant::now();
        }
    }
    uploader.flush()
}

/// What one endpoint request came to.
#[derive(Debug)]
enum Outcome {
    /// Answered, or refused for this row only (its error).
    Row(Result<Answer, String>),
    /// The whole job cannot go on (a refused key, an unknown model, retries spent).
    Fatal(String),
}

/// An OpenAI-compatible endpoint.
pub struct Endpoint {
    agent: ureq::Agent,
    url: String,
    model: String,
    auth: Option<String>,
    max_retries: u32,
    retry_lines: AtomicU32,
}

impl Endpoint {
    pub fn new(
        base_url: &str,
        teacher: &still_api::TeacherWork,
        settings: &GenerationSettings,
    ) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(u64::from(
                settings.timeout_seconds,
            ))))
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: teacher.model.clone(),
            auth: teacher.api_key.as_ref().map(|k| format!("Bearer {k}")),
            max_retries: settings.max_retries,
            retry_lines: AtomicU32::new(0),
        }
    }

    fn body(
        &self,
        settings: &GenerationSettings,
        row: &ExampleFields,
        task: Task,
    ) -> serde_json::Value {
        let mut messages = Vec::new();
        if let Some(system) = &settings.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": user_turn(settings, row)}));
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": seed_of(settings, task),
            "n": 1,
            "stream": false,
        });
        if let Some(m) = settings.max_thinking_tokens {
            body["max_thinking_tokens"] = serde_json::json!(m);
        }
        body
    }

    /// Asks for one row, retrying what is worth retrying.
    fn ask(
        &self,
        settings: &GenerationSettings,
        row: &ExampleFields,
        task: Task,
        stopped: &dyn Fn() -> bool,
        log: &RunLog,
    ) -> Outcome {
        let body = self.body(settings, row, task);
        let mut retries = 0u32;
        loop {
            if stopped() {
                return Outcome::Fatal("stopped".into());
            }
            let mut request = self.agent.post(&self.url);
            if let Some(auth) = &self.auth {
                request = request.header("Authorization", auth);
            }
            let (why, wait) = match request.send_json(&body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.max(0.0)).min(MAX_BACKOFF));
                    let text = response
                        .body_mut()
                        .with_config()
                        .limit(64 << 20)
                        .read_to_string();
                    let text = match text {
                        Ok(t) => t,
                        Err(e) => {
                            let why = format!("reading the answer: {e}");
                            if let Some(o) = self.give_up(&mut retries, &why, task) {
                                return o;
                            }
                            self.pause(retries, None, &why, task, log, stopped);
                            continue;
                        }
                    };
                    match status {
                        200..=299 => {
                            return Outcome::Row(parse_completion(&text).map(|mut a| {
                                a.retries = retries;
                                a
                            }));
                        }
                        401 | 403 => {
                            return Outcome::Fatal(format!(
                                "{}: HTTP {status}: the endpoint refused the API key: {}",
                                self.url,
                                error_message(&text)
                            ));
                        }
                        404 => {
                            return Outcome::Fatal(format!(
                                "{}: HTTP 404 (is model '{}' served there, and is the base URL the API's, e.g. …/v1?): {}",
                                self.url,
                                self.model,
                                error_message(&text)
                            ));
                        }
                        408 | 409 | 429 | 500..=599 => (
                            format!("HTTP {status}: {}", error_message(&text)),
                            retry_after,
                        ),
                        _ => {
                            return Outcome::Row(Err(format!(
                                "HTTP {status}: {}",
                                error_message(&text)
                            )));
                        }
                    }
                }
                Err(e) => (format!("{e}"), None),
            };
            if let Some(o) = self.give_up(&mut retries, &why, task) {
                return o;
            }
            self.pause(retries, wait, &why, task, log, stopped);
        }
    }

    /// Counts a retry; the outcome when they are spent.
    fn give_up(&self, retries: &mut u32, why: &str, task: Task) -> Option<Outcome> {
        if *retries >= self.max_retries {
            return Some(Outcome::Fatal(format!(
                "{}: row {} sample {}: still failing after {} retries: {why}",
                self.url, task.example, task.sample, self.max_retries
            )));
        }
        *retries += 1;
        None
    }

    /// Waits before retry `retry` (`Retry-After` when the endpoint said, else exponential
    /// backoff from 0.5 s with jitter), waking early when the job stops.
    fn pause(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        why: &str,
        task: Task,
        log: &RunLog,
        stopped: &dyn Fn() -> bool,
    ) {
        let wait = retry_after.unwrap_or_else(|| {
            let base = Duration::from_millis(500) * 2u32.saturating_pow(retry - 1);
            let jitter = 0.75 + 0.5 * jitter_unit();
            base.min(MAX_BACKOFF).mul_f64(jitter)
        });
        let line = self.retry_lines.fetch_add(1, Ordering::Relaxed);
        if line < MAX_RETRY_LINES {
            log.warn(format!(
                "row {} sample {}: {why}; retry {retry} of {} in {:.1} s{}",
                task.example,
                task.sample,
                self.max_retries,
                wait.as_secs_f64(),
                if line + 1 == MAX_RETRY_LINES {
                    " (further retries are counted in each row, not logged)"
                } else {
                    ""
                }
            ));
        }
        let until = Instant::now() + wait;
        while Instant::now() < until && !stopped() {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }
}

/// A number in [0, 1) that differs between calls (jitter needs no more).
fn jitter_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// An error body's message (OpenAI's `{"error": {"message"}}`, Still's `{"message"}`), else
/// its start.
fn error_message(text: &str) -> String {
    let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    message.unwrap_or_else(|| text.chars().take(300).collect())
}

/// A chat completion's first choice as thinking and answer: `reasoning_content` (DeepSeek,
/// vLLM) or `reasoning` apart from `content`, else `<think>…</think>` inside it.
pub fn parse_completion(text: &str) -> Result<Answer, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    let choice = value.pointer("/choices/0").ok_or_else(|| {
        format!(
            "the answer has no choices: {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    let message = choice.get("message").cloned().unwrap_or_default();
    let field = |name: &str| {
        message
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let content = field("content").unwrap_or_default();
    let reasoning = field("reasoning_content")
        .or_else(|| field("reasoning"))
        .filter(|r| !r.trim().is_empty());
    let (thinking, answer, split) = match reasoning {
        Some(r) => (r, content.trim().to_string(), "reasoning_content"),
        None => split_think_tags(&content),
    };
    let usage = |name: &str| {
        value
            .pointer(&format!("/usage/{name}"))
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    };
    Ok(Answer {
        thinking,
        answer,
        split,
        finish: choice
            .get("finish_reason")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        prompt_tokens: usage("prompt_tokens"),
        completion_tokens: usage("completion_tokens"),
        retries: 0,
    })
}

/// `<think>…</think>answer` (the opening tag may be in the prompt, not the text) into thinking
/// and answer; a text cut inside its thinking is all thinking; a text without tags all answer.
pub fn split_think_tags(content: &str) -> (String, String, &'static str) {
    let text = content.trim_start();
    if let Some((thinking, answer)) = text.split_once("</think>") {
        let thinking = thinking
            .trim_start()
            .strip_prefix("<think>")
            .unwrap_or(thinking);
        return (
            thinking.trim().to_string(),
            answer.trim().to_string(),
            "think_tags",
        );
    }
    if let Some(rest) = text.strip_prefix("<think>") {
        return (rest.trim().to_string(), String::new(), "think_tags");
    }
    (String::new(), content.trim().to_string(), "none")
}

/// An endpoint teacher: `concurrency` threads take rows from one queue; this thread uploads
/// what they finish.
fn remote(
    endpoint: &Endpoint,
    rows: &[ExampleFields],
    tasks: Vec<Task>,
    settings: &GenerationSettings,
    stop: &Arc<AtomicBool>,
    log: &RunLog,
    mut uploader: Uploader,
) -> anyhow::Result<()> {
    let queue = Mutex::new(tasks.into_iter().collect::<VecDeque<Task>>());
    // Stops the askers (a fatal outcome, a failed upload) without touching the lease's flag.
    let halt = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(Task, Outcome, f64)>();
    let threads = settings.concurrency.max(1) as usize;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (queue, halt) = (&queue, &halt);
            scope.spawn(move || {
                let stopped = || halt.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed);
                while !stopped() {
                    let Some(task) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let started = Instant::now();
                    let outcome = endpoint.ask(settings, &rows[task.example], task, &stopped, log);
                    if tx
                        .send((task, outcome, started.elapsed().as_secs_f64()))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut fatal: Option<String> = None;
        // Each answer is paid for: it goes up as soon as it is here (with whatever else
        // arrived meanwhile), so a worker killed now loses only requests in flight and the
        // rows of the upload in transit.
        let mut take = |message: (Task, Outcome, f64), uploader: &mut Uploader| match message {
            (task, Outcome::Row(result), seconds) => {
                if let Err(e) = &result {
                    log.warn(format!(
                        "row {} sample {}: {e} (recorded as the row's error)",
                        task.example, task.sample
                    ));
                }
                uploader.push(finished(
                    settings,
                    &rows[task.example],
                    task,
                    result,
                    seconds,
                ))
            }
            (_, Outcome::Fatal(why), _) => {
                halt.store(true, Ordering::Relaxed);
                fatal.get_or_insert(why);
                Ok(())
            }
        };
        loop {
            let sent = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(message) => take(message, &mut uploader).and_then(|()| {
                    while let Ok(more) = rx.try_recv() {
                        take(more, &mut uploader)?;
                    }
                    uploader.flush()
                }),
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Err(e) = sent {
                halt.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        // Every asker has ended: what they finished goes up before the outcome is reported.
        uploader.flush()?;
        if stop.load(Ordering::Relaxed) {
            anyhow::bail!("stopped: the job was cancelled or its lease lost");
        }
        match fatal {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_comes_apart_from_the_answer_however_it_is_returned() {
        let apart = r#"{"choices":[{"message":{"role":"assistant","content":" 42 ","reasoning_content":"6 times 7"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5}}"#;
        let a = parse_completion(apart).unwrap();
        assert_eq!(
            (a.thinking.as_str(), a.answer.as_str(), a.split),
            ("6 times 7", "42", "reasoning_content")
        );
        assert_eq!((a.prompt_tokens, a.completion_tokens), (9, 5));
        assert_eq!(a.finish.as_deref(), Some("stop"));
        let vllm_new = r#"{"choices":[{"message":{"content":"42","reasoning":"6 times 7"}}]}"#;
        assert_eq!(parse_completion(vllm_new).unwrap().thinking, "6 times 7");
        let inline =
            r#"{"choices":[{"message":{"content":"<think>\n6 times 7\n</think>\n\n42"}}]}"#;
        let a = parse_completion(inline).unwrap();
        assert_eq!(
            (a.thinking.as_str(), a.answer.as_str(), a.split),
            ("6 times 7", "42", "think_tags")
        );
        // The opening tag was in the prompt (R1 distills); the text was cut while thinking.
        assert_eq!(
            split_think_tags("6 times 7</think>42"),
            ("6 times 7".into(), "42".into(), "think_tags")
        );
        assert_eq!(
            split_think_tags("<think>6 times"),
            ("6 times".into(), String::new(), "think_tags")
        );
        assert_eq!(split_think_tags("42"), (String::new(), "42".into(), "none"));
        assert!(
            parse_completion(r#"{"choices":[]}"#)
                .unwrap_err()
                .contains("no choices")
        );
        assert!(parse_completion("<html>").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"slow down","type":"rate_limit"}}"#),
            "slow down"
        );
        assert_eq!(error_message(r#"{"message":"no"}"#), "no");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
    }
}
