//! Rule: every threshold that validates can fail. For every kind of metric × every threshold
//! form (plain, windowed `over W`, `abort_on_fail`, windowed with `abort_on_fail`) a real run
//! against the built-in agent that must fail it, and one that must pass it; combinations that
//! can never fire are plan errors, asserted here with their position. Runs are tiny (one user,
//! short replies); failures are forced with the agent's latencies and faults.

use planrun::cli::exit;
use planrun::plan::model::ReportFormat;
use serde_json::Value;

mod common;
use common::temp_dir;

/// One kind of metric: how to build a run that passes `pass_expr` and one that fails
/// `fail_expr` (the same expression, except where no agent setting can move the metric).
struct Kind {
    metric: &'static str,
    pass_expr: &'static str,
    fail_expr: &'static str,
    /// The plan up to (without) `load:`, for the healthy and the broken run.
    healthy: String,
    broken: String,
}

/// Steps of a plain turn: the caller says something short, the bot answers.
const TURN: &str = "scenarios:
  - name: turn
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: first_audio
        record: ttfa
        timeout: 5s
      - await: response_end
        timeout: 5s
";

fn ws(agent: &str, scenarios: &str) -> String {
    format!(
        "name: matrix
target:
  url: builtin
  agent: {agent}
{scenarios}"
    )
}

fn healthy_agent() -> &'static str {
    "{llm_latency: 50ms, reply_duration: 400ms}"
}

/// The four forms of `expr` as threshold list items.
fn forms(expr: &str) -> [String; 4] {
    [
        format!("\"{expr}\""),
        format!("\"{expr} over 2s\""),
        format!("{{threshold: \"{expr}\", abort_on_fail: true}}"),
        format!("{{threshold: \"{expr} over 2s\", abort_on_fail: true}}"),
    ]
}

