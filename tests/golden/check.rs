//! Compare output with a committed golden file; `PLANRUN_BLESS=1` rewrites the file instead.
//! Shared by `tests/broken_plans.rs` and `tests/golden.rs` (`#[path]` module: no `main.rs`
//! here, or cargo would take this folder for a test target of its own).

use std::path::Path;

/// `PLANRUN_BLESS=1` (or any value but `0` or empty): write the actual output as the new golden.
pub fn blessing() -> bool {
    std::env::var("PLANRUN_BLESS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Check `actual` against the golden file `path` (or rewrite it when blessing). The error
/// says where the two first differ, line by line, and how to accept the new output.
pub fn golden(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path);
    if blessing() {
        if expected.as_deref().ok() != Some(actual) {
            std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("blessed {}", path.display());
        }
        return Ok(());
    }
    let expected = expected.map_err(|e| {
        format!(
            "{}: {e}\n  (a new case? create it with PLANRUN_BLESS=1)\n--- actual ---\n{actual}",
            path.display()
        )
    })?;
    match first_difference(&expected, actual) {
        None => Ok(()),
        Some(diff) => Err(format!(
            "{} differs from the output at {diff}\n  (if the change is intended, re-bless: \
             PLANRUN_BLESS=1 cargo test --test broken_plans --test golden)\n--- actual ---\n{actual}",
            path.display()
        )),
    }
}

/// Where `expected` and `actual` first part ways: the line number, both lines, and any
/// difference in the trailing newline; `None` when they are equal.
pub fn first_difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let show = |l: Option<&&str>| l.map_or("<end of output>".to_string(), |l| format!("{l:?}"));
    for i in 0..e.len().max(a.len()) {
        if e.get(i) != a.get(i) {
            return Some(format!(
                "line {}:\n  expected: {}\n  actual:   {}",
                i + 1,
                show(e.get(i)),
                show(a.get(i))
            ));
        }
    }
    Some(format!(
        "the end: expected {} trailing newline, actual {}",
        if expected.ends_with('\n') { "a" } else { "no" },
        if actual.ends_with('\n') {
            "has one"
        } else {
            "has none"
        }
    ))
}
