//! Independent random streams: a user's scenario sequence depends only on the seed, never on
//! what its calls did (a failed call skips its jittered steps and their draws).

use std::path::Path;
use std::sync::Arc;

use planrun::engine;
use planrun::metrics::progress::Progress;
use planrun::plan;

mod common;
use common::temp_dir;

/// Two weighted scenarios whose steps draw jitter.
fn plan_text(url: &str) -> String {
    format!(
        "name: streams
target:
  url: {url}
  connect_timeout: 2s
load:
  users: 3
  iterations: 8
  seed: 99
  think_time: 1ms..3ms
scenarios:
  - name: a
    weight: 1
    steps:
      - wait: 1ms..4ms
      - wait: 1ms..4ms
  - name: b
    weight: 1
    steps:
      - wait: 1ms..4ms
      - wait: 1ms..4ms
      - wait: 1ms..4ms
"
    )
}

/// (user, iteration, scenario, failed) of every call of a run of `text`.
async fn sequence(dir: &Path, name: &str, text: &str) -> Vec<(u32, u64, String, bool)> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let compiled = plan::compile::compile(&plan::load(&path).unwrap()).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let (sink, records) = std::sync::mpsc::channel();
    engine::run_observed(&compiled, rx, Arc::new(Progress::default()), Some(sink))
        .await
        .unwrap();
    let mut seq: Vec<(u32, u64, String, bool)> = records
        .try_iter()
        .map(|r| (r.user, r.iteration, r.scenario.clone(), r.failure.is_some()))
        .collect();
    seq.sort();
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_do_not_shift_the_scenario_sequence() {
    let dir = temp_dir("streams");
    // The built-in agent accepts every call: each runs its jittered waits.
    let ok = sequence(&dir, "ok.yaml", &plan_text("builtin")).await;
    // Nothing listens on this port: every call fails at connect, before any jitter draw.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = sequence(
        &dir,
        "refused.yaml",
        &plan_text(&format!("ws://127.0.0.1:{port}/")),
    )
    .await;
    assert_eq!(ok.len(), 24, "{ok:?}");
    assert_eq!(refused.len(), 24, "{refused:?}");
    assert!(ok.iter().all(|c| !c.3), "{ok:?}");
    assert!(refused.iter().all(|c| c.3), "{refused:?}");
    let picks = |s: &[(u32, u64, String, bool)]| {
        s.iter()
            .map(|c| (c.0, c.1, c.2.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(&ok), picks(&refused));
    // Both scenarios were picked (the weights are honoured, the test is not vacuous).
    assert!(ok.iter().any(|c| c.2 == "a") && ok.iter().any(|c| c.2 == "b"));
    let _ = std::fs::remove_dir_all(&dir);
}
