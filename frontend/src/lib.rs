//! Still's browser UI. `App` holds the router; pages live in `pages/`, reusable pieces in
//! `components/`, the typed API client in `api.rs`. Pure logic (`latex`, `format`) has no view
//! code, so native `cargo test` reaches it.

pub mod api;
pub mod components;
pub mod format;
pub mod latex;
pub mod live;
pub mod pages;

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

#[component]
pub fn App() -> impl IntoView {
    view! {
        <Router>
            <header class="topbar">
                <A href="/" attr:class="brand">"Still"</A>
                <nav>
                    <A href="/">"Datasets"</A>
                    <A href="/runs">"Runs"</A>
                    <A href="/models">"Models"</A>
                    <A href="/evals">"Evals"</A>
                    <A href="/generations">"Traces"</A>
                    <A href="/curations">"Curation"</A>
                    <A href="/playground">"Playground"</A>
                    <A href="/workers">"Workers"</A>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="empty">"Page not found."</p> }>
                    <Route path=path!("/") view=pages::datasets::DatasetsPage/>
                    <Route path=path!("/datasets/:id") view=pages::dataset::DatasetPage/>
                    <Route path=path!("/examples/:id") view=pages::example::ExamplePage/>
                    <Route path=path!("/runs") view=pages::runs::RunsPage/>
                    <Route path=path!("/runs/:id") view=pages::run::RunPage/>
                    <Route path=path!("/workers") view=pages::runs::WorkersPage/>
                    <Route path=path!("/models") view=pages::models::ModelsPage/>
                    <Route path=path!("/playground") view=pages::playground::PlaygroundPage/>
                    <Route path=path!("/evals") view=pages::evals::EvalsPage/>
                    <Route path=path!("/evals/:id") view=pages::evals::EvalPage/>
                    <Route path=path!("/compare/evals") view=pages::eval_compare::EvalComparePage/>
                    <Route path=path!("/compare") view=pages::compare::ComparePage/>
                    <Route path=path!("/generations") view=pages::generations::GenerationsPage/>
                    <Route path=path!("/generations/:id") view=pages::generations::GenerationPage/>
                    <Route path=path!("/curations") view=pages::curations::CurationsPage/>
                    <Route path=path!("/curations/:id") view=pages::curations::CurationPage/>
                    <Route path=path!("/datasets/:id/versions/:version") view=pages::lineage::LineagePage/>
                </Routes>
            </main>
        </Router>
    }
}
