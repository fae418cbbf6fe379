//! A picture of a migration: a self-contained SVG with one line chart per
//! series (lag, applied changes/s, backlog over time) under the counts.
//! Pure: the caller reads the series and formats the times.

use std::fmt::Write as _;

/// One chart: a title, the unit of its values, and `(time ms, value)`
/// points in time order.
#[derive(Clone, Debug)]
pub struct Panel<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    pub points: &'a [(i64, f64)],
}

/// What the picture shows: a title, the counts as `(label, value)` lines,
/// the panels, and the time span with its two labels.
#[derive(Clone, Debug)]
pub struct Picture<'a> {
    pub title: &'a str,
    pub facts: &'a [(&'a str, String)],
    pub panels: &'a [Panel<'a>],
    pub from_ms: i64,
    pub to_ms: i64,
    pub from_label: &'a str,
    pub to_label: &'a str,
}

const WIDTH: f64 = 900.0;
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 20.0;
const PANEL_HEIGHT: f64 = 170.0;
const PLOT_HEIGHT: f64 = 120.0;
const FACT_LINE: f64 = 18.0;
/// At most this many points per line (the maximum of each bucket is kept,
/// so a spike never disappears).
pub const MAX_POINTS: usize = 600;

/// Escapes text for XML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `points` reduced to at most `max` by keeping each bucket's maximum.
pub fn downsample(points: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .filter_map(|c| {
            c.iter()
                .copied()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(_, v)| (c[0].0, v))
        })
        .collect()
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The SVG document.
pub fn svg(p: &Picture<'_>) -> String {
    let facts_h = 50.0 + FACT_LINE * p.facts.len() as f64;
    let height = facts_h + PANEL_HEIGHT * p.panels.len() as f64 + 10.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"20\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{}</text>\n",
        esc(p.title)
    );
    for (i, (label, value)) in p.facts.iter().enumerate() {
        let y = 52.0 + FACT_LINE * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"20\" y=\"{y}\"><tspan font-weight=\"bold\">{}</tspan>: {}</text>",
            esc(label),
            esc(value)
        );
    }
    let span = (p.to_ms - p.from_ms).max(1) as f64;
    let plot_w = WIDTH - PLOT_LEFT - PLOT_RIGHT;
    for (i, panel) in p.panels.iter().enumerate() {
        let top = facts_h + PANEL_HEIGHT * i as f64;
        let (y0, y1) = (top + 24.0, top + 24.0 + PLOT_HEIGHT);
        let _ = writeln!(
            out,
            "<text x=\"{PLOT_LEFT}\" y=\"{}\" font-weight=\"bold\">{} ({})</text>\n\
             <rect x=\"{PLOT_LEFT}\" y=\"{y0}\" width=\"{plot_w}\" height=\"{PLOT_HEIGHT}\" fill=\"none\" stroke=\"#bbb\"/>\n\
             <text x=\"{PLOT_LEFT}\" y=\"{}\" fill=\"#555\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" fill=\"#555\" text-anchor=\"end\">{}</text>",
            top + 16.0,
            esc(panel.title),
            esc(panel.unit),
            y1 + 14.0,
            esc(p.from_label),
            WIDTH - PLOT_RIGHT,
            y1 + 14.0,
            esc(p.to_label),
        );
        let points = downsample(panel.points, MAX_POINTS);
        if points.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" fill=\"#888\" text-anchor=\"middle\">no datapoints</text>",
                PLOT_LEFT + plot_w / 2.0,
                (y0 + y1) / 2.0
            );
            continue;
        }
        let max = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
        let top_value = if max > 0.0 { max } else { 1.0 };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" fill=\"#555\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{}\" y=\"{y1}\" fill=\"#555\" text-anchor=\"end\">0</text>",
            PLOT_LEFT - 6.0,
            y0 + 10.0,
            number(max),
            PLOT_LEFT - 6.0,
        );
        let coords: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                let x = PLOT_LEFT + plot_w * ((t - p.from_ms) as f64 / span).clamp(0.0, 1.0);
                let y = y1 - PLOT_HEIGHT * (v.max(0.0) / top_value).min(1.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
            coords.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture<'a>(panels: &'a [Panel<'a>], facts: &'a [(&'a str, String)]) -> Picture<'a> {
        Picture {
            title: "migration <m1>",
            facts,
            panels,
            from_ms: 0,
            to_ms: 600_000,
            from_label: "start",
            to_label: "end",
        }
    }

    #[test]
    fn every_panel_is_drawn_and_text_is_escaped() {
        let lag = [(0, 1.0), (60_000, 3.5), (120_000, 0.0)];
        let panels = [
            Panel {
                title: "lag",
                unit: "s",
                points: &lag,
            },
            Panel {
                title: "backlog",
                unit: "messages",
                points: &[],
            },
        ];
        let facts = [("source", "a & b".to_string())];
        let s = svg(&picture(&panels, &facts));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("migration &lt;m1&gt;") && s.contains("a &amp; b"));
        assert_eq!(s.matches("<polyline").count(), 1);
        assert!(s.contains("no datapoints"));
        assert!(s.contains(">3.50<"), "the maximum labels the axis");
    }

    #[test]
    fn downsampling_keeps_every_spike() {
        let mut points: Vec<(i64, f64)> = (0..10_000).map(|i| (i * 1000, 1.0)).collect();
        points[7_777].1 = 99.0;
        let d = downsample(&points, MAX_POINTS);
        assert!(d.len() <= MAX_POINTS);
        assert!(d.iter().any(|(_, v)| *v == 99.0));
        assert_eq!(downsample(&points[..5], MAX_POINTS).len(), 5);
    }
}
