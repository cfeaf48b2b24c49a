//! Budget forcing as s1 defines it: control how long a model thinks at test time.
//!
//! Thinking opens with the template's `think_start` (`<|im_start|>think`) and ends with its
//! `answer_start` (`<|im_start|>answer`). While thinking, any `<|im_start|>` or end token is the
//! model trying to stop.
//! - **Maximum**: at `max_thinking_tokens` thinking is cut: the end-of-thinking delimiter and
//!   `Final Answer:` are appended and the answer is decoded (up to `max_answer_tokens`).
//! - **Minimum / extension**: when the model tries to stop before `min_thinking_tokens`, or on
//!   its first `wait_extensions` tries, the delimiter is dropped and `Wait` appended instead.
//!
//! [`Forcer`] holds these rules for one sequence and is pure (tokens in, what to feed out), so
//! they are tested on scripted tokens; [`think`] drives it over a batch with the real model.

use crate::Result;
use crate::data::ChatTemplate;
use crate::generate::{Decoder, Finish, Sampling};
use crate::hf::ModelFolder;
use crate::tokenizer;

/// One budget setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Budget {
    /// Thinking is cut here (`None`: only the model's positions bound it).
    pub max_thinking_tokens: Option<usize>,
    pub min_thinking_tokens: usize,
    /// How many of the model's first tries to stop are answered with `Wait`.
    pub wait_extensions: usize,
}

/// The strings budget forcing writes, and the answer's own budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Forcing {
    pub think_start: String,
    pub think_end: String,
    /// Appended after the delimiter when thinking is cut.
    pub final_answer: String,
    /// Appended instead of the delimiter to extend thinking (s1 also tried "Hmm", "Alternatively").
    pub wait: String,
    pub max_answer_tokens: usize,
}

impl Default for Forcing {
    fn default() -> Self {
        Self::from_template(&ChatTemplate::default())
    }
}

impl Forcing {
    pub fn from_template(template: &ChatTemplate) -> Self {
        Self {
            think_start: template.think_start.clone(),
            think_end: template.answer_start.clone(),
            final_answer: "Final Answer:".into(),
            wait: "Wait".into(),
            max_answer_tokens: 256,
        }
    }
}

/// Token ids of the forcing strings, and which tokens are tries to stop / end the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ForcingIds {
    pub stop_attempts: Vec<u32>,
    pub answer_ends: Vec<u32>,
    pub think_end: Vec<u32>,
    /// The delimiter without its leading line break, after thinking that ended a line.
    pub think_end_after_line: Vec<u32>,
    pub final_answer: Vec<u32>,
    pub wait: Vec<u32>,
    pub max_answer_tokens: usize,
}

impl ForcingIds {
    pub fn new(folder: &ModelFolder, forcing: &Forcing) -> Result<Self> {
        let enc = |s: &str| tokenizer::encode(&folder.tokenizer, s);
        let sp = &folder.special;
        Ok(Self {
            stop_attempts: vec![sp.im_start, sp.im_end, sp.end_of_text],
            answer_ends: vec![sp.im_start, sp.im_end, sp.end_of_text],
            think_end: enc(&forcing.think_end)?,
            think_end_after_line: enc(forcing.think_end.trim_start_matches('\n'))?,
            final_answer: enc(&forcing.final_answer)?,
            wait: enc(&forcing.wait)?,
            max_answer_tokens: forcing.max_answer_tokens,
        })
    }
}

/// What to do after a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Feed(Vec<u32>),
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Thinking,
    Answer,
    Done,
}

/// The budget-forcing rules for one sequence.
#[derive(Debug, Clone)]
pub struct Forcer {
    budget: Budget,
    ids: ForcingIds,
    phase: Phase,
    /// Thinking tokens, forced `Wait`s included.
    pub thinking: Vec<u32>,
    /// Answer tokens, a forced `Final Answer:` included.
    pub answer: Vec<u32>,
    /// Answer tokens the model wrote.
    pub answer_generated: usize,
    /// Where each forced `Wait` starts (index into `thinking`).
    pub waits: Vec<usize>,
    /// Thinking tokens when it was cut.
    pub cut: Option<usize>,
    pub stop_attempts: usize,
    pub finish: Finish,
}

impl Forcer {
    /// `limit`: the most thinking tokens the sequence has room for (the model's positions).
    pub fn new(budget: Budget, ids: ForcingIds, limit: usize) -> Self {
        let max = budget
            .max_thinking_tokens
            .unwrap_or(limit)
            .min(limit)
            .max(1);
        Self {
            budget: Budget {
                max_thinking_tokens: Some(max),
                ..budget
            },
            ids,
            phase: Phase::Thinking,
            thinking: Vec::new(),
            answer: Vec::new(),
            answer_generated: 0,
            waits: Vec::new(),
            cut: None,
            stop_attempts: 0,
            finish: Finish::Length,
        }
    }

    fn max(&self) -> usize {
        self.budget.max_thinking_tokens.expect("set in new")
    }

