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
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::AgentConfig;
use super::vad::{Ear, EarEvent, Heard};
use super::voice::{Reply, ReplyAudio, Voice};
use crate::protocol::{
    Control, ServerEvent, decode_client_text, decode_pcm16, encode_server_event,
};

/// Read-only state shared by every connection of one agent.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: AgentConfig,
    pub voice: Voice,
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
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()));
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
    let mut session = Session::new(shared, seed, out);
    let end = session.drive(incoming, &mut shutdown).await;
    let out = session.out;
    match end {
        End::ClientGone => {}
        End::Shutdown => {
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "agent shutting down".into(),
            };
            let _ = out.try_send(Out::Msg(Message::Close(Some(frame))));
        }
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
    ear: Ear,
    phase: Phase,
    barge: Option<Barge>,
    turns: u64,
}

impl Session {
    fn new(shared: Arc<Shared>, seed: u64, out: mpsc::Sender<Out>) -> Self {
        let c = &shared.config;
        let ear = Ear::new(c.sample_rate, c.vad_threshold_dbfs, c.vad_hangover);
        Session {
            rng: StdRng::seed_from_u64(seed),
            out,
            ear,
            phase: Phase::Idle,
            barge: None,
            turns: 0,
            shared,
        }
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
            Phase::Thinking { until, .. } => consider(*until, Timer::Stage),
            Phase::Speaking { reply, .. } => {
                if let Some(at) = reply.stop_at {
                    consider(at, Timer::Stop);
                }
                if let Some(at) = reply.resume_at {
                    consider(at, Timer::Resume);
                }
                if !reply.paused {
                    consider(reply.due(self.shared.voice.frame), Timer::Frame);
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
            Message::Binary(bytes) => self.on_audio(&decode_pcm16(&bytes), now),
            Message::Text(text) => self.on_text(text.as_str(), now),
            Message::Close(_) => Err(End::ClientGone),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    fn on_audio(&mut self, samples: &[i16], now: Instant) -> Result<(), End> {
        let window = self.ear.window();
        for block in samples.chunks(window) {
            match self.ear.audio(block, now) {
                EarEvent::Nothing => {}
                EarEvent::Started => self.on_speech_started(now),
                EarEvent::Ended(heard) => self.on_speech_ended(heard, now)?,
            }
            self.check_min_speech(now)?;
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str, now: Instant) -> Result<(), End> {
        let control = match decode_client_text(text) {
            Ok(c) => c,
            Err(e) => return send(&self.out, encode_server_event(&ServerEvent::Error(e.0))),
        };
        match control {
            Control::SpeechStart => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now);
                }
                self.check_min_speech(now)
            }
            Control::Interrupt => {
                if self.ear.speech_start(now) {
                    self.on_speech_started(now);
                }
                self.on_real_speech(now)
            }
            Control::SpeechEnd => {
                let hint = speech_end_text(text);
                if self.ear.is_open() {
                    match self.ear.speech_end(hint) {
                        Some(heard) => self.on_speech_ended(heard, now),
                        None => Ok(()),
                    }
                } else if matches!(self.phase, Phase::Idle) {
                    // A bare speech_end: the audio since the last utterance was the utterance
                    // (e.g. too quiet for the VAD).
                    let heard = self.ear.take_idle(hint);
                    self.start_turn(heard, now);
                    Ok(())
                } else {
                    // The VAD already ended this utterance and its turn is under way.
                    Ok(())
                }
            }
        }
    }

    // ----- user speech ---------------------------------------------------------------------

    /// An utterance opened (VAD or explicit). If the agent is busy it may be a barge-in.
    fn on_speech_started(&mut self, now: Instant) {
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
                Ok(())
            }
            Phase::Speaking { reply, .. } => {
                if reply.paused {
                    self.phase = Phase::Idle;
                    send(&self.out, encode_server_event(&ServerEvent::Interrupted))
                } else {
                    if reply.stop_at.is_none() {
                        reply.stop_at = Some(now + c.barge_in_delay.sample(&mut self.rng));
                    }
                    Ok(())
                }
            }
        }
    }

    /// An utterance ended (VAD hangover, silence timeout or explicit `speech_end`).
    fn on_speech_ended(&mut self, heard: Heard, now: Instant) -> Result<(), End> {
        if let Some(barge) = self.barge.take() {
            if !barge.real {
                // False alarm: resume where the audio stopped, no new turn.
                let c = &self.shared.config;
                if let Phase::Speaking { reply, .. } = &mut self.phase {
                    if reply.paused {
                        reply.resume_at = Some(now + c.resume_delay.sample(&mut self.rng));
                    } else {
                        reply.stop_at = None; // it ended before the audio even stopped
                    }
                }
                return Ok(());
            }
            if matches!(self.phase, Phase::Speaking { .. }) {
                // Real barge-in that ended before its stop was due: stop now.
                self.phase = Phase::Idle;
                send(&self.out, encode_server_event(&ServerEvent::Interrupted))?;
            }
        }
        if matches!(self.phase, Phase::Idle) {
            self.start_turn(heard, now);
        }
        Ok(())
    }

    // ----- the agent's turn ----------------------------------------------------------------

    fn start_turn(&mut self, heard: Heard, now: Instant) {
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
        let audio = shared.voice.reply(c.leading_silence, reply_duration);
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
    }

    fn on_timer(&mut self, timer: Timer, due: Instant, now: Instant) -> Result<(), End> {
        match timer {
            Timer::Stage => self.on_stage(due),
            Timer::Frame => self.on_frame(),
            Timer::Stop => self.on_stop(),
            Timer::Resume => {
                if let Phase::Speaking { reply, .. } = &mut self.phase {
                    reply.resume(due);
                    send(&self.out, encode_server_event(&ServerEvent::Resumed))?;
                }
                Ok(())
            }
            Timer::Silence => match self.ear.silence_timeout(now) {
                Some(heard) => self.on_speech_ended(heard, now),
                None => Ok(()),
            },
        }
    }

    /// A thinking stage finished at its scheduled time `due` (the next stage counts from
    /// there, so timer lateness does not add up).
    fn on_stage(&mut self, due: Instant) -> Result<(), End> {
        let Phase::Thinking { turn, stage, until } = &mut self.phase else {
            return Ok(());
        };
        match *stage {
            Stage::Asr => {
                let msg = ServerEvent::Transcript(turn.transcript.clone());
                control(&self.out, &msg, Slot::Transcript, turn.corrupt)?;
                if let Some(tool) = turn.tool {
                    let call = ServerEvent::ToolCall("lookup".into());
                    send(&self.out, encode_server_event(&call))?;
                    *stage = Stage::Tool;
                    *until = due + tool;
                } else {
                    *stage = Stage::Generate;
                    *until = due + turn.llm + turn.tts;
                }
                Ok(())
            }
            Stage::Tool => {
                *stage = Stage::Generate;
                *until = due + turn.llm + turn.tts;
                Ok(())
            }
            Stage::Generate => {
                let msg = ServerEvent::ResponseStart;
                control(&self.out, &msg, Slot::ResponseStart, turn.corrupt)?;
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
        if reply.finished() {
            // The reply's audio has played out on schedule.
            if !reply.first_frame_sent {
                reply.first_frame_sent = true;
                self.send_metrics()?;
            }
            return self.finish_reply();
        }
        let bytes = self.shared.voice.frame_bytes(&reply.audio, reply.next);
        reply.next += 1;
        send(&self.out, Message::binary(bytes))?;
        if !reply.first_frame_sent {
            reply.first_frame_sent = true;
            self.send_metrics()?;
        }
        Ok(())
    }

    fn finish_reply(&mut self) -> Result<(), End> {
        let old = std::mem::replace(&mut self.phase, Phase::Idle);
        match old {
            Phase::Speaking { turn, .. } => control(
                &self.out,
                &ServerEvent::ResponseEnd,
                Slot::ResponseEnd,
                turn.corrupt,
            ),
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
                send(&self.out, encode_server_event(&ServerEvent::Interrupted))
            }
        }
    }

    /// Component timings, once per turn right after the first reply audio frame.
    fn send_metrics(&self) -> Result<(), End> {
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
        send(&self.out, encode_server_event(&ServerEvent::Metrics(value)))
    }
}

