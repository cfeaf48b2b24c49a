//! The serving decode loop: every live request of one model decoded together (continuous
//! batching: a request that arrives joins the next step, one that ends leaves it), each with its
//! own sampling and s1's budget forcing ([`crate::budget::Forcer`]), its thinking and answer sent
//! to its [`Sink`] as they are decoded. The server runs it for the models it loads; a worker
//! runs it for the models on its disks and relays the events to the server. No channel or
//! runtime is assumed: a sink is anything that takes events and says when its reader is gone.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};

use crate::budget::{Action, Budget, Forcer, Forcing, ForcingIds};
use crate::data::ChatTemplate;
use crate::generate::{Decoder, Sampling};
use crate::hf::ModelFolder;
use crate::tokenizer;

/// Requests one model decodes together at most; more wait in its queue.
pub const MAX_BATCH: usize = 32;

/// Where a request's events go.
pub trait Sink: Send {
    /// Sends one event (lost if the reader is gone).
    fn send(&self, event: Event);
    /// Whether the reader went away (the loop then stops paying for the request's tokens).
    fn is_closed(&self) -> bool;
}

/// What one completion asks of the decode loop.
pub struct Job {
    /// The conversation, as `(role, content)` turns.
    pub turns: Vec<(String, String)>,
    pub sampling: Sampling,
    pub budget: Budget,
    /// Generated tokens at most (thinking and answer together).
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub events: Box<dyn Sink>,
}

/// What a completion sends back, in order: text as it is decoded, then its end.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reasoning(String),
    Content(String),
    Done {
        /// `stop` (an end token or a stop string) or `length`.
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The request could not be served (its prompt too long for the model, a failed step).
    Failed(String),
}

/// One live request in the decode loop.
struct Live {
    forcer: Forcer,
    prompt_tokens: usize,
    /// Tokens the model picked so far (forced ones not counted), at most `max_tokens`.
    emitted: usize,
    max_tokens: usize,
    stop: Vec<String>,
    events: Box<dyn Sink>,
    /// Bytes of the decoded thinking and answer already sent.
    sent_thinking: usize,
    sent_answer: usize,
}

/// The decode loop of one model: runs until its queue is closed and its last request ended.
pub fn serve(folder: ModelFolder, jobs: Receiver<Job>) {
    let template = ChatTemplate::default();
    let forcing = Forcing::from_template(&template);
    let ids = match ForcingIds::new(&folder, &forcing) {
        Ok(ids) => ids,
        Err(e) => {
            for job in jobs.iter() {
                job.events
                    .send(Event::Failed(format!("the model's tokenizer: {e}")));
            }
            return;
        }
    };
    let tok = &folder.tokenizer;
    let ends_line = |t: u32| tokenizer::decode(tok, &[t], false).is_ok_and(|s| s.ends_with('\n'));
    let decode = |ids: &[u32]| tokenizer::decode(tok, ids, false).unwrap_or_default();
    let mut decoder = Decoder::new(&folder.model);
    let mut live: HashMap<usize, Live> = HashMap::new();
    let mut closed = false;
    loop {
        // Take what arrived: wait for work when idle, else only what is already queued.
        while live.len() < MAX_BATCH && !closed {
            let job = if live.is_empty() {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            };
            if live.is_empty() {
                // Nothing in flight: start a fresh decoder (finished rows are not kept).
                decoder = Decoder::new(&folder.model);
            }
            match admit(&folder, &template, &ids, &mut decoder, job) {
                Ok((row, state)) => {
                    live.insert(row, state);
                }
                Err((events, message)) => {
                    events.send(Event::Failed(message));
                }
            }
        }
        if live.is_empty() {
            if closed {
                return;
            }
            continue;
        }
        let stepped = match decoder.step() {
            Ok(s) => s,
            Err(e) => {
                for (row, state) in live.drain() {
                    decoder.finish(row);
                    state.events.send(Event::Failed(format!("decoding: {e}")));
                }
                continue;
            }
        };
        for (row, token) in stepped {
            let Some(state) = live.get_mut(&row) else {
                continue;
            };
            state.emitted += 1;
            let action = state.forcer.on_token(token, &ends_line);
            let ended = match send_new_text(&decode, state, false) {
                Some(finish) => Some(finish),
                None if matches!(action, Action::Finish) => Some(match state.forcer.finish {
                    crate::generate::Finish::Length => "length",
                    _ => "stop",
                }),
                None if state.emitted >= state.max_tokens => Some("length"),
                None => None,
            };
            match ended {
                Some(finish) => {
                    decoder.finish(row);
                    let mut state = live.remove(&row).expect("live");
                    // The rest (a held-back tail), still cut at a stop string.
                    send_new_text(&decode, &mut state, true);
                    state.events.send(Event::Done {
                        finish,
                        prompt_tokens: state.prompt_tokens,
                        completion_tokens: state.emitted,
                    });
                }
                None => {
                    if state.events.is_closed() {
                        // The client went away: stop paying for its tokens.
                        decoder.finish(row);
                        live.remove(&row);
                    } else if let Action::Feed(tokens) = action {
                        decoder.feed(row, &tokens);
                    }
                }
            }
        }
    }
}

