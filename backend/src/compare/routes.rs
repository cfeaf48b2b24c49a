//! `GET /api/compare` and `/api/comparisons`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use still_api::{
    ComparedRun, Comparison, Curve, DEFAULT_COMPARE_POINTS, MAX_COMPARE_POINTS, MAX_COMPARE_RUNS,
    MAX_COMPARISON_SETTINGS_BYTES, MetricPoint, NewComparison, RunSummary, SavedComparison,
};

use super::store;
use crate::AppState;
use crate::error::{ApiJson, Error, Result};
use crate::http::Team;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/compare", get(compare))
        .route(
            "/api/comparisons",
            get(list_comparisons).post(create_comparison),
        )
        .route(
            "/api/comparisons/{comparison}",
            get(get_comparison).delete(delete_comparison),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareQuery {
    /// Run ids or names, comma-separated.
    runs: String,
    /// Metric names, comma-separated (default: every metric of any run).
    metrics: Option<String>,
    max_points: Option<usize>,
}

fn split(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The team's runs `references` names (ids or names), each once, in order; an unknown one
/// answers 404 naming it. The count is checked before anything is read.
async fn load_runs(state: &AppState, team: i64, references: &[&str]) -> Result<Vec<RunSummary>> {
    if references.is_empty() {
        return Err(Error::BadRequest(
            "runs: name at least one run (ids or names, comma-separated)".into(),
        ));
    }
    if references.len() > MAX_COMPARE_RUNS {
        return Err(Error::BadRequest(format!(
            "runs: {} runs, more than the {MAX_COMPARE_RUNS} one comparison holds",
            references.len()
        )));
    }
    let mut runs: Vec<RunSummary> = Vec::with_capacity(references.len());
    for r in references {
        let run = crate::runs::store::load_run(&state.db, team, r).await?;
        if !runs.iter().any(|x| x.id == run.id) {
            runs.push(run);
        }
    }
    Ok(runs)
}

fn curves(points: Vec<MetricPoint>) -> Vec<Curve> {
    let mut out: Vec<Curve> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(c) if c.name == p.name => {
                c.steps.push(p.step);
                c.values.push(p.value);
            }
            _ => out.push(Curve {
                name: p.name,
                steps: vec![p.step],
                values: vec![p.value],
            }),
        }
    }
    out
}

async fn compare(
    State(state): State<AppState>,
    team: Team,
    Query(query): Query<CompareQuery>,
) -> Result<Json<Comparison>> {
    let team = team.id();
    let max_points = query.max_points.unwrap_or(DEFAULT_COMPARE_POINTS);
    if !(2..=MAX_COMPARE_POINTS).contains(&max_points) {
        return Err(Error::BadRequest(format!(
            "max_points: {max_points} must be 2..={MAX_COMPARE_POINTS}"
        )));
    }
    let wanted: Option<Vec<String>> = query
        .metrics
        .as_deref()
        .map(|m| split(m).into_iter().map(String::from).collect());
    let runs = load_runs(&state, team, &split(&query.runs)).await?;
    // Each run's rollups and curves, a few runs at a time over the pool's connections, in order.
    let compared: Vec<ComparedRun> = futures_util::stream::iter(runs)
        .map(|run| read_run(&state, run, wanted.as_deref(), max_points))
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    let mut teachers: HashMap<i64, String> = HashMap::new();
    let mut fields = Vec::with_capacity(compared.len());
    let mut metrics: Vec<String> = Vec::new();
    for c in &compared {
        metrics.extend(c.summary.iter().map(|s| s.name.clone()));
        let teacher = match c.run.teacher_id {
            None => None,
            Some(id) => {
                if let std::collections::hash_map::Entry::Vacant(e) = teachers.entry(id) {
                    let name =
                        crate::models::store::resolve_model(&state.db, team, &id.to_string())
                            .await
                            .map_or_else(|_| format!("model {id} (deleted)"), |m| m.name);
                    e.insert(name);
                }
                teachers.get(&id).cloned()
            }
        };
        fields.push(still_api::config_fields(&c.run, teacher.as_deref()));
    }
    metrics.sort();
    metrics.dedup();
    Ok(Json(Comparison {
        runs: compared,
        metrics,
        config: still_api::config_rows(&fields),
    }))
}

