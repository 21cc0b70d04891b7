//! What the caller hears: a playout clock per call, modelled on a real client player.
//!
//! Every reply chunk is logged with its arrival time and scheduled on the caller's playout
//! queue: it starts when the audio queued before it has played, or — when nothing is queued (the
//! start of a reply, after an underrun or a flush) — `playout.buffer` after it arrived (the
//! player's pre-roll). A flush message from the server (raw `interrupted`, Twilio `clear`, …)
//! empties the queue at once: the chunk playing is cut there and the queued ones are never
//! heard. Every audio assertion and audio metric reads the heard instants (`start`, `end`);
//! arrival-based figures (`first_audio`, `frame_jitter`) read `at`. The queries over the
//! timeline are in [`super::heard`].

use std::time::Duration;

use tokio::time::Instant;

use crate::plan::model::Playout as Settings;

/// One reply audio chunk: when it arrived and when the caller hears it (the expanded view of
/// a [`Packed`] entry).
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    /// Arrival (read off the socket).
    pub(super) at: Instant,
    /// The audio it carries.
    pub(super) dur: Duration,
    /// Its RMS level is at or above `speech_threshold_dbfs`.
    pub(super) speech: bool,
    /// When the caller starts hearing it.
    pub(super) start: Instant,
    /// When the caller stops hearing it: `start + dur`, earlier when a flush cut it, `start`
    /// when a flush dropped it before it played.
    pub(super) end: Instant,
}

impl Chunk {
    /// When its audio would have played out had it played from its arrival (the arrival
    /// timeline: `first_audio`'s "tail of an earlier answer" rule).
    pub(super) fn arrival_end(&self) -> Instant {
        self.at + self.dur
    }

    /// Some of it is heard (a flush did not drop it before it played).
    pub(super) fn heard(&self) -> bool {
        self.end > self.start
    }
}

/// A chunk as the timeline keeps it: 24 bytes instead of the 72 of [`Chunk`] (a call logs one
/// per 20 ms of reply audio, and every running call holds its whole log). The arrival is kept
/// to the nanosecond from the playout's base instant; the other instants are microsecond
/// offsets from it (below any figure planrun reports; 71 minutes at most, saturating).
#[derive(Debug, Clone, Copy)]
pub(super) struct Packed {
    /// Arrival, nanoseconds after (negative: before) the playout's base.
    at_ns: i64,
    /// `dur`, µs.
    dur_us: u32,
    /// `start - at`, µs.
    lead_us: u32,
    /// `end - start`, µs (0: dropped by a flush before it played).
    heard_us: u32,
    speech: bool,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_us(v: u32) -> Duration {
    Duration::from_micros(u64::from(v))
}

/// The caller's playout queue and everything it received.
#[derive(Debug, Clone)]
pub(super) struct Playout {
    pub(super) settings: Settings,
    /// The instant chunk arrivals are counted from.
    base: Instant,
    /// Every reply chunk of the call, in arrival order (heard instants non-decreasing among
    /// the chunks that are heard).
    packed: Vec<Packed>,
    /// Arrival of every flush, in order.
    pub(super) flushes: Vec<Instant>,
    /// When everything queued so far finishes playing.
    queue_end: Option<Instant>,
    /// The chunk before the next one (arrival, duration), forgotten at a turn change.
    last: Option<(Instant, Duration)>,
    /// The queue running dry now is an underrun (a chunk arrived since the last turn change).
    armed: bool,
}

/// What the playout clock saw when a chunk arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arrival {
    /// When the caller starts hearing the chunk.
    pub(super) start: Instant,
    /// The queue had run dry at this instant, mid-reply, before the chunk came (an underrun).
    pub(super) underrun_since: Option<Instant>,
    /// The chunk before it (arrival and duration), unless a turn change came between.
    pub(super) prev: Option<(Instant, Duration)>,
    /// How much audio was still queued ahead of the listener when it arrived.
    pub(super) lead: Duration,
}

