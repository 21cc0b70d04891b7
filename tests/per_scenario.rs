//! Per-scenario breakdown and filtered thresholds (`ttfa{scenario:slow}`, `ttfa{tag:t}`): two
//! scenarios against the built-in agent, one of which triggers a 600 ms tool call before
//! the reply (the agent's `tool_keywords`), so its time to first audio is that much longer.
//! Every report format carries the breakdown; a filter naming no scenario or tag is a plan
//! error; a filter whose group measured nothing fails with "no samples".

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{json, read, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_planrun");

fn plan(dir: &Path, thresholds: &str) -> PathBuf {
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio_files");
    let text = format!(
        "name: breakdown
target:
  url: builtin
  agent:
    asr_latency: 20ms
    llm_latency: 30ms
    tts_latency: 20ms
    reply_duration: 200ms
    tool_keywords: [weather]
    tool_latency: 600ms
load:
  users: 2
  iterations: 3
  seed: 11
scenarios:
  - name: fast
    tags: [smalltalk]
    steps:
      - send_audio: {hello}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
  - name: slow
    tags: [tools]
    steps:
      - send_audio: {weather}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
thresholds:
{thresholds}
",
        hello = audio.join("hello.wav").display(),
        weather = audio.join("weather.wav").display(),
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_slow_scenario_fails_its_own_threshold_and_every_report_breaks_metrics_down() {
    let dir = temp_dir("per-scenario");
    let p = plan(
        &dir,
        "  ttfa{scenario:fast}: p95 < 450ms
  ttfa{scenario:slow}: p95 < 450ms
  ttfa{tag:tools}: count >= 1
  success_rate{scenario:fast}: \"> 0.9\"
  ttfa: p99 < 5s",
    );
    let out = dir.join("out");
    let (code, stdout, stderr) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");

    // metrics.json: the verdicts and the breakdown.
    let m = json(&out.join("metrics.json"));
    let verdict = |metric: &str| {
        m["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["metric"] == metric)
            .unwrap_or_else(|| panic!("{metric}: {:#}", m["thresholds"]))
            .clone()
    };
    assert_eq!(verdict("ttfa{scenario:fast}")["passed"], true, "{m:#}");
    let slow = verdict("ttfa{scenario:slow}");
    assert_eq!(slow["passed"], false, "{slow:#}");
    assert!(slow["observed"].as_f64().unwrap() >= 600.0, "{slow:#}");
    assert_eq!(verdict("ttfa{tag:tools}")["passed"], true);
    assert_eq!(verdict("success_rate{scenario:fast}")["passed"], true);
    assert_eq!(verdict("ttfa")["passed"], true);

    let groups = m["breakdown"].as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "scenario:fast",
            "scenario:slow",
            "tag:smalltalk",
            "tag:tools"
        ]
    );
    let ttfa = |g: &serde_json::Value| {
        g["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["metric"] == "ttfa")
            .unwrap()
            .clone()
    };
    let (fast, slow) = (ttfa(&groups[0]), ttfa(&groups[1]));
    let count = |g: &serde_json::Value| g["count"].as_u64().unwrap();
    assert_eq!(
        count(&fast) + count(&slow),
        m["metrics"]["ttfa"]["count"].as_u64().unwrap()
    );
    assert!(count(&fast) > 0 && count(&slow) > 0, "{groups:#?}");
    assert!(
        slow["p50_ms"].as_f64().unwrap() > fast["p50_ms"].as_f64().unwrap() + 400.0,
        "{fast} {slow}"
    );
    assert_eq!(
        groups[0]["iterations"]["total"].as_u64().unwrap()
            + groups[1]["iterations"]["total"].as_u64().unwrap(),
        6
    );
    assert_eq!(
        ttfa(&groups[3]),
        slow,
        "the tag `tools` is the slow scenario"
    );
    // The grouped histograms are stored too (exact, mergeable).
    assert!(m["histograms"]["ttfa{scenario:slow}"].is_string());

    // Console, summary.md, report.html and junit.xml all carry it.
    assert!(stdout.contains("by scenario and tag:"), "{stdout}");
    assert!(stdout.contains("scenario:slow"), "{stdout}");
    let md = read(&out.join("summary.md"));
    assert!(md.contains("## By scenario and tag"), "{md}");
    assert!(md.contains("| `scenario:slow` | `ttfa` |"), "{md}");
    assert!(md.contains("`ttfa{scenario:slow}`"), "{md}");
    let html = read(&out.join("report.html"));
    assert!(html.contains("By scenario and tag"));
    assert!(html.contains("<code>tag:tools</code>"));
    let xml = read(&out.join("junit.xml"));
    assert!(xml.contains("ttfa{scenario:slow}: count"), "{xml}");
    assert!(xml.contains("tag tools metrics"), "{xml}");
    assert!(
        xml.contains("ttfa{scenario:slow} p95 &lt; 450ms"),
        "a failed filtered threshold is a failed test case: {xml}"
    );
}

#[test]
fn a_filter_naming_nothing_is_a_plan_error_with_a_suggestion() {
    let dir = temp_dir("per-scenario-bad");
    let p = plan(
        &dir,
        "  ttfa{scenario:slw}: p95 < 1s\n  ttfa{tag:tool}: p95 < 1s",
    );
    let (code, stdout, stderr) = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no scenario of this plan is called that"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `ttfa{scenario:slow}`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `ttfa{tag:tools}`?"),
        "{stderr}"
    );
    assert!(stderr.contains("plan.yaml:"), "positioned: {stderr}");
    let p = plan(&dir, "  checks{scenario:slow}: \"> 0.5\"");
    let (code, _, stderr) = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    let p = plan(&dir, "  ttfa{scenaro:slow}: p95 < 1s");
    let (code, _, stderr) = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("did you mean `scenario`"), "{stderr}");
}

