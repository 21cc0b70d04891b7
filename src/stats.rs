//! Statistics every layer shares: quantiles of plain samples (nearest rank), quantiles of HDR
//! histograms in milliseconds, and rolling windows. One rank rule for the whole crate, so a
//! threshold, the progress line and a chart never disagree about what "p95" means.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Nearest-rank quantile of ascending `sorted` values: the value at rank ⌈n·q⌉ (at least the
/// first). Panics on an empty slice.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Sort `values` ascending (total order, so NaN cannot panic).
pub fn sort(values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
}

/// Nearest-rank quantile of unsorted values (sorts them in place); None when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    sort(values);
    Some(nearest_rank(values, q))
}

/// The middle element of ascending `sorted` values (the upper one of an even count).
/// Panics on an empty slice.
pub fn upper_median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// A histogram's value at quantile `q` (its values in µs), in milliseconds, unrounded.
pub fn hist_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Microseconds as milliseconds rounded to whole microseconds (3 decimals).
pub fn us_to_ms3(us: u64) -> f64 {
    (us as f64).round() / 1000.0
}

/// Round to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// p50, p99 and max of a histogram (µs) in ms with 3 decimals; all None when it is absent or
/// empty.
pub fn p50_p99_max_ms(h: Option<&Histogram<u64>>) -> (Option<f64>, Option<f64>, Option<f64>) {
    match h.filter(|h| !h.is_empty()) {
        Some(h) => (
            Some(us_to_ms3(h.value_at_quantile(0.5))),
            Some(us_to_ms3(h.value_at_quantile(0.99))),
            Some(us_to_ms3(h.max())),
        ),
        None => (None, None, None),
    }
}

/// Median of the last `window` points at each point (points are `(x, value)`, in x order).
pub fn rolling_median(pts: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(pts.len());
    for i in 0..pts.len() {
        let lo = i.saturating_sub(window - 1);
        let mut w: Vec<f64> = pts[lo..=i].iter().map(|p| p.1).collect();
        sort(&mut w);
        out.push((pts[i].0, upper_median(&w)));
    }
    out
}

/// Values of the last `span` of wall time, for a rolling percentile.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    span: Duration,
    values: VecDeque<(Instant, f64)>,
}

impl RollingWindow {
    pub fn new(span: Duration) -> Self {
        RollingWindow {
            span,
            values: VecDeque::new(),
        }
    }

    /// Add a value seen at `now`, and forget values older than the span.
    pub fn push(&mut self, now: Instant, value: f64) {
        self.values.push_back((now, value));
        self.expire(now);
    }

    /// Forget values more than the span before `now`.
    pub fn expire(&mut self, now: Instant) {
        while self
            .values
            .front()
            .is_some_and(|(t, _)| now - *t > self.span)
        {
            self.values.pop_front();
        }
    }

    /// Nearest-rank quantile of the values within the span before `now`; None when none.
    pub fn quantile(&self, now: Instant, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .values
            .iter()
            .filter(|(t, _)| now - *t <= self.span)
            .map(|(_, v)| *v)
            .collect();
        quantile(&mut v, q)
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_rule() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.95), 95.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert_eq!(nearest_rank(&v, 1.0), 100.0);
        assert_eq!(nearest_rank(&[7.0], 0.5), 7.0);
        let mut u = vec![3.0, 1.0, 2.0];
        assert_eq!(quantile(&mut u, 0.5), Some(2.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn rolling_median_of_the_last_points() {
        let pts: Vec<(f64, f64)> = [5.0, 1.0, 3.0, 100.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        let m = rolling_median(&pts, 3);
        assert_eq!(
            m.iter().map(|p| p.1).collect::<Vec<_>>(),
            [5.0, 5.0, 3.0, 3.0]
        );
    }

    #[test]
    fn rolling_window_forgets_old_values() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10));
        for i in 0..20u64 {
            w.push(t0 + Duration::from_secs(i), i as f64);
        }
        let now = t0 + Duration::from_secs(19);
        // 9..=19 remain (11 values); p95 at rank ceil(10.45) = 11.
        assert_eq!(w.quantile(now, 0.95), Some(19.0));
        assert_eq!(w.quantile(now, 0.0), Some(9.0));
    }

    #[test]
    fn histogram_helpers() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in [1_000u64, 2_000, 3_000] {
            h.record(us).unwrap();
        }
        assert_eq!(hist_ms(&h, 0.5), 2.0);
        let top = us_to_ms3(h.max()); // 3.001: HDR's bucket at 3 significant figures
        assert_eq!(p50_p99_max_ms(Some(&h)), (Some(2.0), Some(top), Some(top)));
        assert_eq!(p50_p99_max_ms(None), (None, None, None));
    }
}
