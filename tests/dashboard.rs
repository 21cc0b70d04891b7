//! `--dashboard`: the live page of a run against the built-in agent, loaded mid-run in headless
//! Chromium; the Stop endpoint ends the run as Ctrl-C does; bad addresses are usage errors;
//! pages that never read cannot hold the run up.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use planrun::cli::exit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{json, run_cli, temp_dir};

/// A turn that is answered and one that always times out (so failures show), for `duration`.
fn plan(duration: &str, users: u32) -> String {
    format!(
        "name: dash
target:
  url: builtin
  agent:
    asr_latency: 30ms
    llm_latency: 60ms..160ms
    tts_latency: 30ms
    reply_duration: 300ms
load:
  users: {users}
  duration: {duration}
  seed: 5
scenarios:
  - name: hello
    weight: 3
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
  - name: never
    weight: 1
    steps:
      - await: never_sent
        timeout: 200ms
thresholds:
  ttfa: p95 < 3s over 4s
"
    )
}

/// One HTTP/1.1 request; returns (status line, body): the body up to its Content-Length, or
/// to the end of the connection.
async fn request(port: u16, raw: &str) -> Option<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(raw.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                return Some((head.lines().next()?.to_string(), body.to_string()));
            }
        }
        if n == 0 {
            return None;
        }
    }
}

