//! Checks of `protocol: http_chunks` plans.

use super::is_identifier;
use crate::plan::diag::{Diagnostic, Seg};
use crate::plan::{
    BUILTIN_METRICS, CHECKS, HTTP_CHUNK_LATENCY, HTTP_STEP_ACTIONS, LoadedPlan, SUCCESS_RATE,
    walk_steps,
};
use crate::plan_path;

/// `protocol: http_chunks`: the URL, the `target.http` table, and which steps apply.
pub(super) fn validate_http(lp: &LoadedPlan, errs: &mut Vec<Diagnostic>) {
    let plan = &lp.plan;
    let url = plan.target.url.trim();
    if url != "builtin"
        && !url.starts_with("{{")
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errs.push(lp.diag(
            &plan_path!["target", "url"],
            format!(
                "target url `{url}` is not supported with `protocol: http_chunks`: expected `builtin`, `http://…` or `https://…`"
            ),
            None,
        ));
    }
    let http = &plan.target.http;
    let ms = std::time::Duration::from_millis;
    if let Some(chunk) = http.chunk
        && !(ms(20)..=ms(600_000)).contains(&chunk.0)
    {
        errs.push(lp.diag(
            &plan_path!["target", "http", "chunk"],
            "chunk must be 20ms..10m",
            None,
        ));
    }
    if http.response_timeout.is_some_and(|t| t.0.is_zero()) {
        errs.push(lp.diag(
            &plan_path!["target", "http", "response_timeout"],
            "response_timeout must be longer than 0",
            None,
        ));
    }
    if let Some(m) = &http.method
        && !["POST", "PUT"].contains(&m.to_ascii_uppercase().as_str())
    {
        errs.push(lp.diag(
            &plan_path!["target", "http", "method"],
            format!("method `{m}` is not supported: use POST or PUT"),
            None,
        ));
    }
    for (metric, pointer) in &http.capture {
        let path = plan_path!["target", "http", "capture", metric.as_str()];
        if !is_identifier(metric) {
            errs.push(lp.diag(
                &path,
                format!("metric name `{metric}` must be lowercase letters, digits and `_`"),
                None,
            ));
        } else if [SUCCESS_RATE, CHECKS, HTTP_CHUNK_LATENCY]
            .iter()
            .chain(BUILTIN_METRICS)
            .any(|r| r == metric)
        {
            errs.push(lp.diag(&path, format!("`{metric}` is reserved"), None));
        }
        if !pointer.starts_with('/') {
            errs.push(lp.diag(
                &path,
                format!("`{pointer}` is not a JSON pointer"),
                Some(format!(
                    "write it from the root, e.g. `/{}`",
                    pointer.trim_start_matches(['.', '$'])
                )),
            ));
        }
    }
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(
            &sc.steps,
            &plan_path!["scenarios", si],
            &mut |step, path| {
                for action in step.actions().into_iter().filter(|a| *a != "use") {
                    if !HTTP_STEP_ACTIONS.contains(&action) {
                        let mut p = path.to_vec();
                        p.push(Seg::Key(action.into()));
                        errs.push(lp.diag(
                        &p,
                        format!("`{action}` steps do not apply to `protocol: http_chunks`"),
                        Some(format!(
                            "over HTTP a call takes: {}; response fields are recorded with `target.http.capture`",
                            HTTP_STEP_ACTIONS.join(", ")
                        )),
                    ));
                    }
                }
            },
        );
    }
}
