//! The model registry's storage: models as `ModelSummary` (by id or name, the team's list, a
//! server-side model's folder), name checks, `insert_model` (the one place a model row is
//! written), a scratch model's final path, a run's final model, and the dataset text a new
//! tokenizer is trained on.

use std::path::PathBuf;

use sqlx::{FromRow, SqliteConnection, SqlitePool};
use still_api::ModelSummary;

use crate::error::{Error, Result, on_unique};

/// The suffix of the model a finished run registers (`<run>-final`).
pub const FINAL_SUFFIX: &str = "-final";

#[derive(FromRow)]
struct ModelRow {
    id: i64,
    name: String,
    origin: String,
    path: String,
    run_id: Option<i64>,
    n_params: i64,
    vocab_size: i64,
    created_at: String,
    arch: String,
    format: String,
}

impl From<ModelRow> for ModelSummary {
    fn from(r: ModelRow) -> Self {
        ModelSummary {
            id: r.id,
            name: r.name,
            origin: r.origin,
            path: r.path,
            run_id: r.run_id,
            n_params: r.n_params,
            vocab_size: r.vocab_size,
            created_at: r.created_at,
            arch: r.arch,
            format: r.format,
        }
    }
}

const MODEL_COLUMNS: &str =
    "id, name, origin, path, run_id, n_params, vocab_size, created_at, arch, format";

/// The folder of a server-side model (a worker downloads its files); a model that lives on
/// workers' disks has none.
pub async fn model_path(pool: &SqlitePool, model_id: i64) -> Result<PathBuf> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT path, origin, name FROM models WHERE id = ?")
            .bind(model_id)
            .fetch_optional(pool)
            .await?;
    let (path, origin, name) = row.ok_or_else(|| Error::not_found(format!("model {model_id}")))?;
    if origin == "worker" {
        return Err(Error::NotFound(format!(
            "model '{name}' lives on workers' disks, not on the server: start the worker with \
             --models-dir DIR where DIR/{name} is its folder"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Refuses a generation-only model (another architecture, or GGUF) where the engine must run it:
/// `field` names the request's field, `instead` what the user can do with it.
pub fn engine_model(model: &ModelSummary, field: &str, instead: &str) -> Result<()> {
    if model.generation_only() {
        return Err(Error::Unprocessable(format!(
            "{field}: '{}' is a generation-only model ({} in {}): the engine trains, distils from \
             and evaluates Qwen2 safetensors models only; {instead}",
            model.name, model.arch, model.format
        )));
    }
    Ok(())
}

/// Finds a model of the team by id or name.
pub async fn resolve_model(
    pool: &SqlitePool,
    team_id: i64,
    reference: &str,
) -> Result<ModelSummary> {
    let select = format!("SELECT {MODEL_COLUMNS} FROM models");
    let row: ModelRow =
        crate::db::by_id_or_name(pool, &select, "", team_id, reference, "model").await?;
    Ok(row.into())
}

/// A run as the registry knows it: its id, name, and the final model it made (if yet).
#[derive(Debug, Clone, FromRow)]
pub struct RunOutput {
    pub id: i64,
    pub name: String,
    pub output_model_id: Option<i64>,
}

/// The run of the team named by id or name, with its final model (for "evaluate a run").
pub async fn run_output(pool: &SqlitePool, team_id: i64, reference: &str) -> Result<RunOutput> {
    crate::db::by_id_or_name(
        pool,
        "SELECT id, name, output_model_id FROM runs",
        "",
        team_id,
        reference,
        "run",
    )
    .await
}

/// The team's models, newest first.
pub async fn list(pool: &SqlitePool, team: i64) -> Result<Vec<ModelSummary>> {
    let rows: Vec<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE team_id = ? ORDER BY id DESC"
    ))
    .bind(team)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The servable models (Qwen2 safetensors) that live on workers' disks and that worker `worker`
/// registered as having.
pub async fn worker_model_ids(pool: &SqlitePool, worker: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT m.id FROM workers w, json_each(w.models) j JOIN models m ON m.name = j.value \
         WHERE w.id = ? AND m.origin = 'worker' AND m.arch = 'qwen2' AND m.format = 'safetensors' \
         ORDER BY m.id",
    )
    .bind(worker)
    .fetch_all(pool)
    .await?)
}

/// The dataset text a new tokenizer is trained on: live rows in id order, up to `budget` bytes.
pub(crate) async fn tokenizer_texts(
    pool: &SqlitePool,
    dataset_id: i64,
    budget: usize,
) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let (mut after, mut used) = (0i64, 0usize);
    loop {
        let page: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, question || char(10) || thinking || char(10) || answer || char(10) || coalesce(solution, '') \
             FROM examples WHERE dataset_id = ? AND deleted_at IS NULL AND id > ? ORDER BY id LIMIT 500",
        )
        .bind(dataset_id)
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some((last, _)) = page.last() else {
            return Ok(texts);
        };
        after = *last;
        for (_, text) in page {
            used += text.len();
            if used > budget && !texts.is_empty() {
                return Ok(texts);
            }
            texts.push(text);
        }
    }
}

/// Whether the team already has a model of that name.
pub async fn name_taken<'e, E>(db: E, team: i64, name: &str) -> Result<bool>
where
    E: sqlx::SqliteExecutor<'e>,
{
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT id FROM models WHERE team_id = ? AND name = ?")
            .bind(team)
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(taken.is_some())
}

