//! Checks of thresholds on the run's own figures ([`crate::plan::RUN_METRICS`]): the load
//! scheduler's dropped arrivals and late starts (counts and rates), the generator's pacing lag
//! and event-loop delay (latency statistics). They are judged once, at the end of the run, over
//! the whole run: `over` windows and `abort_on_fail` are refused rather than never firing.

use crate::plan::diag::Diagnostic;
use crate::plan::threshold_expr::{Op, Stat, ThresholdExpr};
use crate::plan::{DROPPED_ARRIVALS, LATE_STARTS, LoadedPlan, RUN_METRICS};
use crate::plan_path;
use crate::protocol::OneOrMany;

/// Whether `name` is a run metric (then this module has checked its thresholds).
pub(super) fn check(
    lp: &LoadedPlan,
    name: &str,
    exprs: &OneOrMany<ThresholdExpr>,
    errs: &mut Vec<Diagnostic>,
) -> bool {
    if !RUN_METRICS.contains(&name) {
        return false;
    }
    let path = plan_path!["thresholds", name];
    let load = &lp.plan.load;
    let open = load.arrival_rate.is_some() || load.arrival_stages.is_some();
    let scheduled = open || load.stages.is_some();
    if name == DROPPED_ARRIVALS && !open {
        errs.push(lp.diag(
            &path,
            "`dropped_arrivals` is measured by the open model only (`arrival_rate` or \
             `arrival_stages`): this plan never drops an arrival",
            None,
        ));
        return true;
    }
    if name == LATE_STARTS && !scheduled {
        errs.push(lp.diag(
            &path,
            "`late_starts` is measured by a shaped load only (`arrival_rate`, \
             `arrival_stages` or `stages`)",
            None,
        ));
        return true;
    }
    let counted = name == DROPPED_ARRIVALS || name == LATE_STARTS;
    if exprs.0.is_empty() {
        errs.push(lp.diag(&path, format!("threshold `{name}` has an empty list"), None));
    }
    for e in &exprs.0 {
        if e.window.is_some() || e.abort_on_fail {
            errs.push(lp.diag(
                &path,
                format!(
                    "`{name}: {}` is judged once over the whole run: `over` windows and \
                     `abort_on_fail` are not supported on it",
                    e.text
                ),
                None,
            ));
            continue;
        }
        if counted {
            match e.stat {
                Some(Stat::Count) if !e.limit_is_duration => {}
                None | Some(Stat::Rate) if !e.limit_is_duration => {
                    if !(0.0..=1.0).contains(&e.limit) {
                        errs.push(lp.diag(
                            &path,
                            format!(
                                "`{name}: {e}` compares a ratio (per offered arrival) with {}, \
                                 outside 0..1",
                                e.limit
                            ),
                            None,
                        ));
                    } else if matches!((e.op, e.limit), (Op::Ge, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Le, l) if l >= 1.0)
                    {
                        errs.push(lp.diag(&path, format!("`{name}: {e}` can never fail"), None));
                    } else if matches!((e.op, e.limit), (Op::Lt, l) if l <= 0.0)
                        || matches!((e.op, e.limit), (Op::Gt, l) if l >= 1.0)
                    {
                        errs.push(lp.diag(&path, format!("`{name}: {e}` can never pass"), None));
                    }
                }
                _ => errs.push(lp.diag(
                    &path,
                    format!("`{name}` is a count or a rate: write e.g. `rate <= 0` or `count < 5`, not `{e}`"),
                    None,
                )),
            }
        } else {
            match e.stat {
                Some(Stat::Count) => {}
                Some(s) if s.is_duration() => {}
                _ => errs.push(lp.diag(
                    &path,
                    format!("threshold `{e}` on `{name}` needs a statistic"),
                    Some("e.g. `p99 < 10ms` (p50, p90, p95, p99, mean, min, max, count)".into()),
                )),
            }
        }
    }
    true
}
