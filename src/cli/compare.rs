//! `planrun compare BASE NEW`: per-metric deltas as Markdown.

use super::args::GateArgs;
use super::exit;
use crate::report;

/// Compare two runs; exits 4 when a metric regressed.
pub fn compare_runs(base: &std::path::Path, new: &std::path::Path, gate: &GateArgs) -> u8 {
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
