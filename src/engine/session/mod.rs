//! One iteration (one call) of one virtual user: connect, interpret the steps against the
//! socket, measure.
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

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::audio;
use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass, Marker, Recorder, Sample};
use crate::plan::compile::{
    Action, AudioOut, Capture, DEFAULT_AWAIT_TIMEOUT, Expectation, ScenarioSpec, StepSpec,
};
use crate::plan::model::ProtocolKind;
use crate::plan::target::WireSpec;
use crate::protocol::client::{Codec, RawCodec, WireEvent};
use crate::protocol::custom::CustomCodec;
use crate::protocol::openai::OpenAiCodec;
use crate::protocol::twilio::TwilioCodec;
use crate::protocol::{Control, ProtocolError};

use super::connect::{self, Connection, Ws};

/// Frame length of the silence sent between utterances with `continuous_audio`.
const IDLE_FRAME: Duration = Duration::from_millis(20);

/// A pause in the bot's speech longer than this means it stopped talking.
pub const STOP_GAP: Duration = Duration::from_millis(250);

/// A gap before a speech chunk longer than this means the bot had paused and resumed.
pub const RESUME_GAP: Duration = Duration::from_millis(100);

/// What the iteration needs from its user.
pub struct Ctx<'a> {
    pub conn: &'a Connection,
    pub wire: &'a WireSpec,
    pub connect_timeout: Duration,
    pub sample_rate: u32,
    pub speech_threshold_dbfs: f64,
    pub jitter_buffer: Duration,
    pub run_start: Instant,
    /// Keep the received audio (placed at its arrival time) for `report.record_audio`.
    pub keep_audio: bool,
    pub rec: &'a mut Recorder,
    pub rng: &'a mut StdRng,
    pub stop: watch::Receiver<bool>,
}

/// A named inbound event with its arrival time.
#[derive(Debug, Clone)]
struct Inbound {
    at: Instant,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Event {
        name: String,
        json: Option<Value>,
        /// Never "unexpected" in a strict `expect`.
        informational: bool,
    },
    ServerError(String),
}

/// How long one send may take before the server counts as no longer reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Most received audio kept per call for `report.record_audio` (10 minutes).
const MAX_HEARD_SECONDS: usize = 600;

/// Resolves when the run is stopped; never, if the stop signal's sender is gone.
pub(crate) async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One reply audio chunk in the arrival log.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    at: Instant,
    /// The audio it carries.
    dur: Duration,
    speech: bool,
}

impl Chunk {
    /// When its audio has played out (arrival plus duration).
    fn end(&self) -> Instant {
        self.at + self.dur
    }
}

/// Silence between the end of `prev`'s audio and the arrival of `next`.
fn silence_between(prev: &Chunk, next: &Chunk) -> Duration {
    next.at.saturating_duration_since(prev.end())
}

/// What an iteration leaves for the timeline: notable instants and timestamped measurements.
#[derive(Debug, Default)]
pub struct Trace {
    pub markers: Vec<Marker>,
    pub samples: Vec<Sample>,
    /// What the caller heard from the moment of connecting (when asked to keep it).
    pub heard: Vec<i16>,
}

/// When the user is (or was last) speaking.
#[derive(Debug, Clone, Copy, Default)]
struct UserSpeech {
    /// Start of the current utterance, if one is open or scheduled.
    start: Option<Instant>,
    /// Its scheduled end (None: open until `speech_end`).
    end: Option<Instant>,
    /// Whether the bot was already talking when it started (then its audio is not a reverse
    /// barge-in).
    bot_was_talking: bool,
    /// A reverse barge-in was already counted for this utterance.
    counted: bool,
}

impl UserSpeech {
    fn speaking_at(&self, t: Instant) -> bool {
        self.start.is_some_and(|s| t >= s) && self.end.is_none_or(|e| t < e)
    }

    /// Whether the user spoke at any time in `[a, b]`.
    fn spoke_between(&self, a: Instant, b: Instant) -> bool {
        match self.start {
            Some(s) => s <= b && self.end.is_none_or(|e| e >= a),
            None => false,
        }
    }
}

