//! `protocol: http_chunks`: one call (iteration) against a target reached over HTTP.
//!
//! The call opens one keep-alive HTTP/1.1 connection (reopened if the server closes it between
//! chunks). Each `send_audio` step's audio is cut into chunks of `target.http.chunk`; a chunk is
//! sent when its audio would have been fully captured (`pacing: realtime`, against an absolute
//! schedule from the step's start) or right after the previous answer (`burst`). Chunks of one
//! call go one at a time: the next request waits for the previous response.
//!
//! Per chunk: `chunk_latency` (the chunk's scheduled send → response read and parsed as JSON;
//! the scheduled send is when its audio was captured, or for `burst` when it was handed to the
//! connection) and every `target.http.capture` field. Failures: `connect_error`, `http_error`
//! (status ≥ 400, with a body excerpt), `timeout` (`response_timeout`), `protocol_error`
//! (a body that is not JSON, or a captured field that is missing or not a number, with an
//! excerpt), `bad_value` (a captured number that is no duration), `connection_closed`.

mod body;
pub(crate) mod conn;

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use serde_json::Value;
use tokio::time::{Instant, sleep_until};

use super::call::{Ctx, captured_ms, fail, scenario_timeout, wait_stop};
use super::trace::{CallRecorder, Trace};
use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass, HttpCounts};
use crate::plan::HTTP_CHUNK_LATENCY;
use crate::plan::compile::{Action, AudioOut, HttpTarget, ScenarioSpec, StepSpec};
use crate::plan::model::Pacing;
use body::{chunk_body, excerpt};
use conn::{Endpoint, classify, open, parse_endpoint};

/// Largest response body read; a bigger one is a `protocol_error`.
const MAX_RESPONSE: usize = 1 << 20;

/// One call in progress.
struct Call<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    http: &'c HttpTarget,
    recorder: CallRecorder,
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
    let run_start = ctx.run_start;
    let boundary = format!("planrun-{:016x}", rand::RngExt::random::<u64>(ctx.rng));
    let mut call = Call {
        ctx,
        http,
        recorder: CallRecorder::new(run_start),
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
                message: scenario_timeout(&scenario.name, t),
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
    (call.recorder.finish(), failure)
}

impl Call<'_, '_> {
    fn record(&mut self, metric: &str, value: Duration, at: Instant) {
        self.recorder
            .record(self.ctx.rec, self.ctx.groups, metric, value, at);
    }

    fn mark(&mut self, kind: &str, at: Instant, detail: String) {
        self.recorder.mark(kind, at, detail);
    }

    async fn sleep_until(&mut self, until: Instant, step: &StepSpec) -> Result<(), Failure> {
        let mut stop = self.ctx.stop.clone();
        tokio::select! {
            _ = sleep_until(until) => Ok(()),
            _ = wait_stop(&mut stop) => Err(fail(FailureClass::Aborted, step, "the run was stopped")),
        }
    }

