//! `/runs`: every run with its status, the new-run form (s1 defaults), and making a tiny model.
//! `/runs/:id`: live curves, progress, config, cancel. `/workers`: the worker pool.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use still_api::{MetricPoint, NewModel, NewRun, RunParams, RunSummary};

use crate::api::{self, ApiError};
use crate::components::ErrorBox;
use crate::components::chart::LineChart;
use crate::format::{thousands, timestamp};

/// Bumps `counter` every `period` while the calling component lives (resources that track it
/// refetch).
fn every(period: std::time::Duration, counter: RwSignal<u32>) {
    let handle =
        leptos::prelude::set_interval_with_handle(move || counter.update(|n| *n += 1), period);
    on_cleanup(move || {
        if let Ok(h) = handle {
            h.clear();
        }
    });
}

fn parse_opt<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

#[component]
pub fn RunsPage() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let runs = LocalResource::new(move || {
        refresh.track();
        api::runs()
    });
    let models = LocalResource::new(move || {
        refresh.track();
        api::models()
    });
    let datasets = LocalResource::new(api::datasets);
    // Refresh the list while something is queued or running.
    every(std::time::Duration::from_secs(2), refresh);
    view! {
        <h1>"Runs"</h1>
        <NewRunForm models datasets on_change=Callback::new(move |_| refresh.update(|n| *n += 1))/>
        <Transition fallback=|| view! { <p class="loading">"Loading runs…"</p> }>
            {move || runs.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="empty">"No runs yet."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="grid" data-test="runs">
                        <thead><tr><th>"Run"</th><th>"Status"</th><th>"Method"</th><th>"Model"</th><th>"Dataset"</th>
                            <th class="num">"Step"</th><th class="num">"Loss"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|r| {
                                let name = r.name.clone();
                                view! {
                                    <tr data-test="run-row" data-name=r.name.clone()>
                                        <td><A href=format!("/runs/{}", r.id)>{name}</A></td>
                                        <td><span class=format!("status {}", r.status) data-test="run-status">{r.status.clone()}</span></td>
                                        <td>{r.method.clone()}</td>
                                        <td>{r.model.clone()}</td>
                                        <td>{format!("{} v{}", r.dataset, r.dataset_version)}</td>
                                        <td class="num">{r.last_step.map(|s| s.to_string()).unwrap_or_default()}</td>
                                        <td class="num">{r.last_loss.map(|l| format!("{l:.4}")).unwrap_or_default()}</td>
                                        <td>{timestamp(&r.created_at)}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn NewRunForm(
    models: LocalResource<Result<Vec<still_api::ModelSummary>, ApiError>>,
    datasets: LocalResource<Result<Vec<still_api::DatasetSummary>, ApiError>>,
    on_change: Callback<()>,
) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let method = RwSignal::new("sft".to_string());
    let model = RwSignal::new(String::new());
    let teacher = RwSignal::new(String::new());
    let dataset = RwSignal::new(String::new());
    // s1's recipe; the form shows it and sends only what the user changed.
    let max_steps = RwSignal::new(String::new());
    let epochs = RwSignal::new("5".to_string());
    let lr = RwSignal::new("1e-5".to_string());
    let batch_size = RwSignal::new("1".to_string());
    let grad_accum = RwSignal::new("16".to_string());
    let max_seq_len = RwSignal::new("4096".to_string());
    let seed = RwSignal::new("42".to_string());
    let checkpoint_every = RwSignal::new(String::new());
    let model_name = RwSignal::new("tiny".to_string());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();

    let submit = move |_| {
        let request = NewRun {
            name: name.get_untracked(),
            method: method.get_untracked(),
            model: model.get_untracked(),
            teacher: Some(teacher.get_untracked())
                .filter(|t| !t.is_empty() && method.get_untracked() == "kd"),
            dataset: dataset.get_untracked(),
            params: RunParams {
                max_steps: parse_opt(&max_steps.get_untracked()),
                epochs: parse_opt(&epochs.get_untracked()),
                lr: parse_opt(&lr.get_untracked()),
                batch_size: parse_opt(&batch_size.get_untracked()),
                grad_accum: parse_opt(&grad_accum.get_untracked()),
                max_seq_len: parse_opt(&max_seq_len.get_untracked()),
                seed: parse_opt(&seed.get_untracked()),
                checkpoint_every: parse_opt(&checkpoint_every.get_untracked()),
                ..Default::default()
            },
            max_attempts: None,
        };
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::create_run(&request).await {
                Ok(run) => {
                    error.set(None);
                    on_change.run(());
                    navigate(&format!("/runs/{}", run.id), Default::default());
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let make_model = move |_| {
        let request = NewModel {
            name: model_name.get_untracked(),
            preset: Some("tiny".into()),
            tokenizer_dataset: Some(dataset.get_untracked()),
            vocab_size: Some(1024),
            path: None,
        };
        busy.set(true);
        spawn_local(async move {
            match api::create_model(&request).await {
                Ok(m) => {
                    model.set(m.id.to_string());
                    error.set(None);
                    on_change.run(());
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let field = |label: &'static str, signal: RwSignal<String>| {
        view! {
            <label>{format!("{label} ")}
                <input type="text" size="8" data-test=format!("run-{label}") prop:value=move || signal.get()
                    on:input=move |ev| signal.set(event_target_value(&ev))/>
            </label>
        }
    };
    view! {
        <section class="panel" data-test="new-run">
            <h2>"Start a run"</h2>
            <div class="form-row">
                {field("name", name)}
                <label>"method "
                    <select data-test="run-method" on:change=move |ev| method.set(event_target_value(&ev))>
                        <option value="sft">"SFT on traces"</option>
                        <option value="kd">"logit distillation"</option>
                    </select>
                </label>
                <label>"dataset "
                    <select data-test="run-dataset" on:change=move |ev| dataset.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || datasets.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|d| view! {
                            <option value=d.id.to_string() selected=move || dataset.get() == d.id.to_string()>{format!("{} ({} rows)", d.name, thousands(d.n_rows))}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>"model "
                    <select data-test="run-model" on:change=move |ev| model.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || models.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|m| {
                            let id = m.id.to_string();
                            view! { <option value=id.clone() selected=move || model.get() == id>{format!("{} ({} params)", m.name, thousands(m.n_params))}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <Show when=move || method.get() == "kd">
                    <label>"teacher "
                        <select on:change=move |ev| teacher.set(event_target_value(&ev))>
                            <option value="">"—"</option>
                            {move || models.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|m| view! {
                                <option value=m.id.to_string()>{m.name.clone()}</option>
                            }).collect_view()}
                        </select>
                    </label>
                </Show>
            </div>
            <div class="form-row">
                {field("max_steps", max_steps)}
                {field("epochs", epochs)}
                {field("lr", lr)}
                {field("batch_size", batch_size)}
                {field("grad_accum", grad_accum)}
                {field("max_seq_len", max_seq_len)}
                {field("seed", seed)}
                {field("checkpoint_every", checkpoint_every)}
                <button class="primary" data-test="start-run" on:click=submit disabled=move || busy.get()>"Start run"</button>
            </div>
            <div class="form-row">
                <span class="hint">"No model yet? Make a tiny one (4 layers, hidden 128) with a tokenizer trained on the chosen dataset:"</span>
                {field("model_name", model_name)}
                <button data-test="make-model" on:click=make_model disabled=move || busy.get()>"Create tiny model"</button>
            </div>
            {move || error.get().map(|error| view! { <ErrorBox error/> })}
        </section>
    }
}

/// Points of one metric as (step, value).
fn series(points: &[MetricPoint], name: &str) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.name == name)
        .map(|p| (p.step as f64, p.value))
        .collect()
}

#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let tick = RwSignal::new(0u32);
    every(std::time::Duration::from_millis(1000), tick);
    let run = LocalResource::new(move || {
        tick.track();
        let id = id();
        async move { api::run(&id).await }
    });
    let metrics = LocalResource::new(move || {
        tick.track();
        let id = id();
        async move { api::run_metrics(&id, 1000).await }
    });
    let error = RwSignal::new(None::<ApiError>);
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading run…"</p> }>
            {move || run.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(r) => {
                    let points = metrics.get().and_then(Result::ok).unwrap_or_default();
                    view! { <RunView run=r points error/> }.into_any()
                }
            })}
        </Transition>
    }
}

#[component]
fn RunView(
    run: RunSummary,
    points: Vec<MetricPoint>,
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let id = run.id;
    let total = points
        .iter()
        .rev()
        .find(|p| p.name == "total_steps")
        .map(|p| p.value as i64);
    let step = run.last_step.unwrap_or(0);
    let elapsed = points
        .iter()
        .rev()
        .find(|p| p.name == "elapsed_s")
        .map(|p| p.value)
        .unwrap_or(0.0);
    let eta = match total {
        Some(t) if step > 0 && t > step => {
            format!("ETA {:.0} s", elapsed / step as f64 * (t - step) as f64)
        }
        _ => String::new(),
    };
    let percent = total
        .map(|t| 100.0 * step as f64 / t.max(1) as f64)
        .unwrap_or(0.0);
    let active = matches!(run.status.as_str(), "queued" | "running");
    let cancel = move |_| {
        spawn_local(async move {
            if let Err(e) = api::cancel_run(id).await {
                error.set(Some(e));
            }
        });
    };
    view! {
        <p class="crumbs"><A href="/runs">"← runs"</A></p>
        <h1 data-test="run-name">{run.name.clone()}</h1>
        <p class="meta">
            <span class=format!("status {}", run.status) data-test="run-status">{run.status.clone()}</span>
            {format!(" · {} · model {} · dataset {} v{} ({}) · attempt {}/{}", run.method, run.model, run.dataset,
                run.dataset_version, &run.dataset_version_hash[..12.min(run.dataset_version_hash.len())], run.attempts, run.max_attempts)}
        </p>
        {run.error.clone().map(|e| view! { <div class="error">{e}</div> })}
        <div class="progress" data-test="progress">
            <div class="bar" style=format!("width: {percent:.1}%")></div>
            <span>{format!("step {step}{} {eta}", total.map(|t| format!(" / {t}")).unwrap_or_default())}</span>
        </div>
        <div class="actions">
            {active.then(|| view! { <button class="danger" data-test="cancel-run" on:click=cancel>"Cancel"</button> })}
        </div>
        {move || error.get().map(|error| view! { <ErrorBox error/> })}
        <div class="charts">
            <LineChart title="loss".to_string() points=series(&points, "loss")/>
            <LineChart title="lr".to_string() points=series(&points, "lr")/>
            <LineChart title="grad_norm".to_string() points=series(&points, "grad_norm")/>
            <LineChart title="tokens_per_s".to_string() points=series(&points, "tokens_per_s")/>
        </div>
        <section class="panel">
            <h2>"Config"</h2>
            <pre class="metadata" data-test="run-config">{serde_json::to_string_pretty(&run.config).unwrap_or_default()}</pre>
        </section>
    }
}

#[component]
pub fn WorkersPage() -> impl IntoView {
    let tick = RwSignal::new(0u32);
    every(std::time::Duration::from_secs(2), tick);
    let workers = LocalResource::new(move || {
        tick.track();
        api::workers()
    });
    view! {
        <h1>"Workers"</h1>
        <Transition fallback=|| view! { <p class="loading">"Loading workers…"</p> }>
            {move || workers.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) => view! {
                    <table class="grid" data-test="workers">
                        <thead><tr><th>"Worker"</th><th>"Device"</th><th class="num">"Memory"</th><th>"State"</th><th>"Run"</th><th>"Last heartbeat"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|w| view! {
                                <tr>
                                    <td>{w.name.clone()}</td>
                                    <td>{w.device.clone()}</td>
                                    <td class="num">{crate::format::bytes(w.memory_bytes)}</td>
                                    <td><span class=format!("status {}", w.state)>{w.state.clone()}</span></td>
                                    <td>{w.current_run.map(|r| view! { <A href=format!("/runs/{r}")>{format!("#{r}")}</A> })}</td>
                                    <td>{w.last_seen_at.as_deref().map(timestamp).unwrap_or_default()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}
