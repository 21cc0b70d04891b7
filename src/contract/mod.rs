//! The contract: [`RunReport`] (written as `metrics.json`) and every data type it holds, as
//! plain serde types. Every output is rendered from it, `planrun compare` and `planrun merge`
//! read it back, and it sits at the bottom of the module graph: it imports only the other
//! foundation modules (`stats`, `shard`), never a layer above. Building it from a run's
//! measurements is the report layer's job (the report layer's `build` module).

pub mod arrivals;
pub mod counts;
pub mod health;
pub mod hist;
pub mod merge;
pub mod resources;
pub mod shard;
pub mod thresholds;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use arrivals::{ArrivalReport, DROPPED_LISTED, DroppedEntry};
pub use counts::{CheckCounts, HttpCounts, IterationCounts, MetricStats};
pub use health::{ActualEndStats, GeneratorHealth};
pub use merge::MergeInfo;
pub use resources::{ResourceSample, ResourceSeries};
pub use shard::ShardReport;
pub use thresholds::{ThresholdResult, WindowReport};

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

impl FailureSample {
    /// The plan line of the failed step, read back from `step` ("step 4 (line 38)").
    pub fn line(&self) -> Option<usize> {
        let rest = self.step.split("(line ").nth(1)?;
        let n = rest.split(')').next()?;
        n.trim().parse().ok().filter(|n| *n > 0)
    }
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
    /// planrun itself was the bottleneck (`generator.overloaded`) and neither the plan nor the
    /// command line accepted it: the measurements cannot be trusted, so the run is neither
    /// passed nor failed (`passed` is false; exit code 5).
    pub inconclusive: bool,
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
    /// (plans with more than one scenario, or `tags:`) the metrics of each scenario and tag:
    /// scenarios first, then tags. Absent for a plan with one untagged scenario.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<GroupReport>,
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
    pub arrivals: Option<ArrivalReport>,
    /// (`--shard i/n`) which shard this run was, with its exact totals for `planrun merge`.
    pub shard: Option<ShardReport>,
    /// (`planrun merge`) which shards this report was merged from.
    pub merged: Option<MergeInfo>,
}

/// One group of the per-scenario breakdown: a scenario's samples, or those of every scenario
/// carrying a tag.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupReport {
    /// `scenario:NAME` or `tag:T`: the filter a threshold writes as `ttfa{scenario:NAME}`.
    pub group: String,
    /// `scenario` or `tag`.
    pub kind: String,
    pub name: String,
    /// (scenarios) completed iterations.
    pub iterations: Option<IterationCounts>,
    pub success_rate: Option<f64>,
    /// Metrics in report order, only those with samples in this group.
    pub metrics: Vec<GroupMetric>,
}

/// One metric of a [`GroupReport`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupMetric {
    pub metric: String,
    #[serde(flatten)]
    pub stats: MetricReport,
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

    /// Note the generator's peak resource use.
    pub fn with_resources(mut self, r: Option<&ResourceSeries>) -> Self {
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        self.generator.cpu_max_pct = r.and_then(|r| r.max_cpu_pct()).map(round1);
        self.generator.rss_max_mb = r.and_then(|r| r.max_rss_mb()).map(round1);
        self
    }
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
    pub fn from_counts(c: &HttpCounts, elapsed: std::time::Duration) -> Self {
        let r3 = crate::stats::round3;
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
    pub shard: Option<ShardReport>,
    /// (plans with a breakdown) each scenario's groups (`scenario:NAME`, `tag:T`), to judge
    /// filtered thresholds (`ttfa{tag:slow}`) of a partial or merged run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub scenario_groups: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_line_is_read_back_from_the_step() {
        let f = |step: &str| FailureSample {
            step: step.into(),
            ..FailureSample::default()
        };
        assert_eq!(f("step 4 (line 38)").line(), Some(38));
        assert_eq!(f("step 4").line(), None);
        assert_eq!(f("").line(), None);
    }
}
