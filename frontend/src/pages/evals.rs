//! `/evals`: every eval, and the form that starts one (a model or a run's final model, a
//! dataset, thinking budgets under s1's budget forcing, decoding; `?model=` pre-fills it).
//! `/evals/:id`: one eval as it runs: the per-budget table, s1's Control, Scaling and
//! Performance, the test-time-scaling plot, and the graded examples with thinking (each forced
//! `Wait` and the cut marked) and answer apart.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use still_api::{BudgetSpec, Decoding, EvalExample, EvalSummary, NewEval};

use crate::api::{self, ApiError};
use crate::components::chart::LineChart;
use crate::components::math_text::MathText;
use crate::components::{ErrorBox, every, poll_summary, text_field};
use crate::format::{Marked, cut, marked_segments, optional_number, timestamp};

/// The string budget forcing appends to extend thinking (the engine's default).
const WAIT: &str = "Wait";

/// Budgets from the form: every maximum (`none`: uncut) with every number of extensions.
pub fn parse_budgets(maxima: &str, waits: &str) -> Result<Vec<BudgetSpec>, String> {
    let list = |text: &str| -> Vec<String> {
        text.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut maxes = Vec::new();
    for m in list(maxima) {
        maxes.push(if m == "none" {
            None
        } else {
            Some(m.parse::<u32>().map_err(|_| {
                format!("thinking budget '{m}' is not a number of tokens (or none)")
            })?)
        });
    }
    let mut extensions = Vec::new();
    for w in list(waits) {
        extensions.push(
            w.parse::<u32>()
                .map_err(|_| format!("wait extensions '{w}' is not a whole number"))?,
        );
    }
    if maxes.is_empty() {
        return Err("give at least one thinking budget".into());
    }
    if extensions.is_empty() {
        extensions.push(0);
    }
    Ok(maxes
        .iter()
        .flat_map(|&max| {
            extensions.iter().map(move |&wait| BudgetSpec {
                max_thinking_tokens: max,
                min_thinking_tokens: 0,
                wait_extensions: wait,
            })
        })
        .collect())
}

pub fn budget_label(b: &BudgetSpec) -> String {
    let max = b
        .max_thinking_tokens
        .map_or("uncut".to_string(), |m| format!("≤ {m} thinking"));
    match (b.min_thinking_tokens, b.wait_extensions) {
        (0, 0) => max,
        (0, w) => format!("{max} · {w} × Wait"),
        (m, w) => format!("{max} · ≥ {m} · {w} × Wait"),
    }
}

fn finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

#[component]
pub fn EvalsPage() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let evals = LocalResource::new(move || {
        refresh.track();
        api::evals()
    });
    every(std::time::Duration::from_secs(3), refresh);
    // Evals ticked for comparison, in the order they were ticked.
    let picked = RwSignal::new(Vec::<i64>::new());
    let compare_href = move || {
        let ids: Vec<String> = picked.get().iter().map(i64::to_string).collect();
        format!("/compare/evals?ids={}", ids.join(","))
    };
    view! {
        <h1>"Evals"</h1>
        <NewEvalForm/>
        <div class="actions">
            <A href=compare_href attr:data-test="compare-evals" attr:class=move || if picked.with(Vec::is_empty) { "button disabled" } else { "button" }>
                {move || format!("Compare selected ({})", picked.with(Vec::len))}
            </A>
        </div>
        <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
            {move || evals.get().map(|r| match r {
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="empty">"No evals yet."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="grid" data-test="evals">
                        <thead><tr><th></th><th>"Eval"</th><th>"Status"</th><th>"Model"</th><th>"Dataset"</th>
                            <th class="num">"Graded"</th><th class="num">"Best accuracy"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|e| {
                                let link_text = e.name.clone();
                                let id = e.id;
                                view! {
                                <tr data-test="eval-row" data-name=e.name.clone()>
                                    <td><input type="checkbox" data-test="compare-check" prop:checked=move || picked.with(|p| p.contains(&id))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            picked.update(|p| {
                                                p.retain(|x| *x != id);
                                                if on {
                                                    p.push(id);
                                                }
                                            });
                                        }/></td>
                                    <td><A href=format!("/evals/{}", e.id)>{link_text}</A></td>
                                    <td><span class=format!("status {}", e.status)>{e.status.clone()}</span></td>
                                    <td>{e.model_name.clone()}</td>
                                    <td>{format!("{} v{}", e.dataset_name, e.dataset_version)}</td>
                                    <td class="num">{format!("{} / {}", e.done, e.n_examples * e.budgets.len() as i64)}</td>
                                    <td class="num">{format!("{:.1}%", e.performance * 100.0)}</td>
                                    <td>{timestamp(&e.created_at)}</td>
                                </tr>
                            }}).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn NewEvalForm() -> impl IntoView {
    let query = use_query_map();
    let models = LocalResource::new(api::models);
    let datasets = LocalResource::new(api::datasets);
    let model = RwSignal::new(query.read_untracked().get("model").unwrap_or_default());
    let dataset = RwSignal::new(String::new());
    // s1's budget forcing with greedy decoding; budgets sized for a CPU.
    let maxima = RwSignal::new("128, 256, 512".to_string());
    let waits = RwSignal::new("0".to_string());
    let limit = RwSignal::new(String::new());
    let answer_tokens = RwSignal::new("256".to_string());
    let temperature = RwSignal::new("0".to_string());
    let seed = RwSignal::new("0".to_string());
    let preset = RwSignal::new("math".to_string());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let start = move |_| {
        let budgets = match parse_budgets(&maxima.get(), &waits.get()) {
            Ok(b) => b,
            Err(e) => return error.set(Some(e)),
        };
        let request = (|| -> Result<NewEval, String> {
            Ok(NewEval {
                model: model.get(),
                dataset: dataset.get(),
                version: None,
                name: None,
                budgets,
                decoding: Some(Decoding {
                    temperature: optional_number("temperature", &temperature.get())?.unwrap_or(0.0),
                    seed: optional_number("seed", &seed.get())?.unwrap_or(0),
                    max_answer_tokens: optional_number("answer tokens", &answer_tokens.get())?
                        .unwrap_or(256),
                    ..Default::default()
                }),
                preset: Some(preset.get()),
                limit: optional_number("limit", &limit.get())?,
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
            match api::create_eval(&request).await {
                Ok(e) => navigate(&format!("/evals/{}", e.id), Default::default()),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="panel" data-test="new-eval">
            <h2>"Evaluate a model"</h2>
            <div class="form-grid">
                <label>"Model"
                    <select data-test="eval-model" prop:value=move || model.get()
                        on:change=move |ev| model.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || models.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|m| {
                            let value = m.id.to_string();
                            let selected = value.clone();
                            view! { <option value=value selected=move || model.get() == selected>{m.name.clone()}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"Dataset"
                    <select data-test="eval-dataset" prop:value=move || dataset.get()
                        on:change=move |ev| dataset.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || datasets.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|d| view! {
                            <option value=d.name.clone()>{format!("{} ({} rows)", d.name, d.n_rows)}</option>
                        }).collect_view()}
                    </select>
                </label>
                {text_field("Max thinking tokens (comma-separated; none = uncut)", "eval-budgets", maxima)}
                {text_field("Wait extensions (each with every budget)", "eval-waits", waits)}
                {text_field("Rows (empty: all)", "eval-limit", limit)}
                {text_field("Max answer tokens", "eval-answer-tokens", answer_tokens)}
                {text_field("Temperature (0: greedy)", "eval-temperature", temperature)}
                {text_field("Seed", "eval-seed", seed)}
                <label>"Answers"
                    <select data-test="eval-preset" prop:value=move || preset.get()
                        on:change=move |ev| preset.set(event_target_value(&ev))>
                        <option value="math">"math (\\boxed, Final Answer:, LaTeX)"</option>
                        <option value="gsm8k">"gsm8k (#### n)"</option>
                        <option value="choice">"multiple choice"</option>
                    </select>
                </label>
            </div>
            {move || error.get().map(|e| view! { <div class="error" data-test="eval-error">{e}</div> })}
            <button data-test="start-eval" disabled=move || busy.get() on:click=start>"Start eval"</button>
        </section>
    }
}

#[component]
pub fn EvalPage() -> impl IntoView {
    let params = use_params_map();
    let state = RwSignal::new(None::<Result<EvalSummary, ApiError>>);
    let fetch = move || {
        let id = params.read_untracked().get("id").unwrap_or_default();
        async move { api::eval(&id).await }
    };
    let load = poll_summary(state, fetch, |e| !finished(&e.status));
    let summary =
        Memo::new(move |_| state.with(|s| s.as_ref().and_then(|r| r.as_ref().ok()).cloned()));
    let loaded = Memo::new(move |_| summary.with(|s| s.as_ref().map(|e| e.id)));
    let done = Signal::derive(move || summary.with(|s| s.as_ref().map_or(0, |e| e.done)));
    view! {
        {move || match state.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e/> }.into_any(),
            Some(Ok(e)) => view! { <EvalView eval=e reload=Callback::new(move |_| load())/> }.into_any(),
        }}
        // Created once per eval: its filters and open rows survive the page's refreshes.
        {move || loaded.get().map(|id| {
            let labels = summary.with_untracked(|s| {
                s.as_ref().map(|e| e.budgets.iter().map(|b| budget_label(&b.budget)).collect())
            }).unwrap_or_default();
            view! { <Examples id labels done/> }
        })}
    }
}

#[component]
fn EvalView(eval: EvalSummary, reload: Callback<()>) -> impl IntoView {
    let total = eval.n_examples * eval.budgets.len() as i64;
    let active = !finished(&eval.status);
    let id = eval.id;
    let cancel = move |_| {
        spawn_local(async move {
            let _ = api::cancel_eval(id).await;
            reload.run(());
        });
    };
    let mut points: Vec<(f64, f64)> = eval
        .budgets
        .iter()
        .filter(|b| b.n > 0)
        .map(|b| (b.mean_thinking_tokens, b.accuracy * 100.0))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let labels: Vec<String> = eval
        .budgets
        .iter()
        .map(|b| budget_label(&b.budget))
        .collect();
    view! {
        <h1 data-test="eval-name">{eval.name.clone()}</h1>
        <p class="meta">
            <span class=format!("status {}", eval.status) data-test="eval-status">{eval.status.clone()}</span>
            {format!(" · model {} · dataset {} v{} · {} rows · answers: {} · temperature {} · ≤ {} answer tokens",
                eval.model_name, eval.dataset_name, eval.dataset_version, eval.n_examples, eval.preset,
                eval.decoding.temperature, eval.decoding.max_answer_tokens)}
        </p>
        {eval.error.clone().map(|e| view! { <div class="error" data-test="eval-error">{e}</div> })}
        <div class="progress" data-test="eval-progress">
            <div class="bar" style=format!("width: {:.1}%", 100.0 * eval.done as f64 / total.max(1) as f64)></div>
            <span>{format!("{} / {total} graded", eval.done)}</span>
        </div>
        <div class="actions">
            {active.then(|| view! { <button class="danger" data-test="cancel-eval" on:click=cancel>"Cancel"</button> })}
        </div>
        <div class="stats">
            <div class="stat" data-test="eval-performance"><strong>{format!("{:.1}%", eval.performance * 100.0)}</strong>" Performance (best accuracy)"</div>
            <div class="stat" data-test="eval-scaling"><strong>{eval.scaling.map_or("–".to_string(), |s| format!("{:+.2}", s * 1000.0 * 100.0))}</strong>" Scaling (accuracy points per 1k thinking tokens)"</div>
            <div class="stat" data-test="eval-control"><strong>{format!("{:.1}%", eval.control * 100.0)}</strong>" Control (thinking within its budget)"</div>
        </div>
        <section class="panel">
            <h2>"By budget"</h2>
            <table class="grid" data-test="eval-budgets">
                <thead><tr><th>"Budget"</th><th class="num">"Graded"</th><th class="num">"Accuracy"</th>
                    <th class="num">"Mean thinking tokens"</th><th class="num">"Control"</th></tr></thead>
                <tbody>
                    {eval.budgets.iter().zip(&labels).map(|(b, label)| view! {
                        <tr data-test="budget-row">
                            <td>{label.clone()}</td>
                            <td class="num">{format!("{} / {}", b.n, eval.n_examples)}</td>
                            <td class="num">{format!("{:.1}% ({})", b.accuracy * 100.0, b.correct)}</td>
                            <td class="num">{format!("{:.1}", b.mean_thinking_tokens)}</td>
                            <td class="num">{format!("{:.1}%", b.control * 100.0)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
            <LineChart title="accuracy".to_string() points x_label="thinking tokens"/>
        </section>
    }
}

#[component]
fn Examples(id: i64, labels: Vec<String>, done: Signal<i64>) -> impl IntoView {
    let budget = RwSignal::new(String::new());
    let wrong_only = RwSignal::new(false);
    let search = RwSignal::new(String::new());
    let open = RwSignal::new(None::<(i64, i64)>);
    let examples = LocalResource::new(move || {
        let mut query = vec!["limit=100".to_string()];
        let b = budget.get();
        if !b.is_empty() {
            query.push(format!("budget={b}"));
        }
        if wrong_only.get() {
            query.push("correct=false".into());
        }
        let q = search.get();
        if !q.trim().is_empty() {
            query.push(format!("q={}", api::encode(q.trim())));
        }
        // Read again as more are graded.
        done.track();
        async move { api::eval_examples(id, &query.join("&")).await }
    });
    let label_of = {
        let labels = labels.clone();
        move |b: i64| labels.get(b as usize).cloned().unwrap_or_default()
    };
    view! {
        <section class="panel" data-test="eval-examples">
            <h2>"Graded examples"</h2>
            <div class="toolbar">
                <select data-test="example-budget" on:change=move |ev| budget.set(event_target_value(&ev))>
                    <option value="">"every budget"</option>
                    {labels.iter().enumerate().map(|(i, l)| view! { <option value=i.to_string()>{l.clone()}</option> }).collect_view()}
                </select>
                <label><input type="checkbox" data-test="wrong-only"
                    on:change=move |ev| wrong_only.set(event_target_checked(&ev))/>" wrong only"</label>
                <input type="search" placeholder="search question, thinking, answer" data-test="example-search"
                    on:input=move |ev| search.set(event_target_value(&ev))/>
            </div>
            <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
                {move || examples.get().map(|r| match r {
                    Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No graded examples match."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="grid" data-test="example-list">
                            <thead><tr><th class="num">"#"</th><th>"Budget"</th><th>"Question"</th><th>"Reference"</th>
                                <th>"Extracted"</th><th>"Verdict"</th><th class="num">"Thinking"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|e| {
                                    let key = (e.budget_index, e.example_index);
                                    let label = label_of(e.budget_index);
                                    view! {
                                        <tr data-test="eval-example" data-correct=e.correct.to_string()
                                            class=if e.correct { "right" } else { "wrong" }
                                            on:click=move |_| open.update(|o| *o = if *o == Some(key) { None } else { Some(key) })>
                                            <td class="num">{e.example_index + 1}</td>
                                            <td>{label}</td>
                                            <td>{cut(e.record["question"].as_str().unwrap_or(""), 90)}</td>
                                            <td>{e.record["reference"].as_str().unwrap_or("").to_string()}</td>
                                            <td>{e.record["extracted"].as_str().unwrap_or("—").to_string()}</td>
                                            <td>{if e.correct { "✓ right" } else { "✗ wrong" }}</td>
                                            <td class="num">{e.thinking_tokens}</td>
                                        </tr>
                                        {move || (open.get() == Some(key)).then(|| view! { <ExampleDetail example=e.clone()/> })}
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn ExampleDetail(example: EvalExample) -> impl IntoView {
    let r = &example.record;
    let thought = &r["thought"];
    let thinking = thought["thinking"].as_str().unwrap_or("").to_string();
    let waits: Vec<usize> = thought["waits"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|m| m["char"].as_u64().map(|c| c as usize))
                .collect()
        })
        .unwrap_or_default();
    let cut_at = thought["cut"]["char"].as_u64().map(|c| c as usize);
    let segments = marked_segments(&thinking, &waits, WAIT, cut_at);
    let summary = format!(
        "{} thinking tokens · {} forced Wait · {} · {} answer tokens · {}",
        thought["thinking_tokens"],
        waits.len(),
        match thought["cut"]["token"].as_u64() {
            Some(t) => format!("cut at {t}"),
            None => "ended by the model".into(),
        },
        thought["answer_tokens"],
        r["reason"].as_str().unwrap_or("")
    );
    view! {
        <tr class="detail" data-test="example-detail">
            <td colspan="7">
                <MathText text=r["question"].as_str().unwrap_or("").to_string()/>
                <p class="meta" data-test="example-summary">{summary}</p>
                <h3>"Thinking"</h3>
                <pre class="thinking" data-test="example-thinking">
                    {segments.into_iter().map(|s| match s {
                        Marked::Text(t) => view! { <MathText text=t inline=true/> }.into_any(),
                        Marked::Wait(w) => view! { <mark class="forced-wait" data-test="forced-wait" title="forced by budget forcing">{w}</mark> }.into_any(),
                        Marked::Cut => view! { <span class="cut-mark" data-test="cut-mark" title="thinking cut at its budget">"✂ cut"</span> }.into_any(),
                    }).collect_view()}
                </pre>
                <h3>"Answer"</h3>
                <div data-test="example-answer"><MathText text=thought["answer"].as_str().unwrap_or("").to_string()/></div>
            </td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_every_maximum_with_every_extension() {
        let b = parse_budgets("64, 128, none", "0,2").unwrap();
        assert_eq!(b.len(), 6);
        assert_eq!(b[1].max_thinking_tokens, Some(64));
        assert_eq!(b[1].wait_extensions, 2);
        assert_eq!(b[5].max_thinking_tokens, None);
        assert_eq!(parse_budgets("8", "").unwrap()[0].wait_extensions, 0);
        assert!(parse_budgets("", "0").unwrap_err().contains("at least one"));
        assert!(parse_budgets("x", "0").unwrap_err().contains("'x'"));
        assert_eq!(budget_label(&b[1]), "≤ 64 thinking · 2 × Wait");
    }
}
