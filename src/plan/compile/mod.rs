//! Compile a validated plan into what the engine executes: durations as `Duration`, audio decoded
//! and resampled once and shared, every step tagged with its position in the plan.

mod scenario;
mod step;

pub use step::*;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::diag::{Diagnostic, PlanError};
use super::model::{AgentSpec, ReportSpec};
use super::model::{ChunkFormat, HttpBody, HttpSpec, ProtocolKind};
use super::threshold_expr::ThresholdExpr;
use super::{LoadedPlan, recorded_metrics};
use crate::audio::Clip;
use crate::distribution::Dist;
use crate::plan_path;
use scenario::Cx;

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
    /// The load generator's own limits (`generator:`).
    pub generator: super::model::GeneratorSpec,
    /// Every metric the plan records, in plan order.
    pub metrics: Vec<String>,
    /// Where received audio is saved (set by the caller when `report.record_audio` asks).
    pub audio_dir: Option<PathBuf>,
}

/// What a call puts on its timeline beyond the usual markers and samples, because a threshold
/// judges it over time (`over W` windows, or `abort_on_fail` during the run): every chunk's
/// `frame_jitter` sample, and a marker for every passed `check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineDetail {
    pub frame_jitter: bool,
    pub checks: bool,
}

impl CompiledPlan {
    /// What the thresholds need on the timeline (see [`TimelineDetail`]).
    pub fn timeline_detail(&self) -> TimelineDetail {
        let over_time = |metric: &str| {
            self.thresholds.iter().any(|t| {
                super::threshold_expr::base_metric(&t.metric) == metric
                    && (t.expr.window.is_some() || t.expr.abort_on_fail)
            })
        };
        TimelineDetail {
            frame_jitter: over_time(super::FRAME_JITTER),
            checks: over_time(super::CHECKS),
        }
    }
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
    /// The caller's playout buffer (`target.playout`, `target.jitter_buffer`).
    pub playout: super::model::Playout,
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

/// Compile a validated plan. Audio files are decoded (and resampled) once each.
pub fn compile(lp: &LoadedPlan) -> Result<CompiledPlan, PlanError> {
    let plan = &lp.plan;
    let rate = plan.target.rate();
    let mut clips: HashMap<PathBuf, Arc<Clip>> = HashMap::new();
    let mut errs: Vec<Diagnostic> = Vec::new();
    let mut scenarios = Vec::new();
    let wire = super::target::compile_wire(lp, &mut errs);

    let mut cx = Cx::new(lp, rate, &mut clips, &mut errs);
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
            tags: sc.tags.clone(),
            groups: super::threshold_expr::breakdown_groups(plan, sc),
            on_tool_call: super::json_template::compile_tool_replies(lp, si),
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
            playout: plan.target.playout.resolve(plan.target.jitter_buffer.0),
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
        generator: plan.generator.clone(),
        metrics: recorded_metrics(plan),
        audio_dir: None,
    })
}
