//! `target`: the agent under test, its wire protocol and the adapters' settings, the built-in
//! agent's behaviour.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Dur, Jitter};
use crate::protocol::openai::TurnDetection;

/// The agent under test.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `builtin` (start the embedded reference agent on a loopback port) or a `ws://`/`wss://` URL.
    pub url: String,
    /// Wire protocol adapter: `raw` (default), `twilio`, `openai-realtime`, `custom`,
    /// `http_chunks` or `webrtc`.
    #[serde(default)]
    pub protocol: ProtocolKind,
    /// Audio sample rate in Hz, both directions (mono). Default: the protocol's own rate
    /// (raw 16000, twilio 8000, openai-realtime 24000, custom: `custom.sample_rate`).
    #[serde(default)]
    pub sample_rate: Option<u32>,
    /// HTTP headers of the WebSocket handshake. Values may use `{{ env.NAME }}`; such values
    /// are secrets: they never appear in reports or the console.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters appended to the URL (values may use `{{ env.NAME }}`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// WebSocket subprotocols offered in the handshake (`Sec-WebSocket-Protocol`).
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// TLS settings for `wss://` targets.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Keep sending silence frames while the caller is not speaking, as a phone line or an
    /// open microphone does (server-side VADs need it to notice the end of speech).
    /// Default: on for `twilio` and `openai-realtime` with server VAD, off otherwise.
    #[serde(default)]
    pub continuous_audio: Option<bool>,
    /// Settings of the `twilio` adapter.
    #[serde(default)]
    pub twilio: TwilioSpec,
    /// Settings of the `openai-realtime` adapter.
    #[serde(default)]
    pub openai: OpenAiSpec,
    /// The mapping of the `custom` adapter.
    #[serde(default)]
    pub custom: Option<crate::protocol::custom::CustomSpec>,
    /// Give up connecting after this long (counted as a `connect_error`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Reply audio at or above this RMS level (dBFS) counts as speech (`first_speech`, audio
    /// stops/resumes); quieter chunks (bots often stream silence first) only as audio.
    #[serde(default = "default_speech_threshold")]
    pub speech_threshold_dbfs: f64,
    /// Client playout buffer used to judge glitches (a reply chunk arriving after the audio
    /// already received has finished playing).
    #[serde(default = "default_jitter_buffer")]
    pub jitter_buffer: Dur,
    /// The caller's playout buffer: pre-roll and the pause that counts as a stop.
    #[serde(default)]
    pub playout: super::PlayoutSpec,
    /// Settings of the built-in agent (used when `url: builtin`).
    #[serde(default)]
    pub agent: AgentSpec,
    /// (`openai-realtime`) answer the bot's tool calls (every scenario without its own).
    pub on_tool_call: Option<super::OnToolCall>,
    /// Settings of `protocol: http_chunks` (audio POSTed in chunks over HTTP).
    #[serde(default)]
    pub http: HttpSpec,
    /// Settings of `protocol: webrtc` (signalling, setup timeouts).
    #[serde(default)]
    pub webrtc: super::WebrtcSpec,
}

/// `protocol: http_chunks`: each `send_audio` is cut into chunks of `chunk`, each POSTed to the
/// target URL (one keep-alive connection per call); fields of the JSON response are recorded
/// as metrics.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Audio per request (default 10s); the last chunk of a `send_audio` may be shorter.
    pub chunk: Option<Dur>,
    /// `raw` (default: the audio is the request body) or `multipart` (`multipart/form-data`).
    #[serde(default)]
    pub body: HttpBody,
    /// Audio encoding of each chunk: `wav` (default, a complete WAV file) or `pcm16` (raw LE).
    #[serde(default)]
    pub format: ChunkFormat,
    /// The multipart part (used when `body: multipart`).
    #[serde(default)]
    pub multipart: MultipartSpec,
    /// `POST` (default) or `PUT`.
    pub method: Option<String>,
    /// A chunk whose response has not been read in full after this long fails the call with
    /// `timeout` (default 30s).
    pub response_timeout: Option<Dur>,
    /// Response fields recorded per chunk: metric name → JSON pointer (`score: /score`).
    /// Numbers are recorded as they are, in the metric's unit (shown as ms); a missing or
    /// non-numeric field is a `protocol_error`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

/// How a chunk is carried in the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpBody {
    /// The audio bytes are the body.
    #[default]
    Raw,
    /// One `multipart/form-data` part holding the audio.
    Multipart,
}

/// Audio encoding of an HTTP chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChunkFormat {
    /// A WAV file (PCM16 mono at the target's sample rate), `audio/wav`.
    #[default]
    Wav,
    /// Raw PCM16 LE mono, `audio/L16;rate=…;channels=1`.
    Pcm16,
}

/// The multipart part holding the audio.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultipartSpec {
    /// Form field name (default `file`).
    pub field: Option<String>,
    /// File name (default `chunk.wav` or `chunk.pcm`).
    pub file_name: Option<String>,
    /// Content type of the part (default from `format`).
    pub content_type: Option<String>,
}

impl Target {
    /// The audio sample rate on the wire: the plan's, or the protocol's own.
    pub fn rate(&self) -> u32 {
        if let Some(rate) = self.sample_rate {
            return rate;
        }
        match self.protocol {
            ProtocolKind::Raw => 16_000,
            ProtocolKind::Twilio => crate::protocol::twilio::SAMPLE_RATE,
            ProtocolKind::OpenaiRealtime => crate::protocol::openai::SAMPLE_RATE,
            ProtocolKind::HttpChunks | ProtocolKind::Webrtc => 16_000,
            ProtocolKind::Custom => self
                .custom
                .as_ref()
                .and_then(|c| c.resolved().ok())
                .and_then(|c| c.sample_rate)
                .unwrap_or(16_000),
        }
    }
}

