//! Compile a validated plan into what the engine executes: durations as `Duration`, audio decoded
//! and resampled once and shared, every step tagged with its position in the plan.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use serde_json::Value;

use super::diag::{Diagnostic, PlanError, Seg};
use super::model::{AgentSpec, AudioSpec, Pacing, ReportSpec, Step};
use super::model::{ChunkFormat, HttpBody, HttpSpec, ProtocolKind};
use super::threshold_expr::ThresholdExpr;
use super::{LoadedPlan, recorded_metrics};
use crate::audio::{self, Clip};
use crate::distribution::{Dist, format_duration};
use crate::plan_path;
use crate::protocol::Control;

/// Default `await` timeout.
pub const DEFAULT_AWAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default audio frame.
pub const DEFAULT_FRAME: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct CompiledPlan {
    pub name: String,
    pub description: Option<String>,
    pub source: PathBuf,
    pub target: TargetSpec,
    pub load: LoadSpec,
    pub scenarios: Vec<ScenarioSpec>,
    pub thresholds: Vec<ThresholdSpec>,
    pub report: ReportSpec,
    /// Every metric the plan records, in plan order.
    pub metrics: Vec<String>,
    /// Where received audio is saved (set by the caller when `report.record_audio` asks).
    pub audio_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetUrl {
    Builtin,
    Url(String),
}

impl std::fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetUrl::Builtin => f.write_str("builtin"),
            TargetUrl::Url(u) => f.write_str(u),
        }
    }
}

impl TargetUrl {
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "builtin" => TargetUrl::Builtin,
            other => TargetUrl::Url(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub url: TargetUrl,
    pub sample_rate: u32,
    pub speech_threshold_dbfs: f64,
    pub jitter_buffer: Duration,
    pub connect_timeout: Duration,
    pub agent: AgentSpec,
    /// Protocol adapter and connection settings.
    pub wire: super::target::WireSpec,
    /// Set when `protocol: http_chunks`.
    pub http: Option<HttpTarget>,
}

/// `protocol: http_chunks`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    pub chunk: Duration,
    pub body: HttpBody,
    pub format: ChunkFormat,
    /// Multipart field, file name and part content type.
    pub field: String,
    pub file_name: String,
    pub part_content_type: String,
    /// `POST` or `PUT`.
    pub method: String,
    pub response_timeout: Duration,
    /// (metric, JSON pointer), in metric-name order.
    pub capture: Vec<(String, String)>,
}

