//! The client side of the WebSocket opening handshake (RFC 6455 §4.1): TCP, TLS for `wss`,
//! the upgrade request and the check of the server's answer.
//!
//! Done here rather than by tokio-tungstenite's `connect_async` for memory: tungstenite reads
//! the response through a 4 KiB buffer plus a 4 KiB scratch chunk and hands the 4 KiB buffer
//! on as the connection's read buffer for the rest of the call. Here the response head is read
//! into a small buffer that is gone once the handshake is over, and the connection starts with
//! `read_buffer_size` (2 KiB). The request itself and the
//! `Sec-WebSocket-Accept` key still come from tungstenite, and failures are the same
//! [`Error`] values its handshake returns, so they are classified the same way.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError, TlsError, UrlError};
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response, generate_request};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::connect::Ws;

/// How much is read from the socket at a time while waiting for the response head.
const READ_CHUNK: usize = 512;

/// The longest response head accepted (tungstenite's own limit).
const MAX_HEAD: usize = 64 * 1024;

/// Connect to `request`'s URL and open a WebSocket on it.
pub(super) async fn connect(
    request: Request,
    tls: Option<Arc<ClientConfig>>,
    config: WebSocketConfig,
) -> Result<Ws, Error> {
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(Error::Url(UrlError::UnsupportedUrlScheme)),
    };
    // An IPv6 literal comes bracketed in the URL; the socket address and the TLS name want it
    // bare.
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or(Error::Url(UrlError::NoHostName))?;
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(Error::Io)?;
    tcp.set_nodelay(true).map_err(Error::Io)?;
    let mut stream = if secure {
        let config = match tls {
            Some(c) => c,
            None => web_pki()?,
        };
        let name = ServerName::try_from(host).map_err(|_| Error::Tls(TlsError::InvalidDnsName))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(Error::Io)?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };

    let asked = subprotocols(request.headers())?;
    let (head, key) = generate_request(request)?;
    stream.write_all(&head).await.map_err(Error::Io)?;
    stream.flush().await.map_err(Error::Io)?;
    let accept = derive_accept_key(key.as_bytes());

    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(Error::AttackAttempt);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(&mut buf).await.map_err(Error::Io)? == 0 {
            return Err(Error::Protocol(ProtocolError::HandshakeIncomplete));
        }
        if let Some((size, response)) = Response::try_parse(&buf)? {
            // What came after the head is the body of a refusal, or the first frames.
            let tail = buf.split_off(size);
            drop(buf);
            verify(response, &tail, &accept, asked.as_deref())?;
            return Ok(WebSocketStream::from_partially_read(
                stream,
                tail,
                Role::Client,
                Some(config),
            )
            .await);
        }
    }
}

/// The subprotocols the request asks for, if any.
fn subprotocols(headers: &HeaderMap) -> Result<Option<Vec<String>>, Error> {
    match headers.get("Sec-WebSocket-Protocol") {
        Some(v) => Ok(Some(
            v.to_str()?
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        )),
        None => Ok(None),
    }
}

/// RFC 6455 §4.1's checks of the server's answer, with tungstenite's errors.
fn verify(
    mut response: Response,
    tail: &[u8],
    accept: &str,
    asked: Option<&[String]>,
) -> Result<(), Error> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        *response.body_mut() = Some(tail.to_vec());
        return Err(Error::Http(Box::new(response)));
    }
    let headers = response.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !header("Upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return Err(Error::Protocol(
            ProtocolError::MissingUpgradeWebSocketHeader,
        ));
    }
    // `Connection` is a token list ("Upgrade", or e.g. "keep-alive, Upgrade").
    if !header("Connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(Error::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader,
        ));
    }
    if header("Sec-WebSocket-Accept") != Some(accept) {
        return Err(Error::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ));
    }
    let chosen = headers.get("Sec-WebSocket-Protocol");
    let sub = |e| {
        Err(Error::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(e),
        ))
    };
    match (chosen, asked) {
        (None, Some(_)) => sub(SubProtocolError::NoSubProtocol),
        (Some(_), None) => sub(SubProtocolError::ServerSentSubProtocolNoneRequested),
        (Some(c), Some(asked)) if !asked.iter().any(|a| c.to_str().is_ok_and(|c| c == a)) => {
            sub(SubProtocolError::InvalidSubProtocol)
        }
        _ => Ok(()),
    }
}

/// The client configuration for `wss` targets without TLS settings: the web PKI roots.
fn web_pki() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| crate::protocol::tls::tls_config(None, false).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    use super::*;

    /// A raw server answering one handshake with `answer(key)` written in one go.
    async fn serve_once(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if sock.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_string();
            sock.write_all(&answer(&derive_accept_key(key.as_bytes())))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        });
        format!("ws://{addr}/x")
    }

    async fn open(url: &str) -> Result<Ws, Error> {
        let request = url.into_client_request().unwrap();
        connect(request, None, WebSocketConfig::default()).await
    }

    #[tokio::test]
    async fn frames_sent_with_the_answer_are_not_lost() {
        let url = serve_once(|accept| {
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            // An unmasked text frame "hello", in the same write as the head.
            out.extend_from_slice(&[0x81, 5]);
            out.extend_from_slice(b"hello");
            out
        })
        .await;
        let mut ws = open(&url).await.unwrap();
        let msg = ws.next().await.unwrap().unwrap();
        assert_eq!(msg, Message::text("hello"));
    }

    #[tokio::test]
    async fn a_refusal_carries_its_status_and_body() {
        let url = serve_once(|_| {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nno tokens".to_vec()
        })
        .await;
        match open(&url).await {
            Err(Error::Http(r)) => {
                assert_eq!(r.status(), 403);
                assert_eq!(r.body().as_deref(), Some(&b"no tokens"[..]));
            }
            other => panic!("expected an HTTP refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_wrong_accept_key_is_refused() {
        let url = serve_once(|_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n"
                .to_vec()
        })
        .await;
        assert!(matches!(
            open(&url).await,
            Err(Error::Protocol(
                ProtocolError::SecWebSocketAcceptKeyMismatch
            ))
        ));
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_mid_handshake_is_incomplete() {
        let url = serve_once(|_| b"HTTP/1.1 101 Switching".to_vec()).await;
        assert!(matches!(
            open(&url).await,
            Err(Error::Protocol(ProtocolError::HandshakeIncomplete))
        ));
    }

    #[test]
    fn subprotocol_answers_are_checked_against_the_request() {
        let answer = |proto: Option<&str>| {
            let mut r = Response::new(None);
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert("Upgrade", "websocket".parse().unwrap());
            h.insert("Connection", "keep-alive, Upgrade".parse().unwrap());
            h.insert("Sec-WebSocket-Accept", "k".parse().unwrap());
            if let Some(p) = proto {
                h.insert("Sec-WebSocket-Protocol", p.parse().unwrap());
            }
            r
        };
        let asked = vec!["a".to_string(), "b".to_string()];
        assert!(verify(answer(Some("b")), &[], "k", Some(&asked)).is_ok());
        assert!(verify(answer(None), &[], "k", None).is_ok());
        for (proto, asked) in [
            (Some("c"), Some(&asked[..])),
            (None, Some(&asked[..])),
            (Some("a"), None),
        ] {
            assert!(matches!(
                verify(answer(proto), &[], "k", asked),
                Err(Error::Protocol(
                    ProtocolError::SecWebSocketSubProtocolError(_)
                ))
            ));
        }
    }
}
