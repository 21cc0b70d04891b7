//! Thresholds on the run's own figures ([`crate::plan::RUN_METRICS`]): the scheduler's dropped
//! arrivals and late starts, the generator's pacing lag and event-loop delay; and the implicit
//! `dropped_arrivals: rate <= 0` check of every open-model plan that sets none of its own.
//!
//! Rates are per **offered** arrival (or start): every arrival whose scheduled instant came
//! before the run ended or was stopped, whether it started or not.

use hdrhistogram::Histogram;

use super::thresholds::{ThresholdResult, evaluate};
use crate::metrics::{MetricStats, Summary};
use crate::plan::compile::{CompiledPlan, ThresholdSpec};
use crate::plan::threshold_expr::Stat;
use crate::plan::{DROPPED_ARRIVALS, GENERATOR_EVENT_LOOP_DELAY, GENERATOR_SEND_LAG, LATE_STARTS};

/// The implicit check of an open-model plan without a `dropped_arrivals` threshold: no
/// arrival may be dropped (`rate <= 0`, i.e. `rate == 0`: a rate is never negative).
pub const IMPLICIT_DROPPED: &str = "rate <= 0";

/// The observed value of `stat` of a run metric; `None` when `metric` is not one, `Some(None)`
/// when it has nothing to judge (no arrival was offered, no frame was sent).
pub fn observed(summary: &Summary, metric: &str, stat: Stat) -> Option<Option<f64>> {
    let rec = &summary.recorder;
    let counted = |n: Option<u64>| {
        let a = rec.arrivals.as_ref();
        let offered = a.map_or(0, |a| a.scheduled);
        match stat {
            Stat::Count => Some(n.map(|n| n as f64)),
            _ => Some(n.filter(|_| offered > 0).map(|n| n as f64 / offered as f64)),
        }
    };
    let hist = |h: Option<&Histogram<u64>>| {
        let h = h.filter(|h| !h.is_empty());
        if stat == Stat::Count {
            return Some(Some(h.map_or(0.0, |h| h.len() as f64)));
        }
        Some(h.map(MetricStats::from_histogram).and_then(|s| {
            Some(match stat {
                Stat::P50 => s.p50_ms,
                Stat::P90 => s.p90_ms,
                Stat::P95 => s.p95_ms,
                Stat::P99 => s.p99_ms,
                Stat::Mean => s.mean_ms,
                Stat::Min => s.min_ms,
                Stat::Max => s.max_ms,
                Stat::Count | Stat::Rate => return None,
            })
        }))
    };
    match metric {
        DROPPED_ARRIVALS => counted(rec.arrivals.as_ref().map(|a| a.dropped.len() as u64)),
        LATE_STARTS => counted(rec.arrivals.as_ref().map(|a| a.late_starts)),
        GENERATOR_SEND_LAG => hist(rec.send_lag.as_ref()),
        GENERATOR_EVENT_LOOP_DELAY => hist(rec.health.event_loop_delay.as_ref()),
        _ => None,
    }
}

/// The thresholds the plan did not write but is judged by: `dropped_arrivals: rate <= 0` for
/// an open-model plan without a `dropped_arrivals` threshold of its own.
pub fn implicit_thresholds(plan: &CompiledPlan) -> Vec<ThresholdSpec> {
    let own = plan.thresholds.iter().any(|t| t.metric == DROPPED_ARRIVALS);
    if plan.load.arrivals.is_none() || own {
        return Vec::new();
    }
    match IMPLICIT_DROPPED.parse() {
        Ok(expr) => vec![ThresholdSpec {
            metric: DROPPED_ARRIVALS.to_string(),
            expr,
        }],
        Err(_) => Vec::new(),
    }
}

/// Judge the plan's thresholds and its implicit ones (marked `implicit`), with the counts
/// behind the dropped-arrival and late-start figures spelled out.
pub fn judge_plan(summary: &Summary, plan: &CompiledPlan) -> Vec<ThresholdResult> {
    let mut results = evaluate(summary, &plan.thresholds);
    let mut implicit = evaluate(summary, &implicit_thresholds(plan));
    for r in &mut implicit {
        r.implicit = true;
    }
    results.extend(implicit);
    describe_counts(summary, &mut results);
    results
}

