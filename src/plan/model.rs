//! The plan's typed model: the single source of truth for YAML, TOML and the JSON Schema.
//!
//! Scalar forms that need parsing (durations, jitter, threshold expressions) are parsed during
//! deserialization, so a bad value is reported by the format's own parser at its exact
//! line and column.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::threshold_expr::ThresholdExpr;
use crate::distribution::{Dist, format_duration, parse_duration};
use crate::protocol::OneOrMany;
use crate::protocol::openai::TurnDetection;

// ---------------------------------------------------------------------------------------------
// Scalar wrappers

/// A duration written as text: `250ms`, `1.5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Dur).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (us, ms, s, m, h), e.g. `250ms`, `1.5s`.",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(us|µs|ms|s|m|min|h)\s*$",
            "examples": ["250ms", "1.5s"]
        })
    }
}

/// A duration that may be random: `500ms`, `300ms..800ms`, `normal(500ms, 50ms)`,
/// `exponential(200ms)`, `lognormal(400ms, 0.3)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Jitter(pub Dist);

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<Dist>().map(Jitter).map_err(de::Error::custom)
    }
}

impl Serialize for Jitter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl JsonSchema for Jitter {
    fn schema_name() -> Cow<'static, str> {
        "Jitter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A fixed or random duration: `500ms`, a uniform range `300ms..800ms`, \
                `normal(mean, sd)`, `exponential(mean)` or `lognormal(median, sigma)`. \
                Drawn from the run's seeded RNG.",
            "examples": ["500ms", "300ms..800ms", "normal(500ms, 50ms)", "exponential(200ms)", "lognormal(400ms, 0.3)"]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The plan

/// A planrun plan: who to call, how many callers, what they say, and what counts as passing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// JSON Schema reference for editors (ignored).
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// The plan's name; names the report folder.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default)]
    pub description: Option<String>,
    /// The voice agent under test.
    pub target: Target,
    /// How many virtual users, for how long.
    #[serde(default)]
    pub load: Load,
    /// Weighted scenarios; each iteration of a user picks one.
    pub scenarios: Vec<Scenario>,
    /// Pass/fail criteria: a metric name (or `success_rate`) mapped to one expression or a list.
    #[serde(default)]
    pub thresholds: BTreeMap<String, OneOrMany<ThresholdExpr>>,
    /// Report outputs.
    #[serde(default)]
    pub report: ReportSpec,
}

/// The agent under test.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `builtin` (start the embedded reference agent on a loopback port) or a `ws://`/`wss://` URL.
    pub url: String,
    /// Wire protocol adapter: `raw` (default), `twilio`, `openai-realtime` or `custom`.
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
    /// Settings of the built-in agent (used when `url: builtin`).
    #[serde(default)]
    pub agent: AgentSpec,
    /// Settings of `protocol: http_chunks` (audio POSTed in chunks over HTTP).
    #[serde(default)]
    pub http: HttpSpec,
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
            ProtocolKind::HttpChunks => 16_000,
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
}

