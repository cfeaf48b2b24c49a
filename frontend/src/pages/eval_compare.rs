//! `/compare/evals?ids=1,2,…`: evals side by side — the test-time-scaling curves overlaid (one
//! line per eval), accuracy per budget with s1's Control/Scaling/Performance, and the
//! questions that flipped between two of them (right → wrong, wrong → right) at a budget of
//! each. The selection is the URL, so a comparison is a link.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;
use still_api::{EvalFlips, EvalSummary, Flip};

use crate::api::{self, ApiError};
use crate::components::ErrorBox;
use crate::components::chart::MultiLineChart;
use crate::components::math_text::MathText;
use crate::pages::evals::budget_label;

/// The ids in `?ids=`, in order, each once.
pub fn parse_ids(text: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::new();
    for id in text.split(',').filter_map(|s| s.trim().parse().ok()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

#[component]
pub fn EvalComparePage() -> impl IntoView {
    let query = use_query_map();
    let ids = Memo::new(move |_| parse_ids(&query.read().get("ids").unwrap_or_default()));
    let evals = LocalResource::new(move || {
        let ids = ids.get();
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(api::eval(&id.to_string()).await?);
            }
            Ok::<_, ApiError>(out)
        }
    });
    view! {
        <p class="crumbs"><A href="/evals">"← evals"</A></p>
        <h1>"Compare evals"</h1>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || evals.get().map(|answer| match answer {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(list) if list.is_empty() => view! {
                    <p class="empty">"Pick evals to compare on the evals page."</p>
                }.into_any(),
                Ok(list) => view! { <Comparison evals=list/> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn Comparison(evals: Vec<EvalSummary>) -> impl IntoView {
    let series: Vec<(String, Vec<(f64, f64)>)> = evals
        .iter()
        .map(|e| {
            let mut points: Vec<(f64, f64)> = e
                .budgets
                .iter()
                .filter(|b| b.n > 0)
                .map(|b| (b.mean_thinking_tokens, b.accuracy * 100.0))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (e.name.clone(), points)
        })
        .collect();
    let names: Vec<(i64, String)> = evals.iter().map(|e| (e.id, e.name.clone())).collect();
    let pair = (evals.len() >= 2).then(|| evals.clone());
    view! {
        <MultiLineChart title="test-time scaling".to_string() series x_label="mean thinking tokens"/>
        <table class="grid" data-test="compare-evals-table">
            <thead><tr><th>"Eval"</th><th>"Model"</th><th>"Dataset"</th><th class="num">"Performance"</th>
                <th class="num">"Scaling"</th><th class="num">"Control"</th><th>"Accuracy by budget"</th></tr></thead>
            <tbody>
                {evals.into_iter().map(|e| view! {
                    <tr data-test="compare-eval-row">
                        <td><A href=format!("/evals/{}", e.id)>{e.name.clone()}</A></td>
                        <td>{e.model_name.clone()}</td>
                        <td>{format!("{} v{}", e.dataset_name, e.dataset_version)}</td>
                        <td class="num">{format!("{:.1}%", e.performance * 100.0)}</td>
                        <td class="num">{e.scaling.map_or("–".to_string(), |s| format!("{:+.2}", s * 1000.0 * 100.0))}</td>
                        <td class="num">{format!("{:.1}%", e.control * 100.0)}</td>
                        <td>{e.budgets.iter().map(|b| format!("{}: {:.1}%", budget_label(&b.budget), b.accuracy * 100.0)).collect::<Vec<_>>().join(" · ")}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        {pair.map(|evals| view! { <FlipsPanel evals names/> })}
    }
}

/// Picks two of the evals and a budget of each; shows what flipped.
#[component]
fn FlipsPanel(evals: Vec<EvalSummary>, names: Vec<(i64, String)>) -> impl IntoView {
    let a = RwSignal::new(evals[0].id);
    let b = RwSignal::new(evals[1].id);
    let budgets: Vec<(i64, Vec<String>)> = evals
        .iter()
        .map(|e| {
            (
                e.id,
                e.budgets.iter().map(|b| budget_label(&b.budget)).collect(),
            )
        })
        .collect();
    let last = |id: i64| {
        evals
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.budgets.len() as i64 - 1)
    };
    let budget_a = RwSignal::new(last(evals[0].id));
    let budget_b = RwSignal::new(last(evals[1].id));
    let flips = LocalResource::new(move || {
        let (a, b, ba, bb) = (a.get(), b.get(), budget_a.get(), budget_b.get());
        async move { api::eval_flips(a, b, ba, bb).await }
    });
    let budgets = StoredValue::new(budgets);
    let eval_choice = move |test: &'static str, signal: RwSignal<i64>, budget: RwSignal<i64>| {
        let names = names.clone();
        view! {
            <select data-test=test on:change=move |ev| {
                if let Ok(id) = event_target_value(&ev).parse::<i64>() {
                    signal.set(id);
                    let n = budgets.with_value(|b| b.iter().find(|(e, _)| *e == id).map_or(1, |(_, l)| l.len()));
                    budget.set(n as i64 - 1);
                }
            }>
                {names.into_iter().map(|(id, name)| view! {
                    <option value=id.to_string() selected=move || signal.get() == id>{name}</option>
                }).collect_view()}
            </select>
            <select data-test=format!("{test}-budget") on:change=move |ev| {
                if let Ok(i) = event_target_value(&ev).parse::<i64>() {
                    budget.set(i);
                }
            }>
                {move || budgets.with_value(|b| b.iter().find(|(e, _)| *e == signal.get()).map(|(_, l)| l.clone()).unwrap_or_default())
                    .into_iter().enumerate().map(|(i, label)| view! {
                        <option value=i.to_string() selected=move || budget.get() == i as i64>{label}</option>
                    }).collect_view()}
            </select>
        }
    };
    view! {
        <section class="panel" data-test="flips">
            <h2>"Flipped questions"</h2>
            <div class="form-row">
                <label>"A "{eval_choice("flip-a", a, budget_a)}</label>
                <label>"B "{eval_choice("flip-b", b, budget_b)}</label>
            </div>
            {move || flips.get().map(|answer| match answer {
                Err(error) => view! { <ErrorBox error/> }.into_any(),
                Ok(f) => view! { <FlipsView flips=f/> }.into_any(),
            })}
        </section>
    }
}

#[component]
fn FlipsView(flips: EvalFlips) -> impl IntoView {
    let counts = format!(
        "{} questions in both · both right {} · both wrong {} · right → wrong {} · wrong → right {}",
        flips.shared,
        flips.both_right,
        flips.both_wrong,
        flips.n_right_to_wrong,
        flips.n_wrong_to_right
    );
    let list = |title: String, test: &'static str, rows: Vec<Flip>, total: i64| {
        let shown = rows.len() as i64;
        view! {
            <h3>{title}</h3>
            {(shown < total).then(|| view! { <p class="hint">{format!("the first {shown} of {total}")}</p> })}
            <table class="grid" data-test=test>
                <thead><tr><th>"Question"</th><th>"Reference"</th><th>"A answered"</th><th>"B answered"</th></tr></thead>
                <tbody>
                    {rows.into_iter().map(|f| view! {
                        <tr data-test="flip-row">
                            <td><MathText text=crate::format::cut(&f.question, 300)/></td>
                            <td><MathText text=f.reference.clone()/></td>
                            <td>{f.a_extracted.clone().unwrap_or_else(|| "(none)".into())}</td>
                            <td>{f.b_extracted.clone().unwrap_or_else(|| "(none)".into())}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        }
    };
    view! {
        <p class="meta" data-test="flip-counts">{counts}</p>
        {list(format!("Right in A, wrong in B ({})", flips.n_right_to_wrong), "flips-right-to-wrong", flips.right_to_wrong, flips.n_right_to_wrong)}
        {list(format!("Wrong in A, right in B ({})", flips.n_wrong_to_right), "flips-wrong-to-right", flips.wrong_to_right, flips.n_wrong_to_right)}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_read_in_order_once() {
        assert_eq!(super::parse_ids("3, 1,x,3,,2"), vec![3, 1, 2]);
        assert!(super::parse_ids("").is_empty());
    }
}
