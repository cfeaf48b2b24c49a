//! Text generation: batched, KV-cached decoding of prompts of different lengths, with greedy or
//! seeded temperature / top-k / top-p sampling, stop tokens and stop strings. One API for the
//! eval job (through [`crate::budget`]), `still generate` and the serving endpoint.
//!
//! [`Decoder`] is the low-level loop: rows are added with their prompt, each step feeds every
//! live row's pending tokens in one packed forward ([`Qwen2::forward_rows`]) and returns each
//! row's next token; the caller decides what is fed next (the token itself, forced text, or
//! nothing when the row is done). [`generate`] is plain completion on top of it.

use candle_core::DType;

use crate::EngineError;
use crate::Result;
use crate::hf::ModelFolder;
use crate::model::{KvCache, Qwen2};
use crate::rng::Rng;
use crate::tokenizer;

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// 0 is greedy (the most likely token; the lowest id on a tie).
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// Only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Config(m));
        if !(0.0..=100.0).contains(&self.temperature) || self.temperature.is_nan() {
            return bad(format!(
                "temperature {} is not in 0..=100",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} is not in (0, 1]", self.top_p));
        }
        Ok(())
    }
}

/// Picks the next token from one row of logits.
pub fn pick(logits: &[f32], sampling: &Sampling, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    // Most likely first; ties by id so the order (and the draw) is deterministic.
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if sampling.top_k > 0 && sampling.top_k < order.len() {
        order.truncate(sampling.top_k);
    }
    let max = logits[order[0] as usize];
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| (f64::from(logits[i as usize] - max) / sampling.temperature).exp())
        .collect();
    if sampling.top_p < 1.0 {
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let mut keep = weights.len();
        for (n, w) in weights.iter().enumerate() {
            cumulative += w / total;
            if cumulative >= sampling.top_p {
                keep = n + 1;
                break;
            }
        }
        weights.truncate(keep);
    }
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f64() * total;
    for (n, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return order[n];
        }
    }
    order[weights.len() - 1]
}

struct Row {
    cache: KvCache,
    pending: Vec<u32>,
    rng: Rng,
    sampling: Sampling,
    live: bool,
}

/// Many sequences decoded together, each with its own cache and sampling state.
pub struct Decoder<'m> {
    model: &'m Qwen2,
    rows: Vec<Row>,
}

impl<'m> Decoder<'m> {
    pub fn new(model: &'m Qwen2) -> Self {
        Self {
            model,
            rows: Vec::new(),
        }
    }

    /// Adds a sequence: `prompt` is fed on the next step; `capacity` bounds its whole length
    /// (prompt, generated and forced tokens). Returns its row index.
    pub fn add(&mut self, prompt: &[u32], capacity: usize, sampling: Sampling) -> Result<usize> {
        sampling.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::Config("an empty prompt".into()));
        }
        let positions = self.model.config.max_position_embeddings;
        if prompt.len() >= positions {
            return Err(EngineError::Config(format!(
                "a prompt of {} tokens leaves no room in the model's {positions} positions",
                prompt.len()
            )));
        }
        let row = self.rows.len();
        self.rows.push(Row {
            cache: self
                .model
                .new_cache(capacity.clamp(prompt.len() + 1, positions)),
            pending: prompt.to_vec(),
            // Each row its own stream: a batch draws what each request would draw alone.
            rng: Rng::new(sampling.seed),
            sampling,
            live: true,
        });
        Ok(row)
    }

    /// Queues `tokens` to be fed to `row` on the next step (after whatever is already queued).
    pub fn feed(&mut self, row: usize, tokens: &[u32]) {
        self.rows[row].pending.extend_from_slice(tokens);
    }

    /// Ends a row: it takes no more steps and its cache is freed.
    pub fn finish(&mut self, row: usize) {
        let r = &mut self.rows[row];
        r.live = false;
        r.pending.clear();
        r.cache = self.model.new_cache(1);
    }

    pub fn live(&self) -> usize {
        self.rows.iter().filter(|r| r.live).count()
    }

    /// Tokens in a row's context so far (fed, not pending).
    pub fn context_len(&self, row: usize) -> usize {
        self.rows[row].cache.seq_len()
    }

    /// One forward for every live row with pending tokens; each row's next token.
    pub fn step(&mut self) -> Result<Vec<(usize, u32)>> {
        let positions = self.model.config.max_position_embeddings;
        let mut index = Vec::new();
        let mut inputs = Vec::new();
        let mut caches: Vec<&mut KvCache> = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            if !row.live {
                continue;
            }
            if row.pending.is_empty() {
                return Err(EngineError::Config(format!(
                    "row {i} is live but was fed nothing"
                )));
            }
            if row.cache.seq_len() + row.pending.len() > positions {
                return Err(EngineError::Config(format!(
                    "row {i} would reach {} tokens, past the model's {positions} positions",
                    row.cache.seq_len() + row.pending.len()
                )));
            }
            index.push(i);
            inputs.push(std::mem::take(&mut row.pending));
            caches.push(&mut row.cache);
        }
        if index.is_empty() {
            return Ok(Vec::new());
        }
        let slices: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let logits = self
            .model
            .forward_rows(&slices, &mut caches)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(index
            .into_iter()
            .zip(logits)
            .map(|(i, row_logits)| {
                let row = &mut self.rows[i];
                (i, pick(&row_logits, &row.sampling, &mut row.rng))
            })
            .collect())
    }
}