impl Playout {
    pub(super) fn new(settings: Settings) -> Self {
        Playout {
            settings,
            base: Instant::now(),
            packed: Vec::new(),
            flushes: Vec::new(),
            queue_end: None,
            last: None,
            armed: false,
        }
    }

    /// A turn change (the user speaks or stops, the reply ends): a pause of the bot's audio
    /// after it is expected, not an underrun, and inter-arrival gaps across it mean nothing.
    /// Queued audio keeps playing.
    pub(super) fn reset(&mut self) {
        self.last = None;
        self.armed = false;
    }

    /// A chunk of `dur` arrived at `at`: schedule it.
    pub(super) fn arrive(&mut self, at: Instant, dur: Duration, speech: bool) -> Arrival {
        let queued = self.queue_end.filter(|end| *end > at);
        let start = queued.unwrap_or(at + self.settings.buffer);
        let underrun_since = match queued {
            None if self.armed => self.queue_end,
            _ => None,
        };
        let lead = queued.map_or(Duration::ZERO, |end| end - at);
        self.queue_end = Some(start + dur);
        self.armed = true;
        let prev = self.last.replace((at, dur));
        self.packed.push(self.pack(Chunk {
            at,
            dur,
            speech,
            start,
            end: start + dur,
        }));
        Arrival {
            start,
            underrun_since,
            prev,
            lead,
        }
    }

    /// Chunk `i` (in arrival order).
    pub(super) fn chunk(&self, i: usize) -> Chunk {
        self.unpack(self.packed[i])
    }

