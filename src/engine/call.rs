//! What every call (one iteration of one virtual user) shares, whatever its protocol: the
//! context it gets from its user, the stop signal, and how a failure names its step.

use std::time::Duration;

use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass, Recorder};
use crate::plan::compile::StepSpec;
use crate::plan::target::WireSpec;

use super::connect::Connection;

/// What the iteration needs from its user.
pub struct Ctx<'a> {
    pub conn: &'a Connection,
    pub wire: &'a WireSpec,
    pub connect_timeout: Duration,
    pub sample_rate: u32,
    pub speech_threshold_dbfs: f64,
    pub playout: crate::plan::model::Playout,
    pub run_start: Instant,
    /// Keep the received audio (placed at its arrival time) for `report.record_audio`.
    pub keep_audio: bool,
    pub rec: &'a mut Recorder,
    pub rng: &'a mut StdRng,
    pub stop: watch::Receiver<bool>,
}

/// Resolves when the run is stopped; never, if the stop signal's sender is gone.
pub(crate) async fn wait_stop(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A failure at `step`.
pub(super) fn fail(class: FailureClass, step: &StepSpec, message: impl Into<String>) -> Failure {
    Failure {
        class,
        step: step.position(),
        message: message.into(),
    }
}

/// Why a call that ran past its scenario's `timeout` failed.
pub(super) fn scenario_timeout(scenario: &str, timeout: Duration) -> String {
    format!(
        "scenario `{scenario}` took longer than its timeout {}",
        format_duration(timeout)
    )
}
