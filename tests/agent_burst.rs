//! The built-in agent's reply pacings (`burst`, `ahead(N)`), sentence pauses, and the flush
//! each protocol gets when a barge-in stops audio that was sent ahead of real time. Driven over
//! real WebSockets by the test client of `tests/agent_wire`.

#[allow(dead_code)]
#[path = "agent_wire/support.rs"]
mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use planrun::agent::{AgentConfig, AgentHandle, ReplyPacing, frame_dbfs};
use planrun::distribution::Dist;
use planrun::protocol::decode_pcm16;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use support::*;

fn paced(pacing: ReplyPacing, reply_ms: u64) -> AgentConfig {
    AgentConfig {
        reply_pacing: pacing,
        reply_duration: Dist::from_millis(reply_ms),
        ..fast_config()
    }
}

const AHEAD: ReplyPacing = ReplyPacing::Ahead(Duration::from_millis(500));

/// A raw-protocol turn: speech_start, 300 ms of loud audio at once, speech_end.
async fn raw_turn(c: &mut Client) -> Instant {
    c.json(json!({"type": "speech_start"})).await;
    for _ in 0..15 {
        let pcm: Vec<u8> = frame(16_000, true)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        c.send(Message::binary(pcm)).await;
    }
    let at = Instant::now();
    c.json(json!({"type": "speech_end"})).await;
    at
}

/// Reply audio of the raw protocol, in arrival order: (arrival, PCM16 samples).
fn raw_audio(events: &Events) -> Vec<(Instant, Vec<i16>)> {
    events
        .iter()
        .filter_map(|(at, e)| match e {
            Ev::Binary(b) => Some((*at, decode_pcm16(b))),
            _ => None,
        })
        .collect()
}

fn secs(samples: usize, rate: u32) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(rate))
}

/// First arrival → last arrival of reply audio.
fn span(audio: &[(Instant, Vec<i16>)]) -> Duration {
    audio.last().unwrap().0 - audio[0].0
}

/// The most audio the client ever had queued: audio received minus the time since the first
/// frame arrived (what it can have played), at each arrival.
fn max_lead(audio: &[(Instant, Vec<i16>)], rate: u32) -> Duration {
    let t0 = audio[0].0;
    let mut total = 0;
    let mut lead = Duration::ZERO;
    for (at, pcm) in audio {
        total += pcm.len();
        lead = lead.max(secs(total, rate).saturating_sub(*at - t0));
    }
    lead
}

