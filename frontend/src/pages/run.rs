//! `/runs/:id`: one run, live. The page subscribes to the run's event stream: a snapshot of
//! everything so far, then new metric points, log lines, status and artifacts as they happen.
//! Shows progress with ETA, the curves, the log tail, downloads of checkpoints and the final
//! model, the config, cancel and "clone this config".

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use still_api::{ArtifactFolder, MetricPoint, RunLogEntry, RunSnapshot, RunStatus, RunSummary};

use crate::api::{self, ApiError};
use crate::components::chart::{LineChart, MultiLineChart};
use crate::components::{ErrorBox, every, mark};
use crate::format::{bytes, timestamp};

/// Points kept per metric before the page downsamples what it has (extremes kept).
const MAX_POINTS_PER_METRIC: usize = 2_000;
/// Log lines kept on the page.
const MAX_LOG_LINES: usize = 500;

/// Points of one metric as (step, value).
fn series(points: &[MetricPoint], name: &str) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.name == name)
        .map(|p| (p.step as f64, p.value))
        .collect()
}

fn last_value(points: &[MetricPoint], name: &str) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.name == name)
        .max_by_key(|p| p.step)
        .map(|p| p.value)
}

/// Adds streamed points (one per metric and step: a point the snapshot already had is
/// skipped); past the limit, re-downsamples per metric.
fn append_points(all: &mut Vec<MetricPoint>, new: Vec<MetricPoint>) {
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for p in all.iter() {
        let step = last.entry(p.name.clone()).or_insert(p.step);
        *step = (*step).max(p.step);
    }
    all.extend(
        new.into_iter()
            .filter(|p| last.get(&p.name).is_none_or(|&s| p.step > s)),
    );
    let metrics = all
        .iter()
        .map(|p| p.name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1);
    if all.len() > MAX_POINTS_PER_METRIC * metrics {
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.step.cmp(&b.step)));
        *all = still_api::downsample_each(std::mem::take(all), MAX_POINTS_PER_METRIC / 2);
    }
}

fn parse<T: serde::de::DeserializeOwned>(data: &str) -> Option<T> {
    serde_json::from_str(data).ok()
}

#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let snapshot = RwSignal::new(None::<RunSnapshot>);
    let connected = RwSignal::new(false);
    // A run that does not exist has no stream: ask once, to say so.
    let exists = LocalResource::new(move || {
        let id = id();
        async move { api::run(&id).await }
    });
    Effect::new(move |_| {
        let id = id();
        snapshot.set(None);
        crate::live::subscribe(
            &format!("/api/runs/{}/events", api::encode(&id)),
            vec![
                (
                    "snapshot",
                    Box::new(move |data: String| {
                        mark("still:snapshot");
                        snapshot.set(parse(&data))
                    }),
                ),
                (
                    "metrics",
                    Box::new(move |data: String| {
                        if let Some(points) = parse(&data) {
                            snapshot.update(|s| {
                                if let Some(s) = s {
                                    append_points(&mut s.metrics, points)
                                }
                            });
                        }
                    }),
                ),
                (
                    "logs",
                    Box::new(move |data: String| {
                        if let Some(lines) = parse::<Vec<RunLogEntry>>(&data) {
                            snapshot.update(|s| {
                                if let Some(s) = s {
                                    s.logs.extend(lines);
                                    let extra = s.logs.len().saturating_sub(MAX_LOG_LINES);
                                    s.logs.drain(..extra);
                                }
                            });
                        }
                    }),
                ),
                (
                    "run",
                    Box::new(move |data: String| {
                        if let Some(run) = parse(&data) {
                            snapshot.update(|s| {
                                if let Some(s) = s {
                                    s.run = run
                                }
                            });
                        }
                    }),
                ),
                (
                    "artifacts",
                    Box::new(move |data: String| {
                        if let Some(folders) = parse(&data) {
                            snapshot.update(|s| {
                                if let Some(s) = s {
                                    s.artifacts = folders
                                }
                            });
                        }
                    }),
                ),
            ],
            connected,
        );
    });
    let run = Memo::new(move |_| snapshot.with(|s| s.as_ref().map(|s| s.run.clone())));
    let points = Memo::new(move |_| {
        snapshot.with(|s| s.as_ref().map(|s| s.metrics.clone()).unwrap_or_default())
    });
    let logs = Memo::new(move |_| {
        snapshot.with(|s| s.as_ref().map(|s| s.logs.clone()).unwrap_or_default())
    });
    let artifacts = Memo::new(move |_| {
        snapshot.with(|s| s.as_ref().map(|s| s.artifacts.clone()).unwrap_or_default())
    });
    // Effects run after the DOM took the change: the first curve on screen.
    Effect::new(move |drawn: Option<bool>| {
        let now = !points.read().is_empty();
        if now && drawn != Some(true) {
            mark("still:curve");
        }
        now || drawn == Some(true)
    });
    let error = RwSignal::new(None::<ApiError>);
    view! {
        <p class="crumbs"><A href="/runs">"← runs"</A></p>
        {move || match (run.get(), exists.get()) {
            (Some(r), _) => view! { <RunHeader run=r points error connected/> }.into_any(),
            (None, Some(Err(error))) => view! { <ErrorBox error/> }.into_any(),
            (None, _) => view! { <p class="loading">"Connecting to the run…"</p> }.into_any(),
        }}
        {move || error.get().map(|error| view! { <ErrorBox error/> })}
        <Show when=move || run.with(Option::is_some)>
            <div class="charts">
                {["loss", "lr", "grad_norm", "tokens_per_s"].map(|name| view! {
                    {move || view! { <LineChart title=name.to_string() points=series(&points.read(), name)/> }}
                })}
            </div>
            {move || run.with(|r| r.as_ref().filter(|r| !r.evals.is_empty()).map(|r| view! { <RunEvals run_id=r.id/> }))}
            <RunLog logs/>
            <Artifacts run_id=move || run.with(|r| r.as_ref().map_or(0, |r| r.id)) artifacts/>
            <section class="panel">
                <h2>"Config"</h2>
                <pre class="metadata" data-test="run-config">{move || run.with(|r| r.as_ref().map(|r| serde_json::to_string_pretty(&r.config).unwrap_or_default()))}</pre>
            </section>
        </Show>
    }
}

