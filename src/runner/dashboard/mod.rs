//! `--dashboard`: a live web page of a run, served while it goes on.
//!
//! - [`feed`] turns the run's live aggregates (the same ones the reports and the `abort_on_fail`
//!   monitor use: the live [`crate::metrics::Summary`], [`crate::metrics::progress::Progress`],
//!   [`crate::metrics::live::LiveMetrics`]) into a snapshot about twice a second;
//! - the [`Hub`] keeps only the latest snapshot (a `watch` channel: every page gets the newest,
//!   never a queue), so a tab that stops reading cannot slow the run or grow memory;
//! - [`server`] serves the page (self-contained: styles, script and charts embedded), the
//!   server-sent events, the report files once written, and the guarded Stop endpoint that
//!   ends the run exactly like Ctrl-C.

mod feed;
mod page;
mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

pub(super) use feed::{Sources, follow, initial};

use super::{FinishedRun, Notice, Observer, Outcome, RunError, StopCause, StopControl};

/// The address `--dashboard` without a value binds: a free loopback port.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// How often the page is updated.
pub const UPDATE_EVERY: Duration = Duration::from_millis(500);

/// Most event streams served at once (more pages get 503 until one closes).
pub const MAX_STREAMS: usize = 16;

/// `--dashboard [ADDR]` and its companions.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardOptions {
    /// Where to serve (port 0: a free port).
    pub addr: SocketAddr,
    /// Serve on a non-loopback address (`--dashboard-allow-remote`).
    pub allow_remote: bool,
    /// Keep serving the final page this long after the run (`--dashboard-linger`).
    pub linger: Option<Duration>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            addr: DEFAULT_ADDR,
            allow_remote: false,
            linger: None,
        }
    }
}

/// Parse a dashboard address: `PORT`, `HOST:PORT`, `localhost:PORT`, `[::1]:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "`{s}` is not an address: use PORT, IP:PORT or localhost:PORT \
             (e.g. 127.0.0.1:8089; port 0 picks a free one)"
        )
    };
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| bad());
    }
    Err(bad())
}

/// The live page's shared state: the latest snapshot and what the endpoints need.
pub struct Hub {
    latest: watch::Sender<Arc<str>>,
    /// The latest snapshot as data (the final verdict is added to it).
    state: Mutex<Value>,
    /// Guards the Stop endpoint: embedded in the page, required in a header.
    token: String,
    addr: SocketAddr,
    stop: StopControl,
    observer: Arc<dyn Observer>,
    /// Report files written so far (served under `/files/NAME`).
    files: Mutex<Vec<PathBuf>>,
    streams: AtomicUsize,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("addr", &self.addr).finish()
    }
}

impl Hub {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the latest snapshot (every open page gets it on its next read).
    /// The verdicts of runs already finished (`runs`) are kept.
    fn publish(&self, mut v: Value) {
        let Ok(mut s) = self.state.lock() else { return };
        if v.get("runs").is_none() {
            v["runs"] = s.get("runs").cloned().unwrap_or_else(|| json!([]));
        }
        let text: Arc<str> = Arc::from(v.to_string());
        *s = v;
        drop(s);
        self.latest.send_replace(text);
    }

    /// Change the latest snapshot in place and publish it.
    fn amend(&self, f: impl FnOnce(&mut Value)) {
        let Ok(mut s) = self.state.lock() else { return };
        f(&mut s);
        let text: Arc<str> = Arc::from(s.to_string());
        drop(s);
        self.latest.send_replace(text);
    }

    /// One run of the plan finished: its verdict, thresholds as judged for the report, and its
    /// files.
    pub(super) fn run_finished(&self, run: &FinishedRun, out: &std::path::Path) {
        let written = run.written.as_ref().ok().cloned().unwrap_or_default();
        if let Ok(mut f) = self.files.lock() {
            for p in &written {
                if !f.contains(p) {
                    f.push(p.clone());
                }
            }
        }
        let rep = &run.report;
        let thresholds: Vec<Value> = rep
            .thresholds
            .iter()
            .map(|r| {
                json!({
                    "metric": r.metric,
                    "expression": r.expression,
                    "observed_text": r.observed_text,
                    "passed": r.passed,
                    "judged": true,
                    "windowed": r.window.is_some(),
                    "abort_on_fail": r.abort_on_fail,
                })
            })
            .collect();
        let files: Vec<Value> = written.iter().map(|p| file_entry(p)).collect();
        let verdict = json!({
            "users": run.users,
            "verdict": verdict(run.outcome),
            "passed": run.outcome == Outcome::Passed,
            "stop_reason": rep.stop_reason,
            "out": out.display().to_string(),
            "files": files,
            "write_error": run.written.as_ref().err(),
            "generator_warnings": rep.generator.warnings,
        });
        self.amend(|s| {
            s["thresholds"] = Value::Array(thresholds);
            s["state"] = json!("judged");
            match s["runs"].as_array_mut() {
                Some(a) => a.push(verdict),
                None => s["runs"] = json!([verdict]),
            }
        });
    }

