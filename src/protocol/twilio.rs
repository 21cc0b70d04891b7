//! Twilio Media Streams, Twilio's side (planrun is the phone network; the bot is the server).
//!
//! Outbound, as Twilio sends them: `connected`, `start` (stream/call/account SIDs, tracks,
//! `customParameters`, `mediaFormat` audio/x-mulaw 8000 Hz mono), one `media` per 20 ms frame
//! (base64 µ-law, with `chunk` and `timestamp`), `mark` echoes, `stop`. Every message carries a
//! `sequenceNumber`.
//!
//! Inbound, as a bot sends them: `media` (reply audio), `mark` (echoed back once the audio sent
//! before it has played, as Twilio does; on `clear` all pending marks are echoed at once), and
//! `clear` (the bot's barge-in: it flushes the caller's playout queue and becomes the
//! `interrupted` event). Anything else, a binary
//! frame, bad JSON or bad base64 is a protocol error quoting the message.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::ProtocolError;
use super::client::{
    WireEvent, b64, base64_field, excerpt, mulaw_bytes, mulaw_samples, parse_json,
    samples_duration, sid, unexpected_binary,
};

/// Twilio streams 8 kHz µ-law.
pub const SAMPLE_RATE: u32 = 8000;

#[derive(Debug)]
pub struct TwilioCodec {
    stream_sid: String,
    call_sid: String,
    account_sid: String,
    custom_parameters: BTreeMap<String, String>,
    /// Last `sequenceNumber` sent.
    seq: u64,
    /// Media chunks sent.
    chunk: u64,
    /// Samples sent (the media `timestamp` is in milliseconds of audio).
    samples_sent: u64,
    /// When the reply audio received so far finishes playing.
    playout_end: Option<Instant>,
    /// Marks to echo: (due, name).
    pending_marks: Vec<(Instant, String)>,
}

impl TwilioCodec {
    pub fn new(custom_parameters: BTreeMap<String, String>, rng: &mut impl rand::Rng) -> Self {
        TwilioCodec {
            stream_sid: sid("MZ", rng),
            call_sid: sid("CA", rng),
            account_sid: sid("AC", rng),
            custom_parameters,
            seq: 0,
            chunk: 0,
            samples_sent: 0,
            playout_end: None,
            pending_marks: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    pub fn open(&mut self) -> Vec<Message> {
        let connected = json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
        let start = json!({
            "event": "start",
            "sequenceNumber": self.next_seq(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
            },
            "streamSid": self.stream_sid,
        });
        vec![
            Message::text(connected.to_string()),
            Message::text(start.to_string()),
        ]
    }

    pub fn audio(&mut self, samples: &[i16]) -> Message {
        self.chunk += 1;
        let timestamp = self.samples_sent * 1000 / u64::from(SAMPLE_RATE);
        self.samples_sent += samples.len() as u64;
        let msg = json!({
            "event": "media",
            "sequenceNumber": self.next_seq(),
            "media": {
                "track": "inbound",
                "chunk": self.chunk.to_string(),
                "timestamp": timestamp.to_string(),
                "payload": b64(&mulaw_bytes(samples)),
            },
            "streamSid": self.stream_sid,
        });
        Message::text(msg.to_string())
    }

    fn mark_message(&mut self, name: &str) -> Message {
        let msg = json!({
            "event": "mark",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        });
        Message::text(msg.to_string())
    }

    pub fn close(&mut self) -> Vec<Message> {
        let msg = json!({
            "event": "stop",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
        });
        vec![Message::text(msg.to_string())]
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.pending_marks.iter().map(|(due, _)| *due).min()
    }

    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_marks)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending_marks = later;
        due.into_iter()
            .map(|(_, name)| self.mark_message(&name))
            .collect()
    }

