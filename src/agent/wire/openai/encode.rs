//! What the agent says on the Realtime wire: speech and commit events, transcripts, and one
//! response at a time (`response.created` … `response.done`, with usage and metadata).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::super::{CancelReason, Output, Queued};
use super::{AudioItem, OpenAi, Response};

impl OpenAi {
    pub(crate) fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
        let mut msgs = Vec::new();
        match out {
            Output::SpeechStarted { audio_start_ms } => {
                let item = self.id("item");
                self.speaking_item = Some(item.clone());
                msgs.push(self.event(json!({
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": audio_start_ms,
                    "item_id": item,
                })));
            }
            Output::SpeechStopped { audio_end_ms } => {
                let item = match &self.speaking_item {
                    Some(item) => item.clone(),
                    None => {
                        let item = self.id("item");
                        self.speaking_item = Some(item.clone());
                        item
                    }
                };
                msgs.push(self.event(json!({
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": audio_end_ms,
                    "item_id": item,
                })));
            }
            Output::Committed => {
                let item = match self.speaking_item.take() {
                    Some(item) => item,
                    None => self.id("item"),
                };
                let previous = self.user_item.replace(item.clone());
                msgs.push(self.event(json!({
                    "type": "input_audio_buffer.committed",
                    "previous_item_id": previous,
                    "item_id": item,
                })));
                msgs.push(self.event(json!({
                    "type": "conversation.item.created",
                    "previous_item_id": previous,
                    "item": {
                        "id": item, "object": "realtime.item", "type": "message",
                        "role": "user", "status": "completed",
                        "content": [{"type": "input_audio", "transcript": null}],
                    },
                })));
            }
            Output::Transcript(text) => {
                self.transcript = text.to_string();
                let item = self.user_item.clone();
                msgs.push(self.event(json!({
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                })));
            }
            Output::ToolCall {
                name,
                arguments,
                awaits_result,
            } => {
                self.ensure_response(&mut msgs);
                let call_id = self.id("call");
                let item_id = self.id("item");
                let Some(resp) = self.response.as_mut() else {
                    return msgs;
                };
                let index = resp.output.len();
                let item = json!({
                    "id": item_id, "object": "realtime.item", "type": "function_call",
                    "status": "completed", "name": name, "call_id": call_id,
                    "arguments": arguments,
                });
                resp.output.push(item.clone());
                let response_id = resp.id.clone();
                msgs.push(self.event(json!({
                    "type": "response.output_item.added",
                    "response_id": response_id, "output_index": index, "item": item,
                })));
                msgs.push(self.event(json!({
                    "type": "response.function_call_arguments.done",
                    "response_id": response_id, "item_id": item_id, "output_index": index,
                    "call_id": call_id, "name": name, "arguments": arguments,
                })));
                if awaits_result {
                    // As the real API: the response ends with the call; the caller sends the
                    // `function_call_output` and `response.create` for the next one.
                    self.pending_call = Some(call_id);
                    self.response_done(&mut msgs, None);
                }
            }
            Output::ResponseStart { duration } => {
                self.ensure_response(&mut msgs);
                let item_id = self.id("item");
                let Some(resp) = self.response.as_mut() else {
                    return msgs;
                };
                let index = resp.output.len();
                let text = reply_text(duration);
                let item = json!({
                    "id": item_id, "object": "realtime.item", "type": "message",
                    "role": "assistant", "status": "in_progress", "content": [],
                });
                resp.output.push(item.clone());
                resp.audio = Some(AudioItem {
                    id: item_id.clone(),
                    index,
                    text: text.clone(),
                    duration,
                    sent_bytes: 0,
                });
                let response_id = resp.id.clone();
                msgs.push(self.event(json!({
                    "type": "response.output_item.added",
                    "response_id": response_id, "output_index": index, "item": item,
                })));
                msgs.push(self.event(json!({
                    "type": "response.output_audio_transcript.delta",
                    "response_id": response_id, "item_id": item_id, "output_index": index,
                    "content_index": 0, "delta": text,
                })));
            }
            Output::Audio(bytes) => {
                let Some(resp) = self.response.as_mut() else {
                    return msgs;
                };
                let Some(audio) = resp.audio.as_mut() else {
                    return msgs;
                };
                audio.sent_bytes += bytes.len() as u64;
                let delta = json!({
                    "type": "response.output_audio.delta",
                    "response_id": resp.id, "item_id": audio.id, "output_index": audio.index,
                    "content_index": 0, "delta": B64.encode(bytes),
                });
                msgs.push(self.event(delta));
            }
            Output::Metrics(mut value) => {
                if let Value::Object(map) = &mut value {
                    map.remove("type");
                }
                if let Some(resp) = self.response.as_mut() {
                    resp.metadata = Some(value);
                }
            }
            Output::ResponseEnd => {
                if let Some(audio) = self.response.as_ref().and_then(|r| r.audio.as_ref()) {
                    let (response_id, item_id, index, text) = (
                        self.response.as_ref().map(|r| r.id.clone()),
                        audio.id.clone(),
                        audio.index,
                        audio.text.clone(),
                    );
                    msgs.push(self.event(json!({
                        "type": "response.output_audio_transcript.done",
                        "response_id": response_id, "item_id": item_id, "output_index": index,
                        "content_index": 0, "transcript": text,
                    })));
                    msgs.push(self.event(json!({
                        "type": "response.output_audio.done",
                        "response_id": response_id, "item_id": item_id, "output_index": index,
                        "content_index": 0,
                    })));
                }
                self.response_done(&mut msgs, None);
            }
            Output::Cancelled { reason, queued } => {
                self.ensure_response(&mut msgs);
                let dropped = match queued {
                    Queued::Samples(n) => n,
                    Queued::Nothing | Queued::Flushed => 0,
                };
                let response_id = self.unsend(dropped);
                self.response_done(&mut msgs, Some(reason));
                if dropped > 0 {
                    msgs.push(self.cleared(response_id));
                }
            }
            Output::Flush { samples } => {
                let response_id = self.unsend(samples).or_else(|| self.last_response.clone());
                msgs.push(self.cleared(response_id));
            }
            Output::Abandoned => self.response_done(&mut msgs, Some(CancelReason::TurnDetected)),
            Output::Resumed => {}
            Output::Error { code, message } => msgs.push(self.error(code, message)),
        }
        msgs
    }

    /// Audio the caller dropped from its buffer does not count as delivered (usage). Returns
    /// the open response's id.
    fn unsend(&mut self, samples: u64) -> Option<String> {
        let resp = self.response.as_mut()?;
        if let Some(audio) = resp.audio.as_mut() {
            audio.sent_bytes = audio.sent_bytes.saturating_sub(samples * 2);
        }
        Some(resp.id.clone())
    }

    /// `output_audio_buffer.cleared`: what a WebRTC client receives when the server drops the
    /// audio it had not played yet.
    fn cleared(&mut self, response_id: Option<String>) -> Message {
        self.event(json!({"type": "output_audio_buffer.cleared", "response_id": response_id}))
    }

    /// Open a response (`response.created`) unless one is in progress.
    fn ensure_response(&mut self, msgs: &mut Vec<Message>) {
        if self.response.is_some() {
            return;
        }
        let id = self.id("resp");
        msgs.push(self.event(json!({
            "type": "response.created",
            "response": {
                "object": "realtime.response", "id": id, "status": "in_progress",
                "output": [], "usage": null,
            },
        })));
        self.response = Some(Response {
            id,
            output: Vec::new(),
            audio: None,
            metadata: None,
        });
    }

    /// `response.done` for the response in progress (completed, or cancelled for `reason`).
    fn response_done(&mut self, msgs: &mut Vec<Message>, cancelled: Option<CancelReason>) {
        let Some(resp) = self.response.take() else {
            return;
        };
        self.last_response = Some(resp.id.clone());
        let item_status = if cancelled.is_some() {
            "incomplete"
        } else {
            "completed"
        };
        let mut output = resp.output;
        let mut output_tokens = 0;
        if let Some(audio) = &resp.audio {
            // Tokens for the part of the reply that was actually sent.
            let total_bytes = (audio.duration.as_secs_f64() * f64::from(self.rate) * 2.0).max(1.0);
            let played = (audio.sent_bytes as f64 / total_bytes).clamp(0.0, 1.0);
            output_tokens = (tokens(&audio.text) as f64 * played).ceil() as u64;
            if let Some(Value::Object(item)) = output.get_mut(audio.index) {
                item.insert("status".into(), json!(item_status));
                item.insert(
                    "content".into(),
                    json!([{"type": "output_audio", "transcript": audio.text}]),
                );
            }
        }
        let input_tokens = tokens(&self.transcript);
        let (status, details) = match cancelled {
            None => ("completed", Value::Null),
            Some(reason) => {
                let reason = match reason {
                    CancelReason::TurnDetected => "turn_detected",
                    CancelReason::Client => "client_cancelled",
                };
                ("cancelled", json!({"type": "cancelled", "reason": reason}))
            }
        };
        msgs.push(self.event(json!({
            "type": "response.done",
            "response": {
                "object": "realtime.response",
                "id": resp.id,
                "status": status,
                "status_details": details,
                "output": output,
                "usage": {
                    "total_tokens": input_tokens + output_tokens,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                },
                "metadata": resp.metadata,
            },
        })));
    }
}

/// A rough token count: about four characters a token.
pub(super) fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// The reply's words, as many as a speaker says in `duration` (about 2.5 words a second).
pub(super) fn reply_text(duration: Duration) -> String {
    const WORDS: &[&str] = &[
        "sure", "I", "can", "help", "with", "that", "let", "me", "check", "the", "details", "for",
        "you", "one", "moment", "please",
    ];
    let n = ((duration.as_secs_f64() * 2.5).round() as usize).max(1);
    let mut text = WORDS
        .iter()
        .cycle()
        .take(n)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    text.push('.');
    text
}
