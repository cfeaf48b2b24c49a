//! `/`: every dataset, and the import panel.

use leptos::prelude::*;
use leptos_router::components::A;

use crate::api;
use crate::components::ErrorBox;
use crate::format::{bytes, thousands, timestamp};
use crate::pages::import::ImportPanel;

#[component]
pub fn DatasetsPage() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let datasets = LocalResource::new(move || {
        refresh.track();
        api::datasets()
    });
    let on_imported = Callback::new(move |_| refresh.update(|n| *n += 1));
    view! {
        <h1>"Datasets"</h1>
        <ImportPanel on_imported/>
        <Transition fallback=|| view! { <p class="loading">"Loading datasets…"</p> }>
            {move || datasets.get().map(|result| match result {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <p class="empty">"No datasets yet: import a JSONL, JSON, CSV or Parquet file above."</p>
                }.into_any(),
                Ok(list) => view! {
                    <table class="grid" data-test="datasets">
                        <thead><tr>
                            <th>"Name"</th><th class="num">"Rows"</th><th class="num">"Size"</th>
                            <th class="num">"Versions"</th><th>"Created"</th>
                        </tr></thead>
                        <tbody>
                            {list.into_iter().map(|d| {
                                let name = d.name.clone();
                                view! {
                                <tr data-test="dataset-row" data-name=d.name.clone()>
                                    <td><A href=format!("/datasets/{}", d.id)>{name}</A></td>
                                    <td class="num" data-test="dataset-rows">{thousands(d.n_rows)}</td>
                                    <td class="num">{bytes(d.size_bytes)}</td>
                                    <td class="num">{d.n_versions}</td>
                                    <td>{timestamp(&d.created_at)}</td>
                                </tr>
                            }}).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}
