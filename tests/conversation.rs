//! The conversation language against the built-in agent: every behaviour is measured, and each
//! test shows the measurement would catch a regression (a misbehaving agent fails it).

use std::path::Path;

use planrun::cli::exit;
use planrun::plan::model::ReportFormat;
use serde_json::Value;

mod common;
use common::temp_dir;

/// Run a plan file through the CLI; returns the exit code and metrics.json.
async fn run_file(path: &Path, tag: &str) -> (u8, Value) {
    let out = temp_dir(tag).join("out");
    let code = common::run_plan(path, &out, |o| o.outputs.formats = vec![ReportFormat::Json]).await;
    let text = std::fs::read_to_string(out.join("metrics.json")).unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Run plan text (YAML) through the CLI.
async fn run_yaml(tag: &str, yaml: &str) -> (u8, Value) {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    run_file(&path, tag).await
}

fn metric(json: &Value, name: &str, field: &str) -> f64 {
    json["metrics"][name][field].as_f64().unwrap_or(f64::NAN)
}

fn threshold<'a>(json: &'a Value, metric: &str, expr: &str) -> &'a Value {
    json["thresholds"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["metric"] == metric && t["expression"] == expr)
        })
        .unwrap_or_else(|| panic!("no threshold {metric} {expr} in {json}"))
}

