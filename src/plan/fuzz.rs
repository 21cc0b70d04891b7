//! Fuzzing entry points (see `fuzz/` and `tests/fuzz_regressions.rs`).

use std::path::Path;

use super::{compile, parse_str, secrets, threshold_expr};

/// Fuzzing entry point (also run by `tests/fuzz_regressions.rs` on the committed corpus):
/// parse, validate and compile plan text as YAML or TOML. Any outcome but a panic, a hang or an
/// unbounded allocation is fine; returns whether the plan compiled.
#[doc(hidden)]
pub fn fuzz_plan(text: &str, toml_format: bool) -> bool {
    let name = if toml_format {
        "fuzz/plan.toml"
    } else {
        "fuzz/plan.yaml"
    };
    for w in secrets::scan_source(text, Path::new(name), toml_format) {
        let _ = w.to_string();
    }
    match parse_str(text, Path::new(name)) {
        Ok(lp) => {
            // Rendering diagnostics must not panic either (odd positions, odd characters).
            compile::compile(&lp).map_err(|e| e.to_string()).is_ok()
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// A round-trip invariant that a fuzz input broke (what re-parsed differently, and how).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrokenInvariant(pub String);

/// Fuzzing entry point for the one-line languages: threshold expressions, durations and
/// jitter distributions. What parses must render to text that parses again, and sampling a
/// distribution must stay finite. `Err` describes a broken invariant (the fuzz target panics
/// on it).
#[doc(hidden)]
pub fn fuzz_scalar(text: &str) -> Result<(), BrokenInvariant> {
    use rand::SeedableRng;
    if let Ok(e) = text.parse::<threshold_expr::ThresholdExpr>() {
        let again: threshold_expr::ThresholdExpr = e
            .to_string()
            .parse()
            .map_err(|err| BrokenInvariant(format!("threshold `{e}` does not re-parse: {err}")))?;
        if again != e {
            return Err(BrokenInvariant(format!(
                "threshold `{e}` re-parses as {again:?}"
            )));
        }
    }
    if let Ok(d) = crate::distribution::parse_duration(text) {
        crate::distribution::parse_duration(&crate::distribution::format_duration(d))
            .map_err(|err| BrokenInvariant(format!("duration {d:?} does not re-parse: {err}")))?;
    }
    if let Ok(d) = text.parse::<crate::distribution::Dist>() {
        d.to_string()
            .parse::<crate::distribution::Dist>()
            .map_err(|err| BrokenInvariant(format!("jitter `{d}` does not re-parse: {err}")))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(text.len() as u64);
        for _ in 0..8 {
            let _ = d.sample(&mut rng);
        }
        let _ = d.mean();
    }
    Ok(())
}