/// Runs read at once for a comparison.
const READS_AT_ONCE: usize = 4;

/// One run's metric summaries and the wanted curves (every metric when `wanted` is `None`).
async fn read_run(
    state: &AppState,
    run: RunSummary,
    wanted: Option<&[String]>,
    max_points: usize,
) -> Result<ComparedRun> {
    let summary = crate::store::metrics::summaries(&state.db, run.id).await?;
    let points = match wanted {
        None => crate::store::metrics::downsampled(&state.db, run.id, None, max_points).await?,
        Some(names) => {
            let mut points = Vec::new();
            for name in names {
                points.extend(
                    crate::store::metrics::downsampled(&state.db, run.id, Some(name), max_points)
                        .await?,
                );
            }
            points
        }
    };
    Ok(ComparedRun {
        run,
        summary,
        curves: curves(points),
    })
}

/// The saved comparison, with runs deleted since reported missing.
async fn saved(state: &AppState, team: i64, row: store::ComparisonRow) -> Result<SavedComparison> {
    let existing = crate::runs::store::existing(&state.db, team, &row.run_ids()).await?;
    row.into_saved(&existing)
}

async fn create_comparison(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewComparison>,
) -> Result<(StatusCode, Json<SavedComparison>)> {
    let team = team.id();
    let name = crate::names::validate_name("comparison", &body.name)?;
    let settings = body.settings.unwrap_or_else(|| serde_json::json!({}));
    if !settings.is_object() {
        return Err(Error::BadRequest(
            "settings: give an object (the page's view), not a list or a value".into(),
        ));
    }
    let settings = serde_json::to_string(&settings).map_err(|e| Error::Internal(e.to_string()))?;
    if settings.len() > MAX_COMPARISON_SETTINGS_BYTES {
        return Err(Error::BadRequest(format!(
            "settings: {} bytes of JSON, more than {MAX_COMPARISON_SETTINGS_BYTES}",
            settings.len()
        )));
    }
    let references: Vec<&str> = body.runs.iter().map(String::as_str).collect();
    let runs = load_runs(&state, team, &references).await?;
    let baseline = match body.baseline.as_deref() {
        None => None,
        Some(b) => {
            let run = crate::runs::store::load_run(&state.db, team, b).await?;
            if !runs.iter().any(|r| r.id == run.id) {
                return Err(Error::BadRequest(format!(
                    "baseline: run '{b}' is not one of the compared runs"
                )));
            }
            Some(run.id)
        }
    };
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let row = store::insert(&state.db, team, &name, &ids, baseline, &settings).await?;
    Ok((StatusCode::CREATED, Json(row.into_saved(&ids)?)))
}

async fn get_comparison(
    State(state): State<AppState>,
    team: Team,
    Path(comparison): Path<String>,
) -> Result<Json<SavedComparison>> {
    let row = store::find(&state.db, team.id(), &comparison).await?;
    Ok(Json(saved(&state, team.id(), row).await?))
}

async fn list_comparisons(
    State(state): State<AppState>,
    team: Team,
) -> Result<Json<Vec<SavedComparison>>> {
    let mut out = Vec::new();
    for row in store::list(&state.db, team.id()).await? {
        out.push(saved(&state, team.id(), row).await?);
    }
    Ok(Json(out))
}

async fn delete_comparison(
    State(state): State<AppState>,
    team: Team,
    Path(comparison): Path<String>,
) -> Result<StatusCode> {
    let row = store::find(&state.db, team.id(), &comparison).await?;
    store::delete(&state.db, row.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
