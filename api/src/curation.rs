//! Curation: the s1 selection pipeline as a recipe of stages over a dataset version, each stage's
//! output an immutable version of the curation's output dataset; version diffs and lineage.

use serde::{Deserialize, Serialize};

use crate::{DatasetVersion, ExampleFields, LengthStats};

/// `POST /api/curations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewCuration {
    /// The source dataset (id or name); its current version is pinned.
    pub dataset: String,
    /// `"s1"`, a saved recipe's name, or the stages themselves.
    pub recipe: RecipeRef,
    /// The diversity stage's target size (overrides the recipe's).
    #[serde(default)]
    pub target: Option<u32>,
    /// Seed of the diversity stage's sampling (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Eval datasets the decontamination stage checks against (overrides the recipe's; with the
    /// s1 preset, no list means no decontamination stage).
    #[serde(default)]
    pub decontaminate_against: Option<Vec<String>>,
    /// Registry models the difficulty stage evaluates (overrides the recipe's; with the s1
    /// preset, no list means no difficulty stage).
    #[serde(default)]
    pub difficulty_models: Option<Vec<String>>,
    /// The curation's name; also names its output dataset (default: `<dataset>-curated-<id>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A recipe by name, or inline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RecipeRef {
    Named(String),
    Inline(Recipe),
}

/// An ordered list of stages; each one's input is the previous one's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub stages: Vec<Stage>,
    /// Counts trace tokens: `"qwen2.5"` (built in, the default) or a registry model's name
    /// (its `tokenizer.json`).
    #[serde(default)]
    pub tokenizer: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    Quality(QualityStage),
    Difficulty(DifficultyStage),
    Diversity(DiversityStage),
    Decontamination(DecontaminationStage),
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Quality(_) => "quality",
            Stage::Difficulty(_) => "difficulty",
            Stage::Diversity(_) => "diversity",
            Stage::Decontamination(_) => "decontamination",
        }
    }
}

/// A row field a rule reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Question,
    Thinking,
    Answer,
    Solution,
}

fn yes() -> bool {
    true
}

fn default_required() -> Vec<Field> {
    vec![Field::Question, Field::Answer]
}

/// Row rules; a row is dropped by the first rule (in this order) that matches it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QualityStage {
    /// Fields that must not be empty (or whitespace).
    #[serde(default = "default_required")]
    pub required_fields: Vec<Field>,
    /// Drop rows whose thinking or answer holds an API's error text.
    #[serde(default = "yes")]
    pub api_errors: bool,
    /// Drop questions that reference an image (`![`, `[asy]`, `<img`, `\includegraphics`).
    #[serde(default = "yes")]
    pub image_refs: bool,
    /// Drop questions with numbering artefacts (`p1.` at the start of a line).
    #[serde(default = "yes")]
    pub numbering_artifacts: bool,
    /// Drop traces with fewer tokens than this.
    #[serde(default)]
    pub min_trace_tokens: Option<u32>,
    /// Drop traces with more tokens than this.
    #[serde(default)]
    pub max_trace_tokens: Option<u32>,
    /// Drop later copies of a question (equal after collapsing whitespace).
    #[serde(default = "yes")]
    pub exact_duplicates: bool,
    /// Drop later near-copies of a question (MinHash over word shingles, verified exactly).
    #[serde(default)]
    pub near_duplicates: Option<NearDuplicates>,
}

impl Default for QualityStage {
    fn default() -> Self {
        Self {
            required_fields: default_required(),
            api_errors: true,
            image_refs: true,
            numbering_artifacts: true,
            min_trace_tokens: None,
            max_trace_tokens: None,
            exact_duplicates: true,
            near_duplicates: Some(NearDuplicates::default()),
        }
    }
}

