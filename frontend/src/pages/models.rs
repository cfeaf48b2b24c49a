//! `/models`: the registry — every model with where it came from (a folder, made from scratch,
//! a run's final model or evaluated checkpoint, on workers' disks), its architecture and format,
//! its size, and an **Evaluate** link that opens the eval form with it chosen (for a
//! generation-only teacher, **Generate traces** with it as the teacher).

use leptos::prelude::*;
use leptos_router::components::A;

use crate::api;
use crate::components::ErrorBox;
use crate::format::{thousands, timestamp};

#[component]
pub fn ModelsPage() -> impl IntoView {
    let models = LocalResource::new(api::models);
    view! {
        <h1>"Models"</h1>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || models.get().map(|answer| match answer {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="empty">"No models yet: make a tiny one on the Runs page."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="grid" data-test="models">
                        <thead><tr><th>"Model"</th><th>"Origin"</th><th>"Architecture"</th><th class="num">"Parameters"</th>
                            <th class="num">"Vocabulary"</th><th>"Run"</th><th>"Created"</th><th></th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|m| view! {
                                <tr data-test="model-row" data-name=m.name.clone()>
                                    <td>{m.name.clone()}</td>
                                    <td>{m.origin.clone()}</td>
                                    <td data-test="model-arch">{format!("{} · {}", m.arch, m.format)}
                                        {m.generation_only().then(|| view! { <span class="tag" title="Runs through candle-transformers: the teacher of a trace generation, not trained, evaluated or served here">"generation only"</span> })}</td>
                                    <td class="num">{thousands(m.n_params)}</td>
                                    <td class="num">{thousands(m.vocab_size)}</td>
                                    <td>{m.run_id.map(|r| view! { <A href=format!("/runs/{r}")>{format!("#{r}")}</A> })}</td>
                                    <td>{timestamp(&m.created_at)}</td>
                                    <td>{if m.generation_only() {
                                        view! { <A href=format!("/generations?teacher={}", m.id) attr:data-test="teach-with-model">"Generate traces"</A> }.into_any()
                                    } else {
                                        view! { <A href=format!("/evals?model={}", m.id) attr:data-test="evaluate-model">"Evaluate"</A> }.into_any()
                                    }}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Suspense>
    }
}
