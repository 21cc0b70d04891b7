//! Checks of an audio source: exactly one source, sane lengths and levels, and WAV files that
//! exist and hold mono speech of at least 16 bits.

use std::path::Path;

use crate::plan::diag::{Diagnostic, Seg};
use crate::plan::{LoadedPlan, MAX_WAV_BYTES, model};

pub(super) fn validate_audio(
    lp: &LoadedPlan,
    path: &[Seg],
    audio: &model::AudioSpec,
    errs: &mut Vec<Diagnostic>,
) {
    let t = audio.table();
    let sources = t.sources();
    if sources.len() != 1 {
        errs.push(lp.diag(
            path,
            format!(
                "audio needs exactly one source of file, silence, tone, noise; found {}",
                if sources.is_empty() {
                    "none".to_string()
                } else {
                    sources.join(", ")
                }
            ),
            None,
        ));
        return;
    }
    let ms = std::time::Duration::from_millis;
    if let Some(frame) = t.frame
        && !(ms(10)..=ms(100)).contains(&frame.0)
    {
        errs.push(lp.diag(path, "frame must be 10ms..100ms", None));
    }
    for d in [t.silence, t.tone, t.noise].into_iter().flatten() {
        if d.0.is_zero() || d.0 > ms(600_000) {
            errs.push(lp.diag(
                path,
                "generated audio must be longer than 0 and at most 10m",
                None,
            ));
        }
    }
    if let Some(d) = t.trailing_silence
        && d.0 > ms(600_000)
    {
        errs.push(lp.diag(path, "trailing_silence must be at most 10m", None));
    }
    if let Some(level) = t.level
        && !(-120.0..=0.0).contains(&level)
    {
        errs.push(lp.diag(
            path,
            format!("level is in dBFS: -120..0, found {level}"),
            None,
        ));
    }
    if let Some(freq) = t.freq
        && !(20.0..=f64::from(lp.plan.target.rate()) / 2.0).contains(&freq)
    {
        errs.push(lp.diag(
            path,
            format!("freq {freq} Hz is outside 20 Hz..Nyquist"),
            None,
        ));
    }
    // A path naming a data row (`{{ row.clip }}`) is checked once per row, at compile time.
    if let Some(file) = t.file.as_ref().filter(|f| !f.contains("{{")) {
        let mut file_path = path.to_vec();
        file_path.push(Seg::Key("file".into()));
        let path = file_path.as_slice();
        let resolved = lp.resolve(file);
        if resolved.is_file() {
            check_wav_format(lp, path, file, &resolved, errs);
        } else {
            errs.push(lp.diag(
                path,
                format!(
                    "audio file `{file}` not found (looked at {})",
                    resolved.display()
                ),
                Some(
                    "paths are relative to the plan file's folder or the working directory".into(),
                ),
            ));
        }
    }
}

/// Plans send mono speech of at least 16 bits: a stereo file would be mixed down (a call
/// recording with the caller on one channel and the agent on the other would send both voices)
/// and 8-bit PCM is too coarse for speech recognition to be representative. Both are rejected
/// with the `sox` command that converts the file.
fn check_wav_format(
    lp: &LoadedPlan,
    path: &[Seg],
    file: &str,
    resolved: &Path,
    errs: &mut Vec<Diagnostic>,
) {
    let format = match crate::audio::wav_format(resolved) {
        Ok(f) => f,
        Err(e) => {
            errs.push(lp.diag(path, e.to_string(), None));
            return;
        }
    };
    // Files are decoded whole into memory at compile time: refuse absurd ones up front.
    let size = std::fs::metadata(resolved).map_or(0, |m| m.len());
    if size > MAX_WAV_BYTES {
        errs.push(lp.diag(
            path,
            format!(
                "audio file `{file}` is {} MiB; WAVs are limited to {} MiB",
                size >> 20,
                MAX_WAV_BYTES >> 20
            ),
            Some("cut it to the part the caller says, e.g. `sox in.wav out.wav trim 0 30`".into()),
        ));
        return;
    }
    let stem = Path::new(file)
        .file_stem()
        .map_or_else(|| "out".into(), |s| s.to_string_lossy().into_owned());
    let beside = |suffix: &str| {
        Path::new(file)
            .with_file_name(format!("{stem}-{suffix}.wav"))
            .display()
            .to_string()
    };
    let (mono, wide) = (beside("mono"), beside("16bit"));
    if format.channels > 1 {
        errs.push(lp.diag(
            path,
            format!(
                "audio file `{file}` has {} channels: send_audio streams mono speech",
                format.channels
            ),
            Some(format!(
                "mix it down with `sox {file} -c 1 {mono}`, or keep only the caller's \
                 channel with `sox {file} {mono} remix 1`"
            )),
        ));
    }
    if format.bits <= 8 && !format.float {
        errs.push(lp.diag(
            path,
            format!("audio file `{file}` is 8-bit PCM: too coarse for speech; use 16-bit"),
            Some(format!(
                "convert it with `sox {file} -b 16 -e signed-integer {wide}`"
            )),
        ));
    }
}
