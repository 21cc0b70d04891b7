//! Per-connection wire codecs of the reference agent: the protocol-specific layer between the
//! WebSocket and the protocol-independent state machine in [`super::session`].
//!
//! The handshake's request path picks the protocol ([`Protocol::from_path`]): `/twilio` is
//! Twilio Media Streams, `/openai` and `/v1/realtime` are the OpenAI Realtime API, anything else
//! is planrun's raw protocol. A codec turns each inbound message into agent [`Input`]s and each
//! agent [`Output`] into zero or more outbound messages; it holds only wire state (ids, the
//! Twilio `streamSid`, the Realtime session object), never timing or turn logic.

use std::time::Duration;

use audio_codec_algorithms::{decode_ulaw, encode_ulaw};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::protocol::{
    Control, ServerEvent, decode_client_text, decode_pcm16, encode_server_event,
};

/// Twilio Media Streams audio: G.711 µ-law, 8 kHz mono.
pub(crate) const TWILIO_RATE: u32 = 8_000;
/// OpenAI Realtime's default PCM16 rate.
pub(crate) const REALTIME_RATE: u32 = 24_000;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Raw,
    Twilio,
    OpenAi,
}

impl Protocol {
    /// Route by the handshake's request path (query strings ignored, a trailing `/` too).
    pub fn from_path(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or_default();
        match path.trim_end_matches('/') {
            "/twilio" => Protocol::Twilio,
            "/openai" | "/v1/realtime" => Protocol::OpenAi,
            _ => Protocol::Raw,
        }
    }
}

/// What an inbound message means to the agent, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Input {
    /// PCM16 samples at the session rate.
    Audio(Vec<i16>),
    /// Raw `speech_start`.
    SpeechStart,
    /// Raw `speech_end` or Realtime `input_audio_buffer.commit`, with optional text (a stand-in
    /// for ASR).
    SpeechEnd(Option<String>),
    /// Raw `interrupt`.
    Interrupt,
    /// Realtime `response.create`.
    CreateResponse,
    /// Realtime `response.cancel`.
    Cancel,
    /// Realtime `input_audio_buffer.clear`.
    ClearBuffer,
    /// Realtime turn detection changed: `true` = manual turns (`turn_detection: null`).
    ManualTurns(bool),
    /// Realtime input rate changed (only sent while the session is idle).
    Rate(u32),
    /// Send this as is (acknowledgements and errors the codec answers by itself).
    Reply(Message),
    /// Twilio `stop`: the call ended, close normally.
    Hangup,
    /// A protocol violation the connection cannot survive: close with this code and reason.
    Violation(CloseCode, String),
}

/// Why a reply was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    /// The agent heard the user talk over it (barge-in).
    TurnDetected,
    /// The client asked (`response.cancel`).
    Client,
}

/// What the state machine tells the client, protocol-independently.
#[derive(Debug)]
pub(crate) enum Output<'a> {
    /// The VAD opened an utterance, at this audio time of the connection's input.
    SpeechStarted {
        audio_start_ms: u64,
    },
    /// The VAD closed the utterance.
    SpeechStopped {
        audio_end_ms: u64,
    },
    /// The user's audio became a conversation item (a turn, or a manual commit).
    Committed,
    /// The ASR result.
    Transcript(&'a str),
    ToolCall {
        name: &'a str,
        arguments: String,
    },
    /// First reply audio is about to go out; `duration` is the whole reply's audio.
    ResponseStart {
        duration: Duration,
    },
    /// One reply frame: PCM16 LE at the session rate.
    Audio(&'a [u8]),
    /// The turn's component timings (the raw protocol's `metrics` object).
    Metrics(Value),
    /// The reply played out completely.
    ResponseEnd,
    /// The reply was stopped for good.
    Cancelled(CancelReason),
    /// The pending answer was dropped before any audio (the user kept talking while the agent
    /// was thinking). Only a response already opened on the wire needs closing.
    Abandoned,
    /// A false alarm ended: the reply continues.
    Resumed,
    Error {
        code: &'a str,
        message: String,
    },
}

/// One connection's codec.
#[derive(Debug)]
pub(crate) enum Wire {
    Raw,
    Twilio(Twilio),
    OpenAi(Box<OpenAi>),
}

impl Wire {
    pub fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Raw => Wire::Raw,
            Protocol::Twilio => Wire::Twilio(Twilio::default()),
            Protocol::OpenAi => Wire::OpenAi(Box::new(OpenAi::new())),
        }
    }

    /// The session's sample rate before the client says anything.
    pub fn initial_rate(&self, configured: u32) -> u32 {
        match self {
            Wire::Raw => configured,
            Wire::Twilio(_) => TWILIO_RATE,
            Wire::OpenAi(o) => o.rate,
        }
    }

    /// Messages sent right after the handshake.
    pub fn greeting(&mut self) -> Vec<Message> {
        match self {
            Wire::OpenAi(o) => {
                let session = o.session.clone();
                vec![o.event(json!({"type": "session.created", "session": session}))]
            }
            _ => Vec::new(),
        }
    }

    /// Decode one text or binary message (control frames are the session's business).
    /// `idle`: no turn is under way and no utterance is open.
    pub fn decode(&mut self, msg: &Message, idle: bool) -> Vec<Input> {
        match self {
            Wire::Raw => decode_raw(msg),
            Wire::Twilio(t) => t.decode(msg),
            Wire::OpenAi(o) => o.decode(msg, idle),
        }
    }

    /// Encode one agent output.
    pub fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
        match self {
            Wire::Raw => encode_raw(out),
            Wire::Twilio(t) => t.encode(out),
            Wire::OpenAi(o) => o.encode(out),
        }
    }
}

