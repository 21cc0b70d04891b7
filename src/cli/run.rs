//! `planrun PLAN` / `planrun run PLAN`: load the plan, turn the flags into [`RunOptions`], run it
//! with the console observer, map the outcome to an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::args::RunArgs;
use super::console::Console;
use super::exit;
use crate::plan::compile::TargetUrl;
use crate::runner::{self, RunError, RunOptions};
use crate::{plan, report};

/// Run the plan at `path` as the command line asks.
pub async fn run_plan(path: PathBuf, args: RunArgs) -> u8 {
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
    let mut options = match options(&compiled, &args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("planrun: {e}");
            return exit::INVALID;
        }
    };
    let wanted = options.out.clone();
    options.out = fresh_out_dir(&wanted, args.overwrite);
    if options.out != wanted {
        eprintln!(
            "planrun: {} already holds files; writing this run to {} (--overwrite to reuse it)",
            wanted.display(),
            options.out.display()
        );
    }
    let console = Arc::new(Console::new(args.quiet));
    match runner::run(compiled, options, console).await {
        Ok(result) => {
            if let Some(index) = &result.sweep_index {
                println!("sweep: {} ({} runs)", index.display(), result.runs.len());
            }
            exit::of(result.outcome)
        }
        Err(e @ RunError::Invalid(_)) => {
            eprintln!("planrun: {e}");
            exit::INVALID
        }
        Err(e @ RunError::Setup(_)) => {
            eprintln!("planrun: {e}");
            exit::CANNOT_RUN
        }
    }
}

/// The runner's options from the plan and the flags (templates, baseline, formats, shard).
fn options(compiled: &plan::CompiledPlan, args: &RunArgs) -> Result<RunOptions, String> {
    let target = match &args.target {
        Some(t) => {
            let t = t.trim();
            if t != "builtin" && !(t.starts_with("ws://") || t.starts_with("wss://")) {
                return Err(format!(
                    "--target `{t}` must be `builtin`, ws://… or wss://…"
                ));
            }
            Some(TargetUrl::parse(t))
        }
        None => None,
    };
    let shard =
        crate::shard::resolve(args.shard, |k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    // Templates: the plan's (relative to its folder), then --template (relative to the cwd).
    let plan_dir = compiled
        .source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut pairs: Vec<(String, PathBuf)> = compiled
        .report
        .templates
        .iter()
        .map(|(name, p)| (name.clone(), plan_dir.join(p)))
        .collect();
    pairs.extend(args.output.templates.iter().cloned());
    let templates = report::load_templates(&pairs).map_err(|e| e.to_string())?;
    let baseline = match &args.baseline {
        Some(b) => Some(report::compare::load_run(b).map_err(|e| format!("baseline: {e}"))?),
        None => None,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out_dir(compiled, std::time::SystemTime::now()));
    let mut o = RunOptions::new(compiled, out);
    if !args.output.format.is_empty() {
        o.outputs.formats = args.output.format.clone();
    }
    o.outputs.templates = templates;
    o.users = args.users;
    o.seed = args.seed;
    o.target = target;
    o.shard = shard;
    o.baseline = baseline;
    o.gate = args.gate.options();
    o.target_pid = args.target_pid;
    o.max_duration = args.max_duration;
    o.metrics_addr = args.metrics_addr;
    o.metrics_linger = args.metrics_linger;
    o.dashboard = args
        .dashboard
        .map(|addr| crate::runner::dashboard::DashboardOptions {
            addr,
            allow_remote: args.dashboard_allow_remote,
            linger: args.dashboard_linger,
        });
    o.lag_limit_ms = args.generator_lag_limit;
    if let Some(v) = args.on_overload {
        o.on_overload = v;
    }
    o.handle_signals = true;
    o.raise_fd_limit = true;
    Ok(o)
}

/// The report folder to use: `wanted`, or — when it already holds files and `overwrite` is not
/// set — the first free `wanted-2`, `wanted-3`, …
pub fn fresh_out_dir(wanted: &std::path::Path, overwrite: bool) -> PathBuf {
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