    /// The next token the model picked → what to feed next. `ends_line`: whether a token's
    /// text ends with a line break.
    pub fn on_token(&mut self, token: u32, ends_line: &dyn Fn(u32) -> bool) -> Action {
        match self.phase {
            Phase::Thinking => {
                if self.ids.stop_attempts.contains(&token) {
                    self.stop_attempts += 1;
                    let wants_more = self.thinking.len() < self.budget.min_thinking_tokens
                        || self.waits.len() < self.budget.wait_extensions;
                    let room = self.thinking.len() + self.ids.wait.len() < self.max();
                    if wants_more && room {
                        self.waits.push(self.thinking.len());
                        self.thinking.extend_from_slice(&self.ids.wait);
                        return Action::Feed(self.ids.wait.clone());
                    }
                    if wants_more {
                        // No room left for a `Wait`: the maximum wins, thinking is cut here.
                        return self.cut(Vec::new());
                    }
                    self.phase = Phase::Answer;
                    let after_line = self.thinking.last().is_some_and(|&t| ends_line(t));
                    return Action::Feed(if after_line {
                        self.ids.think_end_after_line.clone()
                    } else {
                        self.ids.think_end.clone()
                    });
                }
                self.thinking.push(token);
                if self.thinking.len() >= self.max() {
                    return self.cut(vec![token]);
                }
                Action::Feed(vec![token])
            }
            Phase::Answer => {
                if self.ids.answer_ends.contains(&token) {
                    self.phase = Phase::Done;
                    self.finish = Finish::Stop;
                    return Action::Finish;
                }
                self.answer.push(token);
                self.answer_generated += 1;
                if self.answer_generated >= self.ids.max_answer_tokens {
                    self.phase = Phase::Done;
                    self.finish = Finish::Length;
                    return Action::Finish;
                }
                Action::Feed(vec![token])
            }
            Phase::Done => Action::Finish,
        }
    }

    /// Ends thinking by force: `feed` (the last thinking token, if any), the delimiter and
    /// `Final Answer:`.
    fn cut(&mut self, mut feed: Vec<u32>) -> Action {
        self.cut = Some(self.thinking.len());
        self.phase = Phase::Answer;
        self.answer.extend_from_slice(&self.ids.final_answer);
        feed.extend_from_slice(&self.ids.think_end);
        feed.extend_from_slice(&self.ids.final_answer);
        Action::Feed(feed)
    }

    /// Tokens this sequence may still add to its context at most.
    pub fn room_needed(budget: &Budget, ids: &ForcingIds, limit: usize) -> usize {
        let max = budget.max_thinking_tokens.unwrap_or(limit).min(limit);
        max + ids.wait.len()
            + ids.think_end.len()
            + ids.final_answer.len()
            + ids.max_answer_tokens
            + 2
    }
}

/// A forced `Wait` or the cut: where it is in the thinking, in tokens and in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub token: usize,
    pub char: usize,
}

/// One budget-forced generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thought {
    pub thinking: String,
    /// The answer as the model continued it (after a cut it starts with `Final Answer:`).
    pub answer: String,
    pub thinking_tokens: usize,
    pub answer_tokens: usize,
    pub waits: Vec<Mark>,
    pub cut: Option<Mark>,
    /// How many times the model tried to stop thinking.
    pub stop_attempts: usize,
    pub finish: Finish,
}

/// One prompt to think about under a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct ThinkRequest {
    /// The prompt up to where the assistant speaks (the think delimiter is appended here).
    pub prompt: String,
    pub budget: Budget,
    pub sampling: Sampling,
}

