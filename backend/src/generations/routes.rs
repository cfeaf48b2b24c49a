//! The generations API: start one (pinning the source version, making the output dataset and
//! queueing its job in one transaction), list them, read one's counts, page through its rows,
//! cancel it, read its log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::{
    GenerationRow, GenerationSettings, GenerationSummary, Keep, NewGeneration, TeacherInfo,
};

use super::store::{self, GenerationRowDb, NewGenerationRow, RowFilter};
use crate::AppState;
use crate::data::{datasets, versions};
use crate::error::{ApiJson, Error, Result};
use crate::http::Team;
use crate::jobs::queue::{self, Owner};
use crate::names::validate_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/generations", get(list).post(create))
        .route("/api/generations/{generation}", get(get_one))
        .route("/api/generations/{generation}/rows", get(get_rows))
        .route("/api/generations/{generation}/cancel", post(cancel))
        .route("/api/generations/{generation}/logs", get(get_logs))
}

/// Limits of one generation.
pub const MAX_SAMPLES: u32 = 16;
pub const MAX_TOKENS: u32 = 131_072;
pub const DEFAULT_MAX_TOKENS: u32 = 4_096;
pub const MAX_CONCURRENCY: u32 = 64;
pub const MAX_TIMEOUT_SECONDS: u32 = 3_600;
pub const MAX_RETRIES: u32 = 20;
pub const MAX_TEMPLATE_CHARS: usize = 20_000;
pub const MAX_URL_CHARS: usize = 2_000;
pub const MAX_KEY_CHARS: usize = 4_096;
/// Where the question goes in a prompt template.
pub const QUESTION: &str = "{question}";

/// A request's teacher and settings, checked before anything is looked up or stored.
pub struct Checked {
    settings: GenerationSettings,
    base_url: Option<String>,
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// An endpoint's base URL: `http(s)://host[:port][/path]`, without a trailing slash (requests
/// go to `{base_url}/chat/completions`).
pub fn check_base_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.len() > MAX_URL_CHARS {
        return Err(bad(format!(
            "teacher.base_url: longer than {MAX_URL_CHARS} characters"
        )));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            bad(format!(
                "teacher.base_url: '{url}' does not start with http:// or https://"
            ))
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!(
            "teacher.base_url: '{url}' has no host, or has spaces in it"
        )));
    }
    if url.ends_with("/chat/completions") {
        return Err(bad(format!(
            "teacher.base_url: give the API's base (e.g. http://host:8000/v1), not '{url}': \
             /chat/completions is added"
        )));
    }
    Ok(url.to_string())
}

