//! The trace of one call: what it leaves for the timeline (notable instants and timestamped
//! measurements), recorded the same way by WebSocket sessions and HTTP calls.

use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{Marker, Recorder, Sample};

/// What an iteration leaves for the timeline: notable instants and timestamped measurements.
#[derive(Debug, Default)]
pub struct Trace {
    pub markers: Vec<Marker>,
    pub samples: Vec<Sample>,
    /// What the caller heard from the moment of connecting (when asked to keep it).
    pub heard: Vec<i16>,
}

/// Builds a call's [`Trace`], timestamping against the run's start.
#[derive(Debug)]
pub(super) struct CallRecorder {
    run_start: Instant,
    pub(super) trace: Trace,
}

impl CallRecorder {
    pub(super) fn new(run_start: Instant) -> Self {
        CallRecorder {
            run_start,
            trace: Trace::default(),
        }
    }

    /// Microseconds from the run's start to `at`.
    pub(super) fn run_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.run_start).as_micros() as u64
    }

    /// Record a measurement taken at `at`: into `rec`'s histograms and onto the timeline.
    pub(super) fn record(
        &mut self,
        rec: &mut Recorder,
        groups: &[String],
        metric: &str,
        value: Duration,
        at: Instant,
    ) {
        rec.record_grouped(metric, value, groups);
        self.sample(metric, value, at);
    }

    /// Put a measurement taken at `at` on the timeline only.
    pub(super) fn sample(&mut self, metric: &str, value: Duration, at: Instant) {
        let at_us = self.run_us(at);
        self.trace.samples.push(Sample {
            metric: metric.to_string(),
            at_us,
            value_ms: crate::metrics::sample_ms(value),
        });
    }

    /// Put a notable instant on the timeline.
    pub(super) fn mark(&mut self, kind: &str, at: Instant, detail: String) {
        let at_us = self.run_us(at);
        self.trace.markers.push(Marker {
            kind: kind.to_string(),
            at_us,
            detail,
        });
    }

    /// The finished trace.
    pub(super) fn finish(self) -> Trace {
        self.trace
    }
}
