//! Live metrics: the run's counters and latency histograms, rendered in the Prometheus text
//! exposition format (0.0.4) while it goes on (`runner::prometheus` serves them on
//! `--metrics-addr`).
//!
//! Fed without touching the hot path: each user hands over what one finished iteration
//! measured (its samples, outcome and the send lag added since the last one) under one short
//! lock per iteration; the event-loop monitor adds one value per tick. Nothing is done per
//! audio frame.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use hdrhistogram::Histogram;

use super::IterationRecord;
use super::progress::Progress;

/// Upper bounds (seconds) of the latency buckets: voice-agent latencies, 5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    10.0, 30.0,
];

/// Upper bounds (seconds) of the generator's own delays (send lag, event-loop delay).
pub const DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A Prometheus histogram with fixed buckets (counts per bucket, not cumulative).
#[derive(Debug, Clone)]
struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Self {
        Buckets {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Add `n` observations of `seconds`.
    fn observe_n(&mut self, seconds: f64, n: u64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += n;
        }
        self.sum += seconds * n as f64;
        self.count += n;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Debug)]
struct State {
    /// (scenario, outcome) → iterations.
    iterations: BTreeMap<(String, &'static str), u64>,
    /// Failure class → iterations.
    errors: BTreeMap<&'static str, u64>,
    latency: BTreeMap<String, Buckets>,
    send_lag: Buckets,
    event_loop_delay: Buckets,
    /// The event-loop delay as an HDR histogram (µs), for exact live percentiles.
    event_loop_hdr: Option<Histogram<u64>>,
    /// The most recent distinct failures, newest first (at most [`RECENT_FAILURES`]).
    recent_failures: std::collections::VecDeque<RecentFailure>,
}

/// How many distinct failures [`LiveMetrics::recent_failures`] keeps.
pub const RECENT_FAILURES: usize = 10;

/// A failure kind seen recently (class, step and message), with its latest occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentFailure {
    pub class: &'static str,
    pub step: String,
    pub message: String,
    pub scenario: String,
    /// When its latest occurrence ended (µs since the run started).
    pub last_us: u64,
    /// Occurrences since it (last) entered the list.
    pub count: u64,
}

/// The live view of a run (of every run of a sweep: counters keep counting across them).
#[derive(Debug)]
pub struct LiveMetrics {
    state: Mutex<State>,
    /// The current run's progress (for the active users).
    progress: Mutex<Weak<Progress>>,
    /// Resident memory is read on scrape.
    system: Mutex<sysinfo::System>,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        LiveMetrics {
            state: Mutex::new(State {
                iterations: BTreeMap::new(),
                errors: BTreeMap::new(),
                latency: BTreeMap::new(),
                send_lag: Buckets::new(DELAY_BUCKETS),
                event_loop_delay: Buckets::new(DELAY_BUCKETS),
                event_loop_hdr: None,
                recent_failures: std::collections::VecDeque::new(),
            }),
            progress: Mutex::new(Weak::new()),
            system: Mutex::new(sysinfo::System::new()),
        }
    }
}

/// What one user has already handed over (its send lag is cumulative; only the growth since
/// the last iteration is new).
#[derive(Debug, Default)]
pub struct UserFeed {
    seen_lag: Option<Histogram<u64>>,
}

impl LiveMetrics {
    /// Follow this run's progress (its active users).
    pub fn attach(&self, progress: &Arc<Progress>) {
        if let Ok(mut p) = self.progress.lock() {
            *p = Arc::downgrade(progress);
        }
    }

