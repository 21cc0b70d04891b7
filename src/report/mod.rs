//! Reports: the JSON result is the contract ([`RunReport`], `metrics.json`); with the timeline
//! and resource samples (`run.json`, [`RunData`]) it is the context every other output is
//! rendered from — Markdown and HTML templates, `timeline.csv`, `junit.xml` — at the end of a
//! run or later by `planrun report`.

pub mod arrivals;
pub mod charts;
pub mod compare;
pub mod hist;
mod html;
pub mod junit;
pub mod merge;
pub mod sweep;
pub mod timeline;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, value::Value};
use serde::{Deserialize, Serialize};

pub use timeline::RunData;

use crate::engine::RunOutcome;
use crate::judge::thresholds::ThresholdResult;
use crate::metrics::{IterationCounts, MetricStats};
use crate::plan::compile::CompiledPlan;
use crate::plan::model::{ProtocolKind, ReportFormat};

/// How many failures are listed individually.
const FAILURE_SAMPLES: usize = 20;

/// Statistics of one metric; all fields but `count` are null when it got no samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureSample {
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    pub class: String,
    pub step: String,
    pub message: String,
}

/// The load generator's own health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorHealth {
    pub send_lag_p50_ms: Option<f64>,
    pub send_lag_p99_ms: Option<f64>,
    pub send_lag_max_ms: Option<f64>,
    /// Highest CPU use of the planrun process (percent of one core), when sampled.
    pub cpu_max_pct: Option<f64>,
    /// Highest resident memory of the planrun process (MiB), when sampled.
    pub rss_max_mb: Option<f64>,
    /// How late a 10 ms timer of planrun's runtime woke up (see `crate::health`).
    pub event_loop_delay_p50_ms: Option<f64>,
    pub event_loop_delay_p99_ms: Option<f64>,
    pub event_loop_delay_max_ms: Option<f64>,
    /// How late the frame carrying the end of each utterance left against its schedule.
    pub speech_end_lag_p50_ms: Option<f64>,
    pub speech_end_lag_p99_ms: Option<f64>,
    pub speech_end_lag_max_ms: Option<f64>,
    /// Latencies measured from the end of speech, taken again from its actual end (scheduled
    /// end + speech-end lag), by metric. Never judged by thresholds.
    pub from_actual_end: BTreeMap<String, crate::health::ActualEndStats>,
    /// The limit the pacing lag and event-loop delay p99 were judged against (ms).
    pub lag_limit_ms: Option<f64>,
    /// Why planrun itself was the bottleneck of this run (empty: it was not).
    pub warnings: Vec<String>,
}

/// Where the run happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunEnvironment {
    pub planrun_version: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
}

