//! Checks of `thresholds`: the metric exists, and the expression fits it (a statistic for
//! latencies, a sane ratio for `success_rate` and `checks`).

use super::recorded_metrics;
use crate::plan::diag::{Diagnostic, did_you_mean};
use crate::plan::model::ProtocolKind;
use crate::plan::threshold_expr::{Op, Stat};
use crate::plan::{
    CHECKS, HTTP_CHUNK_LATENCY, LoadedPlan, QUALITY_METRICS, SUCCESS_RATE, walk_steps,
};
use crate::plan_path;
use crate::protocol::OneOrMany;

/// Plan errors of the `thresholds` table.
pub(super) fn validate_thresholds(lp: &LoadedPlan, errs: &mut Vec<Diagnostic>) {
    let plan = &lp.plan;
    let metrics = recorded_metrics(plan);
    let mut known: Vec<&str> = metrics.iter().map(String::as_str).collect();
    known.push(SUCCESS_RATE);
    known.push(CHECKS);
    let http_chunks = plan.target.protocol == ProtocolKind::HttpChunks;
    let mut has_checks = false;
    for (si, sc) in plan.scenarios.iter().enumerate() {
        walk_steps(&sc.steps, &plan_path!["scenarios", si], &mut |step, _| {
            has_checks |= step.check.is_some();
        });
    }
    crate::plan::walk_fragments(plan, &mut |step, _| has_checks |= step.check.is_some());
    for (key, exprs) in &plan.thresholds {
        let path = plan_path!["thresholds", key.as_str()];
        // `ttfa{scenario:weather}`: the metric, restricted to a scenario's or a tag's samples.
        let name = match filter(lp, key, exprs, &path, errs) {
            Some(k) => k,
            None => continue,
        };
        let name = &name;
        if super::run_metrics::check(lp, name, exprs, errs) {
            continue;
        }
        if http_chunks && QUALITY_METRICS.contains(&name.as_str()) {
            errs.push(lp.diag(
                &path,
                format!(
                    "threshold on `{name}`, but `protocol: http_chunks` receives no reply audio \
                     stream, so `{name}` is never measured"
                ),
                Some(format!(
                    "audio-quality metrics need a WebSocket protocol; for HTTP calls threshold \
                     `{HTTP_CHUNK_LATENCY}` or a `target.http.capture` value"
                )),
            ));
            continue;
        }
        if name == CHECKS && !has_checks {
            errs.push(lp.diag(
                &path,
                "threshold on `checks`, but no step of the plan has `check:`, so it could never pass",
                Some("add a `check:` step, or threshold `success_rate` instead".into()),
            ));
            continue;
        }
        if !known.contains(&name.as_str()) {
            let hint = did_you_mean(name, &known)
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("metrics in this plan: {}", known.join(", ")));
            errs.push(lp.diag(
                &path,
                format!("threshold on `{name}`, but no step records a metric of that name"),
                Some(hint),
            ));
            continue;
        }
        if name != key && (name == CHECKS || (name == SUCCESS_RATE && key.contains("{tag:"))) {
            errs.push(lp.diag(
                &path,
                format!(
                    "`{key}`: `{name}` is counted per run{}, not per {}",
                    if name == CHECKS {
                        ""
                    } else {
                        " and per scenario"
                    },
                    if name == CHECKS {
                        "scenario or tag"
                    } else {
                        "tag"
                    }
                ),
                Some(if name == CHECKS {
                    "threshold `checks` without a filter, or record the latency and filter that"
                        .into()
                } else {
                    "filter `success_rate` by scenario: `success_rate{scenario:NAME}`".into()
                }),
            ));
            continue;
        }
        if exprs.0.is_empty() {
            errs.push(lp.diag(&path, format!("threshold `{name}` has an empty list"), None));
        }
        for (i, e) in exprs.0.iter().enumerate() {
            if e.abort_on_fail && e.stat == Some(Stat::Count) && matches!(e.op, Op::Gt | Op::Ge) {
                // A count that is still too low may yet grow: it can only be judged at the end.
                errs.push(
                    lp.diag(
                        &plan_path!["thresholds", name.as_str(), i],
                        format!(
                            "`{name}: {e}` with abort_on_fail can never stop the run: a count that \
                         is still below {} may yet grow, so it is only judged at the end",
                            e.limit
                        ),
                        Some(
                            "drop `abort_on_fail` (the count is judged when the run ends), or \
                         abort on an upper bound such as `count < N`"
                                .into(),
                        ),
                    ),
                );
            }
            if name == SUCCESS_RATE || name == CHECKS {
                if e.stat.is_some_and(|s| s != Stat::Rate) || e.limit_is_duration {
                    errs.push(lp.diag(
                        &path,
                        format!("`{name}` is a ratio 0..1: write e.g. `> 0.99`, not `{e}`"),
                        None,
                    ));
                } else if !(0.0..=1.0).contains(&e.limit) {
                    errs.push(lp.diag(
                        &path,
                        format!(
                            "`{name}: {e}` compares a ratio with {}, outside 0..1",
                            e.limit
                        ),
                        None,
                    ));
                } else {
                    let always = matches!((e.op, e.limit), (Op::Ge, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Le, l) if l >= 1.0);
                    let never = matches!((e.op, e.limit), (Op::Lt, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Gt, l) if l >= 1.0);
                    if always || never {
                        errs.push(lp.diag(
                            &path,
                            format!(
                                "`{name}: {e}` can never {}",
                                if always { "fail" } else { "pass" }
                            ),
                            None,
                        ));
                    }
                }
            } else {
                match e.stat {
                    None | Some(Stat::Rate) => errs.push(lp.diag(
                        &path,
                        format!("threshold `{e}` on `{name}` needs a statistic"),
                        Some(
                            "e.g. `p95 < 1.5s` (p50, p90, p95, p99, mean, min, max, count)".into(),
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
    }
}

/// Split a threshold key into its metric and `{scenario:…}`/`{tag:…}` filter, checking the
/// filter names a scenario or tag of the plan (with a did-you-mean). None (after an error)
/// when the key is wrong.
fn filter(
    lp: &LoadedPlan,
    key: &str,
    exprs: &OneOrMany<crate::plan::threshold_expr::ThresholdExpr>,
    path: &[crate::plan::diag::Seg],
    errs: &mut Vec<Diagnostic>,
) -> Option<String> {
    use crate::plan::threshold_expr::{FilterKind, split_metric_key};
    let k = match split_metric_key(key) {
        Ok(k) => k,
        Err(e) => {
            errs.push(lp.diag(path, format!("threshold key {e}"), None));
            return None;
        }
    };
    let Some((kind, value)) = k.filter else {
        return Some(key.to_string());
    };
    let plan = &lp.plan;
    let step_tags = crate::plan::threshold_expr::step_tags(plan);
    let names: Vec<&str> = match kind {
        FilterKind::Scenario => plan.scenarios.iter().map(|s| s.name.as_str()).collect(),
        FilterKind::Tag => {
            let mut t: Vec<&str> = plan
                .scenarios
                .iter()
                .flat_map(|s| s.tags.iter().map(String::as_str))
                .chain(step_tags.iter().map(String::as_str))
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        }
    };
    if !names.contains(&value) {
        let what = kind.name();
        let hint = did_you_mean(value, &names)
            .map(|s| format!("did you mean `{}`?", key.replacen(value, s, 1)))
            .unwrap_or_else(|| {
                if names.is_empty() {
                    "no scenario of this plan has `tags:`".to_string()
                } else {
                    format!("{what}s in this plan: {}", names.join(", "))
                }
            });
        errs.push(lp.diag(
            path,
            format!("threshold `{key}` filters by {what} `{value}`, but no {what} of this plan is called that, so it could never be measured"),
            Some(hint),
        ));
        return None;
    }
    if kind == FilterKind::Tag
        && step_tags.iter().any(|t| t == value)
        && exprs
            .0
            .iter()
            .any(|e| e.window.is_some() || e.abort_on_fail)
    {
        // Windows and the live monitor follow scenarios; a step's tags are in the run's
        // histograms only.
        errs.push(lp.diag(
            path,
            format!(
                "`{key}`: `{value}` tags steps, whose samples are judged over the whole run only, \
                 not `over` windows or with `abort_on_fail`"
            ),
            Some("tag the scenario instead, or judge the whole run".into()),
        ));
        return None;
    }
    if crate::plan::RUN_METRICS.contains(&k.metric) {
        errs.push(lp.diag(
            path,
            format!(
                "`{key}`: `{}` is measured for the whole run, not per {}",
                k.metric,
                kind.name()
            ),
            Some(format!("threshold `{}` without a filter", k.metric)),
        ));
        return None;
    }
    Some(k.metric.to_string())
}
