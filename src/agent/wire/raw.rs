//! planrun's raw protocol (every path but `/twilio`, `/openai` and `/v1/realtime`): binary
//! frames are PCM16 audio, text frames the JSON control messages of [`crate::protocol`].

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{Input, Output, Queued};
use crate::protocol::{
    Control, ServerEvent, decode_client_text, decode_pcm16, encode_server_event,
};

pub(super) fn decode(msg: &Message) -> Vec<Input> {
    match msg {
        Message::Binary(bytes) => vec![Input::Audio(decode_pcm16(bytes))],
        Message::Text(text) => match decode_client_text(text) {
            Ok(Control::SpeechStart) => vec![Input::SpeechStart],
            Ok(Control::Interrupt) => vec![Input::Interrupt],
            Ok(Control::SpeechEnd) => vec![Input::SpeechEnd(speech_end_text(text))],
            Err(e) => vec![Input::Reply(encode_server_event(&ServerEvent::Error(e.0)))],
        },
        _ => Vec::new(),
    }
}

/// The optional `text` a client attaches to `speech_end` (a stand-in for real ASR).
fn speech_end_text(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    value.get("text")?.as_str().map(str::to_owned)
}

pub(super) fn encode(out: Output<'_>) -> Vec<Message> {
    let event = match out {
        Output::SpeechStarted { .. }
        | Output::SpeechStopped { .. }
        | Output::Committed
        | Output::Abandoned => return Vec::new(),
        Output::Audio(bytes) => return vec![Message::binary(bytes.to_vec())],
        Output::Transcript(text) => ServerEvent::Transcript(text.to_string()),
        Output::ToolCall { name, .. } => ServerEvent::ToolCall(name.to_string()),
        Output::ResponseStart { .. } => ServerEvent::ResponseStart,
        Output::Metrics(value) => ServerEvent::Metrics(value),
        Output::ResponseEnd => ServerEvent::ResponseEnd,
        // `interrupted` is the raw protocol's flush: once per stop.
        Output::Cancelled {
            queued: Queued::Flushed,
            ..
        } => return Vec::new(),
        Output::Cancelled { .. } | Output::Flush { .. } => ServerEvent::Interrupted,
        Output::Resumed => ServerEvent::Resumed,
        Output::Error { message, .. } => ServerEvent::Error(message),
    };
    vec![encode_server_event(&event)]
}