impl HttpTarget {
    fn from_spec(spec: &HttpSpec, sample_rate: u32) -> Self {
        let mime = match spec.format {
            ChunkFormat::Wav => "audio/wav".to_string(),
            ChunkFormat::Pcm16 => format!("audio/L16;rate={sample_rate};channels=1"),
        };
        let ext = match spec.format {
            ChunkFormat::Wav => "wav",
            ChunkFormat::Pcm16 => "pcm",
        };
        let mp = &spec.multipart;
        HttpTarget {
            chunk: spec.chunk.map_or(Duration::from_secs(10), |d| d.0),
            body: spec.body,
            format: spec.format,
            field: mp.field.clone().unwrap_or_else(|| "file".into()),
            file_name: mp
                .file_name
                .clone()
                .unwrap_or_else(|| format!("chunk.{ext}")),
            part_content_type: mp.content_type.clone().unwrap_or(mime),
            method: spec
                .method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase(),
            response_timeout: spec
                .response_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            capture: spec
                .capture
                .iter()
                .map(|(m, p)| (m.clone(), p.clone()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Users of this run (the first count of a sweep).
    pub users: u32,
    /// All user counts when the plan sweeps (`users: [5, 8, 10]`); one entry otherwise. A sweep
    /// runs the plan once per count, with `users` set to that count.
    pub sweep: Vec<u32>,
    /// Iterations per user (None: until `duration`).
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
    pub ramp_up: Duration,
    pub think_time: Option<Dist>,
    pub seed: u64,
    /// Open model (`arrival_rate`): the arrival schedule; `users` is then its `max_users`.
    pub arrivals: Option<super::load_shape::ArrivalSpec>,
    /// Closed model with ramping `stages`: the target user count's pieces; `users` is then
    /// the peak.
    pub stages: Option<Vec<super::load_shape::Segment>>,
    /// (`--shard i/n`, set by the caller) run only this shard of the users.
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    pub name: String,
    pub weight: f64,
    pub timeout: Option<Duration>,
    pub steps: Vec<StepSpec>,
}

/// A step with where it came from.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// 0-based index in its scenario.
    pub index: usize,
    /// 1-based line in the plan file (0 if unknown).
    pub line: usize,
    pub action: Action,
}

impl StepSpec {
    /// "step 3 (line 17)" for failure messages.
    pub fn position(&self) -> String {
        if self.line > 0 {
            format!("step {} (line {})", self.index + 1, self.line)
        } else {
            format!("step {}", self.index + 1)
        }
    }
}

/// Audio ready to stream.
#[derive(Debug, Clone)]
pub struct AudioOut {
    pub clip: Arc<Clip>,
    pub frame: Duration,
    pub pacing: Pacing,
    pub label: String,
    /// What is said, from the `.txt` beside a WAV (sent with the next `speech_end`).
    pub text: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Action {
    SendAudio(AudioOut),
    Send(Control),
    Await {
        event: String,
        record: Option<String>,
        from: Option<String>,
        timeout: Duration,
        capture: Vec<Capture>,
    },
    Wait(Dist),
    Interrupt {
        after: Dist,
        audio: Option<AudioOut>,
        explicit: bool,
        speech_end: bool,
    },
    /// `expect` (fatal) or `check` (counted).
    Expect {
        what: Expectation,
        record: Option<String>,
        from: Option<String>,
        within: Duration,
        capture: Vec<Capture>,
        /// None for `expect`; the name the check is counted under for `check`.
        check: Option<String>,
    },
    Mark(String),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::SendAudio(_) => "send_audio",
            Action::Send(_) => "send",
            Action::Await { .. } => "await",
            Action::Wait(_) => "wait",
            Action::Interrupt { .. } => "interrupt",
            Action::Expect { check: None, .. } => "expect",
            Action::Expect { check: Some(_), .. } => "check",
            Action::Mark(_) => "mark",
        }
    }
}

/// What an `expect`/`check` asserts.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    AudioStops,
    AudioResumes,
    NoAudio,
    Event {
        name: String,
        conditions: Vec<Condition>,
    },
}

/// A numeric JSON field of an event recorded as a metric (milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub path: Vec<String>,
    pub metric: String,
}

