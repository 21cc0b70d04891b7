//! `scenarios`: weighted scripted conversations, their steps and the audio they send.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Dur, Jitter};

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
    /// Labels for the per-scenario breakdown and filtered thresholds (`ttfa{tag:slow}`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// (`openai-realtime`) answer the bot's tool calls (replaces the target's `on_tool_call`).
    pub on_tool_call: Option<super::OnToolCall>,
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
    /// Send one JSON message as is (any protocol). Strings in it are templates:
    /// `{{ event.FIELD }}` (the last awaited or expected event), `{{ row.… }}`, `{{ vars.… }}`.
    pub send_json: Option<serde_json::Value>,
    /// Run the nested `steps` this many times.
    pub repeat: Option<u32>,
    /// Run the steps of the named fragment (`fragments:`) here.
    #[serde(rename = "use")]
    pub use_: Option<String>,

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
    /// Labels for the breakdown: what is measured while this step runs also counts under
    /// these tags (`ttfa{tag:slow}`), besides its scenario's.
    pub tags: Option<Vec<String>>,
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
    "send_json",
    "repeat",
    "use",
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
            self.send_json.is_some(),
            self.repeat.is_some(),
            self.use_.is_some(),
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
