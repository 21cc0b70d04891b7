//! Per-connection wire codecs of the reference agent: the protocol-specific layer between the
//! WebSocket and the protocol-independent state machine in [`super::session`].
//!
//! The handshake's request path picks the protocol ([`Protocol::from_path`]): `/twilio` is
//! Twilio Media Streams, `/openai` and `/v1/realtime` are the OpenAI Realtime API, anything else
//! is planrun's raw protocol. A codec turns each inbound message into agent [`Input`]s and each
//! agent [`Output`] into zero or more outbound messages; it holds only wire state (ids, the
//! Twilio `streamSid`, the Realtime session object), never timing or turn logic.
//!
//! One file per protocol, mirroring `crate::protocol`: [`raw`], [`twilio`], [`openai`].

mod openai;
mod raw;
mod twilio;

use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use openai::OpenAi;
use twilio::Twilio;

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
    /// Realtime `conversation.item.create` of the `function_call_output` of the pending tool
    /// call.
    ToolResult,
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
    /// Twilio `mark` echo: the caller played the audio sent before the mark of this name.
    MarkPlayed(String),
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

/// What the caller still had queued of a reply when it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Nothing: real-time pacing, or everything sent has played.
    Nothing,
    /// This many samples, dropped now: the cancel must flush the caller's buffer.
    Samples(u64),
    /// An earlier [`Output::Flush`] (a barge-in pause) dropped it and nothing was sent since.
    Flushed,
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
        /// The response ends with the call; the caller sends the result and asks for the
        /// next response (OpenAI Realtime, strict).
        awaits_result: bool,
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
    /// The reply was stopped for good (its response still open); `queued`: what the caller
    /// still had of it to play.
    Cancelled {
        reason: CancelReason,
        queued: Queued,
    },
    /// The caller must drop the reply audio it has queued (`samples` of it, sent ahead of real
    /// time): a barge-in pause, or a barge-in after the reply's end message went out.
    Flush {
        samples: u64,
    },
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
            Wire::OpenAi(o) => o.rate(),
        }
    }

    /// Messages sent right after the handshake.
    pub fn greeting(&mut self) -> Vec<Message> {
        match self {
            Wire::OpenAi(o) => o.greeting(),
            _ => Vec::new(),
        }
    }

    /// Decode one text or binary message (control frames are the session's business).
    /// `idle`: no turn is under way and no utterance is open.
    /// Whether the protocol's tool calls wait for the caller's result (OpenAI Realtime).
    pub fn has_tool_results(&self) -> bool {
        matches!(self, Wire::OpenAi(_))
    }

    pub fn decode(&mut self, msg: &Message, idle: bool) -> Vec<Input> {
        match self {
            Wire::Raw => raw::decode(msg),
            Wire::Twilio(t) => t.decode(msg),
            Wire::OpenAi(o) => o.decode(msg, idle),
        }
    }

    /// Encode one agent output.
    pub fn encode(&mut self, out: Output<'_>) -> Vec<Message> {
        match self {
            Wire::Raw => raw::encode(out),
            Wire::Twilio(t) => t.encode(out),
            Wire::OpenAi(o) => o.encode(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of a text message.
    pub(super) fn text(msg: &Message) -> Value {
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
}
