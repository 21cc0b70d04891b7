//! One iteration (one call) of one virtual user: connect, interpret the steps against the
//! socket, measure.
//!
//! Every inbound message is timestamped on arrival and appended to an event queue; `await`
//! consumes the queue in order. Outgoing audio is paced against an absolute schedule with
//! capture semantics: frame *i* covers `[start + i·frame, start + (i+1)·frame)` and is sent at
//! the end of that interval, as a microphone would deliver it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::audio::Clip;
use crate::dist::format_duration;
use crate::metrics::{Failure, FailureClass, Marker, Recorder, Sample};
use crate::plan::compile::{Action, ScenarioSpec, StepSpec};
use crate::protocol::{self, Control, ServerEvent};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the iteration needs from its user.
pub struct Ctx<'a> {
    pub url: &'a str,
    pub connect_timeout: Duration,
    pub run_start: Instant,
    pub rec: &'a mut Recorder,
    pub rng: &'a mut StdRng,
    pub stop: watch::Receiver<bool>,
}

/// An inbound event with its arrival time.
#[derive(Debug, Clone)]
struct Inbound {
    at: Instant,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A reply audio chunk; `first` when it is the first since the user's last end of speech.
    Audio {
        first: bool,
    },
    Event(String),
    ServerError(String),
}

struct Session<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    queue: VecDeque<Inbound>,
    /// When the user's last utterance ended (scheduled), the reference for latencies.
    anchor: Instant,
    audio_since_anchor: bool,
    closed: Option<String>,
    trace: Trace,
}

/// What an iteration leaves for the timeline: notable instants and timestamped measurements.
#[derive(Debug, Default)]
pub struct Trace {
    pub markers: Vec<Marker>,
    pub samples: Vec<Sample>,
}

fn fail(class: FailureClass, step: &StepSpec, message: impl Into<String>) -> Failure {
    Failure {
        class,
        step: step.position(),
        message: message.into(),
    }
}

/// Run one iteration of `scenario`. Returns its trace and the failure, if any.
pub async fn run_iteration(ctx: &mut Ctx<'_>, scenario: &ScenarioSpec) -> (Trace, Option<Failure>) {
    let started = Instant::now();
    let mut config = WebSocketConfig::default();
    config.max_write_buffer_size = 4 << 20;
    config.write_buffer_size = 0;
    let connect = tokio_tungstenite::connect_async_with_config(ctx.url, Some(config), true);
    let ws = match tokio::time::timeout(ctx.connect_timeout, connect).await {
        Ok(Ok((ws, _resp))) => ws,
        Ok(Err(e)) => {
            return (
                Trace::default(),
                Some(Failure {
                    class: FailureClass::ConnectError,
                    step: String::new(),
                    message: format!("cannot connect to {}: {e}", ctx.url),
                }),
            );
        }
        Err(_) => {
            return (
                Trace::default(),
                Some(Failure {
                    class: FailureClass::ConnectError,
                    step: String::new(),
                    message: format!(
                        "connecting to {} took longer than {}",
                        ctx.url,
                        format_duration(ctx.connect_timeout)
                    ),
                }),
            );
        }
    };
    let connected = Instant::now();
    let (sink, stream) = ws.split();
    let mut s = Session {
        ctx,
        sink,
        stream,
        queue: VecDeque::new(),
        anchor: connected,
        audio_since_anchor: false,
        closed: None,
        trace: Trace::default(),
    };
    s.record("connect", connected - started, connected);
    s.mark("connected", connected, String::new());

    let mut failure = None;
    for step in &scenario.steps {
        if let Err(f) = s.step(step).await {
            failure = Some(f);
            break;
        }
    }
    if failure.is_none() {
        let now = Instant::now();
        s.record("iteration", now - started, now);
    }
    s.close().await;
    (s.trace, failure)
}