    pub fn decode(&mut self, msg: &Message, at: Instant) -> Result<Vec<WireEvent>, ProtocolError> {
        let text = match msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => return Err(unexpected_binary(b)),
            _ => return Ok(Vec::new()),
        };
        let json = parse_json(text)?;
        let Some(event) = json.get("event").and_then(Value::as_str) else {
            return Err(ProtocolError(format!(
                "Twilio message without a string `event`: {}",
                excerpt(text)
            )));
        };
        match event {
            "media" => {
                let bytes = base64_field(&json, "/media/payload", text)?;
                let samples = mulaw_samples(&bytes);
                let dur = samples_duration(samples.len(), SAMPLE_RATE);
                let start = self.playout_end.map_or(at, |end| end.max(at));
                self.playout_end = Some(start + dur);
                Ok(vec![WireEvent::Audio(samples)])
            }
            "mark" => {
                let name = json
                    .pointer("/mark/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let due = self.playout_end.map_or(at, |end| end.max(at));
                self.pending_marks.push((due, name.clone()));
                Ok(vec![WireEvent::event("mark", json).with_detail(&name)])
            }
            "clear" => {
                // Twilio drops the buffered audio and echoes every pending mark at once.
                self.playout_end = Some(at);
                for (due, _) in &mut self.pending_marks {
                    *due = at;
                }
                Ok(vec![
                    WireEvent::Flush,
                    WireEvent::event("interrupted", json),
                ])
            }
            other => Err(ProtocolError(format!(
                "unknown Twilio event `{other}`: {}",
                excerpt(text)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::time::Duration;

    fn codec() -> TwilioCodec {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut params = BTreeMap::new();
        params.insert("caller".into(), "planrun".into());
        TwilioCodec::new(params, &mut rng)
    }

    fn json_of(m: &Message) -> Value {
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    }

    #[test]
    fn opens_like_twilio() {
        let mut c = codec();
        let open = c.open();
        assert_eq!(json_of(&open[0])["event"], "connected");
        let start = json_of(&open[1]);
        assert_eq!(start["event"], "start");
        assert_eq!(start["sequenceNumber"], "1");
        assert!(start["streamSid"].as_str().unwrap().starts_with("MZ"));
        assert_eq!(start["start"]["customParameters"]["caller"], "planrun");
        assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
        let media = json_of(&c.audio(&[0; 160]));
        assert_eq!(media["sequenceNumber"], "2");
        assert_eq!(media["media"]["chunk"], "1");
        assert_eq!(media["media"]["timestamp"], "0");
        let media = json_of(&c.audio(&[0; 160]));
        assert_eq!(media["media"]["timestamp"], "20");
        assert_eq!(json_of(&c.close()[0])["event"], "stop");
    }

    #[test]
    fn media_decodes_and_marks_echo_after_playout() {
        let mut c = codec();
        let t0 = Instant::now();
        let payload = b64(&mulaw_bytes(&[1000; 160]));
        let media = Message::text(
            json!({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})
                .to_string(),
        );
        let ev = c.decode(&media, t0).unwrap();
        assert!(matches!(&ev[0], WireEvent::Audio(s) if s.len() == 160));
        let mark = Message::text(
            json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}).to_string(),
        );
        c.decode(&mark, t0).unwrap();
        assert_eq!(c.next_due(), Some(t0 + Duration::from_millis(20)));
        assert!(c.due(t0).is_empty());
        let echoed = c.due(t0 + Duration::from_millis(20));
        assert_eq!(json_of(&echoed[0])["mark"]["name"], "m1");
    }

    #[test]
    fn clear_is_interrupted_and_flushes_marks() {
        let mut c = codec();
        let t0 = Instant::now();
        let payload = b64(&mulaw_bytes(&[1000; 8000]));
        let media = json!({"event": "media", "media": {"payload": payload}}).to_string();
        c.decode(&Message::text(media), t0).unwrap();
        let mark = json!({"event": "mark", "mark": {"name": "end"}}).to_string();
        c.decode(&Message::text(mark), t0).unwrap();
        let ev = c
            .decode(&Message::text(r#"{"event":"clear"}"#), t0)
            .unwrap();
        assert_eq!(ev[0], WireEvent::Flush);
        assert!(matches!(&ev[1], WireEvent::Event { name, .. } if name == "interrupted"));
        assert_eq!(c.due(t0).len(), 1);
    }

    #[test]
    fn bad_input_is_a_protocol_error_with_excerpt() {
        let mut c = codec();
        let t = Instant::now();
        let e = c
            .decode(&Message::text(r#"{"event":"bogus","x":1}"#), t)
            .unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = c
            .decode(
                &Message::text(r#"{"event":"media","media":{"payload":"***"}}"#),
                t,
            )
            .unwrap_err();
        assert!(e.0.contains("base64") && e.0.contains("***"), "{e}");
        let e = c.decode(&Message::binary(vec![1u8, 2, 3]), t).unwrap_err();
        assert!(e.0.contains("binary"), "{e}");
        let e = c.decode(&Message::text("{oops"), t).unwrap_err();
        assert!(e.0.contains("{oops"), "{e}");
    }
}
