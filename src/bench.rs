//! `planrun bench`: how many real-time voice users one planrun process sustains, and how
//! honest its numbers stay while it does.
//!
//! The reference agent runs in a *separate process* (optionally pinned to other cores with
//! `taskset`) with fixed delays, so every figure planrun measures has a known true value. For
//! each user count the bench runs a closed loop of real-time turns — each user streams a 1 s
//! utterance in 20 ms PCM16 frames, sends `speech_end`, receives the agent's real-time reply
//! — and prints: users sustained, planrun CPU-seconds per user-second, CPU per WebSocket
//! message, peak RSS per user, pacing lag (actual − scheduled send time) and the
//! time-to-first-audio measurement error (measured − the agent's configured delay).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::distribution::format_duration;
use crate::engine;
use crate::metrics::progress::Progress;
use crate::plan;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub users: Vec<u32>,
    /// Length of each step (after the ramp).
    pub duration: Duration,
    /// Users start evenly over this.
    pub ramp: Duration,
    /// The agent's fixed end-of-speech → first-audio delay (its LLM latency; ASR and TTS 0).
    pub delay: Duration,
    /// Length of each reply.
    pub reply: Duration,
    /// Length of each utterance.
    pub utterance: Duration,
    /// Cores for the agent process (`taskset -c`), e.g. `1`.
    pub agent_cpus: Option<String>,
    /// Soak: one step (the first user count) this long after its ramp, RSS sampled every
    /// second; the slope between minute 1 and the end is printed.
    pub soak: Option<Duration>,
    /// Callers speak WebRTC (`--protocol webrtc`) instead of the raw WebSocket protocol.
    pub webrtc: bool,
}

/// One step's figures.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub users: u32,
    /// Users that were running at the end of the ramp and finished without a failed call.
    pub sustained: u64,
    pub calls: u64,
    pub failed_calls: u64,
    pub cpu_s: f64,
    pub user_s: f64,
    pub messages: u64,
    pub rss_base_mb: f64,
    pub rss_peak_mb: f64,
    /// Heap in use (glibc `mallinfo2`, MiB) before the step and at its highest: what planrun
    /// holds, without the allocator's free-but-kept pages that RSS also counts.
    pub heap_base_mb: f64,
    pub heap_peak_mb: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub err_p50_ms: f64,
    pub err_p99_ms: f64,
    pub agent_cpu_pct: f64,
    /// RSS and allocated heap (MiB) once a second from the start of the step: (seconds,
    /// RSS MiB, heap in use MiB).
    pub rss_series: Vec<(f64, f64, f64)>,
}

impl StepResult {
    pub fn cpu_per_user_s(&self) -> f64 {
        self.cpu_s / self.user_s.max(1e-9)
    }
    pub fn us_per_message(&self) -> f64 {
        self.cpu_s * 1e6 / (self.messages.max(1) as f64)
    }
    /// Peak RSS growth per user (KB): what the step cost the machine.
    pub fn kb_per_user(&self) -> f64 {
        (self.rss_peak_mb - self.rss_base_mb).max(0.0) * 1024.0 / f64::from(self.users.max(1))
    }

    /// Peak heap growth per user (KB): what planrun held. The gap to [`Self::kb_per_user`] is
    /// the allocator's fragmentation and retained pages.
    pub fn heap_kb_per_user(&self) -> f64 {
        (self.heap_peak_mb - self.heap_base_mb).max(0.0) * 1024.0 / f64::from(self.users.max(1))
    }

    /// RSS growth (KB/min) between `from_s` and the last sample (each point the median of
    /// the 10 s of samples ending at it, so one allocator burst does not decide); None when
    /// the step was shorter.
    pub fn rss_slope_kb_per_min(&self, from_s: f64) -> Option<(f64, f64, f64)> {
        self.slope(from_s, |p| p.1)
    }

