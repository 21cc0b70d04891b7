//! The agent's voice: synthesised reply audio and its real-time schedule.
//!
//! A reply is `leading_silence` of digital zeros followed by a 220 Hz tone (peak -12 dBFS,
//! RMS about -15 dBFS) for the drawn reply duration, cut into `frame`-sized PCM16 LE frames.
//! The tone is spoken in sentences of [`SENTENCE`]; a sentence pause is either digital silence
//! inside the audio ([`ReplyAudio`]) or a gap in the real-time schedule ([`Reply::due`]).
//! Frame `n` is due to play at `origin + (n - base) × frame` (plus the sentence gaps it
//! follows); pausing and resuming moves the origin, never accumulating per-frame drift.

use std::time::Duration;

use tokio::time::Instant;

use super::SENTENCE;
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

    /// Shape of one reply: `leading_silence` of zeros then `duration` of tone, in sentences
    /// of [`SENTENCE`] with `pause` of digital silence between them inside the audio.
    pub fn reply(
        &self,
        leading_silence: Duration,
        duration: Duration,
        pause: Duration,
    ) -> ReplyAudio {
        let lead = samples_in(leading_silence, self.sample_rate);
        let tone = samples_in(duration, self.sample_rate);
        let sentence = samples_in(SENTENCE, self.sample_rate).max(1);
        let pause = samples_in(pause, self.sample_rate);
        let total = lead + tone + pause * tone.div_ceil(sentence).saturating_sub(1);
        ReplyAudio {
            lead,
            total,
            frames: total.div_ceil(self.frame_samples),
            tone,
            sentence,
            pause,
            frame_samples: self.frame_samples,
        }
    }

    /// PCM16 LE bytes of frame `n` of `reply` (the last frame may be short).
    pub fn frame_bytes(&self, reply: &ReplyAudio, n: u64) -> Vec<u8> {
        let start = n.saturating_mul(self.frame_samples).min(reply.total);
        let end = start.saturating_add(self.frame_samples).min(reply.total);
        let mut bytes = Vec::with_capacity(((end - start) * 2) as usize);
        for i in start..end {
            let s = match reply.tone_index(i) {
                None => 0,
                Some(k) => {
                    let k = (k % self.tone.len() as u64) as usize;
                    self.tone.get(k).copied().unwrap_or(0)
                }
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
    /// Tone samples, and per sentence.
    tone: u64,
    sentence: u64,
    /// Digital silence between sentences, inside the audio.
    pause: u64,
    frame_samples: u64,
}

impl ReplyAudio {
    /// Which tone sample sample `i` of the reply is (`None`: silence).
    fn tone_index(&self, i: u64) -> Option<u64> {
        let j = i.checked_sub(self.lead)?;
        if self.pause == 0 {
            return Some(j);
        }
        let period = self.sentence + self.pause;
        let (k, within) = (j / period, j % period);
        (within < self.sentence).then_some(k * self.sentence + within)
    }

    /// Samples in frame `n` (the last frame may be short).
    pub fn frame_len(&self, n: u64) -> u64 {
        let start = n.saturating_mul(self.frame_samples).min(self.total);
        start.saturating_add(self.frame_samples).min(self.total) - start
    }

    /// Sentence boundaries at or before frame `n`: a real-time sentence gap precedes each.
    /// Boundary `m` is the frame where sentence `m + 1` starts (rounded to a frame).
    fn boundaries_upto(&self, n: u64) -> u32 {
        let sentences = self.tone.div_ceil(self.sentence);
        let mut count = 0;
        for m in 1..sentences {
            let at = self.lead + m * (self.sentence + self.pause);
            let frame = (at + self.frame_samples / 2) / self.frame_samples;
            if frame > n {
                break;
            }
            count += 1;
        }
        count
    }
}

/// A reply being streamed: which frame is next and when it is due, and (for the pacings that
/// send ahead of real time) the model of the caller's playout.
#[derive(Debug)]
pub(crate) struct Reply {
    pub audio: ReplyAudio,
    pub next: u64,
    origin: Instant,
    base: u64,
    /// Real-time pacing: the gap in sending between sentences.
    gap: Duration,
    /// When the caller will have played everything sent so far (sent frames play back to back
    /// from their arrival, as a client's playout buffer does; loopback arrival = send time).
    pub playout_end: Instant,
    /// A `stall` fault holds the sending until then (pacings that send ahead).
    pub hold_until: Option<Instant>,
    /// The outbound queue was full: try again then; since when it has been full.
    pub retry_at: Option<Instant>,
    pub blocked_since: Option<Instant>,
    /// Every frame was sent and the reply's end message is out; the caller may still be
    /// playing it until `playout_end`.
    pub end_sent: bool,
    /// The caller's queue was flushed and no audio has been sent since.
    pub flushed: bool,
    /// Audio stopped by a barge-in, waiting to be classified or resumed.
    pub paused: bool,
    /// A barge-in was detected: stop the audio at this time.
    pub stop_at: Option<Instant>,
    /// A false alarm ended: resume at this time.
    pub resume_at: Option<Instant>,
    pub first_frame_sent: bool,
}

impl Reply {
    /// `gap`: the real-time sentence gap (zero when the pause is inside the audio).
    pub fn start(audio: ReplyAudio, now: Instant, gap: Duration) -> Self {
        Reply {
            audio,
            next: 0,
            origin: now,
            base: 0,
            gap,
            playout_end: now,
            hold_until: None,
            retry_at: None,
            blocked_since: None,
            end_sent: false,
            flushed: false,
            paused: false,
            stop_at: None,
            resume_at: None,
            first_frame_sent: false,
        }
    }

    /// When the next frame is due (absolute schedule).
    pub fn due(&self, frame: Duration) -> Instant {
        let k = u32::try_from(self.next.saturating_sub(self.base)).unwrap_or(u32::MAX);
        let mut at = self.origin + frame.saturating_mul(k);
        if !self.gap.is_zero() {
            let gaps =
                self.audio.boundaries_upto(self.next) - self.audio.boundaries_upto(self.base);
            at += self.gap.saturating_mul(gaps);
        }
        at
    }

    /// When the schedule (re)started: the reply's start, or its last resume.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Record that frame `next` was sent at `now` (pacings that send ahead) and move on.
    pub fn sent(&mut self, now: Instant, rate: u32) {
        let len = self.audio.frame_len(self.next);
        self.playout_end = self.playout_end.max(now) + samples_duration(len, rate);
        self.next += 1;
        self.flushed = false;
    }

    /// Frames sent that the caller has not started to play by `now`, and their samples.
    pub fn unheard(&self, now: Instant, rate: u32) -> (u64, u64) {
        let (mut frames, mut samples) = (0, 0);
        let mut end = self.playout_end;
        let mut n = self.next;
        while n > 0 && end > now {
            let len = self.audio.frame_len(n - 1);
            let start = end - samples_duration(len, rate);
            if start <= now {
                break; // playing now: (partly) heard
            }
            frames += 1;
            samples += len;
            end = start;
            n -= 1;
        }
        (frames, samples)
    }

    /// Drop what the caller has queued: the next frame to send is the first one it has not
    /// started to play. Returns the samples dropped.
    pub fn flush(&mut self, now: Instant, rate: u32) -> u64 {
        let (frames, samples) = self.unheard(now, rate);
        self.next -= frames;
        self.playout_end = self.playout_end.min(now);
        if frames > 0 {
            self.flushed = true;
        }
        samples
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
        self.playout_end = self.playout_end.max(now);
    }
}

fn samples_duration(samples: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(rate.max(1)))
}

#[cfg(test)]
mod tests {
    use super::super::vad::frame_dbfs;
    use super::*;

    #[test]
    fn reply_frames_cover_exactly_the_reply() {
        let voice = Voice::new(16000, Duration::from_millis(20));
        let reply = voice.reply(
            Duration::from_millis(100),
            Duration::from_millis(1010),
            Duration::ZERO,
        );
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
        let audio = voice.reply(Duration::ZERO, Duration::from_secs(1), Duration::ZERO);
        let mut r = Reply::start(audio, t0, Duration::ZERO);
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

    #[test]
    fn sentence_pause_is_silence_inside_the_audio() {
        let f = Duration::from_millis(20);
        let voice = Voice::new(16000, f);
        // 3.2 s of tone = sentences of 1.5 + 1.5 + 0.2 s, two 400 ms pauses between them.
        let pause = Duration::from_millis(400);
        let reply = voice.reply(Duration::ZERO, Duration::from_millis(3200), pause);
        assert_eq!(reply.total, 16 * (3200 + 800));
        let loud = |n: u64| {
            let pcm = crate::protocol::decode_pcm16(&voice.frame_bytes(&reply, n));
            frame_dbfs(&pcm) > -40.0
        };
        // 20 ms frames: tone 0..75, silence 75..95, tone 95..170, silence 170..190, tone.
        let silent: Vec<u64> = (0..reply.frames).filter(|&n| !loud(n)).collect();
        let expect: Vec<u64> = (75..95).chain(170..190).collect();
        assert_eq!(silent, expect);
        // The tone continues across the pause without a seam.
        let last = crate::protocol::decode_pcm16(&voice.frame_bytes(&reply, 74));
        let next = crate::protocol::decode_pcm16(&voice.frame_bytes(&reply, 95));
        let plain = voice.reply(Duration::ZERO, Duration::from_millis(3200), Duration::ZERO);
        let same = crate::protocol::decode_pcm16(&voice.frame_bytes(&plain, 75));
        assert_eq!(next, same);
        assert_ne!(last, next);
    }

    #[test]
    fn realtime_sentence_gap_is_in_the_schedule() {
        let t0 = Instant::now();
        let f = Duration::from_millis(20);
        let voice = Voice::new(16000, f);
        let audio = voice.reply(Duration::ZERO, Duration::from_millis(3200), Duration::ZERO);
        let gap = Duration::from_millis(400);
        let mut r = Reply::start(audio, t0, gap);
        r.next = 74;
        assert_eq!(r.due(f), t0 + Duration::from_millis(1480));
        r.next = 75; // first frame of the second sentence
        assert_eq!(r.due(f), t0 + Duration::from_millis(1900));
        r.next = 149;
        assert_eq!(r.due(f), t0 + Duration::from_millis(2980 + 400));
        r.next = 150; // the third sentence
        assert_eq!(r.due(f), t0 + Duration::from_millis(3000 + 800));
        r.next = audio.frames;
        assert_eq!(r.due(f), t0 + Duration::from_millis(3200 + 800));
    }

    #[test]
    fn playout_model_knows_what_the_caller_heard() {
        let t0 = Instant::now();
        let f = Duration::from_millis(20);
        let voice = Voice::new(16000, f);
        let audio = voice.reply(Duration::ZERO, Duration::from_secs(1), Duration::ZERO);
        let mut r = Reply::start(audio, t0, Duration::ZERO);
        for _ in 0..50 {
            r.sent(t0, 16000); // a burst: the whole second at once
        }
        assert_eq!(r.playout_end, t0 + Duration::from_secs(1));
        // 310 ms in: frames 0..=15 started playing, 34 frames are still queued.
        let now = t0 + Duration::from_millis(310);
        assert_eq!(r.unheard(now, 16000), (34, 34 * 320));
        assert_eq!(r.flush(now, 16000), 34 * 320);
        assert_eq!((r.next, r.flushed, r.playout_end), (16, true, now));
        assert_eq!(r.unheard(now, 16000), (0, 0));
        // After an underrun, frames sent late play from their arrival.
        let late = t0 + Duration::from_secs(2);
        r.sent(late, 16000);
        r.sent(late, 16000);
        assert_eq!(r.playout_end, late + Duration::from_millis(40));
        assert_eq!(r.unheard(late + Duration::from_millis(5), 16000), (1, 320));
    }
}
