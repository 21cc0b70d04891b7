//! `protocol: http_chunks`: one call (iteration) against a target reached over HTTP.
//!
//! The call opens one keep-alive HTTP/1.1 connection (reopened if the server closes it between
//! chunks). Each `send_audio` step's audio is cut into chunks of `target.http.chunk`; a chunk is
//! sent when its audio would have been fully captured (`pacing: realtime`, against an absolute
//! schedule from the step's start) or right after the previous answer (`burst`). Chunks of one
//! call go one at a time: the next request waits for the previous response.
//!
//! Per chunk: `chunk_latency` (request handed to the connection → response read and parsed as
//! JSON) and every `target.http.capture` field. Failures: `connect_error`, `http_error`
//! (status ≥ 400, with a body excerpt), `timeout` (`response_timeout`), `protocol_error`
//! (a body that is not JSON, or a captured field that is missing or not a number, with an
//! excerpt), `connection_closed`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::session::{Ctx, Trace, wait_stop};
use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass, HttpCounts, Marker, Sample};
use crate::plan::HTTP_CHUNK_LATENCY;
use crate::plan::compile::{Action, AudioOut, HttpTarget, ScenarioSpec, StepSpec};
use crate::plan::model::{ChunkFormat, HttpBody, Pacing};

/// Largest response body read; a bigger one is a `protocol_error`.
const MAX_RESPONSE: usize = 1 << 20;
/// Characters of a response body quoted in a failure message.
const EXCERPT_CHARS: usize = 200;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where chunks go, parsed once per call.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("target url `{url}` is not a valid URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("target url `{url}` is not http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("target url `{url}` has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Endpoint {
        https,
        host,
        port,
        authority: authority.as_str().to_string(),
        path,
    })
}

/// Open a connection and do the HTTP/1.1 handshake.
async fn open(
    ep: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", ep.authority))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if ep.https {
        // The plan's `tls` settings (extra CA, insecure) when given, else the web PKI roots.
        let mut config = match tls {
            Some(c) => (**c).clone(),
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
            .map_err(|e| format!("`{}` is not a valid TLS server name: {e}", ep.host))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", ep.authority))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", ep.authority))?;
    tokio::spawn(async move {
        // Ends when the call drops its sender or the server closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A complete PCM16 mono WAV file.
pub fn wav_bytes(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend(pcm16_bytes(samples));
    out
}

fn pcm16_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The request's content type and body for one chunk.
pub fn chunk_body(
    http: &HttpTarget,
    samples: &[i16],
    rate: u32,
    boundary: &str,
) -> (String, Vec<u8>) {
    let audio = match http.format {
        ChunkFormat::Wav => wav_bytes(samples, rate),
        ChunkFormat::Pcm16 => pcm16_bytes(samples),
    };
    match http.body {
        HttpBody::Raw => (http.part_content_type.clone(), audio),
        HttpBody::Multipart => {
            let mut body = Vec::with_capacity(audio.len() + 256);
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                    http.field.replace('"', "%22"),
                    http.file_name.replace('"', "%22"),
                    http.part_content_type
                )
                .as_bytes(),
            );
            body.extend_from_slice(&audio);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            (format!("multipart/form-data; boundary={boundary}"), body)
        }
    }
}

/// The start of a response body, printable, for failure messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    if out.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        format!("`{}`", out.trim())
    }
}

fn fail(class: FailureClass, step: &StepSpec, message: impl Into<String>) -> Failure {
    Failure {
        class,
        step: step.position(),
        message: message.into(),
    }
}

/// One call in progress.
struct Call<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    http: &'c HttpTarget,
    trace: Trace,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Chunks sent so far in this call (numbers them from 1).
    sent: u64,
    counts: HttpCounts,
    boundary: String,
}

/// Run one call of `scenario` over HTTP. Returns its trace and the failure, if any.
pub async fn run_iteration(
    ctx: &mut Ctx<'_>,
    http: &HttpTarget,
    scenario: &ScenarioSpec,
) -> (Trace, Option<Failure>) {
    let begin = Instant::now();
    let boundary = format!("planrun-{:016x}", rand::RngExt::random::<u64>(ctx.rng));
    let mut call = Call {
        ctx,
        http,
        trace: Trace::default(),
        sender: None,
        sent: 0,
        counts: HttpCounts::default(),
        boundary,
    };
    let failure = match scenario.timeout {
        Some(t) => match tokio::time::timeout(t, call.run(scenario)).await {
            Ok(r) => r.err(),
            Err(_) => Some(Failure {
                class: FailureClass::Timeout,
                step: String::new(),
                message: format!(
                    "scenario `{}` took longer than its timeout {}",
                    scenario.name,
                    format_duration(t)
                ),
            }),
        },
        None => call.run(scenario).await.err(),
    };
    let aborted = failure
        .as_ref()
        .is_some_and(|f| f.class == FailureClass::Aborted);
    if failure.is_none() {
        let now = Instant::now();
        call.record("iteration", now - begin, now);
    }
    let mut counts = call.counts;
    if !aborted {
        counts.calls = 1;
        counts.call_us = begin.elapsed().as_micros() as u64;
    }
    call.ctx.rec.http.add(&counts);
    (call.trace, failure)
}

