//! The audio expectations, judged on what the caller hears (the playout timeline): `audio_stops`
//! (the bot's heard speech stopped after an interruption), `audio_resumes` (it resumed after a
//! pause) and `no_audio` (no new speech is heard for a while).

use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{Failure, FailureClass};
use crate::plan::compile::StepSpec;

use super::Session;
use super::expect::ms;
use super::ingest::Kind;
use crate::engine::call::fail;

impl Session<'_, '_> {
    /// `expect: no_audio`: no speech that arrives from now on is heard within `within`.
    /// (Reply audio queued before the step is the tail of what was said before.)
    pub(super) async fn no_audio(
        &mut self,
        step: &StepSpec,
        within: Duration,
    ) -> Result<(), Failure> {
        let start = Instant::now();
        self.pump_until(step, start + within).await?;
        let spoke = self
            .playout
            .chunks()
            .find(|c| c.speech && c.heard() && c.at >= start && c.start < start + within);
        match spoke {
            Some(c) => Err(fail(
                FailureClass::ExpectationFailed,
                step,
                format!(
                    "the bot spoke {} into a {} silence",
                    ms(c.start.saturating_duration_since(start)),
                    ms(within)
                ),
            )),
            None => Ok(()),
        }
    }

    /// `expect: audio_stops`: the bot's heard speech after `reference` stops within `within`:
    /// a flush ends it at once; otherwise it has stopped once nothing but quieter audio (or
    /// nothing) has played for longer than `playout.stop_gap`.
    pub(super) async fn audio_stops(
        &mut self,
        step: &StepSpec,
        reference: Instant,
        record: Option<&str>,
        within: Duration,
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        let gap = self.ctx.playout.stop_gap;
        let talking = self.playout.talking_at(reference, gap);
        let allowed = reference + within;
        let give_up = allowed + gap;
        loop {
            let scan = self.playout.stop_after(reference);
            let prev = scan.heard_until;
            let now = Instant::now();
            // A stop is final once the caller has heard it: the speech before it has played and
            // (for a pause) the speech after the pause began, so no flush can still move it.
            let mut stopped = scan
                .stopped
                .filter(|s| *s <= now && scan.next_speech.is_none_or(|n| n <= now));
            if scan.stopped.is_none() && now.saturating_duration_since(prev) > gap {
                stopped = Some(prev);
            }
            if let Some(stop_at) = stopped {
                if !talking && stop_at == reference {
                    return Err(expectation(
                        "the bot was not speaking when interrupted".into(),
                    ));
                }
                // A reply that simply ran to its end is not a bot that stopped for the
                // caller: the raw protocol says a barge-in is answered by `interrupted`.
                let named_since = |name: &str| {
                    self.queue.iter().any(|e| {
                        e.at >= reference
                            && matches!(&e.kind, Kind::Event { name: n, .. } if n == name)
                    })
                };
                if named_since("response_end") && !named_since("interrupted") {
                    return Err(expectation(
                        "the reply ran to its end (`response_end` without `interrupted`): \
                         the bot did not stop for the interruption"
                            .into(),
                    ));
                }
                return self.audio_changed(
                    step,
                    "audio_stops",
                    reference,
                    stop_at,
                    record,
                    within,
                    |took, allowed| {
                        format!(
                            "the bot kept talking {took} after the interruption (allowed {allowed})"
                        )
                    },
                );
            }
            // The caller has heard (or has queued) speech past the allowance and nothing has
            // cut it: the bot kept talking too long, whatever happens next.
            let heard_past = scan.stopped.is_none_or(|s| s > allowed) && prev > allowed;
            if (now >= allowed && heard_past) || now >= give_up {
                return Err(expectation(format!(
                    "the bot was still talking {} after the interruption",
                    ms(now.max(allowed) - reference)
                )));
            }
            let wake = match (scan.stopped, scan.next_speech) {
                (Some(s), Some(n)) => s.max(n),
                (Some(s), None) => s,
                _ => prev + gap + Duration::from_millis(1),
            };
            let wake = if now < allowed {
                wake.min(allowed)
            } else {
                wake
            };
            self.pump_until(step, wake.max(now + Duration::from_millis(1)).min(give_up))
                .await?;
        }
    }

    /// `expect: audio_resumes`: after a heard pause, the bot's speech resumes within `within`
    /// of `reference` (and is not a new answer).
    pub(super) async fn audio_resumes(
        &mut self,
        step: &StepSpec,
        reference: Instant,
        record: Option<&str>,
        within: Duration,
    ) -> Result<(), Failure> {
        let expectation = |msg: String| fail(FailureClass::ExpectationFailed, step, msg);
        let deadline = reference + within;
        loop {
            // The first speech heard after the reference that follows a pause.
            let scan = self.playout.resume_after(reference);
            let now = Instant::now();
            if let Some(at) = scan.resumed.filter(|at| *at <= now) {
                // Audio after a turn change is a new answer, not a resumption.
                let new_turn = self.queue.iter().find_map(|e| match &e.kind {
                    Kind::Event { name, .. }
                        if e.at >= reference
                            && e.at <= at
                            && matches!(
                                name.as_str(),
                                "interrupted" | "transcript" | "response_start"
                            ) =>
                    {
                        Some(name.clone())
                    }
                    _ => None,
                });
                if let Some(name) = new_turn {
                    return Err(expectation(format!(
                        "the bot started a new answer (`{name}`) instead of resuming"
                    )));
                }
                return self.audio_changed(
                    step,
                    "audio_resumes",
                    reference,
                    at,
                    record,
                    within,
                    |took, allowed| format!("the bot resumed after {took} (allowed {allowed})"),
                );
            }
            if now >= deadline && scan.resumed.is_none_or(|at| at > deadline) {
                // Speech that never paused after the reference: the bot talked on.
                let recent = scan
                    .last_speech_end
                    .is_some_and(|e| e > now || now - e <= self.ctx.playout.stop_gap);
                if scan.flowing && recent && scan.resumed.is_none() {
                    if let Some(m) = record {
                        self.record(m, Duration::ZERO, now);
                    }
                    return Ok(());
                }
                return Err(expectation(format!(
                    "the bot did not resume within {} of the user's last speech",
                    ms(within)
                )));
            }
            let mut next = (now + Duration::from_millis(20)).min(deadline);
            if let Some(at) = scan.resumed {
                next = next.max(at);
            }
            self.pump_until(step, next).await?;
        }
    }

    /// The bot's audio changed (`event`: it stopped or resumed) at `at`: record the latency
    /// from `reference`, put the event on the timeline, and fail (with the message `too_late`
    /// makes of the latency and the allowance) when it took longer than `within`.
    #[allow(clippy::too_many_arguments)]
    fn audio_changed(
        &mut self,
        step: &StepSpec,
        event: &str,
        reference: Instant,
        at: Instant,
        record: Option<&str>,
        within: Duration,
        too_late: impl FnOnce(String, String) -> String,
    ) -> Result<(), Failure> {
        let latency = at.saturating_duration_since(reference);
        if let Some(m) = record {
            self.record_since(m, reference, at);
        }
        self.marks.insert(event.into(), at);
        self.mark(event, at, String::new());
        if latency > within {
            let message = too_late(ms(latency), ms(within));
            Err(fail(FailureClass::ExpectationFailed, step, message))
        } else {
            Ok(())
        }
    }
}