/// One caller asks, the bot answers for 3 s, the caller interrupts after 400 ms.
fn interruption_plan(barge_in_delay: &str) -> String {
    format!(
        "name: barge
target:
  url: builtin
  agent:
    llm_latency: 100ms
    reply_duration: 3s
    barge_in_delay: {barge_in_delay}
load:
  users: 2
  iterations: 2
scenarios:
  - name: cut_off
    steps:
      - send: speech_start
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: first_audio
      - interrupt:
          after: 400ms
          audio: audio_files/cancel.wav
      - expect: audio_stops
        within: 1s
        record: barge_in
      - await: first_audio
        record: recovery
      - await: response_end
thresholds:
  barge_in: p95 < 300ms
  success_rate: \"> 0.99\"
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_latency_follows_the_agent_and_a_slow_agent_fails() {
    let (code, fast) = run_yaml("barge-fast", &interruption_plan("50ms")).await;
    assert_eq!(code, exit::PASSED, "{fast}");
    let b = metric(&fast, "barge_in", "p50_ms");
    // Heard timeline. After 50 ms the agent only pauses (no message yet: the user's speech is
    // not confirmed), so the caller hears its 60 ms playout buffer drain: 50 + 60 ms, plus up
    // to one frame.
    assert!(
        (110.0..132.0).contains(&b),
        "barge_in near 50ms + 60ms buffer: {b}"
    );
    assert_eq!(fast["metrics"]["recovery"]["count"], 4);

    let (code, slow) = run_yaml("barge-slow", &interruption_plan("400ms")).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{slow}");
    let b = metric(&slow, "barge_in", "p50_ms");
    // After 400 ms the barge-in is confirmed: the agent stops and sends `interrupted`, which
    // flushes the caller's buffer at once, so the heard stop is the flush itself.
    assert!(
        (400.0..425.0).contains(&b),
        "barge_in near 400ms (flushed): {b}"
    );
    assert_eq!(threshold(&slow, "barge_in", "p95 < 300ms")["passed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_ignores_barge_in_fails_audio_stops() {
    // The agent only stops after 2 s: longer than `within`, so the expectation fails.
    let (code, json) = run_yaml("barge-ignored", &interruption_plan("2s")).await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    assert_eq!(json["errors"]["expectation_failed"], 4, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("kept talking") || msg.contains("still talking"),
        "{msg}"
    );
    assert!(
        json["failures"][0]["step"]
            .as_str()
            .unwrap()
            .contains("line 21"),
        "{json}"
    );
}

fn false_alarm_plan(resume_delay: &str) -> String {
    format!(
        "name: false_alarm
target:
  url: builtin
  agent:
    reply_duration: 3s
    resume_delay: {resume_delay}
load:
  users: 2
  iterations: 1
scenarios:
  - name: mhmm
    steps:
      - send: speech_start
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: first_audio
      - wait: 500ms
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - expect: audio_resumes
        within: 1s
        record: resume
      - await: response_end
thresholds:
  resume: p95 < 800ms
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_resume_is_measured_and_a_bot_that_never_resumes_fails() {
    let (code, ok) = run_yaml("fa-ok", &false_alarm_plan("150ms")).await;
    assert_eq!(code, exit::PASSED, "{ok}");
    let r = metric(&ok, "resume", "p50_ms");
    // Heard: the resumed reply starts playing one pre-roll (`playout.buffer`, 60 ms) after it
    // arrives: 150 ms + 60 ms, plus up to one frame.
    assert!(
        (210.0..232.0).contains(&r),
        "resume near 150ms + 60ms buffer: {r}"
    );

    let (code, stuck) = run_yaml("fa-stuck", &false_alarm_plan("10s")).await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    assert_eq!(stuck["errors"]["expectation_failed"], 2, "{stuck}");
    let msg = stuck["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("did not resume"), "{msg}");
    // No resume was measured, so the threshold fails too rather than passing on nothing.
    assert_eq!(threshold(&stuck, "resume", "p95 < 800ms")["passed"], false);
}

fn simple_plan(agent: &str, thresholds: &str) -> String {
    format!(
        "name: simple
target:
  url: builtin
  agent:
    reply_duration: 2s
{agent}
load:
  users: 1
  iterations: 2
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: first_audio
        record: ttfa
      - await: response_end
        timeout: 10s
thresholds:
{thresholds}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_counts_glitches() {
    let (code, healthy) = run_yaml("glitch-none", &simple_plan("", "  glitch: count < 1")).await;
    assert_eq!(code, exit::PASSED, "{healthy}");
    assert_eq!(healthy["metrics"]["glitch"]["count"], 0);
    assert!(
        metric(&healthy, "frame_jitter", "p95_ms") < 20.0,
        "{healthy}"
    );

    let agent = "    faults: {stall: 1.0, stall_for: 500ms}";
    let (code, stalled) =
        run_yaml("glitch-stall", &simple_plan(agent, "  glitch: count < 1")).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{stalled}");
    assert!(stalled["metrics"]["glitch"]["count"].as_u64().unwrap() >= 2);
    // The underrun is the stall minus the 60 ms jitter buffer.
    let g = metric(&stalled, "glitch", "max_ms");
    assert!((380.0..600.0).contains(&g), "glitch length: {g}");
    assert!(metric(&stalled, "frame_jitter", "max_ms") >= 400.0);
    assert_eq!(
        stalled["iterations"]["failed"], 0,
        "a glitch is a measurement, not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_and_garbage_are_classified() {
    let t = "  success_rate: \"> 0.99\"";
    let (code, dropped) = run_yaml("drop", &simple_plan("    faults: {drop: 1.0}", t)).await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    assert_eq!(dropped["errors"]["connection_closed"], 2, "{dropped}");

    let (code, garbage) =
        run_yaml("malformed", &simple_plan("    faults: {malformed: 1.0}", t)).await;
    assert_eq!(code, exit::THRESHOLD_FAILED);
    assert_eq!(garbage["errors"]["protocol_error"], 2, "{garbage}");
    let msg = garbage["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("not JSON"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_counted_not_fatal_and_thresholded() {
    let yaml = "name: checks
target:
  url: builtin
  agent: {reply_duration: 1s, llm_latency: 100ms}
load: {users: 1, iterations: 2}
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/weather.wav
      - send: speech_end
      - check: transcript
        where: {text: {contains: weather}}
        name: transcript mentions weather
      - check: no_audio          # fails: the bot is about to answer
        within: 1s
        name: bot stays quiet
      - await: response_end
        record: done
thresholds:
  checks: \"> 0.99\"
  success_rate: \"> 0.99\"
";
    let (code, json) = run_yaml("checks", yaml).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{json}");
    assert_eq!(
        json["iterations"]["succeeded"], 2,
        "checks never end an iteration"
    );
    assert_eq!(threshold(&json, "success_rate", "> 0.99")["passed"], true);
    let checks = threshold(&json, "checks", "> 0.99");
    assert_eq!(checks["passed"], false);
    assert_eq!(checks["observed"], 0.5);
    assert_eq!(json["metrics"]["done"]["count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_event_expectations_and_predicates() {
    let plan = |expect: &str| {
        format!(
            "name: strict
target:
  url: builtin
  agent: {{reply_duration: 300ms}}
load: {{users: 1, iterations: 1}}
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/book_flight.wav
      - send: speech_end
{expect}
      - await: response_end
"
        )
    };
    let good = "      - expect: transcript
        where: {text: {contains: berlin}}
      - expect: tool_call
        where: {name: lookup}";
    let (code, json) = run_yaml("strict-ok", &plan(good)).await;
    assert_eq!(code, exit::PASSED, "{json}");

    let wrong_text = "      - expect: transcript
        where: {text: {contains: pizza}}";
    let (_, json) = run_yaml("strict-where", &plan(wrong_text)).await;
    assert_eq!(json["errors"]["expectation_failed"], 1, "{json}");

    let wrong_order = "      - expect: tool_call";
    let (_, json) = run_yaml("strict-order", &plan(wrong_order)).await;
    assert_eq!(json["errors"]["unexpected_event"], 1, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("expected `tool_call`") && msg.contains("`transcript`"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_speech_capture_marks_repeat_and_generated_audio() {
    let yaml = "name: features
target:
  url: builtin
  agent:
    asr_latency: 0ms
    llm_latency: 200ms
    tts_latency: 0ms
    reply_duration: 500ms
    leading_silence: 150ms
load: {users: 1, iterations: 2, seed: 4}
scenarios:
  - name: turns
    steps:
      - repeat: 3
        steps:
          - send: speech_start
          - send_audio: {tone: 400ms, freq: 300, level: -20, pacing: burst}
          - mark: asked
          - send: speech_end
          - await: metrics
            capture: {llm_ms: server_llm}
          - await: first_audio
            record: ttfa
          - await: first_speech
            record: ttfs
          - await: response_end
            record: answered
            from: asked
";
    let (code, json) = run_yaml("features", yaml).await;
    assert_eq!(code, exit::PASSED, "{json}");
    for m in ["ttfa", "ttfs", "answered", "server_llm"] {
        assert_eq!(json["metrics"][m]["count"], 6, "{m}: {json}");
    }
    let llm = metric(&json, "server_llm", "p50_ms");
    assert!(
        (195.0..215.0).contains(&llm),
        "captured server metric: {llm}"
    );
    // The agent streams 150 ms of silence first: first speech comes that much later.
    let gap = metric(&json, "ttfs", "p50_ms") - metric(&json, "ttfa", "p50_ms");
    assert!(
        (120.0..200.0).contains(&gap),
        "first_speech - first_audio = {gap}"
    );
    // Burst pacing sends the 400 ms tone at once, so the turn is not paced in real time.
    assert_eq!(json["generator"]["send_lag_max_ms"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_talks_over_the_caller_is_a_reverse_barge_in() {
    // The caller pauses mid-utterance for longer than the agent's VAD hangover: the agent
    // answers while the caller's turn (opened by speech_start) is still going on.
    let yaml = "name: reverse
target:
  url: builtin
  agent: {vad_hangover: 200ms, llm_latency: 50ms, reply_duration: 1s}
load: {users: 1, iterations: 1}
scenarios:
  - name: pause
    steps:
      - send: speech_start
      - send_audio: audio_files/hello.wav
      - send_audio: {silence: 1500ms}
      - send_audio: audio_files/weather.wav
      - send: speech_end
      - wait: 2s
thresholds:
  reverse_barge_in: count < 1
";
    let (code, json) = run_yaml("reverse", yaml).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{json}");
    assert!(
        json["metrics"]["reverse_barge_in"]["count"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // Polite turn-taking has none.
    let (code, json) = run_yaml("polite", &simple_plan("", "  reverse_barge_in: count < 1")).await;
    assert_eq!(code, exit::PASSED, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_runs_stop_starting_calls_when_time_is_up() {
    let yaml = "name: timed
target:
  url: builtin
  agent: {reply_duration: 300ms, llm_latency: 50ms}
load: {users: 2, duration: 3s, think_time: 100ms}
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: response_end
";
    let started = std::time::Instant::now();
    let (code, json) = run_yaml("timed", yaml).await;
    assert_eq!(code, exit::PASSED, "{json}");
    let total = json["iterations"]["total"].as_u64().unwrap();
    assert!(total >= 4, "{total} iterations in 3 s with 2 users");
    assert!(started.elapsed().as_secs_f64() < 6.0);
}

async fn example_plan_passes(name: &str) {
    let (code, json) = run_file(Path::new(&format!("plans/{name}.yaml")), name).await;
    assert_eq!(code, exit::PASSED, "plans/{name}.yaml: {json}");
    assert_eq!(json["iterations"]["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_interruptions_writes_every_report() {
    let out = temp_dir("interruptions-all").join("out");
    let code = common::run_plan(Path::new("plans/interruptions.yaml"), &out, |_| {}).await;
    assert_eq!(code, exit::PASSED);
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let metrics: Value = serde_json::from_str(&read("metrics.json")).unwrap();
    assert_eq!(metrics["iterations"]["failed"], 0);
    assert_eq!(metrics["metrics"]["barge_in"]["count"], 12);
    let run: Value = serde_json::from_str(&read("run.json")).unwrap();
    let iterations = run["iterations"].as_array().unwrap();
    let events: usize = iterations
        .iter()
        .map(|i| {
            // start, end, markers, one `record:METRIC` row per sample, failure
            2 + i["markers"].as_array().unwrap().len()
                + i["samples"].as_array().unwrap().len()
                + usize::from(!i["failure"].is_null())
        })
        .sum();
    let mut csv = csv::Reader::from_path(out.join("timeline.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), events);
    for kind in [
        "interrupt",
        "audio_stops",
        "first_audio",
        "speech_end",
        "response_end",
    ] {
        assert!(
            rows.iter().any(|r| &r[4] == kind),
            "{kind} missing from timeline.csv"
        );
    }
    let junit = read("junit.xml");
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(
        cases,
        7 + 1 + 1,
        "seven thresholds, one scenario and the generator's health"
    );
    assert!(!doc.descendants().any(|n| n.has_tag_name("failure")));
    let html = read("report.html");
    assert!(html.contains("<svg") && html.contains("barge_in"));
    assert!(read("summary.md").contains("PASSED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_false_alarms() {
    example_plan_passes("false_alarms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_voice_bot_mix() {
    example_plan_passes("voice_bot_mix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_full_duplex() {
    example_plan_passes("full_duplex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_audio_is_saved_for_listening() {
    let plan = |mode: &str, faults: &str| {
        format!(
            "name: listen
target:
  url: builtin
  agent: {{llm_latency: 100ms, reply_duration: 600ms{faults}}}
load: {{users: 1, iterations: 2}}
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: response_end
report:
  record_audio: {mode}
"
        )
    };
    let dir = temp_dir("listen");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan("all", "")).unwrap();
    let out = dir.join("out");
    assert_eq!(common::run_plan(&path, &out, |_| {}).await, exit::PASSED);
    let mut files: Vec<_> = std::fs::read_dir(out.join("audio"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let reader = hound::WavReader::open(&files[0]).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    // Placed at arrival time: the answer starts after the question (~335 ms) and the bot's
    // latency, and lasts its 600 ms.
    let first = samples
        .iter()
        .position(|s| s.unsigned_abs() > 1000)
        .unwrap();
    let first_ms = first as f64 / 16.0;
    assert!(
        (400.0..900.0).contains(&first_ms),
        "reply starts at {first_ms} ms"
    );
    let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count() as f64 / 16.0;
    assert!(
        (300.0..700.0).contains(&loud),
        "{loud} ms of loud reply audio"
    );

    // `failed` keeps only the calls that failed.
    std::fs::write(
        &path,
        plan("failed", ", faults: {drop: 0.5}").replace("iterations: 2", "iterations: 6"),
    )
    .unwrap();
    let out = dir.join("out2");
    common::run_plan(&path, &out, |_| {}).await;
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let failed = json["iterations"]["failed"].as_u64().unwrap() as usize;
    // Some calls fail and some succeed, so "only the failed ones" is really tested.
    assert!((1..6).contains(&failed), "want a mix of outcomes: {json}");
    let saved = std::fs::read_dir(out.join("audio")).map_or(0, |d| d.count());
    assert_eq!(saved, failed, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_mid_call_fails_even_without_a_pending_await() {
    let yaml = "name: hangup
target:
  url: builtin
  agent: {reply_duration: 2s, faults: {drop: 1.0}}
load: {users: 1, iterations: 1}
scenarios:
  - name: ask
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: first_audio
      - wait: 3s
";
    let (_, json) = run_yaml("hangup", yaml).await;
    assert_eq!(json["errors"]["connection_closed"], 1, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("middle of the call"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_the_new_answer_not_the_tail_of_the_old_one() {
    // The bot takes 400 ms to stop but the interruption lasts only ~340 ms: audio of the old
    // answer still arrives after the caller's end of speech and must not count as the reply.
    let yaml = "name: recovery
target:
  url: builtin
  agent: {llm_latency: 300ms, reply_duration: 3s, barge_in_delay: 400ms, min_speech: 200ms}
load: {users: 1, iterations: 2}
scenarios:
  - name: cut_off
    steps:
      - send: speech_start
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: first_audio
      - interrupt: {after: 300ms, audio: audio_files/mhmm.wav}
      - await: first_audio
        record: recovery
      - await: response_end
";
    let (code, json) = run_yaml("recovery", yaml).await;
    assert_eq!(json["iterations"]["failed"], 0, "{json}");
    assert_eq!(code, exit::PASSED);
    let r = metric(&json, "recovery", "min_ms");
    assert!(
        r >= 300.0,
        "recovery must include the agent's 300 ms latency: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_answer_is_not_a_resumption() {
    // With min_speech 20 ms the agent treats the "mhmm" as a real turn and starts over.
    let yaml = "name: restart
target:
  url: builtin
  agent: {reply_duration: 3s, min_speech: 20ms}
load: {users: 1, iterations: 1}
scenarios:
  - name: mhmm
    steps:
      - send: speech_start
      - send_audio: audio_files/hello.wav
      - send: speech_end
      - await: response_start
      - await: first_audio
      - wait: 500ms
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - expect: audio_resumes
        within: 2s
";
    let (_, json) = run_yaml("restart", yaml).await;
    assert_eq!(json["errors"]["expectation_failed"], 1, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("new answer"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_cannot_hang_a_user() {
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (_sink, _stream) = ws.split();
        tokio::time::sleep(std::time::Duration::from_secs(30)).await; // never reads
    });
    let yaml = format!(
        "name: deaf
target: {{url: \"ws://127.0.0.1:{port}/\"}}
load: {{users: 1, iterations: 1}}
scenarios:
  - name: flood
    steps:
      - send_audio: {{noise: 10m, pacing: burst}}
"
    );
    let started = std::time::Instant::now();
    let (_, json) = run_yaml("deaf", &yaml).await;
    server.abort();
    assert!(started.elapsed().as_secs() < 20, "the send must time out");
    assert_eq!(json["errors"]["send_error"], 1, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("stopped reading"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_just_ends_is_not_a_barge_in() {
    // The agent ignores the caller for 30 s, but its 1 s reply ends on its own right after the
    // interruption: audio stops, yet the bot never stopped for the caller.
    let yaml = "name: ignore
target:
  url: builtin
  agent: {reply_duration: 1s, barge_in_delay: 30s}
load: {users: 1, iterations: 1}
scenarios:
  - name: cut_off
    steps:
      - send: speech_start
      - send_audio: audio_files/mhmm.wav
      - send: speech_end
      - await: first_audio
      - interrupt: {after: 800ms, audio: audio_files/mhmm.wav}
      - expect: audio_stops
        within: 500ms
";
    let (_, json) = run_yaml("ignore", yaml).await;
    assert_eq!(json["errors"]["expectation_failed"], 1, "{json}");
    let msg = json["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("did not stop"), "{msg}");
}
