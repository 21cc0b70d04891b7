//! The command line: parse arguments, call the library, map outcomes to exit codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::distribution::Dist;
use crate::engine::{self, Progress};
use crate::judge::thresholds;
use crate::plan::compile::{CompiledPlan, TargetUrl};
use crate::plan::model::ReportFormat;
use crate::report::{ReportView, RunFiles};
use crate::resources::Sampler;
use crate::{agent, plan, report};

/// Exit codes.
pub mod exit {
    /// Every threshold passed.
    pub const PASSED: u8 = 0;
    /// A threshold failed.
    pub const THRESHOLD_FAILED: u8 = 1;
    /// Invalid plan or usage.
    pub const INVALID: u8 = 2;
    /// The run could not proceed (e.g. the target refused every connection).
    pub const CANNOT_RUN: u8 = 3;
    /// A metric regressed against the baseline (`compare`, `--baseline`) beyond the tolerance
    /// and significantly.
    pub const REGRESSED: u8 = 4;
    /// Stopped with Ctrl-C / SIGINT (the report is still written).
    pub const INTERRUPTED: u8 = 130;
    /// Stopped with SIGTERM (the report is still written).
    pub const TERMINATED: u8 = 143;

    /// The worse of two run outcomes (for sweeps): stopped > cannot run > threshold failed >
    /// regressed > passed.
    pub fn worst(a: u8, b: u8) -> u8 {
        let rank = |c: u8| match c {
            PASSED => 0,
            REGRESSED => 1,
            THRESHOLD_FAILED => 2,
            INVALID => 3,
            CANNOT_RUN => 4,
            _ => 5,
        };
        if rank(b) > rank(a) { b } else { a }
    }
}

