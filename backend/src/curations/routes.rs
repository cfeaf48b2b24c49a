//! The curations API: start one (a recipe resolved, checked and pinned to the source's current
//! version, its output dataset made), read it as a funnel, page through its dropped rows, cancel
//! it; preview a quality stage's rule counts; saved recipes; a version's lineage.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use still_api::{
    CurationOutput, CurationStageSummary, CurationSummary, DecontaminationStage, DifficultyStage,
    DiversityStage, DomainCount, DomainSource, DroppedPage, DroppedRow, LengthStats, MadeBy,
    NewCuration, QualityPreview, QualityPreviewRequest, QualityStage, Recipe, RecipeRef, RuleCount,
    SavedRecipe, Stage, VersionLineage,
};

use super::runner;
use super::store::{self, CurationRow, NewCurationRow};
use crate::AppState;
use crate::data::{datasets, versions};
use crate::error::{ApiJson, Error, Result};
use crate::http::Team;
use crate::names::validate_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/curations", get(list_curations).post(create_curation))
        .route("/api/curations/preview", post(preview))
        .route("/api/curations/{curation}", get(get_curation))
        .route("/api/curations/{curation}/drops", get(get_drops))
        .route("/api/curations/{curation}/cancel", post(cancel))
        .route("/api/curation-recipes", get(list_recipes).post(save_recipe))
        .route(
            "/api/curation-recipes/{name}",
            get(get_recipe).delete(delete_recipe),
        )
        .route(
            "/api/datasets/{dataset}/versions/{version}/lineage",
            get(lineage),
        )
}

/// Refuses a version too large to curate, before a row of it is read.
pub fn check_size(dataset: &str, version: &still_api::DatasetVersion) -> Result<()> {
    if version.n_rows > MAX_ROWS {
        return Err(Error::TooLarge(format!(
            "dataset '{dataset}' version {} has {} rows; a curation reads at most {MAX_ROWS}",
            version.version, version.n_rows
        )));
    }
    Ok(())
}

/// The built-in recipe's name.
pub const S1: &str = "s1";
/// Most rows a curation reads (checked against the source version before any is read).
pub const MAX_ROWS: i64 = 1_000_000;
pub const MAX_TARGET: u32 = 1_000_000;
pub const MAX_STAGES: usize = 8;
pub const MAX_DIFFICULTY_MODELS: usize = 8;
pub const MAX_EVAL_SETS: usize = 16;
pub const MAX_KEYWORDS: usize = 10_000;
/// Most dropped rows one page holds.
pub const MAX_PAGE: i64 = 500;

/// s1's recipe: quality rules, decontamination against the given eval datasets, difficulty by
/// the given models, then 2^(−rank) sampling over the `domain` field to 1,000 rows.
pub fn s1_recipe(against: &[String], models: &[String]) -> Recipe {
    let mut stages = vec![Stage::Quality(QualityStage::default())];
    if !against.is_empty() {
        stages.push(Stage::Decontamination(DecontaminationStage {
            against: against.to_vec(),
            n: 8,
        }));
    }
    if !models.is_empty() {
        stages.push(Stage::Difficulty(DifficultyStage {
            models: models.to_vec(),
            max_thinking_tokens: 1024,
            max_answer_tokens: None,
            preset: None,
            min_trace_tokens: None,
        }));
    }
    stages.push(Stage::Diversity(DiversityStage {
        domain: DomainSource::Field("domain".into()),
        target: 1000,
        keep_tag: None,
    }));
    Recipe {
        stages,
        tokenizer: None,
    }
}

fn bad<T>(message: String) -> Result<T> {
    Err(Error::BadRequest(message))
}

