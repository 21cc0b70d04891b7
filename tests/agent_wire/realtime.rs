//! The OpenAI Realtime API on `/openai` and `/v1/realtime`, driven by a test client speaking its
//! public event shapes.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use planrun::agent::{AgentConfig, AgentHandle, frame_dbfs};
use planrun::distribution::Dist;
use planrun::protocol::decode_pcm16;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

pub(crate) struct Realtime {
    pub(crate) c: Client,
    pub(crate) rate: u32,
}

impl Realtime {
    /// Connect and read `session.created`.
    pub(crate) async fn connect(agent: &AgentHandle, path: &str) -> Realtime {
        let mut c = Client::connect(&format!("{}{path}", agent.url())).await;
        let hello = c.until("session.created", ms(2000)).await;
        assert_eq!(hello.len(), 1, "session.created comes first: {hello:?}");
        let session = &hello[0].1.json()["session"];
        assert_eq!(session["audio"]["input"]["format"]["rate"], 24000);
        assert_eq!(
            session["audio"]["input"]["turn_detection"]["type"],
            "server_vad"
        );
        Realtime { c, rate: 24_000 }
    }

    pub(crate) async fn append(&mut self, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.c
            .json(json!({"type": "input_audio_buffer.append", "audio": B64.encode(bytes)}))
            .await;
    }

    /// `ms` of PCM16 audio as 20 ms appends paced in real time.
    pub(crate) async fn stream(&mut self, ms: u64, loud: bool) {
        let frames = ms / 20;
        let t0 = Instant::now();
        for n in 0..frames {
            sleep_until(t0 + Duration::from_millis(20 * n)).await;
            self.append(&frame(self.rate, loud)).await;
        }
        sleep_until(t0 + Duration::from_millis(20 * frames)).await;
    }

    pub(crate) async fn send(&mut self, kind: &str) {
        self.c.json(json!({ "type": kind })).await;
    }
}

/// Bytes of reply audio in the `response.output_audio.delta` events (and how many deltas were
/// loud).
pub(crate) fn realtime_audio(events: &Events) -> (usize, usize) {
    let mut bytes = 0;
    let mut loud = 0;
    for v in all(events, "response.output_audio.delta") {
        let pcm = B64
            .decode(v["delta"].as_str().expect("delta"))
            .expect("base64");
        bytes += pcm.len();
        if frame_dbfs(&decode_pcm16(&pcm)) > -20.0 {
            loud += 1;
        }
    }
    (bytes, loud)
}

