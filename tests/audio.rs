//! Tests for `planrun::audio`: WAV decoding (formats, channels, rates), resampling quality and
//! timing, error messages, framing, generated sources and level measurement.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use planrun::audio::{
    self, AudioError, Clip, dbfs, dbfs_le_bytes, load_wav, noise, resample, silence, tone,
    write_wav,
};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A unique scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "planrun-audio-{}-{}-{}",
            name,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a fixture's samples are stored.
#[derive(Clone, Copy, Debug)]
enum Enc {
    Int(u16),
    Float,
}

/// Write interleaved float samples in [-1, 1] as a WAV with the given encoding.
fn write_fixture(path: &Path, channels: u16, rate: u32, enc: Enc, interleaved: &[f64]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: match enc {
            Enc::Int(b) => b,
            Enc::Float => 32,
        },
        sample_format: match enc {
            Enc::Int(_) => hound::SampleFormat::Int,
            Enc::Float => hound::SampleFormat::Float,
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in interleaved {
        match enc {
            Enc::Int(bits) => {
                let full = (1i64 << (bits - 1)) as f64;
                let v = (x * full).round().clamp(-full, full - 1.0) as i32;
                w.write_sample(v).unwrap();
            }
            Enc::Float => w.write_sample(x as f32).unwrap(),
        }
    }
    w.finalize().unwrap();
}

/// `silent` seconds of zeros, then `secs` seconds of a sine of amplitude `amp` (starting at
/// phase 0, no fade: a sharp onset).
fn sine(freq: f64, rate: u32, silent: f64, secs: f64, amp: f64) -> Vec<f64> {
    let lead = (silent * f64::from(rate)).round() as usize;
    let n = (secs * f64::from(rate)).round() as usize;
    let mut v = vec![0.0; lead];
    v.extend(
        (0..n)
            .map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()),
    );
    v
}

fn to_i16(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// A minimal WAV header + data with an arbitrary format tag (for encodings hound cannot write).
fn raw_wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits.div_ceil(8);
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
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

// ---------------------------------------------------------------------------------------------
// Measurement helpers

/// Number of sign changes (treating 0 as positive).
fn zero_crossings(x: &[i16]) -> usize {
    x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
}

/// Frequency of a steady sine from its zero crossings.
fn frequency(x: &[i16], rate: u32) -> f64 {
    zero_crossings(x) as f64 / 2.0 / (x.len() as f64 / f64::from(rate))
}

/// Time of the first sample whose magnitude exceeds `threshold`.
fn onset_secs(x: &[i16], rate: u32, threshold: i16) -> f64 {
    let i = x
        .iter()
        .position(|&s| s.abs() > threshold)
        .expect("signal never crosses the threshold");
    i as f64 / f64::from(rate)
}

/// Samples between two times.
fn window(clip: &Clip, from_s: f64, to_s: f64) -> &[i16] {
    let r = f64::from(clip.sample_rate);
    &clip.samples[(from_s * r) as usize..(to_s * r) as usize]
}

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

fn assert_len_within_1pct(got: usize, want: usize) {
    let tol = (want as f64 * 0.01).max(1.0);
    assert!(
        (got as f64 - want as f64).abs() <= tol,
        "length {got}, want {want} ± 1%"
    );
}

// ---------------------------------------------------------------------------------------------
// Loading real and generated files

/// The checked-in fixtures (16 kHz mono PCM16), or generated stand-ins when they are absent.
fn sixteen_k_files(tmp: &TempDir) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio_files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wav"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        for (name, freq) in [("a.wav", 300.0), ("b.wav", 1200.0)] {
            let p = tmp.path(name);
            write_fixture(
                &p,
                1,
                16000,
                Enc::Int(16),
                &sine(freq, 16000, 0.1, 0.8, 0.3),
            );
            files.push(p);
        }
    }
    files
}

#[test]
fn audio_files_load_bit_exact_when_rates_match() {
    let tmp = TempDir::new("real");
    for path in sixteen_k_files(&tmp) {
        let raw: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(Result::unwrap)
            .collect();
        let clip = load_wav(&path, 16000).unwrap();
        assert_eq!(clip.sample_rate, 16000);
        assert_eq!(clip.trailing, 0);
        assert!(!clip.samples.is_empty(), "{}", path.display());
        // No resampling when the rates match: the samples are passed through unchanged.
        assert_eq!(clip.samples, raw, "{}", path.display());
        assert_eq!(
            clip.duration(),
            Duration::from_secs_f64(raw.len() as f64 / 16000.0)
        );
    }
}

