//! Where a model's output states its final answer, in order of trust: a `Final Answer:` line,
//! the last `\boxed{}`/`\fbox{}`, "the answer is …", the last math span, the last number.
//! GSM8K's `#### n` line comes first for that preset; letters for multiple choice.

use crate::lex::collapse_double_backslashes;
use crate::parse::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// MATH-style: LaTeX answers, `\boxed{}`, final-answer lines.
    Math,
    /// GSM8K: the `#### n` line, then as `Math`.
    Gsm8k,
    /// Multiple choice: a letter A–J.
    Choice,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "math" => Ok(Self::Math),
            "gsm8k" => Ok(Self::Gsm8k),
            "choice" => Ok(Self::Choice),
            other => Err(format!(
                "unknown answer preset {other:?}: use math, gsm8k or choice"
            )),
        }
    }
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Math => "math",
            Self::Gsm8k => "gsm8k",
            Self::Choice => "choice",
        }
    }
}

/// One place an answer may be, with how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub mode: Mode,
    pub found_by: &'static str,
}

/// Markers that end what a model said (chat turns it went on to write).
const TURN_ENDS: &[&str] = &["<|im_start|>user", "<|im_end|>", "<|endoftext|>"];

/// The places an answer may be in `output`, best first.
pub fn candidates(output: &str, preset: Preset) -> Vec<Candidate> {
    let text = collapse_double_backslashes(output);
    let mut text = text.as_str();
    for end in TURN_ENDS {
        if let Some(i) = text.find(end)
            && !text[..i].trim().is_empty()
        {
            text = &text[..i];
        }
    }
    let mut out = Vec::new();
    match preset {
        Preset::Choice => choice(text, &mut out),
        Preset::Gsm8k => {
            if let Some(line) = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("####"))
            {
                push(&mut out, line.trim(), Mode::Prose, "#### line");
            }
            math(text, &mut out);
        }
        Preset::Math => math(text, &mut out),
    }
    out
}

fn push(out: &mut Vec<Candidate>, text: &str, mode: Mode, found_by: &'static str) {
    let text = text.trim().trim_end_matches(['.', ',', ';']).trim();
    if !text.is_empty() {
        out.push(Candidate {
            text: text.to_string(),
            mode,
            found_by,
        });
    }
}

fn find_ci(haystack: &str, needle: &str) -> Vec<usize> {
    let lower = haystack.to_ascii_lowercase();
    lower.match_indices(needle).map(|(i, _)| i).collect()
}

fn math(text: &str, out: &mut Vec<Candidate>) {
    if let Some(&at) = find_ci(text, "final answer").last() {
        let rest = &text[at + "final answer".len()..];
        statement(rest, out, "final answer line");
    }
    if let Some(boxed) = last_boxed(text) {
        push(out, boxed, Mode::Math, "last \\boxed{}");
    }
    if let Some(&at) = find_ci(text, "answer is").last() {
        statement(&text[at + "answer is".len()..], out, "\"the answer is\"");
    }
    // The last math span and the last number: whichever the text ends with comes first
    // ("… $d = 90/n$ … so there are 12 sequences" answers 12).
    let span = math_spans_at(text).last().copied();
    let number = numbers_at(text).last().copied();
    let number_first = match (span, number) {
        (Some((_, span_end)), Some((_, number_end))) => number_end > span_end,
        _ => false,
    };
    let push_span = |out: &mut Vec<Candidate>| {
        if let Some((span, _)) = span {
            push(out, span, Mode::Math, "last math span");
        }
    };
    let push_number = |out: &mut Vec<Candidate>| {
        if let Some((number, _)) = number {
            push(out, number, Mode::Prose, "last number");
        }
    };
    if number_first {
        push_number(out);
        push_span(out);
    } else {
        push_span(out);
        push_number(out);
    }
}

