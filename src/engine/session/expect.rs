//! Waiting and judging: `await` and `expect` take named events from the queue in order; the
//! audio expectations (`audio_stops`, `audio_resumes`, `no_audio`, in [`super::hearing`]) read
//! the caller's heard timeline. A latency is measured from a reference instant (the end of the user's speech, or a
//! mark named with `from:`).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};

use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass};
use crate::plan::compile::{Capture, Expectation, StepSpec};

use super::Session;
use super::ingest::{Inbound, Kind};
use crate::engine::call::{captured_ms, fail, wait_stop};

impl Session<'_, '_> {
    /// The instant latencies of a step are measured from.
    pub(super) fn reference(
        &self,
        step: &StepSpec,
        from: Option<&str>,
    ) -> Result<Instant, Failure> {
        match from {
            None => Ok(self.anchor),
            Some(name) => self.marks.get(name).copied().ok_or_else(|| {
                fail(
                    FailureClass::ExpectationFailed,
                    step,
                    format!("`from: {name}`: that mark or event has not happened yet"),
                )
            }),
        }
    }

    /// Wait for the next event called `name`. Earlier events of other kinds are skipped,
    /// unless `strict` (then any other named event is `unexpected_event`).
    pub(super) async fn next_event(
        &mut self,
        step: &StepSpec,
        name: &str,
        deadline: Instant,
        strict: bool,
    ) -> Result<(Instant, Option<Value>), Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        let allowed = Duration::from_millis(left.as_micros().div_ceil(1000) as u64);
        let is_audio = matches!(
            name,
            "audio" | "first_audio" | "first_speech" | "first_audio_heard" | "first_speech_heard"
        );
        // One timer and one stop subscription for the whole wait (it loops per inbound message).
        let mut stop = self.ctx.stop.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        let timeout = sleep_until(deadline);
        tokio::pin!(timeout);
        loop {
            // A heard instant still in the future: wait for it (a flush may yet drop the audio).
            let mut wake = None;
            if is_audio {
                let mut found = match name {
                    "first_audio" => self.first_after_anchor(false),
                    "first_speech" => self.first_after_anchor(true),
                    "first_audio_heard" => self.first_heard_after_anchor(false),
                    "first_speech_heard" => self.first_heard_after_anchor(true),
                    _ => {
                        let cursor = self.audio_cursor;
                        let anchor = self.anchor;
                        self.playout
                            .chunks()
                            .find(|c| c.at >= anchor && cursor.is_none_or(|k| c.at > k))
                            .map(|c| c.at)
                    }
                };
                if let Some(at) = found.filter(|at| *at > Instant::now()) {
                    wake = Some(at);
                    found = None;
                }
                if let Some(at) = found {
                    if name == "audio" {
                        self.audio_cursor = Some(at);
                    }
                    return Ok((at, None));
                }
                // A server error fails the wait even though it is on the other stream.
                let error_at = self
                    .queue
                    .iter()
                    .position(|e| matches!(e.kind, Kind::ServerError(_)));
                if let Some(Inbound {
                    kind: Kind::ServerError(message),
                    ..
                }) = error_at.and_then(|i| self.queue.remove(i))
                {
                    return Err(fail(
                        FailureClass::ServerError,
                        step,
                        format!("server error while waiting for `{name}`: {message}"),
                    ));
                }
            }
            while !is_audio && let Some(e) = self.queue.pop_front() {
                match e.kind {
                    Kind::Event {
                        name: got,
                        json,
                        informational,
                    } => {
                        if got == name {
                            return Ok((e.at, json));
                        }
                        // Server metrics and progress notes are never "unexpected".
                        if strict && !informational {
                            return Err(fail(
                                FailureClass::UnexpectedEvent,
                                step,
                                format!("expected `{name}`, the server sent `{got}`"),
                            ));
                        }
                    }
                    Kind::ServerError(message) => {
                        if name == "error" {
                            let json = serde_json::json!({"type": "error", "message": message});
                            return Ok((e.at, Some(json)));
                        }
                        return Err(fail(
                            FailureClass::ServerError,
                            step,
                            format!("server error while waiting for `{name}`: {message}"),
                        ));
                    }
                }
            }
            if let Some(why) = &self.closed {
                return Err(fail(
                    FailureClass::ConnectionClosed,
                    step,
                    format!("{why} while waiting for `{name}`"),
                ));
            }
            let tick = self.next_tick();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    self.check_stop(step)?;
                    return Err(fail(FailureClass::Aborted, step, "run stopped"));
                }
                _ = sleep_until(tick.unwrap_or(deadline)), if tick.is_some_and(|t| t < deadline) => self.tick(step).await?,
                _ = sleep_until(wake.unwrap_or(deadline)), if wake.is_some_and(|t| t < deadline) => {}
                _ = &mut timeout => {
                    let waited = format!("no `{name}` within {}", format_duration(allowed));
                    return Err(match &self.unanswered_tool {
                        // The bot is waiting for the caller: say so, not just "timeout".
                        Some(tool) => fail(
                            FailureClass::ToolCallUnanswered,
                            step,
                            format!(
                                "{waited}: the bot called tool {tool} and waits for its result; \
                                 answer it with `on_tool_call` (or a `send_json` step)"
                            ),
                        ),
                        None => fail(FailureClass::Timeout, step, waited),
                    });
                }
                msg = self.stream.next() => {
                    self.ingest(step, msg)?;
                    self.send_tool_results(step).await?;
                }
            }
        }
    }

    /// Bookkeeping after an awaited/expected event: its mark, the latency, captured fields.
    pub(super) fn after_event(
        &mut self,
        name: &str,
        at: Instant,
        json: Option<&Value>,
        reference: Instant,
        record: Option<&str>,
        capture: &[Capture],
    ) -> Result<(), String> {
        self.marks.insert(name.to_string(), at);
        if let Some(json) = json {
            self.last_event = Some(json.clone());
        }
        if let Some(metric) = record {
            self.record_since(metric, reference, at);
        }
        if let Some(json) = json {
            for c in capture {
                let mut v = json;
                let mut found = true;
                for key in &c.path {
                    match v.get(key) {
                        Some(next) => v = next,
                        None => {
                            found = false;
                            break;
                        }
                    }
                }
                if let Some(ms) = v.as_f64().filter(|_| found) {
                    let value = captured_ms(&c.metric, ms)?;
                    self.record(&c.metric, value, at);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn evaluate(
        &mut self,
        step: &StepSpec,
        what: &Expectation,
        record: Option<&str>,
        from: Option<&str>,
        within: Duration,
        capture: &[Capture],
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        match what {
            Expectation::Event { name, conditions } => {
                let reference = self.reference(step, from)?;
                let deadline = Instant::now() + within;
                let (at, json) = self.next_event(step, name, deadline, true).await?;
                let empty = Value::Null;
                let j = json.as_ref().unwrap_or(&empty);
                if let Some(c) = conditions.iter().find(|c| !c.holds(j)) {
                    return Err(expectation(format!(
                        "`{name}` did not match `{}`: got {}",
                        c.describe(),
                        preview(&j.to_string())
                    )));
                }
                self.after_event(name, at, json.as_ref(), reference, record, capture)
                    .map_err(|m| fail(FailureClass::BadValue, step, m))
            }
            Expectation::NoAudio => self.no_audio(step, within).await,
            Expectation::AudioStops => {
                let reference = match from {
                    Some(_) => self.reference(step, from)?,
                    None => self.last_interrupt.take().unwrap_or(self.anchor),
                };
                self.audio_stops(step, reference, record, within).await
            }
            Expectation::AudioResumes => {
                let reference = self.reference(step, from)?;
                self.audio_resumes(step, reference, record, within).await
            }
        }
    }
}

/// A duration as whole milliseconds, for expectation messages.
pub(super) fn ms(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1000.0)
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        s.push('…');
    }
    s
}