    /// The same for the heap in use (glibc `mallinfo2`: bytes allocated and not freed), which
    /// tells growth of what planrun holds from allocator fragmentation.
    pub fn heap_slope_kb_per_min(&self, from_s: f64) -> Option<(f64, f64, f64)> {
        self.slope(from_s, |p| p.2)
    }

    fn slope(
        &self,
        from_s: f64,
        pick: impl Fn(&(f64, f64, f64)) -> f64,
    ) -> Option<(f64, f64, f64)> {
        let at = |t: f64| {
            let mut v: Vec<f64> = self
                .rss_series
                .iter()
                .filter(|p| p.0 <= t && p.0 > t - 10.0)
                .map(&pick)
                .collect();
            crate::stats::quantile(&mut v, 0.5)
        };
        let end = self.rss_series.last()?.0;
        if end < from_s + 30.0 {
            return None;
        }
        let (a, b) = (at(from_s)?, at(end)?);
        Some((a, b, (b - a) * 1024.0 / ((end - from_s) / 60.0)))
    }
}

/// CPU seconds (user + system) this process has used.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident set size of this process, MiB (from /proc; 0 where unavailable).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Heap bytes allocated and not yet freed (glibc), MiB; NaN elsewhere.
fn heap_mb() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as f64 / (1024.0 * 1024.0)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    f64::NAN
}

/// CPU ticks (utime + stime) of another process.
fn pid_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The agent in its own process; killed on drop.
struct AgentProcess {
    child: Child,
    url: String,
    /// The WebRTC signalling base URL (`http://HOST:PORT`), when the agent reported one.
    webrtc_url: Option<String>,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The agent process could not be started or did not answer.
    #[error("{0}")]
    Agent(String),
    /// A file of the benchmark could not be written.
    #[error("{0}")]
    Io(String),
    /// The generated plan did not load (a bug in the benchmark).
    #[error("{0}")]
    Plan(String),
    /// A step's run failed.
    #[error("{0}")]
    Run(String),
}

fn start_agent(cfg: &BenchConfig) -> Result<AgentProcess, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Agent(format!("cannot find planrun itself: {e}")))?;
    let delay = format!("{}ms", cfg.delay.as_millis());
    let reply = format!("{}ms", cfg.reply.as_millis());
    let agent_args = [
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--asr-latency",
        "0ms",
        "--llm-latency",
        &delay,
        "--tts-latency",
        "0ms",
        "--reply-duration",
        &reply,
    ];
    let mut cmd = match &cfg.agent_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = cmd
        .args(agent_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Agent(format!("cannot start the agent process: {e}")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| BenchError::Agent("the agent process has no stderr".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let first_word = |rest: &str| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("planrun agent listening on ") {
                let _ = tx.send((false, first_word(rest)));
            } else if let Some(rest) = line.strip_prefix("planrun agent WebRTC signalling on ") {
                let url = first_word(rest).trim_end_matches("/whip").to_string();
                let _ = tx.send((true, url));
            }
        }
    });
    let timeout =
        || BenchError::Agent("the agent process did not report its address within 20 s".into());
    let (_, url) = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| timeout())?;
    let webrtc_url = if cfg.webrtc {
        Some(
            rx.recv_timeout(Duration::from_secs(20))
                .map_err(|_| timeout())?
                .1,
        )
    } else {
        None
    };
    Ok(AgentProcess {
        child,
        url,
        webrtc_url,
    })
}

/// The plan of a `--protocol webrtc` step: the same turns over WebRTC. There is no control
/// channel, so the agent's VAD ends each turn (its default `vad_hangover`), and the reply is
/// listened to for its length instead of awaiting `response_end`.
fn webrtc_plan_text(cfg: &BenchConfig, users: u32, base: &str) -> String {
    format!(
        "name: bench_webrtc_{users}
target:
  url: {base}/whip
  protocol: webrtc
  connect_timeout: 30s
  webrtc: {{ice_timeout: 30s}}
load:
  users: {users}
  duration: {duration}
  ramp_up: {ramp}
  think_time: 300ms
  seed: 1
thresholds:
  ttfa:
    - threshold: p95 < 20s
      abort_on_fail: true
    - p99 < 20s over 10s
scenarios:
  - name: turn
    steps:
      - send_audio: {{tone: {utterance}, freq: 220}}
      - await: first_audio
        record: ttfa
        timeout: 20s
      - wait: {reply}
",
        duration = format_duration(cfg.duration + cfg.ramp),
        ramp = format_duration(cfg.ramp),
        utterance = format_duration(cfg.utterance),
        reply = format_duration(cfg.reply),
    )
}