    /// One user finished one iteration; `send_lag` is that user's whole send-lag histogram.
    pub fn iteration(
        &self,
        feed: &mut UserFeed,
        record: &IterationRecord,
        send_lag: Option<&Histogram<u64>>,
    ) {
        // The new send-lag values, computed outside the lock.
        let mut new_lag: Vec<(f64, u64)> = Vec::new();
        if let Some(h) = send_lag {
            let mut delta = h.clone();
            if let Some(seen) = &feed.seen_lag {
                let _ = delta.subtract(seen);
            }
            new_lag.extend(
                delta
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to() as f64 / 1e6, v.count_at_value())),
            );
            feed.seen_lag = Some(h.clone());
        }
        let outcome = match &record.failure {
            None => "success",
            Some(f) if f.class == crate::metrics::FailureClass::Aborted => "aborted",
            Some(_) => "failure",
        };
        let Ok(mut s) = self.state.lock() else { return };
        *s.iterations
            .entry((record.scenario.clone(), outcome))
            .or_insert(0) += 1;
        if let Some(f) = &record.failure {
            *s.errors.entry(f.class.as_str()).or_insert(0) += 1;
            if f.class != crate::metrics::FailureClass::Aborted {
                note_failure(&mut s.recent_failures, record, f);
            }
        }
        for sample in &record.samples {
            if !s.latency.contains_key(&sample.metric) {
                s.latency
                    .insert(sample.metric.clone(), Buckets::new(LATENCY_BUCKETS));
            }
            if let Some(b) = s.latency.get_mut(&sample.metric) {
                b.observe_n(sample.value_ms / 1000.0, 1);
            }
        }
        for (secs, n) in new_lag {
            s.send_lag.observe_n(secs, n);
        }
    }

    /// Send lag of a run that just ended (taken from the shared histograms before they are
    /// drained into the run's report), so the totals outlive the run.
    pub fn add_send_lag(&self, h: &Histogram<u64>) {
        if let Ok(mut s) = self.state.lock() {
            for v in h.iter_recorded() {
                s.send_lag
                    .observe_n(v.value_iterated_to() as f64 / 1e6, v.count_at_value());
            }
        }
    }

    /// One event-loop delay measurement.
    pub fn event_loop_delay(&self, delay: std::time::Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.event_loop_delay.observe_n(delay.as_secs_f64(), 1);
            let us = delay.as_micros().min(u128::from(u64::MAX)) as u64;
            let _ = s
                .event_loop_hdr
                .get_or_insert_with(super::recorder::new_histogram)
                .record(us.max(1));
        }
    }

    /// The event-loop delay measured so far (µs), for live percentiles.
    pub fn event_loop_delay_histogram(&self) -> Option<Histogram<u64>> {
        self.state.lock().ok()?.event_loop_hdr.clone()
    }

    /// The most recent distinct failures (class, step, message), newest first.
    pub fn recent_failures(&self) -> Vec<RecentFailure> {
        self.state
            .lock()
            .map(|s| s.recent_failures.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let progress = self.progress.lock().ok().and_then(|p| p.upgrade());
        let active = progress.as_ref().map_or(0, |p| {
            p.active_users.load(std::sync::atomic::Ordering::Relaxed)
        });
        // The running run's send lag lives in the shared histograms until the run ends.
        let running_lag = progress
            .as_ref()
            .and_then(|p| p.histograms.send_lag_snapshot());
        head(
            &mut out,
            "planrun_active_users",
            "gauge",
            "Virtual users running now.",
        );
        let _ = writeln!(out, "planrun_active_users {active}");
        if let Ok(s) = self.state.lock() {
            head(
                &mut out,
                "planrun_iterations_total",
                "counter",
                "Iterations finished, by scenario and outcome (success, failure, aborted).",
            );
            for ((scenario, outcome), n) in &s.iterations {
                let _ = writeln!(
                    out,
                    "planrun_iterations_total{{scenario=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(scenario)
                );
            }
            head(
                &mut out,
                "planrun_errors_total",
                "counter",
                "Failed iterations by failure class.",
            );
            for (class, n) in &s.errors {
                let _ = writeln!(out, "planrun_errors_total{{class=\"{class}\"}} {n}");
            }
            head(
                &mut out,
                "planrun_latency_seconds",
                "histogram",
                "Latencies recorded by the plan's steps, by metric.",
            );
            for (metric, b) in &s.latency {
                let labels = format!("metric=\"{}\"", escape(metric));
                b.render(&mut out, "planrun_latency_seconds", &labels);
            }
            head(
                &mut out,
                "planrun_send_lag_seconds",
                "histogram",
                "How late audio frames left against their real-time schedule.",
            );
            let mut lag = s.send_lag.clone();
            for v in running_lag.iter().flat_map(|h| h.iter_recorded()) {
                lag.observe_n(v.value_iterated_to() as f64 / 1e6, v.count_at_value());
            }
            lag.render(&mut out, "planrun_send_lag_seconds", "");
            head(
                &mut out,
                "planrun_event_loop_delay_seconds",
                "histogram",
                "How late a 10 ms timer of planrun's runtime woke up.",
            );
            s.event_loop_delay
                .render(&mut out, "planrun_event_loop_delay_seconds", "");
        }
        if let Some(cpu) = cpu_seconds() {
            head(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of planrun (built-in agent included when used).",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        }
        if let Some(rss) = self.rss_bytes() {
            head(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of planrun.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }

    fn rss_bytes(&self) -> Option<u64> {
        let pid = sysinfo::get_current_pid().ok()?;
        let mut sys = self.system.lock().ok()?;
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            true,
            sysinfo::ProcessRefreshKind::nothing().with_memory(),
        );
        sys.process(pid).map(sysinfo::Process::memory)
    }
}

/// Move (or add) `f`'s kind to the front of the recent failures, keeping the list bounded.
fn note_failure(
    list: &mut std::collections::VecDeque<RecentFailure>,
    record: &IterationRecord,
    f: &crate::metrics::Failure,
) {
    const MAX_MESSAGE: usize = 400;
    let message: String = f.message.chars().take(MAX_MESSAGE).collect();
    let same =
        |r: &RecentFailure| r.class == f.class.as_str() && r.step == f.step && r.message == message;
    let count = match list.iter().position(same) {
        Some(i) => list.remove(i).map_or(0, |r| r.count),
        None => 0,
    };
    list.push_front(RecentFailure {
        class: f.class.as_str(),
        step: f.step.clone(),
        message,
        scenario: record.scenario.clone(),
        last_us: record.end_us,
        count: count + 1,
    });
    list.truncate(RECENT_FAILURES);
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// planrun's CPU time so far (user + system), seconds.
fn cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct we pass; nothing else is touched.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return None;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(tv(u.ru_utime) + tv(u.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Failure, FailureClass, Sample};

    fn record(scenario: &str, failure: Option<FailureClass>, ms: &[f64]) -> IterationRecord {
        IterationRecord {
            user: 0,
            iteration: 0,
            scenario: scenario.into(),
            start_us: 0,
            end_us: 1,
            failure: failure.map(|class| Failure {
                class,
                step: String::new(),
                message: String::new(),
            }),
            markers: vec![],
            samples: ms
                .iter()
                .map(|v| Sample {
                    metric: "ttfa".into(),
                    at_us: 0,
                    value_ms: *v,
                })
                .collect(),
        }
    }

    #[test]
    fn recent_failures_are_distinct_newest_first_and_bounded() {
        let live = LiveMetrics::default();
        let mut feed = UserFeed::default();
        let fail = |msg: &str, end_us: u64| {
            let mut r = record("s", Some(FailureClass::Timeout), &[]);
            r.failure.as_mut().unwrap().message = msg.into();
            r.failure.as_mut().unwrap().step = "step 2 (line 9)".into();
            r.end_us = end_us;
            r
        };
        live.iteration(&mut feed, &fail("a", 1), None);
        live.iteration(&mut feed, &fail("b", 2), None);
        live.iteration(&mut feed, &fail("a", 3), None);
        live.iteration(
            &mut feed,
            &record("s", Some(FailureClass::Aborted), &[]),
            None,
        );
        let r = live.recent_failures();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].message.as_str(), r[0].count, r[0].last_us),
            ("a", 2, 3)
        );
        assert_eq!((r[1].message.as_str(), r[1].count), ("b", 1));
        for i in 0..50 {
            live.iteration(&mut feed, &fail(&format!("m{i}"), 10 + i), None);
        }
        let r = live.recent_failures();
        assert_eq!(r.len(), RECENT_FAILURES);
        assert_eq!(r[0].message, "m49");
        live.event_loop_delay(std::time::Duration::from_millis(3));
        let h = live.event_loop_delay_histogram().unwrap();
        assert_eq!(h.len(), 1);
        assert!((h.max() as i64 - 3000).abs() < 10);
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let live = LiveMetrics::default();
        let mut feed = UserFeed::default();
        let mut lag = Histogram::<u64>::new(3).unwrap();
        lag.record(300).unwrap(); // 0.3 ms
        live.iteration(
            &mut feed,
            &record("gr\"eet", None, &[4.0, 120.0]),
            Some(&lag),
        );
        lag.record(30_000).unwrap(); // 30 ms: only this one is new
        live.iteration(
            &mut feed,
            &record("gr\"eet", Some(FailureClass::Timeout), &[2500.0]),
            Some(&lag),
        );
        let text = live.render();
        assert!(
            text.contains(
                "planrun_iterations_total{scenario=\"gr\\\"eet\",outcome=\"success\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "planrun_iterations_total{scenario=\"gr\\\"eet\",outcome=\"failure\"} 1\n"
            )
        );
        assert!(text.contains("planrun_errors_total{class=\"timeout\"} 1\n"));
        assert!(text.contains("planrun_latency_seconds_bucket{metric=\"ttfa\",le=\"0.005\"} 1\n"));
        assert!(text.contains("planrun_latency_seconds_bucket{metric=\"ttfa\",le=\"0.15\"} 2\n"));
        assert!(text.contains("planrun_latency_seconds_bucket{metric=\"ttfa\",le=\"3\"} 3\n"));
        assert!(text.contains("planrun_latency_seconds_bucket{metric=\"ttfa\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("planrun_latency_seconds_count{metric=\"ttfa\"} 3\n"));
        assert!(text.contains("planrun_latency_seconds_sum{metric=\"ttfa\"} 2.624\n"));
        assert!(text.contains("planrun_send_lag_seconds_count 2\n"));
        assert!(text.contains("planrun_send_lag_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("planrun_send_lag_seconds_bucket{le=\"0.02\"} 1\n"));
        assert!(text.contains("planrun_send_lag_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("planrun_active_users 0\n"));
        assert!(text.contains("# TYPE planrun_latency_seconds histogram\n"));
    }
}