/// A final-answer statement: its `\boxed{}`, else what its first sentence says after "is",
/// its first math span, its first number.
fn statement(rest: &str, out: &mut Vec<Candidate>, found_by: &'static str) {
    let rest = match find_ci(rest, "i hope it is correct").first() {
        Some(&i) => &rest[..i],
        None => rest,
    };
    if let Some(boxed) = first_boxed(rest) {
        push(out, boxed, Mode::Math, found_by);
        return;
    }
    let rest = rest.trim_start_matches([':', '*', ' ', '\n', '\t']);
    let mut sentence = first_sentence(rest);
    // "… is X" (also at the very start: "Final Answer" then "is X").
    if let Some(&i) = find_ci(&format!(" {sentence}"), " is ").last() {
        sentence = &sentence[i + 3..];
    }
    let sentence = sentence.trim().trim_matches(['"', '\'', '`']);
    if sentence.contains('$') || sentence.contains("\\(") || sentence.contains("\\[") {
        let stripped = sentence
            .replace("$", " ")
            .replace("\\(", " ")
            .replace("\\)", " ")
            .replace("\\[", " ")
            .replace("\\]", " ")
            .replace('"', " ");
        push(out, &stripped, Mode::Math, found_by);
        if let Some(span) = math_spans(sentence).first() {
            push(out, span, Mode::Math, found_by);
        }
    } else {
        push(out, sentence, Mode::Prose, found_by);
    }
    if let Some(number) = numbers(sentence).first() {
        push(out, number, Mode::Prose, found_by);
    }
}

/// Up to the first `.` that ends a sentence (followed by white space or the end, outside math)
/// or the first line break outside math.
fn first_sentence(s: &str) -> &str {
    let b = s.as_bytes();
    let mut in_math = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'$' => in_math = !in_math,
            b'\n' if !in_math => return &s[..i],
            b'.' if !in_math && b.get(i + 1).is_none_or(|c| c.is_ascii_whitespace()) => {
                return &s[..i];
            }
            _ => {}
        }
        i += 1;
    }
    s
}

/// The content of `\boxed{…}` / `\fbox{…}` starting at `at` (balanced braces), or of
/// `\boxed 5` (up to white space or `$`).
fn boxed_at(text: &str, at: usize) -> Option<&str> {
    let after_name = text[at..].find(['{', ' ']).map(|i| at + i)?;
    let b = text.as_bytes();
    if b[after_name] == b' ' {
        let start = after_name + 1;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || c == '$')
            .map_or(text.len(), |i| start + i);
        return Some(&text[start..end]);
    }
    let mut depth = 0usize;
    let mut i = after_name;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[after_name + 1..i]);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn boxed_starts(text: &str) -> Vec<usize> {
    let mut starts: Vec<usize> = text
        .match_indices("\\boxed")
        .chain(text.match_indices("\\fbox"))
        .map(|(i, _)| i)
        .collect();
    starts.sort_unstable();
    starts
}

/// The content of the last `\boxed{}` (or `\fbox{}`), nested braces kept.
pub fn last_boxed(text: &str) -> Option<&str> {
    boxed_starts(text)
        .into_iter()
        .rev()
        .find_map(|at| boxed_at(text, at))
}

fn first_boxed(text: &str) -> Option<&str> {
    boxed_starts(text)
        .into_iter()
        .find_map(|at| boxed_at(text, at))
}

/// Contents of `$$…$$`, `$…$`, `\[…\]`, `\(…\)` in order (`\$` is a dollar sign, not a delimiter).
fn math_spans(text: &str) -> Vec<&str> {
    math_spans_at(text).into_iter().map(|(s, _)| s).collect()
}

/// As [`math_spans`], each with where it ends in `text`.
fn math_spans_at(text: &str) -> Vec<(&str, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (open_len, close): (usize, &str) = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'(')) => (2, "\\)"),
            (b'\\', Some(b'[')) => (2, "\\]"),
            (b'\\', _) => {
                i += 2;
                continue;
            }
            (b'$', Some(b'$')) => (2, "$$"),
            (b'$', _) => (1, "$"),
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i + open_len;
        let mut j = start;
        let mut found = None;
        while j < b.len() {
            if b[j] == b'\\' && !close.starts_with('\\') {
                j += 2;
                continue;
            }
            if b[j..].starts_with(close.as_bytes()) {
                found = Some(j);
                break;
            }
            j += 1;
        }
        match found {
            Some(end) => {
                spans.push((&text[start..end], end + close.len()));
                i = end + close.len();
            }
            None => i = start,
        }
    }
    spans
}

