//! OpenAI Realtime on `/openai` and `/v1/realtime`: JSON events with base64 PCM16 audio. This
//! file holds the connection's wire state and the inbound events; `session.update` is in
//! [`session`], the outbound events (one response at a time) in [`encode`].

mod encode;
mod session;
#[cfg(test)]
mod tests;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Input, REALTIME_RATE};
use crate::protocol::decode_pcm16;

/// OpenAI Realtime: the agent is the realtime server. Accepts GA and beta event names inbound,
/// sends GA names.
#[derive(Debug)]
pub(crate) struct OpenAi {
    next_event: u64,
    next_id: u64,
    /// The session object as `session.created` / `session.updated` show it.
    session: Value,
    rate: u32,
    manual: bool,
    /// Item id of the utterance the VAD is hearing (from `speech_started`).
    speaking_item: Option<String>,
    /// The last committed user item.
    user_item: Option<String>,
    /// The last transcript (for `usage.input_tokens`).
    transcript: String,
    response: Option<Response>,
    /// The id of the last response done (its audio may still be playing at the caller).
    last_response: Option<String>,
    /// The `call_id` of the tool call whose result the agent waits for.
    pending_call: Option<String>,
}

/// The response in progress.
#[derive(Debug)]
struct Response {
    id: String,
    /// Output items so far (a function call, then the audio message).
    output: Vec<Value>,
    audio: Option<AudioItem>,
    /// The turn's metrics (`send_metrics`), for `response.metadata`.
    metadata: Option<Value>,
}

#[derive(Debug)]
struct AudioItem {
    id: String,
    index: usize,
    text: String,
    duration: Duration,
    sent_bytes: u64,
}

impl OpenAi {
    pub(super) fn new() -> Self {
        OpenAi {
            next_event: 0,
            next_id: 0,
            session: json!({
                "type": "realtime",
                "object": "realtime.session",
                "id": "sess_planrun",
                "model": "planrun-reference-agent",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
                        "turn_detection": {"type": "server_vad"},
                    },
                    "output": {
                        "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
                        "voice": "tone-220hz",
                    },
                },
            }),
            rate: REALTIME_RATE,
            manual: false,
            speaking_item: None,
            user_item: None,
            transcript: String::new(),
            response: None,
            last_response: None,
            pending_call: None,
        }
    }

    /// The input (and output) rate the session speaks now.
    pub(super) fn rate(&self) -> u32 {
        self.rate
    }

    /// `session.created`, right after the handshake.
    pub(super) fn greeting(&mut self) -> Vec<Message> {
        let session = self.session.clone();
        vec![self.event(json!({"type": "session.created", "session": session}))]
    }

    /// Add a unique `event_id` and serialise.
    fn event(&mut self, mut value: Value) -> Message {
        self.next_event += 1;
        if let Value::Object(map) = &mut value {
            map.insert(
                "event_id".into(),
                Value::String(format!("event_{}", self.next_event)),
            );
        }
        Message::text(value.to_string())
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}", self.next_id)
    }

    fn error(&mut self, code: &str, message: impl Into<String>) -> Message {
        self.event(json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "code": code, "message": message.into()},
        }))
    }

    pub(super) fn decode(&mut self, msg: &Message, idle: bool) -> Vec<Input> {
        let text = match msg {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => {
                let e = self.error(
                    "binary_not_supported",
                    "binary frames are not part of the Realtime protocol; \
                     send audio with input_audio_buffer.append",
                );
                return vec![Input::Reply(e)];
            }
            _ => return Vec::new(),
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return vec![Input::Reply(
                    self.error("invalid_json", format!("not JSON: {e}")),
                )];
            }
        };
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return vec![Input::Reply(
                self.error("missing_type", "event without a string `type`"),
            )];
        };
        match kind {
            "session.update" => self.session_update(&value, idle),
            "input_audio_buffer.append" => {
                let audio = value.get("audio").and_then(Value::as_str);
                match audio.map(|a| B64.decode(a)) {
                    Some(Ok(bytes)) => vec![Input::Audio(decode_pcm16(&bytes))],
                    Some(Err(e)) => vec![Input::Reply(
                        self.error("invalid_audio", format!("`audio` is not base64: {e}")),
                    )],
                    None => vec![Input::Reply(
                        self.error("missing_audio", "append without a string `audio`"),
                    )],
                }
            }
            "input_audio_buffer.commit" => {
                // planrun extension, like the raw `speech_end`: optional text stands in for ASR.
                let text = value.get("text").and_then(Value::as_str).map(str::to_owned);
                vec![Input::SpeechEnd(text)]
            }
            "input_audio_buffer.clear" => {
                let ack = self.event(json!({"type": "input_audio_buffer.cleared"}));
                vec![Input::ClearBuffer, Input::Reply(ack)]
            }
            "response.create" => vec![Input::CreateResponse],
            "response.cancel" => vec![Input::Cancel],
            "conversation.item.truncate" => {
                let ack = self.event(json!({
                    "type": "conversation.item.truncated",
                    "item_id": value.get("item_id").cloned().unwrap_or(Value::Null),
                    "content_index": value.get("content_index").cloned().unwrap_or(json!(0)),
                    "audio_end_ms": value.get("audio_end_ms").cloned().unwrap_or(json!(0)),
                }));
                vec![Input::Reply(ack)]
            }
            "conversation.item.create" => {
                let mut item = value.get("item").cloned().unwrap_or_else(|| json!({}));
                let mut inputs = Vec::new();
                if item.get("type").and_then(Value::as_str) == Some("function_call_output") {
                    let call_id = item.get("call_id").and_then(Value::as_str);
                    match (&self.pending_call, call_id) {
                        (_, None) => {
                            let e = self.error(
                                "missing_required_parameter",
                                "function_call_output without a string `item.call_id`",
                            );
                            return vec![Input::Reply(e)];
                        }
                        (Some(pending), Some(id)) if pending == id => {
                            self.pending_call = None;
                            inputs.push(Input::ToolResult);
                        }
                        (Some(pending), Some(id)) => {
                            let e = self.error(
                                "invalid_call_id",
                                format!(
                                    "function_call_output for call_id `{id}`, but the pending \
                                     tool call is `{pending}`"
                                ),
                            );
                            return vec![Input::Reply(e)];
                        }
                        (None, Some(_)) => {} // a result for the record: just added
                    }
                }
                if let Value::Object(map) = &mut item {
                    if !map.get("id").is_some_and(Value::is_string) {
                        map.insert("id".into(), Value::String(self.id("item")));
                    }
                    map.insert("object".into(), json!("realtime.item"));
                    map.insert("status".into(), json!("completed"));
                }
                let previous = self.user_item.clone();
                let ack = self.event(json!({
                    "type": "conversation.item.created",
                    "previous_item_id": previous,
                    "item": item,
                }));
                inputs.insert(0, Input::Reply(ack));
                inputs
            }
            other => {
                let e = self.error("unknown_event", format!("unknown event type `{other}`"));
                vec![Input::Reply(e)]
            }
        }
    }
}
