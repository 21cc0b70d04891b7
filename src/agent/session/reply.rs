//! Streaming the reply: one frame at a time against the absolute schedule, the turn's metrics
//! after the first frame, and `response_end` once the audio has played out.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::super::wire::Output;
use super::faults::Slot;
use super::{End, Phase, Session};

impl Session {
    /// The next reply frame is due.
    pub(super) fn on_frame(&mut self) -> Result<(), End> {
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
