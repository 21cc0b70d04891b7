//! Judge a run: evaluate each threshold of the plan against the merged summary.
//!
//! A threshold on a metric that got no samples fails: a broken scenario must not pass CI by
//! measuring nothing.

use serde::{Deserialize, Serialize};

use crate::metrics::{MetricStats, Summary};
use crate::plan::compile::ThresholdSpec;
use crate::plan::threshold::Stat;
use crate::plan::{CHECKS, SUCCESS_RATE};

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
}

fn stat_value(stats: &MetricStats, stat: Stat) -> Option<f64> {
    Some(match stat {
        Stat::P50 => stats.p50_ms,
        Stat::P90 => stats.p90_ms,
        Stat::P95 => stats.p95_ms,
        Stat::P99 => stats.p99_ms,
        Stat::Mean => stats.mean_ms,
        Stat::Min => stats.min_ms,
        Stat::Max => stats.max_ms,
        Stat::Count => stats.count as f64,
        Stat::Rate => return None,
    })
}

/// Evaluate every threshold.
pub fn evaluate(summary: &Summary, thresholds: &[ThresholdSpec]) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| {
            let stat = t.expr.stat_or_rate();
            let observed = if t.metric == SUCCESS_RATE {
                summary.iterations().success_rate()
            } else if t.metric == CHECKS {
                summary.check_rate()
            } else if stat == Stat::Count {
                // A count is observable even when zero.
                Some(summary.stats(&t.metric).map_or(0.0, |s| s.count as f64))
            } else {
                summary.stats(&t.metric).and_then(|s| stat_value(&s, stat))
            };
            let passed = observed.is_some_and(|v| t.expr.op.holds(v, t.expr.limit));
            let observed_text = match observed {
                None if t.metric == SUCCESS_RATE => "no iterations".to_string(),
                None if t.metric == CHECKS => "no checks ran".to_string(),
                None => "no samples".to_string(),
                Some(v) if stat.is_duration() => format!("{v:.1}ms"),
                Some(v) if stat == Stat::Count => format!("{v:.0}"),
                Some(v) => format!("{v:.4}"),
            };
            ThresholdResult {
                metric: t.metric.clone(),
                expression: t.expr.text.clone(),
                observed,
                passed,
                observed_text,
            }
        })
        .collect()
}

/// Whether every threshold passed.
pub fn all_passed(results: &[ThresholdResult]) -> bool {
    results.iter().all(|r| r.passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Failure, FailureClass, IterationRecord, Recorder};
    use std::time::Duration;

    fn spec(metric: &str, expr: &str) -> ThresholdSpec {
        ThresholdSpec {
            metric: metric.into(),
            expr: expr.parse().unwrap(),
        }
    }

    fn summary() -> Summary {
        let mut r = Recorder::default();
        for ms in 1..=100 {
            r.record("ttfa", Duration::from_millis(ms * 10)); // 10ms..1000ms
        }
        for i in 0..100 {
            r.iteration(IterationRecord {
                user: 0,
                iteration: i,
                scenario: "s".into(),
                start_us: 0,
                end_us: 0,
                failure: (i < 3).then(|| Failure {
                    class: FailureClass::Timeout,
                    step: String::new(),
                    message: String::new(),
                }),
                markers: vec![],
                samples: vec![],
            });
        }
        Summary::new(
            r,
            vec!["ttfa".into(), "never".into()],
            Duration::from_secs(1),
            false,
        )
    }

    #[test]
    fn percentiles_pass_and_fail() {
        let s = summary();
        let r = evaluate(&s, &[spec("ttfa", "p95 < 1s"), spec("ttfa", "p95 < 900ms")]);
        assert!(r[0].passed, "{r:?}");
        assert!(!r[1].passed, "{r:?}");
        assert!((r[1].observed.unwrap() - 950.0).abs() < 1.0);
        assert!(!all_passed(&r));
    }

    #[test]
    fn success_rate_and_counts() {
        let s = summary();
        let r = evaluate(
            &s,
            &[
                spec("success_rate", "> 0.99"),
                spec("success_rate", ">= 0.97"),
                spec("ttfa", "count >= 100"),
                spec("never", "count < 1"),
            ],
        );
        assert_eq!(
            r.iter().map(|r| r.passed).collect::<Vec<_>>(),
            [false, true, true, true]
        );
        assert_eq!(r[0].observed, Some(0.97));
    }

    #[test]
    fn no_samples_fails() {
        let s = summary();
        let r = evaluate(&s, &[spec("never", "p95 < 1s"), spec("never", "max > 0ms")]);
        assert!(r.iter().all(|r| !r.passed && r.observed.is_none()));
        assert_eq!(r[0].observed_text, "no samples");
        let empty = Summary::new(Recorder::default(), vec![], Duration::ZERO, false);
        let r = evaluate(&empty, &[spec("success_rate", "> 0.5")]);
        assert!(!r[0].passed);
    }
}
