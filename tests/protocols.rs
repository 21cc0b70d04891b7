//! Every wire adapter against the built-in agent, end to end: the example plans run green and
//! the numbers follow the agent's configured delays.

mod common;

use common::{json, run_cli, temp_dir};
use planrun::cli::exit;
use serde_json::Value;

async fn run_plan(path: &str, tag: &str) -> (u8, Value) {
    let out = temp_dir(tag).join("out");
    let code = common::run_plan(std::path::Path::new(path), &out, |_| {}).await;
    (code, json(&out.join("metrics.json")))
}

async fn run_yaml(tag: &str, yaml: &str) -> (u8, Value) {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    run_plan(path.to_str().unwrap(), tag).await
}

fn stat(report: &Value, metric: &str, field: &str) -> f64 {
    report["metrics"][metric][field]
        .as_f64()
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_plan_runs_green_with_barge_in() {
    let (code, r) = run_plan("plans/twilio.yaml", "twilio").await;
    assert_eq!(code, exit::PASSED, "{r}");
    assert_eq!(r["iterations"]["succeeded"], 8, "{r}");
    // The agent's pipeline (ASR 40-80 ms default + LLM ~200 ms + TTS) plus its VAD hangover.
    assert!(stat(&r, "ttfa", "min_ms") > 400.0, "{r}");
    assert!(stat(&r, "barge_in", "p95_ms") < 500.0, "{r}");
    assert!(
        stat(&r, "barge_in", "min_ms") >= 60.0,
        "barge_in_delay is 60-120 ms: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_realtime_plan_runs_green_with_tool_calls_and_captured_timings() {
    let (code, r) = run_plan("plans/openai_realtime.yaml", "openai").await;
    assert_eq!(code, exit::PASSED, "{r}");
    assert_eq!(r["iterations"]["succeeded"], 8, "{r}");
    // Tool calls take the configured 300 ms longer.
    assert!(
        stat(&r, "ttfa_tool", "p50_ms") > stat(&r, "ttfa", "p50_ms") + 250.0,
        "{r}"
    );
    // The LLM time the agent reports in response.done's metadata: normal(220ms, 30ms).
    let llm = stat(&r, "server_llm", "p50_ms");
    assert!((150.0..300.0).contains(&llm), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_realtime_server_vad_turns() {
    let (code, r) = run_yaml(
        "openai-vad",
        "name: vad
target:
  url: builtin
  protocol: openai-realtime
  agent:
    llm_latency: 200ms
    asr_latency: 50ms
    tts_latency: 50ms
    reply_duration: 1s
load: {users: 2, iterations: 1}
scenarios:
  - name: ask
    steps:
      - send_audio: audio_files/hello.wav
      - await: speech_stopped       # the server's VAD noticed the end of speech
        timeout: 5s
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
",
    )
    .await;
    assert_eq!(code, exit::PASSED, "{r}");
    // Silence streams between utterances, so the agent's VAD hangover ends the turn: the answer
    // comes after hangover + 300 ms of pipeline.
    assert!(stat(&r, "ttfa", "min_ms") >= 300.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_json_plan_runs_green() {
    let (code, r) = run_plan("plans/custom_json.yaml", "custom").await;
    assert_eq!(code, exit::PASSED, "{r}");
    assert_eq!(r["iterations"]["succeeded"], 6, "{r}");
    assert!(stat(&r, "ttfa", "min_ms") > 200.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_speak_the_same_as_the_adapters() {
    for (tag, preset, extra) in [
        ("preset-raw", "raw", "      - send: speech_end\n"),
        ("preset-twilio", "twilio", ""),
    ] {
        let (code, r) = run_yaml(
            tag,
            &format!(
                "name: {tag}
target:
  url: builtin
  protocol: custom
  continuous_audio: true
  custom: {{preset: {preset}}}
  agent: {{llm_latency: 200ms, reply_duration: 1s}}
load: {{users: 1, iterations: 2}}
scenarios:
  - name: ask
    steps:
      - send_audio: audio_files/hello.wav
{extra}      - await: first_audio
        record: ttfa
        timeout: 5s
"
            ),
        )
        .await;
        assert_eq!(code, exit::PASSED, "{tag}: {r}");
        assert!(stat(&r, "ttfa", "min_ms") >= 200.0, "{tag}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_custom_mappings_are_plan_errors() {
    let dir = temp_dir("bad-custom");
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        "name: bad
target:
  url: builtin
  protocol: custom
  custom:
    audio: '{\"a\": \"{{ audio }\"}'
    inbound:
      - {when: {event: media}, audio: /payload}
scenarios:
  - name: s
    steps:
      - wait: 10ms
",
    )
    .unwrap();
    let code = run_cli(&["validate", path.to_str().unwrap()]).await;
    assert_eq!(code, exit::INVALID);
}
