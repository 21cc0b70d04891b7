//! One iteration (one call) of one virtual user over a WebSocket: connect, interpret the steps
//! against the socket, measure.
//!
//! Every inbound message is timestamped on arrival. Named events go to a queue that `await` and
//! `expect` consume in order; every reply audio chunk also goes to an arrival log (time, level,
//! duration) from which the audio expectations (stops, resumes, silence) and the audio-quality
//! metrics (glitches, frame jitter, reverse barge-in) are computed. Core measurements come from
//! the audio frames themselves, never from optional server messages.
//!
//! Outgoing audio is paced against an absolute schedule with capture semantics: frame *i*
//! covers `[start + i·frame, start + (i+1)·frame)` and is sent at the end of that interval, as
//! a microphone would deliver it.
//!
//! The parts: [`steps`] interprets the steps, [`pacing`] sends (audio on its schedule, silence
//! and the adapter's timed messages), [`ingest`] reads the socket into the event queue and the
//! [`timeline`] of received audio, and [`expect`] waits for events and judges the audio.

mod expect;
mod heard;
mod hearing;
mod ingest;
mod pacing;
mod steps;
mod timeline;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::{Failure, FailureClass};
use crate::plan::FRAME_JITTER;
use crate::plan::compile::{ScenarioSpec, StepSpec};
use crate::plan::model::ProtocolKind;
use crate::plan::target::WireSpec;
use crate::protocol::ProtocolError;
use crate::protocol::client::{Codec, RawCodec};
use crate::protocol::custom::CustomCodec;
use crate::protocol::openai::OpenAiCodec;
use crate::protocol::twilio::TwilioCodec;

use super::call::Ctx;
use super::call::{fail, scenario_timeout};
use super::connect::{self, Ws};
use super::trace::CallRecorder;
use super::trace::Trace;
use super::webrtc::{BoxSink, BoxStream};
use ingest::Inbound;
use pacing::IDLE_FRAME;
use timeline::{Playout, UserSpeech};

struct Session<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    sink: BoxSink,
    stream: BoxStream,
    /// Named events not yet consumed by `await`/`expect`.
    queue: VecDeque<Inbound>,
    /// What the caller hears: every reply audio chunk of the call on the playout clock. Audio
    /// is a separate stream from named events: waiting for one never consumes the other.
    playout: Playout,
    /// `await: audio` returns chunks after this one.
    audio_cursor: Option<Instant>,
    /// Whether this turn's first audio / first speech have been put on the timeline.
    marked_first: (bool, bool),
    /// The last barge-in not yet judged by `audio_stops`.
    last_interrupt: Option<Instant>,
    /// Where the server's close was noticed.
    closed_at: String,
    marks: HashMap<String, Instant>,
    /// When the user's last utterance ended (scheduled), the default reference for latencies.
    anchor: Instant,
    /// How late the end of speech at `anchor` actually left (None: the anchor is not a
    /// scheduled end of speech); see `crate::health`.
    anchor_lag: Option<Duration>,
    /// The last real-time utterance's scheduled end of speech and how late it left.
    speech_end_lag: Option<(Instant, Duration)>,
    /// When the session's next step is due, while the steps so far run on a schedule
    /// (real-time audio, `wait`): a step starts from here, not from when the previous one
    /// happened to finish, so a stalled generator does not shift what is measured after it.
    due: Option<Instant>,

    user: UserSpeech,
    closed: Option<String>,
    recorder: CallRecorder,
    codec: Codec,
    /// When the next silence frame is due (`continuous_audio`, between utterances).
    idle_next: Option<Instant>,
    /// Text of the last clip sent, attached to the next `speech_end`.
    said: Option<String>,
    connected: Instant,
    /// The last awaited or expected event's JSON (`{{ event.… }}` in `send_json`).
    last_event: Option<serde_json::Value>,
    /// `on_tool_call` answers decoded but not sent yet (sent right after the read that
    /// brought the call), with the tool they answer.
    outbox: Vec<(Message, String)>,
    /// A tool call (OpenAI Realtime) nothing answered: the bot waits for its result.
    unanswered_tool: Option<String>,
    /// The running step's breakdown groups, when it has `tags:` (else the scenario's).
    step_groups: Option<std::sync::Arc<[String]>>,
}

fn connect_failure(class: FailureClass, message: String) -> (Trace, Option<Failure>) {
    (
        Trace::default(),
        Some(Failure {
            class,
            step: String::new(),
            message,
        }),
    )
}

/// The wire adapter of one call.
fn new_codec(wire: &WireSpec, rate: u32, builtin: bool, rng: &mut crate::engine::UserRng) -> Codec {
    match (&wire.protocol, &wire.custom) {
        (ProtocolKind::Twilio, _) => {
            Codec::Twilio(TwilioCodec::new(wire.twilio_parameters.clone(), rng))
        }
        (ProtocolKind::OpenaiRealtime, _) => Codec::OpenAi(OpenAiCodec::new(
            wire.openai.turn_detection,
            wire.openai.session.clone(),
            rate,
            builtin,
        )),
        (ProtocolKind::Custom, Some(proto)) => Codec::Custom(CustomCodec::new(proto.clone(), rng)),
        _ => Codec::Raw(RawCodec { sample_rate: rate }),
    }
}

