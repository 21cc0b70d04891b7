//! `protocol: webrtc` on loopback against the built-in agent's WebRTC side: time to first audio
//! and barge-in measured from the decoded audio, held to the agent's configured truth (both
//! bounds), both signalling styles, and every setup failure classified (never a hang).

use std::path::Path;
use std::time::Duration;

use planrun::cli::exit;
use planrun::plan::model::ReportFormat;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::temp_dir;

async fn run_file(path: &Path, tag: &str) -> (u8, Value) {
    let out = temp_dir(tag).join("out");
    let code = common::run_plan(path, &out, |o| o.outputs.formats = vec![ReportFormat::Json]).await;
    let text = std::fs::read_to_string(out.join("metrics.json")).unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn run_yaml(tag: &str, yaml: &str) -> (u8, Value) {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    run_file(&path, tag).await
}

fn metric(json: &Value, name: &str, field: &str) -> f64 {
    json["metrics"][name][field].as_f64().unwrap_or(f64::NAN)
}

/// One WebRTC caller asks (no control channel: the agent's VAD ends the turn after
/// `vad_hangover`), then talks over the answer.
fn conversation(url: &str, signaling: &str, barge_in_delay: &str, min_speech: &str) -> String {
    format!(
        "name: webrtc-truth
target:
  url: {url}
  protocol: webrtc
  webrtc: {{signaling: {signaling}, ice_timeout: 5s}}
  agent:
    vad_hangover: 300ms
    asr_latency: 50ms
    llm_latency: 200ms
    tts_latency: 50ms
    reply_duration: 3s
    barge_in_delay: {barge_in_delay}
    min_speech: {min_speech}
load:
  users: 2
  iterations: 2
  seed: 5
scenarios:
  - name: ask_and_interrupt
    steps:
      - send_audio: audio_files/hello.wav
      - await: transcript
        record: transcript_latency
        timeout: 5s
      - await: first_audio
        record: ttfa
        timeout: 5s
      - interrupt:
          after: 400ms
          audio: audio_files/cancel.wav
      - expect: audio_stops
        within: 1500ms
        record: barge_in
      - await: first_audio
        record: recovery
        timeout: 5s
thresholds:
  barge_in: p95 < 300ms
  success_rate: \"> 0.99\"
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttfa_and_barge_in_follow_the_agents_truth_over_webrtc() {
    let (code, fast) = run_yaml(
        "webrtc-fast",
        &conversation("builtin", "whip", "100ms", "200ms"),
    )
    .await;
    assert_eq!(code, exit::PASSED, "{fast}");
    // Truth: the agent's VAD ends the turn `vad_hangover` (300 ms) after the speech, then
    // ASR 50 + LLM 200 + TTS 50 ms: 600 ms. WebRTC adds the Opus frame and codec delay and the
    // VAD's 20 ms window granularity: at most ~60 ms, never less than the truth.
    let ttfa = metric(&fast, "ttfa", "p50_ms");
    assert!((600.0..660.0).contains(&ttfa), "ttfa near 600 ms: {ttfa}");
    // The agent's events ride the data channel: its transcript comes `vad_hangover` + ASR
    // (350 ms) after the speech.
    let t = metric(&fast, "transcript_latency", "p50_ms");
    assert!((350.0..400.0).contains(&t), "transcript near 350 ms: {t}");
    let max = metric(&fast, "ttfa", "max_ms");
    assert!(max < 700.0, "ttfa max {max}");
    // Barge-in: the agent pauses 100 ms after it hears the caller's speech, and there is no
    // control channel to flush the caller's playout buffer, so the stop is heard 100 ms plus
    // the 60 ms buffer later; the Opus path adds its frame and codec delay (< 90 ms).
    let b = metric(&fast, "barge_in", "p50_ms");
    assert!((160.0..250.0).contains(&b), "barge_in near 160 ms: {b}");
    assert_eq!(fast["metrics"]["recovery"]["count"], 4, "{fast}");

    // A slower agent is measured as slower by the same amount, and fails the threshold.
    let (code, slow) = run_yaml(
        "webrtc-slow",
        &conversation("builtin", "pipecat", "400ms", "500ms"),
    )
    .await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{slow}");
    let b_slow = metric(&slow, "barge_in", "p50_ms");
    assert!(
        (460.0..550.0).contains(&b_slow),
        "barge_in near 400 + 60 ms: {b_slow}"
    );
    let shift = b_slow - b;
    assert!(
        (260.0..340.0).contains(&shift),
        "300 ms more agent delay is 300 ms more barge-in: {shift}"
    );
    let ttfa = metric(&slow, "ttfa", "p50_ms");
    assert!(
        (600.0..660.0).contains(&ttfa),
        "pipecat signalling, same ttfa: {ttfa}"
    );
}

/// A plan against `url` with short setup timeouts; every call fails the same way.
fn failing_plan(url: &str, signaling: &str) -> String {
    format!(
        "name: webrtc-bad
target:
  url: {url}
  protocol: webrtc
  connect_timeout: 2s
  webrtc: {{signaling: {signaling}, ice_timeout: 1500ms}}
load:
  users: 1
  iterations: 2
scenarios:
  - name: ask
    steps:
      - send_audio: audio_files/hello.wav
      - await: first_audio
        timeout: 3s
thresholds:
  success_rate: \"> 0.99\"
"
    )
}

fn failure_message(json: &Value) -> String {
    json["failures"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Read one HTTP/1.1 request (headers and a Content-Length body).
async fn read_request(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (head, body);
            }
        }
    }
    (String::new(), String::new())
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// POST `offer` to the built-in WebRTC agent, return its SDP answer.
async fn agent_answer(base: &str, offer: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /whip HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        offer.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A signalling endpoint that answers every offer through `answer(offer) -> (status, body)`.
async fn fake_signalling<F, Fut>(answer: F) -> String
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (String, String)> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/whip", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let (_, body) = read_request(&mut stream).await;
                let (status, reply) = answer(body).await;
                respond(&mut stream, &status, "application/sdp", &reply).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setup_failure_is_classified_and_bounded() {
    let started = std::time::Instant::now();
    // Unreachable signalling: a port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/whip", dead.local_addr().unwrap());
    drop(dead);
    let (code, json) = run_yaml("wrtc-unreachable", &failing_plan(&dead_url, "whip")).await;
    assert_ne!(code, exit::PASSED, "{json}");
    assert_eq!(json["errors"]["connect_error"], 2, "{json}");
    assert!(failure_message(&json).contains("connect"), "{json}");

    // A rejected offer: 403 with a body, quoted in the message.
    let url =
        fake_signalling(|_| async { ("403 Forbidden".to_string(), "token expired".to_string()) })
            .await;
    let (_, json) = run_yaml("wrtc-rejected", &failing_plan(&url, "whip")).await;
    assert_eq!(json["errors"]["handshake_rejected"], 2, "{json}");
    let msg = failure_message(&json);
    assert!(
        msg.contains("403") && msg.contains("token expired"),
        "{msg}"
    );

    // The Pipecat style expects JSON: plain text is a protocol error.
    let url = fake_signalling(|_| async { ("200 OK".to_string(), "v=0".to_string()) }).await;
    let (_, json) = run_yaml("wrtc-not-json", &failing_plan(&url, "pipecat")).await;
    assert_eq!(json["errors"]["protocol_error"], 2, "{json}");

    // The real agent behind a proxy that mangles its answer.
    let agent = planrun::agent::spawn_webrtc("127.0.0.1:0", planrun::agent::AgentConfig::default())
        .await
        .unwrap();
    let base = agent.base_url();

    // An answer without audio (the audio section rejected with port 0).
    let b = base.clone();
    let url = fake_signalling(move |offer| {
        let b = b.clone();
        async move {
            let answer = agent_answer(&b, &offer).await;
            let answer = answer.replace("m=audio 9 ", "m=audio 0 ");
            ("201 Created".to_string(), answer)
        }
    })
    .await;
    let (_, json) = run_yaml("wrtc-no-audio", &failing_plan(&url, "whip")).await;
    assert_eq!(json["errors"]["protocol_error"], 2, "{json}");
    assert!(failure_message(&json).contains("no audio"), "{json}");

    // ICE that never connects: the answer's candidate points at a port nobody answers on.
    let b = base.clone();
    let url = fake_signalling(move |offer| {
        let b = b.clone();
        async move {
            let answer = agent_answer(&b, &offer).await;
            let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = silent.local_addr().unwrap().port();
            // Keep the socket bound (no ICMP unreachable) but never read it.
            std::mem::forget(silent);
            let answer = answer
                .lines()
                .map(|l| {
                    if l.starts_with("a=candidate:") {
                        let mut parts: Vec<String> = l.split(' ').map(str::to_string).collect();
                        parts[5] = port.to_string();
                        parts.join(" ")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n";
            ("201 Created".to_string(), answer)
        }
    })
    .await;
    let (_, json) = run_yaml("wrtc-ice", &failing_plan(&url, "whip")).await;
    assert_eq!(json["errors"]["connect_error"], 2, "{json}");
    assert!(failure_message(&json).contains("ICE"), "{json}");

    // DTLS failure: the answer's certificate fingerprint is not the agent's certificate.
    let b = base.clone();
    let url = fake_signalling(move |offer| {
        let b = b.clone();
        async move {
            let answer = agent_answer(&b, &offer).await;
            let answer = answer
                .lines()
                .map(|l| match l.strip_prefix("a=fingerprint:sha-256 ") {
                    Some(fp) => {
                        let flipped: String = fp
                            .chars()
                            .map(|c| match c {
                                '0' => '1',
                                '1' => '0',
                                'A' => 'B',
                                'B' => 'A',
                                c => c,
                            })
                            .collect();
                        format!("a=fingerprint:sha-256 {flipped}")
                    }
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n";
            ("201 Created".to_string(), answer)
        }
    })
    .await;
    let (_, json) = run_yaml("wrtc-dtls", &failing_plan(&url, "whip")).await;
    assert_eq!(json["errors"]["tls_error"], 2, "{json}");
    assert!(failure_message(&json).contains("DTLS"), "{json}");

    agent.shutdown().await;
    // Every phase is bounded: six plans of two failing calls each, no hang.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}
