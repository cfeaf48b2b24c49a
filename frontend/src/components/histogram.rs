//! A length histogram drawn as SVG.

use leptos::prelude::*;
use still_api::LengthStats;

use crate::format::thousands;

const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 120.0;
const PAD_BOTTOM: f64 = 18.0;

#[component]
pub fn Histogram(stats: LengthStats, unit: String) -> impl IntoView {
    let max_count = stats.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = stats.counts.len().max(1) as f64;
    let bar_w = WIDTH / n;
    let plot_h = HEIGHT - PAD_BOTTOM;
    let bars = stats
        .counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let h = (count as f64 / max_count) * (plot_h - 4.0);
            let lo = stats.edges.get(i).copied().unwrap_or(0);
            let hi = stats.edges.get(i + 1).copied().unwrap_or(lo);
            let label = format!("{}–{} {}: {} rows", thousands(lo), thousands(hi), unit, thousands(count));
            view! {
                <rect x=format!("{:.1}", i as f64 * bar_w + 1.0) y=format!("{:.1}", plot_h - h)
                    width=format!("{:.1}", (bar_w - 2.0).max(1.0)) height=format!("{:.1}", h) class="bar">
                    <title>{label}</title>
                </rect>
            }
        })
        .collect_view();
    let last_edge = stats.edges.last().copied().unwrap_or(0);
    view! {
        <figure class="histogram" data-test=format!("histogram-{}", stats.field)>
            <figcaption>
                <strong>{stats.field.clone()}</strong>
                {format!(" — {unit}: median {}, p90 {}, max {}, mean {:.1}",
                    thousands(stats.p50), thousands(stats.p90), thousands(stats.max), stats.mean)}
            </figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") width="100%" role="img">
                {bars}
                <line x1="0" y1=plot_h x2=WIDTH y2=plot_h class="axis"/>
                <text x="0" y=HEIGHT - 4.0 class="tick">"0"</text>
                <text x=WIDTH y=HEIGHT - 4.0 class="tick" text-anchor="end">{thousands(last_edge)}</text>
            </svg>
        </figure>
    }
}