fn default_threshold() -> f64 {
    0.8
}
fn default_shingle() -> u32 {
    3
}
fn default_perm() -> u32 {
    128
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NearDuplicates {
    /// Jaccard similarity of the questions' word-shingle sets at or above which a later question
    /// is a near-duplicate.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Words per shingle.
    #[serde(default = "default_shingle")]
    pub shingle_words: u32,
    /// MinHash permutations (the LSH bands are chosen from them and the threshold).
    #[serde(default = "default_perm")]
    pub num_perm: u32,
}

impl Default for NearDuplicates {
    fn default() -> Self {
        Self {
            threshold: default_threshold(),
            shingle_words: default_shingle(),
            num_perm: default_perm(),
        }
    }
}

fn default_difficulty_budget() -> u32 {
    1024
}

/// Drop the rows a reference model already solves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DifficultyStage {
    /// Registry models (ids or names), each evaluated greedily on the stage's input.
    #[serde(default)]
    pub models: Vec<String>,
    /// Their thinking budget.
    #[serde(default = "default_difficulty_budget")]
    pub max_thinking_tokens: u32,
    /// Tokens of answer after the thinking (default 256, as an eval's).
    #[serde(default)]
    pub max_answer_tokens: Option<u32>,
    /// The answer preset the grader uses (default `math`).
    #[serde(default)]
    pub preset: Option<String>,
    /// Keep only rows whose trace is longer than this many tokens (s1's proxy for hardness).
    #[serde(default)]
    pub min_trace_tokens: Option<u32>,
}

fn default_target() -> u32 {
    1000
}

/// Sample domains uniformly, within a domain by 2^(−rank) of trace length.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiversityStage {
    pub domain: DomainSource,
    #[serde(default = "default_target")]
    pub target: u32,
    /// Rows with this tag are always kept (they count towards the target).
    #[serde(default)]
    pub keep_tag: Option<String>,
}

/// Where a row's domain comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum DomainSource {
    /// `domain`, `source`, or a metadata key (`subject`, `metadata.type`, …).
    Field(String),
    /// The first listed domain with the most keyword hits in the question (lowercased); rows
    /// with none go to `fallback`.
    Keywords {
        domains: Vec<KeywordDomain>,
        #[serde(default = "other")]
        fallback: String,
    },
}

fn other() -> String {
    "other".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeywordDomain {
    pub domain: String,
    pub keywords: Vec<String>,
}

fn default_ngram() -> u32 {
    8
}

/// Drop rows whose question shares a word n-gram with an eval dataset's question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecontaminationStage {
    /// Eval datasets (ids or names); their current versions are read.
    #[serde(default)]
    pub against: Vec<String>,
    #[serde(default = "default_ngram")]
    pub n: u32,
}

/// How many rows one rule matches (on its own, or as the first matching rule).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleCount {
    pub rule: String,
    pub n: i64,
}

/// `POST /api/curations/preview`: a quality stage's rules over a dataset's current rows, before
/// anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QualityPreviewRequest {
    pub dataset: String,
    #[serde(default)]
    pub quality: QualityStage,
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// The diversity stage's domain source, counted over every row (the `domain` field when
    /// absent).
    #[serde(default)]
    pub domain: Option<DomainSource>,
    /// The diversity stage's keep tag: the preview says how many rows carry it.
    #[serde(default)]
    pub keep_tag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QualityPreview {
    pub n_rows: i64,
    /// Per rule, the rows it matches on its own (duplicates: later copies among all rows).
    pub rules: Vec<RuleCount>,
    /// Rows the whole stage removes.
    pub n_removed: i64,
    pub trace_tokens: LengthStats,
    /// Every row's domain under the request's domain source, most rows first.
    #[serde(default)]
    pub domains: Vec<DomainCount>,
    /// Rows carrying the keep tag (always kept by the diversity stage); 0 without one.
    #[serde(default)]
    pub n_keep_tagged: i64,
}

