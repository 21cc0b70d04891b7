//! The runner: runs a compiled plan from start to verdict. It owns what surrounds the load
//! itself — stop control (signals, `--max-duration`, `abort_on_fail` thresholds), sweeps of
//! user counts, the live threshold monitor, resource sampling, the Prometheus endpoint — and
//! writes each run's reports. It reports what happens to an [`Observer`] and returns a
//! [`RunResult`]; the CLI only turns that into console output and an exit code.

pub mod dashboard;
mod monitor;
pub mod observer;
mod once;
pub mod prometheus;
pub mod stop;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use observer::{Notice, Observer, ProgressSnapshot, Silent};
pub use stop::{StopCause, StopControl};

use crate::plan::compile::{CompiledPlan, TargetUrl};
use crate::plan::model::RecordAudio;
use crate::report;
use crate::report::{ReportView, RunReport};
use crate::shard::Shard;

/// A signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// `SIGINT` / `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell's code for a process ended by this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// How a run (or a sweep of runs) ended, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal (the report is still written).
    Stopped(Signal),
    /// The run could not proceed: every connection failed, the engine could not start, or the
    /// reports could not be written.
    CannotRun,
    /// planrun itself was the bottleneck (pacing lag or event-loop delay p99 over the limit)
    /// and the plan or command line did not accept it (`on_overload: warn`): the measurements
    /// cannot be trusted, so the run neither passed nor failed.
    Inconclusive,
    /// A threshold failed (or an `abort_on_fail` threshold stopped the run).
    ThresholdFailed,
    /// A metric regressed against the baseline.
    Regressed,
    /// Every threshold passed.
    Passed,
}

impl Outcome {
    fn rank(self) -> u8 {
        match self {
            Outcome::Passed => 0,
            Outcome::Regressed => 1,
            Outcome::ThresholdFailed => 2,
            Outcome::Inconclusive => 3,
            Outcome::CannotRun => 4,
            Outcome::Stopped(_) => 5,
        }
    }

    /// The worse of two outcomes (for sweeps): stopped > cannot run > inconclusive > threshold
    /// failed > regressed > passed. Inconclusive ranks above a failed threshold: a verdict
    /// (pass, fail or regression) means something only when the measurement itself can be
    /// trusted, and a run measured by an overloaded generator cannot — its failures may be
    /// planrun's own lateness. It ranks below "cannot run" (nothing was measured at all) and a
    /// signal (the run was not allowed to finish).
    pub fn worst(self, other: Outcome) -> Outcome {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Problems found before any load is sent.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options do not fit the plan (a usage error).
    #[error("{0}")]
    Invalid(String),
    /// Something the run needs could not be set up (e.g. the metrics address is taken).
    #[error("{0}")]
    Setup(String),
}

/// What to run and where to write it. [`RunOptions::new`] gives the plan's own settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The report folder (created when missing; files in it are replaced).
    pub out: PathBuf,
    /// Which reports to write.
    pub outputs: report::Outputs,
    /// Overrides the plan's user count (and its sweep).
    pub users: Option<u32>,
    /// Overrides the plan's seed.
    pub seed: Option<u64>,
    /// Overrides the plan's target.
    pub target: Option<TargetUrl>,
    /// Run only this shard of the users.
    pub shard: Option<Shard>,
    /// Compare each run with this one (`comparison.md`, [`Outcome::Regressed`]).
    pub baseline: Option<ReportView>,
    /// The regression gate's settings.
    pub gate: report::compare::Options,
    /// Also sample this process's CPU and memory (the agent under test).
    pub target_pid: Option<u32>,
    /// Cap the whole run (all counts of a sweep together).
    pub max_duration: Option<Duration>,
    /// Serve live Prometheus metrics here during the run.
    pub metrics_addr: Option<SocketAddr>,
    /// Keep serving the final metrics this long after the run.
    pub metrics_linger: Option<Duration>,
    /// Serve the live dashboard (`--dashboard`).
    pub dashboard: Option<dashboard::DashboardOptions>,
    /// The generator's pacing-lag / event-loop-delay p99 limit, ms.
    pub lag_limit_ms: f64,
    /// What a run over that limit is: inconclusive (`fail`, the default) or accepted with a
    /// warning (`warn`). Starts as the plan's `generator.on_overload`.
    pub on_overload: crate::plan::model::OnOverload,
    /// Stop gracefully on SIGINT/SIGTERM (a second signal exits the process at once).
    pub handle_signals: bool,
    /// Raise the open-file limit to its hard maximum first.
    pub raise_fd_limit: bool,
}

