//! Runs curations, one stage at a time, on a background task of the server (started with it,
//! like the reaper). A stage reads its input (the previous stage's kept rows) from the source
//! version's rows, held as `still_curate::Features` (read once per curation in batches; trace
//! tokens counted once per row content and cached), computes on a blocking thread, and is
//! committed in one transaction: its dropped rows, the version it cuts in the output dataset,
//! its counts. The difficulty stage queues one eval job per model on the stage's input version
//! and waits for them. A restarted server carries on from the last committed stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use still_api::{
    BudgetSpec, DatasetVersion, DomainCount, LengthStats, NewEval, Recipe, RuleCount, Stage,
};
use still_curate::tokens::Counter;
use still_curate::{Labels, Pool, PoolBuilder, StageOut, decontam, difficulty, diversity, quality};

use super::routes::StageDetail;
use super::store::{self, CurationRow, NewStage};
use crate::AppState;
use crate::data::{datasets, examples, versions};
use crate::error::{Error, Result};
use crate::jobs::queue::{self, Owner};

/// Rows read per round trip.
const BATCH: i64 = 1000;
/// How often the runner looks for work when there is none.
const IDLE: Duration = Duration::from_millis(200);

/// A tokenizer as the cache names it, and where it comes from.
#[derive(Debug, Clone)]
pub struct TokenizerKey {
    pub key: String,
    path: Option<std::path::PathBuf>,
}

/// The tokenizer a recipe names: the built-in Qwen2.5 one, or a registry model's.
pub async fn tokenizer_key(
    state: &AppState,
    team: i64,
    name: Option<&str>,
) -> Result<TokenizerKey> {
    match name {
        None => Ok(TokenizerKey {
            key: still_curate::tokens::BUILT_IN.into(),
            path: None,
        }),
        Some(n) if n == still_curate::tokens::BUILT_IN => Ok(TokenizerKey {
            key: n.into(),
            path: None,
        }),
        Some(n) => {
            let model = crate::models::resolve_model(&state.db, team, n)
                .await
                .map_err(|e| match e {
                    Error::NotFound(m) => Error::NotFound(format!(
                        "recipe.tokenizer: {m} (or name the built-in '{}')",
                        still_curate::tokens::BUILT_IN
                    )),
                    e => e,
                })?;
            let path = crate::models::store::model_path(&state.db, model.id)
                .await
                .map_err(|e| Error::Unprocessable(format!("recipe.tokenizer: {e}")))?
                .join("tokenizer.json");
            if !path.is_file() {
                return Err(Error::Unprocessable(format!(
                    "recipe.tokenizer: model '{}' has no tokenizer.json in its folder",
                    model.name
                )));
            }
            Ok(TokenizerKey {
                key: format!("model:{}", model.id),
                path: Some(path),
            })
        }
    }
}

/// Loaded tokenizers, kept for the server's life (a tokenizer takes a moment to load).
fn counter(key: &TokenizerKey) -> Result<Arc<Counter>> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Counter>>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    if let Some(c) = loaded.lock().expect("tokenizers lock").get(&key.key) {
        return Ok(c.clone());
    }
    let c = match &key.path {
        None => Counter::qwen25(),
        Some(p) => Counter::from_file(p),
    }
    .map_err(|e| Error::Unprocessable(format!("recipe.tokenizer: {e}")))?;
    let c = Arc::new(c);
    loaded
        .lock()
        .expect("tokenizers lock")
        .insert(key.key.clone(), c.clone());
    Ok(c)
}

/// A source version's rows as the stages read them, with each row's blob hash.
pub struct Prepared {
    pub pool: Pool,
    pub hashes: Vec<String>,
}

