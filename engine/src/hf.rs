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

/// A folder's config, tokenizer and special tokens, checked against each other (what loading
/// and inspecting share).
fn open_folder(dir: &Path) -> Result<(Qwen2Config, Tokenizer, SpecialTokens)> {
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
    Ok((config, tokenizer, special))
}

/// Loads a model folder on `device` in `dtype`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<ModelFolder> {
    let (config, tokenizer, special) = open_folder(dir)?;
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

/// What registering a model folder needs to know, read without loading any weight.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub config: Qwen2Config,
    pub n_params: u64,
    /// The tensors found in the weight files, by name.
    pub n_tensors: usize,
}

/// Largest safetensors header read (a header lists names, dtypes, shapes and offsets only).
pub const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// Every tensor a Qwen2 model of `config` has, with its shape, in HF names.
pub fn tensor_shapes(config: &Qwen2Config) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim(),
    );
    let (nh, nkv, v) = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.vocab_size,
    );
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, h]),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    for n in 0..config.num_hidden_layers {
        let p = format!("model.layers.{n}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![nh * hd, h]),
            ("self_attn.q_proj.bias", vec![nh * hd]),
            ("self_attn.k_proj.weight", vec![nkv * hd, h]),
            ("self_attn.k_proj.bias", vec![nkv * hd]),
            ("self_attn.v_proj.weight", vec![nkv * hd, h]),
            ("self_attn.v_proj.bias", vec![nkv * hd]),
            ("self_attn.o_proj.weight", vec![h, nh * hd]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out
}

/// The tensor names and shapes a safetensors file holds, from its header alone (the data is
/// never read); the header's offsets are checked against the file's size.
pub fn safetensors_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    use std::io::Read;
    let bad = |m: String| EngineError::Model(format!("{}: {m}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let size = file.metadata()?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_SAFETENSORS_HEADER || n + 8 > size {
        return Err(bad(format!(
            "safetensors header of {n} bytes (file {size} bytes, at most {MAX_SAFETENSORS_HEADER}): not a safetensors file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let map = value
        .as_object()
        .ok_or_else(|| bad("header is not an object".into()))?;
    let data_len = size - 8 - n;
    let mut out = Vec::new();
    for (name, entry) in map {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| bad(format!("tensor '{name}' has no shape")))?;
        let offsets: [u64; 2] = entry
            .get("data_offsets")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| bad(format!("tensor '{name}' has no data_offsets")))?;
        if offsets[0] > offsets[1] || offsets[1] > data_len {
            return Err(bad(format!(
                "tensor '{name}' lies at bytes {}..{} past the file's {data_len} data bytes (truncated?)",
                offsets[0], offsets[1]
            )));
        }
        out.push((name.clone(), shape));
    }
    Ok(out)
}

/// Checks a model folder the way [`load`] would — config, tokenizer, every tensor's name and
/// shape — but reads only the safetensors headers, so a 7B model costs kilobytes, not 28 GB.
pub fn inspect(dir: &Path) -> Result<Inspected> {
    let (config, _, _) = open_folder(dir)?;
    let files = weight_files(dir)?;
    let mut found: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for file in &files {
        found.extend(safetensors_shapes(file)?);
    }
    let n_tensors = found.len();
    let mut n_params = 0u64;
    for (name, shape) in tensor_shapes(&config) {
        let got = found.remove(&name).ok_or_else(|| {
            EngineError::Model(format!("weights lack tensor '{name}' (files: {files:?})"))
        })?;
        if got != shape {
            return Err(EngineError::Model(format!(
                "tensor '{name}' has shape {got:?}, the config needs {shape:?}"
            )));
        }
        n_params += shape.iter().product::<usize>() as u64;
    }
    found.remove("lm_head.weight");
    if let Some(extra) = found.keys().next() {
        return Err(EngineError::Model(format!(
            "weights have a tensor the model does not: '{extra}'"
        )));
    }
    Ok(Inspected {
        config,
        n_params,
        n_tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_agrees_with_load_and_reads_no_weights() {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<String> = (0..50).map(|i| format!("{i} + {i} = {}", 2 * i)).collect();
        create(dir.path(), "tiny", &texts, 120, 0).unwrap();
        let inspected = inspect(dir.path()).unwrap();
        let loaded = load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(inspected.n_params, loaded.model.n_params() as u64);
        assert_eq!(inspected.config, loaded.model.config);
        assert_eq!(inspected.n_tensors, loaded.model.named_vars().len());
        // A weight file cut short is refused by its header's offsets.
        let weights = dir.path().join("model.safetensors");
        let len = std::fs::metadata(&weights).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&weights)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let err = inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
