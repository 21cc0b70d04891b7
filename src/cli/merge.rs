//! `planrun merge DIR...`: one report from a sharded run's folders.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::args::OutputArgs;
use super::exit;
use super::run::fresh_out_dir;
use crate::plan::model::ReportFormat;
use crate::report;

/// `planrun merge DIR...`: one report from a sharded run's folders.
pub fn merge_shards(
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
        let verdict = if rep.inconclusive {
            "INCONCLUSIVE"
        } else if rep.passed {
            "PASSED"
        } else {
            "FAILED"
        };
        let _ = writeln!(stdout, "{verdict}: {} (merged)", rep.plan);
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let _ = report::console_summary_color(rep, &mut stdout, color);
    }
    match written {
        Ok(_) => {
            let _ = writeln!(stdout, "report: {}", out.display());
            let _ = stdout.flush();
            if rep.inconclusive {
                exit::INCONCLUSIVE
            } else if rep.passed {
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
