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
//!
//! This file holds the state and the loop; the rest is split by idea: [`connection`] (handshake,
//! writer task, close), [`inbound`] (what the client says), [`turn_taking`] (user speech and
//! barge-in), [`turn`] (ASR, tool call, generation), [`reply`] (streaming the reply audio at
//! the configured pacing, and stopping it) and [`faults`] (`malformed`, `drop`, `stall`).

mod connection;
mod faults;
mod inbound;
mod reply;
mod turn;
mod turn_taking;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::vad::{Ear, Heard};
use super::voice::{Reply, ReplyAudio, Voice};
use super::wire::{Output, REALTIME_RATE, TWILIO_RATE, Wire};
use super::{AgentConfig, ReplyPacing};
use connection::{End, Out, send};
use faults::Slot;

pub(crate) use connection::{run, run_bridged};

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
    /// Until the tool result (strict OpenAI Realtime: until the model makes the call, then
    /// [`Stage::ToolWait`]).
    Tool,
    /// (OpenAI Realtime, strict) the response ended with the tool call: until the caller's
    /// `function_call_output` and `response.create` (or [`TOOL_RESULT_TIMEOUT`]).
    ToolWait,
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
    /// (`Stage::ToolWait`) the caller's `function_call_output` arrived.
    tool_answered: bool,
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

/// How long the agent waits for a tool result (`Stage::ToolWait`) before giving up the turn
/// with an `error` (the real API waits indefinitely; the caller's `await` times out first).
const TOOL_RESULT_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// No turn under way and no utterance open.
    fn idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && !self.ear.is_open()
    }

    fn config(&self) -> &AgentConfig {
        &self.shared.config
    }

    async fn drive<S>(&mut self, mut incoming: S, shutdown: &mut watch::Receiver<bool>) -> End
    where
        S: futures_util::Stream<
                Item = Result<
                    tokio_tungstenite::tungstenite::Message,
                    tokio_tungstenite::tungstenite::Error,
                >,
            > + Unpin,
    {
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
                if self.config().reply_pacing != ReplyPacing::Realtime {
                    if let Some(at) = self.send_due() {
                        consider(at, Timer::Frame);
                    }
                } else if !reply.paused {
                    consider(reply.due(self.voice.frame), Timer::Frame);
                }
            }
        }
        if let Some(at) = self.ear.silence_deadline() {
            consider(at, Timer::Silence);
        }
        best
    }

    fn on_timer(&mut self, timer: Timer, due: Instant, now: Instant) -> Result<(), End> {
        match timer {
            Timer::Stage => self.on_stage(due),
            Timer::Frame => self.on_frame(now),
            Timer::Stop => self.on_stop(now),
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
}
