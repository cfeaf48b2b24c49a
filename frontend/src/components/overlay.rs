//! Many runs' curves of one metric overlaid as SVG: each run in its own colour (the same on
//! every page), an EMA-smoothed line over the faint raw one, a log scale, a legend that hides
//! and highlights runs, and a read-out of every run's value under the cursor.

use leptos::prelude::*;

pub const W: f64 = 720.0;
pub const H: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 34.0;

/// A run's colour, fixed by its id (golden-angle hues, so neighbours differ), on every page.
pub fn colour_of(run_id: i64) -> String {
    let hue = (run_id as f64 * 137.508).rem_euclid(360.0);
    format!("hsl({hue:.0}, 65%, 42%)")
}

/// TensorBoard's smoothing: an exponential moving average with weight `alpha` (0: raw), debiased
/// so the first points are not pulled towards zero.
pub fn ema(values: &[f64], alpha: f64) -> Vec<f64> {
    if alpha <= 0.0 {
        return values.to_vec();
    }
    let mut last = 0.0;
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        last = last * alpha + (1.0 - alpha) * v;
        let debias = 1.0 - alpha.powi(i as i32 + 1);
        out.push(last / debias);
    }
    out
}

/// The value of the point at or before `x` (points sorted by x), or the first one.
pub fn value_at(points: &[(f64, f64)], x: f64) -> Option<(f64, f64)> {
    if points.is_empty() {
        return None;
    }
    let i = points.partition_point(|p| p.0 <= x);
    Some(points[i.saturating_sub(1)])
}

/// `y` as drawn: its log10 on a log scale (points at or below zero are left out there).
pub fn scaled(points: &[(f64, f64)], log: bool) -> Vec<(f64, f64)> {
    if !log {
        return points.to_vec();
    }
    points
        .iter()
        .filter(|p| p.1 > 0.0)
        .map(|&(x, y)| (x, y.log10()))
        .collect()
}

