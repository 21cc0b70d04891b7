//! Opening a `protocol: webrtc` call: the SDP offer POSTed to the target (WHIP-style
//! `application/sdp`, or Pipecat SmallWebRTC's JSON), the answer accepted, then ICE and DTLS
//! bounded by `webrtc.ice_timeout`. Every phase has a timeout and a failure class:
//!
//! | phase | failure |
//! |---|---|
//! | signalling endpoint unreachable or too slow | `connect_error` |
//! | offer rejected (HTTP 4xx/5xx, body quoted) | `handshake_rejected` |
//! | answer unreadable, or without audio | `protocol_error` |
//! | ICE never connects | `connect_error` |
//! | DTLS fails or never completes | `tls_error` |
//! | no RTP from the agent for `media_timeout` | `connection_closed` |
//!
//! The peer runs in its own task ([`crate::protocol::webrtc::drive`]); the session sees it as a
//! sink and a stream of messages shaped like the raw WebSocket protocol's (PCM16 binary
//! frames; JSON events from the `oai-events` data channel as text), so the step interpreter, the heard-audio timeline and the speech detector are the
//! same as for every other protocol.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, Stream};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde_json::{Value, json};
use str0m::Candidate;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connect::Connection;
use super::http::conn as http_conn;
use crate::metrics::FailureClass;
use crate::plan::model::WebrtcSpec;
use crate::protocol::client::pcm16_bytes;
use crate::protocol::decode_pcm16;
use crate::protocol::webrtc::{
    PeerFailure, PeerIn, PeerOut, PeerSetup, Signaling, answer_has_audio, drive, local_ip_for,
    rtc_config,
};
use crate::redact::redact;

/// What the session writes to (PCM16 binary frames; the raw protocol's text control messages
/// are dropped: a WebRTC agent finds turns in the audio).
pub type BoxSink = Pin<Box<dyn Sink<Message, Error = WsError> + Send>>;
/// What the session reads (decoded audio as PCM16 binary frames, a close at the end).
pub type BoxStream = Pin<Box<dyn Stream<Item = Result<Message, WsError>> + Send>>;

type Failed = (FailureClass, String);

/// The label of the data channel planrun opens.
pub const EVENTS_CHANNEL: &str = "oai-events";
/// Largest signalling response read.
const MAX_ANSWER: usize = 256 * 1024;
/// How long decoded audio keeps flowing to the session after the last packet at speech level
/// (pauses between words and sentences stay part of the reply; longer silence is dropped, as
/// a WebSocket bot sends nothing between replies).
pub const SPEECH_HANGOVER: Duration = Duration::from_millis(400);
/// Decoded packets buffered towards the session (≈5 s of 20 ms frames).
const INBOUND_CAPACITY: usize = 256;

