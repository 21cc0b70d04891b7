//! `--metrics-addr`: live Prometheus metrics, scraped during a real run against the built-in
//! agent and checked against the run's final metrics.json.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use planrun::cli::exit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{json, run_cli, temp_dir};

/// Two scenarios: one answered turn (ttfa, response_time), one that times out waiting for an
/// event the agent never sends.
const PLAN: &str = "name: live
target:
  url: builtin
  agent:
    asr_latency: 50ms
    llm_latency: 150ms
    tts_latency: 50ms
    reply_duration: 300ms
load:
  users: 3
  iterations: 4
  seed: 11
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
        timeout: 300ms
";

/// GET a path; returns (status line, headers, body).
async fn get(port: u16, path: &str) -> Option<(String, String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Some((status.to_string(), headers.to_lowercase(), body.to_string()))
}

/// Sample lines (`name{labels}` → value); every line that is not a comment must parse.
fn parse(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(out.insert(key.to_string(), v).is_none(), "duplicate {key}");
    }
    out
}

fn sum_matching(m: &BTreeMap<String, f64>, prefix: &str, needle: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(needle))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_serves_live_values_consistent_with_the_report() {
    let dir = temp_dir("live-metrics");
    let plan = dir.join("p.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = dir.join("out");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let args: Vec<String> = [
        "run",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--metrics-addr",
        &addr,
        "--metrics-linger",
        "5s",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = tokio::spawn(async move {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&a).await
    });

    // Scrape during the run until metrics.json exists.
    let started = Instant::now();
    let mut scrapes: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut content_type = String::new();
    while !out.join("metrics.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not finish"
        );
        if let Some((status, headers, body)) = get(port, "/metrics").await {
            assert!(status.contains("200"), "{status}");
            content_type = headers;
            scrapes.push(parse(&body));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        content_type.contains("content-type: text/plain; version=0.0.4"),
        "{content_type}"
    );
    // The final values, served while the run lingers.
    let (_, _, body) = get(port, "/metrics").await.expect("final scrape");
    let last = parse(&body);
    let (status, _, _) = get(port, "/nope").await.unwrap();
    assert!(status.contains("404"), "{status}");
    assert_eq!(run.await.unwrap(), exit::PASSED);

    // Live: some scrape saw users running and a run part-way through.
    let iterations = |m: &BTreeMap<String, f64>| sum_matching(m, "planrun_iterations_total{", "");
    assert!(scrapes.len() >= 5, "only {} scrapes", scrapes.len());
    assert!(
        scrapes.iter().any(|m| m["planrun_active_users"] >= 1.0),
        "no scrape saw an active user"
    );
    assert!(
        scrapes
            .iter()
            .any(|m| iterations(m) > 0.0 && iterations(m) < 12.0),
        "no scrape saw the run part-way: {:?}",
        scrapes.iter().map(iterations).collect::<Vec<_>>()
    );
    // Counters never go down.
    for w in scrapes.windows(2) {
        for (k, v) in &w[0] {
            if k.contains("_total") || k.contains("_bucket") || k.contains("_count") {
                assert!(w[1].get(k).copied().unwrap_or(0.0) >= *v, "{k} went down");
            }
        }
    }

    // Final values equal metrics.json's.
    let m = json(&out.join("metrics.json"));
    assert_eq!(last["planrun_active_users"], 0.0);
    assert_eq!(iterations(&last), 12.0);
    let succeeded = sum_matching(&last, "planrun_iterations_total{", "outcome=\"success\"");
    let failed = sum_matching(&last, "planrun_iterations_total{", "outcome=\"failure\"");
    assert_eq!(succeeded, m["iterations"]["succeeded"].as_f64().unwrap());
    assert_eq!(failed, m["iterations"]["failed"].as_f64().unwrap());
    assert!(succeeded > 0.0 && failed > 0.0, "{succeeded} {failed}");
    for (scenario, counts) in m["scenarios"].as_object().unwrap() {
        let k = format!("planrun_iterations_total{{scenario=\"{scenario}\",outcome=\"success\"}}");
        assert_eq!(
            last.get(&k).copied().unwrap_or(0.0),
            counts["succeeded"].as_f64().unwrap(),
            "{k}"
        );
    }
    let errors = m["errors"].as_object().unwrap();
    assert_eq!(errors["timeout"].as_f64().unwrap(), failed);
    for (class, n) in errors {
        assert_eq!(
            last[&format!("planrun_errors_total{{class=\"{class}\"}}")],
            n.as_f64().unwrap()
        );
    }
    for metric in ["ttfa", "response_time", "connect", "iteration"] {
        let report = &m["metrics"][metric];
        let count = report["count"].as_f64().unwrap();
        assert!(count > 0.0, "{metric}");
        let live_count = last[&format!("planrun_latency_seconds_count{{metric=\"{metric}\"}}")];
        assert_eq!(live_count, count, "{metric}");
        let inf =
            last[&format!("planrun_latency_seconds_bucket{{metric=\"{metric}\",le=\"+Inf\"}}")];
        assert_eq!(inf, count, "{metric}");
        let mean_ms =
            last[&format!("planrun_latency_seconds_sum{{metric=\"{metric}\"}}")] / count * 1000.0;
        let want = report["mean_ms"].as_f64().unwrap();
        assert!(
            (mean_ms - want).abs() <= want * 0.01 + 0.01,
            "{metric}: live mean {mean_ms} vs {want}"
        );
        // p50 lies within the bucket where the cumulative count crosses half.
        let p50 = report["p50_ms"].as_f64().unwrap() / 1000.0;
        let below: f64 = planrun::metrics::live::LATENCY_BUCKETS
            .iter()
            .filter(|b| **b < p50 * 0.99)
            .map(|b| {
                last[&format!("planrun_latency_seconds_bucket{{metric=\"{metric}\",le=\"{b}\"}}")]
            })
            .fold(0.0, f64::max);
        assert!(
            below <= count / 2.0 + 0.5,
            "{metric}: {below} of {count} below p50 {p50}"
        );
    }
    // The agent answers after asr + llm + tts = 250 ms: ttfa lands in the 0.25..0.5 s buckets.
    let ttfa_fast = last["planrun_latency_seconds_bucket{metric=\"ttfa\",le=\"0.2\"}"];
    assert_eq!(ttfa_fast, 0.0);
    // The generator's own health is live too.
    assert!(last["planrun_send_lag_seconds_count"] > 100.0);
    assert!(last["planrun_event_loop_delay_seconds_count"] > 50.0);
    assert!(last["process_cpu_seconds_total"] > 0.0);
    assert!(last["process_resident_memory_bytes"] > 1e6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_metrics_address_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("live-bind");
    let plan = dir.join("p.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = dir.join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_planrun"))
        .env("PLANRUN_ON_OVERLOAD", "warn")
        .args(["run", plan.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--metrics-addr", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(i32::from(exit::CANNOT_RUN)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(!Path::new(&out).join("metrics.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