/// One stage of a curation, as it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurationStageSummary {
    pub index: i64,
    pub name: String,
    pub n_in: i64,
    pub n_out: i64,
    /// The output dataset's version holding the stage's output.
    pub version: Option<i64>,
    /// Rows dropped per rule (the first rule that matched).
    pub rules: Vec<RuleCount>,
    /// The stage output's domains (the diversity stage's domain source, else the `domain`
    /// field) with their row counts.
    pub domains: Vec<DomainCount>,
    /// The stage output's trace lengths in tokens.
    pub trace_tokens: Option<LengthStats>,
    /// The difficulty stage's evals.
    #[serde(default)]
    pub evals: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainCount {
    pub domain: String,
    pub n: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurationOutput {
    /// The output dataset's name.
    pub dataset: String,
    pub dataset_id: i64,
    pub version: i64,
    pub content_hash: String,
    pub n_rows: i64,
}

/// `GET /api/curations/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurationSummary {
    pub id: i64,
    pub name: String,
    /// `queued`, `running`, `waiting` (on the difficulty stage's evals), `succeeded`, `failed`
    /// or `cancelled`.
    pub status: String,
    pub dataset_id: i64,
    pub dataset_name: String,
    pub source_version: i64,
    pub source_rows: i64,
    /// The recipe as it ran (a preset expanded, the request's overrides applied).
    pub recipe: Recipe,
    /// The named recipe it came from (`s1` or a saved one).
    pub recipe_name: Option<String>,
    pub seed: u64,
    /// The source's domains and trace lengths, before any stage.
    pub source_domains: Vec<DomainCount>,
    pub source_trace_tokens: Option<LengthStats>,
    pub stages: Vec<CurationStageSummary>,
    pub output: Option<CurationOutput>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// `GET /api/curations/{id}/drops`: one dropped row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DroppedRow {
    pub stage: i64,
    pub stage_name: String,
    /// The row's position in the source version.
    pub ordinal: i64,
    pub rule: String,
    /// Why, in words (the row it duplicates, the shared n-grams, the model that solved it).
    pub detail: String,
    pub fields: ExampleFields,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DroppedPage {
    pub total: i64,
    pub rows: Vec<DroppedRow>,
}

/// A saved recipe (`GET /api/recipes`, `POST /api/recipes {"name", "recipe"}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedRecipe {
    pub name: String,
    pub recipe: Recipe,
    #[serde(default)]
    pub created_at: String,
}

/// A row of a version diff.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiffRow {
    /// Its position in version a (removed, changed) or b (added).
    pub ordinal: i64,
    pub fields: ExampleFields,
}

/// A row present in both versions (the same example) with other contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangedRow {
    pub example_id: i64,
    pub before: DiffRow,
    pub after: DiffRow,
    /// The fields that differ.
    pub fields: Vec<String>,
}

/// `GET /api/datasets/{dataset}/versions/{a}/diff/{b}`: rows are matched by the example they
/// were taken from, then by content; counts are exact, the lists capped at `limit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionDiff {
    pub a: DatasetVersion,
    pub b: DatasetVersion,
    pub n_added: i64,
    pub n_removed: i64,
    pub n_changed: i64,
    pub n_unchanged: i64,
    pub added: Vec<DiffRow>,
    pub removed: Vec<DiffRow>,
    pub changed: Vec<ChangedRow>,
}

/// What made a version and what used it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionLineage {
    pub dataset_id: i64,
    pub dataset_name: String,
    pub version: DatasetVersion,
    pub made_by: Option<MadeBy>,
    pub runs: Vec<LineageUse>,
    pub evals: Vec<LineageUse>,
    pub curations: Vec<LineageUse>,
    pub generations: Vec<LineageUse>,
}

/// The curation stage that cut a version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MadeBy {
    pub curation_id: i64,
    pub curation_name: String,
    pub stage: i64,
    pub stage_name: String,
    pub recipe_name: Option<String>,
    pub recipe: Recipe,
    pub source_dataset_id: i64,
    pub source_dataset_name: String,
    pub source_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LineageUse {
    pub id: i64,
    pub name: String,
    pub status: Option<String>,
}
