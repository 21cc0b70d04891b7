//! The built-in agent's protocol adapters (Twilio Media Streams, OpenAI Realtime, and the raw
//! protocol on every other path), driven over real WebSockets by small test clients that speak
//! each protocol's public message shapes.

use std::time::Duration;

use audio_codec_algorithms::{decode_ulaw, encode_ulaw};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use planrun::agent::{self, AgentConfig, AgentHandle, Faults, frame_dbfs};
use planrun::distribution::Dist;
use planrun::protocol::{decode_pcm16, encode_audio};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fast, fixed latencies: asr 50 + llm 100 + tts 50 = 200 ms to first audio after the end of
/// speech; the VAD needs 400 ms of silence (hangover) to call the end of speech.
fn fast_config() -> AgentConfig {
    AgentConfig {
        asr_latency: Dist::from_millis(50),
        llm_latency: Dist::from_millis(100),
        tts_latency: Dist::from_millis(50),
        reply_duration: Dist::from_millis(500),
        ..AgentConfig::default()
    }
}

async fn start(config: AgentConfig) -> AgentHandle {
    agent::spawn("127.0.0.1:0", config)
        .await
        .expect("agent binds")
}

fn between(what: &str, d: Duration, lo: u64, hi: u64) {
    assert!(
        d >= ms(lo) && d <= ms(hi),
        "{what}: {d:?} not within {lo}..{hi} ms"
    );
}

/// What the client saw.
#[derive(Debug, Clone)]
enum Ev {
    Json(Value),
    /// Raw protocol reply audio: PCM16 bytes.
    Binary(Vec<u8>),
    /// A text frame that is not JSON.
    Bad(String),
    /// The connection ended: the close frame's code, if one arrived.
    Closed(Option<u16>),
}

impl Ev {
    /// `event` (Twilio) or `type` (Realtime, raw); "binary", "bad", "closed" otherwise.
    fn kind(&self) -> String {
        match self {
            Ev::Json(v) => v
                .get("event")
                .or_else(|| v.get("type"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Ev::Binary(_) => "binary".into(),
            Ev::Bad(_) => "bad".into(),
            Ev::Closed(_) => "closed".into(),
        }
    }

    fn json(&self) -> &Value {
        match self {
            Ev::Json(v) => v,
            _ => &Value::Null,
        }
    }
}

type Events = Vec<(Instant, Ev)>;

fn kinds(events: &Events) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, ev) in events {
        let k = ev.kind();
        // collapse runs of audio
        let audio = ["media", "response.output_audio.delta", "binary"].contains(&k.as_str());
        if !(audio && out.last() == Some(&k)) {
            out.push(k);
        }
    }
    out
}

fn first(events: &Events, kind: &str) -> Option<Instant> {
    events
        .iter()
        .find(|(_, e)| e.kind() == kind)
        .map(|(t, _)| *t)
}

fn last(events: &Events, kind: &str) -> Option<Instant> {
    events
        .iter()
        .rev()
        .find(|(_, e)| e.kind() == kind)
        .map(|(t, _)| *t)
}

fn count(events: &Events, kind: &str) -> usize {
    events.iter().filter(|(_, e)| e.kind() == kind).count()
}

fn all<'a>(events: &'a Events, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events
        .iter()
        .filter(move |(_, e)| e.kind() == kind)
        .map(|(_, e)| e.json())
}