    async fn run(&mut self, scenario: &ScenarioSpec) -> Result<(), Failure> {
        let ep = parse_endpoint(&self.ctx.conn.url).map_err(|e| Failure {
            class: FailureClass::ConnectError,
            step: String::new(),
            message: e.to_string(),
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
                // Plan validation refuses the rest for http_chunks.
                other => {
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
                Ok(Err(e)) => return Err(failure(e.to_string())),
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
            // When the chunk is due: once its audio has been captured (real time), or right
            // after the previous answer (burst).
            let mut scheduled = None;
            if audio.pacing == Pacing::Realtime {
                let due = t0 + Duration::from_secs_f64(captured as f64 / f64::from(rate));
                scheduled = Some(due);
                // Only a chunk that waited for its schedule measures the generator's own
                // lateness; one already overdue waited for the previous answer instead.
                if due > Instant::now() {
                    self.sleep_until(due, step).await?;
                    self.ctx
                        .rec
                        .record_send_lag(Instant::now().saturating_duration_since(due));
                }
            }
            self.post_chunk(step, piece, rate, ep, scheduled).await?;
        }
        Ok(())
    }

    /// One chunk's HTTP request (the plan's method, path, headers and this chunk's body).
    fn chunk_request(
        &self,
        ep: &Endpoint,
        n: u64,
        content_type: &str,
        body: Bytes,
        step: &StepSpec,
    ) -> Result<Request<Full<Bytes>>, Failure> {
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
        request
            .body(Full::new(body))
            .map_err(|e| fail(FailureClass::SendError, step, format!("chunk {n}: {e}")))
    }

    /// Send one chunk and read its answer. `chunk_latency` runs from `due` (when the chunk was
    /// scheduled to leave; None: when it is handed to the connection), as wrk2 does, so a chunk
    /// held back by a slow answer to the one before it reports that wait too.
    async fn post_chunk(
        &mut self,
        step: &StepSpec,
        samples: &[i16],
        rate: u32,
        ep: &Endpoint,
        due: Option<Instant>,
    ) -> Result<(), Failure> {
        // First chunk, or the server closed the kept-alive connection since the last answer
        // (`Connection: close`, or just closing it): open a new one.
        let mut fresh = false;
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect(ep, Some(step)).await?;
            fresh = true;
        }
        self.sent += 1;
        let n = self.sent;
        let (content_type, body) = chunk_body(self.http, samples, rate, &self.boundary);
        let body = Bytes::from(body);
        let timeout = self.http.response_timeout;
        let sent = Instant::now();
        let (status, body) = loop {
            let request = self.chunk_request(ep, n, &content_type, body.clone(), step)?;
            let Some(sender) = self.sender.as_mut() else {
                return Err(fail(FailureClass::ConnectError, step, "no connection"));
            };
            // `true`: the request failed before any response arrived.
            let exchange = async {
                sender
                    .ready()
                    .await
                    .map_err(|e| (true, classify(&e), e.to_string()))?;
                let resp = sender
                    .send_request(request)
                    .await
                    .map_err(|e| (true, classify(&e), e.to_string()))?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                    .collect()
                    .await
                    .map_err(|e| {
                        let class = match e.downcast_ref::<hyper::Error>() {
                            Some(h) => classify(h),
                            None => FailureClass::ProtocolError,
                        };
                        (false, class, format!("reading the response: {e}"))
                    })?
                    .to_bytes();
                Ok::<_, (bool, FailureClass, String)>((status, body))
            };
            let mut stop = self.ctx.stop.clone();
            tokio::select! {
                r = tokio::time::timeout(timeout, exchange) => match r {
                    Ok(Ok(x)) => break x,
                    // A kept-alive connection the server closed right after its last answer
                    // can look open until its FIN is read: a request that fails on such a
                    // reused connection before any response is sent once more on a new one,
                    // as HTTP clients do.
                    Ok(Err((true, _, _))) if !fresh => {
                        self.sender = None;
                        self.connect(ep, Some(step)).await?;
                        fresh = true;
                    }
                    Ok(Err((_, class, e))) => {
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
            }
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
        let latency = done.saturating_duration_since(due.map_or(sent, |d| d.min(sent)));
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
        // In flight: from the actual send.
        self.counts.busy_us += (done - sent).as_micros() as u64;
        for (metric, pointer) in &self.http.capture {
            let value = json.pointer(pointer);
            match value.and_then(Value::as_f64) {
                Some(v) => {
                    let value = captured_ms(metric, v).map_err(|m| {
                        fail(FailureClass::BadValue, step, format!("chunk {n}: {m}"))
                    })?;
                    self.record(metric, value, done);
                }
                None => {
                    let found = value.map_or("missing".to_string(), |v| format!("`{v}`"));
                    return Err(fail(
                        FailureClass::ProtocolError,
                        step,
                        format!(
                            "chunk {n}: captured field `{pointer}` ({metric}) is {found}, not a number: {}",
                            excerpt(&body)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
