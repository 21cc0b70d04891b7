//! The command line: parse arguments, call the library, map outcomes to exit codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::dist::Dist;
use crate::engine::{self, Progress};
use crate::plan::compile::TargetUrl;
use crate::{agent, plan, report, thresholds};

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
    /// Stopped with Ctrl-C (the report is still written).
    pub const INTERRUPTED: u8 = 130;
}

const EXAMPLES: &str = "\
Examples:
  planrun plans/quickstart.yaml                 run a plan (same as `planrun run …`)
  planrun plans/quickstart.yaml --users 20      override the user count
  planrun run plans/quickstart.yaml --target ws://127.0.0.1:9000/
  planrun validate plans/*.yaml plans/*.toml    check plans without running them
  planrun schema > schemas/plan.schema.json     print the plan's JSON Schema
  planrun agent --listen 127.0.0.1:9000         run the built-in reference agent

Exit codes: 0 all thresholds passed, 1 a threshold failed, 2 invalid plan or usage,
3 the run could not proceed (e.g. every connection refused), 130 stopped with Ctrl-C.";

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
}

fn parse_dist(s: &str) -> Result<Dist, String> {
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

async fn run_plan(path: PathBuf, args: RunArgs) -> u8 {
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
    if let Some(u) = args.users {
        compiled.load.users = u;
    }
    if let Some(s) = args.seed {
        compiled.load.seed = s;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nplanrun: stopping (Ctrl-C); finishing the report…");
            let _ = stop_tx.send(true);
        }
    });
    let progress = Arc::new(Progress::default());
    let ticker = (!args.quiet).then(|| tokio::spawn(progress_lines(progress.clone())));
    if !args.quiet {
        eprintln!(
            "planrun: running `{}` with {} user(s) against {}",
            compiled.name, compiled.load.users, compiled.target.url
        );
    }
    let outcome = engine::run(&compiled, stop_rx, progress).await;
    ctrl_c.abort();
    if let Some(t) = ticker {
        t.abort();
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("planrun: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let results = thresholds::evaluate(&outcome.summary, &compiled.thresholds);
    let rep = report::RunReport::build(&compiled, &outcome, results);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out_dir(&compiled, outcome.started_at));
    let written = report::write(&rep, &compiled.report.formats, &out);
    let mut stdout = std::io::stdout().lock();
    if !args.quiet {
        let _ = report::console_summary(&rep, &mut stdout);
    } else {
        let verdict = if rep.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(stdout, "{verdict}: {}", rep.plan);
        for t in rep.thresholds.iter().filter(|t| !t.passed) {
            let _ = writeln!(
                stdout,
                "  FAIL {} {} (observed {})",
                t.metric, t.expression, t.observed_text
            );
        }
    }
    match &written {
        Ok(_) => {
            let _ = writeln!(stdout, "report: {}", out.display());
        }
        Err(e) => eprintln!("planrun: {e}"),
    }
    let _ = stdout.flush();

    let counts = &rep.iterations;
    let all_refused = counts.total > 0 && rep.errors.get("connect_error") == Some(&counts.total);
    if rep.aborted {
        exit::INTERRUPTED
    } else if all_refused {
        eprintln!(
            "planrun: every connection to {} failed; the run could not proceed",
            rep.target
        );
        exit::CANNOT_RUN
    } else if written.is_err() {
        exit::CANNOT_RUN
    } else if rep.passed {
        exit::PASSED
    } else {
        exit::THRESHOLD_FAILED
    }
}

/// A plain progress line every few seconds on stderr (interactive terminals get it every second).
async fn progress_lines(p: Arc<Progress>) {
    let every = if std::io::stderr().is_terminal() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "  {:>5.0}s  users active {:>4}  iterations {:>6} done, {:>4} failed",
            start.elapsed().as_secs_f64(),
            p.active_users.load(Ordering::Relaxed),
            p.iterations_done.load(Ordering::Relaxed),
            p.iterations_failed.load(Ordering::Relaxed)
        );
    }
}
