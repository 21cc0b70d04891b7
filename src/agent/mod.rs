//! The built-in reference voice agent: a WebSocket server speaking the raw protocol
//! (see [`crate::protocol`]), and Twilio Media Streams on `/twilio` and the OpenAI Realtime API
//! on `/openai` and `/v1/realtime` (see `wire`; the handshake's request path picks the protocol,
//! the state machine below is shared by all of them). [`spawn_webrtc`] serves the same state
//! machine over WebRTC (SDP offers on `/whip` and `/api/offer`, Opus over DTLS-SRTP).
//!
//! It behaves like a real voice pipeline with configurable, seeded latencies:
//!
//! - **Turn detection.** Incoming binary frames are PCM16 LE mono audio. An energy VAD
//!   (per 20 ms window, [`frame_dbfs`] against `vad_threshold_dbfs`) opens an utterance on
//!   speech and ends it after `vad_hangover` of non-speech *audio*, or after `vad_hangover` of
//!   wall time with no frames at all (after speech, or after any audio following an explicit
//!   `speech_start`). Explicit `speech_start` / `speech_end` work too;
//!   a `speech_end` for an utterance the VAD already ended does not start a second turn, and a
//!   bare `speech_end` (no utterance open, agent idle) turns the audio since the last utterance
//!   into one.
//! - **Turn.** `asr_latency` → `transcript` → optionally `tool_call` + `tool_latency` →
//!   `llm_latency + tts_latency` → `response_start`, reply audio paced in real time against an
//!   absolute schedule (`leading_silence` of zeros, then a 220 Hz tone, peak -12 dBFS, for
//!   `reply_duration`), `metrics` right after the first frame → `response_end` when the last
//!   frame has played out.
//! - **Barge-in.** Speech (VAD, `speech_start` or `interrupt`) during a reply stops the audio
//!   after `barge_in_delay`. An explicit `interrupt` or `min_speech` of speech makes it real:
//!   `interrupted`, the rest of the reply is dropped, and the speech becomes the next turn when
//!   it ends. Speech ending before `min_speech` is a false alarm: after `resume_delay`,
//!   `resumed`, and the reply continues where it stopped. Speech reaching `min_speech` while
//!   the agent is still thinking cancels the pending answer.
//! - **Faults** (per turn): `drop` closes the socket mid-reply without a close frame, `stall`
//!   pauses the audio for `stall_for` mid-reply, `malformed` sends one control message
//!   (transcript, response_start or response_end) as broken JSON.
//!
//! The optional `text` of `{"type":"speech_end","text":"…"}` stands in for real ASR: it is the
//! transcript, and it is matched (case-insensitively) against `tool_keywords`.
//!
//! Each connection is a tokio task with a single writer task behind a bounded channel; a client
//! that stops reading is disconnected rather than buffered without bound.

mod config;
mod error;
mod http;
mod session;
mod vad;
mod voice;
mod webrtc;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use config::{AgentConfig, Faults, ReplyPacing, SENTENCE};
pub use error::AgentError;
pub use http::{ChunkAnalysis, HttpAgentConfig, analyse as analyse_chunk};
pub use vad::frame_dbfs;
pub use webrtc::{WebrtcAgentHandle, spawn as spawn_webrtc};

/// How long [`AgentHandle::shutdown`] waits for connections to close before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running agent. Dropping the handle also stops it (without waiting).
#[derive(Debug)]
pub struct AgentHandle {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The HTTP side (`POST /chunks`).
    http_addr: SocketAddr,
    http_task: JoinHandle<()>,
}

impl AgentHandle {
    /// The bound address (with the real port when listening on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://HOST:PORT/`, with a loopback host when bound to an unspecified address.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("ws://{}/", SocketAddr::new(ip, self.addr.port()))
    }

    /// `http://HOST:PORT/chunks`: the HTTP side, for `protocol: http_chunks`.
    pub fn http_url(&self) -> String {
        let ip = match self.http_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "http://{}/chunks",
            SocketAddr::new(ip, self.http_addr.port())
        )
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stop accepting, close every connection (1001 going away), and wait for them (up to a
    /// few seconds, then the rest are aborted).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.http_task.await;
    }
}

