//! `/runs`: every run with its status (filterable), the new-run form (s1 defaults, a memory
//! estimate against the workers, "clone" pre-fills it from a run), and making a tiny model.
//! `/workers`: the worker pool.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use still_api::{
    BudgetSpec, Decoding, NewModel, NewRun, RunEstimate, RunEval, RunMethod, RunParams, RunStatus,
    RunSummary,
};

use crate::api::{self, ApiError};
use crate::components::{ErrorBox, every};
use crate::format::{bytes, thousands, timestamp};

fn parse_opt<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

/// Budgets' maxima as the form's text (`none` for uncut).
fn budgets_text(budgets: &[BudgetSpec]) -> String {
    budgets
        .iter()
        .map(|b| {
            b.max_thinking_tokens
                .map_or("none".into(), |m| m.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The list's filters: all, then each status.
fn status_filters() -> impl Iterator<Item = &'static str> {
    std::iter::once("").chain(RunStatus::ALL.iter().map(|s| s.as_str()))
}

#[component]
pub fn RunsPage() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let status = RwSignal::new(String::new());
    let search = RwSignal::new(String::new());
    let runs = LocalResource::new(move || {
        refresh.track();
        let status = status.get();
        async move { api::runs(&status).await }
    });
    let models = LocalResource::new(move || {
        refresh.track();
        api::models()
    });
    let datasets = LocalResource::new(api::datasets);
    // The runs ticked for a comparison (any number), kept across filters and refreshes.
    let selected = RwSignal::new(Vec::<i64>::new());
    let navigate = use_navigate();
    let compare = move |_| {
        let ids: Vec<String> = selected.get().iter().map(i64::to_string).collect();
        navigate(
            &format!("/compare?runs={}", ids.join(",")),
            Default::default(),
        );
    };
    // Refresh the list while something is queued or running.
    every(std::time::Duration::from_secs(2), refresh);
    view! {
        <h1>"Runs"</h1>
        <S1Demo/>
        <NewRunForm models datasets on_change=Callback::new(move |_| refresh.update(|n| *n += 1))/>
        <div class="toolbar" data-test="run-filters">
            {status_filters().map(|s| view! {
                <button class=move || if status.get() == s { "chip active" } else { "chip" }
                    data-test=format!("filter-{}", if s.is_empty() { "all" } else { s })
                    on:click=move |_| status.set(s.to_string())>{if s.is_empty() { "all" } else { s }}</button>
            }).collect_view()}
            <input type="search" placeholder="filter by name" data-test="run-search"
                prop:value=move || search.get() on:input=move |ev| search.set(event_target_value(&ev))/>
            <button data-test="compare-selected" disabled=move || selected.with(|s| s.len() < 2) on:click=compare>
                {move || format!("Compare {} runs", selected.with(Vec::len))}</button>
            <button class="link" data-test="clear-selection" on:click=move |_| selected.set(Vec::new())>"clear"</button>
        </div>
        <Transition fallback=|| view! { <p class="loading">"Loading runs…"</p> }>
            {move || runs.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) => {
                    let needle = search.get().to_lowercase();
                    let list: Vec<RunSummary> = list.into_iter().filter(|r| r.name.to_lowercase().contains(&needle)).collect();
                    if list.is_empty() {
                        return view! { <p class="empty">"No runs match."</p> }.into_any();
                    }
                    let shown: Vec<i64> = list.iter().map(|r| r.id).collect();
                    let all_ticked = {
                        let shown = shown.clone();
                        move || selected.with(|s| shown.iter().all(|id| s.contains(id)))
                    };
                    let tick_all = move |ev: leptos::ev::Event| {
                        let on = event_target_checked(&ev);
                        selected.update(|s| {
                            s.retain(|id| !shown.contains(id));
                            if on {
                                s.extend(shown.iter().copied());
                            }
                        });
                    };
                    view! {
                    <table class="grid" data-test="runs">
                        <thead><tr><th><input type="checkbox" data-test="select-all-runs" title="select every run shown"
                            prop:checked=all_ticked on:change=tick_all/></th><th>"Run"</th><th>"Status"</th><th>"Method"</th><th>"Model"</th><th>"Dataset"</th>
                            <th class="num">"Step"</th><th class="num">"Loss"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|r| {
                                let name = r.name.clone();
                                let id = r.id;
                                view! {
                                    <tr data-test="run-row" data-name=r.name.clone()>
                                        <td><input type="checkbox" data-test="select-run"
                                            prop:checked=move || selected.with(|s| s.contains(&id))
                                            on:change=move |ev| {
                                                let on = event_target_checked(&ev);
                                                selected.update(|s| {
                                                    s.retain(|x| *x != id);
                                                    if on { s.push(id); }
                                                });
                                            }/></td>
                                        <td><A href=format!("/runs/{}", r.id)>{name}</A></td>
                                        <td><span class=format!("status {}", r.status) data-test="run-status">{r.status.as_str()}</span></td>
                                        <td>{r.method.as_str()}</td>
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
                }.into_any()
                }
            })}
        </Transition>
    }
}

/// The s1 demo in one click: the server's recipe posted as a run, then its page.
#[component]
fn S1Demo() -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let start = move |_| {
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            let created = match api::s1_demo_recipe().await {
                Ok(recipe) => api::create_run(&recipe).await,
                Err(e) => Err(e),
            };
            match created {
                Ok(run) => navigate(&format!("/runs/{}", run.id), Default::default()),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="panel demo" data-test="s1-demo-panel">
            <h2>"The s1 effect on this machine"</h2>
            <p class="hint">"Train a tiny student on counting traces (300 steps, a few minutes on a CPU) and evaluate it as it trains, with its thinking cut at 4 to 64 tokens: cut short, it cannot finish counting, and accuracy rises with the budget — s1's test-time scaling, drawn on the run page."</p>
            <button class="primary" data-test="s1-demo" on:click=start disabled=move || busy.get()>"Run the s1 demo"</button>
            {move || error.get().map(|error| view! { <ErrorBox error/> })}
        </section>
    }
}

/// The form's fields, as text (what the user typed), pre-filled with s1's recipe.
#[derive(Clone, Copy)]
struct Fields {
    name: RwSignal<String>,
    method: RwSignal<String>,
    model: RwSignal<String>,
    teacher: RwSignal<String>,
    dataset: RwSignal<String>,
    device: RwSignal<String>,
    max_steps: RwSignal<String>,
    epochs: RwSignal<String>,
    lr: RwSignal<String>,
    batch_size: RwSignal<String>,
    grad_accum: RwSignal<String>,
    max_seq_len: RwSignal<String>,
    seed: RwSignal<String>,
    checkpoint_every: RwSignal<String>,
    alpha: RwSignal<String>,
    temperature: RwSignal<String>,
    divergence: RwSignal<String>,
    teacher_top_k: RwSignal<String>,
    precision: RwSignal<String>,
    long_examples: RwSignal<String>,
    /// An eval the run makes of itself: dataset (empty: none), budgets (max thinking tokens,
    /// comma-separated; `-` uncut), every N steps (empty: the final model only), rows.
    eval_dataset: RwSignal<String>,
    eval_budgets: RwSignal<String>,
    eval_every: RwSignal<String>,
    eval_limit: RwSignal<String>,
    eval_answer_tokens: RwSignal<String>,
}

impl Fields {
    fn new() -> Self {
        let text = |s: &str| RwSignal::new(s.to_string());
        Self {
            name: text(""),
            method: text("sft"),
            model: text(""),
            teacher: text(""),
            dataset: text(""),
            device: text(""),
            max_steps: text(""),
            epochs: text("5"),
            lr: text("1e-5"),
            batch_size: text("1"),
            grad_accum: text("16"),
            max_seq_len: text("4096"),
            seed: text("42"),
            checkpoint_every: text(""),
            alpha: text("0.5"),
            temperature: text("2"),
            divergence: text("forward_kl"),
            teacher_top_k: text(""),
            precision: text("f32"),
            long_examples: text("truncate"),
            eval_dataset: text(""),
            eval_budgets: text("512, 1024, 2048, 4096"),
            eval_every: text(""),
            eval_limit: text(""),
            eval_answer_tokens: text("256"),
        }
    }

    /// The eval plan the fields make (none without a dataset).
    fn evals(&self) -> Vec<RunEval> {
        let dataset = self.eval_dataset.get();
        if dataset.is_empty() {
            return Vec::new();
        }
        vec![RunEval {
            dataset,
            // A budget that does not parse sends none: the server names the field.
            budgets: crate::pages::evals::parse_budgets(&self.eval_budgets.get(), "")
                .unwrap_or_default(),
            decoding: Some(Decoding {
                max_answer_tokens: parse_opt(&self.eval_answer_tokens.get()).unwrap_or(256),
                ..Decoding::default()
            }),
            preset: None,
            limit: parse_opt(&self.eval_limit.get()),
            every_steps: parse_opt(&self.eval_every.get()),
        }]
    }

    /// The request the fields make (only what parses is sent; the server checks the rest).
    fn request(&self) -> NewRun {
        let kd = self.method.get() == "kd";
        NewRun {
            name: self.name.get(),
            method: self.method.get(),
            model: self.model.get(),
            teacher: Some(self.teacher.get()).filter(|t| !t.is_empty() && kd),
            dataset: self.dataset.get(),
            params: RunParams {
                max_steps: parse_opt(&self.max_steps.get()),
                epochs: parse_opt(&self.epochs.get()),
                lr: parse_opt(&self.lr.get()),
                batch_size: parse_opt(&self.batch_size.get()),
                grad_accum: parse_opt(&self.grad_accum.get()),
                max_seq_len: parse_opt(&self.max_seq_len.get()),
                seed: parse_opt(&self.seed.get()),
                checkpoint_every: parse_opt(&self.checkpoint_every.get()),
                alpha: kd.then(|| parse_opt(&self.alpha.get())).flatten(),
                temperature: kd.then(|| parse_opt(&self.temperature.get())).flatten(),
                divergence: kd.then(|| self.divergence.get()),
                teacher_top_k: kd.then(|| parse_opt(&self.teacher_top_k.get())).flatten(),
                device: Some(self.device.get()).filter(|d| !d.is_empty()),
                precision: Some(self.precision.get()),
                long_examples: Some(self.long_examples.get()),
                ..Default::default()
            },
            max_attempts: None,
            evals: self.evals(),
        }
    }

    /// Fills the form from an earlier run ("clone this run's config").
    fn clone_from(&self, run: &RunSummary) {
        let c = &run.config;
        let text = |key: &str| match c.get(key) {
            Some(serde_json::Value::Null) | None => String::new(),
            Some(v) => v.to_string().trim_matches('"').to_string(),
        };
        self.name.set(format!("{}-2", run.name));
        self.method.set(run.method.as_str().to_string());
        self.model.set(run.model_id.to_string());
        self.teacher
            .set(run.teacher_id.map(|t| t.to_string()).unwrap_or_default());
        self.dataset.set(run.dataset_id.to_string());
        self.device.set(run.device.clone().unwrap_or_default());
        for (signal, key) in [
            (self.max_steps, "max_steps"),
            (self.epochs, "epochs"),
            (self.lr, "lr"),
            (self.batch_size, "batch_size"),
            (self.grad_accum, "grad_accum"),
            (self.max_seq_len, "max_seq_len"),
            (self.seed, "seed"),
            (self.checkpoint_every, "checkpoint_every"),
        ] {
            signal.set(text(key));
        }
        if let Some(plan) = run.evals.first() {
            self.eval_dataset.set(plan.dataset.clone());
            self.eval_budgets.set(budgets_text(&plan.budgets));
            self.eval_every
                .set(plan.every_steps.map(|n| n.to_string()).unwrap_or_default());
            self.eval_limit
                .set(plan.limit.map(|n| n.to_string()).unwrap_or_default());
            if let Some(d) = plan.decoding {
                self.eval_answer_tokens.set(d.max_answer_tokens.to_string());
            }
        }
        self.long_examples.set(
            Some(text("long_examples"))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "truncate".into()),
        );
        self.precision.set(
            Some(text("precision"))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "f32".into()),
        );
        if let Some(method) = c.get("method") {
            let field = |k: &str| method.get(k).map(|v| v.to_string()).unwrap_or_default();
            if run.method == RunMethod::Kd {
                self.alpha.set(field("alpha"));
                self.temperature.set(field("temperature"));
                self.teacher_top_k.set(
                    method
                        .get("top_k")
                        .and_then(|k| k.as_u64())
                        .map(|k| k.to_string())
                        .unwrap_or_default(),
                );
                self.divergence.set(
                    method
                        .get("divergence")
                        .and_then(|d| d.get("kind"))
                        .and_then(|k| k.as_str())
                        .unwrap_or("forward_kl")
                        .to_string(),
                );
            }
        }
    }
}

