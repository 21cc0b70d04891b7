//! The dashboard's snapshots, built from the run's live aggregates — the ones the reports and
//! the `abort_on_fail` monitor use, with the same statistics functions:
//!
//! - since start: the live [`Summary`]'s histograms ([`MetricStats::from_histogram`], as
//!   `metrics.json`), its outcomes (failures by class) and its threshold verdicts
//!   ([`thresholds::evaluate`], windowed thresholds from its per-step series);
//! - over the sliding window: the same histograms, minus what they held [`WINDOW`] ago (the
//!   growth of each second is kept as sparse value counts, so the window costs memory in
//!   proportion to the samples of the last [`WINDOW`], never to the run's length);
//! - generator health: the shared send-lag histograms and the event-loop delay, judged by
//!   [`GeneratorHealth::judge`] as the report is;
//! - the latency-over-time charts: one point per second of the windowed p50/p95/p99, at most
//!   [`MAX_POINTS`] per metric (older points are thinned by half when full).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Hub;
use crate::contract::{FailureSample, GeneratorHealth, MetricStats};
use crate::judge::thresholds;
use crate::metrics::Summary;
use crate::metrics::live::LiveMetrics;
use crate::metrics::progress::Progress;
use crate::plan::compile::{CompiledPlan, ThresholdSpec};
use crate::report::charts;

/// The sliding window of the windowed percentiles.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Most points per metric in a latency-over-time chart.
pub const MAX_POINTS: usize = 600;

/// What one run offers the dashboard.
pub(in crate::runner) struct Sources {
    pub progress: Arc<Progress>,
    pub summary: Option<crate::report::timeline::LiveSummary>,
    pub live: Option<Arc<LiveMetrics>>,
    pub lag_limit_ms: f64,
    pub builtin: bool,
    pub planned: Option<u64>,
}

/// The plan facts a snapshot shows.
struct PlanFacts {
    name: String,
    description: Option<String>,
    target: String,
    users: u32,
    load: String,
    duration_s: Option<f64>,
    planned: Option<u64>,
    specs: Vec<ThresholdSpec>,
    declared: Vec<String>,
    /// The plan's text, for the failing step's line.
    source: Option<String>,
    arrivals: Option<(u64, crate::engine::schedule::Arrivals)>,
}

/// One metric's growth per second over the last [`WINDOW`], and its chart points.
#[derive(Default)]
struct MetricTrack {
    /// The histogram as of the last tick.
    prev: Option<Histogram<u64>>,
    /// (seconds since start, values added in that tick as (µs, count)).
    ring: VecDeque<(f64, Vec<(u64, u64)>)>,
    /// (seconds since start, [p50, p95, p99] over the window).
    points: Vec<(f64, [f64; 3])>,
    /// Keep one second in `stride` (doubles when the chart is full).
    stride: u64,
}

impl MetricTrack {
    /// Take in the histogram as it is now; returns the window's histogram.
    fn update(&mut self, now_s: f64, h: &Histogram<u64>) -> Option<Histogram<u64>> {
        let mut delta = h.clone();
        if let Some(p) = &self.prev {
            // Histograms only grow; a failed subtract (never expected) restarts the window.
            if delta.subtract(p).is_err() {
                delta = h.clone();
                self.ring.clear();
            }
        }
        let added: Vec<(u64, u64)> = delta
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        self.prev = Some(h.clone());
        if !added.is_empty() {
            self.ring.push_back((now_s, added));
        }
        let from = now_s - WINDOW.as_secs_f64();
        while self.ring.front().is_some_and(|(t, _)| *t <= from) {
            self.ring.pop_front();
        }
        let mut w = Histogram::<u64>::new_from(h);
        for (_, added) in &self.ring {
            for &(v, c) in added {
                let _ = w.record_n(v, c);
            }
        }
        (!w.is_empty()).then_some(w)
    }

    /// Add a chart point for second `sec` (thinning when full).
    fn point(&mut self, sec: u64, t: f64, s: &MetricStats) {
        let stride = self.stride.max(1);
        if !sec.is_multiple_of(stride) {
            return;
        }
        self.points.push((t, [s.p50_ms, s.p95_ms, s.p99_ms]));
        if self.points.len() >= MAX_POINTS {
            self.stride = stride * 2;
            let keep = self.stride;
            self.points
                .retain(|(t, _)| (t.floor() as u64).is_multiple_of(keep));
        }
    }