/// The true time to first audio: the agent's fixed delay, plus its VAD's end-of-turn wait when
/// nothing tells it the turn ended (WebRTC).
fn true_ttfa(cfg: &BenchConfig) -> Duration {
    if cfg.webrtc {
        cfg.delay + crate::agent::AgentConfig::default().vad_hangover
    } else {
        cfg.delay
    }
}

fn plan_text(cfg: &BenchConfig, users: u32, url: &str) -> String {
    format!(
        "name: bench_{users}
target:
  url: {url}
  connect_timeout: 30s
load:
  users: {users}
  duration: {duration}
  ramp_up: {ramp}
  think_time: 300ms
  seed: 1
thresholds:
  ttfa:
    - threshold: p95 < 20s
      abort_on_fail: true
    - p99 < 20s over 10s
scenarios:
  - name: turn
    steps:
      - send_audio: {{tone: {utterance}, freq: 220}}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 20s
      - await: response_end
        timeout: 30s
",
        duration = format_duration(cfg.duration + cfg.ramp),
        ramp = format_duration(cfg.ramp),
        utterance = format_duration(cfg.utterance),
    )
}

fn quantile_ms(h: Option<&Histogram<u64>>, q: f64) -> f64 {
    h.filter(|h| !h.is_empty())
        .map_or(f64::NAN, |h| crate::stats::hist_ms(h, q))
}