// ----- raw ---------------------------------------------------------------------------------

fn decode_raw(msg: &Message) -> Vec<Input> {
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

fn encode_raw(out: Output<'_>) -> Vec<Message> {
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
        Output::Cancelled(_) => ServerEvent::Interrupted,
        Output::Resumed => ServerEvent::Resumed,
        Output::Error { message, .. } => ServerEvent::Error(message),
    };
    vec![encode_server_event(&event)]
}

// ----- Twilio Media Streams ----------------------------------------------------------------

/// Twilio Media Streams: the agent is the bot's WebSocket server, the client plays Twilio.
#[derive(Debug, Default)]
pub(crate) struct Twilio {
    /// From the `start` message; `None` until then.
    stream_sid: Option<String>,
}

impl Twilio {
    fn decode(&mut self, msg: &Message) -> Vec<Input> {
        let text = match msg {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => {
                return vec![Input::Violation(
                    CloseCode::Unsupported,
                    "Twilio Media Streams messages are JSON text frames, not binary".into(),
                )];
            }
            _ => return Vec::new(),
        };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return vec![Input::Violation(
                CloseCode::Invalid,
                "Twilio message is not JSON".into(),
            )];
        };
        let Some(event) = value.get("event").and_then(Value::as_str) else {
            return vec![violation("Twilio message without a string `event`")];
        };
        match event {
            "start" => self.start(&value),
            "media" => self.media(&value),
            "stop" => vec![Input::Hangup],
            // `connected`, `mark` echoes, `dtmf`, and anything newer: nothing to do.
            _ => Vec::new(),
        }
    }

    fn start(&mut self, value: &Value) -> Vec<Input> {
        let sid = value
            .get("streamSid")
            .or_else(|| value.pointer("/start/streamSid"))
            .and_then(Value::as_str);
        let Some(sid) = sid else {
            return vec![violation("Twilio `start` without a `streamSid`")];
        };
        if let Some(format) = value.pointer("/start/mediaFormat") {
            let encoding = format.get("encoding").and_then(Value::as_str);
            let rate = format.get("sampleRate").and_then(Value::as_u64);
            let channels = format.get("channels").and_then(Value::as_u64);
            if encoding.is_some_and(|e| e != "audio/x-mulaw")
                || rate.is_some_and(|r| r != u64::from(TWILIO_RATE))
                || channels.is_some_and(|c| c != 1)
            {
                return vec![violation(
                    "Twilio mediaFormat must be audio/x-mulaw, 8000 Hz, 1 channel",
                )];
            }
        }
        self.stream_sid = Some(sid.to_string());
        Vec::new()
    }

    fn media(&mut self, value: &Value) -> Vec<Input> {
        if self.stream_sid.is_none() {
            return vec![violation("Twilio `media` before `start`")];
        }
        let track = value.pointer("/media/track").and_then(Value::as_str);
        if track.is_some_and(|t| t != "inbound") {
            return Vec::new(); // the caller's audio only
        }
        let Some(payload) = value.pointer("/media/payload").and_then(Value::as_str) else {
            return vec![violation("Twilio `media` without a string `media.payload`")];
        };
        match B64.decode(payload) {
            Ok(bytes) => vec![Input::Audio(
                bytes.into_iter().map(decode_ulaw).collect::<Vec<i16>>(),
            )],
            Err(e) => vec![Input::Violation(
                CloseCode::Invalid,
                format!("Twilio media payload is not base64: {e}"),
            )],
        }
    }

    fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
        let sid = self.stream_sid.as_deref().unwrap_or_default();
        let value = match out {
            Output::Audio(bytes) => {
                let ulaw: Vec<u8> = decode_pcm16(bytes).into_iter().map(encode_ulaw).collect();
                json!({"event": "media", "streamSid": sid, "media": {"payload": B64.encode(ulaw)}})
            }
            Output::ResponseEnd => {
                json!({"event": "mark", "streamSid": sid, "mark": {"name": "response_end"}})
            }
            Output::Cancelled(_) => json!({"event": "clear", "streamSid": sid}),
            // Twilio has no transcripts, metrics, tool calls, errors or resume events.
            _ => return Vec::new(),
        };
        vec![Message::text(value.to_string())]
    }
}