    fn chart(&self, name: &str, elapsed_s: f64) -> String {
        let series = |i: usize, label: &str, color: &'static str| charts::Series {
            name: format!("{label} over {}s", WINDOW.as_secs()),
            color,
            style: if self.points.len() < 2 {
                charts::Style::Dots
            } else {
                charts::Style::Line
            },
            points: self.points.iter().map(|(t, v)| (*t, v[i])).collect(),
        };
        charts::xy(
            &format!("{name} over time"),
            "seconds since start",
            "milliseconds",
            elapsed_s.max(1.0),
            &[
                series(0, "p50", charts::BLUE),
                series(1, "p95", charts::ORANGE),
                series(2, "p99", charts::BAD),
            ],
        )
    }
}

/// Everything a run's feed keeps between ticks (bounded: see the module docs).
struct Feed {
    plan: PlanFacts,
    tracks: BTreeMap<String, MetricTrack>,
    peak_active: u64,
    last_second: Option<u64>,
    arrivals_offered: u64,
    next_arrival: Option<Duration>,
    cpu: Option<(sysinfo::System, sysinfo::Pid)>,
    cpu_now: Option<f64>,
    cpu_max: Option<f64>,
    health: GeneratorHealth,
    cores: usize,
    seq: u64,
    /// Iterations done at each of the last seconds, for the rate.
    done_ring: VecDeque<(f64, u64)>,
}

/// The snapshot before the load starts (what the page shows first).
pub(in crate::runner) fn initial(plan: &CompiledPlan) -> Value {
    json!({
        "seq": 0,
        "state": "starting",
        "plan": plan.name,
        "description": plan.description,
        "target": crate::redact::redact(&plan.target.url.to_string()),
        "elapsed_s": 0.0,
        "window_s": WINDOW.as_secs(),
        "metrics": [],
        "thresholds": [],
        "failures": [],
        "runs": [],
    })
}

/// Feed `hub` from one run's aggregates every [`super::UPDATE_EVERY`] until `done` turns
/// true (then one last snapshot).
pub(in crate::runner) fn follow(
    hub: Arc<Hub>,
    plan: &CompiledPlan,
    src: Sources,
    mut done: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut feed = Feed::new(plan, &src);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(super::UPDATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => hub.publish(feed.snapshot(&src, "running")),
                r = done.wait_for(|d| *d) => { let _ = r; break; }
            }
        }
        hub.publish(feed.snapshot(&src, "judging"));
    })
}

impl Feed {
    fn new(plan: &CompiledPlan, src: &Sources) -> Self {
        let load = match &plan.load.arrivals {
            Some(a) => format!(
                "{} arrivals over {} (max_users {})",
                a.count(),
                crate::distribution::format_duration(a.duration()),
                a.max_users
            ),
            None => format!("{} user(s)", plan.load.users),
        };
        let arrivals = plan.load.arrivals.as_ref().map(|a| {
            let a = match plan.load.shard {
                Some(s) => a.for_shard(s.index, s.count),
                None => a.clone(),
            };
            (a.count(), a.arrivals())
        });
        let cpu = sysinfo::get_current_pid()
            .ok()
            .map(|pid| (sysinfo::System::new(), pid));
        Feed {
            plan: PlanFacts {
                name: plan.name.clone(),
                description: plan.description.clone(),
                target: crate::redact::redact(&plan.target.url.to_string()),
                users: plan.load.users,
                load,
                duration_s: plan.load.duration.map(|d| d.as_secs_f64()),
                planned: src.planned,
                specs: plan.thresholds.clone(),
                declared: plan.metrics.clone(),
                source: std::fs::read_to_string(&plan.source).ok(),
                arrivals,
            },
            tracks: BTreeMap::new(),
            peak_active: 0,
            last_second: None,
            arrivals_offered: 0,
            next_arrival: None,
            cpu,
            cpu_now: None,
            cpu_max: None,
            health: GeneratorHealth::default(),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            seq: 0,
            done_ring: VecDeque::new(),
        }
    }

    /// Arrivals offered (scheduled) up to `elapsed`, walking the lazy schedule forward.
    fn offered(&mut self, elapsed: Duration) -> u64 {
        let Some((_, it)) = self.plan.arrivals.as_mut() else {
            return 0;
        };
        loop {
            let next = match self.next_arrival {
                Some(n) => Some(n),
                None => it.next().map(|(_, t)| t),
            };
            match next {
                Some(t) if t <= elapsed => {
                    self.arrivals_offered += 1;
                    self.next_arrival = None;
                }
                other => {
                    self.next_arrival = other;
                    return self.arrivals_offered;
                }
            }
        }
    }

