//! Build the contract from a run: [`RunReport`] from the merged [`Summary`] and the judged
//! thresholds, [`RunInfo`] from the compiled plan.

use crate::contract::hist;
use crate::contract::{
    FailureSample, GeneratorHealth, HttpThroughput, MetricReport, RunEnvironment, RunInfo,
    RunReport, ShardReport,
};
use crate::engine::RunOutcome;
use crate::judge::thresholds::ThresholdResult;
use crate::metrics::Summary;
use crate::plan::compile::CompiledPlan;
use crate::plan::model::ProtocolKind;
use crate::shard::Shard;

/// How many failures are listed individually.
const FAILURE_SAMPLES: usize = crate::metrics::outcomes::FAILURE_SAMPLES;

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl RunInfo {
    pub fn new(plan: &CompiledPlan, target: &str, started: std::time::SystemTime) -> Self {
        RunInfo {
            plan: plan.name.clone(),
            description: plan.description.clone(),
            plan_file: plan.source.display().to_string(),
            target: target.to_string(),
            protocol: plan.target.wire.protocol.name().to_string(),
            started_at: rfc3339(started),
            // A shard's own users; `shard.total_users` holds the plan's.
            users: crate::shard::users_of(plan.load.shard, plan.load.users).len() as u32,
            seed: plan.load.seed,
            metrics: plan.metrics.clone(),
            thresholds: plan
                .thresholds
                .iter()
                .map(|t| (t.metric.clone(), t.expr.text.clone()))
                .collect(),
            planrun_version: env!("CARGO_PKG_VERSION").to_string(),
            shard: plan
                .load
                .shard
                .map(|s| ShardReport::planned(s, plan.load.users)),
            scenario_groups: plan
                .scenarios
                .iter()
                .filter(|s| !s.groups.is_empty())
                .map(|s| (s.name.clone(), s.groups.clone()))
                .collect(),
        }
    }
}

/// A shard's identity and its exact totals, after it ran.
pub fn shard_finished(shard: Shard, total_users: u32, s: &Summary) -> ShardReport {
    ShardReport {
        checks: s.recorder.checks.clone(),
        send_lag: s
            .recorder
            .send_lag
            .as_ref()
            .filter(|h| !h.is_empty())
            .and_then(hist::encode),
        http: s.recorder.http,
        ..ShardReport::planned(shard, total_users)
    }
}

/// The per-scenario / per-tag breakdown (empty without groups: one untagged scenario).
fn breakdown(info: &RunInfo, s: &Summary) -> Vec<crate::contract::GroupReport> {
    use crate::contract::{GroupMetric, GroupReport};
    let mut groups = s.breakdown();
    let scenarios = s.scenarios();
    if groups.is_empty() && scenarios.len() < 2 && info.scenario_groups.is_empty() {
        return Vec::new();
    }
    // Every scenario and tag of the plan, even one that measured nothing.
    for g in info.scenario_groups.values().flatten() {
        groups.entry(g.clone()).or_default();
    }
    for name in scenarios.keys() {
        groups.entry(format!("scenario:{name}")).or_default();
    }
    let mut out: Vec<GroupReport> = groups
        .into_iter()
        .map(|(group, metrics)| {
            let (kind, name) = group.split_once(':').unwrap_or(("scenario", &group));
            let iterations =
                (kind == "scenario").then(|| scenarios.get(name).cloned().unwrap_or_default());
            GroupReport {
                kind: kind.to_string(),
                name: name.to_string(),
                success_rate: iterations.as_ref().and_then(|c| c.success_rate()),
                iterations,
                metrics: metrics
                    .into_iter()
                    .map(|(metric, st)| GroupMetric {
                        metric,
                        stats: MetricReport::from(Some(st)),
                    })
                    .collect(),
                group: group.clone(),
            }
        })
        .collect();
    // Scenarios first, then tags (each by name).
    out.sort_by(|a, b| (a.kind != "scenario", &a.name).cmp(&(b.kind != "scenario", &b.name)));
    out
}

impl RunReport {
    pub fn build(
        plan: &CompiledPlan,
        outcome: &RunOutcome,
        thresholds: Vec<ThresholdResult>,
    ) -> Self {
        let mut info = RunInfo::new(plan, &outcome.target, outcome.started_at);
        info.started_at = rfc3339(outcome.started_at);
        Self::from_summary(&info, &outcome.summary, thresholds)
    }

