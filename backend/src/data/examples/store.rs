//! The examples' storage: inserts (one row, or an import's batches with their counts and
//! search index), the paginated and searchable table, edits, tags and the trash.

use std::collections::HashMap;

use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use still_api::{
    COUNT_CAP, Example, ExampleFields, ExamplePage, ExamplePatch, ExampleQuery, ExampleRow,
    HIT_END, HIT_START, PREVIEW_CHARS,
};

use crate::data::datasets;
use crate::error::{Error, Result};

/// Longest tag, in characters (also a CHECK in the schema).
pub const MAX_TAG_CHARS: usize = 100;
/// Largest page of the examples table.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

fn lengths(fields: &ExampleFields) -> (i64, i64, i64, i64) {
    let bytes = fields.question.len()
        + fields.thinking.len()
        + fields.answer.len()
        + fields.solution.as_deref().map_or(0, str::len);
    (
        ExampleFields::word_count(&fields.question),
        ExampleFields::word_count(&fields.thinking),
        ExampleFields::word_count(&fields.answer),
        bytes as i64,
    )
}

fn check_tag(tag: &str) -> Result<String> {
    let tag = tag.trim();
    if tag.is_empty() {
        return Err(Error::BadRequest("tag: must not be empty".into()));
    }
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(Error::BadRequest(format!(
            "tag: longer than {MAX_TAG_CHARS} characters"
        )));
    }
    Ok(tag.to_string())
}

