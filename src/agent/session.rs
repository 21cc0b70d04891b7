//! One connection of the reference agent: WebSocket handshake, a single writer task fed by a
//! bounded channel, and the per-connection state machine driven by one `select!` loop over
//! (incoming message, the earliest due timer, shutdown).
//!
//! States of the agent's side of the conversation ([`Phase`]):
//!
//! ```text
//!  Idle ──end of user speech──► Thinking(Asr) ──► [Tool] ──► Generate ──► Speaking ──► Idle
//!                                   ▲                                      │  ▲
//!                                   └──── real barge-in ends (new turn) ◄──┘  │ false alarm:
//!                                                          pause ─► resume ───┘ `resumed`
//! ```
//!
//! User speech that starts while the agent is busy (Thinking or Speaking) is a possible barge-in
//! ([`Barge`]). It becomes real on an explicit `interrupt` or once `min_speech` of it was heard;
//! it is a false alarm if it ends before that.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::AgentConfig;
use super::vad::{Ear, EarEvent, Heard};
use super::voice::{Reply, ReplyAudio, Voice};
use super::wire::{CancelReason, Input, Output, Protocol, REALTIME_RATE, TWILIO_RATE, Wire};

/// Read-only state shared by every connection of one agent.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: AgentConfig,
    /// Reply voices for the configured rate and the adapters' default rates.
    voices: Vec<Arc<Voice>>,
}

impl Shared {
    pub fn new(config: AgentConfig) -> Self {
        let mut voices: Vec<Arc<Voice>> = Vec::new();
        for rate in [config.sample_rate, TWILIO_RATE, REALTIME_RATE] {
            if !voices.iter().any(|v| v.sample_rate() == rate) {
                voices.push(Arc::new(Voice::new(rate, config.frame)));
            }
        }
        Shared { config, voices }
    }

    /// The voice for a session rate (other rates are synthesised for the connection).
    fn voice(&self, rate: u32) -> Arc<Voice> {
        match self.voices.iter().find(|v| v.sample_rate() == rate) {
            Some(v) => Arc::clone(v),
            None => Arc::new(Voice::new(rate, self.config.frame)),
        }
    }
}

/// Messages queued for one client. A client this far behind (≈5 s of 20 ms frames) is not
/// reading: it is disconnected rather than buffered without bound.
const OUTBOUND_CAPACITY: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(4 * 1024 * 1024))
}

/// What the session asks the writer task to do.
enum Out {
    Msg(Message),
    /// Flush what is queued, then drop the socket without a close frame (the `drop` fault).
    Abort,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed, the socket failed, or the writer stopped.
    ClientGone,
    /// The agent is shutting down.
    Shutdown,
    /// The `drop` fault: close abruptly.
    Dropped,
    /// The client stopped reading.
    SlowClient,
    /// The client ended the call in-protocol (Twilio `stop`): close normally.
    Hangup,
    /// The client broke the protocol: close with this code and reason.
    Violation(CloseCode, String),
}

