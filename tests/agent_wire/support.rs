//! The test client shared by every protocol: events as the client saw them, and helpers.

use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use planrun::agent::{self, AgentConfig, AgentHandle};
use planrun::distribution::Dist;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fast, fixed latencies: asr 50 + llm 100 + tts 50 = 200 ms to first audio after the end of
/// speech; the VAD needs 400 ms of silence (hangover) to call the end of speech.
pub(crate) fn fast_config() -> AgentConfig {
    AgentConfig {
        asr_latency: Dist::from_millis(50),
        llm_latency: Dist::from_millis(100),
        tts_latency: Dist::from_millis(50),
        reply_duration: Dist::from_millis(500),
        ..AgentConfig::default()
    }
}

pub(crate) async fn start(config: AgentConfig) -> AgentHandle {
    agent::spawn("127.0.0.1:0", config)
        .await
        .expect("agent binds")
}

pub(crate) fn between(what: &str, d: Duration, lo: u64, hi: u64) {
    assert!(
        d >= ms(lo) && d <= ms(hi),
        "{what}: {d:?} not within {lo}..{hi} ms"
    );
}

/// What the client saw.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
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
    pub(crate) fn kind(&self) -> String {
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

    pub(crate) fn json(&self) -> &Value {
        match self {
            Ev::Json(v) => v,
            _ => &Value::Null,
        }
    }
}

pub(crate) type Events = Vec<(Instant, Ev)>;

pub(crate) fn kinds(events: &Events) -> Vec<String> {
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

pub(crate) fn first(events: &Events, kind: &str) -> Option<Instant> {
    events
        .iter()
        .find(|(_, e)| e.kind() == kind)
        .map(|(t, _)| *t)
}

pub(crate) fn last(events: &Events, kind: &str) -> Option<Instant> {
    events
        .iter()
        .rev()
        .find(|(_, e)| e.kind() == kind)
        .map(|(t, _)| *t)
}

pub(crate) fn count(events: &Events, kind: &str) -> usize {
    events.iter().filter(|(_, e)| e.kind() == kind).count()
}

pub(crate) fn all<'a>(events: &'a Events, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events
        .iter()
        .filter(move |(_, e)| e.kind() == kind)
        .map(|(_, e)| e.json())
}

/// Largest gap between consecutive events of `kind`.
pub(crate) fn max_gap(events: &Events, kind: &str) -> Duration {
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

pub(crate) type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

pub(crate) struct Client {
    pub(crate) sink: Sink,
    pub(crate) events: mpsc::UnboundedReceiver<(Instant, Ev)>,
}

impl Client {
    pub(crate) async fn connect(url: &str) -> Client {
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

    pub(crate) async fn send(&mut self, msg: Message) {
        self.sink.send(msg).await.expect("client send");
    }

    pub(crate) async fn json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// Collect events until one of `kind` arrives (inclusive); panics after `within`.
    pub(crate) async fn until(&mut self, kind: &str, within: Duration) -> Events {
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
    pub(crate) async fn collect_for(&mut self, window: Duration) -> Events {
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
pub(crate) fn frame(rate: u32, loud: bool) -> Vec<i16> {
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
