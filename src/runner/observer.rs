//! What the runner tells whoever drives it (the CLI's console, a test, a dashboard).

use std::time::Duration;

use super::FinishedRun;

/// A line of news from the runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Useful detail a quiet run leaves out ("running `x` with 5 users against …").
    Info(String),
    /// Something the user should see even in a quiet run.
    Warning(String),
    /// The run is stopping early (a signal, `--max-duration`, an `abort_on_fail` threshold).
    Stopping {
        text: String,
        /// A quiet run leaves this one out.
        quiet_hides: bool,
    },
}

/// The live counters, about four times a second while a run goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSnapshot {
    pub elapsed: Duration,
    pub active_users: u64,
    pub iterations_done: u64,
    pub iterations_failed: u64,
    /// Iterations the run will do, when the plan fixes it.
    pub planned: Option<u64>,
    /// The plan's duration, when it has one.
    pub duration: Option<Duration>,
    /// The main latency's name and its p95 over the last seconds.
    pub rolling_p95: Option<(String, f64)>,
}

/// Follows a run. Every method has a default that ignores the news.
pub trait Observer: Send + Sync {
    /// A line of news.
    fn notice(&self, _notice: &Notice) {}
    /// The live counters (about every 250 ms while a run goes on).
    fn progress(&self, _snapshot: &ProgressSnapshot) {}
    /// The run's load has ended (before its report is judged and written).
    fn load_ended(&self) {}
    /// One run (one user count of a sweep) finished and its reports were written.
    fn run_finished(&self, _run: &FinishedRun, _out: &std::path::Path) {}
}

/// An observer that ignores everything (tests, embedding).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {}
