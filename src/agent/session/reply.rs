//! Streaming the reply: frames against the pacing's schedule (real time, a burst, or a fixed
//! lead over the caller's playout), the turn's metrics after the first frame, the reply's end
//! message, and the stop of a reply — flushing what the caller has queued when audio was sent
//! ahead of real time.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::super::ReplyPacing;
use super::super::wire::{CancelReason, Output, Queued};
use super::faults::Slot;
use super::{End, Phase, Session};

/// Outbound slots kept free for control messages while a burst fills the queue.
const BURST_RESERVE: usize = 32;
/// A burst waiting for room in the outbound queue tries again after this long.
const BURST_RETRY: Duration = Duration::from_millis(2);
/// A client that takes nothing for this long while a burst waits is not reading.
const BURST_STALL_LIMIT: Duration = Duration::from_secs(5);

impl Session {
    /// The next reply frame is due (or, sending ahead, frames may go out).
    pub(super) fn on_frame(&mut self, now: Instant) -> Result<(), End> {
        if self.config().reply_pacing != ReplyPacing::Realtime {
            return self.send_ahead(now);
        }
        let Phase::Speaking { turn, reply } = &mut self.phase else {
            return Ok(());
        };
        if turn.drop_at == Some(reply.next) {
            return Err(End::Dropped);
        }
        if turn.stall_at == Some(reply.next) {
            turn.stall_at = None;
            reply.delay(self.shared.config.faults.stall_for);
            return Ok(());
        }
        let first = !reply.first_frame_sent;
        reply.first_frame_sent = true;
        if reply.finished() {
            // The reply's audio has played out on schedule.
            if first {
                self.send_metrics()?;
            }
            return self.finish_reply();
        }
        let bytes = self.voice.frame_bytes(&reply.audio, reply.next);
        reply.next += 1;
        self.emit(Output::Audio(&bytes))?;
        if first {
            self.send_metrics()?;
        }
        Ok(())
    }

    /// When the next frame may go out under the pacing (`burst`/`ahead`), or, once everything
    /// was sent, when the caller has played it all.
    pub(super) fn send_due(&self) -> Option<Instant> {
        let Phase::Speaking { reply, .. } = &self.phase else {
            return None;
        };
        if reply.paused {
            return None;
        }
        if reply.end_sent {
            return Some(reply.playout_end);
        }
        let mut at = match self.config().reply_pacing {
            ReplyPacing::Ahead(lead) => reply.playout_end.checked_sub(lead),
            _ => None,
        }
        .map_or(reply.origin(), |at| at.max(reply.origin()));
        for hold in [reply.hold_until, reply.retry_at].into_iter().flatten() {
            at = at.max(hold);
        }
        Some(at)
    }

    /// `burst` and `ahead(N)`: send every frame that is due, then the reply's end message
    /// right after the last one (as a streaming server does); the agent stays `Speaking`
    /// until the caller has played it all, so a barge-in can still flush it.
    fn send_ahead(&mut self, now: Instant) -> Result<(), End> {
        let pacing = self.config().reply_pacing;
        let stall_for = self.config().faults.stall_for;
        loop {
            let Phase::Speaking { turn, reply } = &mut self.phase else {
                return Ok(());
            };
            if reply.paused {
                return Ok(());
            }
            if reply.finished() {
                if !reply.end_sent {
                    reply.end_sent = true;
                    let corrupt = turn.corrupt;
                    if !reply.first_frame_sent {
                        reply.first_frame_sent = true;
                        self.send_metrics()?;
                    }
                    self.emit_control(Output::ResponseEnd, Slot::ResponseEnd, corrupt)?;
                    continue;
                }
                if now >= reply.playout_end {
                    self.phase = Phase::Idle; // the caller has heard it all
                }
                return Ok(());
            }
            if turn.drop_at == Some(reply.next) {
                return Err(End::Dropped);
            }
            if turn.stall_at == Some(reply.next) {
                turn.stall_at = None;
                reply.hold_until = Some(now + stall_for);
                return Ok(());
            }
            if reply.hold_until.is_some_and(|t| t > now) {
                return Ok(());
            }
            if let ReplyPacing::Ahead(lead) = pacing
                && reply.playout_end.saturating_duration_since(now) > lead
            {
                return Ok(()); // far enough ahead
            }
            if self.out.capacity() <= BURST_RESERVE {
                // The socket is not taking it as fast: wait for room, within reason.
                let since = *reply.blocked_since.get_or_insert(now);
                if now - since > BURST_STALL_LIMIT {
                    return Err(End::SlowClient);
                }
                reply.retry_at = Some(now + BURST_RETRY);
                return Ok(());
            }
            reply.retry_at = None;
            reply.blocked_since = None;
            let first = !reply.first_frame_sent;
            reply.first_frame_sent = true;
            let bytes = self.voice.frame_bytes(&reply.audio, reply.next);
            reply.sent(now, self.rate);
            self.emit(Output::Audio(&bytes))?;
            if first {
                self.send_metrics()?;
            }
        }
    }

