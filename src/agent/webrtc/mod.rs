//! The built-in agent over WebRTC: an HTTP signalling endpoint answering SDP offers
//! (`POST /whip` with `application/sdp`, `POST /api/offer` with Pipecat SmallWebRTC's JSON),
//! then one str0m peer per call (ICE-lite, DTLS-SRTP, Opus) bridged to the same session state
//! machine the WebSocket side runs with the raw protocol: decoded caller audio goes in as PCM16
//! frames, the reply audio comes out as PCM16 frames and is Opus-encoded and sent at once. The
//! peer streams silence between replies, as a WebRTC track does.
//!
//! A call ends politely from either side (RTCP BYE + DTLS close_notify via `Rtc::close`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use str0m::Candidate;
use str0m::change::SdpOffer;
use str0m::media::Mid;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::session::{self, Shared};
use super::{AgentConfig, stopped};
use crate::protocol::webrtc::{OPUS_RATES, PeerIn, PeerOut, PeerSetup, drive, rtc_config};
use crate::protocol::{client::pcm16_bytes, decode_pcm16};

/// The largest offer read.
const MAX_OFFER: usize = 256 * 1024;
/// A caller whose ICE/DTLS is not up after this long is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A caller that sends no RTP for this long is gone (callers stream continuously).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);

/// A running WebRTC agent. Dropping the handle also stops it (without waiting).
#[derive(Debug)]
pub struct WebrtcAgentHandle {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WebrtcAgentHandle {
    /// `http://HOST:PORT` (no path): the offer goes to `/whip` or `/api/offer` under it.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Offers answered so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Stop answering and end every call (politely), waiting briefly.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // Give the peers a moment to send their close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Ctx {
    shared: Arc<Shared>,
    /// Where the media sockets bind (the signalling listener's address).
    ip: IpAddr,
    calls: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

/// Bind the signalling endpoint and serve in a background task. `listen` like "127.0.0.1:0";
/// media sockets bind on the same address.
pub async fn spawn(listen: &str, config: AgentConfig) -> std::io::Result<WebrtcAgentHandle> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if !OPUS_RATES.contains(&config.sample_rate) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "WebRTC carries Opus: the sample rate must be one of {OPUS_RATES:?}, not {}",
                config.sample_rate
            ),
        ));
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    let calls = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        shared: Arc::new(Shared::new(config)),
        ip,
        calls: Arc::clone(&calls),
        stop: stop_rx.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, ctx, stop_rx));
    Ok(WebrtcAgentHandle {
        addr,
        calls,
        stop,
        task,
    })
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let ctx = Arc::clone(&ctx);
                    let mut stop = stop.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&ctx)));
                        let served = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(served);
                        tokio::select! {
                            _ = served.as_mut() => {}
                            () = stopped(&mut stop) => {
                                served.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
                            }
                        }
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    conns.abort_all();
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status, body: &str| reply(status, "text/plain", body.to_string());
    let pipecat = match (req.method(), req.uri().path()) {
        (&Method::POST, "/whip") => false,
        (&Method::POST, "/api/offer") => true,
        (_, "/whip" | "/api/offer") => {
            return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST an SDP offer"));
        }
        _ => {
            return Ok(text(
                StatusCode::NOT_FOUND,
                "not found: POST offers to /whip (application/sdp) or /api/offer (JSON)",
            ));
        }
    };
    let body = match Limited::new(req.into_body(), MAX_OFFER).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &format!("bad body: {e}"))),
    };
    let body = String::from_utf8_lossy(&body).to_string();
    let offer = if pipecat {
        let v: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    &format!("the offer is not JSON: {e}"),
                ));
            }
        };
        match (
            v.get("type").and_then(Value::as_str),
            v.get("sdp").and_then(Value::as_str),
        ) {
            (Some("offer"), Some(sdp)) => sdp.to_string(),
            _ => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    "expected {\"sdp\": \"…\", \"type\": \"offer\"}",
                ));
            }
        }
    } else {
        body
    };
    let index = ctx.calls.fetch_add(1, Ordering::Relaxed);
    match answer(&offer, &ctx, index).await {
        Ok(sdp) if pipecat => Ok(reply(
            StatusCode::OK,
            "application/json",
            json!({"sdp": sdp, "type": "answer", "pc_id": format!("planrun-{index}")}).to_string(),
        )),
        Ok(sdp) => Ok(reply(StatusCode::CREATED, "application/sdp", sdp)),
        Err(why) => Ok(text(StatusCode::BAD_REQUEST, &why)),
    }
}

