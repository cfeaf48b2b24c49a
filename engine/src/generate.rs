//! Text generation with the KV cache: greedy by default, temperature sampling when asked.

use candle_core::{DType, Tensor};

use crate::Result;
use crate::data::ChatTemplate;
use crate::hf::ModelFolder;
use crate::rng::Rng;
use crate::tokenizer;

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

/// A completion and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub ids: Vec<u32>,
    /// True when an end token stopped it (false: the token budget ran out).
    pub stopped: bool,
}

/// Continues `prompt` (raw text; special tokens in it count) until `<|im_end|>`,
/// `<|endoftext|>` or the budget.
pub fn complete(
    folder: &ModelFolder,
    prompt: &str,
    options: GenerateOptions,
) -> Result<Completion> {
    let prompt_ids = tokenizer::encode(&folder.tokenizer, prompt)?;
    let model = &folder.model;
    let mut cache = model.new_cache(prompt_ids.len() + options.max_new_tokens + 1);
    let mut rng = Rng::new(options.seed);
    let mut out: Vec<u32> = Vec::new();
    let mut input = prompt_ids;
    let stops = [folder.special.im_end, folder.special.end_of_text];
    let mut stopped = false;
    for _ in 0..options.max_new_tokens {
        let ids = Tensor::new(input.as_slice(), &model.device)?.unsqueeze(0)?;
        let logits = model
            .forward_cached(&ids, &mut cache)?
            .to_dtype(DType::F32)?;
        let next = pick(&logits, options.temperature, &mut rng)?;
        if stops.contains(&next) {
            stopped = true;
            break;
        }
        out.push(next);
        input = vec![next];
    }
    let text = tokenizer::decode(&folder.tokenizer, &out, false)?;
    Ok(Completion {
        text,
        ids: out,
        stopped,
    })
}

/// Asks a question through the chat template: the completion is what the assistant says.
pub fn chat(
    folder: &ModelFolder,
    template: &ChatTemplate,
    question: &str,
    options: GenerateOptions,
) -> Result<Completion> {
    complete(folder, &template.prompt(question), options)
}

fn pick(logits: &Tensor, temperature: f64, rng: &mut Rng) -> Result<u32> {
    let values = logits.to_vec1::<f32>()?;
    if temperature <= 0.0 {
        let (best, _) =
            values
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                    if v > acc.1 { (i, v) } else { acc }
                });
        return Ok(best as u32);
    }
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = values
        .iter()
        .map(|&v| (((v - max) as f64) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return Ok(i as u32);
        }
    }
    Ok((weights.len() - 1) as u32)
}