#[test]
fn audio_files_resample_to_other_protocol_rates() {
    let tmp = TempDir::new("real-rates");
    for path in sixteen_k_files(&tmp) {
        let base = load_wav(&path, 16000).unwrap();
        for rate in [8000, 24000, 44100, 48000] {
            let clip = load_wav(&path, rate).unwrap();
            assert_eq!(clip.sample_rate, rate);
            let want = (base.samples.len() as f64 * f64::from(rate) / 16000.0).round() as usize;
            assert_len_within_1pct(clip.samples.len(), want);
            assert_eq!(clip.samples.len(), want, "exact rounding");
            // Upsampling keeps all the content, so the level is unchanged.
            if rate > 16000 && dbfs(&base.samples) > -60.0 {
                assert_close(
                    dbfs(&clip.samples),
                    dbfs(&base.samples),
                    0.5,
                    &format!("{} level at {rate} Hz", path.display()),
                );
            }
        }
    }
}

#[test]
fn eight_khz_file_is_upsampled_to_16k() {
    let tmp = TempDir::new("8k");
    let path = tmp.path("tone8k.wav");
    let src = sine(440.0, 8000, 0.0, 1.0, 0.5);
    write_fixture(&path, 1, 8000, Enc::Int(16), &src);

    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.sample_rate, 16000);
    assert_len_within_1pct(clip.samples.len(), 16000);
    let steady = window(&clip, 0.1, 0.9);
    assert_close(frequency(steady, 16000), 440.0, 4.4, "frequency");
    assert_close(dbfs(steady), dbfs(&to_i16(&src)), 0.5, "level");
}

#[test]
fn sine_44k1_to_16k_keeps_frequency_level_and_timing() {
    let tmp = TempDir::new("44k1");
    let path = tmp.path("tone44k1.wav");
    // 100 ms of silence, then a 1 kHz sine for 900 ms.
    let src = sine(1000.0, 44100, 0.1, 0.9, 0.5);
    write_fixture(&path, 1, 44100, Enc::Int(16), &src);
    let src16 = to_i16(&src);

    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.sample_rate, 16000);
    assert_len_within_1pct(clip.samples.len(), 16000);
    assert_eq!(clip.samples.len(), 16000);

    // Frequency by zero crossings over the steady part.
    let steady = window(&clip, 0.2, 0.9);
    assert_close(frequency(steady, 16000), 1000.0, 10.0, "frequency");

    // Level within 0.5 dB of the source's steady part.
    let src_steady = &src16[(0.2 * 44100.0) as usize..(0.9 * 44100.0) as usize];
    assert_close(dbfs(steady), dbfs(src_steady), 0.5, "level");

    // Not shifted in time: the onset (first sample above half the amplitude) is within 1 ms.
    let half = 16384 / 2;
    let src_onset = onset_secs(&src16, 44100, half);
    let out_onset = onset_secs(&clip.samples, 16000, half);
    assert_close(out_onset, src_onset, 0.001, "onset (s)");
    // And the leading silence stays silent (no pre-ringing worth mentioning before 90 ms).
    assert!(dbfs(window(&clip, 0.0, 0.09)) < -60.0);
}

#[test]
fn public_resample_matches_rates_and_lengths() {
    let src = to_i16(&sine(1000.0, 48000, 0.0, 0.5, 0.25));
    let out = resample(&src, 48000, 16000).unwrap();
    assert_eq!(out.len(), 8000);
    assert_close(frequency(&out[800..7200], 16000), 1000.0, 10.0, "frequency");
    assert_close(dbfs(&out[800..7200]), dbfs(&src[2400..21600]), 0.5, "level");

    // Equal rates: an exact copy.
    assert_eq!(resample(&src, 48000, 48000).unwrap(), src);
    // Empty input.
    assert!(resample(&[], 44100, 16000).unwrap().is_empty());
    // Odd lengths round to nearest.
    assert_eq!(resample(&src[..1001], 48000, 16000).unwrap().len(), 334);
    // Bad rates are reported, not panicked on.
    let err = resample(&src, 0, 16000).unwrap_err();
    assert!(err.to_string().contains("0 Hz"), "{err}");
    assert!(resample(&src, 16000, 1_000_000).is_err());
}

