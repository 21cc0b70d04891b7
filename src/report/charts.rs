//! Small hand-written SVG charts (inline in `report.html`): histograms with percentile marks,
//! XY scatter/line charts and the Gantt timeline of sessions. Every text is escaped here.

use std::fmt::Write as _;

use super::timeline::TimelineIteration;

pub const INK: &str = "#1f2933";
pub const MUTED: &str = "#616e7c";
pub const GRID: &str = "#e4e7eb";
pub const AXIS: &str = "#9aa5b1";
pub const OK: &str = "#2f9e44";
pub const BAD: &str = "#e03131";
pub const BLUE: &str = "#1c7ed6";
pub const ORANGE: &str = "#e8590c";
pub const PURPLE: &str = "#7048e8";
pub const TEAL: &str = "#0c8599";
pub const BAR: &str = "#91a7c9";

/// Most bars the Gantt chart draws; bigger runs are sampled.
pub const MAX_BARS: usize = 2000;
/// Most points per series; bigger series are thinned evenly.
pub const MAX_POINTS: usize = 2000;
/// Most rows of the Gantt chart; with more users, several share a row.
const MAX_ROWS: usize = 200;

/// Escape text for SVG/HTML content and attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Round numbers for axis ticks: about `target` ticks covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut t = start;
    while t <= end + step * 0.5 && ticks.len() < 50 {
        ticks.push(t);
        t += step;
    }
    (start, end, ticks)
}

/// A number for a label: no trailing zeros.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The plotting area of a chart and its scales.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let span = (self.x1 - self.x0).max(f64::EPSILON);
        self.left + (x - self.x0) / span * (self.w - self.left - self.right)
    }
    fn py(&self, y: f64) -> f64 {
        let span = (self.y1 - self.y0).max(f64::EPSILON);
        self.h - self.bottom - (y - self.y0) / span * (self.h - self.top - self.bottom)
    }
    fn open(&self, out: &mut String, label: &str) {
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{label}" font-family="Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif" font-size="11" fill="{INK}"><title>{label}</title>"#,
            w = self.w,
            h = self.h,
            label = esc(label)
        );
    }
    /// Grid, ticks and axis labels.
    fn axes(&self, out: &mut String, xt: &[f64], yt: &[f64], x_label: &str, y_label: &str) {
        let (l, r) = (self.left, self.w - self.right);
        let (t, b) = (self.top, self.h - self.bottom);
        for &y in yt {
            let py = self.py(y);
            let _ = write!(
                out,
                r#"<line x1="{l}" x2="{r}" y1="{py:.1}" y2="{py:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{MUTED}">{}</text>"#,
                l - 6.0,
                py + 3.5,
                num(y)
            );
        }
        for &x in xt {
            let px = self.px(x);
            let _ = write!(
                out,
                r#"<line x1="{px:.1}" x2="{px:.1}" y1="{b}" y2="{:.1}" stroke="{AXIS}"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">{}</text>"#,
                b + 4.0,
                b + 16.0,
                num(x)
            );
        }
        let _ = write!(
            out,
            r#"<line x1="{l}" x2="{r}" y1="{b}" y2="{b}" stroke="{AXIS}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" fill="{MUTED}">{}</text>"#,
            (l + r) / 2.0,
            b + 32.0,
            esc(x_label),
            (t + b) / 2.0,
            esc(y_label)
        );
    }
}

/// Percentile marks drawn over a distribution.
pub struct Mark<'a> {
    pub label: &'a str,
    pub value: f64,
    pub color: &'a str,
}

