//! Semantic checks that serde cannot express (cross-references, ranges, files that must
//! exist), all problems at once, each with its position in the plan.

mod audio;
mod http;
mod run_metrics;
mod step;
mod thresholds;

use std::collections::BTreeSet;
use std::time::Duration;

use super::{
    BUILTIN_METRICS, HTTP_CHUNK_LATENCY, KNOWN_EVENTS, LoadedPlan, Plan, PlanError,
    QUALITY_METRICS, compile, model, shape, walk_steps,
};
use crate::plan_path;
use http::validate_http;
use step::validate_step;

/// Every metric name a plan records (built-ins plus `record:` names), in plan order.
pub fn recorded_metrics(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_METRICS.iter().map(|s| s.to_string()).collect();
    let http_chunks = plan.target.protocol == model::ProtocolKind::HttpChunks;
    if http_chunks {
        names.push(HTTP_CHUNK_LATENCY.to_string());
        names.extend(plan.target.http.capture.keys().cloned());
    }
    let mut visit = |step: &model::Step, _: &[super::diag::Seg]| {
        let captured = step.capture.iter().flat_map(|c| c.values());
        for r in step.record.iter().chain(captured) {
            if !names.contains(r) {
                names.push(r.clone());
            }
        }
    };
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(&sc.steps, &plan_path!["scenarios", si], &mut visit);
    }
    super::walk_fragments(plan, &mut visit);
    if plan.target.protocol == model::ProtocolKind::Custom
        && let Some(Ok(custom)) = plan.target.custom.as_ref().map(|c| c.resolved())
    {
        // Numeric fields the mapping's inbound rules capture.
        for m in custom.captured_metrics() {
            if !names.contains(&m) {
                names.push(m);
            }
        }
    }
    if !http_chunks {
        names.extend(QUALITY_METRICS.iter().map(|s| s.to_string()));
    }
    names
}

/// Every `mark:` name and implicit mark a plan can refer to with `from:`.
fn known_marks(plan: &Plan) -> Vec<String> {
    let mut marks: Vec<String> = KNOWN_EVENTS.iter().map(|s| s.to_string()).collect();
    marks.extend(
        [
            "interrupt",
            "speech_start",
            "speech_end",
            "connected",
            "audio_stops",
            "audio_resumes",
            // When an `on_tool_call` answer went out (OpenAI Realtime).
            "tool_result",
        ]
        .map(String::from),
    );
    let mut visit = |step: &model::Step, _: &[super::diag::Seg]| {
        let named = [&step.mark, &step.await_, &step.expect, &step.check];
        marks.extend(named.into_iter().flatten().cloned());
    };
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(&sc.steps, &plan_path!["scenarios", si], &mut visit);
    }
    super::walk_fragments(plan, &mut visit);
    marks
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Generated audio is held in memory once per step: bound it before compiling.
fn count_generated(
    lp: &LoadedPlan,
    path: &[super::diag::Seg],
    step: &model::Step,
    generated: &mut Duration,
    over_budget: &mut bool,
    errs: &mut Vec<super::Diagnostic>,
) {
    let specs = [
        step.send_audio.as_ref(),
        step.interrupt.as_ref().and_then(|i| i.audio.as_ref()),
    ];
    for spec in specs.into_iter().flatten() {
        let t = spec.table();
        let parts = [t.silence, t.tone, t.noise, t.trailing_silence];
        *generated += parts.iter().flatten().map(|d| d.0).sum::<Duration>();
        if !*over_budget && *generated > compile::MAX_AUDIO {
            *over_budget = true;
            errs.push(lp.diag(
                path,
                format!(
                    "the plan generates more than {} minutes of audio in all",
                    compile::MAX_AUDIO.as_secs() / 60
                ),
                Some("shorten the clips, or put one clip in a `repeat`".into()),
            ));
        }
    }
}

