//! Answer extraction and checking: greedy generation on each question, the answer taken from
//! the completion and compared with the row's answer.

use still_api::ExampleFields;

use crate::Result;
use crate::data::ChatTemplate;
use crate::generate::{self, GenerateOptions};
use crate::hf::ModelFolder;

/// One evaluated row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRow {
    pub index: usize,
    pub question: String,
    pub expected: String,
    pub predicted: String,
    pub correct: bool,
    pub completion: String,
    /// Tokens generated (thinking + answer).
    pub n_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalSummary {
    pub n: usize,
    pub n_correct: usize,
    pub accuracy: f64,
}

/// The content of the last `\boxed{…}` (braces balanced), if any.
pub fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The answer a completion gives: the text after the template's answer delimiter (or the whole
/// completion), then its last `\boxed{}` if it has one.
pub fn extract_answer(completion: &str, template: &ChatTemplate) -> String {
    let marker = template.answer_start.trim_start_matches('\n');
    let after = match completion.rfind(marker) {
        Some(i) => &completion[i + marker.len()..],
        None => completion,
    };
    let after = after.split(template.end.as_str()).next().unwrap_or(after);
    last_boxed(after).unwrap_or(after).trim().to_string()
}

/// Normalises an answer for comparison: trims, drops `$`, thousands commas, a trailing period,
/// and compares numbers by value.
pub fn normalize(answer: &str) -> String {
    let inner = last_boxed(answer).unwrap_or(answer);
    let mut s: String = inner.trim().trim_end_matches('.').replace(['$', ' '], "");
    if s.chars()
        .all(|c| c.is_ascii_digit() || c == ',' || c == '.' || c == '-')
        && s.contains(',')
    {
        s = s.replace(',', "");
    }
    if let Ok(value) = s.parse::<f64>() {
        return format!("{value}");
    }
    s
}

pub fn answers_match(predicted: &str, expected: &str) -> bool {
    !expected.trim().is_empty() && normalize(predicted) == normalize(expected)
}

/// Evaluates `rows`, calling `each` after every row.
pub fn evaluate(
    folder: &ModelFolder,
    rows: &[ExampleFields],
    template: &ChatTemplate,
    options: GenerateOptions,
    mut each: impl FnMut(&EvalRow),
) -> Result<(EvalSummary, Vec<EvalRow>)> {
    let mut results = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let completion = generate::chat(folder, template, &row.question, options)?;
        let predicted = extract_answer(&completion.text, template);
        let result = EvalRow {
            index,
            question: row.question.clone(),
            expected: row.answer.clone(),
            correct: answers_match(&predicted, &row.answer),
            predicted,
            n_tokens: completion.ids.len(),
            completion: completion.text,
        };
        each(&result);
        results.push(result);
    }
    let n_correct = results.iter().filter(|r| r.correct).count();
    let summary = EvalSummary {
        n: results.len(),
        n_correct,
        accuracy: if results.is_empty() {
            0.0
        } else {
            n_correct as f64 / results.len() as f64
        },
    };
    Ok((summary, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_extracted_after_the_marker_and_compared_loosely() {
        let t = ChatTemplate::default();
        assert_eq!(
            extract_answer("<|im_start|>think\n2+2 is 4\n<|im_start|>answer\n4", &t),
            "4"
        );
        assert_eq!(
            extract_answer("so \\boxed{\\frac{1}{2}}", &t),
            "\\frac{1}{2}"
        );
        assert!(answers_match("1,080", "1080"));
        assert!(answers_match("$18.", "18"));
        assert!(answers_match("18.0", "18"));
        assert!(!answers_match("17", "18"));
        assert!(!answers_match("", ""));
    }
}
