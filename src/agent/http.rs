//! The reference agent's HTTP side, for `protocol: http_chunks`: `POST /chunks` (or `PUT`)
//! takes one chunk of audio and answers JSON about it.
//!
//! The body is a WAV file (any rate, 16-bit PCM, mono or the first channel), raw PCM16 LE
//! (`audio/L16;rate=…`, `audio/pcm` or `application/octet-stream`; the rate from a `rate=`
//! parameter, else the agent's sample rate), or `multipart/form-data` whose part with a file
//! name (else the first part) is one of those. The audio is really analysed — per 20 ms frame,
//! energy against `vad_threshold_dbfs` — then the agent "processes" for `chunk_latency` (drawn
//! from a per-connection RNG seeded from (`seed`, connection number)) and answers:
//!
//! ```json
//! {"chunk": 1, "score": 62.5, "speech_ratio": 0.625, "duration_ms": 1000.0,
//!  "rms_dbfs": -23.1, "sample_rate": 16000, "processing_ms": 50.3}
//! ```
//!
//! `score` is the speech ratio in percent (one decimal). Faults, per chunk: `http_error`
//! answers 500 with a short text body, `non_json` answers 200 with an HTML body. Bad audio is a
//! 400 with a JSON `error`; other paths 404, other methods 405.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{AgentConfig, frame_dbfs, stopped};
use crate::distribution::Dist;

/// Largest chunk accepted (about 5 minutes of 48 kHz PCM16).
const MAX_BODY: usize = 32 << 20;

/// The HTTP side's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAgentConfig {
    /// Processing time of each chunk before the answer.
    pub chunk_latency: Dist,
    /// Probability of answering a chunk with HTTP 500.
    pub http_error: f64,
    /// Probability of answering a chunk with a body that is not JSON.
    pub non_json: f64,
}

impl Default for HttpAgentConfig {
    fn default() -> Self {
        HttpAgentConfig {
            chunk_latency: Dist::from_millis(50),
            http_error: 0.0,
            non_json: 0.0,
        }
    }
}

/// What the agent hears in one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkAnalysis {
    pub sample_rate: u32,
    pub duration_ms: f64,
    /// Fraction of 20 ms frames at or above the VAD threshold.
    pub speech_ratio: f64,
    /// `speech_ratio` in percent, one decimal.
    pub score: f64,
    /// RMS level of the whole chunk (-120 for digital silence).
    pub rms_dbfs: f64,
}

/// Analyse PCM16 mono audio per 20 ms frame.
pub fn analyse(samples: &[i16], rate: u32, vad_threshold_dbfs: f64) -> ChunkAnalysis {
    let frame = (rate as usize / 50).max(1);
    let frames = samples.len().div_ceil(frame);
    let speech = samples
        .chunks(frame)
        .filter(|f| frame_dbfs(f) >= vad_threshold_dbfs)
        .count();
    let speech_ratio = if frames == 0 {
        0.0
    } else {
        speech as f64 / frames as f64
    };
    let rms = frame_dbfs(samples);
    ChunkAnalysis {
        sample_rate: rate,
        duration_ms: round1(samples.len() as f64 * 1000.0 / f64::from(rate.max(1))),
        speech_ratio: (speech_ratio * 10_000.0).round() / 10_000.0,
        score: round1(speech_ratio * 100.0),
        rms_dbfs: if rms.is_finite() {
            round1(rms.max(-120.0))
        } else {
            -120.0
        },
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A `key=value` parameter of a header value (`boundary=…`, `rate=…`), unquoted.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The audio part of a `multipart/form-data` body: the first part with a file name, else the
/// first part. Returns its content type (if given) and bytes.
fn multipart_audio<'a>(
    body: &'a [u8],
    boundary: &str,
) -> Result<(Option<String>, &'a [u8]), String> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut at = find(body, delim.as_bytes(), 0).ok_or("no multipart boundary in the body")?;
    loop {
        let after = at + delim.len();
        if body[after..].starts_with(b"--") {
            break; // closing delimiter
        }
        let head_start = after + 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", head_start)
            .ok_or("a multipart part has no blank line after its headers")?;
        let headers =
            String::from_utf8_lossy(&body[head_start.min(head_end)..head_end]).to_string();
        let data_start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), data_start)
            .ok_or("a multipart part is not closed by the boundary")?;
        parts.push((headers, &body[data_start..next]));
        at = next + 2;
    }
    let pick = parts
        .iter()
        .find(|(h, _)| h.to_ascii_lowercase().contains("filename="))
        .or_else(|| parts.first())
        .ok_or("the multipart body has no part")?;
    let content_type = pick.0.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_string())
    });
    Ok((content_type, pick.1))
}