async fn run(tag: &str, head: &str, load: &str, metric: &str, items: &[String]) -> (u8, Value) {
    let dir = temp_dir(tag);
    let yaml = format!(
        "{head}load: {load}\nthresholds:\n  {metric}:\n{}",
        items
            .iter()
            .map(|i| format!("    - {i}\n"))
            .collect::<String>()
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = dir.join("out");
    let code = common::run_plan(&path, &out, |o| {
        o.outputs.formats = vec![ReportFormat::Json]
    })
    .await;
    let text = std::fs::read_to_string(out.join("metrics.json")).unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_ne!(code, exit::INVALID, "the plan must validate:\n{yaml}");
    (code, json)
}

fn results(json: &Value) -> Vec<(String, bool)> {
    json["thresholds"]
        .as_array()
        .unwrap_or_else(|| panic!("no thresholds in {json}"))
        .iter()
        .map(|t| {
            (
                t["expression"].as_str().unwrap().to_string(),
                t["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A broken run stopped by the threshold `expr` of `metric` (abort_on_fail) long before its
/// 30 s duration, with every threshold failed.
fn assert_aborted_by(json: &Value, code: u8, metric: &str, expr: &str) {
    assert_eq!(code, exit::THRESHOLD_FAILED, "{json}");
    assert_eq!(json["stopped_by"], "threshold", "{metric} {expr}: {json}");
    let reason = json["stop_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("{metric} {expr} ")),
        "{metric} {expr} should have stopped the run: {reason}"
    );
    let elapsed = json["elapsed_s"].as_f64().unwrap();
    assert!(elapsed < 20.0, "{metric} {expr}: elapsed {elapsed}");
    for (e, passed) in results(json) {
        assert!(!passed, "{metric} {e} should fail: {json}");
    }
}

async fn matrix(k: Kind) {
    let m = k.metric;
    let [plain, windowed, abort, windowed_abort] = forms(k.fail_expr);
    // Broken: plain and windowed judged at the end, plain abort_on_fail stops the run.
    let (code, json) = run(
        &format!("{m}-fail"),
        &k.broken,
        "{users: 1, duration: 30s}",
        m,
        &[plain, windowed, abort],
    )
    .await;
    assert_aborted_by(&json, code, m, k.fail_expr);
    assert_eq!(results(&json).len(), 3);
    // Broken: the windowed abort_on_fail stops the run.
    let (code, json) = run(
        &format!("{m}-fail-window"),
        &k.broken,
        "{users: 1, duration: 30s}",
        m,
        &[windowed_abort],
    )
    .await;
    assert_aborted_by(&json, code, m, &format!("{} over 2s", k.fail_expr));
    // Healthy: all four forms pass, nothing aborts.
    let (code, json) = run(
        &format!("{m}-pass"),
        &k.healthy,
        "{users: 1, iterations: 2}",
        m,
        &forms(k.pass_expr),
    )
    .await;
    assert_eq!(code, exit::PASSED, "{m}: {json}");
    assert_eq!(json["aborted"], false, "{json}");
    let r = results(&json);
    assert_eq!(r.len(), 4, "{json}");
    assert!(r.iter().all(|(_, p)| *p), "{m}: {r:?}\n{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_latency() {
    matrix(Kind {
        metric: "ttfa",
        pass_expr: "p95 < 500ms",
        fail_expr: "p95 < 500ms",
        healthy: ws(healthy_agent(), TURN),
        broken: ws("{llm_latency: 900ms, reply_duration: 400ms}", TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_iteration() {
    // mhmm.wav is 0.33 s; healthy ≈ 0.33 + 0.1 + 0.4 s, broken ≈ 0.33 + 1.5 + 0.4 s.
    matrix(Kind {
        metric: "iteration",
        pass_expr: "max < 1500ms",
        fail_expr: "max < 1500ms",
        healthy: ws(healthy_agent(), TURN),
        broken: ws("{llm_latency: 1500ms, reply_duration: 400ms}", TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_connect() {
    // No agent setting slows a loopback connect: the failing run asks for the impossible.
    matrix(Kind {
        metric: "connect",
        pass_expr: "p95 < 2s",
        fail_expr: "min > 2s",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(healthy_agent(), TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate() {
    matrix(Kind {
        metric: "success_rate",
        pass_expr: "> 0.9",
        fail_expr: "> 0.9",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(
            "{llm_latency: 50ms, reply_duration: 400ms, faults: {drop: 1.0}}",
            TURN,
        ),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks() {
    let steps = |word: &str| {
        format!(
            "scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/weather.wav
      - send: speech_end
      - check: transcript
        where: {{text: {{contains: {word}}}}}
        name: transcript
      - await: response_end
        timeout: 5s
"
        )
    };
    matrix(Kind {
        metric: "checks",
        pass_expr: "> 0.9",
        fail_expr: "> 0.9",
        healthy: ws(healthy_agent(), &steps("weather")),
        broken: ws(healthy_agent(), &steps("pizza")),
    })
    .await;
}

/// A turn in a scenario tagged `t`.
fn tagged_turn() -> String {
    TURN.replace("  - name: turn\n", "  - name: turn\n    tags: [t]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_filtered_latency() {
    // A filter on the only scenario: recorded per scenario because a threshold asks.
    matrix(Kind {
        metric: "ttfa{scenario:turn}",
        pass_expr: "p95 < 500ms",
        fail_expr: "p95 < 500ms",
        healthy: ws(healthy_agent(), TURN),
        broken: ws("{llm_latency: 900ms, reply_duration: 400ms}", TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filtered_latency() {
    matrix(Kind {
        metric: "ttfa{tag:t}",
        pass_expr: "p95 < 500ms",
        fail_expr: "p95 < 500ms",
        healthy: ws(healthy_agent(), &tagged_turn()),
        broken: ws(
            "{llm_latency: 900ms, reply_duration: 400ms}",
            &tagged_turn(),
        ),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_filtered_success_rate() {
    matrix(Kind {
        metric: "success_rate{scenario:turn}",
        pass_expr: "> 0.9",
        fail_expr: "> 0.9",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(
            "{llm_latency: 50ms, reply_duration: 400ms, faults: {drop: 1.0}}",
            TURN,
        ),
    })
    .await;
}

/// A reply that stalls 500 ms mid-stream: a playout underrun (glitch) and a 500 ms gap between
/// two chunks (frame jitter).
fn stalling_agent() -> &'static str {
    "{llm_latency: 50ms, reply_duration: 1s, faults: {stall: 1.0, stall_for: 500ms}}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_glitch() {
    matrix(Kind {
        metric: "glitch",
        pass_expr: "count < 1",
        fail_expr: "count < 1",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(stalling_agent(), TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_frame_jitter() {
    matrix(Kind {
        metric: "frame_jitter",
        pass_expr: "max < 300ms",
        fail_expr: "max < 300ms",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(stalling_agent(), TURN),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_reverse_barge_in() {
    // The caller pauses mid-utterance for longer than the agent's VAD hangover: the agent
    // answers while the caller's turn is still going on.
    let talk_over = "scenarios:
  - name: pause
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send_audio: {silence: 800ms}
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - wait: 1s
";
    matrix(Kind {
        metric: "reverse_barge_in",
        pass_expr: "count < 1",
        fail_expr: "count < 1",
        healthy: ws(healthy_agent(), TURN),
        broken: ws(
            "{vad_hangover: 200ms, llm_latency: 50ms, reply_duration: 1s}",
            talk_over,
        ),
    })
    .await;
}

fn http(chunk_latency: &str) -> String {
    format!(
        "name: matrix
target:
  url: builtin
  protocol: http_chunks
  http:
    chunk: 500ms
    capture: {{processing: /processing_ms}}
  agent: {{chunk_latency: {chunk_latency}}}
scenarios:
  - name: call
    steps:
      - send_audio: {{tone: 1s, pacing: burst}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_chunk_latency() {
    matrix(Kind {
        metric: "chunk_latency",
        pass_expr: "p95 < 250ms",
        fail_expr: "p95 < 250ms",
        healthy: http("20ms"),
        broken: http("400ms"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_captured_value() {
    matrix(Kind {
        metric: "processing",
        pass_expr: "p95 < 250ms",
        fail_expr: "p95 < 250ms",
        healthy: http("20ms"),
        broken: http("400ms"),
    })
    .await;
}

/// The raw protocol as a custom mapping that also captures the agent's own LLM time from its
/// per-turn `metrics` message.
fn custom(llm: &str) -> String {
    format!(
        "name: matrix
target:
  url: builtin
  protocol: custom
  custom:
    preset: raw
    inbound:
      - when: {{/type: metrics}}
        event: metrics
        informational: true
        capture: {{agent_llm: /llm_ms}}
  agent: {{llm_latency: {llm}, reply_duration: 400ms}}
{TURN}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_captured_value() {
    matrix(Kind {
        metric: "agent_llm",
        pass_expr: "p95 < 500ms",
        fail_expr: "p95 < 500ms",
        healthy: custom("50ms"),
        broken: custom("900ms"),
    })
    .await;
}

/// The plan error (rendered) of a plan that must not load.
fn plan_error(tag: &str, yaml: &str) -> String {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    match planrun::plan::load(&path) {
        Ok(_) => panic!("the plan should not validate:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn combinations_that_could_never_fire_are_plan_errors() {
    // abort_on_fail on a count lower bound: a count still too low may yet grow.
    let e = plan_error(
        "abort-count",
        &format!(
            "{}load: {{users: 1, iterations: 1}}\nthresholds:\n  ttfa:\n    - p95 < 1s\n    - {{threshold: count >= 5, abort_on_fail: true}}\n",
            ws(healthy_agent(), TURN)
        ),
    );
    assert!(e.contains("plan.yaml:20:7"), "{e}");
    assert!(e.contains("can never stop the run"), "{e}");
    assert!(e.contains("drop `abort_on_fail`"), "{e}");

    // `checks` in a plan without a check step.
    let e = plan_error(
        "no-checks",
        &format!(
            "{}load: {{users: 1, iterations: 1}}\nthresholds:\n  checks: \"> 0.9\"\n",
            ws(healthy_agent(), TURN)
        ),
    );
    assert!(e.contains("plan.yaml:18:11"), "{e}");
    assert!(e.contains("no step of the plan has `check:`"), "{e}");
    assert!(e.contains("success_rate"), "{e}");

    // An audio-quality metric over HTTP, where no reply audio stream exists.
    let e = plan_error(
        "http-glitch",
        &format!(
            "{}load: {{users: 1, iterations: 1}}\nthresholds:\n  glitch: count < 1\n",
            http("20ms")
        ),
    );
    assert!(e.contains("plan.yaml:15:11"), "{e}");
    assert!(e.contains("receives no reply audio"), "{e}");
    assert!(e.contains("chunk_latency"), "{e}");

    // Filters: a scenario or tag that does not exist, and metrics not kept per group.
    let filtered = |key: &str, expr: &str| {
        plan_error(
            "filter",
            &format!(
                "{}load: {{users: 1, iterations: 1}}\nthresholds:\n  {key}: \"{expr}\"\n",
                ws(healthy_agent(), &tagged_turn())
            ),
        )
    };
    let e = filtered("ttfa{scenario:trun}", "p95 < 1s");
    assert!(e.contains("plan.yaml:19:"), "{e}");
    assert!(e.contains("did you mean `ttfa{scenario:turn}`"), "{e}");
    let e = filtered("ttfa{tag:x}", "p95 < 1s");
    assert!(e.contains("tags in this plan: t"), "{e}");
    let e = filtered("success_rate{tag:t}", "> 0.5");
    assert!(e.contains("success_rate{scenario:NAME}"), "{e}");
    let e = filtered("dropped_arrivals{scenario:turn}", "count < 1");
    assert!(e.contains("measured for the whole run"), "{e}");
    let e = filtered("ttfa{scenario:turn}", "> 0.5");
    assert!(e.contains("needs a statistic"), "{e}");
}

#[test]
fn custom_captured_metrics_are_known_to_validation() {
    let dir = temp_dir("custom-known");
    let path = dir.join("plan.yaml");
    let yaml = format!(
        "{}load: {{users: 1, iterations: 1}}\nthresholds:\n  agent_llm: p95 < 1s\n",
        custom("50ms")
    );
    std::fs::write(&path, &yaml).unwrap();
    let lp = planrun::plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = planrun::plan::compile::compile(&lp).unwrap();
    assert!(
        c.metrics.iter().any(|m| m == "agent_llm"),
        "{:?}",
        c.metrics
    );
    // A name the mapping does not capture is still refused, with the captured one suggested.
    let e = plan_error(
        "custom-typo",
        &yaml.replace("agent_llm: p95", "agent_lm: p95"),
    );
    assert!(e.contains("did you mean `agent_llm`"), "{e}");
}

#[test]
fn timeline_detail_follows_the_thresholds() {
    let dir = temp_dir("detail");
    let compile = |thresholds: &str| {
        let path = dir.join("plan.yaml");
        std::fs::write(
            &path,
            format!(
                "{}load: {{users: 1, iterations: 1}}\nthresholds:\n{thresholds}",
                ws(healthy_agent(), TURN)
            ),
        )
        .unwrap();
        planrun::plan::compile::compile(&planrun::plan::load(&path).unwrap())
            .unwrap()
            .timeline_detail()
    };
    let d = compile("  frame_jitter: p99 < 50ms\n");
    assert!(!d.frame_jitter && !d.checks);
    let d = compile("  frame_jitter: p99 < 50ms over 5s\n");
    assert!(d.frame_jitter);
    let d = compile("  frame_jitter: {threshold: p99 < 50ms, abort_on_fail: true}\n");
    assert!(d.frame_jitter);
    let d = compile("  frame_jitter{scenario:turn}: p99 < 50ms over 5s\n");
    assert!(d.frame_jitter);
}