/// One run's curve, already on the x-axis the page chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub id: i64,
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn path(points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> String {
    let mut out = String::with_capacity(points.len() * 14);
    for (i, &(x, y)) in points.iter().enumerate() {
        let px = LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
        out.push_str(&format!(
            "{}{px:.1},{py:.1}",
            if i == 0 { "M" } else { " L" }
        ));
    }
    out
}

pub fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// The overlay. `hidden` runs are left out of the plot and the ranges; `highlight` is drawn
/// on top, thicker, the others faded.
#[component]
pub fn OverlayChart(
    series: Signal<Vec<Series>>,
    smoothing: Signal<f64>,
    log: Signal<bool>,
    hidden: Signal<Vec<i64>>,
    highlight: RwSignal<Option<i64>>,
    #[prop(into)] x_label: Signal<String>,
) -> impl IntoView {
    let cursor = RwSignal::new(None::<f64>);
    // Per visible series: the raw points and the smoothed ones, both scaled.
    let drawn = Memo::new(move |_| {
        let alpha = smoothing.get();
        let log = log.get();
        let hidden = hidden.get();
        series
            .get()
            .into_iter()
            .filter(|s| !hidden.contains(&s.id))
            .map(|s| {
                let values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
                let smooth: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .zip(ema(&values, alpha))
                    .map(|(p, v)| (p.0, v))
                    .collect();
                let raw = scaled(&s.points, log);
                let smooth = scaled(&smooth, log);
                (s, raw, smooth)
            })
            .collect::<Vec<_>>()
    });
    // The ranges of every drawn point, raw and smoothed, of the visible runs.
    let bounds = Memo::new(move |_| {
        drawn.with(|d| {
            super::chart::bounds(
                d.iter()
                    .flat_map(|(_, raw, smooth)| [raw.as_slice(), smooth.as_slice()]),
            )
        })
    });
    let y_tick = move |v: f64| {
        if log.get() {
            tick(10f64.powf(v))
        } else {
            tick(v)
        }
    };
    let on_move = move |ev: leptos::ev::MouseEvent| {
        let Some(target) = ev
            .current_target()
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
        else {
            return;
        };
        let width = f64::from(target.client_width().max(1));
        let px = f64::from(ev.offset_x()) * W / width;
        let ((x0, x1), _) = bounds.get_untracked();
        let frac = ((px - LEFT) / (W - LEFT - RIGHT)).clamp(0.0, 1.0);
        cursor.set(Some(x0 + frac * (x1 - x0)));
    };
    view! {
        <div class="overlay" data-test="overlay">
            <svg viewBox=format!("0 0 {W} {H}") width="100%" role="img" data-test="overlay-svg"
                xmlns="http://www.w3.org/2000/svg"
                on:mousemove=on_move on:mouseleave=move |_| cursor.set(None)>
                <rect x="0" y="0" width=W height=H fill="white"/>
                <line x1=LEFT y1=H - BOTTOM x2=W - RIGHT y2=H - BOTTOM stroke="#999"/>
                <line x1=LEFT y1=TOP x2=LEFT y2=H - BOTTOM stroke="#999"/>
                {move || {
                    let ((x0, x1), (y0, y1)) = bounds.get();
                    view! {
                        <text x=LEFT - 4.0 y=TOP + 8.0 font-size="11" text-anchor="end">{y_tick(y1)}</text>
                        <text x=LEFT - 4.0 y=H - BOTTOM font-size="11" text-anchor="end">{y_tick(y0)}</text>
                        <text x=LEFT y=H - 12.0 font-size="11">{tick(x0)}</text>
                        <text x=(W - LEFT) / 2.0 + LEFT y=H - 12.0 font-size="11" text-anchor="middle">{x_label.get()}</text>
                        <text x=W - RIGHT y=H - 12.0 font-size="11" text-anchor="end">{tick(x1)}</text>
                    }
                }}
                {move || {
                    let (x, y) = bounds.get();
                    let lit = highlight.get();
                    let faint = smoothing.get() > 0.0;
                    let mut rows = drawn.get();
                    // The highlighted run last, so it is drawn on top.
                    rows.sort_by_key(|(s, _, _)| Some(s.id) == lit);
                    rows.into_iter().map(|(s, raw, smooth)| {
                        let colour = colour_of(s.id);
                        let dim = lit.is_some_and(|l| l != s.id);
                        let width = if Some(s.id) == lit { "2.5" } else { "1.5" };
                        let opacity = if dim { "0.25" } else { "1" };
                        view! {
                            <g data-test="overlay-series" data-run=s.id.to_string() opacity=opacity>
                                {faint.then(|| view! {
                                    <path d=path(&raw, x, y) fill="none" stroke=colour.clone() stroke-width="1" opacity="0.25" data-test="raw-path"/>
                                })}
                                <path d=path(&smooth, x, y) fill="none" stroke=colour stroke-width=width data-test="smooth-path"/>
                            </g>
                        }
                    }).collect_view()
                }}
                {move || cursor.get().map(|cx| {
                    let ((x0, x1), _) = bounds.get();
                    let px = LEFT + (cx - x0) / (x1 - x0) * (W - LEFT - RIGHT);
                    view! { <line x1=px y1=TOP x2=px y2=H - BOTTOM stroke="#444" stroke-dasharray="3 3"/> }
                })}
            </svg>
            {move || cursor.get().map(|cx| {
                let log = log.get();
                let rows: Vec<(i64, String, f64, f64)> = drawn.get().into_iter().filter_map(|(s, _, smooth)| {
                    value_at(&smooth, cx).map(|(x, y)| (s.id, s.label.clone(), x, if log { 10f64.powf(y) } else { y }))
                }).collect();
                view! {
                    <table class="readout" data-test="readout">
                        <thead><tr><th colspan="3">{format!("{} {}", x_label.get_untracked(), tick(cx))}</th></tr></thead>
                        <tbody>
                            {rows.into_iter().map(|(id, label, x, y)| view! {
                                <tr><td><span class="swatch" style=format!("background: {}", colour_of(id))></span>{label}</td>
                                    <td class="num">{tick(y)}</td><td class="meta">{format!("@ {}", tick(x))}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_debiased_and_zero_weight_is_the_raw_curve() {
        let v = [1.0, 1.0, 1.0, 4.0];
        assert_eq!(ema(&v, 0.0), v.to_vec());
        let s = ema(&v, 0.5);
        // Debiased: a constant start stays at the constant.
        assert!((s[0] - 1.0).abs() < 1e-12 && (s[2] - 1.0).abs() < 1e-12);
        assert!(s[3] > 1.0 && s[3] < 4.0, "{s:?}");
    }

    #[test]
    fn the_read_out_takes_the_point_at_or_before_the_cursor() {
        let p = [(1.0, 10.0), (5.0, 50.0), (9.0, 90.0)];
        assert_eq!(value_at(&p, 0.0), Some((1.0, 10.0)));
        assert_eq!(value_at(&p, 5.0), Some((5.0, 50.0)));
        assert_eq!(value_at(&p, 8.9), Some((5.0, 50.0)));
        assert_eq!(value_at(&p, 100.0), Some((9.0, 90.0)));
        assert_eq!(value_at(&[], 1.0), None);
    }

    #[test]
    fn log_scale_drops_non_positive_values_and_colours_are_fixed_per_run() {
        assert_eq!(
            scaled(&[(1.0, 100.0), (2.0, 0.0), (3.0, -1.0)], true),
            vec![(1.0, 2.0)]
        );
        assert_eq!(colour_of(7), colour_of(7));
        assert_ne!(colour_of(7), colour_of(8));
    }
}