/// A histogram of `(value, count)` pairs (values in ms) with vertical percentile marks.
pub fn histogram(title: &str, values: &[(f64, u64)], marks: &[Mark]) -> String {
    let mut out = String::new();
    let lo = values.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
    let hi = values.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return out;
    }
    let (x0, x1, xt) = nice_ticks(lo, hi.max(lo + 1.0), 6);
    let bins = 40usize;
    let width = (x1 - x0) / bins as f64;
    let mut counts = vec![0u64; bins];
    for &(v, c) in values {
        let i = (((v - x0) / width) as usize).min(bins - 1);
        counts[i] += c;
    }
    let maxc = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (_, y1, yt) = if maxc <= 4.0 {
        (0.0, maxc, (0..=maxc as u32).map(f64::from).collect())
    } else {
        nice_ticks(0.0, maxc, 4)
    };
    let f = Frame {
        w: 560.0,
        h: 240.0,
        left: 48.0,
        right: 16.0,
        top: 28.0,
        bottom: 44.0,
        x0,
        x1,
        y0: 0.0,
        y1,
    };
    f.open(&mut out, &format!("{title}: distribution"));
    f.axes(&mut out, &xt, &yt, "milliseconds", "samples");
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let a = f.px(x0 + i as f64 * width);
        let b = f.px(x0 + (i + 1) as f64 * width);
        let top = f.py(c as f64);
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{BAR}" rx="1"><title>{}–{} ms: {c}</title></rect>"#,
            a + 0.5,
            (b - a - 1.0).max(0.8),
            f.py(0.0) - top,
            num(x0 + i as f64 * width),
            num(x0 + (i + 1) as f64 * width)
        );
    }
    let mut lx = f.left;
    for m in marks {
        let px = f.px(m.value);
        let text = format!("{} {} ms", m.label, num(m.value));
        let _ = write!(
            out,
            r#"<line x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1.6" stroke-dasharray="4 3"/><rect x="{lx:.1}" y="8" width="10" height="3" fill="{c}"/><text x="{:.1}" y="14" fill="{c}" font-weight="600">{}</text>"#,
            f.top,
            f.py(0.0),
            lx + 14.0,
            esc(&text),
            c = m.color
        );
        lx += 24.0 + 6.4 * text.chars().count() as f64;
    }
    out.push_str("</svg>");
    out
}

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    Dots,
    Line,
}

/// One series of an XY chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// Keep at most `max` points, evenly spread.
pub fn thin<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    if items.len() <= max {
        return items.to_vec();
    }
    let step = items.len() as f64 / max as f64;
    (0..max)
        .map(|i| items[((i as f64 * step) as usize).min(items.len() - 1)].clone())
        .collect()
}