fn violation(reason: &str) -> Input {
    Input::Violation(CloseCode::Policy, reason.to_string())
}

// ----- OpenAI Realtime ---------------------------------------------------------------------

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
    fn new() -> Self {
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
        }
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

    fn decode(&mut self, msg: &Message, idle: bool) -> Vec<Input> {
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
                vec![Input::Reply(ack)]
            }
            other => {
                let e = self.error("unknown_event", format!("unknown event type `{other}`"));
                vec![Input::Reply(e)]
            }
        }
    }

    /// `session.update`: turn detection and input rate (GA or beta shape); answers
    /// `session.updated` with the whole session, or an `error` and changes nothing.
    fn session_update(&mut self, value: &Value, idle: bool) -> Vec<Input> {
        let Some(patch) = value.get("session").filter(|s| s.is_object()) else {
            return vec![Input::Reply(self.error(
                "missing_session",
                "session.update without a `session` object",
            ))];
        };
        let turn_detection = patch
            .pointer("/audio/input/turn_detection")
            .or_else(|| patch.get("turn_detection"));
        let manual = turn_detection.map(Value::is_null);
        let rate = match input_rate(patch) {
            Ok(rate) => rate,
            Err(message) => return vec![Input::Reply(self.error("invalid_value", message))],
        };
        if let Some(rate) = rate
            && rate != self.rate
            && !idle
        {
            let e = self.error(
                "session_busy",
                "the audio rate cannot change while a turn is under way",
            );
            return vec![Input::Reply(e)];
        }

        let mut inputs = Vec::new();
        merge(&mut self.session, patch);
        if let Some(td) = turn_detection {
            // Canonical GA place, whichever shape the client used.
            set_path(
                &mut self.session,
                &["audio", "input", "turn_detection"],
                td.clone(),
            );
        }
        if let Some(manual) = manual
            && manual != self.manual
        {
            self.manual = manual;
            inputs.push(Input::ManualTurns(manual));
        }
        if let Some(rate) = rate {
            for dir in ["input", "output"] {
                let format = json!({"type": "audio/pcm", "rate": rate});
                set_path(&mut self.session, &["audio", dir, "format"], format);
            }
            if rate != self.rate {
                self.rate = rate;
                inputs.push(Input::Rate(rate));
            }
        }
        let session = self.session.clone();
        inputs.push(Input::Reply(
            self.event(json!({"type": "session.updated", "session": session})),
        ));
        inputs
    }

    fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
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
            Output::ToolCall { name, arguments } => {
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
            Output::Cancelled(reason) => {
                self.ensure_response(&mut msgs);
                self.response_done(&mut msgs, Some(reason));
            }
            Output::Abandoned => self.response_done(&mut msgs, Some(CancelReason::TurnDetected)),
            Output::Resumed => {}
            Output::Error { code, message } => msgs.push(self.error(code, message)),
        }
        msgs
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

