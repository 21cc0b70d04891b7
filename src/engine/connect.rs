//! Opening a call's WebSocket: URL with query parameters, handshake headers, subprotocols,
//! TLS (a client config from [`crate::protocol::tls`]), and classifying what went wrong when
//! it fails.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error as WsError};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::distribution::format_duration;
use crate::metrics::FailureClass;
use crate::redact::{percent_encode, redact};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest inbound message or frame accepted; bigger ones end the call as a protocol error
/// instead of growing memory without bound.
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;

/// Everything needed to open a call.
#[derive(Clone)]
pub struct Connection {
    /// The URL including query parameters (may contain secrets: never print it, print
    /// [`Connection::display_url`]).
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub subprotocols: Vec<String>,
    pub tls: Option<Arc<ClientConfig>>,
    /// The target is the built-in agent (it accepts planrun's text hints, see
    /// [`crate::protocol::openai`]).
    pub builtin: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.display_url())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("subprotocols", &self.subprotocols)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connection {
    /// The connection of a call whose data row changed the wire settings (`{{ row.… }}` in the
    /// target's url, headers or query): `base` is the run's connection.
    pub fn for_row(
        base: &Connection,
        wire: &crate::plan::target::WireSpec,
        url: &crate::plan::compile::TargetUrl,
    ) -> Connection {
        let root = match url {
            crate::plan::compile::TargetUrl::Builtin => {
                base.url.split('?').next().unwrap_or_default().to_string()
            }
            crate::plan::compile::TargetUrl::Url(u) => u.clone(),
        };
        let mut c = Connection::new(&root, &wire.query);
        c.headers = wire.headers.clone();
        c.subprotocols = wire.subprotocols.clone();
        c.tls = wire.tls.clone();
        c.builtin = base.builtin;
        c
    }

    /// `base` plus the query parameters (values percent-encoded).
    pub fn new(base: &str, query: &[(String, String)]) -> Self {
        let mut url = base.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            let sep = if i == 0 && !base.contains('?') {
                '?'
            } else {
                '&'
            };
            url.push(sep);
            url.push_str(&percent_encode(k));
            url.push('=');
            url.push_str(&percent_encode(v));
        }
        Connection {
            url,
            headers: Vec::new(),
            subprotocols: Vec::new(),
            tls: None,
            builtin: false,
        }
    }

    /// The URL with secrets replaced by `***`.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }
}

fn ws_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.max_write_buffer_size = 4 << 20;
    config.write_buffer_size = 0;
    // tungstenite zeroes its whole read buffer (128 KiB by default) before every read; a
    // 20 ms frame at 16 kHz is 640 bytes, so a small buffer saves both CPU and memory per user
    // (callgrind: the zeroing was 19% of planrun's instructions with 4 KiB, 99% with 128 KiB).
    config.read_buffer_size = 2 * 1024;
    config.max_message_size = Some(MAX_MESSAGE_SIZE);
    config.max_frame_size = Some(MAX_MESSAGE_SIZE);
    config
}

/// Open the WebSocket, or say why not (class and message).
pub async fn open(conn: &Connection, limit: Duration) -> Result<Ws, (FailureClass, String)> {
    let shown = conn.display_url();
    let mut request = conn.url.as_str().into_client_request().map_err(|e| {
        (
            FailureClass::ConnectError,
            format!("bad target URL {shown}: {}", redact(&e.to_string())),
        )
    })?;
    for (k, v) in &conn.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
            (
                FailureClass::ConnectError,
                format!("bad header name `{k}`: {e}"),
            )
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            (
                FailureClass::ConnectError,
                format!("the value of header `{k}` is not valid in HTTP"),
            )
        })?;
        request.headers_mut().insert(name, value);
    }
    if !conn.subprotocols.is_empty()
        && let Ok(v) = HeaderValue::from_str(&conn.subprotocols.join(", "))
    {
        request.headers_mut().insert("sec-websocket-protocol", v);
    }
    let connect = super::handshake::connect(request, conn.tls.clone(), ws_config());
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(classify_connect_error(&e, &shown)),
        Err(_) => Err((
            FailureClass::ConnectError,
            format!(
                "connecting to {shown} took longer than {}",
                format_duration(limit)
            ),
        )),
    }
}

/// The class and a specific message for a failed handshake.
pub fn classify_connect_error(e: &WsError, shown: &str) -> (FailureClass, String) {
    match e {
        WsError::Http(resp) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(120)
                        .collect::<String>()
                })
                .filter(|b| !b.trim().is_empty())
                .map(|b| format!(": {}", b.trim()))
                .unwrap_or_default();
            (
                FailureClass::HandshakeRejected,
                redact(&format!(
                    "{shown} rejected the WebSocket handshake with HTTP {}{}{body}",
                    status.as_u16(),
                    status
                        .canonical_reason()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                )),
            )
        }
        WsError::Tls(t) => (
            FailureClass::TlsError,
            redact(&format!("TLS with {shown} failed: {t}")),
        ),
        WsError::Io(io) if is_tls_io(io) => (
            FailureClass::TlsError,
            redact(&format!("TLS with {shown} failed: {io}")),
        ),
        WsError::Protocol(p) => (
            FailureClass::HandshakeRejected,
            redact(&format!("{shown}: bad WebSocket handshake: {p}")),
        ),
        other => (
            FailureClass::ConnectError,
            redact(&format!("cannot connect to {shown}: {other}")),
        ),
    }
}

/// rustls reports certificate problems as I/O errors wrapping a `rustls::Error`.
fn is_tls_io(io: &std::io::Error) -> bool {
    io.get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Why a read failed, as a class and message (a reset, an oversized message, bad framing).
pub fn classify_read_error(e: &tungstenite::Error) -> (FailureClass, String) {
    match e {
        WsError::Capacity(c) => (
            FailureClass::ProtocolError,
            format!("the server sent a message over the {MAX_MESSAGE_SIZE}-byte limit: {c}"),
        ),
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => (
            FailureClass::ConnectionClosed,
            "the server dropped the connection without a close frame".to_string(),
        ),
        WsError::Protocol(p) => (
            FailureClass::ProtocolError,
            format!("the server broke the WebSocket protocol: {p}"),
        ),
        WsError::Utf8(_) => (
            FailureClass::ProtocolError,
            "the server sent a text frame that is not UTF-8".to_string(),
        ),
        other => (
            FailureClass::ConnectionClosed,
            format!("the connection failed: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_appended_and_encoded() {
        let c = Connection::new(
            "ws://h:1/p",
            &[("model".into(), "gpt x".into()), ("k".into(), "a&b".into())],
        );
        assert_eq!(c.url, "ws://h:1/p?model=gpt%20x&k=a%26b");
        let c = Connection::new("ws://h/p?x=1", &[("y".into(), "2".into())]);
        assert_eq!(c.url, "ws://h/p?x=1&y=2");
    }
}