/// Reads a version's rows into a [`Prepared`] pool, counting trace tokens (from the cache when
/// this row content was counted before with this tokenizer).
pub async fn read_pool(
    state: &AppState,
    version: &DatasetVersion,
    tokenizer: &TokenizerKey,
    labels: Labels,
) -> Result<Prepared> {
    let counter = counter(tokenizer)?;
    let mut builder = PoolBuilder::new(labels);
    let mut hashes: Vec<String> = Vec::with_capacity(version.n_rows as usize);
    let mut after = -1;
    loop {
        let rows = versions::store::rows_of(&state.db, version.id, after, BATCH).await?;
        let Some(last) = rows.last() else { break };
        after = last.ordinal;
        let keys: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
        let cached = store::cached_tokens(&state.db, &tokenizer.key, &keys).await?;
        let counter = counter.clone();
        let (b, counted, batch_hashes) = tokio::task::spawn_blocking(move || {
            let missing: Vec<usize> = (0..rows.len())
                .filter(|&i| !cached.contains_key(&rows[i].hash))
                .collect();
            let texts: Vec<&str> = missing
                .iter()
                .map(|&i| rows[i].fields.thinking.as_str())
                .collect();
            let counts = counter.count_batch(&texts)?;
            let counted: HashMap<usize, u32> = missing.into_iter().zip(counts).collect();
            let mut fresh = Vec::with_capacity(counted.len());
            let mut batch_hashes = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                let n = match counted.get(&i) {
                    Some(&n) => {
                        fresh.push((row.hash.clone(), n));
                        n
                    }
                    None => cached[&row.hash],
                };
                builder.push(&row.fields, n);
                batch_hashes.push(row.hash);
            }
            Ok::<_, String>((builder, fresh, batch_hashes))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::Unprocessable)?;
        builder = b;
        let fresh: Vec<(&str, u32)> = counted.iter().map(|(h, n)| (h.as_str(), *n)).collect();
        store::cache_tokens(&state.db, &tokenizer.key, &fresh).await?;
        hashes.extend(batch_hashes);
    }
    if hashes.len() as i64 != version.n_rows {
        return Err(Error::Internal(format!(
            "version {} lists {} rows but {} were read",
            version.version,
            version.n_rows,
            hashes.len()
        )));
    }
    Ok(Prepared {
        pool: builder.finish(),
        hashes,
    })
}

/// The trace-length histogram of `rows`.
pub fn trace_stats(pool: &Pool, rows: &[u32]) -> LengthStats {
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for &r in rows {
        *counts
            .entry(i64::from(pool.rows[r as usize].trace_tokens))
            .or_default() += 1;
    }
    let counts: Vec<(i64, i64)> = counts.into_iter().collect();
    datasets::store::length_stats("trace_tokens", &counts, 20)
}

/// The domains of `rows`, most rows first.
pub fn domains(pool: &Pool, rows: &[u32]) -> Vec<DomainCount> {
    let mut d: Vec<DomainCount> = still_curate::domain_counts(pool, rows)
        .into_iter()
        .map(|(domain, n)| DomainCount { domain, n })
        .collect();
    d.sort_by(|a, b| b.n.cmp(&a.n).then(a.domain.cmp(&b.domain)));
    d
}

fn labels(recipe: &Recipe) -> Labels {
    recipe
        .stages
        .iter()
        .find_map(|s| match s {
            Stage::Diversity(d) => Some(Labels {
                domain: d.domain.clone(),
                keep_tag: d.keep_tag.clone(),
            }),
            _ => None,
        })
        .unwrap_or_default()
}

/// Cancels a curation and the evals it queued.
pub async fn cancel(state: &AppState, row: &CurationRow) -> Result<()> {
    let mut db = crate::db::write_tx(&state.db).await?;
    let moved = store::set_status(&mut db, row.id, "cancelled", None).await?;
    db.commit().await?;
    if !moved {
        return Err(Error::Conflict(format!(
            "curation '{}' has already {}",
            row.name, row.status
        )));
    }
    for eval in store::all_evals(&state.db, row.id).await? {
        queue::cancel(&state.db, Owner::Eval(eval)).await?;
    }
    Ok(())
}

/// Starts the runner; it stops when the task is aborted.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cache: HashMap<i64, Arc<Prepared>> = HashMap::new();
        loop {
            let worked = match store::active(&state.db).await {
                Ok(ids) => {
                    cache.retain(|id, _| ids.contains(id));
                    let mut worked = false;
                    for id in ids {
                        match advance(&state, &mut cache, id).await {
                            Ok(w) => worked |= w,
                            Err(e) => {
                                tracing::warn!("curation {id} failed: {e}");
                                cache.remove(&id);
                                if let Ok(mut db) = crate::db::write_tx(&state.db).await {
                                    let message = e.to_string();
                                    if store::set_status(&mut db, id, "failed", Some(&message))
                                        .await
                                        .is_ok()
                                    {
                                        let _ = db.commit().await;
                                    }
                                }
                            }
                        }
                    }
                    worked
                }
                Err(e) => {
                    tracing::warn!("curations: {e}");
                    false
                }
            };
            if !worked {
                tokio::time::sleep(IDLE).await;
            }
        }
    })
}

