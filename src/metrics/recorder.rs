//! A virtual user's recorder: histograms (µs), counters and the iteration timeline, merged
//! exactly (histogram addition) into one at the end of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::arrivals::ArrivalStats;
use super::failure::IterationRecord;
use super::health::HealthRec;
use super::outcomes::{Outcomes, Windows};
use super::stripes::{FROM_ACTUAL_PREFIX, SPEECH_END_LAG_KEY, SharedHistograms, record_into};
use crate::contract::{CheckCounts, HttpCounts};

thread_local! {
    /// The grouped key being recorded (reused: no allocation per sample).
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

pub(super) fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant figures (values in µs).
    Histogram::new(3).expect("3 significant figures is valid") // ok: only sigfig > 5 fails
}

/// Everything one virtual user measured. Owned by the user; merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Where histogram values go instead of this recorder's own maps (the shared store and
    /// this user's stripe), when the engine set one.
    pub shared: Option<(std::sync::Arc<SharedHistograms>, usize)>,
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Lateness of each outgoing audio frame against its absolute schedule.
    pub send_lag: Option<Histogram<u64>>,
    /// Finished iterations, folded into bounded counts and a failure sample (the iterations
    /// themselves are streamed to the timeline, never kept).
    pub outcomes: Outcomes,
    /// Per-slot values for windowed thresholds (only when configured: the run's central
    /// recorder, never a virtual user's).
    pub windows: Windows,
    /// `check` outcomes by check name.
    pub checks: BTreeMap<String, CheckCounts>,
    /// (`http_chunks`) chunk and call totals.
    pub http: HttpCounts,
    /// The generator's own health (speech-end lag, latencies from the actual end of speech).
    pub health: HealthRec,
    /// Open model / ramping stages: scheduled starts, drops, late starts and start lag.
    pub arrivals: Option<ArrivalStats>,
}

impl Recorder {
    pub fn check(&mut self, name: &str, passed: bool) {
        let c = self.checks.entry(name.to_string()).or_default();
        if passed {
            c.passed += 1;
        } else {
            c.failed += 1;
        }
    }

    pub fn record(&mut self, metric: &str, value: Duration) {
        let us = value.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some((store, i)) = &self.shared
            && let Some(Ok(mut stripe)) = store.stripes.get(*i).map(|s| s.lock())
        {
            return record_into(&mut stripe.histograms, metric, us);
        }
        record_into(&mut self.histograms, metric, us);
    }

    /// Record `metric`, and under each breakdown group (`ttfa{scenario:weather}`): the
    /// grouped histograms live beside the overall ones (in the shared stripes), so they cost
    /// scenarios × metrics histograms per stripe, nothing per user or per call.
    pub fn record_grouped(&mut self, metric: &str, value: Duration, groups: &[String]) {
        if groups.is_empty() {
            return self.record(metric, value);
        }
        let us = value.as_micros().min(u128::from(u64::MAX)) as u64;
        KEY.with(|k| {
            let mut key = k.borrow_mut();
            // One lock of the user's stripe for the metric and all its groups.
            let mut stripe = match &self.shared {
                Some((store, i)) => store.stripes.get(*i).and_then(|s| s.lock().ok()),
                None => None,
            };
            let histograms = match stripe.as_deref_mut() {
                Some(s) => &mut s.histograms,
                None => &mut self.histograms,
            };
            record_into(histograms, metric, us);
            for g in groups {
                key.clear();
                key.push_str(metric);
                key.push('{');
                key.push_str(g);
                key.push('}');
                record_into(histograms, &key, us);
            }
        });
    }

    /// How late the frame ending an utterance left (generator health).
    pub fn record_speech_end_lag(&mut self, lag: Duration) {
        if self.shared.is_some() {
            return self.record(SPEECH_END_LAG_KEY, lag);
        }
        self.health.record_speech_end_lag(lag);
    }

    /// `metric` measured from the actual end of speech (generator health, out of thresholds).
    pub fn record_from_actual_end(&mut self, metric: &str, value: Duration) {
        if self.shared.is_some() {
            return self.record(&format!("{FROM_ACTUAL_PREFIX}{metric}"), value);
        }
        self.health.record_from_actual_end(metric, value);
    }

    pub fn record_send_lag(&mut self, lag: Duration) {
        let us = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some((store, i)) = &self.shared
            && let Some(Ok(mut stripe)) = store.stripes.get(*i).map(|s| s.lock())
        {
            let _ = stripe
                .send_lag
                .get_or_insert_with(new_histogram)
                .record(us.max(1));
            return;
        }
        let _ = self
            .send_lag
            .get_or_insert_with(new_histogram)
            .record(us.max(1));
    }

    /// Fold one finished iteration into the bounded aggregates.
    pub fn iteration(&mut self, rec: IterationRecord) {
        self.outcomes.add(&rec);
        self.windows.add(&rec, crate::plan::SUCCESS_RATE);
    }

    /// Merge another recorder into this one (exact: histogram addition).
    pub fn merge(&mut self, other: Recorder) {
        for (name, h) in other.histograms {
            match self.histograms.get_mut(&name) {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    self.histograms.insert(name, h);
                }
            }
        }
        if let Some(h) = other.send_lag {
            match &mut self.send_lag {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => self.send_lag = Some(h),
            }
        }
        self.outcomes.merge(other.outcomes);
        self.windows.merge(other.windows);
        self.http.add(&other.http);
        self.health.merge(other.health);
        if let Some(a) = other.arrivals {
            self.arrivals.get_or_insert_with(Default::default).merge(a);
        }
        for (name, c) in other.checks {
            let mine = self.checks.entry(name).or_default();
            mine.passed += c.passed;
            mine.failed += c.failed;
        }
    }
}