/// Checks a generation request's teacher, template, sampling and limits.
pub fn check_request(body: &NewGeneration) -> Result<Checked> {
    if body.teacher.model.trim().is_empty() {
        return Err(bad(
            "teacher.model: name a registry model, or an endpoint's model with teacher.base_url"
                .into(),
        ));
    }
    let base_url = body
        .teacher
        .base_url
        .as_deref()
        .map(check_base_url)
        .transpose()?;
    match (&base_url, &body.teacher.api_key) {
        (None, Some(_)) => {
            return Err(bad(
                "teacher.api_key: a key goes with teacher.base_url (a registry model needs none)"
                    .into(),
            ));
        }
        (Some(_), Some(key)) if key.len() > MAX_KEY_CHARS || key.contains(['\n', '\r']) => {
            return Err(bad(format!(
                "teacher.api_key: at most {MAX_KEY_CHARS} characters on one line"
            )));
        }
        _ => {}
    }
    let prompt = body.prompt.clone().unwrap_or_else(|| QUESTION.to_string());
    if !prompt.contains(QUESTION) {
        return Err(bad(format!(
            "prompt: the template has no {QUESTION} for the question to go in"
        )));
    }
    for (field, text) in [("prompt", Some(&prompt)), ("system", body.system.as_ref())] {
        if let Some(text) = text
            && text.chars().count() > MAX_TEMPLATE_CHARS
        {
            return Err(bad(format!(
                "{field}: longer than {MAX_TEMPLATE_CHARS} characters"
            )));
        }
    }
    let n = body.n.unwrap_or(1);
    if !(1..=MAX_SAMPLES).contains(&n) {
        return Err(bad(format!("n: {n} is not in 1..={MAX_SAMPLES}")));
    }
    let temperature = body.temperature.unwrap_or(if n > 1 { 0.7 } else { 0.0 });
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad(format!("temperature: {temperature} is not in 0..=2")));
    }
    if n > 1 && temperature == 0.0 {
        return Err(bad(format!(
            "temperature: {n} samples at temperature 0 would be the same trace {n} times; \
             set it above 0"
        )));
    }
    let top_p = body.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad(format!("top_p: {top_p} is not in (0, 1]")));
    }
    let max_tokens = body.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_TOKENS).contains(&max_tokens) {
        return Err(bad(format!(
            "max_tokens: {max_tokens} is not in 1..={MAX_TOKENS}"
        )));
    }
    if let Some(m) = body.max_thinking_tokens
        && !(1..=MAX_TOKENS).contains(&m)
    {
        return Err(bad(format!(
            "max_thinking_tokens: {m} is not in 1..={MAX_TOKENS}"
        )));
    }
    let preset: still_engine::eval::Preset = body
        .preset
        .as_deref()
        .unwrap_or("math")
        .parse()
        .map_err(|e: String| bad(format!("preset: {e}")))?;
    let concurrency = body.concurrency.unwrap_or(4);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(bad(format!(
            "concurrency: {concurrency} is not in 1..={MAX_CONCURRENCY}"
        )));
    }
    let timeout_seconds = body.timeout_seconds.unwrap_or(600);
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout_seconds) {
        return Err(bad(format!(
            "timeout_seconds: {timeout_seconds} is not in 1..={MAX_TIMEOUT_SECONDS}"
        )));
    }
    let max_retries = body.max_retries.unwrap_or(6);
    if max_retries > MAX_RETRIES {
        return Err(bad(format!(
            "max_retries: {max_retries} is above {MAX_RETRIES}"
        )));
    }
    if body.limit == Some(0) {
        return Err(bad("limit: ask about at least 1 row".into()));
    }
    Ok(Checked {
        settings: GenerationSettings {
            prompt,
            system: body.system.clone().filter(|s| !s.trim().is_empty()),
            n,
            temperature,
            top_p,
            seed: body.seed.unwrap_or(0),
            max_tokens,
            max_thinking_tokens: body.max_thinking_tokens,
            keep: body.keep.unwrap_or_default(),
            preset: preset.as_str().to_string(),
            concurrency,
            timeout_seconds,
            max_retries,
        },
        base_url,
    })
}

/// A free name: `base`, else `base (2)`, `base (3)`, …
async fn free_name<F, Fut>(base: &str, taken: F) -> Result<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let mut name = base.to_string();
    let mut n = 1;
    while taken(name.clone()).await? {
        n += 1;
        name = format!("{base} ({n})");
    }
    Ok(name)
}

async fn create(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewGeneration>,
) -> Result<(StatusCode, Json<GenerationSummary>)> {
    let team = team.id();
    let checked = check_request(&body)?;
    let id = start(&state, team, &body, checked).await?;
    let row = store::load(&state.db, team, &id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(summary(&state, row).await?)))
}