impl ProtocolKind {
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Raw => "raw",
            ProtocolKind::Twilio => "twilio",
            ProtocolKind::OpenaiRealtime => "openai-realtime",
            ProtocolKind::Custom => "custom",
            ProtocolKind::HttpChunks => "http_chunks",
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

/// The load shape.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Concurrent virtual users, or a sweep `[5, 8, 10]` that runs the plan once per count.
    /// Default 1 (closed model; not with `arrival_rate` or `stages`).
    #[serde(default)]
    pub users: Option<OneOrMany<u32>>,
    /// Iterations (calls) per user. Ignored when `duration` is set unless both are given,
    /// in which case a user stops at whichever comes first.
    pub iterations: Option<u32>,
    /// Run for this long (users start new iterations until it elapses).
    pub duration: Option<Dur>,
    /// Users start evenly spread over this period.
    #[serde(default, alias = "ramp")]
    pub ramp_up: Option<Dur>,
    /// Pause between a user's iterations.
    pub think_time: Option<Jitter>,
    /// Seed of every random choice (scenario, jitter). Same seed, same sequence.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Open model: new callers per second or minute (`5/s`, `300/m`); each caller makes one
    /// call. Runs for `duration`, or through `arrival_stages` starting at this rate.
    #[serde(default)]
    pub arrival_rate: Option<Rate>,
    /// Open model: the rate changes linearly (`{to: 10/s, over: 30s}`) or holds (`{hold: 60s}`),
    /// stage after stage, from `arrival_rate` (or 0). The run lasts as long as the stages.
    #[serde(default)]
    pub arrival_stages: Option<Vec<RateStage>>,
    /// Open model: arrival spacing, `uniform` (default: deterministic, evenly by the rate) or
    /// `poisson` (a Poisson process drawn from `seed`).
    #[serde(default)]
    pub arrivals: Option<ArrivalPattern>,
    /// Open model: at most this many callers at once (default 1000). An arrival finding the cap
    /// reached is dropped and counted, never delayed.
    #[serde(default)]
    pub max_users: Option<u32>,
    /// Closed model with ramping stages: the target user count changes linearly
    /// (`{to: 50, over: 60s}`) or holds (`{hold: 120s}`), from 0. Users start as it rises and
    /// finish their call, then leave, as it falls. The run lasts as long as the stages.
    #[serde(default)]
    pub stages: Option<Vec<UserStage>>,
}

/// Arrivals per unit of time: `5/s`, `300/m`, `0.5/s`, `7200/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Arrivals per second.
    pub per_second: f64,
}

impl Rate {
    pub fn parse(text: &str) -> Result<f64, String> {
        let t = text.trim();
        let (num, unit) = t
            .split_once('/')
            .ok_or_else(|| format!("`{t}` is not a rate: write e.g. `5/s` or `300/m`"))?;
        let n: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a rate: `{}` is not a number", num.trim()))?;
        let per = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "`{t}`: unknown rate unit `{u}` (use `/s`, `/m` or `/h`)"
                ));
            }
        };
        if !n.is_finite() {
            return Err(format!("`{t}` is not a finite rate"));
        }
        Ok(n / per)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Rate::parse(&text)
            .map(|per_second| Rate { per_second })
            .map_err(de::Error::custom)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Arrivals per second, minute or hour: `5/s`, `300/m`, `0.5/s`.",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*/\s*(s|sec|m|min|h)\s*$",
            "examples": ["5/s", "300/m"]
        })
    }
}

/// Arrival spacing of the open model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalPattern {
    /// Deterministic, evenly spaced by the rate.
    Uniform,
    /// A Poisson process, drawn from the plan seed.
    Poisson,
}

/// One stage of `arrival_stages`: `{to: 10/s, over: 30s}` or `{hold: 60s}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateStage {
    /// The rate at the end of the stage (reached linearly).
    pub to: Option<Rate>,
    /// How long the change takes (default 0: a jump).
    pub over: Option<Dur>,
    /// Keep the current rate this long.
    pub hold: Option<Dur>,
}

/// One stage of `stages`: `{to: 50, over: 60s}` or `{hold: 120s}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStage {
    /// The user count at the end of the stage (reached linearly).
    pub to: Option<u32>,
    /// How long the change takes (default 0: a jump).
    pub over: Option<Dur>,
    /// Keep the current count this long.
    pub hold: Option<Dur>,
}

/// The closed model's user counts (`users`, default 1).
pub fn default_users() -> OneOrMany<u32> {
    OneOrMany(vec![1])
}
fn default_seed() -> u64 {
    1
}

impl Default for Load {
    fn default() -> Self {
        Load {
            users: None,
            iterations: None,
            duration: None,
            ramp_up: None,
            think_time: None,
            seed: default_seed(),
            arrival_rate: None,
            arrival_stages: None,
            arrivals: None,
            max_users: None,
            stages: None,
        }
    }
}

/// A scripted conversation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Relative weight in the scenario mix.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// The whole iteration fails with `timeout` past this.
    pub timeout: Option<Dur>,
    pub steps: Vec<Step>,
}

fn default_weight() -> f64 {
    1.0
}

