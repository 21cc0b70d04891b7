//! The timeline of received audio: every reply chunk with its arrival time, the client's
//! playout clock, and when the user was speaking. The audio expectations (stops, resumes,
//! silence) and the audio-quality metrics (glitches, frame jitter, reverse barge-in) are read
//! from here.
//!
//! Today a chunk plays from the instant it arrives for its own duration; a playout model that
//! schedules heard audio differently replaces the queries in this file.

use std::time::Duration;

use tokio::time::Instant;

/// A pause in the bot's speech longer than this means it stopped talking.
pub const STOP_GAP: Duration = Duration::from_millis(250);

/// A gap before a speech chunk longer than this means the bot had paused and resumed.
pub const RESUME_GAP: Duration = Duration::from_millis(100);

/// One reply audio chunk in the arrival log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub(super) at: Instant,
    /// The audio it carries.
    pub(super) dur: Duration,
    pub(super) speech: bool,
}

impl Chunk {
    /// When its audio has played out (arrival plus duration).
    pub(super) fn end(&self) -> Instant {
        self.at + self.dur
    }
}

/// Silence between the end of `prev`'s audio and the arrival of `next`.
pub(super) fn silence_between(prev: &Chunk, next: &Chunk) -> Duration {
    next.at.saturating_duration_since(prev.end())
}

/// The first chunk answering an end of speech at `anchor`: at or after it and, if the bot was
/// still talking then (the tail of an earlier answer), only after a silence longer than
/// [`RESUME_GAP`].
pub(super) fn first_after(chunks: &[Chunk], anchor: Instant, speech_only: bool) -> Option<Instant> {
    let mut prev: Option<&Chunk> = None;
    for c in chunks.iter().filter(|c| !speech_only || c.speech) {
        if c.at >= anchor && prev.is_none_or(|p| silence_between(p, c) > RESUME_GAP) {
            return Some(c.at);
        }
        prev = Some(c);
    }
    None
}

/// Whether the last chunk received is speech that arrived at most [`STOP_GAP`] before `at`.
pub(super) fn just_spoke(chunks: &[Chunk], at: Instant) -> bool {
    chunks
        .last()
        .is_some_and(|c| c.speech && at.saturating_duration_since(c.at) <= STOP_GAP)
}

/// Whether the last speech chunk at or before `at` arrived at most [`STOP_GAP`] before it.
pub(super) fn talking_at(chunks: &[Chunk], at: Instant) -> bool {
    chunks
        .iter()
        .rev()
        .find(|c| c.speech && c.at <= at)
        .is_some_and(|c| at - c.at <= STOP_GAP)
}

/// Scan the speech after `reference` for the bot stopping.
pub(super) struct StopScan {
    /// The end of the speech heard before a gap longer than [`STOP_GAP`], if there is one.
    pub(super) stopped: Option<Instant>,
    /// When the audio heard so far (up to that gap) stops playing.
    pub(super) heard_until: Instant,
}

/// The last speech chunk after `reference` that is followed by a gap.
pub(super) fn stop_after(chunks: &[Chunk], reference: Instant) -> StopScan {
    let mut prev = reference;
    let mut stopped = None;
    for c in chunks.iter().filter(|c| c.speech && c.at > reference) {
        if c.at.saturating_duration_since(prev) > STOP_GAP {
            stopped = Some(prev);
            break;
        }
        prev = prev.max(c.end());
    }
    StopScan {
        stopped,
        heard_until: prev,
    }
}

/// Scan the speech from `reference` on for the bot resuming after a pause.
pub(super) struct ResumeScan {
    /// The first speech chunk at or after the reference that follows a pause.
    pub(super) resumed: Option<Instant>,
    /// Speech at or after the reference continued without such a pause.
    pub(super) flowing: bool,
    /// The speech chunk before the resumption (or the last one, when none).
    pub(super) prev: Option<Chunk>,
}

/// The first speech chunk after `reference` that follows a pause.
pub(super) fn resume_after(chunks: &[Chunk], reference: Instant) -> ResumeScan {
    let mut prev: Option<&Chunk> = None;
    let mut resumed = None;
    let mut flowing = false;
    for c in chunks.iter().filter(|c| c.speech) {
        if c.at >= reference {
            match prev {
                Some(p) if silence_between(p, c) > RESUME_GAP => {
                    resumed = Some(c.at);
                    break;
                }
                _ => flowing = true,
            }
        }
        prev = Some(c);
    }
    ResumeScan {
        resumed,
        flowing,
        prev: prev.copied(),
    }
}

/// Client playout model: when the audio received so far finishes playing.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Playout {
    end: Option<Instant>,
    last_chunk: Option<(Instant, Duration)>,
}

/// What the playout clock saw when a chunk arrived.
pub(super) struct Arrival {
    /// The chunk came after everything before it had finished playing at this instant.
    pub(super) underrun_since: Option<Instant>,
    /// The chunk before it: arrival and duration.
    pub(super) prev: Option<(Instant, Duration)>,
}

