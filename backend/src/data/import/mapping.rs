//! From a source row (a JSON object) to the canonical example: presets, detection and the
//! hand-made field mapping.

use serde_json::{Map, Value};
use still_api::{ExampleFields, FieldMapping, Preset};

/// Canonical-field candidates for the generic preset, most likely first.
const QUESTION_KEYS: &[&str] = &[
    "question",
    "problem",
    "prompt",
    "instruction",
    "query",
    "input",
];
const THINKING_KEYS: &[&str] = &[
    "thinking",
    "reasoning",
    "thinking_trajectory",
    "thought",
    "cot",
    "rationale",
    "reasoning_content",
];
const ANSWER_KEYS: &[&str] = &[
    "answer",
    "final_answer",
    "gold_answer",
    "attempt",
    "output",
    "response",
    "completion",
];
const SOLUTION_KEYS: &[&str] = &["solution", "reference_solution"];
const SOURCE_KEYS: &[&str] = &["source", "source_type", "dataset"];
const DOMAIN_KEYS: &[&str] = &["domain", "subject", "type", "cot_type", "category"];
const TAGS_KEYS: &[&str] = &["tags", "labels"];

/// Picks the preset from the keys of the first readable row.
pub fn detect_preset(row: &Map<String, Value>) -> Preset {
    let has = |k: &str| row.contains_key(k);
    if has("question")
        && has("thinking")
        && has("answer")
        && row
            .get("metadata")
            .is_some_and(|m| m.is_object() || m.is_null())
    {
        Preset::Canonical
    } else if has("question")
        && (has("thinking_trajectories") || has("deepseek_thinking_trajectory"))
    {
        Preset::S1k
    } else if has("problem") && has("solution") {
        Preset::Math
    } else if has("question")
        && row
            .get("answer")
            .and_then(Value::as_str)
            .is_some_and(|a| a.contains("####"))
    {
        Preset::Gsm8k
    } else if has("question") && has("solution") && has("gold_answer") {
        Preset::Traces
    } else {
        Preset::Generic
    }
}

/// The mapping a preset implies for rows shaped like `row`.
pub fn preset_mapping(preset: Preset, row: &Map<String, Value>) -> Result<FieldMapping, String> {
    let has = |k: &str| row.contains_key(k);
    let some = |k: &str| Some(k.to_string());
    Ok(match preset {
        Preset::Canonical => FieldMapping {
            question: "question".into(),
            thinking: some("thinking"),
            answer: some("answer"),
            solution: some("solution"),
            source: some("source"),
            domain: some("domain"),
            tags: some("tags"),
            ..Default::default()
        },
        Preset::S1k => {
            // s1K-1.1 carries DeepSeek-R1 traces next to Gemini ones; prefer the R1 columns.
            let (thinking, answer) = if has("deepseek_thinking_trajectory") {
                ("deepseek_thinking_trajectory", "deepseek_attempt")
            } else {
                ("thinking_trajectories", "attempt")
            };
            FieldMapping {
                question: "question".into(),
                thinking: some(thinking),
                answer: some(answer),
                solution: some("solution"),
                source: some("source_type"),
                domain: some("cot_type"),
                ..Default::default()
            }
        }
        Preset::Gsm8k => FieldMapping {
            question: "question".into(),
            combined: some("answer"),
            split_marker: some("####"),
            ..Default::default()
        },
        Preset::Math => FieldMapping {
            question: "problem".into(),
            answer: has("answer").then(|| "answer".to_string()),
            solution: some("solution"),
            domain: if has("subject") {
                some("subject")
            } else {
                has("type").then(|| "type".into())
            },
            ..Default::default()
        },
        Preset::Traces => {
            let combined = if has("solution") {
                "solution"
            } else {
                "response"
            };
            let text = row.get(combined).and_then(Value::as_str).unwrap_or("");
            match ["</think>", "**Final Answer**"]
                .into_iter()
                .find(|m| text.contains(m))
            {
                Some(marker) => FieldMapping {
                    question: "question".into(),
                    combined: some(combined),
                    split_marker: some(marker),
                    ..Default::default()
                },
                // A short chain of thought with no marker: it is all answer, no thinking.
                None => FieldMapping {
                    question: "question".into(),
                    answer: some(combined),
                    ..Default::default()
                },
            }
        }
        Preset::Generic | Preset::Auto => guess_mapping(row)?,
    })
}

