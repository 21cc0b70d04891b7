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
use planrun::dist::Dist;
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