/// Generates every request in one batch under its budget.
pub fn think(
    folder: &ModelFolder,
    requests: &[ThinkRequest],
    forcing: &Forcing,
) -> Result<Vec<Thought>> {
    let ids = ForcingIds::new(folder, forcing)?;
    let positions = folder.model.config.max_position_embeddings;
    let mut decoder = Decoder::new(&folder.model);
    let mut forcers = Vec::with_capacity(requests.len());
    for request in requests {
        let prompt = tokenizer::encode(
            &folder.tokenizer,
            &format!("{}{}", request.prompt, forcing.think_start),
        )?;
        let fixed = ids.wait.len() + ids.think_end.len() + ids.final_answer.len();
        let limit = positions
            .saturating_sub(prompt.len() + fixed + ids.max_answer_tokens + 2)
            .max(1);
        let room = Forcer::room_needed(&request.budget, &ids, limit);
        decoder.add(&prompt, prompt.len() + room, request.sampling)?;
        forcers.push(Forcer::new(request.budget, ids.clone(), limit));
    }
    let tok = &folder.tokenizer;
    let ends_line = |t: u32| tokenizer::decode(tok, &[t], false).is_ok_and(|s| s.ends_with('\n'));
    while decoder.live() > 0 {
        for (row, token) in decoder.step()? {
            match forcers[row].on_token(token, &ends_line) {
                Action::Feed(tokens) => decoder.feed(row, &tokens),
                Action::Finish => decoder.finish(row),
            }
        }
    }
    forcers
        .into_iter()
        .map(|f| {
            let decode = |ids: &[u32]| tokenizer::decode(tok, ids, false);
            let mark = |at: usize| -> Result<Mark> {
                Ok(Mark {
                    token: at,
                    char: decode(&f.thinking[..at])?.len(),
                })
            };
            Ok(Thought {
                thinking: decode(&f.thinking)?,
                answer: decode(&f.answer)?,
                thinking_tokens: f.thinking.len(),
                answer_tokens: f.answer_generated,
                waits: f.waits.iter().map(|&w| mark(w)).collect::<Result<_>>()?,
                cut: f.cut.map(mark).transpose()?,
                stop_attempts: f.stop_attempts,
                finish: f.finish,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOP: u32 = 100;
    const END: u32 = 101;

    fn ids() -> ForcingIds {
        ForcingIds {
            stop_attempts: vec![STOP, END],
            answer_ends: vec![STOP, END],
            think_end: vec![50, 51],
            think_end_after_line: vec![51],
            final_answer: vec![60, 61],
            wait: vec![70],
            max_answer_tokens: 3,
        }
    }

    fn no_line(_: u32) -> bool {
        false
    }

    /// Feeds `script` (the model's picks) and returns what was fed after each.
    fn run(forcer: &mut Forcer, script: &[u32]) -> Vec<Action> {
        script
            .iter()
            .map(|&t| forcer.on_token(t, &no_line))
            .collect()
    }

    #[test]
    fn thinking_is_cut_at_the_maximum_and_the_answer_follows_final_answer() {
        let budget = Budget {
            max_thinking_tokens: Some(3),
            ..Default::default()
        };
        let mut f = Forcer::new(budget, ids(), 1000);
        let actions = run(&mut f, &[1, 2, 3, 9, 9, 9, 9]);
        assert_eq!(actions[2], Action::Feed(vec![3, 50, 51, 60, 61]));
        assert_eq!(f.thinking, vec![1, 2, 3]);
        assert_eq!(f.cut, Some(3));
        // The answer budget (3) ends it; the forced prefix does not count.
        assert_eq!(f.answer, vec![60, 61, 9, 9, 9]);
        assert_eq!(actions[5], Action::Finish);
        assert_eq!(f.finish, Finish::Length);
    }

    #[test]
    fn n_extensions_put_exactly_n_waits_where_the_model_tried_to_stop() {
        let budget = Budget {
            wait_extensions: 2,
            ..Default::default()
        };
        let mut f = Forcer::new(budget, ids(), 1000);
        let actions = run(&mut f, &[1, STOP, 2, END, 3, STOP, 7, END]);
        assert_eq!(actions[1], Action::Feed(vec![70]));
        assert_eq!(actions[3], Action::Feed(vec![70]));
        assert_eq!(
            actions[5],
            Action::Feed(vec![50, 51]),
            "the third try ends thinking"
        );
        assert_eq!(f.waits, vec![1, 3]);
        assert_eq!(f.thinking, vec![1, 70, 2, 70, 3]);
        assert_eq!(f.stop_attempts, 3);
        assert_eq!(f.cut, None);
        assert_eq!(f.answer, vec![7]);
        assert_eq!(actions[7], Action::Finish);
        assert_eq!(f.finish, Finish::Stop);
    }

    #[test]
    fn a_minimum_extends_until_reached_and_a_line_break_keeps_the_delimiter_whole() {
        let budget = Budget {
            min_thinking_tokens: 4,
            ..Default::default()
        };
        let mut f = Forcer::new(budget, ids(), 1000);
        let ends_line = |t: u32| t == 5;
        assert_eq!(f.on_token(5, &ends_line), Action::Feed(vec![5]));
        assert_eq!(f.on_token(STOP, &ends_line), Action::Feed(vec![70]));
        assert_eq!(f.on_token(5, &ends_line), Action::Feed(vec![5]));
        assert_eq!(f.on_token(STOP, &ends_line), Action::Feed(vec![70]));
        // Four thinking tokens now: the next try ends thinking, after a line break.
        assert_eq!(f.on_token(5, &ends_line), Action::Feed(vec![5]));
        assert_eq!(f.on_token(STOP, &ends_line), Action::Feed(vec![51]));
        assert_eq!(f.waits.len(), 2);
    }

    #[test]
    fn the_maximum_wins_over_a_minimum_and_waits_never_pass_it() {
        let budget = Budget {
            max_thinking_tokens: Some(2),
            min_thinking_tokens: 10,
            wait_extensions: 5,
        };
        let mut f = Forcer::new(budget, ids(), 1000);
        let actions = run(&mut f, &[1, STOP, 2]);
        // One token plus a one-token Wait would reach the maximum: thinking is cut instead.
        assert_eq!(actions[1], Action::Feed(vec![50, 51, 60, 61]));
        assert_eq!(f.thinking, vec![1]);
        assert!(f.waits.is_empty());
        assert_eq!(f.cut, Some(1));
        assert_eq!(f.answer, vec![60, 61, 2]);
    }
}