impl RunEnvironment {
    pub fn current() -> Self {
        RunEnvironment {
            planrun_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            os: sysinfo::System::long_os_version()
                .unwrap_or_else(|| std::env::consts::OS.to_string()),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The run's result: written as `metrics.json`, and the context of every template. Read back
/// leniently (missing fields take defaults) for re-rendering and comparing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    pub plan: String,
    pub description: Option<String>,
    pub plan_file: String,
    pub passed: bool,
    /// The run was stopped before it finished (Ctrl-C/SIGTERM, `--max-duration`, a threshold
    /// with `abort_on_fail`).
    pub aborted: bool,
    /// What stopped it early: `signal`, `max_duration` or `threshold` (null: ran to its end).
    pub stopped_by: Option<String>,
    /// Why, in words (e.g. `threshold ttfa p95 < 800ms failed (observed 1203.0ms)`).
    pub stop_reason: Option<String>,
    /// Rebuilt from a partial `timeline.csv` (the run never wrote its metrics.json).
    pub partial: bool,
    pub target: String,
    pub started_at: String,
    pub elapsed_s: f64,
    pub users: u32,
    pub seed: u64,
    pub iterations: IterationCounts,
    pub aborted_iterations: u64,
    pub success_rate: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub scenarios: BTreeMap<String, IterationCounts>,
    pub metrics: BTreeMap<String, MetricReport>,
    /// Metric names in plan order (JSON objects are unordered).
    pub metric_order: Vec<String>,
    pub thresholds: Vec<ThresholdResult>,
    pub failures: Vec<FailureSample>,
    pub generator: GeneratorHealth,
    /// planrun version, host, OS, CPUs.
    pub environment: RunEnvironment,
    /// Per metric, its HDR histogram (µs, 3 significant figures) serialized V2 + deflate and
    /// base64-encoded: exact, mergeable, and what `planrun compare` tests.
    pub histograms: BTreeMap<String, String>,
    /// (`protocol: http_chunks`) chunk and call throughput; null for other protocols.
    pub http: Option<HttpThroughput>,
    /// (`arrival_rate` or `stages`) the scheduler's account: scheduled, started, dropped
    /// arrivals, late starts, start lag; null for a fixed user count.
    pub arrivals: Option<arrivals::ArrivalReport>,
    /// (`--shard i/n`) which shard this run was, with its exact totals for `planrun merge`.
    pub shard: Option<crate::shard::ShardReport>,
    /// (`planrun merge`) which shards this report was merged from.
    pub merged: Option<merge::MergeInfo>,
}

/// Throughput of an `http_chunks` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpThroughput {
    /// Calls (iterations) that ran to an outcome, failed ones included.
    pub calls: u64,
    /// Chunks answered.
    pub chunks: u64,
    /// Audio in the answered chunks, seconds.
    pub audio_s: f64,
    /// Summed request → parsed-response time of the answered chunks, seconds.
    pub processing_s: f64,
    pub calls_per_s: f64,
    /// Chunks answered per wall-clock second of the run.
    pub chunks_per_s: f64,
    /// Audio seconds answered per wall-clock second of the run.
    pub audio_s_per_s: f64,
    /// Per call: chunks answered per second of the call (summed over calls).
    pub call_chunks_per_s: f64,
    /// Per call: audio seconds answered per second of the call (1.0 = real time).
    pub call_audio_s_per_s: f64,
    /// Summed processing time / wall time: how many chunks were in flight on average.
    pub concurrent_efficiency: f64,
}

impl HttpThroughput {
    pub fn from_counts(c: &crate::metrics::HttpCounts, elapsed: std::time::Duration) -> Self {
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let per = |x: f64, secs: f64| if secs > 0.0 { r3(x / secs) } else { 0.0 };
        let wall = elapsed.as_secs_f64();
        let call_s = c.call_us as f64 / 1e6;
        let audio_s = c.audio_us as f64 / 1e6;
        let processing_s = c.busy_us as f64 / 1e6;
        HttpThroughput {
            calls: c.calls,
            chunks: c.chunks,
            audio_s: r3(audio_s),
            processing_s: r3(processing_s),
            calls_per_s: per(c.calls as f64, wall),
            chunks_per_s: per(c.chunks as f64, wall),
            audio_s_per_s: per(audio_s, wall),
            call_chunks_per_s: per(c.chunks as f64, call_s),
            call_audio_s_per_s: per(audio_s, call_s),
            concurrent_efficiency: per(processing_s, wall),
        }
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// What a report says about the run besides its measurements; written as `run_info.json` when
/// the run starts so a folder is self-describing even when the run never finishes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub plan: String,
    pub description: Option<String>,
    pub plan_file: String,
    pub target: String,
    /// The wire protocol (`raw`, `twilio`, `openai-realtime`, `custom`, `http_chunks`).
    pub protocol: String,
    pub started_at: String,
    pub users: u32,
    pub seed: u64,
    /// Every metric the plan records, in plan order.
    pub metrics: Vec<String>,
    /// The plan's thresholds (metric, expression), to judge a partial run.
    pub thresholds: Vec<(String, String)>,
    pub planrun_version: String,
    /// (`--shard i/n`) which shard of the plan's users this run is.
    pub shard: Option<crate::shard::ShardReport>,
}

impl RunInfo {
    pub fn new(plan: &CompiledPlan, target: &str, started: std::time::SystemTime) -> Self {
        RunInfo {
            plan: plan.name.clone(),
            description: plan.description.clone(),
            plan_file: plan.source.display().to_string(),
            target: target.to_string(),
            protocol: plan.target.wire.protocol.name().to_string(),
            started_at: rfc3339(started),
            // A shard's own users; `shard.total_users` holds the plan's.
            users: crate::shard::users_of(plan.load.shard, plan.load.users).len() as u32,
            seed: plan.load.seed,
            metrics: plan.metrics.clone(),
            thresholds: plan
                .thresholds
                .iter()
                .map(|t| (t.metric.clone(), t.expr.text.clone()))
                .collect(),
            planrun_version: env!("CARGO_PKG_VERSION").to_string(),
            shard: plan
                .load
                .shard
                .map(|s| crate::shard::ShardReport::planned(s, plan.load.users)),
        }
    }
}

impl RunReport {
    pub fn build(
        plan: &CompiledPlan,
        outcome: &RunOutcome,
        thresholds: Vec<ThresholdResult>,
    ) -> Self {
        let mut info = RunInfo::new(plan, &outcome.target, outcome.started_at);
        info.started_at = rfc3339(outcome.started_at);
        Self::from_summary(&info, &outcome.summary, thresholds)
    }