/// The mid of the offer's first audio section.
fn first_audio_mid(sdp: &str) -> Option<Mid> {
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            in_audio = rest.starts_with("audio ");
        } else if in_audio && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(Mid::from(mid.trim()));
        }
    }
    None
}

/// Accept an offer: the answer's SDP, with the call running in the background.
async fn answer(offer_sdp: &str, ctx: &Ctx, index: u64) -> Result<String, String> {
    let offer =
        SdpOffer::from_sdp_string(offer_sdp).map_err(|e| format!("the offer is not SDP: {e}"))?;
    let mid = first_audio_mid(offer_sdp).ok_or("the offer has no audio section with a mid")?;
    let socket = UdpSocket::bind((ctx.ip, 0))
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("UDP socket: {e}"))?;
    let mut rtc = rtc_config(true).build(std::time::Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| format!("cannot answer the offer: {e}"))?;

    let (to_peer, inbox) = mpsc::channel::<PeerIn>(256);
    let (outbox, mut from_peer) = mpsc::channel::<PeerOut>(256);
    let setup = PeerSetup {
        rate: ctx.shared.config.sample_rate,
        connect_timeout: CONNECT_TIMEOUT,
        media_timeout: MEDIA_TIMEOUT,
    };
    tokio::spawn(drive(
        rtc,
        socket,
        mid,
        setup,
        Instant::now(),
        inbox,
        outbox,
    ));
    // Caller audio → the session, as raw-protocol binary frames; the call ends with the peer.
    let incoming = futures_util::stream::poll_fn(move |cx| {
        loop {
            return match from_peer.poll_recv(cx) {
                std::task::Poll::Pending => std::task::Poll::Pending,
                std::task::Poll::Ready(Some(PeerOut::Audio(pcm))) => {
                    std::task::Poll::Ready(Some(Ok(Message::binary(pcm16_bytes(&pcm)))))
                }
                std::task::Poll::Ready(Some(PeerOut::Connected | PeerOut::Text(_))) => continue,
                std::task::Poll::Ready(Some(PeerOut::Closed(_) | PeerOut::Failed(..)))
                | std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            };
        }
    });
    // The session's output → the peer.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let item = match msg {
                Message::Binary(b) => PeerIn::Audio(decode_pcm16(&b)),
                Message::Text(t) => {
                    // The reply was cut: drop any part-frame not yet encoded.
                    if t.contains("\"interrupted\"") && to_peer.send(PeerIn::Flush).await.is_err() {
                        return;
                    }
                    // The session's events (response_start, transcript, interrupted, …) go
                    // out on the caller's data channel, if it opened one.
                    PeerIn::Text(t.to_string())
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if to_peer.send(item).await.is_err() {
                return;
            }
        }
        let _ = to_peer.send(PeerIn::Close).await;
    });
    tokio::spawn(session::run_bridged(
        Box::pin(incoming),
        out_tx,
        Arc::clone(&ctx.shared),
        index,
        ctx.stop.clone(),
    ));
    Ok(answer.to_sdp_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_audio_mid() {
        let sdp =
            "v=0\r\nm=application 9 x\r\na=mid:d\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(first_audio_mid(sdp), Some(Mid::from("0")));
        assert_eq!(first_audio_mid("v=0\r\n"), None);
    }
}
