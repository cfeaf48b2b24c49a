//! The difficulty stage's decision, once its evals are graded: a row any reference model
//! answered right is dropped; optionally so is a row whose trace is not longer than N tokens.

use std::collections::BTreeMap;

use crate::{Pool, StageOut};

pub const SOLVED: &str = "solved_by_model";
pub const TRACE_NOT_LONG: &str = "trace_not_long_enough";

/// `solved` maps a row to the first model that got it right.
pub fn run(
    pool: &Pool,
    input: &[u32],
    solved: &BTreeMap<u32, String>,
    min_trace_tokens: Option<u32>,
) -> StageOut {
    StageOut::split(input, |row| {
        if let Some(model) = solved.get(&row) {
            return Some((SOLVED, format!("model '{model}' answered it right")));
        }
        let tokens = pool.rows[row as usize].trace_tokens;
        match min_trace_tokens {
            Some(min) if tokens <= min => Some((
                TRACE_NOT_LONG,
                format!("the trace has {tokens} tokens, not more than {min}"),
            )),
            _ => None,
        }
    })
}