impl Playout {
    /// Forget what was queued (a turn change: a pause then is expected, not a glitch).
    pub(super) fn reset(&mut self) {
        self.end = None;
        self.last_chunk = None;
    }

    /// A chunk of `dur` arrived at `at`. Playback (re)starts after `jitter_buffer`, as a client
    /// player would rebuffer.
    pub(super) fn arrive(
        &mut self,
        at: Instant,
        dur: Duration,
        jitter_buffer: Duration,
    ) -> Arrival {
        let restart = at + jitter_buffer + dur;
        let mut underrun_since = None;
        self.end = Some(match self.end {
            None => restart,
            Some(end) if at > end => {
                underrun_since = Some(end);
                restart
            }
            Some(end) => end + dur,
        });
        let prev = self.last_chunk.replace((at, dur));
        Arrival {
            underrun_since,
            prev,
        }
    }
}

/// When the user is (or was last) speaking.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UserSpeech {
    /// Start of the current utterance, if one is open or scheduled.
    pub(super) start: Option<Instant>,
    /// Its scheduled end (None: open until `speech_end`).
    pub(super) end: Option<Instant>,
    /// Whether the bot was already talking when it started (then its audio is not a reverse
    /// barge-in).
    pub(super) bot_was_talking: bool,
    /// A reverse barge-in was already counted for this utterance.
    pub(super) counted: bool,
}

impl UserSpeech {
    pub(super) fn speaking_at(&self, t: Instant) -> bool {
        self.start.is_some_and(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }

    /// Whether the user spoke at any time in `[a, b]`.
    pub(super) fn spoke_between(&self, a: Instant, b: Instant) -> bool {
        match self.start {
            Some(s) => s <= b && self.end.is_none_or(|e| e >= a),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// 20 ms chunks at the given offsets (ms) from `t0`, all speech.
    fn speech(t0: Instant, offsets: &[u64]) -> Vec<Chunk> {
        offsets
            .iter()
            .map(|&o| Chunk {
                at: t0 + MS * o as u32,
                dur: MS * 20,
                speech: true,
            })
            .collect()
    }

    #[test]
    fn first_answer_skips_the_tail_of_an_earlier_one() {
        let t0 = Instant::now();
        // Talking through the anchor (100 ms), then a 200 ms pause, then the answer.
        let chunks = speech(t0, &[80, 100, 120, 340]);
        assert_eq!(
            first_after(&chunks, t0 + MS * 100, false),
            Some(t0 + MS * 340)
        );
        assert_eq!(first_after(&chunks, t0 + MS * 400, true), None);
    }

    #[test]
    fn a_gap_longer_than_stop_gap_is_a_stop() {
        let t0 = Instant::now();
        let chunks = speech(t0, &[20, 40, 400]);
        let scan = stop_after(&chunks, t0);
        assert_eq!(scan.stopped, Some(t0 + MS * 60));
        assert_eq!(scan.heard_until, t0 + MS * 60);
        let flowing = stop_after(&speech(t0, &[20, 40, 60]), t0);
        assert_eq!(flowing.stopped, None);
        assert_eq!(flowing.heard_until, t0 + MS * 80);
        assert!(talking_at(&chunks, t0 + MS * 100));
        assert!(!talking_at(&chunks, t0 + MS * 300));
    }

    #[test]
    fn speech_after_a_pause_resumes() {
        let t0 = Instant::now();
        let scan = resume_after(&speech(t0, &[0, 20, 300]), t0 + MS * 10);
        assert_eq!(scan.resumed, Some(t0 + MS * 300));
        assert!(scan.flowing);
        let on = resume_after(&speech(t0, &[0, 20, 40]), t0 + MS * 10);
        assert_eq!(on.resumed, None);
        assert_eq!(on.prev.map(|c| c.at), Some(t0 + MS * 40));
    }

    #[test]
    fn playout_underruns_when_audio_arrives_after_the_queue_ran_dry() {
        let t0 = Instant::now();
        let mut p = Playout::default();
        let buffer = MS * 40;
        let a = p.arrive(t0, MS * 20, buffer);
        assert!(a.underrun_since.is_none() && a.prev.is_none());
        // Plays until t0 + 60 ms; the next chunk comes in time.
        let b = p.arrive(t0 + MS * 20, MS * 20, buffer);
        assert!(b.underrun_since.is_none());
        assert_eq!(b.prev, Some((t0, MS * 20)));
        // Queue ran dry at t0 + 80 ms.
        let c = p.arrive(t0 + MS * 200, MS * 20, buffer);
        assert_eq!(c.underrun_since, Some(t0 + MS * 80));
        p.reset();
        let d = p.arrive(t0 + MS * 900, MS * 20, buffer);
        assert!(d.underrun_since.is_none() && d.prev.is_none());
    }
}