/// Adds a job to the decoder: its prompt (the conversation and the opening of thinking) and its
/// budget forcing; an error names what does not fit.
fn admit(
    folder: &ModelFolder,
    template: &ChatTemplate,
    ids: &ForcingIds,
    decoder: &mut Decoder<'_>,
    job: Job,
) -> Result<(usize, Live), (Box<dyn Sink>, String)> {
    let turns: Vec<(&str, &str)> = job
        .turns
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    let text = format!("{}{}", template.chat_prompt(&turns), template.think_start);
    let prompt = match tokenizer::encode(&folder.tokenizer, &text) {
        Ok(p) => p,
        Err(e) => return Err((job.events, format!("tokenizing the messages: {e}"))),
    };
    let positions = folder.model.config.max_position_embeddings;
    let fixed = ids.wait.len() + ids.think_end.len() + ids.final_answer.len() + 2;
    if prompt.len() + fixed + 1 >= positions {
        return Err((
            job.events,
            format!(
                "the messages are {} tokens; model's context is {positions} tokens",
                prompt.len()
            ),
        ));
    }
    let room = positions - prompt.len() - fixed;
    let max_tokens = job.max_tokens.min(room).max(1);
    let mut row_ids = ids.clone();
    row_ids.max_answer_tokens = max_tokens;
    // Thinking is cut only at `max_thinking_tokens` (or the context); `max_tokens` ends the
    // completion wherever it is, as a reasoning model's length limit does.
    let forcer = Forcer::new(job.budget, row_ids, room);
    let forced = job.budget.wait_extensions * ids.wait.len();
    let capacity = prompt.len() + max_tokens + fixed + forced;
    let row = match decoder.add(&prompt, capacity, job.sampling) {
        Ok(row) => row,
        Err(e) => return Err((job.events, e.to_string())),
    };
    Ok((
        row,
        Live {
            forcer,
            prompt_tokens: prompt.len(),
            emitted: 0,
            max_tokens,
            stop: job.stop,
            events: job.events,
            sent_thinking: 0,
            sent_answer: 0,
        },
    ))
}

/// Sends what the last token added to the thinking or the answer (text that ends in half a
/// character waits for the rest). A stop string in the answer ends it there: `Some("stop")`.
fn send_new_text(
    decode: &dyn Fn(&[u32]) -> String,
    state: &mut Live,
    flush: bool,
) -> Option<&'static str> {
    let thinking = decode(&state.forcer.thinking);
    if thinking.len() > state.sent_thinking && (flush || !thinking.ends_with('\u{fffd}')) {
        state.events.send(Event::Reasoning(
            thinking[state.sent_thinking..].to_string(),
        ));
        state.sent_thinking = thinking.len();
    }
    if state.forcer.answer.is_empty() {
        return None;
    }
    let answer = decode(&state.forcer.answer);
    // The answer turn opens with the delimiter's line break; the content starts after it.
    let answer = answer.trim_start_matches('\n');
    let stop_at = state
        .stop
        .iter()
        .filter_map(|s| answer.find(s.as_str()))
        .min();
    let (shown, stopped) = match stop_at {
        Some(at) => (&answer[..at], true),
        None => (answer, false),
    };
    if shown.len() > state.sent_answer && (stopped || flush || !shown.ends_with('\u{fffd}')) {
        // Hold back a tail that could be the start of a stop string.
        let hold = if stopped || flush {
            0
        } else {
            state
                .stop
                .iter()
                .map(|s| {
                    (1..s.len())
                        .rev()
                        .find(|&k| s.is_char_boundary(k) && shown.ends_with(&s[..k]))
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0)
        };
        let upto = shown.len() - hold;
        if upto > state.sent_answer {
            state
                .events
                .send(Event::Content(shown[state.sent_answer..upto].to_string()));
            state.sent_answer = upto;
        }
    }
    stopped.then_some("stop")
}
