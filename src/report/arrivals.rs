//! The scheduler's account of a shaped load (open model or ramping stages): how many callers
//! came due, started, were dropped (and why), started late, and the start-lag distribution.

use std::collections::BTreeMap;
use std::io::Write;

pub use crate::contract::arrivals::{ArrivalReport, DROPPED_LISTED, DroppedEntry};
use crate::metrics::{ArrivalStats, LATE_TOLERANCE};
use crate::stats::us_to_ms3;

impl From<&ArrivalStats> for ArrivalReport {
    fn from(a: &ArrivalStats) -> Self {
        let lag = a.start_lag.as_ref().filter(|h| !h.is_empty());
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
            start_lag_p50_ms: lag.map(|h| us_to_ms3(h.value_at_quantile(0.5))),
            start_lag_p99_ms: lag.map(|h| us_to_ms3(h.value_at_quantile(0.99))),
            start_lag_max_ms: lag.map(|h| us_to_ms3(h.max())),
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
