//! A generate job's side of the worker protocol: the questions it reads, the rows it uploads
//! (each stored once; a kept one becomes an example of the output dataset in the same
//! transaction), and what happens when it is claimed and completed (reached through
//! `crate::kinds`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sqlx::SqliteConnection;
use still_api::{
    ExampleFields, GenerationRowUpload, GenerationSettings, GenerationWork, TeacherWork,
};

use super::store::{self, NewRow};
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::WorkerAuth;
use crate::jobs::queue::{self, Leased, Owner};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/worker/jobs/{id}/generation/dataset",
            get(dataset_route),
        )
        .route("/api/worker/jobs/{id}/generation/rows", post(rows_route))
}

/// The most rows one upload may carry, and the most bytes of one row's thinking and answer.
pub const MAX_ROWS_PER_REQUEST: usize = 256;
pub const MAX_ROW_BYTES: usize = 4 << 20;

fn settings_of(id: i64, text: &str) -> Result<GenerationSettings> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("generation {id} settings: {e}")))
}

/// What a claimed generate job's worker needs (the endpoint's key included), read in the
/// claim's transaction.
pub async fn claimed(db: &mut SqliteConnection, job: &Leased) -> Result<GenerationWork> {
    let g = store::by_id(db, job.generation()?).await?;
    let done = store::done_rows(db, g.id).await?;
    let api_key = store::teacher_secret(db, g.id).await?;
    Ok(GenerationWork {
        generation_id: g.id,
        teacher: TeacherWork {
            kind: g.teacher_kind,
            model: g.teacher_model,
            model_id: g.model_id,
            model_origin: g.model_origin,
            base_url: g.base_url,
            api_key,
        },
        dataset_version_id: g.dataset_version_id,
        n_examples: g.n_examples,
        settings: settings_of(g.id, &g.settings)?,
        done,
    })
}

/// The generation's pinned source version, as canonical JSONL: only its first `n_examples`.
async fn dataset_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
) -> Result<axum::response::Response> {
    let lease = queue::leased(&state.db, job, id).await?;
    let g = {
        let mut db = state.db.acquire().await?;
        store::by_id(&mut db, lease.generation()?).await?
    };
    let version =
        crate::data::versions::store::find(&state.db, g.dataset_id, g.dataset_version).await?;
    Ok(crate::data::versions::routes::canonical_jsonl(
        state.db.clone(),
        g.dataset_id,
        version,
        usize::try_from(g.n_examples).ok(),
    ))
}

/// The output dataset's row made from a kept trace: the source row's question, reference and
/// fields, the teacher's thinking and answer, and the provenance in its metadata.
fn output_fields(
    g: &store::GenerationRowDb,
    settings: &GenerationSettings,
    source: (i64, ExampleFields),
    row: &GenerationRowUpload,
) -> ExampleFields {
    let (source_example, fields) = source;
    let mut sampling = json!({
        "n": settings.n, "temperature": settings.temperature, "top_p": settings.top_p,
        "seed": settings.seed, "max_tokens": settings.max_tokens,
    });
    if let Some(m) = settings.max_thinking_tokens {
        sampling["max_thinking_tokens"] = json!(m);
    }
    let metadata = json!({
        "generation": {
            "id": g.id,
            "name": g.name,
            "source": {
                "dataset": g.dataset_name, "dataset_id": g.dataset_id,
                "version": g.dataset_version, "row": row.example_index,
                "example_id": source_example,
            },
            "sample": row.sample_index,
            "teacher": {"kind": g.teacher_kind, "model": g.teacher_model, "base_url": g.base_url},
            "prompt": settings.prompt,
            "system": settings.system,
            "sampling": sampling,
            "split": row.record.split,
            "finish": row.record.finish,
            "reference_answer": fields.answer,
            "extracted": row.record.extracted,
            "correct": row.correct,
            "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens},
        },
        "source_metadata": fields.metadata,
    });
    ExampleFields {
        question: fields.question,
        thinking: row.record.thinking.clone(),
        answer: row.record.answer.clone(),
        solution: fields.solution,
        source: fields.source,
        domain: fields.domain,
        tags: fields.tags,
        metadata,
    }
}

