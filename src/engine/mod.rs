//! The engine: turns a compiled plan into concurrent virtual users and collects what they
//! measured. Knows nothing of report formats.

mod call;
pub mod connect;
mod handshake;
mod http;
mod open;
pub mod schedule;
mod session;
mod trace;
mod users;
pub(crate) mod webrtc;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::agent::{self, AgentConfig, Faults};
use crate::metrics::progress::Progress;
use crate::metrics::{FailureClass, IterationRecord, Recorder, Summary};
use crate::plan::compile::{CompiledPlan, ScenarioSpec, TargetUrl};
use crate::plan::model::{AgentSpec, RecordAudio};

/// How long a call in flight may take to wind down after the run is stopped (the session
/// aborts its steps at once; this bounds what it cannot interrupt, such as a connect to a
/// server that never answers). Past it the call is dropped and counted as `aborted`.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Resolves [`STOP_GRACE`] after the run is stopped.
async fn stopped_past_grace(mut stop: watch::Receiver<bool>) {
    call::wait_stop(&mut stop).await;
    tokio::time::sleep(STOP_GRACE).await;
}

/// What a finished (or stopped) run hands to thresholds and reports.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: Summary,
    /// The URL actually used (the builtin agent's loopback URL when `builtin`).
    pub target: String,
    pub started_at: SystemTime,
}

/// Problems that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the built-in agent: {0}")]
    Agent(std::io::Error),
}

/// Build the built-in agent's configuration from the plan's `target.agent`.
pub fn agent_config(spec: &AgentSpec, sample_rate: u32, seed: u64) -> AgentConfig {
    let mut c = AgentConfig {
        sample_rate,
        seed: spec.seed.unwrap_or(seed),
        ..AgentConfig::default()
    };
    let set = |dst: &mut crate::distribution::Dist, src: &Option<crate::plan::model::Jitter>| {
        if let Some(j) = src {
            *dst = j.0.clone();
        }
    };
    set(&mut c.asr_latency, &spec.asr_latency);
    set(&mut c.llm_latency, &spec.llm_latency);
    set(&mut c.tts_latency, &spec.tts_latency);
    set(&mut c.reply_duration, &spec.reply_duration);
    set(&mut c.barge_in_delay, &spec.barge_in_delay);
    set(&mut c.resume_delay, &spec.resume_delay);
    set(&mut c.tool_latency, &spec.tool_latency);
    if let Some(w) = spec.wait_for_tool_result {
        c.wait_for_tool_result = w;
    }
    if let Some(d) = spec.leading_silence {
        c.leading_silence = d.0;
    }
    if let Some(p) = spec.reply_pacing {
        c.reply_pacing = match p {
            crate::plan::model::ReplyPacing::Realtime => crate::agent::ReplyPacing::Realtime,
            crate::plan::model::ReplyPacing::Burst => crate::agent::ReplyPacing::Burst,
            crate::plan::model::ReplyPacing::Ahead(d) => crate::agent::ReplyPacing::Ahead(d),
        };
    }
    if let Some(d) = spec.sentence_pause {
        c.sentence_pause = d.0;
    }
    if let Some(d) = spec.min_speech {
        c.min_speech = d.0;
    }
    if let Some(d) = spec.vad_hangover {
        c.vad_hangover = d.0;
    }
    if let Some(v) = spec.vad_threshold_dbfs {
        c.vad_threshold_dbfs = v;
    }
    if let Some(k) = &spec.tool_keywords {
        c.tool_keywords = k.clone();
    }
    if let Some(f) = spec.tool_fraction {
        c.tool_fraction = f;
    }
    if let Some(m) = spec.send_metrics {
        c.send_metrics = m;
    }
    set(&mut c.http.chunk_latency, &spec.chunk_latency);
    if let Some(p) = spec.faults.http_error {
        c.http.http_error = p;
    }
    if let Some(p) = spec.faults.non_json {
        c.http.non_json = p;
    }
    let f = &spec.faults;
    let defaults = Faults::default();
    c.faults = Faults {
        drop: f.drop.unwrap_or(defaults.drop),
        stall: f.stall.unwrap_or(defaults.stall),
        stall_for: f.stall_for.map_or(defaults.stall_for, |d| d.0),
        malformed: f.malformed.unwrap_or(defaults.malformed),
    };
    c
}

