//! `arrivals` in `metrics.json`: the scheduler's account of a shaped load (open model or
//! ramping stages).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// At most this many dropped arrivals are listed one by one in `metrics.json`.
pub const DROPPED_LISTED: usize = 10_000;

/// One dropped arrival.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DroppedEntry {
    pub arrival: u64,
    /// Scheduled instant, ms since the run started.
    pub at_ms: f64,
    pub reason: String,
}

/// `metrics.json` `arrivals`: present for `arrival_rate` and `stages` runs only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ArrivalReport {
    /// Starts that came due (arrivals, or users the stages asked for).
    pub scheduled: u64,
    /// Callers that started.
    pub started: u64,
    /// Arrivals that did not start.
    pub dropped_arrivals: u64,
    /// Dropped arrivals by reason (`max_users`).
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// The first dropped arrivals (at most [`DROPPED_LISTED`]).
    pub dropped: Vec<DroppedEntry>,
    /// Callers that started more than `late_tolerance_ms` after their scheduled instant.
    pub late_starts: u64,
    pub late_tolerance_ms: f64,
    /// Actual start − scheduled start.
    pub start_lag_p50_ms: Option<f64>,
    pub start_lag_p99_ms: Option<f64>,
    pub start_lag_max_ms: Option<f64>,
    /// Open model: the `max_users` cap (null for ramping stages).
    pub max_users: Option<u32>,
    /// Most callers active at once (the real concurrency; for the open model, at most
    /// `max_users`).
    pub peak_active: u64,
    /// Seconds over which the starts were offered: the schedule's length, or until the run
    /// was stopped.
    pub offered_s: f64,
    /// `scheduled` / `offered_s`: the offered load, arrivals per second.
    pub offered_per_s: Option<f64>,
    /// `started` / `offered_s`: the load actually started, callers per second.
    pub started_per_s: Option<f64>,
    /// `dropped_arrivals` / `scheduled` (per offered arrival).
    pub dropped_rate: Option<f64>,
    /// `late_starts` / `scheduled` (per offered start).
    pub late_start_rate: Option<f64>,
}