/// A diversity stage's domain source (`at` names it in the error).
fn check_domain(at: &str, domain: &DomainSource) -> Result<()> {
    match domain {
        DomainSource::Field(f) if f.trim().is_empty() => {
            return bad(format!("{at}.field: name a field"));
        }
        DomainSource::Keywords { domains, .. } => {
            if domains.is_empty() {
                return bad(format!("{at}.keywords.domains: list a domain"));
            }
            let n: usize = domains.iter().map(|d| d.keywords.len()).sum();
            if n > MAX_KEYWORDS {
                return bad(format!(
                    "{at}.keywords: {n} keywords, more than {MAX_KEYWORDS}"
                ));
            }
            for (j, d) in domains.iter().enumerate() {
                if d.domain.trim().is_empty() {
                    return bad(format!(
                        "{at}.keywords.domains[{j}].domain: must not be empty"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a recipe's values (not the names it refers to, which [`check_references`] resolves).
pub fn check_recipe(recipe: &Recipe) -> Result<()> {
    if recipe.stages.is_empty() || recipe.stages.len() > MAX_STAGES {
        return bad(format!(
            "recipe.stages: give 1 to {MAX_STAGES} stages, not {}",
            recipe.stages.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, stage) in recipe.stages.iter().enumerate() {
        let at = format!("recipe.stages[{i}]");
        if !seen.insert(stage.name()) {
            return bad(format!(
                "{at}: a recipe has at most one {} stage",
                stage.name()
            ));
        }
        match stage {
            Stage::Quality(q) => {
                if let (Some(min), Some(max)) = (q.min_trace_tokens, q.max_trace_tokens)
                    && min > max
                {
                    return bad(format!(
                        "{at}.min_trace_tokens {min} is above max_trace_tokens {max}"
                    ));
                }
                if let Some(near) = &q.near_duplicates {
                    if !(near.threshold > 0.0 && near.threshold <= 1.0) {
                        return bad(format!(
                            "{at}.near_duplicates.threshold {} is not in (0, 1]",
                            near.threshold
                        ));
                    }
                    if !(1..=16).contains(&near.shingle_words) {
                        return bad(format!(
                            "{at}.near_duplicates.shingle_words {} is not in 1..=16",
                            near.shingle_words
                        ));
                    }
                    if !(1..=still_curate::minhash::MAX_PERM).contains(&near.num_perm) {
                        return bad(format!(
                            "{at}.near_duplicates.num_perm {} is not in 1..={}",
                            near.num_perm,
                            still_curate::minhash::MAX_PERM
                        ));
                    }
                }
            }
            Stage::Difficulty(d) => {
                if d.models.is_empty() || d.models.len() > MAX_DIFFICULTY_MODELS {
                    return bad(format!(
                        "{at}.models: give 1 to {MAX_DIFFICULTY_MODELS} registry models, not {}",
                        d.models.len()
                    ));
                }
                if !(1..=crate::evals::routes::MAX_THINKING_TOKENS).contains(&d.max_thinking_tokens)
                {
                    return bad(format!(
                        "{at}.max_thinking_tokens {} is not in 1..={}",
                        d.max_thinking_tokens,
                        crate::evals::routes::MAX_THINKING_TOKENS
                    ));
                }
            }
            Stage::Diversity(d) => {
                if !(1..=MAX_TARGET).contains(&d.target) {
                    return bad(format!(
                        "{at}.target {} is not in 1..={MAX_TARGET}",
                        d.target
                    ));
                }
                check_domain(&format!("{at}.domain"), &d.domain)?;
            }
            Stage::Decontamination(d) => {
                if d.against.is_empty() || d.against.len() > MAX_EVAL_SETS {
                    return bad(format!(
                        "{at}.against: give 1 to {MAX_EVAL_SETS} eval datasets, not {}",
                        d.against.len()
                    ));
                }
                if !(1..=32).contains(&d.n) {
                    return bad(format!("{at}.n {} is not in 1..=32", d.n));
                }
            }
        }
    }
    Ok(())
}

/// Resolves what a recipe names (eval datasets, models, the tokenizer) in the team, so a
/// curation that would fail on a name is refused before it starts.
async fn check_references(state: &AppState, team: i64, recipe: &Recipe) -> Result<()> {
    runner::tokenizer_key(state, team, recipe.tokenizer.as_deref()).await?;
    for (i, stage) in recipe.stages.iter().enumerate() {
        match stage {
            Stage::Decontamination(d) => {
                for (j, name) in d.against.iter().enumerate() {
                    datasets::store::resolve(&state.db, team, name)
                        .await
                        .map_err(|e| match e {
                            Error::NotFound(m) => {
                                Error::NotFound(format!("recipe.stages[{i}].against[{j}]: {m}"))
                            }
                            e => e,
                        })?;
                }
            }
            Stage::Difficulty(d) => {
                for (j, name) in d.models.iter().enumerate() {
                    let field = format!("recipe.stages[{i}].models[{j}]");
                    let model = crate::models::resolve_model(&state.db, team, name)
                        .await
                        .map_err(|e| match e {
                            Error::NotFound(m) => Error::NotFound(format!("{field}: {m}")),
                            e => e,
                        })?;
                    crate::models::engine_model(&model, &field, "pick a Qwen2 model")?;
                }
                if let Some(preset) = &d.preset {
                    preset.parse::<still_engine::eval::Preset>().map_err(|e| {
                        Error::BadRequest(format!("recipe.stages[{i}].preset: {e}"))
                    })?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The recipe a request runs: the named or inline recipe with the request's overrides applied.
async fn resolve_recipe(
    state: &AppState,
    team: i64,
    body: &NewCuration,
) -> Result<(Recipe, Option<String>)> {
    let (mut recipe, name) = match &body.recipe {
        RecipeRef::Named(name) if name == S1 => (
            s1_recipe(
                body.decontaminate_against.as_deref().unwrap_or_default(),
                body.difficulty_models.as_deref().unwrap_or_default(),
            ),
            Some(S1.to_string()),
        ),
        RecipeRef::Named(name) => {
            let spec = store::recipe(&state.db, team, name)
                .await?
                .ok_or_else(|| Error::not_found(format!("recipe '{name}'")))?;
            let recipe: Recipe = serde_json::from_str(&spec)
                .map_err(|e| Error::Internal(format!("saved recipe '{name}': {e}")))?;
            (recipe, Some(name.clone()))
        }
        RecipeRef::Inline(recipe) => (recipe.clone(), None),
    };
    let after_quality = |stages: &[Stage]| {
        stages
            .iter()
            .position(|s| matches!(s, Stage::Quality(_)))
            .map_or(0, |i| i + 1)
    };
    if let Some(against) = &body.decontaminate_against {
        match recipe
            .stages
            .iter_mut()
            .find(|s| matches!(s, Stage::Decontamination(_)))
        {
            Some(Stage::Decontamination(d)) => d.against = against.clone(),
            _ if against.is_empty() => {}
            _ => {
                let at = after_quality(&recipe.stages);
                recipe.stages.insert(
                    at,
                    Stage::Decontamination(DecontaminationStage {
                        against: against.clone(),
                        n: 8,
                    }),
                );
            }
        }
    }
    if let Some(models) = &body.difficulty_models {
        match recipe
            .stages
            .iter_mut()
            .find(|s| matches!(s, Stage::Difficulty(_)))
        {
            Some(Stage::Difficulty(d)) => d.models = models.clone(),
            _ if models.is_empty() => {}
            _ => {
                let at = recipe
                    .stages
                    .iter()
                    .position(|s| matches!(s, Stage::Diversity(_)))
                    .unwrap_or(recipe.stages.len());
                recipe.stages.insert(
                    at,
                    Stage::Difficulty(DifficultyStage {
                        models: models.clone(),
                        max_thinking_tokens: 1024,
                        max_answer_tokens: None,
                        preset: None,
                        min_trace_tokens: None,
                    }),
                );
            }
        }
    }
    if let Some(target) = body.target {
        match recipe
            .stages
            .iter_mut()
            .find(|s| matches!(s, Stage::Diversity(_)))
        {
            Some(Stage::Diversity(d)) => d.target = target,
            _ => {
                return bad(
                    "target: the recipe has no diversity stage to sample the target from".into(),
                );
            }
        }
    }
    Ok((recipe, name))
}

async fn create_curation(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<NewCuration>,
) -> Result<(StatusCode, Json<CurationSummary>)> {
    let team = team.id();
    let (recipe, recipe_name) = resolve_recipe(&state, team, &body).await?;
    check_recipe(&recipe)?;
    let seed = body.seed.unwrap_or(0);
    if seed > i64::MAX as u64 {
        return bad(format!("seed: at most {}", i64::MAX));
    }
    let dataset = datasets::store::resolve(&state.db, team, &body.dataset).await?;
    check_references(&state, team, &recipe).await?;
    let name = match &body.name {
        Some(name) => {
            let name = validate_name("curation", name)?;
            if store::name_taken(&state.db, team, &name).await? {
                return Err(Error::Conflict(format!("a curation named '{name}' exists")));
            }
            name
        }
        None => {
            let base = format!(
                "{}-{}",
                dataset.name,
                recipe_name.as_deref().unwrap_or("curated")
            );
            let mut name = base.clone();
            let mut n = 1;
            while store::name_taken(&state.db, team, &name).await?
                || datasets::store::resolve(&state.db, team, &name)
                    .await
                    .is_ok()
            {
                n += 1;
                name = format!("{base}-{n}");
            }
            name
        }
    };
    let version = versions::store::pin_current(
        &state.db,
        dataset.id,
        &format!("pinned by curation '{name}'"),
    )
    .await?;
    check_size(&dataset.name, &version)?;
    let recipe_json = serde_json::to_string(&recipe).map_err(|e| Error::Internal(e.to_string()))?;
    let mut db = crate::db::write_tx(&state.db).await?;
    let output =
        datasets::store::create_or_find(&mut db, team, &name, still_api::ImportMode::Create)
            .await?;
    sqlx::query("UPDATE datasets SET description = ? WHERE id = ?")
        .bind(format!(
            "Curated from '{}' version {} by recipe {} (curation '{name}')",
            dataset.name,
            version.version,
            recipe_name.as_deref().unwrap_or("inline")
        ))
        .bind(output)
        .execute(&mut *db)
        .await?;
    let id = store::insert(
        &mut db,
        &NewCurationRow {
            team_id: team,
            name: &name,
            dataset_id: dataset.id,
            dataset_version_id: version.id,
            output_dataset_id: output,
            recipe: &recipe_json,
            recipe_name: recipe_name.as_deref(),
            seed: seed as i64,
        },
    )
    .await
    .map_err(|e| match e {
        Error::Database(err) => {
            crate::error::on_unique(err, || format!("a curation named '{name}' exists"))
        }
        e => e,
    })?;
    db.commit().await?;
    let row = store::by_id(&state.db, id).await?;
    Ok((StatusCode::CREATED, Json(summary(&state, row).await?)))
}

/// What a finished stage recorded besides its counts.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct StageDetail {
    pub rules: Vec<RuleCount>,
    pub domains: Vec<DomainCount>,
    pub trace_tokens: Option<LengthStats>,
}

pub async fn summary(state: &AppState, row: CurationRow) -> Result<CurationSummary> {
    let recipe: Recipe = serde_json::from_str(&row.recipe)
        .map_err(|e| Error::Internal(format!("curation {} recipe: {e}", row.id)))?;
    let source: StageDetail = row
        .source_detail
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| Error::Internal(format!("curation {} source detail: {e}", row.id)))?
        .unwrap_or_default();
    let mut stages = Vec::new();
    let mut last_version = None;
    for s in store::stages(&state.db, row.id).await? {
        let detail: StageDetail = serde_json::from_str(&s.detail)
            .map_err(|e| Error::Internal(format!("curation {} stage {}: {e}", row.id, s.idx)))?;
        last_version = s.version;
        stages.push(CurationStageSummary {
            index: s.idx,
            name: s.name,
            n_in: s.n_in,
            n_out: s.n_out,
            version: s.version,
            rules: detail.rules,
            domains: detail.domains,
            trace_tokens: detail.trace_tokens,
            evals: store::evals(&state.db, row.id, s.idx).await?,
        });
    }
    // A difficulty stage waiting on its evals shows them before it finishes.
    if stages.len() < recipe.stages.len() {
        let idx = stages.len() as i64;
        let evals = store::evals(&state.db, row.id, idx).await?;
        if !evals.is_empty() {
            stages.push(CurationStageSummary {
                index: idx,
                name: recipe.stages[idx as usize].name().into(),
                n_in: stages.last().map_or(row.source_rows, |s| s.n_out),
                n_out: 0,
                version: None,
                rules: Vec::new(),
                domains: Vec::new(),
                trace_tokens: None,
                evals,
            });
        }
    }
    let output = match (row.status.as_str(), row.output_dataset_id, last_version) {
        ("succeeded", Some(dataset_id), Some(v)) => {
            let version = versions::store::find(&state.db, dataset_id, v).await?;
            Some(CurationOutput {
                dataset: row.output_dataset_name.clone().unwrap_or_default(),
                dataset_id,
                version: version.version,
                content_hash: version.content_hash,
                n_rows: version.n_rows,
            })
        }
        _ => None,
    };
    Ok(CurationSummary {
        id: row.id,
        name: row.name,
        status: row.status,
        dataset_id: row.dataset_id,
        dataset_name: row.dataset_name,
        source_version: row.source_version,
        source_rows: row.source_rows,
        recipe,
        recipe_name: row.recipe_name,
        seed: row.seed as u64,
        source_domains: source.domains,
        source_trace_tokens: source.trace_tokens,
        stages,
        output,
        error: row.error,
        created_at: row.created_at,
        finished_at: row.finished_at,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    dataset: Option<String>,
}

async fn list_curations(
    State(state): State<AppState>,
    team: Team,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<CurationSummary>>> {
    let dataset = match &q.dataset {
        Some(d) => Some(datasets::store::resolve(&state.db, team.id(), d).await?.id),
        None => None,
    };
    let mut out = Vec::new();
    for row in store::list(&state.db, team.id(), dataset).await? {
        out.push(summary(&state, row).await?);
    }
    Ok(Json(out))
}

async fn get_curation(
    State(state): State<AppState>,
    team: Team,
    Path(curation): Path<String>,
) -> Result<Json<CurationSummary>> {
    let row = store::load(&state.db, team.id(), &curation).await?;
    Ok(Json(summary(&state, row).await?))
}

#[derive(Deserialize)]
struct DropsQuery {
    stage: Option<i64>,
    rule: Option<String>,
    offset: Option<i64>,
    limit: Option<i64>,
}

async fn get_drops(
    State(state): State<AppState>,
    team: Team,
    Path(curation): Path<String>,
    Query(q): Query<DropsQuery>,
) -> Result<Json<DroppedPage>> {
    let row = store::load(&state.db, team.id(), &curation).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return bad(format!("limit: {limit} is not in 1..={MAX_PAGE}"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return bad(format!("offset: {offset} is negative"));
    }
    let recipe: Recipe = serde_json::from_str(&row.recipe)
        .map_err(|e| Error::Internal(format!("curation {} recipe: {e}", row.id)))?;
    let (total, drops) =
        store::drops(&state.db, row.id, q.stage, q.rule.as_deref(), offset, limit).await?;
    let ordinals: Vec<i64> = drops.iter().map(|d| d.1).collect();
    let mut bodies = versions::store::rows_at(&state.db, row.dataset_version_id, &ordinals).await?;
    let rows = drops
        .into_iter()
        .map(|(stage, ordinal, rule, detail)| {
            let fields = bodies
                .remove(&ordinal)
                .ok_or_else(|| Error::Internal(format!("source row {ordinal} is missing")))?;
            Ok(DroppedRow {
                stage,
                stage_name: recipe
                    .stages
                    .get(stage as usize)
                    .map_or("?", Stage::name)
                    .to_string(),
                ordinal,
                rule,
                detail,
                fields,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Json(DroppedPage { total, rows }))
}

async fn cancel(
    State(state): State<AppState>,
    team: Team,
    Path(curation): Path<String>,
) -> Result<Json<CurationSummary>> {
    let row = store::load(&state.db, team.id(), &curation).await?;
    runner::cancel(&state, &row).await?;
    let row = store::by_id(&state.db, row.id).await?;
    Ok(Json(summary(&state, row).await?))
}

async fn preview(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<QualityPreviewRequest>,
) -> Result<Json<QualityPreview>> {
    let team = team.id();
    let labels = still_curate::Labels {
        domain: body
            .domain
            .clone()
            .unwrap_or_else(|| still_curate::Labels::default().domain),
        keep_tag: body.keep_tag.clone(),
    };
    check_recipe(&Recipe {
        stages: vec![Stage::Quality(body.quality.clone())],
        tokenizer: body.tokenizer.clone(),
    })?;
    check_domain("domain", &labels.domain)?;
    let dataset = datasets::store::resolve(&state.db, team, &body.dataset).await?;
    let version =
        versions::store::pin_current(&state.db, dataset.id, "pinned by a curation preview").await?;
    check_size(&dataset.name, &version)?;
    let tokenizer = runner::tokenizer_key(&state, team, body.tokenizer.as_deref()).await?;
    let pool = runner::read_pool(&state, &version, &tokenizer, labels).await?;
    let quality = body.quality;
    let (rules, n_removed, stats, domains, n_keep_tagged) =
        tokio::task::spawn_blocking(move || {
            let all: Vec<u32> = (0..pool.pool.rows.len() as u32).collect();
            let (rules, removed) = still_curate::quality::preview(&quality, &pool.pool, &all);
            let kept = pool.pool.rows.iter().filter(|r| r.keep).count() as i64;
            (
                rules,
                removed,
                runner::trace_stats(&pool.pool, &all),
                runner::domains(&pool.pool, &all),
                kept,
            )
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(QualityPreview {
        n_rows: version.n_rows,
        rules: rules
            .into_iter()
            .map(|(rule, n)| RuleCount {
                rule: rule.into(),
                n,
            })
            .collect(),
        n_removed,
        trace_tokens: stats,
        domains,
        n_keep_tagged,
    }))
}

async fn list_recipes(State(state): State<AppState>, team: Team) -> Result<Json<Vec<SavedRecipe>>> {
    let mut out = vec![SavedRecipe {
        name: S1.into(),
        recipe: s1_recipe(&[], &[]),
        created_at: String::new(),
    }];
    for (name, spec, created_at) in store::recipes(&state.db, team.id()).await? {
        out.push(SavedRecipe {
            recipe: serde_json::from_str(&spec)
                .map_err(|e| Error::Internal(format!("saved recipe '{name}': {e}")))?,
            name,
            created_at,
        });
    }
    Ok(Json(out))
}

async fn get_recipe(
    State(state): State<AppState>,
    team: Team,
    Path(name): Path<String>,
) -> Result<Json<SavedRecipe>> {
    if name == S1 {
        return Ok(Json(SavedRecipe {
            name,
            recipe: s1_recipe(&[], &[]),
            created_at: String::new(),
        }));
    }
    let spec = store::recipe(&state.db, team.id(), &name)
        .await?
        .ok_or_else(|| Error::not_found(format!("recipe '{name}'")))?;
    Ok(Json(SavedRecipe {
        recipe: serde_json::from_str(&spec)
            .map_err(|e| Error::Internal(format!("saved recipe '{name}': {e}")))?,
        name,
        created_at: String::new(),
    }))
}

async fn save_recipe(
    State(state): State<AppState>,
    team: Team,
    ApiJson(body): ApiJson<SavedRecipe>,
) -> Result<(StatusCode, Json<SavedRecipe>)> {
    let name = validate_name("recipe", &body.name)?;
    if name == S1 {
        return Err(Error::Conflict(format!(
            "name: '{S1}' is the built-in recipe; save yours under another name"
        )));
    }
    check_recipe(&body.recipe)?;
    check_references(&state, team.id(), &body.recipe).await?;
    let spec = serde_json::to_string(&body.recipe).map_err(|e| Error::Internal(e.to_string()))?;
    store::save_recipe(&state.db, team.id(), &name, &spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(SavedRecipe {
            name,
            recipe: body.recipe,
            created_at: String::new(),
        }),
    ))
}

async fn delete_recipe(
    State(state): State<AppState>,
    team: Team,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    if store::delete_recipe(&state.db, team.id(), &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found(format!("recipe '{name}'")))
    }
}

async fn lineage(
    State(state): State<AppState>,
    team: Team,
    Path((dataset, version)): Path<(String, i64)>,
) -> Result<Json<VersionLineage>> {
    let row = datasets::store::resolve(&state.db, team.id(), &dataset).await?;
    let version = versions::store::find(&state.db, row.id, version).await?;
    let made_by = match store::made_by(&state.db, version.id).await? {
        Some((curation_id, stage, stage_name)) => {
            let c = store::by_id(&state.db, curation_id).await?;
            Some(MadeBy {
                curation_id,
                curation_name: c.name,
                stage,
                stage_name,
                recipe_name: c.recipe_name,
                recipe: serde_json::from_str(&c.recipe)
                    .map_err(|e| Error::Internal(format!("curation {curation_id} recipe: {e}")))?,
                source_dataset_id: c.dataset_id,
                source_dataset_name: c.dataset_name,
                source_version: c.source_version,
            })
        }
        None => None,
    };
    let [runs, evals, curations, generations] = store::uses(&state.db, version.id).await?;
    Ok(Json(VersionLineage {
        dataset_id: row.id,
        dataset_name: row.name,
        version,
        made_by,
        runs,
        evals,
        curations,
        generations,
    }))
}
