//! `thresholds` in `metrics.json`: the verdict on each threshold expression.

use serde::{Deserialize, Serialize};

/// The verdict on one threshold expression.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThresholdResult {
    pub metric: String,
    pub expression: String,
    /// The observed value (milliseconds for durations, a number otherwise); None: no samples.
    pub observed: Option<f64>,
    pub passed: bool,
    /// Human-readable observed value, e.g. `812.4ms`, `0.97`, `no samples`.
    pub observed_text: String,
    /// For `over W` thresholds: how the windows went (`observed` is the worst window's value).
    pub window: Option<WindowReport>,
    /// The threshold may stop the run early (`abort_on_fail`).
    pub abort_on_fail: bool,
    /// Not written in the plan: planrun judges every open-model run by `dropped_arrivals:
    /// rate <= 0` unless the plan sets a `dropped_arrivals` threshold of its own.
    pub implicit: bool,
}

/// How a windowed threshold's windows went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowReport {
    /// Window length and step between window starts, in seconds.
    pub window_s: f64,
    pub step_s: f64,
    /// Windows that held at least one sample (judged), and how many of them breached.
    pub judged: u64,
    pub failed: u64,
    /// The worst window: seconds since the run started.
    pub worst_start_s: f64,
    pub worst_end_s: f64,
}
