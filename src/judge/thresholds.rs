//! Judge a run: evaluate each threshold of the plan against the merged summary.
//!
//! A threshold on a metric that got no samples fails: a broken scenario must not pass CI by
//! measuring nothing.
//!
//! Windowed thresholds (`p95 < 1.5s over 10s`) are judged over sliding windows of the run:
//! windows of length W starting every W/4 from the run's start, plus one window ending at the
//! run's end, so every instant is covered. Each window is judged from the timestamped samples
//! it holds (a sample belongs to the window in which it was measured; empty windows are not
//! judged, except by `count`, for which an empty window counts 0); the threshold fails if any
//! window breaches, and the result names the worst window. `checks` are judged over windows
//! from the timeline's `check_passed`/`check_failed` markers, `frame_jitter` from its per-chunk
//! samples: the engine puts both on the timeline when a threshold needs them
//! ([`crate::plan::compile::CompiledPlan::timeline_detail`]).
//!
//! Rule: every threshold that validates can fail. Combinations that could never fire are plan
//! errors (`crate::plan::validate`), not thresholds that silently pass.

pub use crate::contract::thresholds::{ThresholdResult, WindowReport};
use crate::metrics::outcomes::{Series, window_step_us};
use crate::metrics::{IterationRecord, MetricStats, Summary};
use crate::plan::compile::ThresholdSpec;
use crate::plan::threshold_expr::{Op, Stat};
use crate::plan::{CHECK_FAILED_MARKER, CHECK_PASSED_MARKER, CHECKS, SUCCESS_RATE};