#[component]
fn NewRunForm(
    models: LocalResource<Result<Vec<still_api::ModelSummary>, ApiError>>,
    datasets: LocalResource<Result<Vec<still_api::DatasetSummary>, ApiError>>,
    on_change: Callback<()>,
) -> impl IntoView {
    let f = Fields::new();
    let model_name = RwSignal::new("tiny".to_string());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let estimate = RwSignal::new(None::<Result<RunEstimate, ApiError>>);

    // `/runs?clone=ID`: start from that run's config.
    let query = use_query_map();
    Effect::new(move |_| {
        if let Some(id) = query.read().get("clone") {
            spawn_local(async move {
                match api::run(&id).await {
                    Ok(run) => f.clone_from(&run),
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    });

    // The memory estimate follows the form (debounced; a stale answer is dropped).
    let generation = StoredValue::new(0u32);
    Effect::new(move |_| {
        let request = f.request();
        generation.update_value(|g| *g += 1);
        let mine = generation.get_value();
        if request.model.is_empty() || request.dataset.is_empty() {
            estimate.set(None);
            return;
        }
        set_timeout(
            move || {
                if generation.get_value() != mine {
                    return;
                }
                spawn_local(async move {
                    let answer = api::estimate_run(&request).await;
                    if generation.get_value() == mine {
                        estimate.set(Some(answer));
                    }
                });
            },
            std::time::Duration::from_millis(300),
        );
    });

    let submit = move |_| {
        let request = f.request();
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
            tokenizer_dataset: Some(f.dataset.get_untracked()),
            vocab_size: Some(1024),
            ..Default::default()
        };
        busy.set(true);
        spawn_local(async move {
            match api::create_model(&request).await {
                Ok(m) => {
                    f.model.set(m.id.to_string());
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
    let choice = |label: &'static str,
                  signal: RwSignal<String>,
                  options: &'static [(&'static str, &'static str)]| {
        view! {
            <label>{format!("{label} ")}
                <select data-test=format!("run-{label}") on:change=move |ev| signal.set(event_target_value(&ev))>
                    {options.iter().map(|&(value, text)| view! {
                        <option value=value selected=move || signal.get() == value>{text}</option>
                    }).collect_view()}
                </select>
            </label>
        }
    };
    let model_options = move |signal: RwSignal<String>| {
        models.get().and_then(Result::ok).unwrap_or_default().into_iter().filter(|m| !m.generation_only()).map(|m| {
            let id = m.id.to_string();
            view! { <option value=id.clone() selected=move || signal.get() == id>{format!("{} ({} params)", m.name, thousands(m.n_params))}</option> }
        }).collect_view()
    };
    view! {
        <section class="panel" data-test="new-run">
            <h2>"Start a run"</h2>
            <div class="form-row">
                {field("name", f.name)}
                {choice("method", f.method, &[("sft", "SFT on traces"), ("kd", "logit distillation")])}
                <label>"dataset "
                    <select data-test="run-dataset" on:change=move |ev| f.dataset.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || datasets.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|d| {
                            let id = d.id.to_string();
                            view! { <option value=id.clone() selected=move || f.dataset.get() == id>{format!("{} ({} rows)", d.name, thousands(d.n_rows))}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"model "
                    <select data-test="run-model" on:change=move |ev| f.model.set(event_target_value(&ev))>
                        <option value="">"—"</option>
                        {move || model_options(f.model)}
                    </select>
                </label>
                {choice("device", f.device, &[("", "any worker"), ("cpu", "CPU"), ("cuda", "CUDA GPU")])}
                <span title="bf16: forward and backward in bf16 over f32 master weights and optimizer state. Pays on GPUs; slower than f32 on a CPU.">
                    {choice("precision", f.precision, &[("f32", "f32"), ("bf16", "bf16 mixed")])}
                </span>
                <span title="Rows longer than max_seq_len: cut to fit (the loss covers what fits) or left out of training.">
                    {choice("long_examples", f.long_examples, &[("truncate", "truncate long rows"), ("skip", "skip long rows")])}
                </span>
            </div>
            <Show when=move || f.method.get() == "kd">
                <div class="form-row">
                    <label>"teacher "
                        <select data-test="run-teacher" on:change=move |ev| f.teacher.set(event_target_value(&ev))>
                            <option value="">"—"</option>
                            {move || model_options(f.teacher)}
                        </select>
                    </label>
                    {field("alpha", f.alpha)}
                    {field("temperature", f.temperature)}
                    {choice("divergence", f.divergence, &[("forward_kl", "forward KL"), ("reverse_kl", "reverse KL"), ("jsd", "JSD")])}
                    <span title="Distil against the teacher's top-k next tokens, computed once per dataset before training; the teacher then leaves memory. Empty: the full distribution, teacher in memory.">
                        {field("teacher_top_k", f.teacher_top_k)}
                    </span>
                </div>
            </Show>
            <div class="form-row">
                {field("max_steps", f.max_steps)}
                {field("epochs", f.epochs)}
                {field("lr", f.lr)}
                {field("batch_size", f.batch_size)}
                {field("grad_accum", f.grad_accum)}
                {field("max_seq_len", f.max_seq_len)}
                {field("seed", f.seed)}
                {field("checkpoint_every", f.checkpoint_every)}
            </div>
            <div class="form-row" title="Evaluate the run's checkpoints (every N steps; set checkpoint_every to match) and its final model, with s1's budget forcing: accuracy appears beside the loss.">
                <label>"evaluate on "
                    <select data-test="run-eval-dataset" on:change=move |ev| f.eval_dataset.set(event_target_value(&ev))>
                        <option value="">"— (no evals while training)"</option>
                        {move || datasets.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|d| {
                            let name = d.name.clone();
                            view! { <option value=name.clone() selected=move || f.eval_dataset.get() == name>{format!("{} ({} rows)", d.name, thousands(d.n_rows))}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"max thinking "
                    <input type="text" size="18" data-test="run-eval-budgets" prop:value=move || f.eval_budgets.get()
                        on:input=move |ev| f.eval_budgets.set(event_target_value(&ev))/>
                </label>
                {field("eval_every", f.eval_every)}
                {field("eval_limit", f.eval_limit)}
                {field("eval_answer_tokens", f.eval_answer_tokens)}
                <button class="primary" data-test="start-run" on:click=submit disabled=move || busy.get()>"Start run"</button>
            </div>
            {move || estimate.get().map(|answer| match answer {
                Ok(e) => {
                    let m = &e.estimate;
                    let parts = format!(
                        "{} parameters · weights {} · gradients {} · AdamW {} · activations {}{} = {}",
                        thousands(m.n_params), bytes(m.params_bytes), bytes(m.grads_bytes), bytes(m.optimizer_bytes),
                        bytes(m.activations_bytes),
                        if m.teacher_bytes > 0 { format!(" · teacher {}", bytes(m.teacher_bytes)) } else { String::new() },
                        bytes(m.total_bytes));
                    view! {
                        <div class=if e.feasible { "estimate ok" } else { "estimate warn" } data-test="run-estimate">
                            <strong>"Memory estimate: "</strong>{parts}<br/>{e.message.clone()}
                        </div>
                    }.into_any()
                }
                Err(error) => view! { <div class="estimate warn" data-test="run-estimate">{format!("No estimate: {error}")}</div> }.into_any(),
            })}
            <div class="form-row">
                <span class="hint">"No model yet? Make a tiny one (4 layers, hidden 128) with a tokenizer trained on the chosen dataset:"</span>
                {field("model_name", model_name)}
                <button data-test="make-model" on:click=make_model disabled=move || busy.get()>"Create tiny model"</button>
            </div>
            {move || error.get().map(|error| view! { <ErrorBox error/> })}
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
                        <thead><tr><th>"Worker"</th><th>"Device"</th><th class="num">"Memory"</th><th>"State"</th><th>"Run"</th><th>"Own models"</th><th>"Last heartbeat"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|w| view! {
                                <tr>
                                    <td>{w.name.clone()}</td>
                                    <td>{w.device.clone()}</td>
                                    <td class="num">{crate::format::bytes(w.memory_bytes)}</td>
                                    <td><span class=format!("status {}", w.state)>{w.state.clone()}</span></td>
                                    <td>{w.current_run.map(|r| view! { <A href=format!("/runs/{r}")>{format!("#{r}")}</A> })}</td>
                                    <td>{w.models.join(", ")}</td>
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
