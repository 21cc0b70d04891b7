//! The `custom` adapter: a wire protocol declared in the plan.
//!
//! Outgoing messages are minijinja templates (audio as a binary frame, or base64 inside a text
//! template as `{{ audio }}`); inbound JSON text messages are classified by rules of JSON-pointer
//! matchers into reply audio, planrun events, server errors or nothing, with numeric fields
//! captured into metrics. Built-in presets (`raw`, `twilio`) are such mappings too; a plan may
//! start from a preset and override parts of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, context};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    WireEvent, b64, base64_field, excerpt, mulaw_bytes, mulaw_samples, parse_json, pcm16_bytes,
    sid, unexpected_binary,
};
use super::{Control, OneOrMany, ProtocolError, decode_pcm16};

/// A protocol mapping.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomSpec {
    /// Start from a built-in mapping and override the parts given here (inbound rules given
    /// here are tried before the preset's).
    pub preset: Option<Preset>,
    /// Audio sample rate on the wire (default 16000).
    pub sample_rate: Option<u32>,
    /// Audio encoding on the wire (default `pcm16`, little-endian).
    pub encoding: Option<Encoding>,
    /// Outgoing audio frame: `binary` (the encoded frame as a binary message) or a text
    /// template in which `{{ audio }}` is the base64 of the encoded frame.
    pub audio: Option<String>,
    /// Templates sent right after connecting, in order.
    pub open: Option<Vec<String>>,
    /// Templates sent for each control action; an action without an entry sends nothing.
    pub controls: Option<Controls>,
    /// Templates sent before closing.
    pub close: Option<Vec<String>>,
    /// What an inbound binary frame is: reply `audio` in the wire encoding (default) or a
    /// protocol `error`.
    pub binary: Option<BinaryIn>,
    /// Rules for inbound JSON text messages; the first rule whose `when` matches applies.
    pub inbound: Option<Vec<InboundRule>>,
    /// A text message no rule matches: a protocol `error` (default), or `ignore`d.
    pub unmatched: Option<Unmatched>,
    /// The built-in agent's endpoint this mapping speaks to when `url: builtin` (`/`,
    /// `/twilio`, `/openai`; default: the preset's, or `/`).
    pub builtin_path: Option<String>,
    /// Values available to templates as `vars.NAME` (they may use `{{ env.NAME }}`).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Raw,
    Twilio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Pcm16,
    Mulaw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BinaryIn {
    Audio,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    Error,
    Ignore,
}

/// Templates per control action.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Controls {
    pub speech_start: Option<OneOrMany<String>>,
    /// `{{ text }}` is what the caller said (the clip's `.txt`), empty when unknown.
    pub speech_end: Option<OneOrMany<String>>,
    pub interrupt: Option<OneOrMany<String>>,
}

/// How one kind of inbound message is understood.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRule {
    /// JSON pointer → the value it must equal, e.g. `{"/event": "media"}`. All must hold.
    pub when: BTreeMap<String, Value>,
    /// The message is reply audio: the JSON pointer of its base64 payload.
    pub audio: Option<String>,
    /// The message is this planrun event (`await:`/`expect:` it by this name).
    pub event: Option<String>,
    /// The message is a server error: the JSON pointer of its text.
    pub error: Option<String>,
    /// The message means nothing to planrun.
    #[serde(default)]
    pub ignore: bool,
    /// For `event`: the JSON pointer of a short text shown on the timeline.
    pub detail: Option<String>,
    /// For `event`: never "unexpected" in a strict `expect` (progress notes).
    #[serde(default)]
    pub informational: bool,
    /// With `event` or `ignore`: the message tells the caller to drop the reply audio it has
    /// not played yet (a barge-in flush, like Twilio's `clear`): the playout queue empties.
    #[serde(default)]
    pub flush: bool,
    /// Numeric fields recorded as metrics (milliseconds) on every such message:
    /// metric name → JSON pointer.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

/// What is wrong with a `custom` mapping (each message names the part).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomSpecError {
    #[error("built-in preset {preset:?} does not parse: {detail}")]
    Preset { preset: Preset, detail: String },
    #[error("template `{name}`: {detail}")]
    Template { name: String, detail: String },
    #[error("inbound rule {rule}: give exactly one of `audio`, `event`, `error`, `ignore`")]
    RuleActions { rule: usize },
    #[error("inbound rule {rule}: `{pointer}` is not a JSON pointer (write `/{pointer}`)")]
    RulePointer { rule: usize, pointer: String },
    #[error("inbound rule {rule}: `when` is empty (it would match every message)")]
    RuleMatchesAll { rule: usize },
    #[error("inbound rule {rule}: `flush` goes with `event` or `ignore`, not `audio` or `error`")]
    RuleFlush { rule: usize },
}

