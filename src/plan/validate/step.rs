//! Checks of one step: exactly one action, modifiers that apply to it, names of controls,
//! events, marks and metrics.

use super::audio::validate_audio;
use super::is_identifier;
use crate::plan::diag::{Diagnostic, Seg, did_you_mean};
use crate::plan::{AUDIO_EXPECTATIONS, CHECKS, KNOWN_EVENTS, LoadedPlan, SUCCESS_RATE, model};

pub(super) fn validate_step(
    lp: &LoadedPlan,
    path: &[Seg],
    step: &model::Step,
    marks: &[String],
    errs: &mut Vec<Diagnostic>,
) {
    let actions = step.actions();
    match actions.as_slice() {
        [] => {
            errs.push(lp.diag(
                path,
                "this step has no action",
                Some(format!(
                    "a step needs exactly one of: {}",
                    model::STEP_ACTIONS.join(", ")
                )),
            ));
            return;
        }
        [_] => {}
        many => {
            errs.push(lp.diag(
                path,
                format!(
                    "this step has {} actions ({}): one action per step",
                    many.len(),
                    many.join(", ")
                ),
                Some("split it into one step per action".into()),
            ));
            return;
        }
    }
    let action = actions[0];
    let with = |key: &str| {
        let mut p = path.to_vec();
        p.push(Seg::Key(key.into()));
        p
    };
    // Which modifiers go with which action.
    let allowed: &[&str] = match action {
        "await" => &["record", "from", "timeout", "capture"],
        "expect" => &["record", "from", "within", "where", "capture"],
        "check" => &["record", "from", "within", "where", "capture", "name"],
        "repeat" => &["steps"],
        _ => &[],
    };
    for (key, present) in [
        ("record", step.record.is_some()),
        ("from", step.from.is_some()),
        ("timeout", step.timeout.is_some()),
        ("within", step.within.is_some()),
        ("where", step.where_.is_some()),
        ("capture", step.capture.is_some()),
        ("name", step.name.is_some()),
        ("steps", step.steps.is_some()),
    ] {
        if present && !allowed.contains(&key) {
            errs.push(lp.diag(
                &with(key),
                format!("`{key}` does not apply to `{action}` steps"),
                (!allowed.is_empty()).then(|| format!("`{action}` takes: {}", allowed.join(", "))),
            ));
        }
    }
    if let Some(name) = &step.send
        && crate::protocol::Control::from_name(name).is_none()
    {
        let hint = did_you_mean(name, crate::protocol::Control::NAMES)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| {
                format!(
                    "expected one of {}",
                    crate::protocol::Control::NAMES.join(", ")
                )
            });
        errs.push(lp.diag(
            &with("send"),
            format!("unknown control message `{name}`"),
            Some(hint),
        ));
    }
    for (key, event) in [
        ("await", &step.await_),
        ("expect", &step.expect),
        ("check", &step.check),
    ] {
        let Some(event) = event else { continue };
        // Servers may send their own types, so unknown names are allowed, but a near miss of a
        // known name is almost certainly a typo that would otherwise hang until the timeout.
        let mut names: Vec<&str> = KNOWN_EVENTS.to_vec();
        if key != "await" {
            names.extend(AUDIO_EXPECTATIONS);
        }
        if !names.contains(&event.as_str())
            && let Some(s) = did_you_mean(event, &names)
        {
            errs.push(lp.diag(
                &with(key),
                format!("unknown event `{event}`"),
                Some(format!("did you mean `{s}`?")),
            ));
        }
        if key != "await" && AUDIO_EXPECTATIONS.contains(&event.as_str()) && step.where_.is_some() {
            errs.push(lp.diag(
                &with("where"),
                format!("`where` applies to events, not `{event}`"),
                None,
            ));
        }
    }
    if let Some(from) = &step.from
        && !marks.contains(from)
    {
        let names: Vec<&str> = marks.iter().map(String::as_str).collect();
        errs.push(lp.diag(
            &with("from"),
            format!("`from: {from}` names no mark or event of this plan"),
            did_you_mean(from, &names).map(|s| format!("did you mean `{s}`?")),
        ));
    }
    let metric_names = step.record.iter().map(|r| ("record", r)).chain(
        step.capture
            .iter()
            .flat_map(|c| c.values().map(|v| ("capture", v))),
    );
    for (key, name) in metric_names {
        if !is_identifier(name) {
            errs.push(lp.diag(
                &with(key),
                format!("metric name `{name}` must be lowercase letters, digits and `_`"),
                None,
            ));
        } else if name == SUCCESS_RATE || name == CHECKS {
            errs.push(lp.diag(&with(key), format!("`{name}` is reserved"), None));
        }
    }
    if step.repeat.is_some() && step.tags.is_some() {
        errs.push(lp.diag(
            &with("tags"),
            "`tags` on a `repeat`: tag the steps inside it",
            None,
        ));
    }
    if let Some(mark) = &step.mark
        && !is_identifier(mark)
    {
        errs.push(lp.diag(
            &with("mark"),
            format!("mark name `{mark}` must be lowercase letters, digits and `_`"),
            None,
        ));
    }
    if let Some(n) = step.repeat {
        if n == 0 || n > 10_000 {
            errs.push(lp.diag(
                &with("repeat"),
                format!("repeat must be 1..=10000, found {n}"),
                None,
            ));
        }
        if step.steps.as_ref().is_none_or(|s| s.is_empty()) {
            errs.push(lp.diag(
                &with("repeat"),
                "`repeat` needs a non-empty `steps` list",
                None,
            ));
        }
    }
    if let Some(audio) = &step.send_audio {
        validate_audio(lp, &with("send_audio"), audio, errs);
    }
    if let Some(i) = &step.interrupt
        && let Some(audio) = &i.audio
    {
        let mut p = with("interrupt");
        p.push(Seg::Key("audio".into()));
        validate_audio(lp, &p, audio, errs);
    }
}