/// Queue one message for the writer without ever blocking the state machine.
fn send(out: &mpsc::Sender<Out>, msg: Message) -> Result<(), End> {
    out.try_send(Out::Msg(msg)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => End::SlowClient,
        mpsc::error::TrySendError::Closed(_) => End::ClientGone,
    })
}

/// Send a control message, or its broken form when the `malformed` fault hit this slot.
fn control(
    out: &mpsc::Sender<Out>,
    event: &ServerEvent,
    slot: Slot,
    corrupt: Option<Slot>,
) -> Result<(), End> {
    let msg = encode_server_event(event);
    if corrupt != Some(slot) {
        return send(out, msg);
    }
    let text = match &msg {
        Message::Text(t) => t.as_str(),
        _ => "{\"type\":\"\"}",
    };
    // Any proper prefix of a JSON object is invalid JSON.
    let half: String = text.chars().take(text.chars().count() / 2).collect();
    send(out, Message::text(half))
}

/// The optional `text` a client attaches to `speech_end` (a stand-in for real ASR).
fn speech_end_text(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    value.get("text")?.as_str().map(str::to_owned)
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
        let (tx, mut rx) = mpsc::channel(4);
        for (event, slot) in [
            (ServerEvent::ResponseStart, Slot::ResponseStart),
            (ServerEvent::ResponseEnd, Slot::ResponseEnd),
            (
                ServerEvent::Transcript("héllo wörld".into()),
                Slot::Transcript,
            ),
        ] {
            control(&tx, &event, slot, Some(slot)).unwrap();
            let Some(Out::Msg(Message::Text(t))) = rx.try_recv().ok() else {
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
