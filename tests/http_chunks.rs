//! `protocol: http_chunks` end to end: plans POST audio chunks to the built-in agent's HTTP side
//! (`POST /chunks`) on loopback. Chunks are short (≤ 1 s) and loads small.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use planrun::agent::{self, AgentConfig, HttpAgentConfig};
use planrun::cli::exit;
use planrun::distribution::Dist;
use planrun::engine::{self, RunOutcome};
use planrun::metrics::progress::Progress;
use planrun::plan;

mod common;
use common::{json, read, run_cli, temp_dir};

fn write_plan(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run_plan(text: &str) -> (plan::CompiledPlan, Ran) {
    let dir = temp_dir("http-lib");
    let path = write_plan(&dir, text);
    let compiled = plan::compile::compile(&plan::load(&path).unwrap()).unwrap();
    let outcome = run_collecting(&compiled).await;
    (compiled, outcome)
}

/// A run and its iterations, taken from the stream the timeline is written from (a run keeps
/// no iteration in memory).
pub struct Ran {
    pub outcome: RunOutcome,
    pub iterations: Vec<planrun::metrics::IterationRecord>,
}

impl std::ops::Deref for Ran {
    type Target = RunOutcome;
    fn deref(&self) -> &RunOutcome {
        &self.outcome
    }
}

async fn run_collecting(compiled: &plan::CompiledPlan) -> Ran {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let (sink, records) = std::sync::mpsc::channel();
    let outcome = engine::run_observed(compiled, rx, Arc::new(Progress::default()), Some(sink))
        .await
        .unwrap();
    Ran {
        outcome,
        iterations: records.try_iter().collect(),
    }
}

/// Values of one metric in recording order, across all iterations.
fn samples(outcome: &Ran, metric: &str) -> Vec<f64> {
    outcome
        .iterations
        .iter()
        .flat_map(|r| r.samples.iter())
        .filter(|s| s.metric == metric)
        .map(|s| s.value_ms)
        .collect()
}

/// A plan against `url` with this `http:` table body, agent settings and steps.
fn plan_text(url: &str, http: &str, agent: &str, load: &str, steps: &str) -> String {
    format!(
        "name: http_test
target:
  url: {url}
  protocol: http_chunks
  http:
{http}
  agent:
{agent}
load:
{load}
scenarios:
  - name: call
    steps:
{steps}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_plan_runs_green_with_throughput() {
    let dir = temp_dir("http-plan");
    let out = dir.join("out");
    let code = common::run_plan(std::path::Path::new("plans/http_chunks.yaml"), &out, |_| {}).await;
    let m = json(&out.join("metrics.json"));
    assert_eq!(code, exit::PASSED, "{m}");
    assert_eq!(m["iterations"]["total"], 12);
    assert_eq!(m["iterations"]["failed"], 0);
    let h = &m["http"];
    let chunks = h["chunks"].as_u64().unwrap();
    assert_eq!(h["calls"], 12);
    assert_eq!(m["metrics"]["chunk_latency"]["count"], chunks);
    assert_eq!(m["metrics"]["score"]["count"], chunks);
    // The audio answered is exactly what the scenarios sent: weather.wav + a 2 s tone per
    // `speech` call, 2 s of silence + hello.wav per `mostly_silence` call.
    let dur = |f: &str| {
        planrun::audio::load_wav(Path::new(f), 16_000)
            .unwrap()
            .duration()
            .as_secs_f64()
    };
    let speech = m["scenarios"]["speech"]["total"].as_f64().unwrap();
    let silent = m["scenarios"]["mostly_silence"]["total"].as_f64().unwrap();
    let expected_audio = speech * (dur("audio_files/weather.wav") + 2.0)
        + silent * (2.0 + dur("audio_files/hello.wav"));
    let audio_s = h["audio_s"].as_f64().unwrap();
    assert!(
        (audio_s - expected_audio).abs() < 0.01,
        "{audio_s} vs {expected_audio}"
    );
    // 1 s chunks, each part of a step rounded up: one chunk per started second per step.
    let expected_chunks = speech * ((dur("audio_files/weather.wav")).ceil() + 2.0)
        + silent * (2.0 + dur("audio_files/hello.wav").ceil());
    assert_eq!(chunks as f64, expected_chunks);
    let elapsed = m["elapsed_s"].as_f64().unwrap();
    let per = |k: &str| h[k].as_f64().unwrap();
    assert!(
        (per("chunks_per_s") - chunks as f64 / elapsed).abs() < 0.01,
        "{h}"
    );
    assert!((per("calls_per_s") - 12.0 / elapsed).abs() < 0.01, "{h}");
    assert!(
        (per("audio_s_per_s") - audio_s / elapsed).abs() < 0.01,
        "{h}"
    );
    // Summed chunk latency / wall: the mean chunk latency (~120 ms) times chunks over the wall.
    let busy = m["metrics"]["chunk_latency"]["mean_ms"].as_f64().unwrap() * chunks as f64 / 1000.0;
    assert!((per("processing_s") - busy).abs() < 0.05 * busy, "{h}");
    assert!(
        (per("concurrent_efficiency") - busy / elapsed).abs() < 0.05,
        "{h}"
    );
    // Realtime chunks go out once captured, so a call runs at about real time or a bit faster
    // (the burst tone), never far off.
    assert!((0.9..2.5).contains(&per("call_audio_s_per_s")), "{h}");
    let md = read(&out.join("summary.md"));
    assert!(md.contains("## HTTP chunk throughput"), "{md}");
    assert!(md.contains("| Concurrent efficiency |"), "{md}");
    assert!(read(&out.join("report.html")).contains("HTTP chunk throughput"));

    // A metrics.json without the `http` block (an older run, or a WebSocket one) re-renders
    // without the section.
    let mut old = m.clone();
    old.as_object_mut().unwrap().remove("http");
    std::fs::write(out.join("metrics.json"), old.to_string()).unwrap();
    let again = dir.join("again");
    let code = run_cli(&[
        "report",
        out.to_str().unwrap(),
        "--out-dir",
        again.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, exit::PASSED);
    let md = read(&again.join("summary.md"));
    assert!(
        md.contains("## Latencies") && !md.contains("HTTP chunk"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_measured_and_scores_match_the_agents_analysis() {
    let (_, outcome) = run_plan(&plan_text(
        "builtin",
        "    chunk: 1s\n    capture:\n      score: /score\n      processing: /processing_ms\n      duration: /duration_ms",
        "    chunk_latency: 200ms",
        "  users: 1\n  iterations: 1",
        "      - send_audio: {silence: 1s, pacing: burst}\n      - send_audio: {file: audio_files/weather.wav, pacing: burst}",
    ))
    .await;
    let s = &outcome.summary;
    assert_eq!(s.iterations().failed, 0, "{:?}", outcome.iterations);
    // What the agent computes for each 1 s chunk of the same audio.
    let clip = planrun::audio::load_wav(Path::new("audio_files/weather.wav"), 16_000).unwrap();
    let mut expected = vec![0.0];
    let mut durations = vec![1000.0];
    for chunk in clip.samples.chunks(16_000) {
        let a = agent::analyse_chunk(chunk, 16_000, AgentConfig::default().vad_threshold_dbfs);
        expected.push(a.score);
        durations.push(a.duration_ms);
    }
    let got = samples(&outcome, "score");
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() < 1e-6,
            "scores {got:?} vs the agent's {expected:?}"
        );
    }
    // Speech and silence really differ: the recording scores above 0, silence scores 0.
    assert_eq!(got[0], 0.0);
    assert!(got[1..].iter().any(|v| *v > 30.0), "{got:?}");
    let d = samples(&outcome, "duration");
    for (g, e) in d.iter().zip(&durations) {
        assert!((g - e).abs() < 1e-6, "{d:?} vs {durations:?}");
    }
    // Configured 200 ms processing: the server's own timing and the client's round trip are
    // at least that, and close to it on loopback.
    let lat = s.stats("chunk_latency").unwrap();
    assert_eq!(lat.count as usize, expected.len());
    assert!(lat.min_ms >= 200.0 && lat.p50_ms < 260.0, "{lat:?}");
    let proc_ = s.stats("processing").unwrap();
    assert!(
        proc_.min_ms >= 199.9 && proc_.max_ms <= lat.max_ms,
        "{proc_:?} {lat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_multipart_wav_and_pcm16_all_work_against_an_http_url() {
    let cfg = AgentConfig {
        http: HttpAgentConfig {
            chunk_latency: Dist::from_millis(5),
            ..HttpAgentConfig::default()
        },
        ..AgentConfig::default()
    };
    let agent = agent::spawn("127.0.0.1:0", cfg).await.unwrap();
    let url = agent.http_url();
    for body in ["raw", "multipart"] {
        for format in ["wav", "pcm16"] {
            let (_, outcome) = run_plan(&plan_text(
                &url,
                &format!(
                    "    chunk: 500ms\n    body: {body}\n    format: {format}\n    multipart: {{field: upload, file_name: x.bin}}\n    capture:\n      score: /score\n      duration: /duration_ms"
                ),
                "    seed: 1",
                "  users: 1\n  iterations: 1",
                "      - send_audio: {tone: 1s, pacing: burst}\n      - send_audio: {silence: 250ms, pacing: burst}",
            ))
            .await;
            let s = &outcome.summary;
            assert_eq!(
                s.iterations().failed,
                0,
                "{body}/{format}: {:?}",
                outcome.iterations
            );
            assert_eq!(
                samples(&outcome, "score"),
                vec![100.0, 100.0, 0.0],
                "{body}/{format}"
            );
            assert_eq!(
                samples(&outcome, "duration"),
                vec![500.0, 500.0, 250.0],
                "{body}/{format}"
            );
        }
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_are_classified_with_the_body_excerpt_in_the_report() {
    let cases = [
        (
            "http_error: 1.0",
            "",
            "http_error",
            "HTTP 500 Internal Server Error: `internal error: injected fault (http_error)`",
        ),
        (
            "non_json: 1.0",
            "",
            "protocol_error",
            "response is not JSON",
        ),
        (
            "",
            "    capture:\n      nope: /missing\n",
            "protocol_error",
            "captured field `/missing` (nope) is missing",
        ),
    ];
    for (fault, capture, class, message) in cases {
        let dir = temp_dir("http-faults");
        let faults = if fault.is_empty() {
            String::new()
        } else {
            format!("    faults: {{{fault}}}\n")
        };
        let path = write_plan(
            &dir,
            &plan_text(
                "builtin",
                &format!("    chunk: 500ms\n{capture}"),
                &format!("    chunk_latency: 5ms\n{faults}"),
                "  users: 2\n  iterations: 2",
                "      - send_audio: {tone: 1s, pacing: burst}",
            ),
        );
        let out = dir.join("out");
        let code = common::run_plan(&path, &out, |_| {}).await;
        assert_eq!(code, exit::PASSED, "no thresholds: the run itself passes");
        let m = json(&out.join("metrics.json"));
        assert_eq!(m["errors"][class], 4, "{fault}{capture}: {}", m["errors"]);
        assert_eq!(m["iterations"]["failed"], 4);
        let f = &m["failures"][0];
        assert_eq!(f["class"], class);
        let text = f["message"].as_str().unwrap();
        assert!(text.contains(message), "{text}");
        assert!(text.starts_with("chunk 1: "), "{text}");
        assert!(f["step"].as_str().unwrap().contains("line"), "{f}");
        if class == "protocol_error" && fault.is_empty() {
            // The excerpt of the valid JSON body that lacked the field.
            assert!(text.contains("\"score\":100"), "{text}");
        }
        if fault.starts_with("non_json") {
            assert!(
                text.contains("`<html><body>injected fault (non_json)"),
                "{text}"
            );
        }
        // Calls that failed still count as calls; their chunks were not answered.
        assert_eq!(m["http"]["calls"], 4);
        assert_eq!(m["http"]["chunks"], if fault.is_empty() { 4 } else { 0 });
        let md = read(&out.join("summary.md"));
        assert!(md.contains(&format!("**{class}**")), "{md}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_refused_connections_are_classified() {
    let (_, outcome) = run_plan(&plan_text(
        "builtin",
        "    chunk: 500ms\n    response_timeout: 100ms",
        "    chunk_latency: 600ms",
        "  users: 1\n  iterations: 1",
        "      - send_audio: {tone: 1s, pacing: burst}",
    ))
    .await;
    let errors = outcome.summary.errors();
    assert_eq!(errors.get("timeout"), Some(&1), "{errors:?}");
    let f = outcome.iterations[0].failure.clone().unwrap();
    assert!(
        f.message
            .contains("chunk 1: no complete response within 100ms"),
        "{f:?}"
    );

    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, outcome) = run_plan(&plan_text(
        &format!("http://127.0.0.1:{port}/chunks"),
        "    chunk: 500ms",
        "    seed: 1",
        "  users: 1\n  iterations: 2",
        "      - send_audio: {tone: 1s, pacing: burst}",
    ))
    .await;
    assert_eq!(outcome.summary.errors().get("connect_error"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_users_overlap_and_efficiency_counts_them() {
    let (_, outcome) = run_plan(&plan_text(
        "builtin",
        "    chunk: 500ms",
        "    chunk_latency: 100ms",
        "  users: 4\n  iterations: 1",
        "      - send_audio: {tone: 3s, pacing: burst}",
    ))
    .await;
    let s = &outcome.summary;
    assert_eq!(s.iterations().failed, 0);
    let h = planrun::report::HttpThroughput::from_counts(&s.recorder.http, s.elapsed);
    assert_eq!((h.calls, h.chunks), (4, 24));
    assert!((h.audio_s - 12.0).abs() < 1e-9, "{h:?}");
    // Four users each busy ~100% of a ~0.6 s run: about 4 chunks in flight on average.
    assert!((3.0..=4.0).contains(&h.concurrent_efficiency), "{h:?}");
    // Each call: 6 chunks of 0.5 s answered in ~100 ms each → ~5× real time, ~10 chunks/s.
    assert!((4.0..=5.0).contains(&h.call_audio_s_per_s), "{h:?}");
    assert!((8.0..=10.0).contains(&h.call_chunks_per_s), "{h:?}");
}

#[test]
fn steps_that_need_a_websocket_are_refused_with_a_position() {
    let text = plan_text(
        "builtin",
        "    chunk: 1s",
        "    seed: 1",
        "  users: 1",
        "      - send_audio: {tone: 1s}\n      - send: speech_end\n      - await: first_audio\n        timeout: 2s",
    );
    let err = plan::parse_str(&text, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.yaml:15:"), "{err}");
    assert!(
        err.contains("`send` steps do not apply to `protocol: http_chunks`"),
        "{err}"
    );
    assert!(err.contains("p.yaml:16:"), "{err}");
    assert!(err.contains("`await` steps do not apply"), "{err}");

    let ws = plan_text(
        "ws://127.0.0.1:1/",
        "    capture: {score: score}",
        "    seed: 1",
        "  users: 1",
        "      - send_audio: {tone: 1s}",
    );
    let err = plan::parse_str(&ws, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected `builtin`, `http://…` or `https://…`"),
        "{err}"
    );
    assert!(err.contains("`score` is not a JSON pointer"), "{err}");
    assert!(
        err.contains("write it from the root, e.g. `/score`"),
        "{err}"
    );

    let bad = plan_text(
        "builtin",
        "    chunk: 5ms\n    method: GET\n    response_timeout: 0s\n    capture: {chunk_latency: /x, Score: /s}",
        "    faults: {http_error: 2}",
        "  users: 1",
        "      - send_audio: {tone: 1s}",
    );
    let err = plan::parse_str(&bad, Path::new("p.yaml"))
        .unwrap_err()
        .to_string();
    for needle in [
        "p.yaml:6:",
        "chunk must be 20ms..10m",
        "method `GET` is not supported: use POST or PUT",
        "response_timeout must be longer than 0",
        "`chunk_latency` is reserved",
        "metric name `Score` must be lowercase",
        "`http_error` is a probability: 0..1, found 2",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// A minimal HTTP/1.1 server (not hyper) that answers each request with `reply(n)` and then
/// closes the connection, as some servers do — saying so (`Connection: close`) or not.
async fn closing_server(
    reply: fn(usize) -> String,
    announce: bool,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/score?x=1", listener.local_addr().unwrap());
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                // Read the head, then Content-Length bytes of body.
                loop {
                    let Ok(k) = s.read(&mut tmp).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_ascii_lowercase();
                        assert!(head.starts_with("post /score?x=1 http/1.1"), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = reply(n);
                let close = if announce {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_after_each_answer_gets_a_new_connection_per_chunk() {
    for announce in [true, false] {
        let (url, conns) = closing_server(|n| format!("{{\"score\": {}}}", n * 10), announce).await;
        let (_, outcome) = run_plan(&plan_text(
            &url,
            "    chunk: 250ms\n    format: pcm16\n    capture: {score: /score}",
            "    seed: 1",
            "  users: 1\n  iterations: 1",
            "      - send_audio: {tone: 1s, pacing: burst}",
        ))
        .await;
        let s = &outcome.summary;
        assert_eq!(s.iterations().failed, 0, "{:?}", outcome.iterations);
        assert_eq!(samples(&outcome, "score"), vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(s.stats("connect").unwrap().count, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_servers_bad_json_is_a_protocol_error_with_its_excerpt() {
    let (url, _) = closing_server(|_| "{\"score\": 1,".to_string(), true).await;
    let (_, outcome) = run_plan(&plan_text(
        &url,
        "    chunk: 500ms\n    capture: {score: /score}",
        "    seed: 1",
        "  users: 1\n  iterations: 1",
        "      - send_audio: {tone: 1s, pacing: burst}",
    ))
    .await;
    let f = outcome.iterations[0].failure.clone().unwrap();
    assert_eq!(f.class, planrun::metrics::FailureClass::ProtocolError);
    assert!(f.message.contains("chunk 1: response is not JSON"), "{f:?}");
    assert!(f.message.ends_with("`{\"score\": 1,`"), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_that_does_not_speak_tls_is_a_connect_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut hello = [0u8; 512];
            let _ = s.read(&mut hello).await; // the TLS ClientHello
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = s.shutdown().await;
        }
    });
    let (_, outcome) = run_plan(&plan_text(
        &format!("https://{addr}/chunks"),
        "    chunk: 500ms",
        "    seed: 1",
        "  users: 1\n  iterations: 1",
        "      - send_audio: {tone: 1s, pacing: burst}",
    ))
    .await;
    let f = outcome.iterations[0].failure.clone().unwrap();
    assert_eq!(
        f.class,
        planrun::metrics::FailureClass::ConnectError,
        "{f:?}"
    );
    assert!(
        f.message
            .contains(&format!("TLS handshake with {addr} failed")),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_headers_and_query_reach_an_http_target() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                loop {
                    let Ok(k) = s.read(&mut tmp).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_string();
                        let len: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(str::to_string))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + len {
                            seen.lock().unwrap().push(head);
                            break;
                        }
                    }
                }
                let body = "{\"score\": 1}";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let text = plan_text(
        &url,
        "    chunk: 500ms\n    format: pcm16\n    capture: {score: /score}",
        "    seed: 1",
        "  users: 1\n  iterations: 1",
        "      - send_audio: {tone: 1s, pacing: burst}",
    )
    .replace(
        "  protocol: http_chunks\n",
        "  protocol: http_chunks\n  headers: {X-Api-Key: k123}\n  query: {tenant: acme}\n",
    );
    let (_, outcome) = run_plan(&text).await;
    assert_eq!(outcome.summary.iterations().failed, 0);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in heads {
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.starts_with("post /score?tenant=acme http/1.1"),
            "{head}"
        );
        assert!(lower.contains("x-api-key: k123"), "{head}");
    }
}
