//! The datasets' storage: lookup by id or name, the dataset an import writes to, revisions,
//! summaries, deletion, import records, and statistics from the kept counts.

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::{
    DatasetStats, DatasetSummary, ImportMode, ImportRecord, ImportReport, LengthStats,
};

use crate::error::{Error, Result, on_unique};

#[derive(Debug, Clone, FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
}

/// Finds a dataset of the team by id or by name.
pub async fn resolve(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<DatasetRow> {
    crate::db::by_id_or_name(
        pool,
        "SELECT id, team_id, name FROM datasets",
        "",
        team_id,
        reference,
        "dataset",
    )
    .await
}

/// Refuses access to a dataset of another team (a 404: other teams' ids are not disclosed).
pub async fn check_team(pool: &SqlitePool, dataset_id: i64, team_id: i64) -> Result<()> {
    let owner: Option<i64> = sqlx::query_scalar("SELECT team_id FROM datasets WHERE id = ?")
        .bind(dataset_id)
        .fetch_optional(pool)
        .await?;
    match owner {
        Some(t) if t == team_id => Ok(()),
        _ => Err(Error::not_found(format!("dataset {dataset_id}"))),
    }
}

/// In the caller's transaction: the dataset an import writes to.
pub async fn create_or_find(
    db: &mut SqliteConnection,
    team_id: i64,
    name: &str,
    mode: ImportMode,
) -> Result<i64> {
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT id FROM datasets WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(&mut *db)
            .await?;
    match (existing, mode) {
        (Some(id), ImportMode::Append) => Ok(id),
        (Some(_), ImportMode::Create) => Err(Error::Conflict(format!(
            "name: a dataset named '{name}' already exists (import with mode=append to add rows to it)"
        ))),
        (None, _) => {
            sqlx::query_scalar("INSERT INTO datasets (team_id, name) VALUES (?, ?) RETURNING id")
                .bind(team_id)
                .bind(name)
                .fetch_one(&mut *db)
                .await
                .map_err(|e| {
                    on_unique(e, || {
                        format!("name: a dataset named '{name}' already exists")
                    })
                })
        }
    }
}

/// Marks a dataset's live rows as changed (a new revision): the next run cuts a new version.
pub async fn touch(db: &mut SqliteConnection, dataset_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE datasets SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
         revision = revision + 1 WHERE id = ?",
    )
    .bind(dataset_id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct SummaryRow {
    id: i64,
    name: String,
    description: String,
    team_id: i64,
    n_rows: i64,
    n_deleted: i64,
    size_bytes: i64,
    n_versions: i64,
    created_at: String,
    updated_at: String,
}

const SUMMARY_SELECT: &str = "SELECT d.id, d.name, d.description, d.team_id, \
     (SELECT count(*) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NULL) AS n_rows, \
     (SELECT count(*) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NOT NULL) AS n_deleted, \
     (SELECT coalesce(sum(n_bytes), 0) FROM examples e WHERE e.dataset_id = d.id AND e.deleted_at IS NULL) AS size_bytes, \
     (SELECT count(*) FROM dataset_versions v WHERE v.dataset_id = d.id) AS n_versions, \
     d.created_at, d.updated_at FROM datasets d";

impl From<SummaryRow> for DatasetSummary {
    fn from(r: SummaryRow) -> Self {
        DatasetSummary {
            id: r.id,
            name: r.name,
            description: r.description,
            team_id: r.team_id,
            n_rows: r.n_rows,
            n_deleted: r.n_deleted,
            size_bytes: r.size_bytes,
            n_versions: r.n_versions,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Every dataset of a team, newest first.
pub async fn list(pool: &SqlitePool, team_id: i64) -> Result<Vec<DatasetSummary>> {
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "{SUMMARY_SELECT} WHERE d.team_id = ? ORDER BY d.id DESC"
    ))
    .bind(team_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn summary(pool: &SqlitePool, dataset_id: i64) -> Result<DatasetSummary> {
    let row: SummaryRow = sqlx::query_as(&format!("{SUMMARY_SELECT} WHERE d.id = ?"))
        .bind(dataset_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("dataset {dataset_id}")))?;
    Ok(row.into())
}

/// Deletes a dataset with its rows and versions, unless a run trains on it.
/// Deletes a dataset with its rows and versions, unless something depends on it: a run, an
/// eval or a trace generation that pinned one of its versions (they keep meaning the same data),
/// a generation still writing into it, or a curation still reading or writing it (cancel it
/// first). The refusal names them; nothing is deleted.
pub async fn delete(pool: &SqlitePool, row: &DatasetRow) -> Result<()> {
    let mut db = crate::db::write_tx(pool).await?;
    let users: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'run', name FROM runs WHERE dataset_id = ?1
         UNION ALL SELECT 'eval', name FROM evals WHERE dataset_id = ?1
         UNION ALL SELECT 'generation', name FROM generations WHERE dataset_id = ?1
            OR (output_dataset_id = ?1 AND EXISTS (SELECT 1 FROM jobs
                WHERE jobs.generation_id = generations.id AND jobs.status IN ('queued', 'running')))
         UNION ALL SELECT 'curation', name FROM curations
            WHERE (dataset_id = ?1 OR output_dataset_id = ?1)
              AND status IN ('queued', 'running', 'waiting')
         LIMIT 4",
    )
    .bind(row.id)
    .fetch_all(&mut *db)
    .await?;
    if !users.is_empty() {
        let named = users
            .iter()
            .take(3)
            .map(|(kind, name)| format!("{kind} '{name}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let running = users
            .iter()
            .any(|(k, _)| k == "curation" || k == "generation");
        return Err(Error::Conflict(format!(
            "dataset '{}' is used by {named}{}: {} first",
            row.name,
            if users.len() > 3 { " and more" } else { "" },
            if running {
                "cancel or delete them"
            } else {
                "delete them"
            }
        )));
    }
    sqlx::query("DELETE FROM datasets WHERE id = ?")
        .bind(row.id)
        .execute(&mut *db)
        .await?;
    db.commit().await?;
    Ok(())
}

/// The reports of a dataset's imports, newest first.
pub async fn imports(pool: &SqlitePool, dataset_id: i64) -> Result<Vec<ImportRecord>> {
    let records: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, report FROM imports WHERE dataset_id = ? ORDER BY id DESC")
            .bind(dataset_id)
            .fetch_all(pool)
            .await?;
    let mut out = Vec::with_capacity(records.len());
    for (id, report) in records {
        let report: ImportReport = serde_json::from_str(&report)
            .map_err(|e| Error::Internal(format!("import {id} has an unreadable report: {e}")))?;
        out.push(ImportRecord { id, report });
    }
    Ok(out)
}

/// Bins for a length histogram: equal width over [0, p99] plus everything above in the last bin.
/// `counts` holds (length, number of rows with it), sorted by length, without zero counts.
pub fn length_stats(field: &str, counts: &[(i64, i64)], n_bins: usize) -> LengthStats {
    let n: i64 = counts.iter().map(|c| c.1).sum();
    // The value at 0-based rank `r` of the sorted lengths.
    let at_rank = |r: i64| -> i64 {
        let mut seen = 0;
        for &(value, k) in counts {
            seen += k;
            if seen > r {
                return value;
            }
        }
        0
    };
    let pct = |p: f64| -> i64 {
        if n == 0 {
            0
        } else {
            at_rank(((p * (n - 1) as f64).round() as i64).min(n - 1))
        }
    };
    let max = counts.last().map_or(0, |c| c.0);
    let top = pct(0.99).max(1);
    let width = (top + n_bins as i64 - 1) / n_bins as i64;
    let width = width.max(1);
    let mut edges: Vec<i64> = (0..=n_bins as i64).map(|i| i * width).collect();
    if let Some(last) = edges.last_mut() {
        *last = (*last).max(max);
    }
    let mut bins = vec![0i64; n_bins];
    for &(value, k) in counts {
        bins[((value / width) as usize).min(n_bins - 1)] += k;
    }
    LengthStats {
        field: field.to_string(),
        min: counts.first().map_or(0, |c| c.0),
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        max,
        mean: if n == 0 {
            0.0
        } else {
            counts.iter().map(|&(v, k)| v * k).sum::<i64>() as f64 / n as f64
        },
        edges,
        counts: bins,
    }
}

/// Length histograms and facet counts over a dataset's live rows, from the counts kept with the
/// rows (`example_counts`): a few hundred rows read, however large the dataset.
pub async fn stats(pool: &SqlitePool, dataset_id: i64) -> Result<DatasetStats> {
    let lengths_of = |facet: &'static str| async move {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT value, n FROM example_counts WHERE dataset_id = ? AND facet = ? AND n > 0 \
             ORDER BY value",
        )
        .bind(dataset_id)
        .bind(facet)
        .fetch_all(pool)
        .await
    };
    let question = lengths_of("question_words").await?;
    let thinking = lengths_of("thinking_words").await?;
    let answer = lengths_of("answer_words").await?;
    let n_rows = question.iter().map(|c| c.1).sum();
    let lengths = vec![
        length_stats("question", &question, 20),
        length_stats("thinking", &thinking, 20),
        length_stats("answer", &answer, 20),
    ];
    let facet = |facet: &'static str| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT value, n FROM example_counts WHERE dataset_id = ? AND facet = ? AND n > 0 \
             ORDER BY n DESC, value LIMIT 100",
        )
        .bind(dataset_id)
        .bind(facet)
        .fetch_all(pool)
        .await
    };
    let sources = facet("source").await?;
    let domains = facet("domain").await?;
    let tags: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.tag, count(*) FROM example_tags t JOIN examples e ON e.id = t.example_id \
         WHERE e.dataset_id = ? AND e.deleted_at IS NULL GROUP BY t.tag ORDER BY count(*) DESC, t.tag LIMIT 200",
    )
    .bind(dataset_id)
    .fetch_all(pool)
    .await?;
    Ok(DatasetStats {
        dataset_id,
        n_rows,
        unit: "words".into(),
        lengths,
        sources,
        domains,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_from_counts_equals_the_one_from_values() {
        // 3 x 4 words, 1 x 10, 6 x 2: sorted 2,2,2,2,2,2,4,4,4,10.
        let stats = length_stats("t", &[(2, 6), (4, 3), (10, 1)], 5);
        assert_eq!((stats.min, stats.p50, stats.p90, stats.max), (2, 2, 4, 10));
        assert_eq!(stats.mean, 3.4);
        assert_eq!(stats.counts.iter().sum::<i64>(), 10);
        let empty = length_stats("t", &[], 5);
        assert_eq!(
            (empty.min, empty.p50, empty.max, empty.mean),
            (0, 0, 0, 0.0)
        );
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let counts: Vec<(i64, i64)> = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]
            .into_iter()
            .map(|v| (v, 1))
            .collect();
        let stats = length_stats("q", &counts, 5);
        assert_eq!(stats.counts.iter().sum::<i64>(), 11);
        assert_eq!(stats.max, 1000);
        assert_eq!(*stats.edges.last().unwrap(), 1000);
        assert_eq!(stats.p50, 5);
        assert_eq!(stats.min, 0);
    }

    /// The statistics a full scan of the live rows gives (what `stats` computed before the
    /// counts were kept with the rows).
    async fn stats_by_scan(pool: &SqlitePool, dataset_id: i64) -> DatasetStats {
        let rows: Vec<(i64, i64, i64, String, String)> = sqlx::query_as(
            "SELECT question_words, thinking_words, answer_words, source, domain FROM examples \
             WHERE dataset_id = ? AND deleted_at IS NULL",
        )
        .bind(dataset_id)
        .fetch_all(pool)
        .await
        .unwrap();
        fn counted<K: Ord + Clone>(values: impl Iterator<Item = K>) -> Vec<(K, i64)> {
            let mut map = std::collections::BTreeMap::<K, i64>::new();
            for v in values {
                *map.entry(v).or_default() += 1;
            }
            map.into_iter().collect()
        }
        let facet = |values: Vec<String>| {
            let mut c = counted(values.into_iter());
            c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            c.truncate(100);
            c
        };
        let mut full = stats(pool, dataset_id).await.unwrap();
        full.n_rows = rows.len() as i64;
        full.lengths = vec![
            length_stats("question", &counted(rows.iter().map(|r| r.0)), 20),
            length_stats("thinking", &counted(rows.iter().map(|r| r.1)), 20),
            length_stats("answer", &counted(rows.iter().map(|r| r.2)), 20),
        ];
        full.sources = facet(rows.iter().map(|r| r.3.clone()).collect());
        full.domains = facet(rows.iter().map(|r| r.4.clone()).collect());
        full
    }

    #[tokio::test]
    async fn counts_kept_with_the_rows_match_a_full_scan_after_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("still.db")).await.unwrap();
        let write = |name: &str, rows: std::ops::Range<usize>| {
            let path = dir.path().join(name);
            let mut text = String::new();
            for i in rows {
                let source = ["amc", "aime", "123"][i % 3];
                let row = serde_json::json!({
                    "question": format!("question {i} {}", "word ".repeat(i % 7)),
                    "thinking": format!("think{} {}", i / 10, "step ".repeat(i % 13)),
                    "answer": "x ".repeat(1 + i % 3),
                    "source": source,
                    "domain": if i % 4 == 0 { "algebra" } else { "geometry" },
                    "tags": if i % 9 == 0 { vec!["hard"] } else { vec![] },
                });
                text.push_str(&format!("{row}\n"));
            }
            std::fs::write(&path, text).unwrap();
            path
        };
        let import = |path: std::path::PathBuf, mode: ImportMode| {
            let pool = pool.clone();
            async move {
                let opts = crate::data::import::ImportOptions {
                    dataset: "d".into(),
                    mode,
                    ..Default::default()
                };
                crate::data::import::import_file(
                    &pool,
                    crate::DEFAULT_TEAM,
                    &path,
                    "rows.jsonl",
                    &opts,
                )
                .await
                .unwrap()
            }
        };
        let check = |step: &'static str| {
            let pool = pool.clone();
            async move {
                let id: i64 = sqlx::query_scalar("SELECT id FROM datasets WHERE name = 'd'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let kept = stats(&pool, id).await.unwrap();
                assert_eq!(kept, stats_by_scan(&pool, id).await, "after {step}");
                (id, kept)
            }
        };

        let report = import(write("a.jsonl", 0..200), ImportMode::Create).await;
        assert_eq!(report.n_imported, 200);
        let (id, kept) = check("the import").await;
        assert_eq!(kept.n_rows, 200);
        // A source that reads as a number stays text.
        assert!(
            kept.sources.contains(&("123".to_string(), 66)),
            "{:?}",
            kept.sources
        );

        let mut db = crate::db::write_tx(&pool).await.unwrap();
        let fields = still_api::ExampleFields {
            question: "added by hand".into(),
            source: "manual".into(),
            ..Default::default()
        };
        let added = crate::data::examples::store::insert(&mut db, id, None, None, &fields)
            .await
            .unwrap();
        db.commit().await.unwrap();
        check("a row added by hand").await;

        let patch = still_api::ExamplePatch {
            thinking: Some("a much longer trace than before ".repeat(20)),
            source: Some("edited".into()),
            ..Default::default()
        };
        crate::data::examples::store::apply_patch(&pool, added - 5, &patch)
            .await
            .unwrap();
        check("an edit").await;

        sqlx::query("UPDATE examples SET deleted_at = 'now' WHERE dataset_id = ? AND id % 5 = 0")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        let (_, trashed) = check("moving rows to the trash").await;
        assert!(trashed.n_rows < 201);
        sqlx::query("UPDATE examples SET deleted_at = NULL WHERE dataset_id = ? AND id % 10 = 0")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        check("restoring some").await;
        let zeros = || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM example_counts WHERE dataset_id = ? AND n = 0",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        // The only "edited" row goes to the trash: its source's count falls to 0.
        sqlx::query("UPDATE examples SET deleted_at = 'now' WHERE id = ?")
            .bind(added - 5)
            .execute(&pool)
            .await
            .unwrap();
        check("trashing the edited row").await;
        assert!(zeros().await > 0, "the trash left a count at 0");
        crate::data::versions::store::create(&pool, id, "v1")
            .await
            .unwrap();
        check("a version cut (the trash emptied)").await;
        assert_eq!(zeros().await, 0, "counts at 0 go with the trash");

        import(write("b.jsonl", 200..260), ImportMode::Append).await;
        let (_, appended) = check("an appending import").await;
        // The import indexed its own rows for search: a word only the new rows have.
        let query = still_api::ExampleQuery {
            q: Some("think25".into()),
            ..Default::default()
        };
        let found = crate::data::examples::store::page(&pool, id, &query)
            .await
            .unwrap();
        assert_eq!(found.total, 10, "rows 250..260 mention think25");
        let hand = still_api::ExampleQuery {
            q: Some("hand".into()),
            ..Default::default()
        };
        assert_eq!(
            crate::data::examples::store::page(&pool, id, &hand)
                .await
                .unwrap()
                .total,
            1
        );

        sqlx::query("DELETE FROM datasets WHERE id = ?")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM example_counts")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((left, appended.n_rows > 200), (0, true));
    }
}
