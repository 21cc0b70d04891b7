//! Every input the fuzzer ever crashed, hung or blew up on (`fuzz/regressions/<target>/`), and
//! the committed fuzz corpus (`fuzz/corpus/<target>/`), replayed through the same entry points
//! the fuzz targets call, under plain `cargo test`. Each input must finish without a panic and
//! within a time limit.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Generous for a debug build on a loaded machine; a hang is minutes or forever.
const LIMIT: Duration = Duration::from_secs(20);

fn inputs(dir: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(Path::new(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.path().display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Run `f` on every input of `target`'s regression and corpus folders.
fn replay(target: &str, f: fn(&str) -> Result<(), String>) -> usize {
    let mut all = inputs(&format!("fuzz/regressions/{target}"));
    all.extend(inputs(&format!("fuzz/corpus/{target}")));
    let mut failures = Vec::new();
    for (name, bytes) in &all {
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            continue; // the targets only look at UTF-8
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| f(&text));
            let _ = tx.send(outcome);
        });
        match rx.recv_timeout(LIMIT) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(broken))) => failures.push(format!("{name}: {broken}")),
            Ok(Err(_)) => failures.push(format!("{name}: panicked")),
            Err(_) => failures.push(format!("{name}: still running after {LIMIT:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    all.len()
}

#[test]
fn yaml_plans() {
    let n = replay("plan_yaml", |t| {
        planrun::plan::fuzz_plan(t, false);
        Ok(())
    });
    assert!(n >= 10, "only {n} YAML inputs: is the corpus committed?");
}

#[test]
fn toml_plans() {
    let n = replay("plan_toml", |t| {
        planrun::plan::fuzz_plan(t, true);
        Ok(())
    });
    assert!(n >= 5, "only {n} TOML inputs: is the corpus committed?");
}

#[test]
fn threshold_expressions_durations_and_jitter() {
    let n = replay("threshold_expr", |t| {
        planrun::plan::fuzz_scalar(t).map_err(|e| e.to_string())
    });
    assert!(n >= 10, "only {n} scalar inputs: is the corpus committed?");
}
