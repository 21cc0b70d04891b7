//! Servers that misbehave: every failure is classified and counted, the run goes on for the
//! other users, nothing hangs past its timeouts, and secrets never reach a report.
//!
//! Each test starts a tiny loopback server with one bad behaviour and runs a plan against it.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{json, run_cli, run_plan, temp_dir};
use futures_util::{SinkExt, StreamExt};
use planrun::cli::exit;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Serve every connection with `behave(stream, index)`; returns the port.
async fn serve<F, Fut>(behave: F) -> u16
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let behave = Arc::new(behave);
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let i = count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(behave(stream, i));
        }
    });
    port
}

/// A plan for `url`: each caller says hello and waits for the answer's first audio.
fn plan(url: &str, target_extra: &str, users: u32, iterations: u32) -> String {
    format!(
        "name: hostile
target:
  url: {url}
  connect_timeout: 800ms
{target_extra}
load:
  users: {users}
  iterations: {iterations}
scenarios:
  - name: ask
    steps:
      - send_audio: {{silence: 200ms}}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 1s
"
    )
}

async fn run(tag: &str, yaml: &str) -> (u8, Value, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = dir.join("out");
    let code = run_plan(&path, &out, |_| {}).await;
    let report = json(&out.join("metrics.json"));
    (code, report, out)
}

fn errors(report: &Value, class: &str) -> u64 {
    report["errors"][class].as_u64().unwrap_or(0)
}

fn first_failure(report: &Value) -> String {
    report["failures"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Accept the WebSocket handshake, then run `then` on the socket.
async fn ws<F, Fut>(stream: TcpStream, then: F)
where
    F: FnOnce(tokio_tungstenite::WebSocketStream<TcpStream>) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
        then(ws).await;
    }
}

