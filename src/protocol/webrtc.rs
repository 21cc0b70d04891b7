//! WebRTC media for both ends (planrun's callers and the built-in agent): one str0m peer
//! (sans-IO: ICE, DTLS-SRTP, RTP) driven by one tokio UDP socket, Opus in and out through
//! libopus, and PCM16 at the plan's sample rate on the application side.
//!
//! The application talks to a peer through two channels: [`PeerIn`] (PCM16 audio to send, close)
//! and [`PeerOut`] (connected, decoded audio, closed or failed). Audio handed to the peer is sent
//! at once (the caller paces it on its own absolute schedule); when nothing was sent for two
//! frames the peer streams silence on the 20 ms grid, as a WebRTC track does. Inbound RTP is
//! decoded packet by packet and passed on as PCM: a track streams silence while the other side
//! says nothing, so the speech in it is found from the decoded content, never from packets.
//!
//! Signalling (how the offer and answer travel) is not here: the engine POSTs the offer
//! (`engine::webrtc`), the agent answers it (`agent::webrtc`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use str0m::media::{Frequency, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

/// How the SDP offer reaches the agent and the answer comes back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signaling {
    /// WHIP-style: `POST` of the offer as `application/sdp`, the answer is the response body
    /// (OpenAI Realtime over WebRTC, media servers).
    #[default]
    Whip,
    /// Pipecat SmallWebRTC: `POST` of `{"sdp", "type": "offer"}` as JSON, the answer comes
    /// back as `{"sdp", "type": "answer", "pc_id"}`.
    Pipecat,
}

impl Signaling {
    pub fn name(self) -> &'static str {
        match self {
            Signaling::Whip => "whip",
            Signaling::Pipecat => "pipecat",
        }
    }
}

/// The sample rates libopus encodes and decodes natively (no resampling on either side).
pub const OPUS_RATES: &[u32] = &[8_000, 12_000, 16_000, 24_000, 48_000];
/// Opus frame on the wire.
pub const OPUS_FRAME: Duration = Duration::from_millis(20);
/// RTP clock of Opus (always 48 kHz, whatever the coded bandwidth).
const RTP_TICKS_PER_FRAME: u64 = 960;
/// Largest Opus packet produced (a 20 ms voice frame is well under this).
const MAX_PACKET: usize = 1500;

/// What the application gives a peer.
#[derive(Debug)]
pub enum PeerIn {
    /// PCM16 mono at the peer's rate (any length: it is cut into 20 ms Opus frames).
    Audio(Vec<i16>),
    /// Drop audio not yet sent (the agent flushing a reply it stopped).
    Flush,
    /// A text message for the data channel (dropped while no channel is open).
    Text(String),
    /// Close politely (RTCP BYE, DTLS close_notify), then end.
    Close,
}

/// Why a peer could not set up or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFailure {
    /// ICE never connected (no answer to the connectivity checks).
    Ice,
    /// ICE connected, the DTLS handshake did not complete or failed.
    Dtls,
    /// The socket or the codec failed.
    Io,
}

/// What a peer tells the application.
#[derive(Debug)]
pub enum PeerOut {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// Decoded audio of one RTP packet (PCM16 mono at the peer's rate).
    Audio(Vec<i16>),
    /// A text message from the data channel (OpenAI's JSON events, Pipecat RTVI messages).
    Text(String),
    /// The other side closed, or stopped sending media for `media_timeout`.
    Closed(String),
    /// Setup failed or the peer broke.
    Failed(PeerFailure, String),
}

/// How a peer runs.
#[derive(Debug, Clone, Copy)]
pub struct PeerSetup {
    /// PCM rate of both directions (one of [`OPUS_RATES`]).
    pub rate: u32,
    /// ICE + DTLS must be up within this long of the start.
    pub connect_timeout: Duration,
    /// Once connected, no RTP at all from the other side for this long ends the call.
    pub media_timeout: Duration,
}