/// Starts a generation as `body` asks (checked by [`check_request`]): the source dataset's
/// current version pinned, the output dataset made, the generation stored and its job queued,
/// all in one transaction but the pin. Returns its id.
pub async fn start(
    state: &AppState,
    team: i64,
    body: &NewGeneration,
    checked: Checked,
) -> Result<i64> {
    let Checked { settings, base_url } = checked;
    let dataset = datasets::store::resolve(&state.db, team, &body.dataset).await?;
    let (kind, teacher_model, model) = match &base_url {
        Some(_) => ("openai", body.teacher.model.trim().to_string(), None),
        None => {
            let model = crate::models::resolve_model(&state.db, team, body.teacher.model.trim())
                .await
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::not_found(format!(
                        "teacher.model: no registry model '{}' (give teacher.base_url for a model \
                         an endpoint serves)",
                        body.teacher.model.trim()
                    )),
                    e => e,
                })?;
            ("model", model.name.clone(), Some(model))
        }
    };
    let name = match &body.name {
        Some(name) => {
            let name = validate_name("generation", name)?;
            if store::name_taken(&state.db, team, &name).await? {
                return Err(Error::Conflict(format!(
                    "name: a generation named '{name}' exists"
                )));
            }
            name
        }
        None => {
            let base = format!("{teacher_model} on {}", dataset.name);
            let pool = state.db.clone();
            free_name(&base, |n| {
                let pool = pool.clone();
                async move { store::name_taken(&pool, team, &n).await }
            })
            .await?
        }
    };
    let output = match &body.output {
        Some(output) => validate_name("dataset", output)
            .map_err(|e| bad(e.to_string().replacen("name:", "output:", 1)))?,
        None => {
            let base = format!("{}-traces", dataset.name);
            let pool = state.db.clone();
            free_name(&base, |n| {
                let pool = pool.clone();
                async move { Ok(datasets::store::resolve(&pool, team, &n).await.is_ok()) }
            })
            .await?
        }
    };
    let version = versions::store::pin_current(
        &state.db,
        dataset.id,
        &format!("pinned by trace generation '{name}'"),
    )
    .await?;
    let n_examples = match body.limit {
        Some(limit) => i64::from(limit).min(version.n_rows),
        None => version.n_rows,
    };
    if n_examples == 0 {
        return Err(Error::Unprocessable(format!(
            "dataset '{}' version {} has no rows to ask about",
            dataset.name, version.version
        )));
    }
    let settings_json =
        serde_json::to_string(&settings).map_err(|e| Error::Internal(e.to_string()))?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let output_id =
        datasets::store::create_or_find(&mut db, team, &output, still_api::ImportMode::Create)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!(
                    "output: a dataset named '{output}' exists; name another"
                )),
                e => e,
            })?;
    sqlx::query("UPDATE datasets SET description = ? WHERE id = ?")
        .bind(format!(
            "Traces by {teacher_model} of '{}' version {}",
            dataset.name, version.version
        ))
        .bind(output_id)
        .execute(&mut *db)
        .await?;
    let id = store::insert(
        &mut db,
        &NewGenerationRow {
            team_id: team,
            name: &name,
            dataset_id: dataset.id,
            dataset_version_id: version.id,
            output_dataset_id: output_id,
            teacher_kind: kind,
            teacher_model: &teacher_model,
            model_id: model.as_ref().map(|m| m.id),
            base_url: base_url.as_deref(),
            api_key: body.teacher.api_key.as_deref().filter(|k| !k.is_empty()),
            settings: &settings_json,
            n_examples,
            n_samples: i64::from(settings.n),
        },
    )
    .await
    .map_err(|e| match e {
        Error::Database(err) => {
            crate::error::on_unique(err, || format!("name: a generation named '{name}' exists"))
        }
        e => e,
    })?;
    queue::enqueue(
        &mut db,
        &queue::NewJob {
            team_id: team,
            kind: still_api::JobKind::Generate,
            owner: Owner::Generation(id),
            max_attempts: 3,
            device: None,
            min_memory_bytes: 0,
            worker_models: match &model {
                Some(m) if m.origin == "worker" => vec![m.name.clone()],
                _ => Vec::new(),
            },
        },
    )
    .await?;
    let teacher = match &base_url {
        Some(url) => format!("'{teacher_model}' at {url}"),
        None => format!("registry model '{teacher_model}'"),
    };
    crate::store::logs::owner_line(
        &mut *db,
        Owner::Generation(id),
        "info",
        &format!(
            "queued: {teacher} on {n_examples} rows of '{}' version {}, {} sample(s) each, keep {}, into dataset '{output}'",
            dataset.name,
            version.version,
            settings.n,
            settings.keep.as_str()
        ),
    )
    .await?;
    db.commit().await?;
    Ok(id)
}