/// One step: exactly one action key plus its modifiers, in the same map.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exactly_one_action)]
pub struct Step {
    /// Stream audio to the agent: a WAV path, or a table (`file`, `silence`, `tone` or `noise`,
    /// with `frame`, `pacing`, `trailing_silence`, `level`, `freq`).
    pub send_audio: Option<AudioSpec>,
    /// Send a control message: `speech_start`, `speech_end` or `interrupt`.
    pub send: Option<String>,
    /// Wait for an inbound event: `first_audio`, `first_speech`, `audio`, `response_start`,
    /// `response_end`, `transcript`, `interrupted`, `resumed`, `tool_call`, `metrics`, `error`,
    /// or any other `type` the server sends. Earlier events of other kinds are skipped.
    #[serde(rename = "await")]
    pub await_: Option<String>,
    /// Pause (while still receiving).
    pub wait: Option<Jitter>,
    /// Barge in: after `after` (measured from the bot's first audio of this turn) send
    /// `speech_start` and the barge-in `audio`, then `speech_end`.
    pub interrupt: Option<InterruptSpec>,
    /// Assert, failing the iteration when it does not hold: `audio_stops` (within `within` of
    /// the interruption), `audio_resumes` (within `within` after the user's last speech),
    /// `no_audio` (for `within`), or an event name: the next event must be that one and match
    /// `where`.
    pub expect: Option<String>,
    /// Like `expect` but non-fatal: counted as passed/failed (threshold `checks: rate > 0.99`).
    pub check: Option<String>,
    /// Remember this instant under a name, for `from:`.
    pub mark: Option<String>,
    /// Run the nested `steps` this many times.
    pub repeat: Option<u32>,

    /// (`await`, `expect`, `check`) record the latency under this metric name.
    pub record: Option<String>,
    /// (`await`, `expect`, `check`) measure from this mark or event instead of the user's end
    /// of speech (`interrupt` for the barge-in instant, a `mark:` name, or an awaited event).
    pub from: Option<String>,
    /// (`await`) give up after this long (default 10s).
    pub timeout: Option<Dur>,
    /// (`expect`, `check`) the time allowed (default 10s for events, 1s otherwise).
    pub within: Option<Dur>,
    /// (`expect`/`check` of an event) conditions on the event's JSON fields: `field: value`
    /// (equality) or `field: {contains|equals|gt|gte|lt|lte: value}`; dotted paths allowed.
    #[serde(rename = "where")]
    pub where_: Option<BTreeMap<String, serde_json::Value>>,
    /// (`await`, `expect`, `check` of a JSON event) record numeric fields as metrics:
    /// `{json_field: metric_name}`; values are taken as milliseconds.
    pub capture: Option<BTreeMap<String, String>>,
    /// (`check`) the name this check is counted under (default: scenario and step).
    pub name: Option<String>,
    /// (`repeat`) the steps to repeat.
    pub steps: Option<Vec<Step>>,
}

/// The action keys of a step, in the order the schema lists them.
pub const STEP_ACTIONS: &[&str] = &[
    "send_audio",
    "send",
    "await",
    "wait",
    "interrupt",
    "expect",
    "check",
    "mark",
    "repeat",
];

impl Step {
    /// The action keys present (valid steps have exactly one).
    pub fn actions(&self) -> Vec<&'static str> {
        let present = [
            self.send_audio.is_some(),
            self.send.is_some(),
            self.await_.is_some(),
            self.wait.is_some(),
            self.interrupt.is_some(),
            self.expect.is_some(),
            self.check.is_some(),
            self.mark.is_some(),
            self.repeat.is_some(),
        ];
        STEP_ACTIONS
            .iter()
            .zip(present)
            .filter_map(|(name, p)| p.then_some(*name))
            .collect()
    }
}

fn exactly_one_action(schema: &mut Schema) {
    let one_of: Vec<serde_json::Value> = STEP_ACTIONS
        .iter()
        .map(|a| serde_json::json!({ "required": [a] }))
        .collect();
    schema.insert("oneOf".into(), one_of.into());
}