/// One DTLS certificate for every peer of the process (as a browser keeps one per profile):
/// generating a key pair per call would cost every call an EC key generation.
static DTLS_CERT: OnceLock<Option<str0m::config::DtlsCert>> = OnceLock::new();

/// A str0m configuration for an audio-only Opus peer.
pub fn rtc_config(ice_lite: bool) -> RtcConfig {
    let cert = DTLS_CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    });
    let config = match cert {
        Some(c) => Rtc::builder().set_dtls_cert(c.clone()),
        None => Rtc::builder(),
    };
    config
        .clear_codecs()
        .enable_opus(true, false)
        .set_ice_lite(ice_lite)
        // Decode each packet as it arrives: the caller's playout model measures jitter and
        // underruns itself, a reordering wait would only hide them.
        .set_reordering_size_audio(0)
}

/// Most packets kept in [`PACKETS`] (each a few dozen bytes: a few MiB at most).
const PACKET_CACHE_MAX: usize = 65_536;

/// Opus packets shared by every peer of the process, keyed by (rate, previous frame, frame).
///
/// Every caller sends the same clips (decoded once when the plan is compiled) and the same
/// silence, and the agent sends the same reply voice, so a frame that followed the same frame
/// before encodes to the same packet: the first peer to send it encodes it, every other one
/// reuses it (only RTP headers, SRTP and pacing stay per peer). Keying on the previous frame too
/// keeps the encoder's history the same as a sequential encode from the start of a clip. A peer
/// whose encoder skipped frames it found here encodes its next new frame from an older state:
/// audibly identical, not bit-exact.
type PacketKey = (u32, u64, u64);
static PACKETS: OnceLock<RwLock<HashMap<PacketKey, Arc<[u8]>>>> = OnceLock::new();

fn packets() -> &'static RwLock<HashMap<PacketKey, Arc<[u8]>>> {
    PACKETS.get_or_init(|| RwLock::new(HashMap::new()))
}

fn frame_hash(pcm: &[i16]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pcm.hash(&mut h);
    h.finish()
}

/// Opus encoder for one peer: cuts PCM into 20 ms frames.
pub struct OpusOut {
    enc: opus::Encoder,
    rate: u32,
    frame: usize,
    pending: Vec<i16>,
    packet: Vec<u8>,
    /// Hash of the last frame sent (the cache key's history part).
    prev: u64,
    zeros: Vec<i16>,
}

impl OpusOut {
    pub fn new(rate: u32) -> Result<Self, String> {
        let mut enc = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| format!("cannot create an Opus encoder at {rate} Hz: {e}"))?;
        // Voice at a constant, moderate bitrate; no in-band FEC or DTX (a WebRTC track
        // streams every frame).
        let _ = enc.set_bitrate(opus::Bitrate::Bits(32_000));
        let frame = (rate as usize) / 50;
        Ok(OpusOut {
            enc,
            rate,
            frame,
            pending: Vec::new(),
            packet: vec![0; MAX_PACKET],
            prev: 0,
            zeros: vec![0; frame],
        })
    }

    /// One 20 ms frame's packet: from the shared cache, or encoded (and shared).
    fn encode(&mut self, pcm: &[i16]) -> Result<Arc<[u8]>, String> {
        let h = frame_hash(pcm);
        let key = (self.rate, self.prev, h);
        self.prev = h;
        if let Some(p) = packets().read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let n = self
            .enc
            .encode(pcm, &mut self.packet)
            .map_err(|e| format!("Opus encoding failed: {e}"))?;
        let packet: Arc<[u8]> = Arc::from(&self.packet[..n]);
        if let Ok(mut m) = packets().write()
            && m.len() < PACKET_CACHE_MAX
        {
            m.insert(key, Arc::clone(&packet));
        }
        Ok(packet)
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Queue PCM; returns the Opus packets of every complete frame.
    pub fn push(&mut self, pcm: &[i16]) -> Result<Vec<Arc<[u8]>>, String> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(pcm);
        let mut out = Vec::new();
        let mut at = 0;
        while pending.len() - at >= self.frame {
            out.push(self.encode(&pending[at..at + self.frame])?);
            at += self.frame;
        }
        pending.drain(..at);
        self.pending = pending;
        Ok(out)
    }

    /// One frame of silence.
    pub fn silence(&mut self) -> Result<Arc<[u8]>, String> {
        let zeros = std::mem::take(&mut self.zeros);
        let packet = self.encode(&zeros);
        self.zeros = zeros;
        packet
    }

    /// Drop PCM not yet encoded.
    pub fn flush(&mut self) {
        self.pending.clear();
    }
}

