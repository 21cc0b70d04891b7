//! Interoperability over WebRTC: `plans/webrtc_pipecat.yaml` (planrun's str0m caller, Pipecat
//! signalling) against a real Pipecat SmallWebRTC bot — aiortc, Silero VAD, stand-in
//! STT/LLM/TTS (`interop/pipecat_webrtc/`), installed into a venv under `target/` by
//! `interop/pipecat_webrtc/setup.sh` (PyPI) and started on loopback only.
//!
//! Set `PLANRUN_SKIP_INTEROP=1` to skip on a machine without Python or PyPI access; CI never
//! sets it.

mod common;

use std::path::Path;

use common::pipecat::start_bot;
use common::{json, temp_dir};
use planrun::cli::exit;

/// Run `plans/webrtc_pipecat.yaml` against `url` (`users` callers, the plan's iterations).
async fn run_plan(root: &Path, url: &str, out: &Path, users: u32) -> u8 {
    common::run_plan(&root.join("plans/webrtc_pipecat.yaml"), out, |o| {
        o.target = common::target(url);
        o.users = Some(users);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_callers_against_a_pipecat_smallwebrtc_bot() {
    if std::env::var_os("PLANRUN_SKIP_INTEROP").is_some() {
        eprintln!("PLANRUN_SKIP_INTEROP is set: skipping the Pipecat WebRTC interop test");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_bot, port) = start_bot(root, "pipecat_webrtc");
    let url = format!("http://127.0.0.1:{port}/api/offer");
    let dir = temp_dir("pipecat-webrtc");

    // One warm-up caller: the bot's first session pays Pipecat's lazy imports and ONNX warm-up.
    let _ = run_plan(root, &url, &dir.join("warmup"), 1).await;

    let out = dir.join("out");
    let code = run_plan(root, &url, &out, 2).await;
    let report = json(&out.join("metrics.json"));
    eprintln!(
        "pipecat webrtc interop: ttfa p50 {} ms, barge_in p50 {} ms",
        report["metrics"]["ttfa"]["p50_ms"], report["metrics"]["barge_in"]["p50_ms"]
    );
    assert_eq!(code, exit::PASSED, "{report}");
    assert_eq!(report["iterations"]["succeeded"], 4, "{report}");

    // The bot's pipeline before it speaks: Silero stop (0.2 s) + turn timeout (0.6 s) + LLM
    // (0.15 s) = 0.95 s after weather.wav's last loud frame. Above it: Silero's 32 ms windows,
    // aiortc's 10 ms output pacing and Opus on both sides, Python's event loop: measured p50
    // 1.15–1.20 s on 2 busy cores; allowed up to 1.7 s.
    let ttfa = &report["metrics"]["ttfa"];
    let (min, p50) = (
        ttfa["min_ms"].as_f64().unwrap(),
        ttfa["p50_ms"].as_f64().unwrap(),
    );
    assert!(min >= 950.0, "faster than the bot's own pipeline: {report}");
    assert!(p50 < 1700.0, "slower than the bot's pipeline: {report}");

    // Barge-in: Silero needs 0.2 s of speech to start the user's turn (cancel.wav's first
    // ~120 ms are a quiet onset), then Pipecat interrupts its output; no message flushes the
    // caller's buffer over WebRTC, so the stop is heard when the audio stops arriving plus the
    // 60 ms playout buffer. Measured p50 0.6–1.1 s on 2 busy cores; allowed up to 1.8 s.
    let barge = &report["metrics"]["barge_in"];
    let (min, p50) = (
        barge["min_ms"].as_f64().unwrap(),
        barge["p50_ms"].as_f64().unwrap(),
    );
    assert!(
        min >= 200.0,
        "Silero needs 0.2 s of speech to notice: {report}"
    );
    assert!(p50 < 1800.0, "slower than VAD start + onset: {report}");

    // timeline.csv: in every call the bot's audio stops after the caller's interruption.
    let timeline = std::fs::read_to_string(out.join("timeline.csv")).expect("timeline.csv");
    let mut calls = std::collections::BTreeMap::<(String, String), (f64, f64)>::new();
    for line in timeline.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 5 {
            continue;
        }
        let t: f64 = f[0].parse().unwrap_or(f64::NAN);
        let entry = calls
            .entry((f[1].to_string(), f[2].to_string()))
            .or_insert((f64::NAN, f64::NAN));
        match f[4] {
            "interrupt" => entry.0 = t,
            "audio_stops" => entry.1 = t,
            _ => {}
        }
    }
    assert_eq!(calls.len(), 4, "{timeline}");
    for ((user, iteration), (interrupt, stops)) in &calls {
        assert!(
            stops > interrupt && stops - interrupt < 2000.0,
            "user {user} iteration {iteration}: interrupt at {interrupt} ms, audio_stops at {stops} ms\n{timeline}"
        );
    }
}
