//! Waiting and judging: `await` and `expect` take named events from the queue in order, and the
//! audio expectations (`audio_stops`, `audio_resumes`, `no_audio`) read the timeline of received
//! audio. A latency is measured from a reference instant (the end of the user's speech, or a
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
use super::timeline::{self, STOP_GAP};
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
        let is_audio = matches!(name, "audio" | "first_audio" | "first_speech");
        // One timer and one stop subscription for the whole wait (it loops per inbound message).
        let mut stop = self.ctx.stop.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        let timeout = sleep_until(deadline);
        tokio::pin!(timeout);
        loop {
            if is_audio {
                let found = match name {
                    "first_audio" => self.first_after_anchor(false),
                    "first_speech" => self.first_after_anchor(true),
                    _ => {
                        let cursor = self.audio_cursor;
                        let anchor = self.anchor;
                        self.chunks
                            .iter()
                            .find(|c| c.at >= anchor && cursor.is_none_or(|k| c.at > k))
                            .map(|c| c.at)
                    }
                };
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
                _ = &mut timeout => {
                    return Err(fail(
                        FailureClass::Timeout,
                        step,
                        format!("no `{name}` within {}", format_duration(allowed)),
                    ));
                }
                msg = self.stream.next() => self.ingest(step, msg)?,
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
            Expectation::NoAudio => {
                let start = Instant::now();
                self.pump_until(step, start + within).await?;
                match self.chunks.iter().find(|c| c.speech && c.at >= start) {
                    Some(c) => Err(expectation(format!(
                        "the bot spoke {} into a {} silence",
                        ms(c.at - start),
                        ms(within)
                    ))),
                    None => Ok(()),
                }
            }
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

    /// `expect: audio_stops`: the bot's speech after `reference` stops within `within`.
    async fn audio_stops(
        &mut self,
        step: &StepSpec,
        reference: Instant,
        record: Option<&str>,
        within: Duration,
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        let talking = timeline::talking_at(&self.chunks, reference);
        let give_up = reference + within + STOP_GAP;
        loop {
            // The last speech chunk after the reference that is followed by a gap.
            // `prev` is when the audio heard so far stops playing.
            let scan = timeline::stop_after(&self.chunks, reference);
            let prev = scan.heard_until;
            let mut stopped = scan.stopped;
            let now = Instant::now();
            if stopped.is_none() && now.saturating_duration_since(prev) > STOP_GAP {
                stopped = Some(prev);
            }
            if let Some(stop_at) = stopped {
                if !talking && stop_at == reference {
                    return Err(expectation(
                        "the bot was not speaking when interrupted".into(),
                    ));
                }
                // A reply that simply ran to its end is not a bot that stopped for the
                // caller: the raw protocol says a barge-in is answered by `interrupted`.
                let named_since = |name: &str| {
                    self.queue.iter().any(|e| {
                        e.at >= reference
                            && matches!(&e.kind, Kind::Event { name: n, .. } if n == name)
                    })
                };
                if named_since("response_end") && !named_since("interrupted") {
                    return Err(expectation(
                        "the reply ran to its end (`response_end` without `interrupted`): \
                         the bot did not stop for the interruption"
                            .into(),
                    ));
                }
                return self.audio_changed(
                    step,
                    "audio_stops",
                    reference,
                    stop_at,
                    record,
                    within,
                    |took, allowed| {
                        format!(
                            "the bot kept talking {took} after the interruption (allowed {allowed})"
                        )
                    },
                );
            }
            if now >= give_up {
                return Err(expectation(format!(
                    "the bot was still talking {} after the interruption",
                    ms(now - reference)
                )));
            }
            self.pump_until(
                step,
                (prev + STOP_GAP + Duration::from_millis(1)).min(give_up),
            )
            .await?;
        }
    }

    /// `expect: audio_resumes`: after a pause, the bot's speech resumes within `within` of
    /// `reference` (and is not a new answer).
    async fn audio_resumes(
        &mut self,
        step: &StepSpec,
        reference: Instant,
        record: Option<&str>,
        within: Duration,
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        let deadline = reference + within;
        loop {
            // The first speech chunk after the reference that follows a pause.
            let scan = timeline::resume_after(&self.chunks, reference);
            let now = Instant::now();
            if let Some(at) = scan.resumed {
                // Audio after a turn change is a new answer, not a resumption.
                let new_turn = self.queue.iter().find_map(|e| match &e.kind {
                    Kind::Event { name, .. }
                        if e.at >= reference
                            && e.at <= at
                            && matches!(
                                name.as_str(),
                                "interrupted" | "transcript" | "response_start"
                            ) =>
                    {
                        Some(name.clone())
                    }
                    _ => None,
                });
                if let Some(name) = new_turn {
                    return Err(expectation(format!(
                        "the bot started a new answer (`{name}`) instead of resuming"
                    )));
                }
                return self.audio_changed(
                    step,
                    "audio_resumes",
                    reference,
                    at,
                    record,
                    within,
                    |took, allowed| format!("the bot resumed after {took} (allowed {allowed})"),
                );
            }
            if now >= deadline {
                // Speech that never paused after the reference: the bot talked on.
                let recent = scan
                    .prev
                    .is_some_and(|p| now.saturating_duration_since(p.end()) <= STOP_GAP);
                if scan.flowing && recent {
                    if let Some(m) = record {
                        self.record(m, Duration::ZERO, now);
                    }
                    return Ok(());
                }
                return Err(expectation(format!(
                    "the bot did not resume within {} of the user's last speech",
                    ms(within)
                )));
            }
            let next = (Instant::now() + Duration::from_millis(20)).min(deadline);
            self.pump_until(step, next).await?;
        }
    }

    /// The bot's audio changed (`event`: it stopped or resumed) at `at`: record the latency
    /// from `reference`, put the event on the timeline, and fail (with the message `too_late`
    /// makes of the latency and the allowance) when it took longer than `within`.
    #[allow(clippy::too_many_arguments)]
    fn audio_changed(
        &mut self,
        step: &StepSpec,
        event: &str,
        reference: Instant,
        at: Instant,
        record: Option<&str>,
        within: Duration,
        too_late: impl FnOnce(String, String) -> String,
    ) -> Result<(), Failure> {
        let latency = at.saturating_duration_since(reference);
        if let Some(m) = record {
            self.record_since(m, reference, at);
        }
        self.marks.insert(event.into(), at);
        self.mark(event, at, String::new());
        if latency > within {
            let message = too_late(ms(latency), ms(within));
            Err(fail(FailureClass::ExpectationFailed, step, message))
        } else {
            Ok(())
        }
    }
}

/// A duration as whole milliseconds, for expectation messages.
fn ms(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1000.0)
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        s.push('…');
    }
    s
}
