//! The step interpreter: each step of a scenario against the socket, and the turn state the
//! steps move (when the user speaks, the end of speech latencies are measured from, this
//! turn's first audio).

use tokio::time::Instant;

use crate::metrics::{Failure, FailureClass};
use crate::plan::compile::{Action, DEFAULT_AWAIT_TIMEOUT, StepSpec};
use crate::plan::json_template::JsonTemplate;
use crate::plan::template::Context;
use crate::plan::{CHECK_FAILED_MARKER, CHECK_PASSED_MARKER};
use crate::protocol::Control;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::timeline::UserSpeech;
use super::{Session, encode_failure};
use crate::engine::call::fail;

impl Session<'_, '_> {
    /// The user starts speaking at `at` (until `end`, or until `speech_end` when None).
    pub(super) fn user_starts(&mut self, at: Instant, end: Option<Instant>) {
        let bot_was_talking = self.playout.talking_at(at, self.ctx.playout.stop_gap);
        self.user = UserSpeech {
            start: Some(at),
            end,
            bot_was_talking,
            counted: false,
        };
        // A pause of the bot while the user talks is expected, not a glitch.
        self.playout.reset();
    }

    /// The user finished speaking at `at`: latencies are measured from here, and reply audio
    /// before it is not an answer to it.
    pub(super) fn set_anchor(&mut self, at: Instant) {
        self.anchor = at;
        self.anchor_lag = self
            .speech_end_lag
            .filter(|(e, _)| *e == at)
            .map(|(_, l)| l);

        if self.user.end.is_none_or(|e| e > at) {
            self.user.end = Some(at);
        }
        self.marked_first = (false, false);
        self.playout.reset();
        self.marks.insert("speech_end".into(), at);
        self.mark("speech_end", at, String::new());
        // Reply audio may already have arrived (e.g. during trailing silence).
        self.mark_firsts();
    }

    /// The arrival of the first reply chunk answering the current end of speech: at or after
    /// it and, if the bot was still talking then (the tail of an earlier answer), only after a
    /// silence longer than [`super::heard::RESUME_GAP`].
    pub(super) fn first_after_anchor(&self, speech_only: bool) -> Option<Instant> {
        self.playout
            .first_after(self.anchor, speech_only)
            .map(|i| self.playout.chunk(i).at)
    }

    /// When the caller starts hearing the answer to the current end of speech (the first
    /// chunk from [`Self::first_after_anchor`]'s on that a flush did not drop).
    pub(super) fn first_heard_after_anchor(&self, speech_only: bool) -> Option<Instant> {
        let from = self.playout.first_after(self.anchor, speech_only)?;
        self.playout.first_heard_from(from, speech_only)
    }

    /// Put this turn's first audio and first speech on the timeline once they exist.
    pub(super) fn mark_firsts(&mut self) {
        if !self.marked_first.0
            && let Some(at) = self.first_after_anchor(false)
        {
            self.marked_first.0 = true;
            self.mark("first_audio", at, String::new());
        }
        if !self.marked_first.1
            && let Some(at) = self.first_after_anchor(true)
        {
            self.marked_first.1 = true;
            self.mark("first_speech", at, String::new());
        }
    }

    pub(super) async fn step(&mut self, step: &StepSpec) -> Result<(), Failure> {
        self.step_groups.clone_from(&step.groups);
        // A step that waits for the server ends the schedule: what follows it starts when it
        // finishes.
        if matches!(
            step.action,
            Action::Await { .. } | Action::Expect { .. } | Action::Interrupt { .. }
        ) {
            self.due = None;
        }
        match &step.action {
            Action::SendAudio(out) => {
                let start = self.due.take().unwrap_or_else(Instant::now);
                let speech_end = self.stream_audio(step, out, start).await?;
                self.set_anchor(speech_end);
                Ok(())
            }
            Action::Send(control) => self.send_control(step, *control).await,
            Action::Await {
                event,
                record,
                from,
                timeout,
                capture,
            } => {
                let reference = self.reference(step, from.as_deref())?;
                let deadline = Instant::now() + *timeout;
                let (at, json) = self.next_event(step, event, deadline, false).await?;
                self.after_event(
                    event,
                    at,
                    json.as_ref(),
                    reference,
                    record.as_deref(),
                    capture,
                )
                .map_err(|m| fail(FailureClass::BadValue, step, m))
            }
            Action::Wait(dist) => {
                let from = self.due.take().unwrap_or_else(Instant::now);
                let until = from + dist.sample(self.ctx.rng);
                self.pump_until(step, until).await?;
                self.due = Some(until);
                Ok(())
            }
            Action::Interrupt {
                after,
                audio,
                explicit,
                speech_end,
            } => {
                let first = match self.first_after_anchor(false) {
                    Some(t) => t,
                    None => {
                        let deadline = Instant::now() + DEFAULT_AWAIT_TIMEOUT;
                        self.next_event(step, "first_audio", deadline, false)
                            .await?
                            .0
                    }
                };
                let due = first + after.sample(self.ctx.rng);
                self.pump_until(step, due).await?;
                let control = if *explicit {
                    Control::Interrupt
                } else {
                    Control::SpeechStart
                };
                let msgs = self
                    .codec
                    .control(control, None, Instant::now())
                    .map_err(|e| encode_failure(step, e))?;
                for msg in msgs {
                    self.send(step, msg).await?;
                }
                let at = Instant::now();
                self.marks.insert("interrupt".into(), at);
                self.last_interrupt = Some(at);
                self.mark("interrupt", at, String::new());
                self.user_starts(at, None);
                let mut end = at;
                if let Some(out) = audio {
                    end = self.stream_audio(step, out, at).await?;
                }
                if *speech_end {
                    self.pump_until(step, end).await?;
                    self.due = Some(end);
                    self.send_control(step, Control::SpeechEnd).await?;
                } else {
                    self.set_anchor(end);
                }
                Ok(())
            }
            Action::Mark(name) => {
                let now = Instant::now();
                self.marks.insert(name.clone(), now);
                self.mark(&format!("mark:{name}"), now, String::new());
                Ok(())
            }
            Action::SendJson(template) => self.send_json(step, template).await,
            Action::Expect {
                what,
                record,
                from,
                within,
                capture,
                check,
            } => {
                let result = self
                    .evaluate(
                        step,
                        what,
                        record.as_deref(),
                        from.as_deref(),
                        *within,
                        capture,
                    )
                    .await;
                match (check, result) {
                    (None, r) => r,
                    (Some(name), Ok(())) => {
                        self.ctx.rec.check(name, true);
                        if self.ctx.detail.checks {
                            self.mark(CHECK_PASSED_MARKER, Instant::now(), name.clone());
                        }
                        Ok(())
                    }
                    // A stop, or a server value that is no duration, is not the check's
                    // outcome: the call ends with it.
                    (Some(_), Err(f))
                        if matches!(f.class, FailureClass::Aborted | FailureClass::BadValue) =>
                    {
                        Err(f)
                    }
                    (Some(name), Err(f)) => {
                        self.ctx.rec.check(name, false);
                        self.mark(
                            CHECK_FAILED_MARKER,
                            Instant::now(),
                            format!("{name}: {}", f.message),
                        );
                        Ok(())
                    }
                }
            }
        }
    }