    /// Build from the run's description and its merged measurements.
    pub fn from_summary(info: &RunInfo, s: &Summary, thresholds: Vec<ThresholdResult>) -> Self {
        let order = s.metric_names();
        let metrics = order
            .iter()
            .map(|n| (n.clone(), MetricReport::from(s.stats(n))))
            .collect();
        let failures = s
            .recorder
            .outcomes
            .failures
            .sample(FAILURE_SAMPLES)
            .into_iter()
            .map(|k| FailureSample {
                user: k.user,
                iteration: k.iteration,
                scenario: k.scenario.clone(),
                class: k.failure.class.as_str().to_string(),
                step: k.failure.step.clone(),
                message: k.failure.message.replace(['\n', '\r'], " "),
            })
            .collect();
        let lag = s.recorder.send_lag.as_ref().filter(|h| !h.is_empty());
        let lag_ms = |q: f64| lag.map(|h| crate::stats::hist_ms(h, q));
        let iterations = s.iterations();
        let passed = crate::judge::thresholds::all_passed(&thresholds) && !s.aborted;
        RunReport {
            plan: info.plan.clone(),
            description: info.description.clone(),
            plan_file: info.plan_file.clone(),
            passed,
            inconclusive: false,
            aborted: s.aborted,
            stopped_by: None,
            stop_reason: None,
            partial: false,
            target: info.target.clone(),
            started_at: info.started_at.clone(),
            elapsed_s: (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            // The open model's real concurrency, not its `max_users` cap.
            users: match s.recorder.arrivals.as_ref() {
                Some(a) if a.max_users.is_some() => {
                    u32::try_from(a.peak_active).unwrap_or(u32::MAX)
                }
                _ => info.users,
            },
            seed: info.seed,
            success_rate: iterations.success_rate(),
            iterations,
            aborted_iterations: s.aborted_iterations(),
            errors: s.errors(),
            scenarios: s.scenarios(),
            metrics,
            metric_order: order,
            breakdown: breakdown(info, s),
            thresholds,
            failures,
            generator: {
                let mut g = GeneratorHealth {
                    send_lag_p50_ms: lag_ms(0.5),
                    send_lag_p99_ms: lag_ms(0.99),
                    send_lag_max_ms: lag.map(|h| h.max() as f64 / 1000.0),
                    ..GeneratorHealth::default()
                };
                g.fill_health(&s.recorder.health);
                g
            },
            environment: RunEnvironment::current(),
            histograms: s
                .recorder
                .histograms
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .filter_map(|(n, h)| Some((n.clone(), hist::encode(h)?)))
                .collect(),
            http: (info.protocol == ProtocolKind::HttpChunks.name())
                .then(|| HttpThroughput::from_counts(&s.recorder.http, s.elapsed)),
            arrivals: s
                .recorder
                .arrivals
                .as_ref()
                .map(super::arrivals::ArrivalReport::from),
            shard: info
                .shard
                .as_ref()
                .map(|p| shard_finished(p.shard(), p.total_users, s)),
            merged: None,
        }
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use crate::metrics::{Failure, FailureClass, IterationRecord, Recorder};

    fn f(user: u32, class: FailureClass, message: &str) -> IterationRecord {
        IterationRecord {
            user,
            iteration: 0,
            scenario: "s".into(),
            start_us: u64::from(user),
            end_us: u64::from(user) + 1,
            failure: Some(Failure {
                class,
                step: String::new(),
                message: message.into(),
            }),
            markers: vec![],
            samples: vec![],
        }
    }

    #[test]
    fn every_distinct_failure_kind_is_sampled_first_in_run_order() {
        let mut rec = Recorder::default();
        for u in 0..30 {
            rec.iteration(f(u, FailureClass::Timeout, "slow"));
        }
        rec.iteration(f(30, FailureClass::ConnectError, "too many open files"));
        let s = Summary::new(rec, vec![], std::time::Duration::ZERO, false);
        let r = RunReport::from_summary(&RunInfo::default(), &s, vec![]);
        assert_eq!(r.failures.len(), FAILURE_SAMPLES);
        let users: Vec<u32> = r.failures.iter().map(|p| p.user).collect();
        let mut want: Vec<u32> = (0..19).collect();
        want.push(30);
        assert_eq!(users, want, "distinct kinds first, then run order");
    }
}