struct Session<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    /// Named events not yet consumed by `await`/`expect`.
    queue: VecDeque<Inbound>,
    /// Every reply audio chunk of the call. Audio is a separate stream from named events:
    /// waiting for one never consumes the other.
    chunks: Vec<Chunk>,
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

    user: UserSpeech,
    /// Client playout model: when the audio received so far finishes playing.
    playout_end: Option<Instant>,
    last_chunk: Option<(Instant, Duration)>,
    closed: Option<String>,
    trace: Trace,
    codec: Codec,
    /// When the next silence frame is due (`continuous_audio`, between utterances).
    idle_next: Option<Instant>,
    /// Text of the last clip sent, attached to the next `speech_end`.
    said: Option<String>,
    connected: Instant,
}

fn fail(class: FailureClass, step: &StepSpec, message: impl Into<String>) -> Failure {
    Failure {
        class,
        step: step.position(),
        message: message.into(),
    }
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
fn new_codec(wire: &WireSpec, rate: u32, builtin: bool, rng: &mut StdRng) -> Codec {
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
    let ws: Ws = match connect::open(ctx.conn, ctx.connect_timeout).await {
        Ok(ws) => ws,
        Err((class, message)) => return connect_failure(class, message),
    };
    let connected = Instant::now();
    let codec = new_codec(ctx.wire, ctx.sample_rate, ctx.conn.builtin, ctx.rng);
    let (sink, stream) = ws.split();
    let mut s = Session {
        ctx,
        sink,
        stream,
        queue: VecDeque::new(),
        chunks: Vec::new(),
        audio_cursor: None,
        marked_first: (false, false),
        last_interrupt: None,
        closed_at: String::new(),
        marks: HashMap::new(),
        anchor: connected,
        anchor_lag: None,
        speech_end_lag: None,

        user: UserSpeech::default(),
        playout_end: None,
        last_chunk: None,
        closed: None,
        trace: Trace::default(),
        codec,
        idle_next: None,
        said: None,
        connected,
    };
    s.record("connect", connected - started, connected);
    s.marks.insert("connected".into(), connected);
    s.mark("connected", connected, String::new());

    let deadline = scenario.timeout.map(|t| started + t);
    let mut failure = s.open_protocol(scenario).await.err();
    if s.ctx.wire.continuous_audio {
        s.idle_next = Some(connected + IDLE_FRAME);
    }
    for step in scenario.steps.iter().take_while(|_| failure.is_none()) {
        let result = match deadline {
            Some(d) => timeout_at(d, s.step(step)).await.unwrap_or_else(|_| {
                Err(fail(
                    FailureClass::Timeout,
                    step,
                    format!(
                        "scenario `{}` took longer than its timeout {}",
                        scenario.name,
                        format_duration(d - started)
                    ),
                ))
            }),
            None => s.step(step).await,
        };
        if let Err(f) = result {
            failure = Some(f);
            break;
        }
    }
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
        if metric == "frame_jitter" {
            return; // one per chunk: the histogram has it, the timeline would balloon
        }
        let at_us = self.run_us(at);
        self.trace.samples.push(Sample {
            metric: metric.to_string(),
            at_us,
            value_ms: crate::metrics::sample_ms(value),
        });
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
        let at_us = self.run_us(at);
        self.trace.markers.push(Marker {
            kind: kind.to_string(),
            at_us,
            detail,
        });
    }

    /// The user starts speaking at `at` (until `end`, or until `speech_end` when None).
    fn user_starts(&mut self, at: Instant, end: Option<Instant>) {
        let bot_was_talking = self
            .chunks
            .last()
            .is_some_and(|c| c.speech && at.saturating_duration_since(c.at) <= STOP_GAP);
        self.user = UserSpeech {
            start: Some(at),
            end,
            bot_was_talking,
            counted: false,
        };
        // A pause of the bot while the user talks is expected, not a glitch.
        self.playout_end = None;
        self.last_chunk = None;
    }

    /// The user finished speaking at `at`: latencies are measured from here, and reply audio
    /// before it is not an answer to it.
    fn set_anchor(&mut self, at: Instant) {
        self.anchor = at;
        self.anchor_lag = self
            .speech_end_lag
            .filter(|(e, _)| *e == at)
            .map(|(_, l)| l);

        if self.user.end.is_none_or(|e| e > at) {
            self.user.end = Some(at);
        }
        self.marked_first = (false, false);
        self.playout_end = None;
        self.last_chunk = None;
        self.marks.insert("speech_end".into(), at);
        self.mark("speech_end", at, String::new());
        // Reply audio may already have arrived (e.g. during trailing silence).
        self.mark_firsts();
    }

    /// The first reply chunk answering the current end of speech: at or after it and, if the
    /// bot was still talking then (the tail of an earlier answer), only after a silence longer
    /// than [`RESUME_GAP`].
    fn first_after_anchor(&self, speech_only: bool) -> Option<Instant> {
        let mut prev: Option<&Chunk> = None;
        for c in self.chunks.iter().filter(|c| !speech_only || c.speech) {
            if c.at >= self.anchor && prev.is_none_or(|p| silence_between(p, c) > RESUME_GAP) {
                return Some(c.at);
            }
            prev = Some(c);
        }
        None
    }

    /// Put this turn's first audio and first speech on the timeline once they exist.
    fn mark_firsts(&mut self) {
        if !self.marked_first.0
            && let Some(at) = self.first_after_anchor(false)
        {
            self.marked_first.0 = true;
            self.mark("first_audio", at, String::new());
        }
        if !self.marked_first.1
            && let Some(at) = self.first_after_anchor(true)
        {
            self.marked_first.1 = true;
            self.mark("first_speech", at, String::new());
        }
    }

    /// The instant latencies of a step are measured from.
    fn reference(&self, step: &StepSpec, from: Option<&str>) -> Result<Instant, Failure> {
        match from {
            None => Ok(self.anchor),
            Some(name) => self.marks.get(name).copied().ok_or_else(|| {
                fail(
                    FailureClass::ExpectationFailed,
                    step,
                    format!("`from: {name}`: that mark or event has not happened yet"),
                )
            }),
        }
    }

    async fn step(&mut self, step: &StepSpec) -> Result<(), Failure> {
        match &step.action {
            Action::SendAudio(out) => {
                let start = Instant::now();
                let speech_end = self.stream_audio(step, out, start).await?;
                self.set_anchor(speech_end);
                Ok(())
            }
            Action::Send(control) => self.send_control(step, *control).await,
            Action::Await {
                event,
                record,
                from,
                timeout,
                capture,
            } => {
                let reference = self.reference(step, from.as_deref())?;
                let deadline = Instant::now() + *timeout;
                let (at, json) = self.next_event(step, event, deadline, false).await?;
                self.after_event(
                    event,
                    at,
                    json.as_ref(),
                    reference,
                    record.as_deref(),
                    capture,
                );
                Ok(())
            }
            Action::Wait(dist) => {
                let until = Instant::now() + dist.sample(self.ctx.rng);
                self.pump_until(step, until).await
            }
            Action::Interrupt {
                after,
                audio,
                explicit,
                speech_end,
            } => {
                let first = match self.first_after_anchor(false) {
                    Some(t) => t,
                    None => {
                        let deadline = Instant::now() + DEFAULT_AWAIT_TIMEOUT;
                        self.next_event(step, "first_audio", deadline, false)
                            .await?
                            .0
                    }
                };
                let due = first + after.sample(self.ctx.rng);
                self.pump_until(step, due).await?;
                let control = if *explicit {
                    Control::Interrupt
                } else {
                    Control::SpeechStart
                };
                let msgs = self
                    .codec
                    .control(control, None, Instant::now())
                    .map_err(|e| encode_failure(step, e))?;
                for msg in msgs {
                    self.send(step, msg).await?;
                }
                let at = Instant::now();
                self.marks.insert("interrupt".into(), at);
                self.last_interrupt = Some(at);
                self.mark("interrupt", at, String::new());
                self.user_starts(at, None);
                let mut end = at;
                if let Some(out) = audio {
                    end = self.stream_audio(step, out, at).await?;
                }
                if *speech_end {
                    self.pump_until(step, end).await?;
                    self.send_control(step, Control::SpeechEnd).await?;
                } else {
                    self.set_anchor(end);
                }
                Ok(())
            }
            Action::Mark(name) => {
                let now = Instant::now();
                self.marks.insert(name.clone(), now);
                self.mark(&format!("mark:{name}"), now, String::new());
                Ok(())
            }
            Action::Expect {
                what,
                record,
                from,
                within,
                capture,
                check,
            } => {
                let result = self
                    .evaluate(
                        step,
                        what,
                        record.as_deref(),
                        from.as_deref(),
                        *within,
                        capture,
                    )
                    .await;
                match (check, result) {
                    (None, r) => r,
                    (Some(name), Ok(())) => {
                        self.ctx.rec.check(name, true);
                        Ok(())
                    }
                    (Some(_), Err(f)) if f.class == FailureClass::Aborted => Err(f),
                    (Some(name), Err(f)) => {
                        self.ctx.rec.check(name, false);
                        self.mark(
                            "check_failed",
                            Instant::now(),
                            format!("{name}: {}", f.message),
                        );
                        Ok(())
                    }
                }
            }
        }
    }

    async fn send_control(&mut self, step: &StepSpec, control: Control) -> Result<(), Failure> {
        let text = if control == Control::SpeechEnd {
            self.said.take()
        } else {
            None
        };
        let msgs = self
            .codec
            .control(control, text.as_deref(), Instant::now())
            .map_err(|e| encode_failure(step, e))?;
        for msg in msgs {
            self.send(step, msg).await?;
        }
        let now = Instant::now();
        match control {
            Control::SpeechEnd => self.set_anchor(now),
            Control::SpeechStart => {
                self.marks.insert("speech_start".into(), now);
                self.mark("speech_start", now, String::new());
                self.user_starts(now, None);
            }
            Control::Interrupt => {
                self.marks.insert("interrupt".into(), now);
                self.last_interrupt = Some(now);
                self.mark("interrupt", now, String::new());
            }
        }
        Ok(())
    }

    async fn send(&mut self, step: &StepSpec, msg: Message) -> Result<(), Failure> {
        self.send_msg(msg)
            .await
            .map_err(|(class, message)| fail(class, step, message))
    }

    async fn send_msg(&mut self, msg: Message) -> Result<(), (FailureClass, String)> {
        if let Some(why) = &self.closed {
            return Err((
                FailureClass::ConnectionClosed,
                format!("cannot send: {why}"),
            ));
        }
        let deadline = Instant::now() + SEND_TIMEOUT;
        // Biased: a send that completes at once (the usual case) never arms the timer or the
        // stop subscription.
        tokio::select! {
            biased;
            r = self.sink.send(msg) => {
                r.map_err(|e| (FailureClass::SendError, format!("sending failed: {e}")))
            }
            _ = wait_stop(&mut self.ctx.stop) => Err((FailureClass::Aborted, "run stopped".into())),
            _ = sleep_until(deadline) => Err((
                FailureClass::SendError,
                format!(
                    "the server stopped reading: a send did not complete within {}",
                    format_duration(SEND_TIMEOUT)
                ),
            )),
        }
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

    /// When the session next has something to send by itself.
    fn next_tick(&self) -> Option<Instant> {
        match (self.idle_next, self.codec.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Send what is due: a silence frame between utterances, the adapter's own messages.
    async fn tick(&mut self, step: &StepSpec) -> Result<(), Failure> {
        let now = Instant::now();
        if let Some(due) = self.idle_next.filter(|d| *d <= now) {
            let n =
                (u64::from(self.ctx.sample_rate) * IDLE_FRAME.as_millis() as u64 / 1000) as usize;
            let msg = self
                .codec
                .audio(&vec![0; n])
                .map_err(|e| encode_failure(step, e))?;
            self.send(step, msg).await?;
            // Keep the cadence; after a long stall start afresh rather than bursting.
            let next = due + IDLE_FRAME;
            self.idle_next = Some(if next + IDLE_FRAME * 5 < now {
                now + IDLE_FRAME
            } else {
                next
            });
        }
        if self.codec.next_due().is_some_and(|d| d <= now) {
            for msg in self.codec.due(now) {
                self.send(step, msg).await?;
            }
        }
        Ok(())
    }

    /// Stream a clip from `start`; returns the scheduled end of its speech (before any
    /// trailing silence). The user counts as speaking until then.
    async fn stream_audio(
        &mut self,
        step: &StepSpec,
        out: &AudioOut,
        start: Instant,
    ) -> Result<Instant, Failure> {
        let clip = &out.clip;
        let speech_end =
            start + Duration::from_secs_f64(clip.speech_end() as f64 / f64::from(clip.sample_rate));
        // Inside an utterance opened by speech_start it stays open until speech_end.
        let open = self.user.start.is_some() && self.user.end.is_none();
        if !open {
            self.user_starts(start, Some(speech_end));
        }
        self.mark("audio_start", start, out.label.clone());
        self.said = out.text.clone();
        let realtime = out.pacing == crate::plan::model::Pacing::Realtime;
        let idle = self.idle_next.take().is_some();
        let mut last_due = start;
        let mut end_sent = false;
        for (i, samples) in out.clip.frames(out.frame).enumerate() {
            if realtime {
                let due = start + out.frame * (i as u32 + 1);
                self.pump_until(step, due).await?;
                let lag = Instant::now().saturating_duration_since(due);
                self.ctx.rec.record_send_lag(lag);
                last_due = due;
            }
            let msg = self
                .codec
                .audio(&samples)
                .map_err(|e| encode_failure(step, e))?;
            self.send(step, msg).await?;
            if realtime && !end_sent && last_due >= speech_end {
                // The frame carrying the end of speech has left: how late against its schedule.
                end_sent = true;
                let lag = Instant::now().saturating_duration_since(last_due);
                self.ctx.rec.record_speech_end_lag(lag);
                self.speech_end_lag = Some((speech_end, lag));
            }
        }
        if idle {
            self.idle_next =
                Some(last_due.max(Instant::now().min(last_due + IDLE_FRAME)) + IDLE_FRAME);
        }
        Ok(if realtime { speech_end } else { Instant::now() })
    }

    /// Receive (and log) inbound messages until `until`.
    async fn pump_until(&mut self, step: &StepSpec, until: Instant) -> Result<(), Failure> {
        // One timer and one stop subscription per call, not per inbound message: this runs
        // once per audio frame sent and loops once per frame received.
        let mut stop = self.ctx.stop.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        let deadline = sleep_until(until);
        tokio::pin!(deadline);
        loop {
            if self.closed.is_some() {
                // Nothing more can arrive; a closed connection is judged by the next send/await.
                tokio::select! {
                    _ = &mut stopped => return self.check_stop(step),
                    _ = &mut deadline => return Ok(()),
                }
            }
            let tick = self.next_tick();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    self.check_stop(step)?;
                    // Not stopped after all (cannot happen: `wait_stop` only resolves on stop).
                    return Ok(());
                }
                _ = &mut deadline => return Ok(()),
                _ = sleep_until(tick.unwrap_or(until)), if tick.is_some_and(|t| t < until) => self.tick(step).await?,
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
            None => {
                self.closed = Some("the server closed the connection".into());
                self.closed_at = step.position();
            }
            Some(Err(e)) => {
                let (class, why) = connect::classify_read_error(&e);
                self.mark("closed", at, why.clone());
                self.closed = Some(why.clone());
                self.closed_at = step.position();
                if class == FailureClass::ProtocolError {
                    return Err(fail(class, step, why));
                }
            }
            Some(Ok(msg @ (Message::Binary(_) | Message::Text(_)))) => {
                let events = self
                    .codec
                    .decode(&msg, at)
                    .map_err(|e| fail(FailureClass::ProtocolError, step, e.0))?;
                for event in events {
                    self.ingest_event(event, at);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) if !f.reason.is_empty() => format!(
                        "the server closed the connection (code {}: {})",
                        u16::from(f.code),
                        f.reason
                    ),
                    Some(f) => format!(
                        "the server closed the connection (code {})",
                        u16::from(f.code)
                    ),
                    None => "the server closed the connection".into(),
                };
                self.mark("closed", at, why.clone());
                self.closed = Some(why);
                self.closed_at = step.position();
            }
            Some(Ok(_)) => {} // ping/pong/raw frames: handled by tungstenite
        }
        Ok(())
    }

    /// Queue a decoded event, log audio, record captures.
    fn ingest_event(&mut self, event: WireEvent, at: Instant) {
        let kind = match event {
            WireEvent::Audio(samples) => return self.ingest_audio(&samples, at),
            WireEvent::Capture { metric, ms } => {
                return self.record(&metric, Duration::from_secs_f64(ms / 1000.0), at);
            }
            WireEvent::Error(message) => {
                self.mark("error", at, message.clone());
                Kind::ServerError(message)
            }
            WireEvent::Event {
                name,
                json,
                detail,
                informational,
            } => {
                if !informational {
                    self.mark(&name, at, detail);
                }
                if name == "response_end" {
                    self.playout_end = None;
                    self.last_chunk = None;
                }
                Kind::Event {
                    name,
                    json: Some(json),
                    informational,
                }
            }
        };
        self.queue.push_back(Inbound { at, kind });
    }

    /// Log a reply audio chunk and update the audio-quality measurements.
    fn ingest_audio(&mut self, pcm: &[i16], at: Instant) {
        if pcm.is_empty() {
            return;
        }
        let samples = pcm.len();
        let dur = Duration::from_secs_f64(samples as f64 / f64::from(self.ctx.sample_rate));
        let speech = audio::dbfs(pcm) >= self.ctx.speech_threshold_dbfs;

        // Glitch: the chunk arrives after everything received so far has finished playing
        // (a playout underrun) while the user was silent; a pause the user caused is expected.
        // Playback (re)starts with the jitter buffer, as a client player would rebuffer.
        let restart = at + self.ctx.jitter_buffer + dur;
        self.playout_end = Some(match self.playout_end {
            None => restart,
            Some(end) if at > end => {
                if !self.user.spoke_between(end, at) {
                    self.record("glitch", at - end, at);
                    let gap = (at - end).as_secs_f64() * 1000.0;
                    self.mark("glitch", at, format!("{gap:.0}ms underrun"));
                }
                restart
            }
            Some(end) => end + dur,
        });
        // Frame jitter: how far the gap between two chunks is from the audio they carry.
        if let Some((prev_at, prev_dur)) = self.last_chunk
            && !self.user.spoke_between(prev_at, at)
        {
            let gap = at - prev_at;
            let jitter = gap.abs_diff(prev_dur);
            self.record("frame_jitter", jitter, at);
        }
        self.last_chunk = Some((at, dur));
        // Reverse barge-in: the bot starts talking while the user still is.
        if speech
            && self.user.speaking_at(at)
            && !self.user.bot_was_talking
            && !self.user.counted
            && let Some(start) = self.user.start
        {
            self.user.counted = true;
            self.record("reverse_barge_in", at - start, at);
            self.mark("reverse_barge_in", at, String::new());
        }

        if self.ctx.keep_audio {
            // Place the chunk at its arrival time; gaps become silence, overlaps queue up.
            let rate = f64::from(self.ctx.sample_rate);
            let pos = ((at - self.connected).as_secs_f64() * rate) as usize;
            let heard = &mut self.trace.heard;
            let cap = MAX_HEARD_SECONDS * self.ctx.sample_rate as usize;
            if pos < cap {
                if heard.len() < pos {
                    heard.resize(pos, 0);
                }
                heard.extend_from_slice(pcm);
                heard.truncate(cap);
            }
        }
        self.chunks.push(Chunk { at, dur, speech });
        self.mark_firsts();
    }

    /// Wait for the next event called `name`. Earlier events of other kinds are skipped,
    /// unless `strict` (then any other named event is `unexpected_event`).
    async fn next_event(
        &mut self,
        step: &StepSpec,
        name: &str,
        deadline: Instant,
        strict: bool,
    ) -> Result<(Instant, Option<Value>), Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        let allowed = Duration::from_millis(left.as_micros().div_ceil(1000) as u64);
        let is_audio = matches!(name, "audio" | "first_audio" | "first_speech");
        // One timer and one stop subscription for the whole wait (it loops per inbound message).
        let mut stop = self.ctx.stop.clone();
        let stopped = wait_stop(&mut stop);
        tokio::pin!(stopped);
        let timeout = sleep_until(deadline);
        tokio::pin!(timeout);
        loop {
            if is_audio {
                let found = match name {
                    "first_audio" => self.first_after_anchor(false),
                    "first_speech" => self.first_after_anchor(true),
                    _ => {
                        let cursor = self.audio_cursor;
                        let anchor = self.anchor;
                        self.chunks
                            .iter()
                            .find(|c| c.at >= anchor && cursor.is_none_or(|k| c.at > k))
                            .map(|c| c.at)
                    }
                };
                if let Some(at) = found {
                    if name == "audio" {
                        self.audio_cursor = Some(at);
                    }
                    return Ok((at, None));
                }
                // A server error fails the wait even though it is on the other stream.
                let error_at = self
                    .queue
                    .iter()
                    .position(|e| matches!(e.kind, Kind::ServerError(_)));
                if let Some(Inbound {
                    kind: Kind::ServerError(message),
                    ..
                }) = error_at.and_then(|i| self.queue.remove(i))
                {
                    return Err(fail(
                        FailureClass::ServerError,
                        step,
                        format!("server error while waiting for `{name}`: {message}"),
                    ));
                }
            }
            while !is_audio && let Some(e) = self.queue.pop_front() {
                match e.kind {
                    Kind::Event {
                        name: got,
                        json,
                        informational,
                    } => {
                        if got == name {
                            return Ok((e.at, json));
                        }
                        // Server metrics and progress notes are never "unexpected".
                        if strict && !informational {
                            return Err(fail(
                                FailureClass::UnexpectedEvent,
                                step,
                                format!("expected `{name}`, the server sent `{got}`"),
                            ));
                        }
                    }
                    Kind::ServerError(message) => {
                        if name == "error" {
                            let json = serde_json::json!({"type": "error", "message": message});
                            return Ok((e.at, Some(json)));
                        }
                        return Err(fail(
                            FailureClass::ServerError,
                            step,
                            format!("server error while waiting for `{name}`: {message}"),
                        ));
                    }
                }
            }
            if let Some(why) = &self.closed {
                return Err(fail(
                    FailureClass::ConnectionClosed,
                    step,
                    format!("{why} while waiting for `{name}`"),
                ));
            }
            let tick = self.next_tick();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    self.check_stop(step)?;
                    return Err(fail(FailureClass::Aborted, step, "run stopped"));
                }
                _ = sleep_until(tick.unwrap_or(deadline)), if tick.is_some_and(|t| t < deadline) => self.tick(step).await?,
                _ = &mut timeout => {
                    return Err(fail(
                        FailureClass::Timeout,
                        step,
                        format!("no `{name}` within {}", format_duration(allowed)),
                    ));
                }
                msg = self.stream.next() => self.ingest(step, msg)?,
            }
        }
    }

    /// Bookkeeping after an awaited/expected event: its mark, the latency, captured fields.
    fn after_event(
        &mut self,
        name: &str,
        at: Instant,
        json: Option<&Value>,
        reference: Instant,
        record: Option<&str>,
        capture: &[Capture],
    ) {
        self.marks.insert(name.to_string(), at);
        if let Some(metric) = record {
            self.record_since(metric, reference, at);
        }
        if let Some(json) = json {
            for c in capture {
                let mut v = json;
                let mut found = true;
                for key in &c.path {
                    match v.get(key) {
                        Some(next) => v = next,
                        None => {
                            found = false;
                            break;
                        }
                    }
                }
                if let Some(ms) = v
                    .as_f64()
                    .filter(|ms| found && ms.is_finite() && *ms >= 0.0)
                {
                    self.record(&c.metric, Duration::from_secs_f64(ms / 1000.0), at);
                }
            }
        }
    }

    async fn evaluate(
        &mut self,
        step: &StepSpec,
        what: &Expectation,
        record: Option<&str>,
        from: Option<&str>,
        within: Duration,
        capture: &[Capture],
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        let ms = |d: Duration| format!("{:.0}ms", d.as_secs_f64() * 1000.0);
        match what {
            Expectation::Event { name, conditions } => {
                let reference = self.reference(step, from)?;
                let deadline = Instant::now() + within;
                let (at, json) = self.next_event(step, name, deadline, true).await?;
                let empty = Value::Null;
                let j = json.as_ref().unwrap_or(&empty);
                if let Some(c) = conditions.iter().find(|c| !c.holds(j)) {
                    return Err(expectation(format!(
                        "`{name}` did not match `{}`: got {}",
                        c.describe(),
                        preview(&j.to_string())
                    )));
                }
                self.after_event(name, at, json.as_ref(), reference, record, capture);
                Ok(())
            }
            Expectation::NoAudio => {
                let start = Instant::now();
                self.pump_until(step, start + within).await?;
                match self.chunks.iter().find(|c| c.speech && c.at >= start) {
                    Some(c) => Err(expectation(format!(
                        "the bot spoke {} into a {} silence",
                        ms(c.at - start),
                        ms(within)
                    ))),
                    None => Ok(()),
                }
            }
            Expectation::AudioStops => {
                let reference = match from {
                    Some(_) => self.reference(step, from)?,
                    None => self.last_interrupt.take().unwrap_or(self.anchor),
                };
                let talking = self
                    .chunks
                    .iter()
                    .rev()
                    .find(|c| c.speech && c.at <= reference)
                    .is_some_and(|c| reference - c.at <= STOP_GAP);
                let give_up = reference + within + STOP_GAP;
                loop {
                    // The last speech chunk after the reference that is followed by a gap.
                    // `prev` is when the audio heard so far stops playing.
                    let mut prev = reference;
                    let mut stopped = None;
                    for c in self.chunks.iter().filter(|c| c.speech && c.at > reference) {
                        if c.at.saturating_duration_since(prev) > STOP_GAP {
                            stopped = Some(prev);
                            break;
                        }
                        prev = prev.max(c.end());
                    }
                    let now = Instant::now();
                    if stopped.is_none() && now.saturating_duration_since(prev) > STOP_GAP {
                        stopped = Some(prev);
                    }
                    if let Some(stop_at) = stopped {
                        if !talking && stop_at == reference {
                            return Err(expectation(
                                "the bot was not speaking when interrupted".into(),
                            ));
                        }
                        // A reply that simply ran to its end is not a bot that stopped for the
                        // caller: the raw protocol says a barge-in is answered by `interrupted`.
                        let named_since = |name: &str| {
                            self.queue.iter().any(|e| {
                                e.at >= reference
                                    && matches!(&e.kind, Kind::Event { name: n, .. } if n == name)
                            })
                        };
                        if named_since("response_end") && !named_since("interrupted") {
                            return Err(expectation(
                                "the reply ran to its end (`response_end` without `interrupted`): \
                                 the bot did not stop for the interruption"
                                    .into(),
                            ));
                        }
                        let latency = stop_at - reference;
                        if let Some(m) = record {
                            self.record_since(m, reference, stop_at);
                        }
                        self.marks.insert("audio_stops".into(), stop_at);
                        self.mark("audio_stops", stop_at, String::new());
                        return if latency > within {
                            Err(expectation(format!(
                                "the bot kept talking {} after the interruption (allowed {})",
                                ms(latency),
                                ms(within)
                            )))
                        } else {
                            Ok(())
                        };
                    }
                    if now >= give_up {
                        return Err(expectation(format!(
                            "the bot was still talking {} after the interruption",
                            ms(now - reference)
                        )));
                    }
                    self.pump_until(
                        step,
                        (prev + STOP_GAP + Duration::from_millis(1)).min(give_up),
                    )
                    .await?;
                }
            }
            Expectation::AudioResumes => {
                let reference = self.reference(step, from)?;
                let deadline = reference + within;
                loop {
                    // The first speech chunk after the reference that follows a pause.
                    let mut prev: Option<&Chunk> = None;
                    let mut resumed = None;
                    let mut flowing = false;
                    for c in self.chunks.iter().filter(|c| c.speech) {
                        if c.at >= reference {
                            match prev {
                                Some(p) if silence_between(p, c) > RESUME_GAP => {
                                    resumed = Some(c.at);
                                    break;
                                }
                                _ => flowing = true,
                            }
                        }
                        prev = Some(c);
                    }
                    let now = Instant::now();
                    if let Some(at) = resumed {
                        // Audio after a turn change is a new answer, not a resumption.
                        let new_turn = self.queue.iter().find_map(|e| match &e.kind {
                            Kind::Event { name, .. }
                                if e.at >= reference
                                    && e.at <= at
                                    && matches!(
                                        name.as_str(),
                                        "interrupted" | "transcript" | "response_start"
                                    ) =>
                            {
                                Some(name.clone())
                            }
                            _ => None,
                        });
                        if let Some(name) = new_turn {
                            return Err(expectation(format!(
                                "the bot started a new answer (`{name}`) instead of resuming"
                            )));
                        }
                        let latency = at.saturating_duration_since(reference);
                        if let Some(m) = record {
                            self.record_since(m, reference, at);
                        }
                        self.marks.insert("audio_resumes".into(), at);
                        self.mark("audio_resumes", at, String::new());
                        return if latency > within {
                            Err(expectation(format!(
                                "the bot resumed after {} (allowed {})",
                                ms(latency),
                                ms(within)
                            )))
                        } else {
                            Ok(())
                        };
                    }
                    if now >= deadline {
                        // Speech that never paused after the reference: the bot talked on.
                        let recent = prev
                            .is_some_and(|p| now.saturating_duration_since(p.end()) <= STOP_GAP);
                        if flowing && recent {
                            if let Some(m) = record {
                                self.record(m, Duration::ZERO, now);
                            }
                            return Ok(());
                        }
                        return Err(expectation(format!(
                            "the bot did not resume within {} of the user's last speech",
                            ms(within)
                        )));
                    }
                    let next = (Instant::now() + Duration::from_millis(20)).min(deadline);
                    self.pump_until(step, next).await?;
                }
            }
        }
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

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        s.push('…');
    }
    s
}
