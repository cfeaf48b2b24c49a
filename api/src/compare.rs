//! Comparing runs: `GET /api/compare` (every selected run's config, metric summaries and
//! downsampled curves, and the config fields side by side) and saved comparisons
//! (`/api/comparisons`), which a link or a share can name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RunSummary;

/// Most runs one comparison holds (a limit on the request, checked before anything is read).
pub const MAX_COMPARE_RUNS: usize = 1000;
/// Points per curve when the request names none.
pub const DEFAULT_COMPARE_POINTS: usize = 1000;
/// Most points per curve a request may ask for.
pub const MAX_COMPARE_POINTS: usize = 20_000;
/// Largest `settings` object a saved comparison keeps, in bytes of JSON.
pub const MAX_COMPARISON_SETTINGS_BYTES: usize = 16 * 1024;

/// `GET /api/compare?runs=…`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// In the order the request named them.
    pub runs: Vec<ComparedRun>,
    /// Every metric any of the runs recorded, sorted.
    pub metrics: Vec<String>,
    /// Every config field of any run, with each run's value (null where it has none).
    pub config: Vec<ConfigRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComparedRun {
    pub run: RunSummary,
    /// One per recorded metric (all of them, whatever `metrics` asked for), by name.
    pub summary: Vec<MetricSummary>,
    /// The asked-for metrics' curves, downsampled (each bucket's smallest and largest value,
    /// and the true first and last points).
    pub curves: Vec<Curve>,
}

/// One metric's curve as two columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Curve {
    pub name: String,
    pub steps: Vec<i64>,
    pub values: Vec<f64>,
}

/// A run's final, smallest, largest and best value of one metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricSummary {
    pub name: String,
    /// Points recorded.
    pub n: i64,
    pub last_step: i64,
    /// The value at the last step (what the run ended on, or is at now).
    pub last: f64,
    pub min: f64,
    pub min_step: i64,
    pub max: f64,
    pub max_step: i64,
    /// `min` or `max`, by [`higher_is_better`].
    pub best: f64,
}

/// Whether a larger value of a metric is the better one (accuracy, throughput); losses, norms
/// and everything else count smaller as better.
pub fn higher_is_better(metric: &str) -> bool {
    metric.contains("accuracy") || metric.ends_with("_per_s") || metric == "epoch"
}

/// One config field across the compared runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigRow {
    /// `method`, `model`, `teacher`, `dataset`, `dataset_version`, or `config.<path>`.
    pub field: String,
    /// One per run, in the runs' order.
    pub values: Vec<serde_json::Value>,
    /// Whether the runs' values are not all equal.
    pub differs: bool,
}

/// A run's config as flat fields: what it trains and on what, then every engine setting as
/// `config.<dotted path>` (arrays whole).
pub fn config_fields(
    run: &RunSummary,
    teacher: Option<&str>,
) -> BTreeMap<String, serde_json::Value> {
    use serde_json::Value;
    let mut out = BTreeMap::new();
    out.insert("method".into(), Value::from(run.method.as_str()));
    out.insert("model".into(), Value::from(run.model.as_str()));
    out.insert("teacher".into(), teacher.map_or(Value::Null, Value::from));
    out.insert("dataset".into(), Value::from(run.dataset.as_str()));
    out.insert(
        "dataset_version".into(),
        Value::from(format!(
            "v{} {}",
            run.dataset_version,
            short(&run.dataset_version_hash)
        )),
    );
    fn walk(prefix: String, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(format!("{prefix}.{k}"), v, out);
                }
            }
            v => {
                out.insert(prefix, v.clone());
            }
        }
    }
    walk("config".into(), &run.config, &mut out);
    out
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The rows of a config diff: every field any run has, each run's value, whether they differ.
/// Fields come in the order of [`config_fields`]' first five, then sorted.
pub fn config_rows(runs: &[BTreeMap<String, serde_json::Value>]) -> Vec<ConfigRow> {
    const HEAD: [&str; 5] = ["method", "model", "teacher", "dataset", "dataset_version"];
    let mut fields: Vec<&str> = HEAD.to_vec();
    let mut rest: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.keys().map(String::as_str))
        .filter(|k| !HEAD.contains(k))
        .collect();
    rest.sort_unstable();
    rest.dedup();
    fields.extend(rest);
    fields
        .into_iter()
        .map(|field| {
            let values: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| r.get(field).cloned().unwrap_or(serde_json::Value::Null))
                .collect();
            let differs = values.windows(2).any(|w| w[0] != w[1]);
            ConfigRow {
                field: field.to_string(),
                values,
                differs,
            }
        })
        .collect()
}

/// `POST /api/comparisons`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewComparison {
    pub name: String,
    /// Run ids or names.
    pub runs: Vec<String>,
    /// One of `runs` (id or name), whose values the others are measured against.
    #[serde(default)]
    pub baseline: Option<String>,
    /// The page's view (metrics, smoothing, x-axis, …), kept as given.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
}

/// A saved comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedComparison {
    pub id: i64,
    pub name: String,
    /// Run ids, in the saved order; runs deleted since are in `missing` instead.
    pub runs: Vec<i64>,
    #[serde(default)]
    pub missing: Vec<i64>,
    pub baseline: Option<i64>,
    pub settings: serde_json::Value,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn config_rows_mark_the_fields_that_differ_and_fill_missing_ones_with_null() {
        let a: BTreeMap<String, Value> = [("method", json!("sft")), ("config.lr", json!(1e-5))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut b = a.clone();
        b.insert("config.lr".into(), json!(2e-5));
        b.insert("config.kd.alpha".into(), json!(0.5));
        let rows = config_rows(&[a, b]);
        let row = |f: &str| rows.iter().find(|r| r.field == f).unwrap();
        assert!(!row("method").differs);
        assert!(row("config.lr").differs);
        assert_eq!(row("config.kd.alpha").values, vec![Value::Null, json!(0.5)]);
        assert!(row("config.kd.alpha").differs);
        assert_eq!(rows[0].field, "method");
        assert!(higher_is_better("eval_accuracy") && higher_is_better("tokens_per_s"));
        assert!(!higher_is_better("loss") && !higher_is_better("grad_norm"));
    }
}
