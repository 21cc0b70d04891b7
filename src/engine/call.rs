//! What every call (one iteration of one virtual user) shares, whatever its protocol: the
//! context it gets from its user, the stop signal, and how a failure names its step.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::distribution::format_duration;
use crate::metrics::{Failure, FailureClass, Recorder};
use crate::plan::compile::{StepSpec, TimelineDetail};
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
    pub rng: &'a mut super::UserRng,
    pub stop: watch::Receiver<bool>,
    /// What the plan's thresholds need on the timeline beyond the usual.
    pub detail: TimelineDetail,
    /// The breakdown groups this call's samples also count under (`scenario:NAME`, `tag:T`).
    pub groups: &'a [String],
    /// (`openai-realtime`) how tool calls are answered.
    pub on_tool_call: Option<&'a crate::plan::json_template::ToolReplies>,
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

/// The largest number a server may send for a captured metric: 10¹² ms (about 31 years).
pub const MAX_CAPTURED_MS: f64 = 1e12;

/// A number the server sent for `metric`, taken as milliseconds. A value that is no duration
/// (negative, not finite, above [`MAX_CAPTURED_MS`]) is refused with the reason (the call's
/// `bad_value` failure), never converted: `Duration::from_secs_f64` would panic on it.
pub(super) fn captured_ms(metric: &str, ms: f64) -> Result<Duration, String> {
    if ms == 0.0 {
        // Also -0.
        return Ok(Duration::ZERO);
    }
    if ms.is_finite() && ms > 0.0 && ms <= MAX_CAPTURED_MS {
        return Ok(Duration::from_secs_f64(ms / 1000.0));
    }
    let shown = if ms.is_finite() && !(1e-6..1e15).contains(&ms.abs()) {
        format!("{ms:e}")
    } else {
        ms.to_string()
    };
    Err(format!(
        "the server sent {shown} for `{metric}`: not a duration from 0 to {MAX_CAPTURED_MS:e} ms"
    ))
}

/// Why a call that ran past its scenario's `timeout` failed.
pub(super) fn scenario_timeout(scenario: &str, timeout: Duration) -> String {
    format!(
        "scenario `{scenario}` took longer than its timeout {}",
        format_duration(timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_values_become_durations_or_a_reason() {
        assert_eq!(captured_ms("m", 0.0), Ok(Duration::ZERO));
        assert_eq!(captured_ms("m", -0.0), Ok(Duration::ZERO));
        assert_eq!(captured_ms("m", 12.5), Ok(Duration::from_micros(12_500)));
        assert_eq!(
            captured_ms("m", MAX_CAPTURED_MS),
            Ok(Duration::from_secs(1_000_000_000))
        );
        for bad in [
            -1.0,
            -1e-9,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e30,
            f64::MAX,
            MAX_CAPTURED_MS * 1.0001,
            -f64::MIN_POSITIVE,
        ] {
            let e = captured_ms("server_ms", bad).unwrap_err();
            assert!(e.contains("`server_ms`"), "{e}");
            assert!(e.len() < 120, "{e}");
        }
        assert!(
            captured_ms("m", 1e30)
                .unwrap_err()
                .contains("sent 1e30 for")
        );
        assert!(captured_ms("m", -1.0).unwrap_err().contains("sent -1 for"));
        let tiny = captured_ms("m", -f64::MIN_POSITIVE).unwrap_err();
        assert!(tiny.contains("sent -2.2250738585072014e-308 for"), "{tiny}");
    }
}
