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

/// The rows the models solved: `per_model` lists, in the recipe's order, each model's name and
/// the positions in `input` (an eval's example indices) it answered right. A row maps to the
/// first model that solved it.
pub fn solved_rows(
    input: &[u32],
    per_model: &[(String, Vec<i64>)],
) -> Result<BTreeMap<u32, String>, String> {
    let mut solved = BTreeMap::new();
    for (model, positions) in per_model {
        for &i in positions {
            let row = usize::try_from(i)
                .ok()
                .and_then(|i| input.get(i))
                .ok_or_else(|| format!("model '{model}' graded row {i} of {}", input.len()))?;
            solved.entry(*row).or_insert_with(|| model.clone());
        }
    }
    Ok(solved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eval_s_positions_name_the_input_s_rows() {
        // The stage's input is a subset of the source (rows 2, 5, 7, 9): an eval's example 1 is
        // source row 5.
        let input = [2, 5, 7, 9];
        let solved = solved_rows(
            &input,
            &[("a".into(), vec![1, 3]), ("b".into(), vec![0, 1])],
        )
        .unwrap();
        assert_eq!(
            solved.into_iter().collect::<Vec<_>>(),
            vec![(2, "b".into()), (5, "a".into()), (9, "a".into())]
        );
        assert!(solved_rows(&input, &[("a".into(), vec![4])]).is_err());
    }
}
