//! Live counters of a run, readable while it goes on (progress display, live metrics).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

/// Live counters, readable while the run goes on (for progress display).
#[derive(Debug, Default)]
pub struct Progress {
    /// Where users record their histograms (a few shards, not one set per user).
    pub histograms: Arc<super::SharedHistograms>,
    pub active_users: AtomicU64,
    pub iterations_done: AtomicU64,
    pub iterations_failed: AtomicU64,
    /// The main latency (the plan's first recorded metric) over the last [`ROLLING_WINDOW`]:
    /// its name and (arrival, milliseconds) samples. Updated once per iteration, not per event.
    recent: std::sync::Mutex<Option<(String, crate::stats::RollingWindow)>>,
    /// When the load began (set once by the engine, after the built-in agent is up): what
    /// `elapsed_s` and time-based threshold delays count from.
    pub started: std::sync::OnceLock<Instant>,
    /// Fed once per finished iteration when `--metrics-addr` serves live metrics.
    pub live: Option<Arc<super::live::LiveMetrics>>,
}

/// The window of the progress line's rolling percentile.
pub const ROLLING_WINDOW: Duration = Duration::from_secs(10);

impl Progress {
    /// Progress that also feeds the live metrics endpoint.
    pub fn with_live(live: Option<Arc<super::live::LiveMetrics>>) -> Self {
        Progress {
            live,
            ..Progress::default()
        }
    }

    pub fn set_main_metric(&self, name: &str) {
        if let Ok(mut r) = self.recent.lock() {
            *r = Some((
                name.to_string(),
                crate::stats::RollingWindow::new(ROLLING_WINDOW),
            ));
        }
    }

    pub fn push(&self, samples: &[super::Sample]) {
        let now = Instant::now().into_std();
        if let Ok(mut r) = self.recent.lock()
            && let Some((name, window)) = r.as_mut()
        {
            for s in samples.iter().filter(|s| &s.metric == name) {
                window.push(now, s.value_ms);
            }
            window.expire(now);
        }
    }

    /// The main latency's name and its p95 over the last [`ROLLING_WINDOW`].
    pub fn rolling_p95(&self) -> Option<(String, f64)> {
        let r = self.recent.lock().ok()?;
        let (name, window) = r.as_ref()?;
        let p95 = window.quantile(Instant::now().into_std(), 0.95)?;
        Some((name.clone(), p95))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_p95_follows_the_main_metric_only() {
        let p = Progress::default();
        assert_eq!(p.rolling_p95(), None);
        p.set_main_metric("ttfa");
        let sample = |metric: &str, value_ms: f64| super::super::Sample {
            metric: metric.into(),
            at_us: 0,
            value_ms,
        };
        let mut batch: Vec<_> = (1..=100).map(|v| sample("ttfa", f64::from(v))).collect();
        batch.push(sample("barge_in", 10_000.0));
        p.push(&batch);
        assert_eq!(p.rolling_p95(), Some(("ttfa".to_string(), 95.0)));
    }
}
