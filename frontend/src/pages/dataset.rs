//! `/datasets/:id`: the examples table (search, filters, keyset pages), statistics, versions,
//! imports and export.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use still_api::{DatasetStats, ExampleRow};

use crate::api::{self, ApiError, encode};
use crate::components::ErrorBox;
use crate::components::histogram::Histogram;
use crate::format::{bytes, cut, snippet_parts, thousands, timestamp};
use crate::pages::import::ReportView;

/// Where the table is in the keyset order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cursor {
    First,
    After(i64),
    Before(i64),
}

/// What the examples table shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleFilter {
    pub q: String,
    pub source: String,
    pub domain: String,
    pub tag: String,
    pub trash: bool,
    pub cursor: Cursor,
}

impl ExampleFilter {
    fn new() -> Self {
        Self {
            q: String::new(),
            source: String::new(),
            domain: String::new(),
            tag: String::new(),
            trash: false,
            cursor: Cursor::First,
        }
    }

    /// The encoded query string for `GET /api/datasets/{id}/examples`.
    pub fn query_string(&self) -> String {
        let mut parts = vec!["limit=50".to_string()];
        for (key, value) in [
            ("q", &self.q),
            ("source", &self.source),
            ("domain", &self.domain),
            ("tag", &self.tag),
        ] {
            if !value.is_empty() {
                parts.push(format!("{key}={}", encode(value)));
            }
        }
        if self.trash {
            parts.push("deleted=true".into());
        }
        match self.cursor {
            Cursor::First => {}
            Cursor::After(id) => parts.push(format!("after={id}")),
            Cursor::Before(id) => parts.push(format!("before={id}")),
        }
        parts.join("&")
    }
}

