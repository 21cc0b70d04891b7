//! User-count sweeps: how each metric's percentiles and the success rate grow with users.

use std::fmt::Write as _;

use super::ReportView;
use super::charts::{self, Series, Style, esc};

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

fn metric_names(runs: &[(u32, ReportView)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, r) in runs {
        for n in r.metric_names() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

fn rate(r: &ReportView) -> String {
    r.success_rate
        .map_or("–".into(), |r| format!("{:.2}%", r * 100.0))
}

/// `sweep.md`.
pub fn markdown(plan: &str, runs: &[(u32, ReportView)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# planrun sweep: {plan}\n");
    let _ = writeln!(
        s,
        "| Users | Verdict | Iterations | Success rate | Report |"
    );
    let _ = writeln!(s, "|--:|---|--:|--:|---|");
    for (n, r) in runs {
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | [report_{n}_users.html](report_{n}_users.html) |",
            if r.aborted {
                "STOPPED"
            } else if r.inconclusive {
                "⚠️ INCONCLUSIVE"
            } else if r.passed {
                "✅ PASSED"
            } else {
                "❌ FAILED"
            },
            r.iterations.total,
            rate(r)
        );
    }
    for name in metric_names(runs) {
        let _ = writeln!(s, "\n## `{name}` (ms)\n");
        let _ = writeln!(s, "| Users | Count | p50 | p95 | p99 |");
        let _ = writeln!(s, "|--:|--:|--:|--:|--:|");
        for (n, r) in runs {
            let m = r.metrics.get(&name).cloned().unwrap_or_default();
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {} | {} |",
                m.count,
                ms(m.p50_ms),
                ms(m.p95_ms),
                ms(m.p99_ms)
            );
        }
    }
    s
}

/// `index.html`: links to each count's report and a chart per metric of p50/p95/p99 vs users.
pub fn index_html(plan: &str, runs: &[(u32, ReportView)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>planrun sweep · {p}</title><style>
body{{margin:0;background:#f5f7fa;color:#1f2933;font:14px/1.5 Inter,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}}
main{{max-width:1220px;margin:0 auto;padding:28px}} h1{{font-size:24px;margin:0 0 16px}} h2{{font-size:17px;margin:28px 0 10px}}
table{{width:100%;border-collapse:collapse;background:#fff;border:1px solid #e4e7eb}} th,td{{padding:7px 12px;border-bottom:1px solid #e4e7eb;text-align:left}}
th{{font-size:12px;text-transform:uppercase;color:#616e7c;background:#fafbfc}} .grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}}
.card{{background:#fff;border:1px solid #e4e7eb;border-radius:10px;padding:12px 14px}} .ok{{color:#2f9e44;font-weight:700}} .bad{{color:#e03131;font-weight:700}}
</style></head><body><main><h1>Sweep: {p}</h1><table><tr><th>Users</th><th>Verdict</th><th>Iterations</th><th>Success rate</th><th>Report</th></tr>"#,
        p = esc(plan)
    );
    for (n, r) in runs {
        let _ = write!(
            s,
            r#"<tr><td>{n}</td><td class="{}">{}</td><td>{}</td><td>{}</td><td><a href="report_{n}_users.html">report_{n}_users.html</a></td></tr>"#,
            if r.passed { "ok" } else { "bad" },
            if r.aborted {
                "STOPPED"
            } else if r.inconclusive {
                "INCONCLUSIVE"
            } else if r.passed {
                "PASSED"
            } else {
                "FAILED"
            },
            r.iterations.total,
            rate(r)
        );
    }
    s.push_str("</table><h2>How latency grows with users</h2><div class=\"grid\">");
    let max_users = runs.iter().map(|r| r.0).max().unwrap_or(1) as f64;
    for name in metric_names(runs) {
        let line = |label: &str, color, f: fn(&super::MetricReport) -> Option<f64>| Series {
            name: label.to_string(),
            color,
            style: Style::Line,
            points: runs
                .iter()
                .filter_map(|(n, r)| Some((*n as f64, f(r.metrics.get(&name)?)?)))
                .collect(),
        };
        let series = [
            line("p50", charts::BLUE, |m| m.p50_ms),
            line("p95", charts::ORANGE, |m| m.p95_ms),
            line("p99", charts::BAD, |m| m.p99_ms),
        ];
        let svg = charts::xy(
            &format!("{name} by user count"),
            "virtual users",
            "milliseconds",
            max_users,
            &series,
        );
        let _ = write!(s, "<div class=\"card\"><h3>{}</h3>{svg}</div>", esc(&name));
    }
    s.push_str("</div></main></body></html>\n");
    s
}
