//! What the caller hears: ground truth for the playout model against small loopback agents that
//! burst a reply, pause between sentences, flush, or stream slower than real time.
//!
//! Every test here fails if the audio measurements regress to arrival timing: a burst arrives
//! in a few milliseconds but plays for seconds.

mod common;

use std::time::Duration;

use common::{json, run_plan, temp_dir};
use futures_util::{SinkExt, StreamExt};
use planrun::protocol::encode_audio;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

const RATE: u32 = 16_000;

/// One part of a scripted reply.
#[derive(Clone, Copy)]
enum Part {
    /// Speech-level audio (a tone) of this many ms.
    Speech(u64),
    /// Silence frames of this many ms (sent like audio).
    Silence(u64),
    /// Send nothing for this many ms.
    Pause(u64),
}

/// How the agent sends its reply audio.
#[derive(Clone, Copy)]
struct Agent {
    /// Audio per message, ms.
    chunk_ms: u64,
    /// Wall-clock time per chunk as a share of its duration: 0 = one burst, 1 = real time,
    /// 1.3 = 30 % slower than real time.
    pace: f64,
    /// Send `{"type":"interrupted"}` this long after the caller starts talking over the reply.
    flush_after: Option<Duration>,
}

fn samples(part: Part, ms: u64) -> Vec<i16> {
    let n = (RATE as u64 * ms / 1000) as usize;
    match part {
        Part::Speech(_) => (0..n)
            .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
            .collect(),
        _ => vec![0; n],
    }
}

/// A raw-protocol agent: answers the first `speech_end` with `reply`. Returns its URL.
async fn agent(agent: Agent, reply: Vec<Part>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            let v: Value = serde_json::from_str(&t).unwrap_or_default();
                            let kind = v["type"].as_str().unwrap_or_default().to_string();
                            if tx.send(kind).is_err() {
                                break;
                            }
                        }
                    }
                });
                while let Some(kind) = rx.recv().await {
                    if kind == "speech_end" {
                        break;
                    }
                }
                // The reply: each chunk is due at start + (audio before it) · pace.
                let start = Instant::now();
                let mut sent_ms = 0.0;
                let mut flush_at: Option<Instant> = None;
                for part in reply {
                    let (total, audio) = match part {
                        Part::Speech(ms) | Part::Silence(ms) => (ms, true),
                        Part::Pause(ms) => (ms, false),
                    };
                    if !audio {
                        sent_ms += total as f64;
                        continue;
                    }
                    let mut left = total;
                    while left > 0 {
                        let ms = left.min(agent.chunk_ms);
                        left -= ms;
                        let due = start + Duration::from_secs_f64(sent_ms * agent.pace / 1000.0);
                        sleep_until(due).await;
                        while let Ok(kind) = rx.try_recv() {
                            if matches!(kind.as_str(), "speech_start" | "interrupt") {
                                flush_at = agent.flush_after.map(|d| Instant::now() + d);
                            }
                        }
                        if sink.send(encode_audio(&samples(part, ms))).await.is_err() {
                            return;
                        }
                        sent_ms += ms as f64;
                    }
                }
                // Listen for the barge-in (unless it came during the reply) and flush.
                let flush_at = match flush_at {
                    Some(at) => Some(at),
                    None => loop {
                        match rx.recv().await {
                            Some(k) if k == "speech_start" || k == "interrupt" => {
                                break agent.flush_after.map(|d| Instant::now() + d);
                            }
                            Some(_) => {}
                            None => return,
                        }
                    },
                };
                if let Some(at) = flush_at {
                    sleep_until(at).await;
                    let msg = Message::text(r#"{"type":"interrupted"}"#);
                    let _ = sink.send(msg).await;
                }
                // Keep the connection open until the caller hangs up.
                while rx.recv().await.is_some() {}
            });
        }
    });
    format!("ws://127.0.0.1:{port}/")
}

