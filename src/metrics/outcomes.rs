//! What finished iterations leave in memory: bounded aggregates, never the iterations
//! themselves (those are streamed to `timeline.csv`).
//!
//! - [`Outcomes`]: counts by scenario and failure class, and a bounded, diverse sample of
//!   failures (every distinct kind first, then the earliest) that merges exactly.
//! - [`Windows`]: per-slot value counts for windowed thresholds (`p95 < 1s over 10s`), one
//!   series per (metric, window step); memory grows with the run's *duration* divided by the
//!   step, never with the number of iterations or samples.

use std::collections::BTreeMap;

use super::failure::{Failure, FailureClass, IterationRecord};
use crate::contract::IterationCounts;
use crate::plan::threshold_expr::FilterKind;

/// How many failures a sample keeps of each list (distinct kinds, earliest).
pub const FAILURE_SAMPLES: usize = 20;

/// One kept failure, with its place in the run's order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptFailure {
    pub start_us: u64,
    pub user: u32,
    pub iteration: u64,
    pub scenario: String,
    pub failure: Failure,
}

impl KeptFailure {
    fn key(&self) -> (u64, u32, u64) {
        (self.start_us, self.user, self.iteration)
    }
    /// What makes two failures the same kind: class and message (line breaks as spaces).
    fn kind(&self) -> (FailureClass, String) {
        (self.failure.class, one_line(&self.failure.message))
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A bounded sample of failures that merges exactly: the first occurrence (in run order:
/// start, user, iteration) of each of the earliest [`FAILURE_SAMPLES`] distinct kinds, and the
/// [`FAILURE_SAMPLES`] earliest failures. Whatever order recorders merge in, the kept sets
/// equal those of one recorder that saw every failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailureSampler {
    kinds: Vec<KeptFailure>,
    earliest: Vec<KeptFailure>,
}

impl FailureSampler {
    pub fn add(&mut self, f: KeptFailure) {
        let kind = f.kind();
        match self.kinds.iter_mut().find(|k| k.kind() == kind) {
            Some(k) if f.key() < k.key() => *k = f.clone(),
            Some(_) => {}
            None => {
                self.kinds.push(f.clone());
                drop_latest(&mut self.kinds);
            }
        }
        if !self.earliest.iter().any(|e| e.key() == f.key()) {
            self.earliest.push(f);
            drop_latest(&mut self.earliest);
        }
    }

    pub fn merge(&mut self, other: FailureSampler) {
        for f in other.kinds.into_iter().chain(other.earliest) {
            self.add(f);
        }
    }

    /// Up to `n` (≤ [`FAILURE_SAMPLES`]) failures, every distinct kind (class and message)
    /// first, in run order: twenty copies of one timeout must not hide the one failure that
    /// was different.
    pub fn sample(&self, n: usize) -> Vec<&KeptFailure> {
        let mut all: Vec<&KeptFailure> = self.kinds.iter().chain(&self.earliest).collect();
        all.sort_by_key(|f| f.key());
        all.dedup_by_key(|f| f.key());
        let mut seen = std::collections::HashSet::new();
        let mut picked: Vec<usize> = Vec::new();
        for (i, f) in all.iter().enumerate() {
            if picked.len() < n && seen.insert(f.kind()) {
                picked.push(i);
            }
        }
        for i in 0..all.len() {
            if picked.len() >= n {
                break;
            }
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked.sort_unstable();
        picked.into_iter().map(|i| all[i]).collect()
    }

    /// How many failures are held (at most 2 × [`FAILURE_SAMPLES`]).
    pub fn held(&self) -> usize {
        self.kinds.len() + self.earliest.len()
    }
}

fn drop_latest(v: &mut Vec<KeptFailure>) {
    if v.len() > FAILURE_SAMPLES
        && let Some(i) = (0..v.len()).max_by_key(|&i| v[i].key())
    {
        v.swap_remove(i);
    }
}

/// Iteration counts of a run, by scenario and failure class, and a failure sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes {
    /// Completed iterations (not cut short by stopping the run) per scenario, sorted by name.
    /// A sorted Vec, not a map: every virtual user holds one, and a map's first node is
    /// ~550 bytes where a plan's one scenario needs 48.
    scenarios: Vec<(String, IterationCounts)>,
    /// Iterations cut short by stopping the run.
    pub aborted: u64,
    /// Failed completed iterations by class.
    pub errors: BTreeMap<FailureClass, u64>,
    pub failures: FailureSampler,
}

impl Outcomes {
    pub fn add(&mut self, r: &IterationRecord) {
        if r.failure
            .as_ref()
            .is_some_and(|f| f.class == FailureClass::Aborted)
        {
            self.aborted += 1;
            return;
        }
        let c = self.scenario_mut(&r.scenario);
        c.total += 1;
        match &r.failure {
            None => c.succeeded += 1,
            Some(f) => {
                c.failed += 1;
                *self.errors.entry(f.class).or_insert(0) += 1;
                self.failures.add(KeptFailure {
                    start_us: r.start_us,
                    user: r.user,
                    iteration: r.iteration,
                    scenario: r.scenario.clone(),
                    failure: f.clone(),
                });
            }
        }
    }

    pub fn merge(&mut self, other: Outcomes) {
        for (name, c) in other.scenarios {
            let mine = self.scenario_mut(&name);
            mine.total += c.total;
            mine.succeeded += c.succeeded;
            mine.failed += c.failed;
        }
        self.aborted += other.aborted;
        for (class, n) in other.errors {
            *self.errors.entry(class).or_insert(0) += n;
        }
        self.failures.merge(other.failures);
    }

    /// Where scenario `name` is (Ok) or belongs (Err) in the sorted list.
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.scenarios
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The counts of scenario `name`, added (zero) when new.
    fn scenario_mut(&mut self, name: &str) -> &mut IterationCounts {
        let i = self.find(name).unwrap_or_else(|i| {
            self.scenarios
                .insert(i, (name.to_string(), IterationCounts::default()));
            i
        });
        &mut self.scenarios[i].1
    }

    /// The completed iterations of scenario `name`, if it ran.
    pub fn scenario(&self, name: &str) -> Option<&IterationCounts> {
        self.find(name).ok().map(|i| &self.scenarios[i].1)
    }

    /// Completed iterations per scenario.
    pub fn scenarios(&self) -> BTreeMap<String, IterationCounts> {
        self.scenarios.iter().cloned().collect()
    }

    /// Completed iterations of every scenario.
    pub fn totals(&self) -> IterationCounts {
        self.scenarios
            .iter()
            .map(|(_, c)| c)
            .fold(IterationCounts::default(), |mut t, c| {
                t.total += c.total;
                t.succeeded += c.succeeded;
                t.failed += c.failed;
                t
            })
    }

    /// Every iteration folded in, aborted ones included.
    pub fn len(&self) -> u64 {
        self.totals().total + self.aborted
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Key of a value in a slot: thousandths of the unit (µs for a metric in ms; 1000 = 1.0 for a
/// rate's succeeded/failed point).
fn value_key(v: f64) -> u64 {
    (v.max(0.0) * 1000.0).round() as u64
}

/// The lowest value an HDR histogram with 3 significant figures holds in the same bucket as
/// `v` (so a quantized slot is exactly as precise as the run's histograms).
fn lowest_equivalent(v: u64) -> u64 {
    let shift = (63 - (v | 2047).leading_zeros()).saturating_sub(10);
    (v >> shift) << shift
}

/// Above this many distinct values a slot is quantized to 3 significant figures.
const SLOT_EXACT_VALUES: usize = 512;

/// The values one slot of one series holds: value key → count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slot {
    values: BTreeMap<u64, u64>,
    quantized: bool,
}

impl Slot {
    fn add(&mut self, key: u64, n: u64) {
        let key = if self.quantized {
            lowest_equivalent(key)
        } else {
            key
        };
        *self.values.entry(key).or_insert(0) += n;
        if !self.quantized && self.values.len() > SLOT_EXACT_VALUES {
            self.quantized = true;
            let old = std::mem::take(&mut self.values);
            for (k, c) in old {
                *self.values.entry(lowest_equivalent(k)).or_insert(0) += c;
            }
        }
    }

    /// (value, count) pairs in ascending value order.
    pub fn values(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.values.iter().map(|(k, c)| (*k as f64 / 1000.0, *c))
    }
}

/// One metric's values over time at one step: slot `i` holds the points taken in
/// `[i·step, (i+1)·step)` µs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub step_us: u64,
    pub slots: BTreeMap<u64, Slot>,
}

impl Series {
    fn add(&mut self, at_us: u64, value: f64) {
        let i = at_us / self.step_us.max(1);
        self.slots.entry(i).or_default().add(value_key(value), 1);
    }

    fn merge(&mut self, other: Series) {
        for (i, s) in other.slots {
            let mine = self.slots.entry(i).or_default();
            for (k, c) in s.values {
                mine.add(k, c);
            }
        }
    }

    /// Every (value, count) taken in `[start_us, end_us)`, where both are slot boundaries.
    pub fn values_in(&self, start_us: u64, end_us: u64) -> Vec<(f64, u64)> {
        let step = self.step_us.max(1);
        let (a, b) = (start_us / step, end_us.div_ceil(step));
        self.slots
            .range(a..b)
            .flat_map(|(_, s)| s.values())
            .collect()
    }

    /// The time of the latest slot's end, µs (0 when empty).
    pub fn end_us(&self) -> u64 {
        self.slots
            .keys()
            .next_back()
            .map_or(0, |i| (i + 1) * self.step_us.max(1))
    }
}

/// The step of a window of length `window`: a quarter of it (µs, at least 1).
pub fn window_step_us(window: std::time::Duration) -> u64 {
    let w_us = window.as_micros().min(u128::from(u64::MAX)) as u64;
    (w_us.max(1) / 4).max(1)
}

/// The series windowed thresholds are judged from: per (metric, step µs). Empty (recording
/// nothing) unless configured with [`Windows::want`]. For `success_rate` the points are
/// 1.0/0.0 per completed iteration at its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    pub series: BTreeMap<(String, u64), Series>,
    /// Each scenario's breakdown groups (`scenario:NAME`, `tag:T`), to judge filtered series
    /// (`ttfa{tag:slow}`) and feed the live view; empty without a breakdown.
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Windows {
    /// Keep `metric` at `step_us` (a window's step: its length / 4).
    pub fn want(&mut self, metric: &str, step_us: u64) {
        let step_us = step_us.max(1);
        self.series
            .entry((metric.to_string(), step_us))
            .or_insert_with(|| Series {
                step_us,
                slots: BTreeMap::new(),
            });
    }

    /// The series the windowed thresholds among `specs` are judged from.
    pub fn for_thresholds(specs: &[crate::plan::compile::ThresholdSpec]) -> Self {
        let mut w = Windows::default();
        for t in specs {
            if let Some(window) = t.expr.window {
                w.want(&t.metric, window_step_us(window));
            }
        }
        w
    }

    /// [`Windows::for_thresholds`] of a plan, knowing its scenarios' breakdown groups.
    pub fn for_plan(plan: &crate::plan::compile::CompiledPlan) -> Self {
        let mut w = Self::for_thresholds(&plan.thresholds);
        w.groups = plan
            .scenarios
            .iter()
            .filter(|s| !s.groups.is_empty())
            .map(|s| (s.name.clone(), s.groups.clone()))
            .collect();
        w
    }

    /// The breakdown groups of `scenario` (empty when unknown or without a breakdown).
    pub fn groups_of(&self, scenario: &str) -> Vec<String> {
        self.groups.get(scenario).cloned().unwrap_or_default()
    }

    pub fn is_configured(&self) -> bool {
        !self.series.is_empty()
    }

    pub fn get(&self, metric: &str, step_us: u64) -> Option<&Series> {
        self.series.get(&(metric.to_string(), step_us.max(1)))
    }

    /// Fold one finished iteration in (`rate_metric` names the success-rate series).
    pub fn add(&mut self, r: &IterationRecord, rate_metric: &str) {
        if self.series.is_empty() {
            return;
        }
        for ((key, _), series) in self.series.iter_mut() {
            // A filtered series (`ttfa{scenario:x}`) takes only its group's iterations.
            let (metric, group) = match crate::plan::threshold_expr::split_metric_key(key) {
                Ok(k) => (k.metric, k.filter),
                Err(_) => (key.as_str(), None),
            };
            if let Some((kind, value)) = group {
                let g = format!("{}:{value}", kind.name());
                let in_group = self
                    .groups
                    .get(&r.scenario)
                    .map_or(kind == FilterKind::Scenario && value == r.scenario, |gs| {
                        gs.contains(&g)
                    });
                if !in_group {
                    continue;
                }
            }
            if metric == rate_metric {
                match &r.failure {
                    Some(f) if f.class == FailureClass::Aborted => {}
                    f => series.add(r.end_us, if f.is_none() { 1.0 } else { 0.0 }),
                }
            } else if metric == crate::plan::CHECKS {
                // Each check's verdict, from the timeline's markers, at the instant it ran.
                for m in &r.markers {
                    match m.kind.as_str() {
                        crate::plan::CHECK_PASSED_MARKER => series.add(m.at_us, 1.0),
                        crate::plan::CHECK_FAILED_MARKER => series.add(m.at_us, 0.0),
                        _ => {}
                    }
                }
            } else {
                for s in r.samples.iter().filter(|s| s.metric == metric) {
                    series.add(s.at_us, s.value_ms);
                }
            }
        }
    }

    pub fn merge(&mut self, other: Windows) {
        if self.groups.is_empty() {
            self.groups = other.groups;
        }
        for (key, s) in other.series {
            match self.series.get_mut(&key) {
                Some(mine) => mine.merge(s),
                None => {
                    self.series.insert(key, s);
                }
            }
        }
    }

    /// Slots held over every series (what grows with the run's duration).
    pub fn slots(&self) -> usize {
        self.series.values().map(|s| s.slots.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(start_us: u64, user: u32, class: FailureClass, message: &str) -> IterationRecord {
        IterationRecord {
            user,
            iteration: start_us,
            scenario: "s".into(),
            start_us,
            end_us: start_us + 1,
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
    fn the_sample_is_diverse_bounded_and_independent_of_merge_order() {
        let mut recs: Vec<IterationRecord> = (0..500)
            .map(|i| failure(i * 10, (i % 7) as u32, FailureClass::Timeout, "slow"))
            .collect();
        recs.push(failure(
            4_000,
            3,
            FailureClass::ConnectError,
            "too many open files",
        ));
        for k in 0..40u64 {
            recs.push(failure(
                4_001 + k,
                1,
                FailureClass::ServerError,
                &format!("e{k}"),
            ));
        }
        let mut one = Outcomes::default();
        for r in &recs {
            one.add(r);
        }
        // The same failures seen by 7 users, merged in reverse.
        let mut parts: Vec<Outcomes> = (0..7).map(|_| Outcomes::default()).collect();
        for r in &recs {
            parts[r.user as usize].add(r);
        }
        let mut merged = Outcomes::default();
        for p in parts.into_iter().rev() {
            merged.merge(p);
        }
        assert!(one.failures.held() <= 2 * FAILURE_SAMPLES);
        let keys = |o: &Outcomes| {
            o.failures
                .sample(FAILURE_SAMPLES)
                .iter()
                .map(|f| f.key())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&one), keys(&merged));
        let picked = one.failures.sample(FAILURE_SAMPLES);
        assert_eq!(picked.len(), FAILURE_SAMPLES);
        assert!(
            picked
                .iter()
                .any(|f| f.failure.message == "too many open files")
        );
        assert_eq!(one.totals().failed, 541);
        assert_eq!(one.errors[&FailureClass::ServerError], 40);
    }

    #[test]
    fn scenario_counts_are_by_name_whatever_the_merge_order() {
        let ok = |scenario: &str| IterationRecord {
            failure: None,
            scenario: scenario.into(),
            ..failure(0, 0, FailureClass::Timeout, "")
        };
        let mut a = Outcomes::default();
        for s in ["zeta", "alpha", "zeta"] {
            a.add(&ok(s));
        }
        let mut b = Outcomes::default();
        b.add(&failure(1, 1, FailureClass::Timeout, "slow"));
        b.add(&ok("alpha"));
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(b);
        ba.merge(a);
        assert_eq!(ab, ba);
        let names: Vec<String> = ab.scenarios().into_keys().collect();
        assert_eq!(names, ["alpha", "s", "zeta"]);
        assert_eq!(ab.scenario("zeta").map(|c| c.succeeded), Some(2));
        assert_eq!(ab.scenario("alpha").map(|c| c.total), Some(2));
        assert_eq!(ab.scenario("s").map(|c| c.failed), Some(1));
        assert!(ab.scenario("missing").is_none());
        assert_eq!(ab.totals().total, 5);
    }

    #[test]
    fn quantized_slots_keep_three_significant_figures() {
        let mut s = Slot::default();
        for v in 0..5000u64 {
            s.add(1_000_000 + v * 37, 1);
        }
        assert!(s.values.len() < 1200, "{}", s.values.len());
        assert_eq!(s.values().map(|(_, c)| c).sum::<u64>(), 5000);
        let (lo, _) = s.values().next().unwrap();
        assert!((lo - 1000.0).abs() / 1000.0 < 1e-3);
    }
}
