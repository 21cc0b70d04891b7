//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses its own subset

pub mod pipecat;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use planrun::cli::{Cli, dispatch};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, unique folder under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "planrun-test-{tag}-{}-{nanos}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the CLI in-process with these arguments (after `planrun`); returns the exit code.
/// A plan run accepts an overloaded generator (`--on-overload warn`, see [`run_plan`]) unless
/// the arguments say otherwise.
pub async fn run_cli(args: &[&str]) -> u8 {
    let mut argv = vec!["planrun"];
    argv.extend_from_slice(args);
    let runs_a_plan = args.first().is_some_and(|a| {
        *a == "run" || a.ends_with(".yaml") || a.ends_with(".yml") || a.ends_with(".toml")
    });
    if runs_a_plan && !args.contains(&"--on-overload") {
        argv.extend_from_slice(&["--on-overload", "warn"]);
    }
    dispatch(Cli::parse_from(argv)).await
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap()
}

/// Run the plan at `path` through the library (`planrun::runner::run`), writing its reports into
/// `out`, with `edit` adjusting the options (users, target, formats, …). Prints nothing.
/// Returns the exit code the `planrun` command would give (2 for a plan that does not load).
pub async fn run_plan(
    path: &Path,
    out: &Path,
    edit: impl FnOnce(&mut planrun::runner::RunOptions),
) -> u8 {
    use planrun::cli::exit;
    let compiled =
        match planrun::plan::load(path).and_then(|lp| planrun::plan::compile::compile(&lp)) {
            Ok(c) => c,
            Err(e) => {
                eprint!("{e}");
                return exit::INVALID;
            }
        };
    let mut options = planrun::runner::RunOptions::new(&compiled, out);
    // The suite's functional runs judge what they test, not planrun's own timing on a shared
    // CI machine: an overloaded generator warns instead of making them inconclusive. Tests of
    // the inconclusive verdict set `on_overload` themselves (tests/verdict.rs,
    // tests/generator_health.rs); the plans in plans/ keep the default and are judged honestly
    // when run by hand.
    options.on_overload = planrun::plan::model::OnOverload::Warn;
    edit(&mut options);
    match planrun::runner::run(
        compiled,
        options,
        std::sync::Arc::new(planrun::runner::Silent),
    )
    .await
    {
        Ok(r) => exit::of(r.outcome),
        Err(planrun::runner::RunError::Invalid(e)) => {
            eprintln!("{e}");
            exit::INVALID
        }
        Err(e) => {
            eprintln!("{e}");
            exit::CANNOT_RUN
        }
    }
}

/// A target URL for [`planrun::runner::RunOptions::target`].
pub fn target(url: &str) -> Option<planrun::plan::compile::TargetUrl> {
    Some(planrun::plan::compile::TargetUrl::parse(url))
}
