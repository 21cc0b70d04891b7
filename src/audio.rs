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

use std::borrow::Cow;
use std::f64::consts::{PI, SQRT_2};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

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

/// Decode a WAV once into a mono PCM16 [`Clip`] at `target_rate`.
///
/// * Accepts PCM integer 8/16/24/32-bit and 32-bit IEEE float, plain or
///   `WAVE_FORMAT_EXTENSIBLE`. Samples wider than 16 bits are rounded (no dither); float
///   samples are clipped to full scale.
/// * **Multi-channel files are downmixed to mono by averaging the channels** (so a signal
///   present in only one of two channels ends up 6 dB quieter).
/// * A file whose rate differs from `target_rate` is resampled once, here, with rubato's
///   synchronous FFT resampler (see [`resample`]). The output has
///   `round(len * target / source)` samples and rubato's output delay is trimmed, so speech is
///   not shifted in time. When the rates match nothing is resampled.
/// * Rejects, with a message naming `path`: a missing or unreadable file, a file that is not a
///   WAV, an unsupported encoding (with a `sox` command to convert it), a file with no samples,
///   and a sample rate outside 8000..=192000 Hz. `target_rate` must be in that range too.
///
/// The returned clip has `trailing == 0`.
pub fn load_wav(path: &Path, target_rate: u32) -> Result<Clip, AudioError> {
    check_rate("target", target_rate)?;
    let bytes = std::fs::read(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => AudioError::NotFound {
            path: path.to_path_buf(),
        },
        _ => AudioError::Read {
            path: path.to_path_buf(),
            error,
        },
    })?;
    let (mono, rate) = decode_wav(path, &bytes)?;
    if mono.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(AudioError::FileSampleRate {
            path: path.to_path_buf(),
            rate,
        });
    }
    let samples = if rate == target_rate {
        mono.iter().map(|&x| to_i16(x)).collect()
    } else {
        resample_f64(&mono, rate, target_rate)
            .map_err(|detail| AudioError::ResampleFile {
                path: path.to_path_buf(),
                from: rate,
                to: target_rate,
                detail,
            })?
            .into_iter()
            .map(to_i16)
            .collect()
    };
    Ok(Clip {
        samples,
        sample_rate: target_rate,
        trailing: 0,
    })
}

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
    let out = resample_f64(&input, from, to).map_err(|detail| AudioError::Resample {
        from,
        to,
        detail,
    })?;
    Ok(out.into_iter().map(to_i16).collect())
}

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

/// RMS level of `samples` in dBFS relative to full scale 32768 (a full-scale square wave is
/// 0 dBFS; a full-scale sine ≈ -3.01 dBFS).
///
/// Silence (all zeros) and an empty slice return [`DBFS_FLOOR`] (-120.0) rather than
/// `f64::NEG_INFINITY`, and any quieter level is clamped to it, so averages and differences of
/// levels stay finite.
pub fn dbfs(samples: &[i16]) -> f64 {
    level_from_sum(sum_squares(samples.iter().copied()), samples.len())
}

/// Same as [`dbfs`] on raw PCM16 little-endian bytes (the wire format), without allocating. An
/// odd trailing byte is ignored.
pub fn dbfs_le_bytes(bytes: &[u8]) -> f64 {
    let chunks = bytes.chunks_exact(2);
    let n = chunks.len();
    level_from_sum(
        // ok: `chunks_exact(2)` yields 2-byte slices, so indexing 0 and 1 cannot fail.
        sum_squares(chunks.map(|b| i16::from_le_bytes([b[0], b[1]]))),
        n,
    )
}

/// Write `samples` as a mono PCM16 WAV at `rate` (used to save received audio for listening).
/// The parent directory must exist. `rate` must be in 8000..=192000 Hz.
pub fn write_wav(path: &Path, samples: &[i16], rate: u32) -> Result<(), AudioError> {
    check_rate("WAV", rate)?;
    let write_err = |e: hound::Error| AudioError::Write {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(write_err)?;
    for &s in samples {
        writer.write_sample(s).map_err(write_err)?;
    }
    writer.finalize().map_err(write_err)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// What the `fmt ` chunk says, read by our own small RIFF walk so that unsupported encodings get
/// a precise message (hound only says "unsupported").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FmtInfo {
    /// Format tag, with `WAVE_FORMAT_EXTENSIBLE` resolved to its sub-format.
    tag: u16,
    channels: u16,
    bits: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sniff {
    NotWav(String),
    Unsupported(String),
}

const TAG_PCM: u16 = 0x0001;
const TAG_FLOAT: u16 = 0x0003;
const TAG_EXTENSIBLE: u16 = 0xFFFE;

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Printable preview of the first bytes of a file, for "not a WAV file" messages.
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(12)];
    format!("\"{}\"", head.escape_ascii())
}

