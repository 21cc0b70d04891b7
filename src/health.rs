//! The load generator's own health: how late its event loop wakes up, how late the end of each
//! utterance actually left (coordinated omission made visible), and the judgement whether
//! planrun itself was the bottleneck of a run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep_until};

use crate::report::GeneratorHealth;

/// How often the event-loop monitor wakes up.
pub const EVENT_LOOP_TICK: Duration = Duration::from_millis(10);

/// Default limit for the pacing lag and event-loop delay p99 (ms) above which the generator
/// counts as the bottleneck.
pub const DEFAULT_LAG_LIMIT_MS: f64 = 10.0;

/// CPU use, in percent of the cores planrun may use, at or above which it counts as the
/// bottleneck.
pub const CPU_LIMIT_PCT_OF_CORES: f64 = 90.0;

/// Per-user health measurements, merged exactly like the rest of a [`crate::metrics::Recorder`].
#[derive(Debug, Clone, Default)]
pub struct HealthRec {
    /// How late the runtime's timer woke up (µs); recorded by the run, not by users.
    pub event_loop_delay: Option<Histogram<u64>>,
    /// Per utterance streamed in real time: how late the frame carrying the end of speech left
    /// against its schedule (µs).
    pub speech_end_lag: Option<Histogram<u64>>,
    /// Latencies measured from the end of the caller's speech, measured again from when that
    /// speech actually finished leaving (scheduled end + its lag), by metric (µs).
    pub from_actual_end: BTreeMap<String, Histogram<u64>>,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

fn record_into(slot: &mut Option<Histogram<u64>>, d: Duration) {
    if slot.is_none() {
        *slot = Histogram::new(3).ok();
    }
    if let Some(h) = slot {
        let _ = h.record(micros(d).max(1));
    }
}

fn add_into(slot: &mut Option<Histogram<u64>>, other: Option<Histogram<u64>>) {
    match (slot.as_mut(), other) {
        (Some(mine), Some(h)) => {
            let _ = mine.add(&h);
        }
        (None, Some(h)) => *slot = Some(h),
        _ => {}
    }
}

impl HealthRec {
    pub fn record_speech_end_lag(&mut self, lag: Duration) {
        record_into(&mut self.speech_end_lag, lag);
    }

    /// `metric`, measured from the actual end of speech.
    pub fn record_from_actual_end(&mut self, metric: &str, value: Duration) {
        if !self.from_actual_end.contains_key(metric)
            && let Ok(h) = Histogram::new(3)
        {
            self.from_actual_end.insert(metric.to_string(), h);
        }
        if let Some(h) = self.from_actual_end.get_mut(metric) {
            let _ = h.record(micros(value).max(1));
        }
    }

    pub fn merge(&mut self, other: HealthRec) {
        add_into(&mut self.event_loop_delay, other.event_loop_delay);
        add_into(&mut self.speech_end_lag, other.speech_end_lag);
        for (name, h) in other.from_actual_end {
            let mut slot = self.from_actual_end.remove(&name);
            add_into(&mut slot, Some(h));
            if let Some(h) = slot {
                self.from_actual_end.insert(name, h);
            }
        }
    }
}

/// Measures the event-loop delay until [`EventLoopMonitor::finish`].
pub struct EventLoopMonitor {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<Histogram<u64>>>,
}

impl EventLoopMonitor {
    /// A task sleeping [`EVENT_LOOP_TICK`] at a time and recording how late it woke (a busy
    /// runtime wakes it late; tokio's timer adds up to about 1 ms on its own).
    pub fn start(live: Option<Arc<crate::metrics::live::LiveMetrics>>) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut h: Option<Histogram<u64>> = None;
            loop {
                let due = Instant::now() + EVENT_LOOP_TICK;
                tokio::select! {
                    () = sleep_until(due) => {}
                    _ = &mut stopped => break,
                }
                let late = Instant::now().saturating_duration_since(due);
                record_into(&mut h, late);
                if let Some(l) = &live {
                    l.event_loop_delay(late);
                }
            }
            h
        });
        EventLoopMonitor { stop, task }
    }

    pub async fn finish(self) -> Option<Histogram<u64>> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// Percentiles of a latency measured from the actual end of speech.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActualEndStats {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64).round() / 1000.0
}

fn quantiles(h: Option<&Histogram<u64>>) -> (Option<f64>, Option<f64>, Option<f64>) {
    match h.filter(|h| !h.is_empty()) {
        Some(h) => (
            Some(ms(h.value_at_quantile(0.5))),
            Some(ms(h.value_at_quantile(0.99))),
            Some(ms(h.max())),
        ),
        None => (None, None, None),
    }
}

