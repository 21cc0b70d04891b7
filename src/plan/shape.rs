//! The load shape beyond a fixed user count: the open model (`arrival_rate`,
//! `arrival_stages`, `arrivals`, `max_users`) and the closed model's ramping `stages`.
//! Validation with positions, and compilation into the engine's pure schedules.

use std::time::Duration;

use super::LoadedPlan;
use super::diag::{Diagnostic, Seg};
use super::load_shape::{ArrivalSpec, Pattern, Segment};
use super::model::{ArrivalPattern, Load};
use crate::plan_path;

/// `max_users` when the plan does not say.
pub const DEFAULT_MAX_USERS: u32 = 1000;
/// Upper bound of `max_users` and of a stage's `to` (the same as `users`).
pub const MAX_USERS_LIMIT: u32 = 100_000;

/// Whether the plan uses the open model.
pub fn is_open(load: &Load) -> bool {
    load.arrival_rate.is_some() || load.arrival_stages.is_some()
}

/// One stage as (to, over, hold), whatever its kind.
struct StageView {
    to: Option<f64>,
    over: Option<Duration>,
    hold: Option<Duration>,
}

fn check_stages(
    lp: &LoadedPlan,
    key: &str,
    stages: &[StageView],
    max_to: f64,
    errs: &mut Vec<Diagnostic>,
) {
    if stages.is_empty() {
        errs.push(lp.diag(
            &plan_path!["load", key],
            format!("`{key}` is empty: give at least one stage"),
            Some("e.g. `[{to: 10, over: 30s}, {hold: 60s}]`".into()),
        ));
        return;
    }
    for (i, st) in stages.iter().enumerate() {
        let at = |field: &str| -> Vec<Seg> {
            let mut p = plan_path!["load", key, i].to_vec();
            if !field.is_empty() {
                p.push(Seg::from(field));
            }
            p
        };
        match (st.to, st.hold) {
            (Some(_), Some(_)) => errs.push(lp.diag(
                &at("hold"),
                "a stage either changes (`to`, `over`) or holds (`hold`), not both",
                Some("split it into two stages".into()),
            )),
            (None, None) => {
                errs.push(lp.diag(&at(""), "a stage needs `to` (with `over`) or `hold`", None))
            }
            (None, Some(_)) if st.over.is_some() => errs.push(lp.diag(
                &at("over"),
                "`over` belongs to a `to` stage; a hold stage has only `hold`",
                None,
            )),
            (Some(to), None) if !(0.0..=max_to).contains(&to) => errs.push(lp.diag(
                &at("to"),
                format!("`to` must be 0..={max_to}, found {to}"),
                None,
            )),
            _ => {}
        }
    }
    let total: Duration = stages.iter().filter_map(|s| s.over.or(s.hold)).sum();
    if total.is_zero() {
        errs.push(lp.diag(
            &plan_path!["load", key],
            format!("the `{key}` last 0s: give some `over` or `hold` time"),
            None,
        ));
    }
}

