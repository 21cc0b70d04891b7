//! The connection around the state machine: WebSocket handshake (the request path picks the
//! protocol), a single writer task fed by a bounded channel, and the close that ends it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::super::wire::{Protocol, Wire};
use super::{Session, Shared};

/// Messages queued for one client. A client this far behind (≈5 s of 20 ms frames) is not
/// reading: it is disconnected rather than buffered without bound.
const OUTBOUND_CAPACITY: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(4 * 1024 * 1024))
}

/// What the session asks the writer task to do.
pub(super) enum Out {
    Msg(Message),
    /// Flush what is queued, then drop the socket without a close frame (the `drop` fault).
    Abort,
}

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
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
        () = super::super::stopped(&mut shutdown) => return,
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

/// Serve one session whose transport is not a WebSocket (the WebRTC bridge): `incoming`
/// yields what the client sent as raw-protocol messages, everything the session sends goes to
/// `outgoing`; dropping `outgoing`'s receiver ends the session, and the session ending drops
/// `outgoing`.
pub(crate) async fn run_bridged<S>(
    incoming: S,
    outgoing: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    index: u64,
    mut shutdown: watch::Receiver<bool>,
) where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let (out, mut rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let forward = tokio::spawn(async move {
        while let Some(Out::Msg(msg)) = rx.recv().await {
            if outgoing.send(msg).await.is_err() {
                return;
            }
        }
    });
    let seed = mix(shared.config.seed, index);
    let mut session = Session::new(shared, seed, out, Wire::new(Protocol::Raw));
    if session.greet().is_ok() {
        let _ = session.drive(incoming, &mut shutdown).await;
    }
    drop(session);
    let _ = timeout(CLOSE_TIMEOUT, forward).await;
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

/// Queue one message for the writer without ever blocking the state machine.
pub(super) fn send(out: &mpsc::Sender<Out>, msg: Message) -> Result<(), End> {
    out.try_send(Out::Msg(msg)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => End::SlowClient,
        mpsc::error::TrySendError::Closed(_) => End::ClientGone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_connection() {
        assert_ne!(mix(0, 0), mix(0, 1));
        assert_eq!(mix(42, 7), mix(42, 7));
    }
}
