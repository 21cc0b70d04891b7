//! Queries over the caller's timeline ([`super::timeline`]): the first answer to an end of
//! speech (arrival and heard), whether the bot was talking at an instant, when its heard speech
//! stopped, and when it resumed after a pause.
//!
//! "Talking" is read from the heard speech: chunks at or above the speech threshold, as they
//! play. A pause in the heard speech — nothing left to play, or only quieter audio (comfort
//! noise, the silence between sentences) — is a stop only when it lasts longer than
//! `playout.stop_gap`, or when a flush ended it.

use std::time::Duration;

use tokio::time::Instant;

use super::timeline::{Chunk, Playout};

/// A gap before a chunk longer than this means the bot had paused and resumed (and, in the
/// arrival timeline, that a chunk is not the tail of an earlier answer).
pub const RESUME_GAP: Duration = Duration::from_millis(100);

/// Silence between the arrival-timeline end of `prev` and the arrival of `next`.
fn arrival_silence(prev: &Chunk, next: &Chunk) -> Duration {
    next.at.saturating_duration_since(prev.arrival_end())
}

impl Playout {
    /// The index of the first chunk answering an end of speech at `anchor`, on the arrival
    /// timeline: arrived at or after it and, if the bot was still talking then (the tail of an
    /// earlier answer), only after a silence longer than [`RESUME_GAP`].
    pub(super) fn first_after(&self, anchor: Instant, speech_only: bool) -> Option<usize> {
        let mut prev: Option<Chunk> = None;
        for (i, c) in self.chunks().enumerate() {
            if speech_only && !c.speech {
                continue;
            }
            if c.at >= anchor && prev.is_none_or(|p| arrival_silence(&p, &c) > RESUME_GAP) {
                return Some(i);
            }
            prev = Some(c);
        }
        None
    }

    /// The first chunk from index `from` on that the caller hears (speech only: at speech
    /// level): when it starts playing. Pending while that is still in the future (a flush may
    /// still drop it).
    pub(super) fn first_heard_from(&self, from: usize, speech_only: bool) -> Option<Instant> {
        self.chunks_from(from)
            .find(|c| c.heard() && (c.speech || !speech_only))
            .map(|c| c.start)
    }

    /// Whether the bot was talking at `t`, as far as the audio received by then says: its
    /// speech was playing, or it was in a pause no longer than `gap` with audio still queued
    /// (a sentence pause), or its speech ended at most [`RESUME_GAP`] before.
    pub(super) fn talking_at(&self, t: Instant, gap: Duration) -> bool {
        let known = || self.chunks().filter(|c| c.at <= t && c.heard());
        let Some(last_speech) = known()
            .filter(|c| c.speech && c.start <= t)
            .map(|c| c.end)
            .max()
        else {
            return false;
        };
        if last_speech > t {
            return true;
        }
        let quiet = t - last_speech;
        let queued = known().any(|c| c.end > t);
        quiet <= RESUME_GAP || (queued && quiet <= gap)
    }

    /// Scan the heard speech after `reference` for the bot stopping.
    pub(super) fn stop_after(&self, reference: Instant) -> StopScan {
        let gap = self.settings.stop_gap;
        let flush = self.flushes.iter().copied().find(|f| *f >= reference);
        let mut prev = reference;
        let mut stopped = None;
        let mut next_speech = None;
        for c in self
            .chunks()
            .filter(|c| c.speech && c.heard() && c.end > reference)
        {
            // Audio that arrived after a flush is a new reply: the speech before it stopped.
            if flush.is_some_and(|f| c.at > f) || c.start.saturating_duration_since(prev) > gap {
                stopped = Some(prev);
                next_speech = Some(c.start);
                break;
            }
            prev = prev.max(c.end);
        }
        if stopped.is_none() && flush.is_some_and(|f| f >= prev) {
            // Flushed after the last speech: nothing more of this reply will play.
            stopped = Some(prev);
        }
        StopScan {
            stopped,
            heard_until: prev,
            next_speech,
        }
    }

