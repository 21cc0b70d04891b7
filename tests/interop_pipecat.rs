//! Interoperability: planrun's Twilio adapter against a real third-party voice stack — a
//! Pipecat bot (its Twilio serializer, FastAPI WebSocket transport and Silero VAD, with local
//! stand-in speech services; `interop/pipecat/`), installed into a venv under `target/` by
//! `interop/pipecat/setup.sh` (PyPI) and started on loopback.
//!
//! Set `PLANRUN_SKIP_INTEROP=1` to skip on a machine without Python or PyPI access; CI never
//! sets it.

mod common;

use std::path::Path;

use common::pipecat::start_bot;
use common::{json, run_cli, temp_dir};
use planrun::cli::exit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_adapter_against_a_pipecat_bot() {
    if std::env::var_os("PLANRUN_SKIP_INTEROP").is_some() {
        eprintln!("PLANRUN_SKIP_INTEROP is set: skipping the Pipecat interop test");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_bot, port) = start_bot(root, "pipecat");

    let dir = temp_dir("pipecat");
    let plan = dir.join("plan.yaml");
    let audio = root.join("audio_files");
    std::fs::write(
        &plan,
        format!(
            "name: pipecat_interop
description: planrun's Twilio adapter against Pipecat's Twilio serializer and Silero VAD.
target:
  url: ws://127.0.0.1:{port}/ws
  protocol: twilio
  twilio:
    custom_parameters: {{caller: planrun}}
load:
  users: 2
  iterations: 2
  ramp_up: 500ms
scenarios:
  - name: ask_then_interrupt
    steps:
      - send_audio: {audio}/weather.wav
      - await: first_audio
        record: ttfa
        timeout: 8s
      - interrupt:
          after: 600ms..900ms
          audio: {audio}/cancel.wav
      - expect: audio_stops
        within: 2s
        record: barge_in
thresholds:
  ttfa: [p95 < 6s, count >= 4]
  barge_in: [p95 < 2s, count >= 4]
  success_rate: \"> 0.99\"
",
            audio = audio.display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let code = run_cli(&[plan.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"]).await;
    let report = json(&out.join("metrics.json"));
    eprintln!(
        "pipecat interop: ttfa p50 {} ms, barge_in p50 {} ms",
        report["metrics"]["ttfa"]["p50_ms"], report["metrics"]["barge_in"]["p50_ms"]
    );
    assert_eq!(code, exit::PASSED, "{report}");
    assert_eq!(report["iterations"]["succeeded"], 4, "{report}");
    // The bot's pipeline: VAD stop (0.2 s) + turn timeout (0.6 s) + LLM (0.15 s) = 0.95 s before
    // it speaks (weather.wav is loud to its last frame). Above that: Silero's 32 ms windows and
    // confidence smoothing, the 20 ms output frames and Python's event loop, allowed 0.3 s
    // (measured p50 1050–1133 ms, min 1045 ms, at load 13–15 on 2 cores).
    let ttfa = &report["metrics"]["ttfa"];
    let (min, p50) = (
        ttfa["min_ms"].as_f64().unwrap(),
        ttfa["p50_ms"].as_f64().unwrap(),
    );
    assert!(min >= 950.0, "faster than the bot's own pipeline: {report}");
    assert!(p50 < 1250.0, "slower than the bot's pipeline: {report}");
    // Silero needs 0.2 s of speech (VAD start) to notice; cancel.wav's first ~120 ms are quiet
    // onset, and the stop takes Silero windows and a 20 ms frame: allowed 0.6 s at p50
    // (measured p50 401–442 ms, min 401 ms).
    let barge = report["metrics"]["barge_in"]["p50_ms"].as_f64().unwrap();
    assert!(
        barge >= 200.0,
        "Silero needs 0.2 s of speech to notice: {report}"
    );
    assert!(barge < 600.0, "slower than VAD start + onset: {report}");
}
