//! The agent's ear: an energy voice-activity detector with hangover that turns incoming audio
//! and explicit `speech_start` / `speech_end` messages into user utterances.
//!
//! Pure logic, no I/O: the caller passes the wall-clock `now` in, so it is unit-testable.
//! Audio time is counted in samples (never wall clock); wall clock is only used for the
//! fallback "the client stopped sending frames after speaking".

use std::time::Duration;

use tokio::time::Instant;

/// Energy of a block of PCM16 samples in dBFS (RMS relative to full scale 32768).
///
/// Digital silence and an empty slice give `f64::NEG_INFINITY`. A full-scale square wave is
/// 0 dBFS; a full-scale sine is about -3 dBFS.
pub fn frame_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum_sq: f64 = samples
        .iter()
        .map(|&s| {
            let x = f64::from(s);
            x * x
        })
        .sum();
    let rms = (sum_sq / samples.len() as f64).sqrt() / 32768.0;
    if rms > 0.0 {
        20.0 * rms.log10()
    } else {
        f64::NEG_INFINITY
    }
}

/// One user utterance, open or finished.
#[derive(Debug, Clone)]
pub(crate) struct Utterance {
    /// Opened or confirmed by an explicit `speech_start` / `interrupt`.
    pub explicit: bool,
    /// Samples of frames above the VAD threshold.
    pub speech_samples: u64,
    /// All samples received since the utterance opened.
    pub total_samples: u64,
    /// Trailing non-speech samples since the last speech frame.
    pub silence_run: u64,
    /// Wall-clock arrival of the last audio frame (or of the opening message).
    pub last_frame: Instant,
    /// Optional text the client attached to its `speech_end`.
    pub text: Option<String>,
}

impl Utterance {
    fn new(explicit: bool, now: Instant) -> Self {
        Utterance {
            explicit,
            speech_samples: 0,
            total_samples: 0,
            silence_run: 0,
            last_frame: now,
            text: None,
        }
    }
}

/// A finished utterance as the turn sees it.
#[derive(Debug, Clone)]
pub(crate) struct Heard {
    /// Audio the utterance spanned (without the VAD's trailing hangover silence).
    pub audio: Duration,
    pub text: Option<String>,
}

/// What one block of incoming audio did to the utterance state.
#[derive(Debug)]
pub(crate) enum EarEvent {
    Nothing,
    /// The VAD heard speech while no utterance was open.
    Started,
    /// The VAD heard `hangover` of non-speech after speech.
    Ended(Heard),
}

/// Utterance tracker: energy VAD with hangover plus explicit controls.
#[derive(Debug)]
pub(crate) struct Ear {
    sample_rate: u32,
    threshold_dbfs: f64,
    hangover: Duration,
    hangover_samples: u64,
    current: Option<Utterance>,
    /// Audio received while no utterance was open (for a bare `speech_end`).
    idle_samples: u64,
}

impl Ear {
    pub fn new(sample_rate: u32, threshold_dbfs: f64, hangover: Duration) -> Self {
        Ear {
            sample_rate: sample_rate.max(1),
            threshold_dbfs,
            hangover,
            hangover_samples: samples_in(hangover, sample_rate),
            current: None,
            idle_samples: 0,
        }
    }

    /// Samples per analysis window (20 ms); incoming frames are analysed in windows this long.
    pub fn window(&self) -> usize {
        (self.sample_rate as usize / 50).max(1)
    }

    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// How much of the open utterance counts towards `min_speech`: for an explicit utterance
    /// all audio received since it opened (the client said it is speech), otherwise only the
    /// frames the VAD classified as speech.
    pub fn heard_so_far(&self) -> Duration {
        match &self.current {
            Some(u) if u.explicit => self.dur(u.total_samples),
            Some(u) => self.dur(u.speech_samples),
            None => Duration::ZERO,
        }
    }