/// One completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Text that ends the completion (it is not part of the returned text).
    pub stop_strings: Vec<String>,
    /// Tokens that end the completion besides the model's end tokens.
    pub stop_tokens: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end token or stop token.
    Stop,
    /// A stop string.
    StopString,
    /// `max_new_tokens` ran out.
    Length,
}

/// A completion and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Generated ids (a stop token not included; a stop string's tokens are).
    pub ids: Vec<u32>,
    pub finish: Finish,
}

/// Whether a stop string appears in the tail of `ids` decoded; returns the text cut before it.
pub(crate) struct StopWatch<'a> {
    strings: &'a [String],
    longest: usize,
}

impl<'a> StopWatch<'a> {
    pub(crate) fn new(strings: &'a [String]) -> Self {
        Self {
            strings,
            longest: strings.iter().map(String::len).max().unwrap_or(0),
        }
    }

    /// After a new token: does the text end in (or newly contain) a stop string?
    pub(crate) fn hit(&self, folder: &ModelFolder, ids: &[u32]) -> Result<bool> {
        if self.strings.is_empty() {
            return Ok(false);
        }
        // A token is at least one byte: the last `longest` tokens hold any string that the
        // newest token completed.
        let tail = &ids[ids.len().saturating_sub(self.longest + 1)..];
        let text = tokenizer::decode(&folder.tokenizer, tail, false)?;
        Ok(self.strings.iter().any(|s| text.contains(s.as_str())))
    }

    pub(crate) fn cut(&self, text: &str) -> String {
        let at = self
            .strings
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
            .unwrap_or(text.len());
        text[..at].to_string()
    }
}

/// Completes every request, all in one batch.
pub fn generate(folder: &ModelFolder, requests: &[Request]) -> Result<Vec<Completion>> {
    let mut decoder = Decoder::new(&folder.model);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
    let mut finish = vec![Finish::Length; requests.len()];
    let watches: Vec<StopWatch> = requests
        .iter()
        .map(|r| StopWatch::new(&r.stop_strings))
        .collect();
    for request in requests {
        let row = decoder.add(
            &request.prompt,
            request.prompt.len() + request.max_new_tokens + 1,
            request.sampling,
        )?;
        if request.max_new_tokens == 0 {
            decoder.finish(row);
        }
    }
    let ends = [folder.special.im_end, folder.special.end_of_text];
    while decoder.live() > 0 {
        for (row, token) in decoder.step()? {
            let request = &requests[row];
            if ends.contains(&token) || request.stop_tokens.contains(&token) {
                finish[row] = Finish::Stop;
                decoder.finish(row);
                continue;
            }
            out[row].push(token);
            if watches[row].hit(folder, &out[row])? {
                finish[row] = Finish::StopString;
                decoder.finish(row);
            } else if out[row].len() >= request.max_new_tokens {
                decoder.finish(row);
            } else {
                decoder.feed(row, &[token]);
            }
        }
    }
    out.into_iter()
        .zip(finish)
        .zip(&watches)
        .map(|((ids, finish), watch)| {
            let text = tokenizer::decode(&folder.tokenizer, &ids, false)?;
            let text = if finish == Finish::StopString {
                watch.cut(&text)
            } else {
                text
            };
            Ok(Completion { text, ids, finish })
        })
        .collect()
}

/// Options of the simple one-prompt helpers below.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            seed: 0,
        }
    }
}

/// Continues `prompt` (raw text; special tokens in it count) until `<|im_end|>`,
/// `<|endoftext|>` or the budget.
pub fn complete(
    folder: &ModelFolder,
    prompt: &str,
    options: GenerateOptions,
) -> Result<Completion> {
    let request = Request {
        prompt: tokenizer::encode(&folder.tokenizer, prompt)?,
        max_new_tokens: options.max_new_tokens,
        sampling: Sampling {
            temperature: options.temperature,
            seed: options.seed,
            ..Default::default()
        },
        stop_strings: Vec::new(),
        stop_tokens: Vec::new(),
    };
    Ok(generate(folder, &[request])?.remove(0))
}
