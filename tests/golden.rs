//! Golden outputs (the broken-plan errors have theirs in `tests/broken_plans.rs`):
//! - the console summary of a seeded built-in run, timings masked: `tests/golden/console_summary.out`
//! - `compare`'s Markdown for two fixed run folders: `tests/golden/compare.md`
//!
//! `PLANRUN_BLESS=1 cargo test --test golden` rewrites the golden files from the actual output.

use std::path::Path;

use planrun::report::RunReport;

mod common;
use common::temp_dir;

#[path = "golden/check.rs"]
mod check;
use check::golden;

/// The one place that drives a run: the plan goes through the CLI's run path in-process
/// (`--quiet`, so nothing is drawn), and the report is read back from the `metrics.json` it
/// wrote, which is the `RunReport` the console summary was printed from.
/// (Re-point this at `planrun::runner::run` once orchestration lives there.)
async fn run_report(plan: &Path, out: &Path) -> (u8, RunReport) {
    let compiled = planrun::plan::load(plan)
        .and_then(|lp| planrun::plan::compile::compile(&lp))
        .expect("the golden plan compiles");
    let options = planrun::runner::RunOptions::new(&compiled, out);
    let result = planrun::runner::run(
        compiled,
        options,
        std::sync::Arc::new(planrun::runner::Silent),
    )
    .await
    .expect("the run starts");
    let code = planrun::cli::exit::of(result.outcome);
    let report = result.runs.into_iter().next().expect("one run").report;
    (code, report)
}

/// Metrics whose sample counts depend on timing (how reply chunks happen to arrive), not on
/// the seed: their whole table row is masked.
const TIMING_COUNTED: &[&str] = &["glitch", "frame_jitter", "reverse_barge_in"];

/// Mask what changes from run to run and keep the structure: every decimal number (latencies,
/// durations, rates, CPU, RSS; with its unit kept) becomes `#`, as does a lone `-` (a figure
/// not measured this time); ports in URLs become `<port>`, RFC 3339 timestamps `<timestamp>`;
/// the rows of [`TIMING_COUNTED`] metrics become `<varies>`. Integers stay (iteration and
/// sample counts, limits written in the plan). "planrun was the bottleneck" warnings (and the
/// note that the plan accepts them) are dropped: they depend on the machine's load. Runs of spaces inside a line shrink to one, so
/// a column's width does not depend on the width of a masked number.
fn mask(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("WARNING: planrun was the bottleneck")
            || line.starts_with("generator overload accepted")
        {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut words: Vec<String> = line[indent..].split_whitespace().map(mask_word).collect();
        if words.len() > 1 && TIMING_COUNTED.contains(&words[0].as_str()) {
            words.truncate(1);
            words.push("<varies>".into());
        }
        out.push_str(&line[..indent]);
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn mask_word(word: &str) -> String {
    if word == "-" {
        return "#".into();
    }
    let b = word.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    // 2025-01-01T00:00:00Z, 2025-01-01T00:00:00.123+02:00
    if b.len() >= 11 && digits(0) == 4 && b[4] == b'-' && digits(5) == 2 && b[10] == b'T' {
        return "<timestamp>".into();
    }
    if let Some(i) = word.find("://") {
        let host_end = word[i + 3..].find('/').map_or(word.len(), |j| i + 3 + j);
        if let Some(colon) = word[i + 3..host_end].rfind(':') {
            let colon = i + 3 + colon;
            if colon + 1 < host_end && digits(colon + 1) == host_end - colon - 1 {
                return format!("{}<port>{}", &word[..=colon], &word[host_end..]);
            }
        }
        return word.into();
    }
    let mut s = String::new();
    let mut i = 0;
    while i < b.len() {
        let n = digits(i);
        let in_word = i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'_');
        if n > 0 && !in_word && b.get(i + n) == Some(&b'.') && digits(i + n + 1) > 0 {
            s.push('#');
            i += n + 1 + digits(i + n + 1);
        } else if n > 0 {
            s.push_str(&word[i..i + n]);
            i += n;
        } else {
            let c = word[i..].chars().next().unwrap();
            s.push(c);
            i += c.len_utf8();
        }
    }
    s
}

#[test]
fn masking_keeps_structure_and_hides_timings() {
    let text = "planrun x — 2 users against ws://127.0.0.1:34827/ in 2.8s\n\
                iterations: 2 total, 2 succeeded, 0 failed (success 100.0%)\n\
                ttfa                     2     290.3         -\n\
                frame_jitter            28       0.0       0.8\n\
                WARNING: planrun was the bottleneck: pacing lag p99 12.50 ms\n  \
                PASS ttfa p95 < 15s  (observed 320.0ms) at 2025-01-01T10:00:00Z\n";
    assert_eq!(
        mask(text),
        "planrun x — 2 users against ws://127.0.0.1:<port>/ in #s\n\
         iterations: 2 total, 2 succeeded, 0 failed (success #%)\n\
         ttfa 2 # #\n\
         frame_jitter <varies>\n  \
         PASS ttfa p95 < 15s (observed #ms) at <timestamp>\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_summary_of_a_seeded_builtin_run() {
    let out = temp_dir("golden-console").join("run");
    let (code, report) = run_report(Path::new("tests/golden/seeded_run.yaml"), &out).await;
    // One threshold is out of reach on purpose, so the FAIL lines are covered too.
    assert_eq!(code, planrun::cli::exit::THRESHOLD_FAILED, "exit code");
    let mut text = Vec::new();
    planrun::report::console_summary(&report, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains('\x1b'), "plain text, no colour:\n{text}");
    let shown = mask(&text.replace(out.to_str().unwrap(), "<out>"));
    if let Err(e) = golden(Path::new("tests/golden/console_summary.out"), &shown) {
        panic!("{e}\n--- unmasked ---\n{text}");
    }
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

#[test]
fn compare_markdown_of_two_fixed_runs() {
    use planrun::report::compare;
    let base = compare::load_run(Path::new("tests/golden/compare/base")).unwrap();
    let new = compare::load_run(Path::new("tests/golden/compare/new")).unwrap();
    let md = compare::markdown(&compare::compare(&base, &new, Default::default()));
    golden(Path::new("tests/golden/compare.md"), &md).unwrap_or_else(|e| panic!("{e}"));
}