const RAW_PRESET: &str = include_str!("presets/raw.yaml");
const TWILIO_PRESET: &str = include_str!("presets/twilio.yaml");

impl CustomSpec {
    /// This mapping on top of its preset, with defaults filled in.
    pub fn resolved(&self) -> Result<CustomSpec, CustomSpecError> {
        let base = match self.preset {
            None => CustomSpec::default(),
            Some(p) => {
                let text = match p {
                    Preset::Raw => RAW_PRESET,
                    Preset::Twilio => TWILIO_PRESET,
                };
                serde_saphyr::from_str::<CustomSpec>(text).map_err(|e| CustomSpecError::Preset {
                    preset: p,
                    detail: e.to_string(),
                })?
            }
        };
        let mut inbound = self.inbound.clone().unwrap_or_default();
        inbound.extend(base.inbound.unwrap_or_default());
        let mut vars = base.vars;
        vars.extend(self.vars.clone());
        Ok(CustomSpec {
            preset: None,
            sample_rate: self.sample_rate.or(base.sample_rate).or(Some(16_000)),
            encoding: self.encoding.or(base.encoding).or(Some(Encoding::Pcm16)),
            audio: self.audio.clone().or(base.audio).or(Some("binary".into())),
            open: self.open.clone().or(base.open),
            controls: self.controls.clone().or(base.controls),
            close: self.close.clone().or(base.close),
            binary: self.binary.or(base.binary).or(Some(BinaryIn::Audio)),
            inbound: Some(inbound),
            unmatched: self.unmatched.or(base.unmatched).or(Some(Unmatched::Error)),
            builtin_path: self.builtin_path.clone().or(base.builtin_path),
            vars,
        })
    }

    /// Every metric the inbound rules capture.
    pub fn captured_metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.inbound.iter().flatten() {
            out.extend(r.capture.keys().cloned());
        }
        out
    }
}

/// A compiled mapping, shared by every call of a run.
#[derive(Debug)]
pub struct CustomProtocol {
    env: Environment<'static>,
    spec: CustomSpec,
    rate: u32,
    encoding: Encoding,
    audio_binary: bool,
    rules: Vec<InboundRule>,
}