/// Run one iteration of `scenario`. Returns its trace and the failure, if any.
pub async fn run_iteration(ctx: &mut Ctx<'_>, scenario: &ScenarioSpec) -> (Trace, Option<Failure>) {
    let started = Instant::now();
    let opened = if ctx.wire.protocol == ProtocolKind::Webrtc {
        Box::pin(super::webrtc::open(
            ctx.conn,
            &ctx.wire.webrtc,
            ctx.sample_rate,
            ctx.speech_threshold_dbfs,
            ctx.connect_timeout,
        ))
        .await
    } else {
        // Boxed: the connect future (TCP, TLS, the WebSocket handshake) is large and lives
        // only while connecting; inline, its bytes would sit in every user's task all run.
        Box::pin(connect::open(ctx.conn, ctx.connect_timeout))
            .await
            .map(|ws: Ws| {
                let (sink, stream) = ws.split();
                (Box::pin(sink) as BoxSink, Box::pin(stream) as BoxStream)
            })
    };
    let (sink, stream) = match opened {
        Ok(io) => io,
        Err((class, message)) => return connect_failure(class, message),
    };
    let connected = Instant::now();
    let codec = new_codec(ctx.wire, ctx.sample_rate, ctx.conn.builtin, ctx.rng);
    let run_start = ctx.run_start;
    let playout = Playout::new(ctx.playout);
    let mut s = Session {
        ctx,
        sink,
        stream,
        queue: VecDeque::new(),
        playout,
        audio_cursor: None,
        marked_first: (false, false),
        last_interrupt: None,
        closed_at: String::new(),
        marks: HashMap::new(),
        anchor: connected,
        anchor_lag: None,
        speech_end_lag: None,
        due: None,

        user: UserSpeech::default(),
        closed: None,
        recorder: CallRecorder::new(run_start),
        codec,
        idle_next: None,
        said: None,
        connected,
        last_event: None,
        outbox: Vec::new(),
        unanswered_tool: None,
        step_groups: None,
    };
    s.record("connect", connected - started, connected);
    s.marks.insert("connected".into(), connected);
    s.mark("connected", connected, String::new());

    let deadline = scenario.timeout.map(|t| started + t);
    let mut failure = Box::pin(s.open_protocol(scenario)).await.err();
    if s.ctx.wire.continuous_audio {
        s.idle_next = Some(connected + IDLE_FRAME);
    }
    for step in scenario.steps.iter().take_while(|_| failure.is_none()) {
        // Boxed: the call's future would otherwise reserve the largest step inline.
        let running = Box::pin(s.step(step));
        let result = match deadline {
            Some(d) => timeout_at(d, running).await.unwrap_or_else(|_| {
                Err(fail(
                    FailureClass::Timeout,
                    step,
                    scenario_timeout(&scenario.name, d - started),
                ))
            }),
            None => running.await,
        };
        if let Err(f) = result {
            failure = Some(f);
            break;
        }
    }
    s.step_groups = None;
    // A server that hangs up before the call's last step fails it, even with a normal close.
    if failure.is_none()
        && let Some(why) = &s.closed
    {
        failure = Some(Failure {
            class: FailureClass::ConnectionClosed,
            step: s.closed_at.clone(),
            message: format!("{why} in the middle of the call"),
        });
    }
    if failure.is_none() {
        let now = Instant::now();
        s.record("iteration", now - started, now);
    }
    Box::pin(s.close()).await;
    (s.recorder.finish(), failure)
}

impl Session<'_, '_> {
    /// Record a measurement taken at `at`.
    fn record(&mut self, metric: &str, value: Duration, at: Instant) {
        if metric == FRAME_JITTER && !self.ctx.detail.frame_jitter {
            // One per chunk: the histogram has it, the timeline would balloon (unless a
            // threshold judges it over time).
            let groups = self.step_groups.as_deref().unwrap_or(self.ctx.groups);
            self.ctx.rec.record_grouped(metric, value, groups);
            return;
        }
        let groups = self.step_groups.as_deref().unwrap_or(self.ctx.groups);
        self.recorder
            .record(self.ctx.rec, groups, metric, value, at);
    }

    /// Record `at - reference`; when the reference is a scheduled end of speech, also from
    /// when that speech actually finished leaving (kept apart, out of thresholds).
    fn record_since(&mut self, metric: &str, reference: Instant, at: Instant) {
        self.record(metric, at.saturating_duration_since(reference), at);
        if let Some(lag) = self.anchor_lag.filter(|_| reference == self.anchor) {
            let actual = at.saturating_duration_since(reference + lag);
            self.ctx.rec.record_from_actual_end(metric, actual);
        }
    }

    fn mark(&mut self, kind: &str, at: Instant, detail: String) {
        self.recorder.mark(kind, at, detail);
    }

    /// The adapter's opening messages (Twilio's `connected`/`start`, Realtime's
    /// `session.update`).
    async fn open_protocol(&mut self, scenario: &ScenarioSpec) -> Result<(), Failure> {
        let at_open = |class, message| Failure {
            class,
            step: format!(
                "scenario `{}`, opening the {} protocol",
                scenario.name,
                self.ctx.wire.protocol.name()
            ),
            message,
        };
        let msgs = match self.codec.open() {
            Ok(m) => m,
            Err(e) => return Err(at_open(FailureClass::ProtocolError, e.0)),
        };
        for msg in msgs {
            if let Err((class, message)) = self.send_msg(msg).await {
                return Err(at_open(class, message));
            }
        }
        Ok(())
    }

    /// Close politely, without letting a slow server hold the user.
    async fn close(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        for msg in self.codec.close().unwrap_or_default() {
            let _ = timeout_at(deadline, self.sink.send(msg)).await;
        }
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

/// A message the adapter could not build (a custom template failed).
fn encode_failure(step: &StepSpec, e: ProtocolError) -> Failure {
    fail(FailureClass::ProtocolError, step, e.0)
}
