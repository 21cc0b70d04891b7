//! Histograms shared by many users in a few independently locked stripes.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::health::HealthRec;
use super::recorder::{Recorder, new_histogram};

/// Histograms shared by many users, in a few independently locked stripes.
///
/// An HDR histogram with 3 significant figures holds thousands of counters (tens of KB); one
/// set per user would cost far more memory than the user itself. Users record into the stripe
/// of their index instead; the run merges the stripes at the end (exactly: histogram addition).
#[derive(Debug)]
pub struct SharedHistograms {
    pub(super) stripes: Vec<std::sync::Mutex<Stripe>>,
}

impl Default for SharedHistograms {
    fn default() -> Self {
        // Only threads contend for a stripe, never users, and a recording holds the lock for
        // nanoseconds: two stripes per worker thread make a wait rare. Each stripe costs
        // ~0.1–0.25 MB per metric (a 3-significant-figure histogram covering µs to seconds),
        // so a fixed 32 cost ~37 MB on a 2-core machine for nothing (heaptrack of `planrun
        // bench --users 200`: 36.6 of 43 MB peak heap), and four per core still ~1.5 MB more
        // than two on one core.
        let cores = std::thread::available_parallelism().map_or(8, std::num::NonZero::get);
        SharedHistograms::new((cores * 2).clamp(2, 32))
    }
}

#[derive(Debug, Default)]
pub(super) struct Stripe {
    pub(super) histograms: BTreeMap<String, Histogram<u64>>,
    pub(super) send_lag: Option<Histogram<u64>>,
}

impl SharedHistograms {
    pub fn new(stripes: usize) -> Self {
        SharedHistograms {
            stripes: (0..stripes.max(1))
                .map(|_| std::sync::Mutex::new(Stripe::default()))
                .collect(),
        }
    }

    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// The send lag recorded so far (all stripes added), without taking it.
    pub fn send_lag_snapshot(&self) -> Option<Histogram<u64>> {
        let mut total: Option<Histogram<u64>> = None;
        for stripe in &self.stripes {
            let Ok(s) = stripe.lock() else { continue };
            if let Some(h) = &s.send_lag {
                match &mut total {
                    Some(t) => {
                        let _ = t.add(h);
                    }
                    None => total = Some(h.clone()),
                }
            }
        }
        total
    }

    /// Move everything recorded so far into `rec` (generator-health entries into
    /// `rec.health`).
    pub fn drain_into(&self, rec: &mut Recorder) {
        for stripe in &self.stripes {
            let Ok(mut s) = stripe.lock() else { continue };
            let mut histograms = std::mem::take(&mut s.histograms);
            let mut health = HealthRec::default();
            if let Some(h) = histograms.remove(SPEECH_END_LAG_KEY) {
                health.speech_end_lag = Some(h);
            }
            let actual: Vec<String> = histograms
                .keys()
                .filter(|k| k.starts_with(FROM_ACTUAL_PREFIX))
                .cloned()
                .collect();
            for key in actual {
                if let Some(h) = histograms.remove(&key) {
                    let metric = key.trim_start_matches(FROM_ACTUAL_PREFIX).to_string();
                    health.from_actual_end.insert(metric, h);
                }
            }
            let taken = Recorder {
                histograms,
                send_lag: s.send_lag.take(),
                health,
                ..Recorder::default()
            };
            rec.merge(taken);
        }
    }
}

/// Keys under which generator-health histograms travel through the shared store.
pub(super) const SPEECH_END_LAG_KEY: &str = "\u{0}speech_end_lag";
pub(super) const FROM_ACTUAL_PREFIX: &str = "\u{0}actual:";

pub(super) fn record_into(
    histograms: &mut BTreeMap<String, Histogram<u64>>,
    metric: &str,
    us: u64,
) {
    // No allocation on the hot path: the key is only copied the first time.
    let h = match histograms.get_mut(metric) {
        Some(h) => h,
        None => histograms
            .entry(metric.to_string())
            .or_insert_with(new_histogram),
    };
    // ok to ignore: auto-resizing histograms accept any u64
    let _ = h.record(us.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn grouped_samples_go_to_the_stripes_beside_the_overall_ones() {
        let store = Arc::new(SharedHistograms::new(2));
        let groups = ["scenario:a".to_string(), "tag:t".to_string()];
        let mut users: Vec<Recorder> = (0..4)
            .map(|u| Recorder {
                shared: Some((store.clone(), u % store.stripes())),
                ..Recorder::default()
            })
            .collect();
        let mut local = Recorder::default();
        for rec in users.iter_mut() {
            for ms in 1..=10 {
                rec.record_grouped("ttfa", Duration::from_millis(ms), &groups);
                local.record_grouped("ttfa", Duration::from_millis(ms), &groups);
            }
            assert!(rec.histograms.is_empty(), "nothing per user");
        }
        let mut total = Recorder::default();
        store.drain_into(&mut total);
        assert_eq!(
            total.histograms.keys().collect::<Vec<_>>(),
            ["ttfa", "ttfa{scenario:a}", "ttfa{tag:t}"]
        );
        assert_eq!(total.histograms, local.histograms);
        assert_eq!(total.histograms["ttfa{tag:t}"].len(), 40);
    }

    #[test]
    fn shared_stripes_give_the_same_histograms_as_local_recording() {
        let store = Arc::new(SharedHistograms::new(4));
        let mut local = Recorder::default();
        let mut users: Vec<Recorder> = (0..8)
            .map(|u| Recorder {
                shared: Some((store.clone(), u % store.stripes())),
                ..Recorder::default()
            })
            .collect();
        for (u, rec) in users.iter_mut().enumerate() {
            for i in 0..50u64 {
                let d = Duration::from_micros(1000 + 37 * i + u as u64);
                rec.record("ttfa", d);
                local.record("ttfa", d);
                rec.record_send_lag(d / 10);
                local.record_send_lag(d / 10);
                rec.record_speech_end_lag(d / 20);
                local.record_speech_end_lag(d / 20);
                rec.record_from_actual_end("ttfa", d / 2);
                local.record_from_actual_end("ttfa", d / 2);
            }
            // Users keep no histograms of their own.
            assert!(rec.histograms.is_empty() && rec.send_lag.is_none());
        }
        let mut total = Recorder::default();
        for rec in users {
            total.merge(rec);
        }
        store.drain_into(&mut total);
        assert_eq!(total.histograms.keys().collect::<Vec<_>>(), ["ttfa"]);
        assert_eq!(total.histograms["ttfa"], local.histograms["ttfa"]);
        assert_eq!(total.send_lag, local.send_lag);
        assert_eq!(total.health.speech_end_lag, local.health.speech_end_lag);
        assert_eq!(
            total.health.from_actual_end["ttfa"],
            local.health.from_actual_end["ttfa"]
        );
        // Drained: a second drain adds nothing.
        let mut again = Recorder::default();
        store.drain_into(&mut again);
        assert!(again.histograms.is_empty() && again.send_lag.is_none());
    }
}