#[test]
fn resampling_round_trip_is_transparent_below_nyquist() {
    // A 1 kHz tone 16 kHz → 44.1 kHz → 16 kHz comes back sample for sample (a half-sample
    // timing error, e.g. from an uncompensated rubato delay, would leave a -30 dB residue).
    let t = tone(Duration::from_secs(1), 1000.0, -10.0, 16000);
    for mid in [44100, 22050, 8000, 48000] {
        let there = resample(&t.samples, 16000, mid).unwrap();
        let back = resample(&there, mid, 16000).unwrap();
        assert_eq!(back.len(), t.samples.len());
        let residue: Vec<i16> = t.samples[1600..14400]
            .iter()
            .zip(&back[1600..14400])
            .map(|(a, b)| a - b)
            .collect();
        assert!(
            dbfs(&residue) < -70.0,
            "via {mid} Hz: residue {:.1} dBFS",
            dbfs(&residue)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Formats and channels

#[test]
fn stereo_is_downmixed_by_averaging() {
    let tmp = TempDir::new("stereo");
    let left = sine(500.0, 16000, 0.0, 0.5, 0.5);
    // Left = sine, right = silence: mono is half the left channel.
    let interleaved: Vec<f64> = left.iter().flat_map(|&l| [l, 0.0]).collect();
    let path = tmp.path("stereo.wav");
    write_fixture(&path, 2, 16000, Enc::Int(16), &interleaved);
    let clip = load_wav(&path, 16000).unwrap();
    let left16 = to_i16(&left);
    assert_eq!(clip.samples.len(), left16.len());
    for (m, l) in clip.samples.iter().zip(&left16) {
        assert!(
            (i32::from(*m) - i32::from(*l) / 2).abs() <= 1,
            "{m} vs {l}/2"
        );
    }
    assert_close(dbfs(&clip.samples), dbfs(&left16) - 6.02, 0.05, "level");

    // Opposite-phase channels cancel.
    let cancel: Vec<f64> = left.iter().flat_map(|&l| [l, -l]).collect();
    let path = tmp.path("cancel.wav");
    write_fixture(&path, 2, 16000, Enc::Int(16), &cancel);
    let clip = load_wav(&path, 16000).unwrap();
    assert!(clip.samples.iter().all(|&s| s.abs() <= 1));

    // Stereo 44.1 kHz is downmixed and resampled in one go.
    let both: Vec<f64> = sine(1000.0, 44100, 0.0, 1.0, 0.5)
        .iter()
        .flat_map(|&x| [x, x])
        .collect();
    let path = tmp.path("stereo44.wav");
    write_fixture(&path, 2, 44100, Enc::Int(16), &both);
    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.samples.len(), 16000);
    assert_close(
        frequency(window(&clip, 0.1, 0.9), 16000),
        1000.0,
        10.0,
        "frequency",
    );
}

#[test]
fn integer_bit_depths_decode_to_pcm16() {
    let tmp = TempDir::new("bits");
    let values = [0.0, 0.5, -0.5, 0.25, -1.0, 0.999];
    for bits in [8u16, 16, 24, 32] {
        let path = tmp.path(&format!("i{bits}.wav"));
        write_fixture(&path, 1, 16000, Enc::Int(bits), &values);
        let clip = load_wav(&path, 16000).unwrap();
        let want = to_i16(&values);
        for (got, want) in clip.samples.iter().zip(&want) {
            // 8-bit keeps only 8 bits of precision.
            let tol = if bits == 8 { 256 } else { 1 };
            assert!(
                (i32::from(*got) - i32::from(*want)).abs() <= tol,
                "{bits}-bit: {got} vs {want}"
            );
        }
    }
    // 24-bit at 44.1 kHz, resampled.
    let path = tmp.path("i24_44k1.wav");
    let src = sine(1000.0, 44100, 0.0, 0.5, 0.5);
    write_fixture(&path, 1, 44100, Enc::Int(24), &src);
    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.samples.len(), 8000);
    assert_close(
        dbfs(&clip.samples[800..7200]),
        20.0 * 0.5f64.log10() - 3.0103,
        0.5,
        "level",
    );
}

#[test]
fn float_wav_decodes_and_clips() {
    let tmp = TempDir::new("float");
    let path = tmp.path("f32.wav");
    write_fixture(
        &path,
        1,
        16000,
        Enc::Float,
        &[0.0, 0.5, -0.5, -1.0, 1.5, -3.0],
    );
    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.samples, vec![0, 16384, -16384, -32768, 32767, -32768]);

    // Stereo float at 48 kHz → 16 kHz.
    let src: Vec<f64> = sine(1000.0, 48000, 0.0, 1.0, 0.5)
        .iter()
        .flat_map(|&x| [x, x])
        .collect();
    let path = tmp.path("f32_48k_stereo.wav");
    write_fixture(&path, 2, 48000, Enc::Float, &src);
    let clip = load_wav(&path, 16000).unwrap();
    assert_eq!(clip.samples.len(), 16000);
    assert_close(
        dbfs(window(&clip, 0.1, 0.9)),
        20.0 * 0.5f64.log10() - 3.0103,
        0.5,
        "level",
    );
}