/// Largest gap between consecutive events of `kind`.
fn max_gap(events: &Events, kind: &str) -> Duration {
    let times: Vec<Instant> = events
        .iter()
        .filter(|(_, e)| e.kind() == kind)
        .map(|(t, _)| *t)
        .collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

struct Client {
    sink: Sink,
    events: mpsc::UnboundedReceiver<(Instant, Ev)>,
}

impl Client {
    async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("connects");
        let (sink, mut stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let ev = match stream.next().await {
                    Some(Ok(Message::Binary(b))) => Ev::Binary(b.to_vec()),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                        Ok(v) => Ev::Json(v),
                        Err(_) => Ev::Bad(t.to_string()),
                    },
                    Some(Ok(Message::Close(frame))) => Ev::Closed(frame.map(|f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Ev::Closed(None),
                };
                let done = matches!(ev, Ev::Closed(_));
                if tx.send((Instant::now(), ev)).is_err() || done {
                    return;
                }
            }
        });
        Client { sink, events }
    }

    async fn send(&mut self, msg: Message) {
        self.sink.send(msg).await.expect("client send");
    }

    async fn json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// Collect events until one of `kind` arrives (inclusive); panics after `within`.
    async fn until(&mut self, kind: &str, within: Duration) -> Events {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.events.recv(),
            )
            .await
            {
                Ok(Some((at, ev))) => {
                    let hit = ev.kind() == kind;
                    seen.push((at, ev));
                    if hit {
                        return seen;
                    }
                }
                Ok(None) => panic!("connection task ended waiting for {kind}: {seen:?}"),
                Err(_) => panic!("no {kind} within {within:?}; saw {:?}", kinds(&seen)),
            }
        }
    }

    /// Everything that arrives within `window`.
    async fn collect_for(&mut self, window: Duration) -> Events {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(Some(item)) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.events.recv(),
        )
        .await
        {
            seen.push(item);
        }
        seen
    }
}

/// 20 ms of a -10 dBFS 440 Hz tone (or silence) at `rate`.
fn frame(rate: u32, loud: bool) -> Vec<i16> {
    (0..rate / 50)
        .map(|i| {
            if loud {
                let t = f64::from(i) / f64::from(rate);
                (10_000.0 * (std::f64::consts::TAU * 440.0 * t).sin()) as i16
            } else {
                0
            }
        })
        .collect()
}

// ----- Twilio Media Streams ----------------------------------------------------------------

const SID: &str = "MZ00000000000000000000000000000001";

struct Twilio {
    c: Client,
    seq: u64,
}

impl Twilio {
    async fn connect(agent: &AgentHandle) -> Twilio {
        let c = Client::connect(&format!("{}twilio?caller=test", agent.url())).await;
        Twilio { c, seq: 0 }
    }

    fn seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    /// `connected` + `start`, as Twilio opens a stream.
    async fn start(&mut self) {
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

    async fn media(&mut self, loud: bool) {
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
    async fn stream(&mut self, ms: u64, loud: bool) {
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
fn twilio_audio(events: &Events) -> (usize, usize) {
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

// ----- OpenAI Realtime ---------------------------------------------------------------------

struct Realtime {
    c: Client,
    rate: u32,
}

impl Realtime {
    /// Connect and read `session.created`.
    async fn connect(agent: &AgentHandle, path: &str) -> Realtime {
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

    async fn append(&mut self, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.c
            .json(json!({"type": "input_audio_buffer.append", "audio": B64.encode(bytes)}))
            .await;
    }

    /// `ms` of PCM16 audio as 20 ms appends paced in real time.
    async fn stream(&mut self, ms: u64, loud: bool) {
        let frames = ms / 20;
        let t0 = Instant::now();
        for n in 0..frames {
            sleep_until(t0 + Duration::from_millis(20 * n)).await;
            self.append(&frame(self.rate, loud)).await;
        }
        sleep_until(t0 + Duration::from_millis(20 * frames)).await;
    }

    async fn send(&mut self, kind: &str) {
        self.c.json(json!({ "type": kind })).await;
    }
}

/// Bytes of reply audio in the `response.output_audio.delta` events (and how many deltas were
/// loud).
fn realtime_audio(events: &Events) -> (usize, usize) {
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

fn assert_unique_event_ids(events: &Events) {
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
    let agent = start(AgentConfig {
        tool_latency: Dist::from_millis(300),
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

// ----- every protocol ----------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_speech_while_calling_a_tool_cancels_the_open_response() {
    let agent = start(AgentConfig {
        tool_fraction: 1.0,
        tool_latency: Dist::from_millis(1500),
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
