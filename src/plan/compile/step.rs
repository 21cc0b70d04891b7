//! The compiled scenario: steps as actions the engine interprets, expectations and their
//! conditions on event fields.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::audio::Clip;
use crate::distribution::Dist;
use crate::plan::model::Pacing;
use crate::protocol::Control;

/// A `where` operator that does not exist.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown condition `{op}` on `{field}`: use equals, contains, gt, gte, lt or lte")]
pub struct UnknownCondition {
    pub op: String,
    pub field: String,
}

#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    pub name: String,
    pub weight: f64,
    pub timeout: Option<Duration>,
    pub steps: Vec<StepSpec>,
    /// `tags:`, and the breakdown groups its samples also count under (`scenario:NAME`,
    /// `tag:T`; empty when the plan has one scenario and no tags).
    pub tags: Vec<String>,
    pub groups: Vec<String>,
    /// (`openai-realtime`) the answers to tool calls (the scenario's, else the target's).
    pub on_tool_call: Option<Arc<crate::plan::json_template::ToolReplies>>,
}

/// A step with where it came from.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// 0-based index in its scenario.
    pub index: usize,
    /// 1-based line in the plan file (0 if unknown).
    pub line: usize,
    pub action: Action,
    /// (a step with `tags:`) the breakdown groups of what is measured while it runs: its
    /// scenario's and its own tags' (None: the scenario's).
    pub groups: Option<Arc<[String]>>,
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
    /// `send_json`: one JSON message, its strings templated.
    SendJson(Arc<crate::plan::json_template::JsonTemplate>),
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
            Action::SendJson(_) => "send_json",
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

pub(super) fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

pub(super) fn conditions(
    spec: &BTreeMap<String, Value>,
) -> Result<Vec<Condition>, UnknownCondition> {
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
                            return Err(UnknownCondition {
                                op: other.to_string(),
                                field: field.clone(),
                            });
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
