//! `shard` in `metrics.json` and `run_info.json`: which shard a run was, with the exact totals
//! `planrun merge` sums.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CheckCounts, HttpCounts};
use crate::shard::Shard;

/// A shard's record in `metrics.json` (`shard`): which shard it was, and the totals that the
/// other fields only hold rounded or not at all, so `planrun merge` sums them exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShardReport {
    pub index: u32,
    pub count: u32,
    /// The plan's users (all shards together).
    pub total_users: u32,
    /// The global user indexes this shard ran.
    pub users: Vec<u32>,
    /// `check` outcomes by check name.
    pub checks: BTreeMap<String, CheckCounts>,
    /// The audio send lag's HDR histogram (µs), base64 V2 + deflate like `histograms`.
    pub send_lag: Option<String>,
    /// (`http_chunks`) raw chunk and call totals.
    pub http: HttpCounts,
}

impl ShardReport {
    /// The shard's identity, before it ran (for `run_info.json`).
    pub fn planned(shard: Shard, total_users: u32) -> Self {
        ShardReport {
            index: shard.index,
            count: shard.count,
            total_users,
            users: shard.users(total_users),
            ..ShardReport::default()
        }
    }

    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            count: self.count,
        }
    }
}