const EXAMPLES: &str = "\
Examples:
  planrun plans/quickstart.yaml                 run a plan (same as `planrun run …`)
  planrun plans/quickstart.yaml --users 20      override the user count
  planrun run plans/quickstart.yaml --target ws://127.0.0.1:9000/
  planrun validate plans/*.yaml plans/*.toml    check plans without running them
  planrun schema > schemas/plan.schema.json     print the plan's JSON Schema
  planrun agent --listen 127.0.0.1:9000         run the built-in reference agent
  planrun plans/quickstart.yaml --format html,json --template notes.md=notes.md.j2
  planrun compare reports/main-run reports/pr-run   compare two runs (Markdown)
  planrun plans/quickstart.yaml --baseline reports/main-run --tolerance 10%
  planrun report reports/quickstart-20250101T000000Z  re-render a finished run's reports

Exit codes: 0 all thresholds passed, 1 a threshold failed, 2 invalid plan or usage,
3 the run could not proceed (e.g. every connection refused), 4 a metric regressed against
the baseline, 130 stopped with Ctrl-C (SIGINT), 143 stopped with SIGTERM. A run stopped by an
`abort_on_fail` threshold exits 1; one capped by --max-duration is judged by its thresholds.";

#[derive(Debug, Parser)]
#[command(
    name = "planrun",
    version,
    about = "Load tester for real-time voice agents: run a declarative plan, judge it by its thresholds, write reports.",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The plan to run (YAML or TOML).
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan.
    Run {
        /// The plan to run (YAML or TOML).
        plan: PathBuf,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Check plans without running them.
    Validate {
        #[arg(required = true)]
        plans: Vec<PathBuf>,
    },
    /// Print the plan's JSON Schema.
    Schema,
    /// Run the built-in reference voice agent.
    Agent(AgentArgs),
    /// Measure how many real-time users this process sustains against the agent in a separate
    /// process, and planrun's own measurement error (see README, "Benchmark").
    Bench(BenchArgs),
    /// Compare two runs (folders or metrics.json files): per-metric deltas as Markdown; exits 4
    /// when a metric regressed beyond the tolerance and significantly.
    Compare {
        /// The baseline run.
        base: PathBuf,
        /// The run to judge.
        new: PathBuf,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Merge the result folders of a sharded run (`--shard i/n`) into one report with exact
    /// percentiles; exits like a run (0 passed, 1 a threshold failed).
    Merge {
        /// The shards' report folders.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where to write the merged report (default: `<plan name>-merged` beside the first
        /// shard folder).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
        /// Print only the verdict and the report folder.
        #[arg(long, short)]
        quiet: bool,
        /// Write into the output folder even when it already holds files.
        #[arg(long)]
        overwrite: bool,
    },
    /// Re-render a finished run's reports from its metrics.json and run.json.
    Report {
        /// The run folder.
        dir: PathBuf,
        #[command(flatten)]
        out: OutputArgs,
        /// Write into this folder instead of the run folder.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Regression gate settings.
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// Relative p95 increase tolerated before a metric counts as regressed (`10%` or `0.1`).
    #[arg(long, default_value = "10%", value_parser = parse_fraction, value_name = "PCT")]
    pub tolerance: f64,
    /// Significance level of the Mann–Whitney and two-proportion tests.
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub alpha: f64,
}

impl Default for GateArgs {
    fn default() -> Self {
        let d = report::compare::Options::default();
        GateArgs {
            tolerance: d.tolerance,
            alpha: d.alpha,
        }
    }
}

impl GateArgs {
    fn options(&self) -> report::compare::Options {
        report::compare::Options {
            tolerance: self.tolerance,
            alpha: self.alpha,
        }
    }
}

/// Which report files to write.
#[derive(Debug, Clone, Args, Default)]
pub struct OutputArgs {
    /// Report formats, comma-separated: md, html, json, csv, junit (default: the plan's
    /// `report.formats`, else all).
    #[arg(long, value_delimiter = ',', value_parser = parse_format, value_name = "LIST")]
    pub format: Vec<ReportFormat>,
    /// Render a template into the report folder: NAME is the output file (`summary.md` and
    /// `report.html` replace the built-ins), PATH the minijinja template. Repeatable.
    #[arg(long = "template", value_parser = parse_template, value_name = "NAME=PATH")]
    pub templates: Vec<(String, PathBuf)>,
}

fn parse_format(s: &str) -> Result<ReportFormat, String> {
    match s.trim() {
        "md" | "markdown" => Ok(ReportFormat::Md),
        "html" => Ok(ReportFormat::Html),
        "json" => Ok(ReportFormat::Json),
        "csv" => Ok(ReportFormat::Csv),
        "junit" | "xml" => Ok(ReportFormat::Junit),
        other => Err(format!(
            "unknown format `{other}`, expected md, html, json, csv or junit"
        )),
    }
}

fn parse_template(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.trim().is_empty() && !path.trim().is_empty() => {
            Ok((name.trim().to_string(), PathBuf::from(path.trim())))
        }
        _ => Err(format!("`{s}` is not NAME=PATH (e.g. summary.md=my.md.j2)")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a fraction like 10% or 0.1"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a non-negative fraction"))
    }
}

#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    /// Report folder (default: reports/<plan name>-<UTC timestamp>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Target URL overriding the plan's (`builtin`, ws://…, wss://…).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Number of virtual users overriding the plan's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: Option<u32>,
    /// RNG seed overriding the plan's.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Print only the verdict and the report folder.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Compare with a previous run (folder or metrics.json): writes comparison.md and exits 4
    /// when a metric regressed.
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Also chart the CPU and memory of this process (the agent under test).
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<u32>,
    /// Cap the whole run (all counts of a sweep together), e.g. `30s`, `10m`: iterations in
    /// flight are aborted and counted, the report says the run was capped.
    #[arg(long, value_name = "DURATION", value_parser = parse_max_duration)]
    pub max_duration: Option<Duration>,
    /// Write into the report folder even when it already holds files (default: a fresh
    /// `-2`, `-3`, … folder beside it).
    #[arg(long)]
    pub overwrite: bool,
    /// Serve live Prometheus metrics on this address during the run (`GET /metrics`), e.g.
    /// `127.0.0.1:9464`; port 0 picks a free port. The bound address is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving the final metrics this long after the run (for a last scrape), e.g. `15s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_max_duration, requires = "metrics_addr")]
    pub metrics_linger: Option<Duration>,
    /// Limit (ms) for planrun's pacing lag p99 and event-loop delay p99: above it the run is
    /// flagged because planrun itself was the bottleneck.
    #[arg(long, value_name = "MS", default_value_t = crate::health::DEFAULT_LAG_LIMIT_MS, value_parser = parse_lag_limit)]
    pub generator_lag_limit: f64,
    /// Run only shard INDEX (0-based) of COUNT: global users INDEX, INDEX+COUNT, … (default
    /// in a Kubernetes Indexed Job: JOB_COMPLETION_INDEX of PLANRUN_SHARDS). Merge the shards'
    /// folders with `planrun merge`.
    #[arg(long, value_name = "INDEX/COUNT", value_parser = parse_shard)]
    pub shard: Option<crate::shard::Shard>,
}

fn parse_lag_limit(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` must be a positive number of milliseconds")),
    }
}

fn parse_shard(s: &str) -> Result<crate::shard::Shard, String> {
    s.parse()
}

fn parse_max_duration(s: &str) -> Result<Duration, String> {
    match crate::distribution::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq)]
enum StopCause {
    /// SIGINT (Ctrl-C) or SIGTERM: the signal's name and the exit code.
    Signal(&'static str, u8),
    MaxDuration(Duration),
    /// An `abort_on_fail` threshold failed: `metric expression (observed …)`.
    Threshold(String),
}

impl StopCause {
    fn kind(&self) -> &'static str {
        match self {
            StopCause::Signal(..) => "signal",
            StopCause::MaxDuration(_) => "max_duration",
            StopCause::Threshold(_) => "threshold",
        }
    }
    fn describe(&self) -> String {
        match self {
            StopCause::Signal(name, _) => format!("stopped by {name}"),
            StopCause::MaxDuration(d) => format!(
                "capped at {} by --max-duration",
                crate::distribution::format_duration(*d)
            ),
            StopCause::Threshold(t) => format!("aborted by threshold {t}"),
        }
    }
}

/// The run's stop switch: the first cause wins; every stop turns the engine's watch on.
#[derive(Clone)]
struct StopControl {
    tx: Arc<watch::Sender<bool>>,
    cause: Arc<std::sync::Mutex<Option<StopCause>>>,
}

impl StopControl {
    fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            StopControl {
                tx: Arc::new(tx),
                cause: Arc::new(std::sync::Mutex::new(None)),
            },
            rx,
        )
    }
    /// Stop the run; returns false when it was already stopping.
    fn stop(&self, cause: StopCause) -> bool {
        let first = match self.cause.lock() {
            Ok(mut c) if c.is_none() => {
                *c = Some(cause);
                true
            }
            _ => false,
        };
        let _ = self.tx.send(true);
        first
    }
    fn cause(&self) -> Option<StopCause> {
        self.cause.lock().ok().and_then(|c| c.clone())
    }
}

/// Stop on SIGINT/SIGTERM (report written with what was measured); a second signal exits at
/// once (the streamed timeline is already on disk).
async fn watch_signals(ctl: StopControl, quiet: bool) {
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("planrun: cannot watch SIGTERM: {e}");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let got = tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|()| ("SIGINT", exit::INTERRUPTED)),
            s = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => s.map(|()| ("SIGTERM", exit::TERMINATED)),
        };
        #[cfg(not(unix))]
        let got = tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| ("SIGINT", exit::INTERRUPTED));
        let Some((name, code)) = got else { return };
        if ctl.stop(StopCause::Signal(name, code)) {
            if !quiet {
                eprintln!(
                    "\nplanrun: stopping ({name}); finishing the report… (again to exit at once)"
                );
            }
        } else {
            eprintln!("\nplanrun: {name} again: exiting now; the streamed timeline.csv is on disk");
            std::process::exit(i32::from(code));
        }
    }
}

/// The report folder to use: `wanted`, or — when it already holds files and `overwrite` is not
/// set — the first free `wanted-2`, `wanted-3`, …
fn fresh_out_dir(wanted: &std::path::Path, overwrite: bool) -> PathBuf {
    let busy = |p: &std::path::Path| {
        std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()) || p.is_file()
    };
    if overwrite || !busy(wanted) {
        return wanted.to_path_buf();
    }
    let name = wanted
        .file_name()
        .map_or_else(|| "report".to_string(), |n| n.to_string_lossy().to_string());
    (2u32..)
        .map(|n| wanted.with_file_name(format!("{name}-{n}")))
        .find(|p| !busy(p))
        .unwrap_or_else(|| wanted.to_path_buf())
}

fn parse_dist(s: &str) -> Result<Dist, crate::distribution::DistError> {
    s.parse()
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR")]
    pub listen: String,
    /// Sample rate (Hz) of the audio in both directions.
    #[arg(long, default_value_t = 16_000)]
    pub sample_rate: u32,
    /// End of speech → transcript (jitter expression, e.g. `50ms`, `40ms..80ms`).
    #[arg(long, value_parser = parse_dist)]
    pub asr_latency: Option<Dist>,
    /// Transcript → first token.
    #[arg(long, value_parser = parse_dist)]
    pub llm_latency: Option<Dist>,
    /// First token → first audio.
    #[arg(long, value_parser = parse_dist)]
    pub tts_latency: Option<Dist>,
    /// Length of each reply.
    #[arg(long, value_parser = parse_dist)]
    pub reply_duration: Option<Dist>,
    /// User speech during a reply → reply stops.
    #[arg(long, value_parser = parse_dist)]
    pub barge_in_delay: Option<Dist>,
    /// Seed of the agent's RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `planrun bench` settings.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// User counts to measure, one step each.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    pub users: Vec<u32>,
    /// Length of each step after its ramp.
    #[arg(long, value_parser = crate::distribution::parse_duration, default_value = "20s")]
    pub duration: std::time::Duration,
    /// Users start evenly over this.
    #[arg(long, value_parser = crate::distribution::parse_duration, default_value = "10s")]
    pub ramp: std::time::Duration,
    /// The agent's fixed delay from end of speech to first audio (the true TTFA).
    #[arg(long, value_parser = crate::distribution::parse_duration, default_value = "200ms")]
    pub delay: std::time::Duration,
    /// Length of each reply.
    #[arg(long, value_parser = crate::distribution::parse_duration, default_value = "2s")]
    pub reply: std::time::Duration,
    /// Length of each utterance.
    #[arg(long, value_parser = crate::distribution::parse_duration, default_value = "1s")]
    pub utterance: std::time::Duration,
    /// Pin the agent process to these cores (`taskset -c LIST`), e.g. `1`.
    #[arg(long, value_name = "LIST")]
    pub agent_cpus: Option<String>,
}

impl BenchArgs {
    fn config(&self) -> crate::bench::BenchConfig {
        crate::bench::BenchConfig {
            users: self.users.clone(),
            duration: self.duration,
            ramp: self.ramp,
            delay: self.delay,
            reply: self.reply,
            utterance: self.utterance,
            agent_cpus: self.agent_cpus.clone(),
        }
    }
}

impl AgentArgs {
    fn config(&self) -> agent::AgentConfig {
        let mut c = agent::AgentConfig {
            sample_rate: self.sample_rate,
            seed: self.seed,
            ..agent::AgentConfig::default()
        };
        let pairs = [
            (&mut c.asr_latency, &self.asr_latency),
            (&mut c.llm_latency, &self.llm_latency),
            (&mut c.tts_latency, &self.tts_latency),
            (&mut c.reply_duration, &self.reply_duration),
            (&mut c.barge_in_delay, &self.barge_in_delay),
        ];
        for (dst, src) in pairs {
            if let Some(d) = src {
                *dst = d.clone();
            }
        }
        c
    }
}

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID
            } else {
                exit::PASSED
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("planrun: cannot start the async runtime: {e}");
            return exit::CANNOT_RUN;
        }
    };
    runtime.block_on(dispatch(cli))
}

/// Run a parsed command line.
pub async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Some(Command::Run { plan, args }) => run_plan(plan, args).await,
        Some(Command::Validate { plans }) => validate(&plans),
        Some(Command::Schema) => {
            println!("{}", schema_json());
            exit::PASSED
        }
        Some(Command::Compare { base, new, gate }) => compare_runs(&base, &new, &gate),
        Some(Command::Report { dir, out, out_dir }) => rerender(&dir, &out, out_dir.as_deref()),
        Some(Command::Bench(args)) => match crate::bench::run(&args.config()).await {
            Ok(_) => exit::PASSED,
            Err(e) => {
                eprintln!("planrun bench: {e}");
                exit::CANNOT_RUN
            }
        },
        Some(Command::Merge {
            dirs,
            out,
            output,
            quiet,
            overwrite,
        }) => merge_shards(&dirs, out, &output, quiet, overwrite),
        Some(Command::Agent(args)) => match agent::serve_forever(&args.listen, args.config()).await
        {
            Ok(()) => exit::PASSED,
            Err(e) => {
                eprintln!("planrun agent: {e:#}");
                exit::CANNOT_RUN
            }
        },
        None => match cli.plan {
            Some(plan) => run_plan(plan, cli.run).await,
            None => {
                eprintln!("planrun: no plan given\n\nUsage: planrun PLAN [OPTIONS]\n\n{EXAMPLES}");
                exit::INVALID
            }
        },
    }
}

/// The plan's JSON Schema, as checked in at `schemas/plan.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(plan::Plan);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

fn validate(plans: &[PathBuf]) -> u8 {
    let mut code = exit::PASSED;
    for p in plans {
        // Inline secrets are warnings: printed, but the plan still validates.
        for w in plan::secrets::scan_file(p) {
            eprint!("{w}");
        }
        match plan::load(p).and_then(|lp| plan::compile::compile(&lp)) {
            Ok(c) => println!(
                "{}: ok ({} scenario(s), {} threshold(s))",
                p.display(),
                c.scenarios.len(),
                c.thresholds.len()
            ),
            Err(e) => {
                eprint!("{e}");
                code = exit::INVALID;
            }
        }
    }
    code
}

/// Everything a run writes besides the load itself.
struct RunSetup {
    outputs: report::Outputs,
    out: PathBuf,
    baseline: Option<ReportView>,
    gate: report::compare::Options,
    quiet: bool,
    target_pid: Option<u32>,
    stop: StopControl,
    /// Live metrics (`--metrics-addr`).
    live: Option<Arc<crate::live::LiveMetrics>>,
    /// `--generator-lag-limit`, ms.
    lag_limit_ms: f64,
}

async fn run_plan(path: PathBuf, args: RunArgs) -> u8 {
    for w in plan::secrets::scan_file(&path) {
        eprint!("{w}");
    }
    let compiled = match plan::load(&path).and_then(|lp| plan::compile::compile(&lp)) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return exit::INVALID;
        }
    };
    let mut compiled = compiled;
    if let Some(t) = &args.target {
        let t = t.trim();
        if t != "builtin" && !(t.starts_with("ws://") || t.starts_with("wss://")) {
            eprintln!("planrun: --target `{t}` must be `builtin`, ws://… or wss://…");
            return exit::INVALID;
        }
        compiled.target.url = TargetUrl::parse(t);
    }
    let counts: Vec<u32> = match args.users {
        Some(u) => vec![u],
        None if compiled.load.sweep.len() > 1 => compiled.load.sweep.clone(),
        None => vec![compiled.load.users],
    };
    if let Some(s) = args.seed {
        compiled.load.seed = s;
    }
    compiled.load.shard = match crate::shard::resolve(args.shard, |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("planrun: {e}");
            return exit::INVALID;
        }
    };
    if let Some(s) = compiled.load.shard {
        if compiled.load.stages.is_some() {
            eprintln!(
                "planrun: --shard {s} with ramping `stages` is not supported yet: shard a fixed \
                 user count or an arrival rate"
            );
            return exit::INVALID;
        }
        if counts.len() > 1 {
            eprintln!(
                "planrun: --shard {s} with a sweep of user counts: shard one count (--users N)"
            );
            return exit::INVALID;
        }
        let mine = s.users(counts[0]).len();
        if !args.quiet {
            eprintln!(
                "planrun: shard {s}: {mine} of {} user(s) (global indexes {}, {}, …)",
                counts[0],
                s.index,
                s.index + s.count
            );
        }
        if mine == 0 {
            eprintln!(
                "planrun: warning: shard {s} has no users (the plan has {}): it records nothing",
                counts[0]
            );
        }
    }

    // Templates: the plan's (relative to its folder), then --template (relative to the cwd).
    let plan_dir = compiled
        .source
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut pairs: Vec<(String, PathBuf)> = compiled
        .report
        .templates
        .iter()
        .map(|(name, p)| (name.clone(), plan_dir.join(p)))
        .collect();
    pairs.extend(args.output.templates.iter().cloned());
    let templates = match report::load_templates(&pairs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("planrun: {e}");
            return exit::INVALID;
        }
    };
    let baseline = match &args.baseline {
        Some(b) => match report::compare::load_run(b) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("planrun: baseline: {e}");
                return exit::INVALID;
            }
        },
        None => None,
    };
    let formats = if args.output.format.is_empty() {
        compiled.report.formats.clone()
    } else {
        args.output.format.clone()
    };
    let wanted = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out_dir(&compiled, std::time::SystemTime::now()));
    let out = fresh_out_dir(&wanted, args.overwrite);
    if out != wanted {
        eprintln!(
            "planrun: {} already holds files; writing this run to {} (--overwrite to reuse it)",
            wanted.display(),
            out.display()
        );
    }
    match crate::resources::raise_fd_limit() {
        Ok(Some((from, to))) if !args.quiet => {
            eprintln!("planrun: raised the open-file limit from {from} to {to}");
        }
        Ok(_) => {}
        Err(e) if !args.quiet => eprintln!("planrun: {e}"),
        Err(_) => {}
    }
    let (stop, stop_rx) = StopControl::new();
    let (live, server) = match args.metrics_addr {
        Some(addr) => match crate::live::bind(addr).await {
            Ok(listener) => {
                let bound = listener.local_addr().map_or(addr, |a| a);
                eprintln!("planrun: live metrics on http://{bound}/metrics");
                let live = Arc::new(crate::live::LiveMetrics::default());
                let server = tokio::spawn(crate::live::serve(listener, live.clone()));
                (Some(live), Some(server))
            }
            Err(e) => {
                eprintln!("planrun: {e}");
                return exit::CANNOT_RUN;
            }
        },
        None => (None, None),
    };
    let setup = RunSetup {
        outputs: report::Outputs {
            formats,
            templates,
            write_data: true,
        },
        out,
        baseline,
        gate: args.gate.options(),
        quiet: args.quiet,
        target_pid: args.target_pid,
        stop: stop.clone(),
        live,
        lag_limit_ms: args.generator_lag_limit,
    };

    let ctrl_c = tokio::spawn(watch_signals(stop.clone(), args.quiet));
    let cap = args.max_duration.map(|d| {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if stop.stop(StopCause::MaxDuration(d)) {
                eprintln!(
                    "\nplanrun: --max-duration {} reached; stopping and writing the report…",
                    crate::distribution::format_duration(d)
                );
            }
        })
    });
    let sweep = counts.len() > 1;
    let mut code = exit::PASSED;
    let mut views: Vec<(u32, ReportView)> = Vec::new();
    for &users in &counts {
        compiled.load.users = users;
        if compiled.report.record_audio != crate::plan::model::RecordAudio::None {
            let name = if sweep {
                format!("audio_{users}_users")
            } else {
                "audio".into()
            };
            compiled.audio_dir = Some(setup.out.join(name));
        }
        let suffix = if sweep {
            format!("_{users}_users")
        } else {
            String::new()
        };
        let (c, view) = run_once(&compiled, &setup, stop_rx.clone(), &suffix).await;
        code = exit::worst(code, c);
        if let Some(v) = view {
            views.push((users, v));
        }
        if *stop_rx.borrow() || c == exit::CANNOT_RUN {
            break;
        }
    }
    ctrl_c.abort();
    if let Some(c) = cap {
        c.abort();
    }
    if sweep && !views.is_empty() {
        match write_sweep(&compiled.name, &views, &setup.out) {
            Ok(()) => println!(
                "sweep: {} ({} runs)",
                setup.out.join("index.html").display(),
                views.len()
            ),
            Err(e) => {
                eprintln!("planrun: {e}");
                code = exit::worst(code, exit::CANNOT_RUN);
            }
        }
    }
    if let Some(server) = server {
        if let Some(d) = args.metrics_linger.filter(|_| !*stop_rx.borrow()) {
            eprintln!(
                "planrun: serving the final metrics for {}",
                crate::distribution::format_duration(d)
            );
            let mut rx = stop_rx.clone();
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                _ = rx.wait_for(|s| *s) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        server.abort();
    }
    code
}

fn write_sweep(
    plan: &str,
    views: &[(u32, ReportView)],
    out: &std::path::Path,
) -> Result<(), String> {
    let put = |name: &str, body: String| {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    put("sweep.md", report::sweep::markdown(plan, views))?;
    put("index.html", report::sweep::index_html(plan, views))
}

/// Run the plan once (one user count) and write its reports.
async fn run_once(
    compiled: &CompiledPlan,
    setup: &RunSetup,
    stop_rx: watch::Receiver<bool>,
    suffix: &str,
) -> (u8, Option<ReportView>) {
    let progress = Arc::new(Progress::with_live(setup.live.clone()));
    if let Some(live) = &setup.live {
        live.attach(&progress);
    }
    let (done_tx, done_rx) = watch::channel(false);
    let ticker = (!setup.quiet).then(|| {
        tokio::spawn(progress_display(
            progress.clone(),
            compiled.load.iterations.map(|n| {
                n * crate::shard::users_of(compiled.load.shard, compiled.load.users).len() as u64
            }),
            compiled.load.duration,
            done_rx,
        ))
    });
    if !setup.quiet {
        eprintln!(
            "planrun: running `{}` with {} user(s) against {}",
            compiled.name,
            compiled.load.users,
            crate::redact::redact(&compiled.target.url.to_string())
        );
    }
    let builtin = compiled.target.url == TargetUrl::Builtin;
    // The folder describes itself from the start (run_info.json), and the timeline is streamed
    // into it, so a killed run still leaves something `planrun report` can render.
    let info = report::RunInfo::new(
        compiled,
        &compiled.target.url.to_string(),
        std::time::SystemTime::now(),
    );
    let info_path = setup.out.join(report::output_name("run_info.json", suffix));
    let info_written = std::fs::create_dir_all(&setup.out)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_string_pretty(&info).map_err(|e| e.to_string()))
        .and_then(|j| report::write_atomic(&info_path, (j + "\n").as_bytes()));
    if let Err(e) = info_written {
        eprintln!("planrun: {e}");
    }
    let abort_specs: Vec<_> = compiled
        .thresholds
        .iter()
        .filter(|t| t.expr.abort_on_fail)
        .cloned()
        .collect();
    let live: Option<report::timeline::LiveSummary> = (!abort_specs.is_empty()).then(|| {
        Arc::new(std::sync::Mutex::new(crate::metrics::Summary::new(
            crate::metrics::Recorder::default(),
            compiled.metrics.clone(),
            Duration::ZERO,
            false,
        )))
    });
    let (sink, sink_rx) = std::sync::mpsc::channel();
    let csv_path = setup.out.join(report::output_name("timeline.csv", suffix));
    let stream = match report::timeline::Stream::start(&csv_path, sink_rx, live.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("planrun: the timeline is not streamed: {e}");
            None
        }
    };
    let monitor =
        live.map(|live| tokio::spawn(monitor_thresholds(live, abort_specs, setup.stop.clone())));
    let sampler = Sampler::start(
        setup.target_pid,
        builtin && setup.target_pid.is_none(),
        Duration::from_secs(1),
    );
    let outcome = engine::run_observed(
        compiled,
        stop_rx,
        progress,
        stream.is_some().then_some(sink),
    )
    .await;
    if let Some(m) = monitor {
        m.abort();
    }
    if let Some(st) = stream {
        match st.finish() {
            Ok(_) if !setup.outputs.formats.contains(&ReportFormat::Csv) => {
                let _ = std::fs::remove_file(&csv_path);
            }
            Ok(_) => {}
            Err(e) => eprintln!("planrun: {e}"),
        }
    }
    let resources = tokio::task::spawn_blocking(move || sampler.stop())
        .await
        .ok();
    let _ = done_tx.send(true);
    if let Some(t) = ticker {
        let _ = t.await;
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("planrun: {e}");
            return (exit::CANNOT_RUN, None);
        }
    };
    let results = thresholds::evaluate(&outcome.summary, &compiled.thresholds);
    let mut rep =
        report::RunReport::build(compiled, &outcome, results).with_resources(resources.as_ref());
    rep.generator.judge(
        setup.lag_limit_ms,
        resources
            .as_ref()
            .map_or_else(|| report::RunEnvironment::current().cpus, |r| r.cpus.max(1)),
        builtin,
    );
    let cause = setup.stop.cause().filter(|_| rep.aborted);
    if let Some(c) = &cause {
        rep.stopped_by = Some(c.kind().to_string());
        rep.stop_reason = Some(c.describe());
        if matches!(c, StopCause::MaxDuration(_)) {
            rep.passed = thresholds::all_passed(&rep.thresholds);
        }
    }
    let run_data = report::RunData::new(&outcome.summary.recorder.iterations, resources);
    let files = RunFiles::new(&rep, run_data);
    let written = files
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|f| report::write_outputs(f, &setup.outputs, &setup.out, suffix));

    let mut stdout = std::io::stdout().lock();
    if !setup.quiet {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let _ = report::console_summary_color(&rep, &mut stdout, color);
    } else {
        let verdict = if rep.passed { "PASSED" } else { "FAILED" };
        let shard = rep
            .shard
            .as_ref()
            .map_or(String::new(), |s| format!(" (shard {})", s.shard()));
        let _ = writeln!(stdout, "{verdict}: {}{shard}", rep.plan);
        if let Some(r) = &rep.stop_reason {
            let _ = writeln!(stdout, "  {r}");
        }
        for t in rep.thresholds.iter().filter(|t| !t.passed) {
            let _ = writeln!(
                stdout,
                "  FAIL {} {} (observed {})",
                t.metric, t.expression, t.observed_text
            );
        }
    }
    let mut regressed = false;
    if let (Some(base), Ok(f)) = (&setup.baseline, &files) {
        let cmp = report::compare::compare(base, &f.view, setup.gate);
        let md = report::compare::markdown(&cmp);
        let _ = writeln!(stdout, "\n{md}");
        let path = setup.out.join(report::output_name("comparison.md", suffix));
        if let Err(e) = std::fs::write(&path, &md) {
            eprintln!("planrun: cannot write {}: {e}", path.display());
        }
        regressed = cmp.regressed();
    }
    match &written {
        Ok(_) => {
            let _ = writeln!(stdout, "report: {}", setup.out.display());
        }
        Err(e) => eprintln!("planrun: {e}"),
    }
    let _ = stdout.flush();

    let counts = &rep.iterations;
    let not_connected: u64 = ["connect_error", "handshake_rejected", "tls_error"]
        .iter()
        .filter_map(|c| rep.errors.get(*c))
        .sum();
    let all_refused = counts.total > 0 && not_connected == counts.total;
    let code = if let Some(StopCause::Signal(_, c)) = &cause {
        *c
    } else if let Some(StopCause::Threshold(_)) = &cause {
        exit::THRESHOLD_FAILED
    } else if rep.aborted && cause.is_none() {
        exit::INTERRUPTED
    } else if all_refused {
        eprintln!(
            "planrun: every connection to {} failed; the run could not proceed",
            rep.target
        );
        exit::CANNOT_RUN
    } else if written.is_err() {
        exit::CANNOT_RUN
    } else if !rep.passed {
        exit::THRESHOLD_FAILED
    } else if regressed {
        exit::REGRESSED
    } else {
        exit::PASSED
    };
    (code, files.ok().map(|f| f.view))
}

/// Judge the `abort_on_fail` thresholds about once a second on everything finished so far;
/// stop the run when one can no longer pass (after its `delay_abort_eval`).
async fn monitor_thresholds(
    live: report::timeline::LiveSummary,
    specs: Vec<crate::plan::compile::ThresholdSpec>,
    stop: StopControl,
) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        let due: Vec<_> = specs
            .iter()
            .filter(|t| elapsed >= t.expr.delay_abort_eval)
            .cloned()
            .collect();
        if due.is_empty() {
            continue;
        }
        let verdict = {
            let Ok(mut s) = live.lock() else { return };
            s.elapsed = elapsed;
            let results = thresholds::evaluate(&s, &due);
            due.iter()
                .zip(results)
                .find(|(spec, r)| thresholds::can_no_longer_pass(spec, r))
                .map(|(_, r)| {
                    format!(
                        "{} {} (observed {})",
                        r.metric, r.expression, r.observed_text
                    )
                })
        };
        if let Some(what) = verdict {
            if stop.stop(StopCause::Threshold(what.clone())) {
                eprintln!(
                    "\nplanrun: threshold {what} can no longer pass; stopping (abort_on_fail)…"
                );
            }
            return;
        }
    }
}

fn compare_runs(base: &std::path::Path, new: &std::path::Path, gate: &GateArgs) -> u8 {
    let load = |p: &std::path::Path| report::compare::load_run(p);
    let (b, n) = match (load(base), load(new)) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("planrun compare: {e}");
            return exit::INVALID;
        }
    };
    let cmp = report::compare::compare(&b, &n, gate.options());
    print!("{}", report::compare::markdown(&cmp));
    if cmp.regressed() {
        exit::REGRESSED
    } else {
        exit::PASSED
    }
}

/// `planrun report RUN_DIR`: re-render from metrics.json + run.json.
fn rerender(dir: &std::path::Path, args: &OutputArgs, out_dir: Option<&std::path::Path>) -> u8 {
    let templates = match report::load_templates(&args.templates) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("planrun report: {e}");
            return exit::INVALID;
        }
    };
    let formats = if args.format.is_empty() {
        ReportFormat::ALL.to_vec()
    } else {
        args.format.clone()
    };
    let outputs = report::Outputs {
        formats,
        templates,
        write_data: false,
    };
    let out = out_dir.unwrap_or(dir);
    let suffixes = match report::saved_runs(dir) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            eprintln!("planrun report: {} holds no metrics.json", dir.display());
            return exit::INVALID;
        }
        Err(e) => {
            eprintln!("planrun report: {e}");
            return exit::INVALID;
        }
    };
    let mut views = Vec::new();
    for suffix in &suffixes {
        let result = RunFiles::load(dir, suffix)
            .and_then(|f| report::write_outputs(&f, &outputs, out, suffix).map(|w| (f, w)));
        match result {
            Ok((f, written)) => {
                for p in written {
                    println!("{}", p.display());
                }
                views.push((f.view.users, f.view));
            }
            Err(e) => {
                eprintln!("planrun report: {e}");
                return exit::CANNOT_RUN;
            }
        }
    }
    if suffixes.len() > 1 || suffixes.iter().any(|s| !s.is_empty()) {
        let plan = views.first().map(|v| v.1.plan.clone()).unwrap_or_default();
        if let Err(e) = write_sweep(&plan, &views, out) {
            eprintln!("planrun report: {e}");
            return exit::CANNOT_RUN;
        }
    }
    exit::PASSED
}

/// The live progress line: an indicatif spinner on an interactive stderr, plain lines every
/// five seconds otherwise. Ends when `done` turns true.
async fn progress_display(
    p: Arc<Progress>,
    planned: Option<u64>,
    duration: Option<Duration>,
    mut done: watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let start = tokio::time::Instant::now();
    let line = |elapsed: Duration| {
        let done_n = p.iterations_done.load(Ordering::Relaxed);
        let failed = p.iterations_failed.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let mut left: Option<f64> = duration.map(|d| (d.as_secs_f64() - secs).max(0.0));
        if let Some(total) = planned.filter(|_| done_n > 0) {
            let by_rate = secs * (total.saturating_sub(done_n)) as f64 / done_n as f64;
            left = Some(left.map_or(by_rate, |l| l.min(by_rate)));
        }
        let of = planned.map_or(String::new(), |t| format!("/{t}"));
        let p95 = p
            .rolling_p95()
            .map_or(String::new(), |(name, v)| format!("  {name} p95 {v:.0}ms"));
        format!(
            "{:>5.0}s  users active {:>4}  iterations {done_n}{of} done, {failed} failed{p95}{}",
            secs,
            p.active_users.load(Ordering::Relaxed),
            left.map_or(String::new(), |l| format!("  ~{l:.0}s left"))
        )
    };
    if tty {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => bar.set_message(line(start.elapsed())),
                r = done.wait_for(|d| *d) => { let _ = r; break; }
            }
        }
        bar.finish_and_clear();
    } else {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => eprintln!("  {}", line(start.elapsed())),
                r = done.wait_for(|d| *d) => { let _ = r; break; }
            }
        }
    }
}

/// `planrun merge DIR...`: one report from a sharded run's folders.
fn merge_shards(
    dirs: &[PathBuf],
    out: Option<PathBuf>,
    args: &OutputArgs,
    quiet: bool,
    overwrite: bool,
) -> u8 {
    let merged = match report::merge::merge(dirs) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("planrun merge: {e}");
            return exit::INVALID;
        }
    };
    for w in &merged.warnings {
        eprintln!("planrun merge: warning: {w}");
    }
    let templates = match report::load_templates(&args.templates) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("planrun merge: {e}");
            return exit::INVALID;
        }
    };
    let formats = if args.format.is_empty() {
        ReportFormat::ALL.to_vec()
    } else {
        args.format.clone()
    };
    let rep = &merged.files.view;
    let wanted = out.unwrap_or_else(|| {
        let safe = crate::slug::slug(&rep.plan);
        let parent = dirs
            .first()
            .and_then(|d| d.parent())
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        parent.join(format!("{safe}-merged"))
    });
    let out = fresh_out_dir(&wanted, overwrite);
    let outputs = report::Outputs {
        formats,
        templates,
        write_data: true,
    };
    let written = report::merge::write(&merged.files, &outputs, &out);
    let mut stdout = std::io::stdout().lock();
    if quiet {
        let verdict = if rep.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(stdout, "{verdict}: {} (merged)", rep.plan);
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let _ = report::console_summary_color(rep, &mut stdout, color);
    }
    match written {
        Ok(_) => {
            let _ = writeln!(stdout, "report: {}", out.display());
            let _ = stdout.flush();
            if rep.passed {
                exit::PASSED
            } else {
                exit::THRESHOLD_FAILED
            }
        }
        Err(e) => {
            let _ = stdout.flush();
            eprintln!("planrun merge: {e}");
            exit::CANNOT_RUN
        }
    }
}
