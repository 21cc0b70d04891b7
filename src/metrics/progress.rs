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
    recent: std::sync::Mutex<(String, std::collections::VecDeque<(Instant, f64)>)>,
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
            r.0 = name.to_string();
        }
    }

    pub fn push(&self, samples: &[super::Sample]) {
        let now = Instant::now();
        if let Ok(mut r) = self.recent.lock() {
            let (name, q) = &mut *r;
            for s in samples.iter().filter(|s| &s.metric == name) {
                q.push_back((now, s.value_ms));
            }
            while q.front().is_some_and(|(t, _)| now - *t > ROLLING_WINDOW) {
                q.pop_front();
            }
        }
    }

    /// The main latency's name and its p95 over the last [`ROLLING_WINDOW`].
    pub fn rolling_p95(&self) -> Option<(String, f64)> {
        let r = self.recent.lock().ok()?;
        let now = Instant::now();
        let mut v: Vec<f64> =
            r.1.iter()
                .filter(|(t, _)| now - *t <= ROLLING_WINDOW)
                .map(|(_, ms)| *ms)
                .collect();
        crate::stats::quantile(&mut v, 0.95).map(|p95| (r.0.clone(), p95))
    }
}
