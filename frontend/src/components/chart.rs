//! Line charts drawn as SVG: one series of (step, value) points with its range labelled, or
//! several named series on shared axes with a legend.

use leptos::prelude::*;

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD: f64 = 36.0;

/// The range of every point of every series (an empty or flat range widened to 1).
pub(crate) fn bounds<'a>(
    series: impl IntoIterator<Item = &'a [(f64, f64)]>,
) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.into_iter().flatten() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    ((x0, x1), (y0, y1))
}

/// Points as an SVG polyline's `points` attribute, placed in the plot area by `x`, `y` ranges.
fn project(points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> String {
    points
        .iter()
        .map(|&(x, y)| {
            let px = PAD + (x - x0) / (x1 - x0) * (W - PAD - 8.0);
            let py = 8.0 + (1.0 - (y - y0) / (y1 - y0)) * (H - PAD - 8.0);
            format!("{px:.1},{py:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Maps points to an SVG polyline's `points` attribute within the plot area.
pub fn polyline(points: &[(f64, f64)]) -> (String, (f64, f64), (f64, f64)) {
    if points.is_empty() {
        return (String::new(), (0.0, 1.0), (0.0, 1.0));
    }
    let (x, y) = bounds([points]);
    (project(points, x, y), x, y)
}

/// Series colours, stable by position.
const COLOURS: [&str; 8] = [
    "#3b6fd4", "#d4573b", "#2e9e5b", "#9b59b6", "#c9a227", "#16a2b8", "#7f8c8d", "#e67e22",
];

/// Several named series on shared axes, with a legend (each series its colour, its points
/// marked): accuracy per budget against steps, or one test-time-scaling curve per eval.
#[component]
pub fn MultiLineChart(
    title: String,
    series: Vec<(String, Vec<(f64, f64)>)>,
    #[prop(into)] x_label: String,
) -> impl IntoView {
    let (x, y) = bounds(series.iter().map(|(_, p)| p.as_slice()));
    let ((x0, x1), (y0, y1)) = (x, y);
    view! {
        <figure class="chart" data-test=format!("chart-{title}")>
            <figcaption><strong>{title.clone()}</strong></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") width="100%" role="img">
                <line x1=PAD y1=H - PAD + 4.0 x2=W y2=H - PAD + 4.0 class="axis"/>
                <line x1=PAD - 4.0 y1="0" x2=PAD - 4.0 y2=H - PAD + 4.0 class="axis"/>
                <text x="2" y="14" class="tick">{label(y1)}</text>
                <text x="2" y=H - PAD class="tick">{label(y0)}</text>
                <text x=PAD y=H - 14.0 class="tick">{format!("{x_label} {}", label(x0))}</text>
                <text x=W y=H - 14.0 class="tick" text-anchor="end">{label(x1)}</text>
                {series.iter().enumerate().map(|(i, (name, points))| {
                    let colour = COLOURS[i % COLOURS.len()];
                    let line = project(points, x, y);
                    let dots: Vec<(String, String)> = line
                        .split(' ')
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| p.split_once(',').map(|(a, b)| (a.to_string(), b.to_string())))
                        .collect();
                    view! {
                        <g data-test="chart-series" data-name=name.clone()>
                            <polyline points=line class="series" style=format!("stroke: {colour}") data-points=points.len()/>
                            {dots.into_iter().map(|(cx, cy)| view! {
                                <circle cx=cx cy=cy r="3" style=format!("fill: {colour}")/>
                            }).collect_view()}
                        </g>
                    }
                }).collect_view()}
            </svg>
            <div class="legend">
                {series.iter().enumerate().map(|(i, (name, _))| view! {
                    <span class="legend-item"><span class="swatch" style=format!("background: {}", COLOURS[i % COLOURS.len()])></span>{name.clone()}</span>
                }).collect_view()}
            </div>
        </figure>
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 1000.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

#[component]
pub fn LineChart(
    title: String,
    points: Vec<(f64, f64)>,
    /// What the x axis counts (`step` unless said).
    #[prop(optional, into)]
    x_label: Option<String>,
) -> impl IntoView {
    let x_label = x_label.unwrap_or_else(|| "step".to_string());
    let (line, (x0, x1), (y0, y1)) = polyline(&points);
    let last = points.last().map(|p| label(p.1)).unwrap_or_default();
    view! {
        <figure class="chart" data-test=format!("chart-{title}")>
            <figcaption><strong>{title.clone()}</strong>{format!("  last {last}")}</figcaption>
            <svg viewBox=format!("0 0 {W} {H}") width="100%" role="img">
                <line x1=PAD y1=H - PAD + 4.0 x2=W y2=H - PAD + 4.0 class="axis"/>
                <line x1=PAD - 4.0 y1="0" x2=PAD - 4.0 y2=H - PAD + 4.0 class="axis"/>
                <text x="2" y="14" class="tick">{label(y1)}</text>
                <text x="2" y=H - PAD class="tick">{label(y0)}</text>
                <text x=PAD y=H - 14.0 class="tick">{format!("{x_label} {}", label(x0))}</text>
                <text x=W y=H - 14.0 class="tick" text-anchor="end">{label(x1)}</text>
                <polyline points=line.clone() class="series" data-points=points.len()/>
                // A few points (a test-time-scaling curve) are marked one by one.
                {(points.len() <= 64).then(|| line.split(' ').filter(|p| !p.is_empty()).map(|p| {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    view! { <circle cx=x.to_string() cy=y.to_string() r="3" class="dot"/> }
                }).collect_view())}
            </svg>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_fill_the_plot_area() {
        let (line, x, y) = polyline(&[(1.0, 2.0), (3.0, 1.0)]);
        assert_eq!((x, y), ((1.0, 3.0), (1.0, 2.0)));
        assert_eq!(line, format!("{PAD:.1},8.0 552.0,{:.1}", H - PAD));
    }

    #[test]
    fn series_share_their_axes() {
        let a = [(0.0, 0.0), (1.0, 0.5)];
        let b = [(2.0, 1.0)];
        let (x, y) = bounds([&a[..], &b[..]]);
        assert_eq!((x, y), ((0.0, 2.0), (0.0, 1.0)));
        // b's one point is the top right corner of the shared plot area.
        assert_eq!(project(&b, x, y), "552.0,8.0");
        assert_eq!(bounds(std::iter::empty()), ((0.0, 1.0), (0.0, 1.0)));
    }
}