    /// Build from the run's description and its merged measurements.
    pub fn from_summary(
        info: &RunInfo,
        s: &crate::metrics::Summary,
        thresholds: Vec<ThresholdResult>,
    ) -> Self {
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
                    class: f.class.as_str().to_string(),
                    step: f.step.clone(),
                    message: f.message.replace(['\n', '\r'], " "),
                })
            })
            .filter(|f| f.class != "aborted")
            .collect::<Vec<_>>();
        let failures = diverse_sample(failures, FAILURE_SAMPLES);
        let lag = s.recorder.send_lag.as_ref().filter(|h| !h.is_empty());
        let lag_ms = |q: f64| lag.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        let iterations = s.iterations();
        let passed = crate::judge::thresholds::all_passed(&thresholds) && !s.aborted;
        RunReport {
            plan: info.plan.clone(),
            description: info.description.clone(),
            plan_file: info.plan_file.clone(),
            passed,
            aborted: s.aborted,
            stopped_by: None,
            stop_reason: None,
            partial: false,
            target: info.target.clone(),
            started_at: info.started_at.clone(),
            elapsed_s: (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            users: info.users,
            seed: info.seed,
            success_rate: iterations.success_rate(),
            iterations,
            aborted_iterations: s.aborted_iterations(),
            errors: s.errors(),
            scenarios: s.scenarios(),
            metrics,
            metric_order: order,
            thresholds,
            failures,
            generator: {
                let mut g = GeneratorHealth {
                    send_lag_p50_ms: lag_ms(0.5),
                    send_lag_p99_ms: lag_ms(0.99),
                    send_lag_max_ms: lag.map(|h| h.max() as f64 / 1000.0),
                    ..GeneratorHealth::default()
                };
                g.fill_health(&s.recorder.health);
                g
            },
            environment: RunEnvironment::current(),
            histograms: s
                .recorder
                .histograms
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .filter_map(|(n, h)| Some((n.clone(), hist::encode(h)?)))
                .collect(),
            http: (info.protocol == ProtocolKind::HttpChunks.name())
                .then(|| HttpThroughput::from_counts(&s.recorder.http, s.elapsed)),
            arrivals: s
                .recorder
                .arrivals
                .as_ref()
                .map(arrivals::ArrivalReport::from),
            shard: info
                .shard
                .as_ref()
                .map(|p| crate::shard::ShardReport::finished(p.shard(), p.total_users, s)),
            merged: None,
        }
    }

    /// Note the generator's peak resource use.
    pub fn with_resources(mut self, r: Option<&crate::resources::ResourceSeries>) -> Self {
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        self.generator.cpu_max_pct = r.and_then(|r| r.max_cpu_pct()).map(round1);
        self.generator.rss_max_mb = r.and_then(|r| r.max_rss_mb()).map(round1);
        self
    }
}

/// `metrics.json` read back: the same type as what was written.
pub type ReportView = RunReport;

impl RunReport {
    /// Metric names in report order (`metric_order`, then any others).
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = self.metric_order.clone();
        for k in self.metrics.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        names
    }

    /// The decoded histogram of a metric, when stored.
    pub fn histogram(&self, metric: &str) -> Option<hdrhistogram::Histogram<u64>> {
        self.histograms
            .get(metric)
            .and_then(|t| hist::decode(t).ok())
    }
}

