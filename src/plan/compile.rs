//! Compile a validated plan into what the engine executes: durations as `Duration`, audio decoded
//! and resampled once and shared, every step tagged with its position in the plan.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::diag::{Diagnostic, PlanError};
use super::model::{AgentSpec, ReportSpec};
use super::threshold::ThresholdExpr;
use super::{LoadedPlan, recorded_metrics};
use crate::audio::{self, Clip};
use crate::dist::Dist;
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
    pub connect_timeout: Duration,
    pub agent: AgentSpec,
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

#[derive(Debug, Clone)]
pub enum Action {
    SendAudio {
        clip: Arc<Clip>,
        frame: Duration,
        label: String,
    },
    Send(Control),
    Await {
        event: String,
        record: Option<String>,
        timeout: Duration,
    },
    Wait(Dist),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::SendAudio { .. } => "send_audio",
            Action::Send(_) => "send",
            Action::Await { .. } => "await",
            Action::Wait(_) => "wait",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ThresholdSpec {
    pub metric: String,
    pub expr: ThresholdExpr,
}

/// Compile a validated plan. Audio files are decoded (and resampled) once each.
pub fn compile(lp: &LoadedPlan) -> Result<CompiledPlan, PlanError> {
    let plan = &lp.plan;
    let rate = plan.target.sample_rate;
    let mut clips: HashMap<PathBuf, Arc<Clip>> = HashMap::new();
    let mut errs: Vec<Diagnostic> = Vec::new();
    let mut scenarios = Vec::new();

    for (si, sc) in plan.scenarios.iter().enumerate() {
        let mut steps = Vec::new();
        for (i, step) in sc.steps.iter().enumerate() {
            let path = plan_path!["scenarios", si, "steps", i];
            let line = lp.tree.as_ref().map_or(0, |t| t.find(&path).0);
            let action = if let Some(spec) = &step.send_audio {
                let file = lp.resolve(&spec.file);
                let clip = match clips.get(&file) {
                    Some(c) => c.clone(),
                    None => match audio::load_wav(&file, rate) {
                        Ok(c) => {
                            let c = Arc::new(c);
                            clips.insert(file.clone(), c.clone());
                            c
                        }
                        Err(e) => {
                            let mut p = path.to_vec();
                            p.push("send_audio".into());
                            errs.push(lp.diag(&p, e.to_string(), None));
                            continue;
                        }
                    },
                };
                Action::SendAudio {
                    clip,
                    frame: spec.frame.map_or(DEFAULT_FRAME, |f| f.0),
                    label: spec.file.clone(),
                }
            } else if let Some(name) = &step.send {
                // ok: validated in plan::validate; unknown names never reach here
                let Some(c) = Control::from_name(name) else {
                    continue;
                };
                Action::Send(c)
            } else if let Some(event) = &step.await_ {
                Action::Await {
                    event: event.clone(),
                    record: step.record.clone(),
                    timeout: step.timeout.map_or(DEFAULT_AWAIT_TIMEOUT, |t| t.0),
                }
            } else if let Some(w) = &step.wait {
                Action::Wait(w.0.clone())
            } else {
                continue; // validated: every step has one action
            };
            steps.push(StepSpec {
                index: i,
                line,
                action,
            });
        }
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
    let iterations = match (load.iterations, load.duration) {
        (Some(n), _) => Some(u64::from(n)),
        (None, Some(_)) => None,
        (None, None) => Some(1),
    };
    Ok(CompiledPlan {
        name: plan.name.clone(),
        description: plan.description.clone(),
        source: lp.path.clone(),
        target: TargetSpec {
            url: TargetUrl::parse(&plan.target.url),
            sample_rate: rate,
            connect_timeout: plan.target.connect_timeout.0,
            agent: plan.target.agent.clone(),
        },
        load: LoadSpec {
            users: load.users.0.first().copied().unwrap_or(1),
            sweep: load.users.0.clone(),
            iterations,
            duration: load.duration.map(|d| d.0),
            ramp_up: load.ramp_up.map_or(Duration::ZERO, |d| d.0),
            think_time: load.think_time.as_ref().map(|j| j.0.clone()),
            seed: load.seed,
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
    })
}