/// Opus decoder for one peer (stereo streams are downmixed by libopus).
pub struct OpusIn {
    dec: opus::Decoder,
    buf: Vec<i16>,
}

impl OpusIn {
    pub fn new(rate: u32) -> Result<Self, String> {
        let dec = opus::Decoder::new(rate, opus::Channels::Mono)
            .map_err(|e| format!("cannot create an Opus decoder at {rate} Hz: {e}"))?;
        // The longest Opus packet is 120 ms.
        Ok(OpusIn {
            dec,
            buf: vec![0; rate as usize * 120 / 1000],
        })
    }

    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, String> {
        let n = self
            .dec
            .decode(packet, &mut self.buf, false)
            .map_err(|e| format!("the peer sent an Opus packet that does not decode: {e}"))?;
        Ok(self.buf[..n].to_vec())
    }
}

/// Local UDP address for talking to `remote_host`: loopback for a loopback host, else the
/// interface the system routes to it through (a connected UDP socket sends nothing).
pub async fn local_ip_for(remote: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    if remote.ip().is_loopback() {
        return Ok(remote.ip());
    }
    let any = if remote.is_ipv4() {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let probe = UdpSocket::bind(any).await?;
    probe.connect(remote).await?;
    Ok(probe.local_addr()?.ip())
}

/// Drive one peer until it closes or fails. `mid` is the audio media; `started` is when setup
/// began (the connect timeout counts from it). Never panics on peer input.
pub async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    setup: PeerSetup,
    started: Instant,
    mut inbox: mpsc::Receiver<PeerIn>,
    outbox: mpsc::Sender<PeerOut>,
) {
    let mut peer = match Peer::new(setup, mid) {
        Ok(p) => p,
        Err(e) => {
            let _ = outbox.send(PeerOut::Failed(PeerFailure::Io, e)).await;
            return;
        }
    };
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = outbox
                .send(PeerOut::Failed(PeerFailure::Io, format!("UDP socket: {e}")))
                .await;
            return;
        }
    };
    let connect_deadline = started + setup.connect_timeout;
    let mut buf = vec![0u8; 2000];
    let mut inbox_open = true;
    let mut close_deadline: Option<Instant> = None;
    loop {
        // Drain every output until the next timeout.
        let wake = match peer.drain(&mut rtc, &socket, &outbox) {
            Ok(t) => t,
            Err(end) => {
                let _ = outbox.send(end).await;
                break;
            }
        };
        if !rtc.is_alive() {
            if !peer.closing {
                let _ = outbox
                    .send(PeerOut::Closed("the peer closed the call".into()))
                    .await;
            }
            break;
        }
        let now = Instant::now();
        if let Some(d) = close_deadline
            && now >= d
        {
            break;
        }
        if !peer.connected && now >= connect_deadline {
            let (kind, why) = if peer.ice_connected {
                (
                    PeerFailure::Dtls,
                    format!(
                        "ICE connected but the DTLS handshake did not complete within {} ms",
                        setup.connect_timeout.as_millis()
                    ),
                )
            } else {
                (
                    PeerFailure::Ice,
                    format!(
                        "ICE did not connect within {} ms (no answer to connectivity checks)",
                        setup.connect_timeout.as_millis()
                    ),
                )
            };
            let _ = outbox.send(PeerOut::Failed(kind, why)).await;
            rtc.disconnect();
            break;
        }
        if peer.connected
            && !peer.closing
            && now.saturating_duration_since(peer.last_rx) >= setup.media_timeout
        {
            let _ = outbox
                .send(PeerOut::Closed(format!(
                    "the peer sent no media for {} ms",
                    setup.media_timeout.as_millis()
                )))
                .await;
            let _ = rtc.close();
            peer.closing = true;
            close_deadline = Some(now + Duration::from_millis(200));
            continue;
        }
        let mut until = Instant::from_std(wake).min(now + Duration::from_secs(1));
        if !peer.connected {
            until = until.min(connect_deadline);
        } else if !peer.closing {
            until = until
                .min(peer.next_fill)
                .min(peer.last_rx + setup.media_timeout);
        }
        if let Some(d) = close_deadline {
            until = until.min(d);
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, source)) => {
                    let at = std::time::Instant::now();
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(at, Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: local,
                            contents,
                        });
                        if let Err(e) = rtc.handle_input(input) {
                            let _ = outbox.send(peer.rtc_failure(e)).await;
                            break;
                        }
                    }
                }
                Err(e) => {
                    // ICMP port unreachable and the like surface here on Linux: not fatal.
                    if e.kind() != std::io::ErrorKind::ConnectionRefused {
                        let _ = outbox
                            .send(PeerOut::Failed(PeerFailure::Io, format!("UDP receive: {e}")))
                            .await;
                        break;
                    }
                }
            },
            m = inbox.recv(), if inbox_open => match m {
                Some(PeerIn::Audio(pcm)) => {
                    if let Err(e) = peer.send_audio(&mut rtc, &pcm) {
                        let _ = outbox.send(PeerOut::Failed(PeerFailure::Io, e)).await;
                        break;
                    }
                }
                Some(PeerIn::Flush) => peer.out.flush(),
                Some(PeerIn::Text(text)) => {
                    if let Some(mut ch) = peer.channel.and_then(|id| rtc.channel(id)) {
                        // A full SCTP buffer drops the message, as a slow reader would.
                        let _ = ch.write(false, text.as_bytes());
                    }
                }
                Some(PeerIn::Close) | None => {
                    inbox_open = false;
                    if !peer.closing {
                        peer.closing = true;
                        let _ = rtc.close();
                        close_deadline = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            },
            () = sleep_until(until) => {
                if peer.connected && !peer.closing && Instant::now() >= peer.next_fill
                    && let Err(e) = peer.fill(&mut rtc)
                {
                    let _ = outbox.send(PeerOut::Failed(PeerFailure::Io, e)).await;
                    break;
                }
            }
        }
        if rtc.is_alive()
            && let Err(e) = rtc.handle_input(Input::Timeout(std::time::Instant::now()))
        {
            let _ = outbox.send(peer.rtc_failure(e)).await;
            break;
        }
    }
}