async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_handshakes_are_classified_with_the_status() {
    let port = serve(|mut s, i| async move {
        read_request(&mut s).await;
        let (status, body) = if i % 2 == 0 {
            ("401 Unauthorized", "bad token")
        } else {
            ("404 Not Found", "no such path")
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
    })
    .await;
    let (code, report, _) = run(
        "rejected",
        &plan(&format!("ws://127.0.0.1:{port}/bot"), "", 2, 1),
    )
    .await;
    assert_eq!(code, exit::CANNOT_RUN, "{report}");
    assert_eq!(errors(&report, "handshake_rejected"), 2, "{report}");
    let messages = report["failures"].to_string();
    assert!(
        messages.contains("HTTP 401 Unauthorized: bad token"),
        "{messages}"
    );
    assert!(messages.contains("HTTP 404 Not Found"), "{messages}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_handshake_times_out() {
    let port = serve(|mut s, _| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let started = Instant::now();
    let (code, report, _) = run(
        "silent-handshake",
        &plan(&format!("ws://127.0.0.1:{port}/"), "", 2, 1),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "hung: {:?}",
        started.elapsed()
    );
    assert_eq!(code, exit::CANNOT_RUN, "{report}");
    assert_eq!(errors(&report, "connect_error"), 2, "{report}");
    assert!(
        first_failure(&report).contains("took longer than 800ms"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_websocket_servers_are_classified_and_the_run_goes_on() {
    // One behaviour per connection, in order; the last one is a well-behaved answer.
    let port = serve(|s, i| async move {
        ws(s, |mut ws| async move {
            // Let the caller finish speaking first.
            let _ = tokio::time::timeout(Duration::from_millis(300), async {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        break;
                    }
                }
            })
            .await;
            match i {
                // Garbage text.
                0 => {
                    let _ = ws.send(Message::text("<html>502 Bad Gateway</html>")).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // An oversized message (over the 4 MiB cap).
                1 => {
                    let _ = ws.send(Message::binary(vec![0u8; 5 << 20])).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // A polite close mid-call.
                2 => {
                    let _ = ws.close(None).await;
                }
                // Never answers at all.
                3 => tokio::time::sleep(Duration::from_secs(5)).await,
                // A hard reset (RST) mid-call.
                4 => {
                    let tcp = ws.get_ref();
                    #[allow(deprecated)] // a reset is exactly what this server is for
                    let _ = tcp.set_linger(Some(Duration::ZERO));
                    drop(ws);
                }
                // A proper answer.
                _ => {
                    let _ = ws.send(Message::binary(vec![0x10u8; 640])).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
    })
    .await;
    let started = Instant::now();
    let (code, report, _) = run(
        "misbehaving",
        &plan(&format!("ws://127.0.0.1:{port}/"), "", 1, 6),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        code,
        exit::PASSED,
        "no threshold, so the run itself passes: {report}"
    );
    assert_eq!(report["iterations"]["total"], 6, "{report}");
    assert_eq!(report["iterations"]["succeeded"], 1, "{report}");
    assert_eq!(errors(&report, "protocol_error"), 2, "{report}");
    assert_eq!(errors(&report, "connection_closed"), 2, "{report}");
    assert_eq!(errors(&report, "timeout"), 1, "{report}");
    let messages = report["failures"].to_string();
    assert!(
        messages.contains("502 Bad Gateway"),
        "garbage is quoted: {messages}"
    );
    assert!(messages.contains("limit"), "oversized is named: {messages}");
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_self_signed_needs_a_ca_file_or_insecure() {
    let acceptor = tls_acceptor();
    let port = serve(move |s, _| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            if let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        let _ = ws.send(Message::binary(vec![0x10u8; 640])).await;
                    }
                }
            }
        }
    })
    .await;
    let url = format!("wss://localhost:{port}/");
    let (code, report, _) = run("tls-untrusted", &plan(&url, "", 1, 1)).await;
    assert_eq!(code, exit::CANNOT_RUN, "{report}");
    assert_eq!(errors(&report, "tls_error"), 1, "{report}");
    assert!(first_failure(&report).contains("certificate"), "{report}");

    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let extra = format!("  tls:\n    ca_file: {}", ca.display());
    let (code, report, _) = run("tls-ca", &plan(&url, &extra, 1, 1)).await;
    assert_eq!(code, exit::PASSED, "{report}");
    assert_eq!(report["iterations"]["succeeded"], 1, "{report}");

    let insecure = "  tls:\n    insecure: true";
    let ip_url = format!("wss://127.0.0.1:{port}/");
    let (code, report, _) = run("tls-insecure", &plan(&ip_url, insecure, 1, 1)).await;
    assert_eq!(code, exit::PASSED, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_server_is_a_tls_error() {
    let port = serve(|mut s, _| async move {
        read_request(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    })
    .await;
    let (code, report, _) = run(
        "tls-plain",
        &plan(&format!("wss://127.0.0.1:{port}/"), "", 1, 1),
    )
    .await;
    assert_eq!(code, exit::CANNOT_RUN, "{report}");
    assert_eq!(errors(&report, "tls_error"), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_query_and_subprotocols_reach_the_server_and_secrets_stay_out_of_reports() {
    // SAFETY: only this test reads this variable.
    unsafe { std::env::set_var("PLANRUN_TEST_SECRET_TOKEN", "sekrit-token-4242") };
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    let port = serve(move |mut s, _| {
        let seen = seen2.clone();
        async move {
            let request = read_request(&mut s).await;
            *seen.lock().unwrap() = request.clone();
            // Echo the request line back in the error body, as careless servers do.
            let line = request.lines().next().unwrap_or_default().to_string();
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{line}",
                line.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    })
    .await;
    let extra = "  headers:
    Authorization: \"Bearer {{ env.PLANRUN_TEST_SECRET_TOKEN }}\"
    X-Tenant: acme
  query:
    token: \"{{ env.PLANRUN_TEST_SECRET_TOKEN }}\"
    model: test
  subprotocols: [realtime]";
    let (code, report, out) = run(
        "secrets",
        &plan(&format!("ws://127.0.0.1:{port}/v1"), extra, 1, 1),
    )
    .await;
    assert_eq!(code, exit::CANNOT_RUN, "{report}");
    let request = seen.lock().unwrap().clone();
    assert!(
        request.contains("GET /v1?model=test&token=sekrit-token-4242 "),
        "{request}"
    );
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("authorization: bearer sekrit-token-4242"),
        "{request}"
    );
    assert!(lower.contains("x-tenant: acme"), "{request}");
    assert!(
        lower.contains("sec-websocket-protocol: realtime"),
        "{request}"
    );
    assert_eq!(errors(&report, "handshake_rejected"), 1, "{report}");
    assert!(first_failure(&report).contains("token=***"), "{report}");
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            assert!(
                !text.contains("sekrit-token-4242"),
                "{} leaks the secret",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_environment_variable_is_a_plan_error() {
    let dir = temp_dir("unset-env");
    let path = dir.join("plan.yaml");
    let yaml = plan(
        "ws://127.0.0.1:9/",
        "  headers:\n    Authorization: \"Bearer {{ env.PLANRUN_SURELY_UNSET_VAR }}\"",
        1,
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    assert_eq!(
        run_cli(&["validate", path.to_str().unwrap()]).await,
        exit::INVALID
    );
}

/// A Twilio-speaking server that sends one kind of bad message per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_twilio_wire_input_is_a_protocol_error_quoting_the_message() {
    let port = serve(|s, i| async move {
        ws(s, |mut ws| async move {
            let bad = match i {
                0 => Message::text(
                    "{\"event\":\"media\",\"media\":{\"payload\":\"@@not-base64@@\"}}",
                ),
                1 => Message::text("{\"event\":\"dance\",\"streamSid\":\"MZ1\"}"),
                2 => Message::binary(vec![0xde, 0xad, 0xbe, 0xef]),
                _ => Message::text("{\"event\": media"),
            };
            // After `connected` and `start`.
            let mut texts = 0;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() {
                    texts += 1;
                    if texts == 2 {
                        break;
                    }
                }
            }
            let _ = ws.send(bad).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
        .await;
    })
    .await;
    let (code, report, _) = run(
        "bad-twilio",
        &plan(
            &format!("ws://127.0.0.1:{port}/"),
            "  protocol: twilio",
            1,
            4,
        ),
    )
    .await;
    assert_eq!(code, exit::PASSED, "{report}");
    assert_eq!(errors(&report, "protocol_error"), 4, "{report}");
    let messages = report["failures"].to_string();
    for quoted in [
        "@@not-base64@@",
        "dance",
        "de ad be ef",
        "{\\\"event\\\": media",
    ] {
        assert!(messages.contains(quoted), "missing {quoted}: {messages}");
    }
}
