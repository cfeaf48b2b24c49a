//! Live run pages: `GET /api/runs/{run}/events` is a Server-Sent Events stream. The first event
//! (`snapshot`) carries everything so far (downsampled metrics, the log tail, the artifacts);
//! then `metrics`, `logs`, `run` and `artifacts` events carry what changed.
//!
//! Writers (handlers and the reaper) call `store::notices::Events::touch` with the run they changed; a stream
//! wakes on that (or after a safety-net period) and reads what is new since its cursors. The stream ends when the server shuts down, so a graceful stop never waits on it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use still_api::RunSnapshot;
use tokio::sync::{broadcast, watch};

use crate::AppState;
use crate::error::{Error, Result};
use crate::http::Team;

/// Points per metric in a snapshot.
pub const SNAPSHOT_POINTS: usize = 1_000;
/// Log lines in a snapshot.
pub const SNAPSHOT_LOG_LINES: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/runs/{run}/events", get(events_route))
}

/// Everything a run page shows, as of now, and the last step it includes.
pub async fn snapshot(state: &AppState, team: Team, run: i64) -> Result<(RunSnapshot, i64)> {
    let summary = crate::runs::store::load_run(&state.db, team.id(), &run.to_string()).await?;
    // The cursor first: a point stored while the snapshot is read comes again as an update
    // (the page keeps one point per step), never not at all.
    let last_step = crate::store::metrics::last_step(&state.db, run).await?;
    let snapshot = RunSnapshot {
        run: summary,
        metrics: crate::store::metrics::downsampled(&state.db, run, None, SNAPSHOT_POINTS).await?,
        logs: crate::store::logs::tail(
            &state.db,
            crate::store::logs::Owner::Run(run),
            None,
            SNAPSHOT_LOG_LINES,
        )
        .await?,
        artifacts: crate::store::artifacts::folders(&state.db, run).await?,
    };
    Ok((snapshot, last_step.unwrap_or(-1)))
}

/// What a stream has sent so far.
struct Cursor {
    state: AppState,
    team: Team,
    run: i64,
    step: i64,
    log_id: i64,
    run_json: String,
    /// The run reached succeeded, failed or cancelled.
    finished: bool,
    artifacts_json: String,
    pending: VecDeque<Event>,
    changed: broadcast::Receiver<i64>,
    closing: watch::Receiver<bool>,
}

fn event(name: &str, value: &impl serde::Serialize) -> Result<Event> {
    Event::default()
        .event(name)
        .json_data(value)
        .map_err(|e| Error::Internal(format!("event {name}: {e}")))
}

impl Cursor {
    /// Queues events for whatever changed since the last look.
    async fn poll(&mut self) -> Result<()> {
        let points = crate::store::metrics::after(&self.state.db, self.run, self.step).await?;
        if let Some(max) = points.iter().map(|p| p.step).max() {
            self.step = max;
            self.pending.push_back(event("metrics", &points)?);
        }
        let lines = crate::store::logs::tail(
            &self.state.db,
            crate::store::logs::Owner::Run(self.run),
            Some(self.log_id),
            crate::store::logs::MAX_TAIL,
        )
        .await?;
        if let Some(last) = lines.last() {
            self.log_id = last.id;
            self.pending.push_back(event("logs", &lines)?);
        }
        let summary =
            crate::runs::store::load_run(&self.state.db, self.team.id(), &self.run.to_string())
                .await?;
        let json = serde_json::to_string(&summary).map_err(|e| Error::Internal(e.to_string()))?;
        if json != self.run_json {
            self.run_json = json;
            self.finished = summary.status.is_finished();
            self.pending.push_back(event("run", &summary)?);
        }
        let folders = crate::store::artifacts::folders(&self.state.db, self.run).await?;
        let json = serde_json::to_string(&folders).map_err(|e| Error::Internal(e.to_string()))?;
        if json != self.artifacts_json {
            self.artifacts_json = json;
            self.pending.push_back(event("artifacts", &folders)?);
        }
        Ok(())
    }

    /// Waits for a change notice about this run, the safety-net period, or the server closing
    /// (false). Every writer announces its changes, so the period only bounds how long a missed
    /// notice could go unseen: 15 s while the run is active, a minute once it finished.
    async fn wait(&mut self) -> bool {
        let period = if self.finished { 60 } else { 15 };
        let deadline = tokio::time::sleep(Duration::from_secs(period));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                closed = self.closing.wait_for(|c| *c) => {
                    let _ = closed;
                    return false;
                }
                notice = self.changed.recv() => match notice {
                    Ok(run) if run == self.run => return true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
            }
        }
    }
}

async fn events_route(
    State(state): State<AppState>,
    team: Team,
    Path(run): Path<String>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let run = crate::runs::store::load_run(&state.db, team.id(), &run).await?;
    // Subscribe before reading, so no change between the snapshot and the stream is missed.
    let changed = state.events.subscribe();
    let closing = state.events.closing();
    let (first, step) = snapshot(&state, team, run.id).await?;
    let cursor = Cursor {
        team,
        run: run.id,
        step,
        log_id: first.logs.last().map_or(0, |l| l.id),
        run_json: serde_json::to_string(&first.run).map_err(|e| Error::Internal(e.to_string()))?,
        finished: first.run.status.is_finished(),
        artifacts_json: serde_json::to_string(&first.artifacts)
            .map_err(|e| Error::Internal(e.to_string()))?,
        pending: VecDeque::from([event("snapshot", &first)?]),
        state,
        changed,
        closing,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            if *cursor.closing.borrow() || !cursor.wait().await {
                return None;
            }
            match cursor.poll().await {
                Ok(()) => {}
                // The run was deleted: nothing more will come.
                Err(Error::NotFound(_)) => return None,
                Err(e) => tracing::warn!(run = cursor.run, error = %e, "run events"),
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
