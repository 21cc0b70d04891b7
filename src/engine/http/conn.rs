//! The HTTP/1.1 connection of one call: where the chunks go and how the connection is opened.

use std::sync::Arc;

use http_body_util::Full;
use hyper::Uri;
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::metrics::FailureClass;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why the target could not be reached (a `connect_error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("target url `{url}` is not a valid URL: {source}")]
    InvalidUrl {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("target url `{0}` is not http:// or https://")]
    NotHttp(String),
    #[error("target url `{0}` has no host")]
    NoHost(String),
    #[error("cannot connect to {authority}: {source}")]
    Tcp {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    TlsSetup(rustls::Error),
    #[error("`{host}` is not a valid TLS server name: {source}")]
    ServerName {
        host: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("TLS handshake with {authority} failed: {source}")]
    TlsHandshake {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority} failed: {source}")]
    Handshake {
        authority: String,
        source: hyper::Error,
    },
}

/// Where chunks go, parsed once per call.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: String,
    pub(crate) path: String,
}

pub(crate) fn parse_endpoint(url: &str) -> Result<Endpoint, ConnectError> {
    let uri: Uri = url.parse().map_err(|source| ConnectError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(ConnectError::NotHttp(url.to_string())),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| ConnectError::NoHost(url.to_string()))?;
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
pub(crate) async fn open(
    ep: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|source| ConnectError::Tcp {
            authority: ep.authority.clone(),
            source,
        })?;
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
                    .map_err(ConnectError::TlsSetup)?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|source| {
            ConnectError::ServerName {
                host: ep.host.clone(),
                source,
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::TlsHandshake {
                authority: ep.authority.clone(),
                source,
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) =
        http1::handshake(TokioIo::new(io))
            .await
            .map_err(|source| ConnectError::Handshake {
                authority: ep.authority.clone(),
                source,
            })?;
    tokio::spawn(async move {
        // Ends when the call drops its sender or the server closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// The failure class of a failed exchange on an open connection.
pub(super) fn classify(e: &hyper::Error) -> FailureClass {
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

    #[test]
    fn endpoint_errors_say_what_is_wrong() {
        let msg = |url: &str| parse_endpoint(url).unwrap_err().to_string();
        assert_eq!(
            msg("ws://x/"),
            "target url `ws://x/` is not http:// or https://"
        );
        assert!(msg("http://a b/").starts_with("target url `http://a b/` is not a valid URL: "));
    }
}