/// Barge-in settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterruptSpec {
    /// Delay after the bot's first audio chunk of this turn (jitter; default 0).
    pub after: Option<Jitter>,
    /// What the user says over the bot (default: `speech_start` only, no audio).
    pub audio: Option<AudioSpec>,
    /// Send `{"type":"interrupt"}` instead of `speech_start` (default false).
    #[serde(default)]
    pub explicit: bool,
    /// Send `speech_end` after the barge-in audio (default true), so the agent answers it.
    pub speech_end: Option<bool>,
}

/// Real-time (default) or as fast as possible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// One frame per frame duration, against an absolute schedule.
    #[default]
    Realtime,
    /// All frames back to back (upload-style servers).
    Burst,
}

/// Audio to send: a WAV path, or a table with exactly one source (`file`, `silence`, `tone`,
/// `noise`) and options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudioTable {
    /// WAV file, relative to the plan file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Digital silence of this length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Dur>,
    /// A sine tone of this length (`freq`, `level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<Dur>,
    /// White noise of this length (`level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<Dur>,
    /// Tone frequency in Hz (default 440).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freq: Option<f64>,
    /// Tone/noise RMS level in dBFS (default -20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    /// Frame size (10ms..100ms; default 20ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Dur>,
    /// `realtime` (default) or `burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
    /// Silence appended after the source (the user has stopped speaking but the mic is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailing_silence: Option<Dur>,
}

impl AudioTable {
    /// The source keys present (valid tables have exactly one).
    pub fn sources(&self) -> Vec<&'static str> {
        [
            ("file", self.file.is_some()),
            ("silence", self.silence.is_some()),
            ("tone", self.tone.is_some()),
            ("noise", self.noise.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, p)| p.then_some(n))
        .collect()
    }
}

/// `send_audio: path.wav` or `send_audio: {…}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(untagged)]
pub enum AudioSpec {
    /// A WAV path, relative to the plan file.
    Path(String),
    Table(AudioTable),
}

impl AudioSpec {
    pub fn table(&self) -> AudioTable {
        match self {
            AudioSpec::Path(p) => AudioTable {
                file: Some(p.clone()),
                ..AudioTable::default()
            },
            AudioSpec::Table(t) => t.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for AudioSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AudioSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a WAV path or a table with `file`, `silence`, `tone` or `noise`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AudioSpec, E> {
                Ok(AudioSpec::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AudioSpec, A::Error> {
                AudioTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(AudioSpec::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// Report settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Output formats written to the report folder.
    #[serde(default = "default_formats")]
    pub formats: Vec<ReportFormat>,
    /// Parent folder of report folders (default `reports`).
    #[serde(default)]
    pub dir: Option<String>,
    /// Templates that replace a built-in report of the same output name (`summary.md`,
    /// `report.html`) or add a new output: output file name → template path (relative to the
    /// plan's folder). Names ending in `.html`/`.xml` are HTML-escaped automatically.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Save what each caller heard as a WAV in the report's `audio/` folder (reply audio placed
    /// at its arrival time, so pauses and stalls are audible): `none` (default), `failed` (only
    /// failed iterations) or `all`.
    #[serde(default)]
    pub record_audio: RecordAudio,
}

impl Default for ReportSpec {
    fn default() -> Self {
        ReportSpec {
            formats: default_formats(),
            dir: None,
            templates: BTreeMap::new(),
            record_audio: RecordAudio::None,
        }
    }
}

/// Which iterations' received audio is saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordAudio {
    #[default]
    None,
    Failed,
    All,
}

fn default_formats() -> Vec<ReportFormat> {
    ReportFormat::ALL.to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// `summary.md`
    Md,
    /// `metrics.json` (with the HDR histograms) and `run.json` (timeline and resource samples)
    Json,
    /// `report.html`: one self-contained page with charts
    Html,
    /// `timeline.csv`: one row per event
    Csv,
    /// `junit.xml`: one test case per threshold and per scenario
    Junit,
}

impl ReportFormat {
    /// Every format, in the order they are written.
    pub const ALL: [ReportFormat; 5] = [
        ReportFormat::Md,
        ReportFormat::Json,
        ReportFormat::Html,
        ReportFormat::Csv,
        ReportFormat::Junit,
    ];
}