/// Serve one accepted TCP connection until it ends. Never panics on client input.
pub(crate) async fn run(
    stream: TcpStream,
    shared: Arc<Shared>,
    index: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    // Best effort: a failure here only costs latency.
    let _ = stream.set_nodelay(true);
    // The request path picks the protocol.
    let mut protocol = Protocol::Raw;
    // The signature is tungstenite's `Callback`; this one never rejects.
    #[allow(clippy::result_large_err)]
    let route = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        protocol = Protocol::from_path(req.uri().path());
        Ok(resp)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, route, Some(ws_config()));
    let ws = tokio::select! {
        r = timeout(HANDSHAKE_TIMEOUT, handshake) => match r {
            Ok(Ok(ws)) => ws,
            _ => return,
        },
        () = super::stopped(&mut shutdown) => return,
    };
    let (sink, incoming) = ws.split();
    let (out, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let writer = tokio::spawn(write_loop(sink, rx));

    let seed = mix(shared.config.seed, index);
    let mut session = Session::new(shared, seed, out, Wire::new(protocol));
    let end = match session.greet() {
        Ok(()) => session.drive(incoming, &mut shutdown).await,
        Err(end) => end,
    };
    let out = session.out;
    let close = |code: CloseCode, mut reason: String| {
        // A close reason is at most 123 bytes.
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = out.try_send(Out::Msg(Message::Close(Some(frame))));
    };
    match end {
        End::ClientGone => {}
        End::Shutdown => close(CloseCode::Away, "agent shutting down".into()),
        End::Hangup => close(CloseCode::Normal, "call ended".into()),
        End::Violation(code, reason) => close(code, reason),
        End::Dropped => {
            if out.try_send(Out::Abort).is_err() {
                writer.abort();
            }
        }
        End::SlowClient => writer.abort(),
    }
    drop(out);
    let _ = timeout(CLOSE_TIMEOUT * 2, writer).await;
}

