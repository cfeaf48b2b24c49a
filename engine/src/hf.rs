//! Hugging Face model folders: `config.json`, `model.safetensors` (or shards behind
//! `model.safetensors.index.json`), `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`. Reading, writing and creating from scratch.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use crate::config::Qwen2Config;
use crate::model::Qwen2;
use crate::tokenizer::{self, SpecialTokens};
use crate::{EngineError, Result};

/// A loaded model folder: the model, its tokenizer and special tokens.
pub struct ModelFolder {
    pub model: Qwen2,
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    pub path: PathBuf,
}

/// The safetensors files of a folder: the index's shards, or `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Model(format!("{}: {e}", index.display())))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EngineError::Model(format!("{}: no weight_map", index.display())))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(EngineError::Model(format!(
        "{}: no model.safetensors or model.safetensors.index.json (is this a Hugging Face model folder?)",
        dir.display()
    )))
}

/// Loads a model folder on `device` in `dtype`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<ModelFolder> {
    if !dir.is_dir() {
        return Err(EngineError::Model(format!(
            "{}: not a folder. Hub ids cannot be downloaded here; put the Hugging Face model folder \
             (config.json, *.safetensors, tokenizer.json) on disk and pass its path",
            dir.display()
        )));
    }
    let config = Qwen2Config::load(&dir.join("config.json"))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
    let special = SpecialTokens::find(&tokenizer)?;
    if tokenizer.get_vocab_size(true) > config.vocab_size {
        return Err(EngineError::Model(format!(
            "{}: the tokenizer has {} tokens but the model only {} embeddings",
            dir.display(),
            tokenizer.get_vocab_size(true),
            config.vocab_size
        )));
    }
    let model = Qwen2::new(config, dtype, device)?;
    model.load_weights(&weight_files(dir)?)?;
    Ok(ModelFolder {
        model,
        tokenizer,
        special,
        path: dir.to_path_buf(),
    })
}

/// Writes a folder that transformers' `Qwen2ForCausalLM.from_pretrained` and
/// `AutoTokenizer.from_pretrained` read.
pub fn save(
    dir: &Path,
    model: &Qwen2,
    tokenizer: &Tokenizer,
    special: &SpecialTokens,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut config = model.config.clone();
    config.eos_token_id = Some(serde_json::json!(special.im_end));
    config.bos_token_id = None;
    write_json(&dir.join("config.json"), &config.to_hf_json())?;
    model.save_weights(&dir.join("model.safetensors"))?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| EngineError::Tokenizer(format!("saving tokenizer: {e}")))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer::hf_tokenizer_config(tokenizer, special),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &serde_json::json!({
            "eos_token_id": [special.im_end, special.end_of_text],
            "pad_token_id": special.end_of_text,
            "do_sample": false,
        }),
    )?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("json serialises");
    std::fs::write(path, text + "\n")?;
    Ok(())
}

/// A new model from a size preset and a tokenizer trained on `texts`, saved as an HF folder.
pub fn create(
    dir: &Path,
    preset: &str,
    texts: &[String],
    vocab_size: usize,
    seed: u64,
) -> Result<ModelFolder> {
    let tokenizer = tokenizer::train_bpe(texts, vocab_size)?;
    let special = SpecialTokens::find(&tokenizer)?;
    let config = Qwen2Config::preset(preset, tokenizer.get_vocab_size(true))?;
    let model = Qwen2::new(config, DType::F32, &Device::Cpu)?;
    model.init_weights(seed)?;
    save(dir, &model, &tokenizer, &special)?;
    Ok(ModelFolder {
        model,
        tokenizer,
        special,
        path: dir.to_path_buf(),
    })
}