/// One statistic of (value, count) pairs (ms); None when empty. Percentiles by nearest rank
/// (as [`crate::stats::nearest_rank`]) over the values repeated by their counts.
fn stat_of_counts(values: &mut [(f64, u64)], stat: Stat) -> Option<f64> {
    let n: u64 = values.iter().map(|v| v.1).sum();
    if n == 0 {
        return None;
    }
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank = |q: f64| {
        let want = ((n as f64 * q).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (v, c) in values.iter() {
            seen += c;
            if seen >= want {
                return *v;
            }
        }
        values[values.len() - 1].0
    };
    let mean = || values.iter().map(|(v, c)| v * *c as f64).sum::<f64>() / n as f64;
    Some(match stat {
        Stat::P50 => rank(0.50),
        Stat::P90 => rank(0.90),
        Stat::P95 => rank(0.95),
        Stat::P99 => rank(0.99),
        Stat::Mean | Stat::Rate => mean(),
        Stat::Min => values[0].0,
        Stat::Max => values[values.len() - 1].0,
        Stat::Count => n as f64,
    })
}

/// The window bounds `[start, end)` in µs covering `0..=end_us`: windows of `window_us`
/// starting every `step_us` (a quarter of the window) from 0, the last one the first that
/// reaches past `end_us`. Every bound is a multiple of the step, so a window is a union of the
/// run's per-step slots (see [`crate::metrics::outcomes::Series`]).
pub fn windows(window_us: u64, end_us: u64) -> Vec<(u64, u64)> {
    let w = window_us.max(1);
    let step = (w / 4).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start + w <= end_us {
        out.push((start, start + w));
        start += step;
    }
    out.push((start, start + w));
    out
}

/// Judge a threshold over sliding windows from the per-step series of its metric — values
/// in ms for metrics, 1.0/0.0 (succeeded/failed) for rates.
fn judge_windows(
    t: &ThresholdSpec,
    window: std::time::Duration,
    series: Option<&Series>,
    end_us: u64,
) -> (Option<f64>, bool, Option<WindowReport>) {
    let stat = t.expr.stat_or_rate();
    let w_us = window.as_micros().min(u128::from(u64::MAX)) as u64;
    let step_us = window_step_us(window);
    let end_us = end_us.max(series.map_or(0, Series::end_us).saturating_sub(1));
    let bounds = windows(w_us, end_us);
    let mut report = WindowReport {
        window_s: window.as_secs_f64(),
        step_s: step_us as f64 / 1e6,
        ..WindowReport::default()
    };
    let worse = |a: f64, b: f64| match t.expr.op {
        Op::Lt | Op::Le => a > b,
        Op::Gt | Op::Ge => a < b,
    };
    let mut worst: Option<f64> = None;
    for (start, end) in bounds {
        let mut vals = series.map_or_else(Vec::new, |s| s.values_in(start, end));
        let value = if stat == Stat::Count {
            // A window in which nothing was measured counted 0: `count >= N over W` must catch it.
            Some(vals.iter().map(|v| v.1).sum::<u64>() as f64)
        } else {
            stat_of_counts(&mut vals, stat)
        };
        let Some(v) = value else { continue };
        report.judged += 1;
        if !t.expr.op.holds(v, t.expr.limit) {
            report.failed += 1;
        }
        if worst.is_none_or(|w| worse(v, w)) {
            worst = Some(v);
            report.worst_start_s = start as f64 / 1e6;
            report.worst_end_s = end.min(end_us.max(start)) as f64 / 1e6;
        }
    }
    let passed = worst.is_some() && report.failed == 0;
    (worst, passed, (report.judged > 0).then_some(report))
}

/// Feed one finished iteration into the live view the `abort_on_fail` monitor judges: its
/// samples into the histograms, its `check` markers into the check counts, and the iteration
/// itself (for `success_rate` and windows).
pub fn feed_live(summary: &mut Summary, rec: IterationRecord) {
    // The breakdown groups of the iteration's scenario, so filtered thresholds
    // (`ttfa{scenario:x}`) are judged live too.
    let groups = summary.recorder.windows.groups_of(&rec.scenario);
    for sm in &rec.samples {
        summary.recorder.record_grouped(
            &sm.metric,
            std::time::Duration::from_secs_f64(sm.value_ms.max(0.0) / 1000.0),
            &groups,
        );
    }
    for m in &rec.markers {
        match m.kind.as_str() {
            CHECK_PASSED_MARKER => summary.recorder.check(&m.detail, true),
            CHECK_FAILED_MARKER => {
                // The detail is `NAME: why`; only the run's overall pass rate is judged, so a
                // name that itself holds ": " only splits the live per-name counts.
                let name = m.detail.split_once(": ").map_or(m.detail.as_str(), |p| p.0);
                summary.recorder.check(name, false);
            }
            _ => {}
        }
    }
    summary.recorder.iteration(rec);
}

/// Whether the run's series holds what `metric`'s windows are judged from: `checks` are
/// judged from the timeline's `check_passed`/`check_failed` markers, which a run (or a
/// timeline written by an older planrun) may lack.
fn has_timestamps(summary: &Summary, metric: &str, series: Option<&Series>) -> bool {
    if metric != CHECKS {
        return true;
    }
    let marked = series.map_or(0, |s| {
        s.values_in(0, u64::MAX)
            .iter()
            .filter(|v| v.0 > 0.0)
            .map(|v| v.1)
            .sum::<u64>()
    });
    let passed: u64 = summary.recorder.checks.values().map(|c| c.passed).sum();
    marked >= passed
}

/// The scenario of a `success_rate{scenario:NAME}` threshold.
fn scenario_rate_filter(metric: &str) -> Option<&str> {
    use crate::plan::threshold_expr::{FilterKind, split_metric_key};
    match split_metric_key(metric).ok()? {
        k if k.metric == SUCCESS_RATE => match k.filter? {
            (FilterKind::Scenario, name) => Some(name),
            (FilterKind::Tag, _) => None,
        },
        _ => None,
    }
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
            let mut window = None;
            let mut windowed_pass = None;
            let series = t.expr.window.map(|w| {
                (
                    w,
                    summary.recorder.windows.get(&t.metric, window_step_us(w)),
                )
            });
            let timestamps = series
                .as_ref()
                .is_none_or(|(_, s)| has_timestamps(summary, &t.metric, *s));
            let observed = if let Some((w, series)) = series.filter(|_| timestamps) {
                let end_us = summary.elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
                let (v, passed, report) = judge_windows(t, w, series, end_us);
                window = report;
                windowed_pass = Some(passed);
                v
            } else if t.expr.window.is_some() {
                None // the timeline lacks the timestamps (a timeline written without them)
            } else if let Some(v) = super::run_metrics::observed(summary, &t.metric, stat) {
                v
            } else if t.metric == SUCCESS_RATE {
                summary.iterations().success_rate()
            } else if let Some(scenario) = scenario_rate_filter(&t.metric) {
                summary
                    .recorder
                    .outcomes
                    .scenario(scenario)
                    .and_then(|c| c.success_rate())
            } else if t.metric == CHECKS {
                summary.check_rate()
            } else if stat == Stat::Count {
                // A count is observable even when zero.
                Some(summary.stats(&t.metric).map_or(0.0, |s| s.count as f64))
            } else {
                summary.stats(&t.metric).and_then(|s| stat_value(&s, stat))
            };
            let passed = windowed_pass
                .unwrap_or_else(|| observed.is_some_and(|v| t.expr.op.holds(v, t.expr.limit)));
            let mut observed_text = match observed {
                None if t.metric == CHECKS && t.expr.window.is_some() && !timestamps => {
                    "the timeline has no check_passed markers to judge windows from".to_string()
                }
                None if t.metric == SUCCESS_RATE || scenario_rate_filter(&t.metric).is_some() => {
                    "no iterations".to_string()
                }
                None if t.metric == CHECKS => "no checks ran".to_string(),
                None => "no samples".to_string(),
                Some(v) if stat.is_duration() => format!("{v:.1}ms"),
                Some(v) if stat == Stat::Count => format!("{v:.0}"),
                Some(v) => format!("{v:.4}"),
            };
            if let Some(w) = &window {
                observed_text = format!(
                    "{observed_text} in the worst window {:.1}s–{:.1}s; {} of {} windows breached",
                    w.worst_start_s, w.worst_end_s, w.failed, w.judged
                );
            }
            ThresholdResult {
                metric: t.metric.clone(),
                expression: t.expr.text.clone(),
                observed,
                passed,
                observed_text,
                window,
                abort_on_fail: t.expr.abort_on_fail,
                implicit: false,
            }
        })
        .collect()
}

