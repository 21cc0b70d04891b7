//! Resampling with rubato's synchronous FFT resampler, once per clip at load time.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::{AudioError, FULL_SCALE, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, to_i16};

/// Resample mono PCM16 `samples` from `from` Hz to `to` Hz with rubato.
///
/// The output has `round(samples.len() * to / from)` samples, rubato's output delay is
/// trimmed (no leading silence, no time shift), and equal rates return a copy of the input.
/// Both rates must be in 8000..=192000 Hz. Meant to be called once per clip at load time, never
/// per frame (building the resampler costs more than a frame's worth of work).
pub fn resample(samples: &[i16], from: u32, to: u32) -> Result<Vec<i16>, AudioError> {
    check_rate("source", from)?;
    check_rate("target", to)?;
    if from == to {
        return Ok(samples.to_vec());
    }
    let input: Vec<f64> = samples.iter().map(|&s| f64::from(s) / FULL_SCALE).collect();
    let out = resample_f64(&input, from, to)?;
    Ok(out.into_iter().map(to_i16).collect())
}

pub(super) fn check_rate(what: &'static str, rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::InvalidRate { what, rate })
    }
}

pub(super) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `round(len * to / from)` in exact integer arithmetic.
pub(super) fn resampled_len(len: usize, from: u32, to: u32) -> usize {
    let from = u128::from(from.max(1));
    let n = (len as u128 * u128::from(to) + from / 2) / from;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// FFT block size (input frames) and blocks per chunk for the `Fft` resampler.
///
/// The block must hold a whole number of minimum blocks (`rate / gcd` frames on each side).
/// When that makes the input or output block odd, rubato's delay (half a block) is not a whole
/// number of frames and the integer `output_delay` it reports (and `process_all` trims) leaves
/// the output half an input frame early (measured: 44.1 kHz → 16 kHz with a 441-frame block is
/// 11 µs early, which costs 20+ dB in a round trip). So use an even number of minimum blocks
/// whenever either minimum block is odd, aiming at ~256 input frames per block (rubato's
/// default trade-off between delay and filter sharpness).
pub(super) fn fft_blocks(from: u32, to: u32) -> (usize, usize) {
    let g = gcd(from, to).max(1);
    let (min_in, min_out) = ((from / g) as usize, (to / g) as usize);
    let mut k = 256usize.div_ceil(min_in).max(1);
    if (min_in % 2 == 1 || min_out % 2 == 1) && k % 2 == 1 {
        k += 1;
    }
    let block = k * min_in;
    (block, (1024 / block).max(1))
}

/// rubato's synchronous FFT resampler: exact for any pair of integer rates, as good as its best
/// sinc resampler, and fast. Awkward pairs (e.g. 44057 → 16000, gcd 1) just get one large FFT
/// block; the worst case in range (191999 → 8000) takes ~0.15 s once, in a release build.
fn make_resampler(from: u32, to: u32) -> Result<Fft<f64>, rubato::ResamplerConstructionError> {
    let (block, sub_chunks) = fft_blocks(from, to);
    Fft::<f64>::new_custom(
        from as usize,
        to as usize,
        block * sub_chunks,
        sub_chunks,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
}

/// Resample mono f64 audio. rubato's `process_all` trims the resampler's output delay (so an
/// event at input time t appears at output time t); we then cut or zero-pad to exactly
/// `round(len * to / from)` samples (rubato returns `ceil`).
pub(super) fn resample_f64(input: &[f64], from: u32, to: u32) -> Result<Vec<f64>, AudioError> {
    let failed = |detail: String| AudioError::Resample { from, to, detail };
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let mut resampler = make_resampler(from, to).map_err(|e| failed(e.to_string()))?;
    let adapter =
        InterleavedSlice::new(input, 1, input.len()).map_err(|e| failed(e.to_string()))?;
    let out = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| failed(e.to_string()))?;
    let mut out = out.take_data();
    out.resize(resampled_len(input.len(), from, to), 0.0);
    Ok(out)
}