impl GeneratorHealth {
    /// Fill in the event-loop delay, the speech-end lag and the latencies from the actual end.
    pub fn fill_health(&mut self, rec: &HealthRec) {
        (
            self.event_loop_delay_p50_ms,
            self.event_loop_delay_p99_ms,
            self.event_loop_delay_max_ms,
        ) = quantiles(rec.event_loop_delay.as_ref());
        (
            self.speech_end_lag_p50_ms,
            self.speech_end_lag_p99_ms,
            self.speech_end_lag_max_ms,
        ) = quantiles(rec.speech_end_lag.as_ref());
        self.from_actual_end = rec
            .from_actual_end
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| {
                (
                    n.clone(),
                    ActualEndStats {
                        count: h.len(),
                        p50_ms: ms(h.value_at_quantile(0.5)),
                        p95_ms: ms(h.value_at_quantile(0.95)),
                        p99_ms: ms(h.value_at_quantile(0.99)),
                        max_ms: ms(h.max()),
                    },
                )
            })
            .collect();
    }

    /// Judge whether planrun itself was the bottleneck: pacing lag p99 or event-loop delay p99
    /// above `lag_limit_ms`, or CPU at [`CPU_LIMIT_PCT_OF_CORES`] of `cores` or more. Sets
    /// `lag_limit_ms` and `warnings` (one sentence per figure over its limit).
    pub fn judge(&mut self, lag_limit_ms: f64, cores: usize, agent_in_process: bool) {
        self.lag_limit_ms = Some(lag_limit_ms);
        let mut w = Vec::new();
        let over = |v: Option<f64>| v.filter(|v| *v > lag_limit_ms);
        if let Some(v) = over(self.send_lag_p99_ms) {
            w.push(format!(
                "pacing lag p99 {v:.2} ms is above the limit of {lag_limit_ms} ms: audio left \
                 late, so the latencies cannot be trusted"
            ));
        }
        if let Some(v) = over(self.event_loop_delay_p99_ms) {
            w.push(format!(
                "event-loop delay p99 {v:.2} ms is above the limit of {lag_limit_ms} ms: \
                 planrun's runtime was overloaded, so the latencies cannot be trusted"
            ));
        }
        let cpu_limit = CPU_LIMIT_PCT_OF_CORES * cores.max(1) as f64;
        if let Some(cpu) = self.cpu_max_pct.filter(|c| *c >= cpu_limit) {
            let agent = if agent_in_process {
                " (the built-in agent runs inside planrun and counts in it)"
            } else {
                ""
            };
            w.push(format!(
                "CPU use peaked at {cpu:.0}% of one core, at or above the limit of \
                 {cpu_limit:.0}% ({CPU_LIMIT_PCT_OF_CORES:.0}% of {cores} core(s)){agent}, \
                 so the latencies cannot be trusted"
            ));
        }
        self.warnings = w;
    }
}

/// The console lines: the generator's delays, the latencies from the actual end, and a
/// warning per figure over its limit.
pub fn console_health(
    report: &crate::report::RunReport,
    w: &mut dyn std::io::Write,
    color: bool,
) -> std::io::Result<()> {
    let g = &report.generator;
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    if g.send_lag_p99_ms.is_some() || g.event_loop_delay_p99_ms.is_some() {
        writeln!(
            w,
            "generator: pacing lag p99 {} ms, event-loop delay p99 {} ms, speech-end lag p99 {} ms, CPU max {}%, RSS max {} MiB",
            f(g.send_lag_p99_ms),
            f(g.event_loop_delay_p99_ms),
            f(g.speech_end_lag_p99_ms),
            f(g.cpu_max_pct),
            f(g.rss_max_mb),
        )?;
    }
    for (name, m) in &g.from_actual_end {
        writeln!(
            w,
            "  {name} from the actual end of speech: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1} ms",
            m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms
        )?;
    }
    for warning in &g.warnings {
        let text = format!("WARNING: planrun was the bottleneck: {warning}");
        if color {
            writeln!(w, "\x1b[1;33m{text}\x1b[0m")?;
        } else {
            writeln!(w, "{text}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_each_figure_against_its_limit() {
        let mut g = GeneratorHealth {
            send_lag_p99_ms: Some(4.0),
            event_loop_delay_p99_ms: Some(1.2),
            cpu_max_pct: Some(150.0),
            ..GeneratorHealth::default()
        };
        g.judge(10.0, 2, false);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        g.send_lag_p99_ms = Some(12.5);
        g.judge(10.0, 2, false);
        assert_eq!(g.warnings.len(), 1);
        assert!(g.warnings[0].contains("pacing lag p99 12.50 ms"));
        assert!(g.warnings[0].contains("limit of 10 ms"));
        g.judge(1.0, 2, true);
        assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
        assert!(g.warnings[1].contains("event-loop delay p99 1.20 ms"));
        g.judge(1.0, 1, true);
        assert_eq!(g.warnings.len(), 3, "{:?}", g.warnings);
        assert!(g.warnings[2].contains("CPU use peaked at 150%"));
        assert!(g.warnings[2].contains("built-in agent"));
        assert_eq!(g.lag_limit_ms, Some(1.0));
    }

    #[test]
    fn merges_exactly() {
        let mut a = HealthRec::default();
        let mut b = HealthRec::default();
        a.record_speech_end_lag(Duration::from_millis(1));
        b.record_speech_end_lag(Duration::from_millis(3));
        a.record_from_actual_end("ttfa", Duration::from_millis(100));
        b.record_from_actual_end("ttfa", Duration::from_millis(300));
        b.record_from_actual_end("other", Duration::from_millis(5));
        a.merge(b);
        assert_eq!(a.speech_end_lag.as_ref().map(Histogram::len), Some(2));
        assert_eq!(a.from_actual_end["ttfa"].len(), 2);
        assert_eq!(a.from_actual_end["other"].len(), 1);
        let mut g = GeneratorHealth::default();
        g.fill_health(&a);
        assert_eq!(g.from_actual_end["ttfa"].count, 2);
        assert!((g.from_actual_end["ttfa"].max_ms - 300.0).abs() < 0.5);
        assert!((g.speech_end_lag_max_ms.unwrap() - 3.0).abs() < 0.01);
    }

    #[tokio::test]
    async fn event_loop_monitor_sees_a_blocked_runtime() {
        let m = EventLoopMonitor::start(None);
        tokio::time::sleep(Duration::from_millis(35)).await;
        // Block this (current-thread) runtime: the monitor's timer cannot fire on time.
        std::thread::sleep(Duration::from_millis(60));
        tokio::time::sleep(Duration::from_millis(25)).await;
        let h = m.finish().await.unwrap();
        assert!(h.len() >= 3, "{}", h.len());
        assert!(h.max() >= 40_000, "max {} µs", h.max());
    }
}