// ---------------------------------------------------------------------------------------------
// Errors

fn message(err: &AudioError) -> String {
    err.to_string()
}

#[test]
fn unsupported_encodings_name_the_file_and_how_to_convert() {
    let tmp = TempDir::new("unsupported");
    let cases = [
        ("f24.wav", 3u16, 24u16, "24-bit float WAV is not supported"),
        ("f64.wav", 3, 64, "64-bit float WAV is not supported"),
        ("ulaw.wav", 7, 8, "µ-law WAV is not supported"),
        ("alaw.wav", 6, 8, "A-law WAV is not supported"),
        ("adpcm.wav", 2, 4, "ADPCM WAV is not supported"),
    ];
    for (name, tag, bits, want) in cases {
        let path = tmp.path(name);
        std::fs::write(&path, raw_wav(tag, 1, 8000, bits, &[0; 64])).unwrap();
        let err = load_wav(&path, 16000).unwrap_err();
        assert!(
            matches!(err, AudioError::Unsupported { .. }),
            "{name}: {err:?}"
        );
        let msg = message(&err);
        assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(msg.contains("sox "), "{msg}");
    }
}

#[test]
fn text_file_renamed_wav_is_not_a_wav() {
    let tmp = TempDir::new("text");
    let path = tmp.path("notes.wav");
    std::fs::write(&path, "hello, this is a text file\n").unwrap();
    let err = load_wav(&path, 16000).unwrap_err();
    assert!(matches!(err, AudioError::NotWav { .. }), "{err:?}");
    let msg = message(&err);
    assert!(
        msg.starts_with(&format!("{}: not a WAV file (", path.display())),
        "{msg}"
    );
    assert!(
        msg.contains("hello"),
        "shows what the file starts with: {msg}"
    );
}

#[test]
fn missing_file_is_not_found() {
    let path = Path::new("audio_files/does-not-exist.wav");
    let err = load_wav(path, 16000).unwrap_err();
    assert!(matches!(err, AudioError::NotFound { .. }), "{err:?}");
    assert_eq!(
        message(&err),
        "audio_files/does-not-exist.wav: file not found"
    );
}

#[test]
fn directory_is_a_read_error() {
    let tmp = TempDir::new("dir");
    let err = load_wav(&tmp.0, 16000).unwrap_err();
    let msg = message(&err);
    assert!(msg.starts_with(&tmp.0.display().to_string()), "{msg}");
}

#[test]
fn empty_wav_is_rejected() {
    let tmp = TempDir::new("empty");
    let path = tmp.path("empty.wav");
    write_fixture(&path, 1, 16000, Enc::Int(16), &[]);
    let err = load_wav(&path, 16000).unwrap_err();
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
    assert_eq!(
        message(&err),
        format!("{}: empty (no samples)", path.display())
    );
    // A zero-byte file is not a WAV at all.
    let path = tmp.path("zero.wav");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        load_wav(&path, 16000),
        Err(AudioError::NotWav { .. })
    ));
}

#[test]
fn out_of_range_sample_rates_are_rejected() {
    let tmp = TempDir::new("rates");
    let path = tmp.path("4k.wav");
    write_fixture(&path, 1, 4000, Enc::Int(16), &[0.1; 400]);
    let err = load_wav(&path, 16000).unwrap_err();
    assert!(matches!(err, AudioError::FileSampleRate { rate: 4000, .. }));
    let msg = message(&err);
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("4000 Hz") && msg.contains("8000..=192000"),
        "{msg}"
    );

    let path = tmp.path("ok.wav");
    write_fixture(&path, 1, 16000, Enc::Int(16), &[0.1; 400]);
    let err = load_wav(&path, 1000).unwrap_err();
    assert!(matches!(err, AudioError::InvalidRate { rate: 1000, .. }));
}

