//! The Qwen2 model configuration (`config.json`), parsed leniently, and size presets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

fn default_max_positions() -> usize {
    32768
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// The fields of a Hugging Face Qwen2 `config.json` that the architecture needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// An id or a list of ids.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// transformers 5 writes `null` here; candle's own config rejects that, this one does not.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Qwen2Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape rules the model relies on.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(EngineError::Config(m));
        // Bounds well above any released Qwen2 (72B: hidden 8192, 80 layers, MLP 29568, vocab
        // 152064), so that sizes computed from a config never overflow.
        for (field, value, max) in [
            ("vocab_size", self.vocab_size, 1 << 23),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.num_key_value_heads, 1 << 10),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ] {
            if value == 0 || value > max {
                return fail(format!("{field} {value} must be 1..={max}"));
            }
        }
        if self.hidden_act != "silu" {
            return fail(format!(
                "hidden_act '{}' is not supported (Qwen2 uses silu)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "head dimension {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if self.use_sliding_window {
            return fail("use_sliding_window is not supported".into());
        }
        Ok(())
    }

    /// Reads `config.json`, refusing other architectures with a clear message.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: not JSON: {e}", path.display())))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let architectures: Vec<&str> = value
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if model_type != "qwen2" && !architectures.contains(&"Qwen2ForCausalLM") {
            return Err(EngineError::Config(format!(
                "{}: model_type '{model_type}' (architectures {architectures:?}) is not supported; \
                 Still trains the Qwen2/Qwen2.5 architecture",
                path.display()
            )));
        }
        let config: Self = serde_json::from_value(value)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        config
            .validate()
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The `config.json` that transformers' `Qwen2ForCausalLM.from_pretrained` reads.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("config serialises");
        let object = value.as_object_mut().expect("an object");
        object.insert(
            "architectures".into(),
            serde_json::json!(["Qwen2ForCausalLM"]),
        );
        object.insert("model_type".into(), "qwen2".into());
        object.insert("torch_dtype".into(), "float32".into());
        object.insert("attention_dropout".into(), 0.0.into());
        object.insert("initializer_range".into(), 0.02.into());
        object.insert("use_cache".into(), true.into());
        object.insert("max_window_layers".into(), self.num_hidden_layers.into());
        value
    }

    /// A named size for models made from scratch. `vocab_size` comes from the tokenizer.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let (hidden, layers, heads, kv_heads, intermediate) = match name {
            // Fast enough to train on a laptop CPU in a minute or two.
            "tiny" => (128, 4, 4, 2, 384),
            // The engine benchmark's config (hidden 256, 4 layers).
            "mini" => (256, 4, 4, 2, 768),
            "small" => (512, 8, 8, 2, 1536),
            other => {
                return Err(EngineError::Config(format!(
                    "unknown preset '{other}' (tiny, mini, small)"
                )));
            }
        };
        Ok(Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            max_position_embeddings: 4096,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            hidden_act: "silu".into(),
            bos_token_id: None,
            eos_token_id: None,
            sliding_window: None,
            use_sliding_window: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_sliding_window_and_other_architectures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,
               "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"sliding_window":null}"#,
        )
        .unwrap();
        let config = Qwen2Config::load(&path).unwrap();
        assert_eq!(config.sliding_window, None);
        assert_eq!(config.head_dim(), 4);
        std::fs::write(
            &path,
            r#"{"model_type":"llama","architectures":["LlamaForCausalLM"]}"#,
        )
        .unwrap();
        let err = Qwen2Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("model_type 'llama'") && err.contains("Qwen2"),
            "{err}"
        );
    }
}
