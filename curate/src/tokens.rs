//! Trace lengths in tokens: the built-in Qwen2.5 tokenizer (the one s1's models use, carried in
//! `tests/data/tokenizers/qwen2.5/`) or a model's `tokenizer.json`.

use tokenizers::Tokenizer;

/// The Qwen2.5 tokenizer, built into the binary.
const QWEN25: &[u8] = include_bytes!("../../tests/data/tokenizers/qwen2.5/tokenizer.json");

/// The name of the built-in tokenizer.
pub const BUILT_IN: &str = "qwen2.5";

/// Counts tokens.
pub struct Counter {
    tokenizer: Tokenizer,
}

impl Counter {
    pub fn qwen25() -> Result<Self, String> {
        Self::from_bytes(QWEN25)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let tokenizer =
            Tokenizer::from_bytes(bytes).map_err(|e| format!("tokenizer.json unreadable: {e}"))?;
        Ok(Self { tokenizer })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| format!("{} unreadable: {e}", path.display()))?;
        Ok(Self { tokenizer })
    }

    /// Tokens in each text, encoded in parallel.
    pub fn count_batch(&self, texts: &[&str]) -> Result<Vec<u32>, String> {
        let inputs: Vec<tokenizers::EncodeInput> = texts.iter().map(|t| (*t).into()).collect();
        self.tokenizer
            .encode_batch_fast(inputs, false)
            .map(|all| all.iter().map(|e| e.len() as u32).collect())
            .map_err(|e| format!("tokenizing: {e}"))
    }
}