    /// Every chunk, in arrival order.
    pub(super) fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.chunks_from(0)
    }

    /// Every chunk from index `from` on.
    pub(super) fn chunks_from(&self, from: usize) -> impl Iterator<Item = Chunk> + '_ {
        self.packed[from.min(self.packed.len())..]
            .iter()
            .map(|p| self.unpack(*p))
    }

    fn pack(&self, c: Chunk) -> Packed {
        let at_ns = match c.at.checked_duration_since(self.base) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => -i64::try_from((self.base - c.at).as_nanos()).unwrap_or(i64::MAX),
        };
        Packed {
            at_ns,
            dur_us: us(c.dur),
            lead_us: us(c.start.saturating_duration_since(c.at)),
            heard_us: us(c.end.saturating_duration_since(c.start)),
            speech: c.speech,
        }
    }

    fn unpack(&self, p: Packed) -> Chunk {
        let offset = Duration::from_nanos(p.at_ns.unsigned_abs());
        let at = if p.at_ns >= 0 {
            self.base + offset
        } else {
            self.base - offset
        };
        let start = at + from_us(p.lead_us);
        Chunk {
            at,
            dur: from_us(p.dur_us),
            speech: p.speech,
            start,
            end: start + from_us(p.heard_us),
        }
    }

    /// A flush at `at`: the chunk playing is cut, the queued ones are dropped.
    pub(super) fn flush(&mut self, at: Instant) {
        for i in (0..self.packed.len()).rev() {
            let c = self.chunk(i);
            if c.end <= at && c.heard() {
                break;
            }
            let end = c.end.min(at).max(c.start);
            self.packed[i].heard_us = us(end - c.start);
        }
        if self.queue_end.is_some_and(|end| end > at) {
            self.queue_end = Some(at);
        }
        self.flushes.push(at);
        self.reset();
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

    fn playout(buffer_ms: u32) -> Playout {
        Playout::new(Settings {
            buffer: MS * buffer_ms,
            stop_gap: MS * 600,
        })
    }

    #[test]
    fn a_logged_chunk_is_small() {
        assert!(std::mem::size_of::<Packed>() <= 24);
    }

    #[test]
    fn packing_keeps_arrivals_exact_and_heard_instants_to_the_microsecond() {
        let t0 = Instant::now();
        let mut p = playout(60);
        // Before the playout's base, and off the microsecond grid.
        let before = t0.checked_sub(MS).unwrap_or(t0);
        p.arrive(before, Duration::from_nanos(20_000_700), false);
        let late = t0 + Duration::from_nanos(3_600_000_000_123);
        p.arrive(late, MS * 20, true);
        let c: Vec<Chunk> = p.chunks().collect();
        assert_eq!((c[0].at, c[1].at), (before, late));
        assert!(!c[0].speech && c[1].speech);
        assert_eq!(c[0].start, before + MS * 60);
        assert_eq!(c[0].dur, Duration::from_micros(20_000));
        assert_eq!(c[1].end - c[1].start, MS * 20);
        assert!(c[1].start.saturating_duration_since(late + MS * 60) < Duration::from_micros(1));
    }

    #[test]
    fn chunks_queue_behind_each_other_after_the_pre_roll() {
        let t0 = Instant::now();
        let mut p = playout(60);
        let a = p.arrive(t0, MS * 20, true);
        assert_eq!(a.start, t0 + MS * 60);
        assert_eq!(
            (a.underrun_since, a.prev, a.lead),
            (None, None, Duration::ZERO)
        );
        // A burst: the second chunk arrives at once and queues behind the first.
        let b = p.arrive(t0 + MS, MS * 20, true);
        assert_eq!(b.start, t0 + MS * 80);
        assert_eq!(b.lead, MS * 79);
        assert_eq!(b.prev, Some((t0, MS * 20)));
        assert_eq!(p.queue_end, Some(t0 + MS * 100));
    }

    #[test]
    fn an_underrun_is_a_chunk_after_the_queue_ran_dry() {
        let t0 = Instant::now();
        let mut p = playout(40);
        p.arrive(t0, MS * 20, true);
        assert!(
            p.arrive(t0 + MS * 20, MS * 20, true)
                .underrun_since
                .is_none()
        );
        // Queue ran dry at t0 + 80 ms; playback restarts 40 ms after the late chunk.
        let c = p.arrive(t0 + MS * 200, MS * 20, true);
        assert_eq!(c.underrun_since, Some(t0 + MS * 80));
        assert_eq!(c.start, t0 + MS * 240);
        p.reset();
        let d = p.arrive(t0 + MS * 900, MS * 20, true);
        assert!(d.underrun_since.is_none() && d.prev.is_none());
    }

    #[test]
    fn a_reset_keeps_the_queue_playing() {
        let t0 = Instant::now();
        let mut p = playout(60);
        p.arrive(t0, MS * 1000, true);
        p.reset();
        let b = p.arrive(t0 + MS * 10, MS * 20, true);
        assert_eq!(b.start, t0 + MS * 1060);
        assert!(b.prev.is_none());
    }

    #[test]
    fn a_flush_cuts_the_playing_chunk_and_drops_the_queue() {
        let t0 = Instant::now();
        let mut p = playout(60);
        for i in 0..10 {
            p.arrive(t0 + MS * i, MS * 100, true);
        }
        // Heard from 60 ms; at 500 ms the fifth chunk (460..560) is playing.
        p.flush(t0 + MS * 500);
        let heard: Vec<_> = p.chunks().filter(|c| c.heard()).collect();
        assert_eq!(heard.len(), 5);
        assert_eq!(heard[4].end, t0 + MS * 500);
        assert!(p.chunks_from(5).all(|c| !c.heard()));
        assert_eq!(p.queue_end, Some(t0 + MS * 500));
        // The next audio starts a new queue with the pre-roll, not an underrun.
        let next = p.arrive(t0 + MS * 700, MS * 20, true);
        assert_eq!(next.start, t0 + MS * 760);
        assert!(next.underrun_since.is_none() && next.prev.is_none());
        // A flush before a chunk starts playing drops it whole.
        p.flush(t0 + MS * 710);
        assert!(!p.chunks().last().unwrap().heard());
    }
}