impl CustomProtocol {
    /// Resolve the preset and compile every template; an error names what is wrong.
    pub fn compile(spec: &CustomSpec) -> Result<Arc<Self>, Vec<CustomSpecError>> {
        let spec = spec.resolved().map_err(|e| vec![e])?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut errs = Vec::new();
        let mut add = |name: String, source: &str| {
            if let Err(e) = env.add_template_owned(name.clone(), source.to_string()) {
                errs.push(CustomSpecError::Template {
                    name: name.clone(),
                    detail: e.to_string(),
                });
            }
        };
        let audio = spec.audio.clone().unwrap_or_else(|| "binary".into());
        let audio_binary = audio.trim() == "binary";
        if !audio_binary {
            add("audio".into(), &audio);
        }
        for (i, t) in spec.open.iter().flatten().enumerate() {
            add(format!("open[{i}]"), t);
        }
        for (i, t) in spec.close.iter().flatten().enumerate() {
            add(format!("close[{i}]"), t);
        }
        if let Some(c) = &spec.controls {
            for (name, list) in [
                ("speech_start", &c.speech_start),
                ("speech_end", &c.speech_end),
                ("interrupt", &c.interrupt),
            ] {
                for (i, t) in list.iter().flat_map(|l| l.0.iter()).enumerate() {
                    add(format!("{name}[{i}]"), t);
                }
            }
        }
        let rules = spec.inbound.clone().unwrap_or_default();
        for (i, r) in rules.iter().enumerate() {
            let actions = [
                r.audio.is_some(),
                r.event.is_some(),
                r.error.is_some(),
                r.ignore,
            ];
            if actions.iter().filter(|a| **a).count() != 1 {
                errs.push(CustomSpecError::RuleActions { rule: i });
            }
            let pointers = r
                .when
                .keys()
                .chain(r.audio.iter())
                .chain(r.error.iter())
                .chain(r.detail.iter())
                .chain(r.capture.values());
            for p in pointers {
                if !p.is_empty() && !p.starts_with('/') {
                    errs.push(CustomSpecError::RulePointer {
                        rule: i,
                        pointer: p.clone(),
                    });
                }
            }
            if r.when.is_empty() {
                errs.push(CustomSpecError::RuleMatchesAll { rule: i });
            }
            if r.flush && (r.audio.is_some() || r.error.is_some()) {
                errs.push(CustomSpecError::RuleFlush { rule: i });
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Arc::new(CustomProtocol {
            env,
            rate: spec.sample_rate.unwrap_or(16_000),
            encoding: spec.encoding.unwrap_or(Encoding::Pcm16),
            audio_binary,
            rules,
            spec,
        }))
    }

    pub fn sample_rate(&self) -> u32 {
        self.rate
    }
}

/// Per-call state of the custom adapter.
#[derive(Debug)]
pub struct CustomCodec {
    proto: Arc<CustomProtocol>,
    seq: u64,
    frame: u64,
    samples_sent: u64,
    stream_id: String,
    call_id: String,
}

impl CustomCodec {
    pub fn new(proto: Arc<CustomProtocol>, rng: &mut impl rand::Rng) -> Self {
        CustomCodec {
            proto,
            seq: 0,
            frame: 0,
            samples_sent: 0,
            stream_id: sid("MZ", rng),
            call_id: sid("CA", rng),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.proto.rate
    }

    fn render(&mut self, name: &str, audio: &str, text: &str) -> Result<Message, ProtocolError> {
        self.seq += 1;
        let tmpl = self
            .proto
            .env
            .get_template(name)
            .map_err(|e| ProtocolError(format!("template `{name}`: {e}")))?;
        let out = tmpl
            .render(context! {
                audio => audio,
                text => text,
                seq => self.seq,
                frame => self.frame,
                timestamp_ms => self.samples_sent * 1000 / u64::from(self.proto.rate.max(1)),
                stream_id => &self.stream_id,
                call_id => &self.call_id,
                sample_rate => self.proto.rate,
                vars => &self.proto.spec.vars,
            })
            .map_err(|e| ProtocolError(format!("template `{name}` failed: {e}")))?;
        Ok(Message::text(out))
    }

    fn render_list(
        &mut self,
        prefix: &str,
        n: usize,
        text: &str,
    ) -> Result<Vec<Message>, ProtocolError> {
        (0..n)
            .map(|i| self.render(&format!("{prefix}[{i}]"), "", text))
            .collect()
    }

    pub fn open(&mut self) -> Result<Vec<Message>, ProtocolError> {
        let n = self.proto.spec.open.as_ref().map_or(0, Vec::len);
        self.render_list("open", n, "")
    }

    pub fn close(&mut self) -> Result<Vec<Message>, ProtocolError> {
        let n = self.proto.spec.close.as_ref().map_or(0, Vec::len);
        self.render_list("close", n, "")
    }

    pub fn audio(&mut self, samples: &[i16]) -> Result<Message, ProtocolError> {
        self.frame += 1;
        let bytes = match self.proto.encoding {
            Encoding::Pcm16 => pcm16_bytes(samples),
            Encoding::Mulaw => mulaw_bytes(samples),
        };
        let msg = if self.proto.audio_binary {
            self.seq += 1;
            Message::binary(bytes)
        } else {
            self.render("audio", &b64(&bytes), "")?
        };
        self.samples_sent += samples.len() as u64;
        Ok(msg)
    }

    pub fn control(
        &mut self,
        control: Control,
        text: Option<&str>,
    ) -> Result<Vec<Message>, ProtocolError> {
        let Some(c) = &self.proto.spec.controls else {
            return Ok(Vec::new());
        };
        let list = match control {
            Control::SpeechStart => &c.speech_start,
            Control::SpeechEnd => &c.speech_end,
            Control::Interrupt => &c.interrupt,
        };
        let n = list.as_ref().map_or(0, |l| l.0.len());
        self.render_list(control.name(), n, text.unwrap_or_default())
    }

    fn samples(&self, bytes: &[u8]) -> Vec<i16> {
        match self.proto.encoding {
            Encoding::Pcm16 => decode_pcm16(bytes),
            Encoding::Mulaw => mulaw_samples(bytes),
        }
    }

    pub fn decode(&mut self, msg: &Message) -> Result<Vec<WireEvent>, ProtocolError> {
        let text = match msg {
            Message::Binary(b) => {
                return match self.proto.spec.binary {
                    Some(BinaryIn::Error) => Err(unexpected_binary(b)),
                    _ => Ok(vec![WireEvent::Audio(self.samples(b))]),
                };
            }
            Message::Text(t) => t.as_str(),
            _ => return Ok(Vec::new()),
        };
        let json = parse_json(text)?;
        let Some(rule) = self.proto.rules.iter().find(|r| {
            r.when
                .iter()
                .all(|(p, want)| json.pointer(p).is_some_and(|got| got == want))
        }) else {
            return match self.proto.spec.unmatched {
                Some(Unmatched::Ignore) => Ok(Vec::new()),
                _ => Err(ProtocolError(format!(
                    "no inbound rule matches the message: {}",
                    excerpt(text)
                ))),
            };
        };
        let mut out = Vec::new();
        for (metric, p) in &rule.capture {
            // Any number: the engine refuses one that is no duration (`bad_value`).
            if let Some(v) = json.pointer(p).and_then(Value::as_f64) {
                out.push(WireEvent::Capture {
                    metric: metric.clone(),
                    ms: v,
                });
            }
        }
        if rule.flush {
            out.push(WireEvent::Flush);
        }
        if let Some(p) = &rule.audio {
            let bytes = base64_field(&json, p, text)?;
            out.push(WireEvent::Audio(self.samples(&bytes)));
        } else if let Some(p) = &rule.error {
            let message = json
                .pointer(p)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_else(|| excerpt(text));
            out.push(WireEvent::Error(message));
        } else if let Some(name) = &rule.event {
            let detail = rule
                .detail
                .as_ref()
                .and_then(|p| json.pointer(p))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default();
            out.push(WireEvent::Event {
                name: name.clone(),
                json,
                detail,
                informational: rule.informational,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn codec(yaml: &str) -> CustomCodec {
        let spec: CustomSpec = serde_saphyr::from_str(yaml).unwrap();
        let proto = CustomProtocol::compile(&spec).unwrap();
        CustomCodec::new(proto, &mut rand::rngs::StdRng::seed_from_u64(3))
    }

    #[test]
    fn presets_parse_and_compile() {
        for p in ["raw", "twilio"] {
            let spec: CustomSpec = serde_saphyr::from_str(&format!("preset: {p}")).unwrap();
            CustomProtocol::compile(&spec).unwrap();
        }
    }

    #[test]
    fn json_audio_with_base64_and_rules() {
        let mut c = codec(
            r#"
encoding: mulaw
sample_rate: 8000
audio: '{"kind":"audio","seq":{{ seq }},"data":"{{ audio }}"}'
open: ['{"kind":"hello","call":"{{ call_id }}","key":"{{ vars.key }}"}']
controls:
  speech_end: '{"kind":"done","said":{{ text|tojson }}}'
vars: {key: abc}
inbound:
  - when: {/kind: audio}
    audio: /data
  - when: {/kind: score}
    event: scored
    capture: {server_ms: /timing/ms}
  - when: {/kind: oops}
    error: /why
  - when: {/kind: cut}
    event: cut
    flush: true
"#,
        );
        let open: Value = serde_json::from_str(c.open().unwrap()[0].to_text().unwrap()).unwrap();
        assert_eq!(open["key"], "abc");
        assert!(open["call"].as_str().unwrap().starts_with("CA"));
        let m = c.audio(&[0; 160]).unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v["seq"], 2);
        assert_eq!(v["data"].as_str().unwrap().len(), 216); // 160 bytes in base64
        let end = c.control(Control::SpeechEnd, Some("say \"hi\"")).unwrap();
        let v: Value = serde_json::from_str(end[0].to_text().unwrap()).unwrap();
        assert_eq!(v["said"], "say \"hi\"");

        let audio = format!(
            r#"{{"kind":"audio","data":"{}"}}"#,
            b64(&mulaw_bytes(&[900; 80]))
        );
        let ev = c.decode(&Message::text(audio)).unwrap();
        assert!(matches!(&ev[0], WireEvent::Audio(s) if s.len() == 80));
        let ev = c
            .decode(&Message::text(r#"{"kind":"score","timing":{"ms":12.5}}"#))
            .unwrap();
        assert_eq!(
            ev[0],
            WireEvent::Capture {
                metric: "server_ms".into(),
                ms: 12.5
            }
        );
        assert!(matches!(&ev[1], WireEvent::Event { name, .. } if name == "scored"));
        let ev = c
            .decode(&Message::text(r#"{"kind":"oops","why":"no"}"#))
            .unwrap();
        assert_eq!(ev[0], WireEvent::Error("no".into()));
        let ev = c.decode(&Message::text(r#"{"kind":"cut"}"#)).unwrap();
        assert_eq!(ev[0], WireEvent::Flush);
        assert!(matches!(&ev[1], WireEvent::Event { name, .. } if name == "cut"));
        let e = c.decode(&Message::text(r#"{"kind":"other"}"#)).unwrap_err();
        assert!(
            e.0.contains("no inbound rule") && e.0.contains("other"),
            "{e}"
        );
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let spec: CustomSpec = serde_saphyr::from_str(
            r#"
audio: '{{ audio'
inbound:
  - when: {kind: x}
    event: a
    ignore: true
  - when: {/kind: y}
    audio: /data
    flush: true
"#,
        )
        .unwrap();
        let errs = CustomProtocol::compile(&spec)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(errs.contains("template `audio`"), "{errs}");
        assert!(errs.contains("exactly one"), "{errs}");
        assert!(errs.contains("`kind` is not a JSON pointer"), "{errs}");
        assert!(errs.contains("rule 1: `flush` goes with"), "{errs}");
    }

    #[test]
    fn undefined_template_variables_fail() {
        let mut c = codec("open: ['{{ nosuch }}']");
        assert!(c.open().is_err());
    }
}
