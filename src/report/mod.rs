//! Reports: the JSON result is the contract ([`RunReport`]); Markdown and the console summary are
//! rendered from it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, value::Value};
use serde::Serialize;

use crate::engine::RunOutcome;
use crate::metrics::{IterationCounts, MetricStats};
use crate::plan::compile::CompiledPlan;
use crate::plan::model::ReportFormat;
use crate::thresholds::ThresholdResult;

/// How many failures are listed individually.
const FAILURE_SAMPLES: usize = 20;

/// Statistics of one metric; all fields but `count` are null when it got no samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricReport {
    pub count: u64,
    pub min_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl From<Option<MetricStats>> for MetricReport {
    fn from(s: Option<MetricStats>) -> Self {
        match s {
            Some(s) => MetricReport {
                count: s.count,
                min_ms: Some(s.min_ms),
                mean_ms: Some(s.mean_ms),
                p50_ms: Some(s.p50_ms),
                p90_ms: Some(s.p90_ms),
                p95_ms: Some(s.p95_ms),
                p99_ms: Some(s.p99_ms),
                max_ms: Some(s.max_ms),
            },
            None => MetricReport {
                count: 0,
                min_ms: None,
                mean_ms: None,
                p50_ms: None,
                p90_ms: None,
                p95_ms: None,
                p99_ms: None,
                max_ms: None,
            },
        }
    }
}

/// One failed iteration, for the report's failure list.
#[derive(Debug, Clone, Serialize)]
pub struct FailureSample {
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    pub class: &'static str,
    pub step: String,
    pub message: String,
}

/// The load generator's own health.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorHealth {
    pub send_lag_p50_ms: Option<f64>,
    pub send_lag_p99_ms: Option<f64>,
    pub send_lag_max_ms: Option<f64>,
}

/// The run's result: written as `metrics.json`, and the context of every template.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub plan: String,
    pub description: Option<String>,
    pub plan_file: String,
    pub passed: bool,
    /// The run was stopped before it finished (Ctrl-C).
    pub aborted: bool,
    pub target: String,
    pub started_at: String,
    pub elapsed_s: f64,
    pub users: u32,
    pub seed: u64,
    pub iterations: IterationCounts,
    pub aborted_iterations: u64,
    pub success_rate: Option<f64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub scenarios: BTreeMap<String, IterationCounts>,
    pub metrics: BTreeMap<String, MetricReport>,
    /// Metric names in plan order (JSON objects are unordered).
    pub metric_order: Vec<String>,
    pub thresholds: Vec<ThresholdResult>,
    pub failures: Vec<FailureSample>,
    pub generator: GeneratorHealth,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl RunReport {
    pub fn build(
        plan: &CompiledPlan,
        outcome: &RunOutcome,
        thresholds: Vec<ThresholdResult>,
    ) -> Self {
        let s = &outcome.summary;
        let order = s.metric_names();
        let metrics = order
            .iter()
            .map(|n| (n.clone(), MetricReport::from(s.stats(n))))
            .collect();
        let failures = s
            .recorder
            .iterations
            .iter()
            .filter_map(|r| {
                let f = r.failure.as_ref()?;
                Some(FailureSample {
                    user: r.user,
                    iteration: r.iteration,
                    scenario: r.scenario.clone(),
                    class: f.class.as_str(),
                    step: f.step.clone(),
                    message: f.message.replace(['\n', '\r'], " "),
                })
            })
            .filter(|f| f.class != "aborted")
            .take(FAILURE_SAMPLES)
            .collect();
        let lag = s.recorder.send_lag.as_ref().filter(|h| !h.is_empty());
        let lag_ms = |q: f64| lag.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        let iterations = s.iterations();
        let passed = crate::thresholds::all_passed(&thresholds) && !s.aborted;
        RunReport {
            plan: plan.name.clone(),
            description: plan.description.clone(),
            plan_file: plan.source.display().to_string(),
            passed,
            aborted: s.aborted,
            target: outcome.target.clone(),
            started_at: rfc3339(outcome.started_at),
            elapsed_s: (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            users: plan.load.users,
            seed: plan.load.seed,
            success_rate: iterations.success_rate(),
            iterations,
            aborted_iterations: s.aborted_iterations(),
            errors: s.errors(),
            scenarios: s.scenarios(),
            metrics,
            metric_order: order,
            thresholds,
            failures,
            generator: GeneratorHealth {
                send_lag_p50_ms: lag_ms(0.5),
                send_lag_p99_ms: lag_ms(0.99),
                send_lag_max_ms: lag.map(|h| h.max() as f64 / 1000.0),
            },
        }
    }
}

/// Built-in templates: (output file, template source).
const BUILTIN_TEMPLATES: &[(&str, &str)] =
    &[("summary.md", include_str!("templates/summary.md.j2"))];

/// Render a template with the report as its context.
pub fn render_template(name: &str, source: &str, report: &RunReport) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_template(name, source)
        .map_err(|e| format!("template {name}: {e}"))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| format!("template {name}: {e}"))?;
    tmpl.render(Value::from(minijinja::value::Serde(report)))
        .map_err(|e| format!("template {name}: {e}"))
}