    fn sample_cpu(&mut self) {
        if let Some((sys, pid)) = self.cpu.as_mut() {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[*pid]),
                true,
                sysinfo::ProcessRefreshKind::nothing().with_cpu(),
            );
            if let Some(p) = sys.process(*pid) {
                let v = f64::from(p.cpu_usage());
                self.cpu_now = Some(v);
                self.cpu_max = Some(self.cpu_max.map_or(v, |m| m.max(v)));
            }
        }
    }

    fn snapshot(&mut self, src: &Sources, state: &str) -> Value {
        self.seq += 1;
        let p = &src.progress;
        let elapsed = p.started.get().map_or(Duration::ZERO, |s| s.elapsed());
        let t = elapsed.as_secs_f64();
        let active = p.active_users.load(Ordering::Relaxed);
        let done = p.iterations_done.load(Ordering::Relaxed);
        let failed_now = p.iterations_failed.load(Ordering::Relaxed);
        self.peak_active = self.peak_active.max(active);
        let sec = elapsed.as_secs();
        let new_second = self.last_second != Some(sec);
        if new_second {
            self.last_second = Some(sec);
            self.sample_cpu();
        }
        self.done_ring.push_back((t, done));
        while self
            .done_ring
            .front()
            .is_some_and(|(t0, _)| t - t0 > WINDOW.as_secs_f64())
        {
            self.done_ring.pop_front();
        }
        let rate = match (self.done_ring.front(), self.done_ring.back()) {
            (Some((t0, d0)), Some((t1, d1))) if t1 - t0 >= 1.0 => {
                Some((d1 - d0) as f64 / (t1 - t0))
            }
            _ => None,
        };

        // The live summary: since-start statistics, outcomes, threshold verdicts.
        let mut hists: Vec<(String, Histogram<u64>)> = Vec::new();
        let mut names = self.plan.declared.clone();
        let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_scenario: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let (mut total, mut succeeded, mut failed, mut aborted) = (0, 0, 0, 0);
        let mut verdicts: Vec<Value> = Vec::new();
        if let Some(Ok(mut s)) = src.summary.as_ref().map(|s| s.lock()) {
            s.elapsed = elapsed;
            names = s.metric_names();
            for n in &names {
                if let Some(h) = s.histogram(n) {
                    hists.push((n.clone(), h.clone()));
                }
            }
            let it = s.iterations();
            (total, succeeded, failed, aborted) =
                (it.total, it.succeeded, it.failed, s.aborted_iterations());
            by_class = s.errors();
            by_scenario = s
                .scenarios()
                .into_iter()
                .map(|(k, c)| (k, (c.total, c.failed)))
                .collect();
            verdicts = threshold_verdicts(&s, &self.plan.specs);
        }

        let mut metrics = Vec::new();
        let hist_of: BTreeMap<&str, &Histogram<u64>> =
            hists.iter().map(|(n, h)| (n.as_str(), h)).collect();
        for name in &names {
            // Declared metrics nothing has recorded yet (many built-in ones never are) wait.
            if !hist_of.contains_key(name.as_str()) && !self.tracks.contains_key(name) {
                continue;
            }
            let since = hist_of
                .get(name.as_str())
                .map(|h| MetricStats::from_histogram(h));
            let track = self.tracks.entry(name.clone()).or_default();
            let window = hist_of
                .get(name.as_str())
                .and_then(|h| track.update(t, h))
                .map(|h| MetricStats::from_histogram(&h));
            if new_second && let Some(w) = &window {
                track.point(sec, t, w);
            }
            let stats = |s: &Option<MetricStats>| {
                s.as_ref().map(|s| {
                    json!({"count": s.count, "p50": s.p50_ms, "p95": s.p95_ms,
                           "p99": s.p99_ms, "max": s.max_ms})
                })
            };
            metrics.push(json!({
                "name": name,
                "window": stats(&window),
                "total": stats(&since),
                "points": track.points.len(),
                "chart": if track.points.is_empty() { String::new() } else { track.chart(name, t) },
            }));
        }

        // Generator health, judged as the report judges it.
        let lag = p.histograms.send_lag_snapshot();
        if lag.as_ref().is_some_and(|h| !h.is_empty()) {
            (
                self.health.send_lag_p50_ms,
                self.health.send_lag_p99_ms,
                self.health.send_lag_max_ms,
            ) = crate::stats::p50_p99_max_ms(lag.as_ref());
        }
        if let Some(h) = src
            .live
            .as_ref()
            .and_then(|l| l.event_loop_delay_histogram())
        {
            (
                self.health.event_loop_delay_p50_ms,
                self.health.event_loop_delay_p99_ms,
                self.health.event_loop_delay_max_ms,
            ) = crate::stats::p50_p99_max_ms(Some(&h));
        }
        self.health.cpu_max_pct = self.cpu_max;
        self.health.judge(src.lag_limit_ms, self.cores, src.builtin);

        let failures: Vec<Value> = src
            .live
            .as_ref()
            .map(|l| l.recent_failures())
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let line = FailureSample {
                    step: f.step.clone(),
                    ..FailureSample::default()
                }
                .line();
                let source_line = line.and_then(|n| {
                    self.plan
                        .source
                        .as_deref()
                        .and_then(|s| crate::plan::diag::source_line(s, n))
                        .map(|l| l.trim().to_string())
                });
                json!({
                    "class": f.class,
                    "step": f.step,
                    "message": f.message,
                    "scenario": f.scenario,
                    "line": line,
                    "source_line": source_line,
                    "last_s": f.last_us as f64 / 1e6,
                    "count": f.count,
                })
            })
            .collect();

        let arrivals = self
            .plan
            .arrivals
            .as_ref()
            .map(|(n, _)| *n)
            .map(|scheduled| {
                let offered = self.offered(elapsed);
                json!({"scheduled": scheduled, "offered": offered, "started": done + active})
            });
        json!({
            "seq": self.seq,
            "state": state,
            "plan": self.plan.name,
            "description": self.plan.description,
            "target": self.plan.target,
            "load": self.plan.load,
            "users": self.plan.users,
            "elapsed_s": t,
            "duration_s": self.plan.duration_s,
            "planned": self.plan.planned,
            "window_s": WINDOW.as_secs(),
            "active_users": active,
            "peak_active": self.peak_active,
            "arrivals": arrivals,
            "iterations": {
                "done": done,
                "failed": failed_now,
                "judged_total": total,
                "succeeded": succeeded,
                "failed_judged": failed,
                "aborted": aborted,
                "per_s": rate,
                "by_class": by_class,
                "by_scenario": by_scenario,
            },
            "metrics": metrics,
            "thresholds": verdicts,
            "health": {
                "send_lag_p99_ms": self.health.send_lag_p99_ms,
                "event_loop_delay_p99_ms": self.health.event_loop_delay_p99_ms,
                "cpu_pct": self.cpu_now,
                "cpu_max_pct": self.cpu_max,
                "cores": self.cores,
                "lag_limit_ms": src.lag_limit_ms,
                "overloaded": self.health.overloaded,
                "warnings": self.health.warnings,
            },
            "failures": failures,
        })
    }
}