#[component]
pub fn DatasetPage() -> impl IntoView {
    let params = use_params_map();
    let id_text = move || params.read().get("id").unwrap_or_default();
    let refresh = RwSignal::new(0u32);
    let summary = LocalResource::new(move || {
        refresh.track();
        let id = id_text();
        async move { api::dataset(&id).await }
    });
    view! {
        <Transition fallback=|| view! { <p class="loading">"Loading dataset…"</p> }>
            {move || summary.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(d) => view! { <DatasetView dataset=d refresh/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn DatasetView(dataset: still_api::DatasetSummary, refresh: RwSignal<u32>) -> impl IntoView {
    let id = dataset.id;
    let filter = RwSignal::new(ExampleFilter::new());
    let search_text = RwSignal::new(String::new());
    let examples = LocalResource::new(move || {
        refresh.track();
        let query = filter.get().query_string();
        async move { api::examples(id, &query).await }
    });
    let stats = LocalResource::new(move || {
        refresh.track();
        api::stats(id)
    });
    let versions = LocalResource::new(move || {
        refresh.track();
        api::versions(id)
    });
    let imports = LocalResource::new(move || api::imports(id));
    let version_message = RwSignal::new(String::new());
    let action_error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();

    let run_search = move || {
        let q = search_text.get_untracked();
        filter.update(|f| {
            f.q = q;
            f.cursor = Cursor::First;
        });
    };
    let cut_version = move |_| {
        let message = version_message.get_untracked();
        spawn_local(async move {
            match api::create_version(id, message).await {
                Ok(_) => {
                    version_message.set(String::new());
                    refresh.update(|n| *n += 1);
                }
                Err(e) => action_error.set(Some(e)),
            }
        });
    };
    let delete_dataset = move |_| {
        let confirmed = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(
                    "Delete this dataset, its versions and import history? This cannot be undone.",
                )
                .ok()
            })
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::delete_dataset(id).await {
                Ok(()) => navigate("/", Default::default()),
                Err(e) => action_error.set(Some(e)),
            }
        });
    };
    let set_facet = move |which: &'static str, value: String| {
        filter.update(|f| {
            match which {
                "source" => f.source = value,
                "domain" => f.domain = value,
                _ => f.tag = value,
            }
            f.cursor = Cursor::First;
        })
    };

    view! {
        <div class="dataset-head">
            <h1 data-test="dataset-name">{dataset.name.clone()}</h1>
            <p class="meta">
                <span data-test="dataset-row-count">{thousands(dataset.n_rows)}</span>" rows · "
                {bytes(dataset.size_bytes)}" · created "{timestamp(&dataset.created_at)}
                {(dataset.n_deleted > 0).then(|| format!(" · {} in the trash", dataset.n_deleted))}
            </p>
            <div class="actions">
                <a class="button" href=format!("/api/datasets/{id}/export?shape=canonical") download="">"Export JSONL"</a>
                <a class="button" href=format!("/api/datasets/{id}/export?shape=s1k") download="">"Export s1K shape"</a>
                <A href=format!("/generations?dataset={}", encode(&dataset.name)) attr:class="button" attr:data-test="generate-traces">"Generate traces"</A>
                <A href=format!("/curations?dataset={}", encode(&dataset.name)) attr:class="button" attr:data-test="curate">"Curate"</A>
                <button class="danger" on:click=delete_dataset>"Delete dataset"</button>
            </div>
            {move || action_error.get().map(|error| view! { <ErrorBox error/> })}
        </div>

        <section class="panel">
            <div class="form-row">
                <input type="search" placeholder="Search question, thinking and answer…" data-test="search-input"
                    prop:value=move || search_text.get()
                    on:input=move |ev| search_text.set(event_target_value(&ev))
                    on:keydown=move |ev| if ev.key() == "Enter" { run_search() }/>
                <button on:click=move |_| run_search() data-test="search-button">"Search"</button>
                {move || stats.get().and_then(Result::ok).map(|s: DatasetStats| view! {
                    <FacetSelect label="source" values=s.sources.clone() on_pick=Callback::new(move |v| set_facet("source", v))/>
                    <FacetSelect label="domain" values=s.domains.clone() on_pick=Callback::new(move |v| set_facet("domain", v))/>
                    <FacetSelect label="tag" values=s.tags.clone() on_pick=Callback::new(move |v| set_facet("tag", v))/>
                })}
                <label class="check">
                    <input type="checkbox" prop:checked=move || filter.with(|f| f.trash)
                        on:change=move |ev| filter.update(|f| { f.trash = event_target_checked(&ev); f.cursor = Cursor::First; })/>
                    " trash"
                </label>
            </div>
            <Transition fallback=|| view! { <p class="loading">"Loading examples…"</p> }>
                {move || examples.get().map(|result| match result {
                    Err(error) => view! { <ErrorBox error/> }.into_any(),
                    Ok(page) => {
                        let count = if page.total_capped { format!("{}+ rows", thousands(page.total)) } else { format!("{} rows", thousands(page.total)) };
                        let (prev, next) = (page.prev_before, page.next_after);
                        view! {
                            <p class="meta" data-test="match-count">{count}</p>
                            <ExampleTable rows=page.items/>
                            <div class="pager">
                                <button disabled=prev.is_none() data-test="prev-page"
                                    on:click=move |_| if let Some(b) = prev { filter.update(|f| f.cursor = Cursor::Before(b)) }>"← Previous"</button>
                                <button disabled=next.is_none() data-test="next-page"
                                    on:click=move |_| if let Some(a) = next { filter.update(|f| f.cursor = Cursor::After(a)) }>"Next →"</button>
                            </div>
                        }.into_any()
                    }
                })}
            </Transition>
        </section>

        <crate::pages::generations::DatasetGenerations name=dataset.name.clone()/>

        <section class="panel">
            <h2>"Lengths"</h2>
            <Transition fallback=|| ()>
                {move || stats.get().map(|result| match result {
                    Err(error) => view! { <ErrorBox error/> }.into_any(),
                    Ok(s) => {
                        let unit = s.unit.clone();
                        view! {
                            <p class="hint">{format!("Counted in {unit}: runs of non-whitespace characters (a tokenizer-based count comes with the tokenizer choice).")}</p>
                            <div class="histograms">
                                {s.lengths.into_iter().map(|l| view! { <Histogram stats=l unit=unit.clone()/> }).collect_view()}
                            </div>
                        }.into_any()
                    }
                })}
            </Transition>
        </section>

        <section class="panel">
            <h2>"Versions"</h2>
            <p class="hint">"A version is an immutable snapshot (runs pin one). Cutting a version empties the trash."</p>
            <div class="form-row">
                <input type="text" placeholder="What changed?" data-test="version-message"
                    prop:value=move || version_message.get() on:input=move |ev| version_message.set(event_target_value(&ev))/>
                <button on:click=cut_version data-test="cut-version">"Cut version"</button>
            </div>
            <Transition fallback=|| ()>
                {move || versions.get().map(|result| match result {
                    Err(error) => view! { <ErrorBox error/> }.into_any(),
                    Ok(list) => view! {
                        <table class="grid compact" data-test="versions">
                            <thead><tr><th>"version"</th><th class="num">"rows"</th><th>"hash"</th><th>"message"</th><th>"created"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|v| view! {
                                    <tr>
                                        <td>{format!("v{}", v.version)}</td>
                                        <td class="num">{thousands(v.n_rows)}</td>
                                        <td><code>{cut(&v.content_hash, 12)}</code></td>
                                        <td>{v.message.clone()}</td>
                                        <td>{timestamp(&v.created_at)}</td>
                                        <td><a href=format!("/api/datasets/{id}/export?version={}", v.version) download="">"export"</a>" "
                                            <A href=format!("/datasets/{id}/versions/{}", v.version) attr:data-test="version-lineage">"lineage"</A></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>

        <section class="panel">
            <h2>"Imports"</h2>
            <Transition fallback=|| ()>
                {move || imports.get().map(|result| match result {
                    Err(error) => view! { <ErrorBox error/> }.into_any(),
                    Ok(list) => list.into_iter().map(|record| view! { <ReportView report=record.report/> }).collect_view().into_any(),
                })}
            </Transition>
        </section>
    }
}

#[component]
fn FacetSelect(
    label: &'static str,
    values: Vec<(String, i64)>,
    on_pick: Callback<String>,
) -> impl IntoView {
    view! {
        <label>{format!("{label} ")}
            <select data-test=format!("filter-{label}") on:change=move |ev| on_pick.run(event_target_value(&ev))>
                <option value="">"all"</option>
                {values.into_iter().map(|(value, n)| view! {
                    <option value=value.clone()>{format!("{} ({})", if value.is_empty() { "(none)" } else { &value }, thousands(n))}</option>
                }).collect_view()}
            </select>
        </label>
    }
}

#[component]
fn ExampleTable(rows: Vec<ExampleRow>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="empty" data-test="no-examples">"No examples match."</p> }
            .into_any();
    }
    view! {
        <table class="grid examples" data-test="examples">
            <thead><tr>
                <th>"id"</th><th>"question"</th><th>"answer"</th>
                <th class="num" title="words in question / thinking / answer">"words q/t/a"</th><th>"source"</th><th>"tags"</th>
            </tr></thead>
            <tbody>
                {rows.into_iter().map(|row| view! {
                    <tr data-test="example-row" data-id=row.id>
                        <td><A href=format!("/examples/{}", row.id)>{format!("#{}", row.id)}</A></td>
                        <td>
                            <A href=format!("/examples/{}", row.id)>{cut(&row.question, 200)}</A>
                            {row.snippet.map(|s| view! {
                                <div class="snippet" data-test="snippet">
                                    {snippet_parts(&s).into_iter().map(|(hit, text)| if hit {
                                        view! { <mark>{text}</mark> }.into_any()
                                    } else {
                                        view! { <span>{text}</span> }.into_any()
                                    }).collect_view()}
                                </div>
                            })}
                        </td>
                        <td>{cut(&row.answer, 80)}</td>
                        <td class="num">{format!("{}/{}/{}", row.question_words, row.thinking_words, row.answer_words)}</td>
                        <td>{row.source.clone()}</td>
                        <td>{row.tags.iter().map(|t| view! { <span class="tag">{t.clone()}</span> }).collect_view()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }.into_any()
}
