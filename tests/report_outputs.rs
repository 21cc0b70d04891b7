//! Reports end to end: every output of a small built-in run parsed back, custom templates,
//! re-rendering with `planrun report`, HTML escaping, `planrun compare`, sweeps.

use std::path::{Path, PathBuf};

use planrun::cli::exit;

mod common;
use common::{json, read, run_cli, temp_dir};

const PLAN: &str = "name: reports
target:
  url: builtin
  agent:
    asr_latency: 30ms
    llm_latency: 100ms
    tts_latency: 30ms
    reply_duration: 300ms
load:
  users: USERS
  iterations: 2
  seed: 5
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
        timeout: 5s
thresholds:
  ttfa: [p95 < 1ms, p99 < 5s]
  success_rate: \"> 0.5\"
report:
  templates:
    custom.txt: custom.txt.j2
";

fn write_plan(dir: &Path, users: &str) -> PathBuf {
    std::fs::write(
        dir.join("custom.txt.j2"),
        "plan={{ plan }} ttfa count={{ metrics.ttfa.count }} p50={{ metrics.ttfa.p50_ms }} \
         events={{ events | length }} host={{ environment.hostname }}\n",
    )
    .unwrap();
    let path = dir.join("plan.yaml");
    std::fs::write(&path, PLAN.replace("USERS", users)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_every_report_and_they_parse() {
    let dir = temp_dir("all");
    let plan = write_plan(&dir, "2");
    let out = dir.join("out");
    let code = run_cli(&[plan.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"]).await;
    // `ttfa p95 < 1ms` cannot pass.
    assert_eq!(code, exit::THRESHOLD_FAILED);

    // metrics.json: the old contract plus histograms and environment.
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["iterations"]["total"], 4);
    assert_eq!(m["metrics"]["ttfa"]["count"], 4);
    assert!(m["histograms"]["ttfa"].as_str().unwrap().len() > 10);
    let h = planrun::report::hist::decode(m["histograms"]["ttfa"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), 4);
    assert!(
        !m["environment"]["planrun_version"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // run.json and timeline.csv: one row per marker, per sample, per iteration start/end and per
    // failure.
    let run = json(&out.join("run.json"));
    let iterations = run["iterations"].as_array().unwrap();
    assert_eq!(iterations.len(), 4);
    let expected_rows: usize = iterations
        .iter()
        .map(|i| {
            2 + i["markers"].as_array().unwrap().len()
                + i["samples"].as_array().unwrap().len()
                + usize::from(!i["failure"].is_null())
        })
        .sum();
    let mut csv = csv::Reader::from_path(out.join("timeline.csv")).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        ["t_ms", "user", "iteration", "scenario", "event", "detail"]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), expected_rows);
    let kinds: Vec<&str> = rows.iter().map(|r| r.get(4).unwrap()).collect();
    for k in [
        "iteration_start",
        "iteration_end",
        "speech_end",
        "first_audio",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let times: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "rows in time order");

    // junit.xml: well-formed, one failure per failed threshold.
    let xml = read(&out.join("junit.xml"));
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failed_thresholds = m["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["passed"] == false)
        .count();
    assert_eq!(failed_thresholds, 1);
    let threshold_failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .filter(|n| {
            n.attribute("classname")
                .unwrap_or("")
                .ends_with(".thresholds")
        })
        .filter(|n| n.children().any(|c| c.has_tag_name("failure")))
        .count();
    assert_eq!(threshold_failures, failed_thresholds);
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(
        cases,
        3 + 1 + 1,
        "three thresholds, one scenario and the generator's health"
    );

    // summary.md, report.html, and the custom template with real numbers.
    assert!(read(&out.join("summary.md")).contains("FAILED"));
    let html = read(&out.join("report.html"));
    assert!(
        html.contains("<svg") && html.contains("Sessions"),
        "charts present"
    );
    assert!(
        !html.contains("http://") || !html.contains("<link"),
        "no external resources"
    );
    let custom = read(&out.join("custom.txt"));
    assert!(
        custom.contains("plan=reports ttfa count=4 p50="),
        "{custom}"
    );
    assert!(
        custom.contains(&format!("events={expected_rows}")),
        "{custom}"
    );

    // `planrun report` reproduces the files from metrics.json + run.json.
    let again = dir.join("again");
    let tmpl = dir.join("custom.txt.j2");
    let arg = format!("custom.txt={}", tmpl.display());
    let code = run_cli(&[
        "report",
        out.to_str().unwrap(),
        "--out-dir",
        again.to_str().unwrap(),
        "--template",
        &arg,
    ])
    .await;
    assert_eq!(code, exit::PASSED);
    for f in [
        "summary.md",
        "report.html",
        "timeline.csv",
        "junit.xml",
        "custom.txt",
    ] {
        assert_eq!(read(&out.join(f)), read(&again.join(f)), "{f} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_select_outputs_and_templates_replace_builtins() {
    let dir = temp_dir("formats");
    let plan = write_plan(&dir, "1");
    std::fs::write(dir.join("mine.md.j2"), "# mine {{ iterations.total }}\n").unwrap();
    let out = dir.join("out");
    let tmpl = format!("summary.md={}", dir.join("mine.md.j2").display());
    let code = run_cli(&[
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json,csv",
        "--template",
        &tmpl,
        "-q",
    ])
    .await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    assert!(out.join("metrics.json").exists());
    assert!(out.join("timeline.csv").exists());
    assert!(!out.join("report.html").exists());
    assert!(!out.join("junit.xml").exists());
    assert_eq!(read(&out.join("summary.md")), "# mine 2\n");
    assert!(out.join("custom.txt").exists());

    // A missing template is a usage error before anything runs.
    let code = run_cli(&[
        plan.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
        "--template",
        "a.md=/nonexistent/t.j2",
        "-q",
    ])
    .await;
    assert_eq!(code, exit::INVALID);
    assert!(!dir.join("x").exists());
}

/// A run folder written by hand: a transcript and a failure carrying markup.
fn hostile_run(dir: &Path) {
    let evil = "<script>alert(1)</script>";
    let metrics = serde_json::json!({
        "plan": "evil <b>plan</b>",
        "passed": false,
        "target": "ws://x/",
        "elapsed_s": 2.0,
        "users": 1,
        "iterations": {"total": 1, "succeeded": 0, "failed": 1},
        "success_rate": 0.0,
        "errors": {"server_error": 1},
        "scenarios": {evil: {"total": 1, "succeeded": 0, "failed": 1}},
        "metrics": {},
        "metric_order": [],
        "thresholds": [{"metric": "success_rate", "expression": "> 0.9", "observed": 0.0,
                        "observed_text": "0.0000", "passed": false}],
        "failures": [{"user": 0, "iteration": 0, "scenario": evil, "class": "server_error",
                      "step": "step 2", "message": evil}],
    });
    let run = serde_json::json!({
        "version": 1,
        "iterations": [{
            "user": 0, "iteration": 0, "scenario": evil, "start_us": 0, "end_us": 1_500_000,
            "failure": {"class": "server_error", "step": "step 2", "message": evil},
            "markers": [
                {"kind": "transcript", "at_us": 500_000, "detail": evil},
                {"kind": "first_audio", "at_us": 700_000},
                {"kind": "error", "at_us": 1_400_000, "detail": evil}
            ],
            "samples": []
        }]
    });
    std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
    std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
}

#[tokio::test]
async fn html_escapes_server_text() {
    let dir = temp_dir("escape");
    hostile_run(&dir);
    assert_eq!(
        run_cli(&["report", dir.to_str().unwrap()]).await,
        exit::PASSED
    );
    let html = read(&dir.join("report.html"));
    assert!(!html.contains("<script>alert"), "raw script in the report");
    assert!(!html.contains("<b>plan"), "raw markup in the report");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("What the agent heard"), "transcripts listed");
    // The CSV keeps the text verbatim (quoted as needed).
    let mut rd = csv::Reader::from_path(dir.join("timeline.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert!(rows.iter().any(|r| &r[5] == "<script>alert(1)</script>"));
    let xml = read(&dir.join("junit.xml"));
    roxmltree::Document::parse(&xml).unwrap();
}

/// A synthetic metrics.json whose `ttfa` histogram holds `values` (ms).
fn synthetic(dir: &Path, name: &str, values: &[f64], succeeded: u64, total: u64) -> PathBuf {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for v in values {
        h.record((v * 1000.0) as u64).unwrap();
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let m = serde_json::json!({
        "plan": name,
        "passed": true,
        "users": 1,
        "elapsed_s": 1.0,
        "iterations": {"total": total, "succeeded": succeeded, "failed": total - succeeded},
        "success_rate": succeeded as f64 / total as f64,
        "metrics": {"ttfa": {"count": h.len(), "min_ms": q(0.0), "mean_ms": h.mean() / 1000.0,
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p95_ms": q(0.95), "p99_ms": q(0.99),
            "max_ms": q(1.0)}},
        "metric_order": ["ttfa"],
        "histograms": {"ttfa": planrun::report::hist::encode(&h).unwrap()},
    });
    let path = dir.join(format!("{name}.json"));
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("metrics.json"), m.to_string()).unwrap();
    std::fs::write(&path, m.to_string()).unwrap();
    run_dir
}

#[tokio::test]
async fn compare_gates_on_significant_regressions() {
    let dir = temp_dir("compare");
    let base: Vec<f64> = (0..200).map(|i| 300.0 + f64::from(i % 50)).collect();
    let slow: Vec<f64> = base.iter().map(|v| v * 1.5).collect();
    let b = synthetic(&dir, "base", &base, 200, 200);
    let same = synthetic(&dir, "same", &base, 200, 200);
    let s = synthetic(&dir, "slow", &slow, 200, 200);
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();
    assert_eq!(run_cli(&["compare", &p(&b), &p(&same)]).await, exit::PASSED);
    assert_eq!(run_cli(&["compare", &p(&b), &p(&s)]).await, exit::REGRESSED);
    // The metrics.json file works as well as the folder.
    let file = b.join("metrics.json");
    assert_eq!(
        run_cli(&["compare", file.to_str().unwrap(), &p(&s)]).await,
        exit::REGRESSED
    );
    // A generous tolerance lets it through.
    assert_eq!(
        run_cli(&["compare", &p(&b), &p(&s), "--tolerance", "60%"]).await,
        exit::PASSED
    );
    // 50% slower with three samples each: not significant (p ≈ 0.08).
    let b3 = synthetic(&dir, "b3", &[290.0, 300.0, 310.0], 3, 3);
    let s3 = synthetic(&dir, "s3", &[435.0, 450.0, 465.0], 3, 3);
    assert_eq!(run_cli(&["compare", &p(&b3), &p(&s3)]).await, exit::PASSED);
    // Success rate falling from 100% to 80% over 200 calls is a regression.
    let worse = synthetic(&dir, "worse", &base, 160, 200);
    assert_eq!(
        run_cli(&["compare", &p(&b), &p(&worse)]).await,
        exit::REGRESSED
    );
    // The Markdown table.
    let bv = planrun::report::compare::load_run(&b).unwrap();
    let sv = planrun::report::compare::load_run(&s).unwrap();
    let c = planrun::report::compare::compare(&bv, &sv, Default::default());
    let md = planrun::report::compare::markdown(&c);
    assert!(
        md.contains("| `ttfa` |") && md.contains("regressed"),
        "{md}"
    );
    assert!(md.contains("+50."), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_writes_one_set_per_count_and_a_comparison() {
    let dir = temp_dir("sweep");
    let plan = write_plan(&dir, "[1, 2]");
    let out = dir.join("out");
    let code = run_cli(&[
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "md,json,csv,html",
        "-q",
    ])
    .await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    for n in [1, 2] {
        let m = json(&out.join(format!("metrics_{n}_users.json")));
        assert_eq!(m["users"], n);
        assert_eq!(m["iterations"]["total"], 2 * n);
        for f in ["timeline", "summary", "report", "custom"] {
            let ext = match f {
                "timeline" => "csv",
                "summary" => "md",
                "report" => "html",
                _ => "txt",
            };
            assert!(out.join(format!("{f}_{n}_users.{ext}")).exists(), "{f} {n}");
        }
    }
    let sweep = read(&out.join("sweep.md"));
    assert!(
        sweep.contains("| 1 |") && sweep.contains("| 2 |"),
        "{sweep}"
    );
    assert!(sweep.contains("`ttfa`"), "{sweep}");
    assert!(read(&out.join("index.html")).contains("<svg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_writes_comparison_md() {
    let dir = temp_dir("baseline");
    let plan = write_plan(&dir, "1");
    let first = dir.join("first");
    run_cli(&[
        plan.to_str().unwrap(),
        "--out",
        first.to_str().unwrap(),
        "-q",
    ])
    .await;
    let second = dir.join("second");
    let code = run_cli(&[
        plan.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
        "--baseline",
        first.to_str().unwrap(),
        "-q",
    ])
    .await;
    assert_eq!(
        code,
        exit::THRESHOLD_FAILED,
        "thresholds still decide first"
    );
    let md = read(&second.join("comparison.md"));
    assert!(md.contains("| `ttfa` |"), "{md}");
}

/// A failure during the run is shown like a plan error: the step's line of the plan with a
/// caret, in the console summary and in summary.md; without the plan (re-rendered elsewhere)
/// the failure keeps its plain text.
#[tokio::test]
async fn runtime_failures_point_at_the_plan_line() {
    let dir = temp_dir("snippet");
    let plan = write_plan(&dir, "1");
    let metrics = serde_json::json!({
        "plan": "reports",
        "plan_file": plan.display().to_string(),
        "passed": false,
        "target": "builtin",
        "elapsed_s": 1.0,
        "users": 1,
        "iterations": {"total": 1, "succeeded": 0, "failed": 1},
        "success_rate": 0.0,
        "errors": {"timeout": 1},
        "failures": [{"user": 0, "iteration": 0, "scenario": "hello", "class": "timeout",
                      "step": "step 4 (line 19)", "message": "no first_audio within 5s"}],
    });
    std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
    let snippet = format!(
        "{}:19:9: error: timeout: no first_audio within 5s\n   |\n19 |       - await: first_audio\n   |         ^\n",
        plan.display()
    );

    let report: planrun::report::RunReport = serde_json::from_value(metrics.clone()).unwrap();
    let mut console = Vec::new();
    planrun::report::console_summary(&report, &mut console).unwrap();
    let console = String::from_utf8(console).unwrap();
    assert!(
        console.contains(
            "  first: user 0 iteration 0 `hello` step 4 (line 19): no first_audio within 5s\n"
        ),
        "{console}"
    );
    let indented: String = snippet.lines().map(|l| format!("  {l}\n")).collect();
    assert!(console.contains(&indented), "{console}");

    assert_eq!(
        run_cli(&["report", dir.to_str().unwrap()]).await,
        exit::PASSED
    );
    let md = read(&dir.join("summary.md"));
    let block: String = snippet.lines().map(|l| format!("  {l}\n")).collect();
    assert!(
        md.contains(&format!("  ```text\n{block}  ```")),
        "summary.md:\n{md}"
    );

    // The plan is gone: the failure reads as before, with no snippet.
    std::fs::remove_file(&plan).unwrap();
    let mut console = Vec::new();
    planrun::report::console_summary(&report, &mut console).unwrap();
    let console = String::from_utf8(console).unwrap();
    assert!(!console.contains("error: timeout"), "{console}");
    assert_eq!(
        run_cli(&["report", dir.to_str().unwrap()]).await,
        exit::PASSED
    );
    let md = read(&dir.join("summary.md"));
    assert!(!md.contains("```text"), "{md}");
    assert!(md.contains("step 4 (line 19): **timeout** — no first_audio within 5s"));
}
