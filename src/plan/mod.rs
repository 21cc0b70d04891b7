//! Plans: loading YAML/TOML into the typed model, validating, and compiling for the engine.
//!
//! parse → validate → compile, with source positions all the way: every [`Diagnostic`] names the
//! file, line and column. The engine only ever receives a [`compile::CompiledPlan`].

pub mod compile;
pub mod diag;
mod fuzz;
mod include;
pub mod json_template;
pub mod load;
pub mod load_shape;
pub mod model;
pub mod secrets;
pub mod shape;
pub mod target;
pub mod template;
pub mod threshold_expr;
pub mod validate;

pub use compile::CompiledPlan;
pub use diag::{Diagnostic, PlanError, Warning};
#[doc(hidden)]
pub use fuzz::{fuzz_plan, fuzz_scalar};
pub use load::{LoadedPlan, load, parse_str};
pub use model::Plan;
pub use validate::recorded_metrics;

use diag::Seg;

/// Metrics every run records without being asked.
pub const BUILTIN_METRICS: &[&str] = &["connect", "iteration"];

/// The rate a plan can threshold without recording anything.
pub const SUCCESS_RATE: &str = "success_rate";

/// The pass rate of all `check` steps.
pub const CHECKS: &str = "checks";

/// Timeline marker of a `check` that failed (detail: `NAME: why`).
pub const CHECK_FAILED_MARKER: &str = "check_failed";

/// Timeline marker of a `check` that passed (detail: its name). Put on the timeline only when a
/// `checks` threshold is judged over windows or during the run (see
/// [`compile::CompiledPlan::timeline_detail`]).
pub const CHECK_PASSED_MARKER: &str = "check_passed";

/// The audio-quality metric recorded once per reply chunk: kept in the histograms only, unless a
/// threshold judges it over windows or during the run.
pub const FRAME_JITTER: &str = "frame_jitter";

/// Audio-quality metrics recorded from every reply stream.
pub const QUALITY_METRICS: &[&str] = &["glitch", "frame_jitter", "reverse_barge_in"];

/// Open model: arrivals that came due but did not start (`max_users` callers were active).
/// `count`, or `rate` = dropped / offered arrivals (every arrival whose instant came).
pub const DROPPED_ARRIVALS: &str = "dropped_arrivals";

/// Open model and ramping stages: callers that started more than the late tolerance (50 ms)
/// after their scheduled instant. `count`, or `rate` = late starts / offered starts.
pub const LATE_STARTS: &str = "late_starts";

/// The generator's pacing lag: how late each audio frame left against its real-time schedule.
pub const GENERATOR_SEND_LAG: &str = "generator_send_lag";

/// The generator's event-loop delay: how late a 10 ms timer of planrun's runtime woke up.
pub const GENERATOR_EVENT_LOOP_DELAY: &str = "generator_event_loop_delay";

/// Figures of the run itself (the scheduler's and the generator's) that thresholds can judge.
pub const RUN_METRICS: &[&str] = &[
    DROPPED_ARRIVALS,
    LATE_STARTS,
    GENERATOR_SEND_LAG,
    GENERATOR_EVENT_LOOP_DELAY,
];

/// `http_chunks`: request sent → response read and parsed, per chunk.
pub const HTTP_CHUNK_LATENCY: &str = "chunk_latency";

/// Step actions that mean something over `http_chunks`.
pub const HTTP_STEP_ACTIONS: &[&str] = &["send_audio", "wait", "mark", "repeat"];

/// What `expect`/`check` can assert besides an event.
pub const AUDIO_EXPECTATIONS: &[&str] = &["audio_stops", "audio_resumes", "no_audio"];

/// Visit every step, nested `repeat` bodies included, with its document path.
pub fn walk_steps<'a>(
    steps: &'a [model::Step],
    prefix: &[Seg],
    f: &mut dyn FnMut(&'a model::Step, &[Seg]),
) {
    let mut list = prefix.to_vec();
    list.push(Seg::Key("steps".into()));
    walk_list(steps, &list, f);
}

/// [`walk_steps`] of a step list at `list` (a scenario's `steps`, a fragment).
pub fn walk_list<'a>(
    steps: &'a [model::Step],
    list: &[Seg],
    f: &mut dyn FnMut(&'a model::Step, &[Seg]),
) {
    for (i, step) in steps.iter().enumerate() {
        let mut path = list.to_vec();
        path.push(Seg::Index(i));
        f(step, &path);
        if let Some(inner) = &step.steps {
            walk_steps(inner, &path, f);
        }
    }
}

/// Visit every step of every fragment (`fragments:`), each once, with its document path.
pub fn walk_fragments<'a>(plan: &'a Plan, f: &mut dyn FnMut(&'a model::Step, &[Seg])) {
    for (name, steps) in &plan.fragments {
        walk_list(
            steps,
            &[Seg::Key("fragments".into()), Seg::Key(name.clone())],
            f,
        );
    }
}

/// Events a step can `await` (servers may also send their own `type`s).
pub const KNOWN_EVENTS: &[&str] = &[
    "first_audio",
    "first_speech",
    "first_audio_heard",
    "first_speech_heard",
    "audio",
    "response_start",
    "response_end",
    "transcript",
    "interrupted",
    "resumed",
    "tool_call",
    "metrics",
    "error",
];

/// Largest WAV a plan may use (an hour of 48 kHz mono PCM16 is 330 MiB).
pub const MAX_WAV_BYTES: u64 = 512 << 20;

/// Largest plan text accepted (plans are a few KiB; this bounds parsing time and memory).
pub const MAX_PLAN_BYTES: usize = 1024 * 1024;