/// Everything a report is rendered from: `metrics.json` (as JSON, for templates, and typed)
/// and `run.json`.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub report: serde_json::Value,
    pub view: ReportView,
    pub run: RunData,
}

impl RunFiles {
    /// From a run that just finished.
    pub fn new(report: &RunReport, run: RunData) -> Result<Self, String> {
        let json = serde_json::to_value(report).map_err(|e| format!("metrics.json: {e}"))?;
        Self::from_json(json, run)
    }

    fn from_json(report: serde_json::Value, run: RunData) -> Result<Self, String> {
        let view = ReportView::deserialize(&report).map_err(|e| format!("metrics.json: {e}"))?;
        Ok(RunFiles { report, view, run })
    }

    /// Read `metrics{suffix}.json` and `run{suffix}.json` (optional) from a run folder.
    pub fn load(dir: &Path, suffix: &str) -> Result<Self, String> {
        let read = |name: &str| -> Result<Option<String>, String> {
            let path = dir.join(output_name(name, suffix));
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            }
        };
        let metrics_name = output_name("metrics.json", suffix);
        let Some(text) = read("metrics.json")? else {
            if dir.join(output_name("timeline.csv", suffix)).exists() {
                return Self::from_timeline(dir, suffix);
            }
            return Err(format!("{} has no {metrics_name}", dir.display()));
        };
        let report: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: {e}", dir.join(&metrics_name).display()))?;
        let run = match read("run.json")? {
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                format!(
                    "{}: {e}",
                    dir.join(output_name("run.json", suffix)).display()
                )
            })?,
            None => RunData::default(),
        };
        Self::from_json(report, run)
    }
}

impl RunFiles {
    /// Rebuild a report from a run that never wrote its `metrics.json` (killed): counts,
    /// percentiles and thresholds from the samples in `timeline{suffix}.csv`, the run's
    /// description from `run_info{suffix}.json` when present. Marked `partial`.
    pub fn from_timeline(dir: &Path, suffix: &str) -> Result<Self, String> {
        let csv_path = dir.join(output_name("timeline.csv", suffix));
        let text = std::fs::read(&csv_path)
            .map_err(|e| format!("cannot read {}: {e}", csv_path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let (iterations, skipped) = timeline::parse_csv(&text);
        let info_path = dir.join(output_name("run_info.json", suffix));
        let info: RunInfo = match std::fs::read_to_string(&info_path) {
            Ok(t) => {
                serde_json::from_str(&t).map_err(|e| format!("{}: {e}", info_path.display()))?
            }
            Err(_) => RunInfo {
                plan: "unknown".into(),
                ..RunInfo::default()
            },
        };
        let mut rec = crate::metrics::Recorder::default();
        for it in &iterations {
            let r = it.to_record();
            for sm in &r.samples {
                rec.record(
                    &sm.metric,
                    std::time::Duration::from_secs_f64(sm.value_ms.max(0.0) / 1000.0),
                );
            }
            rec.iteration(r);
        }
        let end_us = iterations.iter().map(|i| i.end_us).max().unwrap_or(0);
        let mut declared = info.metrics.clone();
        if declared.is_empty() {
            declared = rec.histograms.keys().cloned().collect();
        }
        let summary = crate::metrics::Summary::new(
            rec,
            declared,
            std::time::Duration::from_micros(end_us),
            true,
        );
        let specs: Vec<crate::plan::compile::ThresholdSpec> = info
            .thresholds
            .iter()
            .filter_map(|(metric, expr)| {
                Some(crate::plan::compile::ThresholdSpec {
                    metric: metric.clone(),
                    expr: expr.parse().ok()?,
                })
            })
            .collect();
        let results = crate::judge::thresholds::evaluate(&summary, &specs);
        let mut report = RunReport::from_summary(&info, &summary, results);
        report.partial = true;
        report.stop_reason = Some(format!(
            "the run did not finish (no metrics.json); rebuilt from {} ({} iterations{})",
            csv_path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string()),
            iterations.len(),
            if skipped > 0 {
                format!(", {skipped} torn or unreadable rows skipped")
            } else {
                String::new()
            }
        ));
        let run = RunData {
            version: timeline::RUN_DATA_VERSION,
            iterations,
            resources: None,
        };
        RunFiles::new(&report, run)
    }
}

/// `summary.md` + `_5_users` → `summary_5_users.md`.
pub fn output_name(name: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}{suffix}{}", &name[..i], &name[i..]),
        _ => format!("{name}{suffix}"),
    }
}