impl Call<'_, '_> {
    fn run_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.ctx.run_start).as_micros() as u64
    }

    fn record(&mut self, metric: &str, value: Duration, at: Instant) {
        self.ctx.rec.record(metric, value);
        let at_us = self.run_us(at);
        self.trace.samples.push(Sample {
            metric: metric.to_string(),
            at_us,
            value_ms: crate::metrics::sample_ms(value),
        });
    }

    fn mark(&mut self, kind: &str, at: Instant, detail: String) {
        let at_us = self.run_us(at);
        self.trace.markers.push(Marker {
            kind: kind.to_string(),
            at_us,
            detail,
        });
    }

    async fn sleep_until(&mut self, until: Instant, step: &StepSpec) -> Result<(), Failure> {
        let mut stop = self.ctx.stop.clone();
        tokio::select! {
            _ = sleep_until(until) => Ok(()),
            _ = wait_stop(&mut stop) => Err(fail(FailureClass::Aborted, step, "the run was stopped")),
        }
    }

    async fn run(&mut self, scenario: &ScenarioSpec) -> Result<(), Failure> {
        let ep = parse_endpoint(&self.ctx.conn.url).map_err(|message| Failure {
            class: FailureClass::ConnectError,
            step: String::new(),
            message,
        })?;
        self.connect(&ep, None).await?;
        for step in &scenario.steps {
            match &step.action {
                Action::SendAudio(audio) => self.send_audio(step, audio, &ep).await?,
                Action::Wait(d) => {
                    let until = Instant::now() + d.sample(self.ctx.rng);
                    self.sleep_until(until, step).await?;
                }
                Action::Mark(name) => self.mark(name, Instant::now(), String::new()),
                other => {
                    // Plan validation refuses these for http_chunks.
                    return Err(fail(
                        FailureClass::ProtocolError,
                        step,
                        format!("`{}` steps do not apply to http_chunks", other.name()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// (Re)open the connection, recording `connect`.
    async fn connect(&mut self, ep: &Endpoint, step: Option<&StepSpec>) -> Result<(), Failure> {
        let started = Instant::now();
        let failure = |message: String| Failure {
            class: FailureClass::ConnectError,
            step: step.map(StepSpec::position).unwrap_or_default(),
            message,
        };
        let mut stop = self.ctx.stop.clone();
        let sender = tokio::select! {
            r = tokio::time::timeout(self.ctx.connect_timeout, open(ep, self.ctx.conn.tls.as_ref())) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(failure(e)),
                Err(_) => return Err(failure(format!(
                    "connecting to {} took longer than {}",
                    ep.authority,
                    format_duration(self.ctx.connect_timeout)
                ))),
            },
            _ = wait_stop(&mut stop) => return Err(Failure {
                class: FailureClass::Aborted,
                step: String::new(),
                message: "the run was stopped".into(),
            }),
        };
        let connected = Instant::now();
        self.record("connect", connected - started, connected);
        self.mark("connected", connected, ep.authority.clone());
        self.sender = Some(sender);
        Ok(())
    }

    async fn send_audio(
        &mut self,
        step: &StepSpec,
        audio: &AudioOut,
        ep: &Endpoint,
    ) -> Result<(), Failure> {
        let clip = audio.clip.clone();
        let rate = clip.sample_rate.max(1);
        let per = ((self.http.chunk.as_secs_f64() * f64::from(rate)).round() as usize).max(1);
        let t0 = Instant::now();
        let mut captured = 0usize;
        for piece in clip.samples.chunks(per) {
            captured += piece.len();
            if audio.pacing == Pacing::Realtime {
                let due = t0 + Duration::from_secs_f64(captured as f64 / f64::from(rate));
                // Only a chunk that waited for its schedule measures the generator's own
                // lateness; one already overdue waited for the previous answer instead.
                if due > Instant::now() {
                    self.sleep_until(due, step).await?;
                    self.ctx
                        .rec
                        .record_send_lag(Instant::now().saturating_duration_since(due));
                }
            }
            self.post_chunk(step, piece, rate, ep).await?;
        }
        Ok(())
    }

    async fn post_chunk(
        &mut self,
        step: &StepSpec,
        samples: &[i16],
        rate: u32,
        ep: &Endpoint,
    ) -> Result<(), Failure> {
        // First chunk, or the server closed the kept-alive connection since the last answer
        // (`Connection: close`, or just closing it): open a new one.
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect(ep, Some(step)).await?;
        }
        self.sent += 1;
        let n = self.sent;
        let (content_type, body) = chunk_body(self.http, samples, rate, &self.boundary);
        let mut request = Request::builder()
            .method(self.http.method.as_str())
            .uri(ep.path.as_str())
            .header(HOST, ep.authority.as_str())
            .header(CONTENT_TYPE, content_type)
            .header("x-planrun-chunk", n);
        // The plan's `headers` (e.g. an API key from `{{ env.NAME }}`).
        for (k, v) in &self.ctx.conn.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(FailureClass::SendError, step, format!("chunk {n}: {e}")))?;
        let Some(sender) = self.sender.as_mut() else {
            return Err(fail(FailureClass::ConnectError, step, "no connection"));
        };
        let timeout = self.http.response_timeout;
        let sent = Instant::now();
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| (classify(&e), e.to_string()))?;
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| (classify(&e), e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    let class = match e.downcast_ref::<hyper::Error>() {
                        Some(h) => classify(h),
                        None => FailureClass::ProtocolError,
                    };
                    (class, format!("reading the response: {e}"))
                })?
                .to_bytes();
            Ok::<_, (FailureClass, String)>((status, body))
        };
        let mut stop = self.ctx.stop.clone();
        let (status, body) = tokio::select! {
            r = tokio::time::timeout(timeout, exchange) => match r {
                Ok(Ok(x)) => x,
                Ok(Err((class, e))) => {
                    self.sender = None;
                    return Err(fail(class, step, format!("chunk {n}: {e}")));
                }
                Err(_) => return Err(fail(
                    FailureClass::Timeout,
                    step,
                    format!("chunk {n}: no complete response within {}", format_duration(timeout)),
                )),
            },
            _ = wait_stop(&mut stop) => return Err(fail(FailureClass::Aborted, step, "the run was stopped")),
        };
        if status.as_u16() >= 400 {
            return Err(fail(
                FailureClass::HttpError,
                step,
                format!("chunk {n}: HTTP {status}: {}", excerpt(&body)),
            ));
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            fail(
                FailureClass::ProtocolError,
                step,
                format!("chunk {n}: response is not JSON ({e}): {}", excerpt(&body)),
            )
        })?;
        let done = Instant::now();
        let latency = done - sent;
        self.record(HTTP_CHUNK_LATENCY, latency, done);
        self.mark(
            "chunk",
            done,
            format!(
                "#{n} HTTP {} {:.1}ms",
                status.as_u16(),
                latency.as_secs_f64() * 1000.0
            ),
        );
        self.counts.chunks += 1;
        self.counts.audio_us += (samples.len() as u64 * 1_000_000) / u64::from(rate);
        self.counts.busy_us += latency.as_micros() as u64;
        for (metric, pointer) in &self.http.capture {
            let value = json.pointer(pointer);
            match value.and_then(Value::as_f64) {
                Some(v) if v.is_finite() && v >= 0.0 => {
                    self.record(metric, Duration::from_secs_f64(v / 1000.0), done);
                }
                _ => {
                    let found = value.map_or("missing".to_string(), |v| format!("`{v}`"));
                    return Err(fail(
                        FailureClass::ProtocolError,
                        step,
                        format!(
                            "chunk {n}: captured field `{pointer}` ({metric}) is {found}, not a non-negative number: {}",
                            excerpt(&body)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn classify(e: &hyper::Error) -> FailureClass {
    if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        FailureClass::ConnectionClosed
    } else if e.is_parse() || e.is_parse_status() {
        FailureClass::ProtocolError
    } else {
        FailureClass::SendError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(body: HttpBody, format: ChunkFormat) -> HttpTarget {
        HttpTarget {
            chunk: Duration::from_secs(1),
            body,
            format,
            field: "audio".into(),
            file_name: "c.wav".into(),
            part_content_type: "audio/wav".into(),
            method: "POST".into(),
            response_timeout: Duration::from_secs(1),
            capture: vec![],
        }
    }

    #[test]
    fn wav_header_round_trips_through_hound() {
        let samples: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();
        let bytes = wav_bytes(&samples, 8000);
        let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.spec().channels, 1);
        let back: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, samples);
    }

    #[test]
    fn multipart_body_has_one_part_with_the_audio() {
        let t = target(HttpBody::Multipart, ChunkFormat::Pcm16);
        let (ct, body) = chunk_body(&t, &[1, -2], 16_000, "B");
        assert_eq!(ct, "multipart/form-data; boundary=B");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"c.wav\"\r\n"
        ));
        assert!(body.windows(4).any(|w| w == [1, 0, 0xfe, 0xff]));
        assert!(text.ends_with("\r\n--B--\r\n"));
    }

    #[test]
    fn excerpt_is_short_and_printable() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(b"<h1>oops</h1>\n"), "`<h1>oops</h1>`");
        let long = vec![b'x'; 1000];
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 3);
    }

    #[test]
    fn endpoint_parsing() {
        let e = parse_endpoint("http://127.0.0.1:8080/v1/score?lang=en").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 8080)
        );
        assert_eq!(e.path, "/v1/score?lang=en");
        let e = parse_endpoint("https://[::1]/x").unwrap();
        assert_eq!((e.https, e.host.as_str(), e.port), (true, "::1", 443));
        assert!(parse_endpoint("ws://x/").is_err());
    }
}
