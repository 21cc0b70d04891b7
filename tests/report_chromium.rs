//! Render `report.html` of a small built-in run in headless Chromium and check the screenshot
//! is a real picture. Skips (with a notice) only when Chromium is absent outside CI; in CI
//! (`CI` set) a missing Chromium fails.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::temp_dir;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_html_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs it)"
        );
        eprintln!("NOTICE: chromium not found; skipping the screenshot test");
        return;
    };
    let dir = temp_dir("chromium");
    let plan = dir.join("p.yaml");
    std::fs::write(
        &plan,
        "name: screenshot
target:
  url: builtin
  agent:
    llm_latency: 80ms..200ms
    reply_duration: 300ms
load:
  users: 3
  iterations: 2
  seed: 1
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
  ttfa: p95 < 2s
",
    )
    .unwrap();
    let out = dir.join("out");
    common::run_plan(&plan, &out, |_| {}).await;
    let html = out.join("report.html");
    assert!(html.exists());
    let png = dir.join("report.png");
    let profile = dir.join("profile");
    let status = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1400,2400")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium said: {}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // A blank 1400×2400 page compresses to a few KB; charts and tables make it far bigger.
    assert!(
        bytes.len() > 60_000,
        "screenshot too small: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}