    /// Send a control message. A `speech_end` ends the utterance at the instant it was due
    /// (`due`: when nothing is scheduled, the step's start), however late it
    /// actually left: latencies are measured from there, and from when it left as their
    /// actual-end twins.
    async fn send_control(&mut self, step: &StepSpec, control: Control) -> Result<(), Failure> {
        let due = self.due.unwrap_or_else(Instant::now);
        let text = if control == Control::SpeechEnd {
            self.said.take()
        } else {
            None
        };
        let msgs = self
            .codec
            .control(control, text.as_deref(), Instant::now())
            .map_err(|e| encode_failure(step, e))?;
        for msg in msgs {
            self.send(step, msg).await?;
        }
        let now = Instant::now();
        match control {
            Control::SpeechEnd => {
                let lag = now.saturating_duration_since(due);
                self.ctx.rec.record_speech_end_lag(lag);
                self.speech_end_lag = Some((due, lag));
                self.set_anchor(due);
            }
            Control::SpeechStart => {
                self.marks.insert("speech_start".into(), now);
                self.mark("speech_start", now, String::new());
                self.user_starts(now, None);
            }
            Control::Interrupt => {
                self.marks.insert("interrupt".into(), now);
                self.last_interrupt = Some(now);
                self.mark("interrupt", now, String::new());
            }
        }
        Ok(())
    }

    /// `send_json`: render the message from the last awaited event and send it as is. A
    /// `function_call_output` answers the pending tool call.
    async fn send_json(&mut self, step: &StepSpec, template: &JsonTemplate) -> Result<(), Failure> {
        let cx = Context {
            event: self.last_event.as_ref(),
            ..Context::default()
        };
        let value = template.render(&cx).map_err(|e| {
            fail(
                FailureClass::BadValue,
                step,
                format!("send_json: {e} (the last awaited event has no such field)"),
            )
        })?;
        let answers_tool =
            value.pointer("/item/type").and_then(|t| t.as_str()) == Some("function_call_output");
        self.send(step, Message::text(value.to_string())).await?;
        if answers_tool {
            let now = Instant::now();
            let tool = self.unanswered_tool.take().unwrap_or_default();
            self.marks.insert(TOOL_RESULT.into(), now);
            self.mark(TOOL_RESULT, now, tool);
        }
        Ok(())
    }

    /// A tool call arrived (OpenAI Realtime): queue the `on_tool_call` answer —
    /// `conversation.item.create` of a `function_call_output` with its `call_id`, then
    /// `response.create` — or remember that nothing answers it.
    pub(super) fn answer_tool_call(&mut self, call: &serde_json::Value) -> Result<(), String> {
        let field = |k: &str| call.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (tool, call_id) = (field("name").to_string(), field("call_id").to_string());
        let cx = Context {
            event: Some(call),
            ..Context::default()
        };
        match self.ctx.on_tool_call.and_then(|r| r.output(&tool, &cx)) {
            Some(Ok(output)) => {
                let item = json!({
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": output},
                });
                let detail = format!("{tool} {call_id}");
                self.outbox
                    .push((Message::text(item.to_string()), detail.clone()));
                let create = json!({"type": "response.create"});
                self.outbox
                    .push((Message::text(create.to_string()), detail));
            }
            Some(Err(e)) => return Err(format!("on_tool_call `{tool}`: {e}")),
            None => self.unanswered_tool = Some(format!("`{tool}` (call_id {call_id})")),
        }
        Ok(())
    }

    /// Send the queued `on_tool_call` answers; the instant the result left is `tool_result`
    /// (for `from: tool_result`).
    pub(super) async fn send_tool_results(&mut self, step: &StepSpec) -> Result<(), Failure> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let mut sent = None;
        for (msg, detail) in std::mem::take(&mut self.outbox) {
            self.send(step, msg).await?;
            if sent.is_none() {
                sent = Some((Instant::now(), detail));
            }
        }
        if let Some((at, detail)) = sent {
            self.marks.insert(TOOL_RESULT.into(), at);
            self.mark(TOOL_RESULT, at, detail);
        }
        Ok(())
    }
}

/// The mark of the instant a tool result left.
const TOOL_RESULT: &str = "tool_result";