async fn run_step(
    cfg: &BenchConfig,
    agent: &AgentProcess,
    users: u32,
) -> Result<StepResult, BenchError> {
    let dir = std::env::temp_dir().join(format!("planrun-bench-{}-{users}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("bench.yaml");
    let text = match &agent.webrtc_url {
        Some(base) if cfg.webrtc => webrtc_plan_text(cfg, users, base),
        _ => plan_text(cfg, users, &agent.url),
    };
    std::fs::write(&path, text)
        .map_err(|e| BenchError::Io(format!("cannot write {}: {e}", path.display())))?;
    let loaded = plan::load(&path).map_err(|e| BenchError::Plan(e.to_string()))?;
    let compiled = plan::compile::compile(&loaded).map_err(|e| BenchError::Plan(e.to_string()))?;

    let rss_base = rss_mb();
    let heap_base = heap_mb();
    let peak = Arc::new(AtomicU64::new(rss_base.to_bits()));
    let heap_peak = Arc::new(AtomicU64::new(heap_base.to_bits()));
    let done = Arc::new(AtomicBool::new(false));
    let t_start = Instant::now();
    let sampler = {
        let (peak, heap_peak, done) = (peak.clone(), heap_peak.clone(), done.clone());
        std::thread::spawn(move || {
            let mut series = Vec::new();
            let mut next = 0.0;
            while !done.load(Ordering::Relaxed) {
                let now = rss_mb();
                if now > f64::from_bits(peak.load(Ordering::Relaxed)) {
                    peak.store(now.to_bits(), Ordering::Relaxed);
                }
                let heap = heap_mb();
                if heap > f64::from_bits(heap_peak.load(Ordering::Relaxed)) {
                    heap_peak.store(heap.to_bits(), Ordering::Relaxed);
                }
                let t = t_start.elapsed().as_secs_f64();
                if t >= next {
                    series.push((t, now, heap));
                    next += 1.0;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            series
        })
    };
    // Every feature a real run has on: the timeline streamed to disk, the live (Prometheus)
    // metrics, and the abort monitor judging the bounded live summary once a second.
    let live_metrics = Arc::new(crate::metrics::live::LiveMetrics::default());
    let progress = Arc::new(Progress::with_live(Some(live_metrics.clone())));
    live_metrics.attach(&progress);
    let live: crate::report::timeline::LiveSummary =
        Arc::new(std::sync::Mutex::new(crate::metrics::Summary::new(
            crate::metrics::Recorder {
                windows: crate::metrics::Windows::for_thresholds(&compiled.thresholds),
                ..crate::metrics::Recorder::default()
            },
            compiled.metrics.clone(),
            Duration::ZERO,
            false,
        )));
    let timeline_path = dir.join("timeline.csv");
    let (sink, sink_rx) = std::sync::mpsc::channel();
    let stream =
        crate::report::timeline::Stream::start(&timeline_path, sink_rx, Some(live.clone()))
            .map_err(|e| BenchError::Io(e.to_string()))?;
    let monitor = {
        let (live, done, specs) = (live.clone(), done.clone(), compiled.thresholds.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if let Ok(mut s) = live.lock() {
                    s.elapsed = t_start.elapsed();
                    let _ = crate::judge::thresholds::evaluate(&s, &specs);
                }
                let _ = live_metrics.render();
            }
        })
    };
    let agent_ticks0 = pid_cpu_ticks(agent.child.id());
    let cpu0 = process_cpu_s();
    let started = Instant::now();
    let (_tx, rx) = watch::channel(false);
    let outcome = engine::run_observed(&compiled, rx, progress, Some(sink))
        .await
        .map_err(|e| BenchError::Run(e.to_string()))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu0;
    done.store(true, Ordering::Relaxed);
    let rss_series = sampler.join().unwrap_or_default();
    let _ = monitor.join();
    stream.finish().map_err(|e| BenchError::Io(e.to_string()))?;
    let agent_cpu_pct = match (agent_ticks0, pid_cpu_ticks(agent.child.id())) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / clock_ticks() / wall * 100.0,
        _ => f64::NAN,
    };

    let rec = &outcome.summary.recorder;
    let hist = |name: &str| rec.histograms.get(name);
    let lag = rec.send_lag.as_ref();
    let delay_ms = true_ttfa(cfg).as_secs_f64() * 1000.0;
    let failed_users = failed_users(&timeline_path);
    let _ = std::fs::remove_dir_all(&dir);
    let calls = rec.outcomes.len();
    let failed_calls = rec.outcomes.totals().failed + rec.outcomes.aborted;
    // Messages on the socket: frames sent (each paced frame records its lag), reply chunks
    // received (each but the first of a turn records a frame jitter; the first is the ttfa),
    // and one control message per turn.
    let sent = lag.map_or(0, Histogram::len);
    let received =
        hist("frame_jitter").map_or(0, Histogram::len) + hist("ttfa").map_or(0, Histogram::len);
    let turns = hist("ttfa").map_or(0, Histogram::len);
    // Each user is active from its ramp offset to the end: on average ramp/2 less than the run.
    let user_s = f64::from(users) * (wall - cfg.ramp.as_secs_f64() / 2.0).max(0.0);
    Ok(StepResult {
        users,
        sustained: u64::from(users).saturating_sub(failed_users.len() as u64),
        calls,
        failed_calls,
        cpu_s,
        user_s,
        messages: sent + received + turns,
        rss_base_mb: rss_base,
        rss_peak_mb: f64::from_bits(peak.load(Ordering::Relaxed)),
        heap_base_mb: heap_base,
        heap_peak_mb: f64::from_bits(heap_peak.load(Ordering::Relaxed)),
        lag_p50_ms: quantile_ms(lag, 0.5),
        lag_p99_ms: quantile_ms(lag, 0.99),
        lag_max_ms: lag
            .filter(|h| !h.is_empty())
            .map_or(f64::NAN, |h| h.max() as f64 / 1000.0),
        err_p50_ms: quantile_ms(hist("ttfa"), 0.5) - delay_ms,
        err_p99_ms: quantile_ms(hist("ttfa"), 0.99) - delay_ms,
        agent_cpu_pct,
        rss_series,
    })
}

/// Users that had a failed call, read from the streamed timeline one row at a time.
fn failed_users(path: &std::path::Path) -> std::collections::HashSet<u32> {
    let mut out = std::collections::HashSet::new();
    let Ok(mut rd) = csv::ReaderBuilder::new().flexible(true).from_path(path) else {
        return out;
    };
    for row in rd.records().map_while(Result::ok) {
        if row.get(4) == Some("iteration_end")
            && row.get(5) != Some("ok")
            && let Some(u) = row.get(1).and_then(|u| u.parse().ok())
        {
            out.insert(u);
        }
    }
    out
}

/// The table header and one row per step, as printed.
pub fn header() -> String {
    "users  sustained  calls  failed  cpu-s/user-s  µs/msg  msgs/s   KB/user  heap KB/user  lag p50/p99/max ms   ttfa err p50/p99 ms  agent cpu%".to_string()
}

pub fn row(r: &StepResult, wall_s: f64) -> String {
    format!(
        "{:>5}  {:>9}  {:>5}  {:>6}  {:>12.5}  {:>6.2}  {:>7.0}  {:>8.1}  {:>12.1}  {:>5.2}/{:>5.2}/{:>6.2}  {:>8.2}/{:>8.2}  {:>9.0}",
        r.users,
        r.sustained,
        r.calls,
        r.failed_calls,
        r.cpu_per_user_s(),
        r.us_per_message(),
        r.messages as f64 / wall_s.max(1e-9),
        r.kb_per_user(),
        r.heap_kb_per_user(),
        r.lag_p50_ms,
        r.lag_p99_ms,
        r.lag_max_ms,
        r.err_p50_ms,
        r.err_p99_ms,
        r.agent_cpu_pct,
    )
}

/// Run every step and print the table; returns the results.
pub async fn run(cfg: &BenchConfig) -> Result<Vec<StepResult>, BenchError> {
    let agent = start_agent(cfg)?;
    eprintln!(
        "planrun bench: agent process at {} (fixed delay {}, replies {}{}); planrun pid {}",
        agent.webrtc_url.as_deref().unwrap_or(&agent.url),
        format_duration(cfg.delay),
        format_duration(cfg.reply),
        cfg.agent_cpus
            .as_ref()
            .map(|c| format!(", pinned to cpus {c}"))
            .unwrap_or_default(),
        std::process::id()
    );
    if let Some(soak) = cfg.soak {
        let users = cfg.users.first().copied().unwrap_or(100);
        let soak_cfg = BenchConfig {
            duration: soak,
            ..cfg.clone()
        };
        println!("{}", header());
        let t0 = Instant::now();
        let r = run_step(&soak_cfg, &agent, users).await?;
        println!("{}", row(&r, t0.elapsed().as_secs_f64()));
        match r.rss_slope_kb_per_min(60.0) {
            Some((a, b, slope)) => println!(
                "soak: {users} users for {}: RSS {a:.1} MiB at minute 1, {b:.1} MiB at the end: {slope:+.1} KB/min",
                format_duration(soak + cfg.ramp)
            ),
            None => println!("soak: too short for a slope (needs at least 90 s)"),
        }
        if let Some((a, b, slope)) = r.heap_slope_kb_per_min(60.0) {
            println!(
                "soak: heap in use {a:.1} MiB at minute 1, {b:.1} MiB at the end: {slope:+.1} KB/min"
            );
        }
        return Ok(vec![r]);
    }
    println!("{}", header());
    let mut out = Vec::new();
    for &users in &cfg.users {
        let t0 = Instant::now();
        let r = run_step(cfg, &agent, users).await?;
        println!("{}", row(&r, t0.elapsed().as_secs_f64()));
        out.push(r);
    }
    Ok(out)
}