/// Signal, connect ICE and DTLS, and hand back the call's sink and stream.
pub async fn open(
    conn: &Connection,
    spec: &WebrtcSpec,
    rate: u32,
    speech_threshold_dbfs: f64,
    connect_timeout: Duration,
) -> Result<(BoxSink, BoxStream), Failed> {
    let started = Instant::now();
    let shown = conn.display_url();
    let ep = http_conn::parse_endpoint(&conn.url)
        .map_err(|e| (FailureClass::ConnectError, redact(&e.to_string())))?;
    let signal_deadline = started + connect_timeout;
    let too_slow = || {
        (
            FailureClass::ConnectError,
            format!(
                "the signalling endpoint {shown} did not answer within {} ms",
                connect_timeout.as_millis()
            ),
        )
    };

    // Where our media socket lives: the interface that reaches the signalling host.
    let remote = timeout_at(
        signal_deadline,
        tokio::net::lookup_host((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| too_slow())?
    .map_err(|e| {
        (
            FailureClass::ConnectError,
            redact(&format!("cannot resolve {}: {e}", ep.host)),
        )
    })?
    .next()
    .ok_or_else(|| {
        (
            FailureClass::ConnectError,
            format!("{} resolves to no address", ep.host),
        )
    })?;
    let io_err = |e: std::io::Error| (FailureClass::ConnectError, format!("UDP socket: {e}"));
    let ip = local_ip_for(remote).await.map_err(io_err)?;
    let socket = UdpSocket::bind((ip, 0)).await.map_err(io_err)?;
    let local = socket.local_addr().map_err(io_err)?;

    let mut rtc = rtc_config(false).build(std::time::Instant::now());
    let candidate = Candidate::host(local, "udp").map_err(|e| {
        (
            FailureClass::ConnectError,
            format!("bad local candidate {local}: {e}"),
        )
    })?;
    rtc.add_local_candidate(candidate);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    // The events channel: OpenAI Realtime's JSON events ride `oai-events`; Pipecat takes any
    // label for its RTVI messages.
    change.add_channel(EVENTS_CHANNEL.to_string());
    let Some((offer, pending)) = change.apply() else {
        return Err((
            FailureClass::InternalError,
            "str0m produced no offer".into(),
        ));
    };

    let answer_sdp = timeout_at(
        signal_deadline,
        post_offer(conn, &ep, spec.signaling, &offer.to_sdp_string()),
    )
    .await
    .map_err(|_| too_slow())??;
    if !answer_has_audio(&answer_sdp) {
        return Err((
            FailureClass::ProtocolError,
            format!("the answer from {shown} has no audio (no active m=audio section)"),
        ));
    }
    let answer = SdpAnswer::from_sdp_string(&answer_sdp).map_err(|e| {
        (
            FailureClass::ProtocolError,
            format!("the answer from {shown} is not valid SDP: {e}"),
        )
    })?;
    rtc.sdp_api().accept_answer(pending, answer).map_err(|e| {
        (
            FailureClass::ProtocolError,
            format!("the answer from {shown} cannot be used: {e}"),
        )
    })?;

    let (to_peer, inbox) = mpsc::channel(64);
    let (outbox, mut from_peer) = mpsc::channel(INBOUND_CAPACITY);
    let setup = PeerSetup {
        rate,
        connect_timeout: spec.ice_timeout.0,
        media_timeout: spec.media_timeout.0,
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
    // The peer enforces the ICE/DTLS timeout itself; this outer bound only guards against a
    // peer task that died without a word.
    let wait = timeout(
        spec.ice_timeout.0 + Duration::from_secs(1),
        from_peer.recv(),
    );
    match wait.await {
        Ok(Some(PeerOut::Connected)) => {}
        Ok(Some(PeerOut::Failed(kind, why))) => {
            let class = match kind {
                PeerFailure::Dtls => FailureClass::TlsError,
                PeerFailure::Ice | PeerFailure::Io => FailureClass::ConnectError,
            };
            return Err((class, format!("{why} (WebRTC with {shown})")));
        }
        Ok(Some(PeerOut::Closed(why))) => {
            return Err((
                FailureClass::ConnectionClosed,
                format!("{why} while connecting (WebRTC with {shown})"),
            ));
        }
        Ok(Some(PeerOut::Audio(_) | PeerOut::Text(_))) | Ok(None) | Err(_) => {
            return Err((
                FailureClass::ConnectError,
                format!("WebRTC with {shown} did not connect"),
            ));
        }
    }

    let sink = futures_util::sink::unfold(to_peer, |tx, msg: Message| async move {
        let item = match msg {
            Message::Binary(b) => Some(PeerIn::Audio(decode_pcm16(&b))),
            Message::Close(_) => Some(PeerIn::Close),
            // Control messages have no channel on a WebRTC call.
            _ => None,
        };
        if let Some(item) = item {
            tx.send(item).await.map_err(|_| WsError::ConnectionClosed)?;
        }
        Ok::<_, WsError>(tx)
    });
    let mut ended = false;
    let mut talking_until: Option<Instant> = None;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        loop {
            return match from_peer.poll_recv(cx) {
                std::task::Poll::Pending => std::task::Poll::Pending,
                std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
                std::task::Poll::Ready(Some(out)) => match out {
                    PeerOut::Audio(pcm) => {
                        // The track streams silence between replies: pass audio on only from
                        // the first speech until `SPEECH_HANGOVER` after the last, so the
                        // session sees replies as a WebSocket bot sends them.
                        let now = Instant::now();
                        if crate::audio::dbfs(&pcm) >= speech_threshold_dbfs {
                            talking_until = Some(now + SPEECH_HANGOVER);
                        } else if talking_until.is_none_or(|t| now >= t) {
                            continue;
                        }
                        std::task::Poll::Ready(Some(Ok(Message::binary(pcm16_bytes(&pcm)))))
                    }
                    PeerOut::Connected => continue,
                    // Data-channel events that are JSON with a `type` (OpenAI events, RTVI
                    // messages, the built-in agent's raw events) become named events; anything
                    // else on the channel is not ours to judge.
                    PeerOut::Text(text) => {
                        let typed = serde_json::from_str::<Value>(&text)
                            .ok()
                            .is_some_and(|v| v.get("type").is_some_and(Value::is_string));
                        if !typed {
                            continue;
                        }
                        std::task::Poll::Ready(Some(Ok(Message::text(text))))
                    }
                    PeerOut::Closed(why) => {
                        ended = true;
                        std::task::Poll::Ready(Some(Ok(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: why.into(),
                        })))))
                    }
                    PeerOut::Failed(_, why) => {
                        ended = true;
                        std::task::Poll::Ready(Some(Err(WsError::Io(std::io::Error::other(why)))))
                    }
                },
            };
        }
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}

