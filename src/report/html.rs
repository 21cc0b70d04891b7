//! The `charts` part of the template context: inline SVG (marked safe: every text inside is
//! escaped by [`super::charts`]) and the plain data the HTML report shows beside them.

use minijinja::value::Value;

use super::charts::{self, Mark, Series, Style};
use super::timeline::TimelineIteration;
use super::{ReportView, RunData};

const PALETTE: [&str; 5] = [
    charts::BLUE,
    charts::PURPLE,
    charts::TEAL,
    charts::ORANGE,
    charts::OK,
];

/// The drift charts' rolling median: of the last this many samples at each point.
const ROLLING_MEDIAN_WINDOW: usize = 15;

/// Most transcripts listed in the report.
const TRANSCRIPTS: usize = 20;

/// Build `charts`: `distributions`, `drift` (lists of `{name, count, svg}`), `gantt`,
/// `gantt_note`, `resources` (list of `{title, svg}`), `resources_note`, `transcripts`
/// (`{t_s, user, iteration, scenario, text}`), `main_metric`.
pub fn charts(view: &ReportView, run: &RunData) -> Value {
    let names = view.metric_names();
    let mut distributions = Vec::new();
    for name in &names {
        let Some(h) = view.histogram(name) else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let values: Vec<(f64, u64)> = super::hist::values(&h)
            .into_iter()
            .map(|(v, c)| (v as f64 / 1000.0, c))
            .collect();
        let q = |p: f64| crate::stats::hist_ms(&h, p);
        let svg = charts::histogram(
            name,
            &values,
            &[
                Mark {
                    label: "p50",
                    value: q(0.5),
                    color: charts::BLUE,
                },
                Mark {
                    label: "p95",
                    value: q(0.95),
                    color: charts::ORANGE,
                },
                Mark {
                    label: "p99",
                    value: q(0.99),
                    color: charts::BAD,
                },
            ],
        );
        distributions.push(minijinja::context! {
            name => name,
            count => h.len(),
            svg => Value::from_safe_string(svg),
        });
    }

    let mut drift = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = run
            .iterations
            .iter()
            .flat_map(|it| it.samples.iter())
            .filter(|s| &s.metric == name)
            .map(|s| (s.at_us as f64 / 1e6, s.value_ms))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = pts.len();
        let color = PALETTE[i % PALETTE.len()];
        let median = crate::stats::rolling_median(&pts, ROLLING_MEDIAN_WINDOW);
        let series = [
            Series {
                name: format!("{name} (each sample)"),
                color,
                style: Style::Dots,
                points: charts::thin(&pts, charts::MAX_POINTS),
            },
            Series {
                name: "rolling median".into(),
                color: charts::INK,
                style: Style::Line,
                points: charts::thin(&median, charts::MAX_POINTS),
            },
        ];
        let svg = charts::xy(
            &format!("{name} over time"),
            "seconds since start",
            "milliseconds",
            view.elapsed_s,
            &series,
        );
        drift.push(minijinja::context! {
            name => name,
            count => count,
            thinned => count > charts::MAX_POINTS,
            svg => Value::from_safe_string(svg),
        });
    }

    let (gantt, gantt_note) = if run.iterations.is_empty() {
        (String::new(), None)
    } else {
        charts::gantt(&run.iterations, view.elapsed_s)
    };

    let mut resources = Vec::new();
    let mut resources_note = None;
    if let Some(r) = run.resources.as_ref().filter(|r| !r.samples.is_empty()) {
        let t_max = r
            .samples
            .iter()
            .map(|s| s.t_s)
            .fold(view.elapsed_s, f64::max);
        let mut cpu = vec![Series {
            name: "planrun".into(),
            color: charts::BLUE,
            style: Style::Line,
            points: r.samples.iter().map(|s| (s.t_s, s.cpu_pct)).collect(),
        }];
        let mut mem = vec![Series {
            name: "planrun".into(),
            color: charts::BLUE,
            style: Style::Line,
            points: r.samples.iter().map(|s| (s.t_s, s.rss_mb)).collect(),
        }];
        if let Some(pid) = r.target_pid {
            let label = format!("target (pid {pid})");
            cpu.push(Series {
                name: label.clone(),
                color: charts::ORANGE,
                style: Style::Line,
                points: r
                    .samples
                    .iter()
                    .filter_map(|s| Some((s.t_s, s.target_cpu_pct?)))
                    .collect(),
            });
            mem.push(Series {
                name: label,
                color: charts::ORANGE,
                style: Style::Line,
                points: r
                    .samples
                    .iter()
                    .filter_map(|s| Some((s.t_s, s.target_rss_mb?)))
                    .collect(),
            });
        }
        resources.push(minijinja::context! {
            title => "CPU",
            svg => Value::from_safe_string(charts::xy("CPU use", "seconds since start", "% of one core", t_max, &cpu)),
        });
        resources.push(minijinja::context! {
            title => "Memory",
            svg => Value::from_safe_string(charts::xy("Resident memory", "seconds since start", "MiB", t_max, &mem)),
        });
        let mut notes = vec![format!(
            "Sampled every {}s on a machine with {} logical CPUs; 100% is one full core.",
            charts::num(r.interval_s),
            r.cpus
        )];
        if r.agent_in_process {
            notes.push(
                "The target is the built-in agent, which runs inside planrun's own process: \
                 planrun's numbers include the agent's work."
                    .into(),
            );
        } else if r.target_pid.is_none() {
            notes.push("Pass --target-pid PID to chart the target process too.".into());
        }
        resources_note = Some(notes.join(" "));
    }

    let mut heard: Vec<(&TimelineIteration, &super::timeline::TimelineMarker)> = run
        .iterations
        .iter()
        .flat_map(|it| {
            it.markers
                .iter()
                .filter(|m| m.kind == "transcript")
                .map(move |m| (it, m))
        })
        .collect();
    heard.sort_by_key(|(_, m)| m.at_us);
    let transcripts: Vec<Value> = heard
        .into_iter()
        .take(TRANSCRIPTS)
        .map(|(it, m)| {
            minijinja::context! {
                t_s => (m.at_us as f64 / 1e3).round() / 1e3,
                user => it.user,
                iteration => it.iteration,
                scenario => it.scenario.clone(),
                text => m.detail.clone(),
            }
        })
        .collect();

    let main_metric = names
        .iter()
        .find(|n| {
            !matches!(n.as_str(), "connect" | "iteration")
                && view.metrics.get(*n).is_some_and(|m| m.count > 0)
        })
        .cloned();

    minijinja::context! {
        distributions => distributions,
        drift => drift,
        gantt => Value::from_safe_string(gantt),
        gantt_note => gantt_note,
        resources => resources,
        resources_note => resources_note,
        transcripts => transcripts,
        main_metric => main_metric,
    }
}