/// Plan errors of the load shape (conflicts, empty or malformed stages, bad rates and caps).
pub fn validate(lp: &LoadedPlan, errs: &mut Vec<Diagnostic>) {
    let load = &lp.plan.load;
    let open = is_open(load);
    let mut conflict = |field: &str, present: bool, with: &str, why: &str| {
        if present {
            errs.push(lp.diag(
                &plan_path!["load", field],
                format!("`{field}` cannot be used with `{with}`: {why}"),
                None,
            ));
        }
    };
    if open {
        let with = if load.arrival_rate.is_some() {
            "arrival_rate"
        } else {
            "arrival_stages"
        };
        let why = "the open model starts callers at the arrival rate, one call each (cap them with `max_users`)";
        conflict("users", load.users.is_some(), with, why);
        conflict("stages", load.stages.is_some(), with, why);
        conflict("iterations", load.iterations.is_some(), with, why);
        conflict("ramp_up", load.ramp_up.is_some(), with, why);
        conflict("think_time", load.think_time.is_some(), with, why);
        conflict(
            "duration",
            load.arrival_stages.is_some() && load.duration.is_some(),
            "arrival_stages",
            "the stages set how long the run lasts",
        );
    } else {
        let why = "it belongs to the open model (`arrival_rate`)";
        conflict("max_users", load.max_users.is_some(), "users", why);
        conflict("arrivals", load.arrivals.is_some(), "users", why);
    }
    if load.stages.is_some() {
        let why = "the stages set the user count over time and how long the run lasts";
        conflict("users", load.users.is_some(), "stages", why);
        conflict("duration", load.duration.is_some(), "stages", why);
        conflict("iterations", load.iterations.is_some(), "stages", why);
        conflict("ramp_up", load.ramp_up.is_some(), "stages", why);
    }
    if let Some(r) = load.arrival_rate
        && r.per_second <= 0.0
    {
        errs.push(lp.diag(
            &plan_path!["load", "arrival_rate"],
            format!(
                "`arrival_rate` must be more than 0, found {}/s",
                r.per_second
            ),
            Some("to start from 0, leave it out and ramp up with `arrival_stages`".into()),
        ));
    }
    if open && load.arrival_stages.is_none() && load.duration.is_none() {
        errs.push(lp.diag(
            &plan_path!["load", "arrival_rate"],
            "an arrival rate needs `duration` (or `arrival_stages`) to know when to stop",
            None,
        ));
    }
    if let Some(m) = load.max_users
        && (m == 0 || m > MAX_USERS_LIMIT)
    {
        errs.push(lp.diag(
            &plan_path!["load", "max_users"],
            format!("`max_users` must be 1..={MAX_USERS_LIMIT}, found {m}"),
            None,
        ));
    }
    if let Some(st) = &load.arrival_stages {
        let views: Vec<StageView> = st
            .iter()
            .map(|s| StageView {
                to: s.to.map(|r| r.per_second),
                over: s.over.map(|d| d.0),
                hold: s.hold.map(|d| d.0),
            })
            .collect();
        check_stages(lp, "arrival_stages", &views, f64::MAX, errs);
    }
    if let Some(st) = &load.stages {
        let views: Vec<StageView> = st
            .iter()
            .map(|s| StageView {
                to: s.to.map(f64::from),
                over: s.over.map(|d| d.0),
                hold: s.hold.map(|d| d.0),
            })
            .collect();
        check_stages(lp, "stages", &views, f64::from(MAX_USERS_LIMIT), errs);
    }
}

/// Stages as linear pieces from a starting level.
fn pieces(start: f64, stages: impl Iterator<Item = (Option<f64>, Duration)>) -> Vec<Segment> {
    let mut level = start;
    stages
        .map(|(to, over)| {
            let end = to.unwrap_or(level);
            let s = Segment {
                from: level,
                to: end,
                over,
            };
            level = end;
            s
        })
        .collect()
}

/// The open model's arrival schedule (None for the closed model). Call after [`validate`].
pub fn arrivals(load: &Load) -> Option<ArrivalSpec> {
    if !is_open(load) {
        return None;
    }
    let start = load.arrival_rate.map_or(0.0, |r| r.per_second);
    let profile = match &load.arrival_stages {
        Some(st) => pieces(
            start,
            st.iter().map(|s| {
                (
                    s.to.map(|r| r.per_second),
                    s.over.or(s.hold).map_or(Duration::ZERO, |d| d.0),
                )
            }),
        ),
        None => vec![Segment {
            from: start,
            to: start,
            over: load.duration.map_or(Duration::ZERO, |d| d.0),
        }],
    };
    Some(ArrivalSpec {
        profile,
        pattern: match load.arrivals {
            Some(ArrivalPattern::Poisson) => Pattern::Poisson,
            _ => Pattern::Uniform,
        },
        max_users: load.max_users.unwrap_or(DEFAULT_MAX_USERS),
        seed: load.seed,
        shard: (0, 1),
    })
}

/// The closed model's ramping stages as pieces of the target user count, from 0.
pub fn user_stages(load: &Load) -> Option<Vec<Segment>> {
    load.stages.as_ref().map(|st| {
        pieces(
            0.0,
            st.iter().map(|s| {
                (
                    s.to.map(f64::from),
                    s.over.or(s.hold).map_or(Duration::ZERO, |d| d.0),
                )
            }),
        )
    })
}
