//! What every path serves alike: the raw protocol on any other path, and injected faults.

use planrun::agent::{AgentConfig, Faults};
use planrun::protocol::encode_audio;
use serde_json::{Value, json};

use super::support::*;

use super::realtime::Realtime;
use super::twilio::Twilio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_is_still_served_on_other_paths() {
    let agent = start(fast_config()).await;
    for path in ["", "agent", "raw?x=1"] {
        let mut c = Client::connect(&format!("{}{path}", agent.url())).await;
        c.json(json!({"type": "speech_start"})).await;
        for _ in 0..15 {
            c.send(encode_audio(&frame(16_000, true))).await;
        }
        c.json(json!({"type": "speech_end", "text": "hello"})).await;
        let events = c.until("response_end", ms(3000)).await;
        assert_eq!(
            kinds(&events),
            [
                "transcript",
                "response_start",
                "binary",
                "metrics",
                "binary",
                "response_end"
            ],
            "{path}"
        );
        let bytes: usize = events
            .iter()
            .map(|(_, e)| match e {
                Ev::Binary(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(bytes, 16_000, "500 ms of 16 kHz PCM16 on /{path}");
    }
    agent.shutdown().await;
}

/// Faults apply to every protocol: `malformed` sends one non-JSON text frame and the call goes
/// on, `drop` closes mid-reply without a close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_to_every_protocol() {
    for (faults, expect_bad, expect_drop) in [
        (
            Faults {
                malformed: 1.0,
                ..Faults::default()
            },
            true,
            false,
        ),
        (
            Faults {
                drop: 1.0,
                ..Faults::default()
            },
            false,
            true,
        ),
    ] {
        let agent = start(AgentConfig {
            faults,
            ..fast_config()
        })
        .await;
        // Twilio
        let mut t = Twilio::connect(&agent).await;
        t.start().await;
        t.stream(300, true).await;
        t.stream(500, false).await;
        let end = if expect_drop { "closed" } else { "mark" };
        let tail = t.c.until(end, ms(3000)).await;
        check_fault(&tail, "media", expect_bad, expect_drop);
        // Realtime
        let mut r = Realtime::connect(&agent, "openai").await;
        r.stream(300, true).await;
        r.stream(500, false).await;
        let mut tail = Vec::new();
        if expect_drop {
            tail.extend(r.c.until("closed", ms(3000)).await);
        } else {
            // The broken message may be response.done itself: wait for the audio to end.
            tail.extend(r.c.until("response.output_audio.done", ms(3000)).await);
            tail.extend(r.c.collect_for(ms(200)).await);
        }
        check_fault(
            &tail,
            "response.output_audio.delta",
            expect_bad,
            expect_drop,
        );
        agent.shutdown().await;
    }
}

fn check_fault(events: &Events, audio: &str, bad: bool, dropped: bool) {
    assert!(count(events, audio) > 0, "{:?}", kinds(events));
    assert_eq!(
        count(events, "bad"),
        usize::from(bad),
        "{:?}",
        kinds(events)
    );
    if let Some(Ev::Bad(text)) = events.iter().map(|(_, e)| e).find(|e| e.kind() == "bad") {
        assert!(serde_json::from_str::<Value>(text).is_err());
    }
    if dropped {
        assert!(
            matches!(events.last().map(|(_, e)| e), Some(Ev::Closed(None))),
            "no close frame: {:?}",
            kinds(events)
        );
    }
}