/// The input rate a `session.update` asks for, if any.
fn input_rate(patch: &Value) -> Result<Option<u32>, String> {
    if let Some(format) = patch.pointer("/audio/input/format") {
        let kind = format.get("type").and_then(Value::as_str);
        if kind.is_some_and(|k| k != "audio/pcm") {
            return Err(format!(
                "the reference agent only speaks audio/pcm (PCM16), not {}",
                kind.unwrap_or_default()
            ));
        }
        return match format.get("rate") {
            None => Ok(Some(REALTIME_RATE)),
            Some(rate) => match rate.as_u64() {
                Some(r @ 1..=384_000) => Ok(u32::try_from(r).ok()),
                _ => Err(format!(
                    "audio.input.format.rate must be 1..=384000, found {rate}"
                )),
            },
        };
    }
    match patch.get("input_audio_format").map(|f| f.as_str()) {
        None => Ok(None),
        Some(Some("pcm16")) => Ok(Some(REALTIME_RATE)),
        Some(other) => Err(format!(
            "the reference agent only speaks input_audio_format pcm16, not {}",
            other.unwrap_or("a non-string")
        )),
    }
}

/// JSON merge: objects merge key by key, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn set_path(target: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return;
    };
    let mut at = target;
    for key in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        at = map.entry((*key).to_string()).or_insert(Value::Null);
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    if let Value::Object(map) = at {
        map.insert((*last).to_string(), value);
    }
}