/// Whether every threshold passed.
pub fn all_passed(results: &[ThresholdResult]) -> bool {
    results.iter().all(|r| r.passed)
}

/// Whether an `abort_on_fail` threshold, judged during the run, can no longer pass: it has
/// samples and fails now. Percentiles, means and rates are judged on what was measured so far
/// (like k6); a windowed threshold with a breached window can never pass again; a count fails
/// for good only once it exceeds an upper bound (`count < N` / `count <= N`), while a lower
/// bound (`count >= N`) is left to the end of the run. No samples yet is not a failure here.
pub fn can_no_longer_pass(spec: &ThresholdSpec, result: &ThresholdResult) -> bool {
    if !spec.expr.abort_on_fail || result.passed || result.observed.is_none() {
        return false;
    }
    if spec.expr.stat == Some(Stat::Count) {
        return matches!(spec.expr.op, Op::Lt | Op::Le);
    }
    true
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

    /// 200 samples at 1 per 100 ms (20 s): 100 ms each, except a 2 s spike of 1 s values at
    /// 10–11 s (5% of the samples, so the whole-run p95 is still 100 ms).
    fn spiky() -> Summary {
        use crate::metrics::Sample;
        let mut r = Recorder::default();
        // The run's central recorder keeps the per-step series of its windowed thresholds.
        r.windows.want("ttfa", 1_000_000);
        r.windows.want("success_rate", 1_000_000);
        for i in 0..200u64 {
            let at_us = i * 100_000;
            let ms = if (100..110).contains(&i) {
                1000.0
            } else {
                100.0
            };
            r.record("ttfa", Duration::from_micros((ms * 1000.0) as u64));
            r.iteration(IterationRecord {
                user: 0,
                iteration: i,
                scenario: "s".into(),
                start_us: at_us,
                end_us: at_us,
                failure: None,
                markers: vec![],
                samples: vec![Sample {
                    metric: "ttfa".into(),
                    at_us,
                    value_ms: ms,
                }],
            });
        }
        Summary::new(r, vec!["ttfa".into()], Duration::from_secs(20), false)
    }

    #[test]
    fn a_spike_whole_run_p95_hides_fails_a_window() {
        let s = spiky();
        let r = evaluate(
            &s,
            &[
                spec("ttfa", "p95 < 500ms"),
                spec("ttfa", "p95 < 500ms over 4s"),
                spec("ttfa", "p95 < 1.5s over 4s"),
                spec("success_rate", "> 0.9 over 4s"),
            ],
        );
        assert!(r[0].passed, "whole run hides the spike: {:?}", r[0]);
        assert!(!r[1].passed, "{:?}", r[1]);
        assert_eq!(r[1].observed, Some(1000.0));
        let w = r[1].window.as_ref().unwrap();
        assert!(w.failed > 0 && w.failed < w.judged, "{w:?}");
        assert!(w.worst_start_s <= 10.0 && w.worst_end_s >= 10.9, "{w:?}");
        assert!(
            r[1].observed_text.contains("worst window"),
            "{}",
            r[1].observed_text
        );
        assert!(r[2].passed, "{:?}", r[2]);
        assert!(r[3].passed && r[3].observed == Some(1.0), "{:?}", r[3]);
    }

    #[test]
    fn windows_cover_the_run() {
        assert_eq!(windows(10, 5), vec![(0, 10)]);
        let w = windows(4, 10);
        assert_eq!(w.first(), Some(&(0, 4)));
        assert_eq!(w.last(), Some(&(7, 11)));
        assert!(w.windows(2).all(|p| p[1].0 - p[0].0 <= 1));
    }

    #[test]
    fn abort_only_when_it_can_no_longer_pass() {
        let s = summary();
        let mut specs = vec![
            spec("ttfa", "p95 < 900ms"),
            spec("ttfa", "count < 50"),
            spec("ttfa", "count > 500"),
            spec("never", "p95 < 1s"),
            spec("ttfa", "p95 < 2s"),
        ];
        for sp in &mut specs {
            sp.expr.abort_on_fail = true;
        }
        let r = evaluate(&s, &specs);
        let verdicts: Vec<bool> = specs
            .iter()
            .zip(&r)
            .map(|(sp, r)| can_no_longer_pass(sp, r))
            .collect();
        assert_eq!(verdicts, [true, true, false, false, false]);
        specs[0].expr.abort_on_fail = false;
        assert!(!can_no_longer_pass(&specs[0], &r[0]));
    }

    fn check_iteration(at_us: u64, passed: bool) -> IterationRecord {
        use crate::metrics::Marker;
        IterationRecord {
            user: 0,
            iteration: at_us,
            scenario: "s".into(),
            start_us: at_us,
            end_us: at_us,
            failure: None,
            markers: vec![Marker {
                kind: if passed {
                    CHECK_PASSED_MARKER
                } else {
                    CHECK_FAILED_MARKER
                }
                .into(),
                at_us,
                detail: if passed { "c".into() } else { "c: no".into() },
            }],
            samples: vec![],
        }
    }

    #[test]
    fn checks_are_judged_over_windows_and_fed_live() {
        // One check per 100 ms for 20 s; all fail during 10–12 s (10% of the run).
        let live = |keep_passes: bool| {
            let mut r = Recorder::default();
            r.windows.want("checks", 1_000_000);
            let mut s = Summary::new(r, vec![], Duration::from_secs(20), false);
            for i in 0..200u64 {
                let mut it = check_iteration(i * 100_000, !(100..120).contains(&i));
                if !keep_passes {
                    it.markers.retain(|m| m.kind != CHECK_PASSED_MARKER);
                    s.recorder.check("c", true);
                }
                feed_live(&mut s, it);
            }
            s
        };
        let s = live(true);
        assert_eq!(s.check_rate(), Some(0.9));
        let r = evaluate(
            &s,
            &[
                spec("checks", "> 0.85"),
                spec("checks", "> 0.85 over 4s"),
                spec("checks", "> 0.4 over 4s"),
            ],
        );
        assert!(r[0].passed, "{:?}", r[0]);
        assert!(!r[1].passed, "{:?}", r[1]);
        assert_eq!(r[1].observed, Some(0.5));
        assert!(r[2].passed, "{:?}", r[2]);
        // A timeline without the passes (written without them) is not judged as all-failed.
        let s = live(false);
        let r = evaluate(&s, &[spec("checks", "> 0.1 over 4s")]);
        assert!(!r[0].passed && r[0].observed.is_none(), "{:?}", r[0]);
        assert!(r[0].observed_text.contains("check_passed"), "{:?}", r[0]);
    }

    #[test]
    fn a_count_over_windows_counts_empty_windows_as_zero() {
        let s = spiky();
        let r = evaluate(
            &s,
            &[
                spec("ttfa", "count <= 40 over 4s"),
                spec("ttfa", "count < 40 over 4s"),
                spec("never", "count < 1 over 4s"),
                spec("never", "count >= 1 over 4s"),
            ],
        );
        assert!(r[0].passed, "{:?}", r[0]);
        assert!(!r[1].passed && r[1].observed == Some(40.0), "{:?}", r[1]);
        assert!(r[2].passed && r[2].observed == Some(0.0), "{:?}", r[2]);
        assert!(!r[3].passed && r[3].observed == Some(0.0), "{:?}", r[3]);
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