/// The default report folder: `<dir>/<plan name>-<UTC timestamp>/`.
pub fn default_out_dir(plan: &CompiledPlan, started: std::time::SystemTime) -> PathBuf {
    let t = time::OffsetDateTime::from(started);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let safe: String = plan
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = plan.report.dir.clone().unwrap_or_else(|| "reports".into());
    Path::new(&dir).join(format!("{safe}-{stamp}"))
}

/// Write the report files; returns the paths written.
pub fn write(
    report: &RunReport,
    formats: &[ReportFormat],
    out: &Path,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, body: String| -> Result<(), String> {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    if formats.contains(&ReportFormat::Json) {
        let json =
            serde_json::to_string_pretty(report).map_err(|e| format!("metrics.json: {e}"))?;
        put("metrics.json", json + "\n")?;
    }
    if formats.contains(&ReportFormat::Md) {
        for (name, source) in BUILTIN_TEMPLATES {
            put(name, render_template(name, source, report)?)?;
        }
    }
    Ok(written)
}

/// The console summary (plain text; no colour so it reads the same in CI logs).
pub fn console_summary(report: &RunReport, w: &mut dyn Write) -> std::io::Result<()> {
    let it = &report.iterations;
    writeln!(w)?;
    writeln!(
        w,
        "planrun {} — {} users against {} in {:.1}s",
        report.plan, report.users, report.target, report.elapsed_s
    )?;
    let rate = report
        .success_rate
        .map_or("n/a".to_string(), |r| format!("{:.1}%", r * 100.0));
    writeln!(
        w,
        "iterations: {} total, {} succeeded, {} failed (success {rate}){}",
        it.total,
        it.succeeded,
        it.failed,
        if report.aborted_iterations > 0 {
            format!(", {} stopped", report.aborted_iterations)
        } else {
            String::new()
        }
    )?;
    if !report.errors.is_empty() {
        let parts: Vec<String> = report
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(w, "failures: {}", parts.join(", "))?;
        if let Some(f) = report.failures.first() {
            writeln!(
                w,
                "  first: user {} iteration {} `{}` {}: {}",
                f.user, f.iteration, f.scenario, f.step, f.message
            )?;
        }
    }
    writeln!(w)?;
    let width = report
        .metric_order
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        w,
        "{:width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "metric", "count", "min", "mean", "median", "p95", "p99", "max"
    )?;
    for name in &report.metric_order {
        let Some(m) = report.metrics.get(name) else {
            continue;
        };
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        writeln!(
            w,
            "{name:width$}  {:>6}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            m.count,
            f(m.min_ms),
            f(m.mean_ms),
            f(m.p50_ms),
            f(m.p95_ms),
            f(m.p99_ms),
            f(m.max_ms)
        )?;
    }
    writeln!(w, "(milliseconds)")?;
    if !report.thresholds.is_empty() {
        writeln!(w)?;
        writeln!(w, "thresholds:")?;
        for t in &report.thresholds {
            writeln!(
                w,
                "  {} {} {}  (observed {})",
                if t.passed { "PASS" } else { "FAIL" },
                t.metric,
                t.expression,
                t.observed_text
            )?;
        }
    }
    writeln!(w)?;
    let failed: Vec<String> = report
        .thresholds
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{} {}", t.metric, t.expression))
        .collect();
    if report.aborted {
        writeln!(w, "STOPPED before the end: results are partial")?;
    } else if failed.is_empty() {
        writeln!(w, "PASSED: all {} thresholds met", report.thresholds.len())?;
    } else {
        writeln!(
            w,
            "FAILED: {} of {} thresholds not met: {}",
            failed.len(),
            report.thresholds.len(),
            failed.join("; ")
        )?;
    }
    Ok(())
}
