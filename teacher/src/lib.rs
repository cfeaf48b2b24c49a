//! Generation-only teachers through candle-transformers: a model of another architecture than
//! the engine's own Qwen2 (Qwen3, Llama), or a quantized one (GGUF), that writes traces on a CPU
//! box. It is never trained here, so it needs none of the engine's training machinery: a
//! sequence at a time with the model's own KV cache, the engine's sampler, and s1's budget
//! forcing done on the token stream (`<think>` opened in the prompt, `</think>` forced at the
//! budget).
//!
//! A teacher is a folder: `config.json` + `model.safetensors` (or shards behind
//! `model.safetensors.index.json`) with `model_type` `qwen2`, `qwen3` or `llama`; or one
//! `*.gguf` file whose `general.architecture` is one of those, with the model's
//! `tokenizer.json` beside it (the GGUF's own vocabulary is not read). **No axum, no sqlx.**

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{
    llama, quantized_llama, quantized_qwen2, quantized_qwen3, qwen2, qwen3,
};
use still_engine::generate::{Sampling, pick};
use still_engine::rng::Rng;
use tokenizers::Tokenizer;

pub mod tiny;

/// The architectures a teacher may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Qwen2, Arch::Qwen3, Arch::Llama];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }

    /// From a `config.json`'s `model_type` or a GGUF's `general.architecture` (Mistral's GGUF
    /// files say `llama`).
    pub fn parse(name: &str) -> anyhow::Result<Arch> {
        match name {
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "llama" | "mistral" => Ok(Arch::Llama),
            other => bail!(
                "architecture '{other}' is not one Still can run as a teacher (qwen2, qwen3, llama)"
            ),
        }
    }
}

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Gguf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
        }
    }
}

/// What a teacher folder holds, read from headers only (no weights).
#[derive(Debug, Clone)]
pub struct Inspected {
    pub arch: Arch,
    pub format: Format,
    pub n_params: u64,
    pub vocab_size: usize,
    /// The longest sequence the model was made for (prompt and completion together).
    pub context: usize,
    /// `config.json`, or the GGUF's scalar metadata.
    pub config: serde_json::Value,
}

impl Inspected {
    /// Whether the engine's own Qwen2 runs (and trains) it instead.
    pub fn engine_native(&self) -> bool {
        self.arch == Arch::Qwen2 && self.format == Format::Safetensors
    }
}

/// The one `*.gguf` file of a folder, if it has one; two are refused (which one is meant?).
pub fn gguf_file(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => bail!(
            "{}: {} .gguf files ({}); keep one quantization per model folder",
            dir.display(),
            found.len(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether the engine's own Qwen2 runs (and trains) the folder: no `*.gguf`, and a
/// `config.json` whose `model_type` is `qwen2` (or absent, for the engine to judge). Reads the
/// config only.
pub fn engine_native(dir: &Path) -> anyhow::Result<bool> {
    if !dir.is_dir() {
        return Ok(true);
    }
    if gguf_file(dir)?.is_some() {
        return Ok(false);
    }
    let model_type = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_string));
    Ok(model_type.is_none_or(|t| t == "qwen2"))
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn load_tokenizer(dir: &Path) -> anyhow::Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "{}: no tokenizer.json (a GGUF teacher needs its model's tokenizer.json beside it)",
            dir.display()
        );
    }
    Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_gguf(path: &Path) -> anyhow::Result<(gguf_file::Content, BufReader<File>)> {
    let mut reader =
        BufReader::new(File::open(path).with_context(|| format!("reading {}", path.display()))?);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| anyhow::anyhow!("{}: not a GGUF file: {e}", path.display()))?;
    Ok((content, reader))
}

fn gguf_u32(content: &gguf_file::Content, key: &str, path: &Path) -> anyhow::Result<usize> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .with_context(|| format!("{}: no '{key}' in the GGUF metadata", path.display()))
}