/// A generation's summary: its counts so far.
pub async fn summary(state: &AppState, row: GenerationRowDb) -> Result<GenerationSummary> {
    let settings: GenerationSettings = serde_json::from_str(&row.settings)
        .map_err(|e| Error::Internal(format!("generation {} settings: {e}", row.id)))?;
    let mut db = state.db.acquire().await?;
    let counts = store::counts(&mut db, row.id, row.n_examples * row.n_samples).await?;
    let output_version = match (row.output_dataset_id, row.status.as_deref()) {
        (Some(output), Some("succeeded")) => {
            sqlx::query_scalar("SELECT max(version) FROM dataset_versions WHERE dataset_id = ?")
                .bind(output)
                .fetch_one(&mut *db)
                .await?
        }
        _ => None,
    };
    Ok(GenerationSummary {
        id: row.id,
        name: row.name,
        status: row.status.unwrap_or_else(|| "queued".into()),
        dataset_id: row.dataset_id,
        dataset_name: row.dataset_name,
        dataset_version: row.dataset_version,
        output_dataset_id: row.output_dataset_id,
        output_dataset_name: row.output_dataset_name,
        output_version,
        teacher: TeacherInfo {
            kind: row.teacher_kind,
            model: row.teacher_model,
            model_id: row.model_id,
            base_url: row.base_url,
            api_key_hint: row.api_key_hint,
        },
        kept_share: (counts.ok > 0).then(|| counts.kept as f64 / counts.ok as f64),
        settings,
        n_examples: row.n_examples,
        n_samples: row.n_samples,
        counts,
        error: row.error,
        created_at: row.created_at,
        finished_at: row.finished_at,
    })
}

#[derive(serde::Deserialize)]
struct ListQuery {
    /// Only generations from or into this dataset (its id or name).
    dataset: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    team: Team,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<GenerationSummary>>> {
    let dataset = match &query.dataset {
        Some(d) => Some(datasets::store::resolve(&state.db, team.id(), d).await?.id),
        None => None,
    };
    let mut out = Vec::new();
    for row in store::list(&state.db, team.id(), dataset).await? {
        out.push(summary(&state, row).await?);
    }
    Ok(Json(out))
}

async fn get_one(
    State(state): State<AppState>,
    team: Team,
    Path(generation): Path<String>,
) -> Result<Json<GenerationSummary>> {
    let row = store::load(&state.db, team.id(), &generation).await?;
    Ok(Json(summary(&state, row).await?))
}

async fn get_rows(
    State(state): State<AppState>,
    team: Team,
    Path(generation): Path<String>,
    Query(filter): Query<RowFilter>,
) -> Result<Json<Vec<GenerationRow>>> {
    let row = store::load(&state.db, team.id(), &generation).await?;
    Ok(Json(store::rows(&state.db, row.id, &filter).await?))
}

async fn cancel(
    State(state): State<AppState>,
    team: Team,
    Path(generation): Path<String>,
) -> Result<Json<GenerationSummary>> {
    let row = store::load(&state.db, team.id(), &generation).await?;
    queue::cancel(&state.db, Owner::Generation(row.id)).await?;
    let row = store::load(&state.db, team.id(), &row.id.to_string()).await?;
    Ok(Json(summary(&state, row).await?))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn get_logs(
    State(state): State<AppState>,
    team: Team,
    Path(generation): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<still_api::RunLogEntry>>> {
    let row = store::load(&state.db, team.id(), &generation).await?;
    Ok(Json(
        crate::store::logs::tail(
            &state.db,
            Owner::Generation(row.id),
            q.after,
            q.limit.unwrap_or(200),
        )
        .await?,
    ))
}

/// Whether `keep` lets a row in: every answered row, or only a right one.
pub fn keeps(keep: Keep, answered: bool, correct: Option<bool>) -> bool {
    answered
        && match keep {
            Keep::All => true,
            Keep::Correct => correct == Some(true),
        }
}