/// What a refused name says (a 409's message).
pub fn taken_message(name: &str) -> String {
    format!("name: a model named '{name}' already exists")
}

/// What the registry records about a model's weights.
pub struct ModelFacts {
    pub n_params: i64,
    pub vocab_size: i64,
    /// The HF `config.json` (a GGUF's metadata), or `{}` when unknown.
    pub config: String,
    /// `qwen2` (the engine's own), `qwen3` or `llama`.
    pub arch: &'static str,
    /// `safetensors` or `gguf`.
    pub format: &'static str,
}

impl From<&still_engine::hf::Inspected> for ModelFacts {
    fn from(inspected: &still_engine::hf::Inspected) -> Self {
        Self {
            n_params: inspected.n_params as i64,
            vocab_size: inspected.config.vocab_size as i64,
            config: inspected.config.to_hf_json().to_string(),
            arch: "qwen2",
            format: "safetensors",
        }
    }
}

impl From<&still_teacher::Inspected> for ModelFacts {
    fn from(inspected: &still_teacher::Inspected) -> Self {
        Self {
            n_params: inspected.n_params as i64,
            vocab_size: inspected.vocab_size as i64,
            config: inspected.config.to_string(),
            arch: inspected.arch.as_str(),
            format: inspected.format.as_str(),
        }
    }
}

/// Inserts a model row (the one place a model is registered) and returns it.
pub async fn insert_model(
    db: &mut SqliteConnection,
    team: i64,
    name: &str,
    origin: &str,
    path: &str,
    run_id: Option<i64>,
    facts: &ModelFacts,
) -> Result<ModelSummary> {
    let row: ModelRow = sqlx::query_as(&format!(
        "INSERT INTO models (team_id, name, origin, path, run_id, n_params, vocab_size, config, \
         arch, format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {MODEL_COLUMNS}"
    ))
    .bind(team)
    .bind(name)
    .bind(origin)
    .bind(path)
    .bind(run_id)
    .bind(facts.n_params)
    .bind(facts.vocab_size)
    .bind(&facts.config)
    .bind(facts.arch)
    .bind(facts.format)
    .fetch_one(&mut *db)
    .await
    .map_err(|e| on_unique(e, || taken_message(name)))?;
    Ok(row.into())
}

/// Points a model at its folder (a scratch model, once its files are moved into place).
pub async fn set_path(db: &mut SqliteConnection, model_id: i64, path: &str) -> Result<()> {
    sqlx::query("UPDATE models SET path = ? WHERE id = ?")
        .bind(path)
        .bind(model_id)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Registers a finished run's final model (in the completing transaction): `<run>-final`, or,
/// when another model already has that name, `<run>-final-run<id>` (the run name shortened to
/// fit the name limit). Never re-points a model that is not this run's; a retried completion
/// finds the run's own model again.
pub async fn register_final(
    db: &mut SqliteConnection,
    team: i64,
    run_id: i64,
    run_name: &str,
    dir: &std::path::Path,
    inspected: &still_engine::hf::Inspected,
) -> Result<ModelSummary> {
    let path = dir.to_string_lossy().into_owned();
    let own: Option<ModelRow> = sqlx::query_as(&format!(
        "UPDATE models SET path = ? WHERE team_id = ? AND run_id = ? AND origin = 'run' RETURNING {MODEL_COLUMNS}"
    ))
    .bind(&path)
    .bind(team)
    .bind(run_id)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(row) = own {
        return Ok(row.into());
    }
    let fit = |suffix: &str| -> String {
        let room = crate::names::MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
        let base: String = run_name.chars().take(room).collect();
        format!("{base}{suffix}")
    };
    let mut candidates = vec![
        fit(FINAL_SUFFIX),
        fit(&format!("{FINAL_SUFFIX}-run{run_id}")),
    ];
    candidates.extend((2..100).map(|n| fit(&format!("{FINAL_SUFFIX}-run{run_id}-{n}"))));
    for name in candidates {
        if !name_taken(&mut *db, team, &name).await? {
            return insert_model(
                db,
                team,
                &name,
                "run",
                &path,
                Some(run_id),
                &inspected.into(),
            )
            .await;
        }
    }
    Err(Error::Conflict(format!(
        "run {run_id}: every name for its final model is taken"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_tokenizer_reads_rows_only_up_to_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("still.db")).await.unwrap();
        let mut db = crate::db::write_tx(&pool).await.unwrap();
        let dataset = crate::data::datasets::store::create_or_find(
            &mut db,
            crate::DEFAULT_TEAM,
            "d",
            still_api::ImportMode::Create,
        )
        .await
        .unwrap();
        for i in 0..100 {
            let row = still_api::ExampleFields {
                question: format!("q{i:02} {}", "x".repeat(1000)),
                ..Default::default()
            };
            crate::data::examples::store::insert(&mut db, dataset, None, None, &row)
                .await
                .unwrap();
        }
        db.commit().await.unwrap();
        // Each row's text is 1,007 bytes: a 10,000-byte budget takes the first nine, in order.
        let texts = tokenizer_texts(&pool, dataset, 10_000).await.unwrap();
        assert_eq!(texts.len(), 9);
        assert!(texts[8].starts_with("q08 "));
        assert!(texts.iter().map(String::len).sum::<usize>() <= 10_000);
        // A first row larger than the budget is still taken (a tokenizer needs some text).
        assert_eq!(tokenizer_texts(&pool, dataset, 10).await.unwrap().len(), 1);
    }
}