/// Moves one curation on by at most one stage; true if it changed.
async fn advance(
    state: &AppState,
    cache: &mut HashMap<i64, Arc<Prepared>>,
    id: i64,
) -> Result<bool> {
    let row = store::by_id(&state.db, id).await?;
    let recipe: Recipe = serde_json::from_str(&row.recipe)
        .map_err(|e| Error::Internal(format!("curation {id} recipe: {e}")))?;
    let done = store::stages(&state.db, id).await?;
    let idx = done.len();
    if idx >= recipe.stages.len() {
        let mut db = crate::db::write_tx(&state.db).await?;
        store::set_status(&mut db, id, "succeeded", None).await?;
        db.commit().await?;
        return Ok(true);
    }
    // Waiting on the difficulty stage's evals: nothing to read or compute until they end.
    if row.status == "waiting" && !evals_ended(state, &row, idx as i64).await? {
        return Ok(false);
    }
    let prepared = match cache.get(&id) {
        Some(p) => p.clone(),
        None => {
            if row.status == "queued" {
                let mut db = crate::db::write_tx(&state.db).await?;
                store::set_status(&mut db, id, "running", None).await?;
                db.commit().await?;
            }
            let source =
                versions::store::find(&state.db, row.dataset_id, row.source_version).await?;
            let tokenizer = tokenizer_key(state, row.team_id, recipe.tokenizer.as_deref()).await?;
            let t = std::time::Instant::now();
            let p = Arc::new(read_pool(state, &source, &tokenizer, labels(&recipe)).await?);
            tracing::info!(
                "curation {id}: read {} source rows in {:.1} s",
                p.pool.rows.len(),
                t.elapsed().as_secs_f64()
            );
            if row.source_detail.is_none() {
                let all: Vec<u32> = (0..p.pool.rows.len() as u32).collect();
                let detail = StageDetail {
                    rules: Vec::new(),
                    domains: domains(&p.pool, &all),
                    trace_tokens: Some(trace_stats(&p.pool, &all)),
                };
                let json =
                    serde_json::to_string(&detail).map_err(|e| Error::Internal(e.to_string()))?;
                store::set_source_detail(&state.db, id, &json).await?;
            }
            cache.insert(id, p.clone());
            p
        }
    };
    let input: Vec<u32> = match done.last() {
        None => (0..prepared.pool.rows.len() as u32).collect(),
        Some(s) => store::kept(&state.db, id, s.idx).await?,
    };
    // The version holding the input, for the evals of a difficulty stage.
    let input_version = match done.last() {
        None => (row.dataset_id, row.source_version),
        Some(s) => (
            row.output_dataset_id.ok_or_else(|| {
                Error::Conflict("the curation's output dataset was deleted".into())
            })?,
            s.version
                .ok_or_else(|| Error::Conflict("a stage's version was deleted".into()))?,
        ),
    };
    let stage = recipe.stages[idx].clone();
    let seed = row.seed as u64;
    let t = std::time::Instant::now();
    let out = match &stage {
        Stage::Quality(q) => {
            let q = q.clone();
            let p = prepared.clone();
            blocking(move || quality::run(&q, &p.pool, &input)).await?
        }
        Stage::Diversity(d) => {
            let target = d.target as usize;
            let p = prepared.clone();
            blocking(move || diversity::run(&p.pool, &input, target, seed)).await?
        }
        Stage::Decontamination(d) => {
            let mut sets = Vec::new();
            for name in &d.against {
                let dataset = datasets::store::resolve(&state.db, row.team_id, name).await?;
                let version = versions::store::pin_current(
                    &state.db,
                    dataset.id,
                    &format!("pinned by curation '{}' (decontamination)", row.name),
                )
                .await?;
                super::routes::check_size(&dataset.name, &version)?;
                let mut questions = Vec::with_capacity(version.n_rows as usize);
                let mut after = -1;
                loop {
                    let rows =
                        versions::store::rows_of(&state.db, version.id, after, BATCH).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.ordinal;
                    questions.extend(rows.into_iter().map(|r| r.fields.question));
                }
                sets.push(decontam::EvalSet {
                    name: dataset.name,
                    questions,
                });
            }
            let n = d.n as usize;
            let p = prepared.clone();
            blocking(move || decontam::run(&decontam::Index::new(sets, n), &p.pool, &input)).await?
        }
        Stage::Difficulty(d) => {
            match difficulty_stage(state, &row, idx as i64, d, &input, input_version).await? {
                Some(solved) => {
                    let min = d.min_trace_tokens;
                    let p = prepared.clone();
                    blocking(move || difficulty::run(&p.pool, &input, &solved, min)).await?
                }
                None => return Ok(false),
            }
        }
    };
    let n_in = out.kept.len() + out.dropped.len();
    let computed = t.elapsed().as_secs_f64();
    commit_stage(
        state,
        &row,
        &prepared,
        idx,
        stage.name(),
        n_in,
        &out,
        idx + 1 == recipe.stages.len(),
    )
    .await?;
    tracing::info!(
        "curation {id}: stage {} ({}) kept {} of {n_in} rows; computed in {computed:.1} s, committed in {:.1} s",
        idx + 1,
        stage.name(),
        out.kept.len(),
        t.elapsed().as_secs_f64() - computed
    );
    if idx + 1 == recipe.stages.len() {
        cache.remove(&id);
    }
    Ok(true)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a curation stage panicked: {e}")))
}