/// Check the RIFF header and `fmt ` chunk; say precisely what is wrong or unsupported.
fn sniff(bytes: &[u8]) -> Result<FmtInfo, Sniff> {
    if bytes.is_empty() {
        return Err(Sniff::NotWav("the file is 0 bytes long".into()));
    }
    let magic = &bytes[..bytes.len().min(4)];
    match magic {
        b"RIFF" => {}
        b"RIFX" => return Err(Sniff::Unsupported("big-endian (RIFX)".into())),
        b"RF64" | b"BW64" => return Err(Sniff::Unsupported("RF64 (64-bit RIFF)".into())),
        b"FORM" => return Err(Sniff::NotWav("looks like AIFF".into())),
        b"OggS" => return Err(Sniff::NotWav("looks like Ogg".into())),
        b"fLaC" => return Err(Sniff::NotWav("looks like FLAC".into())),
        _ if magic.starts_with(b"ID3") || magic.starts_with(&[0xFF, 0xFB]) => {
            return Err(Sniff::NotWav("looks like MP3".into()));
        }
        _ => {
            return Err(Sniff::NotWav(format!(
                "no RIFF header; the file starts with {}",
                preview(bytes)
            )));
        }
    }
    match bytes.get(8..12) {
        Some(b"WAVE") => {}
        Some(other) => {
            return Err(Sniff::NotWav(format!(
                "RIFF file of type \"{}\", not WAVE",
                other.escape_ascii()
            )));
        }
        None => {
            return Err(Sniff::NotWav(format!(
                "truncated header ({} bytes)",
                bytes.len()
            )));
        }
    }
    let mut pos = 12usize;
    loop {
        let (Some(id), Some(size)) = (bytes.get(pos..pos + 4), le_u32(bytes, pos + 4)) else {
            return Err(Sniff::NotWav("no fmt chunk".into()));
        };
        let body = pos + 8;
        if id == b"fmt " {
            let field = |off: usize| {
                le_u16(bytes, body + off).ok_or_else(|| Sniff::NotWav("truncated fmt chunk".into()))
            };
            if size < 16 {
                return Err(Sniff::NotWav(format!("fmt chunk is only {size} bytes")));
            }
            let tag = field(0)?;
            let channels = field(2)?;
            let mut bits = field(14)?;
            let mut sub_tag = tag;
            if tag == TAG_EXTENSIBLE {
                if size < 40 {
                    return Err(Sniff::NotWav("truncated WAVE_FORMAT_EXTENSIBLE".into()));
                }
                let valid_bits = field(18)?;
                if valid_bits > 0 {
                    bits = valid_bits;
                }
                // The sub-format GUID starts with the plain format tag.
                sub_tag = field(24)?;
            }
            if channels == 0 {
                return Err(Sniff::NotWav("fmt chunk says 0 channels".into()));
            }
            return classify(FmtInfo {
                tag: sub_tag,
                channels,
                bits,
            });
        }
        // Chunks are padded to an even length.
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| body.checked_add(s)?.checked_add(s & 1))
        else {
            return Err(Sniff::NotWav("no fmt chunk".into()));
        };
        pos = next;
    }
}

fn classify(info: FmtInfo) -> Result<FmtInfo, Sniff> {
    let bits = info.bits;
    let unsupported = |s: String| Err(Sniff::Unsupported(s));
    match info.tag {
        TAG_PCM if matches!(bits, 8 | 16 | 24 | 32) => Ok(info),
        TAG_PCM => unsupported(format!("{bits}-bit integer")),
        TAG_FLOAT if bits == 32 => Ok(info),
        TAG_FLOAT => unsupported(format!("{bits}-bit float")),
        0x0002 => unsupported("Microsoft ADPCM".into()),
        0x0011 => unsupported("IMA ADPCM".into()),
        0x0006 => unsupported("A-law".into()),
        0x0007 => unsupported("µ-law".into()),
        0x0031 => unsupported("GSM 6.10".into()),
        0x0050 | 0x0055 => unsupported("MPEG/MP3-in-WAV".into()),
        other => unsupported(format!("format tag 0x{other:04x}")),
    }
}

