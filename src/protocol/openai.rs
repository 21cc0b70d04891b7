//! The OpenAI Realtime event protocol, client side.
//!
//! Outbound: `session.update` on connect (PCM16 at the session rate, `turn_detection`
//! `server_vad` or `null` for manual turns, plus the plan's extra session fields),
//! `input_audio_buffer.append` per frame (base64 PCM16), and — in manual mode —
//! `input_audio_buffer.commit` + `response.create` at each `speech_end`. An explicit `interrupt`
//! sends `response.cancel` and `conversation.item.truncate` (cutting the assistant's item at the
//! audio the caller has heard so far), as a client that stops playback does.
//!
//! Inbound: audio deltas (GA `response.output_audio.delta` and beta `response.audio.delta`)
//! become reply audio; `response.created` → `response_start`; `response.done` → `response_end`
//! (preceded by `interrupted` when its status is `cancelled`); a cancelled response,
//! `conversation.item.truncated` and `output_audio_buffer.cleared` also flush the caller's
//! playout queue (see [`WireEvent::Flush`]);
//! `input_audio_buffer.speech_started`/`speech_stopped` → `speech_started`/`speech_stopped`;
//! the input transcription → `transcript`; function call arguments → `tool_call`; `error` → a
//! server error. The protocol's other documented events keep their own names and are
//! informational. An undocumented event type, bad JSON or bad base64 is a protocol error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    WireEvent, b64, base64_field, excerpt, parse_json, pcm16_bytes, unexpected_binary,
};
use super::{Control, ProtocolError, decode_pcm16};

/// The Realtime API's PCM rate.
pub const SAMPLE_RATE: u32 = 24_000;

/// Who decides when the caller finished a turn (`openai-realtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnDetection {
    /// The server's voice activity detection (the API's default).
    #[default]
    ServerVad,
    /// `turn_detection: null`: planrun commits the audio buffer and asks for a response at each
    /// `speech_end`.
    Manual,
}

/// Documented server events that carry nothing planrun interprets (awaitable by name).
const INFORMATIONAL: &[&str] = &[
    "session.created",
    "session.updated",
    "transcription_session.created",
    "transcription_session.updated",
    "conversation.created",
    "conversation.item.created",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.segment",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.timeout_triggered",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.text.delta",
    "response.text.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "response.output_audio.done",
    "response.audio.done",
    "response.function_call_arguments.delta",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
    "mcp_list_tools.in_progress",
    "mcp_list_tools.completed",
    "mcp_list_tools.failed",
    "rate_limits.updated",
];

#[derive(Debug)]
pub struct OpenAiCodec {
    turn_detection: TurnDetection,
    session_extra: Option<Value>,
    rate: u32,
    /// Attach what the caller said to `input_audio_buffer.commit` as `text` (only for the
    /// built-in agent, which uses it in place of speech recognition; the real API would reject
    /// the unknown field).
    text_hints: bool,
    /// The assistant item whose audio is arriving, when its first delta came, and how many
    /// samples of it arrived.
    item: Option<(String, Instant, u64)>,
}