async fn get(port: u16, path: &str) -> Option<(String, String)> {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn snapshot(port: u16) -> Option<serde_json::Value> {
    let (status, body) = get(port, "/snapshot.json").await?;
    status
        .contains("200")
        .then(|| serde_json::from_str(&body).ok())?
}

/// Start `planrun run` in-process with `extra` flags; returns the run's task.
fn start(plan_text: &str, tag: &str, extra: &[&str]) -> (PathBuf, tokio::task::JoinHandle<u8>) {
    let dir = temp_dir(tag);
    let plan = dir.join("p.yaml");
    std::fs::write(&plan, plan_text).unwrap();
    let out = dir.join("out");
    let mut args: Vec<String> = vec![
        "run".into(),
        plan.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "-q".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let task = tokio::spawn(async move {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&a).await
    });
    (out, task)
}

/// Wait until a snapshot satisfies `ok` (or panic after `within`).
async fn wait_for(
    port: u16,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        if let Some(s) = snapshot(port).await
            && ok(&s)
        {
            return s;
        }
        assert!(t0.elapsed() < within, "the dashboard never got there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// The page as headless Chromium has rendered it (after its script ran).
fn dump_dom(browser: &PathBuf, url: &str, profile: &std::path::Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The number in `<… id="ID">N<…`.
fn number_in(dom: &str, id: &str) -> Option<u64> {
    digits_after(dom, &format!("id=\"{id}\">"))
}

/// The number right after `needle`.
fn digits_after(dom: &str, needle: &str) -> Option<u64> {
    let at = dom.find(needle)? + needle.len();
    dom[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_the_page_mid_run_and_sees_charts_and_moving_counters() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs it)"
        );
        eprintln!("NOTICE: chromium not found; skipping the dashboard browser test");
        return;
    };
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (out, run) = start(
        &plan("9s", 3),
        "dash-chromium",
        &["--dashboard", &addr, "--dashboard-linger", "3s"],
    );
    // Mid-run: iterations done and at least two chart points per recorded latency.
    wait_for(port, Duration::from_secs(30), |s| {
        s["state"] == "running"
            && s["iterations"]["done"].as_u64() >= Some(2)
            && s["failures"].as_array().is_some_and(|f| !f.is_empty())
            && s["metrics"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["name"] == "ttfa" && m["points"].as_u64() >= Some(2))
            })
    })
    .await;
    let url = format!("http://{addr}/");
    let profile = out.with_file_name("profile");
    let b = browser.clone();
    let (u, p) = (url.clone(), profile.clone());
    let first = tokio::task::spawn_blocking(move || dump_dom(&b, &u, &p))
        .await
        .unwrap();
    assert!(
        first.contains("id=\"chart-ttfa\""),
        "no ttfa chart:\n{first}"
    );
    assert!(first.contains("<polyline points=\""), "charts hold no line");
    assert!(first.contains("id=\"chart-response_time\""));
    assert!(first.contains("RUNNING"), "not running:\n{first}");
    assert!(
        first.contains("never_sent"),
        "the recent failure and its plan line are shown"
    );
    assert!(first.contains("p95 &lt; 3s over 4s") || first.contains("p95 < 3s over 4s"));
    let done_1 = number_in(&first, "kpi-done").expect("iterations done shown");
    assert!(done_1 >= 2, "{done_1}");
    let points_1 = digits_after(&first, "id=\"chart-ttfa\" data-points=\"").unwrap_or(0);
    assert!(points_1 >= 2, "{points_1} chart points");
    // Counters move: a later load shows more iterations done.
    let mut later = String::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (b, u, p) = (browser.clone(), url.clone(), profile.clone());
        later = tokio::task::spawn_blocking(move || dump_dom(&b, &u, &p))
            .await
            .unwrap();
        if number_in(&later, "kpi-done").is_some_and(|d| d > done_1) {
            break;
        }
    }
    let done_2 = number_in(&later, "kpi-done").unwrap_or(0);
    assert!(
        done_2 > done_1,
        "iterations done did not move: {done_1} → {done_2}"
    );
    assert!(
        later.matches("<polyline").count() >= 6,
        "two charts of three lines each"
    );
    eprintln!("dashboard: {done_1} → {done_2} iterations; ttfa chart {points_1} points");
    // After the run (lingering): the verdict, and the same figures as metrics.json — the page
    // reads the aggregates the report is written from.
    let fin = wait_for(port, Duration::from_secs(60), |s| s["state"] == "finished").await;
    let m = json(&out.join("metrics.json"));
    assert_eq!(
        fin["final"]["verdict"],
        if m["passed"] == true {
            "PASSED"
        } else {
            "FAILED"
        }
    );
    let thresholds = fin["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), m["thresholds"].as_array().unwrap().len());
    for (live, report) in thresholds.iter().zip(m["thresholds"].as_array().unwrap()) {
        assert_eq!(live["observed_text"], report["observed_text"]);
        assert_eq!(live["passed"], report["passed"]);
    }
    let mut compared = 0;
    for metric in fin["metrics"].as_array().unwrap() {
        let name = metric["name"].as_str().unwrap();
        let (live, report) = (&metric["total"], &m["metrics"][name]);
        if live.is_null() || report.is_null() {
            continue;
        }
        assert_eq!(live["count"], report["count"], "{name}");
        for (l, r) in [("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")] {
            let (a, b) = (live[l].as_f64().unwrap(), report[r].as_f64().unwrap());
            assert!(
                (a - b).abs() <= b.abs() * 0.002 + 0.002,
                "{name} {l}: dashboard {a} vs metrics.json {b}"
            );
        }
        compared += 1;
    }
    assert!(compared >= 3, "{compared} metrics compared");
    let (s, _) = get(port, "/files/report.html").await.unwrap();
    assert!(s.contains("200"), "{s}");
    let code = run.await.unwrap();
    assert!(
        code == exit::PASSED || code == exit::THRESHOLD_FAILED,
        "exit {code}"
    );
    assert!(out.join("metrics.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_endpoint_ends_the_run_like_ctrl_c_with_reports_written() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (out, run) = start(
        &plan("60s", 2),
        "dash-stop",
        &["--dashboard", &addr, "--dashboard-linger", "30s"],
    );
    wait_for(port, Duration::from_secs(30), |s| {
        s["iterations"]["done"].as_u64() >= Some(1)
    })
    .await;
    let (status, page) = get(port, "/").await.unwrap();
    assert!(status.contains("200"), "{status}");
    let token = page
        .split("const TOKEN = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32, "{token}");
    let post = |headers: String| {
        format!("POST /stop HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    // Guarded: GET, no token, a wrong token, another site's Origin, another Host.
    let (s, _) = get(port, "/stop").await.unwrap();
    assert!(s.contains("405"), "{s}");
    for bad in [
        post(host.clone()),
        post(format!("{host}X-Planrun-Token: {}\r\n", "0".repeat(32))),
        post(format!(
            "{host}X-Planrun-Token: {token}\r\nOrigin: http://evil.example\r\n"
        )),
        post(format!(
            "Host: evil.example:{port}\r\nX-Planrun-Token: {token}\r\n"
        )),
    ] {
        let (s, _) = request(port, &bad).await.unwrap();
        assert!(s.contains("403"), "{s} for {bad}");
    }
    assert_eq!(
        snapshot(port).await.unwrap()["state"],
        "running",
        "a refused stop stopped the run"
    );
    // The page's own request: token and same Origin.
    let pressed = Instant::now();
    let (s, body) = request(
        port,
        &post(format!(
            "{host}X-Planrun-Token: {token}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        )),
    )
    .await
    .unwrap();
    assert!(s.contains("202"), "{s} {body}");
    // The final page (served while lingering) shows the verdict and the report files.
    let fin = wait_for(port, Duration::from_secs(30), |s| s["state"] == "finished").await;
    assert!(pressed.elapsed() < Duration::from_secs(20));
    assert_eq!(fin["final"]["verdict"], "STOPPED");
    let files: Vec<String> = fin["runs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert!(files.contains(&"metrics.json".to_string()), "{files:?}");
    let (s, served) = get(port, "/files/metrics.json").await.unwrap();
    assert!(s.contains("200"), "{s}");
    assert!(served.contains("\"stopped_by\""));
    let (s, _) = get(port, "/files/..%2Fp.yaml").await.unwrap();
    assert!(
        s.contains("404"),
        "only the run's report files are served: {s}"
    );
    // Leave the linger early: stop it from the test by aborting the run's task is not a
    // signal; the run's exit code is checked on the report instead, and the task awaited.
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["stopped_by"], "signal", "{m}");
    assert!(
        m["stop_reason"].as_str().unwrap().contains("dashboard"),
        "{}",
        m["stop_reason"]
    );
    assert!(m["aborted"].as_bool().unwrap());
    assert!(out.join("report.html").exists() && out.join("summary.md").exists());
    run.abort();
}

/// Press the page's Stop button in headless Chromium (through the DevTools protocol: the
/// confirmation accepted, then a real click, so the browser's own request — its token, Host
/// and Origin — must pass the guard). None when Chromium could not be driven.
async fn press_stop_in_chromium(
    browser: &PathBuf,
    url: &str,
    profile: &std::path::Path,
) -> Option<()> {
    use futures_util::{SinkExt, StreamExt};
    /// Kills the browser however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?,
    );
    let t0 = Instant::now();
    let port: u16 = loop {
        if let Ok(t) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
            && let Some(p) = t.lines().next().and_then(|l| l.trim().parse().ok())
        {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ws_url = loop {
        if let Some((_, body)) = get(port, "/json/list").await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && let Some(ws) = v.as_array().and_then(|a| {
                a.iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            })
        {
            break ws;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .ok()?;
    let mut id = 0;
    let mut eval = async |expr: &str| -> Option<serde_json::Value> {
        id += 1;
        let msg = serde_json::json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expr, "awaitPromise": true, "returnByValue": true}});
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            msg.to_string(),
        ))
        .await
        .ok()?;
        while let Some(Ok(m)) = ws.next().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or(""))
                && v["id"] == id
            {
                return Some(v["result"]["result"]["value"].clone());
            }
        }
        None
    };
    // Wait until the page has rendered a live snapshot, then press Stop.
    loop {
        let seq = eval("Number(document.body.dataset.seq || 0)").await?;
        if seq.as_u64().is_some_and(|s| s > 0) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let clicked = eval(
        "window.confirm = () => true; document.getElementById('stop').click(); \
         new Promise(r => setTimeout(() => r(document.getElementById('stop').textContent), 1500))",
    )
    .await?;
    eprintln!("the Stop button now reads {clicked}");
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_button_ends_the_run_with_exit_130_as_ctrl_c_does() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (out, run) = start(&plan("60s", 1), "dash-stop-exit", &["--dashboard", &addr]);
    wait_for(port, Duration::from_secs(30), |s| {
        s["iterations"]["done"].as_u64() >= Some(1)
    })
    .await;
    let pressed = match chromium() {
        Some(b) => {
            let profile = out.with_file_name("profile");
            let pressed = press_stop_in_chromium(&b, &format!("http://{addr}/"), &profile).await;
            assert!(
                pressed.is_some() || std::env::var_os("CI").is_none(),
                "in CI, Chromium must press the Stop button"
            );
            pressed
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium is required in CI (.ci/run installs it)"
            );
            None
        }
    };
    if pressed.is_none() {
        // No browser to press it: send the page's request.
        eprintln!("NOTICE: pressing Stop through its endpoint (Chromium could not be driven)");
        let (_, page) = get(port, "/").await.unwrap();
        let token = page.split("const TOKEN = \"").nth(1).unwrap()[..32].to_string();
        let (s, _) = request(
            port,
            &format!(
                "POST /stop HTTP/1.1\r\nHost: localhost:{port}\r\nX-Planrun-Token: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .await
        .unwrap();
        assert!(s.contains("202"), "{s}");
    }
    let code = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ended")
        .unwrap();
    assert_eq!(code, exit::INTERRUPTED);
    assert!(out.join("metrics.json").exists() && out.join("report.html").exists());
    let m = json(&out.join("metrics.json"));
    assert!(m["stop_reason"].as_str().unwrap().contains("dashboard"));
    // Not lingering: the server is gone with the run.
    let t0 = Instant::now();
    while get(port, "/").await.is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5), "still serving");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_or_busy_address_is_a_usage_error_before_any_load() {
    let bin = env!("CARGO_BIN_EXE_planrun");
    let dir = temp_dir("dash-bad");
    let plan_path = dir.join("p.yaml");
    std::fs::write(&plan_path, plan("5s", 1)).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    for (i, flags) in [
        vec!["--dashboard", "not-an-address"],
        vec!["--dashboard", "127.0.0.1:70000"],
        vec!["--dashboard", &busy_addr],
        vec!["--dashboard", "192.0.2.10:8089"],
        vec!["--dashboard-linger", "5s"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("out{i}"));
        let o = Command::new(bin)
            .arg("run")
            .arg(&plan_path)
            .arg("--out")
            .arg(&out)
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?}: load was sent");
        if flags[1].starts_with("192.") {
            assert!(stderr.contains("--dashboard-allow-remote"), "{stderr}");
        }
        if flags[1] == busy_addr {
            assert!(stderr.contains("cannot serve on it"), "{stderr}");
        }
    }
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_never_read_do_not_hold_the_run_up() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let t0 = Instant::now();
    let (out, run) = start(&plan("6s", 2), "dash-stalled", &["--dashboard", &addr]);
    wait_for(port, Duration::from_secs(30), |s| s["state"] == "running").await;
    // Event streams opened and never read (a tiny receive buffer, so the server's writes
    // back up), up to the cap; the next one is refused.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(2048).unwrap();
        let mut s = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        s.write_all(format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = get(port, "/events").await.unwrap();
    assert!(s.contains("503"), "a 17th stream: {s}");
    // A page that does read still gets fresh snapshots meanwhile.
    let a = snapshot(port).await.unwrap()["seq"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = snapshot(port).await.unwrap()["seq"].as_u64().unwrap();
    assert!(b >= a + 2, "updates stalled: {a} → {b}");
    // The run ends on time, with the stalled pages still open (a reader notes the newest
    // snapshot meanwhile).
    let newest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(b));
    let watcher = {
        let newest = newest.clone();
        tokio::spawn(async move {
            while let Some(s) = snapshot(port).await {
                if let Some(seq) = s["seq"].as_u64() {
                    newest.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let code = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the run was held up")
        .unwrap();
    assert!(
        code == exit::PASSED || code == exit::THRESHOLD_FAILED,
        "exit {code}"
    );
    assert!(t0.elapsed() < Duration::from_secs(40));
    assert!(out.join("metrics.json").exists());
    // What a stalled page finally reads: some snapshots, never the whole backlog (each page
    // gets the latest when it can take one; nothing queued up for it).
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled[0].read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(seq) = v["seq"].as_u64()
        {
            got.push(seq);
        }
    }
    got.dedup();
    watcher.abort();
    let last = newest.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "a stalled page read {} of {last} snapshots ({} bytes): {got:?}",
        got.len(),
        buf.len()
    );
    assert!(
        (got.len() as u64) < last,
        "a stalled page was sent every snapshot: {got:?}"
    );
    drop(stalled);
}
