//! `/compare?runs=1,2,3`: any number of runs side by side — one metric's curves overlaid
//! (smoothing, x by step or wall time, log scale, a legend that hides and highlights, a
//! read-out under the cursor), the metrics table with deltas against a pinned baseline, the
//! config fields that differ, CSV and SVG exports, and saving the view as a named comparison.
//! Everything the view shows is in the URL, so a comparison is a link.
//! `/compare?comparison=ID` opens a saved one.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::NavigateOptions;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use still_api::{ComparedRun, Comparison, MetricSummary, NewComparison};

use crate::api::{self, ApiError};
use crate::components::overlay::{OverlayChart, Series, colour_of, tick};
use crate::components::{ErrorBox, mark, save_file};

/// The query keys the view keeps, in the order the URL writes them.
const KEYS: [&str; 7] = ["runs", "metric", "smooth", "x", "log", "baseline", "hide"];
/// Points per curve the page asks for: about one per two pixels of the 720-unit-wide chart (a
/// 10,000-step run then reads its 64-step rollups, not its points).
pub const POINTS: usize = 320;

fn ids(text: &str) -> Vec<i64> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A field for a CSV line, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every run's summary of every metric, one line each.
pub fn summary_csv(c: &Comparison) -> String {
    let mut out =
        String::from("run_id,run,metric,n,last_step,last,best,min,min_step,max,max_step\n");
    for r in &c.runs {
        for s in &r.summary {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                r.run.id,
                csv_field(&r.run.name),
                csv_field(&s.name),
                s.n,
                s.last_step,
                s.last,
                s.best,
                s.min,
                s.min_step,
                s.max,
                s.max_step
            ));
        }
    }
    out
}

/// The curves as fetched (downsampled), one point per line.
pub fn curves_csv(c: &Comparison) -> String {
    let mut out = String::from("run_id,run,metric,step,value\n");
    for r in &c.runs {
        for curve in &r.curves {
            for (step, value) in curve.steps.iter().zip(&curve.values) {
                out.push_str(&format!(
                    "{},{},{},{step},{value}\n",
                    r.run.id,
                    csv_field(&r.run.name),
                    csv_field(&curve.name)
                ));
            }
        }
    }
    out
}

/// A run's curve of `metric` on the chosen x-axis: steps, or wall time (seconds, read off the
/// run's `elapsed_s` curve between its points).
pub fn series_of(run: &ComparedRun, metric: &str, by_time: bool) -> Vec<(f64, f64)> {
    let Some(curve) = run.curves.iter().find(|c| c.name == metric) else {
        return Vec::new();
    };
    let points = curve
        .steps
        .iter()
        .zip(&curve.values)
        .map(|(&s, &v)| (s as f64, v));
    if !by_time {
        return points.collect();
    }
    let Some(clock) = run.curves.iter().find(|c| c.name == "elapsed_s") else {
        return Vec::new();
    };
    let clock: Vec<(f64, f64)> = clock
        .steps
        .iter()
        .zip(&clock.values)
        .map(|(&s, &v)| (s as f64, v))
        .collect();
    points
        .filter_map(|(step, v)| interpolate(&clock, step).map(|t| (t, v)))
        .collect()
}

fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let i = points.partition_point(|p| p.0 < x);
    match (i.checked_sub(1).map(|j| points[j]), points.get(i)) {
        (_, Some(&(bx, by))) if bx == x => Some(by),
        (Some((ax, ay)), Some(&(bx, by))) => Some(ay + (by - ay) * (x - ax) / (bx - ax)),
        (Some((_, ay)), None) => Some(ay),
        (None, Some(&(_, by))) => Some(by),
        (None, None) => None,
    }
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", tick(v))
    } else {
        tick(v)
    }
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let get = move |key: &'static str| query.with(|q| q.get(key));
    let runs = Memo::new(move |_| get("runs").unwrap_or_default());
    let metric = Memo::new(move |_| get("metric").unwrap_or_else(|| "loss".into()));
    let smoothing = Memo::new(move |_| {
        get("smooth")
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
            .clamp(0.0, 0.99)
    });
    let by_time = Memo::new(move |_| get("x").as_deref() == Some("time"));
    let log = Memo::new(move |_| get("log").as_deref() == Some("1"));
    let baseline = Memo::new(move |_| get("baseline").and_then(|b| b.parse::<i64>().ok()));
    let hidden = Memo::new(move |_| ids(&get("hide").unwrap_or_default()));
    let highlight = RwSignal::new(None::<i64>);
    let show_all = RwSignal::new(false);
    let sort = RwSignal::new(("run", true));

    // One key of the view changed: the URL says so (replacing the entry, not adding one).
    let nav = navigate.clone();
    let set = Callback::new(move |(key, value): (&'static str, String)| {
        let parts: Vec<String> = KEYS
            .iter()
            .filter_map(|&k| {
                let v = if k == key {
                    value.clone()
                } else {
                    query.with_untracked(|q| q.get(k)).unwrap_or_default()
                };
                (!v.is_empty()).then(|| format!("{k}={}", api::encode(&v)))
            })
            .collect();
        nav(
            &format!("/compare?{}", parts.join("&")),
            NavigateOptions {
                replace: true,
                scroll: false,
                ..Default::default()
            },
        );
    });

    // A saved comparison's link opens its runs, baseline and view.
    let open_error = RwSignal::new(None::<ApiError>);
    if let Some(saved) = query.with_untracked(|q| q.get("comparison")) {
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::comparison(&saved).await {
                Ok(c) => {
                    let s = &c.settings;
                    let text = |k: &str| match &s[k] {
                        serde_json::Value::String(v) => v.clone(),
                        serde_json::Value::Null => String::new(),
                        v => v.to_string(),
                    };
                    let mut parts = vec![format!("runs={}", join(&c.runs))];
                    for k in ["metric", "smooth", "x", "log", "hide"] {
                        let v = text(k);
                        if !v.is_empty() {
                            parts.push(format!("{k}={}", api::encode(&v)));
                        }
                    }
                    if let Some(b) = c.baseline {
                        parts.push(format!("baseline={b}"));
                    }
                    navigate(
                        &format!("/compare?{}", parts.join("&")),
                        NavigateOptions {
                            replace: true,
                            ..Default::default()
                        },
                    );
                }
                Err(e) => open_error.set(Some(e)),
            }
        });
    }

    let data = LocalResource::new(move || {
        let runs = runs.get();
        let mut metrics = metric.get();
        if by_time.get() {
            metrics.push_str(",elapsed_s");
        }
        async move {
            if runs.is_empty() {
                return Err(ApiError {
                    status: 0,
                    message: "No runs chosen: tick runs on the Runs page and press Compare.".into(),
                });
            }
            api::compare(&format!(
                "runs={runs}&metrics={}&max_points={POINTS}",
                api::encode(&metrics)
            ))
            .await
        }
    });
    let comparison = Memo::new(move |_| data.get().and_then(Result::ok));
    // The compare benchmark times navigation → curves drawn with this mark.
    Effect::new(move |_| {
        if comparison.with(Option::is_some) {
            request_animation_frame(|| mark("still:compare-drawn"));
        }
    });
    let series = Signal::derive(move || {
        let metric = metric.get();
        let by_time = by_time.get();
        comparison
            .get()
            .map(|c| {
                c.runs
                    .iter()
                    .map(|r| Series {
                        id: r.run.id,
                        label: r.run.name.clone(),
                        points: series_of(r, &metric, by_time),
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let x_label = Signal::derive(move || {
        if by_time.get() {
            "wall time (s)".to_string()
        } else {
            "step".to_string()
        }
    });

    let save_name = RwSignal::new(String::new());
    let saved = RwSignal::new(None::<Result<still_api::SavedComparison, ApiError>>);
    let save = move |_| {
        let runs = ids(&runs.get_untracked());
        let settings = serde_json::json!({
            "metric": metric.get_untracked(),
            "smooth": smoothing.get_untracked(),
            "x": if by_time.get_untracked() { "time" } else { "step" },
            "log": if log.get_untracked() { "1" } else { "" },
            "hide": join(&hidden.get_untracked()),
        });
        let body = NewComparison {
            name: save_name.get_untracked().trim().to_string(),
            runs: runs.iter().map(i64::to_string).collect(),
            baseline: baseline.get_untracked().map(|b| b.to_string()),
            settings: Some(settings),
        };
        spawn_local(async move { saved.set(Some(api::save_comparison(&body).await)) });
    };
    let csv_link = RwSignal::new(None::<String>);
    let export = move |which: &'static str| {
        let Some(c) = comparison.get_untracked() else {
            return;
        };
        let (name, text) = match which {
            "summary" => ("comparison-summary.csv", summary_csv(&c)),
            _ => ("comparison-curves.csv", curves_csv(&c)),
        };
        csv_link.set(save_file(name, "text/csv", &text));
    };
    let export_svg = move |_| {
        let svg = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.query_selector("[data-test=overlay-svg]").ok().flatten())
            .map(|e| e.outer_html());
        if let Some(svg) = svg {
            save_file(
                &format!("{}.svg", metric.get_untracked()),
                "image/svg+xml",
                &svg,
            );
        }
    };

    view! {
        <h1>"Compare runs"</h1>
        {move || open_error.get().map(|e| view! { <ErrorBox error=e/> })}
        {move || match data.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(e)) => view! { <ErrorBox error=e/> }.into_any(),
            Some(Ok(c)) => view! {
                <p class="meta" data-test="compare-count">{format!("{} runs", c.runs.len())}</p>
                <div class="toolbar">
                    <label>"Metric "
                        <select data-test="compare-metric" on:change=move |ev| set.run(("metric", event_target_value(&ev)))>
                            {c.metrics.iter().map(|m| {
                                let m = m.clone();
                                let selected = m == metric.get_untracked();
                                view! { <option value=m.clone() selected=selected>{m.clone()}</option> }
                            }).collect_view()}
                        </select>
                    </label>
                    <label>{move || format!(" Smoothing {:.2} ", smoothing.get())}
                        <input type="range" min="0" max="0.99" step="0.01" data-test="smoothing"
                            prop:value=move || smoothing.get().to_string()
                            on:input=move |ev| set.run(("smooth", event_target_value(&ev)))/>
                    </label>
                    <label>" x-axis "
                        <select data-test="compare-x" on:change=move |ev| set.run(("x", event_target_value(&ev)))>
                            <option value="step" selected=move || !by_time.get()>"step"</option>
                            <option value="time" selected=move || by_time.get()>"wall time"</option>
                        </select>
                    </label>
                    <label class="check">
                        <input type="checkbox" data-test="compare-log" prop:checked=move || log.get()
                            on:change=move |ev| set.run(("log", if event_target_checked(&ev) { "1".into() } else { String::new() }))/>
                        " log scale"
                    </label>
                </div>
                <OverlayChart series smoothing=smoothing.into() log=log.into() hidden=hidden.into() highlight x_label/>
                <div class="legend" data-test="compare-legend">
                    {c.runs.iter().map(|r| {
                        let id = r.run.id;
                        let name = r.run.name.clone();
                        view! {
                            <button class=move || if hidden.get().contains(&id) { "legend-item off" } else { "legend-item" }
                                data-test="legend-item" data-run=id.to_string()
                                on:mouseenter=move |_| highlight.set(Some(id))
                                on:mouseleave=move |_| highlight.set(None)
                                on:click=move |_| {
                                    let mut h = hidden.get_untracked();
                                    if let Some(i) = h.iter().position(|&x| x == id) { h.remove(i); } else { h.push(id); }
                                    set.run(("hide", join(&h)));
                                }>
                                <span class="swatch" style=format!("background: {}", colour_of(id))></span>{name}
                            </button>
                        }
                    }).collect_view()}
                </div>
                <MetricsTable comparison=c.clone() metric baseline sort set/>
                <ConfigDiff comparison=c.clone() show_all/>
                <DataVersions comparison=c.clone()/>
                <section class="panel">
                    <h2>"Export and save"</h2>
                    <div class="toolbar">
                        <button data-test="export-summary" on:click=move |_| export("summary")>"Metrics table (CSV)"</button>
                        <button data-test="export-curves" on:click=move |_| export("curves")>"Curves (CSV)"</button>
                        <button data-test="export-svg" on:click=export_svg>"Chart (SVG)"</button>
                        {move || csv_link.get().map(|url| view! { <a href=url data-test="csv-link" download="comparison.csv">"download again"</a> })}
                    </div>
                    <div class="form-grid">
                        <label>"Save this view as"
                            <input type="text" data-test="comparison-name" prop:value=move || save_name.get()
                                on:input=move |ev| save_name.set(event_target_value(&ev))/>
                        </label>
                    </div>
                    <button data-test="save-comparison" on:click=save>"Save comparison"</button>
                    {move || saved.get().map(|r| match r {
                        Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                        Ok(s) => view! {
                            <p class="meta" data-test="saved-comparison">"Saved: "
                                <A href=format!("/compare?comparison={}", s.id)>{s.name.clone()}</A></p>
                        }.into_any(),
                    })}
                </section>
            }.into_any(),
        }}
    }
}

/// The chosen metric per run: last, best, smallest and largest, with deltas against the
/// baseline run (a radio per row), sortable by any column.
#[component]
fn MetricsTable(
    comparison: Comparison,
    metric: Memo<String>,
    baseline: Memo<Option<i64>>,
    sort: RwSignal<(&'static str, bool)>,
    set: Callback<(&'static str, String)>,
) -> impl IntoView {
    let runs = comparison.runs;
    let header = move |key: &'static str, label: &'static str| {
        view! {
            <th class="num sortable" data-test=format!("sort-{key}")
                on:click=move |_| sort.update(|s| *s = if s.0 == key { (key, !s.1) } else { (key, true) })>
                {move || {
                    let (k, up) = sort.get();
                    format!("{label}{}", if k == key { if up { " ▲" } else { " ▼" } } else { "" })
                }}
            </th>
        }
    };
    let rows = move || {
        let metric = metric.get();
        let of = |r: &ComparedRun| -> Option<MetricSummary> {
            r.summary.iter().find(|s| s.name == metric).cloned()
        };
        let base = baseline
            .get()
            .and_then(|b| runs.iter().find(|r| r.run.id == b))
            .and_then(of);
        let mut rows: Vec<(i64, String, Option<MetricSummary>)> = runs
            .iter()
            .map(|r| (r.run.id, r.run.name.clone(), of(r)))
            .collect();
        let (key, up) = sort.get();
        let value = |s: &Option<MetricSummary>| -> f64 {
            s.as_ref().map_or(f64::NAN, |s| match key {
                "best" => s.best,
                "min" => s.min,
                "max" => s.max,
                "delta" => base.as_ref().map_or(f64::NAN, |b| s.last - b.last),
                _ => s.last,
            })
        };
        if key == "run" {
            rows.sort_by(|a, b| a.1.cmp(&b.1));
        } else {
            rows.sort_by(|a, b| value(&a.2).total_cmp(&value(&b.2)));
        }
        if !up {
            rows.reverse();
        }
        rows.into_iter()
            .map(|(id, name, s)| {
                let is_base = baseline.get() == Some(id);
                let delta = |f: fn(&MetricSummary) -> f64| match (&s, &base) {
                    (Some(s), Some(b)) if !is_base => signed(f(s) - f(b)),
                    _ => String::new(),
                };
                let cells = s.as_ref().map(|s| (tick(s.last), tick(s.best), tick(s.min), tick(s.max)));
                let (last, best, min, max) = cells.unwrap_or_default();
                view! {
                    <tr data-test="metric-row" data-run=id.to_string()>
                        <td><input type="radio" name="baseline" data-test="baseline" prop:checked=is_base
                            on:change=move |_| set.run(("baseline", id.to_string()))/></td>
                        <td><span class="swatch" style=format!("background: {}", colour_of(id))></span>
                            <A href=format!("/runs/{id}")>{name}</A></td>
                        <td class="num" data-test="metric-last">{last}</td>
                        <td class="num">{best}</td>
                        <td class="num">{min}</td>
                        <td class="num">{max}</td>
                        <td class="num" data-test="delta-last">{delta(|s| s.last)}</td>
                        <td class="num" data-test="delta-best">{delta(|s| s.best)}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <section class="panel">
            <h2>{move || format!("{} per run", metric.get())}</h2>
            <table class="grid" data-test="metrics-table">
                <thead><tr>
                    <th>"Baseline"</th>
                    <th class="sortable" data-test="sort-run" on:click=move |_| sort.update(|s| *s = if s.0 == "run" { ("run", !s.1) } else { ("run", true) })>"Run"</th>
                    {header("last", "Final")}{header("best", "Best")}{header("min", "Min")}{header("max", "Max")}
                    {header("delta", "Δ final")}<th class="num">"Δ best"</th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }
}

/// A dataset version some of the compared runs trained on.
struct UsedVersion {
    dataset_id: i64,
    dataset: String,
    version: i64,
    hash: String,
    runs: Vec<String>,
}

/// The dataset versions the runs trained on (each with its runs and a link to its lineage), and
/// between each two versions of one dataset the rows added, removed and changed.
#[component]
fn DataVersions(comparison: Comparison) -> impl IntoView {
    // Each version and the runs that used it, in first-seen order.
    let mut used: Vec<UsedVersion> = Vec::new();
    for r in &comparison.runs {
        let run = &r.run;
        match used
            .iter_mut()
            .find(|u| u.dataset_id == run.dataset_id && u.version == run.dataset_version)
        {
            Some(u) => u.runs.push(run.name.clone()),
            None => used.push(UsedVersion {
                dataset_id: run.dataset_id,
                dataset: run.dataset.clone(),
                version: run.dataset_version,
                hash: run.dataset_version_hash.clone(),
                runs: vec![run.name.clone()],
            }),
        }
    }
    // Consecutive versions of the same dataset, oldest first.
    let mut versions: Vec<(i64, i64, String)> = used
        .iter()
        .map(|u| (u.dataset_id, u.version, u.dataset.clone()))
        .collect();
    versions.sort_unstable();
    let pairs: Vec<(i64, i64, i64, String)> = versions
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| (w[0].0, w[0].1, w[1].1, w[0].2.clone()))
        .collect();
    let diffs = LocalResource::new(move || {
        let pairs = pairs.clone();
        async move {
            let mut out = Vec::new();
            for (d, a, b, name) in pairs {
                out.push((name, api::version_diff(d, a, b).await));
            }
            out
        }
    });
    view! {
        <section class="panel">
            <h2>"Data"</h2>
            <table class="grid" data-test="data-versions">
                <thead><tr><th>"Dataset version"</th><th>"Content hash"</th><th>"Runs"</th></tr></thead>
                <tbody>
                    {used.into_iter().map(|u| view! {
                        <tr data-test="data-version">
                            <td><A href=format!("/datasets/{}/versions/{}", u.dataset_id, u.version)>{format!("{} v{}", u.dataset, u.version)}</A></td>
                            <td><code>{u.hash.chars().take(12).collect::<String>()}</code></td>
                            <td>{u.runs.join(", ")}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
            {move || diffs.get().map(|list| list.into_iter().map(|(name, d)| match d {
                Err(e) => view! { <ErrorBox error=e/> }.into_any(),
                Ok(d) => view! {
                    <p class="meta" data-test="data-diff">{format!(
                        "{name} v{} → v{}: {} added · {} removed · {} changed · {} unchanged",
                        d.a.version, d.b.version, d.n_added, d.n_removed, d.n_changed, d.n_unchanged
                    )}</p>
                }.into_any(),
            }).collect_view())}
        </section>
    }
}

/// The config fields whose values differ between the runs (every field with "show all").
#[component]
fn ConfigDiff(comparison: Comparison, show_all: RwSignal<bool>) -> impl IntoView {
    let names: Vec<(i64, String)> = comparison
        .runs
        .iter()
        .map(|r| (r.run.id, r.run.name.clone()))
        .collect();
    let rows = comparison.config;
    let n_differ = rows.iter().filter(|r| r.differs).count();
    view! {
        <section class="panel">
            <h2>"Config"</h2>
            <p class="meta">{format!("{n_differ} of {} fields differ. ", rows.len())}
                <label class="check"><input type="checkbox" data-test="config-show-all" prop:checked=move || show_all.get()
                    on:change=move |ev| show_all.set(event_target_checked(&ev))/>" show all"</label></p>
            <div class="scroll-x">
            <table class="grid" data-test="config-diff">
                <thead><tr><th>"Field"</th>{names.iter().map(|(id, n)| view! {
                    <th><span class="swatch" style=format!("background: {}", colour_of(*id))></span>{n.clone()}</th>
                }).collect_view()}</tr></thead>
                <tbody>
                    {move || {
                        let all = show_all.get();
                        rows.iter().filter(|r| all || r.differs).map(|r| view! {
                            <tr data-test="config-row" data-field=r.field.clone() class=if r.differs { "differs" } else { "" }>
                                <td>{r.field.clone()}</td>
                                {r.values.iter().map(|v| view! { <td>{match v {
                                    serde_json::Value::String(s) => s.clone(),
                                    serde_json::Value::Null => "—".to_string(),
                                    v => v.to_string(),
                                }}</td> }).collect_view()}
                            </tr>
                        }).collect_view()
                    }}
                </tbody>
            </table>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_is_read_off_the_clock_curve_between_its_points() {
        let clock = [(1.0, 10.0), (5.0, 50.0)];
        assert_eq!(interpolate(&clock, 1.0), Some(10.0));
        assert_eq!(interpolate(&clock, 3.0), Some(30.0));
        assert_eq!(interpolate(&clock, 9.0), Some(50.0));
        assert_eq!(interpolate(&clock, 0.0), Some(10.0));
        assert_eq!(interpolate(&[], 1.0), None);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(ids("3, 1,x,2"), vec![3, 1, 2]);
    }
}
