//! Compile a validated plan into what the engine executes: durations as `Duration`, audio decoded
//! and resampled once and shared, every step tagged with its position in the plan.

mod data;
mod scenario;
mod step;

pub(crate) use data::read_limited;
pub use data::{DataError, DataKind, DataSet, MAX_ROWS, Row, read as read_data, row_of};
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
    /// Per-caller data (`data:`). When its rows change what a call sends (`{{ row.… }}`), each
    /// call runs its row's rendering of the scenarios and wire settings; otherwise (and with
    /// no `data:`) every call runs `scenarios` and `target.wire`.
    pub data: Option<Arc<DataPlan>>,
}

/// One data row's rendering of the plan's scenarios and wire settings (rows that fill in the
/// same values share one).
#[derive(Debug, Clone)]
pub struct Variant {
    pub scenarios: Vec<ScenarioSpec>,
    pub wire: super::target::WireSpec,
    pub url: TargetUrl,
}

/// The rows of `data:` compiled: which rendering each call runs.
#[derive(Debug, Clone)]
pub struct DataPlan {
    pub kind: DataKind,
    pub rows: usize,
    /// The plan's seed at compile time (a run passes its own to [`DataPlan::variant`]).
    pub seed: u64,
    /// Row → index in `variants`.
    pub row_variant: Vec<u32>,
    pub variants: Vec<Variant>,
}

impl DataPlan {
    /// The rendering call `iteration` of `user` runs, with the run's `seed` (the plan's, or
    /// `--seed`); None when no string names a row field.
    pub fn variant(&self, seed: u64, user: u32, iteration: u64) -> Option<&Variant> {
        let row = row_of(self.kind, self.rows, seed, user, iteration);
        let v = self.row_variant.get(row).copied().unwrap_or(0) as usize;
        self.variants.get(v)
    }

    /// Why `users` callers cannot run with this data (`pick: unique` with fewer rows).
    pub fn refuses(&self, users: u32) -> Option<String> {
        (self.kind == DataKind::File(super::model::Pick::Unique) && (users as usize) > self.rows)
            .then(|| {
                format!(
                    "`pick: unique` gives each user its own row, but the data has {} rows for {users} users",
                    self.rows
                )
            })
    }
}

/// Most compiled steps all data rows' renderings may hold together.
const MAX_VARIANT_STEPS: usize = 1_000_000;

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

    let with_rows = data::uses_rows(lp);
    // With data rows, every row's rendering has its own wire settings.
    let base_wire = (!with_rows).then(|| super::target::compile_wire(lp, &mut errs));
    let mut variants: Vec<Variant> = Vec::new();
    let mut carry = scenario::Carry::default();
    let rendered = if with_rows {
        let mut total_steps = 0usize;
        let mut row_errs = Vec::new();
        let mut each = |row: usize, p: super::Plan| -> bool {
            let mut cx = Cx::new(lp, rate, &mut clips, &mut row_errs);
            cx.resume(std::mem::take(&mut carry));
            cx.plan = &p;
            cx.row_note = format!("data row {}: ", row + 1);
            let scs = scenarios_of(&mut cx, &p);
            total_steps = total_steps.saturating_add(scs.iter().map(|s| s.steps.len()).sum());
            if total_steps > MAX_VARIANT_STEPS {
                cx.row_note.clear();
                cx.error_at(
                    &plan_path!["data"],
                    format!(
                        "the data's distinct rows compile to more than {MAX_VARIANT_STEPS} steps in all"
                    ),
                );
                return false;
            }
            let mut wire_errs = Vec::new();
            let wire = super::target::compile_wire_of(lp, &p.target, &mut wire_errs);
            for mut e in wire_errs {
                e.message = format!("data row {}: {}", row + 1, e.message);
                cx.push(e);
            }
            let url = TargetUrl::parse(&wire.url);
            let written = &wire.url;
            if url != TargetUrl::Builtin
                && !["ws://", "wss://", "http://", "https://"]
                    .iter()
                    .any(|s| written.starts_with(s))
            {
                cx.error_at(
                    &plan_path!["target", "url"],
                    format!(
                        "data row {}: target url `{written}` is not a ws://, wss:// or http(s):// URL",
                        row + 1
                    ),
                );
            }
            let gave_up = cx.gave_up();
            carry = cx.suspend();
            variants.push(Variant {
                scenarios: scs,
                wire,
                url,
            });
            !gave_up
        };
        let r = data::renderings(lp, &mut errs, &mut each);
        errs.append(&mut row_errs);
        r
    } else {
        let mut cx = Cx::new(lp, rate, &mut clips, &mut errs);
        scenarios = scenarios_of(&mut cx, plan);
        None
    };
    if let Some(v) = variants.first() {
        scenarios = v.scenarios.clone();
    }
    if !errs.is_empty() || (with_rows && rendered.is_none()) {
        if errs.is_empty() {
            errs.push(lp.diag(
                &plan_path!["data"],
                "the data's rows could not be compiled",
                None,
            ));
        }
        return Err(PlanError(errs));
    }
    let data_plan = lp.data.as_ref().map(|d| {
        Arc::new(DataPlan {
            kind: d.kind,
            rows: d.rows.len(),
            seed: plan.load.seed,
            row_variant: rendered.unwrap_or_default(),
            variants,
        })
    });
    let wire = match (
        data_plan.as_ref().and_then(|d| d.variants.first()),
        base_wire,
    ) {
        (Some(v), _) => v.wire.clone(),
        (None, w) => w.unwrap_or_default(),
    };

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
    if let Some(ds) = &lp.data
        && ds.kind == DataKind::File(super::model::Pick::Unique)
    {
        let most = users_list.0.iter().copied().max().unwrap_or(1).max(users) as usize;
        if ds.rows.len() < most {
            return Err(PlanError(vec![lp.diag(
                &plan_path!["data", "pick"],
                format!(
                    "`pick: unique` gives each user its own row, but the data has {} rows for {most} users",
                    ds.rows.len()
                ),
                Some("add rows, lower `users`, or use `pick: sequential` to reuse rows".into()),
            )]));
        }
    }
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
        data: data_plan,
    })
}

fn scenarios_of(cx: &mut Cx, plan: &super::Plan) -> Vec<ScenarioSpec> {
    let mut out = Vec::new();
    for (si, sc) in plan.scenarios.iter().enumerate() {
        let mut steps = Vec::new();
        cx.steps(
            &sc.name,
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut steps,
        );
        out.push(ScenarioSpec {
            name: sc.name.clone(),
            weight: sc.weight,
            timeout: sc.timeout.map(|t| t.0),
            steps,
            tags: sc.tags.clone(),
            groups: super::threshold_expr::breakdown_groups(plan, sc),
            on_tool_call: super::json_template::compile_tool_replies(cx.lp, si),
        });
    }
    out
}
