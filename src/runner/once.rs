//! One run of the plan (one user count): load, judge, write the reports.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::monitor::monitor_thresholds;
use super::{
    FinishedRun, Notice, Observer, Outcome, ProgressSnapshot, RunOptions, StopCause, StopControl,
};
use crate::engine;
use crate::judge::thresholds;
use crate::metrics::live::LiveMetrics;
use crate::metrics::progress::Progress;
use crate::plan::compile::{CompiledPlan, TargetUrl};
use crate::plan::model::{OnOverload, ReportFormat};
use crate::report::{self, RunFiles};
use crate::resources::Sampler;

/// What every run of a sweep shares.
pub(super) struct Context<'a> {
    pub options: &'a RunOptions,
    pub stop: StopControl,
    pub live: Option<Arc<LiveMetrics>>,
    pub observer: Arc<dyn Observer>,
    /// The live dashboard, when served.
    pub dashboard: Option<Arc<super::dashboard::Hub>>,
}

/// Failure classes that mean the call never reached the agent.
const NOT_CONNECTED: [&str; 3] = ["connect_error", "handshake_rejected", "tls_error"];

/// Run the plan once (one user count) and write its reports.
pub(super) async fn run_once(
    plan: &CompiledPlan,
    ctx: &Context<'_>,
    stop_rx: watch::Receiver<bool>,
    suffix: &str,
) -> (Outcome, Option<FinishedRun>) {
    let opts = ctx.options;
    let observer = &ctx.observer;
    let warn = |text: String| observer.notice(&Notice::Warning(text));
    let progress = Arc::new(Progress::with_live(ctx.live.clone()));
    if let Some(live) = &ctx.live {
        live.attach(&progress);
    }
    let (done_tx, done_rx) = watch::channel(false);
    let planned = plan
        .load
        .iterations
        .map(|n| n * crate::shard::users_of(plan.load.shard, plan.load.users).len() as u64);
    let dashboard_done = done_rx.clone();
    let ticker = tokio::spawn(tick_progress(
        progress.clone(),
        planned,
        plan.load.duration,
        done_rx,
        observer.clone(),
    ));
    let load = match &plan.load.arrivals {
        Some(a) => format!(
            "an open model of {} arrivals over {} (max_users {})",
            a.count(),
            crate::distribution::format_duration(a.duration()),
            a.max_users
        ),
        None => format!("{} user(s)", plan.load.users),
    };
    observer.notice(&Notice::Info(format!(
        "running `{}` with {load} against {}",
        plan.name,
        crate::redact::redact(&plan.target.url.to_string())
    )));
    let builtin = plan.target.url == TargetUrl::Builtin;
    // The folder describes itself from the start (run_info.json), and the timeline is streamed
    // into it, so a killed run still leaves something `planrun report` can render.
    let info = report::RunInfo::new(
        plan,
        &plan.target.url.to_string(),
        std::time::SystemTime::now(),
    );
    let info_path = opts.out.join(report::output_name("run_info.json", suffix));
    let info_written = std::fs::create_dir_all(&opts.out)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_string_pretty(&info).map_err(|e| e.to_string()))
        .and_then(|j| {
            report::write_atomic(&info_path, (j + "\n").as_bytes()).map_err(|e| e.to_string())
        });
    if let Err(e) = info_written {
        warn(e);
    }
    let abort_specs: Vec<_> = plan
        .thresholds
        .iter()
        .filter(|t| t.expr.abort_on_fail)
        .cloned()
        .collect();
    // The run's central, bounded view of finished iterations: the abort monitor judges it,
    // and it keeps the per-step series windowed thresholds are judged from at the end.
    let windows = crate::metrics::Windows::for_plan(plan);
    let live_summary: Option<report::timeline::LiveSummary> = (!abort_specs.is_empty()
        || windows.is_configured()
        || ctx.dashboard.is_some())
    .then(|| {
        Arc::new(std::sync::Mutex::new(crate::metrics::Summary::new(
            crate::metrics::Recorder {
                windows,
                ..crate::metrics::Recorder::default()
            },
            plan.metrics.clone(),
            Duration::ZERO,
            false,
        )))
    });
    let (sink, sink_rx) = std::sync::mpsc::channel();
    let csv_path = opts.out.join(report::output_name("timeline.csv", suffix));
    let stream = match report::timeline::Stream::start(&csv_path, sink_rx, live_summary.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn(format!("the timeline is not streamed: {e}"));
            None
        }
    };
    let monitor = live_summary
        .clone()
        .filter(|_| !abort_specs.is_empty())
        .map(|live| {
            tokio::spawn(monitor_thresholds(
                progress.clone(),
                live,
                abort_specs,
                ctx.stop.clone(),
                observer.clone(),
            ))
        });
    let dashboard = ctx.dashboard.clone().map(|hub| {
        super::dashboard::follow(
            hub,
            plan,
            super::dashboard::Sources {
                progress: progress.clone(),
                summary: live_summary.clone(),
                live: ctx.live.clone(),
                lag_limit_ms: opts.lag_limit_ms,
                builtin,
                planned,
            },
            dashboard_done,
        )
    });
    let sampler = Sampler::start(
        opts.target_pid,
        builtin && opts.target_pid.is_none(),
        Duration::from_secs(1),
    );
    let outcome =
        engine::run_observed(plan, stop_rx, progress, stream.is_some().then_some(sink)).await;
    if let Some(m) = monitor {
        m.abort();
    }
    // The iterations' detail lives only in the streamed timeline: read it back for run.json.
    let mut timeline = Vec::new();
    if let Some(st) = stream {
        match st.finish() {
            Ok(_) => {
                timeline = report::timeline::read_back(&csv_path);
                if !opts.outputs.formats.contains(&ReportFormat::Csv) {
                    let _ = std::fs::remove_file(&csv_path);
                }
            }
            Err(e) => warn(e.to_string()),
        }
    }
    let resources = tokio::task::spawn_blocking(move || sampler.stop())
        .await
        .ok();
    let _ = done_tx.send(true);
    let _ = ticker.await;
    if let Some(d) = dashboard {
        let _ = d.await;
    }
    observer.load_ended();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            warn(e.to_string());
            return (Outcome::CannotRun, None);
        }
    };
    let mut outcome = outcome;
    if let Some(live) = &live_summary
        && let Ok(mut s) = live.lock()
    {
        outcome.summary.recorder.windows = std::mem::take(&mut s.recorder.windows);
    }
    let results = crate::judge::run_metrics::judge_plan(&outcome.summary, plan);
    let mut rep =
        report::RunReport::build(plan, &outcome, results).with_resources(resources.as_ref());
    rep.generator.judge(
        opts.lag_limit_ms,
        resources
            .as_ref()
            .map_or_else(|| report::RunEnvironment::current().cpus, |r| r.cpus.max(1)),
        builtin,
    );
    let cause = ctx.stop.cause().filter(|_| rep.aborted);
    if let Some(c) = &cause {
        rep.stopped_by = Some(c.kind().to_string());
        rep.stop_reason = Some(c.describe());
        if matches!(c, StopCause::MaxDuration(_)) {
            rep.passed = thresholds::all_passed(&rep.thresholds);
        }
    }
    // Measured by a generator that could not keep time: neither passed nor failed, unless
    // the plan or the command line accepts it.
    rep.generator.on_overload = Some(opts.on_overload.name().to_string());
    if rep.generator.overloaded && opts.on_overload == OnOverload::Fail {
        rep.inconclusive = true;
        rep.passed = false;
    }
    let run_data = report::RunData {
        version: report::timeline::RUN_DATA_VERSION,
        iterations: timeline,
        resources,
    };
    let files = RunFiles::new(&rep, run_data).map_err(|e| e.to_string());
    let written = files.as_ref().map_err(Clone::clone).and_then(|f| {
        report::write_outputs(f, &opts.outputs, &opts.out, suffix).map_err(|e| e.to_string())
    });
    let mut comparison = None;
    let mut regressed = false;
    if let (Some(base), Ok(f)) = (&opts.baseline, &files) {
        let cmp = report::compare::compare(base, &f.view, opts.gate);
        let md = report::compare::markdown(&cmp);
        let path = opts.out.join(report::output_name("comparison.md", suffix));
        if let Err(e) = std::fs::write(&path, &md) {
            warn(format!("cannot write {}: {e}", path.display()));
        }
        regressed = cmp.regressed();
        comparison = Some(md);
    }

    let not_connected: u64 = NOT_CONNECTED
        .iter()
        .filter_map(|c| rep.errors.get(*c))
        .sum();
    let all_refused = rep.iterations.total > 0 && not_connected == rep.iterations.total;
    let code = if let Some(StopCause::Signal(s)) = &cause {
        Outcome::Stopped(*s)
    } else if let Some(StopCause::Dashboard) = &cause {
        Outcome::Stopped(super::Signal::Interrupt)
    } else if let Some(StopCause::Threshold(_)) = &cause {
        Outcome::ThresholdFailed
    } else if rep.aborted && cause.is_none() {
        Outcome::Stopped(super::Signal::Interrupt)
    } else if all_refused || written.is_err() {
        Outcome::CannotRun
    } else if !rep.passed {
        Outcome::ThresholdFailed
    } else if regressed {
        Outcome::Regressed
    } else {
        Outcome::Passed
    };
    // Inconclusive outranks a failed threshold or a regression (see `Outcome::worst`); a
    // signal or a run that could not proceed stays what it was.
    let code = if rep.inconclusive {
        code.worst(Outcome::Inconclusive)
    } else {
        code
    };
    let finished = FinishedRun {
        users: plan.load.users,
        view: files.ok().map(|f| f.view),
        report: rep,
        comparison,
        written,
        outcome: code,
    };
    observer.run_finished(&finished, &opts.out);
    if let Some(hub) = &ctx.dashboard {
        hub.run_finished(&finished, &opts.out);
    }
    if all_refused {
        warn(format!(
            "every connection to {} failed; the run could not proceed",
            finished.report.target
        ));
    }
    (code, Some(finished))
}

/// Hand the live counters to the observer every 250 ms until `done` turns true.
async fn tick_progress(
    p: Arc<Progress>,
    planned: Option<u64>,
    duration: Option<Duration>,
    mut done: watch::Receiver<bool>,
    observer: Arc<dyn Observer>,
) {
    use std::sync::atomic::Ordering;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => observer.progress(&ProgressSnapshot {
                elapsed: start.elapsed(),
                active_users: p.active_users.load(Ordering::Relaxed),
                iterations_done: p.iterations_done.load(Ordering::Relaxed),
                iterations_failed: p.iterations_failed.load(Ordering::Relaxed),
                planned,
                duration,
                rolling_p95: p.rolling_p95(),
            }),
            r = done.wait_for(|d| *d) => { let _ = r; break; }
        }
    }
}