/// A condition on an event's JSON field.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub path: Vec<String>,
    pub op: CondOp,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondOp {
    Equals,
    Contains,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Condition {
    pub fn describe(&self) -> String {
        let op = match self.op {
            CondOp::Equals => "==",
            CondOp::Contains => "contains",
            CondOp::Gt => ">",
            CondOp::Gte => ">=",
            CondOp::Lt => "<",
            CondOp::Lte => "<=",
        };
        format!("{} {op} {}", self.path.join("."), self.value)
    }

    /// Whether `event` satisfies the condition.
    pub fn holds(&self, event: &Value) -> bool {
        let mut v = event;
        for key in &self.path {
            match v.get(key) {
                Some(next) => v = next,
                None => return false,
            }
        }
        let num = |x: &Value| x.as_f64();
        match self.op {
            CondOp::Equals => v == &self.value,
            CondOp::Contains => match (v, &self.value) {
                (Value::String(h), Value::String(n)) => {
                    h.to_lowercase().contains(&n.to_lowercase())
                }
                (Value::Array(items), needle) => items.contains(needle),
                _ => false,
            },
            CondOp::Gt => num(v).zip(num(&self.value)).is_some_and(|(a, b)| a > b),
            CondOp::Gte => num(v).zip(num(&self.value)).is_some_and(|(a, b)| a >= b),
            CondOp::Lt => num(v).zip(num(&self.value)).is_some_and(|(a, b)| a < b),
            CondOp::Lte => num(v).zip(num(&self.value)).is_some_and(|(a, b)| a <= b),
        }
    }
}

fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

fn conditions(spec: &BTreeMap<String, Value>) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for (field, v) in spec {
        let path = split_path(field);
        match v {
            Value::Object(m) => {
                for (op, value) in m {
                    let op = match op.as_str() {
                        "equals" => CondOp::Equals,
                        "contains" => CondOp::Contains,
                        "gt" => CondOp::Gt,
                        "gte" => CondOp::Gte,
                        "lt" => CondOp::Lt,
                        "lte" => CondOp::Lte,
                        other => {
                            return Err(format!(
                                "unknown condition `{other}` on `{field}`: use equals, contains, gt, gte, lt or lte"
                            ));
                        }
                    };
                    out.push(Condition {
                        path: path.clone(),
                        op,
                        value: value.clone(),
                    });
                }
            }
            other => out.push(Condition {
                path: path.clone(),
                op: CondOp::Equals,
                value: other.clone(),
            }),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct ThresholdSpec {
    pub metric: String,
    pub expr: ThresholdExpr,
}

/// Most steps a scenario may unroll to (`repeat` multiplies).
const MAX_STEPS: usize = 100_000;

/// Most audio a plan may hold in memory (decoded files and generated audio, each once), in
/// seconds at the plan's sample rate: one hour is 345 MB at 48 kHz.
const MAX_AUDIO_SECS: u64 = 3600;

/// [`MAX_AUDIO_SECS`] as a duration.
pub(crate) const MAX_AUDIO: Duration = Duration::from_secs(MAX_AUDIO_SECS);

struct Cx<'a> {
    lp: &'a LoadedPlan,
    rate: u32,
    clips: &'a mut HashMap<PathBuf, Arc<Clip>>,
    errs: &'a mut Vec<Diagnostic>,
    /// Samples of audio held so far (against [`MAX_AUDIO_SECS`]).
    audio_samples: u64,
    /// Set once a limit was hit: compiling stops, with one error.
    gave_up: bool,
}

impl Cx<'_> {
    fn error(&mut self, path: &[Seg], key: &str, message: String) {
        let mut p = path.to_vec();
        p.push(Seg::Key(key.into()));
        self.errs.push(self.lp.diag(&p, message, None));
    }

    /// Reserve room for `d` of audio, or report (once) that the plan holds too much.
    fn budget(&mut self, d: Duration, path: &[Seg], key: &str) -> bool {
        let samples = (d.as_secs_f64() * f64::from(self.rate)).ceil() as u64;
        self.audio_samples = self.audio_samples.saturating_add(samples);
        if self.audio_samples > MAX_AUDIO_SECS * u64::from(self.rate) {
            self.error(
                path,
                key,
                format!(
                    "the plan's audio adds up to more than {} minutes (each generated clip and \
                     each file counts once; `repeat` reuses its steps' audio)",
                    MAX_AUDIO_SECS / 60
                ),
            );
            self.gave_up = true;
            return false;
        }
        true
    }

    fn audio(&mut self, spec: &AudioSpec, path: &[Seg], key: &str) -> Option<AudioOut> {
        let t = spec.table();
        let rate = self.rate;
        let generated = [t.silence, t.tone, t.noise, t.trailing_silence];
        let generated: Duration = generated.iter().flatten().map(|d| d.0).sum();
        if !self.budget(generated, path, key) {
            return None;
        }
        let level = t.level.unwrap_or(-20.0);
        let mut text = None;
        let (clip, label) = if let Some(file) = &t.file {
            let resolved = self.lp.resolve(file);
            let clip = match self.clips.get(&resolved) {
                Some(c) => (**c).clone(),
                None => match audio::load_wav(&resolved, rate) {
                    Ok(c) => {
                        if !self.budget(c.duration(), path, key) {
                            return None;
                        }
                        self.clips.insert(resolved.clone(), Arc::new(c.clone()));
                        c
                    }
                    Err(e) => {
                        self.error(path, key, e.to_string());
                        return None;
                    }
                },
            };
            text = std::fs::read_to_string(resolved.with_extension("txt"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty());
            (clip, file.clone())
        } else if let Some(d) = t.silence {
            (
                audio::silence(d.0, rate),
                format!("silence {}", format_duration(d.0)),
            )
        } else if let Some(d) = t.tone {
            let freq = t.freq.unwrap_or(440.0);
            (
                audio::tone(d.0, freq, level, rate),
                format!("tone {} {freq}Hz {level}dBFS", format_duration(d.0)),
            )
        } else if let Some(d) = t.noise {
            let seed = self.lp.plan.load.seed;
            (
                audio::noise(d.0, level, rate, seed),
                format!("noise {} {level}dBFS", format_duration(d.0)),
            )
        } else {
            return None; // validated: exactly one source
        };
        let clip = match t.trailing_silence {
            Some(d) => clip.with_trailing_silence(d.0),
            None => clip,
        };
        Some(AudioOut {
            clip: Arc::new(clip),
            frame: t.frame.map_or(DEFAULT_FRAME, |f| f.0),
            pacing: t.pacing.unwrap_or_default(),
            label,
            text,
        })
    }

    fn steps(&mut self, scenario: &str, steps: &[Step], prefix: &[Seg], out: &mut Vec<StepSpec>) {
        for (i, step) in steps.iter().enumerate() {
            let mut path = prefix.to_vec();
            path.push(Seg::Key("steps".into()));
            path.push(Seg::Index(i));
            if self.gave_up {
                return;
            }
            if let (Some(n), Some(body)) = (step.repeat, &step.steps) {
                // Compile the body once (audio generated once, shared) and unroll copies.
                let mut once = Vec::new();
                self.steps(scenario, body, &path, &mut once);
                let total = (n as usize).saturating_mul(once.len());
                if !self.gave_up && out.len().saturating_add(total) > MAX_STEPS {
                    self.error(
                        &path,
                        "repeat",
                        format!("scenario `{scenario}` unrolls to more than {MAX_STEPS} steps"),
                    );
                    self.gave_up = true;
                }
                if self.gave_up {
                    return;
                }
                for _ in 0..n {
                    out.extend(once.iter().cloned());
                }
                continue;
            }
            let line = self.lp.tree.as_ref().map_or(0, |t| t.find(&path).0);
            let Some(action) = self.action(scenario, step, &path, i, line) else {
                continue;
            };
            out.push(StepSpec {
                index: i,
                line,
                action,
            });
        }
    }

    fn action(
        &mut self,
        scenario: &str,
        step: &Step,
        path: &[Seg],
        i: usize,
        line: usize,
    ) -> Option<Action> {
        let capture: Vec<Capture> = step
            .capture
            .iter()
            .flatten()
            .map(|(field, metric)| Capture {
                path: split_path(field),
                metric: metric.clone(),
            })
            .collect();
        if let Some(spec) = &step.send_audio {
            return self.audio(spec, path, "send_audio").map(Action::SendAudio);
        }
        if let Some(name) = &step.send {
            return Control::from_name(name).map(Action::Send); // validated
        }
        if let Some(event) = &step.await_ {
            return Some(Action::Await {
                event: event.clone(),
                record: step.record.clone(),
                from: step.from.clone(),
                timeout: step.timeout.map_or(DEFAULT_AWAIT_TIMEOUT, |t| t.0),
                capture,
            });
        }
        if let Some(w) = &step.wait {
            return Some(Action::Wait(w.0.clone()));
        }
        if let Some(spec) = &step.interrupt {
            let audio = match &spec.audio {
                Some(a) => Some(self.audio(a, path, "interrupt")?),
                None => None,
            };
            return Some(Action::Interrupt {
                after: spec
                    .after
                    .as_ref()
                    .map_or(Dist::Fixed(Duration::ZERO), |j| j.0.clone()),
                audio,
                explicit: spec.explicit,
                speech_end: spec.speech_end.unwrap_or(true),
            });
        }
        if let Some(m) = &step.mark {
            return Some(Action::Mark(m.clone()));
        }
        let (target, check) = match (&step.expect, &step.check) {
            (Some(e), _) => (e, None),
            (None, Some(c)) => (
                c,
                Some(step.name.clone().unwrap_or_else(|| {
                    let at = if line > 0 {
                        format!("line {line}")
                    } else {
                        format!("step {}", i + 1)
                    };
                    format!("{scenario}: {c} ({at})")
                })),
            ),
            _ => return None, // validated: one action
        };
        let what = match target.as_str() {
            "audio_stops" => Expectation::AudioStops,
            "audio_resumes" => Expectation::AudioResumes,
            "no_audio" => Expectation::NoAudio,
            name => {
                let conditions = match step.where_.as_ref().map(conditions).transpose() {
                    Ok(c) => c.unwrap_or_default(),
                    Err(e) => {
                        self.error(path, "where", e);
                        return None;
                    }
                };
                Expectation::Event {
                    name: name.to_string(),
                    conditions,
                }
            }
        };
        let default_within = if matches!(what, Expectation::Event { .. }) {
            DEFAULT_AWAIT_TIMEOUT
        } else {
            Duration::from_secs(1)
        };
        Some(Action::Expect {
            what,
            record: step.record.clone(),
            from: step.from.clone(),
            within: step.within.map_or(default_within, |w| w.0),
            capture,
            check,
        })
    }
}

/// Compile a validated plan. Audio files are decoded (and resampled) once each.
pub fn compile(lp: &LoadedPlan) -> Result<CompiledPlan, PlanError> {
    let plan = &lp.plan;
    let rate = plan.target.rate();
    let mut clips: HashMap<PathBuf, Arc<Clip>> = HashMap::new();
    let mut errs: Vec<Diagnostic> = Vec::new();
    let mut scenarios = Vec::new();
    let wire = super::target::compile_wire(lp, &mut errs);

    let mut cx = Cx {
        lp,
        rate,
        clips: &mut clips,
        errs: &mut errs,
        audio_samples: 0,
        gave_up: false,
    };
    for (si, sc) in plan.scenarios.iter().enumerate() {
        let mut steps = Vec::new();
        cx.steps(
            &sc.name,
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut steps,
        );
        scenarios.push(ScenarioSpec {
            name: sc.name.clone(),
            weight: sc.weight,
            timeout: sc.timeout.map(|t| t.0),
            steps,
        });
    }
    if !errs.is_empty() {
        return Err(PlanError(errs));
    }

    let load = &plan.load;
    let arrivals = super::shape::arrivals(load);
    let stages = super::shape::user_stages(load);
    let shaped_duration = arrivals
        .as_ref()
        .map(|a| a.duration())
        .or(stages.as_deref().map(super::load_shape::stages_duration));
    let duration = shaped_duration.or(load.duration.map(|d| d.0));
    let users_list = load
        .users
        .clone()
        .unwrap_or_else(super::model::default_users);
    let users = match (&arrivals, &stages) {
        (Some(a), _) => a.max_users,
        (None, Some(st)) => st.iter().map(|s| s.to.round() as u32).max().unwrap_or(1),
        (None, None) => users_list.0.first().copied().unwrap_or(1),
    };
    let iterations = match (load.iterations, duration) {
        (Some(n), _) => Some(u64::from(n)),
        (None, Some(_)) => None,
        (None, None) => Some(1),
    };
    Ok(CompiledPlan {
        name: plan.name.clone(),
        description: plan.description.clone(),
        source: lp.path.clone(),
        target: TargetSpec {
            url: TargetUrl::parse(&wire.url),
            sample_rate: rate,
            speech_threshold_dbfs: plan.target.speech_threshold_dbfs,
            jitter_buffer: plan.target.jitter_buffer.0,
            connect_timeout: plan.target.connect_timeout.0,
            agent: plan.target.agent.clone(),
            wire,
            http: (plan.target.protocol == ProtocolKind::HttpChunks)
                .then(|| HttpTarget::from_spec(&plan.target.http, rate)),
        },
        load: LoadSpec {
            users,
            sweep: if arrivals.is_some() || stages.is_some() {
                vec![users]
            } else {
                users_list.0.clone()
            },
            iterations,
            duration,
            ramp_up: load.ramp_up.map_or(Duration::ZERO, |d| d.0),
            think_time: load.think_time.as_ref().map(|j| j.0.clone()),
            seed: load.seed,
            arrivals,
            stages,
            shard: None,
        },
        scenarios,
        thresholds: plan
            .thresholds
            .iter()
            .flat_map(|(metric, exprs)| {
                exprs.0.iter().map(|e| ThresholdSpec {
                    metric: metric.clone(),
                    expr: e.clone(),
                })
            })
            .collect(),
        report: plan.report.clone(),
        metrics: recorded_metrics(plan),
        audio_dir: None,
    })
}
