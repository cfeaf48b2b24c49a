//! The canonical example: one question with its reasoning trace and answer.

use serde::{Deserialize, Serialize};

/// The canonical fields of an example, as imported, exported and trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExampleFields {
    pub question: String,
    /// The reasoning trace (may be empty).
    #[serde(default)]
    pub thinking: String,
    /// The final answer.
    #[serde(default)]
    pub answer: String,
    /// A reference solution, when the source has one.
    #[serde(default)]
    pub solution: Option<String>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The rest of the source row.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Default for ExampleFields {
    fn default() -> Self {
        Self {
            question: String::new(),
            thinking: String::new(),
            answer: String::new(),
            solution: None,
            source: String::new(),
            domain: String::new(),
            tags: Vec::new(),
            metadata: empty_object(),
        }
    }
}

/// A stored example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub id: i64,
    pub dataset_id: i64,
    #[serde(flatten)]
    pub fields: ExampleFields,
    /// Set while the example is in the trash.
    pub deleted_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl ExampleFields {
    /// The s1K shape of this example (for export back to s1K tooling).
    pub fn to_s1k_json(&self) -> serde_json::Value {
        let original_metadata = self
            .metadata
            .get("metadata")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "question": self.question,
            "thinking_trajectories": [self.thinking],
            "attempt": self.answer,
            "solution": self.solution,
            "cot_type": self.domain,
            "source_type": self.source,
            "metadata": original_metadata,
        })
    }

    /// Counts runs of non-whitespace characters: the length unit Still uses until a dataset
    /// names a tokenizer.
    pub fn word_count(text: &str) -> i64 {
        text.split_whitespace().count() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_defaults_missing_fields() {
        let fields: ExampleFields = serde_json::from_str(r#"{"question":"1+1?"}"#).unwrap();
        assert_eq!(fields.question, "1+1?");
        assert_eq!(fields.thinking, "");
        assert_eq!(fields.metadata, serde_json::json!({}));
    }

    #[test]
    fn default_metadata_is_an_empty_object() {
        assert_eq!(ExampleFields::default().metadata, serde_json::json!({}));
    }

    #[test]
    fn s1k_shape_wraps_thinking_in_a_list() {
        let fields = ExampleFields {
            question: "q".into(),
            thinking: "t".into(),
            answer: "a".into(),
            domain: "math".into(),
            metadata: serde_json::json!({"metadata": "{'x': 1}"}),
            ..Default::default()
        };
        let v = fields.to_s1k_json();
        assert_eq!(v["thinking_trajectories"], serde_json::json!(["t"]));
        assert_eq!(v["attempt"], "a");
        assert_eq!(v["cot_type"], "math");
        assert_eq!(v["metadata"], "{'x': 1}");
    }

    #[test]
    fn word_count_splits_on_any_whitespace() {
        assert_eq!(ExampleFields::word_count("  a b\n\tc "), 3);
        assert_eq!(ExampleFields::word_count(""), 0);
    }
}
