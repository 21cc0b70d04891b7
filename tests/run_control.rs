//! Run control and results that survive crashes: the real binary against the built-in agent,
//! stopped by SIGINT/SIGTERM, capped by --max-duration, killed with SIGKILL, starved of file
//! descriptors. Loads are a few users for a few seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{json, read, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_planrun");

/// A plan of `users` callers running for `duration`; each call takes about 1 s.
fn plan(dir: &Path, users: u32, duration: &str, thresholds: &str) -> PathBuf {
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio_files/mhmm.wav");
    let text = format!(
        "name: runctl
target:
  url: builtin
  agent:
    asr_latency: 20ms
    llm_latency: 100ms
    tts_latency: 20ms
    reply_duration: 600ms
load:
  users: {users}
  duration: {duration}
  seed: 7
scenarios:
  - name: call
    steps:
      - send: speech_start
      - send_audio: {audio}
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        record: response_time
        timeout: 5s
thresholds:
{thresholds}
",
        audio = audio.display()
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Wait for the child to exit (at most `limit`); returns (exit code, stdout, stderr, took).
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stdout).into(),
                String::from_utf8_lossy(&out.stderr).into(),
                start.elapsed(),
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("planrun did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `path` holds at least `rows` lines (the streamed timeline grows during the run).
fn wait_rows(path: &Path, rows: usize, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= rows) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never reached {rows} rows", path.display());
}

fn stopped_run(sig: i32, expected_code: i32, name: &str) {
    let dir = temp_dir(name);
    let p = plan(&dir, 3, "60s", "  ttfa: p95 < 2s");
    let out = dir.join("out");
    let child = spawn(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    // Some calls finished (timeline rows streamed), others in flight.
    wait_rows(&out.join("timeline.csv"), 20, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, sig);
    let (code, stdout, stderr, took) = finish(child, Duration::from_secs(15));
    assert_eq!(code, Some(expected_code), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["aborted"], true);
    assert_eq!(m["stopped_by"], "signal");
    assert!(m["iterations"]["total"].as_u64().unwrap() >= 1, "{m}");
    // 3 users with 60 s of work: every user had a call in flight.
    assert_eq!(m["aborted_iterations"], 3, "{m}");
    assert!(m["metrics"]["ttfa"]["count"].as_u64().unwrap() >= 1);
    for f in [
        "summary.md",
        "report.html",
        "timeline.csv",
        "junit.xml",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(read(&out.join("summary.md")).contains("STOPPED"));
    assert!(stdout.contains("STOPPED before the end"), "{stdout}");
    // The final timeline is the full, sorted one: 3 aborted iteration ends.
    let csv = read(&out.join("timeline.csv"));
    assert_eq!(csv.matches(",iteration_end,aborted").count(), 3, "{csv}");
}

#[test]
fn sigint_stops_gracefully_with_exit_130() {
    stopped_run(libc::SIGINT, 130, "sigint");
}

#[test]
fn sigterm_stops_gracefully_with_exit_143() {
    stopped_run(libc::SIGTERM, 143, "sigterm");
}

/// A plan against a server that accepts TCP connections and never answers the WebSocket
/// handshake (connect timeout 30 s): calls hang in connect, which a stop cannot interrupt.
fn black_hole_plan(dir: &Path) -> (PathBuf, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = plan(dir, 2, "60s", "  ttfa: p95 < 2s");
    let text = read(&p).replace(
        "  url: builtin\n",
        &format!("  url: ws://127.0.0.1:{port}/\n  connect_timeout: 30s\n"),
    );
    std::fs::write(&p, text).unwrap();
    (p, listener)
}

#[test]
fn a_stop_is_bounded_when_calls_cannot_be_interrupted() {
    let dir = temp_dir("grace");
    let (p, _listener) = black_hole_plan(&dir);
    let out = dir.join("out");
    let child = spawn(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&child, libc::SIGTERM);
    let (code, stdout, stderr, took) = finish(child, Duration::from_secs(15));
    assert_eq!(code, Some(143), "{stdout}\n{stderr}");
    // STOP_GRACE (2 s), not the 30 s connect timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["aborted_iterations"], 2, "{m}");
    assert_eq!(m["iterations"]["total"], 0, "{m}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = temp_dir("twice");
    let (p, _listener) = black_hole_plan(&dir);
    let out = dir.join("out");
    let child = spawn(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let again = Instant::now();
    signal(&child, libc::SIGINT);
    let (code, _, stderr, _) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "took {:?}",
        again.elapsed()
    );
    assert!(stderr.contains("again: exiting now"), "{stderr}");
    // Exited before the report: what was streamed is on disk.
    assert!(!out.join("metrics.json").exists());
    assert!(read(&out.join("timeline.csv")).starts_with("t_ms,user,iteration"));
    assert_eq!(json(&out.join("run_info.json"))["plan"], "runctl");
}

#[test]
fn max_duration_caps_the_run_and_says_so() {
    let dir = temp_dir("cap");
    let p = plan(&dir, 2, "60s", "  ttfa: p95 < 2s");
    let out = dir.join("out");
    let child = spawn(&[
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-duration",
        "3s",
    ]);
    let (code, stdout, stderr, took) = finish(child, Duration::from_secs(20));
    // Capped, not interrupted: judged by its thresholds (which pass).
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["stopped_by"], "max_duration");
    assert!(
        m["stop_reason"].as_str().unwrap().contains("capped at 3s"),
        "{m}"
    );
    assert_eq!(m["passed"], true);
    assert_eq!(m["aborted_iterations"], 2, "{m}");
    let elapsed = m["elapsed_s"].as_f64().unwrap();
    assert!((2.9..6.0).contains(&elapsed), "elapsed {elapsed}");
    assert!(m["iterations"]["total"].as_u64().unwrap() >= 2);
    assert!(stdout.contains("CAPPED"), "{stdout}");
    assert!(read(&out.join("summary.md")).contains("Capped"));
}

#[test]
fn a_killed_run_leaves_a_timeline_report_can_render() {
    let dir = temp_dir("sigkill");
    let p = plan(
        &dir,
        3,
        "60s",
        "  ttfa: p95 < 2s\n  success_rate: \"> 0.5\"",
    );
    let out = dir.join("out");
    let child = spawn(&[p.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let csv_path = out.join("timeline.csv");
    wait_rows(&csv_path, 40, Duration::from_secs(20));
    signal(&child, libc::SIGKILL);
    let (code, ..) = finish(child, Duration::from_secs(5));
    assert_eq!(code, None, "killed by a signal");
    assert!(!out.join("metrics.json").exists());
    let before = read(&csv_path);
    let finished = before.matches(",iteration_end,ok").count();
    assert!(finished >= 3, "{before}");

    let status = Command::new(BIN)
        .args(["report", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    // The partial evidence is kept as it was.
    assert_eq!(read(&csv_path), before);
    let md = read(&out.join("summary.md"));
    assert!(md.contains("PARTIAL"), "{md}");
    assert!(md.contains("rebuilt from timeline.csv"), "{md}");
    let html = read(&out.join("report.html"));
    assert!(html.contains("PARTIAL") && html.contains("Partial results"));
    // Counts and percentiles come from the timeline's samples.
    assert!(
        md.contains(&format!("{finished} succeeded")),
        "expected {finished} successes in:\n{md}"
    );
    let ttfa_rows = before.matches(",record:ttfa,").count();
    assert!(ttfa_rows >= finished);
    assert!(md.contains("ttfa"), "{md}");
    assert!(out.join("junit.xml").exists());
}

#[test]
fn an_existing_report_folder_is_not_overwritten() {
    let dir = temp_dir("fresh");
    let p = plan(&dir, 1, "1s", "  ttfa: p95 < 2s");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![p.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"];
        args.extend_from_slice(extra);
        let o = Command::new(BIN)
            .env("PLANRUN_ON_OVERLOAD", "warn")
            .args(&args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    let fresh = dir.join("out-2");
    assert!(stderr.contains("already holds files"), "{stderr}");
    assert!(stdout.contains(&fresh.display().to_string()), "{stdout}");
    assert!(fresh.join("metrics.json").exists());
    assert!(!out.join("metrics.json").exists());
    // A second run goes to -3; --overwrite reuses the folder given.
    let (_, stdout, _) = run(&[]);
    assert!(stdout.contains("out-3"), "{stdout}");
    let (code, stdout, stderr) = run(&["--overwrite"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("already holds files"));
    assert!(
        stdout.contains(&format!("report: {}\n", out.display())),
        "{stdout}"
    );
    assert!(out.join("metrics.json").exists());
    assert_eq!(read(&out.join("notes.txt")), "keep me");
}

#[test]
fn out_of_file_descriptors_degrades_into_counted_errors() {
    let dir = temp_dir("emfile");
    // 80 users under a 64-fd limit (hard and soft, so planrun cannot raise it).
    let p = plan(&dir, 80, "2s", "  ttfa: p95 < 2s");
    let text = read(&p).replace("  duration: 2s", "  iterations: 1");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("out");
    let cmd = format!(
        "ulimit -n 64 && exec '{BIN}' '{}' --out '{}'",
        p.display(),
        out.display()
    );
    let child = Command::new("sh")
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .args(["-c", &cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, stdout, stderr, _) = finish(child, Duration::from_secs(60));
    // Finished with a verdict (threshold failed or could not run), not a crash.
    assert!(matches!(code, Some(0..=3)), "{code:?}\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let m = json(&out.join("metrics.json"));
    let total = m["iterations"]["total"].as_u64().unwrap();
    assert_eq!(total, 80, "every call accounted for: {m}");
    let connect = m["errors"]["connect_error"].as_u64().unwrap_or(0);
    assert!(connect > 0, "fd exhaustion is counted: {m}");
    let failures = m["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["message"].as_str().unwrap().contains("open files")),
        "{m}"
    );
}