fn first_present(row: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find(|k| row.contains_key(**k))
        .map(|k| k.to_string())
}

/// The generic preset: match column names against common spellings.
pub fn guess_mapping(row: &Map<String, Value>) -> Result<FieldMapping, String> {
    let question = first_present(row, QUESTION_KEYS).ok_or_else(|| {
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        format!(
            "no question field found (looked for {}; the row has {}); map the fields by hand",
            QUESTION_KEYS.join(", "),
            keys.join(", ")
        )
    })?;
    Ok(FieldMapping {
        question,
        thinking: first_present(row, THINKING_KEYS),
        answer: first_present(row, ANSWER_KEYS),
        solution: first_present(row, SOLUTION_KEYS),
        source: first_present(row, SOURCE_KEYS),
        domain: first_present(row, DOMAIN_KEYS),
        tags: first_present(row, TAGS_KEYS),
        ..Default::default()
    })
}

/// Maps rows once the preset and mapping are known.
#[derive(Debug, Clone)]
pub struct Mapper {
    pub preset: Preset,
    pub mapping: FieldMapping,
    /// `source` for rows without a source column (the preset's name, or the file's stem).
    pub default_source: String,
    /// `domain` for rows without a domain column.
    pub default_domain: String,
}

impl Mapper {
    /// Resolves `preset` (detecting on `Auto`) and the mapping (a hand mapping wins) from the
    /// first readable row.
    pub fn resolve(
        preset: Preset,
        hand_mapping: Option<FieldMapping>,
        split_marker: Option<String>,
        file_stem: &str,
        first_row: &Map<String, Value>,
    ) -> Result<Self, String> {
        let preset = match preset {
            Preset::Auto => detect_preset(first_row),
            p => p,
        };
        let mut mapping = match hand_mapping {
            Some(m) => m,
            None => preset_mapping(preset, first_row)?,
        };
        if split_marker.is_some() {
            mapping.split_marker = split_marker;
        }
        if mapping.question.trim().is_empty() {
            return Err("the mapping names no question field".into());
        }
        if mapping.combined.is_some() && mapping.split_marker.as_deref().is_none_or(str::is_empty) {
            return Err("a combined thinking+answer field needs a split marker".into());
        }
        let (default_source, default_domain) = match preset {
            Preset::Gsm8k => ("gsm8k".to_string(), "math".to_string()),
            Preset::Math => ("math".to_string(), "math".to_string()),
            Preset::Canonical => (String::new(), String::new()),
            _ => (file_stem.to_string(), String::new()),
        };
        Ok(Self {
            preset,
            mapping,
            default_source,
            default_domain,
        })
    }

    /// Maps one row; the error names the field.
    pub fn map(&self, mut row: Map<String, Value>) -> Result<ExampleFields, String> {
        let m = &self.mapping;
        let question = take_text(&mut row, &m.question)?
            .ok_or_else(|| format!("field '{}' is missing", m.question))?;
        if question.trim().is_empty() {
            return Err(format!("field '{}' is empty", m.question));
        }
        let mut thinking = take_optional(&mut row, m.thinking.as_deref())?.unwrap_or_default();
        let mut answer = take_optional(&mut row, m.answer.as_deref())?.unwrap_or_default();
        let solution = take_optional(&mut row, m.solution.as_deref())?.filter(|s| !s.is_empty());
        if let (Some(column), Some(marker)) = (m.combined.as_deref(), m.split_marker.as_deref()) {
            let text = take_text(&mut row, column)?
                .ok_or_else(|| format!("field '{column}' is missing"))?;
            let (before, after) = split_at_marker(&text, marker)
                .ok_or_else(|| format!("field '{column}' has no '{marker}' marker"))?;
            if thinking.is_empty() {
                thinking = before;
            }
            if answer.is_empty() {
                answer = after;
            }
        }
        if answer.is_empty()
            && self.preset == Preset::Math
            && let Some(boxed) = solution.as_deref().and_then(last_boxed)
        {
            answer = boxed;
        }
        let source = take_optional(&mut row, m.source.as_deref())?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.default_source.clone());
        // Still's own export carries the rest of the row as a `metadata` object: unwrap it.
        if self.preset == Preset::Canonical
            && let Some(Value::Object(inner)) = row.remove("metadata")
        {
            for (k, v) in inner {
                row.entry(k).or_insert(v);
            }
        }
        let domain = take_optional(&mut row, m.domain.as_deref())?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.default_domain.clone());
        let tags = match m.tags.as_deref().and_then(|c| row.remove(c)) {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_tags(value, m.tags.as_deref().unwrap_or_default())?,
        };
        Ok(ExampleFields {
            question,
            thinking,
            answer,
            solution,
            source,
            domain,
            tags,
            metadata: Value::Object(row),
        })
    }
}