#[test]
fn truncated_wav_is_reported_as_corrupt() {
    let tmp = TempDir::new("trunc");
    let path = tmp.path("trunc.wav");
    write_fixture(
        &path,
        1,
        16000,
        Enc::Int(16),
        &sine(440.0, 16000, 0.0, 0.5, 0.5),
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1001]).unwrap();
    let err = load_wav(&path, 16000).unwrap_err();
    assert!(matches!(err, AudioError::Corrupt { .. }), "{err:?}");
    assert!(message(&err).starts_with(&path.display().to_string()));
}

// ---------------------------------------------------------------------------------------------
// Clip: framing, duration, trailing silence

fn clip_of(n: usize, rate: u32) -> Clip {
    Clip {
        samples: (1..=n).map(|i| (i % 30000) as i16).collect(),
        sample_rate: rate,
        trailing: 0,
    }
}

#[test]
fn frames_pad_the_last_partial_frame() {
    let clip = clip_of(1000, 16000);
    let frame = Duration::from_millis(20);
    assert_eq!(clip.frame_len(frame), 320);
    assert_eq!(clip.frame_count(frame), 4);
    let frames: Vec<Cow<'_, [i16]>> = clip.frames(frame).collect();
    assert_eq!(frames.len(), 4);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.len(), 320, "frame {i}");
    }
    for (i, f) in frames[..3].iter().enumerate() {
        assert!(matches!(f, Cow::Borrowed(_)), "full frames are borrowed");
        assert_eq!(&f[..], &clip.samples[i * 320..(i + 1) * 320]);
    }
    let last = &frames[3];
    assert_eq!(&last[..40], &clip.samples[960..]);
    assert!(last[40..].iter().all(|&s| s == 0));

    // Exact multiple: no padding frame.
    let clip = clip_of(960, 16000);
    assert_eq!(clip.frame_count(frame), 3);
    assert_eq!(clip.frames(frame).count(), 3);
    // Empty clip: no frames.
    let empty = clip_of(0, 16000);
    assert_eq!(empty.frame_count(frame), 0);
    assert_eq!(empty.frames(frame).count(), 0);
}

#[test]
fn frame_len_rounds_to_nearest_and_is_at_least_one() {
    assert_eq!(clip_of(1, 44100).frame_len(Duration::from_millis(10)), 441);
    assert_eq!(clip_of(1, 8000).frame_len(Duration::from_millis(20)), 160);
    assert_eq!(clip_of(1, 22050).frame_len(Duration::from_millis(10)), 221);
    assert_eq!(
        clip_of(1, 24000).frame_len(Duration::from_micros(20_010)),
        480
    );
    assert_eq!(clip_of(1, 16000).frame_len(Duration::ZERO), 1);
}

#[test]
fn trailing_silence_is_counted() {
    let clip = clip_of(1000, 16000).with_trailing_silence(Duration::from_millis(100));
    assert_eq!(clip.samples.len(), 2600);
    assert_eq!(clip.trailing, 1600);
    assert_eq!(clip.speech_end(), 1000);
    assert!(clip.samples[1000..].iter().all(|&s| s == 0));
    assert_eq!(clip.duration(), Duration::from_micros(162_500));
    let clip = clip.with_trailing_silence(Duration::from_millis(50));
    assert_eq!(clip.trailing, 2400);
    assert_eq!(clip.speech_end(), 1000);
}

// ---------------------------------------------------------------------------------------------
// Levels and generated sources

#[test]
fn dbfs_reference_levels() {
    let full_sine: Vec<i16> = (0..16000)
        .map(|i| {
            (32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16000.0).sin()) as i16
        })
        .collect();
    assert_close(dbfs(&full_sine), -3.0103, 0.01, "full-scale sine");
    let square: Vec<i16> = (0..1000)
        .map(|i| if i % 2 == 0 { -32768 } else { 32767 })
        .collect();
    assert_close(dbfs(&square), 0.0, 0.001, "full-scale square");
    let half: Vec<i16> = square.iter().map(|&s| s / 2).collect();
    assert_close(dbfs(&half), -6.0206, 0.01, "half-scale square");
    assert_eq!(dbfs(&[]), -120.0);
    assert_eq!(dbfs(&[0; 480]), -120.0);
    assert_eq!(dbfs(&[0; 480]), audio::DBFS_FLOOR);

    // The wire-format variant agrees.
    let bytes: Vec<u8> = full_sine.iter().flat_map(|s| s.to_le_bytes()).collect();
    assert_eq!(dbfs_le_bytes(&bytes), dbfs(&full_sine));
    let mut odd = bytes.clone();
    odd.push(0x7f);
    assert_eq!(dbfs_le_bytes(&odd), dbfs(&full_sine), "odd byte ignored");
    assert_eq!(dbfs_le_bytes(&[]), -120.0);
}

