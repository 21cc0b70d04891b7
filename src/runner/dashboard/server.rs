//! The dashboard's HTTP endpoints:
//!
//! - `GET /` the page (the latest snapshot and the Stop token embedded in it);
//! - `GET /events` server-sent events: the latest snapshot, each time there is a new one (a
//!   client that reads slowly skips snapshots; one that never reads holds one);
//! - `GET /snapshot.json` the latest snapshot;
//! - `POST /stop` the Stop button: needs the page's token in `X-Planrun-Token` (a header no
//!   other site's page can send without a CORS preflight, which is never granted), and a `Host`
//!   (and `Origin`, when sent) naming this server, so a page on another site — or one that
//!   rebinds its name to this address — cannot stop the run;
//! - `GET /files/NAME` a report file of this run, once written.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Hub, MAX_STREAMS};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Most connections served at once (others are closed at once).
const MAX_CONNECTIONS: usize = 64;

/// The kernel's send buffer of each connection: a page that stops reading backs its writes
/// up after about this much (the kernel doubles it), instead of the megabytes loopback
/// auto-tuning would allow; then its stream waits and skips to the latest snapshot.
const SEND_BUFFER: libc::c_int = 32 * 1024;

/// Cap the kernel's send buffer of `stream` (best effort).
fn cap_send_buffer(stream: &tokio::net::TcpStream) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let size = SEND_BUFFER;
        // SAFETY: setsockopt reads `size` (a c_int, its length given) on a socket we own.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (stream, SEND_BUFFER);
}

/// Serve until the task is aborted (which closes every connection, open event streams too).
pub(super) async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                if conns.len() >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                cap_send_buffer(&stream);
                let hub = hub.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, hub.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.into()),
    )
}

fn respond(status: StatusCode, ctype: &str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether the request names this server: its `Host` is the bound address (or `localhost`
/// with its port), and its `Origin`, when sent, is `http://` + that host. A server bound to a
/// non-loopback address (`--dashboard-allow-remote`) accepts any host name.
fn same_site(req: &Request<Incoming>, hub: &Hub) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = hub.addr.port();
    let known = hub.addr.ip().is_unspecified() || !hub.addr.ip().is_loopback() || {
        let ours = [
            hub.addr.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        ours.iter().any(|o| o.eq_ignore_ascii_case(host))
    };
    let origin_ok = match req.headers().get(header::ORIGIN) {
        None => true,
        Some(o) => o
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("http://{host}"))),
    };
    known && origin_ok
}

async fn handle(req: Request<Incoming>, hub: Arc<Hub>) -> Result<Response<Body>, Infallible> {
    if !same_site(&req, &hub) {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "forbidden: this dashboard answers only to its own address\n",
        ));
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    Ok(match path.as_str() {
        "/stop" if method == Method::POST => stop(&req, &hub),
        "/stop" => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ if !get => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        "/" | "/index.html" => {
            let latest = hub.latest.borrow().clone();
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from(super::page::render(&latest, &hub.token)),
            )
        }
        "/snapshot.json" => {
            let latest = hub.latest.borrow().clone();
            respond(
                StatusCode::OK,
                "application/json",
                Bytes::from(latest.to_string()),
            )
        }
        "/events" => events(&hub),
        p if p.starts_with("/files/") => file(&hub, &p["/files/".len()..]),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// `POST /stop`: stop the run as Ctrl-C does.
fn stop(req: &Request<Incoming>, hub: &Hub) -> Response<Body> {
    let token = req
        .headers()
        .get("x-planrun-token")
        .and_then(|t| t.to_str().ok());
    if token != Some(hub.token.as_str()) {
        return text(
            StatusCode::FORBIDDEN,
            "forbidden: the X-Planrun-Token header must hold the page's token\n",
        );
    }
    let first = hub.stop_run();
    respond(
        StatusCode::ACCEPTED,
        "application/json",
        Bytes::from(format!("{{\"stopping\":true,\"first\":{first}}}")),
    )
}

/// Counts an open event stream while it lives.
struct StreamSlot(Arc<Hub>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /events`: the latest snapshot now and after each change.
fn events(hub: &Arc<Hub>) -> Response<Body> {
    if hub.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        hub.streams.fetch_sub(1, Ordering::Relaxed);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open dashboard pages; close one\n",
        );
    }
    let slot = StreamSlot(hub.clone());
    let stream = latest_only(hub.latest.subscribe(), slot);
    let mut r = Response::new(StreamBody::new(Box::pin(stream)).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Server-sent events of the newest value of `rx`: now, then after each change. Each step
/// waits for a value newer than the last one sent and yields only the latest: a reader that
/// falls behind skips values, nothing queues up for it. `guard` lives as long as the stream.
fn latest_only<G: Send + 'static>(
    mut rx: watch::Receiver<Arc<str>>,
    guard: G,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    rx.mark_changed();
    futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.changed().await.ok()?;
        let latest = rx.borrow_and_update().clone();
        let frame = Frame::data(Bytes::from(format!("data: {latest}\n\n")));
        Some((Ok::<_, Infallible>(frame), (rx, guard)))
    })
}

/// `GET /files/NAME`: one of the report files written by this run.
fn file(hub: &Hub, name: &str) -> Response<Body> {
    let found = hub.files.lock().ok().and_then(|f| {
        f.iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
            .cloned()
    });
    let Some(path) = found else {
        return text(StatusCode::NOT_FOUND, "no such report file (yet)\n");
    };
    let ctype = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "csv" => "text/csv; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "text/plain; charset=utf-8",
    };
    match std::fs::read(&path) {
        Ok(b) => respond(StatusCode::OK, ctype, Bytes::from(b)),
        Err(e) => text(
            StatusCode::NOT_FOUND,
            format!("cannot read {}: {e}\n", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn seq(frame: &Frame<Bytes>) -> String {
        String::from_utf8_lossy(frame.data_ref().unwrap()).to_string()
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_only_the_latest() {
        let (tx, rx) = watch::channel::<Arc<str>>(Arc::from("0"));
        let mut s = Box::pin(latest_only(rx, ()));
        // The current value at once.
        assert_eq!(seq(&s.next().await.unwrap().unwrap()), "data: 0\n\n");
        // A thousand updates while the reader does not read: it then gets the last one only.
        for i in 1..=1000 {
            tx.send_replace(Arc::from(i.to_string()));
        }
        assert_eq!(seq(&s.next().await.unwrap().unwrap()), "data: 1000\n\n");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
        assert!(pending.is_err(), "nothing else was queued");
        // The stream ends when the sender goes.
        drop(tx);
        assert!(s.next().await.is_none());
    }
}
