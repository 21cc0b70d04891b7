//! Distributed runs: `--shard i/n` runs shard `i` (0-based) of `n` of a plan's users.
//!
//! Users are dealt round-robin: shard `i` runs the global user indexes `i, i+n, i+2n, …`, so
//! every global user runs in exactly one shard, keeps the seed of its global index and its
//! ramp-up offset in the global schedule, and the union of the shards is the unsharded run.
//! Round-robin (not contiguous blocks) spreads each shard's users over the whole ramp-up.
//!
//! Inside a Kubernetes Indexed Job the shard defaults from `JOB_COMPLETION_INDEX` (set by
//! Kubernetes) and `PLANRUN_SHARDS` (the Job's `completions`, set in the manifest: Kubernetes
//! does not expose it). An explicit `--shard` wins.
//!
//! A shard writes everything `planrun merge` needs to rebuild exact totals
//! (the contract's `ShardReport` in `metrics.json` and, from the start, in `run_info.json`).
//! This module is only the shard spec: it imports nothing from the crate.

use serde::{Deserialize, Serialize};

/// The Kubernetes Indexed Job's completion index (0-based), set by Kubernetes in every pod.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The number of shards (the Job's `completions`), set in the manifest.
pub const COUNT_ENV: &str = "PLANRUN_SHARDS";

/// A shard that cannot be: a bad `--shard` or Kubernetes environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("the shard count must be at least 1")]
    NoShards,
    #[error(
        "shard index {index} is out of range for {count} shard(s): indexes are 0-based, 0..={}",
        count - 1
    )]
    OutOfRange { index: u32, count: u32 },
    #[error("`{0}` is not a shard: expected INDEX/COUNT, e.g. 0/3")]
    Syntax(String),
    #[error("`{text}`: the {what} `{value}` is not a whole number")]
    NotANumber {
        text: String,
        what: &'static str,
        value: String,
    },
    #[error("{INDEX_ENV}=`{0}` is not a whole number (expected the 0-based shard index)")]
    BadIndexEnv(String),
    #[error("{COUNT_ENV}=`{0}` is not a whole number (expected the shard count)")]
    BadCountEnv(String),
    #[error("from {INDEX_ENV}={index} and {COUNT_ENV}={count}: {source}")]
    FromEnv {
        index: u32,
        count: u32,
        source: Box<ShardError>,
    },
    #[error(
        "{INDEX_ENV}={0} is set (a Kubernetes Indexed Job) but {COUNT_ENV} is not: set {COUNT_ENV} to the Job's completions, or pass --shard INDEX/COUNT"
    )]
    IndexWithoutCount(String),
    #[error(
        "{COUNT_ENV}={0} is set but {INDEX_ENV} is not: run inside an Indexed Job, or pass --shard INDEX/COUNT"
    )]
    CountWithoutIndex(String),
}

/// Shard `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Shard `index` of `count`, checked: `count ≥ 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard runs global user `user`.
    pub fn owns(self, user: u32) -> bool {
        user % self.count == self.index
    }

    /// The global user indexes this shard runs, ascending: `index, index+count, …` below
    /// `total`.
    pub fn users(self, total: u32) -> Vec<u32> {
        (self.index..total).step_by(self.count as usize).collect()
    }

    /// This shard's part of a plan-wide rate (arrival rate, iterations per second): the rate
    /// divided evenly by the shard count, so the shards together run the plan's rate.
    pub fn split_rate(self, rate: f64) -> f64 {
        rate / f64::from(self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| ShardError::Syntax(s.to_string()))?;
        let num = |t: &str, what: &'static str| {
            t.trim().parse::<u32>().map_err(|_| ShardError::NotANumber {
                text: s.to_string(),
                what,
                value: t.trim().to_string(),
            })
        };
        Shard::new(num(i, "index")?, num(n, "count")?)
    }
}

/// The global user indexes a run executes: all of `0..total`, or one shard's.
pub fn users_of(shard: Option<Shard>, total: u32) -> Vec<u32> {
    match shard {
        Some(s) => s.users(total),
        None => (0..total).collect(),
    }
}

/// The shard to run: `--shard` when given, else `JOB_COMPLETION_INDEX` / `PLANRUN_SHARDS`
/// (looked up with `env`), else none (the whole plan).
pub fn resolve(
    flag: Option<Shard>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, ShardError> {
    if flag.is_some() {
        return Ok(flag);
    }
    let index = env(INDEX_ENV).filter(|v| !v.trim().is_empty());
    let count = env(COUNT_ENV).filter(|v| !v.trim().is_empty());
    match (index, count) {
        (None, None) => Ok(None),
        (Some(i), Some(n)) => {
            let i: u32 = i
                .trim()
                .parse()
                .map_err(|_| ShardError::BadIndexEnv(i.clone()))?;
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| ShardError::BadCountEnv(n.clone()))?;
            Shard::new(i, n).map(Some).map_err(|e| ShardError::FromEnv {
                index: i,
                count: n,
                source: Box::new(e),
            })
        }
        (Some(i), None) => Err(ShardError::IndexWithoutCount(i)),
        (None, Some(n)) => Err(ShardError::CountWithoutIndex(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("0/3".parse::<Shard>(), Ok(Shard { index: 0, count: 3 }));
        assert_eq!(" 2 / 3 ".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        let err = |s: &str| s.parse::<Shard>().unwrap_err().to_string();
        assert!(err("3/3").contains("out of range"), "{}", err("3/3"));
        assert!(err("0/0").contains("at least 1"), "{}", err("0/0"));
        assert!(err("1").contains("INDEX/COUNT"), "{}", err("1"));
        assert!(err("a/3").contains("index `a`"), "{}", err("a/3"));
        assert!(
            err("-1/3").contains("not a whole number"),
            "{}",
            err("-1/3")
        );
    }

    #[test]
    fn partition_covers_every_user_once() {
        for total in [0u32, 1, 2, 3, 10, 11, 97] {
            for n in 1..=7u32 {
                let mut seen = vec![0u32; total as usize];
                for i in 0..n {
                    let s = Shard::new(i, n).unwrap();
                    let users = s.users(total);
                    assert!(users.windows(2).all(|w| w[0] < w[1]));
                    for u in users {
                        assert!(s.owns(u));
                        seen[u as usize] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|c| *c == 1),
                    "total {total} n {n}: {seen:?}"
                );
            }
        }
        assert_eq!(Shard::new(1, 3).unwrap().users(10), vec![1, 4, 7]);
        assert_eq!(users_of(None, 3), vec![0, 1, 2]);
        let rates: f64 = (0..4)
            .map(|i| Shard::new(i, 4).unwrap().split_rate(10.0))
            .sum();
        assert!((rates - 10.0).abs() < 1e-9);
    }

    #[test]
    fn resolves_flag_then_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let k8s = env(&[(INDEX_ENV, "2"), (COUNT_ENV, "4")]);
        assert_eq!(resolve(None, k8s), Ok(Some(Shard { index: 2, count: 4 })));
        let flag = Some(Shard { index: 0, count: 2 });
        assert_eq!(resolve(flag, k8s), Ok(flag));
        assert_eq!(resolve(None, env(&[])), Ok(None));
        let e = resolve(None, env(&[(INDEX_ENV, "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(COUNT_ENV), "{e}");
        let e = resolve(None, env(&[(COUNT_ENV, "3")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(INDEX_ENV), "{e}");
        let e = resolve(None, env(&[(INDEX_ENV, "3"), (COUNT_ENV, "3")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        let e = resolve(None, env(&[(INDEX_ENV, "x"), (COUNT_ENV, "3")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a whole number"), "{e}");
    }
}
