//! Plain totals and statistics that are summed exactly across users and shards.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::round3;

/// Iteration counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IterationCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl IterationCounts {
    /// Fraction of iterations that succeeded (None when none ran).
    pub fn success_rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.succeeded as f64 / self.total as f64)
    }
}

/// Totals of `http_chunks` calls, summed exactly across users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpCounts {
    /// Calls (iterations) that ran, failed ones included.
    pub calls: u64,
    /// Chunks answered (a response read and parsed).
    pub chunks: u64,
    /// Audio in the answered chunks, µs.
    pub audio_us: u64,
    /// Summed request → parsed-response time of the answered chunks, µs.
    pub busy_us: u64,
    /// Summed wall time of the calls, µs.
    pub call_us: u64,
}

impl HttpCounts {
    pub fn add(&mut self, o: &HttpCounts) {
        self.calls += o.calls;
        self.chunks += o.chunks;
        self.audio_us += o.audio_us;
        self.busy_us += o.busy_us;
        self.call_us += o.call_us;
    }
}

/// Passed/failed counts of one `check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckCounts {
    pub passed: u64,
    pub failed: u64,
}

/// Statistics of one metric, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricStats {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl MetricStats {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| round3(us as f64 / 1000.0);
        MetricStats {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: round3(h.mean() / 1000.0),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}
