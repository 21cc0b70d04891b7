//! The shipped bursty-agent plan end to end: the built-in agent sends each 3 s answer in one
//! burst, callers interrupt it 300–800 ms into their playout, and barge-in is read from the
//! heard timeline (the agent's flush), not from when bytes stopped arriving.

use std::path::Path;

use planrun::cli::exit;

mod common;
use common::{json, run_plan, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursting_agent_is_judged_by_what_the_caller_hears() {
    let out = temp_dir("bursty").join("out");
    let code = run_plan(Path::new("plans/bursty_agent.yaml"), &out, |_| {}).await;
    let m = json(&out.join("metrics.json"));
    assert_eq!(code, exit::PASSED, "{m}");
    // The whole 3 s reply has arrived long before the interruption; on arrival timing the
    // bot "stopped" before the caller spoke (barge-in ~0 or a "not speaking" failure). Heard:
    // the agent's flush comes its barge_in_delay (60–120 ms) after the caller starts.
    let b = &m["metrics"]["barge_in"];
    assert!(b["count"].as_u64().unwrap() >= 4, "{b}");
    let min = b["min_ms"].as_f64().unwrap();
    let max = b["max_ms"].as_f64().unwrap();
    assert!(min >= 55.0 && max < 250.0, "barge_in {min}..{max} ms: {b}");
    // A burst is not paced audio: no inter-arrival jitter is charged to it.
    assert_eq!(m["metrics"]["frame_jitter"]["count"], 0, "{m}");
    assert_eq!(m["metrics"]["glitch"]["count"], 0, "{m}");
}