    pub(super) fn finish_reply(&mut self) -> Result<(), End> {
        let old = std::mem::replace(&mut self.phase, Phase::Idle);
        match old {
            Phase::Speaking { turn, .. } => {
                self.emit_control(Output::ResponseEnd, Slot::ResponseEnd, turn.corrupt)
            }
            other => {
                self.phase = other;
                Ok(())
            }
        }
    }

    /// Stop the reply for good. Audio the caller has queued (sent ahead of real time) is
    /// flushed with the cancel; after the reply's end message the flush alone ends it.
    pub(super) fn cancel_reply(&mut self, reason: CancelReason, now: Instant) -> Result<(), End> {
        let old = std::mem::replace(&mut self.phase, Phase::Idle);
        let Phase::Speaking { mut reply, .. } = old else {
            // Nothing streamed yet (a response opened by a tool call): close it.
            return self.emit(Output::Cancelled {
                reason,
                queued: Queued::Nothing,
            });
        };
        let already = reply.flushed;
        let samples = reply.flush(now, self.rate);
        if reply.end_sent {
            return match samples {
                0 => Ok(()),
                samples => self.emit(Output::Flush { samples }),
            };
        }
        let queued = match (samples, already) {
            (0, true) => Queued::Flushed,
            (0, false) => Queued::Nothing,
            (n, _) => Queued::Samples(n),
        };
        self.emit(Output::Cancelled { reason, queued })
    }

    /// A barge-in pause: stop sending; drop what the caller has queued so the pause is heard
    /// now. Returns false when the reply cannot resume (its end message is out): the caller
    /// of this then ends it for good.
    pub(super) fn pause_reply(&mut self, now: Instant) -> Result<bool, End> {
        let Phase::Speaking { reply, .. } = &mut self.phase else {
            return Ok(true);
        };
        if reply.end_sent {
            return Ok(false);
        }
        reply.paused = true;
        let samples = reply.flush(now, self.rate);
        if samples > 0 {
            self.emit(Output::Flush { samples })?;
        }
        Ok(true)
    }

    /// Component timings, once per turn right after the first reply audio frame.
    pub(super) fn send_metrics(&mut self) -> Result<(), End> {
        if !self.config().send_metrics {
            return Ok(());
        }
        let Phase::Speaking { turn, .. } = &self.phase else {
            return Ok(());
        };
        let value = json!({
            "type": "metrics",
            "turn": turn.index,
            "asr_ms": ms(turn.asr),
            "llm_ms": ms(turn.llm),
            "tts_ms": ms(turn.tts),
            "tool_ms": ms(turn.tool.unwrap_or_default()),
            "total_ms": ms(Instant::now().saturating_duration_since(turn.speech_ended)),
        });
        self.emit(Output::Metrics(value))
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
