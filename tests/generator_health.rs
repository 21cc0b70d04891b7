//! Generator health in every run: event-loop delay, pacing and speech-end lag, latencies from
//! the actual end of speech, and the warning when planrun itself was the bottleneck.

use std::path::Path;
use std::process::Command;

mod common;
use common::{json, read, temp_dir};

/// Turns ended by the caller's speech itself (real-time audio, the agent's VAD): ttfa is
/// measured from the scheduled end of speech.
const PLAN: &str = "name: health
target:
  url: builtin
  agent:
    asr_latency: 40ms
    llm_latency: 100ms
    tts_latency: 40ms
    reply_duration: 200ms
load:
  users: 2
  iterations: 2
  seed: 5
scenarios:
  - name: turn
    steps:
      - send_audio: audio_files/mhmm.wav
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
";

/// Run the binary; returns (exit code, stdout, metrics.json).
fn run(dir: &Path, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let plan = dir.join("p.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", plan.to_str().unwrap(), "--overwrite", "--out"])
        .arg(&out)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.join("metrics.json").exists(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        o.status.code().unwrap_or(-1),
        stdout,
        json(&out.join("metrics.json")),
    )
}

#[test]
fn every_run_reports_generator_health_and_latencies_from_the_actual_end() {
    let dir = temp_dir("health");
    // A generous limit: whatever this machine's load, no warning.
    let (code, stdout, m) = run(&dir, &["--generator-lag-limit", "1000"]);
    assert_eq!(code, 0, "{stdout}");
    let g = &m["generator"];
    let f = |k: &str| {
        g[k].as_f64()
            .unwrap_or_else(|| panic!("generator.{k} missing: {g}"))
    };
    // The event-loop monitor ran the whole run (10 ms ticks) and woke late by a measured amount.
    assert!(f("event_loop_delay_p50_ms") > 0.0);
    assert!(f("event_loop_delay_p50_ms") <= f("event_loop_delay_p99_ms"));
    assert!(f("event_loop_delay_p99_ms") <= f("event_loop_delay_max_ms"));
    // One speech-end lag per utterance; never more than the worst frame's lag plus the send.
    assert!(f("speech_end_lag_p50_ms") > 0.0);
    assert!(f("speech_end_lag_max_ms") <= f("send_lag_max_ms") + 50.0);
    assert_eq!(f("lag_limit_ms"), 1000.0);
    assert!(g["warnings"].as_array().unwrap().is_empty(), "{g}");

    // ttfa from the actual end: one per ttfa sample, never longer than from the scheduled end
    // (speech actually ends at or after its schedule), shorter by at most the speech-end lag.
    let actual = &g["from_actual_end"]["ttfa"];
    let sched = &m["metrics"]["ttfa"];
    assert_eq!(actual["count"], sched["count"]);
    assert_eq!(actual["count"].as_u64(), Some(4));
    for q in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        let a = actual[q].as_f64().unwrap();
        let s = sched[q].as_f64().unwrap();
        assert!(a <= s + 0.5, "{q}: actual {a} > scheduled {s}");
        assert!(
            s - a <= f("speech_end_lag_max_ms") + 0.5,
            "{q}: scheduled {s} - actual {a} exceeds the speech-end lag"
        );
    }
    // Only metrics measured from the end of speech get an actual-end twin.
    assert!(g["from_actual_end"].get("connect").is_none(), "{g}");
    assert!(
        stdout.contains("ttfa from the actual end of speech: p50"),
        "{stdout}"
    );
    assert!(stdout.contains("generator: pacing lag p99"), "{stdout}");
    assert!(!stdout.contains("WARNING"), "{stdout}");
    let md = read(&dir.join("out/summary.md"));
    assert!(md.contains("planrun's event loop woke"), "{md}");
    assert!(md.contains("| ttfa | 4 |"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_over_the_generator_limit_warns_everywhere() {
    let dir = temp_dir("health-warn");
    // 0.001 ms: tokio's timer alone (about 1 ms) puts every run over this limit.
    let (code, stdout, m) = run(&dir, &["--generator-lag-limit", "0.001"]);
    // Not a pass: the run is inconclusive (exit code 5), said in every report.
    assert_eq!(code, 5, "{stdout}");
    assert!(
        stdout.contains("INCONCLUSIVE: planrun itself was the bottleneck"),
        "{stdout}"
    );
    assert_eq!(m["inconclusive"], true);
    let warnings: Vec<String> = m["generator"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("pacing lag p99 "), "{warnings:?}");
    assert!(
        warnings[1].starts_with("event-loop delay p99 "),
        "{warnings:?}"
    );
    for w in &warnings {
        assert!(w.contains("above the limit of 0.001 ms"), "{w}");
        assert!(
            stdout.contains(&format!("WARNING: planrun was the bottleneck: {w}")),
            "{stdout}"
        );
    }
    let md = read(&dir.join("out/summary.md"));
    assert!(
        md.contains(&format!(
            "**Warning: planrun was the bottleneck:** {}.",
            warnings[1]
        )),
        "{md}"
    );
    let html = read(&dir.join("out/report.html"));
    assert_eq!(html.matches("class=\"desc generator-warning\"").count(), 2);
    assert!(html.contains("event-loop delay p99 "), "{html}");
    // Accepted on the command line: the same warnings, and the thresholds decide.
    let (code, stdout, m) = run(
        &dir,
        &["--generator-lag-limit", "0.001", "--on-overload", "warn"],
    );
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(m["inconclusive"], false);
    assert_eq!(m["generator"]["overloaded"], true);
    assert!(
        stdout.contains("generator overload accepted (on_overload: warn)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARNING: planrun was the bottleneck: "),
        "{stdout}"
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_invalid_generator_limit_is_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["run", "x.yaml", "--generator-lag-limit", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("must be a positive number of milliseconds")
    );
}