impl OpenAiCodec {
    pub fn new(
        turn_detection: TurnDetection,
        session_extra: Option<Value>,
        rate: u32,
        text_hints: bool,
    ) -> Self {
        OpenAiCodec {
            turn_detection,
            session_extra,
            rate,
            text_hints,
            item: None,
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    pub fn open(&mut self) -> Vec<Message> {
        let turn = match self.turn_detection {
            TurnDetection::ServerVad => json!({"type": "server_vad"}),
            TurnDetection::Manual => Value::Null,
        };
        let format = json!({"type": "audio/pcm", "rate": self.rate});
        let mut session = json!({
            "type": "realtime",
            "audio": {
                "input": {"format": format, "turn_detection": turn},
                "output": {"format": format},
            },
        });
        if let Some(extra) = &self.session_extra {
            merge(&mut session, extra);
        }
        let msg = json!({"type": "session.update", "session": session});
        vec![Message::text(msg.to_string())]
    }

    pub fn audio(&mut self, samples: &[i16]) -> Message {
        let msg = json!({"type": "input_audio_buffer.append", "audio": b64(&pcm16_bytes(samples))});
        Message::text(msg.to_string())
    }

    pub fn control(&mut self, control: Control, said: Option<&str>, now: Instant) -> Vec<Message> {
        let text = |v: Value| Message::text(v.to_string());
        match control {
            Control::SpeechEnd if self.turn_detection == TurnDetection::Manual => {
                let mut commit = json!({"type": "input_audio_buffer.commit"});
                if let Some(said) = said.filter(|_| self.text_hints) {
                    commit["text"] = Value::from(said);
                }
                vec![text(commit), text(json!({"type": "response.create"}))]
            }
            Control::Interrupt => {
                let mut out = vec![text(json!({"type": "response.cancel"}))];
                if let Some((item_id, first, samples)) = self.item.take() {
                    // What the caller has heard: the audio received, at most the time since
                    // it started playing.
                    let received_ms = samples * 1000 / u64::from(self.rate.max(1));
                    let played_ms = now.saturating_duration_since(first).as_millis() as u64;
                    out.push(text(json!({
                        "type": "conversation.item.truncate",
                        "item_id": item_id,
                        "content_index": 0,
                        "audio_end_ms": received_ms.min(played_ms),
                    })));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    pub fn decode(&mut self, msg: &Message, at: Instant) -> Result<Vec<WireEvent>, ProtocolError> {
        let text = match msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => return Err(unexpected_binary(b)),
            _ => return Ok(Vec::new()),
        };
        let json = parse_json(text)?;
        let Some(kind) = json.get("type").and_then(Value::as_str).map(str::to_string) else {
            return Err(ProtocolError(format!(
                "Realtime message without a string `type`: {}",
                excerpt(text)
            )));
        };
        let str_at = |p: &str| {
            json.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(match kind.as_str() {
            "response.output_audio.delta" | "response.audio.delta" => {
                let samples = decode_pcm16(&base64_field(&json, "/delta", text)?);
                let item_id = str_at("/item_id");
                match &mut self.item {
                    Some((id, _, n)) if *id == item_id => *n += samples.len() as u64,
                    _ => self.item = Some((item_id, at, samples.len() as u64)),
                }
                vec![WireEvent::Audio(samples)]
            }
            "response.created" => vec![WireEvent::event("response_start", json)],
            "response.done" => {
                let cancelled = str_at("/response/status") == "cancelled";
                let mut out = Vec::new();
                if cancelled {
                    // The rest of a cancelled response is never played.
                    out.push(WireEvent::Flush);
                    out.push(WireEvent::event("interrupted", json.clone()));
                }
                out.push(WireEvent::event("response_end", json));
                out
            }
            "input_audio_buffer.speech_started" => vec![WireEvent::event("speech_started", json)],
            "input_audio_buffer.speech_stopped" => vec![WireEvent::event("speech_stopped", json)],
            "conversation.item.input_audio_transcription.completed" => {
                let t = str_at("/transcript");
                vec![WireEvent::event("transcript", json).with_detail(&t)]
            }
            "response.function_call_arguments.done" => {
                let name = str_at("/name");
                vec![WireEvent::event("tool_call", json).with_detail(&name)]
            }
            "error" => {
                let mut message = str_at("/error/message");
                if message.is_empty() {
                    message = excerpt(text);
                }
                vec![WireEvent::Error(message)]
            }
            // The server cut the assistant's audio (`truncate` confirmed) or cleared its output
            // buffer (WebRTC/SIP): what was not played yet is gone.
            "conversation.item.truncated" | "output_audio_buffer.cleared" => {
                vec![WireEvent::Flush, WireEvent::info(&kind, json)]
            }
            other if INFORMATIONAL.contains(&other) => vec![WireEvent::info(other, json)],
            other => {
                return Err(ProtocolError(format!(
                    "unknown Realtime event `{other}`: {}",
                    excerpt(text)
                )));
            }
        })
    }
}

/// Deep-merge `extra` into `base` (objects merge key by key; anything else replaces).
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Object(Map::new())), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json_of(m: &Message) -> Value {
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    }

    #[test]
    fn session_update_carries_turn_detection_and_extra_fields() {
        let extra = json!({"instructions": "be brief", "audio": {"output": {"voice": "marin"}}});
        let mut c = OpenAiCodec::new(TurnDetection::Manual, Some(extra), SAMPLE_RATE, false);
        let s = json_of(&c.open()[0]);
        assert_eq!(s["type"], "session.update");
        assert!(s["session"]["audio"]["input"]["turn_detection"].is_null());
        assert_eq!(s["session"]["audio"]["input"]["format"]["rate"], 24000);
        assert_eq!(s["session"]["audio"]["output"]["voice"], "marin");
        assert_eq!(
            s["session"]["audio"]["output"]["format"]["type"],
            "audio/pcm"
        );
        assert_eq!(s["session"]["instructions"], "be brief");
        let now = Instant::now();
        let end = c.control(Control::SpeechEnd, None, now);
        assert_eq!(json_of(&end[0])["type"], "input_audio_buffer.commit");
        assert_eq!(json_of(&end[1])["type"], "response.create");
        let mut vad = OpenAiCodec::new(TurnDetection::ServerVad, None, SAMPLE_RATE, false);
        assert!(vad.control(Control::SpeechEnd, None, now).is_empty());
    }

    #[test]
    fn deltas_are_audio_and_interrupt_truncates_what_was_heard() {
        let mut c = OpenAiCodec::new(TurnDetection::ServerVad, None, SAMPLE_RATE, false);
        let t0 = Instant::now();
        let delta = json!({"type": "response.output_audio.delta", "item_id": "it1",
            "delta": b64(&pcm16_bytes(&[5; 2400]))});
        let ev = c.decode(&Message::text(delta.to_string()), t0).unwrap();
        assert!(matches!(&ev[0], WireEvent::Audio(s) if s.len() == 2400));
        let out = c.control(Control::Interrupt, None, t0 + Duration::from_millis(40));
        assert_eq!(json_of(&out[0])["type"], "response.cancel");
        let trunc = json_of(&out[1]);
        assert_eq!(trunc["item_id"], "it1");
        assert_eq!(trunc["audio_end_ms"], 40);
    }

    #[test]
    fn events_map_to_planrun_names() {
        let mut c = OpenAiCodec::new(TurnDetection::ServerVad, None, SAMPLE_RATE, false);
        let t = Instant::now();
        let names = |c: &mut OpenAiCodec, v: Value| -> Vec<String> {
            c.decode(&Message::text(v.to_string()), t)
                .unwrap()
                .into_iter()
                .map(|e| match e {
                    WireEvent::Event { name, .. } => name,
                    WireEvent::Error(m) => format!("error:{m}"),
                    WireEvent::Audio(_) => "audio".into(),
                    WireEvent::Capture { metric, .. } => format!("capture:{metric}"),
                    WireEvent::Flush => "flush".into(),
                })
                .collect()
        };
        let done = json!({"type": "response.done", "response": {"status": "cancelled"}});
        assert_eq!(
            names(&mut c, done),
            ["flush", "interrupted", "response_end"]
        );
        let done = json!({"type": "response.done", "response": {"status": "completed"}});
        assert_eq!(names(&mut c, done), ["response_end"]);
        for flush in ["conversation.item.truncated", "output_audio_buffer.cleared"] {
            assert_eq!(names(&mut c, json!({"type": flush})), ["flush", flush]);
        }
        let started = json!({"type": "output_audio_buffer.started"});
        assert_eq!(names(&mut c, started), ["output_audio_buffer.started"]);
        let err = json!({"type": "error", "error": {"message": "bad"}});
        assert_eq!(names(&mut c, err), ["error:bad"]);
        let info = json!({"type": "rate_limits.updated"});
        assert_eq!(names(&mut c, info), ["rate_limits.updated"]);
        let e = c
            .decode(&Message::text(r#"{"type":"made.up"}"#), t)
            .unwrap_err();
        assert!(e.0.contains("made.up"), "{e}");
        let e = c
            .decode(
                &Message::text(r#"{"type":"response.audio.delta","delta":"%%"}"#),
                t,
            )
            .unwrap_err();
        assert!(e.0.contains("base64"), "{e}");
    }
}