/// Built-in templates: (output file, format that selects it, template source).
pub const BUILTIN_TEMPLATES: &[(&str, ReportFormat, &str)] = &[
    (
        "summary.md",
        ReportFormat::Md,
        include_str!("templates/summary.md.j2"),
    ),
    (
        "report.html",
        ReportFormat::Html,
        include_str!("templates/report.html.j2"),
    ),
];

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Output names choose escaping: `.html`, `.htm`, `.xml` (also with `.j2`) are HTML-escaped.
    env.set_auto_escape_callback(minijinja::default_auto_escape_callback);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// Check a template's syntax (before a run, so a broken template stops it early).
pub fn check_template(name: &str, source: &str) -> Result<(), String> {
    let mut env = environment();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| format!("template {name}: {e}"))
}

/// Render a template with any serializable context.
pub fn render_with<S: Serialize>(name: &str, source: &str, ctx: &S) -> Result<String, String> {
    render_value(name, source, ser(ctx))
}

/// Render a template with the report as its context.
pub fn render_template(name: &str, source: &str, report: &RunReport) -> Result<String, String> {
    render_with(name, source, report)
}

fn render_value(name: &str, source: &str, ctx: Value) -> Result<String, String> {
    let mut env = environment();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| format!("template {name}: {e}"))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| format!("template {name}: {e}"))?;
    tmpl.render(ctx)
        .map_err(|e| format!("template {name}: {e:#}"))
}

/// The full template context: every field of `metrics.json` at the top level, plus `timeline`
/// (iterations with markers and samples), `events` (the rows of `timeline.csv`), `resources`
/// and `charts` (inline SVG and chart notes; see the README).
pub fn template_context(files: &RunFiles) -> Value {
    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    // Defaults for anything an older or hand-written metrics.json lacks, then every field as
    // written (including ones this version does not know).
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&files.view) {
        for (k, v) in map {
            ctx.insert(k, ser(v));
        }
    }
    if let serde_json::Value::Object(map) = &files.report {
        for (k, v) in map {
            ctx.insert(k.clone(), ser(v));
        }
    }
    ctx.insert("timeline".into(), ser(&files.run.iterations));
    ctx.insert(
        "events".into(),
        ser(timeline::csv_rows(&files.run.iterations)),
    );
    ctx.insert("resources".into(), ser(&files.run.resources));
    ctx.insert("charts".into(), html::charts(&files.view, &files.run));
    Value::from(ctx)
}

