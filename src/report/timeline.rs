//! The run's timeline (every iteration with its markers and samples), saved as `run.json` so
//! reports can be re-rendered, and flattened into `timeline.csv`.

use serde::{Deserialize, Serialize};

use crate::metrics::IterationRecord;
use crate::resources::ResourceSeries;

/// Version of the `run.json` layout.
pub const RUN_DATA_VERSION: u32 = 1;

/// Why an iteration failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineFailure {
    pub class: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub message: String,
}

/// One instant inside an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineMarker {
    pub kind: String,
    /// Microseconds since the run started.
    pub at_us: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One recorded measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineSample {
    pub metric: String,
    pub at_us: u64,
    pub value_ms: f64,
}

/// One iteration (call) of one virtual user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineIteration {
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    pub start_us: u64,
    pub end_us: u64,
    #[serde(default)]
    pub failure: Option<TimelineFailure>,
    #[serde(default)]
    pub markers: Vec<TimelineMarker>,
    #[serde(default)]
    pub samples: Vec<TimelineSample>,
}

impl TimelineIteration {
    pub fn is_aborted(&self) -> bool {
        self.failure.as_ref().is_some_and(|f| f.class == "aborted")
    }
}

impl From<&IterationRecord> for TimelineIteration {
    fn from(r: &IterationRecord) -> Self {
        TimelineIteration {
            user: r.user,
            iteration: r.iteration,
            scenario: r.scenario.clone(),
            start_us: r.start_us,
            end_us: r.end_us,
            failure: r.failure.as_ref().map(|f| TimelineFailure {
                class: f.class.as_str().to_string(),
                step: f.step.clone(),
                message: f.message.clone(),
            }),
            markers: r
                .markers
                .iter()
                .map(|m| TimelineMarker {
                    kind: m.kind.clone(),
                    at_us: m.at_us,
                    detail: m.detail.clone(),
                })
                .collect(),
            samples: r
                .samples
                .iter()
                .map(|s| TimelineSample {
                    metric: s.metric.clone(),
                    at_us: s.at_us,
                    value_ms: s.value_ms,
                })
                .collect(),
        }
    }
}

/// What `run.json` holds: the data behind the charts, beside `metrics.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunData {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub iterations: Vec<TimelineIteration>,
    #[serde(default)]
    pub resources: Option<ResourceSeries>,
}

impl RunData {
    pub fn new(records: &[IterationRecord], resources: Option<ResourceSeries>) -> Self {
        RunData {
            version: RUN_DATA_VERSION,
            iterations: records.iter().map(TimelineIteration::from).collect(),
            resources,
        }
    }
}

/// One row of `timeline.csv` (and of the templates' `events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Milliseconds since the run started.
    pub t_ms: f64,
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    pub event: String,
    pub detail: String,
}

/// Every event of the run in time order: `iteration_start`, each marker, `failure`
/// (`class: message`) and `iteration_end` (`ok`, `failed` or `aborted`).
pub fn events(iterations: &[TimelineIteration]) -> Vec<Event> {
    let mut out = Vec::new();
    for it in iterations {
        let ev = |at_us: u64, event: &str, detail: String| Event {
            t_ms: at_us as f64 / 1000.0,
            user: it.user,
            iteration: it.iteration,
            scenario: it.scenario.clone(),
            event: event.to_string(),
            detail,
        };
        out.push(ev(it.start_us, "iteration_start", String::new()));
        for m in &it.markers {
            out.push(ev(m.at_us, &m.kind, m.detail.clone()));
        }
        let outcome = match &it.failure {
            Some(f) => {
                let mut detail = format!("{}: {}", f.class, f.message);
                if !f.step.is_empty() {
                    detail = format!("{} ({})", detail, f.step);
                }
                out.push(ev(it.end_us, "failure", detail));
                if f.class == "aborted" {
                    "aborted"
                } else {
                    "failed"
                }
            }
            None => "ok",
        };
        out.push(ev(it.end_us, "iteration_end", outcome.to_string()));
    }
    // Stable: events at the same instant keep their order within an iteration.
    out.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    out
}

/// `timeline.csv`: header `t_ms,user,iteration,scenario,event,detail`, one row per event.
pub fn csv(iterations: &[TimelineIteration]) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["t_ms", "user", "iteration", "scenario", "event", "detail"])
        .map_err(|e| e.to_string())?;
    for e in events(iterations) {
        w.write_record([
            format!("{:.3}", e.t_ms),
            e.user.to_string(),
            e.iteration.to_string(),
            e.scenario,
            e.event,
            e.detail,
        ])
        .map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}
