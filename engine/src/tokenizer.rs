//! Tokenizers: loading `tokenizer.json`, training a byte-level BPE on a dataset, and the chat
//! special tokens Still's templates use.

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, TokenizerImpl};

use crate::{EngineError, Result};

pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// Ids of the special tokens the chat template needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub end_of_text: u32,
    pub im_start: u32,
    pub im_end: u32,
}

impl SpecialTokens {
    pub fn find(tokenizer: &Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                EngineError::Tokenizer(format!(
                    "the tokenizer has no '{t}' token (Still's chat template needs it)"
                ))
            })
        };
        Ok(Self {
            end_of_text: id(END_OF_TEXT)?,
            im_start: id(IM_START)?,
            im_end: id(IM_END)?,
        })
    }
}

/// Trains a byte-level BPE (digits split one by one, as Qwen's tokenizer does) with the chat
/// special tokens first.
pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let specials: Vec<AddedToken> = [END_OF_TEXT, IM_START, IM_END]
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let pre: PreTokenizerWrapper = Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])
    .into();
    let mut tokenizer: TokenizerImpl<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(pre))
        .with_post_processor(Some(ByteLevel::new(false, true, true).into()))
        .with_decoder(Some(ByteLevel::default().into()))
        .build()
        .map_err(|e| EngineError::Tokenizer(format!("building the tokenizer: {e}")))?;
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| EngineError::Tokenizer(format!("training the tokenizer: {e}")))?;
    let json = tokenizer
        .to_string(false)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let tokenizer: Tokenizer = json
        .parse()
        .map_err(|e| EngineError::Tokenizer(format!("{e}")))?;
    Ok(tokenizer)
}

/// `tokenizer_config.json` for transformers' `AutoTokenizer` (a fast tokenizer with ChatML-style
/// special tokens).
pub fn hf_tokenizer_config(tokenizer: &Tokenizer, special: &SpecialTokens) -> serde_json::Value {
    let added: serde_json::Map<String, serde_json::Value> =
        [special.end_of_text, special.im_start, special.im_end]
            .iter()
            .map(|&id| {
                let content = tokenizer.id_to_token(id).unwrap_or_default();
                (
                    id.to_string(),
                    serde_json::json!({"content": content, "lstrip": false, "normalized": false,
                    "rstrip": false, "single_word": false, "special": true}),
                )
            })
            .collect();
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": null,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": null,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": false,
    })
}

/// Encodes text without adding special tokens (special tokens written in the text still count).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, false)
        .map_err(|e| EngineError::Tokenizer(format!("encoding: {e}")))?
        .get_ids()
        .to_vec())
}

pub fn decode(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<String> {
    tokenizer
        .decode(ids, skip_special)
        .map_err(|e| EngineError::Tokenizer(format!("decoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_round_trips_and_splits_digits() {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("What is {i} + {}? The sum is {}.", i * 7, i * 8))
            .collect();
        let tok = train_bpe(&texts, 300).unwrap();
        let special = SpecialTokens::find(&tok).unwrap();
        assert_eq!(
            (special.end_of_text, special.im_start, special.im_end),
            (0, 1, 2)
        );
        let text = "<|im_start|>user\nWhat is 123 + 45?<|im_end|>";
        let ids = encode(&tok, text).unwrap();
        assert_eq!(ids[0], special.im_start);
        assert_eq!(*ids.last().unwrap(), special.im_end);
        assert_eq!(decode(&tok, &ids, false).unwrap(), text);
        let digits = encode(&tok, "123").unwrap();
        assert_eq!(digits.len(), 3, "digits are single tokens");
    }

    #[test]
    fn real_qwen_tokenizer_has_the_chat_tokens() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/tokenizers/qwen2.5/tokenizer.json");
        let tok = Tokenizer::from_file(&path).unwrap();
        let special = SpecialTokens::find(&tok).unwrap();
        assert_eq!(
            (special.end_of_text, special.im_start, special.im_end),
            (151643, 151644, 151645)
        );
        assert_eq!(
            encode(&tok, "Hello <|im_start|>").unwrap(),
            vec![9707, 220, 151644]
        );
    }
}
