//! `/generations`: every trace generation, and the form that starts one (`?dataset=` pre-fills
//! it from a dataset page's "Generate traces"): a teacher (a registry model, or an
//! OpenAI-compatible endpoint with its key), the prompt template, sampling, samples per
//! question and the keep filter. `/generations/:id`: one generation as it runs: counts (done,
//! kept, failed, tokens), the kept share, its source and output datasets, its rows and log.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use still_api::{GenerationRow, GenerationSummary, Keep, NewGeneration, TeacherSpec};

use crate::api::{self, ApiError};
use crate::components::{ErrorBox, every, poll_summary, text_field};
use crate::format::{cut, optional_number, thousands, timestamp};

fn finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// `done / total`, kept and failed, as one line.
pub fn progress_line(g: &GenerationSummary) -> String {
    let c = &g.counts;
    format!(
        "{} / {} done · {} kept · {} failed",
        thousands(c.done),
        thousands(c.total),
        thousands(c.kept),
        thousands(c.failed)
    )
}

/// Who the teacher is, in words.
pub fn teacher_line(g: &GenerationSummary) -> String {
    match &g.teacher.base_url {
        Some(url) => format!("{} at {url}", g.teacher.model),
        None => format!("{} (registry)", g.teacher.model),
    }
}

#[component]
pub fn GenerationsPage() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let list = LocalResource::new(move || {
        refresh.track();
        api::generations(None)
    });
    every(std::time::Duration::from_secs(3), refresh);
    view! {
        <h1>"Trace generations"</h1>
        <NewGenerationForm/>
        <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
            {move || list.get().map(|r| match r {
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="empty">"No trace generations yet."</p> }.into_any(),
                Ok(list) => view! { <GenerationTable list/> }.into_any(),
            })}
        </Suspense>
    }
}

