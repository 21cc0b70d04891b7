//! Twilio Media Streams on `/twilio`, driven by a test client playing Twilio.

use std::time::Duration;

use audio_codec_algorithms::{decode_ulaw, encode_ulaw};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use planrun::agent::{AgentConfig, AgentHandle, frame_dbfs};
use planrun::distribution::Dist;
use serde_json::json;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

pub(crate) const SID: &str = "MZ00000000000000000000000000000001";

pub(crate) struct Twilio {
    pub(crate) c: Client,
    pub(crate) seq: u64,
}

impl Twilio {
    pub(crate) async fn connect(agent: &AgentHandle) -> Twilio {
        let c = Client::connect(&format!("{}twilio?caller=test", agent.url())).await;
        Twilio { c, seq: 0 }
    }

    pub(crate) fn seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    /// `connected` + `start`, as Twilio opens a stream.
    pub(crate) async fn start(&mut self) {
        self.c
            .json(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await;
        let seq = self.seq();
        self.c
            .json(json!({
                "event": "start", "sequenceNumber": seq, "streamSid": SID,
                "start": {
                    "accountSid": "AC00000000000000000000000000000001", "streamSid": SID,
                    "callSid": "CA00000000000000000000000000000001", "tracks": ["inbound"],
                    "customParameters": {"scenario": "test"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }))
            .await;
    }

    pub(crate) async fn media(&mut self, loud: bool) {
        let seq = self.seq();
        let payload: Vec<u8> = frame(8000, loud).into_iter().map(encode_ulaw).collect();
        self.c
            .json(json!({
                "event": "media", "sequenceNumber": seq, "streamSid": SID,
                "media": {"track": "inbound", "chunk": seq, "timestamp": "0",
                          "payload": B64.encode(payload)},
            }))
            .await;
    }

    /// `ms` of µ-law audio as 20 ms `media` messages paced in real time.
    pub(crate) async fn stream(&mut self, ms: u64, loud: bool) {
        let frames = ms / 20;
        let t0 = Instant::now();
        for n in 0..frames {
            sleep_until(t0 + Duration::from_millis(20 * n)).await;
            self.media(loud).await;
        }
        sleep_until(t0 + Duration::from_millis(20 * frames)).await;
    }
}

/// Samples and loudness of the `media` replies.
pub(crate) fn twilio_audio(events: &Events) -> (usize, usize) {
    let mut samples = 0;
    let mut loud = 0;
    for v in all(events, "media") {
        assert_eq!(v["streamSid"], SID, "{v}");
        let payload = v["media"]["payload"].as_str().expect("payload");
        let pcm: Vec<i16> = B64
            .decode(payload)
            .expect("base64")
            .into_iter()
            .map(decode_ulaw)
            .collect();
        samples += pcm.len();
        if frame_dbfs(&pcm) > -20.0 {
            loud += 1;
        }
    }
    (samples, loud)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_call_is_answered_at_the_configured_latency() {
    let agent = start(fast_config()).await;
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.stream(400, true).await;
    let speech_end = Instant::now();
    t.stream(600, false).await; // trailing silence: the VAD ends the turn
    let events = t.c.until("mark", ms(3000)).await;

    assert_eq!(
        kinds(&events),
        ["media", "mark"],
        "no other Twilio messages"
    );
    // VAD hangover (the 20th silent frame, sent 380 ms after the last loud one, completes the
    // 400 ms) + asr 50 + llm 100 + tts 50.
    let first_audio = first(&events, "media").unwrap() - speech_end;
    between("end of speech → first media", first_audio, 575, 700);
    let (samples, loud) = twilio_audio(&events);
    assert_eq!(samples, 4000, "500 ms of 8 kHz µ-law");
    assert_eq!(count(&events, "media"), 25, "20 ms frames");
    assert!(loud >= 24, "the reply is the tone: {loud} loud frames");
    // Paced in real time, the mark right after the last frame played out.
    let played = last(&events, "mark").unwrap() - first(&events, "media").unwrap();
    between("first media → mark", played, 460, 600);
    let mark = events.last().unwrap().1.json();
    assert_eq!(
        mark,
        &json!({"event": "mark", "streamSid": SID, "mark": {"name": "response_end"}})
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_barge_in_clears_and_stops_the_media() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(2000),
        ..fast_config()
    })
    .await;
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.stream(300, true).await;
    t.stream(500, false).await;
    let mut events = t.c.until("media", ms(2000)).await;
    sleep(ms(300)).await;
    let barge = Instant::now();
    t.stream(600, true).await; // longer than min_speech: a real barge-in
    t.stream(600, false).await;
    events.extend(t.c.until("mark", ms(4000)).await);

    assert_eq!(count(&events, "clear"), 1, "{:?}", kinds(&events));
    let clear = first(&events, "clear").unwrap();
    // The audio stops barge_in_delay (50 ms) after the VAD heard the first loud frame; the
    // barge-in is real (`clear`) once min_speech (400 ms) of it was heard.
    let stopped = events
        .iter()
        .filter(|(at, e)| *at < clear && e.kind() == "media")
        .map(|(at, _)| *at)
        .max()
        .unwrap();
    between("speech → media stops", stopped - barge, 0, 120);
    between("speech → clear", clear - barge, 380, 520);
    // After the clear, the next media is the new turn's answer: the barge-in speech ended
    // (600 ms) + hangover 400 + 200 ms of latency after it began.
    let next = events
        .iter()
        .find(|(at, e)| *at > clear && e.kind() == "media")
        .map(|(at, _)| *at)
        .unwrap();
    between("barge-in speech → next answer", next - barge, 1150, 1350);
    assert_eq!(
        kinds(&events),
        ["media", "clear", "media", "mark"],
        "interrupted reply, then the full second reply"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_false_alarm_resumes_the_media() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1500),
        ..fast_config()
    })
    .await;
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.stream(300, true).await;
    t.stream(500, false).await;
    let mut events = t.c.until("media", ms(2000)).await;
    sleep(ms(300)).await;
    t.stream(200, true).await; // a cough: shorter than min_speech
    t.stream(700, false).await;
    events.extend(t.c.until("mark", ms(4000)).await);

    assert_eq!(kinds(&events), ["media", "mark"], "no clear: a false alarm");
    // Paused ~50 ms into the cough, resumed 200 + 400 + 100 ms after it began.
    between("pause", max_gap(&events, "media"), 550, 800);
    assert_eq!(twilio_audio(&events).0, 12_000, "nothing lost: all 1500 ms");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_stop_ends_the_call_with_a_normal_close() {
    let agent = start(fast_config()).await;
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.stream(100, false).await;
    t.c.json(json!({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "1"}}))
        .await;
    t.c.json(json!({"event": "mark", "streamSid": SID, "mark": {"name": "x"}}))
        .await;
    t.c.json(
        json!({"event": "stop", "sequenceNumber": "9", "streamSid": SID,
        "stop": {"accountSid": "AC1", "callSid": "CA1"}}),
    )
    .await;
    let events = t.c.until("closed", ms(2000)).await;
    assert_eq!(kinds(&events), ["closed"]);
    assert!(matches!(events[0].1, Ev::Closed(Some(1000))), "{events:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_protocol_errors_close_the_stream() {
    let agent = start(fast_config()).await;
    // media before start: policy violation (1008)
    let mut t = Twilio::connect(&agent).await;
    t.media(true).await;
    let events = t.c.until("closed", ms(2000)).await;
    assert!(matches!(events[0].1, Ev::Closed(Some(1008))), "{events:?}");
    // not JSON: invalid payload (1007)
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.c.send(Message::text("hello?")).await;
    let events = t.c.until("closed", ms(2000)).await;
    assert!(matches!(events[0].1, Ev::Closed(Some(1007))), "{events:?}");
    // binary frames: unsupported data (1003)
    let mut t = Twilio::connect(&agent).await;
    t.start().await;
    t.c.send(Message::binary(vec![0u8; 160])).await;
    let events = t.c.until("closed", ms(2000)).await;
    assert!(matches!(events[0].1, Ev::Closed(Some(1003))), "{events:?}");
    // a wrong media format: policy violation
    let mut t = Twilio::connect(&agent).await;
    t.c.json(
        json!({"event": "start", "streamSid": SID, "start": {"streamSid": SID,
        "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}}),
    )
    .await;
    let events = t.c.until("closed", ms(2000)).await;
    assert!(matches!(events[0].1, Ev::Closed(Some(1008))), "{events:?}");
    agent.shutdown().await;
}
