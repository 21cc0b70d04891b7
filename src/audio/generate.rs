//! Generated sources: silence, a faded sine tone, seeded white noise.

use std::f64::consts::{PI, SQRT_2};
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use super::{Clip, FULL_SCALE, TONE_FADE, duration_to_samples, to_i16_scaled};

/// `d` of digital silence at `rate` (`trailing` is 0: the silence is the clip's content).
pub fn silence(d: Duration, rate: u32) -> Clip {
    Clip {
        samples: vec![0; duration_to_samples(d, rate)],
        sample_rate: rate,
        trailing: 0,
    }
}

/// A sine of `freq_hz` lasting `d`, whose RMS is `level_dbfs` (so a sine at -3.01 dBFS peaks
/// at full scale; louder levels clip). It starts at phase 0 and has a 5 ms raised-cosine fade
/// in and out (shortened to half the clip for clips under 10 ms) to avoid clicks; the fades
/// lower the measured RMS of a 1 s tone by about 0.03 dB. Frequencies above Nyquist alias.
pub fn tone(d: Duration, freq_hz: f64, level_dbfs: f64, rate: u32) -> Clip {
    let n = duration_to_samples(d, rate);
    let amplitude = FULL_SCALE * SQRT_2 * 10f64.powf(level_dbfs / 20.0);
    let fade = duration_to_samples(TONE_FADE, rate).min(n / 2);
    let step = 2.0 * PI * freq_hz / f64::from(rate.max(1));
    let samples = (0..n)
        .map(|i| {
            let edge = i.min(n - 1 - i);
            let gain = if edge < fade {
                0.5 * (1.0 - (PI * edge as f64 / fade as f64).cos())
            } else {
                1.0
            };
            to_i16_scaled(amplitude * gain * (step * i as f64).sin())
        })
        .collect();
    Clip {
        samples,
        sample_rate: rate,
        trailing: 0,
    }
}

/// White noise lasting `d` with RMS `level_dbfs` (uniformly distributed samples, so levels up
/// to -4.77 dBFS do not clip). Seeded: the same seed gives the same samples (for a given
/// build; `StdRng`'s algorithm may change between `rand` versions).
pub fn noise(d: Duration, level_dbfs: f64, rate: u32, seed: u64) -> Clip {
    let n = duration_to_samples(d, rate);
    // A uniform distribution on [-a, a] has RMS a / sqrt(3).
    let a = FULL_SCALE * 3f64.sqrt() * 10f64.powf(level_dbfs / 20.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let samples = (0..n)
        .map(|_| to_i16_scaled(a * rng.random_range(-1.0..1.0)))
        .collect();
    Clip {
        samples,
        sample_rate: rate,
        trailing: 0,
    }
}
