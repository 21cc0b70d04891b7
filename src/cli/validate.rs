//! `planrun validate PLAN...`: check plans without running them.

use std::path::PathBuf;

use super::exit;
use crate::plan;

/// Validate every plan; prints one line per plan (errors and inline-secret warnings on stderr).
pub fn validate(plans: &[PathBuf]) -> u8 {
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
