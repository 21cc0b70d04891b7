//! Twilio Media Streams on `/twilio`: JSON text frames, G.711 µ-law audio at 8 kHz in base64
//! `media` payloads; the reply's end is a `mark`, a barge-in a `clear`.

use audio_codec_algorithms::{decode_ulaw, encode_ulaw};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Input, Output, Queued, TWILIO_RATE};
use crate::protocol::decode_pcm16;

/// Twilio Media Streams: the agent is the bot's WebSocket server, the client plays Twilio.
#[derive(Debug, Default)]
pub(crate) struct Twilio {
    /// From the `start` message; `None` until then.
    stream_sid: Option<String>,
}

impl Twilio {
    pub(super) fn decode(&mut self, msg: &Message) -> Vec<Input> {
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
            "mark" => {
                let name = value.pointer("/mark/name").and_then(Value::as_str);
                vec![Input::MarkPlayed(name.unwrap_or_default().to_string())]
            }
            // `connected`, `dtmf`, and anything newer: nothing to do.
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

    pub(super) fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
        let sid = self.stream_sid.as_deref().unwrap_or_default();
        let value = match out {
            Output::Audio(bytes) => {
                let ulaw: Vec<u8> = decode_pcm16(bytes).into_iter().map(encode_ulaw).collect();
                json!({"event": "media", "streamSid": sid, "media": {"payload": B64.encode(ulaw)}})
            }
            Output::ResponseEnd => {
                json!({"event": "mark", "streamSid": sid, "mark": {"name": "response_end"}})
            }
            // `clear` drops what Twilio has buffered: once per stop.
            Output::Cancelled {
                queued: Queued::Flushed,
                ..
            } => return Vec::new(),
            Output::Cancelled { .. } | Output::Flush { .. } => {
                json!({"event": "clear", "streamSid": sid})
            }
            // Twilio has no transcripts, metrics, tool calls, errors or resume events.
            _ => return Vec::new(),
        };
        vec![Message::text(value.to_string())]
    }
}

fn violation(reason: &str) -> Input {
    Input::Violation(CloseCode::Policy, reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::text;
    use super::super::{CancelReason, Protocol, Wire};
    use super::*;

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
            text(
                &t.encode(Output::Cancelled {
                    reason: CancelReason::TurnDetected,
                    queued: Queued::Nothing
                })[0]
            )["event"],
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
}
