//! Wire adapters: semantic actions/events ↔ WebSocket messages.
//!
//! The **raw protocol** (the default adapter, implementable by any server):
//! - client → server binary: PCM16 little-endian mono audio at the plan's sample rate, one frame
//!   per message;
//! - client → server text: JSON control `{"type":"speech_start"}`, `{"type":"speech_end"}`,
//!   `{"type":"interrupt"}`;
//! - server → client binary: reply audio in the same format;
//! - server → client text: JSON `{"type":"response_start"}`, `{"type":"response_end"}`,
//!   `{"type":"interrupted"}`, `{"type":"resumed"}`, `{"type":"transcript","text":…}`,
//!   `{"type":"tool_call","name":…}`, `{"type":"metrics",…}`, `{"type":"error","message":…}`.
//!
//! Unknown server message types are passed through as [`ServerEvent::Other`] so plans can await
//! them; malformed JSON is a protocol error.

pub mod client;
pub mod custom;
pub mod one_or_many;
pub mod openai;
pub mod tls;
pub mod twilio;
pub mod webrtc;

pub use one_or_many::OneOrMany;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A control message a client (virtual user) sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    SpeechStart,
    SpeechEnd,
    Interrupt,
}

impl Control {
    pub fn name(self) -> &'static str {
        match self {
            Control::SpeechStart => "speech_start",
            Control::SpeechEnd => "speech_end",
            Control::Interrupt => "interrupt",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "speech_start" => Some(Control::SpeechStart),
            "speech_end" => Some(Control::SpeechEnd),
            "interrupt" => Some(Control::Interrupt),
            _ => None,
        }
    }

    pub const NAMES: &'static [&'static str] = &["speech_start", "speech_end", "interrupt"];
}

/// What a client sends, in wire form.
pub fn encode_client_control(c: Control) -> Message {
    Message::text(json!({ "type": c.name() }).to_string())
}

/// `speech_end` carrying the text of what was said (a stand-in for ASR that the built-in agent
/// uses for its transcript and tool keywords; other servers ignore the extra field).
pub fn encode_speech_end_with_text(text: &str) -> Message {
    Message::text(json!({ "type": "speech_end", "text": text }).to_string())
}

/// Encode PCM16 samples as one little-endian binary frame.
pub fn encode_audio(samples: &[i16]) -> Message {
    Message::binary(client::pcm16_bytes(samples))
}

/// Decode a little-endian PCM16 payload (a trailing odd byte is ignored).
pub fn decode_pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// What a client receives, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Reply audio: PCM16 LE bytes.
    Audio(Vec<u8>),
    ResponseStart,
    ResponseEnd,
    Interrupted,
    Resumed,
    Transcript(String),
    ToolCall(String),
    /// Server-side metrics, the whole JSON object.
    Metrics(Value),
    Error(String),
    /// Any other JSON message with a `type`.
    Other(String, Value),
}

impl ServerEvent {
    /// The event's name as a plan writes it in `await:`.
    pub fn kind(&self) -> &str {
        match self {
            ServerEvent::Audio(_) => "audio",
            ServerEvent::ResponseStart => "response_start",
            ServerEvent::ResponseEnd => "response_end",
            ServerEvent::Interrupted => "interrupted",
            ServerEvent::Resumed => "resumed",
            ServerEvent::Transcript(_) => "transcript",
            ServerEvent::ToolCall(_) => "tool_call",
            ServerEvent::Metrics(_) => "metrics",
            ServerEvent::Error(_) => "error",
            ServerEvent::Other(t, _) => t,
        }
    }
}

/// Why an inbound message could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// Decode a server text message (JSON with a `type`).
pub fn decode_server_text(text: &str) -> Result<ServerEvent, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError(format!(
            "server sent text that is not JSON ({e}): {}",
            preview(text)
        ))
    })?;
    decode_server_value(&value)
}

/// Decode an already parsed server JSON message.
pub fn decode_server_value(value: &Value) -> Result<ServerEvent, ProtocolError> {
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(ProtocolError(format!(
            "server sent JSON without a string `type`: {}",
            preview(&value.to_string())
        )));
    };
    let str_field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(match kind {
        "response_start" => ServerEvent::ResponseStart,
        "response_end" => ServerEvent::ResponseEnd,
        "interrupted" => ServerEvent::Interrupted,
        "resumed" => ServerEvent::Resumed,
        "transcript" => ServerEvent::Transcript(str_field("text")),
        "tool_call" => ServerEvent::ToolCall(str_field("name")),
        "metrics" => ServerEvent::Metrics(value.clone()),
        "error" => ServerEvent::Error(str_field("message")),
        other => ServerEvent::Other(other.to_string(), value.clone()),
    })
}

/// Encode a server event into its wire message (used by the built-in agent).
pub fn encode_server_event(event: &ServerEvent) -> Message {
    match event {
        ServerEvent::Audio(bytes) => Message::binary(bytes.clone()),
        ServerEvent::Transcript(text) => {
            Message::text(json!({"type": "transcript", "text": text}).to_string())
        }
        ServerEvent::ToolCall(name) => {
            Message::text(json!({"type": "tool_call", "name": name}).to_string())
        }
        ServerEvent::Error(message) => {
            Message::text(json!({"type": "error", "message": message}).to_string())
        }
        ServerEvent::Metrics(value) | ServerEvent::Other(_, value) => {
            Message::text(value.to_string())
        }
        simple => Message::text(json!({ "type": simple.kind() }).to_string()),
    }
}

/// Decode a client text message (used by the built-in agent).
pub fn decode_client_text(text: &str) -> Result<Control, ProtocolError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError(format!("client sent text that is not JSON ({e})")))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Control::from_name(kind)
        .ok_or_else(|| ProtocolError(format!("unknown client message type `{kind}`")))
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_events_round_trip() {
        let events = [
            ServerEvent::ResponseStart,
            ServerEvent::ResponseEnd,
            ServerEvent::Interrupted,
            ServerEvent::Resumed,
            ServerEvent::Transcript("hi <there>".into()),
            ServerEvent::ToolCall("weather".into()),
            ServerEvent::Error("boom".into()),
        ];
        for e in events {
            let Message::Text(t) = encode_server_event(&e) else {
                panic!("text expected")
            };
            assert_eq!(decode_server_text(&t).unwrap(), e);
        }
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(decode_server_text("not json").is_err());
        assert!(decode_server_text("{\"no\":1}").is_err());
        assert!(matches!(
            decode_server_text("{\"type\":\"custom\",\"x\":1}").unwrap(),
            ServerEvent::Other(t, _) if t == "custom"
        ));
    }

    #[test]
    fn pcm_round_trip() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN];
        let Message::Binary(b) = encode_audio(&samples) else {
            panic!()
        };
        assert_eq!(decode_pcm16(&b), samples);
    }

    #[test]
    fn client_controls() {
        for c in [Control::SpeechStart, Control::SpeechEnd, Control::Interrupt] {
            let Message::Text(t) = encode_client_control(c) else {
                panic!()
            };
            assert_eq!(decode_client_text(&t).unwrap(), c);
        }
    }
}
