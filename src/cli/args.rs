//! Command-line arguments (clap types) and their parsers.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent;
use crate::distribution::Dist;
use crate::plan::model::ReportFormat;
use crate::report;

/// Regression gate settings.
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// Relative p95 increase tolerated before a metric counts as regressed (`10%` or `0.1`).
    #[arg(long, default_value = "10%", value_parser = parse_fraction, value_name = "PCT")]
    pub tolerance: f64,
    /// Significance level of the p95 bootstrap and two-proportion tests.
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
    pub fn options(&self) -> report::compare::Options {
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
    /// Serve a live dashboard of the run in the browser (default: a free loopback port; the
    /// URL is printed on stderr), e.g. `--dashboard`, `--dashboard 8089`,
    /// `--dashboard 127.0.0.1:8089`. Its Stop button ends the run as Ctrl-C does (exit 130).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0", value_parser = parse_dashboard_addr)]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Allow `--dashboard` on a non-loopback address (anyone who can reach it can watch the
    /// run, and stop it with the page's token).
    #[arg(long, requires = "dashboard")]
    pub dashboard_allow_remote: bool,
    /// Keep serving the dashboard this long after the run (final verdict and report files),
    /// e.g. `5m`; Ctrl-C leaves earlier.
    #[arg(long, value_name = "DURATION", value_parser = parse_max_duration, requires = "dashboard")]
    pub dashboard_linger: Option<Duration>,
    /// Limit (ms) for planrun's pacing lag p99 and event-loop delay p99: above it the run is
    /// flagged because planrun itself was the bottleneck.
    #[arg(long, value_name = "MS", default_value_t = crate::judge::health::DEFAULT_LAG_LIMIT_MS, value_parser = parse_lag_limit)]
    pub generator_lag_limit: f64,
    /// What a run over the generator limit is: `fail` (inconclusive, exit code 5) or `warn`
    /// (a warning; the thresholds decide). Default: the plan's `generator.on_overload`, else
    /// `fail`.
    #[arg(long, value_name = "fail|warn", env = "PLANRUN_ON_OVERLOAD")]
    pub on_overload: Option<crate::plan::model::OnOverload>,
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

fn parse_dashboard_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    crate::runner::dashboard::parse_addr(s)
}

fn parse_shard(s: &str) -> Result<crate::shard::Shard, String> {
    s.parse()
        .map_err(|e: crate::shard::ShardError| e.to_string())
}

fn parse_max_duration(s: &str) -> Result<Duration, String> {
    match crate::distribution::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
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
    /// How reply audio is sent: `realtime`, `burst` (all at once) or `ahead(500ms)`.
    #[arg(long, default_value = "realtime", value_name = "PACING")]
    pub reply_pacing: crate::plan::model::ReplyPacing,
    /// Pause between a reply's sentences (gap in sending at `realtime`, silence in the audio
    /// otherwise), e.g. `400ms`.
    #[arg(long, value_parser = crate::distribution::parse_duration, value_name = "DURATION")]
    pub sentence_pause: Option<std::time::Duration>,
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
    /// Soak: run the first user count steadily for this long and print the RSS slope between
    /// minute 1 and the end (KB/min).
    #[arg(long, value_parser = crate::distribution::parse_duration, value_name = "DURATION")]
    pub soak: Option<std::time::Duration>,
    /// The callers' protocol: `raw` (WebSocket, the default) or `webrtc` (str0m + Opus).
    #[arg(long, default_value = "raw", value_parser = ["raw", "webrtc"])]
    pub protocol: String,
}

impl BenchArgs {
    pub fn config(&self) -> crate::bench::BenchConfig {
        crate::bench::BenchConfig {
            users: self.users.clone(),
            duration: self.duration,
            ramp: self.ramp,
            delay: self.delay,
            reply: self.reply,
            utterance: self.utterance,
            agent_cpus: self.agent_cpus.clone(),
            soak: self.soak,
            webrtc: self.protocol == "webrtc",
        }
    }
}

impl AgentArgs {
    pub fn config(&self) -> agent::AgentConfig {
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
        c.reply_pacing = match self.reply_pacing {
            crate::plan::model::ReplyPacing::Realtime => agent::ReplyPacing::Realtime,
            crate::plan::model::ReplyPacing::Burst => agent::ReplyPacing::Burst,
            crate::plan::model::ReplyPacing::Ahead(d) => agent::ReplyPacing::Ahead(d),
        };
        if let Some(d) = self.sentence_pause {
            c.sentence_pause = d;
        }
        c
    }
}