    /// Feed one analysis window of audio.
    pub fn audio(&mut self, samples: &[i16], now: Instant) -> EarEvent {
        let n = samples.len() as u64;
        if n == 0 {
            return EarEvent::Nothing;
        }
        let speech = frame_dbfs(samples) > self.threshold_dbfs;
        let Some(u) = self.current.as_mut() else {
            if speech {
                let mut u = Utterance::new(false, now);
                u.speech_samples = n;
                u.total_samples = n;
                self.current = Some(u);
                self.idle_samples = 0;
                return EarEvent::Started;
            }
            self.idle_samples += n;
            return EarEvent::Nothing;
        };
        u.total_samples += n;
        u.last_frame = now;
        if speech {
            u.speech_samples += n;
            u.silence_run = 0;
            EarEvent::Nothing
        } else {
            u.silence_run += n;
            if u.speech_samples > 0 && u.silence_run >= self.hangover_samples {
                EarEvent::Ended(self.close_trimmed())
            } else {
                EarEvent::Nothing
            }
        }
    }

    /// Explicit `speech_start` (or `interrupt`): returns true when it opened a new utterance.
    pub fn speech_start(&mut self, now: Instant) -> bool {
        match self.current.as_mut() {
            Some(u) => {
                u.explicit = true;
                false
            }
            None => {
                self.current = Some(Utterance::new(true, now));
                self.idle_samples = 0;
                true
            }
        }
    }

    /// Explicit `speech_end`: closes the open utterance, if any.
    pub fn speech_end(&mut self, text: Option<String>) -> Option<Heard> {
        let u = self.current.take()?;
        self.idle_samples = 0;
        Some(Heard {
            audio: self.dur(u.total_samples),
            text: text.or(u.text),
        })
    }

    /// A bare `speech_end` with no utterance open: everything received since the last one.
    pub fn take_idle(&mut self, text: Option<String>) -> Heard {
        let audio = self.dur(self.idle_samples);
        self.idle_samples = 0;
        Heard { audio, text }
    }

    /// Audio that is not analysed (manual turns): it counts towards the next bare
    /// `speech_end` only.
    pub fn unanalysed(&mut self, samples: u64) {
        self.idle_samples += samples;
    }

    /// Forget the open utterance and all audio not yet taken.
    pub fn clear(&mut self) {
        self.current = None;
        self.idle_samples = 0;
    }

    /// When the wall-clock fallback would end the open utterance: the client spoke (or, after
    /// an explicit `speech_start`, sent any audio) and then stopped sending frames. `None` while
    /// no audio has arrived for the open utterance.
    pub fn silence_deadline(&self) -> Option<Instant> {
        let u = self.current.as_ref()?;
        if u.speech_samples > 0 {
            // Hangover already partly counted in audio time.
            let remaining = self.hangover.saturating_sub(self.dur(u.silence_run));
            Some(u.last_frame + remaining)
        } else if u.explicit && u.total_samples > 0 {
            // Audio too quiet for the VAD, but the client said it is speech.
            Some(u.last_frame + self.hangover)
        } else {
            None
        }
    }

    /// The wall-clock fallback fired: end the utterance if its deadline really passed.
    pub fn silence_timeout(&mut self, now: Instant) -> Option<Heard> {
        match self.silence_deadline() {
            Some(at) if at <= now => Some(self.close_trimmed()),
            _ => None,
        }
    }

    fn close_trimmed(&mut self) -> Heard {
        self.idle_samples = 0;
        match self.current.take() {
            Some(u) => Heard {
                audio: self.dur(u.total_samples.saturating_sub(u.silence_run)),
                text: u.text,
            },
            None => Heard {
                audio: Duration::ZERO,
                text: None,
            },
        }
    }

    fn dur(&self, samples: u64) -> Duration {
        Duration::from_secs_f64(samples as f64 / f64::from(self.sample_rate))
    }
}