/// Numbers in prose: `-1,000.5`, `2/3`, `45%`.
fn numbers(text: &str) -> Vec<&str> {
    numbers_at(text).into_iter().map(|(s, _)| s).collect()
}

/// As [`numbers`], each with where it ends in `text`.
fn numbers_at(text: &str) -> Vec<(&str, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit()
            || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        if b[i] == b'-' {
            i += 1;
        }
        let digits = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        i = digits(i);
        while i + 3 < b.len() + 1
            && b.get(i) == Some(&b',')
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            let end = digits(i + 1);
            if end - (i + 1) != 3 {
                break;
            }
            i = end;
        }
        if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1);
        }
        if b.get(i) == Some(&b'/') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1);
        }
        if b.get(i) == Some(&b'%') {
            i += 1;
        }
        out.push((&text[start..i], i));
    }
    out
}

/// A letter answer: `\boxed{C}`, "answer is (C)", the last `(C)`, the last lone capital.
fn choice(text: &str, out: &mut Vec<Candidate>) {
    let letter = |s: &str| -> Option<String> {
        let t: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let t = t.strip_prefix("text").unwrap_or(&t).to_string();
        (t.len() == 1
            && t.chars()
                .all(|c| ('A'..='J').contains(&c.to_ascii_uppercase())))
        .then(|| t.to_ascii_uppercase())
    };
    if let Some(l) = last_boxed(text).and_then(letter) {
        push(out, &l, Mode::Prose, "last \\boxed{}");
    }
    for marker in ["answer is", "answer:"] {
        if let Some(&at) = find_ci(text, marker).last() {
            let rest = text[at + marker.len()..].trim_start();
            let head: String = rest.chars().take(4).collect();
            if let Some(l) = letter(head.split_whitespace().next().unwrap_or("")) {
                push(out, &l, Mode::Prose, "\"the answer is\"");
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    for w in chars.windows(3).rev() {
        if w[0] == '(' && w[2] == ')' && ('A'..='J').contains(&w[1]) {
            push(out, &w[1].to_string(), Mode::Prose, "last (X)");
            break;
        }
    }
    if let Some(word) = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .rev()
        .find(|w| w.len() == 1 && ('A'..='J').contains(&w.chars().next().unwrap_or(' ')))
    {
        push(out, word, Mode::Prose, "last capital letter");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_with_nested_braces_and_the_space_form() {
        assert_eq!(
            last_boxed("a \\boxed{\\frac{1}{2}} b"),
            Some("\\frac{1}{2}")
        );
        assert_eq!(last_boxed("\\boxed{1} then \\fbox{2}"), Some("2"));
        assert_eq!(last_boxed("so $\\boxed 5$."), Some("5"));
    }

    #[test]
    fn spans_and_numbers() {
        assert_eq!(math_spans("a $x$ b \\(y\\) c $$z$$"), vec!["x", "y", "z"]);
        assert_eq!(math_spans("costs \\$5 and $x$"), vec!["x"]);
        assert_eq!(
            numbers("is 1,000.99m and -3 or 2/3, 45%"),
            vec!["1,000.99", "-3", "2/3", "45%"]
        );
    }

    #[test]
    fn a_final_answer_line_is_read_before_an_intermediate_box() {
        let c = candidates(
            "so $\\boxed{255}$ then. Final Answer: The final answer is $10,455$. I hope it is correct.",
            Preset::Math,
        );
        assert_eq!(c[0].text, "10,455");
        assert_eq!(c[0].found_by, "final answer line");
    }
}