/// Decode a chunk: a WAV file, or raw PCM16 LE at `rate=` of the content type (else `default_rate`).
fn decode_audio(
    bytes: &[u8],
    content_type: Option<&str>,
    default_rate: u32,
) -> Result<(Vec<i16>, u32), String> {
    if bytes.starts_with(b"RIFF") {
        let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes))
            .map_err(|e| format!("not a readable WAV file: {e}"))?;
        let spec = reader.spec();
        if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            return Err(format!(
                "WAV must be 16-bit PCM, found {} bits {:?}",
                spec.bits_per_sample, spec.sample_format
            ));
        }
        let channels = usize::from(spec.channels.max(1));
        let all: Vec<i16> = reader
            .samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("WAV data: {e}"))?;
        let mono = all.iter().step_by(channels).copied().collect();
        return Ok((mono, spec.sample_rate));
    }
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let raw = ct.starts_with("audio/l16")
        || ct.starts_with("audio/pcm")
        || ct.starts_with("audio/raw")
        || ct.starts_with("application/octet-stream");
    if !raw {
        return Err(format!(
            "expected a WAV file or raw PCM16 (audio/L16;rate=…), found content type `{ct}`"
        ));
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(format!(
            "raw PCM16 has an odd number of bytes ({})",
            bytes.len()
        ));
    }
    let rate = match param(&ct, "rate") {
        Some(r) => r.parse::<u32>().map_err(|_| format!("bad rate `{r}`"))?,
        None => default_rate,
    };
    if rate == 0 {
        return Err("rate must be above 0".into());
    }
    let samples = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok((samples, rate))
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

/// One connection's state: its RNG and chunk count.
struct Conn {
    config: Arc<AgentConfig>,
    rng: Mutex<StdRng>,
    chunks: std::sync::atomic::AtomicU64,
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/chunks" {
        return Ok(json_error(
            StatusCode::NOT_FOUND,
            "not found: POST audio to /chunks",
        ));
    }
    if req.method() != Method::POST && req.method() != Method::PUT {
        return Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST or PUT",
        ));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(json_error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())),
    };
    let received = Instant::now();
    let n = conn
        .chunks
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let cfg = &conn.config;
    let decoded = match content_type.as_deref() {
        Some(ct) if ct.to_ascii_lowercase().starts_with("multipart/form-data") => {
            match param(ct, "boundary") {
                Some(b) => multipart_audio(&body, &b)
                    .and_then(|(pct, data)| decode_audio(data, pct.as_deref(), cfg.sample_rate)),
                None => Err("multipart content type without a boundary".into()),
            }
        }
        ct => decode_audio(&body, ct, cfg.sample_rate),
    };
    let (samples, rate) = match decoded {
        Ok(x) => x,
        Err(e) => return Ok(json_error(StatusCode::BAD_REQUEST, &e)),
    };
    let analysis = analyse(&samples, rate, cfg.vad_threshold_dbfs);
    let (latency, roll) = match conn.rng.lock() {
        Ok(mut rng) => (
            cfg.http.chunk_latency.sample(&mut *rng),
            rng.random::<f64>(),
        ),
        Err(_) => (cfg.http.chunk_latency.mean(), 1.0),
    };
    tokio::time::sleep_until(received + latency).await;
    if roll < cfg.http.http_error {
        return Ok(respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "internal error: injected fault (http_error)",
        ));
    }
    if roll < cfg.http.http_error + cfg.http.non_json {
        return Ok(respond(
            StatusCode::OK,
            "text/html",
            "<html><body>injected fault (non_json): this is not JSON</body></html>",
        ));
    }
    let body = json!({
        "chunk": n,
        "score": analysis.score,
        "speech_ratio": analysis.speech_ratio,
        "duration_ms": analysis.duration_ms,
        "rms_dbfs": analysis.rms_dbfs,
        "sample_rate": analysis.sample_rate,
        "processing_ms": round1(received.elapsed().as_secs_f64() * 1000.0),
    });
    Ok(respond(
        StatusCode::OK,
        "application/json",
        body.to_string(),
    ))
}