async fn start_paced(pacing: ReplyPacing, reply_ms: u64) -> AgentHandle {
    start(paced(pacing, reply_ms)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_sends_a_three_second_reply_in_far_less_than_three_seconds() {
    let agent = start_paced(ReplyPacing::Burst, 3000).await;
    let mut c = Client::connect(&agent.url()).await;
    let end = raw_turn(&mut c).await;
    let events = c.until("response_end", ms(3000)).await;
    let audio = raw_audio(&events);
    let samples: usize = audio.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(samples, 48_000, "the whole 3 s reply");
    assert!(
        span(&audio) < ms(600),
        "3 s of audio arrived over {:?}",
        span(&audio)
    );
    // First audio at the configured latency; the metrics right after it, unchanged.
    between("speech_end → first audio", audio[0].0 - end, 180, 320);
    let metrics = all(&events, "metrics").next().expect("metrics").clone();
    assert_eq!(metrics["asr_ms"], 50.0);
    let total = metrics["total_ms"].as_f64().unwrap();
    assert!((195.0..320.0).contains(&total), "total_ms {total}");
    // The end message follows the last frame at once (a streaming server's `done`).
    let end_at = last(&events, "response_end").unwrap();
    between(
        "last audio → response_end",
        end_at - audio.last().unwrap().0,
        0,
        50,
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ahead_keeps_half_a_second_queued_and_no_more() {
    let agent = start_paced(AHEAD, 2000).await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let events = c.until("response_end", ms(4000)).await;
    let audio = raw_audio(&events);
    let samples: usize = audio.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(samples, 32_000);
    let lead = max_lead(&audio, 16_000);
    between("most audio queued at the caller", lead, 460, 560);
    // 2 s of audio, the first 0.5 s at once, the rest in real time.
    between("arrival span", span(&audio), 1350, 1650);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_pacing_never_sends_ahead() {
    let agent = start_paced(ReplyPacing::Realtime, 1000).await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let events = c.until("response_end", ms(3000)).await;
    let audio = raw_audio(&events);
    between("most audio queued", max_lead(&audio, 16_000), 0, 60);
    between("arrival span", span(&audio), 900, 1100);
    agent.shutdown().await;
}

/// Loud (tone) or silent, per 20 ms frame of the audio timeline.
fn loudness(audio: &[(Instant, Vec<i16>)]) -> Vec<bool> {
    let all: Vec<i16> = audio.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    all.chunks(320).map(|f| frame_dbfs(f) > -40.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentence_pause_is_silence_in_a_burst_and_a_gap_in_real_time() {
    let pause = ms(400);
    // Burst: 3.2 s of tone in sentences of 1.5 s, 400 ms of digital silence between them.
    let agent = start(AgentConfig {
        sentence_pause: pause,
        ..paced(ReplyPacing::Burst, 3200)
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let events = c.until("response_end", ms(3000)).await;
    let audio = raw_audio(&events);
    let loud = loudness(&audio);
    assert_eq!(loud.len(), 200, "3.2 s of tone + 2 × 400 ms of silence");
    let silent: Vec<usize> = (0..loud.len()).filter(|&i| !loud[i]).collect();
    let expect: Vec<usize> = (75..95).chain(170..190).collect();
    assert_eq!(
        silent, expect,
        "silence at 1.5–1.9 s and 3.4–3.8 s of the reply"
    );
    assert!(
        span(&audio) < ms(600),
        "still one burst: {:?}",
        span(&audio)
    );
    agent.shutdown().await;

    // Real time: no silence in the audio, a 400 ms gap in sending between sentences.
    let agent = start(AgentConfig {
        sentence_pause: pause,
        ..paced(ReplyPacing::Realtime, 2000)
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let events = c.until("response_end", ms(4000)).await;
    let audio = raw_audio(&events);
    assert!(
        loudness(&audio).iter().all(|&l| l),
        "no silence inside the audio"
    );
    assert_eq!(audio.len(), 100);
    let gap = audio[75].0 - audio[74].0;
    between("gap before the second sentence", gap, 400, 470);
    between("largest other gap", max_gap(&events, "binary"), 400, 470);
    between("arrival span", span(&audio), 2330, 2520);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_barge_in_during_a_burst_flushes_with_interrupted() {
    let agent = start_paced(ReplyPacing::Burst, 3000).await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let mut events = c.until("response_end", ms(3000)).await;
    let first_audio = first(&events, "binary").unwrap();
    // 500 ms into the caller's playout (2.5 s of the reply still queued), interrupt.
    sleep_until(first_audio + ms(500)).await;
    let barge = Instant::now();
    c.json(json!({"type": "interrupt"})).await;
    let after = c.until("interrupted", ms(1000)).await;
    let flushed = last(&after, "interrupted").unwrap();
    between("interrupt → interrupted", flushed - barge, 40, 120);
    assert_eq!(count(&after, "binary"), 0, "no audio after the burst");
    events.extend(after);
    let late = c.collect_for(ms(400)).await;
    assert_eq!(count(&late, "binary"), 0, "no reply audio after the flush");
    assert_eq!(count(&late, "interrupted"), 0, "one flush");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_barge_in_while_sending_ahead_stops_the_audio_and_flushes() {
    let agent = start_paced(AHEAD, 3000).await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let events = c.until("binary", ms(2000)).await;
    sleep_until(events.last().unwrap().0 + ms(800)).await;
    let barge = Instant::now();
    c.json(json!({"type": "interrupt"})).await;
    let after = c.until("interrupted", ms(1000)).await;
    let flushed = last(&after, "interrupted").unwrap();
    between("interrupt → interrupted", flushed - barge, 40, 120);
    let late = c.collect_for(ms(600)).await;
    assert_eq!(count(&late, "binary"), 0, "no reply audio after the flush");
    assert_eq!(
        count(&late, "response_end"),
        0,
        "the reply did not run to its end"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_while_sending_ahead_flushes_then_resends_what_was_not_heard() {
    let agent = start_paced(AHEAD, 2000).await;
    let mut c = Client::connect(&agent.url()).await;
    raw_turn(&mut c).await;
    let mut events = c.until("binary", ms(2000)).await;
    let t0 = first(&events, "binary").unwrap();
    sleep_until(t0 + ms(600)).await;
    // 200 ms of speech (< min_speech): a false alarm.
    c.json(json!({"type": "speech_start"})).await;
    let speech = Instant::now();
    sleep(ms(200)).await;
    c.json(json!({"type": "speech_end"})).await;
    events.extend(c.until("response_end", ms(4000)).await);
    let ks = kinds(&events);
    assert_eq!(
        ks,
        [
            "transcript",
            "response_start",
            "binary",
            "metrics",
            "binary",
            "interrupted",
            "resumed",
            "binary",
            "response_end"
        ]
    );
    let flushed = first(&events, "interrupted").unwrap();
    between("speech → flush", flushed - speech, 40, 120);
    // The caller heard ~650 ms before the flush; the rest is sent again after `resumed`.
    let resumed = first(&events, "resumed").unwrap();
    let after: usize = raw_audio(&events)
        .iter()
        .filter(|(at, _)| *at > resumed)
        .map(|(_, p)| p.len())
        .sum();
    between(
        "audio re-sent after the resume",
        secs(after, 16_000),
        1280,
        1400,
    );
    agent.shutdown().await;
}

/// A Twilio call: `connected` + `start`, then `media` helpers.
async fn twilio(agent: &AgentHandle) -> Client {
    let mut c = Client::connect(&format!("{}twilio", agent.url())).await;
    c.json(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        .await;
    c.json(
        json!({"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    )
    .await;
    c
}

async fn twilio_stream(c: &mut Client, ms_total: u64, loud: bool) {
    let t0 = Instant::now();
    for n in 0..ms_total / 20 {
        sleep_until(t0 + ms(20 * n)).await;
        let ulaw: Vec<u8> = frame(8000, loud)
            .into_iter()
            .map(audio_codec_algorithms::encode_ulaw)
            .collect();
        c.json(json!({"event": "media", "streamSid": "MZ1",
            "media": {"track": "inbound", "payload": B64.encode(ulaw)}}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_burst_ends_with_a_mark_and_a_barge_in_clears() {
    let agent = start_paced(ReplyPacing::Burst, 3000).await;
    let mut c = twilio(&agent).await;
    twilio_stream(&mut c, 300, true).await;
    twilio_stream(&mut c, 500, false).await;
    let mut events = c.until("mark", ms(3000)).await;
    assert_eq!(
        kinds(&events),
        ["media", "mark"],
        "the burst, then its mark"
    );
    assert_eq!(count(&events, "media"), 150);
    assert!(span_of(&events, "media") < ms(600));
    // Barge in 500 ms into the caller's playout: `clear` barge_in_delay after speech starts.
    sleep_until(first(&events, "media").unwrap() + ms(500)).await;
    let barge = Instant::now();
    twilio_stream(&mut c, 300, true).await;
    events.extend(c.until("clear", ms(1000)).await);
    let cleared = last(&events, "clear").unwrap();
    between("speech → clear", cleared - barge, 40, 160);
    let late = c.collect_for(ms(300)).await;
    assert_eq!(count(&late, "media"), 0, "no reply audio after the clear");
    agent.shutdown().await;
}

fn span_of(events: &Events, kind: &str) -> Duration {
    last(events, kind).unwrap() - first(events, kind).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_mark_echo_means_the_caller_heard_it_all() {
    let agent = start_paced(ReplyPacing::Burst, 1000).await;
    let mut c = twilio(&agent).await;
    twilio_stream(&mut c, 300, true).await;
    twilio_stream(&mut c, 500, false).await;
    c.until("mark", ms(3000)).await;
    // The caller says it played everything (as Twilio does once the audio has played):
    // speech now is a new turn, not a barge-in, so nothing is cleared.
    c.json(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "response_end"}}))
        .await;
    twilio_stream(&mut c, 300, true).await;
    twilio_stream(&mut c, 500, false).await;
    let events = c.until("mark", ms(3000)).await;
    assert_eq!(
        kinds(&events),
        ["media", "mark"],
        "a second answer, no clear"
    );
    agent.shutdown().await;
}

/// An OpenAI Realtime session with server VAD at 24 kHz.
async fn realtime(agent: &AgentHandle) -> Client {
    let mut c = Client::connect(&format!("{}openai", agent.url())).await;
    c.until("session.created", ms(2000)).await;
    c
}

async fn realtime_stream(c: &mut Client, ms_total: u64, loud: bool) {
    let t0 = Instant::now();
    for n in 0..ms_total / 20 {
        sleep_until(t0 + ms(20 * n)).await;
        let pcm: Vec<u8> = frame(24_000, loud)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        c.json(json!({"type": "input_audio_buffer.append", "audio": B64.encode(pcm)}))
            .await;
    }
}

const DELTA: &str = "response.output_audio.delta";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_burst_then_barge_in_clears_the_output_buffer() {
    let agent = start_paced(ReplyPacing::Burst, 3000).await;
    let mut c = realtime(&agent).await;
    realtime_stream(&mut c, 300, true).await;
    realtime_stream(&mut c, 500, false).await;
    let mut events = c.until("response.done", ms(3000)).await;
    assert_eq!(count(&events, DELTA), 150);
    assert!(
        span_of(&events, DELTA) < ms(600),
        "{:?}",
        span_of(&events, DELTA)
    );
    let done = all(&events, "response.done").next().unwrap().clone();
    assert_eq!(done["response"]["status"], "completed");
    let response_id = done["response"]["id"].clone();
    sleep_until(first(&events, DELTA).unwrap() + ms(500)).await;
    let barge = Instant::now();
    realtime_stream(&mut c, 200, true).await;
    events = c.until("output_audio_buffer.cleared", ms(1000)).await;
    assert_eq!(
        kinds(&events),
        [
            "input_audio_buffer.speech_started",
            "output_audio_buffer.cleared"
        ]
    );
    let cleared = last(&events, "output_audio_buffer.cleared").unwrap();
    between("speech → cleared", cleared - barge, 40, 160);
    assert_eq!(events.last().unwrap().1.json()["response_id"], response_id);
    let late = c.collect_for(ms(300)).await;
    assert_eq!(count(&late, DELTA), 0, "no reply audio after the flush");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_barge_in_while_sending_ahead_clears_then_cancels() {
    let agent = start_paced(AHEAD, 3000).await;
    let mut c = realtime(&agent).await;
    realtime_stream(&mut c, 300, true).await;
    realtime_stream(&mut c, 500, false).await;
    let events = c.until(DELTA, ms(3000)).await;
    sleep_until(events.last().unwrap().0 + ms(800)).await;
    let barge = Instant::now();
    realtime_stream(&mut c, 600, true).await;
    let events = c.until("response.done", ms(2000)).await;
    let ks = kinds(&events);
    let at = |k: &str| ks.iter().position(|x| x == k).unwrap_or(usize::MAX);
    assert!(
        at("input_audio_buffer.speech_started") < at("output_audio_buffer.cleared")
            && at("output_audio_buffer.cleared") < at("response.done"),
        "{ks:?}"
    );
    let cleared = first(&events, "output_audio_buffer.cleared").unwrap();
    between("speech → cleared", cleared - barge, 40, 160);
    assert!(
        events
            .iter()
            .all(|(t, e)| e.kind() != DELTA || *t < cleared),
        "no delta after the flush: {ks:?}"
    );
    let done: &Value = events.last().unwrap().1.json();
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    // Usage counts what the caller heard (~0.9 s of the 3 s reply), not what was sent.
    let heard = done["response"]["usage"]["output_tokens"].as_u64().unwrap();
    assert!((1..=3).contains(&heard), "output_tokens {heard}: {done}");
    agent.shutdown().await;
}

#[test]
fn plan_keys_reach_the_agent() {
    let text = "name: t\ntarget:\n  url: builtin\n  agent:\n    reply_pacing: ahead(250ms)\n    \
                sentence_pause: 400ms\nscenarios:\n  - name: a\n    steps:\n      - wait: 10ms\n";
    let lp = planrun::plan::parse_str(text, std::path::Path::new("t.yaml")).expect("parses");
    let c = planrun::engine::agent_config(&lp.plan.target.agent, 16_000, 1);
    assert_eq!(c.reply_pacing, ReplyPacing::Ahead(ms(250)));
    assert_eq!(c.sentence_pause, ms(400));
    let c = planrun::engine::agent_config(&Default::default(), 16_000, 1);
    assert_eq!(
        (c.reply_pacing, c.sentence_pause),
        (ReplyPacing::Realtime, ms(0))
    );
    let bad = text.replace("ahead(250ms)", "bursty");
    let err = match planrun::plan::parse_str(&bad, std::path::Path::new("t.yaml")) {
        Ok(_) => panic!("`bursty` must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("reply_pacing must be `realtime`, `burst` or `ahead"),
        "{err}"
    );
}

#[test]
fn agent_flags_set_the_pacing() {
    use clap::Parser;
    let cli = planrun::cli::Cli::try_parse_from([
        "planrun",
        "agent",
        "--reply-pacing",
        "ahead(500ms)",
        "--sentence-pause",
        "400ms",
    ])
    .expect("parses");
    let Some(planrun::cli::Command::Agent(args)) = cli.command else {
        panic!("agent command expected");
    };
    let c = args.config();
    assert_eq!((c.reply_pacing, c.sentence_pause), (AHEAD, ms(400)));
    assert!(
        planrun::cli::Cli::try_parse_from(["planrun", "agent", "--reply-pacing", "fast"]).is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_manual_turn_while_a_burst_still_plays_starts_a_new_response() {
    let agent = start_paced(ReplyPacing::Burst, 3000).await;
    let mut c = realtime(&agent).await;
    c.json(
        json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": null}}}}),
    )
    .await;
    c.until("session.updated", ms(1000)).await;
    for _ in 0..2 {
        realtime_stream(&mut c, 200, true).await;
        c.json(json!({"type": "input_audio_buffer.commit"})).await;
        c.json(json!({"type": "response.create"})).await;
        // The second request comes while the first burst is still playing at the caller.
        let events = c.until("response.done", ms(3000)).await;
        assert_eq!(count(&events, "error"), 0, "{:?}", kinds(&events));
        assert_eq!(count(&events, DELTA), 150);
    }
    agent.shutdown().await;
}