/// Splits at the last occurrence of `marker`, dropping the marker; both sides trimmed.
pub fn split_at_marker(text: &str, marker: &str) -> Option<(String, String)> {
    let at = text.rfind(marker)?;
    Some((
        text[..at].trim().to_string(),
        text[at + marker.len()..].trim().to_string(),
    ))
}

/// The content of the last `\boxed{…}` in `text`, braces balanced.
pub fn last_boxed(text: &str) -> Option<String> {
    still_engine::eval::last_boxed(text).map(|b| b.trim().to_string())
}

/// Removes `column` from the row and renders it as text; `Ok(None)` when absent or null.
fn take_text(row: &mut Map<String, Value>, column: &str) -> Result<Option<String>, String> {
    match row.remove(column) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        // s1K keeps its trace as a list of strings: join the parts.
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => parts.push(s),
                    other => {
                        return Err(format!(
                            "field '{column}' is a list with a non-text item ({other})"
                        ));
                    }
                }
            }
            Ok(Some(parts.join("\n\n")))
        }
        Some(Value::Object(_)) => Err(format!("field '{column}' is an object, expected text")),
    }
}

fn take_optional(
    row: &mut Map<String, Value>,
    column: Option<&str>,
) -> Result<Option<String>, String> {
    match column {
        Some(c) => take_text(row, c),
        None => Ok(None),
    }
}