/// The per-peer state around the `Rtc`.
struct Peer {
    mid: Mid,
    out: OpusOut,
    dec: OpusIn,
    ice_connected: bool,
    connected: bool,
    closing: bool,
    pt: Option<str0m::media::Pt>,
    /// The open data channel, if any.
    channel: Option<str0m::channel::ChannelId>,
    /// RTP time of the next packet sent.
    rtp: u64,
    /// When the next silence frame is due if nothing else was sent.
    next_fill: Instant,
    /// When RTP last arrived (or when media started).
    last_rx: Instant,
}

impl Peer {
    fn new(setup: PeerSetup, mid: Mid) -> Result<Self, String> {
        let now = Instant::now();
        Ok(Peer {
            mid,
            out: OpusOut::new(setup.rate)?,
            dec: OpusIn::new(setup.rate)?,
            ice_connected: false,
            connected: false,
            closing: false,
            pt: None,
            channel: None,
            rtp: 0,
            next_fill: now,
            last_rx: now,
        })
    }

    fn rtc_failure(&self, e: RtcError) -> PeerOut {
        let kind = match e {
            RtcError::Dtls(_) => PeerFailure::Dtls,
            _ if self.ice_connected && !self.connected => PeerFailure::Dtls,
            _ => PeerFailure::Io,
        };
        let what = match kind {
            PeerFailure::Dtls => "DTLS failed",
            _ => "WebRTC failed",
        };
        PeerOut::Failed(kind, format!("{what}: {e}"))
    }

