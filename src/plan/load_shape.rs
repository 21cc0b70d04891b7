//! The load shape as data: an open-model arrival schedule ([`ArrivalSpec`]) and the closed
//! model's ramping stages (a list of [`Segment`]s). The plan compiles into these; the engine's
//! `engine::schedule` turns them into instants (it adds `ArrivalSpec::arrivals` and `count`).
//!
//! Sharding: [`ArrivalSpec::for_shard`] splits one schedule across `n` generators so that the
//! shards' arrivals together are exactly the unsharded schedule.

use std::time::Duration;

/// One piece of a piecewise-linear rate (arrivals per second) or user-count profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Level at the start of the piece.
    pub from: f64,
    /// Level at its end (the same as `from` for a hold).
    pub to: f64,
    pub over: Duration,
}

/// Spacing of arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// Deterministic: the k-th arrival (from 0) comes when the expected number of arrivals
    /// so far reaches k (at a constant rate r: at k / r).
    #[default]
    Uniform,
    /// A Poisson process with the profile's rate, drawn from the plan seed.
    Poisson,
}

/// An open-model load: arrivals over a rate profile, with a cap on concurrent callers.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalSpec {
    pub profile: Vec<Segment>,
    pub pattern: Pattern,
    /// Callers active at once; an arrival finding this many active is dropped (counted).
    pub max_users: u32,
    pub seed: u64,
    /// This generator's share: (index, count). (0, 1) when not sharded.
    pub shard: (u32, u32),
}

impl ArrivalSpec {
    /// Total length of the arrival schedule.
    pub fn duration(&self) -> Duration {
        self.profile.iter().map(|s| s.over).sum()
    }

    /// The arrivals of shard `index` of `count`: every `count`-th arrival of the whole
    /// schedule (so the shards together make exactly the unsharded schedule, and each sees
    /// 1/count of the rate), and a share of `max_users` (at least 1).
    pub fn for_shard(&self, index: u32, count: u32) -> ArrivalSpec {
        let count = count.max(1);
        let index = index.min(count - 1);
        let share = self.max_users / count + u32::from(index < self.max_users % count);
        ArrivalSpec {
            max_users: share.max(1),
            shard: (index, count),
            ..self.clone()
        }
    }
}

/// Total length of a list of stages.
pub fn stages_duration(stages: &[Segment]) -> Duration {
    stages.iter().map(|s| s.over).sum()
}
