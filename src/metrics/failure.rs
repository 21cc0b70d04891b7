//! What one iteration left behind: its failure (classed), markers and samples.

use std::time::Duration;

use serde::Serialize;

/// Why an iteration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The connection could not be opened (refused, DNS, connect timeout).
    ConnectError,
    /// The server answered the WebSocket handshake with an HTTP error (401, 404, ...).
    HandshakeRejected,
    /// TLS failed (untrusted certificate, wrong host name, not TLS at all).
    TlsError,
    /// An `await` (or the scenario) ran out of time.
    Timeout,
    /// The server closed the connection mid-iteration.
    ConnectionClosed,
    /// The server sent something that is not the protocol (bad JSON, no type).
    ProtocolError,
    /// The server reported an error message.
    ServerError,
    /// Sending to the server failed.
    SendError,
    /// A different event came than the one `expect`ed.
    UnexpectedEvent,
    /// An `expect` did not hold (audio did not stop/resume in time, a field did not match).
    ExpectationFailed,
    /// The run was stopped (Ctrl-C) while this iteration was in flight.
    Aborted,
    /// (`http_chunks`) the server answered with an HTTP status of 400 or more.
    HttpError,
    /// The server sent a number planrun cannot take as what it stands for (a captured
    /// duration that is negative, not finite or absurdly large).
    BadValue,
    /// (OpenAI Realtime) a wait ran out while the bot waited for the result of a tool call
    /// nothing answered (no `on_tool_call` for it).
    ToolCallUnanswered,
    /// planrun itself failed (a bug: a panic) during the call; the message says where.
    InternalError,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ConnectError => "connect_error",
            FailureClass::HandshakeRejected => "handshake_rejected",
            FailureClass::TlsError => "tls_error",
            FailureClass::Timeout => "timeout",
            FailureClass::ConnectionClosed => "connection_closed",
            FailureClass::ProtocolError => "protocol_error",
            FailureClass::ServerError => "server_error",
            FailureClass::SendError => "send_error",
            FailureClass::UnexpectedEvent => "unexpected_event",
            FailureClass::ExpectationFailed => "expectation_failed",
            FailureClass::Aborted => "aborted",
            FailureClass::HttpError => "http_error",
            FailureClass::BadValue => "bad_value",
            FailureClass::ToolCallUnanswered => "tool_call_unanswered",
            FailureClass::InternalError => "internal_error",
        }
    }
}

/// A failure with its context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub class: FailureClass,
    /// "step 3 (line 17)" or empty when not tied to a step.
    pub step: String,
    pub message: String,
}

/// One notable instant inside an iteration (for timelines).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    pub kind: String,
    /// Microseconds since the run started.
    pub at_us: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One recorded measurement with when it was taken (for latency-over-time charts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub metric: String,
    /// Microseconds since the run started.
    pub at_us: u64,
    pub value_ms: f64,
}

/// One iteration (one call) of one virtual user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationRecord {
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    /// Microseconds since the run started.
    pub start_us: u64,
    pub end_us: u64,
    pub failure: Option<Failure>,
    pub markers: Vec<Marker>,
    /// The measurements this iteration recorded, in order.
    pub samples: Vec<Sample>,
}

/// A measurement in milliseconds as the histograms hold it: whole microseconds (truncated, like
/// [`Recorder::record`]), so a timeline sample (`record:METRIC`, written with 3 decimals) is
/// exactly the value in the histogram and percentiles rebuilt from samples match.
pub fn sample_ms(value: Duration) -> f64 {
    value.as_micros().min(u128::from(u64::MAX)) as f64 / 1000.0
}