/// Read template files: `(output name, path)`; checks each one's syntax.
pub fn load_templates(pairs: &[(String, PathBuf)]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, path) in pairs {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!(
                "template output name `{name}` must be a plain file name like `custom.md`"
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read template {}: {e}", path.display()))?;
        check_template(name, &text)?;
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// What to write.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub formats: Vec<ReportFormat>,
    /// Output name → template source; replaces a built-in of that name or adds an output.
    pub templates: BTreeMap<String, String>,
    /// Write `metrics.json`/`run.json` (false when re-rendering them from disk).
    pub write_data: bool,
}

/// Write the report files of one run to `out`, every name with `suffix` (e.g. `_5_users`)
/// before its extension; returns the paths written.
pub fn write_outputs(
    files: &RunFiles,
    outputs: &Outputs,
    out: &Path,
    suffix: &str,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, body: &str| -> Result<(), String> {
        let path = out.join(output_name(name, suffix));
        write_atomic(&path, body.as_bytes())?;
        written.push(path);
        Ok(())
    };
    let has = |f: ReportFormat| outputs.formats.contains(&f);
    if has(ReportFormat::Json) && outputs.write_data {
        let json = serde_json::to_string_pretty(&files.report)
            .map_err(|e| format!("metrics.json: {e}"))?;
        put("metrics.json", &(json + "\n"))?;
        let run = serde_json::to_string(&files.run).map_err(|e| format!("run.json: {e}"))?;
        put("run.json", &(run + "\n"))?;
    }
    // A partial run's timeline.csv is the evidence it was rebuilt from: never rewritten.
    if has(ReportFormat::Csv) && !files.view.partial {
        let dropped: Vec<arrivals::DroppedEntry> = files
            .report
            .get("arrivals")
            .and_then(|a| a.get("dropped"))
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        put(
            "timeline.csv",
            &timeline::csv_with_dropped(&files.run.iterations, &dropped)?,
        )?;
    }
    if has(ReportFormat::Junit) {
        put("junit.xml", &junit::render(&files.view)?)?;
    }
    let mut jobs: Vec<(&str, &str)> = Vec::new();
    for (name, format, source) in BUILTIN_TEMPLATES {
        if let Some(custom) = outputs.templates.get(*name) {
            jobs.push((name, custom));
        } else if has(*format) {
            jobs.push((name, source));
        }
    }
    for (name, source) in &outputs.templates {
        if !BUILTIN_TEMPLATES.iter().any(|b| b.0 == name) {
            jobs.push((name, source));
        }
    }
    if !jobs.is_empty() {
        let ctx = template_context(files);
        for (name, source) in jobs {
            put(name, &render_value(name, source, ctx.clone())?)?;
        }
    }
    Ok(written)
}

/// Up to `n` failures, every distinct kind (class and message) first, in run order: twenty
/// copies of one timeout must not hide the one failure that was different.
fn diverse_sample(all: Vec<FailureSample>, n: usize) -> Vec<FailureSample> {
    let mut seen = std::collections::HashSet::new();
    let mut first: Vec<usize> = Vec::new();
    for (i, f) in all.iter().enumerate() {
        if seen.insert((f.class.clone(), f.message.clone())) {
            first.push(i);
        }
    }
    let mut picked: Vec<usize> = first.into_iter().take(n).collect();
    for i in 0..all.len() {
        if picked.len() >= n {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    let mut all: Vec<Option<FailureSample>> = all.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| all[i].take()).collect()
}

/// Write a file through a temporary beside it and a rename, so a crash mid-write never leaves
/// a torn file in place of a good one.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // Secrets from `{{ env.NAME }}` and header values never reach a report file.
    let redacted;
    let body = match std::str::from_utf8(body) {
        Ok(text) => {
            redacted = crate::redact::redact(text);
            redacted.as_bytes()
        }
        Err(_) => body,
    };
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
}

/// Write the report files of a run that just finished (the metrics.json contract, `run.json`,
/// and every selected format); the original entry point, kept for callers.
pub fn write(
    report: &RunReport,
    formats: &[ReportFormat],
    out: &Path,
) -> Result<Vec<PathBuf>, String> {
    let files = RunFiles::new(report, RunData::default())?;
    let outputs = Outputs {
        formats: formats.to_vec(),
        templates: BTreeMap::new(),
        write_data: true,
    };
    write_outputs(&files, &outputs, out, "")
}

/// The suffixes of the runs saved in a folder: `""` for `metrics.json`, `_5_users` for
/// `metrics_5_users.json`, … (sorted by user count).
pub fn saved_runs(dir: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out: Vec<(u64, String)> = Vec::new();
    // metrics*.json, or a partial run's timeline*.csv alone.
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == "metrics.json" || name == "timeline.csv" {
            out.push((0, String::new()));
        } else if let Some(n) = name
            .strip_prefix("metrics_")
            .and_then(|r| r.strip_suffix("_users.json"))
            .or_else(|| {
                name.strip_prefix("timeline_")
                    .and_then(|r| r.strip_suffix("_users.csv"))
            })
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, format!("_{n}_users")));
        }
    }
    out.sort();
    out.dedup();
    Ok(out.into_iter().map(|(_, s)| s).collect())
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
    let safe = crate::slug::slug(&plan.name);
    let dir = plan.report.dir.clone().unwrap_or_else(|| "reports".into());
    Path::new(&dir).join(format!("{safe}-{stamp}"))
}

/// The console summary (plain text; no colour so it reads the same in CI logs).
pub fn console_summary(report: &RunReport, w: &mut dyn Write) -> std::io::Result<()> {
    console_summary_color(report, w, false)
}

