//! The scheduler's account of a shaped load (open model or ramping stages): how many callers
//! came due, started, were dropped (and why), started late, and the start-lag distribution.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::engine::schedule::LATE_TOLERANCE;
use crate::metrics::ArrivalStats;

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
}

impl From<&ArrivalStats> for ArrivalReport {
    fn from(a: &ArrivalStats) -> Self {
        let lag = a.start_lag.as_ref().filter(|h| !h.is_empty());
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let mut dropped = a.dropped.clone();
        dropped.sort_by_key(|d| d.arrival);
        let mut by_reason = BTreeMap::new();
        for d in &dropped {
            *by_reason.entry(d.reason.as_str().to_string()).or_insert(0) += 1;
        }
        ArrivalReport {
            scheduled: a.scheduled,
            started: a.started,
            dropped_arrivals: dropped.len() as u64,
            dropped_by_reason: by_reason,
            dropped: dropped
                .iter()
                .take(DROPPED_LISTED)
                .map(|d| DroppedEntry {
                    arrival: d.arrival,
                    at_ms: d.at_us as f64 / 1000.0,
                    reason: d.reason.as_str().to_string(),
                })
                .collect(),
            late_starts: a.late_starts,
            late_tolerance_ms: LATE_TOLERANCE.as_secs_f64() * 1000.0,
            start_lag_p50_ms: lag.map(|h| ms(h.value_at_quantile(0.5))),
            start_lag_p99_ms: lag.map(|h| ms(h.value_at_quantile(0.99))),
            start_lag_max_ms: lag.map(|h| ms(h.max())),
        }
    }
}

/// The console line(s) of the scheduler's account.
pub fn console(a: &ArrivalReport, w: &mut dyn Write) -> std::io::Result<()> {
    let reasons: Vec<String> = a
        .dropped_by_reason
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    writeln!(
        w,
        "arrivals: {} scheduled, {} started, {} dropped{}, {} late (> {:.0} ms); start lag p50 {} ms, p99 {} ms, max {} ms",
        a.scheduled,
        a.started,
        a.dropped_arrivals,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        a.late_starts,
        a.late_tolerance_ms,
        fmt(a.start_lag_p50_ms),
        fmt(a.start_lag_p99_ms),
        fmt(a.start_lag_max_ms),
    )
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}