/// Checks a teacher folder from its headers: architecture, format, parameters, vocabulary,
/// context, and a tokenizer that fits the embeddings.
pub fn inspect(dir: &Path) -> anyhow::Result<Inspected> {
    if !dir.is_dir() {
        bail!(
            "{}: not a folder. Hub ids cannot be downloaded here; put the model folder \
             (config.json and *.safetensors, or one *.gguf, with tokenizer.json) on disk",
            dir.display()
        );
    }
    let inspected = match gguf_file(dir)? {
        Some(path) => {
            let (content, _) = read_gguf(&path)?;
            let arch_name = content
                .metadata
                .get("general.architecture")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .with_context(|| {
                    format!("{}: no 'general.architecture' in the GGUF", path.display())
                })?;
            let arch = Arch::parse(&arch_name).with_context(|| path.display().to_string())?;
            let embed = content
                .tensor_infos
                .get("token_embd.weight")
                .with_context(|| format!("{}: no token_embd.weight tensor", path.display()))?;
            let vocab_size = *embed.shape.dims().first().unwrap_or(&0);
            let n_params = content
                .tensor_infos
                .values()
                .map(|t| t.shape.elem_count() as u64)
                .sum();
            let context =
                gguf_u32(&content, &format!("{arch_name}.context_length"), &path).unwrap_or(4096);
            let mut config = serde_json::Map::new();
            for (key, value) in &content.metadata {
                let v = match value {
                    gguf_file::Value::String(s) => serde_json::json!(s),
                    gguf_file::Value::F32(f) => serde_json::json!(f),
                    gguf_file::Value::Bool(b) => serde_json::json!(b),
                    other => match other.to_u64() {
                        Ok(n) => serde_json::json!(n),
                        Err(_) => continue,
                    },
                };
                config.insert(key.clone(), v);
            }
            Inspected {
                arch,
                format: Format::Gguf,
                n_params,
                vocab_size,
                context,
                config: serde_json::Value::Object(config),
            }
        }
        None => {
            let config_path = dir.join("config.json");
            let config = read_json(&config_path)?;
            let model_type = config
                .get("model_type")
                .and_then(|v| v.as_str())
                .with_context(|| format!("{}: no 'model_type'", config_path.display()))?;
            let arch =
                Arch::parse(model_type).with_context(|| config_path.display().to_string())?;
            let vocab_size = config
                .get("vocab_size")
                .and_then(|v| v.as_u64())
                .with_context(|| format!("{}: no 'vocab_size'", config_path.display()))?
                as usize;
            let context = config
                .get("max_position_embeddings")
                .and_then(|v| v.as_u64())
                .unwrap_or(4096) as usize;
            let mut n_params = 0u64;
            for file in still_engine::hf::weight_files(dir)? {
                for (_, shape) in still_engine::hf::safetensors_shapes(&file)? {
                    n_params += shape.iter().product::<usize>() as u64;
                }
            }
            // Checks the fields the architecture needs before any weight is read.
            match arch {
                Arch::Qwen2 => parse_config::<qwen2::Config>(&config, &config_path).map(|_| ())?,
                Arch::Qwen3 => parse_config::<qwen3::Config>(&config, &config_path).map(|_| ())?,
                Arch::Llama => {
                    parse_config::<llama::LlamaConfig>(&config, &config_path).map(|_| ())?
                }
            }
            Inspected {
                arch,
                format: Format::Safetensors,
                n_params,
                vocab_size,
                context,
                config,
            }
        }
    };
    let tokenizer = load_tokenizer(dir)?;
    if tokenizer.get_vocab_size(true) > inspected.vocab_size {
        bail!(
            "{}: the tokenizer has {} tokens but the model only {} embeddings",
            dir.display(),
            tokenizer.get_vocab_size(true),
            inspected.vocab_size
        );
    }
    Ok(inspected)
}

fn parse_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
    path: &Path,
) -> anyhow::Result<T> {
    serde_json::from_value(config.clone()).with_context(|| format!("{}", path.display()))
}

/// The model, whichever it is.
enum Model {
    Qwen2(qwen2::ModelForCausalLM),
    Qwen3(qwen3::ModelForCausalLM),
    Llama {
        model: Box<llama::Llama>,
        fresh: llama::Cache,
        cache: llama::Cache,
    },
    QQwen2(quantized_qwen2::ModelWeights),
    QQwen3(quantized_qwen3::ModelWeights),
    QLlama(quantized_llama::ModelWeights),
}

impl Model {
    fn reset(&mut self) {
        match self {
            Model::Qwen2(m) => m.clear_kv_cache(),
            Model::Qwen3(m) => m.clear_kv_cache(),
            Model::Llama { fresh, cache, .. } => *cache = fresh.clone(),
            Model::QQwen2(m) => m.clear_kv_cache(),
            Model::QQwen3(m) => m.clear_kv_cache(),
            Model::QLlama(m) => m.clear_kv_cache(),
        }
    }

    /// The next token's logits after `ids`, which follow `offset` tokens already cached.
    fn forward(&mut self, ids: &[u32], offset: usize, device: &Device) -> anyhow::Result<Vec<f32>> {
        let input = Tensor::new(ids, device)?.unsqueeze(0)?;
        let logits = match self {
            Model::Qwen2(m) => m.forward(&input, offset)?,
            Model::Qwen3(m) => m.forward(&input, offset)?,
            Model::Llama { model, cache, .. } => model.forward(&input, offset, cache)?,
            Model::QQwen2(m) => m.forward(&input, offset)?,
            Model::QQwen3(m) => m.forward(&input, offset)?,
            Model::QLlama(m) => m.forward(&input, offset)?,
        };
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    }
}

