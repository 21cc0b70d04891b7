//! The client side of every wire adapter: semantic actions of a virtual user (an audio frame,
//! speech start/end, an interruption) become wire messages, and inbound wire messages become
//! semantic events (reply audio as PCM16 samples, named events, server errors).
//!
//! One [`Codec`] per call. Codecs are plain state machines: no I/O, no clocks of their own
//! (arrival times are passed in), so each is unit-testable and the session stays the only
//! place that touches the socket.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::custom::CustomCodec;
use super::openai::OpenAiCodec;
use super::twilio::TwilioCodec;
use super::{Control, ProtocolError, ServerEvent, decode_pcm16, decode_server_value};

/// One semantic event decoded from an inbound message.
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    /// Reply audio, PCM16 mono at the codec's sample rate.
    Audio(Vec<i16>),
    /// A named event plans can `await`/`expect`.
    Event {
        name: String,
        /// The whole message (for `where` conditions and `capture`).
        json: Value,
        /// Short text for the timeline (a transcript, a tool name).
        detail: String,
        /// Informational events (progress notes such as transcript deltas) can be awaited by
        /// name but never count as "unexpected" in a strict `expect`.
        informational: bool,
    },
    /// The server reported an error.
    Error(String),
    /// A numeric field captured into a metric (milliseconds).
    Capture { metric: String, ms: f64 },
    /// The server told the caller to drop the reply audio it has not played yet (raw
    /// `interrupted`, Twilio `clear`, Realtime's cancelled response, `truncated` item or
    /// cleared output buffer, a custom rule with `flush: true`): the caller's playout queue
    /// empties at once. Decoded before the named event the same message becomes.
    Flush,
}

impl WireEvent {
    pub fn event(name: &str, json: Value) -> Self {
        WireEvent::Event {
            name: name.to_string(),
            json,
            detail: String::new(),
            informational: false,
        }
    }

    pub fn info(name: &str, json: Value) -> Self {
        WireEvent::Event {
            name: name.to_string(),
            json,
            detail: String::new(),
            informational: true,
        }
    }

    pub fn with_detail(mut self, text: &str) -> Self {
        if let WireEvent::Event { detail, .. } = &mut self {
            *detail = text.to_string();
        }
        self
    }
}

/// The wire adapter of one call.
#[derive(Debug)]
pub enum Codec {
    Raw(RawCodec),
    Twilio(TwilioCodec),
    OpenAi(OpenAiCodec),
    Custom(CustomCodec),
}

impl Codec {
    /// Audio sample rate on the wire, both directions.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Codec::Raw(c) => c.sample_rate,
            Codec::Twilio(_) => super::twilio::SAMPLE_RATE,
            Codec::OpenAi(c) => c.sample_rate(),
            Codec::Custom(c) => c.sample_rate(),
        }
    }

    /// Messages sent right after the WebSocket opens.
    pub fn open(&mut self) -> Result<Vec<Message>, ProtocolError> {
        match self {
            Codec::Raw(_) => Ok(Vec::new()),
            Codec::Twilio(c) => Ok(c.open()),
            Codec::OpenAi(c) => Ok(c.open()),
            Codec::Custom(c) => c.open(),
        }
    }

    /// One frame of the caller's audio.
    pub fn audio(&mut self, samples: &[i16]) -> Result<Message, ProtocolError> {
        match self {
            Codec::Raw(_) => Ok(super::encode_audio(samples)),
            Codec::Twilio(c) => Ok(c.audio(samples)),
            Codec::OpenAi(c) => Ok(c.audio(samples)),
            Codec::Custom(c) => c.audio(samples),
        }
    }

    /// A control action; `text` is what the caller said (for `speech_end`), when known.
    pub fn control(
        &mut self,
        control: Control,
        text: Option<&str>,
        now: Instant,
    ) -> Result<Vec<Message>, ProtocolError> {
        match self {
            Codec::Raw(_) => Ok(vec![match (control, text) {
                (Control::SpeechEnd, Some(text)) => super::encode_speech_end_with_text(text),
                _ => super::encode_client_control(control),
            }]),
            // Twilio has no such messages: the bot's VAD hears the audio.
            Codec::Twilio(_) => Ok(Vec::new()),
            Codec::OpenAi(c) => Ok(c.control(control, text, now)),
            Codec::Custom(c) => c.control(control, text),
        }
    }

    /// Decode one inbound message received at `at`.
    pub fn decode(&mut self, msg: &Message, at: Instant) -> Result<Vec<WireEvent>, ProtocolError> {
        match self {
            Codec::Raw(_) => decode_raw(msg),
            Codec::Twilio(c) => c.decode(msg, at),
            Codec::OpenAi(c) => c.decode(msg, at),
            Codec::Custom(c) => c.decode(msg),
        }
    }

    /// When the codec next has something to send by itself (Twilio's mark echoes).
    pub fn next_due(&self) -> Option<Instant> {
        match self {
            Codec::Twilio(c) => c.next_due(),
            _ => None,
        }
    }

    /// Messages due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        match self {
            Codec::Twilio(c) => c.due(now),
            _ => Vec::new(),
        }
    }

    /// Messages sent before a polite close (Twilio's `stop`).
    pub fn close(&mut self) -> Result<Vec<Message>, ProtocolError> {
        match self {
            Codec::Twilio(c) => Ok(c.close()),
            Codec::Custom(c) => c.close(),
            _ => Ok(Vec::new()),
        }
    }
}

/// The raw protocol (see the module docs of [`crate::protocol`]).
#[derive(Debug)]
pub struct RawCodec {
    pub sample_rate: u32,
}

