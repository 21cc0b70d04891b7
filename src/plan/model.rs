//! The plan's typed model: the single source of truth for YAML, TOML and the JSON Schema.
//!
//! Scalar forms that need parsing (durations, jitter, threshold expressions) are parsed during
//! deserialization, so a bad value is reported by the format's own parser at its exact
//! line and column.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::threshold::ThresholdExpr;
use crate::dist::{Dist, format_duration, parse_duration};

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

/// One value or a list of values (`ttfa: p95 < 1s` or `ttfa: [p95 < 1s, p99 < 2s]`).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(de::value::U64Deserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(de::value::I64Deserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let one = g.subschema_for::<T>();
        json_schema!({ "anyOf": [one, { "type": "array", "items": one }] })
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
    /// Wire protocol adapter.
    #[serde(default)]
    pub protocol: ProtocolKind,
    /// Audio sample rate in Hz, both directions (PCM16 mono).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// Give up connecting after this long (counted as a `connect_error`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Settings of the built-in agent (used when `url: builtin`).
    #[serde(default)]
    pub agent: AgentSpec,
}

fn default_sample_rate() -> u32 {
    16_000
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
}

/// The load shape.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Concurrent virtual users, or a sweep `[5, 8, 10]` that runs the plan once per count.
    #[serde(default = "default_users")]
    pub users: OneOrMany<u32>,
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
}

fn default_users() -> OneOrMany<u32> {
    OneOrMany(vec![1])
}
fn default_seed() -> u64 {
    1
}

impl Default for Load {
    fn default() -> Self {
        Load {
            users: default_users(),
            iterations: None,
            duration: None,
            ramp_up: None,
            think_time: None,
            seed: default_seed(),
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

/// One step: exactly one action key (`send_audio`, `send`, `await`, `wait`) plus modifiers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exactly_one_action)]
pub struct Step {
    /// Stream audio to the agent, paced in real time: a WAV path, or `{file: …, frame: 20ms}`.
    pub send_audio: Option<AudioSpec>,
    /// Send a control message: `speech_start`, `speech_end` or `interrupt`.
    pub send: Option<String>,
    /// Wait for an inbound event: `first_audio`, `audio`, `response_start`, `response_end`,
    /// `transcript`, `interrupted`, `resumed`, `tool_call`, `metrics`, `error`, or any other
    /// `type` the server sends.
    #[serde(rename = "await")]
    pub await_: Option<String>,
    /// Pause (while still receiving).
    pub wait: Option<Jitter>,
    /// (`await`) record the latency from the user's end of speech (or `from`) under this name.
    pub record: Option<String>,
    /// (`await`) give up after this long (default 10s).
    pub timeout: Option<Dur>,
}

/// The action keys of a step, in the order the schema lists them.
pub const STEP_ACTIONS: &[&str] = &["send_audio", "send", "await", "wait"];

impl Step {
    /// The action keys present (valid steps have exactly one).
    pub fn actions(&self) -> Vec<&'static str> {
        let present = [
            self.send_audio.is_some(),
            self.send.is_some(),
            self.await_.is_some(),
            self.wait.is_some(),
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

/// Audio to send: a WAV path or a table with options.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// WAV file, relative to the plan file.
    pub file: String,
    /// Frame size (10ms..100ms; default 20ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudioSpecTable {
    file: String,
    #[serde(default)]
    frame: Option<Dur>,
}

impl<'de> Deserialize<'de> for AudioSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AudioSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a WAV path or a table with `file`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AudioSpec, E> {
                Ok(AudioSpec {
                    file: v.to_string(),
                    frame: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AudioSpec, A::Error> {
                let t = AudioSpecTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(AudioSpec {
                    file: t.file,
                    frame: t.frame,
                })
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
}

impl Default for ReportSpec {
    fn default() -> Self {
        ReportSpec {
            formats: default_formats(),
            dir: None,
        }
    }
}

fn default_formats() -> Vec<ReportFormat> {
    vec![ReportFormat::Md, ReportFormat::Json]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// `summary.md`
    Md,
    /// `metrics.json`
    Json,
}
