//! End-to-end: real plans against the built-in agent on loopback, through the library and the
//! CLI entry point. Loads are small and bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use planrun::agent::{self, AgentConfig};
use planrun::cli::exit;
use planrun::distribution::Dist;
use planrun::engine;
use planrun::metrics::progress::Progress;
use planrun::plan;
use planrun::plan::model::ReportFormat;

mod common;
use common::{json, run_cli, run_plan, target, temp_dir};

fn write_plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A short plan: explicit turn-taking with the hello clip, recording ttfa and response_time.
fn plan_text(url: &str, users: u32, iterations: u32, thresholds: &str) -> String {
    format!(
        "name: e2e
target:
  url: {url}
  agent:
    asr_latency: 50ms
    llm_latency: 200ms
    tts_latency: 50ms
    reply_duration: 400ms
load:
  users: {users}
  iterations: {iterations}
  seed: 3
scenarios:
  - name: hello
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        record: response_time
        timeout: 5s
thresholds:
{thresholds}
"
    )
}

fn read_json(dir: &Path) -> serde_json::Value {
    json(&dir.join("metrics.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_run_measures_the_configured_latency() {
    let dir = temp_dir("latency");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text(
            "builtin",
            3,
            2,
            "  ttfa: [p95 < 1s]\n  success_rate: \"> 0.99\"",
        ),
    );
    let compiled = plan::compile::compile(&plan::load(&path).unwrap()).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let outcome = engine::run(&compiled, rx, Arc::new(Progress::default()))
        .await
        .unwrap();
    let s = &outcome.summary;
    assert_eq!(s.iterations().total, 6);
    assert_eq!(s.iterations().failed, 0, "{:?}", s.errors());
    let ttfa = s.stats("ttfa").unwrap();
    assert_eq!(ttfa.count, 6);
    // asr 50 + llm 200 + tts 50 = 300 ms configured: never less, and within a few ms of it
    // (measured p50 301.3–302.1 ms, min 300.3–301.3, at load 3–10 on 2 cores), so a
    // systematic +20 ms bias fails.
    assert!(
        ttfa.min_ms >= 300.0 && ttfa.p50_ms < 310.0,
        "ttfa should be near 300ms: {ttfa:?}"
    );
    let rt = s.stats("response_time").unwrap();
    // 300 ms to first audio + 400 ms of reply audio streamed in real time (measured p50
    // 701.4–704.5 ms).
    assert!(rt.p50_ms >= 700.0 && rt.p50_ms < 715.0, "{rt:?}");
    assert_eq!(s.stats("connect").unwrap().count, 6);
    let results = planrun::judge::thresholds::evaluate(s, &compiled.thresholds);
    assert!(results.iter().all(|r| r.passed), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_writes_reports_and_exits_zero() {
    let dir = temp_dir("reports");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text("builtin", 2, 1, "  ttfa: p95 < 2s"),
    );
    let out = dir.join("out");
    let code = run_plan(&path, &out, |_| {}).await;
    assert_eq!(code, exit::PASSED);
    let json = read_json(&out);
    assert_eq!(json["plan"], "e2e");
    assert_eq!(json["passed"], true);
    assert_eq!(json["iterations"]["total"], 2);
    assert_eq!(json["iterations"]["succeeded"], 2);
    assert_eq!(json["iterations"]["failed"], 0);
    assert!(json["errors"].as_object().unwrap().is_empty());
    for key in [
        "count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
    ] {
        assert!(json["metrics"]["ttfa"][key].is_number(), "{key}: {json}");
    }
    assert_eq!(json["metrics"]["ttfa"]["count"], 2);
    let t = &json["thresholds"][0];
    assert_eq!(t["metric"], "ttfa");
    assert_eq!(t["expression"], "p95 < 2s");
    assert_eq!(t["passed"], true);
    assert!(t["observed"].as_f64().unwrap() > 250.0);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("# planrun: e2e — PASSED"), "{md}");
    assert!(md.contains("| `ttfa` | 2 |"), "{md}");
    assert!(md.contains("`p95 < 2s`"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_agent_fails_the_threshold_with_exit_1() {
    let cfg = AgentConfig {
        llm_latency: Dist::from_millis(900),
        reply_duration: Dist::from_millis(200),
        ..AgentConfig::default()
    };
    let slow = agent::spawn("127.0.0.1:0", cfg).await.unwrap();
    let dir = temp_dir("slow");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text("builtin", 1, 2, "  ttfa: [p95 < 500ms, p99 < 5s]"),
    );
    let out = dir.join("out");
    let code = run_plan(&path, &out, |o| o.target = target(&slow.url())).await;
    slow.shutdown().await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    let json = read_json(&out);
    assert_eq!(json["passed"], false);
    let th = json["thresholds"].as_array().unwrap();
    assert_eq!(th[0]["expression"], "p95 < 500ms");
    assert_eq!(th[0]["passed"], false);
    assert!(th[0]["observed"].as_f64().unwrap() >= 900.0);
    assert_eq!(th[1]["passed"], true);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("FAILED"), "{md}");
    assert!(md.contains("❌ **FAIL** | `ttfa` | `p95 < 500ms`"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_exits_3_and_still_reports() {
    // Bind then drop a listener to get a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir("refused");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text("builtin", 2, 1, "  ttfa: p95 < 1s"),
    );
    let out = dir.join("out");
    let url = format!("ws://127.0.0.1:{port}/");
    let code = run_plan(&path, &out, |o| o.target = target(&url)).await;
    assert_eq!(code, exit::CANNOT_RUN);
    let json = read_json(&out);
    assert_eq!(json["errors"]["connect_error"], 2);
    assert_eq!(json["iterations"]["failed"], 2);
    // The ttfa threshold has no samples and so fails rather than passing vacuously.
    assert_eq!(json["thresholds"][0]["passed"], false);
    assert!(json["thresholds"][0]["observed"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_plans_exit_2() {
    let dir = temp_dir("malformed");
    let yaml = write_plan(
        &dir,
        "bad.yaml",
        "name: x\ntarget:\n  url: builtin\n  sample_rat: 8000\nscenarios: []\n",
    );
    assert_eq!(run_cli(&[yaml.to_str().unwrap()]).await, exit::INVALID);
    let toml = write_plan(&dir, "bad.toml", "name = 'x'\n[target]\nurl = 3\n");
    assert_eq!(
        run_cli(&["validate", toml.to_str().unwrap()]).await,
        exit::INVALID
    );
    assert_eq!(
        run_cli(&["validate", "plans/quickstart.yaml", "plans/quickstart.toml"]).await,
        exit::PASSED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_scenario_sequence() {
    let dir = temp_dir("seed");
    let text = "name: mix
target:
  url: builtin
  agent:
    reply_duration: 100ms
    llm_latency: 20ms
load:
  users: 2
  iterations: 6
  seed: 11
scenarios:
  - name: a
    weight: 1
    steps:
      - send: speech_start
      - send: speech_end
      - await: response_end
  - name: b
    weight: 1
    steps:
      - send: speech_start
      - send: speech_end
      - await: response_end
";
    let path = write_plan(&dir, "mix.yaml", text);
    let compiled = plan::compile::compile(&plan::load(&path).unwrap()).unwrap();
    let mut sequences = Vec::new();
    for _ in 0..2 {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        // Iterations reach the timeline stream, not the run's memory.
        let (sink, records) = std::sync::mpsc::channel();
        engine::run_observed(&compiled, rx, Arc::new(Progress::default()), Some(sink))
            .await
            .unwrap();
        let mut seq: Vec<(u32, u64, String)> = records
            .try_iter()
            .map(|r| (r.user, r.iteration, r.scenario.clone()))
            .collect();
        seq.sort();
        assert_eq!(seq.len(), 12);
        sequences.push(seq);
    }
    assert_eq!(sequences[0], sequences[1]);
    let a = sequences[0].iter().filter(|s| s.2 == "a").count();
    assert!(
        a > 0 && a < 12,
        "both scenarios should be picked: {:?}",
        sequences[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_run_keeps_its_results() {
    let dir = temp_dir("stop");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text("builtin", 2, 50, "  ttfa: p95 < 2s"),
    );
    let compiled = plan::compile::compile(&plan::load(&path).unwrap()).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = tx.send(true);
        tx
    });
    let started = std::time::Instant::now();
    let o = engine::run(&compiled, rx, Arc::new(Progress::default()))
        .await
        .unwrap();
    let _tx = stopper.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "stop must be prompt"
    );
    assert!(o.summary.aborted);
    assert!(
        o.summary.iterations().succeeded >= 2,
        "{:?}",
        o.summary.iterations()
    );
    assert!(o.summary.stats("ttfa").is_some());
    assert!(o.summary.aborted_iterations() >= 1);
    assert_eq!(
        o.summary.iterations().failed,
        0,
        "stopped iterations are not failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_targets_speak_tls() {
    // The built-in agent speaks plain WebSocket, so a TLS handshake with it must fail — as a
    // classified connect_error that names TLS, proving wss:// is really attempted.
    let plain = agent::spawn("127.0.0.1:0", AgentConfig::default())
        .await
        .unwrap();
    let dir = temp_dir("wss");
    let path = write_plan(
        &dir,
        "p.yaml",
        &plan_text("builtin", 1, 1, "  ttfa: p95 < 1s"),
    );
    let out = dir.join("out");
    let url = format!("wss://127.0.0.1:{}/", plain.addr().port());
    let code = run_plan(&path, &out, |o| {
        o.target = target(&url);
        o.outputs.formats = vec![ReportFormat::Json];
    })
    .await;
    plain.shutdown().await;
    assert_eq!(code, exit::CANNOT_RUN);
    let json = read_json(&out);
    assert_eq!(json["errors"]["connect_error"], 1);
    let msg = json["failures"][0]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(!msg.contains("not compiled"), "{msg}");
    assert!(
        msg.contains("tls")
            || msg.contains("ssl")
            || msg.contains("handshake")
            || msg.contains("corrupt"),
        "{msg}"
    );
}
