//! WAV files: decoding any common PCM/float WAV to mono (our own RIFF walk names unsupported
//! encodings precisely), reading just the header, and writing mono PCM16.

use std::io;
use std::path::Path;

use super::resample::{check_rate, resample_f64};
use super::{AudioError, Clip, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, to_i16};

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
            .map_err(|e| match e {
                AudioError::Resample { from, to, detail } => AudioError::ResampleFile {
                    path: path.to_path_buf(),
                    from,
                    to,
                    detail,
                },
                other => other,
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

/// What the `fmt ` chunk says, read by our own small RIFF walk so that unsupported encodings get
/// a precise message (hound only says "unsupported").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FmtInfo {
    /// Format tag, with `WAVE_FORMAT_EXTENSIBLE` resolved to its sub-format.
    pub(super) tag: u16,
    pub(super) channels: u16,
    pub(super) bits: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sniff {
    NotWav(String),
    Unsupported(String),
}

pub(super) const TAG_PCM: u16 = 0x0001;
pub(super) const TAG_FLOAT: u16 = 0x0003;
pub(super) const TAG_EXTENSIBLE: u16 = 0xFFFE;

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
pub(super) fn sniff(bytes: &[u8]) -> Result<FmtInfo, Sniff> {
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