/// Generations as a table (also on a dataset page).
#[component]
pub fn GenerationTable(list: Vec<GenerationSummary>) -> impl IntoView {
    view! {
        <table class="grid" data-test="generations">
            <thead><tr><th>"Generation"</th><th>"Status"</th><th>"Teacher"</th><th>"From"</th><th>"Into"</th>
                <th class="num">"Progress"</th><th class="num">"Tokens"</th><th>"Created"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|g| {
                    let line = progress_line(&g);
                    let teacher = teacher_line(&g);
                    let link_text = g.name.clone();
                    let source = format!("{} v{}", g.dataset_name, g.dataset_version);
                    let output = g.output_dataset_name.clone().unwrap_or_default();
                    view! {
                        <tr data-test="generation-row" data-name=g.name.clone()>
                            <td><A href=format!("/generations/{}", g.id)>{link_text}</A></td>
                            <td><span class=format!("status {}", g.status)>{g.status.clone()}</span></td>
                            <td>{teacher}</td>
                            <td><A href=format!("/datasets/{}", g.dataset_id)>{source}</A></td>
                            <td>{g.output_dataset_id.map(|id| view! {
                                <A href=format!("/datasets/{id}")>{output}</A>
                            })}</td>
                            <td class="num">{line}</td>
                            <td class="num">{thousands(g.counts.prompt_tokens + g.counts.completion_tokens)}</td>
                            <td>{timestamp(&g.created_at)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// A number field: empty is `None`.
#[component]
fn NewGenerationForm() -> impl IntoView {
    let query = use_query_map();
    let models = LocalResource::new(api::models);
    let datasets = LocalResource::new(api::datasets);
    let dataset = RwSignal::new(query.read_untracked().get("dataset").unwrap_or_default());
    // `model`: a registry model; `openai`: an endpoint.
    let kind = RwSignal::new("model".to_string());
    let model = RwSignal::new(query.read_untracked().get("teacher").unwrap_or_default());
    let endpoint_model = RwSignal::new(String::new());
    let base_url = RwSignal::new(String::new());
    let api_key = RwSignal::new(String::new());
    let prompt = RwSignal::new("{question}".to_string());
    let system = RwSignal::new(String::new());
    let n = RwSignal::new("1".to_string());
    let temperature = RwSignal::new(String::new());
    let max_tokens = RwSignal::new("4096".to_string());
    let max_thinking = RwSignal::new(String::new());
    let keep = RwSignal::new("all".to_string());
    let preset = RwSignal::new("math".to_string());
    let limit = RwSignal::new(String::new());
    let concurrency = RwSignal::new("4".to_string());
    let output = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let start = move |_| {
        let request = (|| -> Result<NewGeneration, String> {
            let remote = kind.get() == "openai";
            let teacher = if remote {
                TeacherSpec {
                    model: endpoint_model.get().trim().to_string(),
                    base_url: Some(base_url.get().trim().to_string()),
                    api_key: Some(api_key.get()).filter(|k| !k.is_empty()),
                }
            } else {
                TeacherSpec {
                    model: model.get(),
                    ..Default::default()
                }
            };
            Ok(NewGeneration {
                dataset: dataset.get(),
                teacher,
                output: Some(output.get().trim().to_string()).filter(|o| !o.is_empty()),
                prompt: Some(prompt.get()),
                system: Some(system.get()).filter(|s| !s.trim().is_empty()),
                n: optional_number("samples", &n.get())?,
                temperature: optional_number("temperature", &temperature.get())?,
                max_tokens: optional_number("max tokens", &max_tokens.get())?,
                max_thinking_tokens: optional_number("max thinking tokens", &max_thinking.get())?,
                keep: Some(if keep.get() == "correct" {
                    Keep::Correct
                } else {
                    Keep::All
                }),
                preset: Some(preset.get()),
                limit: optional_number("rows", &limit.get())?,
                concurrency: if remote {
                    optional_number("concurrency", &concurrency.get())?
                } else {
                    None
                },
                ..Default::default()
            })
        })();
        let request = match request {
            Ok(r) => r,
            Err(e) => return error.set(Some(e)),
        };
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::create_generation(&request).await {
                Ok(g) => navigate(&format!("/generations/{}", g.id), Default::default()),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    let remote = move || kind.get() == "openai";
    view! {
        <section class="panel" data-test="new-generation">
            <h2>"Generate traces"</h2>
            <div class="form-grid">
                <label>"Questions from"
                    <select data-test="gen-dataset" prop:value=move || dataset.get()
                        on:change=move |ev| dataset.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || datasets.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|d| {
                            let value = d.name.clone();
                            let selected = value.clone();
                            view! { <option value=value selected=move || dataset.get() == selected>{format!("{} ({} rows)", d.name, d.n_rows)}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"Teacher"
                    <select data-test="gen-kind" prop:value=move || kind.get()
                        on:change=move |ev| kind.set(event_target_value(&ev))>
                        <option value="model">"a registry model (run by a worker)"</option>
                        <option value="openai">"an OpenAI-compatible endpoint"</option>
                    </select>
                </label>
                <Show when=move || !remote()>
                    <label>"Model"
                        <select data-test="gen-model" prop:value=move || model.get()
                            on:change=move |ev| model.set(event_target_value(&ev))>
                            <option value="">"—"</option>
                            {move || models.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|m| {
                                let label = if m.generation_only() {
                                    format!("{} ({} {}, candle-transformers)", m.name, m.arch, m.format)
                                } else {
                                    m.name.clone()
                                };
                                let id = m.id.to_string();
                                view! { <option value=id.clone() selected=move || model.get() == id>{label}</option> }
                            }).collect_view()}
                        </select>
                    </label>
                </Show>
                <Show when=remote>
                    {text_field("Base URL (e.g. http://host:8000/v1)", "gen-base-url", base_url)}
                    {text_field("Model name at the endpoint", "gen-endpoint-model", endpoint_model)}
                    <label>"API key (stored on the server, never shown again)"
                        <input type="password" autocomplete="off" data-test="gen-api-key" prop:value=move || api_key.get()
                            on:input=move |ev| api_key.set(event_target_value(&ev))/>
                    </label>
                    {text_field("Requests at once", "gen-concurrency", concurrency)}
                </Show>
                <label class="wide">"Prompt ({question} is replaced by each row's question)"
                    <textarea data-test="gen-prompt" rows="2" prop:value=move || prompt.get()
                        on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
                </label>
                {text_field("System prompt (optional)", "gen-system", system)}
                {text_field("Samples per question", "gen-n", n)}
                {text_field("Temperature (empty: 0, or 0.7 with several samples)", "gen-temperature", temperature)}
                {text_field("Max tokens per sample", "gen-max-tokens", max_tokens)}
                {text_field("Max thinking tokens (s1 budget; optional)", "gen-max-thinking", max_thinking)}
                {text_field("Rows (empty: all)", "gen-limit", limit)}
                <label>"Keep"
                    <select data-test="gen-keep" prop:value=move || keep.get()
                        on:change=move |ev| keep.set(event_target_value(&ev))>
                        <option value="all">"every trace"</option>
                        <option value="correct">"only traces whose answer matches the reference"</option>
                    </select>
                </label>
                <label>"Answers"
                    <select data-test="gen-preset" prop:value=move || preset.get()
                        on:change=move |ev| preset.set(event_target_value(&ev))>
                        <option value="math">"math (\\boxed, Final Answer:, LaTeX)"</option>
                        <option value="gsm8k">"gsm8k (#### n)"</option>
                        <option value="choice">"multiple choice"</option>
                    </select>
                </label>
                {text_field("Output dataset (empty: <dataset>-traces)", "gen-output", output)}
            </div>
            {move || error.get().map(|e| view! { <div class="error" data-test="gen-error">{e}</div> })}
            <button data-test="start-generation" disabled=move || busy.get() on:click=start>"Start generating"</button>
        </section>
    }
}

#[component]
pub fn GenerationPage() -> impl IntoView {
    let params = use_params_map();
    let state = RwSignal::new(None::<Result<GenerationSummary, ApiError>>);
    let fetch = move || {
        let id = params.read_untracked().get("id").unwrap_or_default();
        async move { api::generation(&id).await }
    };
    let load = poll_summary(state, fetch, |g| !finished(&g.status));
    // The rows and log panels are made once per generation (a poll does not rebuild them, so
    // "failed only" stays as it was set); they refetch when the progress moves.
    let loaded =
        Memo::new(move |_| state.with(|s| s.as_ref().and_then(|r| r.as_ref().ok()).map(|g| g.id)));
    let progress = Memo::new(move |_| {
        state.with(|s| match s {
            Some(Ok(g)) => (g.counts.done, g.status.clone()),
            _ => (0, String::new()),
        })
    });
    view! {
        {move || match state.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e/> }.into_any(),
            Some(Ok(g)) => view! { <GenerationView generation=g reload=Callback::new(move |_| load())/> }.into_any(),
        }}
        {move || loaded.get().map(|id| view! { <Rows id progress/> })}
    }
}

#[component]
fn GenerationView(generation: GenerationSummary, reload: Callback<()>) -> impl IntoView {
    let g = generation;
    let id = g.id;
    let active = !finished(&g.status);
    let cancel = move |_| {
        spawn_local(async move {
            let _ = api::cancel_generation(id).await;
            reload.run(());
        });
    };
    let c = g.counts;
    let share = g
        .kept_share
        .map(|s| format!("{:.1}%", s * 100.0))
        .unwrap_or_else(|| "—".into());
    let accuracy = if c.graded > 0 {
        format!(
            "{:.1}% of {}",
            100.0 * c.correct as f64 / c.graded as f64,
            thousands(c.graded)
        )
    } else {
        "—".into()
    };
    let s = &g.settings;
    let sampling = format!(
        "n = {} · temperature {} · top-p {} · seed {} · ≤ {} tokens{} · keep {}",
        s.n,
        s.temperature,
        s.top_p,
        s.seed,
        s.max_tokens,
        s.max_thinking_tokens
            .map(|m| format!(" (≤ {m} thinking)"))
            .unwrap_or_default(),
        s.keep.as_str()
    );
    let source = format!("{} v{}", g.dataset_name, g.dataset_version);
    let output = g.output_dataset_name.clone().unwrap_or_default();
    let key = g
        .teacher
        .api_key_hint
        .clone()
        .map(|h| format!("key {h}"))
        .unwrap_or_else(|| "no key".into());
    view! {
        <div class="dataset-head">
            <h1 data-test="generation-name">{g.name.clone()}</h1>
            <p class="meta">
                <span class=format!("status {}", g.status) data-test="generation-status">{g.status.clone()}</span>
                " · teacher "{teacher_line(&g)}
                {g.teacher.base_url.is_some().then(|| format!(" ({key})"))}
                " · created "{timestamp(&g.created_at)}
            </p>
            <p class="meta">
                "From "<A href=format!("/datasets/{}", g.dataset_id) attr:data-test="generation-source">{source}</A>
                " into "
                {g.output_dataset_id.map(|out| view! {
                    <A href=format!("/datasets/{out}") attr:data-test="generation-output">{output}</A>
                })}
                {g.output_version.map(|v| format!(" (version {v})"))}
            </p>
            {active.then(|| view! { <div class="actions"><button class="danger" on:click=cancel>"Cancel"</button></div> })}
            {g.error.clone().map(|e| view! { <div class="error" data-test="generation-error">{e}</div> })}
        </div>
        <section class="panel">
            <table class="grid" data-test="generation-counts">
                <tbody>
                    <tr><th>"Done"</th><td class="num" data-test="count-done">{format!("{} / {}", thousands(c.done), thousands(c.total))}</td></tr>
                    <tr><th>"Kept"</th><td class="num" data-test="count-kept">{thousands(c.kept)}</td></tr>
                    <tr><th>"Failed"</th><td class="num" data-test="count-failed">{thousands(c.failed)}</td></tr>
                    <tr><th>"Kept share of answered"</th><td class="num">{share}</td></tr>
                    <tr><th>"Right against the reference"</th><td class="num">{accuracy}</td></tr>
                    <tr><th>"Tokens (prompt + completion)"</th><td class="num" data-test="count-tokens">{format!("{} + {}", thousands(c.prompt_tokens), thousands(c.completion_tokens))}</td></tr>
                </tbody>
            </table>
            <p class="meta">{sampling}</p>
            <p class="meta">"Prompt: "<code>{cut(&s.prompt, 300)}</code></p>
        </section>
    }
}

#[component]
fn Rows(id: i64, progress: Memo<(i64, String)>) -> impl IntoView {
    let failed_only = RwSignal::new(false);
    let rows = LocalResource::new(move || {
        progress.track();
        let query = if failed_only.get() {
            "status=failed&limit=200"
        } else {
            "limit=200"
        };
        async move { api::generation_rows(id, query).await }
    });
    let logs = LocalResource::new(move || {
        progress.track();
        api::generation_logs(id)
    });
    view! {
        <section class="panel">
            <h2>"Rows"</h2>
            <label class="check">
                <input type="checkbox" data-test="failed-only" prop:checked=move || failed_only.get()
                    on:change=move |ev| failed_only.set(event_target_checked(&ev))/>
                " failed only"
            </label>
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || rows.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No rows yet."</p> }.into_any(),
                    Ok(list) => view! { <RowTable list/> }.into_any(),
                })}
            </Suspense>
        </section>
        <section class="panel">
            <h2>"Log"</h2>
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || logs.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(lines) => view! {
                        <pre class="log" data-test="generation-log">
                            {lines.into_iter().map(|l| format!("[{}] #{} {}: {}\n", l.level, l.attempt, l.source, l.message)).collect::<String>()}
                        </pre>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn RowTable(list: Vec<GenerationRow>) -> impl IntoView {
    view! {
        <table class="grid" data-test="generation-rows">
            <thead><tr><th>"Row"</th><th>"Sample"</th><th>"Status"</th><th>"Verdict"</th><th>"Thinking"</th><th>"Answer"</th><th class="num">"Tokens"</th><th>"Example"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|r| {
                    let text = |k: &str| r.record.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let verdict = match r.correct {
                        Some(true) if r.kept => "right · kept",
                        Some(true) => "right",
                        Some(false) => "wrong",
                        None => "—",
                    };
                    view! {
                        <tr data-test="generation-row-item">
                            <td class="num">{r.example_index}</td>
                            <td class="num">{r.sample_index}</td>
                            <td><span class=format!("status {}", if r.status == "ok" { "succeeded" } else { "failed" })>{r.status.clone()}</span></td>
                            <td>{verdict}</td>
                            <td>{r.error.clone().unwrap_or_else(|| cut(&text("thinking"), 160))}</td>
                            <td>{cut(&text("answer"), 120)}</td>
                            <td class="num">{format!("{} + {}", r.prompt_tokens, r.completion_tokens)}</td>
                            <td>{r.example_id.map(|e| view! { <A href=format!("/examples/{e}")>{format!("#{e}")}</A> })}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// A dataset page's traces: the generations from it and into it, and the button to start one.
#[component]
pub fn DatasetGenerations(name: String) -> impl IntoView {
    let key = name.clone();
    let list = LocalResource::new(move || {
        let key = key.clone();
        async move { api::generations(Some(&key)).await }
    });
    view! {
        <section class="panel" data-test="dataset-generations">
            <h2>"Traces"</h2>
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || list.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No traces generated from or into this dataset."</p> }.into_any(),
                    Ok(list) => view! { <GenerationTable list/> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}
