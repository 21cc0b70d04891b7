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
            max_users: a.max_users,
            peak_active: a.peak_active,
            offered_s: crate::stats::round3(a.offered_for.as_secs_f64()),
            offered_per_s: per(a.scheduled, a.offered_for.as_secs_f64()),
            started_per_s: per(a.started, a.offered_for.as_secs_f64()),
            dropped_rate: ratio(a.dropped.len() as u64, a.scheduled),
            late_start_rate: ratio(a.late_starts, a.scheduled),
        }
    }
}

fn per(n: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| crate::stats::round3(n as f64 / secs))
}

fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
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
        "arrivals: {} scheduled, {} started, {} dropped{}{}, {} late (> {:.0} ms){}; start lag p50 {} ms, p99 {} ms, max {} ms",
        a.scheduled,
        a.started,
        a.dropped_arrivals,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        pct(a.dropped_rate.filter(|_| a.dropped_arrivals > 0)),
        a.late_starts,
        a.late_tolerance_ms,
        pct(a.late_start_rate.filter(|_| a.late_starts > 0)),
        fmt(a.start_lag_p50_ms),
        fmt(a.start_lag_p99_ms),
        fmt(a.start_lag_max_ms),
    )
}

/// ` = 12.5% of offered`, or nothing.
fn pct(rate: Option<f64>) -> String {
    rate.map_or(String::new(), |r| {
        format!(" = {:.1}% of offered", r * 100.0)
    })
}

/// The open model's real load, for a report's headline: `open model: 20 arrivals offered
/// (10.0/s), 18 started (9.0/s), peak 3 concurrent (max_users 3)`.
pub fn open_load(a: &ArrivalReport) -> String {
    let rate = |r: Option<f64>| r.map_or(String::new(), |r| format!(" ({r:.1}/s)"));
    format!(
        "open model: {} arrivals offered{}, {} started{}, peak {} concurrent (max_users {})",
        a.scheduled,
        rate(a.offered_per_s),
        a.started,
        rate(a.started_per_s),
        a.peak_active,
        a.max_users.map_or("-".to_string(), |m| m.to_string()),
    )
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}
