//! `/examples/:id`: one example with thinking and answer apart, LaTeX rendered; edit, tags, trash.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use still_api::{Example, ExamplePatch};

use crate::api::{self, ApiError};
use crate::components::ErrorBox;
use crate::components::math_text::MathText;
use crate::format::{thousands, timestamp};

#[component]
pub fn ExamplePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || {
        params
            .read()
            .get("id")
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let example = RwSignal::new(None::<Result<Example, ApiError>>);
    Effect::new(move |_| {
        let id = id();
        spawn_local(async move { example.set(Some(api::example(id).await)) });
    });
    view! {
        {move || match example.get() {
            None => view! { <p class="loading">"Loading example…"</p> }.into_any(),
            Some(Err(error)) => view! { <ErrorBox error/> }.into_any(),
            Some(Ok(_)) => view! { <ExampleView example/> }.into_any(),
        }}
    }
}

/// Text areas for every editable field.
#[derive(Clone, Copy)]
struct Draft {
    question: RwSignal<String>,
    thinking: RwSignal<String>,
    answer: RwSignal<String>,
    solution: RwSignal<String>,
    source: RwSignal<String>,
    domain: RwSignal<String>,
}

impl Draft {
    fn from(example: &Example) -> Self {
        let f = &example.fields;
        Self {
            question: RwSignal::new(f.question.clone()),
            thinking: RwSignal::new(f.thinking.clone()),
            answer: RwSignal::new(f.answer.clone()),
            solution: RwSignal::new(f.solution.clone().unwrap_or_default()),
            source: RwSignal::new(f.source.clone()),
            domain: RwSignal::new(f.domain.clone()),
        }
    }

    fn patch(&self) -> ExamplePatch {
        ExamplePatch {
            question: Some(self.question.get_untracked()),
            thinking: Some(self.thinking.get_untracked()),
            answer: Some(self.answer.get_untracked()),
            solution: Some(self.solution.get_untracked()),
            source: Some(self.source.get_untracked()),
            domain: Some(self.domain.get_untracked()),
            tags: None,
        }
    }
}

