//! A run evaluating itself as it trains (`NewRun.evals`): each plan names an eval dataset and
//! budgets, and optionally `every_steps`. When a checkpoint of such a step is committed, the
//! checkpoint is laid out as a model folder (links into the store), registered as the model
//! `<run>-step<N>` (origin `checkpoint`) and evaluated; when the run succeeds, its final model
//! is evaluated under every plan that has not already evaluated a checkpoint of the last step
//! (the same weights). The evals are ordinary evals (the evals area's `start`) that
//! remember their run and step, so the run page can draw accuracy against steps beside the
//! loss.
//!
//! These start after the checkpoint or the completion is committed: a failure to start one is
//! a warning in the run's log and never fails the training job. A retried commit finds the
//! eval it already made (by its name) and makes no second one.

use still_api::{ModelSummary, RunEval};

use super::store;
use crate::AppState;
use crate::data::datasets;
use crate::error::{Error, Result};
use crate::evals::routes::{check_request, start};
use crate::names::MAX_NAME_CHARS;
use crate::store::{artifacts, logs};

/// Eval plans a run may name.
pub const MAX_PLANS: usize = 8;

/// Checks a new run's eval plans before the run is stored: their budgets and decoding, and
/// that their datasets exist.
pub async fn check_plans(state: &AppState, team: i64, plans: &[RunEval]) -> Result<()> {
    if plans.len() > MAX_PLANS {
        return Err(Error::BadRequest(format!(
            "evals: at most {MAX_PLANS} evals per run, not {}",
            plans.len()
        )));
    }
    for (i, plan) in plans.iter().enumerate() {
        let at = |e: Error| match e {
            Error::BadRequest(m) => Error::BadRequest(format!("evals[{i}].{m}")),
            Error::NotFound(m) => Error::BadRequest(format!("evals[{i}].dataset: {m} not found")),
            e => e,
        };
        if plan.every_steps == Some(0) {
            return Err(Error::BadRequest(format!(
                "evals[{i}].every_steps: at least 1 (or leave it out to evaluate only the final model)"
            )));
        }
        check_request(&plan.new_eval(String::new(), String::new())).map_err(at)?;
        datasets::store::resolve(&state.db, team, &plan.dataset)
            .await
            .map_err(at)?;
    }
    Ok(())
}

/// `text`, cut to at most `max` characters.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The name of plan `index`'s eval of the run at `at` (`step 40`, `final`): `<run> @ <at> on
/// <dataset>`, the plan's number added where two plans share a dataset; within the name limit.
fn eval_name(run: &str, at: &str, plans: &[RunEval], index: usize) -> String {
    let plan = &plans[index];
    let shared = plans.iter().filter(|p| p.dataset == plan.dataset).count() > 1;
    let suffix = if shared {
        format!(" ({})", index + 1)
    } else {
        String::new()
    };
    let head = format!("{} @ {at} on ", cut(run, 120));
    let room = MAX_NAME_CHARS.saturating_sub(head.chars().count() + suffix.chars().count());
    format!("{head}{}{suffix}", cut(&plan.dataset, room))
}

/// Starts plan `index`'s eval of `model` unless a retried commit already did; errors are the
/// caller's to log.
async fn start_plan(
    state: &AppState,
    (team, run, run_name): (i64, i64, &str),
    model: &ModelSummary,
    plans: &[RunEval],
    (index, step, at): (usize, Option<i64>, &str),
) -> Result<()> {
    let name = eval_name(run_name, at, plans, index);
    if crate::evals::store::name_taken(&state.db, team, &name).await? {
        return Ok(());
    }
    let body = plans[index].new_eval(model.id.to_string(), name);
    let checked = check_request(&body)?;
    let eval = start(state, team, &body, checked, model, (Some(run), step)).await?;
    logs::server_line(
        &state.db,
        run,
        "info",
        &format!("eval {eval} queued: '{}' at {at}", plans[index].dataset),
    )
    .await
}

/// Logs a plan that could not start on the run.
async fn warn(state: &AppState, run: i64, what: &str, e: &Error) {
    let message = format!("{what}: {e}");
    tracing::warn!("run {run}: {message}");
    if let Err(e) = logs::server_line(&state.db, run, "warn", &message).await {
        tracing::warn!("run {run}: logging that: {e}");
    }
}

/// A checkpoint of `step` was committed: evaluates it under every plan due at that step.
pub async fn at_checkpoint(state: &AppState, run: i64, step: i64) {
    if let Err(e) = checkpoint(state, run, step).await {
        warn(
            state,
            run,
            &format!("evaluating checkpoint step {step}"),
            &e,
        )
        .await;
    }
}