/// `0.2500` → `0.2500 (5 of 20 offered arrivals dropped)`.
fn describe_counts(summary: &Summary, results: &mut [ThresholdResult]) {
    let Some(a) = summary.recorder.arrivals.as_ref() else {
        return;
    };
    for r in results.iter_mut().filter(|r| r.observed.is_some()) {
        let (n, what) = match r.metric.as_str() {
            DROPPED_ARRIVALS => (a.dropped.len() as u64, "offered arrivals dropped"),
            LATE_STARTS => (a.late_starts, "offered starts late"),
            _ => continue,
        };
        r.observed_text = format!("{} ({n} of {} {what})", r.observed_text, a.scheduled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ArrivalStats, DropReason, DroppedArrival, Recorder};
    use std::time::Duration;

    fn spec(metric: &str, expr: &str) -> ThresholdSpec {
        ThresholdSpec {
            metric: metric.into(),
            expr: expr.parse().unwrap(),
        }
    }

    fn summary(scheduled: u64, dropped: u64, late: u64) -> Summary {
        let mut r = Recorder::default();
        let mut a = ArrivalStats {
            scheduled,
            ..ArrivalStats::default()
        };
        for n in 0..dropped {
            a.dropped.push(DroppedArrival {
                arrival: n,
                at_us: n * 1000,
                reason: DropReason::MaxUsers,
            });
        }
        for _ in 0..scheduled - dropped {
            a.started(Duration::from_millis(1), Duration::from_millis(50));
        }
        a.late_starts = late;
        r.arrivals = Some(a);
        let mut lag = Histogram::new(3).unwrap();
        for us in [500, 1_000, 25_000] {
            lag.record(us).unwrap();
        }
        r.send_lag = Some(lag.clone());
        r.health.event_loop_delay = Some(lag);
        Summary::new(r, vec![], Duration::from_secs(2), false)
    }

    #[test]
    fn counts_and_rates_per_offered_arrival() {
        let s = summary(20, 5, 2);
        let r = evaluate(
            &s,
            &[
                spec(DROPPED_ARRIVALS, "rate <= 0"),
                spec(DROPPED_ARRIVALS, "rate < 0.3"),
                spec(DROPPED_ARRIVALS, "count < 5"),
                spec(LATE_STARTS, "count <= 2"),
                spec(LATE_STARTS, "rate < 0.05"),
            ],
        );
        let verdicts: Vec<bool> = r.iter().map(|r| r.passed).collect();
        assert_eq!(verdicts, [false, true, false, true, false], "{r:?}");
        assert_eq!(r[0].observed, Some(0.25));
        assert_eq!(r[2].observed, Some(5.0));
        assert_eq!(r[4].observed, Some(0.1));
        let clean = summary(20, 0, 0);
        let r = evaluate(&clean, &[spec(DROPPED_ARRIVALS, "rate <= 0")]);
        assert!(r[0].passed && r[0].observed == Some(0.0), "{r:?}");
        // Nothing offered: nothing to judge, so it fails (like any threshold with no samples).
        let none = Summary::new(Recorder::default(), vec![], Duration::ZERO, false);
        let r = evaluate(&none, &[spec(DROPPED_ARRIVALS, "rate <= 0")]);
        assert!(!r[0].passed && r[0].observed.is_none(), "{r:?}");
    }

    #[test]
    fn generator_figures_are_latency_statistics() {
        let s = summary(1, 0, 0);
        let r = evaluate(
            &s,
            &[
                spec(GENERATOR_SEND_LAG, "p99 < 10ms"),
                spec(GENERATOR_SEND_LAG, "p50 < 10ms"),
                spec(GENERATOR_EVENT_LOOP_DELAY, "max < 30ms"),
                spec(GENERATOR_EVENT_LOOP_DELAY, "count >= 3"),
            ],
        );
        let verdicts: Vec<bool> = r.iter().map(|r| r.passed).collect();
        assert_eq!(verdicts, [false, true, true, true], "{r:?}");
        assert!((r[0].observed.unwrap() - 25.0).abs() < 0.1, "{r:?}");
        assert_eq!(r[0].observed_text, "25.0ms");
    }
}