/// POST the offer; the answer's SDP, or why not.
async fn post_offer(
    conn: &Connection,
    ep: &http_conn::Endpoint,
    signaling: Signaling,
    offer: &str,
) -> Result<String, Failed> {
    let shown = conn.display_url();
    let mut sender = http_conn::open(ep, conn.tls.as_ref()).await.map_err(|e| {
        (
            FailureClass::ConnectError,
            redact(&format!("signalling: {e}")),
        )
    })?;
    let (content_type, body) = match signaling {
        Signaling::Whip => ("application/sdp", offer.to_string()),
        Signaling::Pipecat => (
            "application/json",
            json!({ "sdp": offer, "type": "offer" }).to_string(),
        ),
    };
    let mut req = hyper::Request::post(ep.path.as_str())
        .header(hyper::header::HOST, ep.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, content_type);
    for (k, v) in &conn.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| {
        (
            FailureClass::ConnectError,
            redact(&format!(
                "bad signalling request (check target.headers): {e}"
            )),
        )
    })?;
    let resp = sender.send_request(req).await.map_err(|e| {
        (
            FailureClass::ConnectError,
            redact(&format!("signalling with {shown} failed: {e}")),
        )
    })?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| {
            (
                FailureClass::ProtocolError,
                redact(&format!("reading the answer from {shown}: {e}")),
            )
        })?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    if !status.is_success() {
        let excerpt: String = text.trim().chars().take(200).collect();
        let excerpt = if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        };
        return Err((
            FailureClass::HandshakeRejected,
            redact(&format!(
                "{shown} rejected the WebRTC offer with HTTP {}{excerpt}",
                status.as_u16()
            )),
        ));
    }
    match signaling {
        Signaling::Whip => Ok(text),
        Signaling::Pipecat => {
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                (
                    FailureClass::ProtocolError,
                    format!("the Pipecat answer from {shown} is not JSON: {e}"),
                )
            })?;
            match (
                v.get("type").and_then(Value::as_str),
                v.get("sdp").and_then(Value::as_str),
            ) {
                (Some("answer"), Some(sdp)) => Ok(sdp.to_string()),
                _ => Err((
                    FailureClass::ProtocolError,
                    format!(
                        "the Pipecat answer from {shown} lacks `type: answer` and an `sdp` string"
                    ),
                )),
            }
        }
    }
}