impl Session<'_, '_> {
    fn run_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.ctx.run_start).as_micros() as u64
    }

    /// Record a measurement taken at `at`.
    fn record(&mut self, metric: &str, value: Duration, at: Instant) {
        self.ctx.rec.record(metric, value);
        let at_us = self.run_us(at);
        self.trace.samples.push(Sample {
            metric: metric.to_string(),
            at_us,
            value_ms: value.as_secs_f64() * 1000.0,
        });
    }

    fn mark(&mut self, kind: &str, at: Instant, detail: String) {
        let at_us = self.run_us(at);
        self.trace.markers.push(Marker {
            kind: kind.to_string(),
            at_us,
            detail,
        });
    }

    /// The user finished speaking at `at`: latencies are measured from here and inbound
    /// events before it are not answers to it.
    fn set_anchor(&mut self, at: Instant) {
        self.anchor = at;
        self.audio_since_anchor = false;
        while self.queue.front().is_some_and(|e| e.at < at) {
            self.queue.pop_front();
        }
        self.mark("speech_end", at, String::new());
    }

    async fn step(&mut self, step: &StepSpec) -> Result<(), Failure> {
        match &step.action {
            Action::SendAudio { clip, frame, .. } => self.send_audio(step, clip, *frame).await,
            Action::Send(control) => {
                self.send(step, protocol::encode_client_control(*control))
                    .await?;
                match control {
                    Control::SpeechEnd => self.set_anchor(Instant::now()),
                    Control::SpeechStart => {
                        self.mark("speech_start", Instant::now(), String::new())
                    }
                    Control::Interrupt => self.mark("interrupt", Instant::now(), String::new()),
                }
                Ok(())
            }
            Action::Await {
                event,
                record,
                timeout,
            } => {
                self.await_event(step, event, record.as_deref(), *timeout)
                    .await
            }
            Action::Wait(dist) => {
                let until = Instant::now() + dist.sample(self.ctx.rng);
                self.pump_until(step, until).await
            }
        }
    }

    async fn send(&mut self, step: &StepSpec, msg: Message) -> Result<(), Failure> {
        if let Some(why) = &self.closed {
            return Err(fail(
                FailureClass::ConnectionClosed,
                step,
                format!("cannot send: {why}"),
            ));
        }
        self.sink.send(msg).await.map_err(|e| {
            fail(
                FailureClass::SendError,
                step,
                format!("sending failed: {e}"),
            )
        })
    }

    async fn send_audio(
        &mut self,
        step: &StepSpec,
        clip: &Arc<Clip>,
        frame: Duration,
    ) -> Result<(), Failure> {
        let start = Instant::now();
        self.mark("audio_start", start, String::new());
        for (i, samples) in clip.frames(frame).enumerate() {
            let due = start + frame * (i as u32 + 1);
            self.pump_until(step, due).await?;
            let lag = Instant::now().saturating_duration_since(due);
            self.ctx.rec.record_send_lag(lag);
            self.send(step, protocol::encode_audio(&samples)).await?;
        }
        let speech_end =
            start + Duration::from_secs_f64(clip.speech_end() as f64 / f64::from(clip.sample_rate));
        self.set_anchor(speech_end);
        Ok(())
    }

    /// Receive (and queue) inbound messages until `until`.
    async fn pump_until(&mut self, step: &StepSpec, until: Instant) -> Result<(), Failure> {
        loop {
            if self.closed.is_some() {
                // Nothing more can arrive; a closed connection is judged by the next send/await.
                sleep_until(until).await;
                return self.check_stop(step);
            }
            tokio::select! {
                biased;
                _ = self.ctx.stop.changed() => return self.check_stop(step),
                _ = sleep_until(until) => return Ok(()),
                msg = self.stream.next() => self.ingest(step, msg)?,
            }
        }
    }

    fn check_stop(&self, step: &StepSpec) -> Result<(), Failure> {
        if *self.ctx.stop.borrow() {
            Err(fail(FailureClass::Aborted, step, "run stopped"))
        } else {
            Ok(())
        }
    }

    fn ingest(
        &mut self,
        step: &StepSpec,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Failure> {
        let at = Instant::now();
        match msg {
            None => self.closed = Some("the server closed the connection".into()),
            Some(Err(e)) => self.closed = Some(format!("the connection failed: {e}")),
            Some(Ok(Message::Binary(bytes))) => {
                if bytes.is_empty() {
                    return Ok(());
                }
                let first = !self.audio_since_anchor;
                self.audio_since_anchor = true;
                if first {
                    self.mark("first_audio", at, String::new());
                }
                self.queue.push_back(Inbound {
                    at,
                    kind: Kind::Audio { first },
                });
            }
            Some(Ok(Message::Text(text))) => {
                let event = protocol::decode_server_text(&text)
                    .map_err(|e| fail(FailureClass::ProtocolError, step, e.0))?;
                let kind = match event {
                    ServerEvent::Error(message) => {
                        self.mark("error", at, message.clone());
                        Kind::ServerError(message)
                    }
                    other => {
                        let detail = match &other {
                            ServerEvent::Transcript(t) => t.clone(),
                            ServerEvent::ToolCall(n) => n.clone(),
                            _ => String::new(),
                        };
                        let name = other.kind().to_string();
                        if name != "metrics" {
                            self.mark(&name, at, detail);
                        }
                        Kind::Event(name)
                    }
                };
                self.queue.push_back(Inbound { at, kind });
            }
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) => format!(
                        "the server closed the connection (code {}{})",
                        u16::from(f.code),
                        if f.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", f.reason)
                        }
                    ),
                    None => "the server closed the connection".into(),
                };
                self.mark("closed", at, why.clone());
                self.closed = Some(why);
            }
            Some(Ok(_)) => {} // ping/pong/frame: handled by tungstenite
        }
        Ok(())
    }

    async fn await_event(
        &mut self,
        step: &StepSpec,
        event: &str,
        record: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.queue.pop_front() {
                let hit = match &e.kind {
                    Kind::Audio { first } => event == "audio" || (event == "first_audio" && *first),
                    Kind::Event(name) => name == event,
                    Kind::ServerError(message) => {
                        if event == "error" {
                            true
                        } else {
                            return Err(fail(
                                FailureClass::ServerError,
                                step,
                                format!("server error while waiting for `{event}`: {message}"),
                            ));
                        }
                    }
                };
                if hit {
                    if let Some(name) = record {
                        let latency = e.at.saturating_duration_since(self.anchor);
                        self.record(name, latency, e.at);
                    }
                    return Ok(());
                }
            }
            if let Some(why) = &self.closed {
                return Err(fail(
                    FailureClass::ConnectionClosed,
                    step,
                    format!("{why} while waiting for `{event}`"),
                ));
            }
            tokio::select! {
                biased;
                _ = self.ctx.stop.changed() => self.check_stop(step)?,
                _ = sleep_until(deadline) => {
                    return Err(fail(
                        FailureClass::Timeout,
                        step,
                        format!("no `{event}` within {}", format_duration(timeout)),
                    ));
                }
                msg = self.stream.next() => self.ingest(step, msg)?,
            }
        }
    }

    /// Close politely, without letting a slow server hold the user.
    async fn close(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let _ = timeout_at(deadline, self.sink.send(Message::Close(None))).await;
        let _ = timeout_at(deadline, async {
            while let Some(Ok(m)) = self.stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}