impl RunOptions {
    /// The plan's own settings, writing into `out`.
    pub fn new(plan: &CompiledPlan, out: impl Into<PathBuf>) -> Self {
        RunOptions {
            out: out.into(),
            outputs: report::Outputs {
                formats: plan.report.formats.clone(),
                templates: Default::default(),
                write_data: true,
            },
            users: None,
            seed: None,
            target: None,
            shard: None,
            baseline: None,
            gate: report::compare::Options::default(),
            target_pid: None,
            max_duration: None,
            metrics_addr: None,
            metrics_linger: None,
            dashboard: None,
            lag_limit_ms: crate::judge::health::DEFAULT_LAG_LIMIT_MS,
            on_overload: plan.generator.on_overload,
            handle_signals: false,
            raise_fd_limit: false,
        }
    }
}

/// One finished run (one user count of a sweep).
#[derive(Debug)]
pub struct FinishedRun {
    /// Its user count.
    pub users: u32,
    /// The report (thresholds judged, stop cause filled in).
    pub report: RunReport,
    /// The report as the renderers see it (absent when metrics.json could not be built).
    pub view: Option<ReportView>,
    /// The comparison with the baseline as Markdown, when one was given.
    pub comparison: Option<String>,
    /// The report files written, or why they could not be.
    pub written: Result<Vec<PathBuf>, String>,
    /// How this run ended.
    pub outcome: Outcome,
}

/// What [`run`] hands back.
#[derive(Debug)]
pub struct RunResult {
    /// The worst outcome of all runs.
    pub outcome: Outcome,
    /// Every finished run, in order (a run that could not start has none).
    pub runs: Vec<FinishedRun>,
    /// The report folder.
    pub out: PathBuf,
    /// `index.html` of a sweep, when one was written.
    pub sweep_index: Option<PathBuf>,
}

