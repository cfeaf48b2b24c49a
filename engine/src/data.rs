//! Training data: canonical rows → chat-formatted token ids with a loss mask, length-grouped
//! batches in a seeded order.

use std::path::Path;

use still_api::ExampleFields;
use tokenizers::Tokenizer;

use crate::rng::Rng;
use crate::tokenizer::{self, IM_END, IM_START};
use crate::{EngineError, Result};

/// s1's layout: the assistant turn is `<|im_start|>think\n{thinking}\n<|im_start|>answer\n{answer}<|im_end|>`.
/// Every delimiter is configurable.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplate {
    /// A system turn before the question; `None` for none.
    pub system: Option<String>,
    pub think_start: String,
    pub answer_start: String,
    pub end: String,
    /// Train on the reference `solution` as the thinking when a row has no trace.
    pub solution_as_thinking: bool,
}

impl Default for ChatTemplate {
    fn default() -> Self {
        Self {
            system: None,
            think_start: format!("{IM_START}think\n"),
            answer_start: format!("\n{IM_START}answer\n"),
            end: IM_END.to_string(),
            solution_as_thinking: true,
        }
    }
}

impl ChatTemplate {
    /// The prompt up to where the assistant starts speaking.
    pub fn prompt(&self, question: &str) -> String {
        let mut out = String::new();
        if let Some(system) = &self.system {
            out.push_str(&format!("{IM_START}system\n{system}{IM_END}\n"));
        }
        out.push_str(&format!(
            "{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
        ));
        out
    }

    /// A conversation's prompt up to where the assistant starts speaking: the template's system
    /// turn unless the conversation has its own, then every `(role, content)` turn.
    pub fn chat_prompt(&self, turns: &[(&str, &str)]) -> String {
        let mut out = String::new();
        if let Some(system) = &self.system
            && !turns.iter().any(|(role, _)| *role == "system")
        {
            out.push_str(&format!("{IM_START}system\n{system}{IM_END}\n"));
        }
        for (role, content) in turns {
            out.push_str(&format!("{IM_START}{role}\n{content}{IM_END}\n"));
        }
        out.push_str(&format!("{IM_START}assistant\n"));
        out
    }

    /// What the assistant says: thinking (when there is any), then the answer.
    pub fn response(&self, example: &ExampleFields) -> String {
        let thinking = if example.thinking.trim().is_empty() && self.solution_as_thinking {
            example.solution.as_deref().unwrap_or("")
        } else {
            &example.thinking
        };
        let mut out = String::new();
        if !thinking.trim().is_empty() {
            out.push_str(&self.think_start);
            out.push_str(thinking);
            out.push_str(&self.answer_start);
        } else {
            out.push_str(self.answer_start.trim_start_matches('\n'));
        }
        out.push_str(&example.answer);
        out.push_str(&self.end);
        out
    }
}

/// One tokenised example: `ids`, and `train[i]` true when token `i` is a target of the loss
/// (the assistant's thinking and answer, never the prompt or padding).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub train: Vec<bool>,
}

/// What happens to examples longer than the sequence limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongExamples {
    Truncate,
    Skip,
}

/// The tokenised training set and what was cut or dropped.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sequences: Vec<Sequence>,
    pub n_truncated: usize,
    pub n_skipped: usize,
}

/// Tokenises rows with the template; prompt and response are encoded apart so the mask boundary
/// is exact.
pub fn prepare(
    rows: &[ExampleFields],
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_seq_len: usize,
    long: LongExamples,
) -> Result<Prepared> {
    let mut sequences = Vec::with_capacity(rows.len());
    let (mut n_truncated, mut n_skipped) = (0, 0);
    for row in rows {
        let prompt = tokenizer::encode(tokenizer, &template.prompt(&row.question))?;
        let response = tokenizer::encode(tokenizer, &template.response(row))?;
        let mut ids = prompt.clone();
        ids.extend_from_slice(&response);
        let mut train = vec![false; prompt.len()];
        train.extend(std::iter::repeat_n(true, response.len()));
        if ids.len() > max_seq_len {
            match long {
                LongExamples::Skip => {
                    n_skipped += 1;
                    continue;
                }
                LongExamples::Truncate => {
                    n_truncated += 1;
                    ids.truncate(max_seq_len);
                    train.truncate(max_seq_len);
                }
            }
        }
        // A sequence needs at least one target after its first token.
        if train.iter().skip(1).any(|&t| t) {
            sequences.push(Sequence { ids, train });
        } else {
            n_skipped += 1;
        }
    }
    Ok(Prepared {
        sequences,
        n_truncated,
        n_skipped,
    })
}

/// Reads canonical JSONL (one `ExampleFields` per line).
pub fn read_jsonl(path: &Path) -> Result<Vec<ExampleFields>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EngineError::Data(format!("{}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: ExampleFields = serde_json::from_str(line)
            .map_err(|e| EngineError::Data(format!("{} line {}: {e}", path.display(), i + 1)))?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(EngineError::Data(format!("{}: no rows", path.display())));
    }
    Ok(rows)
}

/// The batches of one epoch: indices shuffled by `(seed, epoch)`, grouped in windows of
/// `batch_size * 32` sorted by length (so a batch holds similar lengths and padding stays
/// small), then the batch order shuffled again. Deterministic.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let window = batch_size * 32;
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for chunk in order.chunks(window) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_conversation_prompt_is_the_question_prompt_for_one_user_turn() {
        let t = ChatTemplate::default();
        assert_eq!(t.chat_prompt(&[("user", "2+2?")]), t.prompt("2+2?"));
        let with_system = ChatTemplate {
            system: Some("Be brief.".into()),
            ..Default::default()
        };
        let own = with_system.chat_prompt(&[("system", "Think."), ("user", "q")]);
        assert!(own.starts_with("<|im_start|>system\nThink.<|im_end|>\n"));
        assert!(!own.contains("Be brief."));
        assert_eq!(
            with_system.chat_prompt(&[("user", "q")]),
            with_system.prompt("q")
        );
    }

    use super::*;

    #[test]
    fn template_follows_s1() {
        let t = ChatTemplate::default();
        let ex = ExampleFields {
            question: "Q".into(),
            thinking: "T".into(),
            answer: "A".into(),
            ..Default::default()
        };
        assert_eq!(
            t.prompt("Q"),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.response(&ex),
            "<|im_start|>think\nT\n<|im_start|>answer\nA<|im_end|>"
        );
        let no_trace = ExampleFields {
            question: "Q".into(),
            answer: "A".into(),
            ..Default::default()
        };
        assert_eq!(t.response(&no_trace), "<|im_start|>answer\nA<|im_end|>");
    }

    #[test]
    fn batches_cover_every_example_once_and_depend_on_seed_and_epoch() {
        let lengths: Vec<usize> = (0..100).map(|i| (i * 37) % 50 + 1).collect();
        let a = epoch_batches(&lengths, 8, 1, 0);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(&lengths, 8, 1, 0));
        assert_ne!(a, epoch_batches(&lengths, 8, 1, 1));
        assert_ne!(a, epoch_batches(&lengths, 8, 2, 0));
    }
}