/// Whether every eval of a stage has ended (succeeded, failed or cancelled).
async fn evals_ended(state: &AppState, row: &CurationRow, idx: i64) -> Result<bool> {
    for eval in store::evals(&state.db, row.id, idx).await? {
        let e = crate::evals::store::load(&state.db, row.team_id, &eval.to_string()).await?;
        if !matches!(
            e.status.as_deref(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The difficulty stage: queues its evals the first time; once all have succeeded, the rows any
/// model got right (input position → the first such model in the recipe's order). None while
/// they run.
async fn difficulty_stage(
    state: &AppState,
    row: &CurationRow,
    idx: i64,
    stage: &still_api::DifficultyStage,
    input: &[u32],
    (dataset_id, version): (i64, i64),
) -> Result<Option<BTreeMap<u32, String>>> {
    if input.is_empty() {
        return Ok(Some(BTreeMap::new()));
    }
    let evals = store::evals(&state.db, row.id, idx).await?;
    if evals.is_empty() {
        let body = NewEval {
            model: String::new(),
            dataset: dataset_id.to_string(),
            version: Some(version),
            name: None,
            budgets: vec![BudgetSpec {
                max_thinking_tokens: Some(stage.max_thinking_tokens),
                min_thinking_tokens: 0,
                wait_extensions: 0,
            }],
            decoding: stage
                .max_answer_tokens
                .map(|max_answer_tokens| still_api::Decoding {
                    max_answer_tokens,
                    ..Default::default()
                }),
            preset: stage.preset.clone(),
            limit: None,
        };
        for (position, name) in stage.models.iter().enumerate() {
            let model = crate::models::resolve_model(&state.db, row.team_id, name).await?;
            crate::models::engine_model(&model, "difficulty model", "pick a Qwen2 model")?;
            let body = NewEval {
                model: model.name.clone(),
                ..body.clone()
            };
            let checked = crate::evals::routes::check_request(&body)?;
            let eval = crate::evals::routes::start(
                state,
                row.team_id,
                &body,
                checked,
                &model,
                (None, None),
            )
            .await?;
            let mut db = crate::db::write_tx(&state.db).await?;
            store::link_eval(&mut db, row.id, idx, position as i64, eval).await?;
            if position == 0 {
                store::set_status(&mut db, row.id, "waiting", None).await?;
            }
            db.commit().await?;
        }
        return Ok(None);
    }
    let mut per_model = Vec::new();
    for eval in &evals {
        let e = crate::evals::store::load(&state.db, row.team_id, &eval.to_string()).await?;
        match e.status.as_deref() {
            Some("succeeded") => {}
            Some("failed") | Some("cancelled") => {
                return Err(Error::Conflict(format!(
                    "the difficulty stage's eval '{}' {}{}",
                    e.name,
                    e.status.as_deref().unwrap_or_default(),
                    e.error.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
            _ => return Ok(None),
        }
        per_model.push((e.model_name.clone(), store::solved(&state.db, *eval).await?));
    }
    let solved = difficulty::solved_rows(input, &per_model).map_err(Error::Internal)?;
    Ok(Some(solved))
}

/// Stores a finished stage in one transaction: its drops, the version it cuts (the last
/// stage's rows also become the output dataset's live rows) and its counts.
#[allow(clippy::too_many_arguments)]
async fn commit_stage(
    state: &AppState,
    row: &CurationRow,
    prepared: &Prepared,
    idx: usize,
    name: &str,
    n_in: usize,
    out: &StageOut,
    last: bool,
) -> Result<()> {
    let output = row
        .output_dataset_id
        .ok_or_else(|| Error::Conflict("the curation's output dataset was deleted".into()))?;
    let mut rules: Vec<RuleCount> = Vec::new();
    for d in &out.dropped {
        match rules.iter_mut().find(|r| r.rule == d.rule) {
            Some(r) => r.n += 1,
            None => rules.push(RuleCount {
                rule: d.rule.into(),
                n: 1,
            }),
        }
    }
    let detail = StageDetail {
        rules,
        domains: domains(&prepared.pool, &out.kept),
        trace_tokens: Some(trace_stats(&prepared.pool, &out.kept)),
    };
    let detail = serde_json::to_string(&detail).map_err(|e| Error::Internal(e.to_string()))?;
    let kept = serde_json::to_string(&out.kept).map_err(|e| Error::Internal(e.to_string()))?;
    let message = format!(
        "{name}: {} of {n_in} rows (curation '{}', stage {})",
        out.kept.len(),
        row.name,
        idx + 1
    );
    let mut db = crate::db::write_tx(&state.db).await?;
    let status: String = sqlx::query_scalar("SELECT status FROM curations WHERE id = ?")
        .bind(row.id)
        .fetch_one(&mut *db)
        .await?;
    if !matches!(status.as_str(), "running" | "waiting") {
        return Ok(()); // cancelled meanwhile: nothing is written
    }
    let drops: Vec<(i64, &str, &str)> = out
        .dropped
        .iter()
        .map(|d| (i64::from(d.row), d.rule, d.detail.as_str()))
        .collect();
    store::insert_drops(&mut db, row.id, idx as i64, &drops).await?;
    let mut rows: Vec<(Option<i64>, &str)> = Vec::with_capacity(out.kept.len());
    if last {
        // The output's live rows: the kept rows, read back a batch at a time.
        for chunk in out.kept.chunks(500) {
            let hashes: Vec<&str> = chunk
                .iter()
                .map(|&r| prepared.hashes[r as usize].as_str())
                .collect();
            let bodies = versions::store::bodies(&state.db, &hashes).await?;
            for hash in hashes {
                let fields = bodies
                    .get(hash)
                    .ok_or_else(|| Error::Internal(format!("row blob {hash} is missing")))?;
                let example = examples::store::insert(&mut db, output, None, None, fields).await?;
                rows.push((Some(example), hash));
            }
        }
        datasets::store::touch(&mut db, output).await?;
    } else {
        rows.extend(
            out.kept
                .iter()
                .map(|&r| (None, prepared.hashes[r as usize].as_str())),
        );
    }
    let version = versions::store::cut(&mut db, output, &rows, &message, last).await?;
    store::insert_stage(
        &mut db,
        &NewStage {
            curation_id: row.id,
            idx: idx as i64,
            name,
            n_in: n_in as i64,
            n_out: out.kept.len() as i64,
            version_id: version.id,
            detail: &detail,
            kept: &kept,
        },
    )
    .await?;
    if last {
        store::set_status(&mut db, row.id, "succeeded", None).await?;
    } else if status == "waiting" {
        store::set_status(&mut db, row.id, "running", None).await?;
    }
    db.commit().await?;
    Ok(())
}
