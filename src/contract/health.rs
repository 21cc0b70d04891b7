//! `generator` in `metrics.json`: the load generator's own health.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// How late a 10 ms timer of planrun's runtime woke up (measured by the metrics layer).
    pub event_loop_delay_p50_ms: Option<f64>,
    pub event_loop_delay_p99_ms: Option<f64>,
    pub event_loop_delay_max_ms: Option<f64>,
    /// How late the frame carrying the end of each utterance left against its schedule.
    pub speech_end_lag_p50_ms: Option<f64>,
    pub speech_end_lag_p99_ms: Option<f64>,
    pub speech_end_lag_max_ms: Option<f64>,
    /// Latencies measured from the end of speech, taken again from its actual end (scheduled
    /// end + speech-end lag), by metric. Never judged by thresholds.
    pub from_actual_end: BTreeMap<String, ActualEndStats>,
    /// The limit the pacing lag and event-loop delay p99 were judged against (ms).
    pub lag_limit_ms: Option<f64>,
    /// Why planrun itself was the bottleneck of this run (empty: it was not).
    pub warnings: Vec<String>,
    /// planrun was the bottleneck: its pacing lag or event-loop delay p99 was above
    /// `lag_limit_ms` (CPU use alone only warns).
    pub overloaded: bool,
    /// What an overload does to the verdict: `fail` (the run is inconclusive) or `warn`
    /// (accepted by the plan's `generator.on_overload` or `--on-overload`).
    pub on_overload: Option<String>,
}

/// Percentiles of a latency measured from the actual end of speech.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActualEndStats {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}
