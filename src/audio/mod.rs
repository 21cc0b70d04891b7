//! Audio sources for virtual users: WAV decoding, resampling, framing, generated sources and
//! level measurement.
//!
//! Everything here happens **once, at plan-compile time**: a WAV is read, converted to mono
//! PCM16, resampled to the target protocol rate with rubato, and the resulting [`Clip`] is
//! shared read-only (`Arc<Clip>`) by every virtual user. Nothing in this module is meant to run
//! per frame except [`Clip::frames`] (which borrows full frames without copying) and the level
//! meters [`dbfs`] / [`dbfs_le_bytes`] (which do not allocate).
//!
//! Resampling is never done per frame, and [`load_wav`] does not resample at all when the file's
//! rate already equals the target rate (the samples are passed through bit-exact for 16-bit mono
//! files).
//!
//! This module knows nothing about plans, protocols or sockets.

mod generate;
mod level;
mod resample;
mod wav;

pub use generate::{noise, silence, tone};
pub use level::{dbfs, dbfs_le_bytes};
pub use resample::resample;
pub use wav::{WavFormat, load_wav, wav_format, write_wav};

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Lowest sample rate accepted for files, targets and written WAVs.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest sample rate accepted for files, targets and written WAVs.
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Floor returned by [`dbfs`] / [`dbfs_le_bytes`] for silence, so arithmetic stays finite.
pub const DBFS_FLOOR: f64 = -120.0;

/// PCM16 full scale used for dBFS: a square wave at ±32768 is 0 dBFS.
const FULL_SCALE: f64 = 32768.0;
/// Length of the fade in and fade out applied by [`tone`].
const TONE_FADE: Duration = Duration::from_millis(5);
/// How to convert an unsupported WAV; used in error messages.
const SOX_HINT: &str = "convert with `sox in.wav -e signed-integer -b 16 out.wav`";

/// Mono PCM16 audio at a known sample rate, shared read-only by all virtual users (wrap in
/// `Arc` at call sites).
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Mono PCM16 samples.
    pub samples: Vec<i16>,
    /// Samples per second.
    pub sample_rate: u32,
    /// Number of samples of trailing digital silence appended by
    /// [`Clip::with_trailing_silence`] (speech ends at `samples.len() - trailing`). 0 for files
    /// and for the generated sources.
    pub trailing: usize,
}

impl Clip {
    /// Length of the clip (`samples.len() / sample_rate`, rounded to the nearest nanosecond).
    /// A clip with a sample rate of 0 has zero duration.
    pub fn duration(&self) -> Duration {
        samples_to_duration(self.samples.len(), self.sample_rate)
    }

    /// Index where the user's speech ends (`samples.len() - trailing`).
    pub fn speech_end(&self) -> usize {
        self.samples.len().saturating_sub(self.trailing)
    }

    /// Append `d` of digital silence (rounded to the nearest sample) and count it in
    /// `trailing`.
    pub fn with_trailing_silence(mut self, d: Duration) -> Clip {
        let n = duration_to_samples(d, self.sample_rate);
        self.samples.resize(self.samples.len().saturating_add(n), 0);
        self.trailing = self.trailing.saturating_add(n);
        self
    }

    /// Number of samples per frame of length `frame`, rounded to the nearest sample (halves
    /// round up) and at least 1. For example 20 ms at 16 kHz is 320, 10 ms at 44.1 kHz is 441.
    pub fn frame_len(&self, frame: Duration) -> usize {
        duration_to_samples(frame, self.sample_rate).max(1)
    }

    /// Iterate frames of [`Clip::frame_len`] samples. Full frames are borrowed; the final
    /// partial frame is copied and zero-padded to full length, so every frame has the same
    /// duration and real-time pacing stays exact. An empty clip yields no frames.
    pub fn frames(&self, frame: Duration) -> impl Iterator<Item = Cow<'_, [i16]>> {
        let n = self.frame_len(frame);
        self.samples.chunks(n).map(move |chunk| {
            if chunk.len() == n {
                Cow::Borrowed(chunk)
            } else {
                let mut padded = chunk.to_vec();
                padded.resize(n, 0);
                Cow::Owned(padded)
            }
        })
    }

    /// Number of frames [`Clip::frames`] yields (`ceil(samples.len() / frame_len)`).
    pub fn frame_count(&self, frame: Duration) -> usize {
        self.samples.len().div_ceil(self.frame_len(frame))
    }
}

/// Why audio could not be loaded, resampled or written. Every message about a file starts with
/// the file's path as given.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file does not exist.
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but could not be read (permissions, a directory, I/O error).
    #[error("{}: cannot read file: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The file is not a RIFF/WAVE file, or its header is malformed.
    #[error("{}: not a WAV file ({detail})", path.display())]
    NotWav { path: PathBuf, detail: String },
    /// A WAV file in an encoding this module does not decode (float other than 32-bit, µ-law,
    /// A-law, ADPCM, RF64, …). `format` describes it, e.g. "24-bit float".
    #[error("{}: {format} WAV is not supported; {SOX_HINT}", path.display())]
    Unsupported { path: PathBuf, format: String },
    /// The header was fine but the sample data could not be read (e.g. a truncated file).
    #[error("{}: corrupt or truncated WAV data ({detail})", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The WAV holds no complete sample frame.
    #[error("{}: empty (no samples)", path.display())]
    Empty { path: PathBuf },
    /// The file's sample rate is outside `MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE`.
    #[error(
        "{}: sample rate {rate} Hz is not supported (expected {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz)",
        path.display()
    )]
    FileSampleRate { path: PathBuf, rate: u32 },
    /// A requested rate (target, resample argument, write rate) is out of range.
    #[error(
        "{what} sample rate {rate} Hz is not supported (expected {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz)"
    )]
    InvalidRate { what: &'static str, rate: u32 },
    /// rubato failed (should not happen for valid rates).
    #[error("cannot resample {from} Hz to {to} Hz: {detail}")]
    Resample { from: u32, to: u32, detail: String },
    /// rubato failed while loading a file (should not happen for valid rates).
    #[error("{}: cannot resample {from} Hz to {to} Hz: {detail}", path.display())]
    ResampleFile {
        path: PathBuf,
        from: u32,
        to: u32,
        detail: String,
    },
    /// Writing a WAV failed.
    #[error("{}: cannot write WAV: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Convert a float sample in [-1, 1] to PCM16 (rounded, clipped).
fn to_i16(x: f64) -> i16 {
    to_i16_scaled(x * FULL_SCALE)
}

/// Round and clip a value already scaled to PCM16 units. NaN becomes 0.
fn to_i16_scaled(x: f64) -> i16 {
    // `as` saturates and maps NaN to 0; the clamp documents the intent.
    x.round().clamp(-FULL_SCALE, FULL_SCALE - 1.0) as i16
}

/// `round(d * rate)` samples.
fn duration_to_samples(d: Duration, rate: u32) -> usize {
    let n = (d.as_nanos() * u128::from(rate) + 500_000_000) / 1_000_000_000;
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn samples_to_duration(n: usize, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let rate = u128::from(rate);
    let nanos = (n as u128 * 1_000_000_000 + rate / 2) / rate;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
