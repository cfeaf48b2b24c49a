//! The examples' HTTP handlers: the table's pages, one example, edits, tags and the trash.
//! Each checks that the example's dataset is the team's, then calls `store`.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use still_api::{Example, ExamplePage, ExamplePatch, ExampleQuery, TagRequest};

use super::store;
use crate::AppState;
use crate::data::datasets;
use crate::error::{ApiJson, Result};
use crate::http::Team;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/datasets/{dataset}/examples", get(list_examples))
        .route(
            "/api/examples/{id}",
            get(get_example).patch(patch_example).delete(delete_example),
        )
        .route("/api/examples/{id}/restore", post(restore_example))
        .route("/api/examples/{id}/tags", post(add_tag))
        .route(
            "/api/examples/{id}/tags/{tag}",
            axum::routing::delete(remove_tag),
        )
}

async fn list_examples(
    State(state): State<AppState>,
    team: Team,
    Path(dataset): Path<String>,
    Query(query): Query<ExampleQuery>,
) -> Result<Json<ExamplePage>> {
    let dataset = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    Ok(Json(store::page(&state.db, dataset.id, &query).await?))
}

async fn get_example(
    State(state): State<AppState>,
    team: Team,
    Path(id): Path<i64>,
) -> Result<Json<Example>> {
    let example = store::load(&state.db, id).await?;
    datasets::store::check_team(&state.db, example.dataset_id, team.id()).await?;
    Ok(Json(example))
}

async fn patch_example(
    State(state): State<AppState>,
    team: Team,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<ExamplePatch>,
) -> Result<Json<Example>> {
    let example = store::load(&state.db, id).await?;
    datasets::store::check_team(&state.db, example.dataset_id, team.id()).await?;
    Ok(Json(store::apply_patch(&state.db, id, &patch).await?))
}

/// Moves an example of the team to the trash (`deleted`) or back out of it.
async fn trash(state: &AppState, team: Team, id: i64, deleted: bool) -> Result<Example> {
    let example = store::load(&state.db, id).await?;
    datasets::store::check_team(&state.db, example.dataset_id, team.id()).await?;
    store::set_deleted(&state.db, example.dataset_id, id, deleted).await
}

async fn delete_example(
    State(state): State<AppState>,
    team: Team,
    Path(id): Path<i64>,
) -> Result<Json<Example>> {
    Ok(Json(trash(&state, team, id, true).await?))
}

async fn restore_example(
    State(state): State<AppState>,
    team: Team,
    Path(id): Path<i64>,
) -> Result<Json<Example>> {
    Ok(Json(trash(&state, team, id, false).await?))
}

async fn add_tag(
    State(state): State<AppState>,
    team: Team,
    Path(id): Path<i64>,
    ApiJson(request): ApiJson<TagRequest>,
) -> Result<Json<Example>> {
    let example = store::load(&state.db, id).await?;
    datasets::store::check_team(&state.db, example.dataset_id, team.id()).await?;
    Ok(Json(
        store::add_tag(&state.db, example.dataset_id, id, &request.tag).await?,
    ))
}

async fn remove_tag(
    State(state): State<AppState>,
    team: Team,
    Path((id, tag)): Path<(i64, String)>,
) -> Result<Json<Example>> {
    let example = store::load(&state.db, id).await?;
    datasets::store::check_team(&state.db, example.dataset_id, team.id()).await?;
    Ok(Json(
        store::remove_tag(&state.db, example.dataset_id, id, &tag).await?,
    ))
}