/// Stores one example (and its tags) in the caller's transaction; returns its id.
pub async fn insert(
    db: &mut SqliteConnection,
    dataset_id: i64,
    import_id: Option<i64>,
    record_no: Option<i64>,
    fields: &ExampleFields,
) -> Result<i64> {
    let (qw, tw, aw, n_bytes) = lengths(fields);
    let metadata =
        serde_json::to_string(&fields.metadata).map_err(|e| Error::Internal(e.to_string()))?;
    let id = sqlx::query(
        "INSERT INTO examples (dataset_id, import_id, record_no, question, thinking, answer, solution, \
         source, domain, metadata, question_words, thinking_words, answer_words, n_bytes) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(dataset_id)
    .bind(import_id)
    .bind(record_no)
    .bind(&fields.question)
    .bind(&fields.thinking)
    .bind(&fields.answer)
    .bind(&fields.solution)
    .bind(&fields.source)
    .bind(&fields.domain)
    .bind(metadata)
    .bind(qw)
    .bind(tw)
    .bind(aw)
    .bind(n_bytes)
    .execute(&mut *db)
    .await?
    .last_insert_rowid();
    for tag in &fields.tags {
        let tag = check_tag(tag)?;
        sqlx::query("INSERT OR IGNORE INTO example_tags (example_id, tag) VALUES (?, ?)")
            .bind(id)
            .bind(tag)
            .execute(&mut *db)
            .await?;
    }
    Ok(id)
}

/// What an import adds to `example_counts` and the search index itself: the insert triggers skip
/// rows that carry an import id, because per-row trigger calls were most of a large import's time.
#[derive(Debug, Default)]
pub struct ImportedRows {
    lengths: HashMap<(&'static str, i64), i64>,
    facets: HashMap<(&'static str, String), i64>,
}

impl ImportedRows {
    /// Counts one stored row (tagged or not).
    pub fn add(&mut self, fields: &ExampleFields) {
        let (qw, tw, aw, _) = lengths(fields);
        for key in [
            ("question_words", qw),
            ("thinking_words", tw),
            ("answer_words", aw),
        ] {
            *self.lengths.entry(key).or_default() += 1;
        }
        for key in [("source", &fields.source), ("domain", &fields.domain)] {
            *self.facets.entry((key.0, key.1.clone())).or_default() += 1;
        }
    }

    /// Indexes the import's rows (ids above `after_id`) for search and adds their counts, in the
    /// import's transaction.
    pub async fn finish(
        self,
        db: &mut SqliteConnection,
        dataset_id: i64,
        import_id: i64,
        after_id: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO examples_fts (rowid, question, thinking, answer) \
             SELECT id, question, thinking, answer FROM examples WHERE id > ? AND import_id = ?",
        )
        .bind(after_id)
        .bind(import_id)
        .execute(&mut *db)
        .await?;
        let lengths = self
            .lengths
            .into_iter()
            .map(|((f, v), n)| (f, CountValue::Int(v), n));
        let facets = self
            .facets
            .into_iter()
            .map(|((f, v), n)| (f, CountValue::Text(v), n));
        let all: Vec<_> = lengths.chain(facets).collect();
        for chunk in all.chunks(200) {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO example_counts (dataset_id, facet, value, n) ",
            );
            query.push_values(chunk, |mut b, (facet, value, n)| {
                b.push_bind(dataset_id).push_bind(*facet);
                match value {
                    CountValue::Int(v) => b.push_bind(*v),
                    CountValue::Text(v) => b.push_bind(v.as_str()),
                };
                b.push_bind(*n);
            });
            query.push(" ON CONFLICT (dataset_id, facet, value) DO UPDATE SET n = n + excluded.n");
            query.build().execute(&mut *db).await?;
        }
        Ok(())
    }
}

enum CountValue {
    Int(i64),
    Text(String),
}

/// Rows per multi-row INSERT of an import (14 values each, well under SQLite's variable limit).
pub const INSERT_BATCH: usize = 64;

/// Stores untagged examples in the caller's transaction with one statement per batch: the
/// per-statement cost (a round trip to the database thread) is paid once per batch, not per row.
pub async fn insert_batch(
    db: &mut SqliteConnection,
    dataset_id: i64,
    import_id: Option<i64>,
    rows: &[(i64, ExampleFields)],
) -> Result<()> {
    debug_assert!(rows.iter().all(|(_, f)| f.tags.is_empty()));
    for batch in rows.chunks(INSERT_BATCH) {
        let mut metadata = Vec::with_capacity(batch.len());
        for (_, fields) in batch {
            metadata.push(
                serde_json::to_string(&fields.metadata)
                    .map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO examples (dataset_id, import_id, record_no, question, thinking, answer, solution, \
             source, domain, metadata, question_words, thinking_words, answer_words, n_bytes) ",
        );
        query.push_values(
            batch.iter().zip(metadata),
            |mut b, ((record_no, fields), meta)| {
                let (qw, tw, aw, n_bytes) = lengths(fields);
                b.push_bind(dataset_id)
                    .push_bind(import_id)
                    .push_bind(*record_no)
                    .push_bind(fields.question.as_str())
                    .push_bind(fields.thinking.as_str())
                    .push_bind(fields.answer.as_str())
                    .push_bind(fields.solution.as_deref())
                    .push_bind(fields.source.as_str())
                    .push_bind(fields.domain.as_str())
                    .push_bind(meta)
                    .push_bind(qw)
                    .push_bind(tw)
                    .push_bind(aw)
                    .push_bind(n_bytes);
            },
        );
        query.build().execute(&mut *db).await?;
    }
    Ok(())
}

#[derive(FromRow)]
pub(crate) struct ExampleRecord {
    id: i64,
    dataset_id: i64,
    question: String,
    thinking: String,
    answer: String,
    solution: Option<String>,
    source: String,
    domain: String,
    metadata: String,
    deleted_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl ExampleRecord {
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn into_example(self, tags: Vec<String>) -> Example {
        Example {
            id: self.id,
            dataset_id: self.dataset_id,
            fields: ExampleFields {
                question: self.question,
                thinking: self.thinking,
                answer: self.answer,
                solution: self.solution,
                source: self.source,
                domain: self.domain,
                tags,
                metadata: serde_json::from_str(&self.metadata).unwrap_or_default(),
            },
            deleted_at: self.deleted_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub(crate) const EXAMPLE_COLUMNS: &str = "id, dataset_id, question, thinking, answer, solution, \
     source, domain, metadata, deleted_at, created_at, updated_at";

async fn tags_of(pool: &SqlitePool, ids: &[i64]) -> Result<HashMap<i64, Vec<String>>> {
    let mut out: HashMap<i64, Vec<String>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT example_id, tag FROM example_tags WHERE example_id IN (",
    );
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(id);
    }
    q.push(") ORDER BY example_id, tag");
    for (id, tag) in q.build_query_as::<(i64, String)>().fetch_all(pool).await? {
        out.entry(id).or_default().push(tag);
    }
    Ok(out)
}

/// Loads one example with its tags.
pub async fn load(pool: &SqlitePool, id: i64) -> Result<Example> {
    let record: ExampleRecord = sqlx::query_as(&format!(
        "SELECT {EXAMPLE_COLUMNS} FROM examples WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found(format!("example {id}")))?;
    let tags = tags_of(pool, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(record.into_example(tags))
}

/// Turns what a user typed into an FTS5 query: every word must match, quoted so that FTS5
/// operators and punctuation in the text are taken literally.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[derive(FromRow)]
struct RowRecord {
    id: i64,
    question: String,
    answer: String,
    question_words: i64,
    thinking_words: i64,
    answer_words: i64,
    source: String,
    domain: String,
    deleted_at: Option<String>,
    snippet: Option<String>,
}

/// Appends the filters shared by the page query and the count query.
fn push_filters(
    q: &mut QueryBuilder<'_, Sqlite>,
    dataset_id: i64,
    query: &ExampleQuery,
    search: &Option<String>,
) {
    if let Some(search) = search {
        q.push(" WHERE examples_fts MATCH ")
            .push_bind(search.clone());
        q.push(" AND e.dataset_id = ").push_bind(dataset_id);
    } else {
        q.push(" WHERE e.dataset_id = ").push_bind(dataset_id);
    }
    if query.deleted.unwrap_or(false) {
        q.push(" AND e.deleted_at IS NOT NULL");
    } else {
        q.push(" AND e.deleted_at IS NULL");
    }
    if let Some(source) = query.source.as_deref().filter(|s| !s.is_empty()) {
        q.push(" AND e.source = ").push_bind(source.to_string());
    }
    if let Some(domain) = query.domain.as_deref().filter(|s| !s.is_empty()) {
        q.push(" AND e.domain = ").push_bind(domain.to_string());
    }
    if let Some(tag) = query.tag.as_deref().filter(|s| !s.is_empty()) {
        q.push(" AND e.id IN (SELECT example_id FROM example_tags WHERE tag = ")
            .push_bind(tag.to_string())
            .push(")");
    }
}

/// One page of a dataset's examples (keyset pagination on id), optionally searched and filtered.
pub async fn page(pool: &SqlitePool, dataset_id: i64, query: &ExampleQuery) -> Result<ExamplePage> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::BadRequest(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        )));
    }
    if query.after.is_some() && query.before.is_some() {
        return Err(Error::BadRequest(
            "give either 'after' or 'before', not both".into(),
        ));
    }
    let search = query.q.as_deref().and_then(fts_query);
    // With a search the FTS table drives the query in rowid order (CROSS JOIN fixes SQLite's join
    // order), so the first page stops early instead of probing the index once per row.
    let id_col = if search.is_some() {
        "examples_fts.rowid"
    } else {
        "e.id"
    };
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT e.id, substr(e.question, 1, {PREVIEW_CHARS}) AS question, \
         substr(e.answer, 1, {PREVIEW_CHARS}) AS answer, e.question_words, e.thinking_words, \
         e.answer_words, e.source, e.domain, e.deleted_at, "
    ));
    if search.is_some() {
        q.push(format!(
            "snippet(examples_fts, -1, char({}), char({}), '…', 24) AS snippet \
             FROM examples_fts CROSS JOIN examples e ON e.id = examples_fts.rowid",
            HIT_START as u32, HIT_END as u32
        ));
    } else {
        q.push("NULL AS snippet FROM examples e");
    }
    push_filters(&mut q, dataset_id, query, &search);
    let backwards = query.before.is_some();
    if let Some(after) = query.after {
        q.push(format!(" AND {id_col} > ")).push_bind(after);
    }
    if let Some(before) = query.before {
        q.push(format!(" AND {id_col} < ")).push_bind(before);
    }
    q.push(format!(
        " ORDER BY {id_col} {} LIMIT ",
        if backwards { "DESC" } else { "ASC" }
    ))
    .push_bind(limit as i64 + 1);
    let mut records: Vec<RowRecord> =
        q.build_query_as()
            .fetch_all(pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.message().contains("fts5") => {
                    Error::BadRequest(format!("search query: {}", db.message()))
                }
                _ => Error::Database(e),
            })?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    if backwards {
        records.reverse();
    }
    let first = records.first().map(|r| r.id);
    let last = records.last().map(|r| r.id);
    let (next_after, prev_before) = if backwards {
        (last, if has_more { first } else { None })
    } else {
        (if has_more { last } else { None }, query.after.and(first))
    };

    let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM (SELECT 1");
    if search.is_some() {
        count.push(" FROM examples_fts CROSS JOIN examples e ON e.id = examples_fts.rowid");
    } else {
        count.push(" FROM examples e");
    }
    push_filters(&mut count, dataset_id, query, &search);
    count.push(" LIMIT ").push_bind(COUNT_CAP + 1).push(")");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    let mut tags = tags_of(pool, &ids).await?;
    let items = records
        .into_iter()
        .map(|r| ExampleRow {
            id: r.id,
            tags: tags.remove(&r.id).unwrap_or_default(),
            question: r.question,
            answer: r.answer,
            question_words: r.question_words,
            thinking_words: r.thinking_words,
            answer_words: r.answer_words,
            source: r.source,
            domain: r.domain,
            deleted_at: r.deleted_at,
            snippet: r.snippet,
        })
        .collect();
    Ok(ExamplePage {
        items,
        next_after,
        prev_before,
        total: total.min(COUNT_CAP),
        total_capped: total > COUNT_CAP,
    })
}

/// Applies an edit: changed text fields, lengths and tags, in one transaction.
pub async fn apply_patch(pool: &SqlitePool, id: i64, patch: &ExamplePatch) -> Result<Example> {
    let current = load(pool, id).await?;
    if current.deleted_at.is_some() {
        return Err(Error::Conflict(format!(
            "example {id} is in the trash; restore it before editing"
        )));
    }
    let mut fields = current.fields.clone();
    if let Some(q) = &patch.question {
        if q.trim().is_empty() {
            return Err(Error::BadRequest("question: must not be empty".into()));
        }
        fields.question = q.clone();
    }
    if let Some(t) = &patch.thinking {
        fields.thinking = t.clone();
    }
    if let Some(a) = &patch.answer {
        fields.answer = a.clone();
    }
    if let Some(s) = &patch.solution {
        fields.solution = (!s.is_empty()).then(|| s.clone());
    }
    if let Some(s) = &patch.source {
        fields.source = s.clone();
    }
    if let Some(d) = &patch.domain {
        fields.domain = d.clone();
    }
    let (qw, tw, aw, n_bytes) = lengths(&fields);
    let mut db = crate::db::write_tx(pool).await?;
    sqlx::query(
        "UPDATE examples SET question = ?, thinking = ?, answer = ?, solution = ?, source = ?, domain = ?, \
         question_words = ?, thinking_words = ?, answer_words = ?, n_bytes = ?, \
         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
    )
    .bind(&fields.question)
    .bind(&fields.thinking)
    .bind(&fields.answer)
    .bind(&fields.solution)
    .bind(&fields.source)
    .bind(&fields.domain)
    .bind(qw)
    .bind(tw)
    .bind(aw)
    .bind(n_bytes)
    .bind(id)
    .execute(&mut *db)
    .await?;
    if let Some(tags) = &patch.tags {
        sqlx::query("DELETE FROM example_tags WHERE example_id = ?")
            .bind(id)
            .execute(&mut *db)
            .await?;
        for tag in tags {
            sqlx::query("INSERT OR IGNORE INTO example_tags (example_id, tag) VALUES (?, ?)")
                .bind(id)
                .bind(check_tag(tag)?)
                .execute(&mut *db)
                .await?;
        }
    }
    datasets::store::touch(&mut db, current.dataset_id).await?;
    db.commit().await?;
    load(pool, id).await
}

/// Runs one statement that may change a live row of `dataset_id`; when it changed one, the
/// dataset's revision moves on in the same transaction.
async fn change_rows<'q>(
    pool: &SqlitePool,
    dataset_id: i64,
    statement: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<()> {
    let mut db = crate::db::write_tx(pool).await?;
    if statement.execute(&mut *db).await?.rows_affected() > 0 {
        datasets::store::touch(&mut db, dataset_id).await?;
    }
    db.commit().await?;
    Ok(())
}

/// Moves an example to the trash (`deleted`) or back out of it.
pub async fn set_deleted(
    pool: &SqlitePool,
    dataset_id: i64,
    id: i64,
    deleted: bool,
) -> Result<Example> {
    let sql = if deleted {
        "UPDATE examples SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ? AND deleted_at IS NULL"
    } else {
        "UPDATE examples SET deleted_at = NULL WHERE id = ? AND deleted_at IS NOT NULL"
    };
    change_rows(pool, dataset_id, sqlx::query(sql).bind(id)).await?;
    load(pool, id).await
}

/// Adds a tag to an example (one it already has changes nothing).
pub async fn add_tag(pool: &SqlitePool, dataset_id: i64, id: i64, tag: &str) -> Result<Example> {
    let tag = check_tag(tag)?;
    let insert = sqlx::query("INSERT OR IGNORE INTO example_tags (example_id, tag) VALUES (?, ?)")
        .bind(id)
        .bind(tag);
    change_rows(pool, dataset_id, insert).await?;
    load(pool, id).await
}

/// Removes a tag from an example.
pub async fn remove_tag(pool: &SqlitePool, dataset_id: i64, id: i64, tag: &str) -> Result<Example> {
    let delete = sqlx::query("DELETE FROM example_tags WHERE example_id = ? AND tag = ?")
        .bind(id)
        .bind(tag.trim().to_string());
    change_rows(pool, dataset_id, delete).await?;
    load(pool, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_query_quotes_every_word() {
        assert_eq!(fts_query("  "), None);
        assert_eq!(
            fts_query("sum of \"x"),
            Some("\"sum\" \"of\" \"\"\"x\"".into())
        );
        assert_eq!(fts_query("a-b OR"), Some("\"a-b\" \"OR\"".into()));
    }
}
