//! Load shapes as pure schedules: when open-model callers arrive ([`ArrivalSpec::arrivals`])
//! and how many closed-model users the ramping stages want at each instant
//! ([`user_steps`]). No clock, no I/O: the engine sleeps until the instants these return.
//!
//! The schedule types themselves ([`ArrivalSpec`], [`Segment`], [`Pattern`]) are plan data and
//! live in [`crate::plan::load_shape`]; this module adds the walking of them.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::plan::load_shape::{ArrivalSpec, Pattern, Segment};

/// How far behind its scheduled instant a caller may start before it is counted as a late
/// start (it still runs, and its lag is in the start-lag histogram). Defined with the arrival
/// statistics, which report it.
pub use crate::metrics::LATE_TOLERANCE;

impl ArrivalSpec {
    /// Scheduled instants (since the run start) of this generator's arrivals, in order, as
    /// (global arrival number, offset). Lazy: a long run at a high rate holds no list.
    pub fn arrivals(&self) -> Arrivals {
        Arrivals {
            profile: self.profile.clone(),
            pattern: self.pattern,
            rng: StdRng::seed_from_u64(self.seed ^ 0xA11_1DE5_5EED),
            seg: 0,
            seg_start_area: 0.0,
            seg_start_t: 0.0,
            next_area: 0.0,
            number: 0,
            first: true,
            shard: self.shard,
        }
    }

    /// How many arrivals this generator will schedule (walks the schedule).
    pub fn count(&self) -> u64 {
        self.arrivals().count() as u64
    }
}

/// Iterator over the arrivals of an [`ArrivalSpec`].
#[derive(Debug)]
pub struct Arrivals {
    profile: Vec<Segment>,
    pattern: Pattern,
    rng: StdRng,
    seg: usize,
    /// Expected arrivals before the current segment.
    seg_start_area: f64,
    /// Start of the current segment, seconds.
    seg_start_t: f64,
    /// Expected-arrival count at which the next arrival falls.
    next_area: f64,
    /// Global number of the next arrival.
    number: u64,
    first: bool,
    shard: (u32, u32),
}

/// Area of a linear piece: expected arrivals in it.
fn area(s: &Segment) -> f64 {
    (s.from + s.to) / 2.0 * s.over.as_secs_f64()
}

/// Time into a linear piece at which `a` expected arrivals have accumulated (0 ≤ a ≤ area).
fn time_into(s: &Segment, a: f64) -> f64 {
    let d = s.over.as_secs_f64();
    if d <= 0.0 {
        return 0.0;
    }
    let k = (s.to - s.from) / d;
    let disc = (s.from * s.from + 2.0 * k * a).max(0.0);
    let denom = s.from + disc.sqrt();
    if denom <= 0.0 {
        return 0.0;
    }
    (2.0 * a / denom).clamp(0.0, d)
}

/// Tolerance of the end-of-schedule comparison (float rounding of the areas).
const EPS: f64 = 1e-9;

impl Arrivals {
    fn advance_area(&mut self) {
        if self.first {
            self.first = false;
            if self.pattern == Pattern::Uniform {
                return;
            }
        }
        self.next_area += match self.pattern {
            Pattern::Uniform => 1.0,
            Pattern::Poisson => {
                let u: f64 = self.rng.random_range(0.0..1.0);
                -(1.0 - u).ln()
            }
        };
    }

    /// The next arrival of the whole (unsharded) schedule.
    fn next_global(&mut self) -> Option<(u64, Duration)> {
        self.advance_area();
        loop {
            let s = self.profile.get(self.seg)?;
            let a = area(s);
            let into = self.next_area - self.seg_start_area;
            // Strictly inside the piece: an arrival exactly at a piece's end belongs to the next
            // one (and one at the very end of the schedule does not happen).
            if into < a - EPS {
                let t = self.seg_start_t + time_into(s, into.max(0.0));
                let n = self.number;
                self.number += 1;
                return Some((n, Duration::from_secs_f64(t.max(0.0))));
            }
            self.seg_start_area += a;
            self.seg_start_t += s.over.as_secs_f64();
            self.seg += 1;
        }
    }
}

