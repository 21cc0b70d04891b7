//! Stopping a run early: the first cause wins (a signal, `--max-duration`, an `abort_on_fail`
//! threshold), and every stop turns the engine's watch on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Signal;

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    /// SIGINT (Ctrl-C) or SIGTERM.
    Signal(Signal),
    /// `--max-duration` reached.
    MaxDuration(Duration),
    /// An `abort_on_fail` threshold failed: `metric expression (observed …)`.
    Threshold(String),
    /// The dashboard's Stop button: ends the run as Ctrl-C does (report `stopped_by:
    /// "signal"`, exit code 130).
    Dashboard,
}

impl StopCause {
    /// The `stopped_by` value of the report.
    pub fn kind(&self) -> &'static str {
        match self {
            StopCause::Signal(_) | StopCause::Dashboard => "signal",
            StopCause::MaxDuration(_) => "max_duration",
            StopCause::Threshold(_) => "threshold",
        }
    }

    /// The `stop_reason` sentence of the report.
    pub fn describe(&self) -> String {
        match self {
            StopCause::Signal(s) => format!("stopped by {}", s.name()),
            StopCause::MaxDuration(d) => format!(
                "capped at {} by --max-duration",
                crate::distribution::format_duration(*d)
            ),
            StopCause::Threshold(t) => format!("aborted by threshold {t}"),
            StopCause::Dashboard => "stopped from the dashboard (as by SIGINT)".to_string(),
        }
    }
}

/// The run's stop switch, shared by everything that may end a run early.
#[derive(Clone)]
pub struct StopControl {
    tx: Arc<watch::Sender<bool>>,
    cause: Arc<std::sync::Mutex<Option<StopCause>>>,
}

impl StopControl {
    /// A switch and the receiver the engine watches.
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            StopControl {
                tx: Arc::new(tx),
                cause: Arc::new(std::sync::Mutex::new(None)),
            },
            rx,
        )
    }

    /// Stop the run; returns false when it was already stopping.
    pub fn stop(&self, cause: StopCause) -> bool {
        let first = match self.cause.lock() {
            Ok(mut c) if c.is_none() => {
                *c = Some(cause);
                true
            }
            _ => false,
        };
        let _ = self.tx.send(true);
        first
    }

    /// The first cause, once stopped.
    pub fn cause(&self) -> Option<StopCause> {
        self.cause.lock().ok().and_then(|c| c.clone())
    }
}

/// Stop on SIGINT/SIGTERM (report written with what was measured); a second signal exits the
/// process at once with the signal's code (the streamed timeline is already on disk).
pub(super) async fn watch_signals(ctl: StopControl, observer: Arc<dyn super::Observer>) {
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            observer.notice(&super::Notice::Warning(format!(
                "cannot watch SIGTERM: {e}"
            )));
            None
        }
    };
    loop {
        #[cfg(unix)]
        let got = tokio::select! {
            r = tokio::signal::ctrl_c() => r.ok().map(|()| Signal::Interrupt),
            s = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => s.map(|()| Signal::Terminate),
        };
        #[cfg(not(unix))]
        let got = tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| Signal::Interrupt);
        let Some(signal) = got else { return };
        let name = signal.name();
        if ctl.stop(StopCause::Signal(signal)) {
            observer.notice(&super::Notice::Stopping {
                text: format!("stopping ({name}); finishing the report… (again to exit at once)"),
                quiet_hides: true,
            });
        } else {
            observer.notice(&super::Notice::Stopping {
                text: format!("{name} again: exiting now; the streamed timeline.csv is on disk"),
                quiet_hides: false,
            });
            std::process::exit(i32::from(signal.exit_code()));
        }
    }
}
