//! The command line: parse arguments, call the library, map outcomes to exit codes.

mod args;
mod compare;
mod completions;
mod console;
pub mod init;
mod merge;
mod rerender;
mod run;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use args::{AgentArgs, BenchArgs, GateArgs, OutputArgs, RunArgs};
pub use console::Console;

use crate::{agent, plan};

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
    /// Inconclusive: planrun itself was the bottleneck (pacing lag or event-loop delay p99 over
    /// `--generator-lag-limit`), so its measurements cannot be trusted; accept it with
    /// `generator: {on_overload: warn}` or `--on-overload warn`.
    pub const INCONCLUSIVE: u8 = 5;
    /// Stopped with Ctrl-C / SIGINT (the report is still written).
    pub const INTERRUPTED: u8 = 130;
    /// Stopped with SIGTERM (the report is still written).
    pub const TERMINATED: u8 = 143;

    /// The exit code of a run's outcome.
    pub fn of(outcome: crate::runner::Outcome) -> u8 {
        use crate::runner::Outcome;
        match outcome {
            Outcome::Passed => PASSED,
            Outcome::Regressed => REGRESSED,
            Outcome::ThresholdFailed => THRESHOLD_FAILED,
            Outcome::Inconclusive => INCONCLUSIVE,
            Outcome::CannotRun => CANNOT_RUN,
            Outcome::Stopped(s) => s.exit_code(),
        }
    }
}

const EXAMPLES: &str = "\
Examples:
  planrun plans/quickstart.yaml                 run a plan (same as `planrun run …`)
  planrun plans/quickstart.yaml --users 20      override the user count
  planrun run plans/quickstart.yaml --target ws://127.0.0.1:9000/
  planrun validate plans/*.yaml plans/*.toml    check plans without running them
  planrun schema > schemas/plan.schema.json     print the plan's JSON Schema
  planrun init --protocol twilio plans/my_bot.yaml   starter plan + CI workflow
  planrun completions bash                      shell completions (bash, zsh, fish, …)
  planrun agent --listen 127.0.0.1:9000         run the built-in reference agent
  planrun plans/quickstart.yaml --format html,json --template notes.md=notes.md.j2
  planrun compare reports/main-run reports/pr-run   compare two runs (Markdown)
  planrun plans/quickstart.yaml --baseline reports/main-run --tolerance 10%
  planrun report reports/quickstart-20250101T000000Z  re-render a finished run's reports

Exit codes: 0 all thresholds passed, 1 a threshold failed, 2 invalid plan or usage,
3 the run could not proceed (e.g. every connection refused), 4 a metric regressed against
the baseline, 5 inconclusive: planrun itself was the bottleneck (pacing lag or event-loop
delay p99 over --generator-lag-limit; accept with --on-overload warn), 130 stopped with Ctrl-C
(SIGINT), 143 stopped with SIGTERM. A run stopped by an `abort_on_fail` threshold exits 1; one
capped by --max-duration is judged by its thresholds. Worst first when several apply: 130/143,
3, 5, 1, 4, 0.";

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
    /// process, and planrun's own measurement error (see docs/benchmark.md).
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
    /// Write a commented starter plan for a protocol and a CI workflow that runs it
    /// (`.github/workflows/voice-load.yml`); asks nothing.
    Init {
        /// The plan file to write (`.yaml`).
        file: PathBuf,
        /// The wire protocol of the bot under test.
        #[arg(long, value_enum, default_value = "raw")]
        protocol: init::InitProtocol,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
        /// Write only the plan, no CI workflow.
        #[arg(long)]
        no_workflow: bool,
    },
    /// Print a shell completion script: `planrun completions bash > /etc/bash_completion.d/planrun`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    Man {
        /// Write `planrun.1` and `planrun-COMMAND.1` pages into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
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
        Some(Command::Run { plan, args }) => run::run_plan(plan, args).await,
        Some(Command::Validate { plans }) => validate::validate(&plans),
        Some(Command::Init {
            file,
            protocol,
            force,
            no_workflow,
        }) => init::init(&file, protocol, force, no_workflow),
        Some(Command::Completions { shell }) => completions::completions(shell),
        Some(Command::Man { out }) => completions::man(out.as_deref()),
        Some(Command::Schema) => {
            println!("{}", schema_json());
            exit::PASSED
        }
        Some(Command::Compare { base, new, gate }) => compare::compare_runs(&base, &new, &gate),
        Some(Command::Report { dir, out, out_dir }) => {
            rerender::rerender(&dir, &out, out_dir.as_deref())
        }
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
        }) => merge::merge_shards(&dirs, out, &output, quiet, overwrite),
        Some(Command::Agent(args)) => match agent::serve_forever(&args.listen, args.config()).await
        {
            Ok(()) => exit::PASSED,
            Err(e) => {
                eprintln!("planrun agent: {e:#}");
                exit::CANNOT_RUN
            }
        },
        None => match cli.plan {
            Some(plan) => run::run_plan(plan, cli.run).await,
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
