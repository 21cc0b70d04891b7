//! The merged result of a run, and the counts a report takes from it.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::recorder::Recorder;
use crate::contract::{IterationCounts, MetricStats};

/// The merged result of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub recorder: Recorder,
    /// Every metric the plan declares, even ones that got no samples.
    pub declared: Vec<String>,
    pub elapsed: Duration,
    pub aborted: bool,
}

impl Summary {
    pub fn new(
        recorder: Recorder,
        declared: Vec<String>,
        elapsed: Duration,
        aborted: bool,
    ) -> Self {
        Summary {
            recorder,
            declared,
            elapsed,
            aborted,
        }
    }

    pub fn histogram(&self, metric: &str) -> Option<&Histogram<u64>> {
        self.recorder
            .histograms
            .get(metric)
            .filter(|h| !h.is_empty())
    }

    pub fn stats(&self, metric: &str) -> Option<MetricStats> {
        self.histogram(metric).map(MetricStats::from_histogram)
    }

    /// Metric names in report order: declared ones first, then any others recorded.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = self.declared.clone();
        for k in self.recorder.histograms.keys() {
            // Grouped keys (`ttfa{scenario:x}`) belong to the breakdown.
            if !k.contains('{') && !names.contains(k) {
                names.push(k.clone());
            }
        }
        names
    }

    /// Iterations cut short by stopping the run (neither successes nor failures).
    pub fn aborted_iterations(&self) -> u64 {
        self.recorder.outcomes.aborted
    }

    /// Iterations that ran to an outcome.
    pub fn iterations(&self) -> IterationCounts {
        self.recorder.outcomes.totals()
    }

    /// Failure counts by class.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.recorder
            .outcomes
            .errors
            .iter()
            .map(|(c, n)| (c.as_str().to_string(), *n))
            .collect()
    }

    /// Fraction of all `check` evaluations that passed (None when no check ran).
    pub fn check_rate(&self) -> Option<f64> {
        let (p, f) = self
            .recorder
            .checks
            .values()
            .fold((0u64, 0u64), |(p, f), c| (p + c.passed, f + c.failed));
        (p + f > 0).then(|| p as f64 / (p + f) as f64)
    }

    /// The per-scenario / per-tag breakdown: group (`scenario:NAME`, `tag:T`) → metric →
    /// statistics, from the grouped histograms (metrics in report order). Empty when the run
    /// recorded no groups (one scenario, no tags).
    pub fn breakdown(&self) -> BTreeMap<String, Vec<(String, MetricStats)>> {
        let mut out: BTreeMap<String, Vec<(String, MetricStats)>> = BTreeMap::new();
        let order = self.metric_names();
        for (key, h) in &self.recorder.histograms {
            let Ok(k) = crate::plan::threshold_expr::split_metric_key(key) else {
                continue;
            };
            let Some((kind, value)) = k.filter else {
                continue;
            };
            if h.is_empty() {
                continue;
            }
            out.entry(format!("{}:{value}", kind.name()))
                .or_default()
                .push((k.metric.to_string(), MetricStats::from_histogram(h)));
        }
        for metrics in out.values_mut() {
            metrics.sort_by_key(|(m, _)| order.iter().position(|o| o == m).unwrap_or(usize::MAX));
        }
        out
    }

    /// Per-scenario iteration counts.
    pub fn scenarios(&self) -> BTreeMap<String, IterationCounts> {
        self.recorder.outcomes.scenarios()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Failure, FailureClass, IterationRecord};

    #[test]
    fn merge_is_exact() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for ms in 1..=100u64 {
            a.record("ttfa", Duration::from_millis(ms));
            b.record("ttfa", Duration::from_millis(ms + 100));
        }
        a.merge(b);
        let s = Summary::new(a, vec!["ttfa".into()], Duration::from_secs(1), false);
        let st = s.stats("ttfa").unwrap();
        assert_eq!(st.count, 200);
        assert!((st.p50_ms - 100.0).abs() < 0.2, "{st:?}");
        assert!((st.max_ms - 200.0).abs() < 0.2, "{st:?}");
        assert!((st.min_ms - 1.0).abs() < 0.01, "{st:?}");
    }

    #[test]
    fn counts_and_classes() {
        let mut r = Recorder::default();
        let rec = |failure| IterationRecord {
            user: 0,
            iteration: 0,
            scenario: "s".into(),
            start_us: 0,
            end_us: 1,
            failure,
            markers: vec![],
            samples: vec![],
        };
        r.iteration(rec(None));
        r.iteration(rec(Some(Failure {
            class: FailureClass::Timeout,
            step: "step 1".into(),
            message: "x".into(),
        })));
        let s = Summary::new(r, vec![], Duration::ZERO, false);
        assert_eq!(
            s.iterations(),
            IterationCounts {
                total: 2,
                succeeded: 1,
                failed: 1
            }
        );
        assert_eq!(s.errors().get("timeout"), Some(&1));
        assert_eq!(s.iterations().success_rate(), Some(0.5));
        assert!(s.stats("nothing").is_none());
    }
}