async fn checkpoint(state: &AppState, run: i64, step: i64) -> Result<()> {
    let (team, run_name) = store::team_and_name(&state.db, run).await?;
    let summary = store::load_run(&state.db, team, &run.to_string()).await?;
    let due: Vec<usize> = (0..summary.evals.len())
        .filter(|&i| {
            summary.evals[i]
                .every_steps
                .is_some_and(|n| step > 0 && step % i64::from(n) == 0)
        })
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let model = checkpoint_model(state, (team, run, &run_name), step).await?;
    let at = format!("step {step}");
    for i in due {
        if let Err(e) = start_plan(
            state,
            (team, run, &run_name),
            &model,
            &summary.evals,
            (i, Some(step), &at),
        )
        .await
        {
            warn(state, run, &format!("evals[{i}] at {at}"), &e).await;
        }
    }
    Ok(())
}

/// The run's checkpoint of `step` as a registered model: its committed folder laid out under
/// `DATA_DIR/runs/<run>/step-<step>/` and registered as `<run>-step<step>` (found again on a
/// retry).
async fn checkpoint_model(
    state: &AppState,
    (team, run, run_name): (i64, i64, &str),
    step: i64,
) -> Result<ModelSummary> {
    let suffix = format!("-step{step}");
    let name = format!(
        "{}{suffix}",
        cut(run_name, MAX_NAME_CHARS - suffix.chars().count())
    );
    if let Ok(model) = crate::models::resolve_model(&state.db, team, &name).await {
        if model.run_id == Some(run) {
            return Ok(model);
        }
        return Err(Error::Conflict(format!(
            "a model named '{name}' exists and is not this run's checkpoint"
        )));
    }
    let folder = format!("step-{step}");
    let data_dir = &state.config.data_dir;
    let dir = data_dir.join("runs").join(run.to_string()).join(&folder);
    artifacts::materialize(&state.db, data_dir, run, &folder, &dir).await?;
    let inspected = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || still_engine::hf::inspect(&dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unprocessable(format!("checkpoint step {step}: {e}")))?
    };
    let mut db = crate::db::write_tx(&state.db).await?;
    let model = crate::models::store::insert_model(
        &mut db,
        team,
        &name,
        "checkpoint",
        &dir.to_string_lossy(),
        Some(run),
        &(&inspected).into(),
    )
    .await?;
    db.commit().await?;
    Ok(model)
}

/// The run succeeded with `model`: evaluates it under every plan.
pub async fn at_end(state: &AppState, run: i64, model_id: i64) {
    if let Err(e) = end(state, run, model_id).await {
        warn(state, run, "evaluating the final model", &e).await;
    }
}

async fn end(state: &AppState, run: i64, model_id: i64) -> Result<()> {
    let (team, run_name) = store::team_and_name(&state.db, run).await?;
    let summary = store::load_run(&state.db, team, &run.to_string()).await?;
    if summary.evals.is_empty() {
        return Ok(());
    }
    let model = crate::models::resolve_model(&state.db, team, &model_id.to_string()).await?;
    for i in 0..summary.evals.len() {
        // A checkpoint of the last step, already evaluated, holds the final weights.
        if let Some(last) = summary.last_step {
            let at_last = eval_name(&run_name, &format!("step {last}"), &summary.evals, i);
            if crate::evals::store::name_taken(&state.db, team, &at_last).await? {
                continue;
            }
        }
        if let Err(e) = start_plan(
            state,
            (team, run, &run_name),
            &model,
            &summary.evals,
            (i, summary.last_step, "final"),
        )
        .await
        {
            warn(state, run, &format!("evals[{i}] of the final model"), &e).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dataset: &str) -> RunEval {
        RunEval {
            dataset: dataset.into(),
            budgets: vec![Default::default()],
            decoding: None,
            preset: None,
            limit: None,
            every_steps: Some(10),
        }
    }

    #[test]
    fn eval_names_fit_the_limit_and_tell_plans_on_one_dataset_apart() {
        let plans = [plan("gsm8k"), plan("math"), plan("gsm8k")];
        assert_eq!(eval_name("r", "step 10", &plans, 1), "r @ step 10 on math");
        assert_eq!(eval_name("r", "final", &plans, 2), "r @ final on gsm8k (3)");
        let long = [plan(&"d".repeat(200))];
        let name = eval_name(&"r".repeat(194), "step 1000000", &long, 0);
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
    }
}