#[component]
fn ExampleView(example: RwSignal<Option<Result<Example, ApiError>>>) -> impl IntoView {
    let current = move || example.with(|e| e.as_ref().and_then(|r| r.as_ref().ok()).cloned());
    let editing = RwSignal::new(false);
    let draft = RwSignal::new(None::<Draft>);
    let error = RwSignal::new(None::<ApiError>);
    let new_tag = RwSignal::new(String::new());
    let saving = RwSignal::new(false);

    let apply = move |result: Result<Example, ApiError>| match result {
        Ok(updated) => {
            example.set(Some(Ok(updated)));
            error.set(None);
        }
        Err(e) => error.set(Some(e)),
    };
    let start_edit = move |_| {
        if let Some(e) = current() {
            draft.set(Some(Draft::from(&e)));
            editing.set(true);
        }
    };
    let save = move |_| {
        let (Some(e), Some(d)) = (current(), draft.get_untracked()) else {
            return;
        };
        let patch = d.patch();
        saving.set(true);
        spawn_local(async move {
            let result = api::patch_example(e.id, &patch).await;
            if result.is_ok() {
                editing.set(false);
            }
            apply(result);
            saving.set(false);
        });
    };
    let add_tag = move || {
        let tag = new_tag.get_untracked();
        let Some(e) = current() else { return };
        if tag.trim().is_empty() {
            return;
        }
        spawn_local(async move {
            let result = api::add_tag(e.id, tag).await;
            if result.is_ok() {
                new_tag.set(String::new());
            }
            apply(result);
        });
    };
    let toggle_trash = move |_| {
        let Some(e) = current() else { return };
        spawn_local(async move {
            let result = if e.deleted_at.is_some() {
                api::restore_example(e.id).await
            } else {
                api::trash_example(e.id).await
            };
            apply(result);
        });
    };

    view! {
        {move || current().map(|e| {
            let f = e.fields.clone();
            let id = e.id;
            view! {
                <p class="crumbs"><A href=format!("/datasets/{}", e.dataset_id)>"← dataset"</A></p>
                <div class="example-head">
                    <h1>{format!("Example #{id}")}</h1>
                    <p class="meta">
                        {format!("source {} · domain {} · updated {}", if f.source.is_empty() { "—" } else { &f.source },
                            if f.domain.is_empty() { "—" } else { &f.domain }, timestamp(&e.updated_at))}
                        {e.deleted_at.as_ref().map(|_| view! { <span class="tag danger" data-test="in-trash">" in the trash"</span> })}
                    </p>
                    <div class="actions">
                        <button on:click=start_edit data-test="edit-button" disabled=move || editing.get() || current().is_some_and(|e| e.deleted_at.is_some())>"Edit"</button>
                        <button class="danger" on:click=toggle_trash data-test="trash-button">
                            {if e.deleted_at.is_some() { "Restore" } else { "Move to trash" }}
                        </button>
                    </div>
                </div>
                <div class="tags" data-test="tags">
                    {f.tags.iter().map(|t| {
                        let tag = t.clone();
                        view! {
                            <span class="tag" data-test="tag">{t.clone()}
                                <button class="x" title="remove tag" on:click=move |_| {
                                    let tag = tag.clone();
                                    spawn_local(async move { apply(api::remove_tag(id, &tag).await) });
                                }>"×"</button>
                            </span>
                        }
                    }).collect_view()}
                    <input type="text" placeholder="add tag" data-test="tag-input" prop:value=move || new_tag.get()
                        on:input=move |ev| new_tag.set(event_target_value(&ev))
                        on:keydown=move |ev| if ev.key() == "Enter" { add_tag() }/>
                    <button on:click=move |_| add_tag() data-test="tag-add">"Add"</button>
                </div>
                {move || error.get().map(|error| view! { <ErrorBox error/> })}
                {move || if editing.get() {
                    draft.get().map(|d| view! {
                        <EditForm draft=d/>
                        <div class="actions">
                            <button class="primary" on:click=save data-test="save-button" disabled=move || saving.get()>"Save"</button>
                            <button on:click=move |_| editing.set(false)>"Cancel"</button>
                        </div>
                    }).into_any()
                } else {
                    let f = f.clone();
                    view! {
                        <section class="field">
                            <h2>"Question"</h2>
                            <div data-test="question"><MathText text=f.question.clone()/></div>
                        </section>
                        <section class="field thinking">
                            <h2>{format!("Thinking ({} words)", thousands(still_api::ExampleFields::word_count(&f.thinking)))}</h2>
                            {if f.thinking.is_empty() {
                                view! { <p class="empty">"No reasoning trace."</p> }.into_any()
                            } else {
                                view! { <div class="scroll" data-test="thinking"><MathText text=f.thinking.clone()/></div> }.into_any()
                            }}
                        </section>
                        <section class="field answer">
                            <h2>"Answer"</h2>
                            <div data-test="answer"><MathText text=f.answer.clone()/></div>
                        </section>
                        {f.solution.clone().map(|s| view! {
                            <section class="field">
                                <h2>"Reference solution"</h2>
                                <div data-test="solution"><MathText text=s/></div>
                            </section>
                        })}
                        <section class="field">
                            <h2>"Metadata"</h2>
                            <pre class="metadata">{serde_json::to_string_pretty(&f.metadata).unwrap_or_default()}</pre>
                        </section>
                    }.into_any()
                }}
            }
        })}
    }
}

#[component]
fn EditForm(draft: Draft) -> impl IntoView {
    let area = |label: &'static str, signal: RwSignal<String>, rows: u32| {
        view! {
            <label class="edit">{label}
                <textarea rows=rows data-test=format!("edit-{label}") prop:value=move || signal.get()
                    on:input=move |ev| signal.set(event_target_value(&ev))></textarea>
            </label>
        }
    };
    view! {
        <div class="edit-form" data-test="edit-form">
            {area("question", draft.question, 4)}
            {area("thinking", draft.thinking, 12)}
            {area("answer", draft.answer, 3)}
            {area("solution", draft.solution, 4)}
            {area("source", draft.source, 1)}
            {area("domain", draft.domain, 1)}
        </div>
    }
}
