//! What the session sends and when. Outgoing audio is paced against an absolute schedule with
//! capture semantics: frame *i* covers `[start + i·frame, start + (i+1)·frame)` and is sent at
//! the end of that interval, as a microphone would deliver it. Between utterances the session
//! may send silence (`continuous_audio`) and the adapter its own timed messages.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass};
use crate::plan::compile::{AudioOut, StepSpec};

use super::{Session, encode_failure};
use crate::engine::call::{fail, wait_stop};

/// Frame length of the silence sent between utterances with `continuous_audio`.
pub(super) const IDLE_FRAME: Duration = Duration::from_millis(20);

/// How long one send may take before the server counts as no longer reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

impl Session<'_, '_> {
    pub(super) async fn send(&mut self, step: &StepSpec, msg: Message) -> Result<(), Failure> {
        self.send_msg(msg)
            .await
            .map_err(|(class, message)| fail(class, step, message))
    }

    pub(super) async fn send_msg(&mut self, msg: Message) -> Result<(), (FailureClass, String)> {
        if let Some(why) = &self.closed {
            return Err((
                FailureClass::ConnectionClosed,
                format!("cannot send: {why}"),
            ));
        }
        let deadline = Instant::now() + SEND_TIMEOUT;
        // Biased: a send that completes at once (the usual case) never arms the timer or the
        // stop subscription.
        tokio::select! {
            biased;
            r = self.sink.send(msg) => {
                r.map_err(|e| (FailureClass::SendError, format!("sending failed: {e}")))
            }
            _ = wait_stop(&mut self.ctx.stop) => Err((FailureClass::Aborted, "run stopped".into())),
            _ = sleep_until(deadline) => Err((
                FailureClass::SendError,
                format!(
                    "the server stopped reading: a send did not complete within {}",
                    format_duration(SEND_TIMEOUT)
                ),
            )),
        }
    }

    /// When the session next has something to send by itself.
    pub(super) fn next_tick(&self) -> Option<Instant> {
        match (self.idle_next, self.codec.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Send what is due: a silence frame between utterances, the adapter's own messages.
    pub(super) async fn tick(&mut self, step: &StepSpec) -> Result<(), Failure> {
        let now = Instant::now();
        if let Some(due) = self.idle_next.filter(|d| *d <= now) {
            let n =
                (u64::from(self.ctx.sample_rate) * IDLE_FRAME.as_millis() as u64 / 1000) as usize;
            let msg = self
                .codec
                .audio(&vec![0; n])
                .map_err(|e| encode_failure(step, e))?;
            self.send(step, msg).await?;
            // Keep the cadence; after a long stall start afresh rather than bursting.
            let next = due + IDLE_FRAME;
            self.idle_next = Some(if next + IDLE_FRAME * 5 < now {
                now + IDLE_FRAME
            } else {
                next
            });
        }
        if self.codec.next_due().is_some_and(|d| d <= now) {
            for msg in self.codec.due(now) {
                self.send(step, msg).await?;
            }
        }
        Ok(())
    }

    /// Stream a clip from `start`; returns the scheduled end of its speech (before any
    /// trailing silence). The user counts as speaking until then.
    pub(super) async fn stream_audio(
        &mut self,
        step: &StepSpec,
        out: &AudioOut,
        start: Instant,
    ) -> Result<Instant, Failure> {
        let clip = &out.clip;
        let speech_end =
            start + Duration::from_secs_f64(clip.speech_end() as f64 / f64::from(clip.sample_rate));
        // Inside an utterance opened by speech_start it stays open until speech_end.
        let open = self.user.start.is_some() && self.user.end.is_none();
        if !open {
            self.user_starts(start, Some(speech_end));
        }
        self.mark("audio_start", start, out.label.clone());
        self.said = out.text.clone();
        let realtime = out.pacing == crate::plan::model::Pacing::Realtime;
        let idle = self.idle_next.take().is_some();
        let mut last_due = start;
        let mut end_sent = false;
        for (i, samples) in out.clip.frames(out.frame).enumerate() {
            if realtime {
                let due = start + out.frame * (i as u32 + 1);
                self.pump_until(step, due).await?;
                let lag = Instant::now().saturating_duration_since(due);
                self.ctx.rec.record_send_lag(lag);
                last_due = due;
            }
            let msg = self
                .codec
                .audio(&samples)
                .map_err(|e| encode_failure(step, e))?;
            self.send(step, msg).await?;
            if realtime && !end_sent && last_due >= speech_end {
                // The frame carrying the end of speech has left: how late against its schedule.
                end_sent = true;
                let lag = Instant::now().saturating_duration_since(last_due);
                self.ctx.rec.record_speech_end_lag(lag);
                self.speech_end_lag = Some((speech_end, lag));
            }
        }
        // Real-time audio keeps the schedule: the next step is due when its last frame was.
        self.due = realtime.then_some(last_due);
        if idle {
            self.idle_next =
                Some(last_due.max(Instant::now().min(last_due + IDLE_FRAME)) + IDLE_FRAME);
        }
        Ok(if realtime { speech_end } else { Instant::now() })
    }
}
