//! The agent's voice: synthesised reply audio and its real-time schedule.
//!
//! A reply is `leading_silence` of digital zeros followed by a 220 Hz tone (peak -12 dBFS,
//! RMS about -15 dBFS) for the drawn reply duration, cut into `frame`-sized PCM16 LE frames.
//! Frame `n` is due at `origin + (n - base) × frame`; pausing and resuming moves the origin,
//! never accumulating per-frame drift.

use std::time::Duration;

use tokio::time::Instant;

use super::vad::samples_in;

/// Tone frequency. An integer number of cycles fits in one second, so a one-second table loops
/// without a seam at any sample rate.
const TONE_HZ: f64 = 220.0;
/// Tone peak level.
const TONE_PEAK_DBFS: f64 = -12.0;

/// Per-agent, read-only audio material shared by all connections.
#[derive(Debug)]
pub(crate) struct Voice {
    pub frame: Duration,
    pub frame_samples: u64,
    sample_rate: u32,
    /// One second of tone.
    tone: Vec<i16>,
}

impl Voice {
    pub fn new(sample_rate: u32, frame: Duration) -> Self {
        let sample_rate = sample_rate.max(1);
        let amp = 32768.0 * 10f64.powf(TONE_PEAK_DBFS / 20.0);
        let tone = (0..sample_rate)
            .map(|i| {
                let t = f64::from(i) / f64::from(sample_rate);
                (amp * (std::f64::consts::TAU * TONE_HZ * t).sin()).round() as i16
            })
            .collect();
        Voice {
            frame,
            frame_samples: samples_in(frame, sample_rate).max(1),
            sample_rate,
            tone,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Shape of one reply: `leading_silence` of zeros then `duration` of tone.
    pub fn reply(&self, leading_silence: Duration, duration: Duration) -> ReplyAudio {
        let lead = samples_in(leading_silence, self.sample_rate);
        let total = lead + samples_in(duration, self.sample_rate);
        ReplyAudio {
            lead,
            total,
            frames: total.div_ceil(self.frame_samples),
        }
    }

    /// PCM16 LE bytes of frame `n` of `reply` (the last frame may be short).
    pub fn frame_bytes(&self, reply: &ReplyAudio, n: u64) -> Vec<u8> {
        let start = n.saturating_mul(self.frame_samples).min(reply.total);
        let end = start.saturating_add(self.frame_samples).min(reply.total);
        let mut bytes = Vec::with_capacity(((end - start) * 2) as usize);
        for i in start..end {
            let s = if i < reply.lead {
                0
            } else {
                let k = ((i - reply.lead) % self.tone.len() as u64) as usize;
                self.tone.get(k).copied().unwrap_or(0)
            };
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        bytes
    }
}

/// The sample layout of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyAudio {
    pub lead: u64,
    pub total: u64,
    pub frames: u64,
}

/// A reply being streamed: which frame is next and when it is due.
#[derive(Debug)]
pub(crate) struct Reply {
    pub audio: ReplyAudio,
    pub next: u64,
    origin: Instant,
    base: u64,
    /// Audio stopped by a barge-in, waiting to be classified or resumed.
    pub paused: bool,
    /// A barge-in was detected: stop the audio at this time.
    pub stop_at: Option<Instant>,
    /// A false alarm ended: resume at this time.
    pub resume_at: Option<Instant>,
    pub first_frame_sent: bool,
}

impl Reply {
    pub fn start(audio: ReplyAudio, now: Instant) -> Self {
        Reply {
            audio,
            next: 0,
            origin: now,
            base: 0,
            paused: false,
            stop_at: None,
            resume_at: None,
            first_frame_sent: false,
        }
    }

    /// When the next frame is due (absolute schedule).
    pub fn due(&self, frame: Duration) -> Instant {
        let k = u32::try_from(self.next.saturating_sub(self.base)).unwrap_or(u32::MAX);
        self.origin + frame.saturating_mul(k)
    }

    pub fn finished(&self) -> bool {
        self.next >= self.audio.frames
    }

    /// Push the whole remaining schedule back (a stall / underrun).
    pub fn delay(&mut self, by: Duration) {
        self.origin += by;
    }

    /// Continue after a pause: the next frame is due now, the rest follow on schedule.
    pub fn resume(&mut self, now: Instant) {
        self.paused = false;
        self.resume_at = None;
        self.origin = now;
        self.base = self.next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::vad::frame_dbfs;
    use super::*;

    #[test]
    fn reply_frames_cover_exactly_the_reply() {
        let voice = Voice::new(16000, Duration::from_millis(20));
        let reply = voice.reply(Duration::from_millis(100), Duration::from_millis(1010));
        assert_eq!(reply.total, 16000 * 1110 / 1000);
        assert_eq!(reply.frames, 56);
        let bytes: usize = (0..reply.frames)
            .map(|n| voice.frame_bytes(&reply, n).len())
            .sum();
        assert_eq!(bytes as u64, reply.total * 2);
        assert!(voice.frame_bytes(&reply, reply.frames).is_empty());
        let pcm = |b: Vec<u8>| crate::protocol::decode_pcm16(&b);
        assert_eq!(
            frame_dbfs(&pcm(voice.frame_bytes(&reply, 0))),
            f64::NEG_INFINITY
        );
        let level = frame_dbfs(&pcm(voice.frame_bytes(&reply, 10)));
        assert!((level + 15.0).abs() < 0.5, "tone level {level}");
    }

    #[test]
    fn schedule_is_absolute_and_resumable() {
        let t0 = Instant::now();
        let f = Duration::from_millis(20);
        let voice = Voice::new(16000, f);
        let mut r = Reply::start(voice.reply(Duration::ZERO, Duration::from_secs(1)), t0);
        assert_eq!(r.due(f), t0);
        r.next = 10;
        assert_eq!(r.due(f), t0 + Duration::from_millis(200));
        r.delay(Duration::from_millis(500));
        assert_eq!(r.due(f), t0 + Duration::from_millis(700));
        let later = t0 + Duration::from_secs(3);
        r.resume(later);
        assert_eq!(r.due(f), later);
        r.next = 12;
        assert_eq!(r.due(f), later + Duration::from_millis(40));
    }
}
