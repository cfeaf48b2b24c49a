//! The evals API: create one (pinning the dataset's version and queueing its job), list them,
//! read one's per-budget results and s1's Control/Scaling/Performance, page through its graded
//! examples, cancel it, read its log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::{BudgetResult, BudgetSpec, Decoding, EvalExample, EvalSummary, NewEval};
use still_engine::budget::{Budget, Forcing};
use still_engine::eval::{EvalSettings, Outcome, Preset, summarize_outcomes};
use still_engine::generate::Sampling;

use super::store::{self, EvalRow, ExampleFilter, NewEvalRow};
use crate::AppState;
use crate::data::{datasets, versions};
use crate::error::{ApiJson, Error, Result};
use crate::http::Team;
use crate::jobs::queue::{self, Owner};
use crate::names::validate_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/evals", get(list_evals).post(create_eval))
        .route("/api/evals/{eval}", get(get_eval))
        .route("/api/evals/{eval}/examples", get(get_examples))
        .route("/api/evals/{eval}/flips/{other}", get(get_flips))
        .route("/api/evals/{eval}/cancel", post(cancel_eval))
        .route("/api/evals/{eval}/logs", get(get_logs))
}

/// Limits of one eval.
pub const MAX_BUDGETS: usize = 32;
pub const MAX_THINKING_TOKENS: u32 = 131_072;
pub const MAX_WAIT_EXTENSIONS: u32 = 64;
pub const MAX_ANSWER_TOKENS: u32 = 16_384;

fn check_budgets(budgets: &[BudgetSpec]) -> Result<Vec<Budget>> {
    if budgets.is_empty() || budgets.len() > MAX_BUDGETS {
        return Err(Error::BadRequest(format!(
            "budgets: give 1 to {MAX_BUDGETS} budgets, not {}",
            budgets.len()
        )));
    }
    budgets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bad = |m: String| Err(Error::BadRequest(format!("budgets[{i}]: {m}")));
            if let Some(max) = b.max_thinking_tokens {
                if !(1..=MAX_THINKING_TOKENS).contains(&max) {
                    return bad(format!(
                        "max_thinking_tokens {max} is not in 1..={MAX_THINKING_TOKENS}"
                    ));
                }
                if b.min_thinking_tokens > max {
                    return bad(format!(
                        "min_thinking_tokens {} is above max_thinking_tokens {max}",
                        b.min_thinking_tokens
                    ));
                }
            }
            if b.min_thinking_tokens > MAX_THINKING_TOKENS {
                return bad(format!(
                    "min_thinking_tokens {} is above {MAX_THINKING_TOKENS}",
                    b.min_thinking_tokens
                ));
            }
            if b.wait_extensions > MAX_WAIT_EXTENSIONS {
                return bad(format!(
                    "wait_extensions {} is above {MAX_WAIT_EXTENSIONS}",
                    b.wait_extensions
                ));
            }
            Ok(Budget {
                max_thinking_tokens: b.max_thinking_tokens.map(|m| m as usize),
                min_thinking_tokens: b.min_thinking_tokens as usize,
                wait_extensions: b.wait_extensions as usize,
            })
        })
        .collect()
}

fn check_decoding(d: &Decoding) -> Result<Sampling> {
    if !(1..=MAX_ANSWER_TOKENS).contains(&d.max_answer_tokens) {
        return Err(Error::BadRequest(format!(
            "decoding.max_answer_tokens {} is not in 1..={MAX_ANSWER_TOKENS}",
            d.max_answer_tokens
        )));
    }
    let sampling = Sampling {
        temperature: d.temperature,
        top_p: d.top_p,
        top_k: d.top_k as usize,
        seed: d.seed,
    };
    sampling
        .validate()
        .map_err(|e| Error::BadRequest(format!("decoding: {e}")))?;
    Ok(sampling)
}

/// The model an eval names: a model by id or name, else a run's final model.
async fn resolve_model_or_run(
    state: &AppState,
    team: i64,
    reference: &str,
) -> Result<(still_api::ModelSummary, Option<i64>)> {
    match crate::models::resolve_model(&state.db, team, reference).await {
        Ok(model) => {
            let run = model.run_id;
            return Ok((model, run));
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let run = crate::models::store::run_output(&state.db, team, reference)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::not_found(format!("model or run '{reference}'")),
            e => e,
        })?;
    let Some(model_id) = run.output_model_id else {
        return Err(Error::Conflict(format!(
            "run '{}' has no final model yet; evaluate it when it has succeeded",
            run.name
        )));
    };
    let model = crate::models::resolve_model(&state.db, team, &model_id.to_string()).await?;
    Ok((model, Some(run.id)))
}

async fn create_eval(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewEval>,
) -> Result<(StatusCode, Json<EvalSummary>)> {
    let team = team.id();
    let request = check_request(&body)?;
    let (model, run_id) = resolve_model_or_run(&state, team, &body.model).await?;
    crate::models::engine_model(
        &model,
        "model",
        "a generation with keep: correct grades its traces instead",
    )?;
    let eval_id = start(&state, team, &body, request, &model, (run_id, None)).await?;
    let row = store::load(&state.db, team, &eval_id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(summary(&state, row).await?)))
}