#[test]
fn tone_has_its_level_frequency_and_fades() {
    for rate in [8000, 16000, 24000, 48000] {
        let t = tone(Duration::from_secs(1), 1000.0, -20.0, rate);
        assert_eq!(t.sample_rate, rate);
        assert_eq!(t.trailing, 0);
        assert_eq!(t.samples.len(), rate as usize);
        assert_eq!(t.duration(), Duration::from_secs(1));
        assert_close(dbfs(&t.samples), -20.0, 0.2, "tone level");
        assert_close(
            frequency(window(&t, 0.1, 0.9), rate),
            1000.0,
            10.0,
            "tone frequency",
        );
        // Fades: starts at zero, first millisecond well below the steady peak, ends near zero.
        let peak = t.samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
        let first_ms = &t.samples[..rate as usize / 1000];
        assert_eq!(t.samples[0], 0);
        assert!(first_ms.iter().all(|s| s.unsigned_abs() < peak / 4));
        let last_ms = &t.samples[t.samples.len() - rate as usize / 1000..];
        assert!(last_ms.iter().all(|s| s.unsigned_abs() < peak / 4));
    }
    assert_close(
        dbfs(&tone(Duration::from_secs(1), 440.0, -6.0, 16000).samples),
        -6.0,
        0.2,
        "-6 dBFS tone",
    );
}

#[test]
fn noise_is_seeded_and_at_its_level() {
    let d = Duration::from_secs(1);
    let a = noise(d, -30.0, 16000, 7);
    let b = noise(d, -30.0, 16000, 7);
    let c = noise(d, -30.0, 16000, 8);
    assert_eq!(a, b, "same seed, same samples");
    assert_ne!(a.samples, c.samples, "different seed, different samples");
    assert_eq!(a.samples.len(), 16000);
    assert_eq!(a.trailing, 0);
    for (level, seed) in [(-30.0, 7), (-10.0, 1), (-50.0, 99)] {
        let n = noise(d, level, 16000, seed);
        assert_close(dbfs(&n.samples), level, 0.5, "noise level");
        let mean = n.samples.iter().map(|&s| f64::from(s)).sum::<f64>() / 16000.0;
        let rms = 32768.0 * 10f64.powf(level / 20.0);
        assert!(mean.abs() < 0.05 * rms, "mean {mean} for rms {rms}");
    }
}

#[test]
fn silence_is_digital_zero() {
    let s = silence(Duration::from_millis(250), 16000);
    assert_eq!(s.samples.len(), 4000);
    assert!(s.samples.iter().all(|&x| x == 0));
    assert_eq!(s.trailing, 0);
    assert_eq!(dbfs(&s.samples), -120.0);
    assert_eq!(s.frame_count(Duration::from_millis(20)), 13);
}

// ---------------------------------------------------------------------------------------------
// Writing

#[test]
fn write_wav_round_trips() {
    let tmp = TempDir::new("write");
    let path = tmp.path("out.wav");
    let n = noise(Duration::from_millis(300), -12.0, 24000, 3);
    write_wav(&path, &n.samples, 24000).unwrap();
    let spec = hound::WavReader::open(&path).unwrap().spec();
    assert_eq!(
        (spec.channels, spec.bits_per_sample, spec.sample_rate),
        (1, 16, 24000)
    );
    assert_eq!(load_wav(&path, 24000).unwrap(), n);

    // Empty audio writes a valid (empty) WAV, which load_wav then rejects as empty.
    let path = tmp.path("empty.wav");
    write_wav(&path, &[], 16000).unwrap();
    assert!(matches!(
        load_wav(&path, 16000),
        Err(AudioError::Empty { .. })
    ));

    let bad = tmp.path("no/such/dir/out.wav");
    let err = write_wav(&bad, &n.samples, 24000).unwrap_err();
    assert!(matches!(err, AudioError::Write { .. }), "{err:?}");
    assert!(message(&err).starts_with(&bad.display().to_string()));
    assert!(matches!(
        write_wav(&path, &n.samples, 0),
        Err(AudioError::InvalidRate { rate: 0, .. })
    ));
}