/// Bind and serve in a background tokio task. `listen` like "127.0.0.1:0".
pub async fn spawn(listen: &str, config: AgentConfig) -> std::io::Result<AgentHandle> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The HTTP side listens on the next port (any free port when the WebSocket one is).
    let asked_any = listen.rsplit(':').next().is_none_or(|p| p.trim() == "0");
    let http_port = if asked_any {
        0
    } else {
        addr.port().checked_add(1).unwrap_or(0)
    };
    let http_listener = TcpListener::bind(SocketAddr::new(addr.ip(), http_port)).await?;
    let http_addr = http_listener.local_addr()?;
    let http_config = Arc::new(config.clone());
    let shared = Arc::new(session::Shared::new(config));
    let connections = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        shared,
        Arc::clone(&connections),
        stop_rx,
    ));
    let http_task = tokio::spawn(http::accept_loop(
        http_listener,
        http_config,
        stop.subscribe(),
    ));
    Ok(AgentHandle {
        addr,
        connections,
        stop,
        task,
        http_addr,
        http_task,
    })
}

/// Serve in the foreground until Ctrl-C (for `planrun agent --listen ADDR`), printing the URL
/// to stderr.
pub async fn serve_forever(listen: &str, config: AgentConfig) -> Result<(), AgentError> {
    let rate = config.sample_rate;
    let webrtc_config = config.clone();
    let handle = spawn(listen, config)
        .await
        .map_err(|error| AgentError::Start {
            listen: listen.to_string(),
            error,
        })?;
    eprintln!(
        "planrun agent listening on {url} (raw protocol), {url}twilio (Twilio Media Streams), \
         {url}openai and {url}v1/realtime (OpenAI Realtime); Ctrl-C to stop",
        url = handle.url()
    );
    eprintln!("planrun agent HTTP chunks on {}", handle.http_url());
    // The WebRTC side (its signalling over HTTP) two ports up (any free port when the
    // WebSocket one is), when the rate is one Opus codes natively.
    let webrtc = if crate::protocol::webrtc::OPUS_RATES.contains(&rate) {
        let asked_any = listen.rsplit(':').next().is_none_or(|p| p.trim() == "0");
        let port = if asked_any {
            0
        } else {
            handle.addr().port().checked_add(2).unwrap_or(0)
        };
        let at = SocketAddr::new(handle.addr().ip(), port).to_string();
        match webrtc::spawn(&at, webrtc_config).await {
            Ok(w) => {
                eprintln!(
                    "planrun agent WebRTC signalling on {base}/whip (WHIP) and {base}/api/offer \
                     (Pipecat SmallWebRTC)",
                    base = w.base_url()
                );
                Some(w)
            }
            Err(error) => {
                return Err(AgentError::Start { listen: at, error });
            }
        }
    } else {
        None
    };
    tokio::signal::ctrl_c().await.map_err(AgentError::CtrlC)?;
    eprintln!(
        "planrun agent shutting down after {} connection(s)",
        handle.connections()
    );
    handle.shutdown().await;
    if let Some(w) = webrtc {
        w.shutdown().await;
    }
    Ok(())
}

/// Resolves once the agent is told to stop (or its handle is dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<session::Shared>,
    connections: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let session_stop = stop.clone();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let index = connections.fetch_add(1, Ordering::Relaxed);
                    sessions.spawn(session::run(
                        stream,
                        Arc::clone(&shared),
                        index,
                        session_stop.clone(),
                    ));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            // A `true` or a dropped handle both stop the agent.
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let drain = async { while sessions.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drain).await;
    sessions.abort_all();
}