/// Rows from the worker: checked against the generation's shape and stored once each; a kept
/// row is added to the output dataset in the same transaction.
async fn rows_route(
    State(state): State<AppState>,
    WorkerAuth(id): WorkerAuth,
    Path(job): Path<i64>,
    ApiJson(rows): ApiJson<Vec<GenerationRowUpload>>,
) -> Result<Json<serde_json::Value>> {
    if rows.len() > MAX_ROWS_PER_REQUEST {
        return Err(Error::TooLarge(format!(
            "{} rows in one request; the limit is {MAX_ROWS_PER_REQUEST}",
            rows.len()
        )));
    }
    let lease = queue::leased(&state.db, job, id).await?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let g = store::by_id(&mut db, lease.generation()?).await?;
    let settings = settings_of(g.id, &g.settings)?;
    for (i, r) in rows.iter().enumerate() {
        let bad = |m: String| Err(Error::BadRequest(format!("rows[{i}]: {m}")));
        if !(0..g.n_examples).contains(&r.example_index) {
            return bad(format!(
                "example_index {} is not in 0..{}",
                r.example_index, g.n_examples
            ));
        }
        if !(0..g.n_samples).contains(&r.sample_index) {
            return bad(format!(
                "sample_index {} is not in 0..{}",
                r.sample_index, g.n_samples
            ));
        }
        if r.prompt_tokens < 0 || r.completion_tokens < 0 {
            return bad("token counts are negative".into());
        }
        let size = r.record.thinking.len() + r.record.answer.len();
        if size > MAX_ROW_BYTES {
            return Err(Error::TooLarge(format!(
                "rows[{i}]: {size} bytes of thinking and answer; one row may have {MAX_ROW_BYTES}"
            )));
        }
    }
    queue::check_held(&mut db, &lease, "uploading generated rows").await?;
    let mut inserted = 0;
    let mut kept = 0;
    for r in &rows {
        if store::has_row(&mut db, g.id, r.example_index, r.sample_index).await? {
            continue; // a retried upload: stored once
        }
        let answered = r.error.is_none();
        let keep = super::routes::keeps(settings.keep, answered, r.correct);
        let example_id = match (keep, g.output_dataset_id) {
            (true, Some(output)) => {
                let source =
                    store::source_row(&mut db, g.dataset_version_id, r.example_index).await?;
                let fields = output_fields(&g, &settings, source, r);
                let example =
                    crate::data::examples::store::insert(&mut db, output, None, None, &fields)
                        .await?;
                kept += 1;
                Some(example)
            }
            _ => None,
        };
        let record =
            serde_json::to_string(&r.record).map_err(|e| Error::Internal(e.to_string()))?;
        store::insert_row(
            &mut db,
            g.id,
            lease.attempt,
            &NewRow {
                example_index: r.example_index,
                sample_index: r.sample_index,
                ok: answered,
                kept: example_id.is_some(),
                correct: r.correct,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                record: &record,
                error: r.error.as_deref(),
                example_id,
            },
        )
        .await?;
        inserted += 1;
    }
    if kept > 0
        && let Some(output) = g.output_dataset_id
    {
        crate::data::datasets::store::touch(&mut db, output).await?;
    }
    db.commit().await?;
    Ok(Json(json!({ "inserted": inserted, "kept": kept })))
}

/// A generate job finished: every (question, sample) must be stored; then the output
/// dataset's version is cut and the job succeeds.
pub async fn complete(state: &AppState, job: &Leased) -> Result<serde_json::Value> {
    let (g, counts) = {
        let mut db = state.db.acquire().await?;
        let g = store::by_id(&mut db, job.generation()?).await?;
        let counts = store::counts(&mut db, g.id, g.n_examples * g.n_samples).await?;
        (g, counts)
    };
    if counts.done != counts.total {
        return Err(Error::Unprocessable(format!(
            "job {}: {} of {} rows are stored; upload the rest before completing",
            job.job_id, counts.done, counts.total
        )));
    }
    // The version is cut first (its own transaction); a completion retried after it cuts
    // another only if rows changed, which `pin_current` checks.
    let version = match g.output_dataset_id {
        Some(output) => Some(
            crate::data::versions::store::pin_current(
                &state.db,
                output,
                &format!("traces by {} (generation '{}')", g.teacher_model, g.name),
            )
            .await?,
        ),
        None => None,
    };
    let mut db = crate::db::write_tx(&state.db).await?;
    queue::succeed(&mut db, job).await?;
    let share = if counts.ok > 0 {
        format!(
            " ({:.1}% of answered)",
            100.0 * counts.kept as f64 / counts.ok as f64
        )
    } else {
        String::new()
    };
    crate::store::logs::owner_line(
        &mut *db,
        Owner::Generation(g.id),
        if counts.failed > 0 { "warn" } else { "info" },
        &format!(
            "succeeded: {} rows answered, {} failed, {} kept{share}; {} prompt + {} completion tokens{}",
            counts.ok,
            counts.failed,
            counts.kept,
            counts.prompt_tokens,
            counts.completion_tokens,
            version
                .as_ref()
                .map(|v| format!("; output version {} ({} rows)", v.version, v.n_rows))
                .unwrap_or_default()
        ),
    )
    .await?;
    db.commit().await?;
    Ok(json!({ "status": "succeeded", "kept": counts.kept, "failed": counts.failed }))
}