#[test]
fn a_filter_whose_group_measured_nothing_fails_with_no_samples() {
    // `slow` has weight 0: it exists (the filter validates) but never runs.
    let dir = temp_dir("per-scenario-none");
    let p = plan(
        &dir,
        "  ttfa{scenario:slow}: p95 < 5s\n  ttfa{tag:tools}: max < 5s",
    );
    let text = read(&p).replace("  - name: slow\n", "  - name: slow\n    weight: 0\n");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("out");
    let (code, stdout, stderr) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let m = json(&out.join("metrics.json"));
    for t in m["thresholds"].as_array().unwrap() {
        assert_eq!(t["passed"], false, "{t}");
        assert_eq!(t["observed_text"], "no samples", "{t}");
    }
}

#[test]
fn a_steps_tags_count_what_is_measured_while_it_runs() {
    let dir = temp_dir("per-scenario-step-tags");
    let p = plan(
        &dir,
        "  ttfa{tag:answer}: p95 < 450ms\n  ttfa{scenario:fast}: p95 < 450ms",
    );
    // Tag the slow scenario's first_audio step only.
    let text = read(&p);
    let marker = "      - send_audio: ";
    let at = text.rfind(marker).unwrap();
    let slow_await = at + text[at..].find("      - await: first_audio\n").unwrap();
    let mut text = text;
    text.insert_str(
        slow_await + "      - await: first_audio\n".len(),
        "        tags: [answer]\n",
    );
    std::fs::write(&p, &text).unwrap();
    let out = dir.join("out");
    let (code, stdout, stderr) = run(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}\n{stdout}\n{stderr}");
    let m = json(&out.join("metrics.json"));
    let group = |name: &str| {
        m["breakdown"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("{name}: {:#}", m["breakdown"]))
            .clone()
    };
    let answer = group("tag:answer");
    let slow = group("scenario:slow");
    let metrics = |g: &serde_json::Value| {
        g["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["metric"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Only what that step measured: the slow scenario's ttfa, not its connect or iteration.
    assert_eq!(metrics(&answer), ["ttfa"], "{answer:#}");
    let ttfa = |g: &serde_json::Value| {
        g["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["metric"] == "ttfa")
            .unwrap()["count"]
            .clone()
    };
    assert_eq!(ttfa(&answer), ttfa(&slow));
    let verdicts: Vec<(String, bool)> = m["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["metric"].as_str().unwrap().to_string(),
                t["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        verdicts.contains(&("ttfa{tag:answer}".into(), false)),
        "{verdicts:?}"
    );
    assert!(
        verdicts.contains(&("ttfa{scenario:fast}".into(), true)),
        "{verdicts:?}"
    );

    // A step's tag is judged over the whole run only: windows on it are refused.
    std::fs::write(
        &p,
        text.replace(
            "ttfa{tag:answer}: p95 < 450ms",
            "ttfa{tag:answer}: p95 < 450ms over 5s",
        ),
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tags steps"), "{stderr}");
}
