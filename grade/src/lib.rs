//! Deterministic answer checking, the same for the eval job, `still grade` and any output
//! produced elsewhere: find the final answer in a model's output ([`extract`]), read it and the
//! reference as math ([`parse`]), and decide equivalence ([`equiv`]) by structure and by value.
//! No LLM judge, no randomness that differs between runs.

mod equiv;
mod extract;
mod lex;
mod parse;
mod value;

pub use extract::{Preset, last_boxed};

/// What the checker decided for one output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The answer it found (`None`: the output states none it could read).
    pub extracted: Option<String>,
    pub correct: bool,
    /// Where the answer was found and why it was or was not accepted.
    pub reason: String,
}

/// The canonical text of an answer: what two answers written alike share (spacing, `\left`,
/// `\dfrac`, `$` and a trailing period aside).
fn canonical(s: &str) -> String {
    let s = lex::collapse_double_backslashes(s);
    let mut s = s
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("\\displaystyle", "")
        .replace("\\!", "")
        .replace("\\,", "")
        .replace("\\;", "")
        .replace("\\:", "")
        .replace('$', "");
    s.retain(|c| !c.is_whitespace());
    s.trim_end_matches('.').to_string()
}

/// Whether `candidate` (an answer already extracted) equals `reference`.
pub fn equivalent(reference: &str, candidate: &str) -> bool {
    let r = canonical(reference);
    if !r.is_empty() && r == canonical(candidate) {
        return true;
    }
    match (
        parse::parse(reference, parse::Mode::Math),
        parse::parse(candidate, parse::Mode::Math),
    ) {
        (Some(r), Some(c)) => equiv::equivalent(&r, &c),
        _ => false,
    }
}

/// Grades a model's whole output against a reference answer.
pub fn grade(reference: &str, output: &str, preset: Preset) -> Verdict {
    let candidates = extract::candidates(output, preset);
    if preset == Preset::Choice {
        let want: String = reference
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase();
        let want = want.strip_prefix("TEXT").unwrap_or(&want).to_string();
        return match candidates.first() {
            Some(c) => Verdict {
                extracted: Some(c.text.clone()),
                correct: c.text == want,
                reason: format!("letter from {}", c.found_by),
            },
            None => Verdict {
                extracted: None,
                correct: false,
                reason: "no answer letter found".into(),
            },
        };
    }
    let reference_canonical = canonical(reference);
    let reference_node = parse::parse(reference, parse::Mode::Math);
    for c in &candidates {
        if !reference_canonical.is_empty() && canonical(&c.text) == reference_canonical {
            return Verdict {
                extracted: Some(c.text.clone()),
                correct: true,
                reason: format!("{}: written as the reference", c.found_by),
            };
        }
        let Some(node) = parse::parse(&c.text, c.mode) else {
            continue;
        };
        let Some(reference_node) = &reference_node else {
            return Verdict {
                extracted: Some(c.text.clone()),
                correct: false,
                reason: format!("{}: the reference could not be read as math", c.found_by),
            };
        };
        let correct = equiv::equivalent(reference_node, &node);
        return Verdict {
            extracted: Some(c.text.clone()),
            correct,
            reason: format!(
                "{}: {}",
                c.found_by,
                if correct {
                    "equivalent"
                } else {
                    "not equivalent"
                }
            ),
        };
    }
    Verdict {
        extracted: candidates.first().map(|c| c.text.clone()),
        correct: false,
        reason: if candidates.is_empty() {
            "no answer found".into()
        } else {
            "no readable answer".into()
        },
    }
}