fn parse_tags(value: Value, column: &str) -> Result<Vec<String>, String> {
    let raw: Vec<String> = match value {
        Value::String(s) => s.split([',', ';']).map(str::to_string).collect(),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(format!("field '{column}' has a non-text tag ({other})")),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "field '{column}' must be a list of tags, found {other}"
            ));
        }
    };
    let mut tags: Vec<String> = raw
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if let Some(long) = tags.iter().find(|t| t.chars().count() > 100) {
        return Err(format!(
            "field '{column}': tag '{long}' is longer than 100 characters"
        ));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn mapper_for(row: &Map<String, Value>) -> Mapper {
        Mapper::resolve(Preset::Auto, None, None, "file", row).unwrap()
    }

    #[test]
    fn canonical_rows_keep_their_metadata_object() {
        let row = obj(
            json!({"question": "Q", "thinking": "", "answer": "A", "solution": null, "source": "",
            "domain": "d", "tags": ["t"], "metadata": {"level": 2}}),
        );
        let mapper = mapper_for(&row);
        assert_eq!(mapper.preset, Preset::Canonical);
        let ex = mapper.map(row).unwrap();
        assert_eq!(
            (ex.source.as_str(), ex.domain.as_str(), ex.tags.clone()),
            ("", "d", vec!["t".to_string()])
        );
        assert_eq!(ex.metadata, json!({"level": 2}));
    }

    #[test]
    fn gsm8k_splits_the_final_number() {
        let row = obj(json!({"question": "Q?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}));
        let mapper = mapper_for(&row);
        assert_eq!(mapper.preset, Preset::Gsm8k);
        let ex = mapper.map(row).unwrap();
        assert_eq!(ex.thinking, "3 + 4 = <<3+4=7>>7");
        assert_eq!(ex.answer, "7");
        assert_eq!(ex.source, "gsm8k");
        assert_eq!(ex.metadata, json!({}));
    }

    #[test]
    fn gsm8k_row_without_marker_names_the_field() {
        let first = obj(json!({"question": "Q?", "answer": "#### 1"}));
        let mapper = mapper_for(&first);
        let err = mapper
            .map(obj(json!({"question": "Q?", "answer": "no marker"})))
            .unwrap_err();
        assert_eq!(err, "field 'answer' has no '####' marker");
    }

    #[test]
    fn s1k_maps_its_columns_and_keeps_metadata() {
        let row = obj(json!({
            "question": "Q", "thinking_trajectories": ["step 1", "step 2"], "attempt": "A",
            "solution": "S", "cot_type": "math", "source_type": "AI-MO/NuminaMath", "metadata": "{'k': 1}",
            "cot": null
        }));
        let mapper = mapper_for(&row);
        assert_eq!(mapper.preset, Preset::S1k);
        let ex = mapper.map(row).unwrap();
        assert_eq!(ex.thinking, "step 1\n\nstep 2");
        assert_eq!(ex.answer, "A");
        assert_eq!(ex.solution.as_deref(), Some("S"));
        assert_eq!(ex.domain, "math");
        assert_eq!(ex.source, "AI-MO/NuminaMath");
        assert_eq!(ex.metadata, json!({"metadata": "{'k': 1}", "cot": null}));
    }

    #[test]
    fn math_keeps_level_and_extracts_boxed_when_no_answer_column() {
        let row = obj(
            json!({"problem": "P", "solution": "so \\boxed{\\frac{1}{2}}.", "level": "Level 3", "type": "Algebra"}),
        );
        let mapper = mapper_for(&row);
        assert_eq!(mapper.preset, Preset::Math);
        let ex = mapper.map(row).unwrap();
        assert_eq!(ex.answer, "\\frac{1}{2}");
        assert_eq!(ex.domain, "Algebra");
        assert_eq!(ex.metadata, json!({"level": "Level 3"}));
    }

    #[test]
    fn traces_split_at_final_answer() {
        let row = obj(
            json!({"id": 3, "question": "Q", "solution": "Okay, so...\n**Final Answer**\n\\boxed{204}", "gold_answer": "204"}),
        );
        let mapper = mapper_for(&row);
        assert_eq!(mapper.preset, Preset::Traces);
        let ex = mapper.map(row).unwrap();
        assert_eq!(ex.thinking, "Okay, so...");
        assert_eq!(ex.answer, "\\boxed{204}");
        assert_eq!(ex.metadata, json!({"id": 3, "gold_answer": "204"}));
    }

    #[test]
    fn traces_without_a_marker_are_all_answer() {
        let row =
            obj(json!({"question": "Q", "solution": "So x = 2, \\boxed{2}", "gold_answer": "2"}));
        let ex = mapper_for(&row).map(row).unwrap();
        assert_eq!(ex.thinking, "");
        assert_eq!(ex.answer, "So x = 2, \\boxed{2}");
    }

    #[test]
    fn think_tags_are_detected_as_the_marker() {
        let row =
            obj(json!({"question": "Q", "solution": "<think>hmm</think>42", "gold_answer": "42"}));
        let ex = mapper_for(&row).map(row).unwrap();
        assert_eq!(ex.thinking, "<think>hmm");
        assert_eq!(ex.answer, "42");
    }

    #[test]
    fn generic_guess_and_clear_error_when_no_question() {
        let row = obj(json!({"prompt": "P", "response": "R", "tags": "a, b,a"}));
        let ex = mapper_for(&row).map(row).unwrap();
        assert_eq!((ex.question.as_str(), ex.answer.as_str()), ("P", "R"));
        assert_eq!(ex.tags, vec!["a", "b"]);
        let err =
            Mapper::resolve(Preset::Auto, None, None, "f", &obj(json!({"x": 1}))).unwrap_err();
        assert!(err.contains("no question field found"), "{err}");
    }

    #[test]
    fn hand_mapping_wins_and_type_errors_name_the_field() {
        let row = obj(json!({"q": {"nested": true}, "a": "1"}));
        let hand = FieldMapping {
            question: "q".into(),
            answer: Some("a".into()),
            ..Default::default()
        };
        let mapper = Mapper::resolve(Preset::Generic, Some(hand), None, "f", &row).unwrap();
        assert_eq!(
            mapper.map(row).unwrap_err(),
            "field 'q' is an object, expected text"
        );
        let ok = mapper.map(obj(json!({"q": 12, "a": 3}))).unwrap();
        assert_eq!((ok.question.as_str(), ok.answer.as_str()), ("12", "3"));
    }

    #[test]
    fn boxed_handles_nested_braces() {
        assert_eq!(
            last_boxed("\\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}").as_deref(),
            Some("\\left( 3, \\frac{\\pi}{2} \\right)")
        );
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
    }
}