    /// The whole run (every count of a sweep) ended with `outcome`.
    pub(super) fn finished(&self, outcome: Outcome, sweep_index: Option<&std::path::Path>) {
        if let (Some(p), Ok(mut f)) = (sweep_index, self.files.lock()) {
            f.push(p.to_path_buf());
        }
        let index = sweep_index.map(file_entry);
        self.amend(|s| {
            s["state"] = json!("finished");
            s["final"] = json!({
                "verdict": verdict(outcome),
                "passed": outcome == Outcome::Passed,
                "sweep_index": index,
            });
        });
    }

    /// The Stop button: stop the run as Ctrl-C does.
    fn stop_run(&self) -> bool {
        let first = self.stop.stop(StopCause::Dashboard);
        if first {
            self.observer.notice(&Notice::Stopping {
                text: "stopping (Stop pressed on the dashboard); finishing the report…".into(),
                quiet_hides: false,
            });
        }
        first
    }

    /// Stop serving.
    pub(super) fn shutdown(&self) {
        if let Some(h) = self.server.lock().ok().and_then(|mut s| s.take()) {
            h.abort();
        }
    }

    /// Whether a page is connected now.
    pub(super) fn has_viewers(&self) -> bool {
        self.streams.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}

fn file_entry(p: &std::path::Path) -> Value {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    json!({
        "name": name,
        "path": p.display().to_string(),
        "href": format!("/files/{name}"),
    })
}

/// The badge of an outcome (as the report's).
fn verdict(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "PASSED",
        Outcome::Regressed => "REGRESSED",
        Outcome::ThresholdFailed => "FAILED",
        Outcome::Inconclusive => "INCONCLUSIVE",
        Outcome::CannotRun => "COULD NOT RUN",
        Outcome::Stopped(_) => "STOPPED",
    }
}

/// A per-run secret for the Stop endpoint (from the OS-seeded hasher keys; no clock alone).
fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let part = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", part(1), part(2))
}

/// Check the address, bind it and start serving; errors are usage errors (exit 2), found
/// before any load is sent.
pub(super) async fn start(
    opts: &DashboardOptions,
    stop: StopControl,
    observer: Arc<dyn Observer>,
    initial: Value,
) -> Result<Arc<Hub>, RunError> {
    let addr = opts.addr;
    if !addr.ip().is_loopback() {
        if !opts.allow_remote {
            return Err(RunError::Invalid(format!(
                "--dashboard {addr} is not a loopback address: anyone who can reach it could \
                 watch and stop the run. Add --dashboard-allow-remote to serve it anyway"
            )));
        }
        observer.notice(&Notice::Warning(format!(
            "warning: the dashboard on {addr} is reachable from other machines \
             (--dashboard-allow-remote): anyone who can reach it can watch the run and, with \
             the page's token, stop it"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Invalid(format!("--dashboard {addr}: cannot serve on it: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let (latest, _) = watch::channel::<Arc<str>>(Arc::from(initial.to_string()));
    let hub = Arc::new(Hub {
        latest,
        state: Mutex::new(initial),
        token: new_token(),
        addr: bound,
        stop,
        observer: observer.clone(),
        files: Mutex::new(Vec::new()),
        streams: AtomicUsize::new(0),
        server: Mutex::new(None),
    });
    let task = tokio::spawn(server::serve(listener, hub.clone()));
    if let Ok(mut s) = hub.server.lock() {
        *s = Some(task);
    }
    let host = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", bound.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", bound.port()),
        _ => bound.to_string(),
    };
    observer.notice(&Notice::Warning(format!("dashboard on http://{host}/")));
    Ok(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_addresses() {
        assert_eq!(
            parse_addr("8089").unwrap(),
            "127.0.0.1:8089".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_addr("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(parse_addr("nonsense").is_err());
        assert!(parse_addr("127.0.0.1:99999").is_err());
        assert!(parse_addr("plans/x.yaml").is_err());
    }

    #[test]
    fn tokens_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