/// The plan's thresholds judged on what has finished so far, as the `abort_on_fail` monitor
/// judges them.
fn threshold_verdicts(s: &Summary, specs: &[ThresholdSpec]) -> Vec<Value> {
    thresholds::evaluate(s, specs)
        .into_iter()
        .zip(specs)
        .map(|(r, spec)| {
            json!({
                "metric": r.metric,
                "expression": r.expression,
                "observed_text": r.observed_text,
                "passed": r.passed,
                "judged": r.observed.is_some(),
                "windowed": spec.expr.window.is_some(),
                "abort_on_fail": r.abort_on_fail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_ms: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in values_ms {
            h.record(v * 1000).unwrap();
        }
        h
    }

    #[test]
    fn the_window_holds_only_the_last_seconds() {
        let mut tr = MetricTrack::default();
        let mut h = hist(&[100; 50]);
        let w = tr.update(1.0, &h).unwrap();
        assert_eq!(w.len(), 50);
        h.add(hist(&[300; 10])).unwrap();
        let w = tr.update(5.0, &h).unwrap();
        assert_eq!(w.len(), 60);
        // 12 s: the first second's 100 ms values left the window.
        h.add(hist(&[200; 10])).unwrap();
        let w = tr.update(12.0, &h).unwrap();
        assert_eq!(w.len(), 20);
        let s = MetricStats::from_histogram(&w);
        assert!((s.p50_ms - 200.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 300.0).abs() < 1.0, "{s:?}");
        // Nothing new for a window: no windowed value.
        assert!(tr.update(30.0, &h).is_none());
    }

    #[test]
    fn chart_points_stay_bounded() {
        let mut tr = MetricTrack::default();
        let s = MetricStats::from_histogram(&hist(&[5]));
        for sec in 0..100_000u64 {
            tr.point(sec, sec as f64, &s);
        }
        assert!(tr.points.len() < MAX_POINTS, "{}", tr.points.len());
        assert!(tr.points.len() > MAX_POINTS / 4, "{}", tr.points.len());
        assert!(tr.points.last().unwrap().0 > 90_000.0);
    }
}