/// How a conversation is written for the model, told by its tokenizer's special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chat {
    /// `<|im_start|>role\n…<|im_end|>` (Qwen).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>` (Llama 3).
    Llama3,
}

impl Chat {
    fn of(tokenizer: &Tokenizer) -> anyhow::Result<Chat> {
        if tokenizer.token_to_id("<|im_start|>").is_some() {
            Ok(Chat::ChatMl)
        } else if tokenizer.token_to_id("<|start_header_id|>").is_some() {
            Ok(Chat::Llama3)
        } else {
            bail!(
                "the tokenizer has neither <|im_start|> (ChatML) nor <|start_header_id|> (Llama 3): \
                 no chat format is known for it"
            )
        }
    }

    /// The prompt up to where the assistant starts speaking.
    pub fn prompt(self, system: Option<&str>, user: &str, begin: Option<&str>) -> String {
        let mut out = String::new();
        match self {
            Chat::ChatMl => {
                if let Some(s) = system {
                    out.push_str(&format!("<|im_start|>system\n{s}<|im_end|>\n"));
                }
                out.push_str(&format!(
                    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
                ));
            }
            Chat::Llama3 => {
                out.push_str(begin.unwrap_or(""));
                if let Some(s) = system {
                    out.push_str(&format!(
                        "<|start_header_id|>system<|end_header_id|>\n\n{s}<|eot_id|>"
                    ));
                }
                out.push_str(&format!(
                    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>\
                     <|start_header_id|>assistant<|end_header_id|>\n\n"
                ));
            }
        }
        out
    }
}

/// One answer's limits and sampling.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Tokens written at most, thinking and answer together (forced tokens included).
    pub max_tokens: usize,
    /// With a budget, the prompt opens `<think>` and `</think>` is forced once the thinking
    /// reaches it (s1's budget forcing); without, the model writes what it writes.
    pub max_thinking_tokens: Option<usize>,
    pub sampling: Sampling,
}

/// What the teacher wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The completion as text, `<think>…</think>` included when the model thought (the opening
    /// tag too when the prompt opened it).
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `stop` (an end token), `length` (`max_tokens` or the context), or `thinking_cut` (the
    /// thinking reached its budget and was closed, as the engine's registry teachers say).
    pub finish: &'static str,
}

/// A question whose prompt leaves no room in the model's context: that question's error, not
/// the teacher's (`Teacher::write`'s error downcasts to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptTooLong {
    pub tokens: usize,
    pub context: usize,
}

impl std::fmt::Display for PromptTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the prompt has {} tokens; the model's context is {}",
            self.tokens, self.context
        )
    }
}

impl std::error::Error for PromptTooLong {}

/// The text s1's budget forcing appends when the thinking is cut.
const CLOSE_THINKING: &str = "\n</think>\n\n";
const OPEN_THINKING: &str = "<think>\n";

/// A loaded teacher.
pub struct Teacher {
    model: Model,
    tokenizer: Tokenizer,
    device: Device,
    chat: Chat,
    stops: Vec<u32>,
    begin: Option<String>,
    close_ids: Vec<u32>,
    pub inspected: Inspected,
}

