//! Reading the socket: every inbound message is timestamped on arrival and turned into named
//! events (queued for `await`/`expect`), flushes of the caller's playout queue, or reply audio
//! (scheduled on the caller's playout clock, with the audio-quality measurements taken as it
//! arrives).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::audio;
use crate::metrics::{Failure, FailureClass};
use crate::plan::compile::StepSpec;
use crate::protocol::client::WireEvent;

use super::Session;
use crate::engine::call::{captured_ms, fail, wait_stop};
use crate::engine::connect;

/// Most received audio kept per call for `report.record_audio` (10 minutes).
const MAX_HEARD_SECONDS: usize = 600;

/// A named inbound event with its arrival time.
#[derive(Debug, Clone)]
pub(super) struct Inbound {
    pub(super) at: Instant,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Event {
        name: String,
        json: Option<Value>,
        /// Never "unexpected" in a strict `expect`.
        informational: bool,
    },
    ServerError(String),
}

impl Session<'_, '_> {
    /// Receive (and log) inbound messages until `until`.
    pub(super) async fn pump_until(
        &mut self,
        step: &StepSpec,
        until: Instant,
    ) -> Result<(), Failure> {
        // One timer and one stop subscription per call, not per inbound message: this runs
        // once per audio frame sent and loops once per frame received.
        let mut stop = self.ctx.stop.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        let deadline = sleep_until(until);
        tokio::pin!(deadline);
        loop {
            if self.closed.is_some() {
                // Nothing more can arrive; a closed connection is judged by the next send/await.
                tokio::select! {
                    _ = &mut stopped => return self.check_stop(step),
                    _ = &mut deadline => return Ok(()),
                }
            }
            let tick = self.next_tick();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    self.check_stop(step)?;
                    // Not stopped after all (cannot happen: `wait_stop` only resolves on stop).
                    return Ok(());
                }
                _ = &mut deadline => return Ok(()),
                _ = sleep_until(tick.unwrap_or(until)), if tick.is_some_and(|t| t < until) => self.tick(step).await?,
                msg = self.stream.next() => {
                    self.ingest(step, msg)?;
                    self.send_tool_results(step).await?;
                }
            }
        }
    }

    pub(super) fn check_stop(&self, step: &StepSpec) -> Result<(), Failure> {
        if *self.ctx.stop.borrow() {
            Err(fail(FailureClass::Aborted, step, "run stopped"))
        } else {
            Ok(())
        }
    }

    pub(super) fn ingest(
        &mut self,
        step: &StepSpec,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Failure> {
        let at = Instant::now();
        match msg {
            None => {
                self.closed = Some("the server closed the connection".into());
                self.closed_at = step.position();
            }
            Some(Err(e)) => {
                let (class, why) = connect::classify_read_error(&e);
                self.mark("closed", at, why.clone());
                self.closed = Some(why.clone());
                self.closed_at = step.position();
                if class == FailureClass::ProtocolError {
                    return Err(fail(class, step, why));
                }
            }
            Some(Ok(msg @ (Message::Binary(_) | Message::Text(_)))) => {
                let events = self
                    .codec
                    .decode(&msg, at)
                    .map_err(|e| fail(FailureClass::ProtocolError, step, e.0))?;
                for event in events {
                    self.ingest_event(event, at)
                        .map_err(|m| fail(FailureClass::BadValue, step, m))?;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) if !f.reason.is_empty() => format!(
                        "the server closed the connection (code {}: {})",
                        u16::from(f.code),
                        f.reason
                    ),
                    Some(f) => format!(
                        "the server closed the connection (code {})",
                        u16::from(f.code)
                    ),
                    None => "the server closed the connection".into(),
                };
                self.mark("closed", at, why.clone());
                self.closed = Some(why);
                self.closed_at = step.position();
            }
            Some(Ok(_)) => {} // ping/pong/raw frames: handled by tungstenite
        }
        Ok(())
    }

    /// Queue a decoded event, log audio, record captures. A captured value that is no duration
    /// is refused with the reason.
    fn ingest_event(&mut self, event: WireEvent, at: Instant) -> Result<(), String> {
        let kind = match event {
            WireEvent::Audio(samples) => {
                self.ingest_audio(&samples, at);
                return Ok(());
            }
            WireEvent::Capture { metric, ms } => {
                let value = captured_ms(&metric, ms)?;
                self.record(&metric, value, at);
                return Ok(());
            }
            WireEvent::Flush => {
                self.flush(at);
                return Ok(());
            }
            WireEvent::Error(message) => {
                self.mark("error", at, message.clone());
                Kind::ServerError(message)
            }
            WireEvent::Event {
                name,
                json,
                detail,
                informational,
            } => {
                if !informational {
                    self.mark(&name, at, detail);
                }
                if name == "response_end" {
                    self.playout.reset();
                }
                if name == "tool_call"
                    && matches!(self.codec, crate::protocol::client::Codec::OpenAi(_))
                {
                    self.answer_tool_call(&json)?;
                }
                Kind::Event {
                    name,
                    json: Some(json),
                    informational,
                }
            }
        };
        self.queue.push_back(Inbound { at, kind });
        Ok(())
    }

    /// The server flushed the caller's playout queue at `at`.
    fn flush(&mut self, at: Instant) {
        self.playout.flush(at);
        if self.ctx.keep_audio {
            // What was queued after the flush is never heard.
            let pos = self.heard_pos(at);
            self.recorder.trace.heard.truncate(pos);
        }
    }

    /// The sample index of `t` in the recorded audio of the call.
    fn heard_pos(&self, t: Instant) -> usize {
        let rate = f64::from(self.ctx.sample_rate);
        (t.saturating_duration_since(self.connected).as_secs_f64() * rate) as usize
    }

    /// Log a reply audio chunk on the playout clock and take the audio-quality measurements.
    fn ingest_audio(&mut self, pcm: &[i16], at: Instant) {
        if pcm.is_empty() {
            return;
        }
        let samples = pcm.len();
        let dur = Duration::from_secs_f64(samples as f64 / f64::from(self.ctx.sample_rate));
        let speech = audio::dbfs(pcm) >= self.ctx.speech_threshold_dbfs;

        let arrival = self.playout.arrive(at, dur, speech);
        // Glitch: the queue ran dry mid-reply and this chunk came after (a playout underrun)
        // while the user was silent; a pause the user caused is expected.
        if let Some(end) = arrival.underrun_since
            && !self.user.spoke_between(end, at)
        {
            self.record("glitch", at - end, at);
            let gap = (at - end).as_secs_f64() * 1000.0;
            self.mark("glitch", at, format!("{gap:.0}ms underrun"));
        }
        // Frame jitter: how far the gap between two chunks is from the audio they carry, only
        // while the sender paces in real time (a chunk of a faster-than-real-time burst, or one
        // arriving with more than the pre-roll plus two chunks still queued, is not heard
        // whatever its timing).
        if let Some((prev_at, prev_dur)) = arrival.prev
            && !self.user.spoke_between(prev_at, at)
        {
            let gap = at - prev_at;
            let paced =
                gap >= prev_dur / 2 && arrival.lead <= self.ctx.playout.buffer + prev_dur * 2;
            if paced {
                self.record("frame_jitter", gap.abs_diff(prev_dur), at);
            }
        }
        // Reverse barge-in: the caller hears the bot start talking while the user still is.
        let heard_at = arrival.start;
        if speech
            && self.user.speaking_at(heard_at)
            && !self.user.bot_was_talking
            && !self.user.counted
            && let Some(start) = self.user.start
        {
            self.user.counted = true;
            self.record("reverse_barge_in", heard_at - start, heard_at);
            self.mark("reverse_barge_in", heard_at, String::new());
        }

        if self.ctx.keep_audio {
            // Place the chunk where the caller hears it; gaps become silence.
            let pos = self.heard_pos(heard_at);
            let cap = MAX_HEARD_SECONDS * self.ctx.sample_rate as usize;
            let heard = &mut self.recorder.trace.heard;
            if pos < cap {
                if heard.len() < pos {
                    heard.resize(pos, 0);
                }
                heard.truncate(pos);
                heard.extend_from_slice(pcm);
                heard.truncate(cap);
            }
        }
        self.mark_firsts();
    }
}