/// SplitMix64 of (seed, connection index), salted apart from the WebSocket side's streams.
fn conn_seed(seed: u64, index: u64) -> u64 {
    let mut z =
        (seed ^ 0x4854_5450_4348_4b53) ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Accept HTTP connections until told to stop.
pub(super) async fn accept_loop(
    listener: TcpListener,
    config: Arc<AgentConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut index = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Arc::new(Conn {
                        config: Arc::clone(&config),
                        rng: Mutex::new(StdRng::seed_from_u64(conn_seed(config.seed, index))),
                        chunks: std::sync::atomic::AtomicU64::new(0),
                    });
                    index += 1;
                    let mut stop = stop.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&conn)));
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
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    conns.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_tells_speech_from_silence() {
        let rate = 16_000;
        let silence = vec![0i16; 16_000];
        let a = analyse(&silence, rate, -40.0);
        assert_eq!(
            (a.speech_ratio, a.score, a.duration_ms, a.rms_dbfs),
            (0.0, 0.0, 1000.0, -120.0)
        );
        // First fifth (10 of 50 frames) a loud square wave, rest silent.
        let mut mixed = vec![0i16; 16_000];
        for (i, s) in mixed.iter_mut().take(3_200).enumerate() {
            *s = if i % 20 < 10 { 8000 } else { -8000 };
        }
        let a = analyse(&mixed, rate, -40.0);
        assert_eq!(a.speech_ratio, 0.2);
        assert_eq!(a.score, 20.0);
        // A trailing partial frame counts as a frame: 10 speech frames of 11.
        let a = analyse(&mixed[..3_360], rate, -40.0);
        assert_eq!((a.speech_ratio, a.duration_ms), (0.9091, 210.0));
    }

    #[test]
    fn multipart_picks_the_file_part() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\nhello\r\n--XY\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.pcm\"\r\nContent-Type: audio/L16;rate=8000\r\n\r\n\x01\x00\x02\x00\r\n--XY--\r\n";
        let (ct, data) = multipart_audio(body, "XY").unwrap();
        assert_eq!(ct.as_deref(), Some("audio/L16;rate=8000"));
        assert_eq!(data, b"\x01\x00\x02\x00");
        let (s, rate) = decode_audio(data, ct.as_deref(), 16_000).unwrap();
        assert_eq!((s, rate), (vec![1, 2], 8000));
        assert!(multipart_audio(b"garbage", "XY").is_err());
        assert!(multipart_audio(b"--XY\r\nno blank line", "XY").is_err());
    }

    #[test]
    fn decode_rejects_what_it_cannot_read() {
        assert!(decode_audio(b"\x01\x00\x02", Some("audio/L16"), 16_000).is_err());
        assert!(decode_audio(b"{}", Some("application/json"), 16_000).is_err());
        assert!(decode_audio(b"RIFFjunk", None, 16_000).is_err());
        assert_eq!(
            decode_audio(b"\x01\x00", Some("application/octet-stream"), 22_050).unwrap(),
            (vec![1], 22_050)
        );
    }
}
