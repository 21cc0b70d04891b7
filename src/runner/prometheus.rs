//! `--metrics-addr`: serves the live metrics (`GET /metrics`) while a run goes on.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::live::LiveMetrics;

/// Bind the metrics endpoint (a clear error when the address is taken or invalid).
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, super::RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| super::RunError::Setup(format!("cannot serve metrics on {addr}: {e}")))
}

/// Serve `GET /metrics` until the returned future is dropped.
pub async fn serve(listener: TcpListener, live: Arc<LiveMetrics>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let live = Arc::clone(&live);
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            handle(req, Arc::clone(&live))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    live: Arc<LiveMetrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: GET /metrics\n".to_string(),
        )
    } else if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_string(),
        )
    } else {
        (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            live.render(),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
