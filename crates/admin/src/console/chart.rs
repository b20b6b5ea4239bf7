//! Bar charts as inline SVG, drawn on the server: presentation attributes
//! only (no `style`), so the CSP's `style-src 'self'` holds, and no script.
//! A hand-written renderer rather than a plotting crate: bars, an axis and
//! labels are all the console draws, and this keeps its markup testable and
//! its dependency tree small.

use maud::{html, Markup};

/// The chart's drawing box, in SVG units; it scales to the page's width.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// One bar: its label under the axis, its value, and an optional part of it
/// drawn over it in the second colour (errors among requests).
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub part: Option<f64>,
}

/// A bar chart of `bars` with the largest value on the axis written by
/// `fmt`; `id` names the chart for tests and links.
pub fn bars(id: &str, title: &str, bars: &[Bar], fmt: fn(f64) -> String) -> Markup {
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = plot_w / bars.len().max(1) as f64;
    let gap = (slot * 0.15).min(6.0);
    // Label at most ~12 bars, so the labels never overlap.
    let every = bars.len().div_ceil(12).max(1);
    let scale = |v: f64| if max > 0.0 { plot_h * v / max } else { 0.0 };
    html! {
        figure.chart id=(id) {
            figcaption { (title) }
            svg viewBox={"0 0 " (WIDTH) " " (HEIGHT)} width="100%" role="img" aria-label=(title) {
                line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH) y2=(TOP + plot_h) stroke="#8c959f" stroke-width="1" {}
                text x=(LEFT - 6.0) y=(TOP + 10.0) text-anchor="end" font-size="11" fill="#5b6673" { (fmt(max)) }
                text x=(LEFT - 6.0) y=(TOP + plot_h) text-anchor="end" font-size="11" fill="#5b6673" { "0" }
                @for (i, b) in bars.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + gap / 2.0;
                    @let w = (slot - gap).max(1.0);
                    @let h = scale(b.value);
                    rect.bar x=(fmt2(x)) y=(fmt2(TOP + plot_h - h)) width=(fmt2(w)) height=(fmt2(h)) fill="#0b5cad" data-value=(b.value) {
                        title { (b.label) ": " (fmt(b.value)) }
                    }
                    @if let Some(part) = b.part.filter(|p| *p > 0.0) {
                        @let ph = scale(part);
                        rect.part x=(fmt2(x)) y=(fmt2(TOP + plot_h - ph)) width=(fmt2(w)) height=(fmt2(ph)) fill="#b42318" data-value=(part) {
                            title { (b.label) ": " (fmt(part)) " errors" }
                        }
                    }
                    @if i % every == 0 {
                        text x=(fmt2(x + w / 2.0)) y=(HEIGHT - 6.0) text-anchor="middle" font-size="11" fill="#5b6673" { (b.label) }
                    }
                }
            }
        }
    }
}

fn fmt2(v: f64) -> String {
    format!("{v:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(value: f64, part: Option<f64>) -> Bar {
        Bar {
            label: "l".to_owned(),
            value,
            part,
        }
    }

    #[test]
    fn bars_scale_to_the_largest_and_hold_no_style_or_script() {
        let svg = bars(
            "c",
            "t",
            &[bar(0.0, None), bar(5.0, Some(1.0)), bar(10.0, None)],
            |v| format!("{v}"),
        )
        .into_string();
        assert!(!svg.contains("style") && !svg.contains("script"), "{svg}");
        assert_eq!(svg.matches("class=\"bar\"").count(), 3);
        assert_eq!(svg.matches("class=\"part\"").count(), 1);
        let plot_h = HEIGHT - BOTTOM - TOP;
        assert!(svg.contains(&format!("height=\"{:.2}\"", plot_h)), "{svg}");
        assert!(
            svg.contains(&format!("height=\"{:.2}\"", plot_h / 2.0)),
            "{svg}"
        );
    }

    #[test]
    fn an_empty_or_all_zero_chart_draws_no_height() {
        for data in [vec![], vec![bar(0.0, None)]] {
            let svg = bars("c", "t", &data, |v| format!("{v}")).into_string();
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }
}