fn default_speech_threshold() -> f64 {
    -50.0
}
fn default_jitter_buffer() -> Dur {
    Dur(Duration::from_millis(60))
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolKind {
    /// PCM16 binary frames plus JSON control messages (see README).
    #[default]
    Raw,
    /// Twilio Media Streams: planrun plays Twilio's side (JSON, base64 µ-law 8 kHz).
    Twilio,
    /// The OpenAI Realtime event protocol (base64 PCM16 24 kHz).
    #[serde(rename = "openai-realtime", alias = "openai_realtime")]
    OpenaiRealtime,
    /// A declarative mapping written in the plan (`target.custom`).
    Custom,
    /// Audio POSTed over HTTP in chunks, JSON answers (see `target.http` and README).
    HttpChunks,
    /// WebRTC: an SDP offer POSTed to the URL, Opus audio over DTLS-SRTP (see `target.webrtc`).
    Webrtc,
}

impl ProtocolKind {
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Raw => "raw",
            ProtocolKind::Twilio => "twilio",
            ProtocolKind::OpenaiRealtime => "openai-realtime",
            ProtocolKind::Custom => "custom",
            ProtocolKind::HttpChunks => "http_chunks",
            ProtocolKind::Webrtc => "webrtc",
        }
    }
}

/// TLS options of `wss://` targets (the system's web PKI roots are always trusted).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// A PEM file with extra CA certificates to trust (e.g. a self-signed development server).
    pub ca_file: Option<String>,
    /// Accept any certificate and host name. For development servers only: the connection is
    /// encrypted but not authenticated.
    #[serde(default)]
    pub insecure: bool,
}

/// Settings of the `twilio` adapter.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwilioSpec {
    /// `customParameters` of the `start` message (values may use `{{ env.NAME }}`).
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

/// Settings of the `openai-realtime` adapter.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSpec {
    /// Turn detection mode sent in `session.update`.
    #[serde(default)]
    pub turn_detection: TurnDetection,
    /// Extra fields merged into the `session` object of `session.update` (instructions, voice,
    /// model, ...).
    #[serde(default)]
    pub session: Option<serde_json::Value>,
}

/// Behaviour of the built-in reference agent. Every latency is a jitter expression.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// End of speech → transcript.
    pub asr_latency: Option<Jitter>,
    /// Transcript → first LLM token.
    pub llm_latency: Option<Jitter>,
    /// First token → first audio byte.
    pub tts_latency: Option<Jitter>,
    /// Length of each reply.
    pub reply_duration: Option<Jitter>,
    /// Digital silence streamed before the reply's speech.
    pub leading_silence: Option<Dur>,
    /// How reply audio is sent: `realtime` (default), `burst` or `ahead(500ms)`.
    pub reply_pacing: Option<super::ReplyPacing>,
    /// Pause between the sentences (1.5 s of speech each) of a reply: a gap in sending at
    /// `realtime` pacing, digital silence inside the audio at `burst` and `ahead`.
    pub sentence_pause: Option<Dur>,
    /// User speech during a reply → reply audio stops.
    pub barge_in_delay: Option<Jitter>,
    /// End of a false alarm → reply resumes.
    pub resume_delay: Option<Jitter>,
    /// Speech shorter than this during a reply is a false alarm.
    pub min_speech: Option<Dur>,
    /// Energy VAD threshold (dBFS) per frame.
    pub vad_threshold_dbfs: Option<f64>,
    /// Silence after speech before the VAD declares end of speech.
    pub vad_hangover: Option<Dur>,
    /// Queries whose text contains one of these words trigger a tool call.
    pub tool_keywords: Option<Vec<String>>,
    /// Fraction of turns (0..1) that trigger a tool call regardless of text.
    pub tool_fraction: Option<f64>,
    /// Latency of a tool call.
    pub tool_latency: Option<Jitter>,
    /// (`openai-realtime`) wait for the caller's `function_call_output` and `response.create`
    /// after a tool call, as the real API does (default true; see `on_tool_call`). `false`:
    /// answer `tool_latency` after the call without it.
    pub wait_for_tool_result: Option<bool>,
    /// Send a `metrics` message with component timings each turn.
    pub send_metrics: Option<bool>,
    /// (`http_chunks`) processing time of each chunk before the answer.
    pub chunk_latency: Option<Jitter>,
    /// Fault injection (probabilities per turn).
    #[serde(default)]
    pub faults: FaultSpec,
    /// Seed of the agent's RNG (default: the load seed).
    pub seed: Option<u64>,
}

/// Per-turn fault probabilities of the built-in agent, for testing failure handling.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Probability of dropping the connection mid-reply.
    pub drop: Option<f64>,
    /// Probability of stalling the reply audio mid-stream.
    pub stall: Option<f64>,
    /// How long a stall lasts.
    pub stall_for: Option<Dur>,
    /// Probability of sending a malformed (non-JSON) text frame.
    pub malformed: Option<f64>,
    /// (`http_chunks`) probability of answering a chunk with HTTP 500.
    pub http_error: Option<f64>,
    /// (`http_chunks`) probability of answering a chunk with a body that is not JSON.
    pub non_json: Option<f64>,
}