/// The single writer: sends queued messages in order, flushing once per burst.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::Receiver<Out>) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Msg(msg) => {
                    if sink.feed(msg).await.is_err() {
                        return;
                    }
                }
                Out::Abort => {
                    let _ = timeout(CLOSE_TIMEOUT, sink.flush()).await;
                    return; // dropping the socket without a close frame
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    // The session ended normally: complete the closing handshake (best effort).
    let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// SplitMix64 of (seed, connection index): independent, replayable per-connection streams.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The agent's side of the conversation.
enum Phase {
    Idle,
    /// Between the end of user speech and the first reply audio.
    Thinking {
        turn: Box<Turn>,
        stage: Stage,
        until: Instant,
    },
    /// Streaming reply audio.
    Speaking {
        turn: Box<Turn>,
        reply: Reply,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Until the transcript.
    Asr,
    /// Manual turns (Realtime `turn_detection: null`): transcribed, waiting for
    /// `response.create`.
    Hold,
    /// Until the tool result.
    Tool,
    /// LLM + TTS until the first audio.
    Generate,
}

/// Everything drawn for one turn when it starts, so a seed replays it exactly.
struct Turn {
    index: u64,
    speech_ended: Instant,
    transcript: String,
    asr: Duration,
    llm: Duration,
    tts: Duration,
    tool: Option<Duration>,
    /// The reply pipeline may run (false in manual mode until `response.create`).
    go: bool,
    audio: ReplyAudio,
    /// `drop` fault: close the socket when this frame is due.
    drop_at: Option<u64>,
    /// `stall` fault: delay the schedule by `stall_for` before this frame.
    stall_at: Option<u64>,
    /// `malformed` fault: which control message goes out as broken JSON.
    corrupt: Option<Slot>,
}

/// Control messages the `malformed` fault can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Transcript,
    ResponseStart,
    ResponseEnd,
}

/// User speech that started while the agent was busy.
#[derive(Debug, Clone, Copy)]
struct Barge {
    /// An explicit `interrupt`, or `min_speech` of speech heard: a real barge-in.
    real: bool,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Stop,
    Resume,
    Stage,
    Frame,
    Silence,
}

struct Session {
    shared: Arc<Shared>,
    rng: StdRng,
    out: mpsc::Sender<Out>,
    /// The protocol codec between the socket and this state machine.
    wire: Wire,
    /// This connection's sample rate (in and out) and its reply voice.
    rate: u32,
    voice: Arc<Voice>,
    ear: Ear,
    /// Manual turns: the VAD does not run; the client commits and asks for responses.
    manual: bool,
    /// Manual turns: audio committed while the agent was busy, for the next `response.create`.
    committed: Option<Heard>,
    /// Audio received so far (input audio time), and where the open utterance started.
    audio_in: Duration,
    utterance_start: Duration,
    phase: Phase,
    barge: Option<Barge>,
    turns: u64,
}

impl Session {
    fn new(shared: Arc<Shared>, seed: u64, out: mpsc::Sender<Out>, wire: Wire) -> Self {
        let c = &shared.config;
        let rate = wire.initial_rate(c.sample_rate);
        let ear = Ear::new(rate, c.vad_threshold_dbfs, c.vad_hangover);
        Session {
            rng: StdRng::seed_from_u64(seed),
            out,
            wire,
            rate,
            voice: shared.voice(rate),
            ear,
            manual: false,
            committed: None,
            audio_in: Duration::ZERO,
            utterance_start: Duration::ZERO,
            phase: Phase::Idle,
            barge: None,
            turns: 0,
            shared,
        }
    }

    /// What the protocol sends right after the handshake.
    fn greet(&mut self) -> Result<(), End> {
        for msg in self.wire.greeting() {
            send(&self.out, msg)?;
        }
        Ok(())
    }

    /// Encode and queue one output.
    fn emit(&mut self, output: Output<'_>) -> Result<(), End> {
        for msg in self.wire.encode(output) {
            send(&self.out, msg)?;
        }
        Ok(())
    }

    /// Emit a control output, or its broken form when the `malformed` fault hit this slot.
    fn emit_control(
        &mut self,
        output: Output<'_>,
        slot: Slot,
        corrupt: Option<Slot>,
    ) -> Result<(), End> {
        let mut msgs = self.wire.encode(output);
        if corrupt == Some(slot) {
            match msgs.iter_mut().find(|m| m.is_text()) {
                Some(msg) => *msg = corrupted(msg),
                // This protocol has no message here (Twilio): send a broken one anyway.
                None => msgs.insert(0, Message::text("{\"event\":\"mark\",\"mark\":{")),
            }
        }
        for msg in msgs {
            send(&self.out, msg)?;
        }
        Ok(())
    }

    /// No turn under way and no utterance open.
    fn idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && !self.ear.is_open()
    }

    fn config(&self) -> &AgentConfig {
        &self.shared.config
    }

    async fn drive(
        &mut self,
        mut incoming: SplitStream<Ws>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        loop {
            let timer = self.next_timer();
            let at = timer.map_or_else(|| Instant::now() + Duration::from_secs(3600), |t| t.0);
            let step = tokio::select! {
                msg = incoming.next() => match msg {
                    Some(Ok(msg)) => self.on_message(msg, Instant::now()),
                    Some(Err(_)) | None => Err(End::ClientGone),
                },
                () = sleep_until(at), if timer.is_some() => match timer {
                    Some((at, t)) => self.on_timer(t, at, Instant::now()),
                    None => Ok(()),
                },
                () = super::stopped(shutdown) => Err(End::Shutdown),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// The earliest pending timer. Ties go to the first considered, so a barge-in stop due at
    /// the same instant as a frame wins.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |at: Instant, t: Timer| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, t));
            }
        };
        match &self.phase {
            Phase::Idle => {}
            Phase::Thinking { stage, .. } if *stage == Stage::Hold => {}
            Phase::Thinking { until, .. } => consider(*until, Timer::Stage),
            Phase::Speaking { reply, .. } => {
                if let Some(at) = reply.stop_at {
                    consider(at, Timer::Stop);
                }
                if let Some(at) = reply.resume_at {
                    consider(at, Timer::Resume);
                }
                if !reply.paused {
                    consider(reply.due(self.voice.frame), Timer::Frame);
                }
            }
        }
        if let Some(at) = self.ear.silence_deadline() {
            consider(at, Timer::Silence);
        }
        best
    }

    // ----- inbound -------------------------------------------------------------------------

    fn on_message(&mut self, msg: Message, now: Instant) -> Result<(), End> {
        match msg {
            Message::Close(_) => Err(End::ClientGone),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
            msg => {
                let idle = self.idle();
                for input in self.wire.decode(&msg, idle) {
                    self.on_input(input, now)?;
                }
                Ok(())
            }
        }
    }

    fn on_input(&mut self, input: Input, now: Instant) -> Result<(), End> {
        match input {
            Input::Audio(samples) => self.on_audio(&samples, now),
            Input::SpeechStart => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now, self.audio_in)?;
                }
                self.check_min_speech(now)
            }
            Input::Interrupt => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now, self.audio_in)?;
                }
                self.on_real_speech(now)
            }
            Input::SpeechEnd(hint) => self.on_speech_end_message(hint, now),
            Input::CreateResponse => self.on_create_response(now),
            Input::Cancel => self.on_cancel(),
            Input::ClearBuffer => self.drop_utterance(now),
            Input::ManualTurns(manual) => {
                self.manual = manual;
                if manual {
                    // The VAD stops deciding: an utterance it was hearing is dropped.
                    self.drop_utterance(now)?;
                }
                Ok(())
            }
            Input::Rate(rate) => {
                // The codec only changes the rate while idle: nothing in flight is resampled.
                let c = &self.shared.config;
                self.rate = rate;
                self.voice = self.shared.voice(rate);
                self.ear = Ear::new(rate, c.vad_threshold_dbfs, c.vad_hangover);
                Ok(())
            }
            Input::Reply(msg) => send(&self.out, msg),
            Input::Hangup => Err(End::Hangup),
            Input::Violation(code, reason) => Err(End::Violation(code, reason)),
        }
    }

    fn on_audio(&mut self, samples: &[i16], now: Instant) -> Result<(), End> {
        let window = self.ear.window();
        for block in samples.chunks(window) {
            let block_start = self.audio_in;
            self.audio_in += Duration::from_secs_f64(block.len() as f64 / f64::from(self.rate));
            if self.manual {
                // Manual turns: no VAD, the audio only counts towards the next commit.
                self.ear.unanalysed(block.len() as u64);
                continue;
            }
            match self.ear.audio(block, now) {
                EarEvent::Nothing => {}
                EarEvent::Started => self.on_speech_started(now, block_start)?,
                EarEvent::Ended(heard) => self.on_vad_ended(heard, now)?,
            }
            self.check_min_speech(now)?;
        }
        Ok(())
    }

    /// Raw `speech_end` / Realtime `input_audio_buffer.commit`.
    fn on_speech_end_message(&mut self, hint: Option<String>, now: Instant) -> Result<(), End> {
        if self.manual {
            let heard = self.ear.take_idle(hint);
            if matches!(self.phase, Phase::Idle) {
                // ASR starts now; the reply waits for `response.create`.
                return self.start_turn(heard, now, true, false);
            }
            self.committed = Some(heard);
            return self.emit(Output::Committed);
        }
        if self.ear.is_open() {
            match self.ear.speech_end(hint) {
                Some(heard) => self.on_speech_ended(heard, now),
                None => Ok(()),
            }
        } else if matches!(self.phase, Phase::Idle) {
            // A bare speech_end: the audio since the last utterance was the utterance
            // (e.g. too quiet for the VAD).
            let heard = self.ear.take_idle(hint);
            self.start_turn(heard, now, true, true)
        } else {
            // The VAD already ended this utterance and its turn is under way.
            Ok(())
        }
    }

    /// Realtime `response.create`.
    fn on_create_response(&mut self, now: Instant) -> Result<(), End> {
        match &mut self.phase {
            Phase::Idle => {
                // Answer what was committed while busy, else the conversation so far.
                let heard = self.committed.take().unwrap_or(Heard {
                    audio: Duration::ZERO,
                    text: None,
                });
                self.start_turn(heard, now, false, true)
            }
            Phase::Thinking { turn, stage, .. } if !turn.go => {
                turn.go = true;
                if *stage == Stage::Hold {
                    self.begin_response(now)?;
                }
                Ok(())
            }
            _ => self.emit(Output::Error {
                code: "conversation_already_has_active_response",
                message: "a response is already in progress".into(),
            }),
        }
    }

    /// Realtime `response.cancel`: stop the reply now.
    fn on_cancel(&mut self) -> Result<(), End> {
        let active = match &self.phase {
            Phase::Idle => false,
            Phase::Thinking { turn, .. } => turn.go,
            Phase::Speaking { .. } => true,
        };
        if !active {
            return self.emit(Output::Error {
                code: "response_cancel_not_active",
                message: "there is no response in progress to cancel".into(),
            });
        }
        self.phase = Phase::Idle;
        if let Some(barge) = self.barge.as_mut() {
            // Speech the agent is hearing becomes the next turn when it ends.
            barge.real = true;
        }
        self.emit(Output::Cancelled(CancelReason::Client))
    }

    /// Realtime `input_audio_buffer.clear` (or a switch to manual turns): forget the open
    /// utterance and any audio not yet committed. A pending barge-in ends with it.
    fn drop_utterance(&mut self, now: Instant) -> Result<(), End> {
        self.ear.clear();
        match self.barge.take() {
            Some(Barge { real: false }) => {
                self.false_alarm(now);
                Ok(())
            }
            Some(Barge { real: true }) if matches!(self.phase, Phase::Speaking { .. }) => {
                self.phase = Phase::Idle;
                self.emit(Output::Cancelled(CancelReason::TurnDetected))
            }
            _ => Ok(()),
        }
    }

    // ----- user speech ---------------------------------------------------------------------

    /// An utterance opened (VAD or explicit). If the agent is busy it may be a barge-in.
    fn on_speech_started(&mut self, now: Instant, start: Duration) -> Result<(), End> {
        self.utterance_start = start;
        self.emit(Output::SpeechStarted {
            audio_start_ms: start.as_millis() as u64,
        })?;
        let c = &self.shared.config;
        self.barge = match &mut self.phase {
            Phase::Idle => None,
            Phase::Thinking { .. } => Some(Barge { real: false }),
            Phase::Speaking { reply, .. } => {
                if reply.paused {
                    // Paused by an earlier false alarm that has not resumed yet: stay paused.
                    reply.resume_at = None;
                } else if reply.stop_at.is_none() {
                    reply.stop_at = Some(now + c.barge_in_delay.sample(&mut self.rng));
                }
                Some(Barge { real: false })
            }
        };
        Ok(())
    }

    fn check_min_speech(&mut self, now: Instant) -> Result<(), End> {
        match self.barge {
            Some(Barge { real: false }) if self.ear.heard_so_far() >= self.config().min_speech => {
                self.on_real_speech(now)
            }
            _ => Ok(()),
        }
    }

    /// The overlapping speech is a real barge-in.
    fn on_real_speech(&mut self, now: Instant) -> Result<(), End> {
        let Some(barge) = self.barge.as_mut() else {
            return Ok(());
        };
        barge.real = true;
        let c = &self.shared.config;
        match &mut self.phase {
            Phase::Idle => Ok(()),
            Phase::Thinking { .. } => {
                // The user kept talking: drop the pending answer, this speech is the new turn.
                self.phase = Phase::Idle;
                self.emit(Output::Abandoned)
            }
            Phase::Speaking { reply, .. } => {
                if reply.paused {
                    self.phase = Phase::Idle;
                    self.emit(Output::Cancelled(CancelReason::TurnDetected))
                } else {
                    if reply.stop_at.is_none() {
                        reply.stop_at = Some(now + c.barge_in_delay.sample(&mut self.rng));
                    }
                    Ok(())
                }
            }
        }
    }

    /// The VAD (hangover or the no-frames fallback) ended the utterance.
    fn on_vad_ended(&mut self, heard: Heard, now: Instant) -> Result<(), End> {
        let end = self.utterance_start + heard.audio;
        self.emit(Output::SpeechStopped {
            audio_end_ms: end.as_millis() as u64,
        })?;
        self.on_speech_ended(heard, now)
    }

    /// An utterance ended (VAD hangover, silence timeout or explicit `speech_end`).
    fn on_speech_ended(&mut self, heard: Heard, now: Instant) -> Result<(), End> {
        if let Some(barge) = self.barge.take() {
            if !barge.real {
                self.false_alarm(now);
                return Ok(());
            }
            if matches!(self.phase, Phase::Speaking { .. }) {
                // Real barge-in that ended before its stop was due: stop now.
                self.phase = Phase::Idle;
                self.emit(Output::Cancelled(CancelReason::TurnDetected))?;
            }
        }
        if matches!(self.phase, Phase::Idle) {
            self.start_turn(heard, now, true, true)?;
        }
        Ok(())
    }

    /// Overlapping speech ended before it was real: resume where the audio stopped, no new
    /// turn.
    fn false_alarm(&mut self, now: Instant) {
        let c = &self.shared.config;
        if let Phase::Speaking { reply, .. } = &mut self.phase {
            if reply.paused {
                reply.resume_at = Some(now + c.resume_delay.sample(&mut self.rng));
            } else {
                reply.stop_at = None; // it ended before the audio even stopped
            }
        }
    }

    // ----- the agent's turn ----------------------------------------------------------------

    /// Start the agent's turn for `heard`. `commit`: the utterance becomes a conversation item
    /// now (Realtime `committed`); `go`: the reply may follow without `response.create`.
    fn start_turn(
        &mut self,
        heard: Heard,
        now: Instant,
        commit: bool,
        go: bool,
    ) -> Result<(), End> {
        if commit {
            self.emit(Output::Committed)?;
        }
        let shared = Arc::clone(&self.shared);
        let c = &shared.config;
        let rng = &mut self.rng;
        self.turns += 1;
        // Fixed draw order: a seed replays every turn.
        let asr = c.asr_latency.sample(rng);
        let llm = c.llm_latency.sample(rng);
        let tts = c.tts_latency.sample(rng);
        let tool_latency = c.tool_latency.sample(rng);
        let tool_roll: f64 = rng.random_range(0.0..1.0);
        let reply_duration = c.reply_duration.sample(rng);
        let drop_roll: f64 = rng.random_range(0.0..1.0);
        let stall_roll: f64 = rng.random_range(0.0..1.0);
        let malformed_roll: f64 = rng.random_range(0.0..1.0);
        let drop_pos: f64 = rng.random_range(0.0..1.0);
        let stall_pos: f64 = rng.random_range(0.0..1.0);
        let slot = match rng.random_range(0..3u8) {
            0 => Slot::Transcript,
            1 => Slot::ResponseStart,
            _ => Slot::ResponseEnd,
        };

        let keyword = heard.text.as_deref().is_some_and(|text| {
            let text = text.to_lowercase();
            c.tool_keywords
                .iter()
                .any(|k| !k.is_empty() && text.contains(&k.to_lowercase()))
        });
        let tool = (keyword || tool_roll < c.tool_fraction).then_some(tool_latency);
        let audio = self.voice.reply(c.leading_silence, reply_duration);
        let transcript = match heard.text {
            Some(text) if !text.trim().is_empty() => text,
            _ => format!("user utterance ({} ms of audio)", heard.audio.as_millis()),
        };
        let turn = Turn {
            index: self.turns,
            speech_ended: now,
            transcript,
            asr,
            llm,
            tts,
            tool,
            go,
            audio,
            drop_at: (drop_roll < c.faults.drop).then(|| mid_reply(drop_pos, audio.frames)),
            stall_at: (stall_roll < c.faults.stall).then(|| mid_reply(stall_pos, audio.frames)),
            corrupt: (malformed_roll < c.faults.malformed).then_some(slot),
        };
        self.phase = Phase::Thinking {
            turn: Box::new(turn),
            stage: Stage::Asr,
            until: now + asr,
        };
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, due: Instant, now: Instant) -> Result<(), End> {
        match timer {
            Timer::Stage => self.on_stage(due),
            Timer::Frame => self.on_frame(),
            Timer::Stop => self.on_stop(),
            Timer::Resume => {
                if let Phase::Speaking { reply, .. } = &mut self.phase {
                    reply.resume(due);
                    self.emit(Output::Resumed)?;
                }
                Ok(())
            }
            Timer::Silence => match self.ear.silence_timeout(now) {
                Some(heard) => self.on_vad_ended(heard, now),
                None => Ok(()),
            },
        }
    }

    /// A thinking stage finished at its scheduled time `due` (the next stage counts from
    /// there, so timer lateness does not add up).
    fn on_stage(&mut self, due: Instant) -> Result<(), End> {
        let Phase::Thinking { turn, stage, .. } = &mut self.phase else {
            return Ok(());
        };
        match *stage {
            Stage::Asr => {
                let (transcript, corrupt, go) = (turn.transcript.clone(), turn.corrupt, turn.go);
                if !go {
                    *stage = Stage::Hold;
                }
                self.emit_control(Output::Transcript(&transcript), Slot::Transcript, corrupt)?;
                if go {
                    self.begin_response(due)?;
                }
                Ok(())
            }
            Stage::Hold => Ok(()),
            Stage::Tool => {
                *stage = Stage::Generate;
                if let Phase::Thinking { turn, until, .. } = &mut self.phase {
                    *until = due + turn.llm + turn.tts;
                }
                Ok(())
            }
            Stage::Generate => {
                let corrupt = turn.corrupt;
                let duration = Duration::from_secs_f64(
                    turn.audio.total as f64 / f64::from(self.voice.sample_rate()),
                );
                let mut reply = Reply::start(turn.audio, due);
                if self.barge.is_some() {
                    // The user is already talking over the start of the answer.
                    let delay = self.shared.config.barge_in_delay.sample(&mut self.rng);
                    reply.stop_at = Some(due + delay);
                }
                let old = std::mem::replace(&mut self.phase, Phase::Idle);
                if let Phase::Thinking { turn, .. } = old {
                    self.phase = Phase::Speaking { turn, reply };
                }
                self.emit_control(
                    Output::ResponseStart { duration },
                    Slot::ResponseStart,
                    corrupt,
                )
            }
        }
    }

    /// The transcript is out and the reply may run: call the tool if the turn has one, then
    /// generate (from `at`).
    fn begin_response(&mut self, at: Instant) -> Result<(), End> {
        let Phase::Thinking { turn, stage, until } = &mut self.phase else {
            return Ok(());
        };
        match turn.tool {
            Some(tool) => {
                *stage = Stage::Tool;
                *until = at + tool;
                let arguments = json!({ "query": turn.transcript }).to_string();
                self.emit(Output::ToolCall {
                    name: "lookup",
                    arguments,
                })
            }
            None => {
                *stage = Stage::Generate;
                *until = at + turn.llm + turn.tts;
                Ok(())
            }
        }
    }

    /// The next reply frame is due.
    fn on_frame(&mut self) -> Result<(), End> {
        let Phase::Speaking { turn, reply } = &mut self.phase else {
            return Ok(());
        };
        if turn.drop_at == Some(reply.next) {
            return Err(End::Dropped);
        }
        if turn.stall_at == Some(reply.next) {
            turn.stall_at = None;
            reply.delay(self.shared.config.faults.stall_for);
            return Ok(());
        }
        let first = !reply.first_frame_sent;
        reply.first_frame_sent = true;
        if reply.finished() {
            // The reply's audio has played out on schedule.
            if first {
                self.send_metrics()?;
            }
            return self.finish_reply();
        }
        let bytes = self.voice.frame_bytes(&reply.audio, reply.next);
        reply.next += 1;
        self.emit(Output::Audio(&bytes))?;
        if first {
            self.send_metrics()?;
        }
        Ok(())
    }

    fn finish_reply(&mut self) -> Result<(), End> {
        let old = std::mem::replace(&mut self.phase, Phase::Idle);
        match old {
            Phase::Speaking { turn, .. } => {
                self.emit_control(Output::ResponseEnd, Slot::ResponseEnd, turn.corrupt)
            }
            other => {
                self.phase = other;
                Ok(())
            }
        }
    }

    /// The barge-in reaction time elapsed: stop the audio.
    fn on_stop(&mut self) -> Result<(), End> {
        let Phase::Speaking { reply, .. } = &mut self.phase else {
            return Ok(());
        };
        reply.stop_at = None;
        match self.barge {
            None => Ok(()),
            Some(Barge { real: false }) => {
                reply.paused = true; // wait: real barge-in or false alarm?
                Ok(())
            }
            Some(Barge { real: true }) => {
                self.phase = Phase::Idle;
                self.emit(Output::Cancelled(CancelReason::TurnDetected))
            }
        }
    }

    /// Component timings, once per turn right after the first reply audio frame.
    fn send_metrics(&mut self) -> Result<(), End> {
        if !self.config().send_metrics {
            return Ok(());
        }
        let Phase::Speaking { turn, .. } = &self.phase else {
            return Ok(());
        };
        let value = json!({
            "type": "metrics",
            "turn": turn.index,
            "asr_ms": ms(turn.asr),
            "llm_ms": ms(turn.llm),
            "tts_ms": ms(turn.tts),
            "tool_ms": ms(turn.tool.unwrap_or_default()),
            "total_ms": ms(Instant::now().saturating_duration_since(turn.speech_ended)),
        });
        self.emit(Output::Metrics(value))
    }
}

