//! `merged` in `metrics.json`: which shards a merged report was built from.

use serde::{Deserialize, Serialize};

/// Which shards a merged report was built from (`merged` in its `metrics.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MergeInfo {
    /// The run's shard count.
    pub shard_count: u32,
    /// The shard indexes merged, ascending.
    pub shards: Vec<u32>,
    /// Shard indexes with no folder among the inputs.
    pub missing: Vec<u32>,
    /// The folders merged, in shard order.
    pub sources: Vec<String>,
    /// Latest minus earliest shard start, seconds. The merged timeline overlays the shards,
    /// each from its own start.
    pub start_skew_s: f64,
}