fn decode_raw(msg: &Message) -> Result<Vec<WireEvent>, ProtocolError> {
    match msg {
        Message::Binary(bytes) => Ok(vec![WireEvent::Audio(decode_pcm16(bytes))]),
        Message::Text(text) => {
            let json = parse_json(text)?;
            let event = decode_server_value(&json)?;
            Ok(vec![match event {
                ServerEvent::Error(message) => WireEvent::Error(message),
                ServerEvent::Transcript(t) => WireEvent::event("transcript", json).with_detail(&t),
                ServerEvent::ToolCall(n) => WireEvent::event("tool_call", json).with_detail(&n),
                ServerEvent::Metrics(_) => WireEvent::info("metrics", json),
                other => {
                    let name = other.kind().to_string();
                    if name == "interrupted" {
                        return Ok(vec![WireEvent::Flush, WireEvent::event(&name, json)]);
                    }
                    WireEvent::event(&name, json)
                }
            }])
        }
        _ => Ok(Vec::new()),
    }
}

/// Parse a text message as JSON; the error quotes the message.
pub fn parse_json(text: &str) -> Result<Value, ProtocolError> {
    serde_json::from_str(text).map_err(|e| {
        ProtocolError(format!(
            "server sent text that is not JSON ({e}): {}",
            excerpt(text)
        ))
    })
}

/// A binary frame where the protocol only has JSON text.
pub fn unexpected_binary(bytes: &[u8]) -> ProtocolError {
    let hex: String = bytes
        .iter()
        .take(24)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    ProtocolError(format!(
        "server sent a binary frame ({} bytes: {hex}{}) where the protocol has JSON text",
        bytes.len(),
        if bytes.len() > 24 { " …" } else { "" }
    ))
}

/// The first 160 characters of a message, for error reports.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 160;
    let mut s: String = text.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        s.push('…');
    }
    s
}

/// Decode standard base64 audio; the error names the field and quotes the message.
pub fn base64_field(value: &Value, pointer: &str, whole: &str) -> Result<Vec<u8>, ProtocolError> {
    use base64::Engine;
    let Some(text) = value.pointer(pointer).and_then(Value::as_str) else {
        return Err(ProtocolError(format!(
            "`{pointer}` is missing or not a string in {}",
            excerpt(whole)
        )));
    };
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            ProtocolError(format!(
                "`{pointer}` is not valid base64 ({e}) in {}",
                excerpt(whole)
            ))
        })
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PCM16 little-endian bytes.
pub fn pcm16_bytes(samples: &[i16]) -> Vec<u8> {
    // Fill a sized buffer pair by pair (vectorises; pushing byte by byte did not).
    let mut bytes = vec![0u8; samples.len() * 2];
    for (out, s) in bytes.chunks_exact_mut(2).zip(samples) {
        out.copy_from_slice(&s.to_le_bytes());
    }
    bytes
}

/// G.711 µ-law bytes.
pub fn mulaw_bytes(samples: &[i16]) -> Vec<u8> {
    samples
        .iter()
        .map(|s| audio_codec_algorithms::encode_ulaw(*s))
        .collect()
}

/// Decode G.711 µ-law bytes.
pub fn mulaw_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .iter()
        .map(|b| audio_codec_algorithms::decode_ulaw(*b))
        .collect()
}

/// Duration of `n` samples at `rate`.
pub fn samples_duration(n: usize, rate: u32) -> Duration {
    Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)))
}

/// A random identifier with a prefix (`MZ` + 32 hex digits, as Twilio's SIDs look).
pub fn sid(prefix: &str, rng: &mut impl rand::Rng) -> String {
    let a: u64 = rng.next_u64();
    let b: u64 = rng.next_u64();
    format!("{prefix}{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_round_trip_is_close() {
        let samples: Vec<i16> = (0..160)
            .map(|i| ((i as f64 / 10.0).sin() * 12_000.0) as i16)
            .collect();
        let back = mulaw_samples(&mulaw_bytes(&samples));
        for (a, b) in samples.iter().zip(&back) {
            // µ-law's quantisation step grows with the level: ≤ 1/16 of the value plus a bit.
            assert!((i32::from(*a) - i32::from(*b)).abs() <= i32::from(a.unsigned_abs() / 16) + 8);
        }
    }

    #[test]
    fn raw_decodes_audio_events_and_errors() {
        let ev = decode_raw(&super::super::encode_audio(&[1, -2])).unwrap();
        assert_eq!(ev, vec![WireEvent::Audio(vec![1, -2])]);
        let ev = decode_raw(&Message::text(r#"{"type":"error","message":"x"}"#)).unwrap();
        assert_eq!(ev, vec![WireEvent::Error("x".into())]);
        let ev = decode_raw(&Message::text(r#"{"type":"interrupted"}"#)).unwrap();
        assert_eq!(ev[0], WireEvent::Flush);
        assert!(matches!(&ev[1], WireEvent::Event { name, .. } if name == "interrupted"));
        let err = decode_raw(&Message::text("nope {")).unwrap_err();
        assert!(err.0.contains("nope {"), "{err}");
    }

    #[test]
    fn binary_excerpt_is_hex() {
        let e = unexpected_binary(&[0xde, 0xad]);
        assert!(e.0.contains("2 bytes: de ad"), "{e}");
    }

    #[test]
    fn bad_base64_names_the_field() {
        let v: Value = serde_json::json!({"media": {"payload": "!!notbase64"}});
        let e = base64_field(&v, "/media/payload", &v.to_string()).unwrap_err();
        assert!(
            e.0.contains("/media/payload") && e.0.contains("notbase64"),
            "{e}"
        );
    }
}