pub(crate) fn assert_unique_event_ids(events: &Events) {
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| e.json().get("event_id").and_then(Value::as_str))
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "event_id must be unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_server_vad_call_is_answered_at_the_configured_latency() {
    let agent = start(fast_config()).await;
    let mut r = Realtime::connect(&agent, "v1/realtime?model=gpt-realtime").await;
    r.stream(400, true).await;
    let speech_end = Instant::now();
    r.stream(600, false).await;
    let events = r.c.until("response.done", ms(3000)).await;

    assert_eq!(
        kinds(&events),
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.created",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_item.added",
            "response.output_audio_transcript.delta",
            "response.output_audio.delta",
            "response.output_audio_transcript.done",
            "response.output_audio.done",
            "response.done",
        ]
    );
    assert_unique_event_ids(&events);
    let started = all(&events, "input_audio_buffer.speech_started")
        .next()
        .unwrap();
    let stopped = all(&events, "input_audio_buffer.speech_stopped")
        .next()
        .unwrap();
    assert_eq!(started["audio_start_ms"], 0);
    assert_eq!(stopped["audio_end_ms"], 400);
    let item = started["item_id"].as_str().unwrap();
    assert_eq!(stopped["item_id"], item);
    assert_eq!(
        all(&events, "input_audio_buffer.committed").next().unwrap()["item_id"],
        item
    );
    let transcription = all(
        &events,
        "conversation.item.input_audio_transcription.completed",
    )
    .next()
    .unwrap();
    assert_eq!(transcription["item_id"], item);
    assert_eq!(
        transcription["transcript"],
        "user utterance (400 ms of audio)"
    );
    // asr 50 ms after the VAD's end of speech.
    let asr = first(
        &events,
        "conversation.item.input_audio_transcription.completed",
    )
    .unwrap()
        - first(&events, "input_audio_buffer.speech_stopped").unwrap();
    between("speech_stopped → transcription", asr, 45, 120);

    let first_audio = first(&events, "response.output_audio.delta").unwrap() - speech_end;
    between("end of speech → first delta", first_audio, 575, 700);
    let (bytes, loud) = realtime_audio(&events);
    assert_eq!(bytes, 24_000, "500 ms of 24 kHz PCM16");
    assert_eq!(count(&events, "response.output_audio.delta"), 25);
    assert!(loud >= 24);
    let played = first(&events, "response.done").unwrap()
        - first(&events, "response.output_audio.delta").unwrap();
    between("first delta → response.done", played, 460, 600);

    let response_id = all(&events, "response.created").next().unwrap()["response"]["id"].clone();
    for d in all(&events, "response.output_audio.delta") {
        assert_eq!(d["response_id"], response_id);
        assert_eq!(d["output_index"], 0);
        assert_eq!(d["content_index"], 0);
    }
    let done = &events.last().unwrap().1.json()["response"];
    assert_eq!(done["id"], response_id);
    assert_eq!(done["status"], "completed");
    let text = done["output"][0]["content"][0]["transcript"]
        .as_str()
        .unwrap();
    assert_eq!(
        all(&events, "response.output_audio_transcript.done")
            .next()
            .unwrap()["transcript"],
        text
    );
    let usage = &done["usage"];
    assert_eq!(usage["input_tokens"], 8, "32 characters of transcript");
    assert_eq!(usage["output_tokens"], text.chars().count().div_ceil(4));
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap())
    );
    let metadata = &done["metadata"];
    assert_eq!(metadata["asr_ms"], 50.0);
    assert_eq!(metadata["llm_ms"], 100.0);
    assert_eq!(metadata["tts_ms"], 50.0);
    assert_eq!(metadata["turn"], 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_vad_barge_in_cancels_the_response() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(2000),
        ..fast_config()
    })
    .await;
    let mut r = Realtime::connect(&agent, "openai").await;
    r.stream(300, true).await;
    r.stream(500, false).await;
    let mut events = r.c.until("response.output_audio.delta", ms(2000)).await;
    sleep(ms(300)).await;
    let barge = Instant::now();
    r.stream(600, true).await;
    r.stream(600, false).await;
    events.extend(r.c.until("response.done", ms(3000)).await); // the cancelled one
    events.extend(r.c.until("response.done", ms(3000)).await); // the answer to the barge-in

    let done: Vec<&Value> = all(&events, "response.done").collect();
    assert_eq!(
        done[0]["response"]["status"],
        "cancelled",
        "{:?}",
        kinds(&events)
    );
    assert_eq!(
        done[0]["response"]["status_details"]["reason"],
        "turn_detected"
    );
    assert_eq!(done[0]["response"]["output"][0]["status"], "incomplete");
    assert_eq!(done[1]["response"]["status"], "completed");
    let cancelled_id = done[0]["response"]["id"].clone();
    let cancel_at = first(&events, "response.done").unwrap();
    between(
        "speech → response.done cancelled",
        cancel_at - barge,
        380,
        520,
    );
    // The audio stopped barge_in_delay after the speech began, and never resumed.
    let stopped = events
        .iter()
        .filter(|(_, e)| {
            e.kind() == "response.output_audio.delta" && e.json()["response_id"] == cancelled_id
        })
        .map(|(at, _)| *at)
        .max()
        .unwrap();
    between("speech → deltas stop", stopped - barge, 0, 120);
    assert_eq!(count(&events, "input_audio_buffer.speech_started"), 2);
    // The cancelled response only counts the audio it sent.
    let out = done[0]["response"]["usage"]["output_tokens"]
        .as_u64()
        .unwrap();
    let full = done[1]["response"]["usage"]["output_tokens"]
        .as_u64()
        .unwrap();
    assert!(out < full, "{out} < {full}");
    assert_ne!(done[1]["response"]["id"], cancelled_id);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_response_cancel_stops_the_audio_at_once() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(2000),
        ..fast_config()
    })
    .await;
    let mut r = Realtime::connect(&agent, "openai").await;
    // Nothing to cancel yet.
    r.send("response.cancel").await;
    let e = r.c.until("error", ms(1000)).await;
    assert_eq!(e[0].1.json()["error"]["code"], "response_cancel_not_active");

    r.stream(300, true).await;
    r.stream(500, false).await;
    let mut events = r.c.until("response.output_audio.delta", ms(2000)).await;
    sleep(ms(200)).await;
    let cancel = Instant::now();
    r.send("response.cancel").await;
    events.extend(r.c.until("response.done", ms(1000)).await);
    between("cancel → response.done", Instant::now() - cancel, 0, 80);
    let done = &events.last().unwrap().1.json()["response"];
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["status_details"]["reason"], "client_cancelled");
    // No audio after the cancel.
    let after = r.c.collect_for(ms(500)).await;
    assert!(after.is_empty(), "{:?}", kinds(&after));
    // The session goes on: the next utterance is answered in full.
    r.stream(300, true).await;
    r.stream(500, false).await;
    let events = r.c.until("response.done", ms(3000)).await;
    assert_eq!(
        events.last().unwrap().1.json()["response"]["status"],
        "completed"
    );
    assert_eq!(realtime_audio(&events).0, 96_000, "2000 ms of 24 kHz PCM16");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_false_alarm_pauses_and_resumes_the_deltas() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1500),
        ..fast_config()
    })
    .await;
    let mut r = Realtime::connect(&agent, "openai").await;
    r.stream(300, true).await;
    r.stream(500, false).await;
    let mut events = r.c.until("response.output_audio.delta", ms(2000)).await;
    sleep(ms(300)).await;
    r.stream(200, true).await; // a cough
    r.stream(700, false).await;
    events.extend(r.c.until("response.done", ms(4000)).await);

    assert_eq!(count(&events, "response.done"), 1, "{:?}", kinds(&events));
    assert_eq!(
        events.last().unwrap().1.json()["response"]["status"],
        "completed"
    );
    // The VAD reports the cough, but it is no new turn.
    assert_eq!(count(&events, "input_audio_buffer.speech_started"), 2);
    assert_eq!(count(&events, "input_audio_buffer.committed"), 1);
    between(
        "pause",
        max_gap(&events, "response.output_audio.delta"),
        550,
        800,
    );
    assert_eq!(
        realtime_audio(&events).0,
        72_000,
        "nothing lost: all 1500 ms"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_manual_turns_commit_then_response_create() {
    let agent = start(fast_config()).await;
    let mut r = Realtime::connect(&agent, "openai").await;
    r.c.json(
        json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": null}}}}),
    )
    .await;
    let updated = r.c.until("session.updated", ms(1000)).await;
    let session = &updated.last().unwrap().1.json()["session"];
    assert!(
        session["audio"]["input"]["turn_detection"].is_null(),
        "{session}"
    );

    // Loud audio then silence: no VAD in manual mode, so nothing happens by itself.
    r.stream(300, true).await;
    r.stream(500, false).await;
    let quiet = r.c.collect_for(ms(400)).await;
    assert!(quiet.is_empty(), "{:?}", kinds(&quiet));

    // Turn 1: commit, then ask for the response later.
    let commit = Instant::now();
    r.c.json(json!({"type": "input_audio_buffer.commit", "text": "what time is it"}))
        .await;
    let mut events = r.c.collect_for(ms(500)).await;
    assert_eq!(
        kinds(&events),
        [
            "input_audio_buffer.committed",
            "conversation.item.created",
            "conversation.item.input_audio_transcription.completed",
        ],
        "transcribed, but no response without response.create"
    );
    let transcription = events[2].1.json();
    assert_eq!(transcription["transcript"], "what time is it");
    between("commit → transcription", events[2].0 - commit, 45, 120);
    let create = Instant::now();
    r.send("response.create").await;
    events = r.c.until("response.done", ms(3000)).await;
    // ASR already done: llm 100 + tts 50.
    let first_audio = first(&events, "response.output_audio.delta").unwrap() - create;
    between("response.create → first delta", first_audio, 145, 260);
    assert_eq!(realtime_audio(&events).0, 24_000);
    assert_eq!(
        events.last().unwrap().1.json()["response"]["status"],
        "completed"
    );

    // Turn 2: commit and create at once: asr 50 + llm 100 + tts 50 from the commit.
    r.stream(300, true).await;
    let commit = Instant::now();
    r.send("input_audio_buffer.commit").await;
    r.send("response.create").await;
    // A second create while one is active is refused.
    r.send("response.create").await;
    events = r.c.until("response.done", ms(3000)).await;
    let first_audio = first(&events, "response.output_audio.delta").unwrap() - commit;
    between("commit → first delta", first_audio, 195, 310);
    assert_eq!(count(&events, "response.created"), 1);
    let e = all(&events, "error").next().unwrap();
    assert_eq!(
        e["error"]["code"],
        "conversation_already_has_active_response"
    );
    let t = all(
        &events,
        "conversation.item.input_audio_transcription.completed",
    )
    .next()
    .unwrap();
    assert_eq!(t["transcript"], "user utterance (300 ms of audio)");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_session_rate_and_beta_names_are_honoured() {
    let agent = start(fast_config()).await;
    let mut r = Realtime::connect(&agent, "openai").await;
    // GA: 16 kHz PCM in and out.
    r.c.json(
        json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}),
    )
    .await;
    let updated = r.c.until("session.updated", ms(1000)).await;
    let session = &updated.last().unwrap().1.json()["session"];
    assert_eq!(session["audio"]["output"]["format"]["rate"], 16000);
    r.rate = 16_000;
    r.stream(300, true).await;
    r.stream(500, false).await;
    let events = r.c.until("response.done", ms(3000)).await;
    assert_eq!(realtime_audio(&events).0, 16_000, "500 ms of 16 kHz PCM16");
    let stopped = all(&events, "input_audio_buffer.speech_stopped")
        .next()
        .unwrap();
    assert_eq!(stopped["audio_end_ms"], 300);

    // Beta names: `turn_detection: null` at the top, `input_audio_format: pcm16` = 24 kHz.
    r.c.json(
        json!({"type": "session.update", "session": {"turn_detection": null,
        "input_audio_format": "pcm16"}}),
    )
    .await;
    let updated = r.c.until("session.updated", ms(1000)).await;
    let session = &updated.last().unwrap().1.json()["session"];
    assert!(session["audio"]["input"]["turn_detection"].is_null());
    assert_eq!(session["audio"]["input"]["format"]["rate"], 24000);
    r.rate = 24_000;
    r.stream(200, true).await;
    r.send("input_audio_buffer.commit").await;
    r.send("response.create").await;
    let events = r.c.until("response.done", ms(3000)).await;
    assert_eq!(realtime_audio(&events).0, 24_000, "back to 24 kHz");
    // Unsupported formats are refused with an error and change nothing.
    r.c.json(json!({"type": "session.update", "session": {"input_audio_format": "g711_alaw"}}))
        .await;
    let e = r.c.until("error", ms(1000)).await;
    assert_eq!(e.last().unwrap().1.json()["error"]["code"], "invalid_value");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_tool_call_and_odd_client_events() {
    // The lenient agent (the tool runs agent-side; the strict default is in tests/tool_calls.rs).
    let agent = start(AgentConfig {
        tool_latency: Dist::from_millis(300),
        wait_for_tool_result: false,
        ..fast_config()
    })
    .await;
    let mut r = Realtime::connect(&agent, "openai/").await;
    for (msg, code) in [
        (
            json!({"type": "no.such.event"}).to_string(),
            "unknown_event",
        ),
        ("not json".to_string(), "invalid_json"),
        (json!({"no": "type"}).to_string(), "missing_type"),
        (
            json!({"type": "input_audio_buffer.append", "audio": "%%%"}).to_string(),
            "invalid_audio",
        ),
    ] {
        r.c.send(Message::text(msg)).await;
        let e = r.c.until("error", ms(1000)).await;
        let e = &e.last().unwrap().1.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], code);
    }
    r.c.json(
        json!({"type": "conversation.item.truncate", "item_id": "item_9",
        "content_index": 0, "audio_end_ms": 640}),
    )
    .await;
    let t = r.c.until("conversation.item.truncated", ms(1000)).await;
    assert_eq!(t.last().unwrap().1.json()["audio_end_ms"], 640);
    r.send("input_audio_buffer.clear").await;
    r.c.until("input_audio_buffer.cleared", ms(1000)).await;

    // The session survived all that; a keyword in the commit's text calls the tool.
    r.stream(300, true).await;
    let commit = Instant::now();
    r.c.json(json!({"type": "input_audio_buffer.commit", "text": "Book a table"}))
        .await;
    let events = r.c.until("response.done", ms(3000)).await;
    let call = all(&events, "response.function_call_arguments.done")
        .next()
        .unwrap_or_else(|| panic!("{:?}", kinds(&events)));
    assert_eq!(call["name"], "lookup");
    assert!(call["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["query"], "Book a table");
    // asr 50 → tool call → tool 300 → llm 100 + tts 50.
    let at_call = first(&events, "response.function_call_arguments.done").unwrap() - commit;
    between("commit → function call", at_call, 45, 130);
    let first_audio = first(&events, "response.output_audio.delta").unwrap() - commit;
    between("commit → first delta", first_audio, 495, 620);
    let done = &events.last().unwrap().1.json()["response"];
    assert_eq!(done["output"][0]["type"], "function_call");
    assert_eq!(done["output"][1]["type"], "message");
    assert_eq!(done["metadata"]["tool_ms"], 300.0);
    assert_unique_event_ids(&events);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_speech_while_calling_a_tool_cancels_the_open_response() {
    let agent = start(AgentConfig {
        tool_fraction: 1.0,
        tool_latency: Dist::from_millis(1500),
        wait_for_tool_result: false,
        ..fast_config()
    })
    .await;
    let mut r = Realtime::connect(&agent, "openai").await;
    r.stream(300, true).await;
    r.stream(500, false).await;
    let mut events =
        r.c.until("response.function_call_arguments.done", ms(2000))
            .await;
    // The user keeps talking (longer than min_speech) while the tool runs.
    r.stream(600, true).await;
    r.stream(500, false).await;
    events.extend(r.c.until("response.done", ms(2000)).await);
    events.extend(r.c.until("response.done", ms(4000)).await);
    let done: Vec<&Value> = all(&events, "response.done").collect();
    assert_eq!(
        done[0]["response"]["status"],
        "cancelled",
        "{:?}",
        kinds(&events)
    );
    assert_eq!(done[0]["response"]["output"][0]["type"], "function_call");
    assert_eq!(done[1]["response"]["status"], "completed");
    assert_ne!(done[0]["response"]["id"], done[1]["response"]["id"]);
    assert_eq!(count(&events, "response.created"), 2);
    // Only the second response has audio.
    let second = done[1]["response"]["id"].clone();
    assert!(
        all(&events, "response.output_audio.delta").all(|d| d["response_id"] == second),
        "{:?}",
        kinds(&events)
    );
    agent.shutdown().await;
}