/// An XY chart of several series sharing axes (x from 0).
pub fn xy(title: &str, x_label: &str, y_label: &str, x_max: f64, series: &[Series]) -> String {
    let mut out = String::new();
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (_, x1, xt) = nice_ticks(0.0, x_max.max(0.001), 8);
    let (_, y1, yt) = nice_ticks(0.0, (ymax * 1.05).max(0.001), 5);
    let f = Frame {
        w: 560.0,
        h: 240.0,
        left: 52.0,
        right: 16.0,
        top: 30.0,
        bottom: 44.0,
        x0: 0.0,
        x1,
        y0: 0.0,
        y1,
    };
    f.open(&mut out, title);
    f.axes(&mut out, &xt, &yt, x_label, y_label);
    let mut lx = f.left;
    for s in series {
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="8" width="10" height="10" rx="2" fill="{c}"/><text x="{:.1}" y="17" fill="{INK}">{}</text>"#,
            lx + 14.0,
            esc(&s.name),
            c = s.color
        );
        lx += 24.0 + 6.5 * s.name.chars().count() as f64;
        match s.style {
            Style::Dots => {
                for &(x, y) in &s.points {
                    let _ = write!(
                        out,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{c}" fill-opacity="0.55"/>"#,
                        f.px(x),
                        f.py(y),
                        c = s.color
                    );
                }
            }
            Style::Line => {
                let pts: Vec<String> = s
                    .points
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" stroke-linejoin="round"/>"#,
                    pts.join(" "),
                    c = s.color
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The Gantt chart: returns the SVG and a note when the chart is sampled or rows are shared.
pub fn gantt(iterations: &[TimelineIteration], elapsed_s: f64) -> (String, Option<String>) {
    let mut notes = Vec::new();
    let shown: Vec<&TimelineIteration> = if iterations.len() > MAX_BARS {
        let failed: Vec<&TimelineIteration> = iterations
            .iter()
            .filter(|i| i.failure.is_some())
            .take(MAX_BARS / 4)
            .collect();
        let ok: Vec<&TimelineIteration> =
            iterations.iter().filter(|i| i.failure.is_none()).collect();
        let mut v = thin(&ok, MAX_BARS - failed.len());
        v.extend(failed);
        notes.push(format!(
            "{} of {} iterations drawn (successes sampled evenly, failures first)",
            v.len(),
            iterations.len()
        ));
        v
    } else {
        iterations.iter().collect()
    };
    let users = iterations
        .iter()
        .map(|i| i.user)
        .max()
        .map_or(1, |u| u as usize + 1);
    let rows = users.min(MAX_ROWS);
    if rows < users {
        notes.push(format!(
            "{users} users on {rows} rows: each row holds about {} users",
            users.div_ceil(rows)
        ));
    }
    let row_of = |u: u32| (u as usize * rows / users).min(rows - 1);
    let row_h = (520.0 / rows as f64).clamp(3.0, 26.0);
    let plot_h = row_h * rows as f64;
    let end_s = iterations
        .iter()
        .map(|i| i.end_us as f64 / 1e6)
        .fold(elapsed_s, f64::max);
    let (_, x1, xt) = nice_ticks(0.0, end_s.max(0.001), 10);
    let f = Frame {
        w: 1160.0,
        h: plot_h + 30.0 + 50.0,
        left: 56.0,
        right: 16.0,
        top: 30.0,
        bottom: 50.0,
        x0: 0.0,
        x1,
        y0: 0.0,
        y1: rows as f64,
    };
    let mut out = String::new();
    f.open(&mut out, "Sessions over time: one bar per user iteration");
    // Row bands and labels.
    let label_every = (rows as f64 / 25.0).ceil().max(1.0) as usize;
    for r in 0..rows {
        let y = f.top + r as f64 * row_h;
        if r % 2 == 1 {
            let _ = write!(
                out,
                r##"<rect x="{}" y="{y:.1}" width="{:.1}" height="{row_h:.1}" fill="#f5f7fa"/>"##,
                f.left,
                f.w - f.left - f.right
            );
        }
        if r % label_every == 0 {
            let first = (r * users).div_ceil(rows);
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{MUTED}">u{first}</text>"#,
                f.left - 6.0,
                y + row_h / 2.0 + 3.5
            );
        }
    }
    for &x in &xt {
        let px = f.px(x);
        let _ = write!(
            out,
            r#"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{:.1}" stroke="{GRID}"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">{}</text>"#,
            f.top,
            f.top + plot_h + 4.0,
            f.top + plot_h + 16.0,
            num(x)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">seconds since start</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" fill="{MUTED}">virtual user</text>"#,
        (f.left + f.w - f.right) / 2.0,
        f.top + plot_h + 34.0,
        f.top + plot_h / 2.0
    );
    let draw_markers = shown.len() <= MAX_BARS && row_h >= 6.0;
    if !draw_markers {
        notes.push("markers hidden: too many rows to draw them legibly".to_string());
    }
    let pad = if row_h >= 8.0 { 2.0 } else { 0.5 };
    for it in &shown {
        let y = f.top + row_of(it.user) as f64 * row_h + pad;
        let h = row_h - 2.0 * pad;
        let a = f.px(it.start_us as f64 / 1e6);
        let b = f.px(it.end_us as f64 / 1e6);
        let (color, outcome) = match &it.failure {
            None => (OK, "ok".to_string()),
            Some(fl) if fl.class == "aborted" => (AXIS, "aborted".to_string()),
            Some(fl) => (BAD, format!("{}: {}", fl.class, fl.message)),
        };
        let tip = format!(
            "user {} · iteration {} · {} · {:.2}s → {:.2}s · {}",
            it.user,
            it.iteration,
            it.scenario,
            it.start_us as f64 / 1e6,
            it.end_us as f64 / 1e6,
            outcome
        );
        let _ = write!(
            out,
            r##"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" rx="{}" fill="{color}" fill-opacity="0.8" stroke="#fff" stroke-width="{}"><title>{}</title></rect>"##,
            (b - a).max(1.0),
            if h >= 6.0 { 3 } else { 0 },
            if h >= 6.0 { 1.0 } else { 0.0 },
            esc(&tip)
        );
        if draw_markers {
            for m in &it.markers {
                let x = f.px(m.at_us as f64 / 1e6);
                let shape = match m.kind.as_str() {
                    "speech_end" => format!(
                        r#"<rect x="{:.1}" y="{y:.1}" width="2" height="{h:.1}" fill="{INK}">"#,
                        x - 1.0
                    ),
                    "first_audio" => format!(
                        r##"<circle cx="{x:.1}" cy="{:.1}" r="{:.1}" fill="{BLUE}" stroke="#fff" stroke-width="0.8">"##,
                        y + h / 2.0,
                        (h / 2.6).clamp(1.5, 4.0)
                    ),
                    "interrupted" | "interrupt" => {
                        let s = (h / 2.2).clamp(2.0, 5.0);
                        let cy = y + h / 2.0;
                        format!(
                            r##"<path d="M{:.1} {:.1}L{:.1} {cy:.1}L{:.1} {:.1}Z" fill="{ORANGE}" stroke="#fff" stroke-width="0.6">"##,
                            x - s,
                            cy - s,
                            x + s,
                            x - s,
                            cy + s
                        )
                    }
                    _ => continue,
                };
                let end = if shape.starts_with("<rect") {
                    "</rect>"
                } else if shape.starts_with("<circle") {
                    "</circle>"
                } else {
                    "</path>"
                };
                let tip = if m.detail.is_empty() {
                    format!("{} at {:.3}s", m.kind, m.at_us as f64 / 1e6)
                } else {
                    format!("{} at {:.3}s: {}", m.kind, m.at_us as f64 / 1e6, m.detail)
                };
                let _ = write!(out, "{shape}<title>{}</title>{end}", esc(&tip));
            }
        }
    }
    out.push_str("</svg>");
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    (out, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let (lo, hi, t) = nice_ticks(0.0, 9.3, 5);
        assert_eq!((lo, hi), (0.0, 10.0));
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(num(2.50), "2.5");
        assert_eq!(num(1200.0), "1200");
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}

#[cfg(test)]
mod gantt_tests {
    use super::*;
    use crate::report::timeline::{TimelineFailure, TimelineIteration};

    #[test]
    fn big_runs_are_sampled_and_say_so() {
        let its: Vec<TimelineIteration> = (0..5000u64)
            .map(|i| TimelineIteration {
                user: (i % 500) as u32,
                iteration: i / 500,
                scenario: "s".into(),
                start_us: i * 1000,
                end_us: i * 1000 + 50_000,
                failure: (i % 100 == 0).then(|| TimelineFailure {
                    class: "timeout".into(),
                    step: String::new(),
                    message: "<x>".into(),
                }),
                markers: vec![],
                samples: vec![],
            })
            .collect();
        let (svg, note) = gantt(&its, 6.0);
        let bars = svg.matches("<rect x=").count();
        assert!(bars <= MAX_BARS + MAX_ROWS, "{bars} rects");
        let note = note.unwrap();
        assert!(note.contains("of 5000 iterations drawn"), "{note}");
        assert!(note.contains("500 users on 200 rows"), "{note}");
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
    }
}