/// Semantic checks that serde cannot express; all problems at once.
pub(super) fn validate(lp: &LoadedPlan) -> Result<(), PlanError> {
    let plan = &lp.plan;
    let mut errs = Vec::new();

    if plan.name.trim().is_empty() {
        errs.push(lp.diag(&plan_path!["name"], "the plan name is empty", None));
    }

    // target
    let url = plan.target.url.trim();
    let http_chunks = plan.target.protocol == model::ProtocolKind::HttpChunks;
    let webrtc = plan.target.protocol == model::ProtocolKind::Webrtc;
    if http_chunks {
        validate_http(lp, &mut errs);
    } else if webrtc {
        errs.extend(model::validate_webrtc(lp));
    } else if url != "builtin"
        && !url.starts_with("{{")
        && !(url.starts_with("ws://") || url.starts_with("wss://"))
    {
        errs.push(lp.diag(
            &plan_path!["target", "url"],
            format!(
                "target url `{url}` is not supported: expected `builtin`, `ws://…` or `wss://…`"
            ),
            Some("use `builtin` for the embedded reference agent".into()),
        ));
    }
    if !(8_000..=48_000).contains(&plan.target.rate()) {
        errs.push(lp.diag(
            &plan_path!["target", "sample_rate"],
            format!(
                "sample_rate {} is outside 8000..=48000 Hz",
                plan.target.rate()
            ),
            None,
        ));
    }
    let agent = &plan.target.agent;
    for (name, p) in [
        ("tool_fraction", agent.tool_fraction),
        ("drop", agent.faults.drop),
        ("stall", agent.faults.stall),
        ("malformed", agent.faults.malformed),
        ("http_error", agent.faults.http_error),
        ("non_json", agent.faults.non_json),
    ] {
        if let Some(p) = p
            && !(0.0..=1.0).contains(&p)
        {
            let path = if name == "tool_fraction" {
                plan_path!["target", "agent", name].to_vec()
            } else {
                plan_path!["target", "agent", "faults", name].to_vec()
            };
            errs.push(lp.diag(
                &path,
                format!("`{name}` is a probability: 0..1, found {p}"),
                None,
            ));
        }
    }

    // load
    let load = &plan.load;
    let users = load.users.clone().unwrap_or_else(model::default_users);
    if users.0.is_empty() {
        errs.push(lp.diag(
            &plan_path!["load", "users"],
            "the users sweep is empty",
            None,
        ));
    }
    for (i, &n) in users.0.iter().enumerate() {
        if n == 0 || n > 100_000 {
            errs.push(lp.diag(
                &plan_path!["load", "users", i],
                format!("users must be 1..=100000, found {n}"),
                None,
            ));
        }
    }
    if load.iterations == Some(0) {
        errs.push(lp.diag(
            &plan_path!["load", "iterations"],
            "iterations must be at least 1",
            None,
        ));
    }
    if load.duration.is_some_and(|d| d.0.is_zero()) {
        errs.push(lp.diag(
            &plan_path!["load", "duration"],
            "duration must be longer than 0",
            None,
        ));
    }
    shape::validate(lp, &mut errs);

    // scenarios
    if plan.scenarios.is_empty() {
        errs.push(lp.diag(
            &plan_path!["scenarios"],
            "a plan needs at least one scenario",
            None,
        ));
    }
    crate::plan::json_template::validate_tool_replies(lp, &mut errs);
    let mut names = BTreeSet::new();
    let mut total_weight = 0.0;
    let marks = known_marks(plan);
    let mut generated = Duration::ZERO;
    let mut over_budget = false;
    for (si, sc) in plan.scenarios.iter().enumerate() {
        if !names.insert(sc.name.as_str()) {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "name"],
                format!("scenario name `{}` is used twice", sc.name),
                None,
            ));
        }
        if !sc.weight.is_finite() || sc.weight < 0.0 {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "weight"],
                format!("weight must be a non-negative number, found {}", sc.weight),
                None,
            ));
        } else {
            total_weight += sc.weight;
        }
        if sc.steps.is_empty() {
            errs.push(lp.diag(
                &plan_path!["scenarios", si, "steps"],
                format!("scenario `{}` has no steps", sc.name),
                None,
            ));
        }
        walk_steps(
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut |step, path| {
                validate_step(lp, path, step, &marks, &mut errs);
                count_generated(lp, path, step, &mut generated, &mut over_budget, &mut errs);
            },
        );
    }
    super::walk_fragments(plan, &mut |step, path| {
        validate_step(lp, path, step, &marks, &mut errs);
        count_generated(lp, path, step, &mut generated, &mut over_budget, &mut errs);
    });
    if !plan.scenarios.is_empty() && total_weight <= 0.0 {
        errs.push(lp.diag(
            &plan_path!["scenarios"],
            "the scenario weights add up to 0: no scenario could ever run",
            Some("give at least one scenario a positive `weight`".into()),
        ));
    }

    // thresholds
    thresholds::validate_thresholds(lp, &mut errs);

    if errs.is_empty() {
        Ok(())
    } else {
        Err(PlanError(errs))
    }
}
