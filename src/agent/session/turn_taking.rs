//! The user's speech and barge-in: an utterance opening while the agent is busy, becoming real
//! (`interrupt` or `min_speech`) or a false alarm, and the barge-in stop of the reply audio.

use std::time::Duration;

use tokio::time::Instant;

use super::super::vad::Heard;
use super::super::wire::{CancelReason, Output};
use super::{Barge, End, Phase, Session};

impl Session {
    /// An utterance opened (VAD or explicit). If the agent is busy it may be a barge-in.
    pub(super) fn on_speech_started(&mut self, now: Instant, start: Duration) -> Result<(), End> {
        self.utterance_start = start;
        self.emit(Output::SpeechStarted {
            audio_start_ms: start.as_millis() as u64,
        })?;
        let c = &self.shared.config;
        self.barge = match &mut self.phase {
            Phase::Idle => None,
            Phase::Thinking { .. } => Some(Barge { real: false }),
            Phase::Speaking { reply, .. } => {
                if reply.paused {
                    // Paused by an earlier false alarm that has not resumed yet: stay paused.
                    reply.resume_at = None;
                } else if reply.stop_at.is_none() {
                    reply.stop_at = Some(now + c.barge_in_delay.sample(&mut self.rng));
                }
                Some(Barge { real: false })
            }
        };
        Ok(())
    }

    pub(super) fn check_min_speech(&mut self, now: Instant) -> Result<(), End> {
        match self.barge {
            Some(Barge { real: false }) if self.ear.heard_so_far() >= self.config().min_speech => {
                self.on_real_speech(now)
            }
            _ => Ok(()),
        }
    }

    /// The overlapping speech is a real barge-in.
    pub(super) fn on_real_speech(&mut self, now: Instant) -> Result<(), End> {
        let Some(barge) = self.barge.as_mut() else {
            return Ok(());
        };
        barge.real = true;
        let c = &self.shared.config;
        match &mut self.phase {
            Phase::Idle => Ok(()),
            Phase::Thinking { .. } => {
                // The user kept talking: drop the pending answer, this speech is the new turn.
                self.phase = Phase::Idle;
                self.emit(Output::Abandoned)
            }
            Phase::Speaking { reply, .. } => {
                if reply.paused {
                    self.cancel_reply(CancelReason::TurnDetected, now)
                } else {
                    if reply.stop_at.is_none() {
                        reply.stop_at = Some(now + c.barge_in_delay.sample(&mut self.rng));
                    }
                    Ok(())
                }
            }
        }
    }

    /// The VAD (hangover or the no-frames fallback) ended the utterance.
    pub(super) fn on_vad_ended(&mut self, heard: Heard, now: Instant) -> Result<(), End> {
        let end = self.utterance_start + heard.audio;
        self.emit(Output::SpeechStopped {
            audio_end_ms: end.as_millis() as u64,
        })?;
        self.on_speech_ended(heard, now)
    }

    /// An utterance ended (VAD hangover, silence timeout or explicit `speech_end`).
    pub(super) fn on_speech_ended(&mut self, heard: Heard, now: Instant) -> Result<(), End> {
        if let Some(barge) = self.barge.take() {
            if !barge.real {
                self.false_alarm(now);
                return Ok(());
            }
            if matches!(self.phase, Phase::Speaking { .. }) {
                // Real barge-in that ended before its stop was due: stop now.
                self.cancel_reply(CancelReason::TurnDetected, now)?;
            }
        }
        if matches!(self.phase, Phase::Idle) {
            self.start_turn(heard, now, true, true)?;
        }
        Ok(())
    }

    /// Overlapping speech ended before it was real: resume where the audio stopped, no new
    /// turn.
    pub(super) fn false_alarm(&mut self, now: Instant) {
        let c = &self.shared.config;
        if let Phase::Speaking { reply, .. } = &mut self.phase {
            if reply.paused {
                reply.resume_at = Some(now + c.resume_delay.sample(&mut self.rng));
            } else {
                reply.stop_at = None; // it ended before the audio even stopped
            }
        }
    }

    /// The barge-in reaction time elapsed: stop the audio (what the caller has queued too).
    pub(super) fn on_stop(&mut self, now: Instant) -> Result<(), End> {
        let Phase::Speaking { reply, .. } = &mut self.phase else {
            return Ok(());
        };
        reply.stop_at = None;
        match self.barge {
            None => Ok(()),
            Some(Barge { real: false }) => {
                // Wait: real barge-in or false alarm?
                if self.pause_reply(now)? {
                    return Ok(());
                }
                // The whole reply is out (its end message too): it cannot resume, so the
                // barge-in ends it, and the speech becomes the next turn.
                if let Some(barge) = self.barge.as_mut() {
                    barge.real = true;
                }
                self.cancel_reply(CancelReason::TurnDetected, now)
            }
            Some(Barge { real: true }) => self.cancel_reply(CancelReason::TurnDetected, now),
        }
    }
}