/// A rough token count: about four characters a token.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// The reply's words, as many as a speaker says in `duration` (about 2.5 words a second).
fn reply_text(duration: Duration) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(msg: &Message) -> Value {
        match msg {
            Message::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("text expected, got {other:?}"),
        }
    }

    #[test]
    fn routes_by_path() {
        assert_eq!(Protocol::from_path("/"), Protocol::Raw);
        assert_eq!(Protocol::from_path("/agent"), Protocol::Raw);
        assert_eq!(Protocol::from_path("/twilio"), Protocol::Twilio);
        assert_eq!(Protocol::from_path("/twilio/?x=1"), Protocol::Twilio);
        assert_eq!(Protocol::from_path("/openai"), Protocol::OpenAi);
        assert_eq!(
            Protocol::from_path("/v1/realtime?model=gpt-realtime"),
            Protocol::OpenAi
        );
        assert_eq!(Protocol::from_path("/twilio2"), Protocol::Raw);
    }

    #[test]
    fn twilio_media_round_trips_through_ulaw() {
        let mut t = Wire::new(Protocol::Twilio);
        let media = json!({"event": "media", "media": {"payload": "AAAA"}}).to_string();
        assert!(matches!(
            t.decode(&Message::text(media.clone()), true).as_slice(),
            [Input::Violation(CloseCode::Policy, _)]
        ));
        let start = json!({"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
        assert!(t.decode(&Message::text(start.to_string()), true).is_empty());
        let pcm: Vec<i16> = (0..160).map(|i| ((i * 97) % 2000 - 1000) as i16).collect();
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let out = t.encode(Output::Audio(&bytes));
        let v = text(&out[0]);
        assert_eq!(v["event"], "media");
        assert_eq!(v["streamSid"], "MZ1");
        let back = json!({"event": "media", "media": {"track": "inbound",
            "payload": v["media"]["payload"]}});
        let [Input::Audio(decoded)] = &t.decode(&Message::text(back.to_string()), true)[..] else {
            panic!("audio expected");
        };
        assert_eq!(decoded.len(), 160);
        for (a, b) in pcm.iter().zip(decoded.iter()) {
            assert!((a - b).abs() <= 64, "{a} vs {b}");
        }
        assert_eq!(
            text(&t.encode(Output::Cancelled(CancelReason::TurnDetected))[0])["event"],
            "clear"
        );
        assert_eq!(
            text(&t.encode(Output::ResponseEnd)[0])["mark"]["name"],
            "response_end"
        );
        assert!(t.encode(Output::Transcript("hi")).is_empty());
        assert_eq!(
            t.decode(&Message::text(r#"{"event":"stop"}"#), true),
            vec![Input::Hangup]
        );
        assert!(matches!(
            t.decode(&Message::text("nope"), true).as_slice(),
            [Input::Violation(CloseCode::Invalid, _)]
        ));
    }

    #[test]
    fn realtime_session_update_ga_and_beta() {
        let mut o = Wire::new(Protocol::OpenAi);
        let greeting = text(&o.greeting()[0]);
        assert_eq!(greeting["type"], "session.created");
        let ga = json!({"type": "session.update", "session": {"type": "realtime", "audio":
            {"input": {"turn_detection": null, "format": {"type": "audio/pcm", "rate": 16000}}}}});
        let inputs = o.decode(&Message::text(ga.to_string()), true);
        assert_eq!(inputs[0], Input::ManualTurns(true));
        assert_eq!(inputs[1], Input::Rate(16000));
        let Input::Reply(reply) = &inputs[2] else {
            panic!("{inputs:?}")
        };
        let v = text(reply);
        assert_eq!(v["type"], "session.updated");
        assert!(v["session"]["audio"]["input"]["turn_detection"].is_null());
        assert_eq!(v["session"]["audio"]["output"]["format"]["rate"], 16000);
        assert_ne!(v["event_id"], greeting["event_id"]);

        let beta = json!({"type": "session.update", "session": {"input_audio_format": "pcm16",
            "turn_detection": {"type": "server_vad"}}});
        let inputs = o.decode(&Message::text(beta.to_string()), true);
        assert_eq!(inputs[0], Input::ManualTurns(false));
        assert_eq!(inputs[1], Input::Rate(24000));

        // A rate change mid-turn is refused and changes nothing.
        let busy = o.decode(&Message::text(ga.to_string()), false);
        let [Input::Reply(e)] = &busy[..] else {
            panic!("{busy:?}")
        };
        assert_eq!(text(e)["error"]["code"], "session_busy");

        let unknown = o.decode(&Message::text(r#"{"type":"bogus"}"#), true);
        let [Input::Reply(e)] = &unknown[..] else {
            panic!("{unknown:?}")
        };
        assert_eq!(text(e)["error"]["code"], "unknown_event");
    }

    #[test]
    fn realtime_response_lifecycle_and_usage() {
        let mut o = Wire::new(Protocol::OpenAi);
        o.encode(Output::Committed);
        o.encode(Output::Transcript("please book a table for two"));
        let start = o.encode(Output::ResponseStart {
            duration: Duration::from_millis(40),
        });
        let kinds: Vec<Value> = start.iter().map(|m| text(m)["type"].clone()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.output_item.added",
                "response.output_audio_transcript.delta"
            ]
        );
        // 24 kHz: 40 ms = 1920 bytes; send half of it, then cancel.
        let delta = o.encode(Output::Audio(&[0u8; 960]));
        assert_eq!(text(&delta[0])["type"], "response.output_audio.delta");
        o.encode(Output::Metrics(json!({"type": "metrics", "asr_ms": 50.0})));
        let done = o.encode(Output::Cancelled(CancelReason::Client));
        let v = text(&done[0]);
        assert_eq!(v["type"], "response.done");
        assert_eq!(v["response"]["status"], "cancelled");
        assert_eq!(
            v["response"]["status_details"]["reason"],
            "client_cancelled"
        );
        assert_eq!(v["response"]["metadata"]["asr_ms"], 50.0);
        assert_eq!(v["response"]["usage"]["input_tokens"], 7);
        let out = v["response"]["usage"]["output_tokens"].as_u64().unwrap();
        assert!(out >= 1, "{v}");
        // Nothing in progress now: the next output opens a fresh response.
        let again = o.encode(Output::ResponseStart {
            duration: Duration::from_secs(1),
        });
        assert_eq!(text(&again[0])["type"], "response.created");
        assert_ne!(
            text(&again[0])["response"]["id"],
            v["response"]["id"],
            "fresh id"
        );
    }

    #[test]
    fn merge_and_set_path() {
        let mut v = json!({"a": {"b": 1, "c": 2}});
        merge(&mut v, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(v, json!({"a": {"b": null, "c": 2, "d": 3}}));
        set_path(&mut v, &["x", "y"], json!(5));
        assert_eq!(v["x"]["y"], 5);
        assert_eq!(tokens(""), 1);
        assert_eq!(reply_text(Duration::from_millis(800)), "sure I.");
    }
}