    /// Scan the heard speech from `reference` on for the bot resuming after a pause.
    pub(super) fn resume_after(&self, reference: Instant) -> ResumeScan {
        let mut prev: Option<Chunk> = None;
        let mut resumed = None;
        let mut flowing = false;
        for c in self.chunks().filter(|c| c.speech && c.heard()) {
            if c.start >= reference {
                match prev {
                    Some(p) if c.start.saturating_duration_since(p.end) > RESUME_GAP => {
                        resumed = Some(c.start);
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
            last_speech_end: prev.map(|p| p.end),
        }
    }
}

/// The bot stopping, read from the heard speech after a reference instant.
pub(super) struct StopScan {
    /// The end of the speech heard before a pause longer than `stop_gap` or a flush.
    pub(super) stopped: Option<Instant>,
    /// When the speech heard or queued so far (up to that pause) stops playing.
    pub(super) heard_until: Instant,
    /// When the speech after the pause starts (to know the stop is final once it plays).
    pub(super) next_speech: Option<Instant>,
}

/// The bot resuming, read from the heard speech from a reference instant on.
pub(super) struct ResumeScan {
    /// When the first speech heard at or after the reference that follows a pause starts.
    pub(super) resumed: Option<Instant>,
    /// Speech heard at or after the reference continued without such a pause.
    pub(super) flowing: bool,
    /// The heard end of the speech before the resumption (or of the last one, when none).
    pub(super) last_speech_end: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::Playout as Settings;

    const MS: Duration = Duration::from_millis(1);

    fn playout(buffer_ms: u32) -> Playout {
        Playout::new(Settings {
            buffer: MS * buffer_ms,
            stop_gap: MS * 600,
        })
    }

    /// 20 ms chunks arriving at the given offsets (ms) from `t0`.
    fn arrive(p: &mut Playout, t0: Instant, offsets: &[u64], speech: bool) {
        for &o in offsets {
            p.arrive(t0 + MS * o as u32, MS * 20, speech);
        }
    }

    #[test]
    fn first_answer_skips_the_tail_of_an_earlier_one() {
        let t0 = Instant::now();
        let mut p = playout(0);
        // Talking through the anchor (100 ms), then a 200 ms pause, then the answer.
        arrive(&mut p, t0, &[80, 100, 120, 340], true);
        assert_eq!(p.first_after(t0 + MS * 100, false), Some(3));
        assert_eq!(p.first_after(t0 + MS * 400, true), None);
    }

    #[test]
    fn first_heard_is_after_the_pre_roll_and_skips_dropped_audio() {
        let t0 = Instant::now();
        let mut p = playout(60);
        arrive(&mut p, t0, &[0], false);
        p.flush(t0 + MS * 10);
        arrive(&mut p, t0, &[100, 101], true);
        assert_eq!(p.first_after(t0, false), Some(0));
        assert_eq!(p.first_heard_from(0, false), Some(t0 + MS * 160));
        assert_eq!(p.first_heard_from(0, true), Some(t0 + MS * 160));
    }

    #[test]
    fn a_pause_longer_than_stop_gap_is_a_stop_and_a_shorter_one_is_not() {
        let t0 = Instant::now();
        let mut p = playout(0);
        // 40 ms of speech, a 400 ms pause, 40 ms, then a 700 ms pause, then more.
        arrive(&mut p, t0, &[0, 20, 440, 460, 1180], true);
        let scan = p.stop_after(t0);
        assert_eq!(scan.stopped, Some(t0 + MS * 480));
        assert_eq!(scan.next_speech, Some(t0 + MS * 1180));
        // In the 400 ms pause nothing is queued: a sender that pauses without sending silence
        // cannot be told from one that stopped, until it speaks again.
        assert!(p.talking_at(t0 + MS * 100, MS * 600));
        assert!(!p.talking_at(t0 + MS * 300, MS * 600));
        assert!(p.talking_at(t0 + MS * 470, MS * 600));
    }

    #[test]
    fn quiet_audio_inside_the_reply_is_a_pause_not_speech() {
        let t0 = Instant::now();
        let mut p = playout(60);
        // A burst: 100 ms speech, 700 ms of silence frames, 100 ms speech, all at once.
        p.arrive(t0, MS * 100, true);
        p.arrive(t0, MS * 700, false);
        p.arrive(t0, MS * 100, true);
        let scan = p.stop_after(t0);
        assert_eq!(scan.stopped, Some(t0 + MS * 160));
        // The same with a 400 ms pause: no stop yet, speech heard until 660 ms.
        let mut q = playout(60);
        q.arrive(t0, MS * 100, true);
        q.arrive(t0, MS * 400, false);
        q.arrive(t0, MS * 100, true);
        let scan = q.stop_after(t0);
        assert_eq!((scan.stopped, scan.heard_until), (None, t0 + MS * 660));
        // Talking during the pause: audio is still queued.
        assert!(q.talking_at(t0 + MS * 400, MS * 600));
    }

    #[test]
    fn a_flush_is_a_stop_at_once() {
        let t0 = Instant::now();
        let mut p = playout(60);
        p.arrive(t0, MS * 3000, true);
        p.flush(t0 + MS * 560);
        let scan = p.stop_after(t0 + MS * 500);
        assert_eq!(scan.stopped, Some(t0 + MS * 560));
        // A new reply right after the flush does not extend the old one.
        p.arrive(t0 + MS * 600, MS * 1000, true);
        let scan = p.stop_after(t0 + MS * 500);
        assert_eq!(scan.stopped, Some(t0 + MS * 560));
        assert_eq!(scan.next_speech, Some(t0 + MS * 660));
    }

    #[test]
    fn speech_after_a_heard_pause_resumes() {
        let t0 = Instant::now();
        let mut p = playout(0);
        arrive(&mut p, t0, &[0, 20, 300], true);
        let scan = p.resume_after(t0 + MS * 10);
        assert_eq!(scan.resumed, Some(t0 + MS * 300));
        assert!(scan.flowing);
        let mut q = playout(0);
        arrive(&mut q, t0, &[0, 20, 40], true);
        let on = q.resume_after(t0 + MS * 10);
        assert_eq!(on.resumed, None);
        assert_eq!(on.last_speech_end, Some(t0 + MS * 60));
    }
}