/// What an eval request asks for, checked before anything is looked up or stored.
pub struct Checked {
    settings: EvalSettings,
}

/// Checks an eval request's budgets, decoding and answer preset.
pub fn check_request(body: &NewEval) -> Result<Checked> {
    let budgets = check_budgets(&body.budgets)?;
    let decoding = body.decoding.unwrap_or_default();
    let sampling = check_decoding(&decoding)?;
    let preset: Preset = body
        .preset
        .as_deref()
        .unwrap_or("math")
        .parse()
        .map_err(|e: String| Error::BadRequest(format!("preset: {e}")))?;
    Ok(Checked {
        settings: EvalSettings {
            budgets,
            forcing: Forcing {
                max_answer_tokens: decoding.max_answer_tokens as usize,
                ..Forcing::default()
            },
            sampling,
            preset,
            batch_size: 8,
        },
    })
}

/// Starts an eval of `model` as `body` asks (checked by [`check_request`]): its dataset's
/// version (`body.version`, else the current one) pinned, the eval stored and its job queued in one transaction. `origin` is
/// the run and step the model is of (a run evaluating itself as it trains). Returns its id.
pub async fn start(
    state: &AppState,
    team: i64,
    body: &NewEval,
    checked: Checked,
    model: &still_api::ModelSummary,
    (run_id, step): (Option<i64>, Option<i64>),
) -> Result<i64> {
    let settings = checked.settings;
    let dataset = datasets::store::resolve(&state.db, team, &body.dataset).await?;
    let name = match &body.name {
        Some(name) => {
            let name = validate_name("eval", name)?;
            if store::name_taken(&state.db, team, &name).await? {
                return Err(Error::Conflict(format!("an eval named '{name}' exists")));
            }
            name
        }
        None => {
            let base = format!("{} on {}", model.name, dataset.name);
            let mut name = base.clone();
            let mut n = 1;
            while store::name_taken(&state.db, team, &name).await? {
                n += 1;
                name = format!("{base} ({n})");
            }
            name
        }
    };
    let version = match body.version {
        Some(v) => versions::store::find(&state.db, dataset.id, v).await?,
        None => {
            versions::store::pin_current(&state.db, dataset.id, &format!("pinned by eval '{name}'"))
                .await?
        }
    };
    let n_examples = match body.limit {
        Some(limit) => i64::from(limit).min(version.n_rows),
        None => version.n_rows,
    };
    if n_examples == 0 {
        return Err(Error::Unprocessable(format!(
            "dataset '{}' version {} has no rows to evaluate",
            dataset.name, version.version
        )));
    }
    let settings_json =
        serde_json::to_string(&settings).map_err(|e| Error::Internal(e.to_string()))?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let eval_id = store::insert(
        &mut db,
        &NewEvalRow {
            team_id: team,
            name: &name,
            model_id: model.id,
            run_id,
            step,
            dataset_id: dataset.id,
            dataset_version_id: version.id,
            settings: &settings_json,
            n_examples,
            n_budgets: settings.budgets.len() as i64,
        },
    )
    .await
    .map_err(|e| match e {
        Error::Database(err) => {
            crate::error::on_unique(err, || format!("an eval named '{name}' exists"))
        }
        e => e,
    })?;
    queue::enqueue(
        &mut db,
        &queue::NewJob {
            team_id: team,
            kind: still_api::JobKind::Eval,
            owner: Owner::Eval(eval_id),
            max_attempts: 3,
            device: None,
            min_memory_bytes: 0,
            worker_models: if model.origin == "worker" {
                vec![model.name.clone()]
            } else {
                Vec::new()
            },
        },
    )
    .await?;
    crate::store::logs::owner_line(
        &mut *db,
        Owner::Eval(eval_id),
        "info",
        &format!(
            "queued: model '{}' on {n_examples} rows of '{}' version {} under {} budgets",
            model.name,
            dataset.name,
            version.version,
            settings.budgets.len()
        ),
    )
    .await?;
    db.commit().await?;
    Ok(eval_id)
}

