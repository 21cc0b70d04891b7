//! The live threshold monitor: judges `abort_on_fail` thresholds while the run goes on.

use std::sync::Arc;
use std::time::Duration;

use super::{Notice, Observer, StopCause, StopControl};
use crate::judge::thresholds;
use crate::metrics::progress::Progress;
use crate::plan::compile::ThresholdSpec;
use crate::report::timeline::LiveSummary;

/// Judge the `abort_on_fail` thresholds about once a second on everything finished so far;
/// stop the run when one can no longer pass (after its `delay_abort_eval`, counted from when
/// the load began, as the report's `elapsed_s` is).
pub(super) async fn monitor_thresholds(
    progress: Arc<Progress>,
    live: LiveSummary,
    specs: Vec<ThresholdSpec>,
    stop: StopControl,
    observer: Arc<dyn Observer>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(start) = progress.started.get() else {
            continue;
        };
        let elapsed = start.elapsed();
        let due: Vec<_> = specs
            .iter()
            .filter(|t| elapsed >= t.expr.delay_abort_eval)
            .cloned()
            .collect();
        if due.is_empty() {
            continue;
        }
        let verdict = {
            let Ok(mut s) = live.lock() else { return };
            s.elapsed = elapsed;
            let results = thresholds::evaluate(&s, &due);
            due.iter()
                .zip(results)
                .find(|(spec, r)| thresholds::can_no_longer_pass(spec, r))
                .map(|(_, r)| {
                    format!(
                        "{} {} (observed {})",
                        r.metric, r.expression, r.observed_text
                    )
                })
        };
        if let Some(what) = verdict {
            if stop.stop(StopCause::Threshold(what.clone())) {
                observer.notice(&Notice::Stopping {
                    text: format!("threshold {what} can no longer pass; stopping (abort_on_fail)…"),
                    quiet_hides: false,
                });
            }
            return;
        }
    }
}