impl Iterator for Arrivals {
    type Item = (u64, Duration);

    fn next(&mut self) -> Option<Self::Item> {
        let (index, count) = self.shard;
        loop {
            let (n, t) = self.next_global()?;
            if count <= 1 || n % u64::from(count) == u64::from(index) {
                return Some((n, t));
            }
        }
    }
}

/// Closed-model ramping stages: from 0 users, each piece moves the target linearly. Returns
/// the instants at which the target user count changes, with the new count, in order. The
/// count at time t is the target level rounded up, so a rise from a to b over D starts user
/// n (a < n ≤ b) at (n − 1 − a) / (b − a) · D into the piece, and a fall lets the count reach
/// m (b ≤ m < a) at (a − m) / (a − b) · D.
pub fn user_steps(stages: &[Segment]) -> Vec<(Duration, u32)> {
    let mut out = Vec::new();
    let mut t0 = Duration::ZERO;
    let mut level: u32 = 0;
    for s in stages {
        let a = level;
        let b = s.to.max(0.0).round() as u32;
        let d = s.over;
        if b > a {
            for n in a + 1..=b {
                let f = f64::from(n - 1 - a) / f64::from(b - a);
                out.push((t0 + d.mul_f64(f), n));
            }
        } else if b < a {
            for m in (b..a).rev() {
                let f = f64::from(a - m) / f64::from(a - b);
                out.push((t0 + d.mul_f64(f), m));
            }
        }
        level = b;
        t0 += d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::load_shape::stages_duration;

    fn hold(r: f64, secs: f64) -> Segment {
        Segment {
            from: r,
            to: r,
            over: Duration::from_secs_f64(secs),
        }
    }

    fn spec(profile: Vec<Segment>, pattern: Pattern) -> ArrivalSpec {
        ArrivalSpec {
            profile,
            pattern,
            max_users: 10,
            seed: 7,
            shard: (0, 1),
        }
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_exact() {
        let s = spec(vec![hold(10.0, 2.0)], Pattern::Uniform);
        let v: Vec<(u64, Duration)> = s.arrivals().collect();
        assert_eq!(v.len(), 20);
        for (i, (n, t)) in v.iter().enumerate() {
            assert_eq!(*n, i as u64);
            assert!(
                (t.as_secs_f64() - i as f64 * 0.1).abs() < 1e-6,
                "{i}: {t:?}"
            );
        }
        // 300 per minute is 5/s: 15 arrivals in 3 s.
        assert_eq!(spec(vec![hold(5.0, 3.0)], Pattern::Uniform).count(), 15);
        // A fractional rate: 0.5/s over 5 s → at 0, 2, 4 s.
        let v: Vec<f64> = spec(vec![hold(0.5, 5.0)], Pattern::Uniform)
            .arrivals()
            .map(|(_, t)| t.as_secs_f64())
            .collect();
        assert_eq!(v.len(), 3);
        assert!((v[2] - 4.0).abs() < 1e-6);
    }

    #[test]
    fn linear_ramp_follows_the_integral() {
        // 0 → 10/s over 2 s: 10 expected arrivals; the k-th at sqrt(2k / 5) s.
        let ramp = Segment {
            from: 0.0,
            to: 10.0,
            over: Duration::from_secs(2),
        };
        let v: Vec<f64> = spec(vec![ramp], Pattern::Uniform)
            .arrivals()
            .map(|(_, t)| t.as_secs_f64())
            .collect();
        assert_eq!(v.len(), 10);
        for (k, t) in v.iter().enumerate() {
            let want = (2.0 * k as f64 / 5.0).sqrt();
            assert!((t - want).abs() < 1e-6, "{k}: {t} vs {want}");
        }
        // Then a hold at 10/s for 1 s: 10 more, spaced 0.1 s, from 2.0 s.
        let v: Vec<f64> = spec(vec![ramp, hold(10.0, 1.0)], Pattern::Uniform)
            .arrivals()
            .map(|(_, t)| t.as_secs_f64())
            .collect();
        assert_eq!(v.len(), 20);
        assert!((v[10] - 2.0).abs() < 1e-6 && (v[19] - 2.9).abs() < 1e-6);
        // A fall 10 → 0/s over 2 s mirrors the rise.
        let fall = Segment {
            from: 10.0,
            to: 0.0,
            over: Duration::from_secs(2),
        };
        let v: Vec<f64> = spec(vec![fall], Pattern::Uniform)
            .arrivals()
            .map(|(_, t)| t.as_secs_f64())
            .collect();
        assert_eq!(v.len(), 10);
        assert!(v.windows(2).all(|w| w[1] > w[0]));
        assert!((v[1] - (2.0 - (2.0 * 9.0 / 5.0f64).sqrt())).abs() < 1e-6);
    }

    #[test]
    fn poisson_is_seeded_and_has_the_right_mean() {
        let s = spec(vec![hold(100.0, 100.0)], Pattern::Poisson);
        let a: Vec<Duration> = s.arrivals().map(|(_, t)| t).collect();
        let b: Vec<Duration> = s.arrivals().map(|(_, t)| t).collect();
        assert_eq!(a, b);
        // 10 000 expected; Poisson sd 100.
        assert!((9_500..10_500).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        let other = ArrivalSpec {
            seed: 8,
            ..s.clone()
        };
        let x: Vec<_> = other.arrivals().take(10).collect();
        let y: Vec<_> = s.arrivals().take(10).collect();
        assert_ne!(x, y);
    }

    #[test]
    fn shards_partition_the_schedule() {
        let whole = spec(vec![hold(10.0, 2.0)], Pattern::Uniform);
        let mut union: Vec<(u64, Duration)> = Vec::new();
        for i in 0..3 {
            let shard = whole.for_shard(i, 3);
            let mine: Vec<_> = shard.arrivals().collect();
            assert!(mine.len() == 6 || mine.len() == 7, "{}", mine.len());
            union.extend(mine);
        }
        union.sort_by_key(|(n, _)| *n);
        assert_eq!(union, whole.arrivals().collect::<Vec<_>>());
        let caps: Vec<u32> = (0..3).map(|i| whole.for_shard(i, 3).max_users).collect();
        assert_eq!(caps, vec![4, 3, 3]);
        assert_eq!(whole.for_shard(5, 20).max_users, 1);
    }

    #[test]
    fn user_steps_rise_hold_and_fall() {
        let st = |to: f64, secs: u64| Segment {
            from: f64::NAN,
            to,
            over: Duration::from_secs(secs),
        };
        let steps = user_steps(&[st(4.0, 4), st(4.0, 2), st(0.0, 2)]);
        let ms: Vec<(u128, u32)> = steps.iter().map(|(t, n)| (t.as_millis(), *n)).collect();
        assert_eq!(
            ms,
            vec![
                (0, 1),
                (1000, 2),
                (2000, 3),
                (3000, 4),
                (6500, 3),
                (7000, 2),
                (7500, 1),
                (8000, 0)
            ]
        );
        assert_eq!(
            stages_duration(&[st(4.0, 4), st(4.0, 2), st(0.0, 2)]),
            Duration::from_secs(8)
        );
        // A jump (over 0) changes the count at once.
        let ms: Vec<(u128, u32)> = user_steps(&[st(2.0, 0), st(1.0, 1)])
            .iter()
            .map(|(t, n)| (t.as_millis(), *n))
            .collect();
        assert_eq!(ms, vec![(0, 1), (0, 2), (1000, 1)]);
    }
}
