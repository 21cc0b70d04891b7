//! Tool calls over OpenAI Realtime against the built-in agent, which (strict, the default)
//! ends the response with the function call and waits for the caller's
//! `function_call_output` + `response.create`, as the real API does.
//!
//! - without `on_tool_call` the call fails as `tool_call_unanswered`;
//! - with it (on the scenario or the target), the call completes, and the agent — which
//!   refuses a result for any other `call_id` — answered after the tool result;
//! - a `send_json` step answers it by hand with `{{ event.call_id }}` of the awaited call, and
//!   a wrong call_id is refused by the agent;
//! - `wait_for_tool_result: false` keeps the agent's old behaviour (answers on its own).

use std::path::{Path, PathBuf};

use planrun::cli::exit;
use serde_json::Value;

mod common;
use common::{json, read, temp_dir};

fn plan(
    dir: &Path,
    agent_extra: &str,
    target_extra: &str,
    scenario_extra: &str,
    steps: &str,
) -> PathBuf {
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio_files/book_flight.wav");
    let text = format!(
        "name: tools
target:
  url: builtin
  protocol: openai-realtime
  openai:
    turn_detection: manual
  agent:
    llm_latency: 50ms
    reply_duration: 300ms
    tool_keywords: [book]
    tool_latency: 100ms{agent_extra}
{target_extra}load:
  users: 1
  iterations: 2
  seed: 3
scenarios:
  - name: book
{scenario_extra}    steps:
      - send_audio: {audio}
      - send: speech_end
      - await: tool_call
        timeout: 3s
{steps}      - await: first_audio
        record: ttfa_tool
        timeout: 2s
      - await: response_end
        timeout: 3s
thresholds:
  success_rate: \"> 0.99\"
",
        audio = audio.display()
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(path: &Path, dir: &Path) -> (u8, Value) {
    let out = dir.join("out");
    let code = common::run_plan(path, &out, |_| {}).await;
    (code, json(&out.join("metrics.json")))
}

/// The timeline rows of kind `event` (detail column).
fn timeline(dir: &Path, event: &str) -> Vec<String> {
    let mut csv = csv::Reader::from_path(dir.join("out/timeline.csv")).unwrap();
    csv.records()
        .map(Result::unwrap)
        .filter(|r| &r[4] == event)
        .map(|r| r[5].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_tool_call_fails_classified() {
    let dir = temp_dir("tools-unanswered");
    let p = plan(&dir, "", "", "", "");
    let (code, m) = run(&p, &dir).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{m:#}");
    assert_eq!(m["iterations"]["failed"], 2, "{m:#}");
    assert_eq!(m["errors"]["tool_call_unanswered"], 2, "{m:#}");
    let f = &m["failures"][0];
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("no `first_audio` within 2s"), "{msg}");
    assert!(msg.contains("`lookup` (call_id call_"), "{msg}");
    assert!(msg.contains("on_tool_call"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tool_call_answers_with_the_calls_id_and_the_call_completes() {
    for (target, scenario) in [
        (
            "",
            "    on_tool_call:\n      respond: {output: '{\"temp\": 21}'}\n",
        ),
        (
            "  on_tool_call:\n    lookup: {output: {booked: \"{{ event.name }}\"}}\n",
            "",
        ),
    ] {
        let dir = temp_dir("tools-answered");
        let p = plan(&dir, "", target, scenario, "");
        let (code, m) = run(&p, &dir).await;
        assert_eq!(code, exit::PASSED, "{}\n{m:#}", read(&p));
        assert_eq!(m["iterations"]["succeeded"], 2, "{m:#}");
        assert_eq!(m["metrics"]["ttfa_tool"]["count"], 2);
        // planrun sent the result for the call it got (`tool_result` names tool and call_id)…
        let calls = timeline(&dir, "tool_call");
        let results = timeline(&dir, "tool_result");
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(results.len(), 2, "{results:?}");
        for r in &results {
            assert!(r.starts_with("lookup call_"), "{r}");
        }
        // …and the agent, which refuses any other call_id (see the send_json test), answered.
        let ids: std::collections::BTreeSet<&str> =
            results.iter().map(|r| &r["lookup ".len()..]).collect();
        assert_eq!(
            ids.len(),
            1,
            "each call's own id (one agent connection per call): {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_json_answers_by_hand_and_a_wrong_call_id_is_refused() {
    let answer = |call_id: &str| {
        format!(
            "      - send_json:
          type: conversation.item.create
          item:
            type: function_call_output
            call_id: \"{call_id}\"
            output: '{{\"temp\": 21}}'
      - send_json: {{type: response.create}}
"
        )
    };
    let dir = temp_dir("tools-send-json");
    let p = plan(&dir, "", "", "", &answer("{{ event.call_id }}"));
    let (code, m) = run(&p, &dir).await;
    assert_eq!(code, exit::PASSED, "{m:#}");
    assert_eq!(m["iterations"]["succeeded"], 2, "{m:#}");
    assert_eq!(timeline(&dir, "tool_result").len(), 2);

    let dir = temp_dir("tools-wrong-id");
    let p = plan(&dir, "", "", "", &answer("call_wrong"));
    let (code, m) = run(&p, &dir).await;
    assert_eq!(code, exit::THRESHOLD_FAILED, "{m:#}");
    assert_eq!(m["errors"]["server_error"], 2, "{m:#}");
    let msg = m["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("call_wrong"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lenient_agent_answers_without_the_result() {
    let dir = temp_dir("tools-lenient");
    let p = plan(&dir, "\n    wait_for_tool_result: false", "", "", "");
    let (code, m) = run(&p, &dir).await;
    assert_eq!(code, exit::PASSED, "{m:#}");
    assert!(timeline(&dir, "tool_result").is_empty());
}

#[test]
fn templates_and_protocols_are_checked_before_the_run() {
    let dir = temp_dir("tools-bad");
    let err = |p: &Path| match planrun::plan::load(p) {
        Ok(_) => panic!("should not load: {}", read(p)),
        Err(e) => e.to_string(),
    };
    let p = plan(
        &dir,
        "",
        "",
        "",
        "      - send_json: {type: x, id: \"{{ evnt.call_id }}\"}\n",
    );
    let e = err(&p);
    assert!(e.contains("send_json"), "{e}");
    assert!(e.contains("plan.yaml:"), "{e}");
    let p = plan(
        &dir,
        "",
        "",
        "    on_tool_call:\n      respond: {output: \"{{ event..x }}\"}\n",
        "",
    );
    let e = err(&p);
    // Found by the plan's template check, with the answer's position in the file.
    assert!(e.contains("not a valid event name"), "{e}");
    assert!(e.contains("plan.yaml:19:"), "{e}");
    let text = read(&plan(
        &dir,
        "",
        "",
        "    on_tool_call:\n      respond: {output: ok}\n",
        "",
    ))
    .replace(
        "  protocol: openai-realtime\n  openai:\n    turn_detection: manual\n",
        "",
    );
    let p = dir.join("raw.yaml");
    std::fs::write(&p, text).unwrap();
    let e = err(&p);
    assert!(e.contains("answers OpenAI Realtime tool calls"), "{e}");
}
