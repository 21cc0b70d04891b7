//! The run's timeline (every iteration with its markers and samples), saved as `run.json` so
//! reports can be re-rendered, and flattened into `timeline.csv`. During a run `timeline.csv`
//! is streamed ([`Stream`]): each finished iteration's rows are appended and flushed, so a
//! killed run leaves a usable partial file that [`parse_csv`] reads back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};

use super::error::ReportError;
use crate::contract::ResourceSeries;
use crate::metrics::{Failure, FailureClass, IterationRecord, Marker, Sample, Summary};

/// CSV header of `timeline.csv`.
pub const CSV_HEADER: [&str; 6] = ["t_ms", "user", "iteration", "scenario", "event", "detail"];
/// Event prefix of a recorded measurement's row (`record:ttfa`, detail = milliseconds).
pub const RECORD_PREFIX: &str = "record:";

/// Event of a `timeline.csv` row for an open-model arrival that did not start (user = the
/// arrival's number, detail = the reason); not part of any iteration.
pub const DROPPED_EVENT: &str = "arrival_dropped";

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

/// The rows of `timeline.csv`: [`events`] plus one `record:METRIC` row per recorded
/// measurement (detail: the value in milliseconds), in time order.
pub fn csv_rows(iterations: &[TimelineIteration]) -> Vec<Event> {
    let mut out = events(iterations);
    for it in iterations {
        for s in &it.samples {
            out.push(Event {
                t_ms: s.at_us as f64 / 1000.0,
                user: it.user,
                iteration: it.iteration,
                scenario: it.scenario.clone(),
                event: format!("{RECORD_PREFIX}{}", s.metric),
                detail: format!("{:.3}", s.value_ms),
            });
        }
    }
    out.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    out
}

fn write_rows<W: Write>(w: &mut csv::Writer<W>, rows: Vec<Event>) -> Result<(), ReportError> {
    for e in rows {
        w.write_record([
            format!("{:.3}", e.t_ms),
            e.user.to_string(),
            e.iteration.to_string(),
            e.scenario,
            e.event,
            crate::redact::redact(&e.detail),
        ])
        .map_err(ReportError::csv)?;
    }
    Ok(())
}

/// `timeline.csv`: header `t_ms,user,iteration,scenario,event,detail`, one row per event.
pub fn csv(iterations: &[TimelineIteration]) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER).map_err(ReportError::csv)?;
    write_rows(&mut w, csv_rows(iterations))?;
    let bytes = w.into_inner().map_err(ReportError::csv)?;
    String::from_utf8(bytes).map_err(ReportError::csv)
}

/// Read `timeline.csv` back into iterations (leniently: a torn last line or a malformed row is
/// skipped). Rows are grouped by (user, iteration); an iteration without its `iteration_end`
/// row (cut off mid-write) is dropped. Returns the iterations and how many rows were skipped.
pub fn parse_csv(text: &str) -> (Vec<TimelineIteration>, usize) {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut skipped = 0;
    let mut order: Vec<(u32, u64)> = Vec::new();
    let mut open: std::collections::HashMap<(u32, u64), (TimelineIteration, bool)> =
        std::collections::HashMap::new();
    for row in rd.records() {
        let Ok(row) = row else {
            skipped += 1;
            continue;
        };
        let parsed = (|| {
            let t_ms: f64 = row.get(0)?.parse().ok()?;
            let user: u32 = row.get(1)?.parse().ok()?;
            let iteration: u64 = row.get(2)?.parse().ok()?;
            Some((t_ms, user, iteration, row.get(3)?, row.get(4)?, row.get(5)?))
        })();
        let Some((t_ms, user, iteration, scenario, event, detail)) = parsed else {
            skipped += 1;
            continue;
        };
        if event == DROPPED_EVENT {
            continue;
        }
        let at_us = (t_ms * 1000.0).round().max(0.0) as u64;
        let key = (user, iteration);
        let (it, ended) = open.entry(key).or_insert_with(|| {
            order.push(key);
            (
                TimelineIteration {
                    user,
                    iteration,
                    scenario: scenario.to_string(),
                    start_us: at_us,
                    end_us: at_us,
                    failure: None,
                    markers: Vec::new(),
                    samples: Vec::new(),
                },
                false,
            )
        });
        match event {
            "iteration_start" => it.start_us = at_us,
            "iteration_end" => {
                it.end_us = at_us;
                *ended = true;
            }
            "failure" => {
                let (class, message) = detail.split_once(": ").unwrap_or((detail, ""));
                it.failure = Some(TimelineFailure {
                    class: class.to_string(),
                    step: String::new(),
                    message: message.to_string(),
                });
            }
            e => match e.strip_prefix(RECORD_PREFIX) {
                Some(metric) => match detail.parse::<f64>() {
                    Ok(value_ms) if value_ms.is_finite() => it.samples.push(TimelineSample {
                        metric: metric.to_string(),
                        at_us,
                        value_ms,
                    }),
                    _ => skipped += 1,
                },
                None => it.markers.push(TimelineMarker {
                    kind: e.to_string(),
                    at_us,
                    detail: detail.to_string(),
                }),
            },
        }
    }
    let mut out = Vec::new();
    for key in order {
        if let Some((it, ended)) = open.remove(&key) {
            if ended {
                out.push(it);
            } else {
                skipped += 1;
            }
        }
    }
    (out, skipped)
}

