//! `planrun report RUN_DIR`: re-render a finished run's reports.

use super::args::OutputArgs;
use super::exit;
use crate::plan::model::ReportFormat;
use crate::report::{self, RunFiles};

/// `planrun report RUN_DIR`: re-render from metrics.json + run.json.
pub fn rerender(dir: &std::path::Path, args: &OutputArgs, out_dir: Option<&std::path::Path>) -> u8 {
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
        if let Err(e) = crate::runner::write_sweep(&plan, &views, out) {
            eprintln!("planrun report: {e}");
            return exit::CANNOT_RUN;
        }
    }
    exit::PASSED
}