/// Write what a caller heard; a write failure is reported once per file, never fatal.
fn save_heard(
    dir: &std::path::Path,
    user: u32,
    iteration: u64,
    scenario: &str,
    heard: &[i16],
    rate: u32,
) {
    let safe = crate::slug::slug(scenario);
    let path = dir.join(format!("u{user:04}-i{iteration:05}-{safe}.wav"));
    let result = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| crate::audio::write_wav(&path, heard, rate).map_err(|e| e.to_string()));
    if let Err(e) = result {
        eprintln!(
            "planrun: cannot save received audio {}: {e}",
            path.display()
        );
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of one user, from the plan seed and the user id (splitmix64).
fn user_seed(seed: u64, user: u32) -> u64 {
    mix(seed ^ (u64::from(user).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One user's independent random streams. Each purpose draws from its own generator, seeded
/// from (plan seed, user id, stream id), so what happens in one stream — a call that fails
/// before its jittered steps, a jitter distribution with more draws — never shifts another:
/// the same seed gives the same scenario sequence whatever the calls do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RngStream {
    /// Which scenario each iteration runs.
    Scenario = 1,
    /// Everything a call draws while it runs: step jitter (`wait`, `after`), protocol ids,
    /// multipart boundaries.
    Steps = 2,
    /// Think time between a user's iterations.
    Think = 3,
}

/// The seed of one of a user's streams.
pub(crate) fn stream_seed(seed: u64, user: u32, stream: RngStream) -> u64 {
    mix(user_seed(seed, user) ^ (stream as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// A user's random generator: xoshiro256++, 32 bytes of state (a user holds three; `StdRng`
/// is 320 bytes each) and portable: the same seed draws the same values in every build.
pub type UserRng = rand::rngs::Xoshiro256PlusPlus;

/// One of a user's streams, ready to draw from.
pub(crate) fn stream_rng(seed: u64, user: u32, stream: RngStream) -> UserRng {
    UserRng::seed_from_u64(stream_seed(seed, user, stream))
}

/// Weighted scenario choice.
pub fn choose_scenario(scenarios: &[ScenarioSpec], rng: &mut UserRng) -> usize {
    let total: f64 = scenarios.iter().map(|s| s.weight).sum();
    if scenarios.len() <= 1 || total <= 0.0 {
        return 0;
    }
    let mut x = rng.random_range(0.0..total);
    for (i, s) in scenarios.iter().enumerate() {
        if x < s.weight {
            return i;
        }
        x -= s.weight;
    }
    scenarios.len() - 1
}

/// Run a plan to completion, or until `stop` turns true (then in-flight iterations end as
/// `aborted` and the results so far are returned).
pub async fn run(
    plan: &CompiledPlan,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Result<RunOutcome, EngineError> {
    run_observed(plan, stop, progress, None).await
}

/// Receives a copy of every iteration as it finishes (for the streamed timeline and the live
/// threshold monitor). A plain channel: sending never blocks a user, and a receiver that went
/// away only stops the copies.
pub type IterationSink = std::sync::mpsc::Sender<IterationRecord>;

/// [`run`], also sending each finished iteration to `sink`.
pub async fn run_observed(
    plan: &CompiledPlan,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
    sink: Option<IterationSink>,
) -> Result<RunOutcome, EngineError> {
    let started_at = SystemTime::now();
    // wss:// targets use rustls with the ring provider (ignored when already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent = match &plan.target.url {
        TargetUrl::Builtin => {
            let cfg = agent_config(&plan.target.agent, plan.target.sample_rate, plan.load.seed);
            Some(
                agent::spawn("127.0.0.1:0", cfg)
                    .await
                    .map_err(EngineError::Agent)?,
            )
        }
        TargetUrl::Url(_) => None,
    };
    // `protocol: webrtc` against the built-in agent: its WebRTC side (signalling over HTTP).
    let webrtc_agent = match (&plan.target.url, plan.target.wire.protocol) {
        (TargetUrl::Builtin, crate::plan::model::ProtocolKind::Webrtc) => {
            let cfg = agent_config(&plan.target.agent, plan.target.sample_rate, plan.load.seed);
            Some(
                agent::spawn_webrtc("127.0.0.1:0", cfg)
                    .await
                    .map_err(EngineError::Agent)?,
            )
        }
        _ => None,
    };
    let url = match (&agent, &plan.target.url) {
        (Some(_), _) if let Some(w) = &webrtc_agent => {
            format!("{}{}", w.base_url(), plan.target.wire.builtin_path)
        }
        (Some(a), _) if plan.target.http.is_some() => a.http_url(),
        (Some(a), _) => format!(
            "{}{}",
            a.url().trim_end_matches('/'),
            plan.target.wire.builtin_path
        ),
        (None, TargetUrl::Url(u)) => u.clone(),
        (None, TargetUrl::Builtin) => String::new(),
    };
    let wire = &plan.target.wire;
    let mut conn = connect::Connection::new(&url, &wire.query);
    conn.headers = wire.headers.clone();
    conn.subprotocols = wire.subprotocols.clone();
    conn.tls = wire.tls.clone();
    conn.builtin = agent.is_some();
    let conn = Arc::new(conn);

    let main_metric = plan
        .metrics
        .iter()
        .find(|m| {
            !crate::plan::BUILTIN_METRICS.contains(&m.as_str())
                && !crate::plan::QUALITY_METRICS.contains(&m.as_str())
        })
        .cloned()
        .unwrap_or_else(|| "iteration".into());
    progress.set_main_metric(&main_metric);
    let plan_arc = Arc::new(plan.clone());
    let run_start = Instant::now();
    let _ = progress.started.set(run_start);
    let monitor = crate::metrics::health::EventLoopMonitor::start(progress.live.clone());
    let shared = || open::Shared {
        plan: plan_arc.clone(),
        conn: conn.clone(),
        run_start,
        stop: stop.clone(),
        progress: progress.clone(),
        sink: sink.clone(),
    };
    let total = if let Some(spec) = &plan.load.arrivals {
        // A shard takes every n-th arrival of the whole schedule (and its share of max_users).
        let spec = match plan.load.shard {
            Some(s) => spec.for_shard(s.index, s.count),
            None => spec.clone(),
        };
        open::run_arrivals(&spec, shared()).await
    } else if let Some(stages) = &plan.load.stages {
        open::run_stages(stages, shared()).await
    } else {
        run_closed(plan, &shared()).await
    };
    drop(sink);
    let total = drained(total, &progress, monitor).await;
    let outcome = finish(plan, agent, &conn, &stop, run_start, started_at, total).await;
    if let Some(w) = webrtc_agent {
        w.shutdown().await;
    }
    outcome
}

/// The closed model: a fixed set of users, each looping over calls.
async fn run_closed(plan: &CompiledPlan, sh: &open::Shared) -> Recorder {
    let users = plan.load.users;
    let deadline = plan.load.duration.map(|d| sh.run_start + d);
    let mut tasks = users::UserTasks::new(plan.load.iterations, sh.run_start);
    // Global user indexes (a shard runs its part); seeds and ramp-up follow the global index.
    for user in crate::shard::users_of(plan.load.shard, users) {
        let offset = if users > 1 {
            plan.load
                .ramp_up
                .mul_f64(f64::from(user) / f64::from(users))
        } else {
            Duration::ZERO
        };
        let task = user_loop(
            user,
            sh.plan.clone(),
            sh.conn.clone(),
            sh.run_start,
            sh.run_start + offset,
            deadline,
            sh.stop.clone(),
            sh.progress.clone(),
            sh.sink.clone(),
            None,
        );
        tasks.spawn(user, task);
    }
    let mut total = Recorder::default();
    // A user that panicked comes back as its owed calls, failed: never silently dropped.
    while let Some(rec) = tasks.join_next().await {
        total.merge(rec);
    }
    total
}

/// `total` with the histograms the users recorded into the shared shards and the event-loop
/// delay the monitor measured.
async fn drained(
    mut total: Recorder,
    progress: &Progress,
    monitor: crate::metrics::health::EventLoopMonitor,
) -> Recorder {
    if let Some(live) = &progress.live
        && let Some(lag) = progress.histograms.send_lag_snapshot()
    {
        live.add_send_lag(&lag);
    }
    progress.histograms.drain_into(&mut total);
    total.health.event_loop_delay = monitor.finish().await;
    total
}

/// Shut the built-in agent down and summarize.
async fn finish(
    plan: &CompiledPlan,
    agent: Option<agent::AgentHandle>,
    conn: &connect::Connection,
    stop: &watch::Receiver<bool>,
    run_start: Instant,
    started_at: SystemTime,
    total: Recorder,
) -> Result<RunOutcome, EngineError> {
    let elapsed = run_start.elapsed();
    if let Some(a) = agent {
        a.shutdown().await;
    }
    let aborted = *stop.borrow();
    Ok(RunOutcome {
        summary: Summary::new(total, plan.metrics.clone(), elapsed, aborted),
        target: conn.display_url(),
        started_at,
    })
}

/// One iteration over the plan's protocol.
async fn run_one(
    ctx: &mut call::Ctx<'_>,
    plan: &CompiledPlan,
    scenario: &ScenarioSpec,
) -> (trace::Trace, Option<crate::metrics::Failure>) {
    // Boxed: a user's task holds only the call it is in, not the larger of both kinds of
    // call inline (the task future was ~26 KB per user in release).
    match &plan.target.http {
        Some(http) => Box::pin(http::run_iteration(ctx, http, scenario)).await,
        None => Box::pin(session::run_iteration(ctx, scenario)).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn user_loop(
    user: u32,
    plan: Arc<CompiledPlan>,
    conn: Arc<connect::Connection>,
    run_start: Instant,
    start_at: Instant,
    deadline: Option<Instant>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
    sink: Option<IterationSink>,
    mut leave: Option<watch::Receiver<bool>>,
) -> Recorder {
    let mut rec = Recorder::default();
    let stripes = progress.histograms.stripes();
    rec.shared = Some((progress.histograms.clone(), user as usize % stripes));
    let seed = plan.load.seed;
    let mut scenario_rng = stream_rng(seed, user, RngStream::Scenario);
    let mut step_rng = stream_rng(seed, user, RngStream::Steps);
    let mut think_rng = stream_rng(seed, user, RngStream::Think);
    tokio::select! {
        _ = sleep_until(start_at) => {}
        _ = call::wait_stop(&mut stop) => return rec,
    }
    progress.active_users.fetch_add(1, Ordering::Relaxed);
    let mut iteration: u64 = 0;
    let mut live_feed = crate::metrics::live::UserFeed::default();
    loop {
        if *stop.borrow()
            || open::asked_to_leave(&leave)
            || plan.load.iterations.is_some_and(|n| iteration >= n)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        // Per-caller data: this call's row decides what it sends and where.
        let variant = plan
            .data
            .as_ref()
            .and_then(|d| d.variant(plan.load.seed, user, iteration));
        let scenarios = variant.map_or(&plan.scenarios, |v| &v.scenarios);
        let idx = choose_scenario(scenarios, &mut scenario_rng);
        let scenario = &scenarios[idx];
        let row_conn = variant.map(|v| connect::Connection::for_row(&conn, &v.wire, &v.url));
        let begin = Instant::now();
        let mut ctx = call::Ctx {
            conn: row_conn.as_ref().unwrap_or(&conn),
            wire: variant.map_or(&plan.target.wire, |v| &v.wire),
            connect_timeout: plan.target.connect_timeout,
            sample_rate: plan.target.sample_rate,
            speech_threshold_dbfs: plan.target.speech_threshold_dbfs,
            playout: plan.target.playout,
            run_start,
            keep_audio: plan.audio_dir.is_some(),
            rec: &mut rec,
            rng: &mut step_rng,
            stop: stop.clone(),
            detail: plan.timeline_detail(),
            groups: &scenario.groups,
            on_tool_call: scenario.on_tool_call.as_deref(),
        };
        let call = async {
            match scenario.timeout {
                // The session enforces the scenario timeout step by step (keeping its trace); this
                // is only a safety net.
                Some(t) => tokio::time::timeout(
                    t + Duration::from_secs(2),
                    run_one(&mut ctx, &plan, scenario),
                )
                .await
                .unwrap_or_else(|_| {
                    (
                        trace::Trace::default(),
                        Some(crate::metrics::Failure {
                            class: FailureClass::Timeout,
                            step: String::new(),
                            message: format!(
                                "scenario `{}` took longer than its timeout {}",
                                scenario.name,
                                crate::distribution::format_duration(t)
                            ),
                        }),
                    )
                }),
                None => run_one(&mut ctx, &plan, scenario).await,
            }
        };
        let outcome = tokio::select! {
            o = users::guarded(call) => o,
            () = stopped_past_grace(stop.clone()) => (
                trace::Trace::default(),
                Some(crate::metrics::Failure {
                    class: FailureClass::Aborted,
                    step: String::new(),
                    message: format!(
                        "the run was stopped and this call did not wind down within {}",
                        crate::distribution::format_duration(STOP_GRACE)
                    ),
                }),
            ),
        };
        let (trace, failure) = outcome;
        if let Some(dir) = &plan.audio_dir {
            let wanted = plan.report.record_audio == RecordAudio::All || failure.is_some();
            if wanted && !trace.heard.is_empty() {
                save_heard(
                    dir,
                    user,
                    iteration,
                    &scenario.name,
                    &trace.heard,
                    plan.target.sample_rate,
                );
            }
        }
        let end = Instant::now();
        let us = |t: Instant| t.saturating_duration_since(run_start).as_micros() as u64;
        if failure.is_some() {
            progress.iterations_failed.fetch_add(1, Ordering::Relaxed);
        }
        progress.iterations_done.fetch_add(1, Ordering::Relaxed);
        progress.push(&trace.samples);
        let record = IterationRecord {
            user,
            iteration,
            scenario: scenario.name.clone(),
            start_us: us(begin),
            end_us: us(end),
            failure,
            markers: trace.markers,
            samples: trace.samples,
        };
        if let Some(tx) = &sink {
            let _ = tx.send(record.clone());
        }
        if let Some(live) = &progress.live {
            // Send lag reaches the live view from the shared histograms, not per iteration.
            live.iteration(&mut live_feed, &record, rec.send_lag.as_ref());
        }
        rec.iteration(record);
        iteration += 1;
        let last = plan.load.iterations.is_some_and(|n| iteration >= n)
            || deadline.is_some_and(|d| Instant::now() >= d);
        if let Some(think) = plan.load.think_time.as_ref().filter(|_| !last) {
            let until = Instant::now() + think.sample(&mut think_rng);
            tokio::select! {
                _ = sleep_until(until) => {}
                _ = call::wait_stop(&mut stop) => break,
                () = open::left(&mut leave) => break,
            }
        }
    }
    progress.active_users.fetch_sub(1, Ordering::Relaxed);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(name: &str, weight: f64) -> ScenarioSpec {
        ScenarioSpec {
            name: name.into(),
            weight,
            timeout: None,
            steps: vec![],
            tags: vec![],
            groups: vec![],
            on_tool_call: None,
        }
    }

    #[test]
    fn weighted_choice_follows_weights_and_replays() {
        let scs = [sc("a", 0.6), sc("b", 0.3), sc("c", 0.1), sc("never", 0.0)];
        let mut rng = UserRng::seed_from_u64(user_seed(42, 0));
        let picks: Vec<usize> = (0..10_000)
            .map(|_| choose_scenario(&scs, &mut rng))
            .collect();
        let share = |i| picks.iter().filter(|p| **p == i).count() as f64 / 10_000.0;
        assert!((share(0) - 0.6).abs() < 0.03);
        assert!((share(1) - 0.3).abs() < 0.03);
        assert!((share(2) - 0.1).abs() < 0.02);
        assert_eq!(share(3), 0.0);
        let mut again = UserRng::seed_from_u64(user_seed(42, 0));
        let replay: Vec<usize> = (0..10_000)
            .map(|_| choose_scenario(&scs, &mut again))
            .collect();
        assert_eq!(picks, replay);
        assert_ne!(user_seed(42, 0), user_seed(42, 1));
    }

    #[test]
    fn streams_are_distinct_per_purpose_and_user() {
        let all = [RngStream::Scenario, RngStream::Steps, RngStream::Think];
        let mut seeds = std::collections::HashSet::new();
        for user in 0..50 {
            for s in all {
                assert!(seeds.insert(stream_seed(7, user, s)), "{user} {s:?}");
            }
        }
        assert_eq!(
            stream_seed(7, 3, RngStream::Steps),
            stream_seed(7, 3, RngStream::Steps)
        );
        assert_ne!(
            stream_seed(7, 3, RngStream::Steps),
            stream_seed(8, 3, RngStream::Steps)
        );
    }
}