/// Decode to mono f64 samples in [-1, 1] and the file's sample rate.
fn decode_wav(path: &Path, bytes: &[u8]) -> Result<(Vec<f64>, u32), AudioError> {
    let not_wav = |detail: String| AudioError::NotWav {
        path: path.to_path_buf(),
        detail,
    };
    let info = sniff(bytes).map_err(|s| match s {
        Sniff::NotWav(detail) => not_wav(detail),
        Sniff::Unsupported(format) => AudioError::Unsupported {
            path: path.to_path_buf(),
            format,
        },
    })?;
    let mut reader = hound::WavReader::new(io::Cursor::new(bytes)).map_err(|e| match e {
        hound::Error::Unsupported => AudioError::Unsupported {
            path: path.to_path_buf(),
            format: describe(info),
        },
        hound::Error::IoError(e) => not_wav(format!("truncated header: {e}")),
        other => not_wav(other.to_string()),
    })?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let total = reader.len();
    let corrupt = |read: usize, e: hound::Error| match e {
        hound::Error::Unsupported | hound::Error::TooWide => AudioError::Unsupported {
            path: path.to_path_buf(),
            format: describe(info),
        },
        e => AudioError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("after {read} of {total} samples: {e}"),
        },
    };
    let interleaved: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample.clamp(1, 32) - 1));
            reader
                .samples::<i32>()
                .enumerate()
                .map(|(i, s)| s.map(|v| f64::from(v) * scale).map_err(|e| corrupt(i, e)))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .enumerate()
            .map(|(i, s)| {
                s.map(|v| {
                    let v = f64::from(v);
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
                .map_err(|e| corrupt(i, e))
            })
            .collect::<Result<_, _>>()?,
    };
    let mono = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f64;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f64>() * inv)
            .collect()
    };
    Ok((mono, spec.sample_rate))
}

/// A WAV file's layout as its header declares it (see [`wav_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    pub channels: u16,
    /// Bits per sample (the valid bits of a `WAVE_FORMAT_EXTENSIBLE` file).
    pub bits: u16,
    /// IEEE float samples (otherwise integer PCM).
    pub float: bool,
}

/// Read only the header of a WAV and say what it holds, with the same errors as [`load_wav`]
/// for a missing file, a file that is not a WAV and an unsupported encoding. Reads at most the
/// first 1 MiB, so checking a long recording is cheap.
pub fn wav_format(path: &Path) -> Result<WavFormat, AudioError> {
    use std::io::Read;
    let open = std::fs::File::open(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => AudioError::NotFound {
            path: path.to_path_buf(),
        },
        _ => AudioError::Read {
            path: path.to_path_buf(),
            error,
        },
    })?;
    let mut head = Vec::new();
    open.take(1 << 20)
        .read_to_end(&mut head)
        .map_err(|error| AudioError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    let info = sniff(&head).map_err(|s| match s {
        Sniff::NotWav(detail) => AudioError::NotWav {
            path: path.to_path_buf(),
            detail,
        },
        Sniff::Unsupported(format) => AudioError::Unsupported {
            path: path.to_path_buf(),
            format,
        },
    })?;
    Ok(WavFormat {
        channels: info.channels,
        bits: info.bits,
        float: info.tag == TAG_FLOAT,
    })
}

fn describe(info: FmtInfo) -> String {
    let kind = match info.tag {
        TAG_PCM => "integer",
        TAG_FLOAT => "float",
        _ => "encoded",
    };
    format!("{}-channel {}-bit {kind}", info.channels, info.bits)
}

// ---------------------------------------------------------------------------------------------
// Resampling