fn eos_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl Teacher {
    /// Loads a teacher folder on `device` (F32 on a CPU, BF16 on a GPU for safetensors).
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Teacher> {
        let inspected = inspect(dir)?;
        let tokenizer = load_tokenizer(dir)?;
        let model = match inspected.format {
            Format::Gguf => {
                let path = gguf_file(dir)?.context("the .gguf file went away")?;
                let (content, mut reader) = read_gguf(&path)?;
                let context = || format!("loading {}", path.display());
                match inspected.arch {
                    Arch::Qwen2 => Model::QQwen2(
                        quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                            .with_context(context)?,
                    ),
                    Arch::Qwen3 => Model::QQwen3(
                        quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, device)
                            .with_context(context)?,
                    ),
                    Arch::Llama => Model::QLlama(
                        quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                            .with_context(context)?,
                    ),
                }
            }
            Format::Safetensors => {
                let dtype = if device.is_cpu() {
                    DType::F32
                } else {
                    DType::BF16
                };
                let mut tensors: HashMap<String, Tensor> = HashMap::new();
                for file in still_engine::hf::weight_files(dir)? {
                    let loaded = candle_core::safetensors::load(&file, device)
                        .with_context(|| format!("reading {}", file.display()))?;
                    tensors.extend(loaded);
                }
                let vb = VarBuilder::from_tensors(tensors, dtype, device);
                let path = dir.join("config.json");
                let config = &inspected.config;
                let context = || format!("loading {}", dir.display());
                match inspected.arch {
                    Arch::Qwen2 => Model::Qwen2(
                        qwen2::ModelForCausalLM::new(&parse_config(config, &path)?, vb)
                            .with_context(context)?,
                    ),
                    Arch::Qwen3 => Model::Qwen3(
                        qwen3::ModelForCausalLM::new(&parse_config(config, &path)?, vb)
                            .with_context(context)?,
                    ),
                    Arch::Llama => {
                        let config =
                            parse_config::<llama::LlamaConfig>(config, &path)?.into_config(false);
                        let model = llama::Llama::load(vb, &config).with_context(context)?;
                        let fresh = llama::Cache::new(true, dtype, &config, device)?;
                        Model::Llama {
                            model: Box::new(model),
                            cache: fresh.clone(),
                            fresh,
                        }
                    }
                }
            }
        };
        let chat = Chat::of(&tokenizer)?;
        let mut stops: Vec<u32> = [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "</s>",
        ]
        .iter()
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
        stops.extend(eos_ids(inspected.config.get("eos_token_id")));
        let generation_config = dir.join("generation_config.json");
        if generation_config.is_file() {
            stops.extend(eos_ids(read_json(&generation_config)?.get("eos_token_id")));
        }
        if let Some(id) = inspected
            .config
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
        {
            stops.push(id as u32);
        }
        stops.sort_unstable();
        stops.dedup();
        let encode = |t: &str| still_engine::tokenizer::encode(&tokenizer, t);
        let close_ids = encode(CLOSE_THINKING)?;
        let begin = tokenizer
            .token_to_id("<|begin_of_text|>")
            .map(|_| "<|begin_of_text|>".to_string());
        Ok(Teacher {
            model,
            tokenizer,
            device: device.clone(),
            chat,
            stops,
            begin,
            close_ids,
            inspected,
        })
    }

    pub fn chat(&self) -> Chat {
        self.chat
    }

    /// The prompt a question is asked with (the thinking opened when a budget is set).
    pub fn prompt(&self, system: Option<&str>, user: &str, options: &Options) -> String {
        let mut prompt = self.chat.prompt(system, user, self.begin.as_deref());
        if options.max_thinking_tokens.is_some() {
            prompt.push_str(OPEN_THINKING);
        }
        prompt
    }

    /// Answers one question: prefill, then a token at a time until an end token, the limit or
    /// the context; the thinking is closed at its budget.
    pub fn write(
        &mut self,
        system: Option<&str>,
        user: &str,
        options: &Options,
    ) -> anyhow::Result<Written> {
        options
            .sampling
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let prompt = self.prompt(system, user, options);
        let prompt_ids = still_engine::tokenizer::encode(&self.tokenizer, &prompt)?;
        let context = self.inspected.context;
        if prompt_ids.len() >= context {
            return Err(PromptTooLong {
                tokens: prompt_ids.len(),
                context,
            }
            .into());
        }
        let limit = options.max_tokens.min(context - prompt_ids.len());
        self.model.reset();
        let mut rng = Rng::new(options.sampling.seed);
        let mut logits = self.model.forward(&prompt_ids, 0, &self.device)?;
        let mut offset = prompt_ids.len();
        let mut out: Vec<u32> = Vec::new();
        // Where the thinking began in `out` (None: not thinking), and whether it has ended.
        let mut thinking_from: Option<usize> = options.max_thinking_tokens.map(|_| 0);
        let mut finish = "length";
        let mut cut = false;
        while out.len() < limit {
            let token = pick(&logits, &options.sampling, &mut rng);
            if self.stops.contains(&token) {
                finish = "stop";
                break;
            }
            out.push(token);
            let mut feed = vec![token];
            if let (Some(from), Some(budget)) = (thinking_from, options.max_thinking_tokens) {
                if out.ends_with(&self.close_ids) || self.ends_with_text(&out, "</think>") {
                    thinking_from = None;
                } else if out.len() - from >= budget {
                    // s1: end the thinking here and let the model answer.
                    let room = limit - out.len();
                    let close: Vec<u32> = self.close_ids.iter().copied().take(room).collect();
                    out.extend(&close);
                    feed.extend(close);
                    thinking_from = None;
                    cut = true;
                }
            }
            if out.len() >= limit {
                break;
            }
            logits = self.model.forward(&feed, offset, &self.device)?;
            offset += feed.len();
        }
        let mut text = still_engine::tokenizer::decode(&self.tokenizer, &out, false)?;
        if options.max_thinking_tokens.is_some() {
            text.insert_str(0, OPEN_THINKING);
        }
        Ok(Written {
            text,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: out.len(),
            finish: if cut { "thinking_cut" } else { finish },
        })
    }

    /// Whether the last few tokens decode to text ending in `tail` (a tag the model wrote in
    /// another tokenization than the canonical one).
    fn ends_with_text(&self, out: &[u32], tail: &str) -> bool {
        let from = out.len().saturating_sub(4);
        still_engine::tokenizer::decode(&self.tokenizer, &out[from..], false)
            .map(|t| t.trim_end().ends_with(tail))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests;