    /// Poll until str0m asks to be woken later; transmit, and hand events on.
    fn drain(
        &mut self,
        rtc: &mut Rtc,
        socket: &UdpSocket,
        outbox: &mpsc::Sender<PeerOut>,
    ) -> Result<std::time::Instant, PeerOut> {
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    // UDP: a full send buffer loses the packet, as the network would.
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.event(rtc, e, outbox)?,
                Err(e) => return Err(self.rtc_failure(e)),
            }
        }
    }

    fn event(
        &mut self,
        rtc: &mut Rtc,
        e: Event,
        outbox: &mpsc::Sender<PeerOut>,
    ) -> Result<(), PeerOut> {
        match e {
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.ice_connected = true;
                }
                IceConnectionState::Disconnected if self.connected && !self.closing => {
                    return Err(PeerOut::Closed(
                        "the peer stopped answering ICE consent checks".into(),
                    ));
                }
                _ => {}
            },
            Event::Connected => {
                self.connected = true;
                self.ice_connected = true;
                let now = Instant::now();
                self.last_rx = now;
                self.next_fill = now;
                self.pt = rtc.writer(self.mid).and_then(|w| {
                    w.payload_params()
                        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                        .map(|p| p.pt())
                });
                if self.pt.is_none() {
                    return Err(PeerOut::Failed(
                        PeerFailure::Io,
                        "the negotiated audio has no Opus payload type".into(),
                    ));
                }
                if outbox.try_send(PeerOut::Connected).is_err() {
                    return Err(PeerOut::Closed("the application went away".into()));
                }
            }
            Event::MediaData(data) => {
                self.last_rx = Instant::now();
                if data.mid == self.mid && !self.closing {
                    let pcm = self
                        .dec
                        .decode(&data.data)
                        .map_err(|e| PeerOut::Failed(PeerFailure::Io, e))?;
                    match outbox.try_send(PeerOut::Audio(pcm)) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err(PeerOut::Closed("the application went away".into()));
                        }
                    }
                }
            }
            Event::RtpPacket(_) => self.last_rx = Instant::now(),
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelClose(id) if self.channel == Some(id) => self.channel = None,
            Event::ChannelData(d) if !d.binary && !self.closing => {
                let text = String::from_utf8_lossy(&d.data).into_owned();
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    outbox.try_send(PeerOut::Text(text))
                {
                    return Err(PeerOut::Closed("the application went away".into()));
                }
            }
            Event::Closed if !self.closing => {
                self.closing = true;
                return Err(PeerOut::Closed("the peer closed the call".into()));
            }
            _ => {}
        }
        Ok(())
    }

    fn write(&mut self, rtc: &mut Rtc, packet: Arc<[u8]>) -> Result<(), String> {
        let (Some(pt), Some(writer)) = (self.pt, rtc.writer(self.mid)) else {
            return Ok(()); // not connected yet, or closing: nothing to send
        };
        let time = MediaTime::new(self.rtp, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(pt, std::time::Instant::now(), time, packet)
            .map_err(|e| format!("RTP write failed: {e}"))?;
        self.rtp += RTP_TICKS_PER_FRAME;
        Ok(())
    }

    fn send_audio(&mut self, rtc: &mut Rtc, pcm: &[i16]) -> Result<(), String> {
        if !self.connected || self.closing {
            return Ok(());
        }
        for packet in self.out.push(pcm)? {
            self.write(rtc, packet)?;
        }
        // Silence resumes two frames after the last audio, then on the 20 ms grid.
        self.next_fill = Instant::now() + OPUS_FRAME * 2;
        Ok(())
    }

    fn fill(&mut self, rtc: &mut Rtc) -> Result<(), String> {
        let packet = self.out.silence()?;
        self.write(rtc, packet)?;
        self.next_fill += OPUS_FRAME;
        let now = Instant::now();
        if self.next_fill < now {
            // Fell behind (a stalled runtime): skip ahead rather than burst.
            self.next_fill = now + OPUS_FRAME;
        }
        Ok(())
    }
}

