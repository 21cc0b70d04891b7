//! Thresholds that act during a run (`abort_on_fail`, `delay_abort_eval`) and thresholds judged
//! over sliding windows (`over W`): the real binary against the built-in agent, and
//! `planrun report` on a timeline with a latency spike. Small, short loads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{json, read, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_planrun");

/// Two users for `duration`; the agent's LLM takes `llm` before it answers.
fn plan(dir: &Path, llm: &str, duration: &str, thresholds: &str) -> PathBuf {
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio_files/mhmm.wav");
    let text = format!(
        "name: thresholds
target:
  url: builtin
  agent:
    asr_latency: 20ms
    llm_latency: {llm}
    tts_latency: 20ms
    reply_duration: 200ms
load:
  users: 2
  duration: {duration}
  seed: 5
scenarios:
  - name: call
    steps:
      - send: speech_start
      - send_audio: {audio}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
thresholds:
{thresholds}
",
        audio = audio.display()
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Run the binary; returns (exit code, stdout, stderr, wall time).
fn run(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    let o = Command::new(BIN)
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
        start.elapsed(),
    )
}

#[test]
fn a_slow_agent_aborts_the_run_early() {
    let dir = temp_dir("abort");
    let p = plan(
        &dir,
        "700ms",
        "30s",
        "  ttfa:\n    - p99 < 5s\n    - threshold: p95 < 300ms\n      abort_on_fail: true\n      delay_abort_eval: 2s",
    );
    let out = dir.join("out");
    let (code, stdout, stderr, took) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    // Judged from 2 s on, about once a second: the 30 s run ends after a few seconds.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let m = json(&out.join("metrics.json"));
    let elapsed = m["elapsed_s"].as_f64().unwrap();
    assert!((2.0..6.0).contains(&elapsed), "elapsed {elapsed}: {m}");
    assert_eq!(m["stopped_by"], "threshold");
    let reason = m["stop_reason"].as_str().unwrap();
    assert!(reason.contains("ttfa p95 < 300ms"), "{reason}");
    assert_eq!(m["passed"], false);
    assert!(m["iterations"]["total"].as_u64().unwrap() >= 2, "{m}");
    let t = &m["thresholds"][1];
    assert_eq!(
        (t["abort_on_fail"].clone(), t["passed"].clone()),
        (true.into(), false.into())
    );
    assert!(stderr.contains("can no longer pass"), "{stderr}");
    assert!(
        stdout.contains("aborted by threshold ttfa p95 < 300ms"),
        "{stdout}"
    );
    assert!(read(&out.join("summary.md")).contains("Stopped early"));
}

#[test]
fn delay_abort_eval_and_passing_thresholds_let_the_run_finish() {
    let dir = temp_dir("noabort");
    // A threshold that passes never aborts; one that fails is not judged before its delay
    // (longer than the run), so the run ends by its duration and fails at the end.
    let p = plan(
        &dir,
        "50ms",
        "3s",
        "  ttfa:\n    - threshold: p95 < 2s\n      abort_on_fail: true\n    - threshold: p95 < 1ms\n      abort_on_fail: true\n      delay_abort_eval: 1m",
    );
    let out = dir.join("out");
    let (code, stdout, stderr, _) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["aborted"], false, "{m}");
    assert!(m["stopped_by"].is_null());
    assert!(m["elapsed_s"].as_f64().unwrap() >= 3.0);
    assert_eq!(m["thresholds"][0]["passed"], true);
    assert_eq!(m["thresholds"][1]["passed"], false);
}

#[test]
fn windowed_threshold_in_a_real_run_reports_its_windows() {
    let dir = temp_dir("window-run");
    let p = plan(&dir, "50ms", "3s", "  ttfa: [p95 < 2s over 1s]");
    let out = dir.join("out");
    let (code, stdout, stderr, _) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let m = json(&out.join("metrics.json"));
    let t = &m["thresholds"][0];
    assert_eq!(t["expression"], "p95 < 2s over 1s");
    let w = &t["window"];
    assert_eq!(w["window_s"], 1.0);
    assert_eq!(w["step_s"], 0.25);
    assert!(w["judged"].as_u64().unwrap() >= 4, "{t}");
    assert_eq!(w["failed"], 0);
    assert!(
        t["observed_text"]
            .as_str()
            .unwrap()
            .contains("worst window")
    );
}

/// A partial run folder: run_info.json and a timeline with one ttfa per 100 ms for 20 s,
/// 100 ms each except 1 s during 10–11 s (5% of the samples).
fn spiky_folder(dir: &Path, thresholds: &[(&str, &str)]) {
    let info = serde_json::json!({
        "plan": "spiky",
        "target": "ws://example/",
        "users": 1,
        "metrics": ["ttfa"],
        "thresholds": thresholds,
    });
    std::fs::write(dir.join("run_info.json"), info.to_string()).unwrap();
    let mut csv = String::from("t_ms,user,iteration,scenario,event,detail\n");
    for i in 0..200u64 {
        let t = i as f64 * 100.0;
        let v = if (100..110).contains(&i) {
            1000.0
        } else {
            100.0
        };
        csv += &format!("{t:.3},0,{i},call,iteration_start,\n");
        csv += &format!("{:.3},0,{i},call,record:ttfa,{v:.3}\n", t + 50.0);
        csv += &format!("{:.3},0,{i},call,iteration_end,ok\n", t + 60.0);
    }
    // A torn last line, as a kill mid-write leaves.
    csv += "20000.000,0,200,call,iteration_sta";
    std::fs::write(dir.join("timeline.csv"), csv).unwrap();
}

#[test]
fn a_spike_the_whole_run_p95_hides_fails_a_windowed_threshold() {
    let dir = temp_dir("spike");
    spiky_folder(
        &dir,
        &[("ttfa", "p95 < 500ms"), ("ttfa", "p95 < 500ms over 4s")],
    );
    let (code, stdout, stderr, _) = run(&["report", dir.to_str().unwrap(), "--format", "md"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let md = read(&dir.join("summary.md"));
    assert!(md.contains("PARTIAL"), "{md}");
    assert!(md.contains("200 iterations"), "{md}");
    assert!(md.contains("200 succeeded"), "{md}");
    assert!(md.contains("torn or unreadable rows skipped"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.contains("p95 < 500ms")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(
        rows[0].contains("pass") && rows[0].contains("100.0ms"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("FAIL") && rows[1].contains("1000.0ms"),
        "{}",
        rows[1]
    );
    assert!(rows[1].contains("worst window"), "{}", rows[1]);
}

#[test]
fn the_object_form_is_checked_like_the_rest_of_the_plan() {
    let dir = temp_dir("object-form");
    let ok = plan(
        &dir,
        "50ms",
        "1s",
        "  ttfa: {threshold: p95 < 1s over 10s, abort_on_fail: true, delay_abort_eval: 5s}",
    );
    let (code, stdout, stderr, _) = run(&["validate", ok.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let bad = plan(
        &dir,
        "50ms",
        "1s",
        "  ttfa:\n    - threshold: p95 < 1s\n      abort_on_fial: true",
    );
    let (code, _, stderr, _) = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did you mean `abort_on_fail`"), "{stderr}");
    assert!(stderr.contains("plan.yaml:"), "positioned: {stderr}");
    // An abort that could never fire is a plan error (a count still too low may yet grow).
    let bad = plan(
        &dir,
        "50ms",
        "1s",
        "  ttfa: [{threshold: count >= 3 over 10s, abort_on_fail: true}]",
    );
    let (code, _, stderr, _) = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("can never stop the run"), "{stderr}");
}