/// The console summary, with PASS/FAIL in colour when `color` (a terminal without NO_COLOR).
pub fn console_summary_color(
    report: &RunReport,
    w: &mut dyn Write,
    color: bool,
) -> std::io::Result<()> {
    let paint = |text: &str, code: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let it = &report.iterations;
    writeln!(w)?;
    let part = match (&report.shard, &report.merged) {
        (Some(s), _) => format!(" (shard {} of {} users)", s.shard(), s.total_users),
        (_, Some(m)) => format!(
            " (merged from {} of {} shards)",
            m.shards.len(),
            m.shard_count
        ),
        _ => String::new(),
    };
    writeln!(
        w,
        "planrun {} — {} users{part} against {} in {:.1}s",
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
    if let Some(a) = &report.arrivals {
        arrivals::console(a, w)?;
    }
    if let Some(h) = &report.http {
        writeln!(
            w,
            "http chunks: {} answered in {} calls ({:.1} s of audio): {:.2} chunks/s, {:.2} audio-s/s, {:.2} calls/s; per call {:.2} chunks/s ({:.2}x real time); concurrent efficiency {:.2} ({:.1} s processing / {:.1} s wall)",
            h.chunks,
            h.calls,
            h.audio_s,
            h.chunks_per_s,
            h.audio_s_per_s,
            h.calls_per_s,
            h.call_chunks_per_s,
            h.call_audio_s_per_s,
            h.concurrent_efficiency,
            h.processing_s,
            report.elapsed_s
        )?;
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
    crate::health::console_health(report, w, color)?;
    if !report.thresholds.is_empty() {
        writeln!(w)?;
        writeln!(w, "thresholds:")?;
        for t in &report.thresholds {
            writeln!(
                w,
                "  {} {} {}  (observed {})",
                if t.passed {
                    paint("PASS", "32")
                } else {
                    paint("FAIL", "1;31")
                },
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
    if report.partial {
        writeln!(
            w,
            "PARTIAL: {}",
            report
                .stop_reason
                .as_deref()
                .unwrap_or("rebuilt from the timeline")
        )?;
    }
    let capped = report.stopped_by.as_deref() == Some("max_duration");
    if capped {
        writeln!(
            w,
            "CAPPED: {}; judged on what was measured",
            report.stop_reason.as_deref().unwrap_or("--max-duration")
        )?;
    }
    if report.aborted && !capped {
        match &report.stop_reason {
            Some(r) if !report.partial => {
                writeln!(w, "STOPPED before the end ({r}): results are partial")?
            }
            _ => writeln!(w, "STOPPED before the end: results are partial")?,
        }
    } else if failed.is_empty() {
        writeln!(
            w,
            "{}: all {} thresholds met",
            paint("PASSED", "1;32"),
            report.thresholds.len()
        )?;
    } else {
        writeln!(
            w,
            "{}: {} of {} thresholds not met: {}",
            paint("FAILED", "1;31"),
            failed.len(),
            report.thresholds.len(),
            failed.join("; ")
        )?;
    }
    Ok(())
}

/// Any serializable value as a template value.
fn ser<S: Serialize>(x: S) -> Value {
    Value::from(minijinja::value::Serde(x))
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    fn f(user: u32, class: &str, message: &str) -> FailureSample {
        FailureSample {
            user,
            iteration: 0,
            scenario: "s".into(),
            class: class.into(),
            step: String::new(),
            message: message.into(),
        }
    }

    #[test]
    fn every_distinct_failure_kind_is_sampled_first_in_run_order() {
        let mut all: Vec<FailureSample> = (0..30).map(|u| f(u, "timeout", "slow")).collect();
        all.push(f(30, "connect_error", "too many open files"));
        let picked = diverse_sample(all, 5);
        assert_eq!(picked.len(), 5);
        assert!(picked.iter().any(|p| p.message == "too many open files"));
        let users: Vec<u32> = picked.iter().map(|p| p.user).collect();
        assert_eq!(
            users,
            [0, 1, 2, 3, 30],
            "distinct kinds first, then run order"
        );
        assert_eq!(diverse_sample(vec![f(0, "a", "b")], 5).len(), 1);
    }
}