/// Whole samples in `d` at `sample_rate` (rounded).
pub(crate) fn samples_in(d: Duration, sample_rate: u32) -> u64 {
    (d.as_secs_f64() * f64::from(sample_rate)).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (i as f64 * 0.3).sin()) as i16)
            .collect()
    }

    #[test]
    fn dbfs_of_known_signals() {
        assert_eq!(frame_dbfs(&[]), f64::NEG_INFINITY);
        assert_eq!(frame_dbfs(&[0; 320]), f64::NEG_INFINITY);
        let square: Vec<i16> = (0..320)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert!(frame_dbfs(&square).abs() < 0.01);
        let sine: Vec<i16> = (0..16000)
            .map(|i| (16384.0 * (i as f64 * std::f64::consts::TAU * 220.0 / 16000.0).sin()) as i16)
            .collect();
        // half scale sine: -6.02 dB (amplitude) - 3.01 dB (RMS of a sine)
        assert!(
            (frame_dbfs(&sine) + 9.03).abs() < 0.05,
            "{}",
            frame_dbfs(&sine)
        );
    }

    #[test]
    fn vad_ends_after_hangover_of_audio_time() {
        let now = Instant::now();
        let mut ear = Ear::new(16000, -40.0, Duration::from_millis(400));
        assert!(matches!(ear.audio(&[0; 320], now), EarEvent::Nothing));
        assert!(matches!(
            ear.audio(&tone(320, 8000.0), now),
            EarEvent::Started
        ));
        for _ in 0..29 {
            assert!(matches!(
                ear.audio(&tone(320, 8000.0), now),
                EarEvent::Nothing
            ));
        }
        assert_eq!(ear.heard_so_far(), Duration::from_millis(600));
        for _ in 0..19 {
            assert!(matches!(ear.audio(&[0; 320], now), EarEvent::Nothing));
        }
        let EarEvent::Ended(heard) = ear.audio(&[0; 320], now) else {
            panic!("expected end of speech after 400 ms of silence");
        };
        assert_eq!(heard.audio, Duration::from_millis(600));
        assert!(!ear.is_open());
        // A late explicit speech_end finds nothing open.
        assert!(ear.speech_end(None).is_none());
    }

    #[test]
    fn wall_clock_fallback_when_frames_stop() {
        let t0 = Instant::now();
        let mut ear = Ear::new(16000, -40.0, Duration::from_millis(400));
        ear.audio(&tone(320, 8000.0), t0);
        ear.audio(&[0; 1600], t0); // 100 ms of silence already counted
        assert_eq!(
            ear.silence_deadline(),
            Some(t0 + Duration::from_millis(300))
        );
        assert!(
            ear.silence_timeout(t0 + Duration::from_millis(299))
                .is_none()
        );
        let heard = ear
            .silence_timeout(t0 + Duration::from_millis(300))
            .unwrap();
        assert_eq!(heard.audio, Duration::from_millis(20));
    }

    #[test]
    fn explicit_utterances_count_all_audio() {
        let now = Instant::now();
        let mut ear = Ear::new(16000, -40.0, Duration::from_millis(400));
        assert!(ear.speech_start(now));
        assert!(!ear.speech_start(now));
        assert_eq!(ear.silence_deadline(), None, "no audio yet");
        ear.audio(&tone(3200, 100.0), now); // quiet: below the threshold
        assert_eq!(ear.heard_so_far(), Duration::from_millis(200));
        // Quiet audio never ends an explicit utterance by audio time, only when frames stop.
        assert_eq!(
            ear.silence_deadline(),
            Some(now + Duration::from_millis(400))
        );
        let heard = ear.speech_end(Some("book it".into())).unwrap();
        assert_eq!(heard.audio, Duration::from_millis(200));
        assert_eq!(heard.text.as_deref(), Some("book it"));
        ear.audio(&[0; 800], now);
        assert_eq!(ear.take_idle(None).audio, Duration::from_millis(50));
    }
}