/// Run `steps` (and `extra` plan text) against `url`; returns metrics.json.
async fn run(tag: &str, url: &str, target_extra: &str, steps: &str, extra: &str) -> Value {
    let dir = temp_dir(tag);
    let path = dir.join("plan.yaml");
    let yaml = format!(
        "name: {tag}
target:
  url: {url}
{target_extra}
load: {{users: 1, iterations: 1}}
scenarios:
  - name: s
    steps:
      - send: speech_end
      - await: first_audio
        record: ttfa
{steps}
{extra}"
    );
    std::fs::write(&path, yaml).unwrap();
    let out = dir.join("out");
    run_plan(&path, &out, |_| {}).await;
    json(&out.join("metrics.json"))
}

fn stat(r: &Value, metric: &str, field: &str) -> f64 {
    r["metrics"][metric][field].as_f64().unwrap_or(f64::NAN)
}

fn count(r: &Value, metric: &str) -> u64 {
    r["metrics"][metric]["count"].as_u64().unwrap_or(0)
}

const BURST: Agent = Agent {
    chunk_ms: 20,
    pace: 0.0,
    flush_after: Some(Duration::from_millis(150)),
};

/// Interrupt 500 ms into what the caller hears (the default pre-roll is 60 ms), then judge the
/// stop.
const INTERRUPT: &str = "      - await: first_audio_heard
        record: heard_ttfa
      - interrupt: {after: 560ms, speech_end: false}
      - expect: audio_stops
        within: 500ms
        record: barge_in";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_burst_is_heard_until_the_flush() {
    // 3 s of speech arrives in a few ms; the agent flushes 150 ms after the barge-in.
    let url = agent(BURST, vec![Part::Speech(3000)]).await;
    let r = run("flushed", &url, "", INTERRUPT, "").await;
    assert_eq!(r["iterations"]["failed"], 0, "{r}");
    let barge_in = stat(&r, "barge_in", "p50_ms");
    assert!(
        (149.0..165.0).contains(&barge_in),
        "barge_in is the flush, 150 ms after the interruption (arrival timing says ~0): {barge_in}"
    );
    // The caller starts hearing the reply the pre-roll after its first byte arrived.
    let pre_roll = stat(&r, "heard_ttfa", "p50_ms") - stat(&r, "ttfa", "p50_ms");
    assert!((58.0..66.0).contains(&pre_roll), "pre-roll: {pre_roll}");
    // A burst is not a defect the caller hears: no glitch, and no inter-arrival jitter (arrival
    // timing would give ~20 ms for each of its 149 gaps). Only its first gaps, before the queue
    // has grown past the pre-roll, can look paced when the scheduler delays a chunk.
    assert!(count(&r, "frame_jitter") <= 2, "{r}");
    assert!(
        count(&r, "frame_jitter") == 0 || stat(&r, "frame_jitter", "max_ms") < 20.0,
        "{r}"
    );
    assert_eq!(count(&r, "glitch"), 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unflushed_burst_keeps_talking() {
    // The same burst, but the agent never flushes: the caller hears the whole 3 s.
    let agent_spec = Agent {
        flush_after: None,
        ..BURST
    };
    let url = agent(agent_spec, vec![Part::Speech(3000)]).await;
    let started = std::time::Instant::now();
    let r = run("unflushed", &url, "", INTERRUPT, "").await;
    assert_eq!(r["errors"]["expectation_failed"], 1, "{r}");
    let msg = r["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains("still talking"), "{msg}");
    assert_eq!(count(&r, "barge_in"), 0, "{r}");
    // Judged as soon as the allowance ran out, not when the queue drained.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// The heard speech stops ~2.46 s after the first byte: 60 ms pre-roll + 2.4 s of reply.
const STOP_FROM_FIRST_AUDIO: &str = "      - expect: audio_stops
        from: first_audio
        within: 5s
        record: stop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_pause_is_not_a_stop() {
    // Two sentences with a 400 ms pause: as silence frames inside a burst, and as a real-time
    // sender that sends nothing for 400 ms (heard as 460 ms: the player re-buffers).
    let cases = [
        (
            "pause-burst",
            BURST,
            [Part::Speech(1000), Part::Silence(400), Part::Speech(1000)],
        ),
        (
            "pause-paced",
            Agent {
                chunk_ms: 20,
                pace: 1.0,
                flush_after: None,
            },
            [Part::Speech(1000), Part::Pause(400), Part::Speech(1000)],
        ),
    ];
    for (tag, spec, reply) in cases {
        let url = agent(spec, reply.to_vec()).await;
        let r = run(tag, &url, "", STOP_FROM_FIRST_AUDIO, "").await;
        assert_eq!(r["iterations"]["failed"], 0, "{tag}: {r}");
        let stop = stat(&r, "stop", "p50_ms");
        assert!(
            (2440.0..2520.0).contains(&stop),
            "{tag}: the stop is the end of the second sentence, not the pause: {stop}"
        );
    }
}

/// The glitches the playout model must find for chunks of `chunk_ms` arriving every
/// `period_ms`, with a pre-roll of `buffer_ms`: (count, total ms of arrival gap).
fn expected_underruns(chunks: u64, chunk_ms: f64, period_ms: f64, buffer_ms: f64) -> (u64, f64) {
    let (mut n, mut total) = (0, 0.0);
    let mut queue_end: Option<f64> = None;
    for k in 0..chunks {
        let at = k as f64 * period_ms;
        let start = match queue_end {
            Some(end) if end > at => end,
            Some(end) => {
                n += 1;
                total += at - end;
                at + buffer_ms
            }
            None => at + buffer_ms,
        };
        queue_end = Some(start + chunk_ms);
    }
    (n, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_slower_than_real_time_underruns() {
    // 3 s in 100 ms chunks, each taking 130 ms to arrive; a 45 ms pre-roll keeps every arrival
    // at least 15 ms from the instant the queue runs dry, so timing noise cannot flip a count.
    let spec = Agent {
        chunk_ms: 100,
        pace: 1.3,
        flush_after: None,
    };
    let url = agent(spec, vec![Part::Speech(3000)]).await;
    let steps = "      - wait: 4500ms";
    let r = run("slow", &url, "  playout: {buffer: 45ms}", steps, "").await;
    assert_eq!(r["iterations"]["failed"], 0, "{r}");
    let (n, total) = expected_underruns(30, 100.0, 130.0, 45.0);
    assert_eq!(n, 14);
    assert_eq!(count(&r, "glitch"), n, "{r}");
    let measured = stat(&r, "glitch", "mean_ms") * n as f64;
    assert!(
        (measured - total).abs() <= n as f64 * 4.0,
        "total underrun {measured} ms, expected {total} ms"
    );
    // Real-time pacing is measured: each gap is 30 ms off the audio it carries.
    let jitter = stat(&r, "frame_jitter", "p50_ms");
    assert!((25.0..36.0).contains(&jitter), "frame_jitter: {jitter}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_mapping_flushes_only_where_it_says_so() {
    // The agent's `interrupted` mapped to an event of another name: with `flush: true` the
    // caller's queue empties there; without it the burst plays on.
    let url = agent(BURST, vec![Part::Speech(3000)]).await;
    for (tag, flush, stops) in [
        ("custom-flush", "true", true),
        ("custom-noflush", "false", false),
    ] {
        let target = format!(
            "  protocol: custom
  custom:
    controls: {{speech_start: '{{\"type\":\"speech_start\"}}', speech_end: '{{\"type\":\"speech_end\"}}'}}
    inbound:
      - {{when: {{/type: interrupted}}, event: cut, flush: {flush}}}"
        );
        let r = run(tag, &url, &target, INTERRUPT, "").await;
        if stops {
            assert_eq!(r["iterations"]["failed"], 0, "{tag}: {r}");
            let barge_in = stat(&r, "barge_in", "p50_ms");
            assert!((149.0..165.0).contains(&barge_in), "{tag}: {barge_in}");
        } else {
            assert_eq!(r["errors"]["expectation_failed"], 1, "{tag}: {r}");
        }
    }
}