/// The evals a run makes of itself as it trains: accuracy per budget against the step its
/// checkpoint (or final model) was taken at, beside the loss; each eval linked.
#[component]
fn RunEvals(run_id: i64) -> impl IntoView {
    let tick = RwSignal::new(0u32);
    every(std::time::Duration::from_secs(3), tick);
    let evals = LocalResource::new(move || {
        tick.track();
        api::run_evals(run_id)
    });
    view! {
        <section class="panel" data-test="run-evals">
            <h2>"Evals while training"</h2>
            {move || evals.get().map(|answer| match answer {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <p class="empty">"No eval yet: one starts at each evaluated checkpoint and at the end."</p>
                }.into_any(),
                Ok(list) => {
                    let budgets = list.first().map(|e| e.budgets.iter().map(|b| b.budget).collect::<Vec<_>>()).unwrap_or_default();
                    let series: Vec<(String, Vec<(f64, f64)>)> = budgets.iter().enumerate().map(|(i, b)| {
                        let points = list.iter()
                            .filter_map(|e| Some((e.step? as f64, e.budgets.get(i).filter(|r| r.n > 0)?.accuracy)))
                            .collect();
                        (crate::pages::evals::budget_label(b), points)
                    }).collect();
                    view! {
                        <MultiLineChart title="accuracy by step".to_string() series x_label="step"/>
                        <table class="grid" data-test="run-eval-table">
                            <thead><tr><th>"Eval"</th><th class="num">"Step"</th><th>"Status"</th><th class="num">"Graded"</th>
                                {budgets.iter().map(|b| view! { <th class="num">{crate::pages::evals::budget_label(b)}</th> }).collect_view()}
                            </tr></thead>
                            <tbody>
                                {list.into_iter().map(|e| view! {
                                    <tr data-test="run-eval-row">
                                        <td><A href=format!("/evals/{}", e.id)>{e.name.clone()}</A></td>
                                        <td class="num">{e.step.map(|s| s.to_string()).unwrap_or_default()}</td>
                                        <td><span class=format!("status {}", e.status)>{e.status.clone()}</span></td>
                                        <td class="num">{format!("{} / {}", e.done, e.n_examples * e.budgets.len() as i64)}</td>
                                        {e.budgets.iter().map(|r| view! { <td class="num">{format!("{:.1}%", 100.0 * r.accuracy)}</td> }).collect_view()}
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }
            })}
        </section>
    }
}

#[component]
fn RunHeader(
    run: RunSummary,
    points: Memo<Vec<MetricPoint>>,
    error: RwSignal<Option<ApiError>>,
    connected: RwSignal<bool>,
) -> impl IntoView {
    let id = run.id;
    let progress = move || {
        let points = points.read();
        let total = last_value(&points, "total_steps").map(|t| t as i64);
        let step = points
            .iter()
            .filter(|p| p.name == "loss")
            .map(|p| p.step)
            .max()
            .unwrap_or(0);
        let elapsed = last_value(&points, "elapsed_s").unwrap_or(0.0);
        let eta = match total {
            Some(t) if step > 0 && t > step => {
                format!("ETA {:.0} s", elapsed / step as f64 * (t - step) as f64)
            }
            _ => String::new(),
        };
        let percent = total.map_or(0.0, |t| 100.0 * step as f64 / t.max(1) as f64);
        view! {
            <div class="bar" style=format!("width: {percent:.1}%")></div>
            <span data-test="progress-text">{format!("step {step}{} {eta}", total.map(|t| format!(" / {t}")).unwrap_or_default())}</span>
        }
    };
    let active = matches!(run.status, RunStatus::Queued | RunStatus::Running);
    let cancel = move |_| {
        spawn_local(async move {
            if let Err(e) = api::cancel_run(id).await {
                error.set(Some(e));
            }
        });
    };
    let needs = match (&run.device, run.min_memory_bytes) {
        (None, 0) => String::new(),
        (device, memory) => format!(
            " · needs a {} worker with {}",
            device.as_deref().unwrap_or("any"),
            bytes(memory)
        ),
    };
    view! {
        <h1 data-test="run-name">{run.name.clone()}</h1>
        <p class="meta">
            <span class=format!("status {}", run.status) data-test="run-status">{run.status.as_str()}</span>
            {format!(" · {} · model {} · dataset ", run.method, run.model)}
            <A href=format!("/datasets/{}/versions/{}", run.dataset_id, run.dataset_version) attr:data-test="run-data-lineage">
                {format!("{} v{} ({})", run.dataset, run.dataset_version, &run.dataset_version_hash[..12.min(run.dataset_version_hash.len())])}</A>
            {format!(" · attempt {}/{}{needs}", run.attempts, run.max_attempts)}
            <span class="live" data-test="live">{move || if connected.get() { " · live" } else { " · reconnecting…" }}</span>
        </p>
        {run.examples.clone().map(|e| {
            let max_seq_len = run.config.get("max_seq_len").map(|v| v.to_string()).unwrap_or_default();
            view! {
                <p class="meta" data-test="run-examples">{format!(
                    "{} examples train · {} truncated · {} skipped (longer than max_seq_len {max_seq_len})",
                    e.n_trained, e.n_truncated, e.n_skipped
                )}</p>
            }
        })}
        {run.error.clone().map(|e| view! { <div class="error" data-test="run-error">{e}</div> })}
        <div class="progress" data-test="progress">{progress}</div>
        <div class="actions">
            {active.then(|| view! { <button class="danger" data-test="cancel-run" on:click=cancel>"Cancel"</button> })}
            <A href=format!("/runs?clone={id}") attr:data-test="clone-run">"Clone config"</A>
            {run.output_model_id.map(|m| view! {
                <A href=format!("/evals?model={m}") attr:data-test="evaluate-run">"Evaluate"</A>
            })}
        </div>
    }
}

#[component]
fn RunLog(logs: Memo<Vec<RunLogEntry>>) -> impl IntoView {
    view! {
        <section class="panel">
            <h2>"Log"</h2>
            // column-reverse keeps the view pinned to the newest line as lines arrive.
            <div class="log" data-test="run-log">
                <div>
                    {move || logs.get().into_iter().map(|l| view! {
                        <div class=format!("line {}", l.level)>
                            <span class="when">{timestamp(&l.created_at)}</span>
                            <span class="who">{format!("{} #{}", l.source, l.attempt)}</span>
                            <span class="what">{l.message}</span>
                        </div>
                    }).collect_view()}
                </div>
            </div>
        </section>
    }
}

#[component]
fn Artifacts(
    run_id: impl Fn() -> i64 + Send + Sync + Copy + 'static,
    artifacts: Memo<Vec<ArtifactFolder>>,
) -> impl IntoView {
    view! {
        <section class="panel">
            <h2>"Checkpoints and final model"</h2>
            {move || {
                let folders = artifacts.get();
                if folders.is_empty() {
                    return view! { <p class="empty">"Nothing stored yet: checkpoints appear every checkpoint_every steps, the final model at the end."</p> }.into_any();
                }
                let id = run_id();
                view! {
                    <table class="grid" data-test="artifacts">
                        <thead><tr><th>"Folder"</th><th class="num">"Size"</th><th>"Download"</th><th>"Files"</th></tr></thead>
                        <tbody>
                            {folders.into_iter().map(|f| {
                                let folder = f.folder.clone();
                                view! {
                                    <tr data-test=format!("artifact-{folder}")>
                                        <td>{if f.step.is_some() { format!("checkpoint {folder}") } else { "final model".to_string() }}</td>
                                        <td class="num">{bytes(f.total_bytes)}</td>
                                        <td><a href=format!("/api/runs/{id}/artifacts/{folder}?format=tar") download=""
                                            data-test=format!("download-{folder}")>"folder (.tar)"</a></td>
                                        <td class="files">
                                            {f.files.into_iter().map(|file| view! {
                                                <a href=format!("/api/runs/{id}/artifacts/{folder}/{}", file.name) download="" title=file.sha256.clone()>
                                                    {format!("{} ({})", file.name, bytes(file.size))}
                                                </a>
                                            }).collect_view()}
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}