/// Queue one message for the writer without ever blocking the state machine.
fn send(out: &mpsc::Sender<Out>, msg: Message) -> Result<(), End> {
    out.try_send(Out::Msg(msg)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => End::SlowClient,
        mpsc::error::TrySendError::Closed(_) => End::ClientGone,
    })
}

/// The broken form of a text message for the `malformed` fault: any proper prefix of a JSON
/// object is invalid JSON.
fn corrupted(msg: &Message) -> Message {
    let text = match msg {
        Message::Text(t) => t.as_str(),
        _ => "{\"type\":\"\"}",
    };
    let half: String = text.chars().take(text.chars().count() / 2).collect();
    Message::text(half)
}

/// A frame index in the middle of a reply (between a quarter and three quarters), at least 1
/// so some audio precedes the fault. `u` is uniform in [0, 1).
fn mid_reply(u: f64, frames: u64) -> u64 {
    if frames < 2 {
        return frames;
    }
    let lo = (frames / 4).max(1);
    let hi = (frames * 3 / 4).clamp(lo + 1, frames);
    lo + ((u * (hi - lo) as f64) as u64).min(hi - lo - 1)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn mid_reply_stays_inside() {
        for frames in 0..200 {
            for u in [0.0, 0.3, 0.5, 0.999_999] {
                let k = mid_reply(u, frames);
                if frames >= 2 {
                    assert!(k >= 1 && k < frames, "frames {frames} u {u} -> {k}");
                } else {
                    assert_eq!(k, frames);
                }
            }
        }
    }

    #[test]
    fn corrupted_control_is_not_json() {
        for text in [
            r#"{"type":"response_start"}"#,
            r#"{"type":"transcript","text":"héllo wörld"}"#,
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"response_end"}}"#,
        ] {
            let Message::Text(t) = corrupted(&Message::text(text)) else {
                panic!("text expected");
            };
            assert!(!t.is_empty());
            assert!(serde_json::from_str::<Value>(&t).is_err(), "{t}");
        }
    }

    #[test]
    fn seeds_differ_per_connection() {
        assert_ne!(mix(0, 0), mix(0, 1));
        assert_eq!(mix(42, 7), mix(42, 7));
    }
}