/// Whether an SDP answer carries audio we can use: an `m=audio` line with a non-zero port
/// that is not `inactive`.
pub fn answer_has_audio(sdp: &str) -> bool {
    let mut in_audio = false;
    let mut audio_ok = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            if in_audio && audio_ok {
                return true;
            }
            let mut parts = rest.split_whitespace();
            in_audio = parts.next() == Some("audio");
            audio_ok = in_audio && parts.next().is_some_and(|p| p != "0");
        } else if in_audio && (line == "a=inactive") {
            audio_ok = false;
        }
    }
    in_audio && audio_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_round_trip_keeps_speech_level() {
        let rate = 16_000;
        let mut out = OpusOut::new(rate).unwrap();
        let mut dec = OpusIn::new(rate).unwrap();
        let tone: Vec<i16> = (0..rate as usize / 5)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()) as i16
            })
            .collect();
        let packets = out.push(&tone).unwrap();
        assert_eq!(packets.len(), 10, "200 ms is ten 20 ms frames");
        let mut pcm = Vec::new();
        for p in &packets {
            pcm.extend(dec.decode(p).unwrap());
        }
        assert_eq!(pcm.len(), tone.len());
        let tail = &pcm[pcm.len() / 2..];
        assert!(
            crate::audio::dbfs(tail) > -20.0,
            "{}",
            crate::audio::dbfs(tail)
        );
        let silence = out.silence().unwrap();
        let quiet = dec.decode(&silence).unwrap();
        let _ = dec.decode(&out.silence().unwrap()).unwrap();
        assert_eq!(quiet.len(), 320);
        let later = dec.decode(&out.silence().unwrap()).unwrap();
        assert!(crate::audio::dbfs(&later) < -50.0);
    }

    #[test]
    fn peers_share_the_packets_of_the_same_audio() {
        let rate = 24_000;
        let clip: Vec<i16> = (0..rate as usize / 10).map(|i| (i as i16) * 7).collect();
        let mut a = OpusOut::new(rate).unwrap();
        let mut b = OpusOut::new(rate).unwrap();
        let (pa, pb) = (a.push(&clip).unwrap(), b.push(&clip).unwrap());
        assert_eq!(pa.len(), 5);
        for (x, y) in pa.iter().zip(&pb) {
            assert!(
                Arc::ptr_eq(x, y),
                "the second peer reuses the first one's packets"
            );
        }
        // The same frame after different history is a different packet slot.
        let mut c = OpusOut::new(rate).unwrap();
        let _ = c.silence().unwrap();
        let pc = c.push(&clip).unwrap();
        assert!(!Arc::ptr_eq(&pa[0], &pc[0]));
    }

    #[test]
    fn answer_audio_is_detected() {
        let ok = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
        assert!(answer_has_audio(ok));
        let rejected = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(!answer_has_audio(rejected));
        let inactive = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\n";
        assert!(!answer_has_audio(inactive));
        let data_only = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert!(!answer_has_audio(data_only));
    }
}