/// The iterations of a streamed `timeline.csv` (empty when it cannot be read), in run order
/// (start, user, iteration): a run keeps no iteration in memory, so its `run.json` is rebuilt
/// from here after the load ends.
pub fn read_back(path: &Path) -> Vec<TimelineIteration> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let (mut iterations, _) = parse_csv(&String::from_utf8_lossy(&bytes));
    iterations.sort_by_key(|i| (i.start_us, i.user, i.iteration));
    iterations
}

impl TimelineIteration {
    /// Back to the engine's record (for rebuilding a summary from a timeline).
    pub fn to_record(&self) -> IterationRecord {
        let class = |c: &str| match c {
            "connect_error" => FailureClass::ConnectError,
            "timeout" => FailureClass::Timeout,
            "connection_closed" => FailureClass::ConnectionClosed,
            "protocol_error" => FailureClass::ProtocolError,
            "server_error" => FailureClass::ServerError,
            "send_error" => FailureClass::SendError,
            "unexpected_event" => FailureClass::UnexpectedEvent,
            "aborted" => FailureClass::Aborted,
            _ => FailureClass::ExpectationFailed,
        };
        IterationRecord {
            user: self.user,
            iteration: self.iteration,
            scenario: self.scenario.clone(),
            start_us: self.start_us,
            end_us: self.end_us,
            failure: self.failure.as_ref().map(|f| Failure {
                class: class(&f.class),
                step: f.step.clone(),
                message: f.message.clone(),
            }),
            markers: self
                .markers
                .iter()
                .map(|m| Marker {
                    kind: m.kind.clone(),
                    at_us: m.at_us,
                    detail: m.detail.clone(),
                })
                .collect(),
            samples: self
                .samples
                .iter()
                .map(|s| Sample {
                    metric: s.metric.clone(),
                    at_us: s.at_us,
                    value_ms: s.value_ms,
                })
                .collect(),
        }
    }
}

/// `timeline.csv` with one [`DROPPED_EVENT`] row per dropped arrival (user = the arrival's
/// number, detail = the reason), in time order with the iterations' rows.
pub fn csv_with_dropped(
    iterations: &[TimelineIteration],
    dropped: &[super::arrivals::DroppedEntry],
) -> Result<String, ReportError> {
    let mut rows = csv_rows(iterations);
    rows.extend(dropped.iter().map(|d| Event {
        t_ms: d.at_ms,
        user: u32::try_from(d.arrival).unwrap_or(u32::MAX),
        iteration: 0,
        scenario: String::new(),
        event: DROPPED_EVENT.to_string(),
        detail: d.reason.clone(),
    }));
    rows.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER).map_err(ReportError::csv)?;
    write_rows(&mut w, rows)?;
    let bytes = w.into_inner().map_err(ReportError::csv)?;
    String::from_utf8(bytes).map_err(ReportError::csv)
}

/// The live view of a run for the threshold monitor: every finished iteration, merged.
pub type LiveSummary = Arc<Mutex<Summary>>;

/// Streams `timeline.csv` during a run: a plain thread appends each finished iteration's rows
/// (in time order within the iteration) and flushes after every iteration, so at most one
/// iteration's rows are ever buffered; it also feeds the live view when one is given.
pub struct Stream {
    handle: std::thread::JoinHandle<Result<u64, ReportError>>,
    pub path: PathBuf,
}

impl Stream {
    /// Create (truncate) `path` with the CSV header and start the writer thread.
    pub fn start(
        path: &Path,
        rx: mpsc::Receiver<IterationRecord>,
        live: Option<LiveSummary>,
    ) -> Result<Self, ReportError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ReportError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = std::fs::File::create(path).map_err(|source| ReportError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
        w.write_record(CSV_HEADER).map_err(ReportError::csv)?;
        w.flush().map_err(ReportError::csv)?;
        let shown = path.to_path_buf();
        let handle = std::thread::spawn(move || {
            let mut n = 0u64;
            let mut error: Option<ReportError> = None;
            for rec in rx {
                if error.is_none() {
                    let it = TimelineIteration::from(&rec);
                    let result = write_rows(&mut w, csv_rows(std::slice::from_ref(&it)))
                        .and_then(|()| w.flush().map_err(ReportError::csv));
                    match result {
                        Ok(()) => n += 1,
                        // Keep draining (and feeding the live view); report once at the end.
                        Err(e) => {
                            error = Some(ReportError::WriteFailed {
                                path: shown.clone(),
                                message: e.to_string(),
                            })
                        }
                    }
                }
                if let Some(live) = &live
                    && let Ok(mut s) = live.lock()
                {
                    crate::judge::thresholds::feed_live(&mut s, rec);
                }
            }
            match error {
                Some(e) => Err(e),
                None => Ok(n),
            }
        });
        Ok(Stream {
            handle,
            path: path.to_path_buf(),
        })
    }

    /// Wait until every sender is gone and everything is written; returns the iterations
    /// written.
    pub fn finish(self) -> Result<u64, ReportError> {
        self.handle
            .join()
            .map_err(|_| ReportError::TimelineWriter)?
    }
}
