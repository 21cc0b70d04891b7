//! The built-in reference agent, driven over real WebSockets by a small test client.

use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use planrun::agent::{self, AgentConfig, AgentHandle, Faults, frame_dbfs};
use planrun::distribution::Dist;
use planrun::protocol::{ServerEvent, decode_pcm16, decode_server_text, encode_audio};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const RATE: u32 = 16_000;
const FRAME: usize = 320; // 20 ms at 16 kHz

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fast, fixed latencies: asr 50 + llm 100 + tts 50 = 200 ms to first audio.
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

/// What the client saw, with the time it arrived.
#[derive(Debug, Clone)]
enum Ev {
    /// Reply audio: number of samples and whether the frame is above -40 dBFS.
    Audio {
        samples: usize,
        loud: bool,
    },
    Json(ServerEvent),
    /// A text frame that is not valid JSON.
    Bad(String),
    /// The connection ended: `clean` when a close frame arrived.
    Closed {
        clean: bool,
    },
}

impl Ev {
    fn is(&self, kind: &str) -> bool {
        match self {
            Ev::Audio { .. } => kind == "audio",
            Ev::Json(e) => e.kind() == kind,
            Ev::Bad(_) => kind == "bad",
            Ev::Closed { .. } => kind == "closed",
        }
    }
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
                    Some(Ok(Message::Binary(b))) => {
                        let pcm = decode_pcm16(&b);
                        Ev::Audio {
                            samples: pcm.len(),
                            loud: frame_dbfs(&pcm) > -40.0,
                        }
                    }
                    Some(Ok(Message::Text(t))) => match decode_server_text(&t) {
                        Ok(e) => Ev::Json(e),
                        Err(_) => Ev::Bad(t.to_string()),
                    },
                    Some(Ok(Message::Close(_))) => Ev::Closed { clean: true },
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Ev::Closed { clean: false },
                };
                let done = matches!(ev, Ev::Closed { .. });
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

    async fn text(&mut self, text: &str) {
        self.send(Message::text(text.to_string())).await;
    }

    /// `ms` of audio as 20 ms frames paced in real time; `loud` is a -13 dBFS tone.
    async fn stream(&mut self, ms: u64, loud: bool) {
        let frames = ms / 20;
        let t0 = Instant::now();
        for n in 0..frames {
            sleep_until(t0 + Duration::from_millis(20 * n)).await;
            self.send(encode_audio(&frame(loud))).await;
        }
        sleep_until(t0 + Duration::from_millis(20 * frames)).await;
    }

    /// An explicit utterance: speech_start, 300 ms of loud audio sent at once, speech_end
    /// (with optional text). Returns when speech_end was sent.
    async fn utterance(&mut self, text: Option<&str>) -> Instant {
        self.text(r#"{"type":"speech_start"}"#).await;
        for _ in 0..15 {
            self.send(encode_audio(&frame(true))).await;
        }
        let end = match text {
            Some(t) => serde_json::json!({"type": "speech_end", "text": t}).to_string(),
            None => r#"{"type":"speech_end"}"#.to_string(),
        };
        let at = Instant::now();
        self.text(&end).await;
        at
    }

    /// Collect events until one of `kind` arrives (inclusive); panics after `within`.
    async fn until(&mut self, kind: &str, within: Duration) -> Vec<(Instant, Ev)> {
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
                    let hit = ev.is(kind);
                    seen.push((at, ev));
                    if hit {
                        return seen;
                    }
                }
                Ok(None) => panic!("connection task ended waiting for {kind}: {seen:?}"),
                Err(_) => panic!("no {kind} within {within:?}; saw {seen:?}"),
            }
        }
    }

    /// Everything that arrives within `window`.
    async fn collect_for(&mut self, window: Duration) -> Vec<(Instant, Ev)> {
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

fn frame(loud: bool) -> Vec<i16> {
    (0..FRAME)
        .map(|i| {
            if loud {
                let t = i as f64 / f64::from(RATE);
                (7000.0 * (std::f64::consts::TAU * 440.0 * t).sin()) as i16
            } else {
                0
            }
        })
        .collect()
}

fn kinds(events: &[(Instant, Ev)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, ev) in events {
        let k = match ev {
            Ev::Audio { .. } => "audio".to_string(),
            Ev::Json(e) => e.kind().to_string(),
            Ev::Bad(_) => "bad".to_string(),
            Ev::Closed { .. } => "closed".to_string(),
        };
        // collapse runs of audio frames
        if !(k == "audio" && out.last().is_some_and(|l| l == "audio")) {
            out.push(k);
        }
    }
    out
}

fn audio_samples(events: &[(Instant, Ev)]) -> usize {
    events
        .iter()
        .map(|(_, e)| match e {
            Ev::Audio { samples, .. } => *samples,
            _ => 0,
        })
        .sum()
}

fn first(events: &[(Instant, Ev)], kind: &str) -> Option<Instant> {
    events.iter().find(|(_, e)| e.is(kind)).map(|(t, _)| *t)
}

fn count(events: &[(Instant, Ev)], kind: &str) -> usize {
    events.iter().filter(|(_, e)| e.is(kind)).count()
}

/// Largest gap between consecutive audio frames.
fn max_audio_gap(events: &[(Instant, Ev)]) -> Duration {
    let times: Vec<Instant> = events
        .iter()
        .filter(|(_, e)| e.is("audio"))
        .map(|(t, _)| *t)
        .collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn between(what: &str, d: Duration, lo: u64, hi: u64) {
    assert!(
        d >= ms(lo) && d <= ms(hi),
        "{what}: {d:?} not within {lo}..{hi} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_turn_streams_a_full_reply_in_order() {
    let agent = start(fast_config()).await;
    let mut c = Client::connect(&agent.url()).await;
    let end = c.utterance(None).await;
    let events = c.until("response_end", ms(3000)).await;

    assert_eq!(
        kinds(&events),
        [
            "transcript",
            "response_start",
            "audio",
            "metrics",
            "audio",
            "response_end"
        ],
        "{events:?}"
    );
    let Ev::Json(ServerEvent::Transcript(text)) = &events[0].1 else {
        panic!("transcript first")
    };
    assert_eq!(text, "user utterance (300 ms of audio)");
    let ttfa = first(&events, "audio").unwrap() - end;
    between("time to first audio (50+100+50)", ttfa, 200, 218);
    assert_eq!(audio_samples(&events), 8000, "500 ms of reply audio");
    // Paced in real time: the reply plays out over ~500 ms, not in a burst.
    let span = first(&events, "response_end").unwrap() - first(&events, "audio").unwrap();
    between("reply span", span, 480, 650);
    assert!(
        events
            .iter()
            .all(|(_, e)| !matches!(e, Ev::Audio { loud: false, .. }))
    );

    let metrics = events
        .iter()
        .find_map(|(_, e)| match e {
            Ev::Json(ServerEvent::Metrics(v)) => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(metrics["asr_ms"], 50.0);
    assert_eq!(metrics["llm_ms"], 100.0);
    assert_eq!(metrics["tts_ms"], 50.0);
    assert_eq!(metrics["tool_ms"], 0.0);
    let total = metrics["total_ms"].as_f64().unwrap();
    assert!((195.0..300.0).contains(&total), "total_ms {total}");
    assert_eq!(agent.connections(), 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_silence_precedes_the_tone() {
    let agent = start(AgentConfig {
        leading_silence: ms(100),
        send_metrics: false,
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.until("response_end", ms(3000)).await;
    let audio: Vec<bool> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Ev::Audio { loud, .. } => Some(*loud),
            _ => None,
        })
        .collect();
    assert_eq!(
        audio.len(),
        30,
        "100 ms silence + 500 ms tone in 20 ms frames"
    );
    assert!(audio[..5].iter().all(|l| !l) && audio[5..].iter().all(|l| *l));
    assert_eq!(count(&events, "metrics"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vad_alone_detects_the_end_of_speech() {
    let agent = start(fast_config()).await;
    let mut c = Client::connect(&agent.url()).await;
    c.stream(600, true).await;
    let speech_over = Instant::now();
    c.stream(600, false).await;
    // The VAD already ended this utterance: an explicit speech_end must not start a 2nd turn.
    c.text(r#"{"type":"speech_end"}"#).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(
        kinds(&events),
        [
            "transcript",
            "response_start",
            "audio",
            "metrics",
            "audio",
            "response_end"
        ]
    );
    let transcript_at = first(&events, "transcript").unwrap() - speech_over;
    between("hangover 400 + asr 50", transcript_at, 420, 600);
    let Ev::Json(ServerEvent::Transcript(text)) = &events[0].1 else {
        panic!()
    };
    assert_eq!(text, "user utterance (600 ms of audio)");
    let more = c.collect_for(ms(500)).await;
    assert!(more.is_empty(), "no second turn: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_stop_after_speech_end_the_utterance() {
    let agent = start(fast_config()).await;
    let mut c = Client::connect(&agent.url()).await;
    c.stream(500, true).await; // then nothing at all
    let stopped = Instant::now();
    let events = c.until("transcript", ms(2000)).await;
    between(
        "wall-clock hangover 400 + asr 50",
        events[0].0 - stopped,
        420,
        600,
    );
}

/// Barge in during a reply with `speech_start` + 600 ms of loud audio; returns (time until the
/// audio stopped, time until `interrupted`), both from the `speech_start`.
async fn barge_in(delay_ms: u64) -> (Duration, Duration) {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(3000),
        barge_in_delay: Dist::from_millis(delay_ms),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    c.until("audio", ms(2000)).await;
    sleep(ms(200)).await;
    c.text(r#"{"type":"speech_start"}"#).await;
    let barge = Instant::now();
    c.stream(600, true).await;
    let events = c.until("interrupted", ms(2000)).await;
    let last_audio = events
        .iter()
        .rev()
        .find(|(_, e)| e.is("audio"))
        .map(|(t, _)| *t)
        .unwrap();
    let interrupted = first(&events, "interrupted").unwrap();
    assert_eq!(count(&events, "response_end"), 0);
    // The speech becomes the next turn once it ends (here: the client stops sending).
    let next = c.until("transcript", ms(2000)).await;
    assert_eq!(
        count(&next, "audio"),
        0,
        "no audio after interrupted: {next:?}"
    );
    let Some((_, Ev::Json(ServerEvent::Transcript(text)))) = next.last() else {
        panic!()
    };
    assert_eq!(text, "user utterance (600 ms of audio)");
    agent.shutdown().await;
    (
        last_audio.saturating_duration_since(barge),
        interrupted - barge,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_barge_in_stops_audio_after_the_configured_delay() {
    let (fast, fast_interrupted) = barge_in(50).await;
    let (slow, slow_interrupted) = barge_in(400).await;
    assert!(
        fast <= ms(56),
        "audio stopped {fast:?} after barge-in (delay 50 ms)"
    );
    between("slow stop (delay 400 ms)", slow, 380, 406);
    assert!(slow >= fast + ms(250), "fast {fast:?} slow {slow:?}");
    // `interrupted` once min_speech (400 ms) of speech was heard (and the audio stopped).
    between("interrupted", fast_interrupted, 370, 560);
    between("interrupted", slow_interrupted, 370, 560);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_interrupt_is_real_at_once() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(3000),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    c.until("audio", ms(2000)).await;
    sleep(ms(100)).await;
    c.text(r#"{"type":"interrupt"}"#).await;
    let at = Instant::now();
    let events = c.until("interrupted", ms(1000)).await;
    between(
        "interrupt → interrupted",
        events.last().unwrap().0 - at,
        45,
        150,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_pauses_then_resumes_without_losing_audio() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1500),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let mut events = c.until("audio", ms(2000)).await;
    sleep(ms(300)).await;
    let cough = Instant::now();
    c.stream(200, true).await; // VAD-detected, shorter than min_speech
    c.stream(600, false).await;
    events.extend(c.until("response_end", ms(4000)).await);
    assert_eq!(count(&events, "interrupted"), 0, "{:?}", kinds(&events));
    assert_eq!(count(&events, "resumed"), 1);
    assert_eq!(
        count(&events, "transcript"),
        1,
        "a false alarm is no new turn"
    );
    // 200 ms speech + 400 ms hangover + 100 ms resume delay after the cough began.
    between(
        "resumed",
        first(&events, "resumed").unwrap() - cough,
        650,
        850,
    );
    // Audio stopped ~50 ms into the cough and resumed ~700 ms after it began.
    between("pause", max_audio_gap(&events), 550, 800);
    assert_eq!(audio_samples(&events), 24_000, "nothing lost: all 1500 ms");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_keeps_every_sample() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1500),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let mut events = c.until("audio", ms(2000)).await;
    sleep(ms(300)).await;
    // Explicit speech_start / speech_end around 200 ms of audio: a false alarm too.
    c.text(r#"{"type":"speech_start"}"#).await;
    c.stream(200, true).await;
    c.text(r#"{"type":"speech_end"}"#).await;
    events.extend(c.until("response_end", ms(4000)).await);
    assert_eq!(count(&events, "resumed"), 1, "{:?}", kinds(&events));
    assert_eq!(count(&events, "interrupted"), 0);
    assert_eq!(count(&events, "transcript"), 1);
    assert_eq!(audio_samples(&events), 24_000, "all 1500 ms of the reply");
    assert!(max_audio_gap(&events) >= ms(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_by_keyword_adds_tool_latency() {
    let agent = start(AgentConfig {
        tool_latency: Dist::from_millis(300),
        reply_duration: Dist::from_millis(200),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;

    let end = c.utterance(Some("Please BOOK a flight")).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(
        kinds(&events)[..4],
        ["transcript", "tool_call", "response_start", "audio"]
    );
    assert!(
        matches!(&events[0].1, Ev::Json(ServerEvent::Transcript(t)) if t == "Please BOOK a flight")
    );
    assert!(matches!(&events[1].1, Ev::Json(ServerEvent::ToolCall(n)) if n == "lookup"));
    between(
        "ttfa with tool (50+300+100+50)",
        first(&events, "audio").unwrap() - end,
        495,
        650,
    );
    let metrics = events.iter().find_map(|(_, e)| match e {
        Ev::Json(ServerEvent::Metrics(v)) => Some(v.clone()),
        _ => None,
    });
    assert_eq!(metrics.unwrap()["tool_ms"], 300.0);

    let end = c.utterance(Some("what's the weather")).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(count(&events, "tool_call"), 0);
    between(
        "ttfa without tool",
        first(&events, "audio").unwrap() - end,
        195,
        350,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_fraction_one_always_calls_a_tool() {
    let agent = start(AgentConfig {
        tool_fraction: 1.0,
        tool_latency: Dist::from_millis(10),
        reply_duration: Dist::from_millis(100),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(count(&events, "tool_call"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_fault_closes_mid_reply() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1000),
        faults: Faults {
            drop: 1.0,
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.until("closed", ms(3000)).await;
    assert!(matches!(
        events.last(),
        Some((_, Ev::Closed { clean: false }))
    ));
    assert_eq!(count(&events, "response_start"), 1);
    assert_eq!(count(&events, "response_end"), 0);
    let samples = audio_samples(&events);
    assert!(
        samples > 0 && samples < 16_000,
        "{samples} samples before the drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fault_sends_broken_json_and_continues() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(300),
        faults: Faults {
            malformed: 1.0,
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.collect_for(ms(1200)).await;
    assert_eq!(count(&events, "bad"), 1, "{events:?}");
    let bad = events.iter().find_map(|(_, e)| match e {
        Ev::Bad(text) => Some(text.clone()),
        _ => None,
    });
    assert!(
        bad.unwrap().starts_with("{\"type\":"),
        "a truncated control message"
    );
    let controls = count(&events, "transcript")
        + count(&events, "response_start")
        + count(&events, "response_end");
    assert_eq!(controls, 2, "the other two control messages are intact");
    assert_eq!(audio_samples(&events), 4800, "the audio is complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_fault_leaves_a_gap_in_the_audio() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(1000),
        faults: Faults {
            stall: 1.0,
            stall_for: ms(500),
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.until("response_end", ms(4000)).await;
    between("stall gap (20 + 500)", max_audio_gap(&events), 500, 650);
    assert_eq!(audio_samples(&events), 16_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_each_get_a_full_reply() {
    let agent = start(fast_config()).await;
    let url = agent.url();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            let end = c.utterance(None).await;
            let events = c.until("response_end", ms(5000)).await;
            (
                audio_samples(&events),
                first(&events, "audio").unwrap() - end,
            )
        }));
    }
    for task in tasks {
        let (samples, ttfa) = task.await.unwrap();
        assert_eq!(samples, 8000);
        assert!(ttfa < ms(600), "ttfa {ttfa:?} under load");
    }
    assert_eq!(agent.connections(), 50);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_client_gets_an_error_and_the_session_continues() {
    let agent = start(fast_config()).await;
    let mut c = Client::connect(&agent.url()).await;
    c.text("hello, not json").await;
    let events = c.until("error", ms(1000)).await;
    assert!(matches!(&events[0].1, Ev::Json(ServerEvent::Error(m)) if m.contains("not JSON")));
    c.text(r#"{"type":"dance"}"#).await;
    let events = c.until("error", ms(1000)).await;
    assert!(matches!(&events[0].1, Ev::Json(ServerEvent::Error(m)) if m.contains("dance")));
    c.send(Message::binary(vec![1u8, 2, 3])).await; // odd-length audio
    c.send(Message::binary(Vec::new())).await;
    c.text(r#"{"type":"speech_start","extra":[1,2]}"#).await;
    c.text(r#"{"type":"speech_end","text":42}"#).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(count(&events, "error"), 0);
    assert_eq!(audio_samples(&events), 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnects_and_shutdown_are_clean() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(3000),
        ..fast_config()
    })
    .await;
    // A client that vanishes mid-reply.
    let mut gone = Client::connect(&agent.url()).await;
    gone.utterance(None).await;
    gone.until("audio", ms(2000)).await;
    drop(gone);
    // A raw TCP connection that never completes the handshake.
    let _idle = TcpStream::connect(agent.addr()).await.unwrap();
    // A connected client is closed with a close frame on shutdown.
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    c.until("audio", ms(2000)).await;
    let started = Instant::now();
    agent.shutdown().await;
    assert!(started.elapsed() < ms(3500));
    let events = c.until("closed", ms(2000)).await;
    assert!(matches!(
        events.last(),
        Some((_, Ev::Closed { clean: true }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_replays_the_same_turns() {
    async fn reply_lengths(seed: u64) -> Vec<usize> {
        let agent = start(AgentConfig {
            seed,
            reply_duration: Dist::Uniform(ms(100), ms(400)),
            ..fast_config()
        })
        .await;
        let mut c = Client::connect(&agent.url()).await;
        let mut lengths = Vec::new();
        for _ in 0..3 {
            c.utterance(None).await;
            lengths.push(audio_samples(&c.until("response_end", ms(3000)).await));
        }
        agent.shutdown().await;
        lengths
    }
    let (a, b, other) = tokio::join!(reply_lengths(7), reply_lengths(7), reply_lengths(8));
    assert_eq!(a, b);
    assert_ne!(a, other);
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let err = agent::spawn(
        "127.0.0.1:0",
        AgentConfig {
            sample_rate: 0,
            ..AgentConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sample_rate"));
    let err = agent::spawn(
        "127.0.0.1:0",
        AgentConfig {
            faults: Faults {
                drop: 1.5,
                ..Faults::default()
            },
            ..AgentConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("faults.drop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_speech_end_after_quiet_audio_is_a_turn() {
    let agent = start(fast_config()).await;
    let mut c = Client::connect(&agent.url()).await;
    for _ in 0..10 {
        c.send(encode_audio(&[30; FRAME])).await; // far below the VAD threshold
    }
    c.text(r#"{"type":"speech_end"}"#).await;
    let events = c.until("response_end", ms(3000)).await;
    assert!(matches!(&events[0].1,
        Ev::Json(ServerEvent::Transcript(t)) if t == "user utterance (200 ms of audio)"));
    // A second speech_end with nothing new while idle is another (empty) turn; while the
    // agent is busy it is ignored.
    c.text(r#"{"type":"speech_end"}"#).await;
    c.text(r#"{"type":"speech_end"}"#).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(count(&events, "transcript"), 1);
    assert!(c.collect_for(ms(400)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_false_alarm_after_speech_start_resumes_when_frames_stop() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(2000),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    c.until("audio", ms(2000)).await;
    c.text(r#"{"type":"speech_start"}"#).await;
    let at = Instant::now();
    for _ in 0..5 {
        c.send(encode_audio(&[30; FRAME])).await; // 100 ms, too quiet for the VAD
    }
    let events = c.until("resumed", ms(2000)).await;
    // No frames for the 400 ms hangover, then the 100 ms resume delay.
    between("resumed", events.last().unwrap().0 - at, 480, 650);
    assert_eq!(count(&events, "interrupted"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_while_thinking_replaces_the_pending_answer() {
    let agent = start(AgentConfig {
        llm_latency: Dist::from_millis(500),
        reply_duration: Dist::from_millis(200),
        ..fast_config()
    })
    .await;
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(Some("first")).await;
    // The user keeps talking (600 ms) before the answer starts (50 + 500 + 50 ms).
    c.stream(600, true).await;
    let events = c.until("response_end", ms(3000)).await;
    assert_eq!(
        kinds(&events),
        [
            "transcript",
            "transcript",
            "response_start",
            "audio",
            "metrics",
            "audio",
            "response_end"
        ],
        "{events:?}"
    );
    assert!(matches!(&events[1].1,
        Ev::Json(ServerEvent::Transcript(t)) if t == "user utterance (600 ms of audio)"));
}

/// Scale check, run by hand: `cargo test --release --test agent -- --ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow scale check"]
async fn hundreds_of_concurrent_sessions() {
    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(2000),
        ..fast_config()
    })
    .await;
    let url = agent.url();
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            let end = c.utterance(None).await;
            let events = c.until("response_end", ms(10_000)).await;
            let ttfa = first(&events, "audio").unwrap() - end;
            let span = first(&events, "response_end").unwrap() - first(&events, "audio").unwrap();
            (audio_samples(&events), ttfa, span, max_audio_gap(&events))
        }));
    }
    let mut worst = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for task in tasks {
        let (samples, ttfa, span, gap) = task.await.unwrap();
        assert_eq!(samples, 32_000);
        worst = (worst.0.max(ttfa), worst.1.max(span), worst.2.max(gap));
    }
    eprintln!(
        "worst ttfa {:?}, reply span {:?}, frame gap {:?}",
        worst.0, worst.1, worst.2
    );
    assert!(worst.0 < ms(400), "ttfa {:?}", worst.0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_client_input_never_kills_the_session() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    let agent = start(AgentConfig {
        reply_duration: Dist::from_millis(300),
        barge_in_delay: Dist::Uniform(ms(0), ms(30)),
        resume_delay: Dist::Uniform(ms(0), ms(30)),
        min_speech: ms(60),
        vad_hangover: ms(40),
        faults: Faults {
            stall: 0.3,
            stall_for: ms(30),
            malformed: 0.3,
            ..Faults::default()
        },
        ..fast_config()
    })
    .await;
    let mut rng = StdRng::seed_from_u64(1);
    let mut turns = 0;
    for round in 0..2 {
        let mut c = Client::connect(&agent.url()).await;
        let t0 = Instant::now();
        for n in 0..120u32 {
            let msg = match rng.random_range(0..14u8) {
                0 => Message::text(r#"{"type":"speech_start"}"#),
                1 => Message::text(r#"{"type":"speech_end","text":"book"}"#),
                2 => Message::text(r#"{"type":"interrupt"}"#),
                3 => Message::text(["", "{", "[]", "null", r#"{"type":7}"#][n as usize % 5]),
                4 => Message::binary(vec![0xAB; rng.random_range(0..9)]),
                5 => Message::Ping(vec![1, 2, 3].into()),
                6 => encode_audio(&vec![0; rng.random_range(0..2000)]),
                7..=11 => Message::text(r#"{"type":"speech_end"}"#),
                _ => {
                    let len = rng.random_range(1..1500);
                    let amp = if rng.random_range(0..2u8) == 0 {
                        20.0
                    } else {
                        9000.0
                    };
                    let pcm: Vec<i16> = (0..len)
                        .map(|i| (amp * (i as f64 * 0.2).sin()) as i16)
                        .collect();
                    encode_audio(&pcm)
                }
            };
            c.send(msg).await;
            sleep_until(t0 + ms(10) * n).await;
        }
        let events = c.collect_for(ms(400)).await;
        assert_eq!(
            count(&events, "closed"),
            0,
            "round {round}: session died: {events:?}"
        );
        assert!(count(&events, "error") > 0);
        turns += count(&events, "transcript");
    }
    assert!(turns > 0, "the random input drove some turns");
    // The agent still answers a well-behaved client.
    let mut c = Client::connect(&agent.url()).await;
    c.utterance(None).await;
    let events = c.collect_for(ms(600)).await;
    assert!(audio_samples(&events) > 0);
    assert_eq!(agent.connections(), 3);
    agent.shutdown().await;
}