/// An eval's summary: per-budget results from its graded records so far.
pub async fn summary(state: &AppState, row: EvalRow) -> Result<EvalSummary> {
    let settings: EvalSettings = serde_json::from_str(&row.settings)
        .map_err(|e| Error::Internal(format!("eval {} settings: {e}", row.id)))?;
    let outcomes: Vec<Outcome> = store::outcomes(&state.db, row.id)
        .await?
        .into_iter()
        .map(|(budget, correct, thinking_tokens)| Outcome {
            budget: budget.max(0) as usize,
            correct,
            thinking_tokens: thinking_tokens.max(0) as usize,
        })
        .collect();
    let report = summarize_outcomes(&settings.budgets, &outcomes);
    let budgets: Vec<BudgetResult> = report
        .budgets
        .iter()
        .map(|b| BudgetResult {
            budget: BudgetSpec {
                max_thinking_tokens: b.budget.max_thinking_tokens.map(|m| m as u32),
                min_thinking_tokens: b.budget.min_thinking_tokens as u32,
                wait_extensions: b.budget.wait_extensions as u32,
            },
            n: b.n as i64,
            correct: b.correct as i64,
            accuracy: b.accuracy,
            mean_thinking_tokens: b.mean_thinking_tokens,
            control: b.control,
        })
        .collect();
    Ok(EvalSummary {
        id: row.id,
        name: row.name,
        status: row.status.unwrap_or_else(|| "queued".into()),
        model_id: row.model_id,
        model_name: row.model_name,
        run_id: row.run_id,
        step: row.step,
        dataset_id: row.dataset_id,
        dataset_name: row.dataset_name,
        dataset_version: row.dataset_version,
        n_examples: row.n_examples,
        done: outcomes.len() as i64,
        scaling: report.scaling,
        performance: report.performance,
        control: report.control,
        budgets,
        decoding: Decoding {
            temperature: settings.sampling.temperature,
            top_p: settings.sampling.top_p,
            top_k: settings.sampling.top_k as u32,
            seed: settings.sampling.seed,
            max_answer_tokens: settings.forcing.max_answer_tokens as u32,
        },
        preset: settings.preset.as_str().to_string(),
        error: row.error,
        created_at: row.created_at,
        finished_at: row.finished_at,
    })
}

#[derive(serde::Deserialize)]
struct ListQuery {
    /// Only the evals of this run (its id or name), in step order.
    run: Option<String>,
}

async fn list_evals(
    State(state): State<AppState>,
    team: Team,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<EvalSummary>>> {
    let run = match &query.run {
        Some(run) => Some(
            crate::models::store::run_output(&state.db, team.id(), run)
                .await?
                .id,
        ),
        None => None,
    };
    let mut out = Vec::new();
    for row in store::list(&state.db, team.id(), run).await? {
        out.push(summary(&state, row).await?);
    }
    Ok(Json(out))
}

async fn get_eval(
    State(state): State<AppState>,
    team: Team,
    Path(eval): Path<String>,
) -> Result<Json<EvalSummary>> {
    let row = store::load(&state.db, team.id(), &eval).await?;
    Ok(Json(summary(&state, row).await?))
}

#[derive(serde::Deserialize)]
struct FlipsQuery {
    /// Each eval's budget index (default: its last budget).
    budget_a: Option<i64>,
    budget_b: Option<i64>,
}

/// The questions two evals both graded and which flipped between them.
async fn get_flips(
    State(state): State<AppState>,
    team: Team,
    Path((eval, other)): Path<(String, String)>,
    Query(query): Query<FlipsQuery>,
) -> Result<Json<still_api::EvalFlips>> {
    let a = store::load(&state.db, team.id(), &eval).await?;
    let b = store::load(&state.db, team.id(), &other).await?;
    let budget = |row: &EvalRow, asked: Option<i64>, field: &str| -> Result<i64> {
        let last = row.n_budgets - 1;
        match asked {
            None => Ok(last),
            Some(i) if (0..=last).contains(&i) => Ok(i),
            Some(i) => Err(Error::BadRequest(format!(
                "{field}: eval '{}' has budgets 0..={last}, not {i}",
                row.name
            ))),
        }
    };
    let budget_a = budget(&a, query.budget_a, "budget_a")?;
    let budget_b = budget(&b, query.budget_b, "budget_b")?;
    let graded_a = store::graded(&state.db, a.id, budget_a).await?;
    let graded_b = store::graded(&state.db, b.id, budget_b).await?;
    let flips = super::compare::flips(&graded_a, &graded_b);
    Ok(Json(flips.between((a.id, budget_a), (b.id, budget_b))))
}

async fn get_examples(
    State(state): State<AppState>,
    team: Team,
    Path(eval): Path<String>,
    Query(filter): Query<ExampleFilter>,
) -> Result<Json<Vec<EvalExample>>> {
    let row = store::load(&state.db, team.id(), &eval).await?;
    if let Some(b) = filter.budget
        && !(0..row.n_budgets).contains(&b)
    {
        return Err(Error::BadRequest(format!(
            "budget {b}: eval '{}' has budgets 0..{}",
            row.name,
            row.n_budgets - 1
        )));
    }
    Ok(Json(store::examples(&state.db, row.id, &filter).await?))
}

async fn cancel_eval(
    State(state): State<AppState>,
    team: Team,
    Path(eval): Path<String>,
) -> Result<Json<EvalSummary>> {
    let row = store::load(&state.db, team.id(), &eval).await?;
    queue::cancel(&state.db, Owner::Eval(row.id)).await?;
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
    Path(eval): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Vec<still_api::RunLogEntry>>> {
    let row = store::load(&state.db, team.id(), &eval).await?;
    Ok(Json(
        crate::store::logs::tail(
            &state.db,
            Owner::Eval(row.id),
            q.after,
            q.limit.unwrap_or(200),
        )
        .await?,
    ))
}
