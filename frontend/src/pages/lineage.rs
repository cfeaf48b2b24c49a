//! `/datasets/:id/versions/:version`: a version's lineage — the curation, stage, recipe and
//! source version that made it, and the runs, evals, curations and trace generations that used it.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use still_api::{LineageUse, VersionLineage};

use crate::api;
use crate::components::ErrorBox;
use crate::format::{cut, thousands, timestamp};

#[component]
pub fn LineagePage() -> impl IntoView {
    let params = use_params_map();
    let lineage = LocalResource::new(move || {
        let p = params.get();
        let dataset = p.get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
        let version = p
            .get("version")
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        api::version_lineage(dataset, version)
    });
    view! {
        <Suspense fallback=|| view! { <p class="empty">"Loading…"</p> }>
            {move || lineage.get().map(|r| match r {
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                Ok(l) => view! { <LineageView lineage=l/> }.into_any(),
            })}
        </Suspense>
    }
}

fn uses(
    title: &'static str,
    test: &'static str,
    base: &'static str,
    list: Vec<LineageUse>,
) -> impl IntoView {
    view! {
        <section class="panel">
            <h2>{title}</h2>
            {if list.is_empty() {
                view! { <p class="empty">"None."</p> }.into_any()
            } else {
                view! {
                    <ul data-test=test>
                        {list.into_iter().map(|u| view! {
                            <li><A href=format!("{base}/{}", u.id)>{u.name}</A>
                                {u.status.map(|s| view! { " "<span class=format!("status {s}")>{s.clone()}</span> })}</li>
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn LineageView(lineage: VersionLineage) -> impl IntoView {
    let l = lineage;
    let v = l.version.clone();
    view! {
        <div class="dataset-head">
            <h1 data-test="lineage-title">{format!("{} v{}", l.dataset_name, v.version)}</h1>
            <p class="meta">
                {thousands(v.n_rows)}" rows · "<code>{cut(&v.content_hash, 12)}</code>" · "{v.message.clone()}
                " · cut "{timestamp(&v.created_at)}" · "
                <A href=format!("/datasets/{}", l.dataset_id)>"open the dataset"</A>
            </p>
        </div>
        <section class="panel">
            <h2>"Made by"</h2>
            {match l.made_by {
                None => view! { <p class="empty" data-test="made-by">"Not made by a curation (imported or cut by hand)."</p> }.into_any(),
                Some(m) => view! {
                    <p data-test="made-by">
                        "Stage "{m.stage + 1}" ("{m.stage_name.clone()}") of curation "
                        <A href=format!("/curations/{}", m.curation_id)>{m.curation_name.clone()}</A>
                        " · recipe "{m.recipe_name.clone().unwrap_or_else(|| "inline".into())}
                        " · from "<A href=format!("/datasets/{}/versions/{}", m.source_dataset_id, m.source_version) attr:data-test="lineage-source">
                            {format!("{} v{}", m.source_dataset_name, m.source_version)}</A>
                    </p>
                    <details><summary>"The recipe"</summary>
                        <pre>{serde_json::to_string_pretty(&m.recipe).unwrap_or_default()}</pre>
                    </details>
                }.into_any(),
            }}
        </section>
        {uses("Runs that trained on it", "lineage-runs", "/runs", l.runs)}
        {uses("Evals on it", "lineage-evals", "/evals", l.evals)}
        {uses("Curations of it", "lineage-curations", "/curations", l.curations)}
        {uses("Trace generations from it", "lineage-generations", "/generations", l.generations)}
    }
}