fn check_rate(what: &'static str, rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::InvalidRate { what, rate })
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `round(len * to / from)` in exact integer arithmetic.
fn resampled_len(len: usize, from: u32, to: u32) -> usize {
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
fn fft_blocks(from: u32, to: u32) -> (usize, usize) {
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
fn make_resampler(from: u32, to: u32) -> Result<Fft<f64>, String> {
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
    .map_err(|e| e.to_string())
}

/// Resample mono f64 audio. rubato's `process_all` trims the resampler's output delay (so an
/// event at input time t appears at output time t); we then cut or zero-pad to exactly
/// `round(len * to / from)` samples (rubato returns `ceil`).
fn resample_f64(input: &[f64], from: u32, to: u32) -> Result<Vec<f64>, String> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let mut resampler = make_resampler(from, to)?;
    let adapter = InterleavedSlice::new(input, 1, input.len()).map_err(|e| e.to_string())?;
    let out = resampler
        .process_all(&adapter, input.len(), None)
        .map_err(|e| e.to_string())?;
    let mut out = out.take_data();
    out.resize(resampled_len(input.len(), from, to), 0.0);
    Ok(out)
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

fn sum_squares(samples: impl Iterator<Item = i16>) -> u64 {
    // Each square is at most 2^30, so u64 cannot overflow below 2^34 samples (~4 days at 48 kHz).
    samples
        .map(|s| {
            let s = i64::from(s);
            (s * s) as u64
        })
        .fold(0u64, u64::saturating_add)
}

fn level_from_sum(sum: u64, n: usize) -> f64 {
    if sum == 0 || n == 0 {
        return DBFS_FLOOR;
    }
    let mean_square = sum as f64 / n as f64 / (FULL_SCALE * FULL_SCALE);
    (10.0 * mean_square.log10()).max(DBFS_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_header(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block = channels * bits.div_ceil(8);
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn sniff_accepts_supported_formats() {
        for (tag, bits) in [(1, 8), (1, 16), (1, 24), (1, 32), (3, 32)] {
            let h = wav_header(tag, 2, 16000, bits, &[]);
            assert_eq!(
                sniff(&h),
                Ok(FmtInfo {
                    tag,
                    channels: 2,
                    bits
                })
            );
        }
    }

    #[test]
    fn sniff_names_unsupported_formats() {
        let cases = [
            (3, 24, "24-bit float"),
            (3, 64, "64-bit float"),
            (7, 8, "µ-law"),
            (6, 8, "A-law"),
            (2, 4, "ADPCM"),
            (0x1234, 16, "0x1234"),
        ];
        for (tag, bits, want) in cases {
            match sniff(&wav_header(tag, 1, 8000, bits, &[])) {
                Err(Sniff::Unsupported(s)) => assert!(s.contains(want), "{s}"),
                other => panic!("tag {tag}: {other:?}"),
            }
        }
    }

    #[test]
    fn sniff_rejects_non_wav() {
        for (bytes, want) in [
            (&b""[..], "0 bytes"),
            (b"hello world, not audio", "no RIFF header"),
            (b"RIFF\0\0\0\0AVI LIST", "not WAVE"),
            (b"RIFF\0\0\0\0WAVE", "no fmt chunk"),
            (b"FORM\0\0\0\0AIFF", "AIFF"),
            (b"ID3\x04", "MP3"),
        ] {
            match sniff(bytes) {
                Err(Sniff::NotWav(s)) => assert!(s.contains(want), "{s}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        match sniff(b"RF64\0\0\0\0WAVE") {
            Err(Sniff::Unsupported(s)) => assert!(s.contains("RF64")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sniff_skips_other_chunks_with_padding() {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(b"abc\0"); // 3 bytes + pad
        let full = wav_header(1, 1, 16000, 16, &[]);
        h.extend_from_slice(&full[12..]);
        assert_eq!(
            sniff(&h),
            Ok(FmtInfo {
                tag: 1,
                channels: 1,
                bits: 16
            })
        );
    }

    #[test]
    fn rounding_helpers() {
        assert_eq!(resampled_len(44100, 44100, 16000), 16000);
        assert_eq!(resampled_len(3, 3, 2), 2);
        assert_eq!(resampled_len(1, 44100, 16000), 0);
        assert_eq!(resampled_len(2, 44100, 16000), 1); // 0.7256 rounds to 1
        assert_eq!(duration_to_samples(Duration::from_millis(20), 16000), 320);
        assert_eq!(duration_to_samples(Duration::from_millis(10), 22050), 221);
        assert_eq!(samples_to_duration(16000, 16000), Duration::from_secs(1));
        assert_eq!(samples_to_duration(5, 0), Duration::ZERO);
        assert_eq!(to_i16(1.0), 32767);
        assert_eq!(to_i16(-1.0), -32768);
        assert_eq!(to_i16(2.0), 32767);
        assert_eq!(to_i16(f64::NAN), 0);
        assert_eq!(to_i16(0.5), 16384);
        assert_eq!(gcd(44100, 16000), 100);
    }

    #[test]
    fn fft_blocks_are_even_on_both_sides() {
        for (from, to) in [
            (44100, 16000),
            (16000, 44100),
            (22050, 16000),
            (11025, 8000),
            (48000, 16000),
            (44057, 16000),
            (191_999, 8000),
        ] {
            let (block, sub_chunks) = fft_blocks(from, to);
            let out = block as u64 * u64::from(to) / u64::from(from);
            assert_eq!(block as u64 * u64::from(to) % u64::from(from), 0);
            assert_eq!(block % 2, 0, "{from}->{to}: input block {block}");
            assert_eq!(out % 2, 0, "{from}->{to}: output block {out}");
            assert!(block >= 256 && sub_chunks >= 1);
        }
    }

    const RATE_PAIRS: [(u32, u32); 10] = [
        (44100, 16000),
        (16000, 44100),
        (22050, 16000),
        (11025, 8000),
        (8000, 16000),
        (48000, 24000),
        (16000, 24000),
        (24000, 16000),
        (44057, 16000),
        (16000, 44057),
    ];

    /// The peak of a resampled impulse lands where the input impulse was (delay compensated),
    /// in both directions.
    #[test]
    fn resampled_impulse_is_not_shifted() {
        for (from, to) in RATE_PAIRS {
            let len = from as usize / 2;
            for at in [100usize, 3210, len / 2, len - 50] {
                let mut input = vec![0.0; len];
                input[at] = 0.9;
                let out = resample_f64(&input, from, to).unwrap();
                assert_eq!(out.len(), resampled_len(len, from, to));
                let peak = out
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .unwrap()
                    .0;
                let expected = at as f64 * f64::from(to) / f64::from(from);
                assert!(
                    (peak as f64 - expected).abs() <= 0.5,
                    "{from}->{to}: impulse at {at} -> peak {peak}, expected {expected:.2}"
                );
            }
        }
    }

    /// Sub-sample timing: the phase of a resampled 1 kHz sine matches the ideal sine at the
    /// output rate to within 0.01 output samples (an uncompensated half-sample rubato delay,
    /// as with odd FFT blocks, shows up here as ~0.2-0.5).
    #[test]
    fn resampled_sine_keeps_its_phase() {
        let f = 1000.0;
        for (from, to) in RATE_PAIRS {
            let w_in = 2.0 * PI * f / f64::from(from);
            let input: Vec<f64> = (0..from / 2)
                .map(|i| 0.5 * (w_in * f64::from(i)).sin())
                .collect();
            let out = resample_f64(&input, from, to).unwrap();
            let w_out = 2.0 * PI * f / f64::from(to);
            let (lo, hi) = (out.len() / 10, out.len() * 9 / 10);
            let (mut s, mut c) = (0.0, 0.0);
            for (i, y) in out.iter().enumerate().take(hi).skip(lo) {
                s += y * (w_out * i as f64).sin();
                c += y * (w_out * i as f64).cos();
            }
            let delay_samples = -c.atan2(s) / w_out;
            assert!(
                delay_samples.abs() < 0.01,
                "{from}->{to}: output is {delay_samples:.3} samples late"
            );
            let amplitude = 2.0 * s.hypot(c) / (hi - lo) as f64;
            assert!(
                (amplitude - 0.5).abs() < 0.001,
                "{from}->{to}: amplitude {amplitude}"
            );
        }
    }

    #[test]
    fn short_input_resamples_to_rounded_length() {
        for n in [1usize, 2, 7, 100, 441, 1000, 5000] {
            let input = vec![0.25; n];
            let out = resample_f64(&input, 44100, 16000).unwrap();
            assert_eq!(out.len(), resampled_len(n, 44100, 16000), "n={n}");
        }
        assert!(resample_f64(&[], 44100, 16000).unwrap().is_empty());
    }

    #[test]
    fn tone_fades_and_short_tones() {
        let t = tone(Duration::from_millis(100), 1000.0, -6.0, 16000);
        assert_eq!(t.samples.len(), 1600);
        assert_eq!(t.samples[0], 0);
        assert!(t.samples[1599].abs() < 100, "{}", t.samples[1599]);
        // Shorter than two fades: still well-formed.
        let short = tone(Duration::from_millis(3), 1000.0, -6.0, 16000);
        assert_eq!(short.samples.len(), 48);
        assert!(tone(Duration::ZERO, 1000.0, -6.0, 16000).samples.is_empty());
        assert!(
            tone(Duration::from_secs(1), 1000.0, 0.0, 0)
                .samples
                .is_empty()
        );
    }

    #[test]
    fn level_floor() {
        assert_eq!(dbfs(&[]), DBFS_FLOOR);
        assert_eq!(dbfs(&[0; 100]), DBFS_FLOOR);
        assert_eq!(dbfs_le_bytes(&[0]), DBFS_FLOOR);
        let mut one_lsb = vec![0i16; 10_000_000];
        one_lsb[0] = 1;
        assert_eq!(dbfs(&one_lsb), DBFS_FLOOR);
    }
}