/// Run `plan` with `options`, telling `observer` what happens; returns every run's report and
/// the overall outcome. Errors only for problems found before any load is sent.
pub async fn run(
    mut plan: CompiledPlan,
    options: RunOptions,
    observer: Arc<dyn Observer>,
) -> Result<RunResult, RunError> {
    if let Some(t) = &options.target {
        plan.target.url = t.clone();
    }
    let counts: Vec<u32> = match options.users {
        Some(u) => vec![u],
        None if plan.load.sweep.len() > 1 => plan.load.sweep.clone(),
        None => vec![plan.load.users],
    };
    if let Some(s) = options.seed {
        plan.load.seed = s;
    }
    // `--users` may ask for more callers than a `pick: unique` data file has rows.
    if let Some(why) = plan
        .data
        .as_ref()
        .and_then(|d| d.refuses(counts.iter().copied().max().unwrap_or(0)))
    {
        return Err(RunError::Invalid(why));
    }
    plan.load.shard = options.shard;
    if let Some(s) = plan.load.shard {
        if plan.load.stages.is_some() {
            return Err(RunError::Invalid(format!(
                "--shard {s} with ramping `stages` is not supported yet: shard a fixed user \
                 count or an arrival rate"
            )));
        }
        if counts.len() > 1 {
            return Err(RunError::Invalid(format!(
                "--shard {s} with a sweep of user counts: shard one count (--users N)"
            )));
        }
        let mine = s.users(counts[0]).len();
        observer.notice(&Notice::Info(format!(
            "shard {s}: {mine} of {} user(s) (global indexes {}, {}, …)",
            counts[0],
            s.index,
            s.index + s.count
        )));
        if mine == 0 {
            observer.notice(&Notice::Warning(format!(
                "warning: shard {s} has no users (the plan has {}): it records nothing",
                counts[0]
            )));
        }
    }
    if options.raise_fd_limit {
        match crate::resources::raise_fd_limit() {
            Ok(Some((from, to))) => observer.notice(&Notice::Info(format!(
                "raised the open-file limit from {from} to {to}"
            ))),
            Ok(None) => {}
            Err(e) => observer.notice(&Notice::Info(e.to_string())),
        }
    }
    let (stop, stop_rx) = StopControl::new();
    // The dashboard binds first: a bad or busy address is a usage error before any load.
    let hub = match &options.dashboard {
        Some(d) => Some(
            dashboard::start(d, stop.clone(), observer.clone(), dashboard::initial(&plan)).await?,
        ),
        None => None,
    };
    let (live, server) = match options.metrics_addr {
        Some(addr) => {
            let listener = match prometheus::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    if let Some(h) = &hub {
                        h.shutdown();
                    }
                    return Err(e);
                }
            };
            let bound = listener.local_addr().map_or(addr, |a| a);
            observer.notice(&Notice::Warning(format!(
                "live metrics on http://{bound}/metrics"
            )));
            let live = Arc::new(crate::metrics::live::LiveMetrics::default());
            let server = tokio::spawn(prometheus::serve(listener, live.clone()));
            (Some(live), Some(server))
        }
        // The dashboard reads the same live aggregates (event-loop delay, recent failures).
        None if hub.is_some() => (
            Some(Arc::new(crate::metrics::live::LiveMetrics::default())),
            None,
        ),
        None => (None, None),
    };
    let signals = options
        .handle_signals
        .then(|| tokio::spawn(stop::watch_signals(stop.clone(), observer.clone())));
    let cap = options.max_duration.map(|d| {
        let stop = stop.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if stop.stop(StopCause::MaxDuration(d)) {
                observer.notice(&Notice::Stopping {
                    text: format!(
                        "--max-duration {} reached; stopping and writing the report…",
                        crate::distribution::format_duration(d)
                    ),
                    quiet_hides: false,
                });
            }
        })
    });
    let ctx = once::Context {
        options: &options,
        stop: stop.clone(),
        live,
        observer: observer.clone(),
        dashboard: hub.clone(),
    };
    let sweep = counts.len() > 1;
    let mut outcome = Outcome::Passed;
    let mut runs: Vec<FinishedRun> = Vec::new();
    for &users in &counts {
        plan.load.users = users;
        if plan.report.record_audio != RecordAudio::None {
            let name = if sweep {
                format!("audio_{users}_users")
            } else {
                "audio".into()
            };
            plan.audio_dir = Some(options.out.join(name));
        }
        let suffix = if sweep {
            format!("_{users}_users")
        } else {
            String::new()
        };
        let (o, finished) = once::run_once(&plan, &ctx, stop_rx.clone(), &suffix).await;
        outcome = outcome.worst(o);
        if let Some(f) = finished {
            runs.push(f);
        }
        if *stop_rx.borrow() || o == Outcome::CannotRun {
            break;
        }
    }
    if let Some(s) = signals {
        s.abort();
    }
    if let Some(c) = cap {
        c.abort();
    }
    let mut sweep_index = None;
    if sweep && !runs.is_empty() {
        let views: Vec<(u32, ReportView)> = runs
            .iter()
            .filter_map(|r| r.view.clone().map(|v| (r.users, v)))
            .collect();
        match write_sweep(&plan.name, &views, &options.out) {
            Ok(()) => sweep_index = Some(options.out.join("index.html")),
            Err(e) => {
                observer.notice(&Notice::Warning(e.to_string()));
                outcome = outcome.worst(Outcome::CannotRun);
            }
        }
    }
    if let Some(h) = &hub {
        h.finished(outcome, sweep_index.as_deref());
    }
    // Lingering: the metrics endpoint (not after a stop) and the dashboard (not after a signal:
    // whoever pressed Ctrl-C wants out; after its own Stop button it shows the verdict).
    let signalled = matches!(stop.cause(), Some(StopCause::Signal(_)));
    let metrics_linger = server
        .as_ref()
        .and(options.metrics_linger)
        .filter(|_| !*stop_rx.borrow());
    let dashboard_linger = hub
        .as_ref()
        .and(options.dashboard.as_ref())
        .and_then(|d| d.linger)
        .filter(|_| !signalled);
    if let Some(d) = metrics_linger {
        observer.notice(&Notice::Warning(format!(
            "serving the final metrics for {}",
            crate::distribution::format_duration(d)
        )));
    }
    if let Some(d) = dashboard_linger {
        observer.notice(&Notice::Warning(format!(
            "serving the final dashboard for {} (Ctrl-C to leave now)",
            crate::distribution::format_duration(d)
        )));
    }
    if let Some(d) = metrics_linger.max(dashboard_linger) {
        let mut rx = stop_rx.clone();
        let stoppable = metrics_linger.is_some() && dashboard_linger.is_none();
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = rx.wait_for(|s| *s), if stoppable => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else if hub.as_ref().is_some_and(|h| h.has_viewers()) {
        // Let open pages receive the final snapshot before the process exits.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(server) = server {
        server.abort();
    }
    if let Some(h) = &hub {
        h.shutdown();
    }
    Ok(RunResult {
        outcome,
        runs,
        out: options.out.clone(),
        sweep_index,
    })
}

/// Write a sweep's `sweep.md` and `index.html` into `out`.
pub fn write_sweep(
    plan: &str,
    views: &[(u32, ReportView)],
    out: &std::path::Path,
) -> Result<(), RunError> {
    let put = |name: &str, body: String| {
        let p = out.join(name);
        std::fs::write(&p, body)
            .map_err(|e| RunError::Setup(format!("cannot write {}: {e}", p.display())))
    };
    put("sweep.md", report::sweep::markdown(plan, views))?;
    put("index.html", report::sweep::index_html(plan, views))
}
